//! Live analytics, kept by the store as batches become durable: quality of
//! experience and engagement in 1-minute windows by event time (per video,
//! region, resolution, genre and overall), and pipeline progress by ingest
//! time (stored and rejected per minute, rejections by reason, end-to-end
//! latency from an event's timestamp to its durable write).
//!
//! QoE follows the industry definitions (Conviva, Mux):
//! - rebuffering ratio = rebuffer time / (play time + rebuffer time)
//! - video startup time = mean time to first frame of the views that started
//! - video start failures = views that ended in an error before playback, per view
//! - exits before video start = views left without an error before playback, per view
//! - average bitrate = bitrate weighted by play time
//! - rebuffer frequency = rebuffer events per hour of play
//!
//! Memory is bounded: windows older than `retention_minutes` before the newest
//! event minute are dropped (events that old arrive as `late_events`), and each
//! minute keeps at most `max_keys` keys per dimension (the rest add up under
//! `(other)`).

use super::config::AnalyticsConfig;
use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::domain::event::{Event, VideoEvent};
use crate::domain::record::{Outcome, Processed};

pub const MINUTE_MS: i64 = 60_000;

/// The breakdowns QoE and engagement are kept by.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Dim {
    All,
    Video,
    Region,
    Resolution,
    Genre,
}

impl Dim {
    pub const ALL: [Dim; 5] = [
        Dim::All,
        Dim::Video,
        Dim::Region,
        Dim::Resolution,
        Dim::Genre,
    ];

    pub fn parse(s: &str) -> Option<Dim> {
        Some(match s {
            "all" => Dim::All,
            "video" => Dim::Video,
            "region" => Dim::Region,
            "resolution" => Dim::Resolution,
            "genre" => Dim::Genre,
            _ => return None,
        })
    }

    /// Its place in [`Dim::ALL`].
    fn index(self) -> usize {
        match self {
            Dim::All => 0,
            Dim::Video => 1,
            Dim::Region => 2,
            Dim::Resolution => 3,
            Dim::Genre => 4,
        }
    }

    fn key_of(self, v: &VideoEvent) -> &str {
        match self {
            Dim::All => "all",
            Dim::Video => &v.video_id,
            Dim::Region => &v.region,
            Dim::Resolution => &v.resolution,
            Dim::Genre => &v.genre,
        }
    }
}

/// Sums over views, from which every QoE and engagement figure derives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QoeSums {
    pub views: u64,
    pub play_ms: f64,
    pub rebuffer_ms: f64,
    pub rebuffers: u64,
    pub startup_ms: f64,
    pub starts: u64,
    pub start_failures: u64,
    pub exits_before_start: u64,
    /// Σ bitrate × play time (kbps·ms).
    pub bitrate_play: f64,
    pub skipped: u64,
    pub paused: u64,
    #[serde(default)]
    pub recommended: u64,
}

impl QoeSums {
    pub fn add_view(&mut self, v: &VideoEvent) {
        let play_ms = (v.watch_time_seconds * 1000.0).max(0.0);
        self.views += 1;
        self.play_ms += play_ms;
        self.rebuffer_ms += v.rebuffer_ms.unwrap_or(0.0).max(0.0);
        self.rebuffers += v.buffering_events.max(0) as u64;
        if v.error.is_some() && play_ms == 0.0 {
            self.start_failures += 1;
        } else if let (Some(s), true) = (v.startup_time_ms, play_ms > 0.0) {
            self.startup_ms += s.max(0.0);
            self.starts += 1;
        } else if play_ms == 0.0 {
            self.exits_before_start += 1;
        }
        self.bitrate_play += v.bitrate_kbps.max(0) as f64 * play_ms;
        self.skipped += u64::from(v.skipped);
        self.paused += u64::from(v.paused);
        self.recommended += u64::from(v.recommended);
    }

    pub fn merge(&mut self, o: &QoeSums) {
        self.views += o.views;
        self.play_ms += o.play_ms;
        self.rebuffer_ms += o.rebuffer_ms;
        self.rebuffers += o.rebuffers;
        self.startup_ms += o.startup_ms;
        self.starts += o.starts;
        self.start_failures += o.start_failures;
        self.exits_before_start += o.exits_before_start;
        self.bitrate_play += o.bitrate_play;
        self.skipped += o.skipped;
        self.paused += o.paused;
        self.recommended += o.recommended;
    }

