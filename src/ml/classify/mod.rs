//! Engagement classifiers as the reference notebooks trained them: label =
//! implicit feedback ≥ 0.5 per event; features = watch time, buffering events,
//! skipped, user id number, video id number, genre index, region index
//! (indexes by descending frequency, ties by name, as Spark's StringIndexer).
//! A decision tree (linfa-trees) and a Gaussian-kernel SVM (linfa-svm) on a
//! stratified subsample, past 2,000 rows as a cascade of fits (linfa-svm
//! builds a dense n×n kernel: see [`crate::ml::cascade`]).

use std::collections::HashMap;

use linfa::prelude::*;
use linfa_svm::Svm;
use ndarray::{Array1, Array2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::domain::event::VideoEvent;

#[derive(Debug, Error)]
pub enum ClassifyError {
    #[error("classifier parameter `{name}` = {value}: {rule}")]
    Param {
        name: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("not enough data: {0}")]
    Data(String),
    #[error("decision tree: {0}")]
    Tree(#[from] linfa::Error),
    #[error("svm: {0}")]
    Svm(#[from] linfa_svm::SvmError),
}

pub const FEATURES: [&str; 7] = [
    "watch_time_seconds",
    "buffering_events",
    "skipped",
    "user_id",
    "video_id",
    "genre_index",
    "region_index",
];

/// Classifier hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyParams {
    /// Share of rows held out for testing.
    pub test_fraction: f64,
    pub seed: u64,
    /// Deepest tree (a bound against degenerate data; scikit-learn's default has none).
    pub tree_max_depth: usize,
    /// Most training rows for the tree (random subsample beyond).
    pub tree_max_rows: usize,
    /// Most training rows for the SVM (stratified subsample beyond).
    pub svm_max_rows: usize,
    /// SVM penalty C (both classes).
    pub svm_c: f64,
}

impl Default for ClassifyParams {
    fn default() -> Self {
        ClassifyParams {
            test_fraction: 0.2,
            seed: 57,
            tree_max_depth: 20,
            tree_max_rows: 200_000,
            svm_max_rows: 20_000,
            svm_c: 1.0,
        }
    }
}

impl ClassifyParams {
    pub fn check(&self) -> Result<(), ClassifyError> {
        let bad = |name, value: String, rule| Err(ClassifyError::Param { name, value, rule });
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return bad(
                "test_fraction",
                self.test_fraction.to_string(),
                "must be in (0, 1)",
            );
        }
        if !(1..=64).contains(&self.tree_max_depth) {
            return bad(
                "tree_max_depth",
                self.tree_max_depth.to_string(),
                "must be 1..=64",
            );
        }
        if self.tree_max_rows < 10 {
            return bad(
                "tree_max_rows",
                self.tree_max_rows.to_string(),
                "must be ≥ 10",
            );
        }
        if !(10..=200_000).contains(&self.svm_max_rows) {
            return bad(
                "svm_max_rows",
                self.svm_max_rows.to_string(),
                "must be 10..=200000 (the SVM is a cascade of fits of 2,000 rows)",
            );
        }
        if !(self.svm_c.is_finite() && self.svm_c > 0.0) {
            return bad("svm_c", self.svm_c.to_string(), "must be > 0");
        }
        Ok(())
    }
}

/// The number an id ends with (`user_00042` → 42), else a stable hash of the id
/// (the same id gets the same number in every snapshot).
fn id_number(id: &str) -> f64 {
    let digits = id
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or("");
    match digits.parse::<u64>() {
        Ok(n) if !digits.is_empty() && n < (1 << 40) => n as f64,
        _ => {
            // FNV-1a, folded to 31 bits so it stays exact in an f64 and in range.
            let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            (h % (1 << 31)) as f64
        }
    }
}

/// StringIndexer: most frequent value → 0, ties by name.
fn string_index<'a>(values: impl Iterator<Item = &'a str>) -> HashMap<String, f64> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let mut order: Vec<(&str, usize)> = counts.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    order
        .iter()
        .enumerate()
        .map(|(i, (v, _))| (v.to_string(), i as f64))
        .collect()
}

/// How events become feature rows: fitted on the training events and stored
/// with each classifier, so a later prediction encodes exactly as training did.
/// A genre or region the training data never had gets the next index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    genres: HashMap<String, f64>,
    regions: HashMap<String, f64>,
}

impl Encoder {
    pub fn fit<'a>(events: impl Iterator<Item = &'a VideoEvent> + Clone) -> Encoder {
        Encoder {
            genres: string_index(events.clone().map(|e| e.genre.as_str())),
            regions: string_index(events.map(|e| e.region.as_str())),
        }
    }

    fn index(map: &HashMap<String, f64>, v: &str) -> f64 {
        map.get(v).copied().unwrap_or(map.len() as f64)
    }

    pub fn row(&self, e: &VideoEvent) -> [f64; 7] {
        [
            e.watch_time_seconds,
            e.buffering_events as f64,
            f64::from(u8::from(e.skipped)),
            id_number(&e.user_id),
            id_number(&e.video_id),
            Self::index(&self.genres, &e.genre),
            Self::index(&self.regions, &e.region),
        ]
    }

    pub fn matrix<'a>(&self, events: impl ExactSizeIterator<Item = &'a VideoEvent>) -> Array2<f64> {
        let mut x = Array2::zeros((events.len(), FEATURES.len()));
        for (mut out, e) in x.axis_iter_mut(Axis(0)).zip(events) {
            for (o, v) in out.iter_mut().zip(self.row(e)) {
                *o = v;
            }
        }
        x
    }
}

