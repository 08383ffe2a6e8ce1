//! `playpulse bench soak`: a long run of the whole pipeline on the embedded
//! broker, records made as they are sent (so memory is the daemon's, not the
//! benchmark's), sampling resident memory and the store's size on disk at every
//! 5 % of progress, then checking every record: lost, duplicated, rejected.
//! With a retention bound on the event log, the log no longer holds every
//! record: the check is then that every stored event is in its (user, video)
//! pair once (the pairs' event counts add up to the stored counter).

use std::time::Instant;

use serde::Serialize;

use crate::actors::producer::Feed;
use crate::domain::event::Kind;
use crate::runtime::bench::{
    bench_config, proc_status_mb, wait_until_done, IngestBenchArgs as SoakArgs,
};
use crate::runtime::daemon::Daemon;
use crate::store::Store;
use crate::synth::produce::VideoStream;

#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub bench: &'static str,
    pub events: u64,
    pub stored: u64,
    pub rejected: u64,
    pub bad_injected: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    /// Resident memory (MiB) at 5 %, 10 %, … 100 % of the records stored.
    pub rss_mb_samples: Vec<f64>,
    /// The store's size on disk (MiB) at the same points: sled's files, and
    /// the event log's files.
    pub sled_mb_samples: Vec<f64>,
    pub event_files_mb_samples: Vec<f64>,
    /// Resident memory at the end over its value at 25 % (after warm-up).
    pub rss_growth_after_warmup: f64,
    /// Distinct (user, video) aggregates at the end, and the seconds it took to
    /// derive them from the stored events (what a training snapshot spends).
    pub pairs: u64,
    /// Events summed over the pairs: equals `stored` when every stored event
    /// is in its pair exactly once.
    pub pair_events: u64,
    pub pairs_seconds: f64,
    pub verify_seconds: f64,
    /// `store.retention.max_size_mb` of the run (0: none), and the events the
    /// log still held at the end.
    pub retention_mb: u64,
    pub events_held: u64,
    /// Live keys and values at the end, MiB by key prefix (`E` segments, `U`
    /// pair chunks, `P` pair runs, ...), and the store's files then: what
    /// is beyond the live bytes is space sled has not reclaimed yet.
    pub live_mb_by_prefix: std::collections::BTreeMap<String, f64>,
    pub sled_mb_end: f64,
    pub event_files_mb_end: f64,
    /// The runs log's files (journal parts and pair runs), MiB, at the same
    /// points and at the end.
    pub runs_files_mb_samples: Vec<f64>,
    pub runs_files_mb_end: f64,
}

fn dir_mb(dir: &std::path::Path) -> f64 {
    fn walk(p: &std::path::Path) -> u64 {
        match std::fs::read_dir(p) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum(),
            Err(_) => 0,
        }
    }
    walk(dir) as f64 / (1 << 20) as f64
}

/// Runs the soak in `data_dir` (which should be empty).
/// The store's sled files, MiB: every generation in the data dir (one a
/// rewrite replaced is there until its last reader lets go).
fn store_files_mb(data_dir: &std::path::Path) -> f64 {
    std::fs::read_dir(data_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| crate::store::generation::number(n).is_some())
                })
                .map(|e| dir_mb(&e.path()))
                .sum()
        })
        .unwrap_or(0.0)
}

