//! End to end through a broker: files of all three formats → Kafka → daemon →
//! store and dead-letter store; SIGKILL mid-stream and restart; SIGTERM.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use playpulse::domain::event::Event;
use playpulse::ingest::wire;
use playpulse::store::Store;
use playpulse::synth::generate::{MusicGen, VideoGen, World};

fn import(bootstrap: &str, topic: &str, file: &std::path::Path, format: &str) {
    let out = Command::new(bin())
        .args([
            "import",
            file.to_str().unwrap(),
            "--brokers",
            bootstrap,
            "--topic",
            topic,
            "--format",
            format,
        ])
        .output()
        .expect("run import");
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("import prints JSON");
    assert!(report["records"].as_u64().unwrap() > 0);
}

const FMT_TOPICS: [(&str, i32); 2] = [("fmt.video", 4), ("fmt.music", 4)];

#[test]
fn mixed_formats_land_in_store_and_dead_letters_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&FMT_TOPICS);
    mixed_formats(dir.path(), &broker.bootstrap, "fmt-group");
}

/// The same files through tansu, an independent Kafka-protocol broker (record
/// headers carry each record's format and origin).
#[test]
fn mixed_formats_through_tansu_land_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tansu::start(&dir.path().join("tansu"), "pp-tansu-fmt", &FMT_TOPICS);
    mixed_formats(dir.path(), &t.bootstrap, "fmt-tansu");
}

/// JSON Lines, legacy lines and CSV files with bad records imported into
/// `bootstrap`: the store holds every good record, the dead-letter store every
/// bad one with its reason, field and `file:line`.
fn mixed_formats(dir: &std::path::Path, bootstrap: &str, group: &str) {
    let (tv, tm) = (FMT_TOPICS[0].0, FMT_TOPICS[1].0);
    let mut g = VideoGen::new(World::new(100, 40, 5), 5, 1_735_689_600_000, 50);
    let evs: Vec<_> = (0..300).map(|_| g.next_event()).collect();

    // JSON Lines: 200 good + 3 bad (lines 51, 102, 153).
    let mut json = String::new();
    let mut json_bad = Vec::new();
    for (i, e) in evs[..200].iter().enumerate() {
        json.push_str(&String::from_utf8(wire::to_json(&Event::Video(e.clone()))).unwrap());
        json.push('\n');
        if i % 50 == 49 && i < 150 {
            json.push_str(
                [
                    "{\"user_id\":\"user_1\",\"vid",
                    "{\"user_id\":\"u\"}",
                    "{\"user_id\":\"u\",\"video_id\":\"v\",\"watch_time_seconds\":\"10s\"}",
                ][i / 50],
            );
            json.push('\n');
            json_bad.push(json.lines().count());
        }
    }
    // Legacy lines: 100 good + 2 bad.
    let mut legacy = String::new();
    for e in &evs[200..] {
        legacy.push_str(&wire::video_to_legacy(e));
        legacy.push('\n');
    }
    legacy.push_str("\"user_id\": \"user_9\", \"video_id\" \"vid_1\"\n");
    legacy.push_str(&wire::video_to_legacy(&evs[0]).replace("\"genre\": \"", "\"genre\": \"X"));
    legacy.push('\n');
    // CSV: music tracks + events, 1 bad row each.
    let mut mg = MusicGen::new(30, 20, 5, 1_735_689_600_000);
    let mut tracks = format!("{}\n", wire::TRACKS_CSV_HEADER);
    let mut events = format!("{}\n", wire::MUSIC_EVENTS_CSV_HEADER);
    let mut music_events = 0;
    for _ in 0..130 {
        match mg.next_record() {
            Event::Track(t) => tracks.push_str(&format!("{}\n", wire::track_to_csv(&t))),
            Event::Music(m) => {
                events.push_str(&format!("{}\n", wire::music_to_csv(&m)));
                music_events += 1;
            }
            _ => unreachable!(),
        }
    }
    tracks.push_str("trk_bad,Someone,Album,not-a-number,rock,Title\n");
    events.push_str("user_1,trk_00001,play\n");

    let files = [
        ("v.jsonl", json, tv, "auto"),
        ("v.legacy", legacy, tv, "legacy"),
        ("tracks.csv", tracks, tm, "auto"),
        ("events.csv", events, tm, "csv"),
    ];
    for (name, body, topic, format) in &files {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        import(bootstrap, topic, &p, format);
    }

    let mut d = spawn_daemon(
        dir,
        bootstrap,
        group,
        &[("video", tv), ("music", tm)],
        &[],
        0,
    );
    let watch = GroupWatch::new(bootstrap, group, &[(tv, 4), (tm, 4)]);
    let (c, h) = watch.wait_until(&mut d, Duration::from_secs(90), |c, h| c == h);
    assert_eq!((c, h), (305 + 30 + 100 + 2, 305 + 30 + 100 + 2));
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.log_text()
    );

    let store = Store::open(&dir.join("data"), 16).unwrap();
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for item in store.events() {
        *types.entry(item.unwrap().1.type_name()).or_default() += 1;
    }
    assert_eq!(
        types,
        BTreeMap::from([("music_event", music_events), ("track", 30), ("video", 300)])
    );
    assert_pairs_match(&store, &evs);

    let dead = store.dead_letters().unwrap();
    let mut got: Vec<(String, Option<String>, String)> = dead
        .iter()
        .map(|d| {
            (
                d.rejection.reason.clone(),
                d.rejection.field.clone(),
                d.origin.clone().unwrap_or_default(),
            )
        })
        .collect();
    got.sort();
    let jsonl = dir.join("v.jsonl").display().to_string();
    let leg = dir.join("v.legacy").display().to_string();
    let mut want = vec![
        (
            "invalid_json".to_string(),
            None,
            format!("{jsonl}:{}", json_bad[0]),
        ),
        (
            "missing_field".to_string(),
            Some("video_id".to_string()),
            format!("{jsonl}:{}", json_bad[1]),
        ),
        (
            "wrong_type".to_string(),
            Some("watch_time_seconds".to_string()),
            format!("{jsonl}:{}", json_bad[2]),
        ),
        ("legacy_syntax".to_string(), None, format!("{leg}:101")),
        (
            "unknown_value".to_string(),
            Some("genre".to_string()),
            format!("{leg}:102"),
        ),
        (
            "wrong_type".to_string(),
            Some("duration_ms".to_string()),
            format!("{}:32", dir.join("tracks.csv").display()),
        ),
        (
            "csv_columns".to_string(),
            None,
            format!("{}:{}", dir.join("events.csv").display(), music_events + 2),
        ),
    ];
    want.sort();
    assert_eq!(got, want);
    // Each dead letter keeps its raw bytes and where it was read.
    assert!(dead
        .iter()
        .all(|d| d.raw.as_deref().is_some_and(|r| !r.is_empty()) && d.offset >= 0));
    assert_eq!(store.counter("rejected").unwrap(), 7);
}

