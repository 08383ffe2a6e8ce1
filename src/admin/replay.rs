//! Dead-letter replay: after a fix (a config change, a corrected producer, a new
//! parser), records in the dead-letter store are sent again to the topic they
//! came from, with the format headers they came with, and leave the dead-letter
//! store once the broker has them. They then go through parsing and validation
//! like any record: stored if valid now, back in the dead-letter store (with a
//! new position) if not.

use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Serialize};

use crate::config::KafkaConfig;
use crate::kafka;
use crate::store::StoreView;
use crate::store::{dead_letter_id, DeadLetter, StoreError};

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("dead letter {0}: its raw bytes are unreadable")]
    Unreadable(String),
    #[error("no dead letter {0:?}; `dlq list` shows them")]
    NoSuch(String),
    #[error("replay of {id} failed: {why}")]
    Send { id: String, why: String },
    #[error(
        "the broker did not take the replayed records: {0}; they stay in the dead-letter store"
    )]
    Undelivered(String),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaGlueError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a replay sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replayed {
    pub replayed: usize,
    pub ids: Vec<String>,
}

fn payload(d: &DeadLetter) -> Result<Vec<u8>, ReplayError> {
    if let Some(raw) = &d.raw {
        return Ok(raw.clone().into_bytes());
    }
    let hex = d.raw_hex.as_deref().unwrap_or("");
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| ReplayError::Unreadable(dead_letter_id(d)))
        })
        .collect()
}

fn headers(d: &DeadLetter) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    if let Some(f) = &d.headers.format {
        h = h.insert(Header {
            key: crate::ingest::parse::HEADER_FORMAT,
            value: Some(f.as_str()),
        });
    }
    if let Some(c) = &d.headers.columns {
        h = h.insert(Header {
            key: crate::ingest::parse::HEADER_COLUMNS,
            value: Some(c.as_str()),
        });
    }
    let origin = match &d.origin {
        Some(o) => format!("{o} (replayed from {})", dead_letter_id(d)),
        None => format!("replayed from {}", dead_letter_id(d)),
    };
    h.insert(Header {
        key: crate::ingest::parse::HEADER_SOURCE,
        value: Some(origin.as_str()),
    })
}

/// Replays one dead letter (`id`) or up to `limit` of them (those with `reason`
/// when given).
pub fn replay(
    view: &StoreView,
    brokers: &str,
    kafka_cfg: &KafkaConfig,
    id: Option<String>,
    reason: Option<String>,
    limit: usize,
) -> Result<Replayed, ReplayError> {
    let letters: Vec<(String, DeadLetter)> = match id {
        Some(id) => match view.dead_letter(&id)? {
            Some(d) => vec![(id, d)],
            None => return Err(ReplayError::NoSuch(id)),
        },
        None => view.dead_letter_page(None, limit, reason.as_deref())?,
    };
    if letters.is_empty() {
        return Ok(Replayed {
            replayed: 0,
            ids: Vec::new(),
        });
    }
    let producer = kafka::producer(brokers, kafka_cfg)?;
    let mut ids = Vec::with_capacity(letters.len());
    for (id, d) in &letters {
        let bytes = payload(d)?;
        kafka::send(&producer, &d.topic, b"", &bytes, Some(&headers(d))).map_err(|e| {
            ReplayError::Send {
                id: id.clone(),
                why: e.to_string(),
            }
        })?;
        ids.push(id.clone());
    }
    kafka::flush(&producer, std::time::Duration::from_secs(30))
        .map_err(|e| ReplayError::Undelivered(e.to_string()))?;
    let removed = view.remove_dead_letters(&ids)?;
    tracing::info!("replayed {removed} dead letters");
    Ok(Replayed {
        replayed: removed,
        ids,
    })
}
