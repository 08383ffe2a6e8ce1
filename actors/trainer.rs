//! Trainer actor: decides when to train (every N new events, every T seconds,
//! on demand), takes a consistent snapshot of the aggregates on the store's
//! thread, trains and evaluates on a thread of its own (so ingestion never
//! stalls), records the version and promotes it when it beats the champion on
//! the configured held-out metric. It also serves the champion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::store::{StoreActor, WithStore};
use crate::config::{ModelsConfig, PromoteMetric};
use crate::ml::classify::{self, ClassifierReport};
use crate::ml::metrics::RankingMetrics;
use crate::ml::serve::{Bundle, Recommendation, Recommender};
use crate::ml::train::{train, TrainSpec, Trained};
use crate::pipeline::Progress;
use crate::store::models::ModelVersion;

pub struct TrainerActor {
    cfg: ModelsConfig,
    store: Addr<StoreActor>,
    progress: Arc<Progress>,
    /// `progress.stored` at the last training.
    trained_at: u64,
    last: Instant,
    busy: bool,
    champion: Option<(u64, Recommender)>,
}

/// Train now (if not already training).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TrainNow;

/// A finished training run (or why it failed).
#[derive(Message)]
#[rtype(result = "()")]
struct TrainingDone(Result<TrainingRun, String>);

/// The recommender, what it was trained on, and each classifier with its encoded predictions.
type TrainingRun = (Trained, serde_json::Value, Vec<(ClassifierReport, Vec<u8>)>);

/// One held-out prediction of an engagement classifier, as exported.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Prediction {
    pub user_id: String,
    pub video_id: String,
    pub timestamp_ms: i64,
    pub engaged: bool,
    pub predicted: bool,
}

/// The classifier's held-out predictions, encoded for its model version.
fn prediction_rows(
    events: &[crate::event::VideoEvent],
    predictions: &[(usize, bool, bool)],
) -> Vec<u8> {
    let rows: Vec<Prediction> = predictions
        .iter()
        .filter_map(|&(i, engaged, predicted)| {
            let e = events.get(i)?;
            Some(Prediction {
                user_id: e.user_id.clone(),
                video_id: e.video_id.clone(),
                timestamp_ms: e.timestamp_ms,
                engaged,
                predicted,
            })
        })
        .collect();
    postcard::to_stdvec(&rows).unwrap_or_default()
}

/// Recommendations from the champion.
#[derive(Message)]
#[rtype(result = "Result<Vec<Recommendation>, String>")]
pub struct Recommend {
    pub user: String,
    pub k: usize,
}

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

/// Loads the champion's serving bundle from the store.
pub fn load_champion(store: &crate::store::Store) -> Result<Option<(u64, Bundle)>, String> {
    let Some(id) = store.champion_id().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let bytes = store
        .model_bundle(id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("model {id} has no bundle"))?;
    let bundle: Bundle =
        postcard::from_bytes(&bytes).map_err(|e| format!("model {id}: unreadable bundle: {e}"))?;
    Ok(Some((id, bundle)))
}

impl TrainerActor {
    pub fn new(
        cfg: ModelsConfig,
        store: Addr<StoreActor>,
        progress: Arc<Progress>,
    ) -> TrainerActor {
        TrainerActor {
            cfg,
            store,
            progress,
            trained_at: 0,
            last: Instant::now(),
            busy: false,
            champion: None,
        }
    }

    fn due(&self) -> bool {
        let stored = Progress::get(&self.progress.stored);
        let new = stored.saturating_sub(self.trained_at);
        (self.cfg.train_every_events > 0 && new >= self.cfg.train_every_events)
            || (self.cfg.train_every_seconds > 0
                && new > 0
                && self.last.elapsed() >= Duration::from_secs(self.cfg.train_every_seconds))
    }

