//! Typed messages between the actors. Records always travel in batches.

use actix::prelude::*;

use crate::pipeline::Parsed;
use crate::store::{ApplyReport, Prepared};

/// Parser → validator: one consumed batch, parsed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ParsedBatch {
    pub records: Vec<Parsed>,
    /// Where the store acknowledges the batch.
    pub ack: Recipient<Stored>,
}

/// Validator → store: one batch, validated and prepared, to write atomically.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StoreBatch {
    pub prepared: Prepared,
    pub ack: Recipient<Stored>,
}

/// Store → parser: the batch is durable (or could not be written).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stored {
    pub result: Result<ApplyReport, String>,
}

/// Parser, to itself: consume the next batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pull;

/// Stop consuming, let every batch in flight reach the store, commit, leave the group.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Producer: stop producing and flush what is queued.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct StopProducing;

/// Parser: pause (true) or resume (false) consuming; the consumer stays in its group.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SetPaused(pub bool);

/// Producer: an operator's command.
#[derive(Message)]
#[rtype(result = "ProducerState")]
pub enum ProducerControl {
    Start,
    Stop,
    /// Records per second; 0 = as fast as the pipeline takes them.
    Rate(f64),
    Status,
}

/// What a producer is doing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProducerState {
    pub topic: String,
    pub running: bool,
    pub rate: f64,
    pub sent: u64,
    /// A prepared feed that has sent everything.
    pub exhausted: bool,
}
