//! Questions over days: answered from the store's durable rollups (see
//! `store::rollup`) when a query names a time range (`from`, `to`, `last`),
//! a step, a filter, or asks about listening.

use super::*;
use crate::store::rollup::query::{Field, Filter, Group, RangeError, RangeQuery, RangeRows};
use crate::store::rollup::{slot, Grain, Sums, HOUR_MS, MINUTE_MS};
use crate::store::StoreView;

/// Most points a series answers.
pub const MAX_POINTS: i64 = 10_080;
/// The longest range asked, ms (the longest hour retention).
pub const MAX_RANGE_MS: i64 = 3650 * 24 * HOUR_MS;

/// The views' QoE sums of a rollup row.
pub fn qoe_of(s: &Sums) -> QoeSums {
    let g = |i| s.get(i);
    QoeSums {
        views: g(slot::VIEWS),
        play_ms: g(slot::PLAY_MS) as f64,
        rebuffer_ms: g(slot::REBUFFER_MS) as f64,
        rebuffers: g(slot::REBUFFERS),
        startup_ms: g(slot::STARTUP_MS) as f64,
        starts: g(slot::STARTS),
        start_failures: g(slot::START_FAILURES),
        exits_before_start: g(slot::EXITS_BEFORE_START),
        bitrate_play: g(slot::BITRATE_PLAY_S) as f64 * 1000.0,
        skipped: g(slot::SKIPPED),
        paused: g(slot::PAUSED),
        recommended: g(slot::RECOMMENDED),
    }
}

/// A span such as `90s`, `15m`, `1h`, `24h`, `7d`, in ms.
pub fn parse_span(s: &str) -> Result<i64, AnalyticsError> {
    let bad = || {
        AnalyticsError::Range(format!(
            "last = {s:?} is not a span: give a number and a unit, e.g. 15m, 1h, 24h or 7d"
        ))
    };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "s" => 1000,
        "m" | "min" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => 24 * HOUR_MS,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if !(1000..=MAX_RANGE_MS).contains(&ms) {
        return Err(AnalyticsError::Range(format!(
            "last = {s:?} is out of range: give 1s to 3650d"
        )));
    }
    Ok(ms)
}

/// A time: RFC 3339 (`2026-12-04T10:00:00Z`) or ms since the epoch.
fn parse_time(name: &str, s: &str) -> Result<i64, AnalyticsError> {
    if let Ok(ms) = s.trim().parse::<i64>() {
        return Ok(ms);
    }
    crate::domain::timefmt::parse_timestamp_ms(s.trim(), crate::domain::timefmt::TimePolicy::Strict)
        .ok_or_else(|| {
            AnalyticsError::Range(format!(
                "{name} = {s:?} is not a time: give RFC 3339 (2026-12-04T10:00:00Z) or ms since the epoch"
            ))
        })
}

/// Where and how finely a range query reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub from_ms: i64,
    pub to_ms: i64,
    pub grain: Grain,
}

impl Query {
    /// Whether the rollups answer (else the live windows do).
    pub fn is_range(&self) -> bool {
        self.from.is_some()
            || self.to.is_some()
            || self.last.is_some()
            || self.step.is_some()
            || self.filter != Filter::default()
            || self.view == View::Listening
    }

