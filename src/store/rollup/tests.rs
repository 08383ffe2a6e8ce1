use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::query::{Field, Filter, Group, RangeQuery};
use super::*;
use crate::domain::event::VideoEvent;
use crate::domain::record::{Outcome, Processed, SourcePos};
use crate::store::{prepare, Store};
use crate::synth::generate::{VideoGen, World};

const BASE: i64 = 1_735_689_600_000;

fn tuning() -> Tuning {
    Tuning {
        compact_bytes: 1,
        ..Tuning::default()
    }
}

/// `n` views dated in [BASE + from_min, BASE + to_min) minutes.
fn views(n: usize, seed: u64, from_min: i64, to_min: i64) -> Vec<VideoEvent> {
    let mut g = VideoGen::new(World::new(50, 40, seed), seed, BASE, 50);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut v = g.next_event();
            v.timestamp_ms = BASE + rng.gen_range(from_min * MINUTE_MS..to_min * MINUTE_MS);
            v
        })
        .collect()
}

fn apply(s: &mut Store, first_offset: i64, evs: &[VideoEvent]) {
    apply_with(s, first_offset, evs, &Tuning::default());
}

/// `evs` as records of topic "v", partition 0, from `first_offset` on.
fn records(first_offset: i64, evs: &[VideoEvent]) -> Vec<Processed> {
    evs.iter()
        .enumerate()
        .map(|(i, v)| {
            Processed::at(
                SourcePos::new("v", 0, first_offset + i as i64),
                Outcome::Valid(Event::Video(v.clone())),
            )
        })
        .collect()
}

/// [`apply`] with the rollups summed under `t` (as the daemon's prepare does).
fn apply_with(s: &mut Store, first_offset: i64, evs: &[VideoEvent], t: &Tuning) {
    s.apply("ns", prepare::prepare_with(records(first_offset, evs), t))
        .unwrap();
}

