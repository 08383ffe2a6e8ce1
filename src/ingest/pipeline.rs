//! The pure steps of ingest, callable without actors or a broker: parse a batch
//! of raw records, validate a batch of parsed ones; plus the shared progress
//! counters the actors publish and the monitor reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::topics::TopicKinds;
use crate::domain::event::Event;
use crate::domain::record::{FormatHeaders, Outcome, Processed, RawRecord, SourcePos};
use crate::domain::reject::Rejection;
use crate::ingest::parse::{parse_payload, Format};
use crate::ingest::validate::Validator;
use crate::store::{prepare_with, Committed, Prepared, Store, StoreError};

/// A parsed (not yet validated) record; the raw bytes ride along for the dead-letter store.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub pos: SourcePos,
    pub origin: Option<String>,
    /// The record's format headers, kept so a dead letter can be replayed as it came.
    pub headers: FormatHeaders,
    pub result: Result<Event, Rejection>,
    pub raw: Vec<u8>,
}

/// Parses one raw record.
pub fn parse_one(kinds: &TopicKinds, r: RawRecord) -> Parsed {
    let result = match (r.oversized, kinds.kind_of(&r.pos.topic)) {
        (Some((size, limit)), _) => Err(Rejection::field(
            "record_too_large",
            "record",
            Some(format!("{size} bytes")),
            format!("records are at most {limit} bytes (kafka.max_record_bytes); split it, or raise the limit (the dead letter keeps its first bytes)"),
        )),
        (None, kind) => match kind {
        None => Err(Rejection::field(
            "unknown_topic",
            "topic",
            Some(r.pos.topic.to_string()),
            "no kind is configured for this topic; map it under [kafka.topics]",
        )),
        Some(kind) => Format::from_headers(r.format.as_deref(), r.columns.as_deref())
            .and_then(|format| parse_payload(kind, &format, &r.payload)),
        },
    };
    Parsed {
        pos: r.pos,
        origin: r.origin,
        headers: FormatHeaders {
            format: r.format,
            columns: r.columns,
        },
        result,
        raw: r.payload,
    }
}

pub fn parse_batch(kinds: &TopicKinds, raws: Vec<RawRecord>) -> Vec<Parsed> {
    raws.into_iter().map(|r| parse_one(kinds, r)).collect()
}

/// Validates parsed records; rejected ones keep their raw bytes, valid ones drop them.
pub fn validate_batch(v: &Validator, parsed: Vec<Parsed>) -> Vec<Processed> {
    let now = crate::domain::timefmt::now_ms();
    parsed
        .into_iter()
        .map(|p| {
            let outcome = match p.result {
                Ok(mut ev) => match v.validate_in_place(&mut ev, now) {
                    Ok(()) => Outcome::Valid(ev),
                    Err(rejection) => Outcome::Rejected {
                        rejection,
                        raw: p.raw,
                    },
                },
                Err(rejection) => Outcome::Rejected {
                    rejection,
                    raw: p.raw,
                },
            };
            Processed {
                pos: p.pos,
                origin: p.origin,
                headers: p.headers,
                outcome,
            }
        })
        .collect()
}

/// Live counters shared by the actors (monotonic since start).
#[derive(Debug, Default)]
pub struct Progress {
    pub produced: AtomicU64,
    pub consumed: AtomicU64,
    pub stored: AtomicU64,
    pub rejected: AtomicU64,
    pub duplicates_skipped: AtomicU64,
    pub batches: AtomicU64,
    pub bytes: AtomicU64,
    pub in_flight: AtomicU64,
    /// Records read, then left to their partition's next owner (revoked
    /// before they were written).
    pub left_to_next_owner: AtomicU64,
    /// Where the time goes, nanoseconds per stage (summed over batches).
    pub poll_ns: AtomicU64,
    pub parse_ns: AtomicU64,
    pub validate_ns: AtomicU64,
    pub prepare_ns: AtomicU64,
    pub store_prepare_ns: AtomicU64,
    pub store_write_ns: AtomicU64,
    pub store_flush_ns: AtomicU64,
}

