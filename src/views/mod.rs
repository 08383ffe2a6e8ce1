//! What is derived from stored events and served from memory, fed after each
//! durable batch: live analytics windows, the listening graph, content
//! affinity over the catalog, trending items.

pub mod affinity;
pub mod alerts;
pub mod analytics;
pub mod config;
pub mod graph;
pub mod indexes;
pub mod trending;
