//! Alerts end to end: a rule over the rollups fires when its cohort's QoE
//! crosses the threshold for long enough, posts to a local webhook receiver
//! (which refuses the first attempt: the notifier retries), shows in `alerts`,
//! `status`, `/api/alerts` and `/metrics`, and resolves when the newest
//! minutes are healthy again.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ctl_json, spawn_daemon, wait_status, Broker};
use playpulse::domain::event::{Event, VideoEvent};
use playpulse::kafka;
use playpulse::synth::generate::{VideoGen, World};
use serde_json::Value;

/// A webhook receiver: answers 500 to its first request, 200 after; keeps
/// every JSON body it got.
fn receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            if n > 0 {
                g.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
            }
        }
    });
    (port, got)
}

/// `n` views in region US dated `at_ms`, rebuffering `rebuffer_ms` each.
fn views(n: usize, at_ms: i64, rebuffer_ms: f64, seed: u64) -> Vec<VideoEvent> {
    let mut g = VideoGen::new(World::new(50, 20, seed), seed, at_ms, 0);
    (0..n)
        .map(|_| {
            let mut v = g.next_event();
            v.region = "US".into();
            v.timestamp_ms = at_ms;
            v.watch_time_seconds = 60.0;
            v.rebuffer_ms = Some(rebuffer_ms);
            v.startup_time_ms = Some(800.0);
            v.error = None;
            v
        })
        .collect()
}

fn send(bootstrap: &str, topic: &str, evs: &[VideoEvent]) {
    let p = kafka::producer(bootstrap, &Default::default()).unwrap();
    for (i, v) in evs.iter().enumerate() {
        let payload = playpulse::ingest::wire::to_json(&Event::Video(v.clone()));
        kafka::send(&p, topic, i.to_string().as_bytes(), &payload, None).unwrap();
    }
    kafka::flush(&p, Duration::from_secs(30)).unwrap();
}

fn wait<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rule_fires_notifies_with_retries_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "alerts-v";
    let broker = Broker::start(&[(topic, 1)]);
    let (port, got) = receiver();
    let url = format!("http://127.0.0.1:{port}/hook");
    let rules = r#"[{ name = "us rebuffering", metric = "rebuffering_ratio", op = "above", threshold = 0.05, filter = { region = "US" }, window_minutes = 2, min_views = 20, for_evaluations = 2 }]"#;
    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        "alerts",
        &[("video", topic)],
        &[
            ("PLAYPULSE_MODELS__ENABLED", "false"),
            ("PLAYPULSE_ALERTS__INTERVAL_SECONDS", "1"),
            ("PLAYPULSE_ALERTS__WEBHOOK_URL", &url),
            ("PLAYPULSE_ALERTS__RULES", rules),
        ],
        0,
    );
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        s["http"].is_string()
    });
    let addr = s["http"].as_str().unwrap().to_string();
    let data = dir.path().join("data");
    let t0 = (playpulse::domain::timefmt::now_ms() / 60_000 - 30) * 60_000;

    // A minute of US views rebuffering 1/3 of the time, then a view of the next
    // minute elsewhere (windows hold complete minutes): pending, then firing.
    let mut next = views(1, t0 + 60_000, 0.0, 3);
    next[0].region = "DE".into();
    send(
        &broker.bootstrap,
        topic,
        &[views(60, t0 + 5_000, 30_000.0, 1), next].concat(),
    );
    let fired = wait("the alert fires", Duration::from_secs(60), || {
        let a = ctl_json(&data, &["alerts"]);
        (a["alerts"][0]["state"] == "firing").then_some(a)
    });
    let alert = &fired["alerts"][0];
    assert!(
        (alert["value"].as_f64().unwrap() - 30.0 / 90.0).abs() < 1e-9,
        "{fired}"
    );
    assert_eq!(alert["views"], 60, "{fired}");
    assert_eq!(alert["fired"], 1, "{fired}");
    let body = wait(
        "the webhook gets the firing",
        Duration::from_secs(30),
        || got.lock().unwrap().first().cloned(),
    );
    assert_eq!(body["event"], "firing", "{body}");
    assert_eq!(body["alert"]["name"], "us rebuffering", "{body}");
    assert_eq!(body["alert"]["filter"]["region"], "US", "{body}");
    let s = ctl_json(&data, &["status"]);
    assert_eq!(s["alerts"]["firing"][0], "us rebuffering", "{s}");
    let (code, api) = common::http_get(&addr, "/api/alerts");
    assert_eq!(code, 200, "{api}");
    let api: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["firing"][0], "us rebuffering");
    let delivered = wait("the delivery is counted", Duration::from_secs(30), || {
        let a = ctl_json(&data, &["alerts"]);
        (a["delivered"] == 1).then_some(a)
    });
    assert!(
        delivered["last_delivery"]
            .as_str()
            .unwrap()
            .contains("after 2 attempt(s)"),
        "the first attempt was refused: {delivered}"
    );
    let (_, metrics) = common::http_get(&addr, "/metrics");
    assert!(
        metrics.contains("playpulse_alert_firing{alert=\"us rebuffering\"} 1"),
        "{metrics}"
    );

    // Healthy minutes later: the window ending at the newest minute resolves it.
    let mut next = views(1, t0 + 6 * 60_000, 0.0, 4);
    next[0].region = "DE".into();
    send(
        &broker.bootstrap,
        topic,
        &[views(60, t0 + 5 * 60_000, 0.0, 2), next].concat(),
    );
    wait("the alert resolves", Duration::from_secs(60), || {
        (ctl_json(&data, &["alerts"])["alerts"][0]["state"] == "ok").then_some(())
    });
    let body = wait(
        "the webhook gets the resolution",
        Duration::from_secs(30),
        || got.lock().unwrap().get(1).cloned(),
    );
    assert_eq!(body["event"], "resolved", "{body}");
    let text = common::run_ok(&["ctl", "--data-dir", data.to_str().unwrap(), "alerts"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("us rebuffering") && text.contains("ok"),
        "{text}"
    );
}

#[test]
fn a_bad_rule_stops_the_daemon_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::bin())
        .args(["run", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PLAYPULSE_HTTP__LISTEN", "127.0.0.1:0")
        .env(
            "PLAYPULSE_ALERTS__RULES",
            r#"[{ name = "x", metric = "views", op = "below", threshold = 1.0, window_minutes = 0 }]"#,
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait(
        "the daemon refuses the rule",
        Duration::from_secs(30),
        || child.try_wait().unwrap(),
    );
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("alerts.rules[\"x\"].window_minutes"), "{err}");
}
