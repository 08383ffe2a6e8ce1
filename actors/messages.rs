//! Typed messages between the actors. Records always travel in batches.

use actix::prelude::*;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::ingest::pipeline::Parsed;
use crate::kafka::KafkaGlueError;
use crate::ml::train::{Snapshot, SnapshotSpec};
use crate::ml::TrainError;
use crate::store::{ApplyReport, Prepared, Stats, StatsSection, StoreError, StoreStatus};

/// Parser → validator: one consumed batch, parsed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ParsedBatch {
    pub records: Vec<Parsed>,
    /// The ownership epoch the records were read in (see [`crate::ingest::pipeline::Ownership`]).
    pub epoch: u64,
    /// Where the store acknowledges the batch.
    pub ack: Recipient<Stored>,
}

/// Validator → store: one batch, validated and prepared, to write atomically.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StoreBatch {
    pub prepared: Prepared,
    /// The ownership epoch the records were read in.
    pub epoch: u64,
    pub ack: Recipient<Stored>,
}

/// Store → parser: the batch is durable (or could not be written).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stored {
    pub result: Result<ApplyReport, StoreError>,
}

/// Store: checkpoint and flush before the daemon exits.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseStore;

/// Store: a training snapshot, consistent as of the stored offsets (taken
/// between two batch writes).
#[derive(Message)]
#[rtype(result = "Result<Snapshot, TrainError>")]
pub struct TakeSnapshot(pub SnapshotSpec);

/// Store: what it holds for the status (offsets of a namespace, damage, ids held).
#[derive(Message)]
#[rtype(result = "StoreStatus")]
pub struct GetStoreStatus {
    pub namespace: String,
}

/// Store: the stored statistics (one section, or all).
#[derive(Message)]
#[rtype(result = "Result<Stats, StoreError>")]
pub struct GetStats(pub Option<StatsSection>);

/// Store: every counter (stored, rejected by reason, folded, ...).
#[derive(Message)]
#[rtype(result = "Result<BTreeMap<String, u64>, StoreError>")]
pub struct GetCounters;

/// Store: a consistent copy into the data dir `dest`; answers (entries, bytes).
#[derive(Message)]
#[rtype(result = "Result<(u64, u64), StoreError>")]
pub struct Backup {
    pub dest: PathBuf,
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
#[rtype(result = "Result<(), PauseError>")]
pub struct SetPaused(pub bool);

/// Why ingest could not be paused or resumed.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("ingest is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Kafka(#[from] KafkaGlueError),
}

/// Producer: an operator's command.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "ProducerState")]
pub enum ProducerControl {
    Start,
    Stop,
    /// Records per second; 0 = as fast as the pipeline takes them.
    Rate(f64),
    Status,
}

/// What a producer is doing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProducerState {
    pub topic: String,
    pub running: bool,
    pub rate: f64,
    pub sent: u64,
    /// A prepared feed that has sent everything.
    pub exhausted: bool,
}

/// Trainer → evaluator: a fitted recommender and classifiers to evaluate and record.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Candidates {
    pub candidate: crate::ml::train::Candidate,
    /// Content affinity to blend with the candidate, when configured.
    pub blend: Option<crate::views::affinity::Blend>,
    pub genres: std::collections::HashMap<String, String>,
    pub regions: std::collections::HashMap<String, Vec<(String, u64)>>,
    pub music_items: std::collections::HashSet<String>,
    /// What the snapshot held (recorded with the versions).
    pub data: crate::ml::version::SnapshotInfo,
    pub classifiers: Vec<(
        crate::ml::classify::ClassifierReport,
        crate::ml::classify::ClassifierBundle,
    )>,
    /// Fit the ranking stage with the candidate (none: not configured).
    pub rerank: Option<crate::ml::rerank::RerankSpec>,
    /// The snapshot's most recent video events (the ranking stage's data).
    pub events: Vec<crate::domain::event::VideoEvent>,
    /// Told when the run is recorded (or failed).
    pub done: Recipient<RunEnded>,
}

/// Evaluator, to itself: a candidate's evaluation, ready to record.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evaluated {
    pub evaluation: crate::ml::train::Evaluation,
    pub fit_s: f64,
    pub warm_start: Option<crate::ml::version::WarmStartInfo>,
    /// What the candidate was fitted with, and the search that chose it.
    pub params: crate::ml::als::AlsParams,
    pub search: Option<crate::ml::search::SearchReport>,
    pub bundle: crate::ml::serve::Bundle,
    pub encoded: Vec<u8>,
    pub data: crate::ml::version::SnapshotInfo,
    pub classifiers: Vec<(crate::ml::classify::ClassifierReport, Vec<u8>)>,
    pub done: Recipient<RunEnded>,
}

/// Evaluator: score the serving champion on a fresh snapshot (on demand).
#[derive(Message)]
#[rtype(result = "Result<crate::ml::ChampionEvaluation, crate::ml::TrainError>")]
pub struct EvaluateChampion;

/// Evaluator: make a recorded recommender version the champion (`None` = roll
/// back to the previous champion); answers the new champion's id.
#[derive(Message)]
#[rtype(result = "Result<u64, crate::ml::TrainError>")]
pub struct SetChampion(pub Option<u64>);

/// Evaluator: import factors trained elsewhere (`models import DIR`; the
/// Spark route): scored on a fresh snapshot's held-out split, recorded, and
/// served when promoted.
#[derive(Message)]
#[rtype(result = "Result<crate::ml::import::ImportReport, crate::ml::TrainError>")]
pub struct ImportModel(pub std::path::PathBuf);

/// Trainer: train now (or join the run under way); answers with the run's
/// outcome when it ends.
#[derive(Message)]
#[rtype(result = "Result<crate::ml::TrainOutcome, crate::ml::TrainError>")]
pub struct TrainNow;

/// Evaluator → trainer: a training run ended: what was recorded, or why nothing was.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunEnded(pub Result<crate::ml::TrainOutcome, crate::ml::TrainError>);
