//! The ingest path against an independent broker: tansu (a Kafka-protocol
//! broker written apart from librdkafka, SQLite storage), installed by
//! tests/run.sh into ~/.cache/playpulse. The same exactly-once checks as with the
//! embedded broker: a full run, and a SIGKILL mid-stream then restart.

mod common;

use std::time::Duration;

use common::*;

const TOPIC: &str = "tansu.video";
const PARTITIONS: i32 = 4;

fn daemon(dir: &std::path::Path, t: &Tansu, group: &str, run: usize) -> Daemon {
    spawn_daemon(
        dir,
        &t.bootstrap,
        group,
        &[("video", TOPIC)],
        &[
            ("PLAYPULSE_INGEST__BATCH_SIZE", "500"),
            ("PLAYPULSE_MODELS__ENABLED", "false"),
        ],
        run,
    )
}

#[test]
fn ingest_through_tansu_stores_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tansu::start(
        &dir.path().join("tansu"),
        "pp-tansu-1",
        &[(TOPIC, PARTITIONS)],
    );
    let produced = produce_video(&t.bootstrap, TOPIC, 20_000, 0.01, 21);
    let watch = GroupWatch::new(&t.bootstrap, "tansu-e2e", &[(TOPIC, PARTITIONS)]);
    let mut d = daemon(dir.path(), &t, "tansu-e2e", 0);
    watch.wait_until(&mut d, Duration::from_secs(180), |c, h| {
        c == h && h == 20_000
    });
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        d.log_text()
    );
    assert!(d.log_text().contains("using brokers"), "{}", d.log_text());
    check_exactly_once(dir.path(), &produced);
}

#[test]
fn sigkill_mid_stream_through_tansu_then_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tansu::start(
        &dir.path().join("tansu"),
        "pp-tansu-2",
        &[(TOPIC, PARTITIONS)],
    );
    let total = 30_000i64;
    let produced = produce_video(&t.bootstrap, TOPIC, total as usize, 0.01, 22);
    let mut d = daemon(dir.path(), &t, "tansu-kill", 0);
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(180), |s| {
        stored_below_offsets(s) >= total / 10
    });
    let c = stored_below_offsets(&s);
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    assert!(
        c < total,
        "the kill must land mid-stream (stored {c} of {total})"
    );
    drop(d);
    let mut d = daemon(dir.path(), &t, "tansu-kill", 1);
    wait_status(dir.path(), &mut d, Duration::from_secs(180), |s| {
        stored_below_offsets(s) == total
    });
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        d.log_text()
    );
    check_exactly_once(dir.path(), &produced);
}

#[test]
fn a_broker_outage_mid_ingest_is_reported_and_survived() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tansu::start(
        &dir.path().join("tansu"),
        "pp-tansu-3",
        &[(TOPIC, PARTITIONS)],
    );
    let first = produce_video(&t.bootstrap, TOPIC, 20_000, 0.01, 23);
    let mut d = daemon(dir.path(), &t, "tansu-outage", 0);
    wait_status(dir.path(), &mut d, Duration::from_secs(180), |s| {
        stored_below_offsets(s) >= 2_000
    });
    // The broker dies mid-ingest and stays down 30 s (restarted on the same port and storage).
    let data = dir.path().to_path_buf();
    let watcher = std::thread::spawn(move || {
        // While it is down: the daemon is up and says so on the socket and in /metrics.
        let deadline = std::time::Instant::now() + Duration::from_secs(25);
        loop {
            let s = ctl_status(&data);
            if s["broker"]["reachable"] == false {
                // ... and /metrics says so too.
                use std::io::{Read, Write};
                let addr = s["http"].as_str().expect("http address").to_string();
                let mut c = std::net::TcpStream::connect(&addr).expect("http");
                write!(c, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
                let mut body = String::new();
                c.read_to_string(&mut body).unwrap();
                assert!(body.contains("\nplaypulse_broker_up 0\n"), "{body}");
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "outage not reported: {s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    t.restart_after(Duration::from_secs(30));
    let during = watcher.join().expect("outage reported");
    assert!(during["broker"]["error"].is_string(), "{during}");
    d.assert_alive();
    // Back: ingest resumes, more records arrive, nothing is lost or doubled.
    let second = produce_video(&t.bootstrap, TOPIC, 5_000, 0.01, 24);
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(240), |s| {
        stored_below_offsets(s) == 25_000
    });
    assert_eq!(s["broker"]["reachable"], true, "{s}");
    let log = d.log_text();
    assert!(
        log.contains("do not answer") && log.contains("answer again"),
        "{log}"
    );
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        d.log_text()
    );
    let mut all = first;
    all.valid.extend(second.valid);
    all.bad_reasons.extend(second.bad_reasons);
    check_exactly_once(dir.path(), &all);
}
