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
            };
            let report = playpulse::runtime::bench::ml::als(&args)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        BenchCommand::Soak {
            events,
            bad_fraction,
            seed,
            pipeline,
        } => {
            let (args, dir, _tmp) = pipeline_bench(events, bad_fraction, seed, pipeline)?;
            let report = playpulse::runtime::soak::soak(&args, &dir)?;
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
    };
    Ok((args, dir, tmp))
}
