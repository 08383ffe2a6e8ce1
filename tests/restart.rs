//! Restarts across offset namespaces: every run of the embedded broker starts
//! its partitions at offset 0 again, and a recreated broker does the same.
//! Stored positions belong to their namespace, so a second run never writes
//! over the first one's events or dead letters — after a SIGTERM, a SIGKILL,
//! or a broker recreated with its offsets reset. The store's log, its dead
//! letters, its counters and the Parquet lake all hold every run.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use playpulse::config::KafkaConfig;
use playpulse::kafka;

const TOPICS: &[(&str, &str)] = &[("video", "rs.video"), ("music", "rs.music")];

/// Sends `n` records that fail validation (an unknown resolution) to `topic`.
fn send_bad(bootstrap: &str, topic: &str, n: usize, tag: &str) {
    let p = kafka::producer(bootstrap, &KafkaConfig::default()).expect("producer");
    for i in 0..n {
        let payload = format!(
            r#"{{"user_id":"bad_{tag}_{i}","video_id":"v1","watch_time_seconds":10,"resolution":"9000p","bitrate_kbps":100,"buffering_events":0,"paused":false,"skipped":false,"genre":"Drama","region":"US","recommended":false,"timestamp":"2026-01-01T00:00:00Z"}}"#
        );
        kafka::send(&p, topic, b"k", payload.as_bytes(), None).expect("send");
    }
    kafka::flush(&p, Duration::from_secs(30)).expect("flush");
}

fn ingest(s: &serde_json::Value, field: &str) -> i64 {
    s["ingest"][field].as_i64().unwrap_or(-1)
}

/// The store after the daemon stopped: every logged event's (namespace,
/// position) once, the counters equal to the log and the dead letters.
struct Seen {
    events: usize,
    /// Video views and listening events (the lake's event rows; the rest are
    /// catalog records, kept as their latest versions).
    plays: usize,
    dead: usize,
    namespaces: usize,
}

fn check_store(dir: &Path) -> Seen {
    let store = playpulse::store::Store::open(&dir.join("data"), 16).unwrap();
    let mut positions = HashSet::new();
    let mut namespaces = HashSet::new();
    let mut n = 0;
    let mut plays = 0;
    for item in store.event_log() {
        let e = item.unwrap();
        plays += usize::from(matches!(
            e.event,
            playpulse::domain::event::Event::Video(_) | playpulse::domain::event::Event::Music(_)
        ));
        assert!(
            positions.insert((e.namespace, e.pos.clone())),
            "{:?} in namespace {} logged twice",
            e.pos,
            e.namespace
        );
        namespaces.insert(e.namespace);
        n += 1;
    }
    let dead = store.dead_letters().unwrap();
    let ids: HashSet<String> = dead.iter().map(playpulse::store::dead_letter_id).collect();
    assert_eq!(ids.len(), dead.len(), "dead letter ids are unique");
    let c = store.counters().unwrap();
    assert_eq!(c["stored"] as usize, n, "the stored counter equals the log");
    assert_eq!(
        c.get("rejected").copied().unwrap_or(0) as usize,
        dead.len(),
        "the rejected counter equals the dead letters"
    );
    assert!(store.damage().is_empty());
    Seen {
        events: n,
        plays,
        dead: dead.len(),
        namespaces: namespaces.len(),
    }
}

/// Starts the daemon on the embedded broker with video and music producers,
/// waits for `stored` events and `bad` dead letters of this run.
fn embedded_run(dir: &Path, run: usize, stored: i64, bad: usize) -> Daemon {
    let mut d = spawn_daemon(
        dir,
        "",
        "restart",
        TOPICS,
        &[
            ("PLAYPULSE_PRODUCERS__MODE", "embedded"),
            (
                "PLAYPULSE_PRODUCERS__RATE",
                "{ video = 3000.0, music = 600.0 }",
            ),
            ("PLAYPULSE_MODELS__ENABLED", "false"),
        ],
        run,
    );
    let s = wait_status(dir, &mut d, Duration::from_secs(90), |s| {
        ingest(s, "stored") >= stored
    });
    let brokers = s["brokers"].as_str().unwrap().to_string();
    send_bad(&brokers, "rs.video", bad, &format!("r{run}"));
    wait_status(dir, &mut d, Duration::from_secs(60), |s| {
        ingest(s, "rejected") >= bad as i64
    });
    d
}

