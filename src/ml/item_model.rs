//! An item × item family (EASE, item-kNN) as the daemon serves it: each item's
//! strongest weights to other items, kept sparse. A user's score of item j is
//! `prior_j + Σ_{i ∈ history} x_i·W[i][j]`, so what a user just did changes
//! their next list with no per-user state to solve; similar items are a row of
//! W. EASE's dense weights are cut to each row's `neighbours` largest by
//! magnitude (the evaluator scores the cut model, the one that serves).

use serde::{Deserialize, Serialize};

use super::ease::Input;
use super::family::{Family, Fitted, Params};
use super::sparse::Csr;

/// The most weights an item keeps (`models.item_neighbours`'s bound).
pub const MAX_NEIGHBOURS: usize = 5000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemModel {
    /// What it was fitted with (the next search starts from it).
    pub params: ItemParams,
    /// How a history's implicit-feedback weight counts (none: every item
    /// of the history counts 1, as item-kNN scores).
    pub input: Option<Input>,
    /// items × items, columns sorted within each row.
    pub weights: Csr,
    /// Each item's score before any history: a tie-breaker far below any
    /// weight; −∞ for items the model never recommends (past EASE's kept
    /// items).
    pub prior: Vec<f32>,
}

/// An item × item family's parameters as a bundle stores them (postcard
/// reads externally tagged enums only; [`Params`] is tagged inside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ItemParams {
    Ease(super::ease::EaseParams),
    Knn(super::knn::KnnParams),
}

impl ItemParams {
    fn of(p: &Params) -> Option<ItemParams> {
        match p {
            Params::Ease(e) => Some(ItemParams::Ease(*e)),
            Params::Knn(k) => Some(ItemParams::Knn(*k)),
            Params::Als(_) | Params::Popularity => None,
        }
    }

    pub fn params(&self) -> Params {
        match self {
            ItemParams::Ease(e) => Params::Ease(*e),
            ItemParams::Knn(k) => Params::Knn(*k),
        }
    }
}

impl ItemModel {
    /// The serving form of an item × item model fitted with `params`, each
    /// row cut to its `neighbours` largest weights by magnitude; none for ALS
    /// and popularity.
    pub fn of(params: &Params, fitted: &Fitted, neighbours: usize) -> Option<ItemModel> {
        let neighbours = neighbours.clamp(1, MAX_NEIGHBOURS);
        let params = ItemParams::of(params)?;
        match fitted {
            Fitted::Ease(m) => {
                let n = m.kept.len();
                let mut triplets = Vec::with_capacity(n * neighbours.min(n));
                let mut by_size: Vec<(f32, u32)> = Vec::with_capacity(n);
                for (a, &i) in m.kept.iter().enumerate() {
                    let row = &m.weights[a * n..(a + 1) * n];
                    by_size.clear();
                    by_size.extend(
                        row.iter()
                            .enumerate()
                            .filter(|&(_, w)| *w != 0.0)
                            .map(|(b, &w)| (w, b as u32)),
                    );
                    // Largest magnitude first; ties keep the lower position.
                    by_size.sort_unstable_by(|x, y| {
                        y.0.abs().total_cmp(&x.0.abs()).then(x.1.cmp(&y.1))
                    });
                    by_size.truncate(neighbours);
                    triplets.extend(by_size.iter().map(|&(w, b)| (i, m.kept[b as usize], w)));
                }
                let mut prior = vec![f32::NEG_INFINITY; m.items];
                for (&i, &p) in m.kept.iter().zip(&m.prior) {
                    prior[i as usize] = p * PRIOR;
                }
                Some(ItemModel {
                    params,
                    input: Some(m.input),
                    weights: Csr::from_triplets(m.items, m.items, &triplets),
                    prior,
                })
            }
            Fitted::Knn(m) => {
                let nb = &m.neighbours;
                let mut triplets = Vec::with_capacity(nb.nnz());
                for a in 0..nb.rows {
                    let (cols, sims) = nb.row(a);
                    triplets.extend(
                        cols.iter()
                            .zip(sims)
                            .take(neighbours)
                            .map(|(&b, &s)| (a as u32, b, s)),
                    );
                }
                Some(ItemModel {
                    params,
                    input: None,
                    weights: Csr::from_triplets(nb.rows, nb.cols, &triplets),
                    prior: m.prior.iter().map(|p| p * PRIOR).collect(),
                })
            }
            Fitted::Als(_) | Fitted::Popularity(_) => None,
        }
    }

    pub fn family(&self) -> Family {
        self.params.params().family()
    }

    /// The most weights any item keeps.
    pub fn neighbours(&self) -> usize {
        let w = &self.weights;
        w.indptr.windows(2).map(|p| p[1] - p[0]).max().unwrap_or(0)
    }

    pub fn items(&self) -> usize {
        self.prior.len()
    }

