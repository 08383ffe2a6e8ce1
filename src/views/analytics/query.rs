//! Queries over the live windows: what a view asks (typed, checked), and
//! what it answers.

use super::range::{ListeningRow, RangeInfo};
use super::*;

/// The views the live windows answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum View {
    Qoe,
    Series,
    Top,
    Engagement,
    Pipeline,
    /// Listening events by device or track (rollups only).
    Listening,
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
            "listening" => View::Listening,
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
    #[error("view {0:?}: use qoe, series, top, engagement, pipeline or listening")]
    View(String),
    #[error("dim {0:?}: use all, video, region, resolution or genre")]
    Dim(String),
    #[error("analytics unavailable (a panic while they were updated)")]
    Unavailable,
    /// A range question that cannot be answered as asked.
    #[error("{0}")]
    Range(String),
    #[error("the rollups could not be read: {0}")]
    Store(String),
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
    /// A time range (RFC 3339 or ms): answered from the durable rollups.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// The range back from `to` (or the newest minute): 15m, 1h, 24h, 7d.
    #[serde(default)]
    pub last: Option<String>,
    /// Buckets of a minute or an hour (default: by the range).
    #[serde(default)]
    pub step: Option<crate::store::rollup::Grain>,
    /// Filters on any combination of the dimensions.
    #[serde(default)]
    pub filter: crate::store::rollup::query::Filter,
    /// The breakdown of `listening` (device or track).
    #[serde(default)]
    pub by: Option<crate::store::rollup::query::Field>,
}

pub(crate) fn rfc3339(ms: i64) -> String {
    crate::domain::timefmt::format_timestamp_ms(ms)
}

/// QoE of one key of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyedQoe {
    pub key: String,
    /// The title's name (rows of videos whose catalog record is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(flatten)]
    pub metrics: QoeMetrics,
}

/// QoE of one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteQoe {
    pub minute: String,
    #[serde(flatten)]
    pub metrics: QoeMetrics,
    /// Views in progress during the bucket (range answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_viewers: Option<u64>,
    /// Members of the group that reported the bucket (range answers of a
    /// group member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopVideo {
    pub video: String,
    /// Its name, when its catalog record is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
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

impl EngagementRow {
    pub fn of(key: String, m: &QoeMetrics) -> EngagementRow {
        EngagementRow {
            key,
            views: m.views,
            watch_hours: m.watch_hours,
            avg_watch_s: m.avg_watch_s,
            skip_rate: m.skip_rate,
            pause_rate: m.pause_rate,
        }
    }
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
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<RangeInfo>,
    },
    Series {
        dim: Dim,
        key: String,
        minutes: u32,
        points: Vec<MinuteQoe>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<RangeInfo>,
    },
    Top {
        minutes: u32,
        latest_minute: Option<String>,
        videos: Vec<TopVideo>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<RangeInfo>,
    },
    Engagement {
        minutes: u32,
        genre: Vec<EngagementRow>,
        region: Vec<EngagementRow>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<RangeInfo>,
    },
    Listening {
        by: crate::store::rollup::query::Field,
        rows: Vec<ListeningRow>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<RangeInfo>,
    },
    Pipeline {
        minutes: u32,
        late_events: u64,
        future_events: u64,
        points: Vec<PipelinePoint>,
    },
}

impl Answer {
    /// Names the titles of its rows of videos by `name`.
    pub fn name_titles(&mut self, name: impl Fn(&str) -> Option<String>) {
        match self {
            Answer::Top { videos, .. } => {
                for v in videos {
                    v.title = name(&v.video);
                }
            }
            Answer::Qoe {
                dim: Dim::Video,
                rows,
                ..
            } => {
                for r in rows {
                    r.title = name(&r.key);
                }
            }
            _ => {}
        }
    }
}

impl Analytics {
    /// Answers a [`Query`] from the live windows (a range query: see
    /// [`range::answer`]).
    pub fn query(&self, q: &Query) -> Result<Answer, AnalyticsError> {
        let minutes = q
            .minutes
            .unwrap_or(15)
            .clamp(1, self.cfg.retention_minutes.max(1));
        let limit = q.limit.unwrap_or(20).clamp(1, 10_000);
        let dim = q.dim.unwrap_or(Dim::All);
        let latest_minute = self.latest_minute().map(rfc3339);
        let keyed = |(key, metrics): (String, QoeMetrics)| KeyedQoe {
            key,
            title: None,
            metrics,
        };
        Ok(match q.view {
            View::Qoe => Answer::Qoe {
                dim,
                minutes,
                latest_minute,
                rows: self
                    .summary(dim, minutes, limit)
                    .into_iter()
                    .map(keyed)
                    .collect(),
                range: None,
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
                        title: None,
                        views: m.views,
                        watch_hours: m.watch_hours,
                    })
                    .collect(),
                range: None,
            },
            View::Series => {
                let key = q.key.clone().unwrap_or_else(|| "all".into());
                let points = self
                    .series(dim, &key, minutes)
                    .into_iter()
                    .map(|(t, metrics)| MinuteQoe {
                        members: None,
                        minute: rfc3339(t),
                        metrics,
                        concurrent_viewers: None,
                    })
                    .collect();
                Answer::Series {
                    dim,
                    key,
                    minutes,
                    points,
                    range: None,
                }
            }
            View::Engagement => {
                let rows = |d| -> Vec<EngagementRow> {
                    self.summary(d, minutes, limit)
                        .into_iter()
                        .map(|(key, m)| EngagementRow::of(key, &m))
                        .collect()
                };
                Answer::Engagement {
                    minutes,
                    genre: rows(Dim::Genre),
                    region: rows(Dim::Region),
                    range: None,
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
            View::Listening => {
                return Err(AnalyticsError::Range(
                    "listening is answered from the rollups only".into(),
                ))
            }
        })
    }
}
