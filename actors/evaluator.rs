//! Evaluator actor: scores each candidate from the trainer on its held-out
//! split (ranking metrics, RMSE, the popularity baseline, and the serving
//! champion on the same split) on a thread of its own, records every model as a
//! version in the store, and promotes the recommender when it beats the
//! champion on the configured metric ([`crate::ml::promote`]). It owns the
//! serving champion: loaded from the store at start (a restart serves without
//! retraining), replaced on promotion.

use actix::prelude::*;

use super::messages::{
    Candidates, EvaluateChampion, Evaluated, ImportModel, RunEnded, SetChampion, TakeSnapshot,
};
use crate::config::ModelsConfig;
use crate::ml::promote;
use crate::ml::registry::{self, Recorded, Run};
use crate::ml::rerank::{self, RerankOutcome, Reranker};
use crate::ml::serve::{load_serving, Serving, ServingModel};
use crate::ml::train::{
    evaluate_candidate, evaluate_champion, evaluate_folded, serving_bundle, SnapshotSpec, TrainSpec,
};
use crate::ml::{ChampionEvaluation, TrainError, TrainOutcome};
use crate::store::StoreView;

pub struct EvaluatorActor {
    cfg: ModelsConfig,
    /// Where snapshots are taken (the store's actor).
    snapshots: Recipient<TakeSnapshot>,
    /// The model registry's handle (versions are recorded from this actor only).
    view: StoreView,
    serving: Serving,
}

impl EvaluatorActor {
    pub fn new(
        cfg: ModelsConfig,
        snapshots: Recipient<TakeSnapshot>,
        view: StoreView,
        serving: Serving,
    ) -> EvaluatorActor {
        EvaluatorActor {
            cfg,
            snapshots,
            view,
            serving,
        }
    }
}

impl Actor for EvaluatorActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        match load_serving(&self.view) {
            Ok(Some(m)) => {
                tracing::info!(
                    "serving champion model v{} (stored; {} users, {} items; affinity weight {})",
                    m.id,
                    m.bundle.users.len(),
                    m.bundle.items.len(),
                    m.affinity_weight
                );
                self.serving.set(m);
            }
            Ok(None) => tracing::info!(
                "no model yet: the first trains after {} stored events",
                self.cfg.min_events
            ),
            Err(e) => tracing::error!("cannot load the champion model: {e}"),
        }
    }
}

impl Handler<Candidates> for EvaluatorActor {
    type Result = ();

    fn handle(&mut self, msg: Candidates, ctx: &mut Context<Self>) {
        let champion = self.serving.get();
        let k = self.cfg.k;
        let me = ctx.address();
        // CPU-heavy (every user scored against every item): off the actor threads;
        // a panic ends the run with an error.
        let done = msg.done.clone();
        crate::domain::worker::spawn(
            "evaluation",
            move || {
                let champion_bundle = champion.as_ref().map(|c| c.recommender.bundle());
                let mut evaluation = evaluate_candidate(
                    &msg.candidate,
                    champion_bundle,
                    k,
                    msg.blend.as_ref(),
                    &msg.genres,
                );
                evaluation.folded = champion
                    .as_deref()
                    .map(|c| evaluate_folded(&msg.candidate, c, k));
                drop(champion);
                let (reranker, outcome) = ranking_stage(&msg);
                if let Some(o) = &outcome {
                    tracing::info!("ranking stage: {}", o.describe());
                }
                evaluation.rerank = outcome;
                let fit_s = msg.candidate.fit_s;
                let warm_start = msg.candidate.warm_start.clone();
                let params = msg.candidate.params.clone();
                let search = msg.candidate.search.clone();
                let mut bundle =
                    serving_bundle(msg.candidate, &msg.genres, &msg.regions, &msg.music_items);
                bundle.rerank = reranker;
                let encoded = match postcard::to_stdvec(&bundle) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!("cannot encode the trained model: {e}");
                        return msg
                            .done
                            .do_send(RunEnded(Err(TrainError::Encode(e.to_string()))));
                    }
                };
                let classifiers = msg
                    .classifiers
                    .into_iter()
                    .filter_map(|(r, b)| match postcard::to_stdvec(&b) {
                        Ok(bytes) => Some((r, bytes)),
                        Err(e) => {
                            tracing::error!("cannot encode the {} classifier: {e}", r.model);
                            None
                        }
                    })
                    .collect();
                me.do_send(Evaluated {
                    evaluation,
                    fit_s,
                    warm_start,
                    params,
                    search,
                    bundle,
                    encoded,
                    data: msg.data,
                    classifiers,
                    done: msg.done,
                });
            },
            move |why| done.do_send(RunEnded(Err(TrainError::Failed(why)))),
        );
    }
}

