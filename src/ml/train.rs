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
    /// Root mean squared error of the predicted preference against the held-out
    /// pairs' implicit feedback (as the notebooks' RegressionEvaluator).
    pub rmse: f64,
    pub baseline: RankingMetrics,
    /// The serving champion scored on this run's held-out split (so the two compare).
    pub champion: Option<RankingMetrics>,
    pub fit_s: f64,
    pub eval_s: f64,
    pub users: usize,
    pub items: usize,
    pub train_pairs: usize,
    pub test_pairs: usize,
}

/// Trains on `pairs`; `genres` gives each item's genre for serving; `champion`,
/// when given, is evaluated on the same held-out split.
pub fn train(
    pairs: Vec<(String, String, PairAgg)>,
    genres: &HashMap<String, String>,
    spec: &TrainSpec,
    champion: Option<&Bundle>,
) -> Result<Trained, AlsError> {
    let d = build(pairs, spec.test_fraction, spec.min_items, spec.seed);
    let t = Instant::now();
    let model = fit(&spec.als, &d.train, |_, _| {})?;
    let fit_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let metrics = evaluate(&d.train, &d.test, spec.k, |u, s| model.scores_into(u, s));
    let (mut se, mut n) = (0.0f64, 0usize);
    for u in 0..d.test.rows {
        let (items, weights) = d.test.row(u);
        for (&i, &w) in items.iter().zip(weights) {
            se += (f64::from(model.score(u, i as usize)) - f64::from(w)).powi(2);
            n += 1;
        }
    }
    let rmse = (se / n.max(1) as f64).sqrt();
    let mut popularity = vec![0u32; d.items.len()];
    for &i in &d.train.indices {
        popularity[i as usize] += 1;
    }
    let pop_scores: Vec<f32> = popularity.iter().map(|&p| p as f32).collect();
    let baseline = evaluate(&d.train, &d.test, spec.k, |_, s| {
        s.clear();
        s.extend_from_slice(&pop_scores);
    });
    let champion = champion.map(|c| {
        // Map this run's ids onto the champion's; items it never saw cannot be recommended,
        // users it never saw get its cold start (popularity).
        let cu: HashMap<&str, usize> = c
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.as_str(), i))
            .collect();
        let ci: HashMap<&str, usize> = c
            .items
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_str(), i))
            .collect();
        let item_map: Vec<Option<usize>> = d
            .items
            .iter()
            .map(|i| ci.get(i.as_str()).copied())
            .collect();
        evaluate(&d.train, &d.test, spec.k, |u, s| {
            s.clear();
            match cu.get(d.users[u].as_str()) {
                Some(&cu) => {
                    let x = c.model.user(cu);
                    s.extend(item_map.iter().map(|j| {
                        match j {
                            Some(j) => c
                                .model
                                .item(*j)
                                .iter()
                                .zip(x)
                                .map(|(a, b)| a * b)
                                .sum::<f32>(),
                            None => f32::NEG_INFINITY,
                        }
                    }));
                }
                None => s.extend(
                    item_map
                        .iter()
                        .map(|j| j.map_or(f32::NEG_INFINITY, |j| c.popularity[j] as f32)),
                ),
            }
        })
    });
    let eval_s = t.elapsed().as_secs_f64();
    // Serving excludes everything a user has seen, held out or not.
    let mut seen = Vec::with_capacity(d.train.nnz() + d.test.nnz());
    for m in [&d.train, &d.test, &d.unscored] {
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
        rmse,
        baseline,
        champion,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{VideoGen, World};
    use crate::ml::als::AlsParams;

    fn pairs() -> Vec<(String, String, PairAgg)> {
        let mut g = VideoGen::new(World::new(300, 80, 5), 5, 1_735_689_600_000, 50);
        let mut m: HashMap<(String, String), PairAgg> = HashMap::new();
        for _ in 0..20_000 {
            let e = g.next_event();
            let fb = e.implicit_feedback();
            let a = m.entry((e.user_id, e.video_id)).or_insert(PairAgg {
                weight: 0.0,
                events: 0,
                positive_events: 0,
                max_feedback: 0.0,
                last_ts_ms: 0,
            });
            a.weight += fb;
            a.events += 1;
            a.positive_events += u64::from(fb >= 0.5);
        }
        let mut v: Vec<_> = m.into_iter().map(|((u, i), a)| (u, i, a)).collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    #[test]
    fn beats_popularity_and_scores_the_champion_on_the_same_split() {
        let spec = TrainSpec {
            als: AlsParams {
                factors: 8,
                iterations: 10,
                ..AlsParams::default()
            }
            .check()
            .unwrap(),
            test_fraction: 0.2,
            min_items: 5,
            k: 10,
            seed: 1,
        };
        let first = train(pairs(), &HashMap::new(), &spec, None).unwrap();
        assert!(first.champion.is_none());
        assert!(
            first.metrics.ndcg > first.baseline.ndcg * 1.2,
            "{:?} vs {:?}",
            first.metrics,
            first.baseline
        );
        assert!(first.test_pairs > 0 && first.train_pairs > first.test_pairs);
        // Same data, same seed: the challenger is the champion, and scores the same.
        let second = train(pairs(), &HashMap::new(), &spec, Some(&first.bundle)).unwrap();
        let champ = second.champion.unwrap();
        assert!(
            (champ.ndcg - second.metrics.ndcg).abs() < 1e-9,
            "{champ:?} vs {:?}",
            second.metrics
        );
        assert!((champ.ndcg - first.metrics.ndcg).abs() < 1e-9);
    }
}
