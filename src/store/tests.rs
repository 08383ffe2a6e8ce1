use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::domain::event::{Event, MusicAction, MusicEvent, Title};
use crate::domain::record::{Outcome, Processed, SourcePos};
use crate::domain::reject::Rejection;
use crate::synth::generate::{VideoGen, World};

/// Prepares and applies `records` (what the store's actor does, without the views).
fn apply(
    s: &mut Store,
    namespace: &str,
    records: Vec<Processed>,
) -> Result<ApplyReport, StoreError> {
    s.apply(namespace, prepare::prepare(records))
        .map(|c| c.report)
}

fn rec(topic: &str, partition: i32, offset: i64, outcome: Outcome) -> Processed {
    Processed::at(SourcePos::new(topic, partition, offset), outcome)
}

fn videos(n: usize) -> Vec<crate::domain::event::VideoEvent> {
    let mut g = VideoGen::new(World::new(20, 10, 9), 9, 1_735_689_600_000, 50);
    (0..n).map(|_| g.next_event()).collect()
}

/// Records `from..to` of `evs`, at those offsets of partition 0 of topic `v`.
fn video_batch(evs: &[crate::domain::event::VideoEvent], from: usize, to: usize) -> Vec<Processed> {
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
        let r = apply(&mut s, "ns", records.clone()).unwrap();
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
        let r = apply(&mut s, "ns", records.clone()).unwrap();
        assert_eq!((r.stored, r.rejected, r.duplicates_skipped), (0, 0, 301));
    }
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.next_offset("ns", "v", 0), Some(101));
    assert_eq!(s.next_offset("other", "v", 0), None);
    assert_eq!(s.events().count(), 300);
    let mut expect: std::collections::HashMap<(String, String), (f64, u64)> = Default::default();
    for e in &evs {
        let x = expect
            .entry((e.user_id.to_string(), e.video_id.to_string()))
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
            session_id: Default::default(),
            device: Default::default(),
        })
    };
    let batch = vec![
        rec("c", 0, 0, Outcome::Valid(movie(20, "New"))),
        rec("c", 0, 1, Outcome::Valid(movie(10, "Old"))),
        rec("m", 0, 0, Outcome::Valid(play(MusicAction::Play))),
        rec("m", 0, 1, Outcome::Valid(play(MusicAction::Play))),
        rec("m", 0, 2, Outcome::Valid(play(MusicAction::Like))),
    ];
    apply(&mut s, "ns", batch).unwrap();
    apply(
        &mut s,
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
    let batch = |from: usize, to: usize| video_batch(&evs, from, to);
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
        apply(&mut s, "ns", batch(0, 300)).unwrap();
        s.checkpoint().unwrap();
        apply(&mut s, "ns", batch(300, 600)).unwrap();
        s.checkpoint().unwrap();
        apply(&mut s, "ns", batch(600, 900)).unwrap();
        // A checkpoint that never got its pointer switched (a crash mid-checkpoint).
        s.tree()
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
    assert_eq!(s.tree().scan_prefix(state::CHECKPOINT).count(), 1);
    assert_eq!(
        s.tree()
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
    let batch = |from: usize, to: usize| video_batch(&evs, from, to);
    let mut s = Store::open(dir.path(), 16).unwrap();
    apply(&mut s, "ns", batch(0, 200)).unwrap();
    let r = apply(&mut s, "ns", batch(100, 300)).unwrap();
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
        apply(&mut s, "ns", recs).unwrap();
        // What older stores also wrote: a video pair aggregate in the journal.
        let bogus = keys::join(keys::PAIR, &[b"nobody", b"nothing"]);
        let j = state::encode_entries(std::iter::once((
            &bogus[..],
            &[9.0, 9.0, 9.0, 1.0, 1.0][..],
        )));
        s.tree().insert(state::journal_key(s.seq, 0), j).unwrap();
        s.tree().flush().unwrap();
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
            .entry((e.user_id.to_string(), e.video_id.to_string()))
            .or_default() += 1;
    }
    let want: Vec<(String, String, u64)> = want.into_iter().map(|((u, v), n)| (u, v, n)).collect();
    assert_eq!(got, want);
    assert_eq!(s.counter("stored").unwrap(), 200);
}

