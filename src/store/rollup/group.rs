//! The group's rollups: what the other members of a consumer group rolled up
//! (`cluster.enabled`), held beside this store's own so that a range query
//! answers for the whole group and says how many members reported each
//! bucket.
//!
//! - **What a member publishes** is absolute: all of its rows of one lead
//!   value (genre of dims and anchors, title, track) in one bucket. Which
//!   (bucket, lead) changed is tracked as batches are held ([`Touched`]);
//!   the publisher reads those buckets whole ([`StoreView::own_bucket_rows`]).
//!   Sending a row twice is harmless, and a compacted topic keeps the newest
//!   of each (member, bucket, lead).
//! - **What a member holds of its peers**: per (grain, cube, bucket, member)
//!   one chunk in the layout of its own (`G/` grain cube bucket member part →
//!   grouped rows), rewritten with the leads a record replaces, so a range
//!   query reads a peer's bucket as it reads its own ([`GROUP`]).
//! - **Retention** follows the group's newest minute, with this store's
//!   tuning ([`StoreView::prune_peer_rollups`]).

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap, FxHashSet};

use super::*;
use crate::store::StoreView;

/// Peers' chunks: `G/` grain cube bucket (be64, sign flipped) member length
/// (be16) member part (be32) → grouped rows (see [`chunk`]).
pub const GROUP: &[u8] = b"G/";

/// Most (bucket, lead) changes held for the next publication; past it, the
/// next publication sends every bucket.
pub const MAX_TOUCHED: usize = 1_000_000;

/// The (grain, cube, bucket, lead) changed since the last publication.
#[derive(Debug, Default)]
pub struct Touched {
    pub leads: FxHashSet<(Grain, Cube, i64, String)>,
    /// More changed than [`MAX_TOUCHED`]: publish every bucket.
    pub overflow: bool,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.leads.is_empty() && !self.overflow
    }

    /// Adds `other`'s changes (a publication that did not go out).
    pub fn merge(&mut self, other: Touched) {
        self.overflow |= other.overflow;
        if !self.overflow {
            self.leads.extend(other.leads);
        }
        self.bound();
    }

    fn bound(&mut self) {
        if self.leads.len() > MAX_TOUCHED {
            self.leads = FxHashSet::default();
            self.overflow = true;
        }
        if self.overflow {
            self.leads.clear();
        }
    }

    /// Notes the leads a batch's deltas change.
    pub(super) fn note<'r>(&mut self, d: &BatchDeltas, id_of: &impl Fn(u32) -> &'r str) {
        if self.overflow {
            return;
        }
        // (cube, minute, small value or record): each lead once per batch.
        let mut seen: FxHashSet<(Cube, i64, u32)> = FxHashSet::default();
        for e in d.rows() {
            let (n, lead) = match e.cube {
                Cube::Dims | Cube::Anchors => (
                    u32::from(e.small[0]),
                    d.names
                        .get(usize::from(e.small[0]))
                        .map_or("", String::as_str),
                ),
                Cube::Titles | Cube::Music => (e.id, id_of(d.id_record(e.id))),
            };
            if !seen.insert((e.cube, e.minute, n)) {
                continue;
            }
            for (grain, bucket) in buckets_of(e.cube, e.minute) {
                self.leads.insert((grain, e.cube, bucket, lead.to_string()));
            }
        }
        self.bound();
    }
}

/// The buckets a held row of `cube` at `minute` counts in (titles and
/// anchors are held by the hour).
pub fn buckets_of(cube: Cube, minute: i64) -> impl Iterator<Item = (Grain, i64)> {
    let minute_too = cube.has_minutes().then_some((Grain::Minute, minute));
    minute_too
        .into_iter()
        .chain([(Grain::Hour, Grain::Hour.bucket(minute))])
}

/// The prefix of every peer chunk of (grain, cube, bucket).
pub fn group_prefix(grain: Grain, cube: Cube, bucket: i64) -> Vec<u8> {
    prefixed(GROUP, grain, cube, bucket)
}

