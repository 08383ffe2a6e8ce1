//! The command line's shape: every subcommand and its arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "playpulse",
    version,
    about = "Streaming analytics and recommendation daemon for video and music platforms"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// List the model versions, one JSON object per line; or promote / roll
    /// back; or import factors trained elsewhere (daemon stopped).
    Models {
        #[arg(long, env = "PLAYPULSE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Make this version the champion.
        #[arg(long, conflicts_with_all = ["rollback", "import"])]
        promote: Option<u64>,
        /// Go back to the previous champion.
        #[arg(long, conflicts_with = "import")]
        rollback: bool,
        /// Import the factors `spark/train_als.py` wrote to DIR (meta.json,
        /// users/*.parquet, items/*.parquet) as a candidate version: scored on
        /// the store's held-out split against the champion and popularity, and
        /// promoted as a trained version would be. Prints one JSON line.
        #[arg(long, value_name = "DIR")]
        import: Option<PathBuf>,
        /// The daemon's config file (its [models] section: split, k, metric,
        /// promotion rule, listening weights).
        #[arg(long)]
        config: Option<PathBuf>,
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
        /// Video or music (default: where most of what the user has seen is).
        #[arg(long)]
        domain: Option<playpulse::domain::event::Domain>,
        /// The daemon's config file (its listening weights fold a user in as it does).
        #[arg(long)]
        config: Option<PathBuf>,
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
        /// The daemon's config file (parquet: its [models] split and listening
        /// weights mark and weigh the pairs).
        #[arg(long)]
        config: Option<PathBuf>,
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
pub struct ProduceArgs {
    #[arg(long)]
    pub brokers: String,
    #[arg(long)]
    pub topic: String,
    /// video, users, movies, series or music.
    #[arg(long, default_value = "video")]
    pub kind: String,
    /// Records to send (0 = without end).
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Records per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 5000)]
    pub users: usize,
    #[arg(long, default_value_t = 1000)]
    pub videos: usize,
    #[arg(long, default_value_t = 2000)]
    pub tracks: usize,
    /// First event time (RFC 3339), or `now` to stamp records with the wall clock.
    #[arg(long, default_value = "2025-01-01T00:00:00Z")]
    pub start: String,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// A long run on the embedded broker: memory and store size sampled every 5 %,
    /// then every record checked (lost, duplicated).
    Soak {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        #[arg(long, default_value_t = 0.001)]
        bad_fraction: f64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// store.retention.max_size_mb for the run (0: keep every event): the
        /// check is then that every stored event is in its pair once.
        #[arg(long, default_value_t = 0)]
        retention_mb: u64,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Durable rollups: --days of generated views written through the store,
    /// then range queries with filters timed per kind (p50/p99).
    Analytics {
        #[arg(long, default_value_t = 7)]
        days: u32,
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        #[arg(long, default_value_t = 50_000)]
        users: usize,
        #[arg(long, default_value_t = 5_000)]
        videos: usize,
        /// Queries per kind.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long, default_value_t = 5)]
        seed: u64,
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
        /// Rows of the SVM's stratified training subsample (past 2,000, a cascade
        /// of fits of 2,000 rows: 20,000 fit in about 1 s).
        #[arg(long, default_value_t = 20_000)]
        svm_max_rows: usize,
    },
    /// The ranking stage: engagement models (decision tree, SVM) on features
    /// known before a view, in time-ordered periods of a JSON Lines events file;
    /// classification quality (accuracy, weighted P/R/F1, AUC) and whether
    /// re-ranking the recommender's top candidates by them changes NDCG@k.
    Rank {
        #[arg(long)]
        events: PathBuf,
        #[arg(long, default_value_t = 57)]
        seed: u64,
        /// Candidates per user the re-ranking orders.
        #[arg(long, default_value_t = 50)]
        candidates: usize,
        /// Users whose lists are re-ranked in validation and in test (a seeded sample).
        #[arg(long, default_value_t = 2_000)]
        eval_users: usize,
        #[arg(long, default_value_t = 8)]
        tree_max_depth: usize,
        #[arg(long, default_value_t = 100)]
        tree_min_leaf: usize,
        /// Rows of the SVM's stratified training subsample (its kernel matrix is n×n).
        #[arg(long, default_value_t = 3_000)]
        svm_max_rows: usize,
        #[arg(long, default_value_t = 10)]
        k: usize,
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
        /// Also fit a champion on this share of the training pairs (a seeded
        /// draw), then score on the test split: a warm-started retrain from it
        /// (`--warm-iterations`), a cold fit of as many iterations, and the
        /// champion with every user folded in from all their training pairs.
        #[arg(long, default_value_t = 0.0)]
        champion_fraction: f64,
        #[arg(long, default_value_t = 5)]
        warm_iterations: usize,
    },
    /// The trainer's model search on a train split: ALS, EASE, item-kNN and
    /// popularity tuned on a validation share carved from the train split
    /// within --budget-s, each family's best refitted and scored on the test
    /// split; one JSON line per family, then the champion's.
    Models {
        /// Tab-separated `user item weight events positive` with a header.
        #[arg(long)]
        train: PathBuf,
        #[arg(long)]
        test: PathBuf,
        #[arg(long, default_value_t = 10)]
        k: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// The search's time budget, seconds (default: models.search_budget_seconds).
        #[arg(long)]
        budget_s: Option<f64>,
        /// The budget also in fits of the default ALS (default:
        /// models.search_budget_fits; 0: seconds alone).
        #[arg(long)]
        budget_fits: Option<f64>,
        /// Families searched, comma-separated: als, ease, knn, popularity.
        #[arg(long, default_value = "als,ease,knn,popularity")]
        families: String,
        /// Most item columns EASE keeps (default: models.ease_max_items).
        #[arg(long)]
        ease_max_items: Option<usize>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Tab-separated `item genre` with a header (the split's item ids):
        /// adds intra-list genre diversity to the test metrics.
        #[arg(long)]
        genres: Option<PathBuf>,
    },
    /// Event → served freshness on the embedded broker: while it ingests at
    /// --rate events/s, each probe sends a finished view of the item ranked
    /// first for a user and polls their list until the item leaves it.
    Freshness {
        #[arg(long, default_value_t = 50_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 200)]
        probes: usize,
        #[command(flatten)]
        stream: ModelStreamArgs,
        /// A probe whose item is still listed after this many seconds is missed.
        #[arg(long, default_value_t = 10)]
        probe_timeout_seconds: u64,
        #[arg(long, default_value_t = 11)]
        seed: u64,
    },
    /// The HTTP API under load: while the daemon ingests at --ingest events/s,
    /// --rate requests/s (open-loop, keep-alive) to /api/recommend, /api/similar
    /// and /api/trending; p50/p99/max per endpoint.
    Serve {
        #[arg(long, default_value_t = 1_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 50_000.0)]
        ingest: f64,
        /// Listening events/s ingested besides, on a topic of their own (0: none).
        #[arg(long, default_value_t = 0.0)]
        music: f64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[command(flatten)]
        stream: ModelStreamArgs,
        #[arg(long, default_value_t = 13)]
        seed: u64,
        /// The family the champion is: als (the configured fit), or ease or
        /// knn (searched for 30 s, that family alone).
        #[arg(long, default_value = "als", value_parser = parse_family)]
        family: playpulse::ml::family::Family,
    },
    /// The fold-in's solves alone: users folded in per second against random
    /// item factors (the daemon's fold-in code, in parallel).
    Fold {
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        #[arg(long, default_value_t = 5_000)]
        items: usize,
        #[arg(long, default_value_t = 32)]
        factors: usize,
        #[arg(long, default_value_t = 20)]
        pairs_per_user: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 3)]
        seed: u64,
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

/// The generated stream and warm-up of the benchmarks that serve one model
/// (freshness, serve).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ModelStreamArgs {
    /// Stored events before the first (and only) training.
    #[arg(long, default_value_t = 200_000)]
    pub warmup_events: u64,
    #[arg(long, default_value_t = 50_000)]
    pub users: usize,
    #[arg(long, default_value_t = 5_000)]
    pub videos: usize,
    #[arg(long, default_value_t = 32)]
    pub partitions: i32,
    /// The fold-in's solve threads (models.fold_in_threads, checked as the
    /// config is: 0 = every core but one, at most 256).
    #[arg(long, default_value_t = 0)]
    pub fold_in_threads: usize,
}

