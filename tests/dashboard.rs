//! The HTTP side of a running daemon: the JSON API, Prometheus `/metrics`, and
//! the dashboard page loaded in headless Chromium (Debian's, installed by
//! tests/run.sh), which must draw non-zero live data in every chart and fill the
//! recommendations viewer; a screenshot is saved under the test's temp dir.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bin;
use serde_json::{json, Value};

struct Running {
    child: Child,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Running {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ctl(&self, args: &[&str]) -> Value {
        common::ctl_json(&self.data, args)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon on its embedded default, with its synthetic producers.
fn start(dir: &Path) -> Running {
    let data = dir.join("data");
    let log = dir.join("daemon.log");
    let child = Command::new(bin())
        .args([
            "run",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
            "--data-dir",
        ])
        .arg(&data)
        .env("PLAYPULSE_HTTP__LISTEN", "127.0.0.1:0")
        .env("PLAYPULSE_MODELS__MIN_EVENTS", "3000")
        .env("PLAYPULSE_MODELS__SVM_MAX_ROWS", "500")
        // A few thousand events: the model is promoted whatever popularity scores.
        .env("PLAYPULSE_MODELS__PROMOTE_OVER_POPULARITY", "false")
        .env("PLAYPULSE_MODELS__RETRAIN_NEW_PAIRS_SHARE", "0")
        .env("RUST_LOG", "info,librdkafka=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Running { child, data, log }
}

/// A GET on loopback: (status code, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    common::http_get(addr, path)
}

fn chromium() -> String {
    let path = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "no chromium at {path}: run `bash tests/run.sh` (it installs Debian's chromium) or set CHROMIUM_BIN"
    );
    path
}

/// Headless Chromium with the flags this machine needs (no network beyond loopback).
fn browser(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // Page timers run ahead in virtual time: several polls of live data.
        "--virtual-time-budget=15000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stderr(Stdio::null());
    c
}

/// `data-NAME` of the element with `id` in a dumped DOM.
fn data_attr(dom: &str, id: &str, name: &str) -> Option<f64> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[at..tag_end];
    let key = format!("data-{name}=\"");
    let v = tag.find(&key)? + key.len();
    tag[v..].split('"').next()?.parse().ok()
}

#[test]
fn dashboard_api_and_metrics_show_live_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path());
    // Live data: the producers' events stored, and a model.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let s = d.ctl(&["status"]);
        if s["ingest"]["stored"].as_u64().unwrap_or(0) > 5000 && s["http"].is_string() {
            break s;
        }
        if let Ok(Some(e)) = d.child.try_wait() {
            panic!("daemon exited ({e}); log:\n{}", d.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "no live data: {s}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let addr = status["http"].as_str().unwrap().to_string();
    // Before any model a user without a catalog profile gets what trends now
    // (users with a profile get content affinity: tests/affinity.rs).
    let (code, body) = get(&addr, "/api/recommend?user=nobody_with_no_profile");
    assert_eq!(code, 200, "before any model: {body}");
    let early: Value = serde_json::from_str(&body).unwrap();
    assert!(early["model"].is_null(), "{early}");
    assert_eq!(early["cold_start"], "trending", "{early}");
    assert!(
        !early["recommendations"].as_array().unwrap().is_empty(),
        "{early}"
    );
    let trained = d.ctl(&["train"]);
    assert_eq!(trained["ok"], true, "{trained}");

    // JSON API.
    let (code, body) = get(&addr, "/api/status");
    assert_eq!(code, 200);
    let s: Value = serde_json::from_str(&body).unwrap();
    assert!(s["ingest"]["stored"].as_u64().unwrap() > 5000);
    let (code, body) = get(&addr, "/api/analytics?view=qoe&dim=region");
    assert_eq!(code, 200, "{body}");
    let q: Value = serde_json::from_str(&body).unwrap();
    assert!(q["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["views"].as_u64().unwrap() > 0));
    // The music producer sends its 2,000 tracks (at 500/s) before its first listening
    // event: wait for listening rollups before pausing.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, body) = get(
            &addr,
            "/api/analytics?view=listening&last=1d&step=hour&by=device",
        );
        assert_eq!(code, 200, "{body}");
        let l: Value = serde_json::from_str(&body).unwrap();
        let events: u64 = l["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["events"].as_u64().unwrap())
            .sum();
        // Enough that plays, skips and likes are among them (a row of a
        // few events may hold only pauses and seeks).
        if events >= 100 {
            break;
        }
        assert!(Instant::now() < deadline, "no listening rollups: {l}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Over a range with filters, from the durable rollups: a region's share of the whole
    // (ingest paused and drained, so the questions see the same events).
    assert_eq!(d.ctl(&["pause"])["ok"], true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.ctl(&["status"])["ingest"]["batches_in_flight"] != 0 {
        assert!(Instant::now() < deadline, "ingest did not drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ask = |path: &str| -> Value {
        let (code, body) = get(&addr, path);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let all = ask("/api/analytics?view=qoe&last=1d&step=hour");
    let by_region = ask("/api/analytics?view=qoe&dim=region&last=1d&step=hour&limit=100");
    let region = by_region["rows"][0]["key"].as_str().unwrap().to_string();
    let one = ask(&format!(
        "/api/analytics?view=qoe&last=1d&step=hour&region={region}"
    ));
    assert_eq!(
        one["rows"][0]["views"], by_region["rows"][0]["views"],
        "{one}"
    );
    let sum: u64 = by_region["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["views"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, all["rows"][0]["views"].as_u64().unwrap(), "{all}");
    assert_eq!(one["range"]["filter"]["region"], json!(region));
    // Listening by device: its counts add up to the events.
    let l = ask("/api/analytics?view=listening&last=1d&step=hour&by=device");
    let rows = l["rows"].as_array().unwrap();
    assert!(!rows.is_empty(), "{l}");
    let mut all_parts = 0;
    for r in rows {
        let parts = ["plays", "skips", "likes"]
            .iter()
            .map(|k| r[k].as_u64().unwrap())
            .sum::<u64>();
        assert!(parts <= r["events"].as_u64().unwrap(), "{r}");
        all_parts += parts;
    }
    assert!(all_parts > 0, "{l}");
    let (code, body) = get(&addr, "/api/analytics?view=listening&last=1d&region=US");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("region is a dimension of views only"),
        "{body}"
    );
    let (code, body) = get(&addr, "/api/analytics?view=series&last=1d&step=fortnight");
    assert_eq!(code, 400, "{body}");
    assert_eq!(d.ctl(&["resume"])["ok"], true);
    let (code, body) = get(&addr, "/api/analytics?view=qoe&minutes=many");
    assert_eq!(code, 400);
    assert!(
        body.contains("minutes=\\\"many\\\" is not a number"),
        "{body}"
    );
    let (code, _) = get(&addr, "/api/similar?item=no-such-item");
    assert_eq!(code, 404);
    let (code, body) = get(&addr, "/api/models");
    assert_eq!(code, 200, "{body}");

    // Prometheus metrics: the text format, with the ingest counters moving.
    let (code, metrics) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    let sample =
        regex::Regex::new(r#"^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$"#)
            .unwrap();
    let mut stored = None;
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(sample.is_match(line), "not a sample line: {line:?}");
        if let Some(v) = line.strip_prefix("playpulse_events_stored_total ") {
            stored = v.parse::<f64>().ok();
        }
    }
    assert!(stored.unwrap() > 5000.0, "{metrics}");
    for family in [
        "playpulse_consumer_lag{topic=",
        "playpulse_qoe_rebuffering_ratio{region=",
        "playpulse_actor_up{actor=\"store\"} 1",
        "playpulse_model_champion ",
    ] {
        assert!(
            metrics.contains(family),
            "/metrics lacks {family}:\n{metrics}"
        );
    }

    // The page in a browser: every chart draws non-zero values, tables fill,
    // the viewer shows a known user's recommendations with their reasons.
    let user = "user_00001";
    let url = format!("http://{addr}/?user={user}");
    let dump_dom = || {
        let out = browser(&dir.path().join("chrome-dom"))
            .arg("--dump-dom")
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.status.success(), "chromium failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = dump_dom();
    for chart in [
        "c-rate",
        "c-views",
        "c-rebuffer",
        "c-startup",
        "c-bitrate",
        "c-latency",
        "c-models",
    ] {
        let points =
            data_attr(&dom, chart, "points").unwrap_or_else(|| panic!("{chart} not drawn:\n{dom}"));
        let max = data_attr(&dom, chart, "max").unwrap();
        assert!(
            points >= 1.0 && max > 0.0,
            "{chart}: {points} points, max {max}"
        );
    }
    assert!(
        data_attr(&dom, "c-rate", "points").unwrap() >= 2.0,
        "the rate chart follows live polls"
    );
    assert!(dom.matches("<tr>").count() > 20, "tables filled:\n{dom}");
    assert_eq!(
        data_attr(&dom, "c-views", "partial"),
        Some(1.0),
        "the minute still filling is marked"
    );
    // A day of one region and one title, from the address: the charts read
    // hours, the tables hold that region alone, the title's page shows.
    let top = {
        let (_, t) = get(&addr, "/api/analytics?view=top&last=1d&limit=1");
        let t: Value = serde_json::from_str(&t).unwrap();
        t["videos"][0]["video"].as_str().unwrap().to_string()
    };
    let one = {
        let (_, q) = get(
            &addr,
            &format!("/api/analytics?view=qoe&dim=region&last=1d&title={top}"),
        );
        let q: Value = serde_json::from_str(&q).unwrap();
        q["rows"][0]["key"].as_str().unwrap().to_string()
    };
    let out = browser(&dir.path().join("chrome-title"))
        .arg("--dump-dom")
        .arg(format!("http://{addr}/?range=24h&region={one}&title={top}"))
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&out.stdout).into_owned();
    let section = |id: &str| {
        page.split(&format!("id=\"{id}\""))
            .nth(1)
            .and_then(|t| t.split("</section>").next())
            .unwrap_or_default()
            .to_string()
    };
    assert!(page.contains("by hour"), "a day reads hours:\n{page}");
    let regions = section("t-region");
    assert!(
        regions.matches("<tr>").count() == 2 && regions.contains(&format!(">{one}<")),
        "the region filter holds: {regions}"
    );
    let title = section("title-panel");
    assert!(
        !page.contains("id=\"title-panel\" hidden")
            && title.contains(&top)
            && title.contains("top regions")
            && title.contains("from a recommendation"),
        "the title's page: {title}"
    );
    assert!(data_attr(&page, "c-views", "max").unwrap() > 0.0, "{page}");
    // The viewer shows the list the API gives. Live events fold into the
    // user's list meanwhile, so the page is compared with the API's list when
    // that list was the same just before and just after the page was read.
    let list = || {
        let (_, rec) = get(&addr, &format!("/api/recommend?user={user}&k=10"));
        let rec: Value = serde_json::from_str(&rec).unwrap();
        let r = &rec["recommendations"][0];
        (
            r["item"].as_str().unwrap().to_string(),
            r["reason"].as_str().unwrap().to_string(),
        )
    };
    let viewer = |dom: &str| {
        dom.split("id=\"t-rec\"")
            .nth(1)
            .and_then(|t| t.split("</table>").next())
            .unwrap_or_default()
            .to_string()
    };
    let mut checked = false;
    for _ in 0..5 {
        let before = list();
        let page = dump_dom();
        if list() != before {
            continue;
        }
        let table = viewer(&page);
        let (first, reason) = before;
        assert!(
            table.matches("<tr>").count() == 11
                && table.contains(&first)
                && table.contains(&reason),
            "the viewer shows {user}'s 10 recommendations, first {first} ({reason}):\n{table}"
        );
        checked = true;
        break;
    }
    assert!(checked, "{user}'s list changed during each of 5 page loads");
    let shot = dir.path().join("dashboard.png");
    let out = browser(&dir.path().join("chrome-shot"))
        .arg("--window-size=1300,1900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot {} bytes",
        png.len()
    );
    eprintln!(
        "dashboard screenshot: {} ({} bytes)",
        shot.display(),
        png.len()
    );

    let bye = d.ctl(&["shutdown"]);
    assert_eq!(bye["ok"], true);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "no clean exit:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
