//! The actor layer: one file per actor, typed messages carrying batches.
//! Actors are thin: they receive a message, call the logic in `src/`, and send
//! the result on.
//!
//! ```text
//! producer ──▶ Kafka ──▶ parser ──ParsedBatch──▶ validator ──StoreBatch──▶ store
//!                          ▲                                                │
//!                          └──────────────────── Stored (commit) ◀──────────┘
//!
//! store, after each commit ──▶ Indexes (graph, titles) and Analytics (shared views)
//!
//! trainer ──TakeSnapshot──▶ store
//!    └──Candidates──▶ evaluator ──(ml::registry, on the StoreView)──▶ model versions
//!                        └──▶ Serving (the champion every reader shares)
//! ```
//!
//! Every message is in [`messages`]; the admin edge holds the actors only as
//! `Recipient`s of those messages, and only `runtime` names the actor types.

pub mod evaluator;
pub mod fold;
pub mod messages;
pub mod monitor;
pub mod parser;
pub mod producer;
pub mod store;
pub mod trainer;
pub mod validator;
