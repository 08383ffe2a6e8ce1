//! Engagement classifiers as the reference notebooks trained them: label =
//! implicit feedback ≥ 0.5 per event; features = watch time, buffering events,
//! skipped, user id number, video id number, genre index, region index
//! (indexes by descending frequency, ties by name, as Spark's StringIndexer).
//! A decision tree (linfa-trees) and a Gaussian-kernel SVM (linfa-svm) — the SVM
//! builds a dense n×n kernel, so it trains on a stratified subsample.

use std::collections::HashMap;

use linfa::prelude::*;
use linfa_svm::Svm;
use linfa_trees::DecisionTree;
use ndarray::{Array1, Array2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::VideoEvent;

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
    /// Deepest tree (linfa's tree is slow without a bound).
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
            tree_max_depth: 12,
            tree_max_rows: 200_000,
            svm_max_rows: 5_000,
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
        if !(10..=20_000).contains(&self.svm_max_rows) {
            return bad(
                "svm_max_rows",
                self.svm_max_rows.to_string(),
                "must be 10..=20000 (the kernel matrix is n×n)",
            );
        }
        if !(self.svm_c.is_finite() && self.svm_c > 0.0) {
            return bad("svm_c", self.svm_c.to_string(), "must be > 0");
        }
        Ok(())
    }
}

/// The number an id ends with (`user_00042` → 42), else its index of first appearance.
fn id_numbers<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<f64> {
    let mut seen: HashMap<&str, f64> = HashMap::new();
    ids.map(|id| {
        let digits = id
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or("");
        match digits.parse::<u64>() {
            Ok(n) if !digits.is_empty() => n as f64,
            _ => {
                let next = seen.len() as f64;
                *seen.entry(id).or_insert(next)
            }
        }
    })
    .collect()
}

/// StringIndexer: most frequent value → 0, ties by name.
fn string_index<'a>(values: impl Iterator<Item = &'a str> + Clone) -> Vec<f64> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for v in values.clone() {
        *counts.entry(v).or_default() += 1;
    }
    let mut order: Vec<(&str, usize)> = counts.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let index: HashMap<&str, f64> = order
        .iter()
        .enumerate()
        .map(|(i, (v, _))| (*v, i as f64))
        .collect();
    values.map(|v| index[v]).collect()
}

/// Feature matrix and labels of events.
pub fn features(events: &[VideoEvent]) -> (Array2<f64>, Array1<bool>) {
    let users = id_numbers(events.iter().map(|e| e.user_id.as_str()));
    let videos = id_numbers(events.iter().map(|e| e.video_id.as_str()));
    let genres = string_index(events.iter().map(|e| e.genre.as_str()));
    let regions = string_index(events.iter().map(|e| e.region.as_str()));
    let mut x = Array2::zeros((events.len(), FEATURES.len()));
    for (i, e) in events.iter().enumerate() {
        let row = [
            e.watch_time_seconds,
            e.buffering_events as f64,
            f64::from(u8::from(e.skipped)),
            users[i],
            videos[i],
            genres[i],
            regions[i],
        ];
        for (j, v) in row.into_iter().enumerate() {
            x[[i, j]] = v;
        }
    }
    let y = events
        .iter()
        .map(|e| e.implicit_feedback() >= 0.5)
        .collect();
    (x, y)
}

/// Binary classification quality (positive class = engaged).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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
    pub model: &'static str,
    pub fit_s: f64,
    pub train_rows: usize,
    /// Rows available for training before subsampling.
    pub train_rows_available: usize,
    pub test_rows: usize,
    #[serde(flatten)]
    pub metrics: ClassMetrics,
    pub params: String,
    /// Per held-out row: (event index, label, prediction).
    #[serde(skip)]
    pub predictions: Vec<(usize, bool, bool)>,
}