/// The ranking stage fitted next to the candidate and scored on its
/// held-out split: the reranker to serve with (only when it ranks better),
/// and what the version records (none when not configured).
fn ranking_stage(msg: &Candidates) -> (Option<Reranker>, Option<RerankOutcome>) {
    let Some(spec) = &msg.rerank else {
        return (None, None);
    };
    if let Some(i) = &msg.candidate.items {
        let why = format!(
            "{} ranks this version; the stage learns from ALS's candidates and scores",
            i.params.family()
        );
        return (None, Some(RerankOutcome::Skipped { why }));
    }
    if msg.events.is_empty() {
        let why = "no video events in the training snapshot".to_string();
        return (None, Some(RerankOutcome::Skipped { why }));
    }
    match rerank::fit(
        &msg.candidate,
        &msg.events,
        &msg.music_items,
        &msg.genres,
        spec,
    ) {
        Ok((r, e)) => (r, Some(RerankOutcome::Evaluated(Box::new(e)))),
        Err(e) => (None, Some(RerankOutcome::Skipped { why: e.to_string() })),
    }
}

impl Handler<Evaluated> for EvaluatorActor {
    type Result = ();

    fn handle(&mut self, msg: Evaluated, _: &mut Context<Self>) {
        let Evaluated {
            evaluation,
            fit_s,
            warm_start,
            params,
            search,
            bundle,
            encoded,
            data,
            classifiers,
            done,
        } = msg;
        let which = self.cfg.promote_metric;
        let value = promote::score(&evaluation.metrics, which);
        let champion_now = evaluation.champion.map(|m| promote::score(&m, which));
        // The blend serves only when it ranks better than ALS alone on the same data.
        let blend_weight = evaluation
            .blend
            .as_ref()
            .filter(|b| promote::score(&b.metrics, which) > value)
            .map_or(0.0, |b| b.weight);
        let pop = promote::score(&evaluation.baseline, which);
        let k = evaluation.metrics.k;
        let pairs = evaluation.train_pairs;
        let recorded = registry::record_run(
            &self.view,
            Run {
                cfg: &self.cfg,
                metric: which,
                evaluation: &evaluation,
                value,
                champion_score: champion_now,
                fit_s,
                warm_start: warm_start.clone(),
                params: &params,
                search: search.as_ref(),
                data,
                blend_weight,
                encoded: &encoded,
                classifiers: &classifiers,
                imported: None,
            },
        );
        let name = which.name();
        let outcome = match recorded {
            Ok(Recorded {
                id,
                decision,
                classifiers,
                pruned,
            }) => {
                let mut start = warm_start.as_ref().map_or_else(
                    || "cold start".to_string(),
                    |w| format!("{} iterations from v{}", w.iterations, w.from),
                );
                if let Some(s) = &search {
                    start.push_str(&format!(
                        "; after a search of {} trials in {:.1} s: {}",
                        s.trials.len(),
                        s.seconds,
                        crate::ml::family::Params::Als(params.clone()).describe()
                    ));
                }
                if let Some(i) = &evaluation.item_family {
                    start.push_str(&format!(
                        "; {} ranks (the search's winner, {} weights an item; ALS on the same split: {name}@{k} {:.4})",
                        i.params.describe(),
                        i.neighbours,
                        promote::score(&i.als, which)
                    ));
                }
                tracing::info!(
                    "model v{id} trained in {fit_s:.2} s ({start}) on {pairs} pairs: {name}@{k} {value:.4} (popularity {pop:.4}); {}",
                    decision.why
                );
                if let Some(f) = &evaluation.folded {
                    tracing::info!(
                        "champion v{} folded in on the same split: {name}@{k} {:.4} against this retrain's {value:.4} ({} users folded; {} of the split's items are new to it)",
                        f.from,
                        promote::score(&f.metrics, which),
                        f.users,
                        f.unknown_items
                    );
                }
                if pruned > 0 {
                    tracing::info!(
                        "pruned {pruned} model versions past models.keep_versions = {}",
                        self.cfg.keep_versions
                    );
                }
                if decision.promote {
                    self.serving.set(ServingModel {
                        id,
                        bundle,
                        affinity_weight: blend_weight,
                        params: params.clone(),
                    });
                }
                Ok(TrainOutcome {
                    model: id,
                    promoted: decision.promote,
                    decision: decision.why,
                    metric: which,
                    value,
                    popularity: pop,
                    folded_champion: evaluation
                        .folded
                        .as_ref()
                        .map(|f| promote::score(&f.metrics, which)),
                    classifiers,
                })
            }
            Err(e) => {
                tracing::error!("cannot record the trained model: {e}");
                Err(e)
            }
        };
        done.do_send(RunEnded(outcome));
    }
}

