//! The video pairs through the store: runs, the overlay, compaction into
//! per-user chunks, merges, reads beside a running compaction, reopening, and
//! the stores laid out before chunks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::event::Event;
use crate::domain::record::{Outcome, Processed, SourcePos};
use crate::store::*;
use crate::synth::generate::{VideoGen, World};

type Row = (String, String, u64, u64, String);

/// Video records over partitions 0 and 1 of topic `v`, alternating.
pub(crate) fn records(n: usize) -> Vec<Processed> {
    let mut g = VideoGen::new(World::new(60, 40, 5), 5, 1_735_689_600_000, 50);
    (0..n)
        .map(|i| {
            Processed::at(
                SourcePos::new("v", (i % 2) as i32, (i / 2) as i64),
                Outcome::Valid(Event::Video(g.next_event())),
            )
        })
        .collect()
}

fn row(u: String, i: String, a: PairAgg) -> Row {
    (
        u,
        i,
        a.events,
        a.positive_events,
        format!("{:.9}", a.weight),
    )
}

fn sorted(s: &StoreView) -> Vec<Row> {
    let mut v: Vec<Row> = s
        .pair_aggregates()
        .map(Result::unwrap)
        .map(|(u, i, a)| row(u, i, a))
        .collect();
    v.sort();
    v
}

/// The pairs as derived from every stored event (the reference).
fn from_events(s: &StoreView) -> Vec<Row> {
    let mut v: Vec<Row> = s
        .pairs_from_events()
        .unwrap()
        .into_iter()
        .map(|((u, i), r)| row(u, i, PairAgg::from_slots(&r)))
        .collect();
    v.sort();
    v
}

fn small_tuning(s: &Store) {
    s.set_pair_tuning(pairs::Tuning {
        freeze_at: 40,
        merge_at: 3,
    });
}

/// Waits (bounded) until the overlay holds nothing frozen.
fn settled(s: &Store) {
    let start = Instant::now();
    while s.pairs.held().1 > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the compaction did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A write that takes every chunk, run and chunk mark away (a store laid out
/// before chunks, once more is added to it).
fn without_chunks(s: &Store) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for k in s
        .tree()
        .scan_prefix(pairs::CHUNK)
        .keys()
        .chain(s.tree().scan_prefix(pairs::RUN).keys())
    {
        batch.remove(k.unwrap());
    }
    batch.remove(pairs::CHUNKS_MARK);
    batch.remove(pairs::THROUGH);
    batch
}

#[test]
fn pairs_equal_the_events_through_compactions_merges_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(3000);
    let expected = {
        let mut s = Store::open(dir.path(), 16).unwrap();
        small_tuning(&s);
        // Small batches: most pairs are touched in several of them.
        for chunk in recs.chunks(97) {
            let c = s.apply("ns", prepare(chunk.to_vec())).unwrap();
            assert!(c
                .pairs
                .iter()
                .all(|p| matches!(p.agg, PairChangeAgg::Video(_))));
            assert_eq!(sorted(&s), from_events(&s), "after every batch");
        }
        settled(&s);
        let (_, _, stats) = s.pair_overlay();
        assert!(stats.compactions >= 5, "{stats:?}");
        assert!(stats.merged_users > 0, "{stats:?}");
        assert!(s.tree().scan_prefix(pairs::CHUNK).count() > 0);
        let rows = sorted(&s);
        assert_eq!(rows, from_events(&s));
        assert_eq!(rows.iter().map(|r| r.2).sum::<u64>(), 3000);
        // One user's read equals their share of the whole, and says which
        // batches it reflects (all of them: 31 batches, seqs 0..=30).
        let (u, ..) = &rows[0];
        let (mine, upto) = s.user_video_pairs(u).unwrap();
        let theirs: Vec<Row> = rows.iter().filter(|r| &r.0 == u).cloned().collect();
        let mine: Vec<Row> = mine
            .into_iter()
            .map(|(i, a)| row(u.clone(), i, a))
            .collect();
        assert_eq!(mine, theirs);
        assert_eq!(upto, 31);
        rows
    };
    // Reopened: the runs not yet in chunks come back into memory.
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(sorted(&s), expected);
    drop(s);

    // A store of the layout before chunks: a row per pair.
    {
        let s = Store::open(dir.path(), 16).unwrap();
        let mut batch = without_chunks(&s);
        for (u, i, a) in s.pair_aggregates().map(Result::unwrap) {
            let slots = [
                a.weight,
                a.events as f64,
                a.positive_events as f64,
                a.max_feedback,
                a.last_ts_ms as f64,
            ];
            batch.insert(
                keys::join(keys::VIDEO_PAIR, &[u.as_bytes(), i.as_bytes()]),
                slots::encode_pair(&slots),
            );
        }
        s.tree().apply_batch(batch).unwrap();
        // The overlay of this handle is stale now: close without a write.
    }
    let mut s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(sorted(&s), expected, "rows moved into chunks");
    assert_eq!(s.tree().scan_prefix(keys::VIDEO_PAIR).count(), 0);
    // New batches after the move add to the moved pairs.
    let more = records(3200);
    s.apply("ns", prepare(more[3000..].to_vec())).unwrap();
    assert_eq!(sorted(&s), from_events(&s));
    let expected = sorted(&s);
    drop(s);

    // A store from before the rows: derived from its events.
    {
        let s = Store::open(dir.path(), 16).unwrap();
        let mut batch = without_chunks(&s);
        batch.remove(keys::PAIRS_MARK);
        s.tree().apply_batch(batch).unwrap();
    }
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(sorted(&s), expected, "derived from the events once");
    assert!(s.tree().contains_key(pairs::CHUNKS_MARK).unwrap());
}

