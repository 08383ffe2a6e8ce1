use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::event::{Event, MusicAction, MusicEvent, Title};
use crate::generate::{VideoGen, World};
use crate::record::{Outcome, Processed, SourcePos};
use crate::reject::Rejection;

fn rec(topic: &str, partition: i32, offset: i64, outcome: Outcome) -> Processed {
    Processed {
        pos: SourcePos {
            topic: Arc::from(topic),
            partition,
            offset,
        },
        origin: None,
        headers: Default::default(),
        outcome,
    }
}

fn videos(n: usize) -> Vec<crate::event::VideoEvent> {
    let mut g = VideoGen::new(World::new(20, 10, 9), 9, 1_735_689_600_000, 50);
    (0..n).map(|_| g.next_event()).collect()
}

#[test]
fn batch_writes_events_aggregates_dead_letters_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(300);
    let mut records: Vec<Processed> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            rec(
                "v",
                (i % 3) as i32,
                (i / 3) as i64,
                Outcome::Valid(Event::Video(e.clone())),
            )
        })
        .collect();
    records.push(rec(
        "v",
        0,
        100,
        Outcome::Rejected {
            rejection: Rejection::new("invalid_json", "x"),
            raw: b"{oops".to_vec(),
        },
    ));
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        let r = s.apply_records("ns", records.clone()).unwrap();
        assert_eq!((r.stored, r.rejected, r.duplicates_skipped), (300, 1, 0));
        assert_eq!(
            r.offsets,
            vec![
                ("v".into(), 0, 101),
                ("v".into(), 1, 100),
                ("v".into(), 2, 100)
            ]
        );
        // The same batch again (a redelivery) changes nothing.
        let r = s.apply_records("ns", records.clone()).unwrap();
        assert_eq!((r.stored, r.rejected, r.duplicates_skipped), (0, 0, 301));
    }
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.next_offset("ns", "v", 0), Some(101));
    assert_eq!(s.next_offset("other", "v", 0), None);
    assert_eq!(s.events().count(), 300);
    let mut expect: std::collections::HashMap<(String, String), (f64, u64)> = Default::default();
    for e in &evs {
        let x = expect
            .entry((e.user_id.clone(), e.video_id.clone()))
            .or_default();
        x.0 += e.implicit_feedback();
        x.1 += 1;
    }
    let got: Vec<_> = s.pair_aggregates().map(Result::unwrap).collect();
    assert_eq!(got.len(), expect.len());
    for (u, i, a) in got {
        let (w, n) = expect[&(u, i)];
        assert!((a.weight - w).abs() < 1e-9);
        assert_eq!(a.events, n);
    }
    let dead = s.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].topic.as_str(), dead[0].partition, dead[0].offset),
        ("v", 0, 100)
    );
    assert_eq!(dead[0].raw.as_deref(), Some("{oops"));
    let c = s.counters().unwrap();
    assert_eq!(
        (
            c["stored"],
            c["rejected"],
            c["rejected/invalid_json"],
            c["duplicates_skipped"]
        ),
        (300, 1, 1, 301)
    );
    let regions = s.qoe(QoeDim::Region).unwrap();
    assert_eq!(regions.values().map(|q| q.events).sum::<u64>(), 300);
    let watch: f64 = evs.iter().map(|e| e.watch_time_seconds).sum();
    assert!((regions.values().map(|q| q.watch_seconds).sum::<f64>() - watch).abs() < 1e-6);
}

#[test]
fn catalog_upserts_keep_the_latest_and_music_counts_actions() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), 16).unwrap();
    let movie = |ts: i64, title: &str| {
        Event::Movie(Title {
            id: "vid_0001".into(),
            timestamp_ms: ts,
            title: title.into(),
            genres: vec!["Drama".into()],
            directors: vec![],
            actors: vec![],
            classification: String::new(),
            release_decade: String::new(),
            seasons: None,
            episodes: None,
        })
    };
    let play = |action| {
        Event::Music(MusicEvent {
            user_id: "u1".into(),
            track_id: "t1".into(),
            event_type: action,
            event_ts_ms: 5,
            session_id: String::new(),
            device: String::new(),
        })
    };
    let batch = vec![
        rec("c", 0, 0, Outcome::Valid(movie(20, "New"))),
        rec("c", 0, 1, Outcome::Valid(movie(10, "Old"))),
        rec("m", 0, 0, Outcome::Valid(play(MusicAction::Play))),
        rec("m", 0, 1, Outcome::Valid(play(MusicAction::Play))),
        rec("m", 0, 2, Outcome::Valid(play(MusicAction::Like))),
    ];
    s.apply_records("ns", batch).unwrap();
    s.apply_records(
        "ns",
        vec![rec("c", 0, 2, Outcome::Valid(movie(15, "Older")))],
    )
    .unwrap();
    match s.catalog("movie", "vid_0001").unwrap() {
        Some(Event::Movie(t)) => assert_eq!(t.title, "New"),
        other => panic!("{other:?}"),
    }
    let m = s.music_aggregates().unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].2.counts, [2, 0, 1, 0, 0]);
}