    /// The range asked: `from`/`to`, or `last` (else `minutes`, else 15
    /// minutes) back from `to` or from the newest minute rolled up; the step
    /// asked, else minutes for ranges of up to 6 hours within the minutes
    /// kept, hours beyond.
    pub fn span(
        &self,
        newest: Option<i64>,
        minute_retention_ms: i64,
    ) -> Result<Span, AnalyticsError> {
        let now = newest.map_or_else(crate::domain::timefmt::now_ms, |m| m + MINUTE_MS);
        let to = match &self.to {
            Some(t) => parse_time("to", t)?,
            None => now,
        };
        let back = match (&self.last, self.minutes) {
            (Some(l), _) => parse_span(l)?,
            (None, Some(m)) => i64::from(m) * MINUTE_MS,
            (None, None) => 15 * MINUTE_MS,
        };
        let from = match &self.from {
            Some(f) => parse_time("from", f)?,
            None => to.saturating_sub(back),
        };
        if from >= to {
            return Err(AnalyticsError::Range(format!(
                "from ({}) is not before to ({}): give a range that ends after it starts",
                rfc3339(from),
                rfc3339(to)
            )));
        }
        if to - from > MAX_RANGE_MS {
            return Err(AnalyticsError::Range(
                "the range is longer than 3650 days: give a shorter one".into(),
            ));
        }
        // Titles are kept by the hour.
        let titles = self.filter.title.is_some()
            || self.view == View::Top
            || (self.dim == Some(Dim::Video) && self.view == View::Qoe);
        let grain = self.step.unwrap_or({
            let kept_from = now.saturating_sub(minute_retention_ms);
            if to - from <= 6 * HOUR_MS && from >= kept_from && !titles {
                Grain::Minute
            } else {
                Grain::Hour
            }
        });
        if self.view == View::Series {
            let points = (to - from + grain.ms() - 1) / grain.ms();
            if points > MAX_POINTS {
                return Err(AnalyticsError::Range(format!(
                    "the series would have {points} points of a {}: give a shorter range or --step hour (at most {MAX_POINTS})",
                    match grain {
                        Grain::Minute => "minute",
                        Grain::Hour => "hour",
                    }
                )));
            }
        }
        Ok(Span {
            from_ms: from,
            to_ms: to,
            grain,
        })
    }
}

/// What range answers say of their range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangeInfo {
    pub from: String,
    pub to: String,
    pub step: Grain,
    #[serde(default)]
    pub filter: Filter,
    /// The newest event minute rolled up.
    pub newest_minute: Option<String>,
    /// Rollup rows read to answer.
    pub rows_read: u64,
    /// Members of the group that reported within the range (a group
    /// member's answers: they add up every member's rollups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
}

/// Listening engagement of one key (device or track).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListeningRow {
    pub key: String,
    pub events: u64,
    pub plays: u64,
    pub skips: u64,
    pub likes: u64,
    pub skip_rate: f64,
    pub like_rate: f64,
}

fn dim_field(d: Dim) -> Option<Field> {
    match d {
        Dim::All => None,
        Dim::Video => Some(Field::Title),
        Dim::Region => Some(Field::Region),
        Dim::Resolution => Some(Field::Resolution),
        Dim::Genre => Some(Field::Genre),
    }
}

impl From<RangeError> for AnalyticsError {
    fn from(e: RangeError) -> AnalyticsError {
        match e {
            RangeError::Mismatch { .. } | RangeError::TitlesByHour => {
                AnalyticsError::Range(e.to_string())
            }
            RangeError::Store(s) => AnalyticsError::Store(s.to_string()),
        }
    }
}

