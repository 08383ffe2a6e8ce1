//! The Parquet data lake read back by an independent reader: video, catalog and
//! music records go through a broker into the daemon, a model trains, the
//! daemon stops, `playpulse export parquet` writes the lake, and pyarrow
//! (installed by tests/run.sh; `PYARROW_PYTHON` names its interpreter) reads
//! every kind as a hive-partitioned dataset. Row counts, sums and the partition
//! dates must equal what this test computes from the produced records.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use common::*;
use playpulse::config::KafkaConfig;
use playpulse::domain::event::{Event, MusicAction};
use playpulse::export::lake::date_of;
use playpulse::kafka;
use playpulse::synth::generate::{CatalogGen, MusicGen, World};
use serde_json::Value;

type Pair = (String, String);

const READER: &str = r#"
import json, sys
import pyarrow.dataset as ds
import pyarrow.compute as pc
out = {}
root = sys.argv[1]
def table(kind):
    return ds.dataset(f"{root}/{kind}", format="parquet", partitioning="hive").to_table()
v = table("video_events")
out["video_rows"] = v.num_rows
out["video_watch_sum"] = pc.sum(v["watch_time_seconds"]).as_py()
out["video_dates"] = sorted(set(str(d) for d in v["date"].to_pylist()))
first = v.filter(pc.and_(pc.equal(v["partition"], 0), pc.equal(v["offset"], 0)))
out["video_p0_o0"] = first.select(["user_id", "video_id", "watch_time_seconds"]).to_pylist()
m = table("music_events")
out["music_rows"] = m.num_rows
p = table("pair_aggregates")
out["pair_rows"] = p.num_rows
out["pair_weight_sum"] = pc.sum(p["weight"]).as_py()
out["pair_held_out"] = pc.sum(p["held_out"].cast("int64")).as_py()
mp = table("music_pairs")
out["music_pair_rows"] = mp.num_rows
out["music_pair_weight_sum"] = pc.sum(mp["weight"]).as_py()
out["music_pair_held_out"] = pc.sum(mp["held_out"].cast("int64")).as_py()
out["split"] = json.load(open(f"{root}/split.json"))
out["users_rows"] = table("catalog_users").num_rows
t = table("catalog_titles")
out["titles_by_kind"] = {k: int(c) for k, c in zip(*[x.to_pylist() for x in pc.value_counts(t["kind"]).flatten()])}
out["tracks_rows"] = table("catalog_tracks").num_rows
e = table("graph_edges")
rels = {}
for rel, cnt in zip(e["relation"].to_pylist(), e["count"].to_pylist()):
    r = rels.setdefault(rel, [0, 0])
    r[0] += 1
    r[1] += cnt or 0
out["edges"] = rels
r = table("recommendations")
out["rec_rows"] = r.num_rows
out["rec_users"] = len(set(r["user_id"].to_pylist()))
out["rec_lists"] = len(set(zip(r["user_id"].to_pylist(), r["domain"].to_pylist())))
out["rec_domains"] = sorted(set(r["domain"].to_pylist()))
out["rec_max_rank"] = pc.max(r["rank"]).as_py()
out["rec_titled"] = r.num_rows - r["title"].null_count
print(json.dumps(out))
"#;