#[test]
fn multi_part_keys_never_collide_whatever_the_ids_hold() {
    let a = keys::join(keys::MUSIC_PAIR, &[b"eve\0x", b"t"]);
    let b = keys::join(keys::MUSIC_PAIR, &[b"eve", b"x\0t"]);
    let c = keys::join(keys::MUSIC_PAIR, &[b"eve", b"\0xt"]);
    assert!(a != b && b != c && a != c);
    let long = vec![b'u'; 70_000];
    let k = keys::join(keys::MUSIC_PAIR, &[&long, b"t"]);
    let (u, t) = keys::split_pair(&k[keys::MUSIC_PAIR.len()..]).unwrap();
    assert_eq!((u.len(), t.as_str()), (70_000, "t"));
    // Journal entries keep whole keys: a 70 KB key round-trips.
    let enc = state::encode_entries([(k.as_slice(), &[1.0f64, 2.0][..])].into_iter());
    let mut got = Vec::new();
    state::decode_entries(&enc, state::Encoding::Current, |k2, v| {
        got.push((k2.to_vec(), v.to_vec()))
    })
    .unwrap();
    assert_eq!(got, vec![(k, vec![1.0, 2.0])]);
}

#[test]
fn a_store_of_the_older_layout_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        // What an older playpulse wrote: `e/` and `d/` positions without a
        // namespace, unchecked segments, u16-length journal keys with 0-joined parts.
        let db = sled::open(&path).unwrap();
        let t = db.open_tree("main").unwrap();
        let ev = Event::Video(videos(1).remove(0));
        let body = ev.encode();
        let mut seg = Vec::new();
        seg.extend_from_slice(&5i64.to_le_bytes());
        seg.extend_from_slice(&(body.len() as u32).to_le_bytes());
        seg.extend_from_slice(&body);
        let mut k = b"e/v".to_vec();
        k.push(0);
        k.extend_from_slice(&0u32.to_be_bytes());
        k.extend_from_slice(&5u64.to_be_bytes());
        t.insert(k, seg).unwrap();
        let dead = serde_json::json!({"reason": "invalid_json", "message": "x", "topic": "v",
            "partition": 0, "offset": 6, "raw": "{"});
        let mut k = b"d/v".to_vec();
        k.push(0);
        k.extend_from_slice(&0u32.to_be_bytes());
        k.extend_from_slice(&6u64.to_be_bytes());
        t.insert(k, serde_json::to_vec(&dead).unwrap()).unwrap();
        let mut journal = Vec::new();
        for (key, slots) in [
            (b"s/stored".to_vec(), vec![1.0]),
            (
                [b"m/eve".as_ref(), b"\0", b"t1"].concat(),
                vec![0.0, 0.0, 1.0, 0.0, 0.0, 9.0],
            ),
        ] {
            journal.extend_from_slice(&(key.len() as u16).to_le_bytes());
            journal.extend_from_slice(&key);
            journal.push(slots.len() as u8);
            for x in slots {
                journal.extend_from_slice(&f64::to_le_bytes(x));
            }
        }
        t.insert(state::journal_key(0, 0), journal).unwrap();
        t.insert(keys::offset_key("ns", "v", 0), &7i64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let s = Store::open(dir.path(), 16).unwrap();
    let events: Vec<_> = s.event_log().map(Result::unwrap).collect();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].namespace, events[0].pos.offset), (0, 5));
    let dead = s.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead_letter_id(&dead[0]), "0:v/0/6");
    assert_eq!(s.counter("stored").unwrap(), 1);
    let music = s.music_aggregates().unwrap();
    assert_eq!(music.len(), 1);
    assert_eq!((music[0].0.as_str(), music[0].1.as_str()), ("eve", "t1"));
    assert_eq!(s.next_offset("ns", "v", 0), Some(7));
    drop(s);
    // Opened again: the same, now in today's layout.
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.events().count(), 1);
    assert_eq!(s.music_aggregates().unwrap().len(), 1);
    assert_eq!(s.counter("stored").unwrap(), 1);
}

