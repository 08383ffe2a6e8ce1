//! Models: implicit-feedback ALS, ranking metrics, and the data they read.

pub mod als;
pub mod bench;
pub mod classify;
pub mod dataset;
pub mod metrics;
pub mod serve;
pub mod sparse;
pub mod split;
pub mod train;
