//! The admin control socket: protocol, commands, server, dead-letter replay.
//! `playpulse ctl` (src/ctl.rs) is its client.

pub mod commands;
pub mod gate;
pub mod protocol;
pub mod replay;
pub mod server;

pub use commands::Admin;
pub use gate::Gate;
pub use server::{AdminError, Socket};
