//! What writes records into Kafka: synthetic generators, the built-in paced
//! producers, file import, and the fuzz entry points.

pub mod fuzzing;
pub mod generate;
pub mod import;
pub mod produce;
