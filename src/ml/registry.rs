//! The model registry: recording a training run's versions (the recommender
//! with its promotion decision, the classifiers), pruning past
//! `models.keep_versions`, and changing the champion. Plain functions over the
//! store's read/write handle; the evaluator actor only routes to them.

use super::classify::{self, ClassifierReport};
use super::config::ModelsConfig;
use super::promote::{self, Decision, PromoteMetric, Standing};
use super::serve::{load_serving, ServingModel};
use super::train::Evaluation;
use super::version::{
    self, ClassifierData, ClassifierParams, ClassifierTimings, ClassifierVersion, ModelVersion,
    NoBaseline, RecommenderData, RecommenderMetrics, RecommenderTimings, RecommenderVersion,
    SnapshotInfo, Trained,
};
use super::{ModelKind, TrainError};
use crate::store::StoreView;

/// The recommender's version record of `run`, recorded as `id`.
pub fn recommender_version(id: u64, run: &Run<'_>, decision: String) -> ModelVersion {
    let (e, fit_s) = (run.evaluation, run.fit_s);
    let (warm_start, data) = (run.warm_start.clone(), run.data.clone());
    let serving_affinity_weight = run.blend_weight;
    ModelVersion {
        id,
        created_ms: crate::domain::timefmt::now_ms(),
        trained: Trained::Als(Box::new(RecommenderVersion {
            params: run.params.clone(),
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
            warm_start,
            folded_champion: e.folded.clone(),
            search: run.search.cloned(),
            rerank: e.rerank.clone(),
            item_family: e.item_family.clone(),
            imported: run.imported.clone(),
        })),
        decision,
    }
}

/// A classifier's version record.
pub fn classifier_version(id: u64, r: &ClassifierReport, data: SnapshotInfo) -> ModelVersion {
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

/// One training run to record.
pub struct Run<'a> {
    pub cfg: &'a ModelsConfig,
    pub metric: PromoteMetric,
    pub evaluation: &'a Evaluation,
    /// The candidate's score on the promotion metric, and the champion's on
    /// the same split (none without a champion).
    pub value: f64,
    pub champion_score: Option<f64>,
    pub fit_s: f64,
    pub warm_start: Option<super::version::WarmStartInfo>,
    /// What the candidate was fitted with (the search's choice, when one ran).
    pub params: &'a super::als::AlsParams,
    pub search: Option<&'a super::search::SearchReport>,
    pub data: SnapshotInfo,
    /// The affinity weight the version serves with (0: ALS alone).
    pub blend_weight: f64,
    /// The encoded serving bundle.
    pub encoded: &'a [u8],
    pub classifiers: &'a [(ClassifierReport, Vec<u8>)],
    /// Factors trained elsewhere and imported (none: fitted here).
    pub imported: Option<super::import::ImportInfo>,
}

/// What recording a run did.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub id: u64,
    pub decision: Decision,
    pub classifiers: Vec<u64>,
    pub pruned: usize,
}

/// Records the recommender (promoted when [`promote::decide`] says so) and the
/// classifiers, then prunes old versions.
pub fn record_run(view: &StoreView, run: Run<'_>) -> Result<Recorded, TrainError> {
    let id = view.next_model_id()?;
    let standing = view
        .champion_id()?
        .zip(run.champion_score)
        .map(|(id, score)| Standing { id, score });
    let popularity = run
        .cfg
        .promote_over_popularity
        .then(|| promote::score(&run.evaluation.baseline, run.metric));
    let decision = promote::decide(run.metric, run.cfg.k, run.value, standing, popularity);
    let meta = recommender_version(id, &run, decision.why.clone());
    version::record(view, &meta, run.encoded, decision.promote)?;
    let mut classifiers = Vec::new();
    for (r, bytes) in run.classifiers {
        let cid = view.next_model_id()?;
        classifiers.push(cid);
        version::record(
            view,
            &classifier_version(cid, r, run.data.clone()),
            bytes,
            false,
        )?;
    }
    let pruned = view.prune_models(run.cfg.keep_versions)?;
    Ok(Recorded {
        id,
        decision,
        classifiers,
        pruned,
    })
}

/// Makes a recorded recommender version the champion (`None`: back to the
/// previous champion); answers the new champion as served.
pub fn change_champion(view: &StoreView, to: Option<u64>) -> Result<ServingModel, TrainError> {
    match to {
        Some(id) => {
            let m = version::versions(view)?
                .into_iter()
                .find(|m| m.id == id)
                .ok_or(TrainError::NoVersion(id))?;
            if !m.kind().recommends() {
                return Err(TrainError::NotARecommender { id, kind: m.kind() });
            }
            view.promote(id)?;
        }
        None => {
            view.rollback()?;
        }
    }
    load_serving(view)?.ok_or_else(|| TrainError::Refused("no champion after the change".into()))
}

/// Records a version another member of the group trained and published
/// (its metadata as that member recorded it, and its serving bundle) and
/// makes it the champion here; answers it as served. A version already
/// recorded under that id is replaced: the group's trainer numbers versions
/// from the newest it has read, so its id wins.
pub fn adopt(
    view: &StoreView,
    meta: &[u8],
    bundle: &[u8],
    keep_versions: usize,
) -> Result<ServingModel, TrainError> {
    let v: ModelVersion = serde_json::from_slice(meta)
        .map_err(|e| TrainError::Decode(format!("a published model's metadata: {e}")))?;
    if !v.kind().recommends() {
        return Err(TrainError::NotARecommender {
            id: v.id,
            kind: v.kind(),
        });
    }
    super::serve::Bundle::check(bundle)
        .map_err(|e| TrainError::Decode(format!("published model {}: {e}", v.id)))?;
    version::record(view, &v, bundle, true)?;
    view.prune_models(keep_versions)?;
    load_serving(view)?.ok_or_else(|| TrainError::Refused("no champion after adopting".into()))
}