impl ModelStreamArgs {
    /// Checks them with the stream's rate (`flag` names the rate's option).
    pub fn check(&self, flag: &str, rate: f64) -> anyhow::Result<()> {
        if !(rate.is_finite() && (1.0..=2_000_000.0).contains(&rate)) {
            anyhow::bail!("{flag} {rate}: give events/s in [1, 2000000]");
        }
        if self.warmup_events < 1_000 {
            anyhow::bail!(
                "--warmup-events {}: the first model needs at least 1000",
                self.warmup_events
            );
        }
        if self.users == 0 || self.videos == 0 || !(1..=1024).contains(&self.partitions) {
            anyhow::bail!("--users and --videos must be at least 1, --partitions 1 to 1024");
        }
        Ok(())
    }
}

/// The pipeline the ingest and soak benchmarks run.
#[derive(Args)]
pub struct PipelineArgs {
    #[arg(long, default_value_t = 50_000)]
    pub users: usize,
    #[arg(long, default_value_t = 5_000)]
    pub videos: usize,
    #[arg(long, default_value_t = 32)]
    pub partitions: i32,
    #[arg(long, default_value_t = 20_000)]
    pub batch_size: usize,
    /// The store's cache (store.cache_mb).
    #[arg(long, default_value_t = playpulse::config::StoreConfig::default().cache_mb)]
    pub cache_mb: u64,
    /// Pair deltas held in memory before a compaction (store.pair_compaction_deltas).
    #[arg(long, default_value_t = playpulse::config::StoreConfig::default().pair_compaction_deltas)]
    pub pair_compaction_deltas: usize,
    /// The mean spacing of the events' times, ms (0 to 60000). 50 spreads a
    /// million events over about 14 hours, as a backfill would (rollups then
    /// hold about a row per event); 0 dates them all in one minute, as a
    /// live stream at this rate would.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(0..=60_000))]
    pub step_ms: i64,
    /// The store rewrites its files at this many times their size after the
    /// last rewrite (store.rewrite_ratio; 0: never).
    #[arg(long, default_value_t = playpulse::config::StoreConfig::default().rewrite_ratio)]
    pub rewrite_ratio: f64,
    /// ... and at least this size, MiB (store.rewrite_min_mb).
    #[arg(long, default_value_t = playpulse::config::StoreConfig::default().rewrite_min_mb)]
    pub rewrite_min_mb: u64,
    /// Where the store goes (default: a fresh temporary directory, removed after).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

fn parse_family(s: &str) -> Result<playpulse::ml::family::Family, String> {
    playpulse::ml::family::Family::parse(s)
        .filter(|f| playpulse::ml::family::Family::SEARCHED.contains(f))
        .ok_or_else(|| format!("{s:?}: give als, ease or knn"))
}