#[test]
fn runs_of_the_embedded_broker_never_overwrite_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = embedded_run(dir.path(), 1, 2000, 5);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    let first = check_store(dir.path());
    assert_eq!((first.dead, first.namespaces), (5, 1));

    let mut d = embedded_run(dir.path(), 2, 2000, 7);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    let second = check_store(dir.path());
    assert_eq!((second.dead, second.namespaces), (12, 2));
    assert!(
        second.events >= first.events + 2000,
        "the second run adds to the first: {} then {}",
        first.events,
        second.events
    );

    // A SIGKILL between runs: what the killed run stored stays, the next adds.
    let mut d = embedded_run(dir.path(), 3, 1000, 3);
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(30));
    let third = check_store(dir.path());
    assert_eq!(third.namespaces, 3);
    assert!(third.events >= second.events + 1000);
    assert!(third.dead >= second.dead, "dead letters of the killed run");
    let mut d = embedded_run(dir.path(), 4, 1000, 2);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    let fourth = check_store(dir.path());
    assert_eq!(fourth.namespaces, 4);
    assert!(fourth.events >= third.events + 1000);
    assert_eq!(fourth.dead, third.dead + 2);

    // The lake holds every run's events, each with its namespace.
    let lake = dir.path().join("lake");
    run_ok(&[
        "export",
        "parquet",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--out",
        lake.to_str().unwrap(),
    ]);
    let rows = lake_rows(&lake);
    let total: u64 = rows.values().sum();
    assert_eq!(
        total as usize, fourth.plays,
        "lake rows by namespace {rows:?}"
    );
    assert_eq!(rows.len(), 4, "{rows:?}");
}

const READER: &str = r#"
import json, sys
import pyarrow.dataset as ds
out = {}
for kind in ("video_events", "music_events"):
    t = ds.dataset(f"{sys.argv[1]}/{kind}", format="parquet", partitioning="hive").to_table()
    for ns in t["namespace"].to_pylist():
        out[ns] = out.get(ns, 0) + 1
print(json.dumps(out))
"#;

/// Rows of the lake's video and music events per namespace, read by pyarrow.
fn lake_rows(lake: &Path) -> BTreeMap<String, u64> {
    let python = std::env::var("PYARROW_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-c", READER])
        .arg(lake)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}; run tests/run.sh (it installs pyarrow)"));
    assert!(
        out.status.success(),
        "pyarrow could not read the lake: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_recreated_broker_with_its_offsets_reset_adds_to_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let topics = [("rb.video", 3)];
    let mut total = Produced::default();
    for run in 0..2 {
        // A new broker each time: every partition starts at offset 0 again.
        let broker = Broker::start(&topics);
        let p = produce_video(&broker.bootstrap, "rb.video", 900, 0.05, 7 + run as u64);
        let mut d = spawn_daemon(
            dir.path(),
            &broker.bootstrap,
            "recreated",
            &[("video", "rb.video")],
            &[("PLAYPULSE_MODELS__ENABLED", "false")],
            run,
        );
        let want = (p.valid.len() + p.bad_reasons.len()) as i64;
        wait_status(dir.path(), &mut d, Duration::from_secs(90), |s| {
            stored_below_offsets(s) >= want
        });
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit(Duration::from_secs(60)).success());
        total.valid.extend(p.valid);
        total.bad_reasons.extend(p.bad_reasons);
    }
    let seen = check_store(dir.path());
    assert_eq!(seen.events, total.valid.len());
    assert_eq!(seen.dead, total.bad_reasons.len());
    assert_eq!(seen.namespaces, 2);
    let store = playpulse::store::Store::open(&dir.path().join("data"), 16).unwrap();
    assert_pairs_match(&store, &total.valid);
}