#[test]
fn ids_past_the_bounds_add_up_under_other_and_stay_out_of_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let mut evs = videos(10);
    for (i, e) in evs.iter_mut().enumerate() {
        e.video_id = format!("vid{}", i % 5).into();
    }
    let music: Vec<Processed> = (0..4)
        .map(|i| {
            rec(
                "m",
                0,
                i,
                Outcome::Valid(Event::Music(MusicEvent {
                    user_id: format!("u{i}").into(),
                    track_id: "t".into(),
                    event_type: MusicAction::Play,
                    event_ts_ms: 1_735_689_600_000,
                    session_id: Default::default(),
                    device: Default::default(),
                })),
            )
        })
        .collect();
    let records: Vec<Processed> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| rec("v", 0, i as i64, Outcome::Valid(Event::Video(e.clone()))))
        .chain(music)
        .collect();
    let limits = bounds::Limits {
        videos: 3,
        listening_pairs: 2,
        ..bounds::Limits::default()
    };
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        s.set_limits(limits);
        apply(&mut s, "ns", records).unwrap();
        let check = |s: &Store| {
            let q = s.qoe(QoeDim::Video).unwrap();
            let names: Vec<&str> = q.keys().map(String::as_str).collect();
            assert_eq!(names, vec!["(other)", "vid0", "vid1", "vid2"]);
            assert_eq!(q["(other)"].events, 4, "vid3 and vid4, two events each");
            assert_eq!(s.counter("folded/video_events").unwrap(), 4);
            assert_eq!(s.counter("folded/listening_events").unwrap(), 2);
            assert_eq!(
                s.status("ns").tracked,
                bounds::Tracked {
                    videos: 3,
                    listening_pairs: 2
                }
            );
            let genres = s.item_genres();
            assert!(genres.contains_key("(other)") && !genres.contains_key("vid4"));
            assert_eq!(
                crate::views::indexes::Indexes::build(s, std::time::Duration::from_secs(3600))
                    .unwrap()
                    .with_graph(|g| g.edges())
                    .unwrap(),
                2
            );
            // Every event is stored whole.
            assert_eq!(s.events().count(), 14);
        };
        check(&s);
        s.close().unwrap();
        drop(s);
        let s = Store::open(dir.path(), 16).unwrap();
        check(&s);
    }
}

#[test]
fn fragments_of_a_write_that_did_not_complete_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(11);
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        let records: Vec<Processed> = evs[..10]
            .iter()
            .enumerate()
            .map(|(i, e)| rec("v", 0, i as i64, Outcome::Valid(Event::Video(e.clone()))))
            .collect();
        apply(&mut s, "ns", records).unwrap();
        s.close().unwrap();
        // What a failed write could leave on disk: its segment and journal part
        // without the offset that would have covered them.
        let ns = *s.namespaces().keys().next().unwrap();
        let t = s.tree().clone();
        let mut w = segment::SegmentWriter::new();
        w.push(10, &Event::Video(evs[10].clone()).encode());
        t.insert(keys::position(keys::EVENT, ns, "v", 0, 10), w.finish())
            .unwrap();
        t.insert(
            keys::position(keys::DEAD, ns, "v", 0, 11),
            serde_json::to_vec(&serde_json::json!({"reason": "x", "message": "y",
                "topic": "v", "partition": 0, "offset": 11}))
            .unwrap(),
        )
        .unwrap();
        let journal = state::encode_entries(
            [
                (keys::join(keys::COUNTER, &[b"stored"]), vec![1.0]),
                (keys::offset_key("ns", "v", 0), vec![11.0]),
            ]
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice())),
        );
        t.insert(state::journal_key(999, 0), journal).unwrap();
        t.flush().unwrap();
    }
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.events().count(), 10);
    assert!(s.dead_letters().unwrap().is_empty());
    assert_eq!(s.counter("stored").unwrap(), 10);
    assert_eq!(s.next_offset("ns", "v", 0), Some(10));
    assert_eq!(s.tree().scan_prefix(state::JOURNAL).count(), 0);
}