    fn start_training(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        self.trained_at = Progress::get(&self.progress.stored);
        self.last = Instant::now();
        let min_events = self.cfg.min_events;
        let max_events = if self.cfg.classifiers {
            self.cfg.classifier_max_events
        } else {
            0
        };
        let weights = self.cfg.event_weights.by_action();
        let snapshot = self.store.send(WithStore(move |s: &crate::store::Store| {
            let stored = s.counter("stored").unwrap_or(0);
            if stored < min_events {
                return Err(format!(
                    "{stored} events stored, training waits for models.min_events = {min_events}"
                ));
            }
            let mut pairs: Vec<_> = s.pair_aggregates().collect::<Result<_, _>>().map_err(|e| e.to_string())?;
            let videos = pairs.len();
            let music = s.music_aggregates().map_err(|e| e.to_string())?;
            pairs.extend(crate::ml::dataset::music_pairs(music, weights));
            let events = s.recent_video_events(max_events).map_err(|e| e.to_string())?;
            let mut genres = s.item_genres();
            genres.extend(s.track_genres());
            let data = serde_json::json!({ "stored_events": stored, "video_pairs": videos, "music_pairs": pairs.len() - videos });
            Ok((pairs, genres, events, data))
        }));
        let cfg = self.cfg.clone();
        let me = ctx.address();
        let champion = self.champion.as_ref().map(|(_, r)| r.bundle().clone());
        actix::spawn(async move {
            let snap = match snapshot.await {
                Ok(Ok(s)) => s,
                Ok(Err(why)) => return me.do_send(TrainingDone(Err(why))),
                Err(e) => return me.do_send(TrainingDone(Err(format!("store unavailable: {e}")))),
            };
            // CPU-heavy: off the actor threads.
            std::thread::spawn(move || {
                let (pairs, genres, events, data) = snap;
                let classifiers: Vec<(ClassifierReport, Vec<u8>)> = if events.is_empty() {
                    Vec::new()
                } else {
                    match classify::train_and_evaluate(&events, &cfg.classify()) {
                        Ok(reports) => reports
                            .into_iter()
                            .map(|r| {
                                let rows = prediction_rows(&events, &r.predictions);
                                (r, rows)
                            })
                            .collect(),
                        Err(e) => {
                            tracing::info!("classifiers skipped: {e}");
                            Vec::new()
                        }
                    }
                };
                let result = cfg
                    .als()
                    .check()
                    .map_err(|e| e.to_string())
                    .and_then(|als| {
                        let spec = TrainSpec {
                            als,
                            test_fraction: cfg.test_fraction,
                            min_items: cfg.min_user_items,
                            k: cfg.k,
                            seed: cfg.seed,
                        };
                        train(pairs, &genres, &spec, champion.as_ref()).map_err(|e| e.to_string())
                    })
                    .map(|t| (t, data, classifiers));
                me.do_send(TrainingDone(result));
            });
        });
    }
}

impl Actor for TrainerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Serve the stored champion right away: a restart does not retrain.
        let loaded = self
            .store
            .send(WithStore(|s: &crate::store::Store| load_champion(s)));
        ctx.spawn(loaded.into_actor(self).map(|r, a, _| match r {
            Ok(Ok(Some((id, bundle)))) => {
                tracing::info!(
                    "serving champion model v{id} (stored; {} users, {} items)",
                    bundle.users.len(),
                    bundle.items.len()
                );
                a.champion = Some((id, Recommender::new(bundle)));
            }
            Ok(Ok(None)) => tracing::info!(
                "no model yet: the first trains after {} stored events",
                a.cfg.min_events
            ),
            Ok(Err(e)) => tracing::error!("cannot load the champion model: {e}"),
            Err(e) => tracing::error!("store unavailable: {e}"),
        }));
        ctx.run_interval(Duration::from_secs(1), |a, ctx| {
            if a.cfg.enabled && a.due() {
                a.start_training(ctx);
            }
        });
    }
}

impl Handler<TrainNow> for TrainerActor {
    type Result = ();

    fn handle(&mut self, _: TrainNow, ctx: &mut Context<Self>) {
        self.start_training(ctx);
    }
}

impl Handler<TrainingDone> for TrainerActor {
    type Result = ();

