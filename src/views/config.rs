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
        Ok(())
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
        }
    }
}
