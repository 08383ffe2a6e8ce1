//! A batch's payloads in one buffer: each consumed record's bytes are copied
//! into the batch's buffer and the record holds a slice of it ([`Bytes`]),
//! not a block of its own. The buffer goes back to a small pool once every
//! record of its batch has let go of its bytes (valid records do at
//! validation; a rejected one copies its bytes out for its dead letter), so
//! the next batches copy into memory already in place: no allocation and no
//! cross-thread free per record, and no fresh pages to fault in.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message};

use crate::domain::record::{RawRecord, SourcePos};

/// Buffers kept for the batches to come: the parser fills one while the
/// batches before it are validated and stored.
const POOLED: usize = 4;
/// A buffer grown past this (a batch of very large records) is freed, not
/// kept: idle buffers hold at most 64 MiB.
const POOLED_MAX_BYTES: usize = 16 << 20;

/// Payload buffers whose batches are done with them.
#[derive(Debug, Default)]
pub struct PayloadPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl PayloadPool {
    fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .unwrap_or_default()
    }

    fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > POOLED_MAX_BYTES {
            return;
        }
        buf.clear();
        if let Ok(mut f) = self.free.lock() {
            if f.len() < POOLED {
                f.push(buf);
            }
        }
    }

    /// Buffers held now (for the tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.free.lock().map_or(0, |f| f.len())
    }
}

/// A batch's buffer, shared by its records' slices; back to the pool when
/// the last of them drops.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<PayloadPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// The records of one batch as they are read: their payloads' places in
/// the batch's buffer until [`Batch::finish`] hands each its slice.
pub struct Batch {
    pool: Arc<PayloadPool>,
    buf: Vec<u8>,
    records: Vec<(RawRecord, Range<usize>)>,
    /// Topic names, shared by the batch's records.
    topics: Vec<Arc<str>>,
}

impl Batch {
    pub fn new(pool: &Arc<PayloadPool>, capacity: usize) -> Batch {
        Batch {
            pool: pool.clone(),
            buf: pool.take(),
            records: Vec::with_capacity(capacity),
            topics: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Adds a consumed message.
    pub fn push(&mut self, m: &BorrowedMessage<'_>) {
        let topic = match self.topics.iter().find(|t| ***t == *m.topic()) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(m.topic());
                self.topics.push(t.clone());
                t
            }
        };
        let (mut format, mut columns, mut origin) = (None, None, None);
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                match h.key {
                    crate::ingest::parse::HEADER_FORMAT => format = header_str(&h),
                    crate::ingest::parse::HEADER_COLUMNS => columns = header_str(&h),
                    crate::ingest::parse::HEADER_SOURCE => origin = header_str(&h),
                    _ => {}
                }
            }
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(m.payload().unwrap_or_default());
        let record = RawRecord {
            pos: SourcePos {
                topic,
                partition: m.partition(),
                offset: m.offset(),
            },
            payload: Bytes::new(),
            format,
            columns,
            origin,
            kafka_ts_ms: m.timestamp().to_millis(),
            oversized: None,
        };
        self.records.push((record, start..self.buf.len()));
    }

    /// Keeps the records `keep` answers true for.
    pub fn retain(&mut self, mut keep: impl FnMut(&RawRecord) -> bool) {
        self.records.retain(|(r, _)| keep(r));
    }

    /// The records, each holding its payload's slice of the batch's buffer.
    pub fn finish(self) -> Vec<RawRecord> {
        let Batch {
            pool, buf, records, ..
        } = self;
        if records.is_empty() {
            pool.give(buf);
            return Vec::new();
        }
        let shared = Bytes::from_owner(Pooled { buf, pool });
        records
            .into_iter()
            .map(|(mut r, span)| {
                r.payload = shared.slice(span);
                r
            })
            .collect()
    }
}

fn header_str(h: &Header<'_, &[u8]>) -> Option<String> {
    h.value
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled(pool: &Arc<PayloadPool>, parts: &[&[u8]]) -> Vec<Bytes> {
        let mut buf = pool.take();
        let mut spans = Vec::new();
        for p in parts {
            let start = buf.len();
            buf.extend_from_slice(p);
            spans.push(start..buf.len());
        }
        let shared = Bytes::from_owner(Pooled {
            buf,
            pool: pool.clone(),
        });
        spans.into_iter().map(|s| shared.slice(s)).collect()
    }

    #[test]
    fn a_buffer_returns_to_the_pool_once_its_last_slice_drops_and_is_used_again() {
        let pool = Arc::new(PayloadPool::default());
        let mut slices = pooled(&pool, &[b"{\"a\":1}", b"", b"xyz"]);
        assert_eq!(slices[0].as_ref(), b"{\"a\":1}");
        assert!(slices[1].is_empty());
        assert_eq!(slices[2].as_ref(), b"xyz");
        let kept = slices.remove(2);
        drop(slices);
        // One slice still holds it: not back yet, and its bytes are intact.
        assert_eq!(pool.held(), 0);
        assert_eq!(kept.as_ref(), b"xyz");
        drop(kept);
        assert_eq!(pool.held(), 1);
        let again = pool.take();
        assert!(again.is_empty() && again.capacity() >= 10);
        assert_eq!(pool.held(), 0);
    }

    #[test]
    fn the_pool_keeps_a_few_buffers_and_none_grown_past_its_bound() {
        let pool = Arc::new(PayloadPool::default());
        let batches: Vec<Vec<Bytes>> = (0..POOLED + 3)
            .map(|i| pooled(&pool, &[format!("record {i}").as_bytes()]))
            .collect();
        drop(batches);
        assert_eq!(pool.held(), POOLED);
        let pool = Arc::new(PayloadPool::default());
        let big = vec![7u8; POOLED_MAX_BYTES + 1];
        drop(pooled(&pool, &[&big]));
        assert_eq!(pool.held(), 0);
    }
}
