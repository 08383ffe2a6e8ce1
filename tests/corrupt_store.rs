//! Damage to the store's files at rest: stretches of the event log's files
//! overwritten (the events are there; sled holds where they are).
//! The daemon still starts; reads (an export, training) skip what cannot be
//! read and say so, and `status` shows it; `playpulse check` names it and
//! exits 1; `check --repair` rebuilds the store from what reads back, after
//! which the store is clean, its aggregates equal its log, and it runs again.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use playpulse::config::KafkaConfig;
use playpulse::kafka;

/// In a field no store key holds (user and video ids are in the pair rows'
/// keys, where damage would hit sled's own structure rather than an event).
const NEEDLE: &str = "needlefaultzz";

const ENV: [(&str, &str); 5] = [
    ("PLAYPULSE_MODELS__ENABLED", "true"),
    ("PLAYPULSE_MODELS__MIN_EVENTS", "100"),
    ("PLAYPULSE_MODELS__TRAIN_EVERY_EVENTS", "0"),
    ("PLAYPULSE_MODELS__TRAIN_EVERY_SECONDS", "0"),
    ("PLAYPULSE_INGEST__BATCH_SIZE", "200"),
];

/// Overwrites every occurrence of `needle` in the files of `dir`; answers how many.
fn overwrite(dir: &Path, needle: &[u8]) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += overwrite(&p, needle);
            continue;
        }
        let mut b = Vec::new();
        std::fs::File::open(&p)
            .unwrap()
            .read_to_end(&mut b)
            .unwrap();
        let hits: Vec<usize> = b
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        eprintln!("{}: {} hits", p.display(), hits.len());
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        for i in hits {
            f.seek(SeekFrom::Start(i as u64 + 2)).unwrap();
            f.write_all(b"\xff\x00\xff\x00").unwrap();
            n += 1;
        }
    }
    n
}

fn check(data: &Path, repair: bool) -> (bool, serde_json::Value, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["check", "--data-dir"]).arg(data);
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn damaged_files_are_reported_skipped_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = Broker::start(&[("cs.video", 1)]);
    let first = produce_video(&broker.bootstrap, "cs.video", 3000, 0.0, 5);
    // Records with a marker in the middle of the log, to find them on disk.
    let p = kafka::producer(&broker.bootstrap, &KafkaConfig::default()).unwrap();
    for i in 0..40 {
        let payload = format!(
            r#"{{"user_id":"cs-user{i}","error":"{NEEDLE}{i}","video_id":"v1","watch_time_seconds":10,"resolution":"720p","bitrate_kbps":100,"buffering_events":0,"paused":false,"skipped":false,"genre":"Drama","region":"US","recommended":false,"timestamp":"2025-01-01T00:00:00Z"}}"#
        );
        kafka::send(&p, "cs.video", b"k", payload.as_bytes(), None).unwrap();
    }
    kafka::flush(&p, Duration::from_secs(30)).unwrap();
    let second = produce_video(&broker.bootstrap, "cs.video", 3000, 0.0, 6);
    let total = first.valid.len() + 40 + second.valid.len();
    let start = |run| {
        spawn_daemon(
            dir.path(),
            &broker.bootstrap,
            "cs",
            &[("video", "cs.video")],
            &ENV,
            run,
        )
    };
    let mut d = start(0);
    wait_status(dir.path(), &mut d, Duration::from_secs(90), |s| {
        s["ingest"]["stored"].as_u64() == Some(total as u64)
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    let (clean, report, _) = check(&data, false);
    assert!(clean, "{report}");
    assert_eq!(report["events"], total);

    assert!(overwrite(&data, NEEDLE.as_bytes()) > 0);
    let (clean, report, stderr) = check(&data, false);
    assert!(!clean, "the damage is found: {report}");
    let damaged = report["damaged"].as_array().unwrap();
    assert!(!damaged.is_empty(), "{report}");
    assert!(stderr.contains("--repair"), "{stderr}");

    // The daemon runs on it: an export and training skip the damage and say so.
    let mut d = start(1);
    wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        s["ingest"].is_object()
    });
    let out = dir.path().join("events.jsonl");
    let r = ctl_json(&data, &["export", "events", out.to_str().unwrap()]);
    assert_eq!(r["ok"], true, "{r}");
    let lines = std::fs::read_to_string(&out).unwrap().lines().count();
    assert!(
        lines < total && lines > total / 2,
        "{lines} of {total} exported; {r}; {report}; {}",
        ctl_status(dir.path())["store"]
    );
    let t = ctl_json(&data, &["train"]);
    assert_eq!(t["ok"], true, "training goes on past the damage: {t}");
    let s = ctl_status(dir.path());
    let seen = s["store"]["damaged"].as_array().unwrap();
    assert!(!seen.is_empty(), "status shows the damage: {s}");
    assert!(s["store"]["hint"].as_str().unwrap().contains("--repair"));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());

    let (ok, report, stderr) = check(&data, true);
    assert!(ok, "{report} {stderr}");
    let kept = report["repaired"]["events_kept"].as_u64().unwrap() as usize;
    assert_eq!(kept, lines, "the repair keeps what the export could read");
    let old = report["repaired"]["old_files"].as_str().unwrap();
    assert!(Path::new(old).exists());
    let (clean, report, _) = check(&data, false);
    assert!(clean, "clean after the repair: {report}");
    {
        let store = playpulse::store::Store::open(&data, 16).unwrap();
        let n = store.events().count();
        assert_eq!(n, kept);
        assert_eq!(store.counters().unwrap()["stored"] as usize, n);
    }
    // And it runs again from the same offsets: nothing is read twice.
    let mut d = start(2);
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        stored_below_offsets(s) == total as i64
    });
    assert_eq!(s["ingest"]["stored"], 0, "{s}");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}
