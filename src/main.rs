//! The `playpulse` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use playpulse::admin::{Admin, Gate, Socket};
use playpulse::config::{Config, KafkaConfig};
use playpulse::domain::event::Kind;
use playpulse::domain::timefmt::{parse_timestamp_ms, TimePolicy};
use playpulse::kafka;
use playpulse::ml::als::AlsParams;
use playpulse::ml::classify::ClassifyParams;
use playpulse::ml::serve::{load_serving, Hints, Recommender};
use playpulse::runtime::bench::ml::AlsBenchArgs;
use playpulse::runtime::bench::{self, IngestBenchArgs};
use playpulse::runtime::daemon::{shutdown_signal, Daemon};
use playpulse::store::Store;
use playpulse::synth::import::{import_file, FileFormat};
use playpulse::synth::produce::{produce, Synth, SynthSpec};

#[derive(Parser)]
#[command(
    name = "playpulse",
    version,
    about = "Streaming analytics and recommendation daemon for video and music platforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (embedded broker when no brokers are configured).
    Run {
        /// Configuration file (defaults apply when absent).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides `data_dir` and PLAYPULSE_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Control a running daemon through its admin socket (`ctl --help` lists the commands).
    Ctl(playpulse::admin::ctl::CtlArgs),
    /// Send synthetic records to a topic.
    Produce(ProduceArgs),
    /// Replay a file (JSON Lines, legacy lines or CSV) into a topic.
    Import {
        file: PathBuf,
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        /// auto, json, legacy or csv.
        #[arg(long, default_value = "auto")]
        format: String,
    },
    /// Print the store's counters, QoE, catalog sizes and offsets as JSON (daemon stopped).
    Stats {
        #[arg(long, env = "PLAYPULSE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Print the dead-letter store, one JSON object per line (daemon stopped).
    Dlq {
        #[arg(long, env = "PLAYPULSE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// List the model versions, one JSON object per line; or promote / roll back (daemon stopped).
    Models {
        #[arg(long, env = "PLAYPULSE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Make this version the champion.
        #[arg(long, conflicts_with = "rollback")]
        promote: Option<u64>,
        /// Go back to the previous champion.
        #[arg(long)]
        rollback: bool,
    },
    /// Recommendations of the champion model for a user, as JSON (daemon stopped).
    Recommend {
        #[arg(long, env = "PLAYPULSE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[arg(long)]
        user: String,
        #[arg(long, default_value_t = 10, value_parser = playpulse::admin::bounds::parse_k)]
        k: usize,
        /// For unknown users: the genre to take popular items from.
        #[arg(long)]
        genre: Option<String>,
        /// For unknown users: the region to take popular items from (first choice).
        #[arg(long)]
        region: Option<String>,
    },
    /// Write the champion's top-k per user as final_recommendations.csv, the
    /// classifiers' held-out predictions, or the whole store as a Parquet data lake
    /// (`export parquet --out DIR`: DIR/<kind>/date=YYYY-MM-DD/*.parquet) — with the
    /// daemon stopped, or from a `ctl snapshot` of it.
    Export {
        /// recommendations, predictions or parquet (also as --what).
        kind: Option<String>,
        #[arg(long, default_value = "recommendations")]
        what: String,
        #[arg(long, env = "PLAYPULSE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "final_recommendations.csv")]
        out: PathBuf,
        #[arg(long, default_value_t = 5, value_parser = playpulse::admin::bounds::parse_k)]
        k: usize,
    },
    /// Reads every entry of the store (daemon stopped) and lists what is
    /// damaged; with --repair, rebuilds it from what reads back (damaged values
    /// kept apart, aggregates recomputed). Exits 0 when nothing is (left) damaged.
    Check {
        #[arg(long, env = "PLAYPULSE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[arg(long)]
        repair: bool,
    },
    /// Engagement predictions of the latest stored classifier for the video
    /// events of a JSON Lines file, as CSV (daemon stopped).
    Predict {
        #[arg(long, env = "PLAYPULSE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[arg(long)]
        events: PathBuf,
        /// decision_tree or svm.
        #[arg(long, value_enum, default_value = "decision_tree")]
        model: playpulse::ml::ModelKind,
        #[arg(long, default_value = "predictions.csv")]
        out: PathBuf,
    },
    /// Benchmarks that print one JSON line.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Args)]
struct ProduceArgs {
    #[arg(long)]
    brokers: String,
    #[arg(long)]
    topic: String,
    /// video, users, movies, series or music.
    #[arg(long, default_value = "video")]
    kind: String,
    /// Records to send (0 = without end).
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Records per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 5000)]
    users: usize,
    #[arg(long, default_value_t = 1000)]
    videos: usize,
    #[arg(long, default_value_t = 2000)]
    tracks: usize,
    /// First event time (RFC 3339), or `now` to stamp records with the wall clock.
    #[arg(long, default_value = "2025-01-01T00:00:00Z")]
    start: String,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// A long run on the embedded broker: memory and store size sampled every 5 %,
    /// then every record checked (lost, duplicated).
    Soak {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        #[arg(long, default_value_t = 0.001)]
        bad_fraction: f64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Listening-graph queries: the graph built from N generated music events,
    /// then every query kind timed (p50/p99 per kind).
    Graph {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 20_000)]
        users: usize,
        #[arg(long, default_value_t = 10_000)]
        tracks: usize,
        /// Queries per kind.
        #[arg(long, default_value_t = 2_000)]
        queries: usize,
        #[arg(long, default_value_t = 5)]
        seed: u64,
    },
    /// Engagement classifiers (decision tree, SVM) on a JSON Lines events file, 80/20 split.
    Classify {
        #[arg(long)]
        events: PathBuf,
        #[arg(long, default_value_t = 57)]
        seed: u64,
        #[arg(long, default_value_t = 20)]
        tree_max_depth: usize,
        #[arg(long, default_value_t = 200_000)]
        tree_max_rows: usize,
        /// Rows of the SVM's stratified training subsample (its kernel matrix is n×n).
        #[arg(long, default_value_t = 5_000)]
        svm_max_rows: usize,
    },
    /// Implicit ALS: fit on a train split, top-k metrics on its test split.
    Als {
        /// Tab-separated `user item weight events positive` with a header.
        #[arg(long)]
        train: PathBuf,
        #[arg(long)]
        test: PathBuf,
        #[arg(long, default_value_t = 10)]
        factors: usize,
        #[arg(long, default_value_t = 15)]
        iterations: usize,
        #[arg(long, default_value_t = 0.1)]
        regularization: f32,
        #[arg(long, default_value_t = 1.0)]
        alpha: f32,
        #[arg(long, default_value_t = 3)]
        cg_steps: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 10)]
        k: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Project factors onto ≥ 0 (as the reference notebooks' Spark model).
        #[arg(long)]
        nonnegative: bool,
        /// Regularization scaled by each row's interaction count (ALS-WR, as Spark).
        #[arg(long)]
        weighted_regularization: bool,
        /// Solve each row exactly (Cholesky) instead of by CG steps.
        #[arg(long)]
        exact: bool,
    },
    /// The whole ingest pipeline on the embedded broker.
    Ingest {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 0.01)]
        bad_fraction: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
}

