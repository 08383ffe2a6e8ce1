//! playpulse: a streaming analytics and recommendation daemon for video and music
//! platforms. ARCHITECTURE.md (in the repository) shows the shape: the picture,
//! a paragraph per folder, and where to change what.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod export;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod ml;
pub mod notify;
pub mod runtime;
pub mod store;
pub mod synth;
pub mod views;

#[path = "../actors/mod.rs"]
pub mod actors;
