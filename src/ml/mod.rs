//! Models: implicit-feedback ALS, EASE, item-kNN and the search across them,
//! ranking metrics, and the data they read.

pub mod als;
pub mod cascade;
pub mod classify;
pub mod config;
pub mod dataset;
pub mod ease;
pub mod family;
pub mod import;
pub mod item_fold;
pub mod item_model;
pub mod knn;
pub mod live;
pub mod metrics;
pub mod outcome;
pub mod promote;
pub mod rank;
pub mod recent;
pub mod recommend;
pub mod registry;
pub mod rerank;
pub mod search;
pub mod serve;
pub mod sparse;
pub mod split;
pub mod train;
pub mod version;

pub use outcome::{ChampionEvaluation, TrainError, TrainOutcome};
pub use version::{ModelKind, ModelVersion};