#[test]
fn reads_beside_running_compactions_count_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(6000);
    let mut s = Store::open(dir.path(), 16).unwrap();
    small_tuning(&s);
    let view = s.view();
    // Events whose batch has surely been applied (lower), and those that may
    // have been (upper).
    let lower = Arc::new(AtomicU64::new(0));
    let upper = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (lower, upper, stop) = (lower.clone(), upper.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            let user = "user_00007";
            let mut user_events = 0u64;
            while !stop.load(Ordering::Acquire) || reads < 20 {
                let before = lower.load(Ordering::Acquire);
                let total: u64 = view.pair_aggregates().map(|p| p.unwrap().2.events).sum();
                let after = upper.load(Ordering::Acquire);
                assert!(
                    before <= total && total <= after,
                    "read {total} events with {before}..={after} applied"
                );
                let (mine, _) = view.user_video_pairs(user).unwrap();
                let n: u64 = mine.iter().map(|(_, a)| a.events).sum();
                assert!(
                    n >= user_events,
                    "one user's events went back: {n} < {user_events}"
                );
                user_events = n;
                reads += 1;
            }
            reads
        })
    };
    let mut applied = 0u64;
    for chunk in recs.chunks(61) {
        upper.store(applied + chunk.len() as u64, Ordering::Release);
        s.apply("ns", prepare(chunk.to_vec())).unwrap();
        applied += chunk.len() as u64;
        lower.store(applied, Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    let reads = reader.join().unwrap();
    assert!(reads >= 20);
    settled(&s);
    assert!(s.pair_overlay().2.compactions >= 10);
    assert_eq!(sorted(&s), from_events(&s));
}

#[test]
fn a_run_whose_offsets_did_not_reach_the_disk_is_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(400);
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        s.apply("ns", prepare(recs[..200].to_vec())).unwrap();
        // What a failed write could leave: the next batch's run without its offsets.
        let reads_state = state::State::default();
        let stored = |t: &str, p: i32| s.next_offset("ns", t, p);
        let reads = plan::Reads {
            namespace: "ns",
            ns: 1,
            stored_next: &stored,
            state: &reads_state,
            limits: bounds::Limits::default(),
            tracked: bounds::Tracked::default(),
            seq: 1,
            now_ms: crate::domain::timefmt::now_ms(),
            rollup: super::super::rollup::Tuning::default(),
        };
        struct NoRows;
        impl plan::Rows for NoRows {
            fn catalog_ts(&mut self, _: &[u8]) -> Result<Option<i64>, StoreError> {
                Ok(None)
            }
        }
        let p = plan::plan(&reads, prepare(recs[200..].to_vec()), &mut NoRows).unwrap();
        let runs = [pairs::RUN, super::super::rollup::RUN];
        for (k, v) in p
            .writes
            .iter()
            .filter(|(k, _)| runs.iter().any(|r| k.starts_with(r)))
        {
            s.tree().insert(k.as_slice(), v.as_slice()).unwrap();
        }
        s.tree().db().flush().unwrap();
    }
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(
        s.tree().scan_prefix(pairs::RUN).count(),
        1,
        "the fragment is gone"
    );
    // The rollups' fragment too: only the stored batch's views count.
    use super::super::rollup::{query, slot, Grain};
    let q = query::RangeQuery {
        music: false,
        from_ms: i64::MIN / 4,
        to_ms: i64::MAX / 4,
        grain: Grain::Hour,
        filter: query::Filter::default(),
        group: query::Group::Total,
    };
    let views = s.rollups(&q).unwrap().groups[0].1.get(slot::VIEWS);
    assert_eq!(views, 200);
    assert_eq!(sorted(&s), from_events(&s));
    assert_eq!(
        sorted(&s).iter().map(|r| r.2).sum::<u64>(),
        200,
        "only the stored batch counts"
    );
}

#[test]
fn a_compaction_cut_short_is_undone_at_open_and_its_runs_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(1200);
    let expected = {
        let mut s = Store::open(dir.path(), 16).unwrap();
        for chunk in recs.chunks(100) {
            s.apply("ns", prepare(chunk.to_vec())).unwrap();
        }
        let expected = sorted(&s);
        assert_eq!(expected, from_events(&s));
        // What a compaction killed half way leaves: its mark and some of its
        // chunks (tagged past every run), the runs all still there.
        let tag = s.seq;
        let layer = s.pairs.lock().active.clone();
        let mut batch = sled::Batch::default();
        batch.insert(pairs::COMPACTING, &tag.to_be_bytes());
        for user in layer.user_names().take(5) {
            let rows = layer.user(user).unwrap().collect();
            batch.insert(pairs::chunk_key(user, tag), pairs::encode_rows(false, rows));
        }
        s.tree().apply_batch(batch).unwrap();
        s.tree().db().flush().unwrap();
        expected
    };
    let mut s = Store::open(dir.path(), 16).unwrap();
    assert!(!s.tree().contains_key(pairs::COMPACTING).unwrap());
    assert_eq!(s.tree().scan_prefix(pairs::CHUNK).count(), 0);
    assert_eq!(sorted(&s), expected);
    // The next compactions write those runs once.
    small_tuning(&s);
    let more = records(1600);
    for chunk in more[1200..].chunks(100) {
        s.apply("ns", prepare(chunk.to_vec())).unwrap();
    }
    settled(&s);
    assert!(s.pair_overlay().2.compactions > 0);
    assert_eq!(sorted(&s), from_events(&s));
}
