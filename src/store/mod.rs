//! The sled store. Each input batch — events, aggregates, QoE and engagement
//! counters, catalog upserts, dead letters and the next source offset per
//! partition — is one atomic `apply_batch` on one tree, flushed before it is
//! acknowledged. A record whose offset is below its partition's stored next
//! offset was already stored and is skipped: replays never count twice.

pub mod keys;
mod read;
pub mod slots;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::event::{Event, Title, VideoEvent};
use crate::record::{Outcome, Processed};
use crate::reject::Rejection;
use slots::Layout;

pub use read::{read_offset, DeadLetter, QoeDim};
pub use slots::{MusicAgg, PairAgg, Qoe};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}; is another playpulse using this data dir? (stop it, or pass another --data-dir)")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store write failed: {0}; check free disk space and permissions of the data dir")]
    Sled(#[from] sled::Error),
    #[error("store entry {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

/// Entries of the in-memory aggregate cache before it is cleared (bounds memory).
const CACHE_LIMIT: usize = 2_000_000;

/// What one applied batch did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApplyReport {
    pub stored: u64,
    pub rejected: u64,
    /// Records at or below the stored offsets (redelivered): skipped.
    pub duplicates_skipped: u64,
    /// (topic, partition, next offset) written in this batch.
    pub offsets: Vec<(String, i32, i64)>,
}

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
    /// Next offset per (namespace, topic, partition), as stored.
    offsets: HashMap<(String, String, i32), i64>,
    /// Aggregate slots as stored (a read cache, written through).
    cache: HashMap<Vec<u8>, Vec<f64>>,
}

/// A dead-letter entry as written.
#[derive(Serialize)]
struct DeadOut<'a> {
    #[serde(flatten)]
    rejection: &'a Rejection,
    topic: &'a str,
    partition: i32,
    offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_hex: Option<String>,
}

struct Deltas {
    map: HashMap<Vec<u8>, (Layout, Vec<f64>)>,
}

impl Deltas {
    fn add(&mut self, key: Vec<u8>, layout: Layout, delta: &[f64]) {
        let e = self.map.entry(key).or_insert_with(|| (layout, slots::zero(layout)));
        slots::combine(layout, &mut e.1, delta);
    }

    fn count(&mut self, name: &str, n: f64) {
        self.add(keys::join(keys::COUNTER, &[name.as_bytes()]), slots::COUNT, &[n]);
    }
}

fn video_qoe(v: &VideoEvent, feedback: f64) -> Qoe {
    let failed = v.error.is_some() && v.watch_time_seconds == 0.0;
    Qoe {
        events: 1,
        watch_seconds: v.watch_time_seconds,
        buffering_events: v.buffering_events as u64,
        rebuffer_ms: v.rebuffer_ms.unwrap_or(0.0),
        startup_ms_sum: v.startup_time_ms.unwrap_or(0.0),
        startups: u64::from(v.startup_time_ms.is_some()),
        start_failures: u64::from(failed),
        skipped: u64::from(v.skipped),
        paused: u64::from(v.paused),
        bitrate_kbps_sum: v.bitrate_kbps as f64,
        recommended: u64::from(v.recommended),
        feedback_sum: feedback,
    }
}