    /// Whether the rows and columns agree with `items` items (a stored
    /// model is checked before it serves).
    pub fn fits(&self, items: usize) -> bool {
        let w = &self.weights;
        self.prior.len() == items
            && w.rows == items
            && w.cols == items
            && w.indptr.len() == items + 1
            && w.indptr.windows(2).all(|p| p[0] <= p[1])
            && w.indptr.last() == Some(&w.indices.len())
            && w.indices.len() == w.values.len()
            && w.indices.iter().all(|&c| (c as usize) < items)
    }

    /// What a history item of implicit-feedback weight `w` counts for.
    fn x(&self, w: f32) -> f32 {
        self.input.map_or(1.0, |i| i.value(w))
    }

    /// Every item's score for a user with `history` (item rows, any order)
    /// of `weights` (empty: 1 each), into `out`; rows past the model's items
    /// are ignored.
    pub fn scores_into(&self, history: &[u32], weights: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(&self.prior);
        for (n, &a) in history.iter().enumerate() {
            if (a as usize) >= self.weights.rows {
                continue;
            }
            let x = self.x(weights.get(n).copied().unwrap_or(1.0));
            if x == 0.0 {
                continue;
            }
            let (cols, ws) = self.weights.row(a as usize);
            for (&b, &w) in cols.iter().zip(ws) {
                out[b as usize] += x * w;
            }
        }
    }

    /// W[a][b]: how much `a` in a history adds to `b`'s score (0 when `b` is
    /// not among `a`'s kept weights).
    pub fn weight(&self, a: u32, b: u32) -> f32 {
        if (a as usize) >= self.weights.rows {
            return 0.0;
        }
        let (cols, ws) = self.weights.row(a as usize);
        cols.binary_search(&b).map_or(0.0, |at| ws[at])
    }

    /// `item`'s row: every other item it adds to, with the weight.
    pub fn row(&self, item: u32) -> (&[u32], &[f32]) {
        if (item as usize) >= self.weights.rows {
            return (&[], &[]);
        }
        self.weights.row(item as usize)
    }
}

/// A tie-breaker scale: popularity only orders items the weights leave equal
/// (as the fitted families score).
const PRIOR: f32 = 1e-6;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::ease::EaseParams;
    use crate::ml::knn::KnnParams;

    fn data() -> Csr {
        // Three taste blocks of four items, 60 users, some overlap.
        let mut t = Vec::new();
        for u in 0..60u32 {
            let block = u % 3;
            for j in 0..4u32 {
                if (u + j) % 5 != 0 {
                    t.push((u, block * 4 + j, 1.0 + (u % 4) as f32));
                }
            }
            t.push((u, (u * 7) % 12, 0.5));
        }
        Csr::from_triplets(60, 12, &t)
    }

    fn scores(f: &Fitted, train: &Csr, u: usize) -> Vec<f32> {
        let (h, w) = train.row(u);
        let mut s = Vec::new();
        f.scores_into(u, h, w, &mut s);
        s
    }

    #[test]
    fn the_serving_form_scores_as_the_fitted_model() {
        let train = data();
        let ease_p = Params::Ease(EaseParams {
            lambda: 5.0,
            max_items: 10,
            ..EaseParams::default()
        });
        let knn_p = Params::Knn(KnnParams {
            neighbours: 5,
            ..KnnParams::default()
        });
        let ease = crate::ml::family::fit(&ease_p, &train).unwrap();
        let knn = crate::ml::family::fit(&knn_p, &train).unwrap();
        for (p, fitted, cut) in [
            (&ease_p, &ease, 12),
            (&knn_p, &knn, 12),
            (&ease_p, &ease, 4),
        ] {
            let m = ItemModel::of(p, fitted, cut).unwrap();
            assert_eq!((m.family(), m.params.params()), (p.family(), p.clone()));
            // As a bundle stores it.
            let back: ItemModel = postcard::from_bytes(&postcard::to_stdvec(&m).unwrap()).unwrap();
            assert_eq!(back, m);
            assert!(m.fits(12));
            // EASE cut to 4 a row scores as the dense model cut the same way.
            let reference = match fitted {
                Fitted::Ease(e) if cut < 12 => Fitted::Ease(e.sparsified(cut)),
                other => other.clone(),
            };
            for u in 0..60 {
                let want = scores(&reference, &train, u);
                let (h, w) = train.row(u);
                let mut got = Vec::new();
                m.scores_into(h, w, &mut got);
                assert_eq!(want.len(), got.len());
                for (a, b) in want.iter().zip(&got) {
                    assert!(
                        (a == b) || (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                        "{:?} u{u}: {a} != {b}",
                        m.family()
                    );
                }
            }
        }
        let m = ItemModel::of(&ease_p, &ease, 4).unwrap();
        assert!((0..12).all(|i| m.row(i).0.len() <= 4));
        // EASE never recommends what it did not keep.
        assert_eq!(m.prior.iter().filter(|p| p.is_infinite()).count(), 2);
        assert!(
            ItemModel::of(&Params::Popularity, &Fitted::Popularity(vec![1.0; 12]), 10).is_none()
        );
        // A stored model whose shape does not match is refused.
        assert!(!m.fits(13));
        let mut bad = m.clone();
        bad.weights.indices[0] = 99;
        assert!(!bad.fits(12));
    }
}
