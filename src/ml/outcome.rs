//! What a training run or an evaluation answers, and why one did not happen.

use serde::{Deserialize, Serialize};

use super::metrics::RankingMetrics;
use super::promote::PromoteMetric;

/// A training run's outcome: the versions recorded and the promotion decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// The recommender's version.
    pub model: u64,
    pub promoted: bool,
    pub decision: String,
    /// The metric promotion compared, and the recommender's value of it.
    pub metric: PromoteMetric,
    pub value: f64,
    /// Popularity's value of the metric on the same split.
    pub popularity: f64,
    /// The champion it was trained next to, folded in on the same split: its
    /// value of the metric (none without a champion).
    #[serde(default)]
    pub folded_champion: Option<f64>,
    /// The classifiers' versions.
    pub classifiers: Vec<u64>,
}

/// The serving champion scored on a fresh held-out split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChampionEvaluation {
    pub model: u64,
    pub metrics: RankingMetrics,
    pub baseline: RankingMetrics,
    pub test_pairs: usize,
    pub stored_events: u64,
    pub eval_s: f64,
}

/// Why a training run or an evaluation did not happen or did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    #[error("{stored} events stored, training waits for models.min_events = {min_events}")]
    Waiting { stored: u64, min_events: u64 },
    #[error("no model has been trained yet: it trains after models.min_events = {min_events} stored events, or run `train`")]
    NoModel { min_events: u64 },
    #[error("no model version {0}; list them with `models`")]
    NoVersion(u64),
    #[error("model {id} is a {kind} classifier; only recommender (als) versions serve")]
    NotARecommender { id: u64, kind: super::ModelKind },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Params(#[from] super::als::AlsError),
    #[error(transparent)]
    Import(#[from] super::import::ImportError),
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    #[error("the store could not be read or written: {0}")]
    Store(String),
    #[error("the stored events are unreadable: {0}")]
    Unreadable(String),
    #[error("cannot encode the trained model: {0}")]
    Encode(String),
    #[error("the stored model is unreadable: {0}")]
    Decode(String),
    #[error("{0}")]
    Failed(String),
    #[error("the trainer stopped before the run ended")]
    Stopped,
}

impl TrainError {
    /// A fault of the daemon (as opposed to a request that cannot be met now).
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            TrainError::Store(_)
                | TrainError::Unreadable(_)
                | TrainError::Encode(_)
                | TrainError::Decode(_)
                | TrainError::Failed(_)
        )
    }
}

impl From<crate::store::StoreError> for TrainError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Refused(why) => TrainError::Refused(why),
            other => TrainError::Store(other.to_string()),
        }
    }
}

impl From<actix::MailboxError> for TrainError {
    fn from(e: actix::MailboxError) -> Self {
        TrainError::StoreUnavailable(e.to_string())
    }
}
