//! The running system: daemon wiring (the actors, the consumer, the admin
//! socket and HTTP), the benchmarks and the soak run that drive it.

pub mod alerting;
pub mod bench;
pub mod daemon;
pub mod soak;