/// Waits (bounded) until the compactor holds no run.
fn settle(s: &Store) {
    let t = Instant::now();
    while s.rollup_status().held_runs > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the rollup compactor did not catch up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn end_ms(v: &VideoEvent, t: &Tuning) -> i64 {
    let play = (v.watch_time_seconds * 1000.0).round() as i64;
    let startup = if v.error.is_some() && play == 0 {
        0
    } else {
        v.startup_time_ms
            .filter(|_| play > 0)
            .map_or(0, |s| s.round() as i64)
    };
    let lasted = (startup + play + v.rebuffer_ms.unwrap_or(0.0).round() as i64).min(t.max_view_ms);
    v.timestamp_ms + lasted
}

fn matches(v: &VideoEvent, f: &Filter) -> bool {
    f.genre.as_ref().is_none_or(|g| *g == v.genre)
        && f.region.as_ref().is_none_or(|g| *g == v.region)
        && f.resolution.as_ref().is_none_or(|g| *g == v.resolution)
        && f.title.as_ref().is_none_or(|g| *g == v.video_id)
}

/// What a query must answer, from the events themselves: per group key
/// (views, play ms), or per bucket (views, in progress).
fn expected(evs: &[VideoEvent], q: &RangeQuery, t: &Tuning) -> Vec<(String, u64, u64)> {
    let g = q.grain;
    let from = g.bucket(q.from_ms);
    let to = g.bucket(q.to_ms - 1) + g.ms();
    let hits: Vec<&VideoEvent> = evs.iter().filter(|v| matches(v, &q.filter)).collect();
    match q.group {
        Group::Series => {
            let mut out = Vec::new();
            let mut b = from;
            while b < to {
                let started = hits
                    .iter()
                    .filter(|v| g.bucket(v.timestamp_ms) == b)
                    .count() as u64;
                // Titles are kept without their ends: no views in progress.
                let running = if q.filter.title.is_some() {
                    0
                } else {
                    hits.iter()
                        .filter(|v| {
                            g.bucket(v.timestamp_ms) <= b
                                && g.bucket(Grain::Minute.bucket(end_ms(v, t))) >= b
                        })
                        .count() as u64
                };
                out.push((b.to_string(), started, running));
                b += g.ms();
            }
            out
        }
        Group::Total | Group::By(_) => {
            let mut m: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
            for v in hits
                .iter()
                .filter(|v| (from..to).contains(&g.bucket(v.timestamp_ms)))
            {
                let key = match q.group {
                    Group::By(Field::Region) => v.region.to_string(),
                    Group::By(Field::Title) => v.video_id.to_string(),
                    Group::By(Field::Genre) => v.genre.to_string(),
                    Group::By(Field::Resolution) => v.resolution.to_string(),
                    _ => "all".into(),
                };
                let e = m.entry(key).or_default();
                e.0 += 1;
                e.1 += (v.watch_time_seconds * 1000.0).round() as u64;
            }
            m.into_iter().map(|(k, (a, b))| (k, a, b)).collect()
        }
    }
}

fn answered(s: &Store, q: &RangeQuery) -> Vec<(String, u64, u64)> {
    let r = s.rollups(q).unwrap();
    match q.group {
        Group::Series => r
            .points
            .iter()
            .map(|p| {
                (
                    p.bucket.to_string(),
                    p.sums.get(slot::VIEWS),
                    p.in_progress.unwrap_or(0),
                )
            })
            .collect(),
        _ => {
            let mut v: Vec<(String, u64, u64)> = r
                .groups
                .iter()
                .map(|(k, s)| (k.clone(), s.get(slot::VIEWS), s.get(slot::PLAY_MS)))
                .collect();
            v.sort();
            v
        }
    }
}

/// Every question of [`queries`] answered as the events' own sums say
/// (`when` names the moment in the failure).
fn check_answers(s: &Store, evs: &[VideoEvent], t: &Tuning, when: &str) {
    for q in queries(evs) {
        assert_eq!(answered(s, &q), expected(evs, &q, t), "{when}: {q:?}");
    }
}

fn queries(evs: &[VideoEvent]) -> Vec<RangeQuery> {
    let q = |grain, from_min: i64, to_min: i64, filter: Filter, group| RangeQuery {
        music: false,
        from_ms: BASE + from_min * MINUTE_MS,
        to_ms: BASE + to_min * MINUTE_MS,
        grain,
        filter,
        group,
    };
    let v = &evs[0];
    vec![
        q(
            Grain::Minute,
            60,
            240,
            Filter {
                genre: Some(v.genre.to_string()),
                ..Filter::default()
            },
            Group::By(Field::Region),
        ),
        q(
            Grain::Hour,
            0,
            360,
            Filter {
                region: Some(v.region.to_string()),
                ..Filter::default()
            },
            Group::By(Field::Title),
        ),
        q(Grain::Hour, 0, 420, Filter::default(), Group::Total),
        q(
            Grain::Minute,
            30,
            150,
            Filter {
                resolution: Some(v.resolution.to_string()),
                ..Filter::default()
            },
            Group::Series,
        ),
        q(
            Grain::Hour,
            0,
            480,
            Filter {
                title: Some(v.video_id.to_string()),
                region: Some(v.region.to_string()),
                ..Filter::default()
            },
            Group::Series,
        ),
        q(Grain::Minute, 0, 400, Filter::default(), Group::Series),
        // A title alone (its groups' totals, found by a seek), and all titles.
        q(
            Grain::Hour,
            0,
            480,
            Filter {
                title: Some(v.video_id.to_string()),
                ..Filter::default()
            },
            Group::Series,
        ),
        q(
            Grain::Hour,
            0,
            480,
            Filter::default(),
            Group::By(Field::Title),
        ),
        // One region (its facet totals), and every region.
        q(
            Grain::Minute,
            0,
            400,
            Filter {
                region: Some(v.region.to_string()),
                ..Filter::default()
            },
            Group::Series,
        ),
        q(
            Grain::Hour,
            0,
            480,
            Filter::default(),
            Group::By(Field::Region),
        ),
    ]
}

#[test]
fn rollups_answer_every_range_and_filter_as_the_events_do_held_compacted_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let t = tuning();
    let evs = views(3000, 5, 0, 360);
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        s.set_rollup_tuning(Tuning {
            // Held, not compacted, until the test says so.
            compact_bytes: usize::MAX / 64,
            ..t
        })
        .unwrap();
        for (i, chunk) in evs.chunks(300).enumerate() {
            apply(&mut s, (i * 300) as i64, chunk);
        }
        check_answers(&s, &evs, &t, "held runs");
        s.set_rollup_tuning(t).unwrap();
        settle(&s);
        assert!(s.rollup_status().compactions >= 1);
        check_answers(&s, &evs, &t, "chunks");
        // A redelivered batch changes nothing.
        apply(&mut s, 0, &evs[..300]);
        settle(&s);
        check_answers(&s, &evs, &t, "redelivery");
    }
    let s = Store::open(dir.path(), 16).unwrap();
    check_answers(&s, &evs, &t, "reopened");
    // Titles by the minute are not kept.
    let mut q = queries(&evs).remove(1);
    q.grain = Grain::Minute;
    let e = s.rollups(&q).unwrap_err().to_string();
    assert!(e.contains("titles are kept by the hour"), "{e}");
}

/// `t` holding batches without bound (ingest never waits for the compactor).
fn held(t: Tuning) -> Tuning {
    Tuning {
        compact_bytes: usize::MAX / 64,
        ..t
    }
}

/// Stops the compactor as a crash would find it: what it holds is not written.
fn stop_compactor(s: &mut Store) {
    {
        let mut h = s.view.rollups.lock();
        h.stop = true;
        s.view.rollups.changed.notify_all();
    }
    if let Some(h) = s.rollup_compactor.take() {
        h.join().unwrap();
    }
    s.view.rollups.lock().stop = false;
}

