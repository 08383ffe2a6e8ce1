//! Records as they move through the pipeline: raw from Kafka, then parsed and
//! validated, each keeping its source position.

use std::sync::Arc;

use crate::domain::event::Event;
use crate::domain::reject::Rejection;

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourcePos {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

impl SourcePos {
    /// `topic`/`partition`@`offset`.
    pub fn new(topic: &str, partition: i32, offset: i64) -> SourcePos {
        SourcePos {
            topic: Arc::from(topic),
            partition,
            offset,
        }
    }
}

/// One record as consumed.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub pos: SourcePos,
    pub payload: Vec<u8>,
    /// `pp-format` header.
    pub format: Option<String>,
    /// `pp-columns` header.
    pub columns: Option<String>,
    /// `pp-source` header (file:line of imported data).
    pub origin: Option<String>,
    /// Kafka record timestamp, ms since the epoch.
    pub kafka_ts_ms: Option<i64>,
    /// (size, limit) of a record over `kafka.max_record_bytes`: its payload is
    /// then cut to its first [`OVERSIZED_KEPT_BYTES`], kept for the dead letter.
    pub oversized: Option<(usize, usize)>,
}

/// How much of an oversized record's payload its dead letter keeps.
pub const OVERSIZED_KEPT_BYTES: usize = 4096;

impl RawRecord {
    /// Marks the record oversized when its payload is over `limit` bytes.
    pub fn cap(&mut self, limit: usize) {
        let size = self.payload.len();
        if size > limit {
            self.payload.truncate(OVERSIZED_KEPT_BYTES.min(limit));
            self.payload.shrink_to_fit();
            self.oversized = Some((size, limit));
        }
    }
}

/// The outcome of parsing and validating a record.
#[derive(Debug, Clone)]
pub enum Outcome {
    Valid(Event),
    /// Rejected, with the raw bytes kept for the dead-letter store.
    Rejected {
        rejection: Rejection,
        raw: Vec<u8>,
    },
}

/// The `pp-format` and `pp-columns` headers a record came with.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FormatHeaders {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Processed {
    pub pos: SourcePos,
    pub origin: Option<String>,
    pub headers: FormatHeaders,
    pub outcome: Outcome,
}

impl Processed {
    /// The record at `pos` with `outcome`, of no named source and sent
    /// without format headers (what the store reads back of itself, and
    /// what tests and benches make).
    pub fn at(pos: SourcePos, outcome: Outcome) -> Processed {
        Processed {
            pos,
            origin: None,
            headers: FormatHeaders::default(),
            outcome,
        }
    }
}