#[test]
fn retention_deletes_the_oldest_segments_and_keeps_pairs_aggregates_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(400);
    let batch = |from: usize, to: usize| -> Vec<Processed> {
        (from..to)
            .map(|i| {
                let e = Event::Video(evs[i].clone());
                rec("v", (i % 2) as i32, (i / 2) as i64, Outcome::Valid(e))
            })
            .collect()
    };
    let mut s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(
        s.retain(i64::MAX).unwrap(),
        0,
        "retention off: nothing goes"
    );
    for b in 0..4 {
        apply(&mut s, "ns", batch(b * 100, (b + 1) * 100)).unwrap();
    }
    let all = s.retained();
    assert_eq!(all.segments, 8, "one segment per partition per batch");
    let seg_bytes = segment_bytes(&s);
    assert_eq!(all.bytes, seg_bytes);
    let pairs_before: Vec<_> = s.pair_aggregates().collect::<Result<_, _>>().unwrap();
    let qoe_before = s.qoe(QoeDim::Region).unwrap();

    // At most half the bytes: the oldest batches' segments go (once their
    // events are in the rollups' chunks).
    rollups_settled(&s);
    s.set_retention(retention::Retention {
        max_age_ms: 0,
        max_bytes: seg_bytes / 2,
    });
    let n = s.retain(crate::domain::timefmt::now_ms()).unwrap();
    assert!((4..8).contains(&n), "{n} segments deleted");
    let kept = s.retained();
    assert!(kept.bytes <= seg_bytes / 2 && kept.bytes > 0, "{kept:?}");
    assert_eq!(kept.segments, 8 - n as u64);
    assert_eq!(
        (kept.deleted_segments, kept.deleted_bytes),
        (n as u64, seg_bytes - kept.bytes)
    );
    let stored: Vec<i64> = s.events().map(|e| e.unwrap().0.offset).collect();
    assert!(!stored.contains(&0), "the oldest events are gone");
    assert!(stored.contains(&199), "the newest are kept");
    assert_eq!(s.retain(crate::domain::timefmt::now_ms()).unwrap(), 0);

    // Pairs, aggregates and offsets are untouched; a redelivery is still skipped.
    let pairs_after: Vec<_> = s.pair_aggregates().collect::<Result<_, _>>().unwrap();
    assert_eq!(pairs_after, pairs_before);
    assert_eq!(s.qoe(QoeDim::Region).unwrap(), qoe_before);
    let r = apply(&mut s, "ns", batch(0, 100)).unwrap();
    assert_eq!((r.stored, r.duplicates_skipped), (0, 100));
    drop(s);

    // Reopened: the index counts what is left; by age, everything written
    // before the cutoff goes.
    let mut s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.retained().segments, kept.segments);
    assert_eq!(s.retained().bytes, kept.bytes);
    s.set_retention(retention::Retention {
        max_age_ms: 1,
        max_bytes: 0,
    });
    let later = crate::domain::timefmt::now_ms() + 10_000;
    assert_eq!(s.retain(later).unwrap() as u64, kept.segments);
    assert_eq!(s.events().count(), 0);
    assert_eq!(s.retained().bytes, 0);
    assert_eq!(s.next_offset("ns", "v", 0), Some(200));
}

#[test]
fn a_store_without_the_segment_index_builds_it_when_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        let recs = videos(50)
            .into_iter()
            .enumerate()
            .map(|(i, e)| rec("v", 0, i as i64, Outcome::Valid(Event::Video(e))))
            .collect();
        apply(&mut s, "ns", recs).unwrap();
        // As a store written before the index: no entries, no mark.
        let mut b = sled::Batch::default();
        for k in s.tree().scan_prefix(keys::SEGMENT_INDEX).keys() {
            b.remove(k.unwrap());
        }
        b.remove(keys::SEGMENT_INDEX_MARK);
        s.tree().apply_batch(b).unwrap();
    }
    let s = Store::open(dir.path(), 16).unwrap();
    let r = s.retained();
    assert_eq!(r.segments, 1);
    assert_eq!(r.bytes, segment_bytes(&s));
    assert!(s.tree().contains_key(keys::SEGMENT_INDEX_MARK).unwrap());
}

/// The bytes of every stored segment (read from the event log's files).
fn segment_bytes(s: &Store) -> u64 {
    s.tree()
        .scan_prefix(keys::EVENT)
        .map(|kv| {
            let (k, v) = kv.unwrap();
            s.segment_bytes(&k, &v).unwrap().unwrap().len() as u64
        })
        .sum()
}

