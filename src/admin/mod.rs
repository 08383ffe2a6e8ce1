//! The admin edge: the protocol ([`protocol::Request`], one definition per
//! command), the commands ([`cmd`], one file per group), their errors, the
//! control socket's server, the start gate, and dead-letter replay.
//! `playpulse ctl` (src/ctl.rs) is its client; HTTP (src/http) builds the same
//! requests from query parameters.

pub mod bounds;
pub mod cmd;
pub mod context;
pub mod ctl;
pub mod error;
pub mod fuzz;
pub mod gate;
pub mod protocol;
pub mod replay;
pub mod server;

pub use context::Admin;
pub use error::{CommandError, RequestError};
pub use gate::Gate;
pub use server::{AdminError, Socket};
