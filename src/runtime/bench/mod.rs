//! `playpulse bench ingest`: the whole pipeline on the embedded broker, with the
//! store compared to what was produced afterwards.

pub mod analytics;
pub mod freshness;
pub mod graph;
pub mod ml;
pub mod models;
pub mod serve;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use crate::actors::producer::Feed;
use crate::config::{Config, ProducerMode};
use crate::domain::event::{Event, Kind};
use crate::ingest::wire;
use crate::runtime::daemon::Daemon;
use crate::store::Store;
use crate::synth::corrupt::{bad_rng, corrupt_video};
use crate::synth::generate::{VideoGen, World};

#[derive(Debug, Clone)]
pub struct IngestBenchArgs {
    pub events: u64,
    pub bad_fraction: f64,
    pub seed: u64,
    pub users: usize,
    pub videos: usize,
    pub partitions: i32,
    pub batch_size: usize,
    /// The store's cache, MiB.
    pub cache_mb: u64,
    /// store.pair_compaction_deltas.
    pub pair_compaction_deltas: usize,
    /// The mean spacing of the events' times, ms.
    pub step_ms: i64,
    /// store.rewrite_ratio and store.rewrite_min_mb.
    pub rewrite_ratio: f64,
    pub rewrite_min_mb: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestBenchReport {
    pub bench: &'static str,
    pub events: u64,
    pub valid_produced: u64,
    pub bad_injected: u64,
    pub stored: u64,
    pub rejected: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub rejected_reason_mismatch: u64,
    /// From the first record consumed to the last one stored.
    pub seconds: f64,
    /// Including the consumer group join (the embedded broker delays the first join ~3 s).
    pub wall_seconds: f64,
    pub events_per_sec: f64,
    /// CPU time of the whole process (every thread) over `seconds`, per
    /// million events: the cost 2 cores share, steadier than the rate.
    pub cpu_seconds_per_million: f64,
    pub mb_per_sec: f64,
    pub bytes: u64,
    pub partitions: i32,
    pub batch_size: usize,
    pub batches: u64,
    pub generate_seconds: f64,
    pub verify_seconds: f64,
    /// Busy time per pipeline stage (each stage runs on its own thread).
    pub stage_seconds: crate::ingest::pipeline::StageSeconds,
    /// CPU seconds per million events spent on the rollups (summing the
    /// deltas, holding them, compacting), the compaction of the last ones
    /// (after the store's close) included.
    pub rollup_cpu_seconds_per_million: f64,
    /// That CPU against the process's over `seconds` plus the rollups' after it.
    pub rollup_cpu_share: f64,
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The daemon as the benchmarks run it: embedded broker, one video topic fed by
/// the benchmark's own producer, no synthetic producers, no training.
pub fn bench_config(args: &IngestBenchArgs, data_dir: &std::path::Path) -> Config {
    let mut cfg = embedded_config(data_dir, args.partitions);
    cfg.ingest.batch_size = args.batch_size;
    cfg.store.cache_mb = args.cache_mb;
    cfg.store.pair_compaction_deltas = args.pair_compaction_deltas;
    cfg.store.rewrite_ratio = args.rewrite_ratio;
    cfg.store.rewrite_min_mb = args.rewrite_min_mb;
    cfg.models.enabled = false;
    cfg
}

/// A config for the benches that serve one model: trained once the warm-up
/// is stored, nothing retrains on its own, and the model serves even where
/// popularity scores higher on a small warm-up (the benches measure how a
/// model is served, and report popularity beside it).
pub fn one_model_config(data_dir: &std::path::Path, partitions: i32, warmup_events: u64) -> Config {
    let mut cfg = embedded_config(data_dir, partitions);
    cfg.models.min_events = warmup_events;
    cfg.models.train_every_events = 0;
    cfg.models.train_every = Duration::ZERO;
    cfg.models.retrain_folded_users = 0;
    cfg.models.retrain_new_pairs_share = 0.0;
    cfg.models.classifiers = false;
    cfg.models.promote_over_popularity = false;
    // The configured ALS as it is: these benches measure serving and fold-in
    // at its factor count, not what a search would choose.
    cfg.models.search_budget_seconds = 0.0;
    cfg
}

/// Starts the daemon on `cfg` ingesting `stream` at full speed, waits for
/// `warmup_events` stored (at most 600 s), sets the rate to `rate` events/s
/// and trains once: the daemon and the champion it serves. `extra` feeds
/// (other kinds) run at their own rates throughout.
pub async fn warm_champion(
    cfg: &Config,
    stream: crate::synth::produce::VideoStream,
    rate: f64,
    warmup_events: u64,
    extra: crate::runtime::daemon::ExtraFeeds,
) -> anyhow::Result<(Daemon, std::sync::Arc<crate::ml::serve::Champion>)> {
    let t_start = Instant::now();
    // The warm-up goes at full speed; the measured rate starts after it.
    let mut feeds = vec![(Kind::Video, Feed::Generated(Box::new(stream)), 0.0)];
    feeds.extend(extra);
    let daemon = Daemon::start(cfg, feeds)?;
    while daemon.progress.done() < warmup_events {
        if t_start.elapsed() > Duration::from_secs(600) {
            anyhow::bail!(
                "{} of {} warm-up events stored after 600 s",
                daemon.progress.done(),
                warmup_events
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (_, p) in daemon.producers.iter().filter(|(k, _)| *k == Kind::Video) {
        p.send(crate::actors::messages::ProducerControl::Rate(rate))
            .await?;
    }
    let trained = daemon
        .trainer
        .send(crate::actors::messages::TrainNow)
        .await?
        .map_err(|e| anyhow::anyhow!("the training after the warm-up failed: {e}"))?;
    tracing::info!("champion: {trained:?}");
    let Some(champion) = daemon.serving.get() else {
        anyhow::bail!("the training after the warm-up promoted no model: {trained:?}");
    };
    Ok((daemon, champion))
}

/// The embedded broker with one video topic (`bench.video`) of `partitions`
/// partitions, fed only by the benchmark's own producer.
pub(crate) fn embedded_config(data_dir: &std::path::Path, partitions: i32) -> Config {
    let mut cfg = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    cfg.kafka.brokers = String::new();
    cfg.kafka.embedded_partitions = partitions;
    cfg.kafka.topics = [(Kind::Video, "bench.video".to_string())]
        .into_iter()
        .collect();
    cfg.producers.mode = ProducerMode::Never;
    // The embedded broker keeps ~5 MiB per partition and was seen dropping data
    // past ~3k records of lag on one partition: stay well inside (1.5k a partition).
    cfg.producers.max_lag_events = 1_500 * partitions.max(1) as u64;
    cfg.ingest.log_interval = std::time::Duration::from_secs(5);
    cfg
}

/// Waits until `total` records are stored or rejected, with a progress bar;
/// `tick` sees the count every few milliseconds. Fails when nothing moves for 120 s.
pub async fn wait_until_done(
    daemon: &Daemon,
    total: u64,
    what: &str,
    mut tick: impl FnMut(u64),
) -> anyhow::Result<()> {
    let mut last = (Instant::now(), 0u64);
    let pb = crate::domain::progress::bar(total, what);
    loop {
        let done = daemon.progress.done();
        pb.set_position(done);
        tick(done);
        if done >= total {
            pb.finish_and_clear();
            return Ok(());
        }
        if done != last.1 {
            last = (Instant::now(), done);
        } else if last.0.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("ingest stalled at {done} of {total} records for 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The `q` quantile of `sorted` (nearest rank; 0 when empty).
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// CPU time (user + system) of this process so far, every thread, seconds.
pub fn process_cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is valid.
    let u = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) != 0 {
            return 0.0;
        }
        u.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// A `/proc/self/status` memory figure (`VmRSS`, `VmHWM`, ...) in MiB.
pub fn proc_status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the benchmark in `data_dir` (which should be empty).
pub fn ingest(
    args: &IngestBenchArgs,
    data_dir: &std::path::Path,
) -> anyhow::Result<IngestBenchReport> {
    let t_gen = Instant::now();
    let mut gen = VideoGen::new(
        World::new(args.users, args.videos, args.seed),
        args.seed,
        1_735_689_600_000,
        args.step_ms,
    );
    let mut brng = bad_rng(args.seed);
    let mut records = Vec::with_capacity(args.events as usize);
    let mut expected: HashMap<u64, i64> = HashMap::with_capacity(args.events as usize);
    let mut expected_reasons: HashMap<String, u64> = HashMap::new();
    let mut bytes = 0u64;
    let mut bad = 0u64;
    for _ in 0..args.events {
        let ev = gen.next_event();
        let key = ev.user_id.as_bytes().to_vec();
        let payload = if brng.gen::<f64>() < args.bad_fraction {
            let (p, reason) = corrupt_video(&ev, &mut brng);
            *expected_reasons.entry(reason.to_string()).or_default() += 1;
            bad += 1;
            p
        } else {
            let e = Event::Video(ev);
            *expected.entry(fingerprint(&e.encode())).or_default() += 1;
            wire::to_json(&e)
        };
        bytes += payload.len() as u64;
        records.push((key, payload));
    }
    let generate_seconds = t_gen.elapsed().as_secs_f64();

    let cfg = bench_config(args, data_dir);

    let total = args.events;
    let system = actix::System::new();
    let (seconds, cpu_seconds, wall_seconds, batches, stage_seconds, rollup_cpu) = system
        .block_on(async move {
            let daemon = Daemon::start(
                &cfg,
                vec![(Kind::Video, Feed::Prepared { records, next: 0 }, 0.0)],
            )?;
            let t_start = Instant::now();
            let mut t0 = None;
            let mut cpu0 = 0.0;
            wait_until_done(&daemon, total, "ingest", |done| {
                if t0.is_none() && done > 0 {
                    t0 = Some(Instant::now());
                    cpu0 = process_cpu_seconds();
                }
            })
            .await?;
            let seconds = t0.unwrap_or(t_start).elapsed().as_secs_f64();
            let cpu = process_cpu_seconds() - cpu0;
            let wall = t_start.elapsed().as_secs_f64();
            let batches = crate::ingest::pipeline::Progress::get(&daemon.progress.batches);
            let stages = daemon.progress.stage_seconds();
            let view = daemon.view.clone();
            let rollup_in_window = view.rollup_status().cpu_seconds;
            daemon.shutdown().await;
            let rollup = view.rollup_status().cpu_seconds;
            let rollup_cpu = (rollup, rollup - rollup_in_window);
            Ok::<_, anyhow::Error>((seconds, cpu, wall, batches, stages, rollup_cpu))
        })?;

    let t_verify = Instant::now();
    let store = Store::open(data_dir, 256)?;
    let mut stored = 0u64;
    for item in store.events() {
        let (_, ev) = item?;
        stored += 1;
        *expected.entry(fingerprint(&ev.encode())).or_default() -= 1;
    }
    let lost: i64 = expected.values().filter(|&&v| v > 0).sum();
    let duplicated: i64 = -expected.values().filter(|&&v| v < 0).sum::<i64>();
    let dead = store.dead_letters()?;
    let mut got_reasons: HashMap<String, u64> = HashMap::new();
    for d in &dead {
        *got_reasons.entry(d.rejection.reason.clone()).or_default() += 1;
    }
    let mismatch: u64 = expected_reasons
        .keys()
        .chain(got_reasons.keys())
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .map(|k| {
            expected_reasons
                .get(k)
                .copied()
                .unwrap_or(0)
                .abs_diff(got_reasons.get(k).copied().unwrap_or(0))
        })
        .sum();
    Ok(IngestBenchReport {
        bench: "ingest",
        events: args.events,
        valid_produced: args.events - bad,
        bad_injected: bad,
        stored,
        rejected: dead.len() as u64,
        lost: lost as u64,
        duplicated: duplicated as u64,
        rejected_reason_mismatch: mismatch,
        seconds,
        wall_seconds,
        events_per_sec: args.events as f64 / seconds,
        cpu_seconds_per_million: cpu_seconds * 1e6 / args.events.max(1) as f64,
        mb_per_sec: bytes as f64 / seconds / 1e6,
        bytes,
        partitions: args.partitions,
        batch_size: args.batch_size,
        batches,
        generate_seconds,
        verify_seconds: t_verify.elapsed().as_secs_f64(),
        stage_seconds,
        rollup_cpu_seconds_per_million: rollup_cpu.0 * 1e6 / args.events.max(1) as f64,
        rollup_cpu_share: rollup_cpu.0 / (cpu_seconds + rollup_cpu.1).max(1e-9),
    })
}
