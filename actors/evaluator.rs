//! Evaluator actor: scores each candidate from the trainer on its held-out
//! split (ranking metrics, RMSE, the popularity baseline, and the serving
//! champion on the same split) on a thread of its own, records every model as a
//! version in the store, and promotes the recommender when it beats the
//! champion on the configured metric. It owns the serving champion: loaded from
//! the store at start (a restart serves without retraining), replaced on
//! promotion.

use std::collections::HashMap;

use actix::prelude::*;

use super::store::{StoreActor, WithStore};
use super::trainer::RunEnded;
use crate::config::{ModelsConfig, PromoteMetric};
use crate::ml::classify::{self, ClassifierBundle, ClassifierReport};
use crate::ml::metrics::RankingMetrics;
use crate::ml::serve::{load_serving, Bundle, Serving};
use crate::ml::train::{
    evaluate_candidate, evaluate_champion, serving_bundle, snapshot, Candidate, Evaluation,
    TrainSpec,
};
use crate::store::models::ModelVersion;
use crate::store::Store;

pub struct EvaluatorActor {
    cfg: ModelsConfig,
    store: Addr<StoreActor>,
    serving: Serving,
}

/// A fitted recommender and classifiers to evaluate and record.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Candidates {
    pub candidate: Candidate,
    /// Content affinity to blend with the candidate, when configured.
    pub blend: Option<crate::affinity::Blend>,
    pub genres: HashMap<String, String>,
    pub regions: HashMap<String, Vec<(String, u64)>>,
    /// What the snapshot held (recorded with the versions).
    pub data: serde_json::Value,
    pub classifiers: Vec<(ClassifierReport, ClassifierBundle)>,
    /// Told when the run is recorded (or failed).
    pub done: Recipient<RunEnded>,
}

/// The evaluation of a candidate, ready to record.
#[derive(Message)]
#[rtype(result = "()")]
struct Evaluated {
    evaluation: Evaluation,
    fit_s: f64,
    bundle: Bundle,
    encoded: Vec<u8>,
    data: serde_json::Value,
    classifiers: Vec<(ClassifierReport, Vec<u8>)>,
    done: Recipient<RunEnded>,
}

/// Score the serving champion on a fresh snapshot (on demand).
#[derive(Message)]
#[rtype(result = "Result<serde_json::Value, String>")]
pub struct EvaluateChampion;

/// Make a recorded recommender version the champion (`None` = roll back to the
/// previous champion); answers the new champion's id.
#[derive(Message)]
#[rtype(result = "Result<u64, String>")]
pub struct SetChampion(pub Option<u64>);

fn metric(m: &RankingMetrics, which: PromoteMetric) -> f64 {
    match which {
        PromoteMetric::Ndcg => m.ndcg,
        PromoteMetric::Map => m.map,
        PromoteMetric::Precision => m.precision,
        PromoteMetric::Recall => m.recall,
    }
}

fn metric_name(which: PromoteMetric) -> &'static str {
    match which {
        PromoteMetric::Ndcg => "ndcg",
        PromoteMetric::Map => "map",
        PromoteMetric::Precision => "precision",
        PromoteMetric::Recall => "recall",
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
        crate::worker::spawn(
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
                        return msg.done.do_send(RunEnded(Err(format!(
                            "cannot encode the trained model: {e}"
                        ))));
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
            move |why| done.do_send(RunEnded(Err(why))),
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
        let name = metric_name(which);
        let value = metric(&evaluation.metrics, which);
        let champion_now = evaluation.champion.map(|m| metric(&m, which));
        // The blend serves only when it ranks better than ALS alone on the same data.
        let blend_weight = evaluation
            .blend
            .as_ref()
            .filter(|b| metric(&b.metrics, which) > value)
            .map_or(0.0, |b| b.weight);
        let cfg = self.cfg.clone();
        let summary = serde_json::to_value(&evaluation).unwrap_or_default();
        let save = self.store.send(WithStore(
            move |s: &Store| -> Result<(u64, bool, String, Vec<u64>), String> {
                let id = s.next_model_id().map_err(|e| e.to_string())?;
                let champion = s.champion().map_err(|e| e.to_string())?;
                let best = champion.as_ref().and(champion_now);
                let promote = best.is_none_or(|b| value > b);
                let k = cfg.k;
                let decision = match (&champion, best) {
                    (Some(c), Some(b)) if promote => format!(
                        "promoted: {name}@{k} {value:.4} > champion v{} {b:.4} on the same held-out data",
                        c.id
                    ),
                    (Some(c), Some(b)) => format!(
                        "kept champion v{}: {name}@{k} {value:.4} ≤ {b:.4} on the same held-out data",
                        c.id
                    ),
                    _ => format!("promoted: first model ({name}@{k} {value:.4})"),
                };
                let mut metrics = summary["metrics"].clone();
                metrics["rmse"] = summary["rmse"].clone();
                metrics["affinity_blend"] = summary["blend"].clone();
                metrics["serving_affinity_weight"] = serde_json::json!(blend_weight);
                let meta = ModelVersion {
                    id,
                    kind: "als".into(),
                    created_ms: crate::timefmt::now_ms(),
                    params: serde_json::to_value(cfg.als()).unwrap_or_default(),
                    data: serde_json::json!({ "snapshot": data, "users": summary["users"],
                        "items": summary["items"], "train_pairs": summary["train_pairs"],
                        "test_pairs": summary["test_pairs"] }),
                    timings: serde_json::json!({ "fit_s": fit_s, "eval_s": summary["eval_s"] }),
                    metrics,
                    baseline: summary["baseline"].clone(),
                    decision: decision.clone(),
                };
                s.add_model(&meta, &encoded, promote)
                    .map_err(|e| e.to_string())?;
                let mut classifier_ids = Vec::new();
                for (r, bytes) in &classifiers {
                    let cid = s.next_model_id().map_err(|e| e.to_string())?;
                    classifier_ids.push(cid);
                    let report = serde_json::to_value(r).unwrap_or_default();
                    let cmeta = ModelVersion {
                        id: cid,
                        kind: r.model.to_string(),
                        created_ms: crate::timefmt::now_ms(),
                        params: serde_json::json!({ "params": r.params, "features": classify::FEATURES }),
                        data: serde_json::json!({ "snapshot": data, "train_rows": r.train_rows,
                            "train_rows_available": r.train_rows_available, "test_rows": r.test_rows }),
                        timings: serde_json::json!({ "fit_s": r.fit_s }),
                        metrics: serde_json::json!({ "accuracy": report["accuracy"],
                            "weighted_precision": report["weighted_precision"],
                            "weighted_recall": report["weighted_recall"], "f1": report["f1"],
                            "confusion": report["confusion"] }),
                        baseline: serde_json::json!({}),
                        decision: "recorded: the latest classifier of each kind predicts and exports"
                            .into(),
                    };
                    s.add_model(&cmeta, bytes, false)
                        .map_err(|e| e.to_string())?;
                }
                let pruned = s.prune_models(cfg.keep_versions).map_err(|e| e.to_string())?;
                if pruned > 0 {
                    tracing::info!("pruned {pruned} model versions past models.keep_versions = {}", cfg.keep_versions);
                }
                Ok((id, promote, decision, classifier_ids))
            },
        ));
        let pop = metric(&evaluation.baseline, which);
        let k = evaluation.metrics.k;
        let pairs = evaluation.train_pairs;
        ctx.spawn(save.into_actor(self).map(move |r, a, _| {
            let outcome = match r {
                Ok(Ok((id, promote, decision, classifiers))) => {
                    tracing::info!(
                        "model v{id} trained in {fit_s:.2} s on {pairs} pairs: {name}@{k} {value:.4} (popularity {pop:.4}); {decision}"
                    );
                    if promote {
                        a.serving.set(id, bundle, blend_weight);
                    }
                    Ok(serde_json::json!({ "model": id, "promoted": promote, "decision": decision,
                        name: value, "popularity": pop, "classifiers": classifiers }))
                }
                Ok(Err(e)) => {
                    tracing::error!("cannot record the trained model: {e}");
                    Err(format!("cannot record the trained model: {e}"))
                }
                Err(e) => {
                    tracing::error!("store unavailable: {e}");
                    Err(format!("store unavailable: {e}"))
                }
            };
            done.do_send(RunEnded(outcome));
        }));
    }
}

