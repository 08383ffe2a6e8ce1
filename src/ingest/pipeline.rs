//! The pure steps of ingest, callable without actors or a broker: parse a batch
//! of raw records, validate a batch of parsed ones; plus the shared progress
//! counters the actors publish and the monitor reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::topics::TopicKinds;
use crate::domain::event::Event;
use crate::domain::record::{FormatHeaders, Outcome, Processed, RawRecord, SourcePos};
use crate::domain::reject::Rejection;
use crate::ingest::parse::{parse_payload, Format};
use crate::ingest::validate::Validator;

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

/// Batches between the consumer and the store: how many the consumer handed on
/// and how many the store has settled (written, or failed). Before a revoked
/// partition goes to another member of the group, the consumer waits until
/// every batch it handed on is settled and commits what the store holds, so the
/// next owner starts exactly where this one stopped.
#[derive(Debug, Default)]
pub struct Flight {
    sent: AtomicU64,
    settled: std::sync::Mutex<u64>,
    changed: std::sync::Condvar,
}

impl Flight {
    /// One more batch handed on towards the store.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::SeqCst);
    }

    /// The store finished one batch.
    pub fn settled(&self) {
        let mut s = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        *s += 1;
        self.changed.notify_all();
    }

    /// Waits until every batch handed on so far is settled; false on timeout.
    pub fn wait_settled(&self, timeout: std::time::Duration) -> bool {
        let target = self.sent.load(Ordering::SeqCst);
        let s = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| *s < target)
            .unwrap_or_else(|e| e.into_inner());
        *s >= target
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