/// The ids of the event log's files.
fn log_files(s: &Store) -> Vec<u64> {
    s.view
        .log
        .list()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

#[test]
fn segments_live_in_the_event_files_and_a_file_goes_with_its_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(600);
    let batch = |from: usize, to: usize| video_batch(&evs, from, to);
    let mut s = Store::open(dir.path(), 16).unwrap();
    // A file per batch.
    s.log_roll = eventlog::Roll {
        bytes: 1,
        age_ms: 0,
    };
    for b in 0..6 {
        apply(&mut s, "ns", batch(b * 100, (b + 1) * 100)).unwrap();
    }
    let files = log_files(&s);
    assert_eq!(files.len(), 6, "{files:?}");
    for item in s.tree().scan_prefix(keys::EVENT) {
        let (_, v) = item.unwrap();
        assert!(
            eventlog::is_pointer(&v),
            "sled holds where the segment is, not it"
        );
    }
    let head = eventlog::Head::decode(&s.tree().get(keys::EVENT_LOG_HEAD).unwrap().unwrap());
    assert_eq!(head.map(|h| h.file), files.last().copied());

    // Retention down to about half: the files of the deleted segments go.
    rollups_settled(&s);
    let total = segment_bytes(&s);
    s.retention = retention::Retention {
        max_age_ms: 0,
        max_bytes: total / 2,
    };
    let n = s.retain(crate::domain::timefmt::now_ms()).unwrap();
    assert!((3..6).contains(&n), "{n}");
    assert_eq!(log_files(&s), files[n..].to_vec());
    let offsets: Vec<i64> = s.events().map(|e| e.unwrap().0.offset).collect();
    assert_eq!(offsets, (n as i64 * 100..600).collect::<Vec<i64>>());
    let kept = offsets.len();

    // A snapshot copies the files it points into; it opens with every event.
    let snap = tempfile::tempdir().unwrap();
    s.backup(snap.path()).unwrap();
    drop(s);
    let copy = Store::open(snap.path(), 16).unwrap();
    assert_eq!(copy.events().count(), kept);
    drop(copy);

    // What a batch that never committed leaves (the process died between
    // the append and sled's write): bytes past the head, a file past it. Both
    // are cut off when the store opens.
    let log_dir = dir.path().join(eventlog::DIR);
    let last = *files.last().unwrap();
    let size = |id: u64| {
        std::fs::metadata(log_dir.join(eventlog::file_name(id, eventlog::EXT))).map(|m| m.len())
    };
    let committed = size(last).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(log_dir.join(eventlog::file_name(last, eventlog::EXT)))
        .unwrap();
    std::io::Write::write_all(&mut f, b"a segment of a batch never committed").unwrap();
    std::fs::write(
        log_dir.join(eventlog::file_name(last + 1, eventlog::EXT)),
        b"another",
    )
    .unwrap();
    let mut s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(size(last).unwrap(), committed);
    assert!(size(last + 1).is_err());
    assert_eq!(s.events().count(), kept);
    apply(&mut s, "ns", batch(500, 600)).unwrap();
    assert_eq!(s.events().count(), kept, "a redelivery is still skipped");
}

