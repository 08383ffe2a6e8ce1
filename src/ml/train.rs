//! One training run on a snapshot of the store: held-out split, ALS fit, held-out
//! evaluation against a popularity baseline, and the serving bundle.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use super::als::{fit, AlsError, CheckedAlsParams};
use super::dataset::build;
use super::metrics::{evaluate, RankingMetrics};
use super::serve::Bundle;
use super::sparse::Csr;
use crate::store::PairAgg;

#[derive(Debug, Clone)]
pub struct TrainSpec {
    pub als: CheckedAlsParams,
    pub test_fraction: f64,
    pub min_items: usize,
    pub k: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trained {
    #[serde(skip)]
    pub bundle: Bundle,
    pub metrics: RankingMetrics,
    pub baseline: RankingMetrics,
    pub fit_s: f64,
    pub eval_s: f64,
    pub users: usize,
    pub items: usize,
    pub train_pairs: usize,
    pub test_pairs: usize,
}

/// Trains on `pairs`; `genres` gives each item's genre for serving.
pub fn train(
    pairs: Vec<(String, String, PairAgg)>,
    genres: &HashMap<String, String>,
    spec: &TrainSpec,
) -> Result<Trained, AlsError> {
    let d = build(pairs, spec.test_fraction, spec.min_items, spec.seed);
    let t = Instant::now();
    let model = fit(&spec.als, &d.train, |_, _| {})?;
    let fit_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let f = model.factors;
    let metrics = evaluate(&d.train, &d.test, spec.k, |u, s| {
        s.clear();
        let x = model.user(u);
        s.extend(
            model
                .item_factors
                .chunks_exact(f)
                .map(|y| y.iter().zip(x).map(|(a, b)| a * b).sum::<f32>()),
        );
    });
    let mut popularity = vec![0u32; d.items.len()];
    for &i in &d.train.indices {
        popularity[i as usize] += 1;
    }
    let pop_scores: Vec<f32> = popularity.iter().map(|&p| p as f32).collect();
    let baseline = evaluate(&d.train, &d.test, spec.k, |_, s| {
        s.clear();
        s.extend_from_slice(&pop_scores);
    });
    let eval_s = t.elapsed().as_secs_f64();
    // Serving excludes everything a user has seen, held out or not.
    let mut seen = Vec::with_capacity(d.train.nnz() + d.test.nnz());
    for m in [&d.train, &d.test] {
        for u in 0..m.rows {
            seen.extend(m.row(u).0.iter().map(|&i| (u as u32, i, 1.0)));
        }
    }
    let seen = Csr::from_triplets(d.users.len(), d.items.len(), &seen);
    let item_genre = d
        .items
        .iter()
        .map(|i| genres.get(i).cloned().unwrap_or_default())
        .collect();
    Ok(Trained {
        metrics,
        baseline,
        fit_s,
        eval_s,
        users: d.users.len(),
        items: d.items.len(),
        train_pairs: d.train.nnz(),
        test_pairs: d.test.nnz(),
        bundle: Bundle {
            model,
            users: d.users,
            items: d.items,
            seen,
            item_genre,
            popularity,
        },
    })
}
