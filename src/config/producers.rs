//! `[producers]`: the built-in synthetic producers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::event::Kind;
use crate::domain::setting::{invalid, Invalid};

/// When the built-in synthetic producers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProducerMode {
    /// Only against the embedded broker (a demo that runs with no setup).
    Embedded,
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducersConfig {
    pub mode: ProducerMode,
    pub seed: u64,
    /// Size of the synthetic world.
    pub users: u32,
    pub videos: u32,
    pub tracks: u32,
    /// Events per second per kind; 0 = as fast as the pipeline takes them.
    pub rate: BTreeMap<Kind, f64>,
    /// Produced but not yet stored events, at most (the embedded broker keeps ~5 MiB per partition).
    pub max_lag_events: u64,
}

impl Default for ProducersConfig {
    fn default() -> Self {
        ProducersConfig {
            mode: ProducerMode::Embedded,
            seed: 42,
            users: 5000,
            videos: 1000,
            tracks: 2000,
            rate: [
                (Kind::Video, 2000.0),
                (Kind::Users, 5.0),
                (Kind::Movies, 2.0),
                (Kind::Series, 1.0),
                (Kind::Music, 500.0),
            ]
            .into_iter()
            .collect(),
            max_lag_events: 20_000,
        }
    }
}

impl ProducersConfig {
    /// Checks what a type cannot (ranges, sets, names); errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let p = self;
        if p.users == 0 || p.videos == 0 || p.tracks == 0 {
            return Err(invalid(
                "producers.users/videos/tracks",
                (p.users, p.videos, p.tracks),
                "must each be ≥ 1",
            ));
        }
        for (kind, r) in &p.rate {
            if !(r.is_finite() && *r >= 0.0) {
                return Err(invalid(
                    &format!("producers.rate.{kind}"),
                    r,
                    "must be ≥ 0 (0 = as fast as possible)",
                ));
            }
        }
        if p.max_lag_events == 0 {
            return Err(invalid("producers.max_lag_events", 0, "must be at least 1"));
        }
        Ok(())
    }
}