/// Features as the tree sees them. linfa-trees 0.8 evaluates the boundary
/// between two values only at the globally last sample of a run of equal values,
/// so inside a node whose copy of that sample went elsewhere the boundary is never
/// tried: on discrete features (buffering, skipped) most splits are missed. Values
/// are scaled by 10⁶ and, for training, spread by 2·10⁻⁵ per row so that no two
/// are equal; every run of equal values stays contiguous and test rows fall on
/// the same side of each threshold.
fn tree_features(x: &Array2<f64>, spread: bool) -> Array2<f64> {
    let mut t = x.mapv(|v| v * 1e6);
    if spread {
        for (i, mut row) in t.axis_iter_mut(Axis(0)).enumerate() {
            row.mapv_inplace(|v| v + i as f64 * 2e-5);
        }
    }
    t
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
fn stratified(train: &[usize], y: &Array1<bool>, max: usize, seed: u64) -> Vec<usize> {
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

/// Trains and evaluates the decision tree and the SVM on `events`.
pub fn train_and_evaluate(
    events: &[VideoEvent],
    p: &ClassifyParams,
) -> Result<Vec<ClassifierReport>, ClassifyError> {
    p.check()?;
    if events.len() < 20 {
        return Err(ClassifyError::Data(format!(
            "{} events; need at least 20",
            events.len()
        )));
    }
    let (x, y) = features(events);
    let (train, test) = split(events.len(), p.test_fraction, p.seed);
    let (x_test, y_test) = (
        rows(&x, &test),
        test.iter().map(|&i| y[i]).collect::<Vec<bool>>(),
    );
    let mut out = Vec::new();

    // Decision tree on (a random subsample of) the training rows.
    let mut tree_rows = train.clone();
    tree_rows.truncate(p.tree_max_rows);
    let t = std::time::Instant::now();
    let ds = Dataset::new(
        tree_features(&rows(&x, &tree_rows), true),
        tree_rows
            .iter()
            .map(|&i| usize::from(y[i]))
            .collect::<Array1<usize>>(),
    );
    let tree = DecisionTree::params()
        .max_depth(Some(p.tree_max_depth))
        .fit(&ds)?;
    let fit_s = t.elapsed().as_secs_f64();
    let pred: Vec<bool> = tree
        .predict(&tree_features(&x_test, false))
        .iter()
        .map(|&c| c == 1)
        .collect();
    out.push(ClassifierReport {
        model: "decision_tree",
        fit_s,
        train_rows: tree_rows.len(),
        train_rows_available: train.len(),
        test_rows: test.len(),
        metrics: class_metrics(&y_test, &pred),
        params: format!("max_depth={}", p.tree_max_depth),
        predictions: test
            .iter()
            .zip(&y_test)
            .zip(&pred)
            .map(|((&i, &t), &p)| (i, t, p))
            .collect(),
    });

    // SVM (Gaussian kernel, standardized features) on a stratified subsample.
    let svm_rows = stratified(&train, &y, p.svm_max_rows, p.seed);
    let x_svm = rows(&x, &svm_rows);
    let mean = x_svm
        .mean_axis(Axis(0))
        .ok_or_else(|| ClassifyError::Data("no SVM rows".into()))?;
    let std = x_svm
        .std_axis(Axis(0), 0.0)
        .mapv(|s| if s > 0.0 { s } else { 1.0 });
    let scale = |m: &Array2<f64>| (m - &mean) / &std;
    let t = std::time::Instant::now();
    let ds = Dataset::new(
        scale(&x_svm),
        svm_rows.iter().map(|&i| y[i]).collect::<Array1<bool>>(),
    );
    // Width = number of features: sklearn's gamma="scale" on standardized data.
    let svm = Svm::<f64, bool>::params()
        .pos_neg_weights(p.svm_c, p.svm_c)
        .gaussian_kernel(FEATURES.len() as f64)
        .fit(&ds)?;
    let fit_s = t.elapsed().as_secs_f64();
    let pred: Vec<bool> = svm.predict(&scale(&x_test)).to_vec();
    out.push(ClassifierReport {
        model: "svm",
        fit_s,
        train_rows: svm_rows.len(),
        train_rows_available: train.len(),
        test_rows: test.len(),
        metrics: class_metrics(&y_test, &pred),
        params: format!(
            "kernel=gaussian width={} C={} stratified_subsample={}",
            FEATURES.len(),
            p.svm_c,
            svm_rows.len()
        ),
        predictions: test
            .iter()
            .zip(&y_test)
            .zip(&pred)
            .map(|((&i, &t), &p)| (i, t, p))
            .collect(),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computed_values() {
        // truth:     T T T F F F F F
        // predicted: T T F T F F F F
        let t = [true, true, true, false, false, false, false, false];
        let p = [true, true, false, true, false, false, false, false];
        let m = class_metrics(&t, &p);
        assert_eq!(m.confusion, [[4, 1], [1, 2]]);
        assert!((m.accuracy - 0.75).abs() < 1e-12);
        // class T: precision 2/3, recall 2/3; class F: precision 4/5, recall 4/5; weights 3/8, 5/8.
        let wp = 3.0 / 8.0 * (2.0 / 3.0) + 5.0 / 8.0 * 0.8;
        assert!((m.weighted_precision - wp).abs() < 1e-12);
        assert!((m.weighted_recall - wp).abs() < 1e-12);
        assert!((m.f1 - wp).abs() < 1e-12);
    }

    #[test]
    fn string_index_orders_by_frequency_then_name() {
        let v = ["b", "a", "c", "a", "b", "d"];
        assert_eq!(
            string_index(v.iter().copied()),
            vec![1.0, 0.0, 2.0, 0.0, 1.0, 3.0]
        );
        assert_eq!(
            id_numbers(["user_00042", "vid_7", "x", "y", "x"].into_iter()),
            vec![42.0, 7.0, 0.0, 1.0, 0.0]
        );
    }

    #[test]
    fn classifiers_learn_the_engagement_label() {
        let mut g = crate::generate::VideoGen::new(
            crate::generate::World::new(200, 60, 4),
            4,
            1_735_689_600_000,
            50,
        );
        let events: Vec<VideoEvent> = (0..3000).map(|_| g.next_event()).collect();
        let p = ClassifyParams {
            svm_max_rows: 800,
            ..ClassifyParams::default()
        };
        let r = train_and_evaluate(&events, &p).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].test_rows, 600);
        assert!(r[0].metrics.accuracy > 0.95, "{:?}", r[0]);
        assert!(r[1].metrics.accuracy > 0.85, "{:?}", r[1]);
        assert_eq!(r[1].train_rows, 800);
        let e = train_and_evaluate(
            &events,
            &ClassifyParams {
                svm_max_rows: 5,
                ..p
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("svm_max_rows"), "{e}");
    }
}