#[test]
fn batches_not_in_chunks_at_a_crash_are_replayed_from_the_event_log_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = tuning();
    let evs = views(1200, 8, 0, 120);
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        s.set_rollup_tuning(t).unwrap();
        apply(&mut s, 0, &evs[..400]);
        settle(&s);
        s.set_rollup_tuning(held(t)).unwrap();
        stop_compactor(&mut s);
        apply(&mut s, 400, &evs[400..800]);
        apply(&mut s, 800, &evs[800..]);
        check_answers(&s, &evs, &t, "held");
    }
    let mut s = Store::open(dir.path(), 16).unwrap();
    let status = s.rollup_status();
    assert_eq!(status.replayed_events, 800, "the batches past the chunks");
    assert_eq!(status.held_runs, 2, "one segment a batch");
    check_answers(&s, &evs, &t, "replayed");
    s.set_rollup_tuning(t).unwrap();
    settle(&s);
    drop(s);
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.rollup_status().replayed_events, 0);
    check_answers(&s, &evs, &t, "compacted");
}

#[test]
fn viewers_in_progress_count_from_the_hour_anchors_on_a_continuous_stream() {
    let dir = tempfile::tempdir().unwrap();
    // Views of up to 40 minutes over ten hours: a series far into the stream
    // starts with views in progress that began before it.
    let t = Tuning {
        max_view_ms: 40 * MINUTE_MS,
        ..tuning()
    };
    let evs = views(6000, 21, 0, 600);
    let mut s = Store::open(dir.path(), 16).unwrap();
    s.set_rollup_tuning(held(t)).unwrap();
    for (i, chunk) in evs.chunks(1000).enumerate() {
        apply_with(&mut s, (i * 1000) as i64, chunk, &t);
    }
    let v = &evs[0];
    let series = |grain, from_min: i64, to_min: i64, filter: Filter| RangeQuery {
        music: false,
        from_ms: BASE + from_min * MINUTE_MS,
        to_ms: BASE + to_min * MINUTE_MS,
        grain,
        filter,
        group: Group::Series,
    };
    let qs = [
        series(Grain::Minute, 300, 360, Filter::default()),
        series(
            Grain::Minute,
            125,
            190,
            Filter {
                region: Some(v.region.to_string()),
                ..Filter::default()
            },
        ),
        series(
            Grain::Hour,
            120,
            600,
            Filter {
                genre: Some(v.genre.to_string()),
                ..Filter::default()
            },
        ),
        series(Grain::Hour, 0, 660, Filter::default()),
    ];
    for q in &qs {
        let want = expected(&evs, q, &t);
        assert!(want.iter().any(|p| p.2 > 0), "views in progress: {q:?}");
        assert_eq!(answered(&s, q), want, "held: {q:?}");
    }
    s.set_rollup_tuning(t).unwrap();
    settle(&s);
    for q in &qs {
        assert_eq!(answered(&s, q), expected(&evs, q, &t), "chunks: {q:?}");
    }
}

#[test]
fn a_clean_close_writes_what_is_held_so_opening_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tuning {
        compact_bytes: usize::MAX / 64,
        ..tuning()
    };
    let evs = views(600, 12, 0, 60);
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        s.set_rollup_tuning(t).unwrap();
        apply(&mut s, 0, &evs);
    }
    let s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.rollup_status().replayed_events, 0);
    assert_eq!(s.rollup_status().held_runs, 0);
    check_answers(&s, &evs, &t, "answered");
}

#[test]
fn a_failed_compaction_stops_ingest_before_it_writes_and_the_held_rows_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    // Held until told: no compaction starts before the floor is raised.
    let t = Tuning {
        compact_bytes: usize::MAX / 64,
        compact_every_ms: u64::MAX / 4,
        ..tuning()
    };
    let first = views(1500, 41, 0, 150);
    let second = views(500, 42, 150, 200);
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        s.set_rollup_tuning(t).unwrap();
        apply_with(&mut s, 0, &first, &t);
        // A free-space floor no disk has: the compaction is refused before it writes.
        s.set_limits(crate::store::bounds::Limits {
            min_free_bytes: u64::MAX / 4,
            ..Default::default()
        });
        s.set_rollup_tuning(tuning()).unwrap();
        let waited = Instant::now();
        let why = loop {
            if let Some(why) = s.view.rollups.lock().broken.clone() {
                break why;
            }
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "the compaction neither ran nor failed"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(why.contains("rollup compaction"), "{why}");
        assert_eq!(s.rollup_status().compactions, 0);
        // The generation that failed stays held, and answers as before.
        assert_eq!(s.rollup_status().held_runs, 1);
        check_answers(&s, &first, &t, "held after the failed compaction");
        // With room again, ingest still stops (the failed write stopped the
        // store), and the refused batch is not stored: it comes again after
        // the restart.
        s.set_limits(Default::default());
        let refused = records(first.len() as i64, &second);
        let e = s
            .apply("ns", prepare::prepare_with(refused, &t))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rollup compaction") && e.contains("restart the daemon"),
            "{e}"
        );
        assert_eq!(s.next_offset("ns", "v", 0), Some(first.len() as i64));
        check_answers(&s, &first, &t, "after the refused batch");
    }
    // The restart replays the held batch from the event log and takes the
    // refused one; every event counts once.
    let mut s = Store::open(dir.path(), 16).unwrap();
    s.set_rollup_tuning(tuning()).unwrap();
    assert_eq!(s.rollup_status().replayed_events, first.len() as u64);
    apply_with(&mut s, first.len() as i64, &second, &t);
    settle(&s);
    let all: Vec<VideoEvent> = first.iter().chain(&second).cloned().collect();
    check_answers(&s, &all, &t, "after the restart");
    assert!(s.rollup_status().compactions >= 1);
}

