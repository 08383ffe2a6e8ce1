//! Crash harness, sled's approach: this test is the supervisor. A producer
//! thread streams video events (1 % malformed) into a broker the test owns;
//! the daemon runs as a child and is SIGKILLed at a random moment 0–2 s into
//! its ingest, again and again (`CRASH_TRIALS`, default 50). After
//! every kill the store is reopened and checked: every partition's records
//! below the stored offset are stored or dead-lettered exactly once, each
//! stored event is a produced one and each dead letter a produced bad record,
//! and the aggregates and counters equal a reference computed from the stored
//! events. At the end the daemon drains everything: all produced valid events
//! stored exactly once, every bad record in the dead-letter store exactly once.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use playpulse::domain::event::{Event, VideoEvent};
use playpulse::store::Store;
use rand::{Rng, SeedableRng};

const TOPIC: &str = "crash.harness";
const PARTITIONS: i32 = 16;

#[derive(Default)]
struct Sent {
    valid: Vec<VideoEvent>,
    bad: Vec<Vec<u8>>,
}

/// Streams events at `rate`/s until `stop`, keeping what was sent.
fn stream(bootstrap: String, rate: f64, stop: Arc<AtomicBool>, sent: Arc<Mutex<Sent>>) {
    stream_video(
        (&bootstrap, &[]),
        TOPIC,
        rate,
        (400, 120, 3),
        &stop,
        |payload, valid| {
            let mut s = sent.lock().unwrap();
            match valid {
                Some(v) => s.valid.push(v),
                None => s.bad.push(payload),
            }
        },
    );
}

fn key(e: &VideoEvent) -> (String, String, i64) {
    (
        e.user_id.to_string(),
        e.video_id.to_string(),
        e.timestamp_ms,
    )
}

/// The invariants of a store reopened after a crash; answers (stored, dead).
fn check(dir: &std::path::Path, sent: &Mutex<Sent>) -> (usize, usize) {
    let store = Store::open(&dir.join("data"), 16).unwrap();
    // Produced records as multisets (two events may share user, video and time).
    let (mut valid, mut bad): (HashMap<_, Vec<VideoEvent>>, HashMap<Vec<u8>, usize>) = {
        let s = sent.lock().unwrap();
        let mut bad = HashMap::new();
        for b in &s.bad {
            *bad.entry(b.clone()).or_default() += 1;
        }
        let mut valid: HashMap<_, Vec<VideoEvent>> = HashMap::new();
        for e in &s.valid {
            valid.entry(key(e)).or_default().push(e.clone());
        }
        (valid, bad)
    };
    let mut positions: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut stored = Vec::new();
    for item in store.events() {
        let (pos, ev) = item.unwrap();
        let Event::Video(v) = ev else {
            panic!("not a video event at {pos:?}")
        };
        // Each produced event matches at most one stored event.
        let same = valid
            .get_mut(&key(&v))
            .unwrap_or_else(|| panic!("stored event {pos:?} was not produced: {v:?}"));
        let i = same.iter().position(|e| *e == v).unwrap_or_else(|| {
            panic!("stored event {pos:?} is stored more often than produced, or altered: {v:?}")
        });
        same.swap_remove(i);
        assert!(
            seen.insert((pos.partition, pos.offset)),
            "position {pos:?} stored twice"
        );
        positions.entry(pos.partition).or_default().push(pos.offset);
        stored.push(v);
    }
    let dead = store.dead_letters().unwrap();
    for d in &dead {
        let raw = match (&d.raw, &d.raw_hex) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(hex)) => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect(),
            (None, None) => Vec::new(),
        };
        // As many dead letters of these bytes as bad records produced with them, at most.
        let left = bad.get_mut(&raw).unwrap_or_else(|| {
            panic!(
                "dead letter {}/{} was not a produced bad record",
                d.partition, d.offset
            )
        });
        assert!(
            *left > 0,
            "bad record dead-lettered more often than produced"
        );
        *left -= 1;
        positions.entry(d.partition).or_default().push(d.offset);
    }
    // Below each stored offset: every record exactly once, none skipped.
    let offsets = store.all_offsets();
    let next: BTreeMap<i32, i64> = offsets
        .values()
        .flat_map(|m| m.iter())
        .map(|(tp, o)| (tp.rsplit('/').next().unwrap().parse::<i32>().unwrap(), *o))
        .collect();
    for (p, list) in positions.iter_mut() {
        list.sort_unstable();
        let want: Vec<i64> = (0..next.get(p).copied().unwrap_or(0)).collect();
        assert_eq!(
            *list, want,
            "partition {p}: stored + dead positions vs the stored offset"
        );
    }
    for (p, n) in &next {
        assert!(
            *n == 0 || positions.contains_key(p),
            "partition {p} has offset {n} but nothing stored"
        );
    }
    assert_pairs_match(&store, &stored);
    let c = store.counters().unwrap();
    assert_eq!(c.get("stored").copied().unwrap_or(0) as usize, stored.len());
    assert_eq!(c.get("rejected").copied().unwrap_or(0) as usize, dead.len());
    (stored.len(), dead.len())
}