/// Waits (bounded) until the rollups hold no batch outside their chunks.
fn rollups_settled(s: &Store) {
    let t = std::time::Instant::now();
    while s.rollup_status().held_runs > 0 {
        assert!(t.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn video_records(from: usize, evs: &[crate::domain::event::VideoEvent]) -> Vec<Processed> {
    evs.iter()
        .enumerate()
        .map(|(i, e)| {
            let i = from + i;
            rec(
                "v",
                (i % 3) as i32,
                (i / 3) as i64,
                Outcome::Valid(Event::Video(e.clone())),
            )
        })
        .collect()
}

#[test]
fn a_rewrite_keeps_every_entry_and_the_next_open_serves_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(900);
    let entries_before;
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        apply(&mut s, "ns", video_records(0, &evs[..600])).unwrap();
        entries_before = s.tree().iter().count();
        // A reader in the middle of a scan keeps the generation it reads.
        let mut reading = s.tree().scan_prefix(keys::EVENT);
        let first = reading.next().unwrap().unwrap();
        let done = s.rewrite().unwrap();
        assert_eq!(done.generation, 1);
        assert_eq!(done.entries as usize, entries_before);
        assert_eq!(s.rewrite_status().generation, 1);
        assert!(dir.path().join("store").is_dir(), "removed under a reader");
        let rest = reading.count();
        assert!(rest > 0 && !first.0.is_empty());
        assert!(
            !dir.path().join("store").exists(),
            "kept after its last reader"
        );
        // Every entry, and the size the rewrite left (see `rewrite::BASE`).
        assert_eq!(s.tree().iter().count(), entries_before + 1);
        // Writes go on into the new generation.
        let r = apply(&mut s, "ns", video_records(600, &evs[600..])).unwrap();
        assert_eq!(r.stored, 300);
        s.close().unwrap();
    }
    let mut s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(generation::current(dir.path()).unwrap().0, 1);
    // Growth is measured from what the rewrite left, across the restart.
    let left = s.tree().get(rewrite::BASE).unwrap().unwrap();
    let left = u64::from_be_bytes(left.as_ref().try_into().unwrap());
    assert!(left > 0);
    s.set_rewrite_tuning(rewrite::Tuning {
        ratio: 3.0,
        min_bytes: 1,
    });
    assert_eq!(s.rewrite_status().next_at_bytes, left * 3);
    assert_eq!(s.events().count(), 900);
    assert_eq!(s.next_offset("ns", "v", 0), Some(300));
}

#[test]
fn a_rewrite_that_cannot_write_leaves_the_store_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(300);
    let mut s = Store::open(dir.path(), 16).unwrap();
    apply(&mut s, "ns", video_records(0, &evs[..150])).unwrap();
    // The next generation's directory cannot be made.
    std::fs::write(dir.path().join("store.g1"), b"in the way").unwrap();
    let e = s.rewrite().unwrap_err();
    assert!(e.to_string().contains("store.g1"), "{e}");
    assert_eq!(s.rewrite_status().generation, 0);
    assert!(!dir.path().join(generation::POINTER).exists());
    // The store is writable and whole.
    apply(&mut s, "ns", video_records(150, &evs[150..])).unwrap();
    s.close().unwrap();
    drop(s);
    std::fs::remove_file(dir.path().join("store.g1")).unwrap();
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.events().count(), 300);
}

#[test]
fn a_rewrite_stops_before_it_would_fill_the_disk_and_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(300);
    let mut s = Store::open(dir.path(), 16).unwrap();
    apply(&mut s, "ns", video_records(0, &evs[..150])).unwrap();
    // A free-space floor no disk has: the copy's first batch is refused.
    let floor = |min_free_bytes| bounds::Limits {
        min_free_bytes,
        ..bounds::Limits::default()
    };
    s.set_limits(floor(u64::MAX / 4));
    let e = s.rewrite().unwrap_err().to_string();
    assert!(e.contains("the rewrite stopped before filling it"), "{e}");
    let status = s.rewrite_status();
    assert_eq!((status.generation, status.failed), (0, 1));
    assert!(status.last_failure.unwrap().contains("store.min_free_mb"));
    assert!(!dir.path().join("store.g1").exists());
    assert!(s.write_failure().is_none(), "the store itself stopped");
    s.set_limits(floor(0));
    apply(&mut s, "ns", video_records(150, &evs[150..])).unwrap();
    s.close().unwrap();
    drop(s);
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.events().count(), 300);
}

#[test]
fn an_unfinished_rewrite_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(200);
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        apply(&mut s, "ns", video_records(0, &evs)).unwrap();
        s.close().unwrap();
    }
    // What a crash during a copy leaves: the next generation, half written,
    // and no pointer to it.
    let half = dir.path().join("store.g1");
    std::fs::create_dir(&half).unwrap();
    std::fs::write(half.join("db"), vec![7u8; 4096]).unwrap();
    let s = Store::open(dir.path(), 16).unwrap();
    assert!(!half.exists());
    assert_eq!(s.events().count(), 200);
}

