//! The sled store. Each input batch — its events (one log segment per
//! partition), the deltas of the aggregates (QoE and engagement counters, pair
//! aggregates), catalog upserts, dead letters and the next source offset per
//! partition — is one atomic `apply_batch` on one tree, flushed before it is
//! acknowledged. A record whose offset is below its partition's stored next
//! offset was already stored and is skipped: replays never count twice.
//! Aggregates are served from memory (see [`state`]).

pub mod keys;
pub mod models;
pub mod prepare;
mod read;
pub mod slots;
mod state;

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::event::Event;
use crate::record::{Outcome, Processed};

pub use prepare::{prepare, Prepared};
pub use read::{dead_letter_id, member_id, read_offset, DeadLetter, QoeDim};
pub use slots::{MusicAgg, PairAgg, Qoe};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}; is another playpulse using this data dir? (stop it, or pass another --data-dir)")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store write failed: {0}; check free disk space and permissions of the data dir")]
    Sled(#[from] sled::Error),
    #[error("store entry {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
    #[error("{id:?}: {rule}")]
    BadId { id: String, rule: &'static str },
    #[error("{0}")]
    Refused(String),
}

/// Journal bytes since the last checkpoint that trigger the next one (at least).
const MIN_CHECKPOINT_JOURNAL_BYTES: usize = 64 << 20;

/// Largest value written, so sled keeps every value inline in its log (it writes
/// values past ~128 KiB as one file each, which costs far more).
const MAX_VALUE_BYTES: usize = 64 << 10;

/// What one applied batch did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApplyReport {
    pub stored: u64,
    pub rejected: u64,
    /// Records at or below the stored offsets (redelivered): skipped.
    pub duplicates_skipped: u64,
    /// (topic, partition, next offset) written in this batch.
    pub offsets: Vec<(String, i32, i64)>,
    /// Time spent preparing the write (encoding, aggregating), in sled's
    /// `apply_batch`, and in the flush, nanoseconds.
    pub prepare_ns: u64,
    pub write_ns: u64,
    pub flush_ns: u64,
}

/// The part of the store any thread may read (and that model versions and dead
/// letters are written through): events, dead letters, catalog, models. A
/// [`Store`] derefs to it; [`Store::view`] hands a clone to other threads, so long
/// reads (exports) never hold up ingestion.
#[derive(Clone)]
pub struct StoreView {
    db: sled::Db,
    tree: sled::Tree,
}

pub struct Store {
    view: StoreView,
    path: PathBuf,
    /// Next offset per (namespace, topic, partition), as stored.
    offsets: HashMap<(String, String, i32), i64>,
    /// The aggregates (durable through the journal and checkpoints).
    state: state::State,
    /// Next journal sequence number.
    seq: u64,
    /// Current checkpoint generation.
    gen: u64,
    /// Journal bytes written since the last checkpoint.
    journal_bytes: usize,
    /// The listening graph's index over the stored edges.
    graph: crate::graph::MusicGraph,
    /// Every stored movie and series (latest record), for content affinity.
    titles: crate::affinity::CatalogIndex,
}

impl std::ops::Deref for Store {
    type Target = StoreView;

    fn deref(&self) -> &StoreView {
        &self.view
    }
}

impl std::fmt::Debug for StoreView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreView")
    }
}

impl StoreView {
    /// Removes dead letters by id (after a replay, or a purge); answers how many
    /// existed.
    pub fn remove_dead_letters(&self, ids: &[String]) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for id in ids {
            let k = read::dead_letter_key(id)?;
            if self.tree.contains_key(&k)? {
                n += 1;
                batch.remove(k);
            }
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(n)
    }
}

impl Store {
    /// A handle for reads on other threads.
    pub fn view(&self) -> StoreView {
        self.view.clone()
    }

