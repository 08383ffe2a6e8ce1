//! `playpulse bench ...`: benchmarks that print one JSON line.

use std::path::PathBuf;

use anyhow::bail;

use playpulse::ml::als::AlsParams;
use playpulse::ml::classify::ClassifyParams;
use playpulse::runtime::bench::ml::AlsBenchArgs;
use playpulse::runtime::bench::{self, IngestBenchArgs};

use super::args::{BenchCommand, PipelineArgs};
use super::init_logging;

pub fn bench(which: BenchCommand) -> anyhow::Result<()> {
    match which {
        BenchCommand::Graph {
            events,
            users,
            tracks,
            queries,
            seed,
        } => {
            if events == 0 || users == 0 || tracks == 0 || queries == 0 {
                bail!("--events, --users, --tracks and --queries must be at least 1");
            }
            let report = playpulse::runtime::bench::graph::run(
                &playpulse::runtime::bench::graph::GraphBenchArgs {
                    events,
                    users,
                    tracks,
                    queries,
                    seed,
                },
            );
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        BenchCommand::Analytics {
            days,
            events,
            users,
            videos,
            queries,
            seed,
        } => {
            if !(1..=90).contains(&days) || events == 0 || users == 0 || videos == 0 || queries == 0
            {
                bail!(
                    "--days must be 1..=90; --events, --users, --videos and --queries at least 1"
                );
            }
            let report = playpulse::runtime::bench::analytics::run(
                &playpulse::runtime::bench::analytics::AnalyticsBenchArgs {
                    days,
                    events,
                    users,
                    videos,
                    queries,
                    seed,
                },
            )?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        BenchCommand::Classify {
            events,
            seed,
            tree_max_depth,
            tree_max_rows,
            svm_max_rows,
        } => {
            let params = ClassifyParams {
                seed,
                tree_max_depth,
                tree_max_rows,
                svm_max_rows,
                ..ClassifyParams::default()
            };
            for line in playpulse::runtime::bench::ml::classify(&events, &params)? {
                println!("{}", serde_json::to_string(&line)?);
            }
            Ok(())
        }
        BenchCommand::Rank {
            events,
            seed,
            candidates,
            eval_users,
            tree_max_depth,
            tree_min_leaf,
            svm_max_rows,
            k,
        } => {
            let defaults = playpulse::ml::config::ModelsConfig::default();
            let params = playpulse::ml::rank::RankParams {
                seed,
                candidates,
                eval_users,
                tree_max_depth,
                tree_min_leaf,
                svm_max_rows,
                k,
                als: AlsParams {
                    seed,
                    ..defaults.als()
                },
                ..playpulse::ml::rank::RankParams::default()
            };
            for line in playpulse::runtime::bench::ml::rank(&events, &params)? {
                println!("{}", serde_json::to_string(&line)?);
            }
            Ok(())
        }
        BenchCommand::Als {
            train,
            test,
            factors,
            iterations,
            regularization,
            alpha,
            cg_steps,
            seed,
            k,
            threads,
            nonnegative,
            weighted_regularization,
            exact,
            champion_fraction,
            warm_iterations,
        } => {
            let params = AlsParams {
                factors,
                iterations,
                regularization,
                alpha,
                cg_steps,
                seed,
                nonnegative,
                weighted_regularization,
                exact,
            };
            let args = AlsBenchArgs {
                train,
                test,
                params,
                k,
                threads: threads.max(1),
                champion_fraction,
                warm_iterations,
            };
            let report = playpulse::runtime::bench::ml::als(&args)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        BenchCommand::Models {
            train,
            test,
            k,
            threads,
            budget_s,
            budget_fits,
            families,
            ease_max_items,
            seed,
            genres,
        } => {
            let defaults = playpulse::ml::config::ModelsConfig::default();
            let budget_s = budget_s.unwrap_or(defaults.search_budget_seconds);
            if !(budget_s.is_finite() && (0.0..=86_400.0).contains(&budget_s)) {
                bail!("--budget-s {budget_s}: give 0 to 86400 seconds");
            }
            let budget_fits = budget_fits.unwrap_or(defaults.search_budget_fits);
            if !(budget_fits.is_finite() && (0.0..=10_000.0).contains(&budget_fits)) {
                bail!("--budget-fits {budget_fits}: give 0 to 10000 fits (0: seconds alone)");
            }
            if !(1..=1000).contains(&k) {
                bail!("--k {k}: give 1 to 1000");
            }
            if let Some(n) = ease_max_items {
                if !(1..=playpulse::ml::ease::MAX_ITEMS).contains(&n) {
                    bail!(
                        "--ease-max-items {n}: give 1 to {} (the inverse is items² × 8 bytes)",
                        playpulse::ml::ease::MAX_ITEMS
                    );
                }
            }
            let families = families
                .split(',')
                .map(|f| {
                    playpulse::ml::family::Family::parse(f.trim()).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--families: unknown family {f:?}; give a comma-separated \
                             list of als, ease, knn, popularity"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let args = bench::models::ModelsBenchArgs {
                train,
                test,
                k,
                threads: threads.clamp(1, 256),
                budget: std::time::Duration::from_secs_f64(budget_s),
                budget_fits,
                families,
                base_als: AlsParams {
                    seed,
                    ..defaults.als()
                },
                ease_max_items: ease_max_items.unwrap_or(defaults.ease_max_items),
                seed,
                genres,
            };
            let lines = bench::models::models(&args, |t| {
                eprintln!(
                    "trial {:<44} validation ndcg {} ({:.1} s)",
                    t.params.describe(),
                    t.validation.map_or_else(
                        || format!("failed: {}", t.error.as_deref().unwrap_or("")),
                        |v| format!("{v:.4}")
                    ),
                    t.fit_s + t.eval_s
                )
            })?;
            for line in lines {
                println!("{}", serde_json::to_string(&line)?);
            }
            Ok(())
        }
        BenchCommand::Soak {
            events,
            bad_fraction,
            seed,
            retention_mb,
            pipeline,
        } => {
            let (args, dir, _tmp) = pipeline_bench(events, bad_fraction, seed, pipeline)?;
            let report = playpulse::runtime::soak::soak(&args, &dir, retention_mb)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        BenchCommand::Freshness {
            rate,
            probes,
            stream,
            probe_timeout_seconds,
            seed,
        } => {
            init_logging("warn");
            stream.check("--rate", rate)?;
            if probes == 0 || probes > 100_000 {
                bail!("--probes {probes}: give 1 to 100000");
            }
            if probe_timeout_seconds == 0 || probe_timeout_seconds > 600 {
                bail!("--probe-timeout-seconds {probe_timeout_seconds}: give 1 to 600");
            }
            let tmp = tempfile::tempdir()?;
            let args = bench::freshness::FreshnessBenchArgs {
                rate,
                warmup_events: stream.warmup_events,
                probes,
                users: stream.users,
                videos: stream.videos,
                partitions: stream.partitions,
                fold_in_threads: stream.fold_in_threads,
                seed,
                probe_timeout: std::time::Duration::from_secs(probe_timeout_seconds),
            };
            let report = bench::freshness::freshness(&args, tmp.path())?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        BenchCommand::Serve {
            rate,
            ingest,
            music,
            seconds,
            connections,
            stream,
            seed,
            family,
        } => {
            init_logging("warn");
            if !(rate.is_finite() && (1.0..=100_000.0).contains(&rate)) {
                bail!("--rate {rate}: give requests/s in [1, 100000]");
            }
            stream.check("--ingest", ingest)?;
            if music != 0.0 {
                stream.check("--music", music)?;
            }
            if !(1..=3_600).contains(&seconds) || !(1..=256).contains(&connections) {
                bail!("--seconds 1 to 3600, --connections 1 to 256");
            }
            let tmp = tempfile::tempdir()?;
            let report = bench::serve::serve(
                &bench::serve::ServeBenchArgs {
                    rate,
                    ingest,
                    music,
                    seconds,
                    connections,
                    warmup_events: stream.warmup_events,
                    users: stream.users,
                    videos: stream.videos,
                    partitions: stream.partitions,
                    fold_in_threads: stream.fold_in_threads,
                    seed,
                    family,
                },
                tmp.path(),
            )?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        BenchCommand::Fold {
            users,
            items,
            factors,
            pairs_per_user,
            threads,
            rounds,
            seed,
        } => {
            if users == 0 || users > 10_000_000 || items == 0 || items > 10_000_000 {
                bail!("--users and --items: give 1 to 10000000");
            }
            if !(1..=512).contains(&factors) || !(1..=10_000).contains(&pairs_per_user) {
                bail!("--factors 1 to 512, --pairs-per-user 1 to 10000");
            }
            if !(1..=256).contains(&threads) || !(1..=1_000).contains(&rounds) {
                bail!("--threads 1 to 256, --rounds 1 to 1000");
            }
            let report = bench::freshness::fold(&bench::freshness::FoldBenchArgs {
                users,
                items,
                factors,
                pairs_per_user,
                threads,
                rounds,
                seed,
            })?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        BenchCommand::Ingest {
            events,
            bad_fraction,
            seed,
            pipeline,
        } => {
            let (args, dir, _tmp) = pipeline_bench(events, bad_fraction, seed, pipeline)?;
            let report = bench::ingest(&args, &dir)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}

/// Checks and gathers the ingest and soak benchmarks' arguments, with where the
/// store goes (`--data-dir`, else the temporary dir returned alongside, removed
/// when it is dropped).
fn pipeline_bench(
    events: u64,
    bad_fraction: f64,
    seed: u64,
    p: PipelineArgs,
) -> anyhow::Result<(IngestBenchArgs, PathBuf, tempfile::TempDir)> {
    init_logging("warn");
    if p.cache_mb == 0 {
        bail!("--cache-mb 0: the store needs a cache; give at least 1 (MiB)");
    }
    if !(0.0..1.0).contains(&bad_fraction) {
        bail!("--bad-fraction {bad_fraction}: must be in [0, 1)");
    }
    let tmp = tempfile::tempdir()?;
    let dir = p.data_dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let args = IngestBenchArgs {
        events,
        bad_fraction,
        seed,
        users: p.users,
        videos: p.videos,
        partitions: p.partitions,
        batch_size: p.batch_size,
        cache_mb: p.cache_mb,
        pair_compaction_deltas: p.pair_compaction_deltas,
        step_ms: p.step_ms,
        rewrite_ratio: p.rewrite_ratio,
        rewrite_min_mb: p.rewrite_min_mb,
    };
    Ok((args, dir, tmp))
}
