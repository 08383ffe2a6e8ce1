//! Trainer actor: decides when to train (every N new events, every T seconds,
//! once N users were folded into the champion since the last run — the drift
//! from what it was trained on —, on demand), takes a consistent snapshot of the store on the store's thread,
//! fits the recommender and the engagement classifiers on a thread of its own
//! (ingestion never stalls), and hands the candidates to the evaluator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::evaluator::EvaluatorActor;
use super::messages::{Candidates, RunEnded, TakeSnapshot, TrainNow};
use crate::config::ModelsConfig;
use crate::ingest::pipeline::Progress;
use crate::ml::classify;
use crate::ml::live::Drift;
use crate::ml::train::{fit_candidate, SnapshotSpec, TrainSpec};
use crate::ml::{TrainError, TrainOutcome};

pub struct TrainerActor {
    cfg: ModelsConfig,
    store: Recipient<TakeSnapshot>,
    evaluator: Addr<EvaluatorActor>,
    progress: Arc<Progress>,
    /// The fold-in's counts (the drift since the last run).
    serving: crate::ml::serve::Serving,
    /// `progress.stored` at the last training.
    trained_at: u64,
    /// The fold-in's counts at the last training.
    drift_at: Drift,
    last: Instant,
    busy: bool,
    /// Operators waiting for the current run's outcome.
    waiting: Vec<tokio::sync::oneshot::Sender<Result<TrainOutcome, TrainError>>>,
    /// The group this member is part of: only its trainer trains, on every
    /// member's pairs (none: this daemon trains on its own).
    cluster: Option<crate::cluster::Cluster>,
}

/// Why a training starts on its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Due {
    /// Events stored since the last training reached `train_every_events`.
    Events(u64),
    /// Users folded in since the last training reached `retrain_folded_users`.
    FoldedUsers(u64),
    /// The folded users' pairs champion `model` was not trained on reached
    /// `retrain_new_pairs_share` of its `pairs`.
    NewPairs { model: u64, new: u64, pairs: u64 },
    /// `train_every` passed with events stored since the last training.
    Interval(u64),
}

impl std::fmt::Display for Due {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Due::Events(n) => write!(f, "{n} events stored since the last training"),
            Due::FoldedUsers(n) => write!(f, "{n} users folded in since the last training"),
            Due::NewPairs { model, new, pairs } => write!(
                f,
                "{new} new pairs folded in since the last training, {:.1} % of champion v{model}'s {pairs}",
                100.0 * *new as f64 / (*pairs).max(1) as f64
            ),
            Due::Interval(n) => write!(
                f,
                "the training interval passed with {n} events stored since the last training"
            ),
        }
    }
}

impl TrainerActor {
    pub fn new(
        cfg: ModelsConfig,
        store: Recipient<TakeSnapshot>,
        evaluator: Addr<EvaluatorActor>,
        progress: Arc<Progress>,
        serving: crate::ml::serve::Serving,
        cluster: Option<crate::cluster::Cluster>,
    ) -> TrainerActor {
        TrainerActor {
            cfg,
            store,
            evaluator,
            progress,
            serving,
            trained_at: 0,
            drift_at: Drift::default(),
            last: Instant::now(),
            busy: false,
            waiting: Vec::new(),
            cluster,
        }
    }

    /// Events stored here, or in the whole group (as its members last said).
    fn stored(&self) -> u64 {
        let own = Progress::get(&self.progress.stored);
        self.cluster.as_ref().map_or(own, |c| c.group_stored(own))
    }