#[test]
fn replayed_views_end_where_the_configured_view_length_says() {
    let dir = tempfile::tempdir().unwrap();
    // Views of up to 40 minutes: some would end later by default.
    let t = Tuning {
        max_view_ms: 40 * MINUTE_MS,
        ..tuning()
    };
    let evs = views(500, 14, 0, 60);
    assert!(
        queries(&evs)
            .iter()
            .any(|q| expected(&evs, q, &t) != expected(&evs, q, &Tuning::default())),
        "the view length changes the answers"
    );
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        s.set_rollup_tuning(held(t)).unwrap();
        stop_compactor(&mut s);
        apply(&mut s, 0, &evs);
    }
    // Opening replays with the default tuning; the configured one replays again.
    let mut s = Store::open(dir.path(), 16).unwrap();
    s.set_rollup_tuning(t).unwrap();
    check_answers(&s, &evs, &t, "answered");
}

#[test]
fn retention_keeps_the_segments_whose_events_are_not_in_chunks_yet() {
    let dir = tempfile::tempdir().unwrap();
    let t = tuning();
    let evs = views(600, 16, 0, 60);
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        s.set_rollup_tuning(held(t)).unwrap();
        stop_compactor(&mut s);
        apply(&mut s, 0, &evs[..300]);
        apply(&mut s, 300, &evs[300..]);
        s.set_retention(crate::store::retention::Retention {
            max_age_ms: 0,
            max_bytes: 1,
        });
        assert_eq!(s.retain(i64::MAX / 2).unwrap(), 0, "opening replays them");
    }
    let mut s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.rollup_status().replayed_events, 600);
    s.set_rollup_tuning(t).unwrap();
    settle(&s);
    s.set_retention(crate::store::retention::Retention {
        max_age_ms: 0,
        max_bytes: 1,
    });
    assert_eq!(s.retain(i64::MAX / 2).unwrap(), 2, "in chunks, they may go");
    check_answers(&s, &evs, &t, "answered");
}

#[test]
fn runs_written_by_earlier_versions_are_held_at_open_and_compacted_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = tuning();
    let evs = views(1200, 8, 0, 120);
    {
        let mut s = Store::open(dir.path(), 16).unwrap();
        s.set_rollup_tuning(held(t)).unwrap();
        stop_compactor(&mut s);
        for (i, chunk) in evs.chunks(400).enumerate() {
            apply(&mut s, (i * 400) as i64, chunk);
        }
        // The store as an earlier version left it: each batch's deltas in a
        // run with its offsets, no covered offsets.
        for (i, chunk) in evs.chunks(400).enumerate() {
            let events: Vec<Event> = chunk.iter().cloned().map(Event::Video).collect();
            let d = deltas_of(
                events.iter().enumerate().map(|(i, e)| (i as u32, e)),
                BASE + 3 * HOUR_MS,
                &t,
            );
            let next = ((i + 1) * 400) as i64;
            for (part, v) in d.encode(&[("ns", "v", 0, next)]).into_iter().enumerate() {
                s.view
                    .tree()
                    .insert(run_key(100 + i as u64, part as u32), v)
                    .unwrap();
            }
        }
        s.view.tree().remove(COVERED).unwrap();
        s.view.tree().db().flush().unwrap();
    }
    let mut s = Store::open(dir.path(), 16).unwrap();
    assert_eq!(s.rollup_status().held_runs, 3, "the runs are held at open");
    assert_eq!(
        s.rollup_status().replayed_events,
        0,
        "their events are not replayed"
    );
    check_answers(&s, &evs, &t, "held");
    s.set_rollup_tuning(t).unwrap();
    settle(&s);
    assert_eq!(
        s.view.tree().scan_prefix(RUN).count(),
        0,
        "compacted runs are deleted"
    );
    drop(s);
    let s = Store::open(dir.path(), 16).unwrap();
    check_answers(&s, &evs, &t, "compacted");
}

