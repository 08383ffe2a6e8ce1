//! What the brokers say about partitions: high watermarks (for lag), and
//! the cluster's identity (the offset namespace).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::config::KafkaConfig;
use super::*;

/// Asks the brokers for high watermarks (the next offset each partition will
/// write), for lag: a client of its own, outside any group.
pub struct WatermarkProbe {
    consumer: BaseConsumer,
}

impl WatermarkProbe {
    pub fn new(brokers: &str, cfg: &KafkaConfig) -> Result<WatermarkProbe, KafkaGlueError> {
        Ok(WatermarkProbe {
            consumer: base_config(brokers, cfg).create()?,
        })
    }

    /// The high watermark of each partition, in one request per broker (blocking).
    pub fn high_watermarks(
        &self,
        parts: &[(String, i32)],
        timeout: Duration,
    ) -> Result<BTreeMap<(String, i32), i64>, KafkaGlueError> {
        if parts.is_empty() {
            // Nothing to ask about: still tell whether the brokers answer.
            self.consumer.fetch_metadata(None, timeout)?;
            return Ok(BTreeMap::new());
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p) in parts {
            // The "timestamp" -1 (OFFSET_END) asks for the latest offset.
            tpl.add_partition_offset(t, *p, Offset::End)?;
        }
        let got = self.consumer.offsets_for_times(tpl, timeout)?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                _ => None,
            })
            .collect())
    }
}

/// Waits for the brokers until they answer (or `stop` is set: `None`),
/// telling `waiting` why it still waits now and then; answers the cluster's
/// offset namespace (see [`cluster_namespace`]).
pub fn wait_for_cluster(
    brokers: &str,
    cfg: &KafkaConfig,
    stop: &AtomicBool,
    waiting: impl Fn(String),
) -> Result<Option<String>, KafkaGlueError> {
    let consumer: BaseConsumer = base_config(brokers, cfg).create()?;
    let t0 = Instant::now();
    let mut logged = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(id) = consumer.client().fetch_cluster_id(Duration::from_secs(2)) {
            return Ok(Some(format!("kafka:{id}")));
        }
        let why = format!(
            "the brokers at {brokers} (no answer for {} s; check kafka.brokers and that they run)",
            t0.elapsed().as_secs()
        );
        if logged.elapsed() >= Duration::from_secs(10) {
            tracing::warn!("waiting for {why}");
            logged = Instant::now();
        }
        waiting(why);
    }
    Ok(None)
}

/// The identity of the cluster behind `brokers`, to name the offset namespace
/// (offsets are only meaningful for the cluster they were read from).
pub fn cluster_namespace(
    brokers: &str,
    cfg: &KafkaConfig,
    wait: Duration,
) -> Result<String, KafkaGlueError> {
    let consumer: BaseConsumer = base_config(brokers, cfg).create()?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(id) = consumer.client().fetch_cluster_id(Duration::from_secs(2)) {
            return Ok(format!("kafka:{id}"));
        }
        if Instant::now() >= deadline {
            return Err(KafkaGlueError::Topic {
                topic: String::new(),
                message: format!("no broker at {brokers} answered within {wait:?}; check kafka.brokers and that the brokers run"),
            });
        }
        tracing::warn!("waiting for the brokers at {brokers} ...");
    }
}
