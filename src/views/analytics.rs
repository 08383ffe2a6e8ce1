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
    by: HashMap<Dim, HashMap<String, QoeSums>>,
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
            let keys = minute.by.entry(dim).or_default();
            let key = dim.key_of(v);
            let key = if keys.contains_key(key) || keys.len() < max_keys {
                key
            } else {
                OTHER
            };
            match keys.get_mut(key) {
                Some(s) => s.add_view(v),
                None => keys.entry(key.to_string()).or_default().add_view(v),
            }
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
                let s =
                    b.by.get(&dim)
                        .and_then(|k| k.get(key))
                        .cloned()
                        .unwrap_or_default();
                (*m, s.metrics())
            })
            .collect()
    }

    /// Over the last `minutes`: each key of `dim` with its QoE, most viewed first.
    pub fn summary(&self, dim: Dim, minutes: u32, limit: usize) -> Vec<(String, QoeMetrics)> {
        let mut total: HashMap<&str, QoeSums> = HashMap::new();
        for (_, b) in self.window(minutes) {
            for (k, s) in b.by.get(&dim).into_iter().flatten() {
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
            .map(|m| m.by.values().map(HashMap::len).sum::<usize>())
            .sum();
        (self.events.len(), keys)
    }
}

/// The views the live windows answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum View {
    Qoe,
    Series,
    Top,
    Engagement,
    Pipeline,
}

impl TryFrom<String> for View {
    type Error = AnalyticsError;

    fn try_from(s: String) -> Result<View, AnalyticsError> {
        Ok(match s.as_str() {
            "qoe" => View::Qoe,
            "series" => View::Series,
            "top" => View::Top,
            "engagement" => View::Engagement,
            "pipeline" => View::Pipeline,
            _ => return Err(AnalyticsError::View(s)),
        })
    }
}

impl TryFrom<String> for Dim {
    type Error = AnalyticsError;

    fn try_from(s: String) -> Result<Dim, AnalyticsError> {
        Dim::parse(&s).ok_or(AnalyticsError::Dim(s))
    }
}

/// A question the live windows cannot answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalyticsError {
    #[error("view {0:?}: use qoe, series, top, engagement or pipeline")]
    View(String),
    #[error("dim {0:?}: use all, video, region, resolution or genre")]
    Dim(String),
    #[error("analytics unavailable (a panic while they were updated)")]
    Unavailable,
}

/// A question for the live windows (admin `analytics`, HTTP `/api/analytics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub view: View,
    /// all | video | region | resolution | genre (qoe, series)
    pub dim: Option<Dim>,
    /// The key of `dim` (series); `all` by default.
    pub key: Option<String>,
    /// Minutes back from the newest (default 15).
    pub minutes: Option<u32>,
    /// Most rows (default 20).
    pub limit: Option<usize>,
}

fn rfc3339(ms: i64) -> String {
    crate::domain::timefmt::format_timestamp_ms(ms)
}

/// QoE of one key of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyedQoe {
    pub key: String,
    #[serde(flatten)]
    pub metrics: QoeMetrics,
}

