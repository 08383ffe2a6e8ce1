//! `playpulse bench freshness`: how long a view takes to reach the viewer's
//! next list, measured end to end on the embedded broker while it ingests at
//! a steady rate; and `playpulse bench fold`: the fold-in's solves alone.
//!
//! Freshness: the daemon ingests a generated stream at `rate` events/s; once
//! its first champion serves, each probe takes a user the champion knows,
//! asks for their list (the same call the control socket and `/api/recommend`
//! make), sends a finished view of the item ranked first through the broker,
//! and asks again every millisecond until that item has left the list. The
//! time from the send to the first list without it is the probe's freshness
//! (the item is left out as soon as the batch that stores the view commits);
//! the time to the user's factors re-solved with the view (the list re-ranked)
//! is its refold time. Freshness is split at the store: the time to the store
//! holding the view's pair (the ingest side) and the events queued ahead of
//! the probe at its send. Once the item has left the list, the probe only
//! checks the user's folded state (no list), so the measurement takes as
//! little CPU from the ingest it measures as it can.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::quantile;
use crate::admin::cmd::recommend::{recommend, Recommend};
use crate::admin::context::Admin;
use crate::domain::event::{Domain, Event, VideoEvent};
use crate::ml::als::{AlsModel, AlsParams};
use crate::ml::live::{fold_users, ChampionSolver};
use crate::ml::serve::{Bundle, ServingModel};
use crate::ml::sparse::Csr;
use crate::synth::produce::VideoStream;

#[derive(Debug, Clone)]
pub struct FreshnessBenchArgs {
    /// Events/s the daemon ingests throughout.
    pub rate: f64,
    /// Stored events before the first training.
    pub warmup_events: u64,
    pub probes: usize,
    pub users: usize,
    pub videos: usize,
    pub partitions: i32,
    /// models.fold_in_threads.
    pub fold_in_threads: usize,
    pub seed: u64,
    /// A probe whose item is still listed after this long counts as missed.
    pub probe_timeout: Duration,
}