#[test]
fn batches_written_while_a_rewrite_copies_are_in_the_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(60_000);
    let mut s = Store::open(dir.path(), 16).unwrap();
    let first = 30_000;
    for at in (0..first).step_by(1_000) {
        let mut records = video_records(at, &evs[at..at + 1_000]);
        // A dead letter a batch, on a partition of its own.
        records.push(rec(
            "bad",
            0,
            (at / 1_000) as i64,
            Outcome::Rejected {
                rejection: Rejection::new("invalid_json", "x"),
                raw: b"{oops".to_vec(),
            },
        ));
        apply(&mut s, "ns", records).unwrap();
    }
    let dead: Vec<String> = s
        .dead_letters()
        .unwrap()
        .iter()
        .map(dead_letter_id)
        .collect();
    assert_eq!(dead.len(), 30);
    // The copy stops once it has read every entry, until the writes below
    // are made: they reach the new generation through sled's change feed.
    let pause = Arc::new(std::sync::Barrier::new(2));
    s.rewrites.pause = Some(pause.clone());
    s.start_rewrite().unwrap();
    pause.wait();
    let (mut at, mut removed) = (first, Vec::new());
    while at < evs.len() {
        apply(&mut s, "ns", video_records(at, &evs[at..at + 500])).unwrap();
        // As other threads write meanwhile: a write that changes nothing
        // (sled's feed reserves a slot for it and fills none), and removals.
        let mut same = sled::Batch::default();
        same.insert(keys::LAYOUT_KEY, &keys::LAYOUT.to_be_bytes());
        s.view().commit(same).unwrap();
        if let Some(id) = dead.get(removed.len()).filter(|_| removed.len() < 20) {
            assert_eq!(
                s.view()
                    .remove_dead_letters(std::slice::from_ref(id))
                    .unwrap(),
                1
            );
            removed.push(id.clone());
        }
        at += 500;
    }
    pause.wait();
    let done = s.rewrite().unwrap();
    assert!(done.changes_applied > 0, "{done:?}");
    assert_eq!(s.rewrite_status().generation, 1);
    s.close().unwrap();
    drop(s);
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.events().count(), at);
    assert_eq!(s.next_offset("ns", "v", 0), Some(at.div_ceil(3) as i64));
    let left: Vec<String> = s
        .dead_letters()
        .unwrap()
        .iter()
        .map(dead_letter_id)
        .collect();
    assert_eq!(left.len(), dead.len() - removed.len());
    assert!(left.iter().all(|id| !removed.contains(id)));
    assert!(s.tree().get(b"i/rewrite-mark").unwrap().is_none());
}

