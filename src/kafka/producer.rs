//! Producers: idempotent, paced by queue room, deliveries counted; the
//! command-line producer that checks its topic first; replay headers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::ClientContext;

use super::config::KafkaConfig;
use super::*;

/// Counts records the brokers did not take (their delivery failed), so a
/// flush can say so instead of returning as if all were sent.
#[derive(Default)]
pub struct Delivery {
    failed: std::sync::atomic::AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Delivery {}

impl rdkafka::producer::ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// The producers' type: deliveries counted (see [`Delivery`]).
pub type Producer = BaseProducer<Delivery>;

/// A producer for a command that must end: the brokers are asked first
/// (within `timeout`) whether `topic` exists, and records not delivered
/// within `timeout` fail the flush instead of waiting forever.
pub fn cli_producer(
    brokers: &str,
    cfg: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Producer, KafkaGlueError> {
    check_topic(brokers, cfg, topic, timeout)?;
    let mut cfg = cfg.clone();
    cfg.properties
        .entry("message.timeout.ms".into())
        .or_insert_with(|| timeout.as_millis().max(1000).to_string());
    producer(brokers, &cfg)
}

/// Asks the brokers whether `topic` exists (within `timeout`): an error names
/// what is wrong (no broker answered, no such topic) and what to do.
pub fn check_topic(
    brokers: &str,
    cfg: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<(), KafkaGlueError> {
    let consumer: BaseConsumer = base_config(brokers, cfg).set("log_level", "0").create()?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| KafkaGlueError::Topic {
            topic: topic.to_string(),
            message: format!("no broker at {brokers} answered within {timeout:?} ({e}); check --brokers / kafka.brokers and that the brokers run"),
        })?;
    let missing = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .is_none_or(|t| t.error().is_some() || t.partitions().is_empty());
    if missing {
        return Err(KafkaGlueError::Topic {
            topic: topic.to_string(),
            message: format!(
                "no such topic on the brokers at {brokers}: create it, or name an existing one"
            ),
        });
    }
    Ok(())
}

/// A producer with idempotence (no duplicates on retries).
pub fn producer(brokers: &str, cfg: &KafkaConfig) -> Result<Producer, KafkaGlueError> {
    let mut c = base_config(brokers, cfg);
    c.set("enable.idempotence", "true")
        // A record over the limit is refused at once, with a clear error.
        .set(
            "message.max.bytes",
            cfg.max_record_bytes.max(1000).to_string(),
        )
        // Batches of 20 ms: the embedded broker (librdkafka's mock cluster)
        // finds a fetch's offset by walking a partition's message sets one by
        // one, so small batches cost it a core at 50k events/s and every
        // reader of the daemon waits for CPU (`bench serve`: p50 15-19 ms
        // with 5 ms batches, 4-10 ms with 20). Kafka itself batches the
        // same way; `kafka.properties` can set another value.
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", "0")
        // Only failed deliveries are reported (all `Delivery` counts): a
        // report per delivered record cost the sending thread a fifth of its
        // time in `bench ingest`.
        .set("delivery.report.only.error", "true");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    Ok(c.create_with_context(Delivery::default())?)
}

/// Sends one record, waiting for queue room when the local queue is full.
pub fn send(
    p: &Producer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: Option<&OwnedHeaders>,
) -> Result<(), KafkaGlueError> {
    let mut rec = BaseRecord::to(topic).key(key).payload(payload);
    if let Some(h) = headers {
        rec = rec.headers(h.clone());
    }
    send_record(p, rec)
}

/// Sends one record to one partition, waiting for queue room when the local
/// queue is full (records of one partition keep their order).
pub fn send_to(
    p: &Producer,
    topic: &str,
    partition: i32,
    key: &[u8],
    payload: &[u8],
) -> Result<(), KafkaGlueError> {
    send_record(
        p,
        BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload),
    )
}

fn send_record(p: &Producer, mut rec: BaseRecord<'_, [u8], [u8]>) -> Result<(), KafkaGlueError> {
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                p.poll(Duration::from_millis(5));
                rec = back;
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), back)) => {
                return Err(KafkaGlueError::TooLarge {
                    topic: back.topic.to_string(),
                    size: back.payload.map_or(0, <[u8]>::len),
                })
            }
            Err((e, _)) => return Err(KafkaGlueError::Client(e)),
        }
    }
}

/// Waits until every queued record is delivered.
pub fn flush(p: &Producer, timeout: Duration) -> Result<(), KafkaGlueError> {
    p.flush(timeout).map_err(|e| KafkaGlueError::Topic {
        topic: String::new(),
        message: format!(
            "records not delivered within {timeout:?} ({e}); check that the brokers run"
        ),
    })?;
    let ctx = p.context();
    let failed = ctx.failed.swap(0, Ordering::Relaxed);
    if failed > 0 {
        let first = ctx
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        return Err(KafkaGlueError::Undelivered { failed, first });
    }
    Ok(())
}

/// Record headers for a replayed record.
pub fn import_headers(format: &str, columns: Option<&str>, origin: &str) -> OwnedHeaders {
    let mut h = OwnedHeaders::new().insert(Header {
        key: crate::ingest::parse::HEADER_FORMAT,
        value: Some(format),
    });
    if let Some(c) = columns {
        h = h.insert(Header {
            key: crate::ingest::parse::HEADER_COLUMNS,
            value: Some(c),
        });
    }
    h.insert(Header {
        key: crate::ingest::parse::HEADER_SOURCE,
        value: Some(origin),
    })
}