/// Answers a range [`Query`] from the rollups of `view` (with `group`, a
/// group member's: the answer says how many members reported).
pub fn answer(
    view: &StoreView,
    q: &Query,
    minute_retention_ms: i64,
    group: bool,
) -> Result<Answer, AnalyticsError> {
    let status = view.rollup_status();
    let newest = status.group_newest();
    let mut members = 0u32;
    let span = q.span(newest, minute_retention_ms)?;
    let limit = q.limit.unwrap_or(20).clamp(1, 10_000);
    let dim = q.dim.unwrap_or(Dim::All);
    let mut rows_read = 0u64;
    let mut ask = |music: bool, group: Group| -> Result<RangeRows, AnalyticsError> {
        let r = view.rollups(&RangeQuery {
            music,
            from_ms: span.from_ms,
            to_ms: span.to_ms,
            grain: span.grain,
            filter: q.filter.clone(),
            group,
        })?;
        rows_read += r.rows_read;
        members = members.max(r.members);
        Ok(r)
    };
    let minutes = u32::try_from((span.to_ms - span.from_ms) / MINUTE_MS).unwrap_or(u32::MAX);
    let keyed = |r: RangeRows| -> Vec<KeyedQoe> {
        r.groups
            .into_iter()
            .take(limit)
            .map(|(key, s)| KeyedQoe {
                key,
                title: None,
                metrics: qoe_of(&s).metrics(),
            })
            .collect()
    };
    let engagement = |r: RangeRows| -> Vec<EngagementRow> {
        r.groups
            .into_iter()
            .take(limit)
            .map(|(key, s)| EngagementRow::of(key, &qoe_of(&s).metrics()))
            .collect()
    };
    let mut answer = match q.view {
        View::Qoe => Answer::Qoe {
            dim,
            minutes,
            latest_minute: newest.map(rfc3339),
            rows: keyed(ask(false, dim_field(dim).map_or(Group::Total, Group::By))?),
            range: None,
        },
        View::Top => Answer::Top {
            minutes,
            latest_minute: newest.map(rfc3339),
            videos: ask(false, Group::By(Field::Title))?
                .groups
                .into_iter()
                .filter(|(k, _)| k != crate::store::rollup::OTHER)
                .take(limit)
                .map(|(video, s)| {
                    let m = qoe_of(&s).metrics();
                    TopVideo {
                        video,
                        title: None,
                        views: m.views,
                        watch_hours: m.watch_hours,
                    }
                })
                .collect(),
            range: None,
        },
        View::Series => {
            if dim != Dim::All && q.key.is_some() {
                return Err(AnalyticsError::Range(
                    "a range series takes filters (--region, --genre, --resolution, --title), not --dim/--key".into(),
                ));
            }
            let r = ask(false, Group::Series)?;
            Answer::Series {
                dim: Dim::All,
                key: "all".into(),
                minutes,
                points: r
                    .points
                    .into_iter()
                    .map(|p| MinuteQoe {
                        minute: rfc3339(p.bucket),
                        metrics: qoe_of(&p.sums).metrics(),
                        concurrent_viewers: p.in_progress,
                        members: group.then_some(p.members),
                    })
                    .collect(),
                range: None,
            }
        }
        View::Engagement => Answer::Engagement {
            minutes,
            genre: engagement(ask(false, Group::By(Field::Genre))?),
            region: engagement(ask(false, Group::By(Field::Region))?),
            range: None,
        },
        View::Listening => {
            let by = match q.by {
                Some(f @ (Field::Device | Field::Track)) => f,
                None => Field::Device,
                Some(f) => {
                    return Err(AnalyticsError::Range(format!(
                        "by = {}: listening is kept by device or track",
                        f.name()
                    )))
                }
            };
            let rate = |n: u64, d: u64| if d > 0 { n as f64 / d as f64 } else { 0.0 };
            Answer::Listening {
                by,
                rows: ask(true, Group::By(by))?
                    .groups
                    .into_iter()
                    .take(limit)
                    .map(|(key, s)| ListeningRow {
                        key,
                        events: s.get(slot::EVENTS),
                        plays: s.get(slot::PLAY),
                        skips: s.get(slot::SKIP),
                        likes: s.get(slot::LIKE),
                        skip_rate: rate(s.get(slot::SKIP), s.get(slot::EVENTS)),
                        like_rate: rate(s.get(slot::LIKE), s.get(slot::EVENTS)),
                    })
                    .collect(),
                range: None,
            }
        }
        View::Pipeline => {
            return Err(AnalyticsError::Range(
                "the pipeline view is live only (ingest time, in memory): drop --from/--to/--last/--step and the filters".into(),
            ))
        }
    };
    // The buckets read, whole.
    let g = span.grain.ms();
    let info = RangeInfo {
        from: rfc3339(span.grain.bucket(span.from_ms)),
        to: rfc3339(span.grain.bucket(span.to_ms - 1) + g),
        step: span.grain,
        filter: q.filter.clone(),
        newest_minute: newest.map(rfc3339),
        rows_read,
        members: group.then_some(members),
    };
    match &mut answer {
        Answer::Qoe { range, .. }
        | Answer::Top { range, .. }
        | Answer::Series { range, .. }
        | Answer::Engagement { range, .. }
        | Answer::Listening { range, .. } => *range = Some(info),
        Answer::Pipeline { .. } => {}
    }
    Ok(answer)
}