    fn handle(&mut self, msg: TrainingDone, ctx: &mut Context<Self>) {
        let (trained, data, classifiers) = match msg.0 {
            Ok(t) => t,
            Err(why) => {
                self.busy = false;
                tracing::info!("training skipped: {why}");
                return;
            }
        };
        let which = self.cfg.promote_metric;
        let name = metric_name(which);
        let value = metric(&trained.metrics, which);
        let cfg = self.cfg.clone();
        let bundle = match postcard::to_stdvec(&trained.bundle) {
            Ok(b) => b,
            Err(e) => {
                self.busy = false;
                tracing::error!("cannot encode the trained model: {e}");
                return;
            }
        };
        let summary = serde_json::to_value(&trained).unwrap_or_default();
        // The champion as scored on this run's held-out split.
        let champion_now = trained.champion.map(|m| metric(&m, which));
        let save = self.store.send(WithStore(move |s: &crate::store::Store| -> Result<(u64, bool, String), String> {
            let id = s.next_model_id().map_err(|e| e.to_string())?;
            let champion = s.champion().map_err(|e| e.to_string())?;
            let best = champion.as_ref().and(champion_now);
            let promote = best.is_none_or(|b| value > b);
            let decision = match (&champion, best) {
                (Some(c), Some(b)) if promote => {
                    format!("promoted: {name}@{} {value:.4} > champion v{} {b:.4} on the same held-out data", cfg.k, c.id)
                }
                (Some(c), Some(b)) => format!("kept champion v{}: {name}@{} {value:.4} ≤ {b:.4} on the same held-out data", c.id, cfg.k),
                _ => format!("promoted: first model ({name}@{} {value:.4})", cfg.k),
            };
            let meta = ModelVersion {
                id,
                kind: "als".into(),
                created_ms: crate::timefmt::now_ms(),
                params: serde_json::to_value(cfg.als()).unwrap_or_default(),
                data: serde_json::json!({ "snapshot": data, "users": summary["users"], "items": summary["items"],
                    "train_pairs": summary["train_pairs"], "test_pairs": summary["test_pairs"] }),
                timings: serde_json::json!({ "fit_s": summary["fit_s"], "eval_s": summary["eval_s"] }),
                metrics: {
                    let mut m = summary["metrics"].clone();
                    m["rmse"] = summary["rmse"].clone();
                    m
                },
                baseline: summary["baseline"].clone(),
                decision: decision.clone(),
            };
            s.add_model(&meta, &bundle, promote).map_err(|e| e.to_string())?;
            for (r, rows) in &classifiers {
                let cid = s.next_model_id().map_err(|e| e.to_string())?;
                let report = serde_json::to_value(r).unwrap_or_default();
                let cmeta = ModelVersion {
                    id: cid,
                    kind: r.model.to_string(),
                    created_ms: crate::timefmt::now_ms(),
                    params: serde_json::json!({ "params": r.params, "features": classify::FEATURES }),
                    data: serde_json::json!({ "snapshot": meta.data["snapshot"], "train_rows": r.train_rows,
                        "train_rows_available": r.train_rows_available, "test_rows": r.test_rows }),
                    timings: serde_json::json!({ "fit_s": r.fit_s }),
                    metrics: serde_json::json!({ "accuracy": report["accuracy"], "weighted_precision": report["weighted_precision"],
                        "weighted_recall": report["weighted_recall"], "f1": report["f1"], "confusion": report["confusion"] }),
                    baseline: serde_json::json!({}),
                    decision: "recorded: classifiers are evaluated and exported, not served".into(),
                };
                s.add_model(&cmeta, rows, false).map_err(|e| e.to_string())?;
            }
            Ok((id, promote, decision))
        }));
        let pop = metric(&trained.baseline, which);
        ctx.spawn(save.into_actor(self).map(move |r, a, _| {
            a.busy = false;
            match r {
                Ok(Ok((id, promote, decision))) => {
                    tracing::info!(
                        "model v{id} trained in {:.2} s on {} pairs: {name}@{} {value:.4} (popularity {pop:.4}); {decision}",
                        trained.fit_s,
                        trained.train_pairs,
                        trained.metrics.k
                    );
                    if promote {
                        a.champion = Some((id, Recommender::new(trained.bundle)));
                    }
                }
                Ok(Err(e)) => tracing::error!("cannot record the trained model: {e}"),
                Err(e) => tracing::error!("store unavailable: {e}"),
            }
        }));
    }
}

impl Handler<Recommend> for TrainerActor {
    type Result = Result<Vec<Recommendation>, String>;

    fn handle(&mut self, msg: Recommend, _: &mut Context<Self>) -> Self::Result {
        match &self.champion {
            Some((_, r)) => Ok(r.recommend(&msg.user, msg.k, None)),
            None => {
                Err("no model has been trained yet; wait for models.min_events or run train".into())
            }
        }
    }
}
