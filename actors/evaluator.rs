//! Evaluator actor: scores each candidate from the trainer on its held-out
//! split (ranking metrics, RMSE, the popularity baseline, and the serving
//! champion on the same split) on a thread of its own, records every model as a
//! version in the store, and promotes the recommender when it beats the
//! champion on the configured metric ([`crate::ml::promote`]). It owns the
//! serving champion: loaded from the store at start (a restart serves without
//! retraining), replaced on promotion.

use actix::prelude::*;

use super::messages::{Candidates, EvaluateChampion, Evaluated, RunEnded, SetChampion};
use super::store::{StoreActor, WithStore};
use crate::config::ModelsConfig;
use crate::ml::classify::{self, ClassifierReport};
use crate::ml::promote::{self, Standing};
use crate::ml::serve::{load_serving, Bundle, Serving};
use crate::ml::train::{
    evaluate_candidate, evaluate_champion, serving_bundle, snapshot, Evaluation, TrainSpec,
};
use crate::ml::version::{
    self, ClassifierData, ClassifierParams, ClassifierTimings, ClassifierVersion, ModelVersion,
    NoBaseline, RecommenderData, RecommenderMetrics, RecommenderTimings, RecommenderVersion,
    SnapshotInfo, Trained,
};
use crate::ml::{ChampionEvaluation, ModelKind, TrainError, TrainOutcome};
use crate::store::Store;

pub struct EvaluatorActor {
    cfg: ModelsConfig,
    store: Addr<StoreActor>,
    serving: Serving,
}

/// The recommender's version record.
fn recommender_version(
    id: u64,
    cfg: &ModelsConfig,
    e: &Evaluation,
    fit_s: f64,
    data: SnapshotInfo,
    serving_affinity_weight: f64,
    decision: String,
) -> ModelVersion {
    ModelVersion {
        id,
        created_ms: crate::domain::timefmt::now_ms(),
        trained: Trained::Als(Box::new(RecommenderVersion {
            params: cfg.als(),
            data: RecommenderData {
                snapshot: data,
                users: e.users,
                items: e.items,
                train_pairs: e.train_pairs,
                test_pairs: e.test_pairs,
            },
            timings: RecommenderTimings {
                fit_s,
                eval_s: e.eval_s,
            },
            metrics: RecommenderMetrics {
                ranking: e.metrics,
                rmse: e.rmse,
                affinity_blend: e.blend.clone(),
                serving_affinity_weight,
            },
            baseline: e.baseline,
        })),
        decision,
    }
}

/// A classifier's version record.
fn classifier_version(id: u64, r: &ClassifierReport, data: SnapshotInfo) -> ModelVersion {
    let v = ClassifierVersion {
        params: ClassifierParams {
            params: r.params.clone(),
            features: classify::FEATURES.iter().map(|f| f.to_string()).collect(),
        },
        data: ClassifierData {
            snapshot: data,
            train_rows: r.train_rows,
            train_rows_available: r.train_rows_available,
            test_rows: r.test_rows,
        },
        timings: ClassifierTimings { fit_s: r.fit_s },
        metrics: r.metrics,
        baseline: NoBaseline {},
    };
    ModelVersion {
        id,
        created_ms: crate::domain::timefmt::now_ms(),
        trained: match r.model {
            ModelKind::Svm => Trained::Svm(v),
            _ => Trained::DecisionTree(v),
        },
        decision: "recorded: the latest classifier of each kind predicts and exports".into(),
    }
}

impl EvaluatorActor {
    pub fn new(cfg: ModelsConfig, store: Addr<StoreActor>, serving: Serving) -> EvaluatorActor {
        EvaluatorActor {
            cfg,
            store,
            serving,
        }
    }
}

