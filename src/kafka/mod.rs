//! Kafka glue, one concern per file: the consumer ([`consumer`]) and its
//! context that only forwards ([`context`]), group membership and claims
//! ([`group`], [`claims`]), the embedded broker ([`embedded`]), producers
//! ([`producer`]), watermarks and the cluster's identity ([`watermarks`]).
//! Offsets are read and written only through the store's API.

use std::sync::{Arc, Mutex};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use thiserror::Error;

use crate::ingest::topics::TopicError;
pub use crate::ingest::topics::TopicKinds;

pub mod claims;
pub mod config;
mod consumer;
mod context;
mod embedded;
mod group;
mod orphan;
mod producer;
mod topics;
mod watermarks;

use config::KafkaConfig;
pub use consumer::Source;
pub use embedded::Embedded;
pub use group::{Claims, GroupCommit};
pub use producer::{
    check_topic, cli_producer, flush, import_headers, producer, send, send_to, Delivery, Producer,
};
pub use topics::ensure_topics;
pub use watermarks::{cluster_namespace, wait_for_cluster, WatermarkProbe};

#[derive(Debug, Error)]
pub enum KafkaGlueError {
    #[error("kafka client setup failed: {0}; check kafka.brokers and kafka.properties")]
    Client(#[from] KafkaError),
    #[error("embedded broker failed to start: {0}")]
    Embedded(String),
    #[error("topic {topic:?}: {message}")]
    Topic { topic: String, message: String },
    #[error(transparent)]
    TopicSpec(#[from] TopicError),
    #[error("a record of {size} bytes for topic {topic:?} is over kafka.max_record_bytes: split it, or raise the limit (and the brokers' message.max.bytes)")]
    TooLarge { topic: String, size: usize },
    #[error("{failed} records were not delivered (first: {first}); check that the brokers run and the topic exists, then send them again")]
    Undelivered { failed: u64, first: String },
}

/// Partitions this consumer currently owns.
pub type Assignment = Arc<Mutex<Vec<(String, i32)>>>;

/// A client's settings: the brokers, the client id and `kafka.properties`.
pub fn base_config(brokers: &str, cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", &cfg.client_id);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}
