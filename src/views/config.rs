//! `[analytics]`: the live windows' retention and bounds.

use serde::{Deserialize, Serialize};

use crate::domain::setting::{invalid, Invalid};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Minutes of windows kept (before the newest event minute).
    pub retention_minutes: u32,
    /// Most keys a dimension keeps per minute (the rest add up under `(other)`).
    pub max_keys: usize,
    /// Events dated further than this past the wall clock (still stored when
    /// validation allows them) are counted apart as `future_events` and never
    /// move the windows.
    pub future_skew_seconds: u32,
    /// "Trending now": minutes after which a view (or play) counts half as
    /// much (time-decayed popularity; serves cold starts and `trending`).
    pub trending_half_life_minutes: f64,
    /// The durable rollups (see `store::rollup`): hours of minute buckets
    /// kept (older minutes live on in their hours), days of hour buckets kept,
    /// both counted back from the newest event minute.
    pub minute_retention_hours: u32,
    pub hour_retention_days: u32,
    /// A view counts as in progress (concurrent viewers) for at most this long.
    pub max_view_minutes: u32,
    /// Most rows of titles (or tracks) one bucket keeps; the rest add up
    /// under `(other)`.
    pub max_rollup_rows: usize,
    /// Seconds between the rollups' compactions (sooner once the held rows
    /// pass 32 MiB). Each writes the distinct rows it holds: a live stream
    /// repeats its minutes' and hours' rows, so a longer interval writes
    /// fewer rows per event; opening replays at most this much of the event
    /// log.
    pub rollup_compact_seconds: u32,
}

impl AnalyticsConfig {
    /// Checks what a type cannot (ranges); errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let an = self;
        if !(1..=10_080).contains(&an.retention_minutes) {
            return Err(invalid(
                "analytics.retention_minutes",
                an.retention_minutes,
                "must be 1..=10080 (a week)",
            ));
        }
        if !(1..=1_000_000).contains(&an.max_keys) {
            return Err(invalid(
                "analytics.max_keys",
                an.max_keys,
                "must be 1..=1000000",
            ));
        }
        let h = an.trending_half_life_minutes;
        if !(h.is_finite() && (1.0..=43_200.0).contains(&h)) {
            return Err(invalid(
                "analytics.trending_half_life_minutes",
                h,
                "must be 1..=43200 (minutes: up to 30 days)",
            ));
        }
        if !(1..=8760).contains(&an.minute_retention_hours) {
            return Err(invalid(
                "analytics.minute_retention_hours",
                an.minute_retention_hours,
                "must be 1..=8760 (a year)",
            ));
        }
        if !(1..=3650).contains(&an.hour_retention_days) {
            return Err(invalid(
                "analytics.hour_retention_days",
                an.hour_retention_days,
                "must be 1..=3650 (ten years)",
            ));
        }
        if i64::from(an.hour_retention_days) * 24 < i64::from(an.minute_retention_hours) {
            return Err(invalid(
                "analytics.hour_retention_days",
                an.hour_retention_days,
                format!(
                    "must keep hours at least as long as minutes (minute_retention_hours = {})",
                    an.minute_retention_hours
                ),
            ));
        }
        if !(1..=1440).contains(&an.max_view_minutes) {
            return Err(invalid(
                "analytics.max_view_minutes",
                an.max_view_minutes,
                "must be 1..=1440 (a day)",
            ));
        }
        if !(100..=10_000_000).contains(&an.max_rollup_rows) {
            return Err(invalid(
                "analytics.max_rollup_rows",
                an.max_rollup_rows,
                "must be 100..=10000000",
            ));
        }
        if !(1..=300).contains(&an.rollup_compact_seconds) {
            return Err(invalid(
                "analytics.rollup_compact_seconds",
                an.rollup_compact_seconds,
                "must be 1..=300 (five minutes)",
            ));
        }
        Ok(())
    }

    /// How the store keeps the rollups.
    pub fn rollup_tuning(&self) -> crate::store::rollup::Tuning {
        use crate::store::rollup::{Tuning, HOUR_MS, MINUTE_MS};
        Tuning {
            minute_retention_ms: i64::from(self.minute_retention_hours) * HOUR_MS,
            hour_retention_ms: i64::from(self.hour_retention_days) * 24 * HOUR_MS,
            max_view_ms: i64::from(self.max_view_minutes) * MINUTE_MS,
            future_skew_ms: i64::from(self.future_skew_seconds) * 1000,
            max_rows: self.max_rollup_rows,
            compact_every_ms: u64::from(self.rollup_compact_seconds) * 1000,
            ..Tuning::default()
        }
    }

    pub fn trending_half_life(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.trending_half_life_minutes * 60.0)
    }
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            retention_minutes: 60,
            max_keys: 2000,
            future_skew_seconds: 300,
            trending_half_life_minutes: 60.0,
            minute_retention_hours: 48,
            hour_retention_days: 90,
            max_view_minutes: 240,
            max_rollup_rows: 200_000,
            rollup_compact_seconds: 5,
        }
    }
}
