//! Range answers of the analytics API checked against figures the test
//! computes itself from the events it produced (Mux's definitions).

use std::collections::BTreeMap;

use playpulse::domain::event::VideoEvent;
use playpulse::domain::timefmt::format_timestamp_ms;
use serde_json::Value;

use super::http_get;

pub const MINUTE: i64 = 60_000;
/// `analytics.max_view_minutes` of config.toml.
pub const MAX_VIEW_MS: i64 = 240 * MINUTE;

pub fn ms(x: f64) -> f64 {
    x.max(0.0).round()
}

/// The sums of one cohort, as the test reads Mux's definitions.
#[derive(Default, Debug)]
pub struct Expect {
    views: u64,
    play_ms: f64,
    rebuffer_ms: f64,
    startup_ms: f64,
    starts: u64,
    start_failures: u64,
    skipped: u64,
    recommended: u64,
    bitrate_play: f64,
}

impl Expect {
    pub fn add(&mut self, v: &VideoEvent) {
        let play = ms(v.watch_time_seconds * 1000.0);
        self.views += 1;
        self.play_ms += play;
        self.rebuffer_ms += ms(v.rebuffer_ms.unwrap_or(0.0));
        if v.error.is_some() && play == 0.0 {
            self.start_failures += 1;
        } else if let (Some(s), true) = (v.startup_time_ms, play > 0.0) {
            self.startup_ms += ms(s);
            self.starts += 1;
        }
        self.skipped += u64::from(v.skipped);
        self.recommended += u64::from(v.recommended);
        self.bitrate_play += v.bitrate_kbps.max(0) as f64 * play;
    }

    /// Asserts that an answer's row (`views`, rates, averages) holds these sums.
    pub fn check(&self, row: &Value, what: &str) {
        assert_eq!(row["views"].as_u64(), Some(self.views), "{what}: {row}");
        let close = |k: &str, want: f64| {
            let got = row[k].as_f64().unwrap_or(f64::NAN);
            // Sums of bitrate × play time are held in kbps·s.
            assert!(
                (got - want).abs() <= 1e-3 * want.abs().max(1.0),
                "{what}: {k} = {got}, the events say {want}: {row}"
            );
        };
        close("watch_hours", self.play_ms / 3_600_000.0);
        let watched = self.play_ms + self.rebuffer_ms;
        close(
            "rebuffering_ratio",
            if watched > 0.0 {
                self.rebuffer_ms / watched
            } else {
                0.0
            },
        );
        close(
            "startup_time_ms",
            if self.starts > 0 {
                self.startup_ms / self.starts as f64
            } else {
                0.0
            },
        );
        let per_view = |n: u64| n as f64 / self.views.max(1) as f64;
        close("start_failure_rate", per_view(self.start_failures));
        close("skip_rate", per_view(self.skipped));
        close("recommended_rate", per_view(self.recommended));
        close(
            "avg_bitrate_kbps",
            if self.play_ms > 0.0 {
                self.bitrate_play / self.play_ms
            } else {
                0.0
            },
        );
    }
}

/// The minute a view ends in: start + startup + play + rebuffering, capped.
pub fn end_minute(v: &VideoEvent) -> i64 {
    let play = ms(v.watch_time_seconds * 1000.0);
    let startup = match (v.error.is_some() && play == 0.0, v.startup_time_ms) {
        (false, Some(s)) if play > 0.0 => ms(s),
        _ => 0.0,
    };
    let lasted = (startup + play + ms(v.rebuffer_ms.unwrap_or(0.0))).min(MAX_VIEW_MS as f64);
    (v.timestamp_ms + lasted as i64).div_euclid(MINUTE) * MINUTE
}

pub fn ask(addr: &str, path: &str) -> Value {
    let (code, body) = http_get(addr, path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Every question of the test, answered by the daemon and checked against the
/// events; answers the replies (for comparing runs).
pub fn check(addr: &str, events: &[VideoEvent], from: i64, to: i64) -> Vec<Value> {
    let region = "US";
    let cohort: Vec<&VideoEvent> = events.iter().filter(|v| v.region == region).collect();
    assert!(cohort.len() > 100, "the fixture has US views");
    let mut replies = Vec::new();

    // The minute series of one region: views, QoE and viewers in progress per minute.
    let path =
        format!("/api/analytics?view=series&from={from}&to={to}&step=minute&region={region}");
    let s = ask(addr, &path);
    let points = s["points"].as_array().unwrap();
    assert_eq!(points.len() as i64, (to - from) / MINUTE, "{path}");
    let mut by_minute: BTreeMap<i64, Expect> = BTreeMap::new();
    for v in &cohort {
        by_minute
            .entry(v.timestamp_ms.div_euclid(MINUTE) * MINUTE)
            .or_default()
            .add(v);
    }
    for (i, p) in points.iter().enumerate() {
        let m = from + i as i64 * MINUTE;
        assert_eq!(p["minute"], format_timestamp_ms(m), "{p}");
        let want = by_minute.remove(&m).unwrap_or_default();
        want.check(p, &format!("series minute {}", format_timestamp_ms(m)));
        let in_progress = cohort
            .iter()
            .filter(|v| v.timestamp_ms < m + MINUTE && end_minute(v) >= m)
            .count() as u64;
        assert_eq!(
            p["concurrent_viewers"].as_u64(),
            Some(in_progress),
            "viewers in progress during {}: {p}",
            format_timestamp_ms(m)
        );
    }
    replies.push(s);

    // A region and a genre by resolution, over the whole range by the hour.
    let genre = &cohort[0].genre;
    let path = format!(
        "/api/analytics?view=qoe&dim=resolution&from={from}&to={to}&step=hour&region={region}&genre={genre}&limit=100"
    );
    let r = ask(addr, &path);
    let mut by_res: BTreeMap<&str, Expect> = BTreeMap::new();
    for v in cohort.iter().filter(|v| v.genre == *genre) {
        by_res.entry(&v.resolution).or_default().add(v);
    }
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), by_res.len(), "{path}: {r}");
    for row in rows {
        let key = row["key"].as_str().unwrap();
        by_res[key].check(row, &format!("{path}: {key}"));
    }
    replies.push(r);

    // One title by region, and the top titles by views.
    let title = &cohort[0].video_id;
    let path = format!(
        "/api/analytics?view=qoe&dim=region&from={from}&to={to}&step=hour&title={title}&limit=100"
    );
    let r = ask(addr, &path);
    let mut by_region: BTreeMap<&str, Expect> = BTreeMap::new();
    for v in events.iter().filter(|v| v.video_id == *title) {
        by_region.entry(&v.region).or_default().add(v);
    }
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), by_region.len(), "{path}: {r}");
    for row in rows {
        let key = row["key"].as_str().unwrap();
        by_region[key].check(row, &format!("{path}: {key}"));
    }
    replies.push(r);
    let t = ask(
        addr,
        &format!("/api/analytics?view=top&from={from}&to={to}&step=hour&limit=5"),
    );
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for v in events {
        *counts.entry(&v.video_id).or_default() += 1;
    }
    for row in t["videos"].as_array().unwrap() {
        let id = row["video"].as_str().unwrap();
        assert_eq!(row["views"].as_u64(), Some(counts[id]), "top: {row}");
    }
    let most = counts.values().max().copied();
    assert_eq!(t["videos"][0]["views"].as_u64(), most, "{t}");
    replies.push(t);
    replies
}
