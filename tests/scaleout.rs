//! Scale-out: daemons with separate data dirs in one consumer group share a
//! 6-partition topic while a producer streams into it. After each hand-over the
//! next owner starts exactly where the last one stopped: the union of the two
//! stores holds every produced record exactly once — every position of every
//! partition in exactly one store, as an event or a dead letter, and the stored
//! events are exactly the produced valid ones.
//!
//! - On tansu (which drops commit metadata, so members commit after their
//!   writes and at each hand-over): a second member joins mid-stream
//!   (partitions move to it), the first leaves (SIGTERM: its partitions move to
//!   the second), then comes back (they move again).
//! - On a broker that keeps commit metadata and fences stale generations
//!   (librdkafka's mock cluster, owned by the test; Apache Kafka), where members
//!   claim each batch before they write it: members are SIGKILLed in turn at
//!   random moments, their partitions move to the survivor after the session
//!   timeout, and each killed member comes back, reads back what it had claimed
//!   and not written, and takes partitions again.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use playpulse::domain::event::{Event, VideoEvent};
use playpulse::store::Store;
use rand::Rng;

const TOPIC: &str = "scale.video";
const PARTITIONS: i32 = 6;
const GROUP: &str = "scale-group";

/// Streams events at `rate`/s until `stop`; answers the valid events and the
/// number of bad records sent.
fn stream(
    (bootstrap, props): (String, &[(&str, &str)]),
    topic: &str,
    rate: f64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> (Vec<VideoEvent>, usize) {
    let (mut valid, mut bad) = (Vec::new(), 0);
    stream_video(
        (&bootstrap, props),
        topic,
        rate,
        (300, 90, 5),
        &stop,
        |_, ev| {
            match ev {
                Some(v) => valid.push(v),
                None => bad += 1,
            }
            sent.fetch_add(1, Ordering::Relaxed);
        },
    );
    (valid, bad)
}

fn member(dir: &Path, bootstrap: &str, (topic, group): (&str, &str), run: usize) -> Daemon {
    member_with(dir, bootstrap, (topic, group), &[], run)
}

fn member_with(
    dir: &Path,
    bootstrap: &str,
    (topic, group): (&str, &str),
    env: &[(&str, &str)],
    run: usize,
) -> Daemon {
    let mut all = vec![
        ("PLAYPULSE_INGEST__BATCH_SIZE", "200"),
        ("PLAYPULSE_MODELS__ENABLED", "false"),
    ];
    all.extend_from_slice(env);
    spawn_daemon(dir, bootstrap, group, &[("video", topic)], &all, run)
}

/// Partitions a member owns now, from its status.
fn owned(s: &serde_json::Value) -> usize {
    s["partitions"]
        .as_array()
        .map(|ps| ps.iter().filter(|p| p["assigned"] == true).count())
        .unwrap_or(0)
}

/// Whether the two members share the partitions between them, each owning some.
fn shared(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    owned(a) > 0 && owned(b) > 0 && owned(a) + owned(b) == PARTITIONS as usize
}

/// Next stored offset per partition of one member (0 when none).
fn next_offsets(s: &serde_json::Value) -> BTreeMap<i64, i64> {
    s["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap_or(-1),
                p["next_offset"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// Records stored in the union (per partition, the furthest member's offset).
fn union_stored(a: &serde_json::Value, b: &serde_json::Value) -> i64 {
    let (a, b) = (next_offsets(a), next_offsets(b));
    (0..i64::from(PARTITIONS))
        .map(|p| {
            a.get(&p)
                .copied()
                .unwrap_or(0)
                .max(b.get(&p).copied().unwrap_or(0))
        })
        .sum()
}

/// Waits until `pred` holds over the statuses of both members.
fn wait_both(
    (da, a): (&Path, &mut Daemon),
    (db, b): (&Path, &mut Daemon),
    limit: Duration,
    what: &str,
    pred: impl Fn(&serde_json::Value, &serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        let (sa, sb) = (ctl_status(da), ctl_status(db));
        if pred(&sa, &sb) {
            return;
        }
        a.assert_alive();
        b.assert_alive();
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\nA: {sa}\nB: {sb}\nA log:\n{}\nB log:\n{}",
            a.log_text(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn key(e: &VideoEvent) -> String {
    format!("{e:?}")
}

/// Every position of `partitions` partitions in exactly one of the stores, as an
/// event or a dead letter; the stored events are exactly the produced valid
/// ones and the dead letters as many as the bad records sent.
fn assert_union_exactly_once(
    members: &[(&str, &Path)],
    partitions: i32,
    total: i64,
    valid: &[VideoEvent],
    bad: usize,
) {
    let mut owner: HashMap<(i32, i64), &str> = HashMap::new();
    let mut stored: Vec<String> = Vec::new();
    let mut dead = 0usize;
    let mut per_member = Vec::new();
    for (name, d) in members {
        let store = Store::open(&d.join("data"), 16).unwrap();
        let mut n = 0;
        for item in store.events() {
            let (pos, ev) = item.unwrap();
            let Event::Video(v) = ev else {
                panic!("not a video event at {pos:?}")
            };
            if let Some(other) = owner.insert((pos.partition, pos.offset), name) {
                panic!("position {pos:?} stored by {other} and {name}");
            }
            stored.push(key(&v));
            n += 1;
        }
        for l in store.dead_letters().unwrap() {
            if let Some(other) = owner.insert((l.partition, l.offset), name) {
                panic!(
                    "dead letter at {}/{} in {other} and {name}",
                    l.partition, l.offset
                );
            }
            dead += 1;
        }
        per_member.push((name, n));
    }
    assert!(
        per_member.iter().all(|(_, n)| *n > 1000),
        "every member stored a share: {per_member:?}"
    );
    assert_eq!(owner.len() as i64, total, "positions in the union");
    for p in 0..partitions {
        let mut offs: Vec<i64> = owner
            .keys()
            .filter(|(pp, _)| *pp == p)
            .map(|(_, o)| *o)
            .collect();
        offs.sort_unstable();
        assert!(
            offs.iter().enumerate().all(|(i, o)| *o == i as i64),
            "partition {p} has gaps"
        );
    }
    assert_eq!(dead, bad, "dead letters in the union");
    let mut want: Vec<String> = valid.iter().map(key).collect();
    want.sort_unstable();
    stored.sort_unstable();
    assert_eq!(stored.len(), want.len(), "stored events in the union");
    assert!(
        stored == want,
        "the union's events differ from the produced ones"
    );
}

#[test]
fn two_members_share_the_partitions_and_store_every_record_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (da, db) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let broker = Tansu::start(&dir.join("tansu"), "pp-scale", &[(TOPIC, PARTITIONS)]);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let producer = {
        let (b, stop, sent) = (broker.bootstrap.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || stream((b, &[]), TOPIC, 1500.0, stop, sent))
    };

    // A alone owns all six partitions and stores.
    let mut a = member(&da, &broker.bootstrap, (TOPIC, GROUP), 0);
    wait_status(&da, &mut a, Duration::from_secs(60), |s| {
        owned(s) == PARTITIONS as usize && stored_below_offsets(s) >= 2000
    });
    // B joins mid-stream: partitions move to it, and both store.
    let mut b = member(&db, &broker.bootstrap, (TOPIC, GROUP), 0);
    let a0 = stored_below_offsets(&ctl_status(&da));
    wait_both(
        (&da, &mut a),
        (&db, &mut b),
        Duration::from_secs(90),
        "B owns partitions and both store",
        |sa, sb| {
            shared(sa, sb)
                && stored_below_offsets(sb) >= 1000
                && stored_below_offsets(sa) > a0 + 500
        },
    );
    // A leaves (SIGTERM): B takes every partition, from where A stopped.
    a.signal(libc::SIGTERM);
    assert!(
        a.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        a.log_text()
    );
    let b0 = stored_below_offsets(&ctl_status(&db));
    wait_status(&db, &mut b, Duration::from_secs(90), |s| {
        owned(s) == PARTITIONS as usize && stored_below_offsets(s) > b0 + 2000
    });
    // A comes back: partitions move again.
    let mut a = member(&da, &broker.bootstrap, (TOPIC, GROUP), 1);
    let a1 = stored_below_offsets(&wait_status(&da, &mut a, Duration::from_secs(60), |s| {
        !s.is_null()
    }));
    wait_both(
        (&da, &mut a),
        (&db, &mut b),
        Duration::from_secs(90),
        "A owns partitions again and stores",
        |sa, sb| shared(sa, sb) && stored_below_offsets(sa) > a1 + 1000,
    );
    // The producer stops; the group drains everything.
    stop.store(true, Ordering::Relaxed);
    let (valid, bad) = producer.join().expect("producer thread");
    let total = sent.load(Ordering::Relaxed) as i64;
    assert_eq!(total as usize, valid.len() + bad);
    wait_both(
        (&da, &mut a),
        (&db, &mut b),
        Duration::from_secs(120),
        "the union stores everything",
        |sa, sb| union_stored(sa, sb) == total,
    );
    for (d, m) in [(&da, &mut a), (&db, &mut b)] {
        m.signal(libc::SIGTERM);
        assert!(
            m.wait_exit(Duration::from_secs(60)).success(),
            "{}: {}",
            d.display(),
            m.log_text()
        );
    }
    let log_a = std::fs::read_to_string(da.join("daemon-0.log")).unwrap();
    assert!(log_a.contains("handed over"), "{log_a}");
    assert_union_exactly_once(&[("A", &da), ("B", &db)], PARTITIONS, total, &valid, bad);
}

#[test]
fn killed_members_hand_over_and_every_record_is_stored_exactly_once() {
    const KILLS: usize = 6;
    let (topic, group) = ("kill.video", "kill-group");
    let tmp = tempfile::tempdir().unwrap();
    let dirs = [tmp.path().join("a"), tmp.path().join("b")];
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let broker = Broker::start(&[(topic, PARTITIONS)]);
    // A killed member's partitions move after its session times out.
    let quick = [(
        "PLAYPULSE_KAFKA__PROPERTIES",
        r#"{ "session.timeout.ms" = "3000", "heartbeat.interval.ms" = "500" }"#,
    )];
    let spawn =
        |dir: &Path, run: usize| member_with(dir, &broker.bootstrap, (topic, group), &quick, run);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // The mock cluster keeps 5 MB of record batches per partition and deletes
    // the oldest past that, read or not: batched and compressed, the whole
    // stream fits, so a member that falls behind during the hand-overs still
    // finds every record.
    const RETAINED: &[(&str, &str)] = &[("linger.ms", "100"), ("compression.type", "lz4")];
    let producer = {
        let (b, stop, sent) = (broker.bootstrap.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || stream((b, RETAINED), topic, 3000.0, stop, sent))
    };
    let mut runs = [0usize, 0];
    let mut members = [spawn(&dirs[0], 0), spawn(&dirs[1], 0)];
    let mut rng = rand::thread_rng();
    for kill in 0..KILLS {
        let (v, s) = (kill % 2, 1 - kill % 2);
        let [m0, m1] = &mut members;
        let (vs, ss) = {
            let before = stored_below_offsets(&ctl_status(&dirs[v]));
            wait_both(
                (&dirs[0], m0),
                (&dirs[1], m1),
                Duration::from_secs(90),
                "both members own partitions and store",
                |s0, s1| shared(s0, s1) && stored_below_offsets([s0, s1][v]) > before + 500,
            );
            (ctl_status(&dirs[v]), ctl_status(&dirs[s]))
        };
        assert_eq!(vs["group"]["commit"], "claim_before_write", "{vs}");
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..2000)));
        members[v].signal(libc::SIGKILL);
        members[v].wait_exit(Duration::from_secs(10));
        // The survivor takes every partition after the session timeout.
        let before = stored_below_offsets(&ss);
        wait_status(&dirs[s], &mut members[s], Duration::from_secs(90), |st| {
            owned(st) == PARTITIONS as usize && stored_below_offsets(st) > before + 1000
        });
        // The killed member comes back.
        runs[v] += 1;
        members[v] = spawn(&dirs[v], runs[v]);
    }
    stop.store(true, Ordering::Relaxed);
    let (valid, bad) = producer.join().expect("producer thread");
    let total = sent.load(Ordering::Relaxed) as i64;
    let [m0, m1] = &mut members;
    wait_both(
        (&dirs[0], m0),
        (&dirs[1], m1),
        Duration::from_secs(120),
        "the union stores everything",
        |s0, s1| union_stored(s0, s1) == total,
    );
    for (d, m) in dirs.iter().zip(&mut members) {
        m.signal(libc::SIGTERM);
        assert!(
            m.wait_exit(Duration::from_secs(60)).success(),
            "{}: {}",
            d.display(),
            m.log_text()
        );
    }
    // What the restarted members read back (claimed before the kill, not
    // stored); and no record went before it was read (the broker's retention,
    // not a hand-over, would have lost it).
    let mut read_back = 0u64;
    for (d, runs) in dirs.iter().zip(runs) {
        for r in 0..=runs {
            let log = d.join(format!("daemon-{r}.log"));
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(
                !text.contains("records lost before they were read"),
                "the broker deleted records before they were read: {}",
                log.display()
            );
            read_back += text
                .lines()
                .filter_map(|l| {
                    l.split("read back ")
                        .nth(1)?
                        .split(' ')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum::<u64>();
        }
    }
    eprintln!("{KILLS} kills, {total} records, {read_back} claimed records read back at restarts");
    assert_union_exactly_once(
        &[("A", &dirs[0]), ("B", &dirs[1])],
        PARTITIONS,
        total,
        &valid,
        bad,
    );
}