/// QoE of one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteQoe {
    pub minute: String,
    #[serde(flatten)]
    pub metrics: QoeMetrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopVideo {
    pub video: String,
    pub views: u64,
    pub watch_hours: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngagementRow {
    pub key: String,
    pub views: u64,
    pub watch_hours: f64,
    pub avg_watch_s: f64,
    pub skip_rate: f64,
    pub pause_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelinePoint {
    pub minute: String,
    pub stored: u64,
    pub rejected: u64,
    pub duplicates_skipped: u64,
    pub rows_per_sec: f64,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    pub rejected_by_reason: BTreeMap<String, u64>,
}

/// The answer to a [`Query`], one shape per view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "view", rename_all = "snake_case")]
pub enum Answer {
    Qoe {
        dim: Dim,
        minutes: u32,
        latest_minute: Option<String>,
        rows: Vec<KeyedQoe>,
    },
    Series {
        dim: Dim,
        key: String,
        minutes: u32,
        points: Vec<MinuteQoe>,
    },
    Top {
        minutes: u32,
        latest_minute: Option<String>,
        videos: Vec<TopVideo>,
    },
    Engagement {
        minutes: u32,
        genre: Vec<EngagementRow>,
        region: Vec<EngagementRow>,
    },
    Pipeline {
        minutes: u32,
        late_events: u64,
        future_events: u64,
        points: Vec<PipelinePoint>,
    },
}

impl Analytics {
    /// Answers a [`Query`].
    pub fn query(&self, q: &Query) -> Answer {
        let minutes = q
            .minutes
            .unwrap_or(15)
            .clamp(1, self.cfg.retention_minutes.max(1));
        let limit = q.limit.unwrap_or(20).clamp(1, 10_000);
        let dim = q.dim.unwrap_or(Dim::All);
        let latest_minute = self.latest_minute().map(rfc3339);
        let keyed = |(key, metrics): (String, QoeMetrics)| KeyedQoe { key, metrics };
        match q.view {
            View::Qoe => Answer::Qoe {
                dim,
                minutes,
                latest_minute,
                rows: self
                    .summary(dim, minutes, limit)
                    .into_iter()
                    .map(keyed)
                    .collect(),
            },
            View::Top => Answer::Top {
                minutes,
                latest_minute,
                videos: self
                    .summary(Dim::Video, minutes, limit)
                    .into_iter()
                    .filter(|(k, _)| k != OTHER)
                    .map(|(video, m)| TopVideo {
                        video,
                        views: m.views,
                        watch_hours: m.watch_hours,
                    })
                    .collect(),
            },
            View::Series => {
                let key = q.key.clone().unwrap_or_else(|| "all".into());
                let points = self
                    .series(dim, &key, minutes)
                    .into_iter()
                    .map(|(t, metrics)| MinuteQoe {
                        minute: rfc3339(t),
                        metrics,
                    })
                    .collect();
                Answer::Series {
                    dim,
                    key,
                    minutes,
                    points,
                }
            }
            View::Engagement => {
                let rows = |d| -> Vec<EngagementRow> {
                    self.summary(d, minutes, limit)
                        .into_iter()
                        .map(|(key, m)| EngagementRow {
                            key,
                            views: m.views,
                            watch_hours: m.watch_hours,
                            avg_watch_s: m.avg_watch_s,
                            skip_rate: m.skip_rate,
                            pause_rate: m.pause_rate,
                        })
                        .collect()
                };
                Answer::Engagement {
                    minutes,
                    genre: rows(Dim::Genre),
                    region: rows(Dim::Region),
                }
            }
            View::Pipeline => Answer::Pipeline {
                minutes,
                late_events: self.late_events,
                future_events: self.future_events,
                points: self
                    .pipeline(minutes)
                    .into_iter()
                    .map(|(t, p)| PipelinePoint {
                        minute: rfc3339(t),
                        stored: p.stored,
                        rejected: p.rejected,
                        duplicates_skipped: p.duplicates_skipped,
                        rows_per_sec: (p.stored + p.rejected) as f64 / 60.0,
                        latency_ms_p50: p.latency_quantile(0.5).filter(|x| x.is_finite()),
                        latency_ms_p99: p.latency_quantile(0.99).filter(|x| x.is_finite()),
                        rejected_by_reason: p.rejected_by_reason.clone(),
                    })
                    .collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::SourcePos;
    use std::sync::Arc;

    fn view(min: i64, video: &str, region: &str, watch_s: f64) -> VideoEvent {
        VideoEvent {
            user_id: "u".into(),
            video_id: video.into(),
            watch_time_seconds: watch_s,
            resolution: "1080p".into(),
            bitrate_kbps: 4000,
            buffering_events: 2,
            paused: true,
            skipped: false,
            genre: "Drama".into(),
            region: region.into(),
            recommended: false,
            timestamp_ms: 1_767_225_600_000 + min * MINUTE_MS + 5_000,
            startup_time_ms: Some(800.0),
            rebuffer_ms: Some(1500.0),
            error: None,
        }
    }

    fn rec(v: VideoEvent) -> Processed {
        Processed {
            pos: SourcePos {
                topic: Arc::from("t"),
                partition: 0,
                offset: 0,
            },
            origin: None,
            headers: Default::default(),
            outcome: Outcome::Valid(Event::Video(v)),
        }
    }

    #[test]
    fn qoe_follows_the_industry_definitions() {
        let mut s = QoeSums::default();
        s.add_view(&view(0, "a", "US", 600.0)); // 600 s played, 1.5 s rebuffering, 2 rebuffers
        let mut failed = view(0, "a", "US", 0.0);
        failed.error = Some("drm".into());
        failed.startup_time_ms = None;
        s.add_view(&failed);
        let mut left = view(0, "a", "US", 0.0);
        left.startup_time_ms = None;
        s.add_view(&left);
        let mut low = view(0, "a", "US", 200.0);
        low.bitrate_kbps = 1000;
        low.startup_time_ms = Some(400.0);
        s.add_view(&low);
        let m = s.metrics();
        assert_eq!(m.views, 4);
        // rebuffer 4 × 1.5 s over (800 s played + 6 s rebuffering)
        assert!((m.rebuffering_ratio - 6_000.0 / 806_000.0).abs() < 1e-12);
        assert!((m.startup_time_ms - 600.0).abs() < 1e-12, "{m:?}");
        assert!((m.start_failure_rate - 0.25).abs() < 1e-12);
        assert!((m.exits_before_start_rate - 0.25).abs() < 1e-12);
        // (4000 × 600 + 1000 × 200) / 800
        assert!((m.avg_bitrate_kbps - 3250.0).abs() < 1e-9);
        // 8 rebuffers over 800 s of play
        assert!((m.rebuffers_per_hour - 8.0 / (800.0 / 3600.0)).abs() < 1e-9);
        assert!((m.pause_rate - 1.0).abs() < 1e-12 && m.skip_rate == 0.0);
    }

    #[test]
    fn windows_by_minute_with_bounded_memory() {
        let mut a = Analytics::new(AnalyticsConfig {
            retention_minutes: 3,
            max_keys: 2,
            future_skew_seconds: 300,
        });
        let now = 1_767_225_600_000 + 10 * MINUTE_MS;
        let batch: Vec<Processed> = vec![
            rec(view(0, "a", "US", 60.0)),
            rec(view(0, "b", "US", 60.0)),
            rec(view(0, "c", "DE", 60.0)),
            rec(view(1, "a", "DE", 30.0)),
        ];
        let fresh = vec![true, true, true, false];
        a.observe(&batch, &fresh, now);
        // Minute 0: 3 views, the third video over max_keys goes to (other); the
        // duplicate (not fresh) is not counted anywhere but in the pipeline.
        let top = a.summary(Dim::Video, 10, 10);
        let names: Vec<&str> = top.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, vec!["(other)", "a", "b"]);
        assert_eq!(
            a.summary(Dim::Region, 10, 10)[0],
            ("US".to_string(), {
                let mut s = QoeSums::default();
                s.add_view(&view(0, "a", "US", 60.0));
                s.add_view(&view(0, "b", "US", 60.0));
                s.metrics()
            })
        );
        let p = a.pipeline(1);
        assert_eq!((p[0].1.stored, p[0].1.duplicates_skipped), (3, 1));
        // Latency of events 10 minutes old falls in the open bucket.
        assert_eq!(p[0].1.latency_quantile(0.5), Some(f64::INFINITY));
        // Minute 5 arrives: minute 0 leaves the 3-minute retention.
        a.observe(&[rec(view(5, "a", "US", 10.0))], &[true], now);
        assert_eq!(a.series(Dim::All, "all", 10).len(), 1);
        assert_eq!(a.size(), (1, 5));
        // An event older than the retention is late, not counted.
        a.observe(&[rec(view(1, "a", "US", 10.0))], &[true], now);
        assert_eq!(a.late_events, 1);
        let s = a.series(Dim::Region, "US", 3);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].1.views, 1);
        // An event dated 20 h ahead of the clock is counted apart: the windows
        // stay where they are and later events still count.
        a.observe(&[rec(view(1200, "a", "US", 10.0))], &[true], now);
        assert_eq!(a.future_events, 1);
        assert_eq!(a.latest_minute(), Some(1_767_225_600_000 + 5 * MINUTE_MS));
        a.observe(&[rec(view(6, "a", "US", 10.0))], &[true], now);
        assert_eq!(a.series(Dim::Region, "US", 3).len(), 2);
        assert_eq!(a.late_events, 1);
    }

    #[test]
    fn rejections_count_by_reason_and_latency_quantiles() {
        let mut a = Analytics::default();
        let now = 1_767_225_600_000;
        let mut v = view(0, "a", "US", 1.0);
        v.timestamp_ms = now - 40; // 40 ms old: the 50 ms bucket
        let bad = Processed {
            outcome: Outcome::Rejected {
                rejection: crate::domain::reject::Rejection::field(
                    "out_of_range",
                    "x",
                    None,
                    "fix",
                ),
                raw: Vec::new(),
            },
            ..rec(v.clone())
        };
        a.observe(&[rec(v.clone()), rec(v), bad.clone(), bad], &[true; 4], now);
        let p = a.pipeline(1);
        assert_eq!(p[0].1.rejected_by_reason["out_of_range"], 2);
        assert_eq!(p[0].1.latency_quantile(0.99), Some(50.0));
    }
}
