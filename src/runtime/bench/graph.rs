//! `playpulse bench graph`: the listening graph built from N generated music
//! events (the store's path: tracks upserted, every event observed), then each
//! query kind run many times with seeded random arguments; latency quantiles per
//! kind in one JSON line.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::quantile;

use crate::admin::cmd::graph::INLINE_WORK;
use crate::domain::event::Event;
use crate::synth::generate::{user_id, MusicGen};
use crate::views::graph::{answer, within, GraphRequest, MusicGraph};

#[derive(Debug, Clone)]
pub struct GraphBenchArgs {
    pub events: u64,
    pub users: usize,
    pub tracks: usize,
    /// Queries per kind.
    pub queries: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub queries: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Items answered per query, on average (a page is at most 20).
    pub mean_total: f64,
    /// Queries the daemon answers where they are asked (within its inline
    /// work), as a share, and their p99 (the check included).
    pub inline_share: f64,
    pub inline_p99_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GraphBenchReport {
    pub bench: &'static str,
    pub events: u64,
    pub users: usize,
    pub tracks: usize,
    pub edges: usize,
    pub build_seconds: f64,
    pub build_events_per_sec: f64,
    pub latency: BTreeMap<&'static str, Latency>,
}

pub fn run(args: &GraphBenchArgs) -> GraphBenchReport {
    let t = Instant::now();
    let mut gen = MusicGen::new(args.tracks, args.users, args.seed, 1_767_225_600_000);
    let mut g = MusicGraph::default();
    let mut n = 0;
    while n < args.events {
        match gen.next_record() {
            Event::Track(tr) => g.upsert_track(&tr),
            Event::Music(m) => {
                g.observe(&m);
                n += 1;
            }
            _ => {}
        }
    }
    let build_seconds = t.elapsed().as_secs_f64();

    let tracks: Vec<_> = (0..args.tracks).map(|t| gen.track(t)).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed ^ 0x9e37);
    let actions = ["play", "skip", "like", "pause", "seek"];
    let mut latency = BTreeMap::new();
    for kind in [
        "user_tracks",
        "artist_tracks",
        "genre_tracks",
        "top",
        "also_liked",
        "artist_neighbours",
        "genre_neighbours",
    ] {
        let mut times = Vec::with_capacity(args.queries);
        let mut inline = Vec::new();
        let mut totals = 0u64;
        for _ in 0..args.queries {
            let tr = &tracks[rng.gen_range(0..tracks.len())];
            let req = GraphRequest {
                query: kind.into(),
                user: Some(user_id(rng.gen_range(0..args.users))),
                action: Some(actions[rng.gen_range(0..actions.len())].into()),
                artist: Some(tr.artist.clone()),
                genre: Some(tr.genre.clone()),
                offset: Some(0),
                limit: Some(20),
            };
            let t = Instant::now();
            let v = answer(&g, &req);
            times.push(t.elapsed().as_secs_f64() * 1e6);
            totals += v.map_or(0, |v| v.total as u64);
            let t = Instant::now();
            if within(&g, &req, INLINE_WORK) {
                let _ = answer(&g, &req);
                inline.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        times.sort_by(f64::total_cmp);
        inline.sort_by(f64::total_cmp);
        latency.insert(
            kind,
            Latency {
                queries: times.len(),
                p50_us: quantile(&times, 0.5),
                p99_us: quantile(&times, 0.99),
                max_us: times.last().copied().unwrap_or(0.0),
                mean_total: totals as f64 / args.queries.max(1) as f64,
                inline_share: inline.len() as f64 / args.queries.max(1) as f64,
                inline_p99_us: quantile(&inline, 0.99),
            },
        );
    }
    GraphBenchReport {
        bench: "graph",
        events: args.events,
        users: g.users(),
        tracks: g.tracks(),
        edges: g.edges(),
        build_seconds,
        build_events_per_sec: args.events as f64 / build_seconds.max(1e-9),
        latency,
    }
}