impl Handler<EvaluateChampion> for EvaluatorActor {
    type Result = ResponseFuture<Result<serde_json::Value, String>>;

    fn handle(&mut self, _: EvaluateChampion, _: &mut Context<Self>) -> Self::Result {
        let champion = self.serving.get();
        let cfg = self.cfg.clone();
        let store = self.store.clone();
        Box::pin(async move {
            let champion = champion.ok_or(
                "no model has been trained yet: wait for models.min_events stored events or run train",
            )?;
            let spec = TrainSpec {
                als: cfg.als().check().map_err(|e| e.to_string())?,
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
                .await
                .map_err(|e| format!("store unavailable: {e}"))??;
            let stored = snap.data["stored_events"].clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            // CPU-heavy: off the actor threads (a panic drops `tx`: the reply says so).
            crate::worker::spawn(
                "champion evaluation",
                move || {
                    let t = std::time::Instant::now();
                    if let Err(e) = snap.derive_video_pairs() {
                        let _ = tx.send(Err(format!("the stored events are unreadable: {e}")));
                        return;
                    }
                    let (m, baseline, test_pairs) =
                        evaluate_champion(snap.pairs, champion.recommender.bundle(), &spec);
                    let _ = tx.send(Ok(serde_json::json!({
                        "model": champion.id,
                        "metrics": m,
                        "baseline": baseline,
                        "test_pairs": test_pairs,
                        "stored_events": stored,
                        "eval_s": t.elapsed().as_secs_f64(),
                    })));
                },
                |_| {},
            );
            rx.await
                .map_err(|_| "the evaluation failed (see the daemon's log)".to_string())?
        })
    }
}

impl Handler<SetChampion> for EvaluatorActor {
    type Result = ResponseFuture<Result<u64, String>>;

    fn handle(&mut self, msg: SetChampion, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let serving = self.serving.clone();
        Box::pin(async move {
            let loaded = store
                .send(WithStore(move |s: &Store| -> Result<(u64, Bundle, f64), String> {
                    match msg.0 {
                        Some(id) => {
                            let m = s
                                .models()
                                .map_err(|e| e.to_string())?
                                .into_iter()
                                .find(|m| m.id == id)
                                .ok_or_else(|| {
                                    format!("no model version {id}; list them with `models`")
                                })?;
                            if m.kind != "als" {
                                return Err(format!(
                                    "model {id} is a {} classifier; only recommender (als) versions serve",
                                    m.kind
                                ));
                            }
                            s.promote(id).map_err(|e| e.to_string())?;
                        }
                        None => {
                            s.rollback().map_err(|e| e.to_string())?;
                        }
                    }
                    load_serving(s)?.ok_or_else(|| "no champion after the change".to_string())
                }))
                .await
                .map_err(|e| format!("store unavailable: {e}"))??;
            let (id, bundle, weight) = loaded;
            tracing::info!("champion is now model v{id} (operator)");
            serving.set(id, bundle, weight);
            Ok(id)
        })
    }
}