impl Handler<EvaluateChampion> for EvaluatorActor {
    type Result = ResponseFuture<Result<ChampionEvaluation, TrainError>>;

    fn handle(&mut self, _: EvaluateChampion, _: &mut Context<Self>) -> Self::Result {
        let champion = self.serving.get();
        let cfg = self.cfg.clone();
        let snapshots = self.snapshots.clone();
        Box::pin(async move {
            let champion = champion.ok_or(TrainError::NoModel {
                min_events: cfg.min_events,
            })?;
            let spec = TrainSpec {
                warm_iterations: 0,
                search_budget: std::time::Duration::ZERO,
                search_budget_fits: 0.0,
                ..TrainSpec::new(cfg.als().check()?, &cfg)
            };
            let weights = cfg.event_weights.by_action();
            let mut snap = snapshots
                .send(TakeSnapshot(SnapshotSpec {
                    music_weights: weights,
                    max_events: 0,
                    min_events: 0,
                    catalog: false,
                }))
                .await??;
            let stored_events = snap.data.stored_events;
            let (tx, rx) = tokio::sync::oneshot::channel();
            // CPU-heavy: off the actor threads (a panic drops `tx`: the reply says so).
            crate::domain::worker::spawn(
                "champion evaluation",
                move || {
                    let t = std::time::Instant::now();
                    if let Err(e) = snap.derive_video_pairs() {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    let (metrics, baseline, test_pairs) =
                        evaluate_champion(snap.pairs, champion.recommender.bundle(), &spec);
                    let _ = tx.send(Ok(ChampionEvaluation {
                        model: champion.id,
                        metrics,
                        baseline,
                        test_pairs,
                        stored_events,
                        eval_s: t.elapsed().as_secs_f64(),
                    }));
                },
                |_| {},
            );
            rx.await.map_err(|_| {
                TrainError::Failed("the evaluation failed (see the daemon's log)".into())
            })?
        })
    }
}

impl Handler<SetChampion> for EvaluatorActor {
    type Result = Result<u64, TrainError>;

    fn handle(&mut self, msg: SetChampion, _: &mut Context<Self>) -> Self::Result {
        let m = registry::change_champion(&self.view, msg.0)?;
        let id = m.id;
        tracing::info!("champion is now model v{id} (operator)");
        self.serving.set(m);
        Ok(id)
    }
}

impl Handler<ImportModel> for EvaluatorActor {
    type Result = ResponseActFuture<Self, Result<crate::ml::import::ImportReport, TrainError>>;

    fn handle(&mut self, msg: ImportModel, _: &mut Context<Self>) -> Self::Result {
        use crate::ml::import;
        let cfg = self.cfg.clone();
        let snapshots = self.snapshots.clone();
        let champion = self.serving.get();
        let dir = msg.0;
        let scored = async move {
            let snap = snapshots
                .send(TakeSnapshot(import::snapshot_spec(&cfg)))
                .await??;
            let (tx, rx) = tokio::sync::oneshot::channel();
            // Reading the factors and scoring them: off the actor threads (a
            // panic drops `tx`: the reply says so).
            crate::domain::worker::spawn(
                "import",
                move || {
                    let bundle = champion.as_ref().map(|c| c.recommender.bundle());
                    let _ = tx.send(import::score_import(&dir, snap, &cfg, bundle));
                },
                |_| {},
            );
            rx.await.map_err(|_| {
                TrainError::Failed("the import failed (see the daemon's log)".into())
            })?
        };
        Box::pin(scored.into_actor(self).map(|scored, act, _| {
            let scored = scored?;
            let report = import::record_import(&act.view, &act.cfg, &scored)?;
            tracing::info!(
                "model v{} imported from {} ({}): {}@{} {:.4} (popularity {:.4}); {}",
                report.model,
                report.imported.from,
                report.imported.source,
                act.cfg.promote_metric.name(),
                act.cfg.k,
                report.value,
                report.popularity,
                report.decision
            );
            if report.promoted {
                act.serving.set(ServingModel {
                    id: report.model,
                    bundle: scored.bundle,
                    affinity_weight: 0.0,
                    params: scored.params,
                });
            }
            Ok(report)
        }))
    }
}
