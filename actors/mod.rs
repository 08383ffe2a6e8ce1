//! The actor layer: one file per actor, typed messages carrying batches.
//! Actors are thin: they receive a message, call the logic in `src/`, and send
//! the result on.
//!
//! ```text
//! producer ──▶ Kafka ──▶ parser ──ParsedBatch──▶ validator ──StoreBatch──▶ store
//!                          ▲                                                │
//!                          └──────────────────── Stored (commit) ◀──────────┘
//!
//! trainer ──WithStore (snapshot)──▶ store
//!    └──Candidates──▶ evaluator ──WithStore (record versions)──▶ store
//!                        └──▶ Serving (the champion every reader shares)
//! ```

pub mod evaluator;
pub mod messages;
pub mod monitor;
pub mod parser;
pub mod producer;
pub mod store;
pub mod trainer;
pub mod validator;
pub mod worker;