    pub fn open(dir: &Path, cache_mb: u64) -> Result<Store, StoreError> {
        let path = dir.join("store");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_mb.saturating_mul(1 << 20))
            .open()
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let tree = db.open_tree("main").map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let mut offsets = HashMap::new();
        for item in tree.scan_prefix(keys::OFFSET) {
            let (k, v) = item?;
            let rest = &k[keys::OFFSET.len()..];
            let parsed = (|| {
                let i = rest.iter().position(|&b| b == 0)?;
                let ns = String::from_utf8(rest[..i].to_vec()).ok()?;
                let tail = &rest[i + 1..];
                let j = tail.iter().position(|&b| b == 0)?;
                let topic = String::from_utf8(tail[..j].to_vec()).ok()?;
                let partition = u32::from_be_bytes(tail.get(j + 1..j + 5)?.try_into().ok()?) as i32;
                let next = i64::from_be_bytes(v.as_ref().try_into().ok()?);
                Some(((ns, topic, partition), next))
            })();
            let (key, next) = parsed.ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                message: "offset entry has the wrong shape".into(),
            })?;
            offsets.insert(key, next);
        }
        let mut store = Store {
            view: StoreView { db, tree },
            path,
            offsets,
            state: state::State::default(),
            seq: 0,
            gen: 0,
            journal_bytes: 0,
            graph: crate::graph::MusicGraph::default(),
            titles: crate::affinity::CatalogIndex::default(),
        };
        store.load_state()?;
        store.rebuild_indexes()?;
        Ok(store)
    }

    /// Loads the latest checkpoint, drops unfinished ones, replays the journal after it.
    fn load_state(&mut self) -> Result<(), StoreError> {
        let (gen, covered) = match self.tree.get(state::CHECKPOINT_CURRENT)? {
            Some(v) if v.len() == 16 => {
                let gen = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
                let covered = u64::from_be_bytes(v[8..].try_into().unwrap_or([0; 8]));
                (gen, Some(covered))
            }
            Some(_) => {
                return Err(StoreError::Corrupt {
                    key: "k/current".into(),
                    message: "wrong length".into(),
                })
            }
            None => (0, None),
        };
        self.gen = gen;
        let current = state::checkpoint_gen_prefix(gen);
        let mut orphans = Vec::new();
        for item in self.tree.scan_prefix(state::CHECKPOINT) {
            let (k, v) = item?;
            if covered.is_some() && k.starts_with(&current) {
                let st = &mut self.state;
                state::decode_entries(&v, |key, slots| st.merge(key, slots)).ok_or_else(|| {
                    StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        message: "unreadable checkpoint chunk".into(),
                    }
                })?;
            } else {
                orphans.push(k);
            }
        }
        for k in orphans {
            self.tree.remove(k)?;
        }
        let mut next = covered.map_or(0, |c| c + 1);
        for item in self.tree.scan_prefix(state::JOURNAL) {
            let (k, v) = item?;
            let seq = state::journal_seq(&k);
            if covered.is_some_and(|c| seq <= c) {
                continue;
            }
            let st = &mut self.state;
            state::decode_entries(&v, |key, slots| st.merge(key, slots)).ok_or_else(|| {
                StoreError::Corrupt {
                    key: format!("j/{seq}"),
                    message: "unreadable journal entry".into(),
                }
            })?;
            self.journal_bytes += v.len();
            next = seq + 1;
        }
        self.seq = next;
        Ok(())
    }

    /// Writes the whole aggregate state as a new checkpoint and drops the journal it covers.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        if self.seq == 0 {
            return Ok(());
        }
        let gen = self.gen + 1;
        let entries: Vec<(&Vec<u8>, &Box<[f64]>)> = self.state.entries().collect();
        for (i, chunk) in entries.chunks(MAX_VALUE_BYTES / 96).enumerate() {
            let value = state::encode_entries(chunk.iter().map(|(k, v)| (k.as_slice(), &v[..])));
            self.tree
                .insert(state::checkpoint_chunk_key(gen, i as u32), value)?;
        }
        let covered = self.seq - 1;
        let mut batch = sled::Batch::default();
        let mut pointer = gen.to_be_bytes().to_vec();
        pointer.extend_from_slice(&covered.to_be_bytes());
        batch.insert(state::CHECKPOINT_CURRENT, pointer);
        for item in self.tree.scan_prefix(state::JOURNAL) {
            batch.remove(item?.0);
        }
        for item in self
            .tree
            .scan_prefix(state::checkpoint_gen_prefix(self.gen))
        {
            batch.remove(item?.0);
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        self.gen = gen;
        self.journal_bytes = 0;
        Ok(())
    }

    /// Checkpoints and flushes (a clean shutdown makes the next open fast).
    pub fn close(&mut self) -> Result<(), StoreError> {
        if self.journal_bytes > 0 {
            self.checkpoint()?;
        }
        self.db.flush()?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored next offset of a partition in an offset namespace.
    pub fn next_offset(&self, namespace: &str, topic: &str, partition: i32) -> Option<i64> {
        self.offsets
            .get(&(namespace.to_string(), topic.to_string(), partition))
            .copied()
    }

    /// All stored next offsets of a namespace.
    pub fn offsets(&self, namespace: &str) -> Vec<(String, i32, i64)> {
        let mut v: Vec<_> = self
            .offsets
            .iter()
            .filter(|((ns, _, _), _)| ns == namespace)
            .map(|((_, t, p), o)| (t.clone(), *p, *o))
            .collect();
        v.sort();
        v
    }

    /// A consistent copy of the whole store into the data dir `dest` (which must
    /// not hold a store yet): checkpoints, then copies every entry while no batch
    /// is written (call it on the store's thread). `playpulse run --data-dir DEST`
    /// starts from the copy. The copy is a new member of the consumer group: its
    /// member id (see `claims`) is not copied. Answers (entries, bytes).
    pub fn backup(&mut self, dest: &Path) -> Result<(u64, u64), StoreError> {
        let path = dest.join("store");
        if path.exists() {
            return Err(StoreError::Refused(format!(
                "{:?}: already holds a store: choose an empty or new directory for the snapshot",
                dest.display().to_string()
            )));
        }
        self.checkpoint()?;
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let db = sled::Config::new().path(&path).open().map_err(open_err)?;
        let tree = db.open_tree("main").map_err(open_err)?;
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        for item in self.tree.iter() {
            let (k, v) = item?;
            if k.as_ref() == keys::MEMBER {
                continue;
            }
            n += 1;
            bytes += (k.len() + v.len()) as u64;
            pending += k.len() + v.len();
            batch.insert(k, v);
            if pending > 8 << 20 {
                tree.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        tree.apply_batch(batch)?;
        db.flush()?;
        Ok((n, bytes))
    }

    /// Every stored next offset: namespace → `topic/partition` → next offset.
    pub fn all_offsets(
        &self,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> {
        let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> =
            Default::default();
        for ((ns, t, p), o) in &self.offsets {
            out.entry(ns.clone())
                .or_default()
                .insert(format!("{t}/{p}"), *o);
        }
        out
    }

    /// A handle for readers on other threads (the consumer's rebalance callback).
    pub fn tree(&self) -> sled::Tree {
        self.tree.clone()
    }

    /// Upserts a catalog record unless the stored one is newer.
    fn upsert(
        &self,
        batch: &mut sled::Batch,
        pending: &mut HashMap<Vec<u8>, i64>,
        key: Vec<u8>,
        ts_ms: i64,
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        let current = match pending.get(&key) {
            Some(ts) => Some(*ts),
            None => self
                .tree
                .get(&key)?
                .and_then(|b| Event::decode(&b).ok())
                .map(|e| match e {
                    Event::User(u) => u.timestamp_ms,
                    Event::Movie(t) | Event::Series(t) => t.timestamp_ms,
                    _ => i64::MIN,
                }),
        };
        if current.is_none_or(|c| ts_ms >= c) {
            pending.insert(key.clone(), ts_ms);
            batch.insert(key, value);
        }
        Ok(())
    }

    /// Prepares and applies records (see [`prepare::prepare`] and [`Store::apply`]).
    pub fn apply_records(
        &mut self,
        namespace: &str,
        records: Vec<Processed>,
    ) -> Result<ApplyReport, StoreError> {
        self.apply(namespace, prepare::prepare(records))
    }

    /// Applies one prepared input batch atomically and durably (see the module docs).
    pub fn apply(
        &mut self,
        namespace: &str,
        prepared: Prepared,
    ) -> Result<ApplyReport, StoreError> {
        self.apply_observed(namespace, prepared, |_, _| {})
    }

    /// [`Store::apply`], then `observe(records, fresh)` once the batch is durable
    /// (`fresh[i]`: record i was stored, not skipped as a redelivery).
    pub fn apply_observed(
        &mut self,
        namespace: &str,
        prepared: Prepared,
        observe: impl FnOnce(&[Processed], &[bool]),
    ) -> Result<ApplyReport, StoreError> {
        let t0 = std::time::Instant::now();
        let Prepared {
            records,
            encoded,
            deltas,
        } = prepared;
        let mut batch = sled::Batch::default();
        let mut segments: FxHashMap<(&str, i32), (i64, Vec<u8>)> = FxHashMap::default();
        let seg_key = |topic: &str, partition: i32, first: i64| {
            keys::position(keys::EVENT, topic, partition, first)
        };
        let mut running: FxHashMap<(&str, i32), i64> = FxHashMap::default();
        let mut report = ApplyReport::default();
        let mut catalog_pending: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut fresh = Vec::with_capacity(records.len());

        for (r, value) in records.iter().zip(&encoded) {
            let topic: &str = &r.pos.topic;
            let next = running.entry((topic, r.pos.partition)).or_insert_with(|| {
                self.next_offset(namespace, topic, r.pos.partition)
                    .unwrap_or(0)
            });
            let is_new = r.pos.offset >= *next;
            fresh.push(is_new);
            if !is_new {
                report.duplicates_skipped += 1;
                continue;
            }
            *next = r.pos.offset + 1;
            match &r.outcome {
                Outcome::Valid(ev) => {
                    report.stored += 1;
                    self.upsert_catalog(ev, value, &mut batch, &mut catalog_pending)?;
                    let seg = segments
                        .entry((topic, r.pos.partition))
                        .or_insert_with(|| (r.pos.offset, Vec::new()));
                    if !seg.1.is_empty() && seg.1.len() + value.len() + 12 > MAX_VALUE_BYTES {
                        let full = std::mem::take(&mut seg.1);
                        batch.insert(seg_key(topic, r.pos.partition, seg.0), full);
                        seg.0 = r.pos.offset;
                    }
                    seg.1.extend_from_slice(&r.pos.offset.to_le_bytes());
                    seg.1.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    seg.1.extend_from_slice(value);
                }
                Outcome::Rejected { rejection, raw } => {
                    report.rejected += 1;
                    let text = std::str::from_utf8(raw).ok();
                    let dead = DeadLetter {
                        rejection: rejection.clone(),
                        topic: topic.to_string(),
                        partition: r.pos.partition,
                        offset: r.pos.offset,
                        origin: r.origin.clone(),
                        headers: r.headers.clone(),
                        raw: text.map(str::to_string),
                        raw_hex: if text.is_none() {
                            Some(raw.iter().map(|b| format!("{b:02x}")).collect())
                        } else {
                            None
                        },
                    };
                    let value = serde_json::to_vec(&dead).unwrap_or_default();
                    batch.insert(
                        keys::position(keys::DEAD, topic, r.pos.partition, r.pos.offset),
                        value,
                    );
                }
            }
        }
        // Redelivered records were skipped: their deltas must not count.
        let mut deltas = if report.duplicates_skipped > 0 {
            prepare::deltas_of(
                records
                    .iter()
                    .zip(&fresh)
                    .filter(|(_, f)| **f)
                    .map(|(r, _)| r),
            )
        } else {
            deltas
        };
        deltas.count("duplicates_skipped", report.duplicates_skipped as f64);

        for ((topic, partition), (first, bytes)) in segments {
            batch.insert(seg_key(topic, partition, first), bytes);
        }
        let mut journal_len = 0;
        let entries: Vec<(&Vec<u8>, &Vec<f64>)> = deltas.map.iter().collect();
        // About 70 bytes an entry: parts of at most MAX_VALUE_BYTES.
        for (part, chunk) in entries.chunks(MAX_VALUE_BYTES / 96).enumerate() {
            let journal =
                state::encode_entries(chunk.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
            journal_len += journal.len();
            batch.insert(state::journal_key(self.seq, part as u32), journal);
        }
        let mut new_offsets = Vec::with_capacity(running.len());
        for ((topic, partition), next) in running {
            batch.insert(
                keys::offset_key(namespace, topic, partition),
                &next.to_be_bytes(),
            );
            new_offsets.push((topic.to_string(), partition, next));
        }
        let t1 = std::time::Instant::now();
        self.tree.apply_batch(batch)?;
        let t2 = std::time::Instant::now();
        self.db.flush()?;
        report.prepare_ns = (t1 - t0).as_nanos() as u64;
        report.write_ns = (t2 - t1).as_nanos() as u64;
        report.flush_ns = t2.elapsed().as_nanos() as u64;

        // Durable: now the in-memory views may follow.
        for (k, d) in &deltas.map {
            self.state.merge(k, d);
        }
        self.seq += 1;
        self.journal_bytes += journal_len;
        for (t, p, o) in &new_offsets {
            self.offsets
                .insert((namespace.to_string(), t.clone(), *p), *o);
        }
        new_offsets.sort();
        report.offsets = new_offsets;
        for (r, _) in records.iter().zip(&fresh).filter(|(_, f)| **f) {
            match &r.outcome {
                Outcome::Valid(Event::Music(m)) => self.graph.observe(m),
                Outcome::Valid(Event::Track(t)) => self.graph.upsert_track(t),
                Outcome::Valid(Event::Movie(t)) => self.titles.upsert("movie", t),
                Outcome::Valid(Event::Series(t)) => self.titles.upsert("series", t),
                _ => {}
            }
        }
        observe(&records, &fresh);
        if self.journal_bytes > MIN_CHECKPOINT_JOURNAL_BYTES.max(self.state.approx_bytes()) {
            self.checkpoint()?;
        }
        Ok(report)
    }

    /// The listening graph (queries answer from its index).
    pub fn graph(&self) -> &crate::graph::MusicGraph {
        &self.graph
    }

    /// Every stored movie and series (latest record of each).
    pub fn titles(&self) -> &crate::affinity::CatalogIndex {
        &self.titles
    }

    /// Builds the graph's index from the stored listening aggregates and tracks,
    /// and the titles' index from the catalog.
    fn rebuild_indexes(&mut self) -> Result<(), StoreError> {
        let mut titles = crate::affinity::CatalogIndex::default();
        for prefix in [keys::CAT_MOVIE, keys::CAT_SERIES] {
            for item in self.tree.scan_prefix(prefix) {
                let (k, v) = item?;
                match Event::decode(&v) {
                    Ok(Event::Movie(t)) => titles.upsert("movie", &t),
                    Ok(Event::Series(t)) => titles.upsert("series", &t),
                    _ => {
                        return Err(StoreError::Corrupt {
                            key: String::from_utf8_lossy(&k).into_owned(),
                            message: "not a movie or series record".into(),
                        })
                    }
                }
            }
        }
        self.titles = titles;
        let mut g = crate::graph::MusicGraph::default();
        for (u, t, agg) in self.music_aggregates()? {
            g.set_edge(&u, &t, agg);
        }
        for item in self.tree.scan_prefix(keys::CAT_TRACK) {
            let (k, v) = item?;
            match Event::decode(&v) {
                Ok(Event::Track(t)) => g.upsert_track(&t),
                _ => {
                    return Err(StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        message: "not a track record".into(),
                    })
                }
            }
        }
        self.graph = g;
        Ok(())
    }

    fn upsert_catalog(
        &self,
        ev: &Event,
        value: &[u8],
        batch: &mut sled::Batch,
        pending: &mut HashMap<Vec<u8>, i64>,
    ) -> Result<(), StoreError> {
        let (key, ts) = match ev {
            Event::User(u) => (
                keys::join(keys::CAT_USER, &[u.id.as_bytes()]),
                u.timestamp_ms,
            ),
            Event::Movie(t) => (
                keys::join(keys::CAT_MOVIE, &[t.id.as_bytes()]),
                t.timestamp_ms,
            ),
            Event::Series(t) => (
                keys::join(keys::CAT_SERIES, &[t.id.as_bytes()]),
                t.timestamp_ms,
            ),
            // Tracks carry no timestamp: the latest delivered wins.
            Event::Track(t) => (
                keys::join(keys::CAT_TRACK, &[t.track_id.as_bytes()]),
                i64::MAX,
            ),
            Event::Video(_) | Event::Music(_) => return Ok(()),
        };
        self.upsert(batch, pending, key, ts, value.to_vec())
    }
}

#[cfg(test)]
mod tests;