impl Progress {
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    pub fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds the time since `since` to a stage counter.
    pub fn time(a: &AtomicU64, since: Instant) {
        a.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Seconds spent per stage so far.
    pub fn stage_seconds(&self) -> StageSeconds {
        let s = |a: &AtomicU64| Self::get(a) as f64 / 1e9;
        StageSeconds {
            poll: s(&self.poll_ns),
            parse: s(&self.parse_ns),
            validate: s(&self.validate_ns),
            prepare: s(&self.prepare_ns),
            store_prepare: s(&self.store_prepare_ns),
            store_write: s(&self.store_write_ns),
            store_flush: s(&self.store_flush_ns),
        }
    }

    /// Records that reached the store (stored or dead-lettered).
    pub fn done(&self) -> u64 {
        Self::get(&self.stored) + Self::get(&self.rejected)
    }
}

/// Which partitions' records the store may still write. Where offsets are
/// committed after writes, a revoked partition's next owner starts at the
/// offset this member commits when it hands the partition over; records of it
/// still on their way to the store belong to that owner then. Each batch
/// carries the epoch it was read in. A hand-over revokes its partitions at a
/// new epoch under the lock every write holds: a write under way ends first,
/// so the offsets read after the revocation are final, and a batch read
/// before it loses those partitions' records (the next owner reads them).
#[derive(Debug, Default)]
pub struct Ownership {
    /// Every write holds this lock.
    revoked: std::sync::Mutex<Revocations>,
    /// The epoch, readable without waiting for a write (changed under the
    /// lock).
    epoch: AtomicU64,
}

/// topic → partition → the epoch it was last revoked in (looked up by the
/// records' borrowed topics).
type Revocations = HashMap<String, HashMap<i32, u64>>;

/// A batch written through [`Ownership::write`].
pub struct Written {
    pub committed: Committed,
    /// Records left out: their partition was revoked after the batch was read.
    pub dropped: u64,
}

impl Ownership {
    /// The epoch a batch read now is read in.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Revocations> {
        self.revoked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Revokes `parts`: batches read before now write none of their records.
    /// Returns once the write under way (if any) has ended.
    pub fn revoke(&self, parts: &[(String, i32)]) {
        let mut r = self.lock();
        let epoch = self.epoch() + 1;
        for (topic, partition) in parts {
            r.entry(topic.clone())
                .or_default()
                .insert(*partition, epoch);
        }
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Writes a batch read in `epoch`, without the records of partitions
    /// revoked since (their sums are made again without them).
    pub fn write(
        &self,
        store: &mut Store,
        namespace: &str,
        epoch: u64,
        prepared: Prepared,
    ) -> Result<Written, StoreError> {
        let r = self.lock();
        let current = self.epoch() == epoch;
        let revoked = |pos: &SourcePos| {
            !current
                && r.get(&*pos.topic)
                    .and_then(|parts| parts.get(&pos.partition))
                    .is_some_and(|&at| at > epoch)
        };
        if !prepared.records.iter().any(|p| revoked(&p.pos)) {
            // Nothing of it was revoked: the sums stand as they are.
            return Ok(Written {
                committed: store.apply(namespace, prepared)?,
                dropped: 0,
            });
        }
        let before = prepared.records.len();
        let kept: Vec<Processed> = prepared
            .records
            .into_iter()
            .filter(|p| !revoked(&p.pos))
            .collect();
        let dropped = (before - kept.len()) as u64;
        let committed = if kept.is_empty() {
            Committed::default()
        } else {
            store.apply(namespace, prepare_with(kept, &store.rollup_tuning()))?
        };
        Ok(Written { committed, dropped })
    }
}

/// A fault the daemon cannot go on after (the store cannot write): the first
/// one raised is kept, and whoever waits on it learns of it at once.
#[derive(Debug, Default)]
pub struct Fatal {
    message: std::sync::Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Fatal {
    pub fn raise(&self, message: String) {
        let mut m = self.message.lock().unwrap_or_else(|p| p.into_inner());
        if m.is_none() {
            *m = Some(message);
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    pub fn get(&self) -> Option<String> {
        self.message
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves with the message once a fault is raised.
    pub async fn wait(&self) -> String {
        loop {
            let notified = self.notify.notified();
            if let Some(m) = self.get() {
                return m;
            }
            notified.await;
        }
    }
}

/// Busy seconds per pipeline stage.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct StageSeconds {
    pub poll: f64,
    pub parse: f64,
    pub validate: f64,
    pub prepare: f64,
    pub store_prepare: f64,
    pub store_write: f64,
    pub store_flush: f64,
}

impl StageSeconds {
    /// Each stage by name.
    pub fn all(&self) -> [(&'static str, f64); 7] {
        [
            ("poll", self.poll),
            ("parse", self.parse),
            ("validate", self.validate),
            ("prepare", self.prepare),
            ("store_prepare", self.store_prepare),
            ("store_write", self.store_write),
            ("store_flush", self.store_flush),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pairs::tests::records;
    use crate::store::prepare;

    fn open(dir: &std::path::Path) -> Store {
        Store::open(dir, 16).unwrap()
    }

    #[test]
    fn a_revoked_partition_loses_its_records_of_batches_read_before_and_the_sums_follow() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut fenced, mut alone) = (open(&tmp.path().join("f")), open(&tmp.path().join("a")));
        let own = Ownership::default();
        let all = records(200);

        // Read before the revocation: partition 1's records are left out.
        let read_in = own.epoch();
        own.revoke(&[("v".to_string(), 1), ("other".to_string(), 0)]);
        assert_eq!(own.epoch(), read_in + 1);
        let w = own
            .write(&mut fenced, "ns", read_in, prepare(all.clone()))
            .unwrap();
        assert_eq!((w.dropped, w.committed.report.stored), (100, 100));
        assert_eq!(
            w.committed.report.offsets,
            vec![("v".to_string(), 0, 100)],
            "only partition 0's offset moves"
        );
        assert!(w.committed.records.iter().all(|r| r.pos.partition == 0));

        // The same as a store given only partition 0's records.
        let kept: Vec<Processed> = all
            .iter()
            .filter(|r| r.pos.partition == 0)
            .cloned()
            .collect();
        alone.apply("ns", prepare(kept)).unwrap();
        // (Size on disk is sled's layout, not the data: left out.)
        let stats = |s: &Store| crate::store::Stats {
            size_on_disk_bytes: None,
            ..s.stats(None).unwrap()
        };
        assert_eq!(stats(&fenced), stats(&alone));
        assert_eq!(fenced.counters().unwrap(), alone.counters().unwrap());
        assert_eq!(fenced.next_offset("ns", "v", 1), None);

        // A batch read after the revocation (the partition came back) is whole.
        let w = own
            .write(&mut fenced, "ns", own.epoch(), prepare(records(200)))
            .unwrap();
        assert_eq!(w.dropped, 0);
        assert_eq!(fenced.next_offset("ns", "v", 1), Some(100));

        // Every record of a batch revoked: nothing is written, nothing moves.
        let before = fenced.counters().unwrap();
        let read_in = own.epoch();
        own.revoke(&[("v".to_string(), 0), ("v".to_string(), 1)]);
        let w = own
            .write(&mut fenced, "ns", read_in, prepare(records(300)))
            .unwrap();
        assert_eq!((w.dropped, w.committed.report.stored), (300, 0));
        assert!(w.committed.report.offsets.is_empty());
        assert_eq!(fenced.counters().unwrap(), before);
        assert_eq!(fenced.next_offset("ns", "v", 0), Some(100));
    }
}