#[test]
fn sigkill_at_random_moments_never_loses_or_duplicates() {
    let trials: usize = std::env::var("CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261121);
    eprintln!("crash harness: {trials} trials, seed {seed} (CRASH_TRIALS, CRASH_SEED)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[(TOPIC, PARTITIONS)]);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let producer = {
        let (b, s, st) = (broker.bootstrap.clone(), sent.clone(), stop.clone());
        // Below what the daemon stores between kills: the broker keeps ~5 MiB a
        // partition, a backlog past that would be dropped before it is read.
        std::thread::spawn(move || stream(b, 400.0, st, s))
    };
    let env = [
        ("PLAYPULSE_INGEST__BATCH_SIZE", "300"),
        ("PLAYPULSE_INGEST__BATCH_LINGER_MS", "5"),
        ("PLAYPULSE_MODELS__ENABLED", "false"),
        // The store rewrites its files at every start (past 1 MiB), so kills
        // land during copies and between a copy and the pointer's move too.
        ("PLAYPULSE_STORE__REWRITE_RATIO", "1.5"),
        ("PLAYPULSE_STORE__REWRITE_MIN_MB", "1"),
    ];
    let (mut last_stored, mut mid_batch) = (0usize, 0usize);
    let (mut generation, mut rewritten) = (0u64, 0usize);
    for trial in 0..trials {
        // A consumer group per run: the daemon seeks to the offsets in its store,
        // not Kafka's, so a new group loses nothing and need not wait for the
        // killed member's session to time out.
        let group = format!("crash-{trial}");
        let watch = GroupWatch::new(&broker.bootstrap, &group, &[(TOPIC, PARTITIONS)]);
        let mut d = spawn_daemon(
            dir.path(),
            &broker.bootstrap,
            &group,
            &[("video", TOPIC)],
            &env,
            trial,
        );
        // Ingesting in this run: its first batch is stored and committed.
        watch.wait_until(&mut d, Duration::from_secs(60), |c, _| c > 0);
        let wait = Duration::from_millis(rng.gen_range(0..2000));
        std::thread::sleep(wait);
        d.signal(libc::SIGKILL);
        d.wait_exit(Duration::from_secs(10));
        drop(d);
        let (stored, dead) = check(dir.path(), &sent);
        assert!(
            stored >= last_stored,
            "trial {trial}: stored events went from {last_stored} to {stored}"
        );
        let produced = {
            let s = sent.lock().unwrap();
            s.valid.len() + s.bad.len()
        };
        mid_batch += usize::from(stored + dead < produced);
        last_stored = stored;
        let now = playpulse::store::generation::current(&dir.path().join("data"))
            .unwrap()
            .0;
        rewritten += usize::from(now != generation);
        generation = now;
        eprintln!("trial {trial}: killed {} ms into ingest; {stored} stored, {dead} dead letters, {produced} produced", wait.as_millis());
    }
    // Rewrites finished between kills (others were cut short by them).
    assert!(rewritten > 0, "no rewrite of the store's files finished");
    eprintln!("{rewritten} of {trials} runs finished a rewrite of the store's files");
    // Most kills must land with records still to store (else nothing was tested).
    assert!(
        mid_batch * 2 > trials,
        "only {mid_batch} of {trials} kills left records unstored"
    );

    // The end: stop producing, let the daemon drain, and everything is there once.
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        "crash-final",
        &[("video", TOPIC)],
        &env,
        trials,
    );
    // Drained: the control socket says the daemon owns every partition and has
    // stored each up to the broker's end.
    wait_status(dir.path(), &mut d, Duration::from_secs(180), |s| {
        let owned = s["partitions"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["assigned"] == true).count())
            .unwrap_or(0);
        owned == PARTITIONS as usize && s["ingest"]["lag"] == 0
    });
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        d.log_text()
    );
    let (stored, dead) = check(dir.path(), &sent);
    let s = sent.lock().unwrap();
    assert_eq!(
        (stored, dead),
        (s.valid.len(), s.bad.len()),
        "all produced records, exactly once"
    );
    eprintln!("crash harness: {trials} SIGKILLs, {stored} events stored and {dead} dead letters, 0 lost, 0 duplicated");
}
