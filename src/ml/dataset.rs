//! Interactions from the store's pair aggregates: id dictionaries, a train matrix,
//! and a per-user held-out test set chosen deterministically (seeded hash).
//!
//! As the peers' split: a pair is positive when one of its events had feedback
//! ≥ 0.5; users with at least `min_items` distinct items hold out
//! round(`test_fraction` × their positive items) positive items.

use std::collections::HashMap;

use super::sparse::Csr;
use crate::store::PairAgg;

#[derive(Debug, Clone)]
pub struct Interactions {
    pub users: Vec<String>,
    pub items: Vec<String>,
    pub user_index: HashMap<String, u32>,
    pub item_index: HashMap<String, u32>,
    /// users × items, summed implicit feedback.
    pub train: Csr,
    /// users × items, held-out positive pairs (their summed implicit feedback).
    pub test: Csr,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn key_hash(seed: u64, user: u32, item: u32) -> u64 {
    splitmix64(splitmix64(seed ^ u64::from(user)) ^ u64::from(item))
}

/// Builds the matrices; `test_fraction` 0 keeps every pair for training.
pub fn build(
    pairs: impl IntoIterator<Item = (String, String, PairAgg)>,
    test_fraction: f64,
    min_items: usize,
    seed: u64,
) -> Interactions {
    let mut users = Vec::new();
    let mut items = Vec::new();
    let mut user_index: HashMap<String, u32> = HashMap::new();
    let mut item_index: HashMap<String, u32> = HashMap::new();
    let mut per_user: Vec<Vec<(u32, f32, bool)>> = Vec::new();
    for (u, i, agg) in pairs {
        let ui = *user_index.entry(u.clone()).or_insert_with(|| {
            users.push(u);
            per_user.push(Vec::new());
            (users.len() - 1) as u32
        });
        let ii = *item_index.entry(i.clone()).or_insert_with(|| {
            items.push(i);
            (items.len() - 1) as u32
        });
        per_user[ui as usize].push((ii, agg.weight as f32, agg.positive_events > 0));
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (u, list) in per_user.iter_mut().enumerate() {
        let u = u as u32;
        let mut held = std::collections::HashSet::new();
        if test_fraction > 0.0 && list.len() >= min_items {
            let mut positives: Vec<(u64, u32)> = list
                .iter()
                .filter(|p| p.2)
                .map(|p| (key_hash(seed, u, p.0), p.0))
                .collect();
            positives.sort_unstable();
            let n = (positives.len() as f64 * test_fraction + 0.5).floor() as usize;
            held.extend(positives.into_iter().take(n).map(|(_, i)| i));
        }
        for &(i, w, _) in list.iter() {
            if held.contains(&i) {
                test.push((u, i, w));
            } else {
                train.push((u, i, w));
            }
        }
    }
    let (nu, ni) = (users.len(), items.len());
    Interactions {
        users,
        items,
        user_index,
        item_index,
        train: Csr::from_triplets(nu, ni, &train),
        test: Csr::from_triplets(nu, ni, &test),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(w: f64, positive: bool) -> PairAgg {
        PairAgg {
            weight: w,
            events: 1,
            positive_events: u64::from(positive),
            max_feedback: w,
            last_ts_ms: 0,
        }
    }

    #[test]
    fn holds_out_a_deterministic_fifth_of_each_active_users_positives() {
        let mut pairs = Vec::new();
        for i in 0..10 {
            pairs.push(("a".to_string(), format!("v{i}"), agg(1.0, true)));
        }
        for i in 0..3 {
            pairs.push(("b".to_string(), format!("v{i}"), agg(1.0, true)));
        }
        let d = build(pairs.clone(), 0.2, 5, 7);
        assert_eq!((d.users.len(), d.items.len()), (2, 10));
        assert_eq!(d.test.row(0).0.len(), 2, "a holds out 2 of 10");
        assert_eq!(d.test.row(1).0.len(), 0, "b has fewer than 5 items");
        assert_eq!(d.train.nnz() + d.test.nnz(), 13);
        let again = build(pairs, 0.2, 5, 7);
        assert_eq!(again.test, d.test);
        assert_eq!(build(Vec::new(), 0.2, 5, 7).train.nnz(), 0);
    }
}