/// Freshness quantiles, ms from the view's send to the first list without it.
#[derive(Debug, Clone, Serialize)]
pub struct FreshnessMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FreshnessReport {
    pub bench: &'static str,
    pub rate: f64,
    pub probes: usize,
    /// Probes whose item was still listed after the timeout (not in the quantiles).
    pub missed: usize,
    pub freshness_ms: FreshnessMs,
    /// From the view's send to the store holding its pair (the batch that
    /// carries it committed): the ingest side of the freshness; the rest is
    /// the seen note and the list.
    pub durable_ms: FreshnessMs,
    /// Events produced and not yet stored at each probe's send: the queue the
    /// probe waits behind (at `rate` events/s, lag / rate seconds).
    pub lag_at_send: FreshnessMs,
    /// From the view's send to the user's factors re-solved with it (their
    /// folded state has the item as seen): the list is re-ranked by then.
    pub refold_ms: FreshnessMs,
    /// Probes whose view was not folded in within the timeout.
    pub refold_missed: usize,
    /// While the probes ran: events stored per second.
    pub ingest_events_per_sec: f64,
    /// While the probes ran: users folded in per second, and durable batches
    /// followed per second.
    pub fold_ins_per_sec: f64,
    pub fold_batches_per_sec: f64,
    /// The fold-in's solve threads.
    pub fold_in_threads: usize,
    /// While the probes ran: pair compactions, the times ingest waited for
    /// one (the active layer full while the last was still being written),
    /// and the seconds the last one took.
    pub pair_compactions: u64,
    pub pair_ingest_waits: u64,
    pub pair_last_compaction_s: f64,
    /// The champion the probes ran against, and its factor count.
    pub model: u64,
    pub factors: usize,
    pub probe_seconds: f64,
    /// From the start to the first champion serving.
    pub warmup_seconds: f64,
    /// After the probes: a retrain on everything stored, and the champion
    /// (its item factors, every user folded in) on that retrain's held-out
    /// split — NDCG@k of both.
    pub after_probes: Option<RetrainComparison>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetrainComparison {
    pub retrain_model: u64,
    pub metric: String,
    pub retrain: f64,
    pub folded_champion: Option<f64>,
    pub popularity: f64,
}

/// A finished, smooth view of `video` by `user`, shaped like `like`.
fn finished_view(like: &VideoEvent, user: &str, video: &str) -> VideoEvent {
    let mut v = like.clone();
    v.user_id = user.into();
    v.video_id = video.into();
    v.timestamp_ms = crate::domain::timefmt::now_ms();
    v.watch_time_seconds = 3600.0;
    v.buffering_events = 0;
    v.skipped = false;
    v.paused = false;
    v.error = None;
    v
}

fn items(reply: &crate::ml::recommend::RecommendReply) -> Vec<String> {
    reply
        .recommendations
        .iter()
        .map(|r| r.item.clone())
        .collect()
}

/// Runs the benchmark in `data_dir` (which should be empty).
pub fn freshness(
    args: &FreshnessBenchArgs,
    data_dir: &std::path::Path,
) -> anyhow::Result<FreshnessReport> {
    let mut cfg = super::one_model_config(data_dir, args.partitions, args.warmup_events);
    cfg.models.fold_in_threads = args.fold_in_threads;
    // The daemon's own bounds on what the flags set.
    cfg.models.validate()?;
    let fold_in_threads = cfg.models.fold_in_solvers();
    // Enough stream for the warm-up and the probes at the rate (the stream
    // ends the run early only if the probes take far longer than planned).
    let planned = args.probes as f64 * 3.0 + 120.0;
    let events = args.warmup_events + (args.rate * planned) as u64;
    let stream = VideoStream::new(args.users, args.videos, args.seed, events, 0.0);
    let mut like = VideoStream::new(args.users, args.videos, args.seed ^ 1, 1, 0.0);
    let Some((_, _, Some(Event::Video(like)))) = like.next_event() else {
        anyhow::bail!("the generator made no video event");
    };
    let system = actix::System::new();
    let args = args.clone();
    system.block_on(async move {
        let t_start = Instant::now();
        let (daemon, champion) =
            super::warm_champion(&cfg, stream, args.rate, args.warmup_events, Vec::new()).await?;
        let warmup_seconds = t_start.elapsed().as_secs_f64();
        let admin = Admin::new(daemon.handles(), cfg.clone()).await?;
        let producer = crate::kafka::producer(&daemon.bootstrap, &cfg.kafka)?;
        let users = champion.recommender.bundle().users.clone();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
        let ask = |user: &str| Recommend {
            user: user.to_string(),
            k: Some(10),
            domain: Some(Domain::Video),
            region: None,
            genre: None,
        };

        let (stored0, fold0) = (daemon.progress.done(), daemon.serving.fold_stats());
        let pairs0 = daemon.view.pair_overlay().2;
        let t_probes = Instant::now();
        let (mut times, mut missed) = (Vec::with_capacity(args.probes), 0usize);
        let (mut refolds, mut refold_missed) = (Vec::with_capacity(args.probes), 0usize);
        let (mut durables, mut lags) = (Vec::with_capacity(args.probes), Vec::new());
        let progress = daemon.progress.clone();
        let lag = || {
            let produced = crate::ingest::pipeline::Progress::get(&progress.produced);
            produced.saturating_sub(progress.done()) as f64
        };
        for _ in 0..args.probes {
            let user = &users[rng.gen_range(0..users.len())];
            let before = recommend(&admin, ask(user)).await?;
            let Some(first) = items(&before).into_iter().next() else {
                continue;
            };
            let view = finished_view(&like, user, &first);
            let payload = crate::ingest::wire::to_json(&Event::Video(view));
            // The item may be one folded in since the champion's training.
            let folded_items = daemon.serving.folded_items(&champion);
            let row = crate::ml::live::item_row(&champion, folded_items.as_deref(), &first);
            let refolded = || {
                let f = daemon.serving.live_user(&champion, user).folded;
                f.zip(row)
                    .is_some_and(|(f, r)| f.seen.binary_search(&r).is_ok())
            };
            let durable = || {
                daemon
                    .view
                    .user_video_pairs(user)
                    .is_ok_and(|(p, _)| p.iter().any(|(v, _)| *v == first))
            };
            let queued = lag();
            let sent = Instant::now();
            crate::kafka::send(&producer, "bench.video", user.as_bytes(), &payload, None)?;
            let (mut gone, mut solved, mut stored) = (false, false, None);
            loop {
                // Once the item has left the list, only the (cheap) refold
                // check goes on: asking for the list every millisecond while
                // the refold runs took CPU from the ingest being measured.
                if !gone {
                    if stored.is_none() && durable() {
                        stored = Some(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    let now = recommend(&admin, ask(user)).await?;
                    let ms = sent.elapsed().as_secs_f64() * 1000.0;
                    if !items(&now).contains(&first) {
                        gone = true;
                        times.push(ms);
                        let stored = stored.unwrap_or(ms);
                        durables.push(stored);
                        lags.push(queued);
                        if ms > 1000.0 {
                            tracing::info!(
                                "slow probe: gone after {ms:.0} ms, durable after {stored:.0} ms, \
                                 {queued} events queued at its send"
                            );
                        }
                    }
                }
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                if !solved && refolded() {
                    solved = true;
                    refolds.push(ms);
                }
                if gone && solved {
                    break;
                }
                if sent.elapsed() > args.probe_timeout {
                    missed += usize::from(!gone);
                    refold_missed += usize::from(!solved);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let probe_seconds = t_probes.elapsed().as_secs_f64();
        let (stored1, fold1) = (daemon.progress.done(), daemon.serving.fold_stats());
        let pairs1 = daemon.view.pair_overlay().2;
        let model = champion.id;
        let factors = champion.recommender.bundle().model.factors;
        drop(champion);
        let after_probes = match daemon
            .trainer
            .send(crate::actors::messages::TrainNow)
            .await?
        {
            Ok(o) => Some(RetrainComparison {
                retrain_model: o.model,
                metric: o.metric.name().to_string(),
                retrain: o.value,
                folded_champion: o.folded_champion,
                popularity: o.popularity,
            }),
            Err(e) => {
                tracing::warn!("the retrain after the probes failed: {e}");
                None
            }
        };
        daemon.shutdown().await;
        times.sort_by(f64::total_cmp);
        refolds.sort_by(f64::total_cmp);
        durables.sort_by(f64::total_cmp);
        lags.sort_by(f64::total_cmp);
        let ms = |t: &[f64]| FreshnessMs {
            p50: quantile(t, 0.5),
            p90: quantile(t, 0.9),
            p99: quantile(t, 0.99),
            max: t.last().copied().unwrap_or(0.0),
        };
        Ok(FreshnessReport {
            bench: "freshness",
            rate: args.rate,
            probes: args.probes,
            missed,
            freshness_ms: ms(&times),
            durable_ms: ms(&durables),
            lag_at_send: ms(&lags),
            refold_ms: ms(&refolds),
            refold_missed,
            ingest_events_per_sec: (stored1 - stored0) as f64 / probe_seconds,
            fold_ins_per_sec: (fold1.folded_total - fold0.folded_total) as f64 / probe_seconds,
            fold_batches_per_sec: (fold1.batches - fold0.batches) as f64 / probe_seconds,
            fold_in_threads,
            pair_compactions: pairs1.compactions - pairs0.compactions,
            pair_ingest_waits: pairs1.waits - pairs0.waits,
            pair_last_compaction_s: pairs1.last_seconds,
            model,
            factors,
            probe_seconds,
            warmup_seconds,
            after_probes,
        })
    })
}

#[derive(Debug, Clone)]
pub struct FoldBenchArgs {
    pub users: usize,
    pub items: usize,
    pub factors: usize,
    /// Distinct items each folded user has.
    pub pairs_per_user: usize,
    pub threads: usize,
    pub rounds: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FoldBenchReport {
    pub bench: &'static str,
    pub users: usize,
    pub items: usize,
    pub factors: usize,
    pub pairs_per_user: usize,
    pub threads: usize,
    /// Per round: users folded in per second; and their median.
    pub users_per_sec: Vec<f64>,
    pub median_users_per_sec: f64,
}

/// Folds `users` users in against a champion of `items` random item factors,
/// `rounds` times, with the daemon's fold-in ([`fold_users`]: item lookup by
/// name, the exact solve with the precomputed YᵀY, in parallel).
pub fn fold(args: &FoldBenchArgs) -> anyhow::Result<FoldBenchReport> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let f = args.factors;
    let item_factors: Vec<f32> = (0..args.items * f)
        .map(|_| rng.gen_range(-0.3f32..0.3))
        .collect();
    let params = AlsParams {
        factors: f,
        exact: true,
        ..AlsParams::default()
    };
    let items: Vec<String> = (0..args.items).map(|i| format!("vid_{i:05}")).collect();
    let bundle = Bundle {
        model: AlsModel {
            factors: f,
            users: 0,
            items: args.items,
            user_factors: Vec::new(),
            item_factors,
        },
        users: Vec::new(),
        items: items.clone(),
        seen: Csr::from_triplets(0, args.items, &[]),
        item_genre: vec![String::new(); args.items],
        popularity: vec![1; args.items],
        region_popularity: Default::default(),
        item_domain: vec![Domain::Video; args.items],
        rerank: None,
        item_model: None,
    };
    let champion = ServingModel {
        id: 1,
        bundle,
        affinity_weight: 0.0,
        params,
    }
    .into_champion();
    let solver = ChampionSolver::new(&champion);
    let batch: Vec<(String, Vec<(String, f32)>)> = (0..args.users)
        .map(|u| {
            let pairs = (0..args.pairs_per_user)
                .map(|_| {
                    let i = rng.gen_range(0..args.items);
                    (items[i].clone(), rng.gen_range(0.1f32..2.0))
                })
                .collect();
            (format!("user_{u:07}"), pairs)
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build()?;
    let mut users_per_sec = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds.max(1) {
        let input = batch.clone();
        let t = Instant::now();
        let out = pool.install(|| fold_users(&champion, &solver, input));
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            out.len() == args.users,
            "{} of {} users folded in",
            out.len(),
            args.users
        );
        users_per_sec.push(args.users as f64 / secs);
    }
    let mut sorted = users_per_sec.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(FoldBenchReport {
        bench: "fold",
        users: args.users,
        items: args.items,
        factors: f,
        pairs_per_user: args.pairs_per_user,
        threads: args.threads.max(1),
        median_users_per_sec: quantile(&sorted, 0.5),
        users_per_sec,
    })
}
