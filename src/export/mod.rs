//! Data out of the store: CSV (events, recommendations) and the Parquet lake.

pub mod csv;
pub mod lake;
