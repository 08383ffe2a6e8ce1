//! A trained model as recorded: its kind, parameters, the data it was trained
//! on, timings, held-out metrics and why it was or was not promoted. Stored as
//! JSON (the store keeps it opaque); the shape is typed here, one per kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::als::AlsParams;
use super::classify::ClassMetrics;
use super::metrics::RankingMetrics;
use super::train::{BlendEvaluation, FoldedEvaluation};
use crate::store::{StoreError, StoreView};

/// What a model is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ModelKind {
    /// The implicit-feedback recommender.
    Als,
    DecisionTree,
    Svm,
}

impl ModelKind {
    pub const CLASSIFIERS: [ModelKind; 2] = [ModelKind::DecisionTree, ModelKind::Svm];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Als => "als",
            ModelKind::DecisionTree => "decision_tree",
            ModelKind::Svm => "svm",
        }
    }

    /// Whether versions of this kind serve recommendations.
    pub fn recommends(self) -> bool {
        self == ModelKind::Als
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a training snapshot held, as of which offsets.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub stored_events: u64,
    pub music_pairs: usize,
    pub classifier_events: usize,
    /// namespace → "topic/partition" → next offset.
    pub offsets: BTreeMap<String, BTreeMap<String, i64>>,
    #[serde(default)]
    pub video_pairs: usize,
    #[serde(default)]
    pub video_pairs_s: f64,
    /// Member of the group → every batch of its below this number is in the
    /// snapshot (this store's member id alone, outside a group).
    #[serde(default)]
    pub covered: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommenderData {
    pub snapshot: SnapshotInfo,
    pub users: usize,
    pub items: usize,
    pub train_pairs: usize,
    pub test_pairs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommenderTimings {
    pub fit_s: f64,
    pub eval_s: f64,
}

/// The recommender's held-out metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommenderMetrics {
    #[serde(flatten)]
    pub ranking: RankingMetrics,
    pub rmse: f64,
    /// ALS blended with content affinity, when configured.
    pub affinity_blend: Option<BlendEvaluation>,
    /// The blend weight it serves with (0: ALS alone ranked better).
    pub serving_affinity_weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommenderVersion {
    pub params: AlsParams,
    pub data: RecommenderData,
    pub timings: RecommenderTimings,
    pub metrics: RecommenderMetrics,
    /// Popularity on the same split.
    pub baseline: RankingMetrics,
    /// Started from a champion's factors (none: a cold start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<WarmStartInfo>,
    /// The champion it was trained next to, folded in on the same split (how
    /// far the live fold-in is from this retrain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded_champion: Option<FoldedEvaluation>,
    /// The hyperparameter search that chose `params` (none: trained as configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<super::search::SearchReport>,
    /// The ranking stage fitted with it (none: not configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<super::rerank::RerankOutcome>,
    /// The item × item family that ranks in ALS's place (`metrics` are its);
    /// none: ALS ranks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_family: Option<super::train::ItemServing>,
    /// Factors trained elsewhere (the Spark route) and imported: from where,
    /// and what of the snapshot they covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<super::import::ImportInfo>,
}

/// A fit that started from a model trained before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmStartInfo {
    /// The version whose factors it started from.
    pub from: u64,
    /// Iterations run (instead of the configured `iterations`).
    pub iterations: usize,
    /// Rows of the data that started from that model's rows.
    pub users: usize,
    pub items: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierParams {
    pub params: String,
    pub features: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierData {
    pub snapshot: SnapshotInfo,
    pub train_rows: usize,
    pub train_rows_available: usize,
    pub test_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierTimings {
    pub fit_s: f64,
}

/// No baseline (written as `{}`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NoBaseline {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierVersion {
    pub params: ClassifierParams,
    pub data: ClassifierData,
    pub timings: ClassifierTimings,
    pub metrics: ClassMetrics,
    #[serde(default)]
    pub baseline: NoBaseline,
}

/// What was trained, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trained {
    Als(Box<RecommenderVersion>),
    DecisionTree(ClassifierVersion),
    Svm(ClassifierVersion),
}

/// One trained model as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub id: u64,
    pub created_ms: i64,
    #[serde(flatten)]
    pub trained: Trained,
    /// Why it was or was not promoted.
    pub decision: String,
}

impl ModelVersion {
    pub fn kind(&self) -> ModelKind {
        match self.trained {
            Trained::Als(_) => ModelKind::Als,
            Trained::DecisionTree(_) => ModelKind::DecisionTree,
            Trained::Svm(_) => ModelKind::Svm,
        }
    }

    pub fn recommender(&self) -> Option<&RecommenderVersion> {
        match &self.trained {
            Trained::Als(r) => Some(r),
            _ => None,
        }
    }

    pub fn classifier(&self) -> Option<&ClassifierVersion> {
        match &self.trained {
            Trained::DecisionTree(c) | Trained::Svm(c) => Some(c),
            Trained::Als(_) => None,
        }
    }

    /// What its training snapshot held.
    pub fn snapshot(&self) -> &SnapshotInfo {
        match &self.trained {
            Trained::Als(r) => &r.data.snapshot,
            Trained::DecisionTree(c) | Trained::Svm(c) => &c.data.snapshot,
        }
    }

    /// What its training snapshot held, to change (a reply that leaves a part out).
    pub fn snapshot_mut(&mut self) -> &mut SnapshotInfo {
        match &mut self.trained {
            Trained::Als(r) => &mut r.data.snapshot,
            Trained::DecisionTree(c) | Trained::Svm(c) => &mut c.data.snapshot,
        }
    }

    /// The headline score: NDCG for a recommender, accuracy for a classifier.
    pub fn score(&self) -> f64 {
        match &self.trained {
            Trained::Als(r) => r.metrics.ranking.ndcg,
            Trained::DecisionTree(c) | Trained::Svm(c) => c.metrics.accuracy,
        }
    }
}

fn corrupt(id: u64, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        key: format!("model {id}"),
        message: e.to_string(),
    }
}

