//! Ranking metrics of top-k recommendations against held-out items.
//!
//! For every user with test items: recommend the top `k` items seen in training
//! that are not in the user's training set. precision@k = hits/k;
//! recall@k = hits/min(k, |test|); NDCG@k with binary gains, ideal DCG over
//! min(k, |test|) items; MAP@k = Σ hitᵢ·precision@i / min(k, |test|);
//! coverage = distinct recommended items / all items. All averaged over users.
//! Beyond accuracy: novelty = the mean self-information `−log₂(pᵢ)` of the
//! recommended items, `pᵢ` the share of training users who have item i;
//! popularity bias = the mean training popularity of recommended items over
//! the mean of the catalog's items (1: as popular as the catalog on average);
//! intra-list genre diversity = the share of a list's item pairs whose genres
//! differ (items without a genre left out; lists with fewer than two with one
//! not counted), when genres are known.

use rayon::prelude::*;
use serde::Serialize;

use super::sparse::Csr;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct RankingMetrics {
    pub k: usize,
    pub precision: f64,
    pub recall: f64,
    pub ndcg: f64,
    pub map: f64,
    pub coverage: f64,
    pub users: usize,
    /// Mean self-information of the recommended items, bits (0 in versions
    /// recorded before it was measured).
    #[serde(default)]
    pub novelty: f64,
    /// Mean popularity of the recommended items over the catalog's mean.
    #[serde(default)]
    pub popularity_bias: f64,
    /// Intra-list genre diversity (`None` where the items have no genres).
    #[serde(default)]
    pub diversity: Option<f64>,
}

/// Each item's genre as a small number (`NO_GENRE`: none known).
pub type Genres = [u32];
pub const NO_GENRE: u32 = u32::MAX;

/// The genre numbers of `items` from an item → genre map; `None` when no
/// item has one.
pub fn genre_ids(
    items: &[String],
    genres: &std::collections::HashMap<String, String>,
) -> Option<Vec<u32>> {
    let mut names: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let ids: Vec<u32> = items
        .iter()
        .map(|i| match genres.get(i).map(String::as_str) {
            Some(g) if !g.is_empty() => {
                let next = names.len() as u32;
                *names.entry(g).or_insert(next)
            }
            _ => NO_GENRE,
        })
        .collect();
    (!names.is_empty()).then_some(ids)
}

/// The share of the list's pairs of items with a known genre whose genres
/// differ; `None` with fewer than two such items.
pub fn intra_list_diversity(ranked: &[u32], genres: &Genres) -> Option<f64> {
    let known: Vec<u32> = ranked
        .iter()
        .filter_map(|&i| genres.get(i as usize).copied())
        .filter(|&g| g != NO_GENRE)
        .collect();
    let n = known.len();
    if n < 2 {
        return None;
    }
    let mut differ = 0usize;
    for a in 0..n {
        for b in a + 1..n {
            differ += usize::from(known[a] != known[b]);
        }
    }
    Some(differ as f64 / (n * (n - 1) / 2) as f64)
}

/// Metrics of one user's ranked list against their test items (sorted ids).
pub fn user_metrics(ranked: &[u32], test: &[u32], k: usize) -> (f64, f64, f64, f64) {
    let rel = test.len().min(k);
    if rel == 0 {
        return (0.0, 0.0, 0.0, 0.0);
    }
    let (mut hits, mut dcg, mut ap) = (0usize, 0.0, 0.0);
    for (pos, item) in ranked.iter().take(k).enumerate() {
        if test.binary_search(item).is_ok() {
            hits += 1;
            dcg += 1.0 / ((pos + 2) as f64).log2();
            ap += hits as f64 / (pos + 1) as f64;
        }
    }
    let idcg: f64 = (0..rel).map(|p| 1.0 / ((p + 2) as f64).log2()).sum();
    (
        hits as f64 / k as f64,
        hits as f64 / rel as f64,
        dcg / idcg,
        ap / rel as f64,
    )
}

