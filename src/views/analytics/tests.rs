use super::*;
use crate::domain::record::SourcePos;

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
    Processed::at(SourcePos::new("t", 0, 0), Outcome::Valid(Event::Video(v)))
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
        ..AnalyticsConfig::default()
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

/// A batch's views count as they would one batch each: the same windows,
/// keys past `max_keys` under `(other)`, late and future events, whatever
/// the order of their minutes.
#[test]
fn a_batch_counts_its_views_as_one_batch_each_would() {
    let cfg = AnalyticsConfig {
        retention_minutes: 4,
        max_keys: 3,
        ..AnalyticsConfig::default()
    };
    let now = 1_767_225_600_000 + 40 * MINUTE_MS;
    // Minutes going back and forth, a jump that makes earlier ones late,
    // one 20 h ahead of the clock, five videos over three keys.
    let minutes = [0, 0, 1, 0, 2, 2, 9, 1, 5, 9, 9, 1200, 6, 10, 3, 10, 10, 7];
    let views: Vec<VideoEvent> = minutes
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let region = ["US", "DE", "BR"][i % 3];
            let mut v = view(m, &format!("v{}", i % 5), region, (i * 7 % 50) as f64);
            v.rebuffer_ms = Some((i * 13 % 900) as f64);
            v.skipped = i % 4 == 0;
            v
        })
        .collect();
    let batch: Vec<Processed> = views.iter().cloned().map(rec).collect();
    let mut fresh = vec![true; batch.len()];
    fresh[4] = false;
    let mut whole = Analytics::new(cfg.clone());
    whole.observe(&batch, &fresh, now);
    let mut one_by_one = Analytics::new(cfg);
    for (r, f) in batch.iter().zip(&fresh) {
        one_by_one.observe(std::slice::from_ref(r), &[*f], now);
    }
    assert_eq!(
        (whole.late_events, whole.future_events),
        (one_by_one.late_events, one_by_one.future_events)
    );
    assert!(whole.late_events > 0 && whole.future_events == 1);
    assert_eq!(whole.size(), one_by_one.size());
    assert_eq!(whole.latest_minute(), one_by_one.latest_minute());
    for dim in Dim::ALL {
        assert_eq!(
            whole.summary(dim, 60, 100),
            one_by_one.summary(dim, 60, 100)
        );
        for (key, _) in whole.summary(dim, 60, 100) {
            assert_eq!(
                whole.series(dim, &key, 60),
                one_by_one.series(dim, &key, 60)
            );
        }
    }
}

#[test]
fn rejections_count_by_reason_and_latency_quantiles() {
    let mut a = Analytics::default();
    let now = 1_767_225_600_000;
    let mut v = view(0, "a", "US", 1.0);
    v.timestamp_ms = now - 40; // 40 ms old: the 50 ms bucket
    let bad = Processed {
        outcome: Outcome::Rejected {
            rejection: crate::domain::reject::Rejection::field("out_of_range", "x", None, "fix"),
            raw: Vec::new(),
        },
        ..rec(v.clone())
    };
    a.observe(&[rec(v.clone()), rec(v), bad.clone(), bad], &[true; 4], now);
    let p = a.pipeline(1);
    assert_eq!(p[0].1.rejected_by_reason["out_of_range"], 2);
    assert_eq!(p[0].1.latency_quantile(0.99), Some(50.0));
}

fn range_query(view: View) -> Query {
    Query {
        view,
        dim: None,
        key: None,
        minutes: None,
        limit: None,
        from: None,
        to: None,
        last: None,
        step: None,
        filter: Default::default(),
        by: None,
    }
}

#[test]
fn a_range_is_read_in_minutes_while_short_and_kept_else_in_hours() {
    use crate::store::rollup::{Grain, HOUR_MS};
    assert_eq!(range::parse_span("15m").unwrap(), 15 * MINUTE_MS);
    assert_eq!(range::parse_span("7d").unwrap(), 7 * 24 * HOUR_MS);
    for bad in ["", "m", "15", "1w", "-1h", "99999999999d"] {
        let e = range::parse_span(bad).unwrap_err().to_string();
        assert!(e.contains("last = "), "{bad}: {e}");
    }
    let newest = 1_767_225_600_000;
    let kept = 48 * HOUR_MS;
    let mut q = range_query(View::Qoe);
    q.last = Some("1h".into());
    let s = q.span(Some(newest), kept).unwrap();
    assert_eq!(
        (s.to_ms, s.to_ms - s.from_ms, s.grain),
        (newest + MINUTE_MS, HOUR_MS, Grain::Minute)
    );
    q.last = Some("24h".into());
    assert_eq!(q.span(Some(newest), kept).unwrap().grain, Grain::Hour);
    // Within 6 h but older than the minutes kept: hours.
    q.last = Some("1h".into());
    q.to = Some((newest - 72 * HOUR_MS).to_string());
    assert_eq!(q.span(Some(newest), kept).unwrap().grain, Grain::Hour);
    q.from = Some("2026-01-02T00:00:00Z".into());
    q.to = Some("2026-01-01T00:00:00Z".into());
    let e = q.span(Some(newest), kept).unwrap_err().to_string();
    assert!(e.contains("is not before"), "{e}");
    q.to = Some("yesterday".into());
    let e = q.span(Some(newest), kept).unwrap_err().to_string();
    assert!(e.contains("to = \"yesterday\" is not a time"), "{e}");
    assert!(!range_query(View::Qoe).is_range());
    assert!(range_query(View::Listening).is_range());
}