/// Records a version and its bundle; makes it the champion when `promote`.
pub fn record(
    view: &StoreView,
    v: &ModelVersion,
    bundle: &[u8],
    promote: bool,
) -> Result<(), StoreError> {
    let meta = serde_json::to_vec(v).map_err(|e| corrupt(v.id, e))?;
    view.add_model(v.id, &meta, bundle, promote)
}

/// Every recorded version, oldest first.
pub fn versions(view: &StoreView) -> Result<Vec<ModelVersion>, StoreError> {
    view.model_metas()?
        .into_iter()
        .map(|(id, meta)| serde_json::from_slice(&meta).map_err(|e| corrupt(id, e)))
        .collect()
}

/// The champion's version.
pub fn champion(view: &StoreView) -> Result<Option<ModelVersion>, StoreError> {
    let Some(id) = view.champion_id()? else {
        return Ok(None);
    };
    Ok(versions(view)?.into_iter().find(|m| m.id == id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_version_of_each_kind_reads_back() {
        let rec = r#"{"id":3,"kind":"als","created_ms":5,
          "params":{"factors":8,"iterations":2,"regularization":0.1,"alpha":1.0,"cg_steps":3,"seed":1,
                    "nonnegative":false,"weighted_regularization":false,"exact":false},
          "data":{"snapshot":{"stored_events":10,"music_pairs":0,"classifier_events":4,"offsets":{"ns":{"t/0":10}},
                  "video_pairs":7,"video_pairs_s":0.1},"users":2,"items":3,"train_pairs":5,"test_pairs":2},
          "timings":{"fit_s":0.5,"eval_s":0.2},
          "metrics":{"k":10,"precision":0.1,"recall":0.2,"ndcg":0.3,"map":0.1,"coverage":0.5,"users":2,
                     "rmse":0.9,"affinity_blend":null,"serving_affinity_weight":0.0},
          "baseline":{"k":10,"precision":0.0,"recall":0.1,"ndcg":0.1,"map":0.0,"coverage":0.1,"users":2},
          "decision":"promoted: first model"}"#;
        let m: ModelVersion = serde_json::from_str(rec).unwrap();
        assert_eq!((m.id, m.kind(), m.score()), (3, ModelKind::Als, 0.3));
        assert_eq!(m.snapshot().offsets["ns"]["t/0"], 10);
        let again: ModelVersion = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(again, m);
        let tree = r#"{"id":4,"kind":"decision_tree","created_ms":5,
          "params":{"params":"depth 5","features":["a","b"]},
          "data":{"snapshot":{"stored_events":10,"music_pairs":0,"classifier_events":4,"offsets":{}},
                  "train_rows":3,"train_rows_available":3,"test_rows":1},
          "timings":{"fit_s":0.1},
          "metrics":{"accuracy":0.9,"weighted_precision":0.9,"weighted_recall":0.9,"f1":0.9,
                     "confusion":[[1,0],[0,1]]},
          "baseline":{}, "decision":"recorded"}"#;
        let t: ModelVersion = serde_json::from_str(tree).unwrap();
        assert_eq!((t.kind(), t.score()), (ModelKind::DecisionTree, 0.9));
        assert!(t.recommender().is_none() && t.classifier().is_some());
        let bad = rec.replace(r#""ndcg":0.3,"#, "");
        assert!(serde_json::from_str::<ModelVersion>(&bad).is_err());
    }
}
