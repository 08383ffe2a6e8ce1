//! What each admin command does, one file per group: its arguments (the
//! [`Request`] variant's type, with their bounds), its reply type, and the
//! work. [`run`] routes a request to its command.

pub mod data;
pub mod dlq;
pub mod graph;
pub mod ingest;
pub mod models;
pub mod recommend;
pub mod stats;
pub mod status;

use serde::{Deserialize, Serialize};

use super::context::Admin;
use super::error::CommandError;
use super::protocol::{commands, CommandHelp, Request};
use crate::config::Config;

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigReply {
    pub config: Config,
}

/// Every command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelpReply {
    pub commands: Vec<CommandHelp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShutdownReply {
    pub shutdown: String,
}

/// A command's reply (the wire form adds `"ok": true`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Status(Box<status::StatusReply>),
    Stats(crate::store::Stats),
    Paused(ingest::PausedReply),
    Producers(ingest::ProducersReply),
    Analytics(crate::views::analytics::Answer),
    Alerts(crate::views::alerts::AlertsReply),
    Trained(crate::ml::TrainOutcome),
    Evaluated(crate::ml::ChampionEvaluation),
    Models(models::ModelsReply),
    Recommend(crate::ml::recommend::RecommendReply),
    Similar(crate::ml::recommend::SimilarReply),
    Trending(crate::ml::recommend::TrendingReply),
    Graph(crate::views::graph::GraphAnswer),
    Dlq(dlq::DlqReply),
    Exported(data::Exported),
    Snapshot(data::SnapshotTaken),
    Config(Box<ConfigReply>),
    Help(HelpReply),
    Shutdown(ShutdownReply),
}

/// Runs a checked request.
pub async fn run(a: &Admin, req: Request) -> Result<Reply, CommandError> {
    Ok(match req {
        Request::Status(_) => Reply::Status(Box::new(status::status(a).await?)),
        Request::Stats(r) => Reply::Stats(stats::stats(a, r).await?),
        Request::Pause(_) => Reply::Paused(ingest::set_paused(a, true).await?),
        Request::Resume(_) => Reply::Paused(ingest::set_paused(a, false).await?),
        Request::Producer(r) => Reply::Producers(ingest::producer(a, r).await?),
        Request::Analytics(r) => Reply::Analytics(stats::analytics(a, r).await?),
        Request::Alerts(_) => Reply::Alerts(
            a.alerts
                .lock()
                .map_err(|_| CommandError::Worker("the alert states are poisoned".into()))?
                .reply(),
        ),
        Request::Train(_) => Reply::Trained(models::train(a).await?),
        Request::Evaluate(_) => Reply::Evaluated(models::evaluate(a).await?),
        Request::Models(r) => Reply::Models(models::models(a, r).await?),
        Request::Recommend(r) => Reply::Recommend(recommend::recommend(a, r).await?),
        Request::Similar(r) => Reply::Similar(recommend::similar(a, r).await?),
        Request::Trending(r) => Reply::Trending(recommend::trending(a, r).await?),
        Request::Graph(r) => Reply::Graph(graph::graph(a, r).await?),
        Request::Dlq(r) => Reply::Dlq(dlq::dlq(a, r).await?),
        Request::Export(r) => Reply::Exported(data::export(a, r).await?),
        Request::Snapshot(r) => Reply::Snapshot(data::snapshot(a, r).await?),
        Request::Config(_) => Reply::Config(Box::new(ConfigReply {
            config: a.cfg.clone(),
        })),
        Request::Help(_) => Reply::Help(HelpReply {
            commands: commands(),
        }),
        Request::Shutdown(_) => {
            a.shutdown.notify_one();
            Reply::Shutdown(ShutdownReply {
                shutdown: "stopping: in-flight batches are stored first".into(),
            })
        }
    })
}