/// The engagement label of an event, as the notebooks define it.
pub fn label(e: &VideoEvent) -> bool {
    e.implicit_feedback() >= 0.5
}

/// Binary classification quality (positive class = engaged).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub accuracy: f64,
    pub weighted_precision: f64,
    pub weighted_recall: f64,
    pub f1: f64,
    /// [[true negatives, false positives], [false negatives, true positives]]
    pub confusion: [[u64; 2]; 2],
}

pub fn class_metrics(truth: &[bool], predicted: &[bool]) -> ClassMetrics {
    let mut c = [[0u64; 2]; 2];
    for (&t, &p) in truth.iter().zip(predicted) {
        c[usize::from(t)][usize::from(p)] += 1;
    }
    let n = truth.len().max(1) as f64;
    let (mut wp, mut wr, mut wf) = (0.0, 0.0, 0.0);
    for (class, row) in c.iter().enumerate() {
        let support = (row[0] + row[1]) as f64;
        let predicted = (c[0][class] + c[1][class]) as f64;
        let tp = row[class] as f64;
        let precision = if predicted > 0.0 { tp / predicted } else { 0.0 };
        let recall = if support > 0.0 { tp / support } else { 0.0 };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        wp += support / n * precision;
        wr += support / n * recall;
        wf += support / n * f1;
    }
    ClassMetrics {
        accuracy: (c[0][0] + c[1][1]) as f64 / n,
        weighted_precision: wp,
        weighted_recall: wr,
        f1: wf,
        confusion: c,
    }
}

/// One trained and evaluated classifier.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifierReport {
    pub model: super::ModelKind,
    pub fit_s: f64,
    pub train_rows: usize,
    /// Rows available for training before subsampling.
    pub train_rows_available: usize,
    pub test_rows: usize,
    #[serde(flatten)]
    pub metrics: ClassMetrics,
    pub params: String,
}

mod tree;
pub use tree::{GrowRule, TreeNode};

/// A trained classifier as stored with its model version: the feature encoding
/// and the model, so it predicts later exactly as it was evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classifier {
    pub encoder: Encoder,
    pub model: ClassifierModel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClassifierModel {
    Tree(TreeNode),
    /// Gaussian SVM on features standardized with the training mean and deviation.
    Svm {
        mean: Vec<f64>,
        std: Vec<f64>,
        svm: Svm<f64, bool>,
    },
}

impl Classifier {
    pub fn kind(&self) -> super::ModelKind {
        match self.model {
            ClassifierModel::Tree(_) => super::ModelKind::DecisionTree,
            ClassifierModel::Svm { .. } => super::ModelKind::Svm,
        }
    }

    fn predict_matrix(&self, x: &Array2<f64>) -> Vec<bool> {
        match &self.model {
            ClassifierModel::Tree(t) => x
                .axis_iter(Axis(0))
                .map(|r| t.predict(r.as_slice().unwrap_or(&r.to_vec())))
                .collect(),
            ClassifierModel::Svm { mean, std, svm } => {
                let mean = Array1::from(mean.clone());
                let std = Array1::from(std.clone());
                svm.predict(&((x - &mean) / &std)).to_vec()
            }
        }
    }

    /// Predicted engagement of each event.
    pub fn predict(&self, events: &[VideoEvent]) -> Vec<bool> {
        self.predict_matrix(&self.encoder.matrix(events.iter()))
    }
}

/// One held-out prediction of an engagement classifier, as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub user_id: String,
    pub video_id: String,
    pub timestamp_ms: i64,
    pub engaged: bool,
    pub predicted: bool,
}

/// What a classifier's model version stores: the model and its held-out predictions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierBundle {
    pub classifier: Classifier,
    pub predictions: Vec<Prediction>,
}

fn rows(x: &Array2<f64>, idx: &[usize]) -> Array2<f64> {
    x.select(Axis(0), idx)
}

/// Seeded 80/20 (by `test_fraction`) split of row indexes.
pub fn split(n: usize, test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let test = ((n as f64) * test_fraction).round() as usize;
    let (te, tr) = idx.split_at(test);
    (tr.to_vec(), te.to_vec())
}