#[test]
fn old_minutes_go_to_hours_old_hours_go_and_late_events_land_where_they_still_can() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tuning {
        minute_retention_ms: HOUR_MS,
        hour_retention_ms: 3 * HOUR_MS,
        ..tuning()
    };
    let mut s = Store::open(dir.path(), 16).unwrap();
    s.set_rollup_tuning(t).unwrap();
    let early = views(200, 11, 0, 30);
    apply(&mut s, 0, &early);
    settle(&s);
    let latest = views(200, 12, 300, 330);
    apply(&mut s, 200, &latest);
    settle(&s);
    let newest = latest
        .iter()
        .map(|v| Grain::Minute.bucket(v.timestamp_ms))
        .max()
        .unwrap();
    assert_eq!(s.rollup_status().newest_minute, Some(newest));
    let total = |s: &Store, grain, from_min: i64, to_min: i64| {
        let q = RangeQuery {
            music: false,
            from_ms: BASE + from_min * MINUTE_MS,
            to_ms: BASE + to_min * MINUTE_MS,
            grain,
            filter: Filter::default(),
            group: Group::Total,
        };
        s.rollups(&q)
            .unwrap()
            .groups
            .first()
            .map_or(0, |g| g.1.get(slot::VIEWS))
    };
    // Hour 0 is past the hours kept: gone at both grains; hour 5 is kept at both.
    assert_eq!(total(&s, Grain::Minute, 0, 60), 0);
    assert_eq!(total(&s, Grain::Hour, 0, 60), 0);
    assert_eq!(total(&s, Grain::Minute, 300, 330), 200);
    assert_eq!(total(&s, Grain::Hour, 300, 360), 200);
    // Late: one view inside the minutes kept, one inside the hours only, one past both.
    let mut late = views(3, 13, 0, 1);
    late[0].timestamp_ms = newest - 10 * MINUTE_MS;
    late[1].timestamp_ms = newest - 150 * MINUTE_MS;
    late[2].timestamp_ms = newest - 290 * MINUTE_MS;
    apply(&mut s, 400, &late);
    settle(&s);
    let m = |ts: i64| (ts - BASE) / MINUTE_MS;
    let at0 = m(late[0].timestamp_ms);
    let at1 = m(late[1].timestamp_ms);
    assert_eq!(
        total(&s, Grain::Minute, at0, at0 + 1),
        1 + latest.iter().filter(|v| m(v.timestamp_ms) == at0).count() as u64
    );
    assert_eq!(
        total(&s, Grain::Minute, at1, at1 + 1),
        0,
        "past the minutes kept"
    );
    let h1 = Grain::Hour.bucket(late[1].timestamp_ms);
    assert_eq!(
        total(&s, Grain::Hour, m(h1), m(h1) + 60),
        1,
        "its hour is kept"
    );
    assert_eq!(s.rollup_status().late_dropped, 1);
    assert!(s.rollup_status().chunks_expired > 0);
}

#[test]
fn a_bucket_written_by_many_compactions_is_merged_and_still_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), 16).unwrap();
    s.set_rollup_tuning(tuning()).unwrap();
    let mut all = Vec::new();
    for i in 0..(MERGE_AT as i64 * 2) {
        let evs = views(50, 20 + i as u64, 0, 50);
        apply(&mut s, i * 50, &evs);
        settle(&s);
        all.extend(evs);
    }
    let prefix = bucket_prefix(Grain::Hour, Cube::Dims, BASE);
    let mut tags: Vec<Vec<u8>> = s
        .view
        .tree()
        .scan_prefix(&prefix)
        .map(|i| i.unwrap().0[prefix.len()..prefix.len() + 8].to_vec())
        .collect();
    tags.dedup();
    assert!(tags.len() < MERGE_AT, "{} chunks in one bucket", tags.len());
    assert!(s.rollup_status().buckets_merged >= 1);
    check_answers(&s, &all, &tuning(), "merged");
}

#[test]
fn a_bucket_keeps_at_most_max_rows_titles_the_rest_add_up_under_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), 16).unwrap();
    s.set_rollup_tuning(Tuning {
        max_rows: 10,
        ..tuning()
    })
    .unwrap();
    let evs = views(500, 31, 0, 30);
    apply(&mut s, 0, &evs);
    settle(&s);
    let q = RangeQuery {
        music: false,
        from_ms: BASE,
        to_ms: BASE + HOUR_MS,
        grain: Grain::Hour,
        filter: Filter::default(),
        group: Group::By(Field::Title),
    };
    let r = s.rollups(&q).unwrap();
    assert!(r.groups.len() <= 10, "{} titles", r.groups.len());
    assert!(r.groups.iter().any(|(k, _)| k == OTHER));
    let views: u64 = r.groups.iter().map(|(_, s)| s.get(slot::VIEWS)).sum();
    assert_eq!(views, 500, "every view still counts");
}

#[test]
fn a_question_mixing_views_and_listening_dimensions_is_refused_naming_the_field() {
    let q = RangeQuery {
        music: false,
        from_ms: BASE,
        to_ms: BASE + HOUR_MS,
        grain: Grain::Hour,
        filter: Filter {
            device: Some("mobile".into()),
            ..Filter::default()
        },
        group: Group::Total,
    };
    let e = q.cube().unwrap_err().to_string();
    assert!(e.contains("device") && e.contains("listening"), "{e}");
}