#[test]
fn the_parquet_lake_reads_back_in_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let topics = [
        ("pq.video", 3),
        ("pq.users", 1),
        ("pq.movies", 1),
        ("pq.series", 1),
        ("pq.music", 2),
    ];
    let broker = Broker::start(&topics);
    let produced = produce_video(&broker.bootstrap, "pq.video", 6_000, 0.01, 31);
    let producer = kafka::producer(&broker.bootstrap, &KafkaConfig::default()).unwrap();
    let send = |topic: &str, ev: &Event| {
        let rec = playpulse::ingest::wire::to_json(ev);
        kafka::send(&producer, topic, b"k", &rec, None).unwrap();
    };
    let mut cat = CatalogGen::new(World::new(300, 80, 31), 31);
    let (mut user_ids, mut movie_ids, mut series_ids) =
        (HashSet::new(), HashSet::new(), HashSet::new());
    for i in 0..120 {
        let u = cat.next_user(1_767_225_600_000 + i);
        user_ids.insert(u.id.clone());
        send("pq.users", &Event::User(u));
        let m = cat.next_movie(1_767_225_600_000 + i);
        movie_ids.insert(m.id.clone());
        send("pq.movies", &Event::Movie(m));
        let s = cat.next_series(1_767_225_600_000 + i);
        series_ids.insert(s.id.clone());
        send("pq.series", &Event::Series(s));
    }
    let mut mg = MusicGen::new(40, 60, 31, 1_767_225_600_000);
    let (mut tracks, mut music_events) = (0u64, 0u64);
    // Per relation: the distinct (user, track) edges and the events.
    let mut by_action: HashMap<&str, (HashSet<Pair>, u64)> = HashMap::new();
    // Per (user, track): the implicit feedback under the default listening weights.
    let w = playpulse::ml::config::EventWeights::default();
    let mut music_feedback: HashMap<Pair, f64> = HashMap::new();
    for _ in 0..3_040 {
        let ev = mg.next_record();
        match &ev {
            Event::Track(_) => tracks += 1,
            Event::Music(m) => {
                music_events += 1;
                let rel = playpulse::views::graph::relation(m.event_type);
                let e = by_action.entry(rel).or_default();
                e.0.insert((m.user_id.to_string(), m.track_id.to_string()));
                e.1 += 1;
                let weight = match m.event_type {
                    MusicAction::Play => w.play,
                    MusicAction::Skip => w.skip,
                    MusicAction::Like => w.like,
                    MusicAction::Pause => w.pause,
                    MusicAction::Seek => w.seek,
                };
                *music_feedback
                    .entry((m.user_id.to_string(), m.track_id.to_string()))
                    .or_default() += weight;
            }
            _ => {}
        }
        send("pq.music", &ev);
    }
    kafka::flush(&producer, Duration::from_secs(30)).unwrap();
    // Every catalog record is stored (an upsert of its id); ids repeat.
    let total = produced.valid.len() as u64 + 3 * 120 + tracks + music_events;

    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        "parquet-test",
        &[
            ("video", "pq.video"),
            ("users", "pq.users"),
            ("movies", "pq.movies"),
            ("series", "pq.series"),
            ("music", "pq.music"),
        ],
        &[("PLAYPULSE_MODELS__MIN_EVENTS", "100")],
        0,
    );
    wait_status(dir.path(), &mut d, Duration::from_secs(120), |s| {
        s["ingest"]["stored"].as_u64() == Some(total)
    });
    let trained = ctl_json(&dir.path().join("data"), &["train"]);
    assert_eq!(trained["ok"], true, "{trained}");
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        d.log_text()
    );

    let lake = dir.path().join("lake");
    let data = dir.path().join("data");
    let out = run_ok(&[
        "export",
        "parquet",
        "--data-dir",
        data.to_str().expect("a UTF-8 temporary path"),
        "--out",
        lake.to_str().expect("a UTF-8 temporary path"),
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["kinds"]["video_events"]["rows"],
        produced.valid.len()
    );

    let python = std::env::var("PYARROW_PYTHON").unwrap_or_else(|_| "python3".into());
    let read = Command::new(&python)
        .arg("-c")
        .arg(READER)
        .arg(&lake)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}; run tests/run.sh (it installs pyarrow)"));
    assert!(
        read.status.success(),
        "pyarrow could not read the lake ({python}; tests/run.sh installs pyarrow): {}",
        String::from_utf8_lossy(&read.stderr)
    );
    let got: Value = serde_json::from_slice(&read.stdout).unwrap();

    // Video events: count, watch time, the partition dates, one row by position.
    assert_eq!(got["video_rows"], produced.valid.len());
    let watch: f64 = produced.valid.iter().map(|e| e.watch_time_seconds).sum();
    assert!((got["video_watch_sum"].as_f64().unwrap() - watch).abs() < 1e-6 * watch.max(1.0));
    let dates: BTreeSet<String> = produced
        .valid
        .iter()
        .map(|e| date_of(e.timestamp_ms))
        .collect();
    let got_dates: BTreeSet<String> = got["video_dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert_eq!(got_dates, dates);
    assert_eq!(
        got["video_p0_o0"].as_array().map(Vec::len),
        Some(1),
        "{got}"
    );
    // Aggregates: one row per (user, video), the feedback summed.
    let pairs: HashSet<(&str, &str)> = produced
        .valid
        .iter()
        .map(|e| (e.user_id.as_str(), e.video_id.as_str()))
        .collect();
    assert_eq!(got["pair_rows"], pairs.len());
    let feedback: f64 = produced.valid.iter().map(|e| e.implicit_feedback()).sum();
    assert!((got["pair_weight_sum"].as_f64().unwrap() - feedback).abs() < 1e-6 * feedback.abs());
    // Catalog: the latest record of each id.
    assert_eq!(got["users_rows"], user_ids.len());
    assert_eq!(got["titles_by_kind"]["movie"], movie_ids.len());
    assert_eq!(got["titles_by_kind"]["series"], series_ids.len());
    assert_eq!(got["tracks_rows"], tracks);
    // Music and its graph: BY and IN_GENRE per track, one listening edge per
    // (user, track, relation) with the events counted.
    assert_eq!(got["music_rows"], music_events);
    // Each (user, track) pair weighed as the trainer does, and about a fifth
    // of the pairs of each kind marked held out (models.test_fraction 0.2).
    assert_eq!(got["music_pair_rows"], music_feedback.len());
    let sum: f64 = music_feedback.values().sum();
    assert!(
        (got["music_pair_weight_sum"].as_f64().unwrap() - sum).abs() < 1e-6 * sum.abs().max(1.0)
    );
    for (held, rows) in [
        (&got["pair_held_out"], pairs.len() as f64),
        (&got["music_pair_held_out"], music_feedback.len() as f64),
    ] {
        let share = held.as_f64().unwrap() / rows;
        assert!((0.12..0.28).contains(&share), "held out {held} of {rows}");
    }
    assert_eq!(
        got["split"],
        serde_json::json!({"seed": 42, "test_fraction": 0.2})
    );
    assert_eq!(got["edges"]["BY"][0], tracks);
    assert_eq!(got["edges"]["IN_GENRE"][0], tracks);
    for a in MusicAction::ALL {
        let rel = playpulse::views::graph::relation(a);
        let (edges, events) = by_action.get(rel).cloned().unwrap_or_default();
        assert_eq!(got["edges"][rel][0], edges.len(), "{rel}: {got}");
        assert_eq!(got["edges"][rel][1], events, "{rel}");
    }
    // Recommendations of the champion: 5 per (user, domain), ranks 1..5, titles.
    assert!(got["rec_rows"].as_u64().unwrap() > 0, "{got}");
    assert_eq!(
        got["rec_rows"].as_u64(),
        got["rec_lists"].as_u64().map(|l| l * 5),
        "{got}"
    );
    assert!(
        got["rec_lists"].as_u64() >= got["rec_users"].as_u64(),
        "{got}"
    );
    for d in got["rec_domains"].as_array().unwrap() {
        assert!(d == "video" || d == "music", "{got}");
    }
    assert_eq!(got["rec_max_rank"], 5);
    assert!(got["rec_titled"].as_u64().unwrap() > 0, "{got}");
}