/// The `k` best-scored candidates (ties to the lower id), best first.
pub fn top_k(scores: &[f32], candidate: impl Fn(usize) -> bool, k: usize) -> Vec<u32> {
    // No more than there are items, whatever `k` a caller passes.
    let k = k.min(scores.len());
    if k == 0 {
        return Vec::new();
    }
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (i, &s) in scores.iter().enumerate() {
        if !candidate(i) || !s.is_finite() {
            continue;
        }
        if best.len() == k && s <= best[k - 1].0 {
            continue;
        }
        let at = best.partition_point(|&(bs, _)| bs >= s);
        best.insert(at, (s, i as u32));
        best.truncate(k);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// Evaluates `score_user` (fills one score per item) on every user with test items.
pub fn evaluate(
    train: &Csr,
    test: &Csr,
    k: usize,
    score_user: impl Fn(usize, &mut Vec<f32>) + Sync,
) -> RankingMetrics {
    evaluate_with_genres(train, test, k, None, score_user)
}

/// [`evaluate`], with the intra-list genre diversity where `genres` (one per
/// item column) are given.
pub fn evaluate_with_genres(
    train: &Csr,
    test: &Csr,
    k: usize,
    genres: Option<&Genres>,
    score_user: impl Fn(usize, &mut Vec<f32>) + Sync,
) -> RankingMetrics {
    let items = train.cols.max(test.cols);
    let mut in_train = vec![false; items];
    // Training users per item (each user's row holds an item once).
    let mut pop = vec![0u32; items];
    for &i in &train.indices {
        in_train[i as usize] = true;
        pop[i as usize] += 1;
    }
    let train_users = (0..train.rows)
        .filter(|&u| !train.row(u).0.is_empty())
        .count()
        .max(1) as f64;
    let info = |i: u32| -> f64 { -(f64::from(pop[i as usize].max(1)) / train_users).log2() };
    let catalog = in_train.iter().filter(|&&t| t).count().max(1) as f64;
    let catalog_pop = f64::from(pop.iter().sum::<u32>()) / catalog;
    let users: Vec<usize> = (0..test.rows)
        .filter(|&u| !test.row(u).0.is_empty())
        .collect();
    let (sums, recommended) = users
        .par_iter()
        .fold(
            || {
                (
                    (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0usize),
                    vec![false; items],
                    Vec::new(),
                )
            },
            |(mut acc, mut rec, mut scores), &u| {
                score_user(u, &mut scores);
                let seen = if u < train.rows {
                    train.row(u).0
                } else {
                    &[][..]
                };
                let ranked = top_k(
                    &scores,
                    |i| in_train[i] && seen.binary_search(&(i as u32)).is_err(),
                    k,
                );
                for &i in &ranked {
                    rec[i as usize] = true;
                }
                let m = user_metrics(&ranked, test.row(u).0, k);
                let n = ranked.len().max(1) as f64;
                let novelty = ranked.iter().map(|&i| info(i)).sum::<f64>() / n;
                let popular = ranked
                    .iter()
                    .map(|&i| f64::from(pop[i as usize]))
                    .sum::<f64>()
                    / n;
                let diverse = genres.and_then(|g| intra_list_diversity(&ranked, g));
                acc = (
                    acc.0 + m.0,
                    acc.1 + m.1,
                    acc.2 + m.2,
                    acc.3 + m.3,
                    acc.4 + novelty,
                    acc.5 + popular,
                    acc.6 + diverse.unwrap_or(0.0),
                    acc.7 + usize::from(diverse.is_some()),
                );
                (acc, rec, scores)
            },
        )
        .map(|(acc, rec, _)| (acc, rec))
        .reduce(
            || {
                (
                    (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0usize),
                    vec![false; items],
                )
            },
            |(a, mut ra), (b, rb)| {
                ra.iter_mut().zip(&rb).for_each(|(x, y)| *x |= y);
                (
                    (
                        a.0 + b.0,
                        a.1 + b.1,
                        a.2 + b.2,
                        a.3 + b.3,
                        a.4 + b.4,
                        a.5 + b.5,
                        a.6 + b.6,
                        a.7 + b.7,
                    ),
                    ra,
                )
            },
        );
    let n = users.len().max(1) as f64;
    RankingMetrics {
        k,
        precision: sums.0 / n,
        recall: sums.1 / n,
        ndcg: sums.2 / n,
        map: sums.3 / n,
        coverage: recommended.iter().filter(|&&r| r).count() as f64 / items.max(1) as f64,
        users: users.len(),
        novelty: sums.4 / n,
        popularity_bias: sums.5 / n / catalog_pop.max(1e-9),
        diversity: (sums.7 > 0).then(|| sums.6 / sums.7 as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_metrics_match_hand_computed_values() {
        // Ranked [5, 1, 7, 2], test {1, 2, 9}, k = 4: hits at positions 2 and 4.
        let (p, r, n, m) = user_metrics(&[5, 1, 7, 2], &[1, 2, 9], 4);
        assert!((p - 0.5).abs() < 1e-12);
        assert!((r - 2.0 / 3.0).abs() < 1e-12);
        let dcg = 1.0 / 3f64.log2() + 1.0 / 5f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2() + 1.0 / 4f64.log2();
        assert!((n - dcg / idcg).abs() < 1e-12);
        assert!((m - (0.5 + 0.5) / 3.0).abs() < 1e-12);
        // More test items than k: recall and MAP divide by k.
        let (_, r, n, m) = user_metrics(&[1, 2], &[1, 2, 3, 4], 2);
        assert_eq!((r, n, m), (1.0, 1.0, 1.0));
        assert_eq!(user_metrics(&[3], &[], 1), (0.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn intra_list_diversity_is_the_share_of_pairs_of_different_genres() {
        let g = [0, 0, 1, NO_GENRE, 2];
        // Pairs of {0, 1, 2, 4} by genre {0, 0, 1, 2}: 5 of 6 differ.
        let d = intra_list_diversity(&[0, 1, 2, 3, 4], &g).unwrap();
        assert!((d - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(intra_list_diversity(&[0, 1], &g), Some(0.0));
        assert_eq!(
            intra_list_diversity(&[0, 3], &g),
            None,
            "one item with a genre"
        );
        assert_eq!(
            intra_list_diversity(&[9, 0], &g),
            None,
            "an id past the genres"
        );
        let items = ["a", "b", "c"].map(String::from);
        let map = [("a", "Drama"), ("c", "Drama")]
            .map(|(i, g)| (i.to_string(), g.to_string()))
            .into();
        assert_eq!(genre_ids(&items, &map), Some(vec![0, NO_GENRE, 0]));
        assert_eq!(genre_ids(&items, &Default::default()), None);

        // Through evaluate.
        let train = Csr::from_triplets(2, 4, &[(0, 0, 1.0), (1, 1, 1.0), (1, 2, 1.0)]);
        let test = Csr::from_triplets(2, 4, &[(0, 1, 1.0), (1, 0, 1.0)]);
        let genres = [0, 1, 1, 1];
        let m = evaluate_with_genres(&train, &test, 2, Some(&genres), |_, s| {
            *s = vec![0.1, 0.2, 0.3, 0.9]
        });
        // In-train candidates only (item 3 never is): user 0 → [2, 1] (1, 1),
        // user 1 → [0] (one item: not counted).
        assert_eq!(m.diversity, Some(0.0));
        let m = evaluate(&train, &test, 2, |_, s| *s = vec![0.1, 0.2, 0.3, 0.9]);
        assert_eq!(m.diversity, None);
    }

    #[test]
    fn top_k_orders_by_score_and_skips_non_candidates() {
        let s = [0.1, 0.9, 0.5, 0.9, f32::NAN, 0.7];
        assert_eq!(top_k(&s, |i| i != 3, 3), vec![1, 5, 2]);
        assert_eq!(top_k(&s, |_| true, 2), vec![1, 3]);
        assert!(top_k(&s, |_| true, 0).is_empty());
        assert_eq!(top_k(&s, |_| true, usize::MAX).len(), 5);
    }

    #[test]
    fn evaluate_excludes_training_items_and_counts_coverage() {
        let train = Csr::from_triplets(2, 4, &[(0, 0, 1.0), (1, 1, 1.0), (1, 2, 1.0)]);
        let test = Csr::from_triplets(2, 4, &[(0, 1, 1.0), (1, 0, 1.0)]);
        // Every user scores items by id descending: item 3 is never in train, so never recommended.
        let m = evaluate(&train, &test, 1, |_, s| *s = vec![0.1, 0.2, 0.3, 0.9]);
        // user 0: top among {1, 2} is 2 (miss); user 1: top among {0} is 0 (hit).
        assert_eq!(m.users, 2);
        assert!((m.precision - 0.5).abs() < 1e-12);
        assert!((m.coverage - 0.5).abs() < 1e-12);
    }

    #[test]
    fn novelty_and_popularity_bias_follow_the_training_popularity_of_what_is_listed() {
        // Item 0 is in 3 of 4 training users' rows, items 1..3 in one each.
        let train = Csr::from_triplets(
            4,
            4,
            &[
                (0, 0, 1.0),
                (0, 1, 1.0),
                (1, 0, 1.0),
                (1, 2, 1.0),
                (2, 0, 1.0),
                (3, 3, 1.0),
            ],
        );
        let test = Csr::from_triplets(4, 4, &[(0, 2, 1.0), (1, 1, 1.0), (2, 1, 1.0), (3, 0, 1.0)]);
        // Users 0..2 get item 3 (1 user of 4: 2 bits), user 3 gets item 0 (3 of 4).
        let m = evaluate(&train, &test, 1, |_, s| *s = vec![0.9, 0.1, 0.2, 0.3]);
        let want = (3.0 * 2.0 - (0.75f64).log2()) / 4.0;
        assert!((m.novelty - want).abs() < 1e-12, "{m:?}");
        // Listed: popularity 1, 1, 1, 3 (mean 1.5); the catalog's mean is 6 / 4.
        assert!((m.popularity_bias - 1.0).abs() < 1e-12, "{m:?}");
        // A list of the rarest items only: 2 bits each, a third below the catalog.
        let rare = evaluate(&train, &test, 1, |_, s| *s = vec![0.0, 0.9, 0.8, 0.1]);
        assert!((rare.novelty - 2.0).abs() < 1e-12, "{rare:?}");
        assert!((rare.popularity_bias - 2.0 / 3.0).abs() < 1e-12, "{rare:?}");
    }
}