/// The ids of the runs log's files.
fn runs_files(s: &Store) -> Vec<u64> {
    s.view
        .runs
        .list()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// Events summed over every (user, video) pair.
fn pair_events(s: &Store) -> u64 {
    s.pair_aggregates().map(|p| p.unwrap().2.events).sum()
}

/// Waits (bounded) until the pair overlay holds nothing frozen.
fn pairs_settled(s: &Store) {
    let t = std::time::Instant::now();
    while s.view.pairs.held().1 > 0 {
        assert!(t.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn journal_parts_and_pair_runs_live_in_the_runs_log_and_a_file_goes_once_nothing_points_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(300);
    let mut s = Store::open(dir.path(), 16).unwrap();
    // A file per batch; no pair compaction yet.
    s.runs_roll = eventlog::Roll {
        bytes: 1,
        age_ms: 0,
    };
    s.set_pair_tuning(pairs::Tuning {
        freeze_at: 1 << 30,
        merge_at: 3,
    });
    for b in 0..3 {
        apply(&mut s, "ns", video_batch(&evs, b * 100, (b + 1) * 100)).unwrap();
    }
    let files = runs_files(&s);
    assert_eq!(files.len(), 3, "{files:?}");
    for prefix in [state::JOURNAL, pairs::RUN] {
        let values: Vec<sled::IVec> = s
            .tree()
            .scan_prefix(prefix)
            .map(|kv| kv.unwrap().1)
            .collect();
        assert!(values.len() >= 3);
        assert!(
            values
                .iter()
                .all(|v| eventlog::Pointer::decode(v).is_some()),
            "sled holds where the part is, not it"
        );
    }
    let head = eventlog::Head::decode(&s.tree().get(keys::RUNS_LOG_HEAD).unwrap().unwrap());
    assert_eq!(head.map(|h| h.file), files.last().copied());
    assert_eq!(pair_events(&s), 300);

    // Reopened (no checkpoint: the process died), the journal and the runs
    // are read back from the files.
    drop(s);
    let mut s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.counter("stored").unwrap(), 300);
    assert_eq!(pair_events(&s), 300);
    assert_eq!(runs_files(&s), files, "every file is still pointed into");

    // A checkpoint deletes the journal parts, but the runs still point into
    // each file; once a pair compaction holds the runs, the next sweep
    // removes the files.
    s.checkpoint().unwrap();
    assert_eq!(runs_files(&s), files);
    s.set_pair_tuning(pairs::Tuning {
        freeze_at: 40,
        merge_at: 3,
    });
    apply(&mut s, "ns", video_batch(&evs, 300, 300)).unwrap();
    let more = videos(400);
    apply(&mut s, "ns", video_batch(&more, 300, 400)).unwrap();
    pairs_settled(&s);
    s.checkpoint().unwrap();
    let left = runs_files(&s);
    assert!(
        left.iter().all(|id| !files.contains(id)),
        "the files of the compacted runs and deleted parts went: {left:?}"
    );
    assert_eq!(s.counter("stored").unwrap(), 400);
    assert_eq!(pair_events(&s), 400);

    // A snapshot copies the runs log; the copy reads the same.
    let snap = tempfile::tempdir().unwrap();
    s.backup(snap.path()).unwrap();
    drop(s);
    let copy = Store::open(snap.path(), 16).unwrap();
    assert_eq!(copy.counter("stored").unwrap(), 400);
    assert_eq!(pair_events(&copy), 400);
}

#[test]
fn a_torn_runs_append_is_cut_off_and_a_damaged_or_missing_runs_file_is_named_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let evs = videos(200);
    let mut s = Store::open(dir.path(), 16).unwrap();
    s.set_pair_tuning(pairs::Tuning {
        freeze_at: 1 << 30,
        merge_at: 3,
    });
    apply(&mut s, "ns", video_batch(&evs, 0, 100)).unwrap();
    let files = runs_files(&s);
    assert_eq!(files.len(), 1);
    drop(s);

    // What a batch that never committed leaves: bytes past the head, a file
    // past it. Both are cut off when the store opens.
    let runs_dir = dir.path().join(eventlog::RUNS_DIR);
    let path = |id: u64| runs_dir.join(eventlog::file_name(id, eventlog::RUNS_EXT));
    let committed = std::fs::metadata(path(files[0])).unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path(files[0]))
        .unwrap();
    std::io::Write::write_all(&mut f, b"a journal part of a batch never committed").unwrap();
    std::fs::write(path(files[0] + 1), b"a pair run never committed").unwrap();
    let mut s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(std::fs::metadata(path(files[0])).unwrap().len(), committed);
    assert!(!path(files[0] + 1).exists());
    assert_eq!(pair_events(&s), 100);
    apply(&mut s, "ns", video_batch(&evs, 100, 200)).unwrap();
    assert_eq!(pair_events(&s), 200);
    drop(s);

    // A byte changed on the disk: its checksum catches it at open.
    let ids = runs_files(&Store::open(dir.path(), 16).unwrap());
    let first = path(ids[0]);
    let good = std::fs::read(&first).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 1;
    std::fs::write(&first, &bad).unwrap();
    let err = Store::open(dir.path(), 16)
        .err()
        .expect("open refuses")
        .to_string();
    assert!(err.contains("fail their checksum"), "{err}");
    std::fs::write(&first, &good).unwrap();
    assert_eq!(pair_events(&Store::open(dir.path(), 16).unwrap()), 200);

    // The files lost (a disk fault): opening says which entry cannot be
    // read and how to go on; `check` names it; `check --repair` rebuilds
    // the store, which then opens with every event.
    for id in ids {
        std::fs::remove_file(path(id)).unwrap();
    }
    let err = Store::open(dir.path(), 16)
        .err()
        .expect("open refuses")
        .to_string();
    assert!(err.contains("cannot be read"), "{err}");
    assert!(err.contains("check --repair"), "{err}");
    let report = check::check(dir.path(), false).unwrap();
    assert!(
        report
            .damaged
            .iter()
            .any(|d| d.what.starts_with("journal part") && d.why.contains("is missing")),
        "{:?}",
        report.damaged
    );
    assert!(report
        .damaged
        .iter()
        .any(|d| d.what.starts_with("pair run")));
    let repaired = check::check(dir.path(), true).unwrap();
    assert!(repaired.repaired.is_some());
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.events().count(), 200);
    assert_eq!(s.counter("stored").unwrap(), 200);
}
