//! `playpulse bench analytics`: `--days` of synthetic views written through
//! the store (each batch's rollup run in its write, the compactor adding them
//! into minute and hour chunks), then range queries with filters timed per
//! kind (p50/p99), in one JSON line.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::quantile;
use crate::domain::event::Event;
use crate::domain::record::{Outcome, Processed, SourcePos};
use crate::store::rollup::query::{Field, Filter, Group, RangeQuery};
use crate::store::rollup::{Grain, Tuning, HOUR_MS, MINUTE_MS};
use crate::store::{prepare_with, Store};
use crate::synth::generate::{video_id, VideoGen, World, GENRES, REGIONS, RESOLUTIONS};

#[derive(Debug, Clone)]
pub struct AnalyticsBenchArgs {
    pub days: u32,
    pub events: u64,
    pub users: usize,
    pub videos: usize,
    /// Queries per kind.
    pub queries: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryLatency {
    pub queries: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Rollup rows read per query, on average.
    pub mean_rows_read: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnalyticsBenchReport {
    pub bench: &'static str,
    pub days: u32,
    pub events: u64,
    pub videos: usize,
    pub write_seconds: f64,
    pub events_per_sec: f64,
    /// Until the compactor held no run.
    pub compaction_seconds: f64,
    pub compactions: u64,
    pub store_mb: f64,
    pub latency: BTreeMap<&'static str, QueryLatency>,
}

/// Why the analytics benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsBenchError {
    #[error("cannot make a temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{kind}: {source}")]
    Query {
        kind: &'static str,
        source: crate::store::rollup::query::RangeError,
    },
    #[error("the rollup compactor did not catch up in 10 minutes")]
    Behind,
    #[error("no minute was rolled up")]
    Empty,
}

pub fn run(args: &AnalyticsBenchArgs) -> Result<AnalyticsBenchReport, AnalyticsBenchError> {
    let dir = tempfile::tempdir().map_err(AnalyticsBenchError::TempDir)?;
    let mut store = Store::open(dir.path(), 256)?;
    let tuning = Tuning {
        minute_retention_ms: i64::from(args.days) * 24 * HOUR_MS,
        ..Tuning::default()
    };
    store.set_rollup_tuning(tuning)?;
    let span = i64::from(args.days) * 24 * HOUR_MS;
    let start = (crate::domain::timefmt::now_ms() - span) / MINUTE_MS * MINUTE_MS;
    let step = (span / args.events.max(1) as i64 / 2).max(1);
    let mut gen = VideoGen::new(
        World::new(args.users, args.videos, args.seed),
        args.seed,
        start,
        step,
    );
    let t = Instant::now();
    let (mut offset, mut written) = (0i64, 0u64);
    while written < args.events {
        let n = (args.events - written).min(20_000);
        let records: Vec<Processed> = (0..n)
            .map(|i| {
                Processed::at(
                    SourcePos::new("bench.video", 0, offset + i as i64),
                    Outcome::Valid(Event::Video(gen.next_event())),
                )
            })
            .collect();
        store.apply("bench", prepare_with(records, &tuning))?;
        offset += n as i64;
        written += n;
    }
    let write_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    while store.rollup_status().held_runs > 0 {
        if t.elapsed() > Duration::from_secs(600) {
            return Err(AnalyticsBenchError::Behind);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let compaction_seconds = t.elapsed().as_secs_f64();
    let status = store.rollup_status();
    let newest = status.newest_minute.ok_or(AnalyticsBenchError::Empty)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let to = newest + MINUTE_MS;
    let day = to - 24 * HOUR_MS;
    let week = to - i64::from(args.days.min(7)) * 24 * HOUR_MS;
    type Make = fn(&mut rand_chacha::ChaCha8Rng, usize, i64, i64, i64) -> RangeQuery;
    let kinds: [(&'static str, Make); 6] = [
        ("24h_minute_series_region", |r, _, day, _, to| {
            let f = Filter {
                region: Some(REGIONS[r.gen_range(0..REGIONS.len())].into()),
                ..Filter::default()
            };
            RangeQuery {
                music: false,
                from_ms: day,
                to_ms: to,
                grain: Grain::Minute,
                filter: f,
                group: Group::Series,
            }
        }),
        (
            "24h_minute_by_region_genre_resolution",
            |r, _, day, _, to| {
                let f = Filter {
                    genre: Some(GENRES[r.gen_range(0..GENRES.len())].into()),
                    resolution: Some(RESOLUTIONS[r.gen_range(0..RESOLUTIONS.len())].into()),
                    ..Filter::default()
                };
                RangeQuery {
                    music: false,
                    from_ms: day,
                    to_ms: to,
                    grain: Grain::Minute,
                    filter: f,
                    group: Group::By(Field::Region),
                }
            },
        ),
        ("7d_hour_series_genre", |r, _, _, week, to| {
            let f = Filter {
                genre: Some(GENRES[r.gen_range(0..GENRES.len())].into()),
                ..Filter::default()
            };
            RangeQuery {
                music: false,
                from_ms: week,
                to_ms: to,
                grain: Grain::Hour,
                filter: f,
                group: Group::Series,
            }
        }),
        ("7d_hour_top_titles", |_, _, _, week, to| RangeQuery {
            music: false,
            from_ms: week,
            to_ms: to,
            grain: Grain::Hour,
            filter: Filter::default(),
            group: Group::By(Field::Title),
        }),
        ("7d_hour_title_series", |r, videos, _, week, to| {
            let f = Filter {
                title: Some(video_id(r.gen_range(0..videos.min(50)))),
                ..Filter::default()
            };
            RangeQuery {
                music: false,
                from_ms: week,
                to_ms: to,
                grain: Grain::Hour,
                filter: f,
                group: Group::Series,
            }
        }),
        ("24h_hour_by_genre_region_filter", |r, _, day, _, to| {
            let f = Filter {
                region: Some(REGIONS[r.gen_range(0..REGIONS.len())].into()),
                ..Filter::default()
            };
            RangeQuery {
                music: false,
                from_ms: day,
                to_ms: to,
                grain: Grain::Hour,
                filter: f,
                group: Group::By(Field::Genre),
            }
        }),
    ];
    let mut latency = BTreeMap::new();
    for (name, make) in kinds {
        let mut ms = Vec::with_capacity(args.queries);
        let mut rows = 0u64;
        for _ in 0..args.queries {
            let query = make(&mut rng, args.videos, day, week, to);
            let t = Instant::now();
            let r = store
                .rollups(&query)
                .map_err(|source| AnalyticsBenchError::Query { kind: name, source })?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            rows += r.rows_read;
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        latency.insert(
            name,
            QueryLatency {
                queries: args.queries,
                p50_ms: quantile(&ms, 0.5),
                p99_ms: quantile(&ms, 0.99),
                max_ms: ms.last().copied().unwrap_or(0.0),
                mean_rows_read: rows as f64 / args.queries.max(1) as f64,
            },
        );
    }
    let store_mb = dir_bytes(dir.path()) as f64 / f64::from(1 << 20);
    Ok(AnalyticsBenchReport {
        bench: "analytics",
        days: args.days,
        events: args.events,
        videos: args.videos,
        write_seconds,
        events_per_sec: args.events as f64 / write_seconds.max(1e-9),
        compaction_seconds,
        compactions: status.compactions,
        store_mb,
        latency,
    })
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}