/// The prefix of `member`'s parts of (grain, cube, bucket).
fn member_prefix(grain: Grain, cube: Cube, bucket: i64, member: &str) -> Vec<u8> {
    let mut k = group_prefix(grain, cube, bucket);
    // Member ids are at most 1024 bytes (the group's wire bounds them).
    k.extend_from_slice(&(member.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(member.as_bytes());
    k
}

/// The member a peer chunk's key names.
pub fn group_member(k: &[u8]) -> Option<&[u8]> {
    let at = GROUP.len() + 10;
    let len = usize::from(u16::from_be_bytes(k.get(at..at + 2)?.try_into().ok()?));
    let member = k.get(at + 2..at + 2 + len)?;
    (k.len() == at + 2 + len + 4).then_some(member)
}

/// One member's rows of one bucket, by lead: what a record of the group's
/// rollups topic carries (the lead's rows replace those held of it).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerBucket {
    pub member: String,
    pub grain: Grain,
    pub cube: Cube,
    pub bucket: i64,
    /// Lead → its rows (the tuple's other values, and their sums).
    pub leads: BTreeMap<String, Vec<([String; 3], Sums)>>,
}

/// Whether `cube` is kept by `grain` (titles and anchors by the hour only).
pub fn kept_by(cube: Cube, grain: Grain) -> bool {
    grain == Grain::Hour || cube.has_minutes()
}

/// Most rows one member's bucket may hold here (a member's own chunks keep
/// `max_rows`; its held rows may pass that for a while).
fn peer_rows_limit(t: &Tuning) -> usize {
    t.max_rows.saturating_mul(2).max(1)
}

impl StoreView {
    /// From now on, notes which (bucket, lead) each held batch changes (see
    /// [`StoreView::take_rollup_touched`]).
    pub fn track_rollup_changes(&self) {
        let mut h = self.rollups.lock();
        if h.touched.is_none() {
            h.touched = Some(Touched::default());
        }
    }

    /// The (bucket, lead) changed since the last call.
    pub fn take_rollup_touched(&self) -> Touched {
        let mut h = self.rollups.lock();
        h.touched.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Notes `t` as changed again (a publication that did not go out).
    pub fn retouch(&self, t: Touched) {
        let mut h = self.rollups.lock();
        if let Some(held) = h.touched.as_mut() {
            held.merge(t);
        }
    }

    /// Every (grain, cube, bucket) this store holds rows of: its chunks' and
    /// its held batches'.
    pub fn own_rollup_buckets(&self) -> Result<BTreeSet<(Grain, Cube, i64)>, StoreError> {
        let _gate = self.rollups.gate.read().unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeSet::new();
        for k in self.tree().scan_prefix(CHUNK).keys() {
            let k = k?;
            let (Some(grain), Some(cube), Some(bucket)) = (
                k.get(CHUNK.len()).and_then(|b| grain_of(*b)),
                k.get(CHUNK.len() + 1).and_then(|b| cube_of(*b)),
                chunk_bucket(&k),
            ) else {
                continue;
            };
            out.insert((grain, cube, bucket));
        }
        let h = self.rollups.lock();
        for gen in h.generations() {
            for cube in Cube::ALL {
                for (minute, _) in gen.buckets(cube) {
                    for (grain, bucket) in buckets_of(cube, minute) {
                        out.insert((grain, cube, bucket));
                    }
                }
            }
        }
        Ok(out)
    }

    /// This store's rows of one bucket (its chunks' and its held batches',
    /// peers' left out), added up by tuple and sorted.
    pub fn own_bucket_rows(
        &self,
        grain: Grain,
        cube: Cube,
        bucket: i64,
    ) -> Result<Vec<(Tuple<String>, Sums)>, StoreError> {
        let _gate = self.rollups.gate.read().unwrap_or_else(|p| p.into_inner());
        let mut rows: FxHashMap<Tuple<String>, Sums> = FxHashMap::default();
        for item in self.tree().scan_prefix(bucket_prefix(grain, cube, bucket)) {
            let (k, v) = item?;
            let read = chunk::all_rows(&k, &v).ok_or_else(|| StoreError::Corrupt {
                key: crate::store::read::entry_name(&k),
                message: "a rollup chunk that does not read back".into(),
            })?;
            for (t, s) in read {
                rows.entry(t.map(str::to_string)).or_default().add(&s);
            }
        }
        let h = self.rollups.lock();
        for gen in h.generations() {
            let tables = gen
                .buckets(cube)
                .filter(|(minute, _)| grain.bucket(*minute) == bucket && kept_by(cube, grain));
            for (_, table) in tables {
                for (ids, s) in table {
                    let t = ids.map(|n| gen.name(n).to_string());
                    rows.entry(t).or_default().add(s);
                }
            }
        }
        let mut out: Vec<(Tuple<String>, Sums)> = rows.into_iter().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Holds peers' rows: each bucket's leads replace those held of that
    /// member, in one atomic write. Answers the rows written.
    pub fn put_peer_rollups(&self, buckets: &[PeerBucket]) -> Result<u64, StoreError> {
        let tuning = self.rollups.lock().tuning;
        let mut batch = sled::Batch::default();
        let mut written = 0u64;
        let mut newest: Option<i64> = None;
        for b in buckets {
            if !kept_by(b.cube, b.grain) {
                continue;
            }
            let prefix = member_prefix(b.grain, b.cube, b.bucket, &b.member);
            let mut existing = Vec::new();
            for item in self.tree().scan_prefix(&prefix) {
                existing.push(item?);
            }
            let mut rows: Vec<(Tuple<&str>, Sums)> = Vec::new();
            for (k, v) in &existing {
                batch.remove(k.clone());
                // A part that does not read back is dropped: the member's next
                // publication of those leads holds them again.
                let Some(old) = chunk::all_rows(k, v) else {
                    tracing::warn!(
                        "peer rollup chunk {} does not read back; dropped",
                        crate::store::read::entry_name(k)
                    );
                    continue;
                };
                rows.extend(old.into_iter().filter(|(t, _)| !b.leads.contains_key(t[0])));
            }
            for (lead, lead_rows) in &b.leads {
                for (rest, s) in lead_rows {
                    rows.push((
                        [
                            lead.as_str(),
                            rest[0].as_str(),
                            rest[1].as_str(),
                            rest[2].as_str(),
                        ],
                        *s,
                    ));
                    if b.grain == Grain::Minute && s.weight() > 0 {
                        newest = Some(newest.map_or(b.bucket, |n| n.max(b.bucket)));
                    }
                }
            }
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            // Tuples of one lead sent twice in a record add up.
            rows.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    kept.1.add(&later.1);
                }
                same
            });
            let rows = super::compact::bounded(b.cube, rows, peer_rows_limit(&tuning));
            written += rows.len() as u64;
            for (part, value) in chunk::encode(&rows, b.cube != Cube::Titles) {
                let mut key = prefix.clone();
                key.extend_from_slice(&part.to_be_bytes());
                batch.insert(key, value);
            }
        }
        // Unflushed: a peer's rows are read again from the group's topic at
        // each start (an fsync here would hold the readers' gate).
        let _gate = self.rollups.gate.write().unwrap_or_else(|p| p.into_inner());
        self.apply_unflushed(batch)?;
        if let Some(n) = newest {
            let mut h = self.rollups.lock();
            h.peer_newest = Some(h.peer_newest.map_or(n, |p| p.max(n)));
        }
        Ok(written)
    }

    /// Deletes every peer's rows (a daemon outside a group answers for its
    /// own events). Answers the parts deleted.
    pub fn drop_peer_rollups(&self) -> Result<u64, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0u64;
        for k in self.tree().scan_prefix(GROUP).keys() {
            batch.remove(k?);
            n += 1;
        }
        if n > 0 {
            let _gate = self.rollups.gate.write().unwrap_or_else(|p| p.into_inner());
            self.commit(batch)?;
            self.rollups.lock().peer_newest = None;
        }
        Ok(n)
    }

    /// Deletes the peers' buckets retention no longer keeps, counted from the
    /// group's newest minute. Answers the parts deleted.
    pub fn prune_peer_rollups(&self) -> Result<u64, StoreError> {
        let (tuning, newest) = {
            let h = self.rollups.lock();
            let own = h.generations().filter_map(Generation::newest);
            let newest = own.chain(h.status.newest_minute).chain(h.peer_newest).max();
            (h.tuning, newest)
        };
        let Some(now) = newest else { return Ok(0) };
        let cuts = tuning.cuts(now);
        let mut batch = sled::Batch::default();
        let mut n = 0u64;
        for (grain, cut) in cuts {
            for cube in Cube::ALL {
                let from = group_prefix(grain, cube, i64::MIN);
                for k in self
                    .tree()
                    .range(from..group_prefix(grain, cube, cut))
                    .keys()
                {
                    batch.remove(k?);
                    n += 1;
                }
            }
        }
        if n > 0 {
            let _gate = self.rollups.gate.write().unwrap_or_else(|p| p.into_inner());
            self.apply_unflushed(batch)?;
        }
        Ok(n)
    }
}

fn grain_of(b: u8) -> Option<Grain> {
    Grain::ALL.into_iter().find(|g| g.byte() == b)
}

fn cube_of(b: u8) -> Option<Cube> {
    Cube::ALL.into_iter().find(|c| c.byte() == b)
}
