//! Interactions from the store's pair aggregates: id dictionaries, a train matrix,
//! and a per-user held-out test set chosen deterministically (seeded hash).
//!
//! A pair is held out when the seeded hash of (user, item) falls in the lowest
//! `test_fraction` of its range; the held-out pairs that are positive (an event
//! with feedback ≥ 0.5) of users with at least `min_items` distinct items are the
//! test set, the others are neither trained on nor scored. A pair's side never
//! depends on the other pairs or on later events, so it stays put as data grows,
//! and a champion trained on an older snapshot never trained on a newer run's
//! test pairs: the two compare fairly on the same held-out data.

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
    /// Held-out pairs that are not positive: neither trained on nor scored.
    pub unscored: Csr,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a of the bytes, mixed: stable across runs, builds and platforms.
fn text_hash(seed: u64, s: &str) -> u64 {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64 ^ seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    splitmix64(h)
}

/// The held-out draw of a pair: a function of the names alone (never of the
/// order pairs are read in), so a pair keeps its side across snapshots.
fn pair_hash(seed: u64, user: &str, item: &str) -> u64 {
    splitmix64(text_hash(seed, user) ^ text_hash(seed.rotate_left(17), item))
}

/// A held-out draw: its seed and the share of pairs it holds out (the
/// trainer's `models.seed` and `models.test_fraction`; the lake's
/// `split.json`; what an import was trained without).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Split {
    pub seed: u64,
    pub test_fraction: f64,
}

impl Split {
    pub fn of(m: &super::config::ModelsConfig) -> Split {
        Split {
            seed: m.seed,
            test_fraction: m.test_fraction,
        }
    }
}

/// Which pairs a split holds out: those whose [`pair_hash`] falls below
/// `test_fraction` of the range (none at 0). The same draw for the trainer,
/// the evaluator and the lake's `held_out` column (the Spark route trains on
/// the other pairs only).
#[derive(Debug, Clone, Copy)]
pub struct HeldOut {
    seed: u64,
    cut: Option<u64>,
}

impl HeldOut {
    pub fn new(test_fraction: f64, seed: u64) -> HeldOut {
        let cut =
            (test_fraction > 0.0).then(|| (test_fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64);
        HeldOut { seed, cut }
    }

    pub fn of(&self, user: &str, item: &str) -> bool {
        self.cut
            .is_some_and(|cut| pair_hash(self.seed, user, item) < cut)
    }
}

/// A (user, track) pair's implicit feedback: Σ action count × its weight
/// (play, skip, like, pause, seek order).
pub fn music_weight(a: &crate::store::MusicAgg, weights: [f64; 5]) -> f64 {
    a.counts
        .iter()
        .zip(weights)
        .map(|(&c, w)| c as f64 * w)
        .sum()
}

/// Music pairs as implicit feedback: Σ action count × its weight (play, skip,
/// like, pause, seek order); a pair is positive when its weight is.
pub fn music_pairs(
    aggs: Vec<(String, String, crate::store::MusicAgg)>,
    weights: [f64; 5],
) -> Vec<(String, String, PairAgg)> {
    aggs.into_iter()
        .map(|(u, t, a)| {
            let weight = music_weight(&a, weights);
            let events: u64 = a.counts.iter().sum();
            let pair = PairAgg {
                weight,
                events,
                positive_events: u64::from(weight > 0.0),
                max_feedback: weight,
                last_ts_ms: a.last_ts_ms,
            };
            (u, t, pair)
        })
        .collect()
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
    // (item, weight, positive, held out) per user
    let held_out = HeldOut::new(test_fraction, seed);
    let mut per_user: Vec<Vec<(u32, f32, bool, bool)>> = Vec::new();
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
        let h = held_out.of(&users[ui as usize], &items[ii as usize]);
        per_user[ui as usize].push((ii, agg.weight as f32, agg.positive_events > 0, h));
    }
    let (mut train, mut test, mut unscored) = (Vec::new(), Vec::new(), Vec::new());
    for (u, list) in per_user.iter().enumerate() {
        let u = u as u32;
        let scored_user = list.len() >= min_items;
        for &(i, w, positive, h) in list {
            if h {
                // Held out whatever it is now, so no model ever trains on it (a pair
                // may turn positive later, a user may reach min_items later);
                // scored when positive and the user has min_items items.
                if positive && scored_user {
                    test.push((u, i, w));
                } else {
                    unscored.push((u, i, w));
                }
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
        unscored: Csr::from_triplets(nu, ni, &unscored),
    }
}

/// The (user, video) pairs of `events` as the store aggregates them (the
/// implicit feedback summed; positive events: feedback ≥ 0.5), sorted.
#[cfg(test)]
pub(crate) fn pairs_of_events<'a>(
    events: impl Iterator<Item = &'a crate::domain::event::VideoEvent>,
) -> Vec<(String, String, PairAgg)> {
    let mut m: HashMap<(String, String), PairAgg> = HashMap::new();
    for e in events {
        let fb = e.implicit_feedback();
        let a = m
            .entry((e.user_id.to_string(), e.video_id.to_string()))
            .or_insert(PairAgg {
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
    fn music_actions_weigh_into_pair_feedback() {
        let a = |counts| crate::store::MusicAgg {
            counts,
            last_ts_ms: 9,
        };
        let got = music_pairs(
            vec![
                ("u".into(), "t1".into(), a([2, 0, 1, 0, 1])),
                ("u".into(), "t2".into(), a([0, 3, 0, 0, 0])),
            ],
            [1.0, -1.0, 4.0, 0.25, 0.25],
        );
        assert_eq!(got[0].2.weight, 2.0 + 4.0 + 0.25);
        assert_eq!((got[0].2.events, got[0].2.positive_events), (4, 1));
        assert_eq!((got[1].2.weight, got[1].2.positive_events), (-3.0, 0));
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
        for i in 10..200 {
            pairs.push(("a".to_string(), format!("v{i}"), agg(1.0, i % 2 == 0)));
        }
        let d = build(pairs.clone(), 0.2, 5, 7);
        assert_eq!((d.users.len(), d.items.len()), (2, 200));
        let held = d.test.row(0).0.len();
        assert!(
            (15..=45).contains(&held),
            "a holds out about a fifth of its 105 positives: {held}"
        );
        let positive = |name: &str| {
            name[1..]
                .parse::<usize>()
                .is_ok_and(|n| n < 10 || n % 2 == 0)
        };
        assert!(d
            .test
            .row(0)
            .0
            .iter()
            .all(|&i| positive(&d.items[i as usize])));
        assert_eq!(d.test.row(1).0.len(), 0, "b has fewer than 5 items");
        // A pair's side does not depend on the others: more data, same held-out pairs.
        let fewer = build(pairs[..100].to_vec(), 0.2, 5, 7);
        let names = |d: &Interactions| -> std::collections::HashSet<String> {
            d.test
                .row(0)
                .0
                .iter()
                .map(|&i| d.items[i as usize].clone())
                .collect()
        };
        assert!(names(&fewer).is_subset(&names(&d)));
        assert_eq!(d.train.nnz() + d.test.nnz() + d.unscored.nnz(), 203);
        assert!(d.unscored.nnz() > 0);
        let again = build(pairs, 0.2, 5, 7);
        assert_eq!(again.test, d.test);
        assert_eq!(build(Vec::new(), 0.2, 5, 7).train.nnz(), 0);
    }
}
