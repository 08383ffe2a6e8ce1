//! Wires the actors into a running pipeline and takes it down cleanly.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use thiserror::Error;

use crate::actors::evaluator::EvaluatorActor;
use crate::actors::messages::CloseStore;
use crate::actors::messages::{Drain, StopProducing};
use crate::actors::monitor::MonitorActor;
use crate::actors::parser::ParserActor;
use crate::actors::producer::{Feed, ProducerActor};
use crate::actors::store::StoreActor;
use crate::actors::trainer::TrainerActor;
use crate::actors::validator::ValidatorActor;
use crate::cluster::Cluster;
use crate::config::{Config, ProducerMode};
use crate::domain::event::Kind;
use crate::ingest::pipeline::{Ownership, Progress};
use crate::ingest::topics::TopicSpec;
use crate::ingest::validate::Validator;
use crate::kafka::{self, Embedded, KafkaGlueError, Source, TopicKinds};
use crate::ml::serve::Serving;
use crate::store::{Store, StoreError, StoreView};
use crate::synth::produce::{Synth, SynthSpec};
use crate::views::indexes::{Indexes, SharedIndexes};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kafka(#[from] KafkaGlueError),
    #[error("the group: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot start the {what} thread: {source}; the system is out of threads or memory")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

/// A running pipeline.
pub struct Daemon {
    pub progress: Arc<Progress>,
    /// Raised when the daemon cannot go on (the store cannot write).
    pub fatal: Arc<crate::ingest::pipeline::Fatal>,
    pub bootstrap: String,
    pub namespace: String,
    pub store: Addr<StoreActor>,
    /// The store's read handle for other threads.
    pub view: StoreView,
    /// The graph and titles indexes (fed by the store's actor after each batch).
    pub indexes: SharedIndexes,
    pub trainer: Addr<TrainerActor>,
    pub evaluator: Addr<EvaluatorActor>,
    /// The serving champion (recommendations read it without waiting on training).
    pub serving: Serving,
    pub parser: Addr<ParserActor>,
    pub started: std::time::Instant,
    /// Whether an operator paused ingest.
    pub paused: Arc<std::sync::atomic::AtomicBool>,
    /// The partitions this member of the consumer group owns now.
    pub assignment: kafka::Assignment,
    /// This member's name in the group and how it commits there.
    pub claims: Arc<kafka::Claims>,
    /// Set at shutdown: the consumer's waits on the brokers give up.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The live QoE, engagement and pipeline windows.
    pub analytics: Arc<std::sync::Mutex<crate::views::analytics::Analytics>>,
    /// The alert rules' states (evaluated by `runtime::alerting`).
    pub alerts: super::alerting::SharedBook,
    pub producers: Vec<(Kind, Addr<ProducerActor>)>,
    _monitor: Addr<MonitorActor>,
    arbiters: Vec<Arbiter>,
    /// The fold-in's thread: it ends once the store's actor (its sender) stops.
    fold_thread: Option<std::thread::JoinHandle<()>>,
    /// This member's part in its group (`cluster.enabled`).
    pub cluster: Option<Cluster>,
    cluster_threads: Option<crate::cluster::Threads>,
    embedded: Option<Embedded>,
}

/// Extra producers a caller supplies (benchmarks): (kind, feed, rate).
pub type ExtraFeeds = Vec<(Kind, Feed, f64)>;

impl Daemon {
    /// What the admin commands reach of this daemon.
    pub fn handles(&self) -> crate::admin::context::Handles {
        crate::admin::context::Handles {
            started: self.started,
            namespace: self.namespace.clone(),
            bootstrap: self.bootstrap.clone(),
            store: crate::admin::context::StoreHandle {
                status: self.store.clone().recipient(),
                stats: self.store.clone().recipient(),
                counters: self.store.clone().recipient(),
                backup: self.store.clone().recipient(),
            },
            view: self.view.clone(),
            indexes: self.indexes.clone(),
            pause: self.parser.clone().recipient(),
            train: self.trainer.clone().recipient(),
            evaluate: self.evaluator.clone().recipient(),
            set_champion: self.evaluator.clone().recipient(),
            import_model: self.evaluator.clone().recipient(),
            serving: self.serving.clone(),
            producers: self
                .producers
                .iter()
                .map(|(k, p)| (*k, p.clone().recipient()))
                .collect(),
            progress: self.progress.clone(),
            paused: self.paused.clone(),
            assignment: self.assignment.clone(),
            claims: self.claims.clone(),
            fatal: self.fatal.clone(),
            analytics: self.analytics.clone(),
            alerts: self.alerts.clone(),
            cluster: self.cluster.clone(),
        }
    }
}

impl Daemon {
    /// Starts the pipeline (call inside a running actix `System`); with
    /// brokers configured, waits up to a minute for them to answer.
    pub fn start(cfg: &Config, extra: ExtraFeeds) -> Result<Daemon, DaemonError> {
        Daemon::start_on(cfg, extra, None)
    }

    /// [`Daemon::start`] with the brokers' cluster already known (`cluster`,
    /// from [`kafka::wait_for_cluster`]).
    pub fn start_on(
        cfg: &Config,
        extra: ExtraFeeds,
        cluster: Option<String>,
    ) -> Result<Daemon, DaemonError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| DaemonError::DataDir {
            path: cfg.data_dir.display().to_string(),
            source,
        })?;
        // Training's parallel loops give way to requests, as ingest does.
        crate::domain::worker::set_background(cfg.ingest.background);
        crate::domain::worker::background_rayon();
        let mut store = Store::open(&cfg.data_dir, cfg.store.cache_mb)?;
        store.set_limits(crate::store::bounds::Limits {
            videos: cfg.store.max_tracked_videos,
            listening_pairs: cfg.store.max_listening_pairs,
            min_free_bytes: cfg.store.min_free_mb << 20,
        });
        store.set_retention(cfg.store.retention.retention());
        store.set_pair_tuning(cfg.store.pair_tuning());
        store.set_rewrite_tuning(cfg.store.rewrite_tuning());
        store.set_rollup_tuning(cfg.analytics.rollup_tuning())?;
        let kinds = TopicKinds::new(&cfg.kafka.topics).map_err(KafkaGlueError::from)?;
        let (embedded, bootstrap, namespace) = if cfg.kafka.embedded() {
            let mut topics: Vec<(String, i32)> = cfg
                .kafka
                .topics
                .values()
                .filter_map(|t| TopicSpec::plain(t).map(str::to_string))
                .map(|t| (t, cfg.kafka.embedded_partitions))
                .collect();
            if cfg.cluster.enabled {
                topics.extend(Cluster::embedded_topics(&cfg.cluster, &cfg.kafka.group_id));
            }
            let e = Embedded::start(&topics)?;
            let bootstrap = e.bootstrap.clone();
            // Every embedded broker starts empty at offset 0: its offsets are its own.
            let ns = format!("embedded:{}", crate::domain::timefmt::now_ms());
            tracing::info!(
                "embedded Kafka broker listening at {bootstrap} (other clients may connect)"
            );
            (Some(e), bootstrap, ns)
        } else {
            let b = cfg.kafka.brokers.clone();
            let cluster = match cluster {
                Some(c) => c,
                None => kafka::cluster_namespace(&b, &cfg.kafka, Duration::from_secs(60))?,
            };
            let (ns, reset) = store.namespace_epoch(&cluster, |parts| {
                let probe = kafka::WatermarkProbe::new(&b, &cfg.kafka).ok()?;
                match probe.high_watermarks(parts, Duration::from_secs(10)) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        tracing::warn!("cannot ask the brokers for high watermarks ({e}): keeping the stored offsets");
                        None
                    }
                }
            })?;
            for (t, p, next, high) in &reset {
                tracing::warn!(
                    "partition {t}/{p} holds fewer records (next offset {high}) than this store read of it ({next}): \
                     the topic was recreated or the cluster's offsets reset; it is read again from its start \
                     under offset namespace {ns}, beside what was stored before"
                );
            }
            tracing::info!("using brokers {b} (cluster {cluster}, offset namespace {ns})");
            (None, b, ns)
        };
        let progress = Arc::new(Progress::default());
        let ownership = Arc::new(Ownership::default());
        // The ingest clients' threads (librdkafka's) run at background
        // priority, as ingest's own stages do.
        let source = crate::domain::worker::in_background(|| {
            Source::new(
                &bootstrap,
                &cfg.kafka,
                &kinds,
                store.view(),
                &namespace,
                ownership.clone(),
            )
        })?;
        let paused = source.paused_flag();
        let assignment = source.assignment.clone();
        let claims = source.claims.clone();
        let stopping = source.stopping_flag();

        let store_arb = Arbiter::new();
        let validator_arb = Arbiter::new();
        let parser_arb = Arbiter::new();
        let producer_arb = Arbiter::new();
        // Ingest is throughput work: a request's threads go first when the
        // cores are busy (`bench serve`: recommend's service p50 3.1 -> 0.5 ms
        // while ingesting 50k events/s, ingest unchanged).
        for arb in [&store_arb, &validator_arb, &parser_arb, &producer_arb] {
            arb.spawn_fn(crate::domain::worker::background_priority);
        }

        let analytics = Arc::new(std::sync::Mutex::new(
            crate::views::analytics::Analytics::new(cfg.analytics.clone()),
        ));
        let (p, ns, an, fl) = (
            progress.clone(),
            namespace.clone(),
            analytics.clone(),
            ownership.clone(),
        );
        let view = store.view();
        let indexes: SharedIndexes =
            Arc::new(Indexes::build(&store, cfg.analytics.trending_half_life())?);
        let ix = indexes.clone();
        let serving = Serving::default();
        // The fold-in tells the group's publisher whom it folded in.
        let (user_feed, user_rx) = match cfg.cluster.enabled {
            true => {
                let (tx, rx) = std::sync::mpsc::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let (fold, fold_thread) = if cfg.models.fold_in {
            let (tx, h) = crate::actors::fold::spawn(
                &cfg.models,
                serving.clone(),
                view.clone(),
                indexes.clone(),
                user_feed,
            )
            .map_err(|source| DaemonError::Thread {
                what: "fold-in",
                source,
            })?;
            (Some(tx), Some(h))
        } else {
            (None, None)
        };
        if !cfg.cluster.enabled {
            // Rows a group's peers published, held while this store was a
            // member: a daemon alone answers for its own events.
            let dropped = view.drop_peer_rollups()?;
            if dropped > 0 {
                tracing::info!("not in a group: dropped {dropped} parts of former peers' rollups");
            }
        }
        let (cluster, cluster_threads, share) = if cfg.cluster.enabled {
            let deps = crate::cluster::Deps {
                brokers: bootstrap.clone(),
                kafka: cfg.kafka.clone(),
                view: view.clone(),
                serving: serving.clone(),
                progress: progress.clone(),
                keep_versions: cfg.models.keep_versions,
                http: (cfg.http.enabled && !cfg.http.listen.ends_with(":0"))
                    .then(|| cfg.http.listen.clone()),
                music: store.music_aggregates()?,
                seq: store.next_seq(),
                stored: store.counter("stored").unwrap_or(0),
                users: user_rx,
                max_peer_users: cfg.models.fold_in_max_users,
                indexes: indexes.clone(),
            };
            let (c, t, feed) = Cluster::start(&cfg.cluster, deps)?;
            (Some(c), Some(t), Some(feed))
        } else {
            (None, None, None)
        };
        let alerts = super::alerting::start(view.clone(), &cfg.alerts, cluster.clone());
        let store = StoreActor::start_in_arbiter(&store_arb.handle(), move |_| StoreActor {
            store,
            namespace: ns,
            progress: p,
            indexes: ix,
            analytics: an,
            ownership: fl,
            fold,
            share,
        });
        let store_rcpt = store.clone().recipient();
        let validator = Validator::new(&cfg.validation);
        let vp = progress.clone();
        let rollup = cfg.analytics.rollup_tuning();
        let validator =
            ValidatorActor::start_in_arbiter(&validator_arb.handle(), move |_| ValidatorActor {
                validator,
                progress: vp,
                store: store_rcpt,
                rollup,
            });
        let fatal = Arc::new(crate::ingest::pipeline::Fatal::default());
        let (ingest, p, vr) = (cfg.ingest.clone(), progress.clone(), validator.recipient());
        let fatal_for_parser = fatal.clone();
        let parser = ParserActor::start_in_arbiter(&parser_arb.handle(), move |_| {
            ParserActor::new(source, kinds, vr, &ingest, p, fatal_for_parser)
        });

        let run_synth = match cfg.producers.mode {
            ProducerMode::Always => true,
            ProducerMode::Embedded => cfg.kafka.embedded(),
            ProducerMode::Never => false,
        };
        let max_lag = cfg.kafka.embedded().then_some(cfg.producers.max_lag_events);
        let spec = SynthSpec {
            users: cfg.producers.users as usize,
            videos: cfg.producers.videos as usize,
            tracks: cfg.producers.tracks as usize,
            seed: cfg.producers.seed,
            start_ms: None,
        };
        // Every configured synthetic producer exists (an operator may start a stopped
        // one); they run from the start when producers.mode says so.
        let mut feeds: Vec<(Kind, Feed, f64, bool)> = Vec::new();
        for (kind, rate) in &cfg.producers.rate {
            feeds.push((
                *kind,
                Feed::Synth(Box::new(Synth::new(*kind, &spec))),
                *rate,
                run_synth,
            ));
        }
        feeds.extend(extra.into_iter().map(|(k, f, r)| (k, f, r, true)));
        let mut producers = Vec::new();
        for (kind, feed, rate, running) in feeds {
            let Some(topic) = cfg
                .kafka
                .topics
                .get(&kind)
                .and_then(|t| TopicSpec::plain(t).map(str::to_string))
            else {
                if running {
                    tracing::warn!(
                        "no plain topic configured for {kind}: its producer does not run"
                    );
                }
                continue;
            };
            let producer =
                crate::domain::worker::in_background(|| kafka::producer(&bootstrap, &cfg.kafka))?;
            let p = progress.clone();
            if running {
                tracing::info!(
                    "producing {kind} records to {topic} at {}",
                    if rate > 0.0 {
                        format!("{rate}/s")
                    } else {
                        "full speed".into()
                    }
                );
            }
            let actor = ProducerActor::start_in_arbiter(&producer_arb.handle(), move |_| {
                let a = ProducerActor::new(producer, topic, feed, rate, max_lag, p);
                if running {
                    a
                } else {
                    a.stopped()
                }
            });
            producers.push((kind, actor));
        }
        // Training and evaluation on an arbiter of their own: stopping it at
        // shutdown drops their store handles, so the store closes with the daemon.
        let models_arb = Arbiter::new();
        let (mc, sr, v, s) = (
            cfg.models.clone(),
            store.clone().recipient(),
            view.clone(),
            serving.clone(),
        );
        let evaluator = EvaluatorActor::start_in_arbiter(&models_arb.handle(), move |_| {
            EvaluatorActor::new(mc, sr, v, s)
        });
        let (mc, sr, ev, p, s, c) = (
            cfg.models.clone(),
            store.clone().recipient(),
            evaluator.clone(),
            progress.clone(),
            serving.clone(),
            cluster.clone(),
        );
        let trainer = TrainerActor::start_in_arbiter(&models_arb.handle(), move |_| {
            TrainerActor::new(mc, sr, ev, p, s, c)
        });
        let monitor = MonitorActor::new(
            progress.clone(),
            cfg.ingest.log_interval,
            fatal.clone(),
            cfg.store.write_timeout,
        )
        .start();
        Ok(Daemon {
            progress,
            fatal,
            bootstrap,
            namespace,
            store,
            view,
            indexes,
            trainer,
            evaluator,
            serving,
            parser,
            started: std::time::Instant::now(),
            paused,
            assignment,
            claims,
            stopping,
            analytics,
            alerts,
            producers,
            _monitor: monitor,
            arbiters: vec![
                store_arb,
                validator_arb,
                parser_arb,
                producer_arb,
                models_arb,
            ],
            fold_thread,
            cluster,
            cluster_threads,
            embedded,
        })
    }

    /// Stops producers, drains every batch in flight into the store, commits, and stops the threads.
    pub async fn shutdown(mut self) {
        for (_, p) in self.producers.drain(..) {
            let _ = p.send(StopProducing).await;
        }
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if self.parser.send(Drain).await.is_err() {
            tracing::warn!("parser already stopped");
        }
        if self.store.send(CloseStore).await.is_err() {
            tracing::warn!("store already stopped");
        }
        for a in self.arbiters.drain(..) {
            a.stop();
            let _ = a.join();
        }
        if let Some(h) = self.fold_thread.take() {
            if h.join().is_err() {
                tracing::error!("the fold-in thread panicked");
            }
        }
        // After the store's last batch: its pairs are published before the member leaves.
        if let Some(t) = self.cluster_threads.take() {
            t.stop();
        }
        drop(self.embedded.take());
        let p = &self.progress;
        tracing::info!(
            "stopped: {} stored, {} rejected, {} duplicates skipped",
            Progress::get(&p.stored),
            Progress::get(&p.rejected),
            Progress::get(&p.duplicates_skipped)
        );
    }
}

/// SIGINT and SIGTERM, listened for from when it is made: a signal that
/// arrives while the daemon still starts is kept and answered once the
/// daemon waits for one (listening only then left the default action, which
/// killed a daemon signalled mid-start).
pub struct ShutdownSignal {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Starts listening (inside the runtime).
    pub fn listen() -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let open = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot listen for {name} ({e})");
                None
            }
        };
        ShutdownSignal {
            int: open(SignalKind::interrupt(), "SIGINT"),
            term: open(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Resolves on the next SIGINT or SIGTERM (at once for one that came
    /// since the last call).
    pub async fn recv(&mut self) {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.int) => tracing::info!("SIGINT: shutting down"),
            _ = next(&mut self.term) => tracing::info!("SIGTERM: shutting down"),
        }
    }
}