#[test]
fn aggregates_survive_checkpoints_journal_replay_and_unfinished_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(900);
    let batch = |from: usize, to: usize| -> Vec<Processed> {
        (from..to)
            .map(|i| {
                rec(
                    "v",
                    0,
                    i as i64,
                    Outcome::Valid(Event::Video(evs[i].clone())),
                )
            })
            .collect()
    };
    let snapshot = |s: &Store| {
        let mut pairs: Vec<(String, String, u64, u64)> = s
            .pair_aggregates()
            .map(Result::unwrap)
            .map(|(u, i, a)| (u, i, a.events, a.weight.to_bits()))
            .collect();
        pairs.sort();
        (pairs, s.counters().unwrap(), s.qoe(QoeDim::Genre).unwrap())
    };
    let expected = {
        let mut s = Store::open(dir.path(), 16).unwrap();
        s.apply_records("ns", batch(0, 300)).unwrap();
        s.checkpoint().unwrap();
        s.apply_records("ns", batch(300, 600)).unwrap();
        s.checkpoint().unwrap();
        s.apply_records("ns", batch(600, 900)).unwrap();
        // A checkpoint that never got its pointer switched (a crash mid-checkpoint).
        s.tree
            .insert(
                state::checkpoint_chunk_key(s.gen + 1, 0),
                state::encode_entries(std::iter::once((&b"s/stored"[..], &[1e9][..]))),
            )
            .unwrap();
        snapshot(&s)
        // Dropped without close(): the last batch lives only in the journal.
    };
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(snapshot(&s), expected);
    assert_eq!(s.counter("stored").unwrap(), 900);
    assert_eq!(s.events().count(), 900);
    // Only one checkpoint generation and the journal after it remain.
    assert_eq!(s.tree.scan_prefix(state::CHECKPOINT).count(), 1);
    assert_eq!(
        s.tree
            .scan_prefix(state::JOURNAL)
            .map(|k| state::journal_seq(&k.unwrap().0))
            .collect::<HashSet<_>>()
            .len(),
        1
    );
}

#[test]
fn a_batch_overlapping_stored_offsets_counts_only_its_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(300);
    let batch = |from: usize, to: usize| -> Vec<Processed> {
        (from..to)
            .map(|i| {
                rec(
                    "v",
                    0,
                    i as i64,
                    Outcome::Valid(Event::Video(evs[i].clone())),
                )
            })
            .collect()
    };
    let mut s = Store::open(dir.path(), 16).unwrap();
    s.apply_records("ns", batch(0, 200)).unwrap();
    let r = s.apply_records("ns", batch(100, 300)).unwrap();
    assert_eq!((r.stored, r.duplicates_skipped), (100, 100));
    assert_eq!(s.counter("stored").unwrap(), 300);
    assert_eq!(s.events().count(), 300);
    let events: u64 = s.pair_aggregates().map(|p| p.unwrap().2.events).sum();
    assert_eq!(events, 300);
    let regions = s.qoe(QoeDim::Region).unwrap();
    assert_eq!(regions.values().map(|q| q.events).sum::<u64>(), 300);
}

#[test]
fn video_pair_aggregates_of_an_older_checkpoint_are_dropped_and_derived_from_events() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(200);
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        let recs: Vec<Processed> = (0..200)
            .map(|i| {
                rec(
                    "v",
                    0,
                    i,
                    Outcome::Valid(Event::Video(evs[i as usize].clone())),
                )
            })
            .collect();
        s.apply_records("ns", recs).unwrap();
        // What older stores also wrote: a video pair aggregate in the journal.
        let bogus = keys::join(keys::PAIR, &[b"nobody", b"nothing"]);
        let j = state::encode_entries(std::iter::once((
            &bogus[..],
            &[9.0, 9.0, 9.0, 1.0, 1.0][..],
        )));
        s.tree.insert(state::journal_key(s.seq, 0), j).unwrap();
        s.tree.flush().unwrap();
    }
    let s = Store::open(dir.path(), 16).unwrap();
    assert!(s.state.big.is_empty(), "no pair aggregate is held");
    let mut got: Vec<(String, String, u64)> = s
        .pair_aggregates()
        .map(Result::unwrap)
        .map(|(u, v, a)| (u, v, a.events))
        .collect();
    got.sort();
    let mut want: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for e in &evs {
        *want
            .entry((e.user_id.clone(), e.video_id.clone()))
            .or_default() += 1;
    }
    let want: Vec<(String, String, u64)> = want.into_iter().map(|((u, v), n)| (u, v, n)).collect();
    assert_eq!(got, want);
    assert_eq!(s.counter("stored").unwrap(), 200);
}