impl Store {
    pub fn open(dir: &Path, cache_mb: u64) -> Result<Store, StoreError> {
        let path = dir.join("store");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_mb.saturating_mul(1 << 20))
            .open()
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        let tree = db.open_tree("main").map_err(|source| StoreError::Open { path: path.clone(), source })?;
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
        Ok(Store { db, tree, path, offsets, cache: HashMap::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored next offset of a partition in an offset namespace.
    pub fn next_offset(&self, namespace: &str, topic: &str, partition: i32) -> Option<i64> {
        self.offsets.get(&(namespace.to_string(), topic.to_string(), partition)).copied()
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

    /// A handle for readers on other threads (the consumer's rebalance callback).
    pub fn tree(&self) -> sled::Tree {
        self.tree.clone()
    }

    fn slots_of(&self, key: &[u8], layout: Layout) -> Result<Vec<f64>, StoreError> {
        if let Some(v) = self.cache.get(key) {
            return Ok(v.clone());
        }
        match self.tree.get(key)? {
            Some(bytes) => slots::decode(layout, &bytes).ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                message: format!("expected {} bytes, found {}", layout.len() * 8, bytes.len()),
            }),
            None => Ok(slots::zero(layout)),
        }
    }

    /// Upserts a catalog record unless the stored one is newer.
    fn upsert(&self, batch: &mut sled::Batch, pending: &mut HashMap<Vec<u8>, i64>, key: Vec<u8>, ts_ms: i64, value: Vec<u8>) -> Result<(), StoreError> {
        let current = match pending.get(&key) {
            Some(ts) => Some(*ts),
            None => self.tree.get(&key)?.and_then(|b| serde_json::from_slice::<Event>(&b).ok()).map(|e| match e {
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

    /// Applies one input batch atomically and durably (see the module docs).
    pub fn apply(&mut self, namespace: &str, records: &[Processed]) -> Result<ApplyReport, StoreError> {
        let mut batch = sled::Batch::default();
        let mut deltas = Deltas { map: HashMap::new() };
        let mut running: HashMap<(&str, i32), i64> = HashMap::new();
        let mut report = ApplyReport::default();
        let mut catalog_pending: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut per_type: HashMap<&'static str, f64> = HashMap::new();
        let mut rejected_by: HashMap<String, f64> = HashMap::new();

        for r in records {
            let topic: &str = &r.pos.topic;
            let next = running
                .entry((topic, r.pos.partition))
                .or_insert_with(|| self.next_offset(namespace, topic, r.pos.partition).unwrap_or(0));
            if r.pos.offset < *next {
                report.duplicates_skipped += 1;
                continue;
            }
            *next = r.pos.offset + 1;
            match &r.outcome {
                Outcome::Valid(ev) => {
                    report.stored += 1;
                    *per_type.entry(ev.type_name()).or_default() += 1.0;
                    let value = serde_json::to_vec(ev).map_err(|e| StoreError::Corrupt {
                        key: format!("{topic}/{}/{}", r.pos.partition, r.pos.offset),
                        message: e.to_string(),
                    })?;
                    self.index_event(ev, &value, &mut batch, &mut deltas, &mut catalog_pending)?;
                    batch.insert(keys::position(keys::EVENT, topic, r.pos.partition, r.pos.offset), value);
                }
                Outcome::Rejected { rejection, raw } => {
                    report.rejected += 1;
                    *rejected_by.entry(rejection.key()).or_default() += 1.0;
                    let text = std::str::from_utf8(raw).ok();
                    let dead = DeadOut {
                        rejection,
                        topic,
                        partition: r.pos.partition,
                        offset: r.pos.offset,
                        origin: r.origin.as_deref(),
                        raw: text,
                        raw_hex: if text.is_none() { Some(raw.iter().map(|b| format!("{b:02x}")).collect()) } else { None },
                    };
                    let value = serde_json::to_vec(&dead).unwrap_or_default();
                    batch.insert(keys::position(keys::DEAD, topic, r.pos.partition, r.pos.offset), value);
                }
            }
        }
        for (t, n) in per_type {
            deltas.count(&format!("stored/{t}"), n);
        }
        for (k, n) in rejected_by {
            deltas.count(&format!("rejected/{k}"), n);
        }
        deltas.count("stored", report.stored as f64);
        deltas.count("rejected", report.rejected as f64);
        deltas.count("duplicates_skipped", report.duplicates_skipped as f64);

        let mut staged = Vec::with_capacity(deltas.map.len());
        for (key, (layout, delta)) in deltas.map {
            let mut base = self.slots_of(&key, layout)?;
            slots::combine(layout, &mut base, &delta);
            batch.insert(key.clone(), slots::encode(&base));
            staged.push((key, base));
        }
        let mut new_offsets = Vec::with_capacity(running.len());
        for ((topic, partition), next) in running {
            batch.insert(keys::offset_key(namespace, topic, partition), &next.to_be_bytes());
            new_offsets.push((topic.to_string(), partition, next));
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;

        // Durable: now the in-memory views may follow.
        if self.cache.len() + staged.len() > CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.extend(staged);
        for (t, p, o) in &new_offsets {
            self.offsets.insert((namespace.to_string(), t.clone(), *p), *o);
        }
        new_offsets.sort();
        report.offsets = new_offsets;
        Ok(report)
    }

    fn index_event(
        &self,
        ev: &Event,
        value: &[u8],
        batch: &mut sled::Batch,
        deltas: &mut Deltas,
        catalog_pending: &mut HashMap<Vec<u8>, i64>,
    ) -> Result<(), StoreError> {
        match ev {
            Event::Video(v) => {
                let fb = v.implicit_feedback();
                let positive = if fb >= 0.5 { 1.0 } else { 0.0 };
                deltas.add(
                    keys::join(keys::PAIR, &[v.user_id.as_bytes(), v.video_id.as_bytes()]),
                    slots::PAIR,
                    &[fb, 1.0, positive, fb, v.timestamp_ms as f64],
                );
                let q = video_qoe(v, fb).slots();
                deltas.add(keys::join(keys::QOE_VIDEO, &[v.video_id.as_bytes()]), slots::QOE, &q);
                deltas.add(keys::join(keys::QOE_REGION, &[v.region.as_bytes()]), slots::QOE, &q);
                deltas.add(keys::join(keys::QOE_RESOLUTION, &[v.resolution.as_bytes()]), slots::QOE, &q);
                deltas.add(keys::join(keys::GENRE, &[v.genre.as_bytes()]), slots::QOE, &q);
            }
            Event::Music(m) => {
                let mut d = [0.0; 6];
                d[m.event_type.index()] = 1.0;
                d[5] = m.event_ts_ms as f64;
                deltas.add(keys::join(keys::MUSIC_PAIR, &[m.user_id.as_bytes(), m.track_id.as_bytes()]), slots::MUSIC, &d);
            }
            Event::User(u) => {
                let key = keys::join(keys::CAT_USER, &[u.id.as_bytes()]);
                self.upsert(batch, catalog_pending, key, u.timestamp_ms, value.to_vec())?;
            }
            Event::Movie(Title { id, timestamp_ms, .. }) => {
                let key = keys::join(keys::CAT_MOVIE, &[id.as_bytes()]);
                self.upsert(batch, catalog_pending, key, *timestamp_ms, value.to_vec())?;
            }
            Event::Series(Title { id, timestamp_ms, .. }) => {
                let key = keys::join(keys::CAT_SERIES, &[id.as_bytes()]);
                self.upsert(batch, catalog_pending, key, *timestamp_ms, value.to_vec())?;
            }
            Event::Track(t) => {
                // Tracks carry no timestamp: the latest delivered wins.
                batch.insert(keys::join(keys::CAT_TRACK, &[t.track_id.as_bytes()]), value.to_vec());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
