//! Dead-letter replay: after a fix (a config change, a corrected producer, a new
//! parser), records in the dead-letter store are sent again to the topic they
//! came from, with the format headers they came with, and leave the dead-letter
//! store once the broker has them. They then go through parsing and validation
//! like any record: stored if valid now, back in the dead-letter store (with a
//! new position) if not.

use rdkafka::message::{Header, OwnedHeaders};
use serde_json::{json, Value};

use crate::config::KafkaConfig;
use crate::kafka;
use crate::store::StoreView;
use crate::store::{dead_letter_id, DeadLetter};

fn payload(d: &DeadLetter) -> Result<Vec<u8>, String> {
    if let Some(raw) = &d.raw {
        return Ok(raw.clone().into_bytes());
    }
    let hex = d.raw_hex.as_deref().unwrap_or("");
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "dead letter {}: its raw bytes are unreadable",
                        dead_letter_id(d)
                    )
                })
        })
        .collect()
}

fn headers(d: &DeadLetter) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    if let Some(f) = &d.headers.format {
        h = h.insert(Header {
            key: crate::parse::HEADER_FORMAT,
            value: Some(f.as_str()),
        });
    }
    if let Some(c) = &d.headers.columns {
        h = h.insert(Header {
            key: crate::parse::HEADER_COLUMNS,
            value: Some(c.as_str()),
        });
    }
    let origin = match &d.origin {
        Some(o) => format!("{o} (replayed from {})", dead_letter_id(d)),
        None => format!("replayed from {}", dead_letter_id(d)),
    };
    h.insert(Header {
        key: crate::parse::HEADER_SOURCE,
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
) -> Result<Value, String> {
    let letters: Vec<(String, DeadLetter)> = match id {
        Some(id) => match view.dead_letter(&id).map_err(|e| e.to_string())? {
            Some(d) => vec![(id, d)],
            None => return Err(format!("no dead letter {id:?}; `dlq list` shows them")),
        },
        None => view
            .dead_letter_page(None, limit, reason.as_deref())
            .map_err(|e| e.to_string())?,
    };
    if letters.is_empty() {
        return Ok(json!({ "replayed": 0, "ids": [] }));
    }
    let producer = kafka::producer(brokers, kafka_cfg).map_err(|e| e.to_string())?;
    let mut ids = Vec::with_capacity(letters.len());
    for (id, d) in &letters {
        let bytes = payload(d)?;
        kafka::send(&producer, &d.topic, b"", &bytes, Some(&headers(d)))
            .map_err(|e| format!("replay of {id} failed: {e}"))?;
        ids.push(id.clone());
    }
    kafka::flush(&producer, std::time::Duration::from_secs(30)).map_err(|e| {
        format!(
            "the broker did not take the replayed records: {e}; they stay in the dead-letter store"
        )
    })?;
    let removed = view.remove_dead_letters(&ids).map_err(|e| e.to_string())?;
    tracing::info!("replayed {removed} dead letters");
    Ok(json!({ "replayed": removed, "ids": ids }))
}