pub fn soak(
    args: &SoakArgs,
    data_dir: &std::path::Path,
    retention_mb: u64,
) -> anyhow::Result<SoakReport> {
    let mut cfg = bench_config(args, data_dir);
    cfg.store.retention.max_size_mb = retention_mb;
    let stream = VideoStream::with_step(
        args.users,
        args.videos,
        args.seed,
        args.events,
        args.bad_fraction,
        args.step_ms,
    );
    let total = args.events;
    let files_dir = data_dir.join(crate::store::eventlog::DIR);
    let runs_dir = data_dir.join(crate::store::eventlog::RUNS_DIR);
    let system = actix::System::new();
    let (seconds, rss, sled, files, runs) = system.block_on(async move {
        let daemon = Daemon::start(
            &cfg,
            vec![(Kind::Video, Feed::Generated(Box::new(stream)), 0.0)],
        )?;
        // From the first record stored (the embedded broker's first group join takes ~3 s).
        let mut t0 = None;
        let (mut rss, mut sled, mut files, mut runs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        wait_until_done(&daemon, total, "soak", |done| {
            if t0.is_none() && done > 0 {
                t0 = Some(Instant::now());
            }
            // A sample at every 5 % of progress.
            while (rss.len() as u64 + 1) * total <= done * 20 && rss.len() < 20 {
                rss.push(proc_status_mb("VmRSS"));
                sled.push(store_files_mb(data_dir));
                files.push(dir_mb(&files_dir));
                runs.push(dir_mb(&runs_dir));
            }
        })
        .await?;
        let seconds = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
        daemon.shutdown().await;
        Ok::<_, anyhow::Error>((seconds, rss, sled, files, runs))
    })?;

    // Every record checked: the same seed makes the same records again; valid
    // events are compared as sorted fingerprints, bad ones by count.
    let t = Instant::now();
    let fp = |e: &crate::domain::event::Event| -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        e.encode().hash(&mut h);
        h.finish()
    };
    let mut again = VideoStream::with_step(
        args.users,
        args.videos,
        args.seed,
        args.events,
        args.bad_fraction,
        args.step_ms,
    );
    let (mut want, mut bad) = (Vec::with_capacity(total as usize), 0u64);
    while let Some((_, _, ev)) = again.next_event() {
        match ev {
            Some(e) => want.push(fp(&e)),
            None => bad += 1,
        }
    }
    let store = Store::open(data_dir, 64)?;
    let mut got = Vec::with_capacity(want.len());
    for item in store.events() {
        got.push(fp(&item?.1));
    }
    let rejected = store.counter("rejected")?;
    let tp = Instant::now();
    let (mut pairs, mut pair_events) = (0u64, 0u64);
    for p in store.pair_aggregates() {
        pairs += 1;
        pair_events += p?.2.events;
    }
    let pairs_seconds = tp.elapsed().as_secs_f64();
    let sled_mb_end = store_files_mb(data_dir);
    let event_files_mb_end = dir_mb(&data_dir.join(crate::store::eventlog::DIR));
    let runs_files_mb_end = dir_mb(&data_dir.join(crate::store::eventlog::RUNS_DIR));
    let live_mb_by_prefix = store
        .bytes_by_prefix()?
        .into_iter()
        .map(|(k, b)| (k, b as f64 / (1u64 << 20) as f64))
        .collect();
    want.sort_unstable();
    got.sort_unstable();
    let (mut i, mut j, mut lost, mut dup) = (0, 0, 0u64, 0u64);
    while i < want.len() || j < got.len() {
        match (want.get(i), got.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                lost += 1;
                i += 1;
            }
            (Some(_), None) => {
                lost += 1;
                i += 1;
            }
            _ => {
                dup += 1;
                j += 1;
            }
        }
    }
    let events_held = got.len() as u64;
    let stored = if retention_mb > 0 {
        // The log was cut: lost and duplicated follow from the pairs.
        let stored = store.counter("stored")?;
        let produced = want.len() as u64;
        lost = stored.saturating_sub(pair_events) + produced.saturating_sub(stored);
        dup = pair_events.saturating_sub(stored) + stored.saturating_sub(produced);
        stored
    } else {
        events_held
    };
    let warm = rss.get(rss.len() / 4).copied().unwrap_or(0.0);
    Ok(SoakReport {
        bench: "soak",
        events: total,
        stored,
        retention_mb,
        events_held,
        rejected,
        bad_injected: bad,
        lost,
        duplicated: dup,
        seconds,
        events_per_sec: total as f64 / seconds,
        rss_growth_after_warmup: rss.last().copied().unwrap_or(0.0) / warm.max(1e-9),
        pairs,
        pair_events,
        pairs_seconds,
        rss_mb_samples: rss,
        sled_mb_end,
        sled_mb_samples: sled,
        event_files_mb_samples: files,
        event_files_mb_end,
        runs_files_mb_samples: runs,
        runs_files_mb_end,
        live_mb_by_prefix,
        verify_seconds: t.elapsed().as_secs_f64(),
    })
}
