//! What writes records into Kafka: synthetic generators, the built-in paced
//! producers, and file import.

pub mod corrupt;
pub mod generate;
pub mod import;
pub mod produce;
