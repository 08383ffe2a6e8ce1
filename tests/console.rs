//! The dashboard clicked through in a real browser: playwright-core (npm)
//! drives Debian's chromium (both installed by tests/run.sh) through
//! tests/browser/console.cjs, which picks a range and a region, clicks a title
//! open, clears the filters, types a custom range, and reports what every chart
//! drew after each step. Here each drawn series is compared with the API's
//! answer to the same query, and the totals with the events the test produced.
//! Screenshots (overview, a title's page, the alert firing) are kept under
//! `$CARGO_TARGET_TMPDIR/console/`.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{ctl_json, http_get, spawn_daemon, wait_status, Broker};
use playpulse::domain::event::{Event, VideoEvent};
use playpulse::domain::timefmt::{format_timestamp_ms, now_ms, parse_timestamp_ms, TimePolicy};
use playpulse::kafka;
use playpulse::synth::generate::{CatalogGen, VideoGen, World};
use serde_json::Value;

const MINUTE: i64 = 60_000;

fn send(bootstrap: &str, topic: &str, evs: &[Event]) {
    let p = kafka::producer(bootstrap, &Default::default()).unwrap();
    for (i, e) in evs.iter().enumerate() {
        let payload = playpulse::ingest::wire::to_json(e);
        kafka::send(&p, topic, i.to_string().as_bytes(), &payload, None).unwrap();
    }
    kafka::flush(&p, Duration::from_secs(30)).unwrap();
}