#[test]
fn sigkill_mid_stream_then_restart_stores_everything_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "crash.video";
    let broker = Broker::start(&[(topic, 8)]);
    let produced = produce_video(&broker.bootstrap, topic, 60_000, 0.01, 11);
    let total = 60_000i64;
    let group = "crash-group";
    let env = [
        ("PLAYPULSE_INGEST__BATCH_SIZE", "200"),
        ("PLAYPULSE_INGEST__BATCH_LINGER_MS", "5"),
    ];
    let watch = GroupWatch::new(&broker.bootstrap, group, &[(topic, 8)]);

    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        group,
        &[("video", topic)],
        &env,
        0,
    );
    let (c, _) = watch.wait_until(&mut d, Duration::from_secs(90), |c, _| c >= total / 10);
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    assert!(
        c < total,
        "the kill must land mid-stream (committed {c} of {total})"
    );
    drop(d);

    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        group,
        &[("video", topic)],
        &env,
        1,
    );
    watch.wait_until(&mut d, Duration::from_secs(120), |c, h| c == h);
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.log_text()
    );
    check_exactly_once(dir.path(), &produced);
}

#[test]
fn sigterm_persists_the_batch_in_flight_and_resumes_from_stored_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "term.video";
    let broker = Broker::start(&[(topic, 4)]);
    sigterm_then_resume(dir.path(), &broker.bootstrap, topic, "term-group");
}

#[test]
fn sigterm_through_tansu_persists_the_batch_in_flight_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "term.video";
    let t = Tansu::start(&dir.path().join("tansu"), "pp-tansu-term", &[(topic, 4)]);
    sigterm_then_resume(dir.path(), &t.bootstrap, topic, "term-tansu");
}

