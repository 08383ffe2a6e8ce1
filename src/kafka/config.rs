//! `[kafka]`: brokers (none = the embedded broker), group, topics per kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::event::Kind;
use crate::domain::setting::{invalid, Invalid};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated. Empty: start the embedded broker.
    pub brokers: String,
    pub group_id: String,
    pub client_id: String,
    /// Partitions of each topic created on the embedded broker.
    pub embedded_partitions: i32,
    /// Topic (or `^regex` pattern) per kind of record; remove a kind to not consume it.
    pub topics: BTreeMap<Kind, String>,
    /// Extra librdkafka properties for the consumer and the producers.
    pub properties: BTreeMap<String, String>,
    /// Largest record produced or consumed, bytes: producers refuse larger
    /// ones with an error; a larger one consumed is dead-lettered.
    pub max_record_bytes: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            group_id: "playpulse".into(),
            client_id: "playpulse".into(),
            embedded_partitions: 16,
            topics: Kind::ALL
                .into_iter()
                .map(|k| (k, format!("playpulse.{k}")))
                .collect(),
            properties: BTreeMap::new(),
            max_record_bytes: 1 << 20,
        }
    }
}

/// Whether one broker address is `host:port` (an optional `PLAINTEXT://` or
/// `SSL://` in front, IPv6 hosts in brackets).
fn broker_ok(b: &str) -> bool {
    let b = b
        .strip_prefix("PLAINTEXT://")
        .or_else(|| b.strip_prefix("SSL://"))
        .unwrap_or(b);
    let Some((host, port)) = b.rsplit_once(':') else {
        return false;
    };
    let host_ok = (host.starts_with('[') && host.ends_with(']') && host.len() > 2)
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'));
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The first entry of a broker list that is not `host:port`, if any.
fn bad_broker(list: &str) -> Option<String> {
    if list.trim().is_empty() {
        return None;
    }
    list.split(',')
        .map(str::trim)
        .find(|b| !broker_ok(b))
        .map(str::to_string)
}

impl KafkaConfig {
    pub fn embedded(&self) -> bool {
        self.brokers.trim().is_empty()
    }
}

impl KafkaConfig {
    /// Checks what a type cannot (ranges, sets, names); errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let k = self;
        if let Some(bad) = bad_broker(&k.brokers) {
            return Err(invalid(
                "kafka.brokers",
                &k.brokers,
                format!("{bad:?} is not host:port (e.g. localhost:9092, several comma separated; empty = the embedded broker; env PLAYPULSE_KAFKA__BROKERS)"),
            ));
        }
        let max_record = if k.embedded() { 4 << 20 } else { 100 << 20 };
        if !(1000..=max_record).contains(&k.max_record_bytes) {
            return Err(invalid(
                "kafka.max_record_bytes",
                k.max_record_bytes,
                format!(
                    "must be 1000..={max_record} (the embedded broker loses records over ~5 MiB)"
                ),
            ));
        }
        let k = self;
        if k.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", &k.group_id, "must not be empty"));
        }
        if !(1..=1024).contains(&k.embedded_partitions) {
            return Err(invalid(
                "kafka.embedded_partitions",
                k.embedded_partitions,
                "must be 1..=1024",
            ));
        }
        if k.topics.is_empty() {
            return Err(invalid(
                "kafka.topics",
                "{}",
                "name at least one topic to consume",
            ));
        }
        for (kind, t) in &k.topics {
            if let Err(e) = crate::ingest::topics::TopicSpec::parse(t) {
                return Err(invalid(&format!("kafka.topics.{kind}"), t, e.message));
            }
        }
        Ok(())
    }
}