    /// The derived figures.
    pub fn metrics(&self) -> QoeMetrics {
        let per_view = |n: u64| {
            if self.views > 0 {
                n as f64 / self.views as f64
            } else {
                0.0
            }
        };
        let watched = self.play_ms + self.rebuffer_ms;
        QoeMetrics {
            views: self.views,
            watch_hours: self.play_ms / 3_600_000.0,
            rebuffering_ratio: if watched > 0.0 {
                self.rebuffer_ms / watched
            } else {
                0.0
            },
            startup_time_ms: if self.starts > 0 {
                self.startup_ms / self.starts as f64
            } else {
                0.0
            },
            start_failure_rate: per_view(self.start_failures),
            exits_before_start_rate: per_view(self.exits_before_start),
            avg_bitrate_kbps: if self.play_ms > 0.0 {
                self.bitrate_play / self.play_ms
            } else {
                0.0
            },
            rebuffers_per_hour: if self.play_ms > 0.0 {
                self.rebuffers as f64 / (self.play_ms / 3_600_000.0)
            } else {
                0.0
            },
            skip_rate: per_view(self.skipped),
            pause_rate: per_view(self.paused),
            recommended_rate: per_view(self.recommended),
            avg_watch_s: if self.views > 0 {
                self.play_ms / 1000.0 / self.views as f64
            } else {
                0.0
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QoeMetrics {
    pub views: u64,
    pub watch_hours: f64,
    pub rebuffering_ratio: f64,
    pub startup_time_ms: f64,
    pub start_failure_rate: f64,
    pub exits_before_start_rate: f64,
    pub avg_bitrate_kbps: f64,
    pub rebuffers_per_hour: f64,
    pub skip_rate: f64,
    pub pause_rate: f64,
    /// Views started from a recommendation, per view.
    #[serde(default)]
    pub recommended_rate: f64,
    pub avg_watch_s: f64,
}

/// Upper bounds (ms) of the latency histogram's buckets; the last is open.
pub const LATENCY_BOUNDS_MS: [f64; 12] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10_000.0, 60_000.0,
];

/// Pipeline progress in one ingest-time minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PipelineMinute {
    pub stored: u64,
    pub rejected: u64,
    pub duplicates_skipped: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Event timestamp → durable write, counts per bucket of [`LATENCY_BOUNDS_MS`] (+1 open).
    pub latency_buckets: Vec<u64>,
}

impl PipelineMinute {
    /// The latency (ms) at quantile `q`, by bucket upper bound.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency_buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        None
    }
}

pub const OTHER: &str = "(other)";

#[derive(Debug, Default)]
struct Minute {
    /// Each dimension's keys, by [`Dim::index`].
    by: [FxHashMap<String, QoeSums>; Dim::ALL.len()],
}

/// The live windows.
#[derive(Debug, Default)]
pub struct Analytics {
    cfg: AnalyticsConfig,
    /// Event-time minute (ms) → QoE sums.
    events: BTreeMap<i64, Minute>,
    /// Ingest-time minute (ms) → pipeline progress.
    pipeline: BTreeMap<i64, PipelineMinute>,
    /// Events older than the retention when they arrived.
    pub late_events: u64,
    /// Events dated past the wall clock by more than `future_skew_seconds`.
    pub future_events: u64,
}

fn minute_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

impl Analytics {
    pub fn new(cfg: AnalyticsConfig) -> Analytics {
        Analytics {
            cfg,
            ..Analytics::default()
        }
    }

    fn horizon(&self) -> i64 {
        self.events.keys().next_back().map_or(i64::MIN, |m| {
            m - i64::from(self.cfg.retention_minutes) * MINUTE_MS
        })
    }