/// Up to `max` rows keeping each class's share.
pub(crate) fn stratified(train: &[usize], y: &[bool], max: usize, seed: u64) -> Vec<usize> {
    if train.len() <= max {
        return train.to_vec();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED);
    let (mut pos, mut neg): (Vec<usize>, Vec<usize>) = train.iter().partition(|&&i| y[i]);
    pos.shuffle(&mut rng);
    neg.shuffle(&mut rng);
    let take_pos = ((pos.len() as f64 / train.len() as f64) * max as f64).round() as usize;
    let mut out: Vec<usize> = pos
        .into_iter()
        .take(take_pos)
        .chain(neg.into_iter().take(max - take_pos.min(max)))
        .collect();
    out.sort_unstable();
    out
}

/// Trains and evaluates the decision tree and the SVM on `events`: each report
/// with the trained classifier and its held-out predictions.
pub fn train_and_evaluate(
    events: &[VideoEvent],
    p: &ClassifyParams,
) -> Result<Vec<(ClassifierReport, ClassifierBundle)>, ClassifyError> {
    p.check()?;
    if events.len() < 20 {
        return Err(ClassifyError::Data(format!(
            "{} events; need at least 20",
            events.len()
        )));
    }
    let (train, test) = split(events.len(), p.test_fraction, p.seed);
    let encoder = Encoder::fit(train.iter().map(|&i| &events[i]));
    let x = encoder.matrix(events.iter());
    let y: Vec<bool> = events.iter().map(label).collect();
    let x_test = rows(&x, &test);
    let y_test: Vec<bool> = test.iter().map(|&i| y[i]).collect();
    let report = |model, fit_s, train_rows, params, classifier: Classifier| {
        let pred = classifier.predict_matrix(&x_test);
        let predictions = test
            .iter()
            .zip(&y_test)
            .zip(&pred)
            .map(|((&i, &engaged), &predicted)| {
                let e = &events[i];
                Prediction {
                    user_id: e.user_id.to_string(),
                    video_id: e.video_id.to_string(),
                    timestamp_ms: e.timestamp_ms,
                    engaged,
                    predicted,
                }
            })
            .collect();
        (
            ClassifierReport {
                model,
                fit_s,
                train_rows,
                train_rows_available: train.len(),
                test_rows: test.len(),
                metrics: class_metrics(&y_test, &pred),
                params,
            },
            ClassifierBundle {
                classifier,
                predictions,
            },
        )
    };
    let mut out = Vec::new();

    // Decision tree on (a random subsample of) the training rows.
    let mut tree_rows = train.clone();
    tree_rows.truncate(p.tree_max_rows);
    let n_tree = tree_rows.len();
    let t = std::time::Instant::now();
    let tree = TreeNode::grow(&x, &y, tree_rows, 0, p.tree_max_depth)?;
    let fit_s = t.elapsed().as_secs_f64();
    let (depth, leaves) = tree.shape();
    out.push(report(
        super::ModelKind::DecisionTree,
        fit_s,
        n_tree,
        format!(
            "max_depth={} depth={depth} leaves={leaves}",
            p.tree_max_depth
        ),
        Classifier {
            encoder: encoder.clone(),
            model: ClassifierModel::Tree(tree),
        },
    ));

    // SVM (Gaussian kernel, standardized features) on a stratified subsample.
    let svm_rows = stratified(&train, &y, p.svm_max_rows, p.seed);
    let x_svm = rows(&x, &svm_rows);
    let y_svm: Vec<bool> = svm_rows.iter().map(|&i| y[i]).collect();
    let t = std::time::Instant::now();
    // Width = number of features: sklearn's gamma="scale" on standardized data.
    // Stopping tolerance 1e-3, scikit-learn's (libsvm's) default: linfa-svm's
    // 1e-7 iterates three times as long for the same support vectors and
    // accuracy (`bench classify`, 5,000 rows: 1.67 s → 0.58 s, accuracy 0.9851
    // both). Past 2,000 rows, a cascade of fits (see `ml::cascade`): one
    // dense kernel of 20,000 rows would hold 3.2 GB.
    let (mean, std, cascade) = crate::ml::cascade::fit_standardized(
        &x_svm,
        &y_svm,
        &crate::ml::cascade::CascadeParams {
            c: p.svm_c,
            width: FEATURES.len() as f64,
            seed: p.seed,
            ..Default::default()
        },
    )?;
    let svm = cascade.svm;
    let fit_s = t.elapsed().as_secs_f64();
    out.push(report(
        super::ModelKind::Svm,
        fit_s,
        svm_rows.len(),
        format!(
            "kernel=gaussian width={} C={} eps=0.001 stratified_subsample={} cascade_chunks={} cascade_fits={} last_fit_rows={} sampled_out={} support_vectors={}",
            FEATURES.len(),
            p.svm_c,
            svm_rows.len(),
            cascade.chunks,
            cascade.fits,
            cascade.last_fit_rows,
            cascade.sampled_out,
            svm.nsupport()
        ),
        Classifier {
            encoder,
            model: ClassifierModel::Svm {
                mean: mean.to_vec(),
                std: std.to_vec(),
                svm,
            },
        },
    ));
    Ok(out)
}

#[cfg(test)]
mod tests;