#[test]
fn a_view_counts_in_the_minute_it_starts_and_ends_and_future_ones_not_at_all() {
    let t = Tuning::default();
    let mut v = views(1, 40, 0, 1).remove(0);
    v.timestamp_ms = BASE + 10 * MINUTE_MS + 5_000;
    v.watch_time_seconds = 600.0;
    v.startup_time_ms = Some(1000.0);
    v.rebuffer_ms = Some(0.0);
    v.error = None;
    let ev = Event::Video(v.clone());
    let mut d = Deltas::default();
    d.event(0, &ev, BASE + HOUR_MS, &t);
    let dims: Vec<(i64, u64, u64)> = {
        let mut x: Vec<_> = d
            .entries()
            .filter(|(c, _, _, _)| *c == Cube::Dims)
            .map(|(_, m, _, s)| {
                (
                    (m - BASE) / MINUTE_MS,
                    s.get(slot::VIEWS),
                    s.get(slot::ENDED),
                )
            })
            .collect();
        x.sort();
        x
    };
    assert_eq!(dims, vec![(10, 1, 0), (20, 0, 1)]);
    // Its title's row is kept by the hour, without the end.
    let titles: Vec<(i64, u64, u64)> = d
        .entries()
        .filter(|(c, _, _, _)| *c == Cube::Titles)
        .map(|(_, m, _, s)| {
            (
                (m - BASE) / MINUTE_MS,
                s.get(slot::VIEWS),
                s.get(slot::ENDED),
            )
        })
        .collect();
    assert_eq!(titles, vec![(0, 1, 0)]);
    let mut d = Deltas::default();
    d.event(0, &ev, v.timestamp_ms - t.future_skew_ms - 1, &t);
    assert!(
        d.is_empty(),
        "dated past the write time by more than the skew"
    );
    // The run reads back whole, with its offsets.
    let mut d = Deltas::default();
    d.event(0, &ev, BASE + HOUR_MS, &t);
    let parts = d.encode(&[("ns", "v", 0, 7)]);
    let run = decode_run(&parts[0]).unwrap();
    assert_eq!(run.offsets, vec![("ns".to_string(), "v".to_string(), 0, 7)]);
    assert_eq!(run.entries.len(), 3);
}

#[test]
fn chunks_of_the_first_layout_still_read_and_merge_into_grouped_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), 16).unwrap();
    s.set_rollup_tuning(tuning()).unwrap();
    let evs = views(2000, 9, 0, 120);
    apply(&mut s, 0, &evs);
    settle(&s);
    // Every chunk rewritten as the first layout wrote it: one postcard list
    // of rows per part, part numbers without the grouped bit.
    let chunks: Vec<(sled::IVec, sled::IVec)> = s
        .view
        .tree()
        .scan_prefix(CHUNK)
        .map(|i| i.unwrap())
        .collect();
    assert!(chunks.iter().all(|(k, _)| chunk::is_grouped(k)));
    let mut batch = sled::Batch::default();
    for (k, v) in &chunks {
        let rows = chunk::all_rows(k, v).unwrap();
        batch.remove(k.clone());
        // (A bucket's grouped parts each become parts of their own.)
        let grouped_part =
            u32::from_be_bytes(k[k.len() - 4..].try_into().unwrap()) & !chunk::GROUPED;
        for (part, value) in encode_rows(&rows).into_iter().enumerate() {
            let mut key = k[..k.len() - 4].to_vec();
            key.extend_from_slice(&(grouped_part * 1024 + part as u32).to_be_bytes());
            assert!(!chunk::is_grouped(&key));
            batch.insert(key, value);
        }
    }
    s.view.tree().apply_batch(batch).unwrap();
    check_answers(&s, &evs, &tuning(), "first layout");
    // Enough compactions of the same buckets to merge them: grouped again.
    let mut all = evs;
    for i in 0..MERGE_AT as i64 {
        let more = views(40, 30 + i as u64, 0, 120);
        apply(&mut s, 2000 + i * 40, &more);
        settle(&s);
        all.extend(more);
    }
    assert!(s.rollup_status().buckets_merged >= 1);
    check_answers(&s, &all, &tuning(), "merged");
}