/// 40,000 records (2 % bad) on a 4-partition `topic`; the daemon is stopped
/// (SIGTERM) mid-ingest: after the clean stop the store holds exactly what lies
/// below its offsets and the group's commits equal them; a restart stores the
/// rest, every record exactly once.
fn sigterm_then_resume(dir: &std::path::Path, bootstrap: &str, topic: &str, group: &str) {
    let produced = produce_video(bootstrap, topic, 40_000, 0.02, 12);
    let env = [
        ("PLAYPULSE_INGEST__BATCH_SIZE", "300"),
        ("PLAYPULSE_INGEST__BATCH_LINGER_MS", "5"),
    ];
    let watch = GroupWatch::new(bootstrap, group, &[(topic, 4)]);

    let mut d = spawn_daemon(dir, bootstrap, group, &[("video", topic)], &env, 0);
    watch.wait_until(&mut d, Duration::from_secs(90), |c, _| c >= 4000);
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.log_text()
    );
    drop(d);
    {
        // After a clean stop, the store holds exactly the offsets below its stored
        // next offsets, and Kafka's committed offsets equal the store's.
        let store = Store::open(&dir.join("data"), 16).unwrap();
        let done = store.counter("stored").unwrap() + store.counter("rejected").unwrap();
        let ns_offsets: i64 =
            store.events().count() as i64 + store.dead_letters().unwrap().len() as i64;
        assert_eq!(done as i64, ns_offsets);
        let (committed, high) = watch.progress();
        assert_eq!(committed, done as i64);
        assert!(committed < high, "stopped before the end");
    }
    let mut d = spawn_daemon(dir, bootstrap, group, &[("video", topic)], &env, 1);
    watch.wait_until(&mut d, Duration::from_secs(180), |c, h| c == h);
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.log_text()
    );
    check_exactly_once(dir, &produced);
}

fn produce_cli(bootstrap: &str, topic: &str, kind: &str, events: u64) {
    let out = Command::new(bin())
        .args([
            "produce",
            "--brokers",
            bootstrap,
            "--topic",
            topic,
            "--kind",
            kind,
            "--events",
            &events.to_string(),
        ])
        .args([
            "--users", "100", "--videos", "60", "--tracks", "40", "--seed", "3",
        ])
        .output()
        .expect("run produce");
    assert!(
        out.status.success(),
        "produce {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("produce prints JSON");
    assert_eq!(report["produced"].as_u64(), Some(events));
}

#[test]
fn every_producer_kind_flows_through_the_daemon_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let topics = [
        ("video", "kinds.video"),
        ("users", "kinds.users"),
        ("movies", "kinds.movies"),
        ("series", "kinds.series"),
        ("music", "kinds.music"),
    ];
    let broker = Broker::start(&topics.iter().map(|(_, t)| (*t, 2)).collect::<Vec<_>>());
    // 250 profiles over 100 users: later versions upsert earlier ones.
    for (kind, events) in [
        ("video", 500),
        ("users", 250),
        ("movies", 60),
        ("series", 30),
        ("music", 240),
    ] {
        let topic = topics.iter().find(|(k, _)| *k == kind).unwrap().1;
        produce_cli(&broker.bootstrap, topic, kind, events);
    }
    let group = "kinds-group";
    let mut d = spawn_daemon(dir.path(), &broker.bootstrap, group, &topics, &[], 0);
    let watch = GroupWatch::new(
        &broker.bootstrap,
        group,
        &topics.iter().map(|(_, t)| (*t, 2)).collect::<Vec<_>>(),
    );
    watch.wait_until(&mut d, Duration::from_secs(90), |c, h| c == h);
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.log_text()
    );

    let store = Store::open(&dir.path().join("data"), 16).unwrap();
    let c = store.counters().unwrap();
    assert_eq!(c.get("rejected"), None, "{c:?}");
    assert_eq!(
        (
            c["stored/video"],
            c["stored/user"],
            c["stored/movie"],
            c["stored/series"],
            c["stored/track"],
            c["stored/music_event"]
        ),
        (500, 250, 60, 30, 40, 200)
    );
    // Catalog records are upserts: one per id, the latest version kept.
    assert_eq!(store.catalog_len("user"), 100);
    assert_eq!(store.catalog_len("movie"), 60);
    assert_eq!(store.catalog_len("series"), 12);
    assert_eq!(store.catalog_len("track"), 40);
    let latest = store
        .events()
        .map(Result::unwrap)
        .filter_map(|(_, e)| match e {
            Event::User(u) if u.id == "user_00007" => Some(u.timestamp_ms),
            _ => None,
        })
        .max()
        .unwrap();
    match store.catalog("user", "user_00007").unwrap() {
        Some(Event::User(u)) => assert_eq!(u.timestamp_ms, latest),
        other => panic!("{other:?}"),
    }
    let plays: u64 = store
        .music_aggregates()
        .unwrap()
        .iter()
        .map(|(_, _, a)| a.counts.iter().sum::<u64>())
        .sum();
    assert_eq!(plays, 200);
}
