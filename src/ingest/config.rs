//! `[ingest]` (batching) and `[validation]` (the rules' limits and vocabularies).

use serde::{Deserialize, Serialize};

use crate::domain::setting::{invalid, Invalid};
use crate::domain::timefmt::{parse_timestamp_ms, TimePolicy};
use crate::domain::vocab;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Most records per batch (one batch = one atomic store write).
    pub batch_size: usize,
    /// Longest wait to fill a batch, in milliseconds.
    #[serde(rename = "batch_linger_ms", with = "crate::domain::setting::millis")]
    pub batch_linger: std::time::Duration,
    /// Batches parsed but not yet stored, at most.
    pub max_in_flight_batches: usize,
    /// Seconds between progress log lines.
    #[serde(
        rename = "log_interval_seconds",
        with = "crate::domain::setting::seconds"
    )]
    pub log_interval: std::time::Duration,
    /// How ingest, the compactors, the fold-in and training run beside
    /// requests: `idle` (the idle scheduling class: requests first, at once)
    /// or `nice` (nice +10: ingest keeps a share beside busy neighbours).
    pub background: crate::domain::worker::Background,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_size: 5000,
            batch_linger: std::time::Duration::from_millis(50),
            max_in_flight_batches: 4,
            log_interval: std::time::Duration::from_secs(5),
            background: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    pub resolutions: Vec<String>,
    pub genres: Vec<String>,
    pub regions: Vec<String>,
    pub max_watch_time_seconds: f64,
    pub max_buffering_events: i64,
    pub max_bitrate_kbps: i64,
    /// Earliest accepted event time (RFC 3339).
    pub min_timestamp: String,
    /// How far past the wall clock an event time may be, in seconds.
    pub max_future_skew_seconds: i64,
    /// Lower-case ids (user, video, track, ...) as the music pipeline did.
    pub lowercase_ids: bool,
    /// Longest id, bytes (ids may not hold control characters).
    pub max_id_bytes: usize,
    /// Longest free text field or list entry, bytes.
    pub max_text_bytes: usize,
    /// Most entries in a list field.
    pub max_list_entries: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        // The synthetic world's sets are the reference notebooks' sets.
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        ValidationConfig {
            resolutions: v(&vocab::RESOLUTIONS),
            genres: v(&vocab::GENRES),
            regions: v(&vocab::REGIONS),
            max_watch_time_seconds: 86_400.0,
            max_buffering_events: 10,
            max_bitrate_kbps: 200_000,
            min_timestamp: "2000-01-01T00:00:00Z".into(),
            max_future_skew_seconds: 86_400,
            lowercase_ids: true,
            max_id_bytes: 256,
            max_text_bytes: 4096,
            max_list_entries: 256,
        }
    }
}

impl IngestConfig {
    /// Checks what a type cannot (ranges, sets, names); errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let i = self;
        if !(1..=1_000_000).contains(&i.batch_size) {
            return Err(invalid(
                "ingest.batch_size",
                i.batch_size,
                "must be 1..=1000000",
            ));
        }
        if i.max_in_flight_batches == 0 {
            return Err(invalid(
                "ingest.max_in_flight_batches",
                i.max_in_flight_batches,
                "must be at least 1",
            ));
        }
        if i.log_interval.is_zero() {
            return Err(invalid(
                "ingest.log_interval_seconds",
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl ValidationConfig {
    /// Checks what a type cannot (ranges, sets, names); errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let v = self;
        for (key, set) in [
            ("resolutions", &v.resolutions),
            ("genres", &v.genres),
            ("regions", &v.regions),
        ] {
            if set.is_empty() || set.iter().any(|s| s.trim().is_empty()) {
                return Err(invalid(
                    &format!("validation.{key}"),
                    set,
                    "must list at least one non-empty value",
                ));
            }
        }
        if !(v.max_watch_time_seconds > 0.0 && v.max_watch_time_seconds.is_finite()) {
            return Err(invalid(
                "validation.max_watch_time_seconds",
                v.max_watch_time_seconds,
                "must be a positive number",
            ));
        }
        if v.max_buffering_events < 0 {
            return Err(invalid(
                "validation.max_buffering_events",
                v.max_buffering_events,
                "must be ≥ 0",
            ));
        }
        if v.max_bitrate_kbps <= 0 {
            return Err(invalid(
                "validation.max_bitrate_kbps",
                v.max_bitrate_kbps,
                "must be > 0",
            ));
        }
        if parse_timestamp_ms(&v.min_timestamp, TimePolicy::Strict).is_none() {
            return Err(invalid(
                "validation.min_timestamp",
                &v.min_timestamp,
                "must be RFC 3339, e.g. 2000-01-01T00:00:00Z",
            ));
        }
        if v.max_future_skew_seconds < 0 {
            return Err(invalid(
                "validation.max_future_skew_seconds",
                v.max_future_skew_seconds,
                "must be ≥ 0",
            ));
        }
        for (key, value, max) in [
            ("validation.max_id_bytes", v.max_id_bytes, 65_536),
            ("validation.max_text_bytes", v.max_text_bytes, 1 << 20),
            ("validation.max_list_entries", v.max_list_entries, 100_000),
        ] {
            if value == 0 || value > max {
                return Err(invalid(key, value, format!("must be 1 to {max}")));
            }
        }
        Ok(())
    }
}
