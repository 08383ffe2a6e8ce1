//! From raw records to validated events: parsing (JSON, legacy lines, CSV),
//! validation rules, the wire forms, topic → kind mapping, and the pure batch
//! steps the actors call.

pub mod config;
pub mod fuzz;
pub mod parse;
pub mod pipeline;
pub mod topics;
pub mod validate;
pub mod wire;