    /// Whether this daemon trains: alone, or as its group's trainer.
    fn trains(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.is_trainer())
    }

    /// Why a training is due now, if it is.
    fn due(&self) -> Option<Due> {
        let stored = self.stored();
        let new = stored.saturating_sub(self.trained_at);
        let live = self.serving.live().drift();
        let drift = live.folded_total.saturating_sub(self.drift_at.folded_total);
        if self.cfg.train_every_events > 0 && new >= self.cfg.train_every_events {
            return Some(Due::Events(new));
        }
        if self.cfg.retrain_folded_users > 0 && drift >= self.cfg.retrain_folded_users {
            return Some(Due::FoldedUsers(drift));
        }
        if let Some(d) = self.new_pairs_due(&live) {
            return Some(d);
        }
        if !self.cfg.train_every.is_zero() && new > 0 && self.last.elapsed() >= self.cfg.train_every
        {
            return Some(Due::Interval(new));
        }
        None
    }

    /// Due when the pairs folded in since the last training that the champion
    /// was not trained on reach `retrain_new_pairs_share` of its pairs.
    fn new_pairs_due(&self, live: &Drift) -> Option<Due> {
        if self.cfg.retrain_new_pairs_share <= 0.0 {
            return None;
        }
        let champion = self.serving.get()?;
        if live.model != Some(champion.id) {
            return None;
        }
        let since = if self.drift_at.model == live.model {
            live.new_pairs.saturating_sub(self.drift_at.new_pairs)
        } else {
            live.new_pairs
        };
        let pairs = champion.recommender.bundle().seen.nnz() as u64;
        let due = Due::NewPairs {
            model: champion.id,
            new: since,
            pairs,
        };
        (since as f64 >= self.cfg.retrain_new_pairs_share * pairs as f64 && since > 0)
            .then_some(due)
    }

    fn start_training(&mut self, ctx: &mut Context<Self>) -> Result<(), TrainError> {
        if let Some(c) = &self.cluster {
            c.check_trainer("train")?;
        }
        if self.busy {
            return Ok(());
        }
        // A group trains on every member's pairs: its events count (the
        // trainer may hold none of its own).
        let min_events = match &self.cluster {
            Some(_) => {
                let stored = self.stored();
                if stored < self.cfg.min_events {
                    return Err(TrainError::Waiting {
                        stored,
                        min_events: self.cfg.min_events,
                    });
                }
                0
            }
            None => self.cfg.min_events,
        };
        let als = self.cfg.als().check()?;
        self.busy = true;
        self.trained_at = self.stored();
        self.drift_at = self.serving.live().drift();
        self.last = Instant::now();
        let max_events = if self.cfg.classifiers || self.cfg.rerank {
            self.cfg.classifier_max_events
        } else {
            0
        };
        let weights = self.cfg.event_weights.by_action();
        let catalog = self.cfg.affinity_weight > 0.0;
        let snap = self.store.send(TakeSnapshot(SnapshotSpec {
            music_weights: weights,
            max_events,
            min_events,
            catalog,
        }));
        let cfg = self.cfg.clone();
        // The serving champion's factors seed the fit (a warm start).
        let warm = self.serving.get();
        let cluster = self.cluster.clone();
        let me = ctx.address();
        let evaluator = self.evaluator.clone();
        actix::spawn(async move {
            let mut snap = match snap.await {
                Ok(Ok(s)) => s,
                Ok(Err(why)) => {
                    tracing::info!("training skipped: {why}");
                    return me.do_send(RunEnded(Err(why)));
                }
                Err(e) => {
                    tracing::error!("training skipped: store unavailable: {e}");
                    return me.do_send(RunEnded(Err(e.into())));
                }
            };
            // CPU-heavy: off the actor threads; a panic ends the run with an error.
            let on_panic = me.clone();
            crate::domain::worker::spawn(
                "training",
                move || {
                    // The group's trainer: every other member's pairs too.
                    snap.peers = cluster.map(|c| c.peer_pairs());
                    if let Err(e) = snap.derive_video_pairs() {
                        tracing::error!("training skipped: {e}");
                        return me.do_send(RunEnded(Err(e)));
                    }
                    let classifiers = if snap.events.is_empty() || !cfg.classifiers {
                        Vec::new()
                    } else {
                        classify::train_and_evaluate(&snap.events, &cfg.classify()).unwrap_or_else(
                            |e| {
                                tracing::info!("classifiers skipped: {e}");
                                Vec::new()
                            },
                        )
                    };
                    let spec = TrainSpec {
                        warm,
                        ..TrainSpec::new(als, &cfg)
                    };
                    let blend = snap.blend(cfg.affinity_weight);
                    match fit_candidate(snap.pairs, &spec) {
                        Ok(candidate) => evaluator.do_send(Candidates {
                            candidate,
                            blend,
                            genres: snap.genres,
                            regions: snap.regions,
                            music_items: snap.music_items,
                            data: snap.data,
                            classifiers,
                            rerank: cfg.rerank.then(|| cfg.rerank()),
                            events: snap.events,
                            done: me.recipient(),
                        }),
                        Err(e) => {
                            tracing::info!("training skipped: {e}");
                            me.do_send(RunEnded(Err(e.into())));
                        }
                    }
                },
                move |why| on_panic.do_send(RunEnded(Err(TrainError::Failed(why)))),
            );
        });
        Ok(())
    }
}

impl Actor for TrainerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(1), |a, ctx| {
            if !(a.cfg.enabled && !a.busy && a.trains()) {
                return;
            }
            if let Some(why) = a.due() {
                tracing::info!("training: {why}");
                let _ = a.start_training(ctx);
            }
        });
    }
}

impl Handler<TrainNow> for TrainerActor {
    type Result = ResponseFuture<Result<TrainOutcome, TrainError>>;

    fn handle(&mut self, _: TrainNow, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.start_training(ctx) {
            return Box::pin(async move { Err(e) });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting.push(tx);
        Box::pin(async move { rx.await.unwrap_or(Err(TrainError::Stopped)) })
    }
}

impl Handler<RunEnded> for TrainerActor {
    type Result = ();

    fn handle(&mut self, msg: RunEnded, _: &mut Context<Self>) {
        self.busy = false;
        for w in self.waiting.drain(..) {
            let _ = w.send(msg.0.clone());
        }
    }
}