    /// Takes in a durable batch: `fresh[i]` says whether record i was stored
    /// (false: a redelivered duplicate, skipped); `now_ms` is the write time.
    pub fn observe(&mut self, records: &[Processed], fresh: &[bool], now_ms: i64) {
        let p = self.pipeline.entry(minute_of(now_ms)).or_default();
        if p.latency_buckets.is_empty() {
            p.latency_buckets = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        }
        let mut views = Vec::new();
        for (r, &is_new) in records.iter().zip(fresh) {
            if !is_new {
                p.duplicates_skipped += 1;
                continue;
            }
            match &r.outcome {
                Outcome::Valid(ev) => {
                    p.stored += 1;
                    if let Event::Video(v) = ev {
                        let lat = (now_ms - v.timestamp_ms).max(0) as f64;
                        let b = LATENCY_BOUNDS_MS
                            .iter()
                            .position(|&u| lat <= u)
                            .unwrap_or(LATENCY_BOUNDS_MS.len());
                        p.latency_buckets[b] += 1;
                        views.push(v);
                    }
                }
                Outcome::Rejected { rejection, .. } => {
                    p.rejected += 1;
                    *p.rejected_by_reason
                        .entry(rejection.reason.to_string())
                        .or_default() += 1;
                }
            }
        }
        let future_from = now_ms.saturating_add(i64::from(self.cfg.future_skew_seconds) * 1000);
        for v in views {
            if v.timestamp_ms > future_from {
                self.future_events += 1;
                continue;
            }
            self.add_view(v);
        }
        let keep_from = minute_of(now_ms) - i64::from(self.cfg.retention_minutes) * MINUTE_MS;
        self.pipeline = self.pipeline.split_off(&keep_from);
    }

    fn add_view(&mut self, v: &VideoEvent) {
        let m = minute_of(v.timestamp_ms);
        if m < self.horizon() {
            self.late_events += 1;
            return;
        }
        let max_keys = self.cfg.max_keys;
        let minute = self.events.entry(m).or_default();
        for dim in Dim::ALL {
            let keys = &mut minute.by[dim.index()];
            let key = dim.key_of(v);
            if let Some(s) = keys.get_mut(key) {
                s.add_view(v);
                continue;
            }
            let key = if keys.len() < max_keys { key } else { OTHER };
            keys.entry(key.to_string()).or_default().add_view(v);
        }
        let horizon = self.horizon();
        if self
            .events
            .keys()
            .next()
            .is_some_and(|&first| first < horizon)
        {
            self.events = self.events.split_off(&horizon);
        }
    }

    /// The newest event minute (ms), if any.
    pub fn latest_minute(&self) -> Option<i64> {
        self.events.keys().next_back().copied()
    }

    fn window(&self, minutes: u32) -> impl Iterator<Item = (&i64, &Minute)> {
        let from = self
            .latest_minute()
            .map_or(i64::MIN, |m| m - (i64::from(minutes) - 1) * MINUTE_MS);
        self.events.range(from..)
    }

    /// Per minute of the last `minutes`: the QoE of `key` in `dim`.
    pub fn series(&self, dim: Dim, key: &str, minutes: u32) -> Vec<(i64, QoeMetrics)> {
        self.window(minutes)
            .map(|(m, b)| {
                let s = b.by[dim.index()].get(key).cloned().unwrap_or_default();
                (*m, s.metrics())
            })
            .collect()
    }

    /// Over the last `minutes`: each key of `dim` with its QoE, most viewed first.
    pub fn summary(&self, dim: Dim, minutes: u32, limit: usize) -> Vec<(String, QoeMetrics)> {
        let mut total: HashMap<&str, QoeSums> = HashMap::new();
        for (_, b) in self.window(minutes) {
            for (k, s) in &b.by[dim.index()] {
                total.entry(k.as_str()).or_default().merge(s);
            }
        }
        let mut v: Vec<(String, QoeSums)> =
            total.into_iter().map(|(k, s)| (k.to_string(), s)).collect();
        v.sort_by(|a, b| b.1.views.cmp(&a.1.views).then(a.0.cmp(&b.0)));
        v.truncate(limit);
        v.into_iter().map(|(k, s)| (k, s.metrics())).collect()
    }

    /// Per ingest minute of the last `minutes`: stored, rejected, latency.
    pub fn pipeline(&self, minutes: u32) -> Vec<(i64, &PipelineMinute)> {
        let from = self
            .pipeline
            .keys()
            .next_back()
            .map_or(i64::MIN, |m| m - (i64::from(minutes) - 1) * MINUTE_MS);
        self.pipeline.range(from..).map(|(m, p)| (*m, p)).collect()
    }

    /// Windows and keys held (for the memory bound).
    pub fn size(&self) -> (usize, usize) {
        let keys = self
            .events
            .values()
            .map(|m| m.by.iter().map(FxHashMap::len).sum::<usize>())
            .sum();
        (self.events.len(), keys)
    }
}

mod query;
pub mod range;
pub use query::*;

#[cfg(test)]
mod tests;