/// The pipeline the ingest and soak benchmarks run.
#[derive(Args)]
struct PipelineArgs {
    #[arg(long, default_value_t = 50_000)]
    users: usize,
    #[arg(long, default_value_t = 5_000)]
    videos: usize,
    #[arg(long, default_value_t = 32)]
    partitions: i32,
    #[arg(long, default_value_t = 20_000)]
    batch_size: usize,
    /// The store's cache (store.cache_mb).
    #[arg(long, default_value_t = playpulse::config::StoreConfig::default().cache_mb)]
    cache_mb: u64,
    /// Where the store goes (default: a fresh temporary directory, removed after).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A log that cannot be written (a full disk under it) is dropped: its
        // fallback report to stderr would fail the same way, and panic.
        .log_internal_errors(false)
        .init();
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

/// Writes a line to stderr, ignoring a failure (a full disk under the log
/// must not turn a clean exit into a panic).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// How long `produce` and `import` wait for the brokers (to answer, to take a record).
const CLI_BROKER_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a clean shutdown may take before the process exits anyway.
const SHUTDOWN_SECONDS: u64 = 30;
/// How long the way out after a fatal fault may take.
const FATAL_EXIT_SECONDS: u64 = 10;

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
        Command::Run { config, data_dir } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            init_logging(&cfg.log.level);
            // The data dir and everything the daemon writes is its owner's alone.
            // SAFETY: umask(2) only sets the process's file mode mask.
            unsafe { libc::umask(0o077) };
            std::fs::create_dir_all(&cfg.data_dir)
                .and_then(|()| {
                    std::fs::set_permissions(
                        &cfg.data_dir,
                        std::os::unix::fs::PermissionsExt::from_mode(0o700),
                    )
                })
                .with_context(|| {
                    format!(
                        "data_dir = {:?}: cannot create it as a private directory (choose a directory you own)",
                        cfg.data_dir.display().to_string()
                    )
                })?;
            let system = actix::System::new();
            system.block_on(async move {
                // Ports first: nothing starts if the dashboard cannot listen.
                let http = if cfg.http.enabled {
                    Some(
                        tokio::net::TcpListener::bind(&cfg.http.listen)
                            .await
                            .with_context(|| {
                                format!(
                                    "http.listen = {:?}: cannot listen there (in use? set another port, or 0 for any)",
                                    cfg.http.listen
                                )
                            })?,
                    )
                } else {
                    None
                };
                // The control socket and the dashboard answer from here on; until
                // the daemon runs, `status` says what the start waits for.
                let gate = std::sync::Arc::new(Gate::new(cfg.clone()));
                let limits = playpulse::admin::server::Limits {
                    max_clients: cfg.admin.max_clients,
                    max_request: cfg.admin.max_request_bytes,
                    idle: Duration::from_secs(cfg.admin.client_timeout_seconds),
                };
                let mut first = Socket::bind(&cfg.socket_path())?;
                actix_rt::spawn(first.serve(gate.clone(), limits));
                let socket = std::sync::Arc::new(std::sync::Mutex::new(Some(first)));
                // A socket file removed from under the daemon is made again.
                let (watched, watch_gate, path) = (socket.clone(), gate.clone(), cfg.socket_path());
                actix_rt::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        let mut slot = watched.lock().unwrap_or_else(|p| p.into_inner());
                        let Some(current) = slot.as_ref() else { return };
                        if current.is_in_place() {
                            continue;
                        }
                        tracing::warn!("the control socket {} went missing; making it again", path.display());
                        match Socket::bind(&path) {
                            Ok(mut s) => {
                                actix_rt::spawn(s.serve(watch_gate.clone(), limits));
                                *slot = Some(s);
                            }
                            Err(e) => tracing::error!("cannot make the control socket again: {e}"),
                        }
                    }
                });
                let http_addr = match http {
                    Some(listener) => {
                        let addr = listener.local_addr()?.to_string();
                        tracing::info!("dashboard at http://{addr}/ (JSON API /api/..., metrics /metrics)");
                        let app = playpulse::http::router(gate.clone());
                        actix_rt::spawn(async move {
                            if let Err(e) = axum::serve(listener, app).await {
                                tracing::error!("http server stopped: {e}");
                            }
                        });
                        Some(addr)
                    }
                    None => None,
                };
                let cluster = if cfg.kafka.embedded() {
                    None
                } else {
                    gate.waiting_for(format!("the brokers at {}", cfg.kafka.brokers));
                    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let (b, k, st, g) = (cfg.kafka.brokers.clone(), cfg.kafka.clone(), stop.clone(), gate.clone());
                    let wait = tokio::task::spawn_blocking(move || {
                        kafka::wait_for_cluster(&b, &k, &st, |why| g.waiting_for(why))
                    });
                    tokio::select! {
                        r = wait => match r.map_err(anyhow::Error::msg)?? {
                            Some(c) => Some(c),
                            None => return Ok(None),
                        },
                        _ = shutdown_signal() => {
                            stop.store(true, std::sync::atomic::Ordering::Relaxed);
                            tracing::info!("stopped while waiting for the brokers");
                            drop(socket.lock().unwrap_or_else(|p| p.into_inner()).take());
                            return Ok(None);
                        }
                    }
                };
                gate.waiting_for("the pipeline to start".into());
                let daemon = Daemon::start_on(&cfg, Vec::new(), cluster)?;
                if cfg.kafka.embedded() {
                    println!("embedded broker: {}", daemon.bootstrap);
                }
                let admin = std::sync::Arc::new(
                    Admin::new(daemon.handles(), cfg.clone())
                        .await
                        .map_err(anyhow::Error::msg)?,
                );
                if let Some(addr) = http_addr {
                    let _ = admin.http.set(addr);
                }
                gate.ready(admin.clone());
                tracing::info!("playpulse running; data dir {}", cfg.data_dir.display());
                let fatal = daemon.fatal.clone();
                let failed = tokio::select! {
                    _ = shutdown_signal() => None,
                    _ = admin.shutdown.notified() => {
                        tracing::info!("shutdown requested on the control socket");
                        None
                    }
                    m = fatal.wait() => Some(m),
                };
                // Whatever hangs on the way out (a full disk under sled's flush, a
                // broker that does not answer the consumer's close), the process ends.
                let (limit, code) = match &failed {
                    Some(_) => (FATAL_EXIT_SECONDS, 2),
                    None => (SHUTDOWN_SECONDS, 1),
                };
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(limit));
                    say(&format!("error: shutdown did not finish within {limit} s; exiting"));
                    std::process::exit(code);
                });
                if let Some(m) = &failed {
                    tracing::error!("stopping: {m}; exiting with status 2 (a restart reads again from the stored offsets)");
                }
                daemon.shutdown().await;
                drop(socket.lock().unwrap_or_else(|p| p.into_inner()).take());
                Ok::<_, anyhow::Error>(failed)
            })?
            .map_or(Ok(()), |m| {
                say(&format!("error: {m}"));
                std::process::exit(2)
            })
        }
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
        } => {
            let store = Store::open(&data_dir, 64)?;
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
        } => {
            let store = Store::open(&data_dir, 64)?;
            // The daemon's path: the champion with its affinity weight, the
            // user's catalog profile, the titles.
            let champion = load_serving(&store)?.map(|(id, bundle, affinity_weight)| {
                playpulse::ml::serve::Champion {
                    id,
                    recommender: Recommender::new(bundle),
                    affinity_weight,
                }
            });
            let hints = Hints { region, genre };
            let Some(reply) = playpulse::ml::recommend::recommend(
                champion.as_ref(),
                |u| store.user_profile(u),
                &playpulse::views::indexes::titles_of(&store)?,
                &user,
                k,
                &hints,
            )?
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
                    serde_json::to_value(playpulse::export::lake::export_parquet(&store, &out, k)?)?
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
        Command::Bench {
            which:
                BenchCommand::Graph {
                    events,
                    users,
                    tracks,
                    queries,
                    seed,
                },
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
        Command::Bench {
            which:
                BenchCommand::Classify {
                    events,
                    seed,
                    tree_max_depth,
                    tree_max_rows,
                    svm_max_rows,
                },
        } => {
            let params = ClassifyParams {
                seed,
                tree_max_depth,
                tree_max_rows,
                svm_max_rows,
                ..ClassifyParams::default()
            };
            for line in playpulse::runtime::bench::ml::classify(&events, &params)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Bench {
            which:
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
                },
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
        Command::Bench {
            which:
                BenchCommand::Soak {
                    events,
                    bad_fraction,
                    seed,
                    pipeline,
                },
        } => {
            let (args, dir, _tmp) = pipeline_bench(events, bad_fraction, seed, pipeline)?;
            let report = playpulse::runtime::soak::soak(&args, &dir)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Bench {
            which:
                BenchCommand::Ingest {
                    events,
                    bad_fraction,
                    seed,
                    pipeline,
                },
        } => {
            let (args, dir, _tmp) = pipeline_bench(events, bad_fraction, seed, pipeline)?;
            let report = bench::ingest(&args, &dir)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}
