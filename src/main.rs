//! The `playpulse` command line: parses the arguments and calls the library
//! (the longer commands are in `cli/`).

mod cli;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Parser;

use cli::args::{Cli, Command};
use cli::{init_logging, CLI_BROKER_TIMEOUT};
use playpulse::config::KafkaConfig;
use playpulse::domain::event::Kind;
use playpulse::domain::timefmt::{parse_timestamp_ms, TimePolicy};
use playpulse::kafka;
use playpulse::ml::live;
use playpulse::ml::serve::{load_serving, Hints};
use playpulse::store::Store;
use playpulse::synth::import::{import_file, FileFormat};
use playpulse::synth::produce::{produce, Synth, SynthSpec};

// The store's copy-on-write pages, the batches and the events allocate and
// free at a high rate from several threads; glibc's allocator spent a sixth
// of the ingest threads' time there (perf, bench freshness at 50k/s).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // A command whose output goes to a pipe closed early (`| head`) ends
        // quietly, as Unix tools do, instead of failing on the write.
        // SAFETY: signal(2) restores the default action for SIGPIPE.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Ctl(args) => match playpulse::admin::ctl::run(&args) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        },
        Command::Run { config, data_dir } => cli::run::run(config, data_dir),
        Command::Produce(a) => {
            init_logging("warn");
            let Some(kind) = Kind::parse(&a.kind) else {
                bail!(
                    "--kind {:?}: must be one of video, users, movies, series, music",
                    a.kind
                );
            };
            let start_ms = if a.start == "now" {
                None
            } else {
                Some(parse_timestamp_ms(&a.start, TimePolicy::Strict).with_context(|| {
                    format!("--start {:?}: write an RFC 3339 time such as 2025-01-01T00:00:00Z, or now", a.start)
                })?)
            };
            if !(a.rate.is_finite() && a.rate >= 0.0) {
                bail!("--rate {}: must be ≥ 0 (0 = as fast as possible)", a.rate);
            }
            let spec = SynthSpec {
                users: a.users,
                videos: a.videos,
                tracks: a.tracks,
                seed: a.seed,
                start_ms,
            };
            let mut synth = Synth::new(kind, &spec);
            let producer = kafka::cli_producer(
                &a.brokers,
                &KafkaConfig::default(),
                &a.topic,
                CLI_BROKER_TIMEOUT,
            )?;
            let t0 = Instant::now();
            let sent = produce(&producer, &a.topic, &mut synth, a.events, a.rate, |_| {})?;
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({"produced": sent, "topic": a.topic, "kind": kind, "seconds": secs, "events_per_sec": sent as f64 / secs.max(1e-9)})
            );
            Ok(())
        }
        Command::Import {
            file,
            brokers,
            topic,
            format,
        } => {
            init_logging("warn");
            let format = FileFormat::resolve(&format, &file)?;
            let producer = kafka::cli_producer(
                &brokers,
                &KafkaConfig::default(),
                &topic,
                CLI_BROKER_TIMEOUT,
            )?;
            let report = import_file(&producer, &file, &topic, format)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Stats { data_dir } => {
            let store = Store::open(&data_dir, 64)?;
            println!("{}", serde_json::to_string_pretty(&store.stats(None)?)?);
            Ok(())
        }
        Command::Models {
            data_dir,
            promote,
            rollback,
            import,
            config,
        } => {
            let store = Store::open(&data_dir, 64)?;
            if let Some(dir) = import {
                let cfg = playpulse::config::Config::load(config.as_deref())?;
                let report = playpulse::ml::import::import_version(&store, &cfg.models, &dir)?;
                println!("{}", serde_json::to_string(&report)?);
                return Ok(());
            }
            if let Some(id) = promote {
                store.promote(id)?;
            }
            if rollback {
                let id = store.rollback()?;
                eprintln!("champion is now v{id}");
            }
            let champion = store.champion_id()?;
            for model in playpulse::ml::version::versions(&store)? {
                let champion = Some(model.id) == champion;
                let shown = playpulse::admin::cmd::models::ModelShown { model, champion };
                println!("{}", serde_json::to_string(&shown)?);
            }
            Ok(())
        }
        Command::Recommend {
            data_dir,
            user,
            k,
            genre,
            region,
            domain,
            config,
        } => {
            let store = Store::open(&data_dir, 64)?;
            let cfg = playpulse::config::Config::load(config.as_deref())?;
            // The daemon's path: the champion with its affinity weight, the
            // user folded in when the daemon had folded them in, the user's
            // catalog profile, titles and artists, what trends now.
            let champion = load_serving(&store)?.map(|m| m.into_champion());
            let ix = playpulse::views::indexes::Indexes::build(
                &store,
                cfg.analytics.trending_half_life(),
            )?;
            let ask = playpulse::ml::recommend::Ask {
                user: user.trim().to_lowercase(),
                k,
                domain,
                hints: Hints { region, genre },
            };
            let folded = match &champion {
                Some(c) if store.is_folded(c.id, &ask.user)? => {
                    let weights = cfg.models.event_weights.by_action();
                    let (pairs, _) =
                        ix.with_graph(|g| live::user_pairs(&store, g, &ask.user, weights))??;
                    let solver = live::ChampionSolver::new(c);
                    live::fold_users(c, &solver, vec![(ask.user.clone(), pairs)])
                        .pop()
                        .map(|(_, f, _)| std::sync::Arc::new(f))
                }
                _ => None,
            };
            let folded = live::LiveUser {
                folded,
                ..Default::default()
            };
            let Some(reply) = ix.lookup(|ix| {
                playpulse::ml::recommend::recommend(
                    champion.as_ref(),
                    &folded,
                    // Items folded in live are held by the daemon only.
                    None,
                    |u| store.user_profile(u),
                    ix,
                    &ask,
                )
            })??
            else {
                bail!("no model has been trained yet in {}: let the daemon ingest models.min_events events", data_dir.display());
            };
            println!("{}", serde_json::to_string(&reply)?);
            Ok(())
        }
        Command::Export {
            kind,
            what,
            data_dir,
            out,
            k,
            config,
        } => {
            let what = kind.unwrap_or(what);
            let store = Store::open(&data_dir, 64)?;
            let report = match what.as_str() {
                "recommendations" => serde_json::to_value(
                    playpulse::export::csv::recommendations_csv(&store, &out, k)?,
                )?,
                "predictions" => {
                    serde_json::to_value(playpulse::export::csv::predictions_csv(&store, &out)?)?
                }
                "parquet" => {
                    // The CSV's default name is no directory for a lake.
                    let out = if out == std::path::Path::new("final_recommendations.csv") {
                        PathBuf::from("lake")
                    } else {
                        out
                    };
                    let cfg = playpulse::config::Config::load(config.as_deref())?;
                    let split = playpulse::export::lake::LakeSplit::of(&cfg.models);
                    serde_json::to_value(playpulse::export::lake::export_parquet(
                        &store, &out, k, &split,
                    )?)?
                }
                other => {
                    bail!("export {other:?}: export recommendations, predictions or parquet")
                }
            };
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Check { data_dir, repair } => {
            init_logging("warn");
            let report = playpulse::store::check::check(&data_dir, repair)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if let Some(r) = &report.repaired {
                eprintln!(
                    "repaired: {} damaged entries kept apart, {} events kept; the damaged files are at {}",
                    r.quarantined,
                    r.events_kept,
                    r.old_files.display()
                );
                return Ok(());
            }
            if !report.is_clean() {
                eprintln!(
                    "{} damaged: stop the daemon and run `playpulse check --data-dir {} --repair`",
                    report.damaged.len(),
                    data_dir.display()
                );
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Predict {
            data_dir,
            events,
            model,
            out,
        } => {
            if !playpulse::ml::ModelKind::CLASSIFIERS.contains(&model) {
                bail!("--model {model}: use decision_tree or svm");
            }
            let (events, rejected) = playpulse::runtime::bench::ml::read_video_events(&events)?;
            if rejected > 0 {
                eprintln!("{rejected} lines were not valid video events and are left out");
            }
            let store = Store::open(&data_dir, 64)?;
            let report = playpulse::export::csv::predict_csv(&store, model, &events, &out)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Dlq { data_dir } => {
            let store = Store::open(&data_dir, 64)?;
            for d in store.dead_letters()? {
                println!("{}", serde_json::to_string(&d)?);
            }
            Ok(())
        }
        Command::Bench { which } => cli::bench::bench(which),
    }
}
