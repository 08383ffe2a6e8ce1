//! playpulse: a streaming analytics and recommendation daemon for video and music
//! platforms. ARCHITECTURE.md (in the repository) shows the shape: the picture,
//! a paragraph per folder, and where to change what.

pub mod admin;
pub mod affinity;
pub mod analytics;
pub mod bench;
pub mod claims;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod event;
pub mod export;
pub mod fuzzing;
pub mod generate;
pub mod graph;
pub mod http;
pub mod import;
pub mod kafka;
pub mod lake;
pub mod ml;
pub mod parse;
pub mod pipeline;
pub mod produce;
pub mod progress;
pub mod record;
pub mod reject;
pub mod soak;
pub mod store;
pub mod timefmt;
pub mod validate;
pub mod wire;
pub mod worker;

#[path = "../actors/mod.rs"]
pub mod actors;