#[test]
fn a_grouped_part_seeks_its_leads_and_refuses_a_table_pointing_outside_it() {
    let mut rows: Vec<(Tuple<&str>, Sums)> = Vec::new();
    let titles: Vec<String> = (0..3000).map(|i| format!("vid_{i:05}")).collect();
    for (i, t) in titles.iter().enumerate() {
        for r in ["BR", "DE", "US"] {
            let mut s = Sums::default();
            s.0[slot::VIEWS] = 1 + i as u64 % 7;
            rows.push(([t.as_str(), "Drama", r, "720p"], s));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let parts = chunk::encode(&rows, true);
    assert!(parts.len() > 1, "split under the value limit");
    let mut seen = 0;
    for (n, v) in &parts {
        assert!(n & chunk::GROUPED != 0);
        assert!(v.len() <= super::super::MAX_VALUE_BYTES);
        let g = chunk::Grouped::parse(v).unwrap();
        for i in 0..g.len() {
            let lead = g.lead(i).unwrap();
            assert_eq!(g.find(lead), i..i + 1, "{lead}");
            let want = 3 * (1 + titles.iter().position(|t| t == lead).unwrap() as u64 % 7);
            assert_eq!(g.total(i).unwrap().get(slot::VIEWS), want);
            assert_eq!(g.rows(i).unwrap().len(), 3);
            seen += 1;
        }
        assert!(g.find("vid_99999").is_empty() && g.find("a").is_empty());
        // The regions' totals add up to the groups'.
        let regions = g.facet(2).unwrap();
        assert_eq!(
            regions.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            ["BR", "DE", "US"]
        );
        let by_region: u64 = regions.iter().map(|(_, s)| s.get(slot::VIEWS)).sum();
        let by_title: u64 = (0..g.len())
            .map(|i| g.total(i).unwrap().get(slot::VIEWS))
            .sum();
        assert_eq!(by_region, by_title);
        assert_eq!(g.facet(1).unwrap().len(), 1, "one genre");
    }
    assert_eq!(seen, titles.len());
    // Damaged: a table entry past the end, a count past the table.
    let mut bad = parts[0].1.clone();
    bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(chunk::Grouped::parse(&bad).is_none());
    let mut bad = parts[0].1.clone();
    bad[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(chunk::Grouped::parse(&bad).is_none());
    assert!(chunk::Grouped::parse(&[1, 0]).is_none());
}

#[test]
fn sums_read_as_postcard_reads_them() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for _ in 0..2000 {
        let mut s = Sums::default();
        for v in s.0.iter_mut() {
            // Every varint length, 1 to 10 bytes.
            *v = rng.gen::<u64>() >> rng.gen_range(0..64);
        }
        let mut bytes = postcard::to_stdvec(&s).unwrap();
        let mut written = Vec::new();
        s.write(&mut written);
        assert_eq!(written, bytes, "{s:?}");
        bytes.extend_from_slice(b"rest");
        let (read, rest) = Sums::read(&bytes).unwrap();
        assert_eq!(read, s);
        assert_eq!(rest, b"rest");
        // Cut anywhere inside, both refuse it.
        let cut = rng.gen_range(0..bytes.len() - 4);
        assert!(Sums::read(&bytes[..cut]).is_none());
        assert!(postcard::from_bytes::<Sums>(&bytes[..cut]).is_err());
    }
    // A tenth byte past a u64, and a varint of eleven bytes.
    let mut over = vec![0xffu8; 9];
    over.push(0x02);
    over.extend_from_slice(&[0; 12]);
    assert!(Sums::read(&over).is_none());
    assert!(postcard::from_bytes::<Sums>(&over).is_err());
    let mut max = vec![0xffu8; 9];
    max.push(0x01);
    max.extend_from_slice(&[0; 12]);
    assert_eq!(Sums::read(&max).unwrap().0 .0[0], u64::MAX);
    assert_eq!(postcard::from_bytes::<Sums>(&max).unwrap().0[0], u64::MAX);
}

#[test]
fn the_newest_minute_counts_the_held_rows_before_any_compaction() {
    // A range "the last day" counts back from it: before the first
    // compaction it must already know the held events' minutes.
    let dir = tempfile::tempdir().unwrap();
    let evs = views(200, 31, 0, 90);
    let mut s = Store::open(dir.path(), 16).unwrap();
    s.set_rollup_tuning(held(tuning())).unwrap();
    stop_compactor(&mut s);
    apply(&mut s, 0, &evs);
    let status = s.rollup_status();
    assert_eq!(status.compactions, 0);
    assert_eq!(
        status.newest_minute,
        evs.iter()
            .map(|v| Grain::Minute.bucket(v.timestamp_ms))
            .max()
    );
}

/// What a group member publishes of `s`: per (bucket, lead) changed since
/// the last call (every bucket with `full`), all of its rows, absolute.
fn published(s: &Store, member: &str, full: bool) -> Vec<group::PeerBucket> {
    let touched = s.take_rollup_touched();
    let mut buckets: std::collections::BTreeMap<
        (Grain, Cube, i64),
        Option<std::collections::BTreeSet<String>>,
    > = Default::default();
    if full {
        for b in s.own_rollup_buckets().unwrap() {
            buckets.insert(b, None);
        }
    } else {
        assert!(!touched.overflow);
        for (g, c, b, lead) in touched.leads {
            buckets
                .entry((g, c, b))
                .or_insert_with(|| Some(Default::default()))
                .as_mut()
                .unwrap()
                .insert(lead);
        }
    }
    let mut out = Vec::new();
    for ((grain, cube, bucket), leads) in buckets {
        let mut p = group::PeerBucket {
            member: member.into(),
            grain,
            cube,
            bucket,
            leads: Default::default(),
        };
        for (t, sums) in s.own_bucket_rows(grain, cube, bucket).unwrap() {
            if leads.as_ref().is_some_and(|l| !l.contains(&t[0])) {
                continue;
            }
            let [lead, a, b, c] = t;
            p.leads.entry(lead).or_default().push(([a, b, c], sums));
        }
        out.push(p);
    }
    out
}

#[test]
fn a_peers_published_rollups_add_up_with_this_stores_as_one_store_of_every_event() {
    let t = tuning();
    let evs = views(3000, 11, 0, 360);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Store::open(dir_a.path(), 16).unwrap();
    let mut b = Store::open(dir_b.path(), 16).unwrap();
    a.track_rollup_changes();
    // Each member stores every other event; a publishes in rounds: the
    // first every bucket it holds, then what each round changed (held or
    // compacted).
    let (mine, theirs): (Vec<_>, Vec<_>) = evs
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let mine: Vec<VideoEvent> = mine.into_iter().map(|(_, v)| v).collect();
    let theirs: Vec<VideoEvent> = theirs.into_iter().map(|(_, v)| v).collect();
    apply(&mut b, 0, &mine);
    let mut sent = Vec::new();
    for (round, chunk) in theirs.chunks(500).enumerate() {
        apply(&mut a, (round * 500) as i64, chunk);
        if round % 2 == 1 {
            settle(&a);
        }
        let full = round == 0;
        let p = published(&a, "member-a", full);
        assert!(!p.is_empty(), "round {round} published nothing");
        b.put_peer_rollups(&p).unwrap();
        sent.push(p);
    }
    settle(&b);
    check_answers(&b, &evs, &t, "a peer's rollups and this store's");
    // Records read again (a restart reads the topic from its start) replace
    // what they held: nothing counts twice.
    for p in &sent {
        b.put_peer_rollups(p).unwrap();
    }
    check_answers(&b, &evs, &t, "read twice");
    // Both members reported every minute of views.
    let q = RangeQuery {
        music: false,
        from_ms: BASE,
        to_ms: BASE + 360 * MINUTE_MS,
        grain: Grain::Hour,
        filter: Filter::default(),
        group: Group::Series,
    };
    let r = b.rollups(&q).unwrap();
    assert_eq!(r.members, 2);
    assert!(r.points.iter().all(|p| p.members == 2), "{:?}", r.points);
    // The member's own store answers for itself alone.
    check_answers(&a, &theirs, &t, "the publishing member");
    assert_eq!(a.rollups(&q).unwrap().members, 1);
    // Past retention (counted from the group's newest minute), the peer's
    // buckets go.
    b.set_rollup_tuning(Tuning {
        hour_retention_ms: HOUR_MS,
        minute_retention_ms: HOUR_MS,
        ..t
    })
    .unwrap();
    assert!(b.prune_peer_rollups().unwrap() > 0);
    let r = b.rollups(&q).unwrap();
    let newest_hour = Grain::Hour.bucket(b.rollup_status().peer_newest_minute.unwrap());
    assert!(r
        .points
        .iter()
        .all(|p| p.members <= 1 || p.bucket >= newest_hour - HOUR_MS));
    // Outside a group, a store drops what its peers published.
    assert!(b.drop_peer_rollups().unwrap() > 0);
    assert!(b.rollups(&q).unwrap().points.iter().all(|p| p.members <= 1));
    assert_eq!(b.rollup_status().peer_newest_minute, None);
}

/// A generation's rows by name, sorted (what a reader of it sees).
fn named_rows(g: &Generation) -> Vec<(Cube, i64, Tuple<String>, Sums)> {
    let mut out: Vec<_> = Cube::ALL
        .into_iter()
        .flat_map(|c| {
            g.rows(c)
                .map(move |(m, t, s)| (c, m, t.map(str::to_string), *s))
        })
        .collect();
    out.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    out
}

#[test]
fn reused_batch_buffers_and_an_emptied_generation_hold_what_new_ones_do() {
    let t = Tuning::default();
    let now = BASE + 48 * HOUR_MS;
    let batch = |seed: u64, from: i64, to: i64| -> Vec<Event> {
        views(3_000, seed, from, to)
            .into_iter()
            .map(Event::Video)
            .collect()
    };
    let (a, b) = (batch(61, 0, 300), batch(62, 200, 900));
    let sum = |evs: &[Event]| {
        deltas_of(evs.iter().enumerate().map(|(i, e)| (i as u32, e)), now, &t).into_batch()
    };
    let hold = |g: &mut Generation, d: &BatchDeltas, evs: &[Event]| {
        g.add(d, |i| id_of(&evs[i as usize]));
    };
    // Every spare buffer goes back, then b is summed in one of a's.
    let (da, db_fresh) = (sum(&a), sum(&b));
    let mut fresh = Generation::default();
    hold(&mut fresh, &db_fresh, &b);
    da.recycle();
    let db = sum(&b);
    assert_eq!(db.len(), db_fresh.len());
    let mut reused = Generation::default();
    hold(&mut reused, &db, &b);
    assert_eq!(named_rows(&reused), named_rows(&fresh));

    // A generation that held a, emptied, then holding b: b's rows alone,
    // each string named as b names it, nothing of a's offsets or batches.
    let mut g = Generation::default();
    hold(&mut g, &sum(&a), &a);
    g.note_offsets("ns", [("v", 0, 3_000)].into_iter());
    g.batches = 1;
    g.oldest_write_ms = Some(now);
    let mut g = g.emptied();
    assert!(g.is_empty());
    assert_eq!(
        (g.row_count(), g.newest(), g.offsets().count()),
        (0, None, 0)
    );
    hold(&mut g, &db, &b);
    assert_eq!(named_rows(&g), named_rows(&fresh));
    assert_eq!(g.newest(), fresh.newest());
    assert_eq!(g.order().len(), fresh.order().len());
}
