//! The rollups' work per event on the ingest path: summing a batch's deltas
//! (the validator's thread) and holding them in the generation (the store's
//! thread), on 20,000-event batches of the bench's synthetic views. `step`
//! is the mean spacing of the events' times: 50 ms spreads a batch over about
//! 17 minutes of event time (as `bench ingest` does: a backfill), 0 puts
//! every event in one minute (a live stream). `encode_titles` times the
//! compactor's writing of those views' titles rows (about a row per view on
//! a backfill) as chunk parts.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use playpulse::domain::event::Event;
use playpulse::store::rollup::{chunk, deltas_of, Generation, Sums, Tuning};
use playpulse::synth::generate::{VideoGen, World};

const BATCH: usize = 20_000;
const BATCHES: usize = 12;

fn batches(step: i64) -> Vec<Vec<Event>> {
    let mut g = VideoGen::new(World::new(50_000, 5_000, 42), 42, 1_735_689_600_000, step);
    (0..BATCHES)
        .map(|_| (0..BATCH).map(|_| Event::Video(g.next_event())).collect())
        .collect()
}

fn bench(c: &mut Criterion) {
    let t = Tuning::default();
    let now = 1_900_000_000_000;
    let mut group = c.benchmark_group("rollups");
    for step in [50, 0] {
        let data = batches(step);
        group.throughput(Throughput::Elements((BATCH * BATCHES) as u64));
        group.bench_function(format!("deltas_step{step}"), |b| {
            b.iter(|| {
                for batch in &data {
                    let d = deltas_of(
                        batch.iter().enumerate().map(|(i, e)| (i as u32, e)),
                        now,
                        &t,
                    );
                    // Held, then its buffers go back, as the store does.
                    black_box(d.into_batch()).recycle();
                }
            })
        });
        let prepared: Vec<_> = data
            .iter()
            .map(|batch| {
                deltas_of(
                    batch.iter().enumerate().map(|(i, e)| (i as u32, e)),
                    now,
                    &t,
                )
                .into_batch()
            })
            .collect();
        // A generation as the compactor leaves it: the last one, emptied.
        let filled = || {
            let mut g = Generation::default();
            for (d, batch) in prepared.iter().zip(&data) {
                g.add(d, |i| playpulse::store::rollup::id_of(&batch[i as usize]));
            }
            g
        };
        group.bench_function(format!("hold_step{step}"), |b| {
            b.iter_batched(
                || filled().emptied(),
                |mut g| {
                    for (d, batch) in prepared.iter().zip(&data) {
                        g.add(d, |i| playpulse::store::rollup::id_of(&batch[i as usize]));
                    }
                    g
                },
                BatchSize::LargeInput,
            )
        });
    }
    // The titles rows of the step-50 views, summed by tuple and sorted as a
    // compaction hands them to the encoder.
    let data = batches(50);
    let mut by: std::collections::BTreeMap<[&str; 4], Sums> = Default::default();
    for e in data.iter().flatten() {
        if let Event::Video(v) = e {
            let mut s = Sums::default();
            s.0[0] = 1;
            s.0[1] = (v.watch_time_seconds * 1000.0) as u64;
            s.0[2] = v.rebuffer_ms.unwrap_or(0.0) as u64;
            s.0[4] = v.startup_time_ms.unwrap_or(0.0) as u64;
            s.0[8] = v.bitrate_kbps.max(0) as u64 * s.0[1] / 1000;
            let t = [&*v.video_id, &*v.genre, &*v.region, &*v.resolution];
            by.entry(t).or_default().add(&s);
        }
    }
    let rows: Vec<([&str; 4], Sums)> = by.into_iter().collect();
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("encode_titles", |b| {
        b.iter(|| black_box(chunk::encode(&rows, false)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