impl Actor for EvaluatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let loaded = self.store.send(WithStore(|s: &Store| load_serving(s)));
        ctx.spawn(loaded.into_actor(self).map(|r, a, _| match r {
            Ok(Ok(Some((id, bundle, weight)))) => {
                tracing::info!(
                    "serving champion model v{id} (stored; {} users, {} items; affinity weight {weight})",
                    bundle.users.len(),
                    bundle.items.len()
                );
                a.serving.set(id, bundle, weight);
            }
            Ok(Ok(None)) => tracing::info!(
                "no model yet: the first trains after {} stored events",
                a.cfg.min_events
            ),
            Ok(Err(e)) => tracing::error!("cannot load the champion model: {e}"),
            Err(e) => tracing::error!("store unavailable: {e}"),
        }));
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
        crate::actors::worker::spawn(
            "evaluation",
            move || {
                let champion_bundle = champion.as_ref().map(|c| c.recommender.bundle());
                let evaluation =
                    evaluate_candidate(&msg.candidate, champion_bundle, k, msg.blend.as_ref());
                drop(champion);
                let fit_s = msg.candidate.fit_s;
                let bundle = serving_bundle(msg.candidate, &msg.genres, &msg.regions);
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

impl Handler<Evaluated> for EvaluatorActor {
    type Result = ();

    fn handle(&mut self, msg: Evaluated, ctx: &mut Context<Self>) {
        let Evaluated {
            evaluation,
            fit_s,
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
        let cfg = self.cfg.clone();
        let pop = promote::score(&evaluation.baseline, which);
        let k = evaluation.metrics.k;
        let pairs = evaluation.train_pairs;
        let save = self.store.send(WithStore(
            move |s: &Store| -> Result<(u64, promote::Decision, Vec<u64>), TrainError> {
                let id = s.next_model_id()?;
                let champion = s.champion_id()?;
                let standing = champion
                    .zip(champion_now)
                    .map(|(id, score)| Standing { id, score });
                let decision = promote::decide(which, cfg.k, value, standing);
                let meta = recommender_version(
                    id,
                    &cfg,
                    &evaluation,
                    fit_s,
                    data.clone(),
                    blend_weight,
                    decision.why.clone(),
                );
                version::record(s, &meta, &encoded, decision.promote)?;
                let mut classifier_ids = Vec::new();
                for (r, bytes) in &classifiers {
                    let cid = s.next_model_id()?;
                    classifier_ids.push(cid);
                    version::record(s, &classifier_version(cid, r, data.clone()), bytes, false)?;
                }
                let pruned = s.prune_models(cfg.keep_versions)?;
                if pruned > 0 {
                    tracing::info!(
                        "pruned {pruned} model versions past models.keep_versions = {}",
                        cfg.keep_versions
                    );
                }
                Ok((id, decision, classifier_ids))
            },
        ));
        ctx.spawn(save.into_actor(self).map(move |r, a, _| {
            let name = which.name();
            let outcome = match r {
                Ok(Ok((id, decision, classifiers))) => {
                    tracing::info!(
                        "model v{id} trained in {fit_s:.2} s on {pairs} pairs: {name}@{k} {value:.4} (popularity {pop:.4}); {}",
                        decision.why
                    );
                    if decision.promote {
                        a.serving.set(id, bundle, blend_weight);
                    }
                    Ok(TrainOutcome {
                        model: id,
                        promoted: decision.promote,
                        decision: decision.why,
                        metric: which,
                        value,
                        popularity: pop,
                        classifiers,
                    })
                }
                Ok(Err(e)) => {
                    tracing::error!("cannot record the trained model: {e}");
                    Err(e)
                }
                Err(e) => {
                    tracing::error!("store unavailable: {e}");
                    Err(e.into())
                }
            };
            done.do_send(RunEnded(outcome));
        }));
    }
}

impl Handler<EvaluateChampion> for EvaluatorActor {
    type Result = ResponseFuture<Result<ChampionEvaluation, TrainError>>;

    fn handle(&mut self, _: EvaluateChampion, _: &mut Context<Self>) -> Self::Result {
        let champion = self.serving.get();
        let cfg = self.cfg.clone();
        let store = self.store.clone();
        Box::pin(async move {
            let champion = champion.ok_or(TrainError::NoModel {
                min_events: cfg.min_events,
            })?;
            let spec = TrainSpec {
                als: cfg.als().check()?,
                test_fraction: cfg.test_fraction,
                min_items: cfg.min_user_items,
                k: cfg.k,
                seed: cfg.seed,
            };
            let weights = cfg.event_weights.by_action();
            let mut snap = store
                .send(WithStore(move |s: &Store| {
                    snapshot(s, weights, 0, 0, false)
                }))
                .await??;
            let stored_events = snap.data.stored_events;
            let (tx, rx) = tokio::sync::oneshot::channel();
            // CPU-heavy: off the actor threads (a panic drops `tx`: the reply says so).
            crate::actors::worker::spawn(
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
    type Result = ResponseFuture<Result<u64, TrainError>>;

    fn handle(&mut self, msg: SetChampion, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let serving = self.serving.clone();
        Box::pin(async move {
            let loaded = store
                .send(WithStore(
                    move |s: &Store| -> Result<(u64, Bundle, f64), TrainError> {
                        match msg.0 {
                            Some(id) => {
                                let m = version::versions(s)?
                                    .into_iter()
                                    .find(|m| m.id == id)
                                    .ok_or(TrainError::NoVersion(id))?;
                                if !m.kind().recommends() {
                                    return Err(TrainError::NotARecommender { id, kind: m.kind() });
                                }
                                s.promote(id)?;
                            }
                            None => {
                                s.rollback()?;
                            }
                        }
                        load_serving(s)?.ok_or_else(|| {
                            TrainError::Refused("no champion after the change".into())
                        })
                    },
                ))
                .await??;
            let (id, bundle, weight) = loaded;
            tracing::info!("champion is now model v{id} (operator)");
            serving.set(id, bundle, weight);
            Ok(id)
        })
    }
}
