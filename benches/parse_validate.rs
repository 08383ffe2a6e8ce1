//! Parse + validate throughput on one core (goal ≥ 1.5M events/s for JSON video events):
//! canonical records (the specialised decoder), reordered keys (the general decoder), legacy lines.
//! `aggregate_deltas`: what the validator's thread sums next for the store (aggregate and pair
//! deltas of a 20,000-event batch, `store::prepare::deltas_of`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use playpulse::config::ValidationConfig;
use playpulse::domain::event::{Event, Kind};
use playpulse::domain::record::{Outcome, Processed, SourcePos};
use playpulse::ingest::parse::{parse_payload, Format};
use playpulse::ingest::validate::Validator;
use playpulse::ingest::wire;
use playpulse::store::prepare::deltas_of;
use playpulse::synth::generate::{VideoGen, World};

fn bench(c: &mut Criterion) {
    let mut g = VideoGen::new(World::new(50_000, 5_000, 42), 42, 1_735_689_600_000, 50);
    let events: Vec<_> = (0..20_000).map(|_| g.next_event()).collect();
    let json: Vec<Vec<u8>> = events
        .iter()
        .map(|e| wire::to_json(&Event::Video(e.clone())))
        .collect();
    // The same records with keys in another order: the general decoder's path.
    let reordered: Vec<Vec<u8>> = json
        .iter()
        .map(|p| {
            let v: serde_json::Value = serde_json::from_slice(p).expect("valid JSON");
            serde_json::to_vec(&v).expect("serializable")
        })
        .collect();
    let legacy: Vec<Vec<u8>> = events
        .iter()
        .map(|e| wire::video_to_legacy(e).into_bytes())
        .collect();
    let v = Validator::new(&ValidationConfig::default());
    let now = 1_900_000_000_000;

    let mut group = c.benchmark_group("parse_validate");
    group.throughput(Throughput::Elements(json.len() as u64));
    group.bench_function("json_video", |b| {
        b.iter(|| {
            for p in &json {
                let ev = parse_payload(Kind::Video, &Format::Sniff, p)
                    .and_then(|e| v.validate_at(e, now));
                black_box(ev.is_ok());
            }
        })
    });
    group.bench_function("json_video_general", |b| {
        b.iter(|| {
            for p in &reordered {
                let ev = parse_payload(Kind::Video, &Format::Sniff, p)
                    .and_then(|e| v.validate_at(e, now));
                black_box(ev.is_ok());
            }
        })
    });
    group.bench_function("legacy_video", |b| {
        b.iter(|| {
            for p in &legacy {
                let ev = parse_payload(Kind::Video, &Format::Legacy, p)
                    .and_then(|e| v.validate_at(e, now));
                black_box(ev.is_ok());
            }
        })
    });
    let processed: Vec<Processed> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Processed::at(
                SourcePos::new("bench.video", (i % 32) as i32, (i / 32) as i64),
                Outcome::Valid(Event::Video(e.clone())),
            )
        })
        .collect();
    group.bench_function("aggregate_deltas", |b| {
        b.iter(|| {
            black_box(deltas_of(
                processed.iter().enumerate().map(|(i, r)| (i as u32, r)),
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
