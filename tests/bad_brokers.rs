//! Brokers that are wrong or away: a broker list that is not host:port stops
//! the daemon at once with the key and its env variable; unreachable brokers
//! leave the control socket and HTTP up, `status` saying what the start waits
//! for, and the daemon runs as soon as they answer; `import` and `produce`
//! end with a clear error instead of waiting forever.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_malformed_broker_list_is_refused_at_start_by_name() {
    for bad in ["garbage", "host:notaport"] {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let out = Command::new(bin())
            .args(["run", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("PLAYPULSE_KAFKA__BROKERS", bad)
            .env("PLAYPULSE_HTTP__LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("kafka.brokers")
                && err.contains("PLAYPULSE_KAFKA__BROKERS")
                && err.contains(bad),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(20));
    }
}

#[test]
fn unreachable_brokers_leave_the_socket_and_http_up_and_the_daemon_starts_when_they_answer() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on (taken, then freed); the broker comes up there later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let brokers = format!("127.0.0.1:{port}");
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    drop(http);
    let mut d = spawn_daemon(
        dir.path(),
        &brokers,
        "away",
        &[("video", "away.video")],
        &[("PLAYPULSE_HTTP__LISTEN", &http_addr)],
        0,
    );
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(30), |s| {
        s["state"] == "starting"
    });
    assert!(s["waiting_for"].as_str().unwrap().contains(&brokers), "{s}");
    let (code, body) = http_get(&http_addr, "/api/status");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("waiting for"), "{body}");
    let r = ctl_json(&dir.path().join("data"), &["train"]);
    assert!(r["error"].as_str().unwrap().contains("starting"), "{r}");

    // The broker comes up on that port: the daemon starts and ingests.
    let broker = Broker::start(&[("away.video", 2)]);
    let _forward = Forward::start(port, &broker.bootstrap);
    let p = produce_video(&broker.bootstrap, "away.video", 300, 0.0, 8);
    wait_status(dir.path(), &mut d, Duration::from_secs(90), |s| {
        s["state"] == "running" && s["ingest"]["stored"].as_u64() == Some(p.valid.len() as u64)
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}

/// Runs `playpulse ARGS`; answers whether it succeeded and its stderr.
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn import_and_produce_end_with_a_clear_error_when_brokers_or_topics_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, "{}\n").unwrap();
    let file = file.to_str().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let away = format!("127.0.0.1:{port}");
    let t = Instant::now();
    let (ok, err) = run(&["import", "--brokers", &away, "--topic", "t", file]);
    assert!(!ok);
    assert!(
        err.contains("no broker at") && err.contains("answered within"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(40), "{:?}", t.elapsed());
    let noise = err.lines().filter(|l| l.contains("librdkafka")).count();
    assert!(noise < 5, "no flood of client errors: {err}");

    let broker = Broker::start(&[("exists", 1)]);
    let b = broker.bootstrap.as_str();
    let (ok, err) = run(&["import", "--brokers", b, "--topic", "nope", file]);
    assert!(!ok);
    assert!(
        err.contains("\"nope\"") && err.contains("no such topic"),
        "{err}"
    );
    let (ok, err) = run(&[
        "produce",
        "--brokers",
        b,
        "--topic",
        "nope",
        "--events",
        "5",
    ]);
    assert!(!ok);
    assert!(err.contains("no such topic"), "{err}");
}