/// Where tests/run.sh put playwright-core.
fn playwright_core() -> PathBuf {
    if let Ok(p) = std::env::var("PLAYWRIGHT_CORE") {
        return p.into();
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    cache.join("playpulse/playwright/node_modules/playwright-core")
}

fn ask(addr: &str, path: &str) -> Value {
    let (code, body) = http_get(addr, path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// What a chart of the series should draw for one point of the API's answer.
fn expected(chart: &str, p: &Value) -> Vec<Option<f64>> {
    let f = |k: &str| p[k].as_f64();
    let watched = p["views"].as_u64().unwrap_or(0) > 0;
    match chart {
        // Viewers in progress are not kept per title: the chart draws views alone.
        "c-views" if p.get("concurrent_viewers").is_none() => vec![f("views")],
        "c-views" => vec![f("views"), f("concurrent_viewers")],
        "c-rebuffer" => vec![
            f("rebuffering_ratio").map(|x| 100.0 * x),
            f("start_failure_rate").map(|x| 100.0 * x),
            f("exits_before_start_rate").map(|x| 100.0 * x),
        ],
        "c-startup" => vec![f("startup_time_ms").filter(|_| watched)],
        "c-bitrate" => vec![f("avg_bitrate_kbps").filter(|_| watched)],
        other => panic!("no expectation for {other}"),
    }
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        _ => false,
    }
}

/// Checks each analytics chart of a step against the API's answer to the path
/// it drew from; answers the views the step's series drew in all.
fn check_charts(addr: &str, step: &Value) -> u64 {
    let name = &step["name"];
    let query = step["drawn"]["c-views"]["query"].as_str().unwrap();
    let answer = ask(addr, query);
    let at: HashMap<i64, &Value> = answer["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let t = parse_timestamp_ms(p["minute"].as_str().unwrap(), TimePolicy::Strict).unwrap();
            (t / 1000, p)
        })
        .collect();
    let mut views = 0;
    for chart in ["c-views", "c-rebuffer", "c-startup", "c-bitrate"] {
        let d = &step["drawn"][chart];
        assert_eq!(d["query"], query, "{name}: {chart} drew another query");
        let xs = d["xs"].as_array().unwrap();
        assert!(!xs.is_empty(), "{name}: {chart} drew nothing");
        // A minute (or hour) may have turned since the page asked: the
        // buckets both answers hold must agree, and all but one are shared.
        let mut shared = 0;
        for (i, x) in xs.iter().enumerate() {
            let x = x.as_f64().unwrap() as i64;
            let Some(p) = at.get(&x) else { continue };
            shared += 1;
            let want = expected(chart, p);
            assert_eq!(
                d["labels"].as_array().unwrap().len(),
                want.len(),
                "{name}: {chart} draws {}",
                d["labels"]
            );
            for (s, w) in want.iter().enumerate() {
                let got = d["ys"][s][i].as_f64();
                assert!(
                    close(got, *w),
                    "{name}: {chart} series {} at {}: drew {got:?}, the API says {w:?}",
                    d["labels"][s],
                    format_timestamp_ms(x * 1000)
                );
            }
            if chart == "c-views" {
                views += p["views"].as_u64().unwrap();
            }
        }
        assert!(
            shared + 1 >= xs.len() && shared > 0,
            "{name}: {chart}: {shared} of {} buckets in the API's answer",
            xs.len()
        );
    }
    views
}

#[test]
fn an_operator_clicks_through_the_console() {
    let core = playwright_core();
    assert!(
        core.join("package.json").exists(),
        "no playwright-core at {}: run `bash tests/run.sh` (it installs it with npm) or set PLAYWRIGHT_CORE",
        core.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let (video, movies) = ("console-v", "console-m");
    let broker = Broker::start(&[(video, 2), (movies, 1)]);
    let rules = r#"[{ name = "US rebuffering", metric = "rebuffering_ratio", op = "above", threshold = 0.2, filter = { region = "US" }, window_minutes = 3, min_views = 3, for_evaluations = 1 }]"#;
    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        "console",
        &[("video", video), ("movies", movies)],
        &[
            ("PLAYPULSE_MODELS__MIN_EVENTS", "1000"),
            ("PLAYPULSE_MODELS__SVM_MAX_ROWS", "500"),
            ("PLAYPULSE_ALERTS__INTERVAL_SECONDS", "1"),
            ("PLAYPULSE_ALERTS__RULES", rules),
        ],
        0,
    );
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        s["http"].is_string()
    });
    let addr = s["http"].as_str().unwrap().to_string();
    let data = dir.path().join("data");

    // A catalog with names, six hours of views, and ten minutes of bad US
    // rebuffering at the end (the alert).
    let world = World::new(400, 60, 11);
    let mut cat = CatalogGen::new(world.clone(), 11);
    let now = now_ms();
    let titles: Vec<Event> = (0..60)
        .map(|_| Event::Movie(cat.next_movie(now - 7 * 3_600_000)))
        .collect();
    let names: HashMap<String, String> = titles
        .iter()
        .map(|e| match e {
            Event::Movie(t) => (t.id.clone(), t.title.clone()),
            _ => unreachable!(),
        })
        .collect();
    send(&broker.bootstrap, movies, &titles);
    let start = (now / MINUTE - 6 * 60) * MINUTE;
    let mut g = VideoGen::new(world.clone(), 5, start, 6_000);
    let mut events: Vec<VideoEvent> = (0..3500).map(|_| g.next_event()).collect();
    g.set_time(now - 10 * MINUTE);
    for i in 0..600 {
        let mut v = g.next_event();
        v.timestamp_ms = now - 10 * MINUTE + i * 1000;
        if i % 3 == 0 {
            v.region = "US".into();
        }
        if v.region == "US" {
            // Half of each US view's time spent rebuffering.
            v.rebuffer_ms = Some(v.watch_time_seconds * 1000.0);
        }
        events.push(v);
    }
    events.retain(|v| v.timestamp_ms <= now);
    send(
        &broker.bootstrap,
        video,
        &events.iter().cloned().map(Event::Video).collect::<Vec<_>>(),
    );
    wait_status(dir.path(), &mut d, Duration::from_secs(120), |s| {
        common::stored_below_offsets(s) == (events.len() + titles.len()) as i64
            && s["ingest"]["batches_in_flight"] == 0
    });
    let trained = ctl_json(&data, &["train"]);
    assert_eq!(trained["ok"], true, "{trained}");
    common::wait_reply(
        &mut d,
        Duration::from_secs(60),
        "the alert fires",
        || ctl_json(&data, &["alerts"]),
        |a| a["firing"] == serde_json::json!(["US rebuffering"]),
    );

    // The browser session.
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["title.png", "overview.png", "alert.png"] {
        let _ = std::fs::remove_file(out.join(f));
    }
    let (from, to) = (
        (now / MINUTE - 3 * 60) * MINUTE,
        (now / MINUTE - 2 * 60) * MINUTE,
    );
    let local = |ms: i64| format_timestamp_ms(ms)[..16].to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.cjs");
    let run = Command::new("node")
        .arg(script)
        .arg(format!("http://{addr}"))
        .arg(&out)
        .arg("US")
        .arg(local(from))
        .arg(local(to))
        .env("PLAYWRIGHT_CORE", &core)
        .output()
        .expect("node (tests/run.sh installs it)");
    assert!(
        run.status.success(),
        "the browser session failed: {}\nlog:\n{}",
        String::from_utf8_lossy(&run.stderr),
        d.log_text()
    );
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["errors"], serde_json::json!([]), "the page's errors");
    let steps: HashMap<&str, &Value> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s))
        .collect();
    let us = |v: &&VideoEvent| v.region == "US";

    // Opened: the last hour by the minute, the filling minute dashed; the
    // recommenders' charts are the API's models.
    let opened = steps["opened"];
    check_charts(&addr, opened);
    assert_eq!(opened["drawn"]["c-views"]["partial"], true, "{opened}");
    let models = ask(&addr, "/api/models");
    let als: Vec<&Value> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "als")
        .collect();
    assert!(!als.is_empty(), "{models}");
    let drawn = &opened["drawn"];
    for (i, m) in als.iter().enumerate() {
        let x = drawn["c-models"]["xs"][i].as_f64().unwrap();
        assert_eq!(x, m["created_ms"].as_f64().unwrap() / 1000.0);
        assert_eq!(drawn["c-models"]["ys"][0][i], m["metrics"]["ndcg"]);
        assert_eq!(drawn["c-models"]["ys"][1][i], m["baseline"]["ndcg"]);
        let coverage = drawn["c-beyond"]["ys"][0][i].as_f64().unwrap();
        assert!(close(
            Some(coverage),
            m["metrics"]["coverage"].as_f64().map(|c| 100.0 * c)
        ));
        assert_eq!(drawn["c-novelty"]["ys"][0][i], m["metrics"]["novelty"]);
    }

    // A day, then one region: hours; every view of the region in the charts.
    let day = steps["24h"];
    assert!(
        day["rangeNote"].as_str().unwrap().contains("by hour"),
        "{day}"
    );
    assert_eq!(check_charts(&addr, day), events.len() as u64);
    let region = steps["24h-region"];
    assert!(
        region["search"].as_str().unwrap().contains("range=24h")
            && region["search"].as_str().unwrap().contains("region=US"),
        "the address keeps the range and filter: {}",
        region["search"]
    );
    assert_eq!(
        check_charts(&addr, region),
        events.iter().filter(us).count() as u64
    );
    assert_eq!(region["regionRows"], serde_json::json!(["US"]), "{region}");

    // The title clicked is the region's top title; its page names it and
    // draws its views alone.
    let title = steps["title"];
    let clicked = title["clicked"].as_str().unwrap();
    let top = ask(&addr, title["topQuery"].as_str().unwrap());
    assert_eq!(top["videos"][0]["video"], clicked, "{top}");
    assert_eq!(
        check_charts(&addr, title),
        events
            .iter()
            .filter(us)
            .filter(|v| v.video_id == clicked)
            .count() as u64
    );
    assert_eq!(title["titleHidden"], false);
    assert!(
        title["titleName"]
            .as_str()
            .unwrap()
            .contains(&names[clicked]),
        "the page names the title {clicked} {:?}: {}",
        names[clicked],
        title["titleName"]
    );
    let total = ask(&addr, title["titleQuery"].as_str().unwrap());
    let views = total["rows"][0]["views"].as_u64().unwrap();
    assert!(
        title["titleNote"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{views} views")),
        "{}",
        title["titleNote"]
    );

    // A week, filters cleared: every view; the alert firing on the page.
    let week = steps["7d"];
    assert!(!week["search"].as_str().unwrap().contains("region="));
    assert_eq!(check_charts(&addr, week), events.len() as u64);
    assert_eq!(week["alertsFiring"], "1", "{week}");
    assert!(
        week["alertsNote"]
            .as_str()
            .unwrap()
            .contains("firing: US rebuffering"),
        "{}",
        week["alertsNote"]
    );

    // A custom range of one hour, typed in: its minutes, its views.
    let custom = steps["custom"];
    assert_eq!(
        custom["drawn"]["c-views"]["xs"][0].as_f64(),
        Some((from / 1000) as f64),
        "{custom}"
    );
    assert_eq!(custom["drawn"]["c-views"]["partial"], false);
    assert_eq!(
        check_charts(&addr, custom),
        events
            .iter()
            .filter(|v| (from..to).contains(&v.timestamp_ms))
            .count() as u64
    );

    for f in ["title.png", "overview.png", "alert.png"] {
        let png = std::fs::read(out.join(f)).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{f}: {} bytes",
            png.len()
        );
        eprintln!("screenshot {}", out.join(f).display());
    }
}
