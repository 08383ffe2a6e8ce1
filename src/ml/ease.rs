//! EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): a closed-form
//! item × item model. With X the user × item matrix (binary, or the
//! implicit-feedback weights as they are or square-rooted: [`Input`]) and
//! `P = (XᵀX + λI)⁻¹`, the weights are `B[i][j] = −P[i][j] / P[j][j]` with a zero
//! diagonal, and a user's score of item j is `Σ_{i ∈ history} x_i·B[i][j]`.
//!
//! The inverse is dense (items² floats, items³ flops), so the model keeps at
//! most `max_items` columns — the ones with the most users — and says so: the
//! other items are never recommended by it (their score is −∞) and do not
//! count in a history. The cost is in [`EaseModel::cost`].

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::sparse::Csr;

/// What X holds for a (user, item) pair of implicit-feedback weight w.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    /// 1 for w > 0, else the pair is left out (Steck's binary X).
    Binary,
    /// w itself.
    Linear,
    /// sign(w)·√|w|: strong feedback counts more, not proportionally more.
    Sqrt,
}

impl Input {
    pub fn as_str(self) -> &'static str {
        match self {
            Input::Binary => "binary",
            Input::Linear => "linear",
            Input::Sqrt => "sqrt",
        }
    }

    /// X's value for weight `w` (0: the pair is left out).
    pub fn value(self, w: f32) -> f32 {
        match self {
            Input::Binary => {
                if w > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Input::Linear => w,
            Input::Sqrt => w.signum() * w.abs().sqrt(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EaseParams {
    /// L2 regularization λ added to the Gram matrix's diagonal.
    pub lambda: f32,
    /// Most item columns kept (the most popular); the inverse costs
    /// items³ flops and items² × 8 bytes.
    pub max_items: usize,
    pub input: Input,
}

impl Default for EaseParams {
    fn default() -> Self {
        EaseParams {
            lambda: 500.0,
            max_items: 6000,
            input: Input::Sqrt,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EaseError {
    #[error("EASE parameter `{name}` = {value}: {rule}")]
    Param {
        name: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("no interactions to train EASE on; ingest some events first")]
    Empty,
    #[error(
        "EASE: the Gram matrix of {items} items with λ = {lambda} is not positive definite; \
         raise models.ease_lambda"
    )]
    NotPositiveDefinite { items: usize, lambda: f32 },
}

impl EaseParams {
    pub fn check(&self) -> Result<(), EaseError> {
        let bad = |name, value: String, rule| Err(EaseError::Param { name, value, rule });
        if !(self.lambda.is_finite() && self.lambda > 0.0 && self.lambda <= 1e9) {
            return bad(
                "lambda",
                self.lambda.to_string(),
                "must be a finite number in (0, 1e9]",
            );
        }
        if !(1..=MAX_ITEMS).contains(&self.max_items) {
            return bad(
                "max_items",
                self.max_items.to_string(),
                "must be 1..=20000 (the inverse is items² × 8 bytes: 20000 items = 3.2 GB)",
            );
        }
        Ok(())
    }
}

/// The most columns an EASE model may keep.
pub const MAX_ITEMS: usize = 20_000;

/// What a fit cost and what it covered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EaseCost {
    /// Items kept / items with any interaction.
    pub items_kept: usize,
    pub items_seen: usize,
    /// Share of the training interactions on kept items.
    pub interactions_covered: f64,
    /// Bytes of the dense weights served (f32).
    pub weight_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EaseModel {
    /// Columns of the data (every item id).
    pub items: usize,
    /// Kept columns, most popular first.
    pub kept: Vec<u32>,
    /// Column → position in `kept` (`u32::MAX`: not kept).
    pub position: Vec<u32>,
    /// `kept.len()²` weights, row-major: row a holds `B[kept[a]][kept[·]]`.
    pub weights: Vec<f32>,
    /// Each kept item's share of the training users, a tie-breaker far below
    /// any weight (so a history with no kept item gets the popular ones).
    pub prior: Vec<f32>,
    pub input: Input,
    pub cost: EaseCost,
}

/// A tie-breaker scale: popularity only orders items the weights leave equal.
const PRIOR: f32 = 1e-6;

impl EaseModel {
    /// Scores of every column for a user with `history` (columns, any order)
    /// of implicit-feedback `weights`, into `out` (−∞ for columns the model
    /// does not keep).
    pub fn scores_into(&self, history: &[u32], weights: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.items, f32::NEG_INFINITY);
        let n = self.kept.len();
        let mut acc: Vec<f32> = self.prior.iter().map(|p| p * PRIOR).collect();
        for (&i, &w) in history.iter().zip(weights) {
            let Some(&a) = self.position.get(i as usize) else {
                continue;
            };
            let x = self.input.value(w);
            if a == u32::MAX || x == 0.0 {
                continue;
            }
            let row = &self.weights[a as usize * n..(a as usize + 1) * n];
            acc.iter_mut().zip(row).for_each(|(s, b)| *s += x * b);
        }
        for (&c, s) in self.kept.iter().zip(acc) {
            out[c as usize] = s;
        }
    }

    /// The kept items most like `item` (the largest weights of its row),
    /// best first, at most `k`.
    pub fn similar(&self, item: u32, k: usize) -> Vec<(u32, f32)> {
        let Some(&a) = self.position.get(item as usize) else {
            return Vec::new();
        };
        if a == u32::MAX {
            return Vec::new();
        }
        let n = self.kept.len();
        let row = &self.weights[a as usize * n..(a as usize + 1) * n];
        let top = super::metrics::top_k(row, |b| b != a as usize && row[b] > 0.0, k);
        top.into_iter()
            .map(|b| (self.kept[b as usize], row[b as usize]))
            .collect()
    }
}

impl EaseModel {
    /// The model with each row cut to its `m` largest weights by magnitude
    /// (the others zero): what a sparse serving form of `m` neighbours an
    /// item would rank like.
    pub fn sparsified(&self, m: usize) -> EaseModel {
        let n = self.kept.len();
        let mut weights = self.weights.clone();
        if m < n {
            weights.par_chunks_mut(n.max(1)).for_each(|row| {
                let mut mag: Vec<f32> = row.iter().map(|w| w.abs()).collect();
                let (_, &mut cut, _) = mag.select_nth_unstable_by(n - m, |a, b| a.total_cmp(b));
                let mut room = m;
                // Ties at the cut keep the first ones, so exactly m stay.
                let above = row.iter().filter(|w| w.abs() > cut).count();
                let mut ties = m.saturating_sub(above);
                for w in row.iter_mut() {
                    let a = w.abs();
                    let keep = room > 0 && (a > cut || (a == cut && ties > 0));
                    if keep {
                        room -= 1;
                        if a == cut {
                            ties -= 1;
                        }
                    } else {
                        *w = 0.0;
                    }
                }
            });
        }
        EaseModel {
            weights,
            ..self.clone()
        }
    }
}

/// Fits EASE on the interactions of `train` (X's values from the weights by
/// `params.input`; pairs whose value is 0 are left out).
pub fn fit(params: &EaseParams, train: &Csr) -> Result<EaseModel, EaseError> {
    params.check()?;
    let mut users_of = vec![0u32; train.cols];
    let mut interactions = 0u64;
    let input = params.input;
    for (&c, &v) in train.indices.iter().zip(&train.values) {
        if input.value(v) != 0.0 {
            users_of[c as usize] += 1;
            interactions += 1;
        }
    }
    if interactions == 0 {
        return Err(EaseError::Empty);
    }
    let mut kept: Vec<u32> = (0..train.cols as u32)
        .filter(|&c| users_of[c as usize] > 0)
        .collect();
    let items_seen = kept.len();
    kept.sort_by_key(|&c| (std::cmp::Reverse(users_of[c as usize]), c));
    kept.truncate(params.max_items);
    let n = kept.len();
    let mut position = vec![u32::MAX; train.cols];
    for (a, &c) in kept.iter().enumerate() {
        position[c as usize] = a as u32;
    }
    // Each user's kept items, as (position, x).
    let rows: Vec<Vec<(u32, f32)>> = (0..train.rows)
        .into_par_iter()
        .map(|u| {
            let (cols, vals) = train.row(u);
            cols.iter()
                .zip(vals)
                .map(|(&c, &v)| (position[c as usize], input.value(v)))
                .filter(|&(a, x)| a != u32::MAX && x != 0.0)
                .collect()
        })
        .collect();
    let covered: u64 = rows.iter().map(|r| r.len() as u64).sum();
    // Users of each kept item (with their x), for the Gram rows.
    let mut by_item: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
    for (u, r) in rows.iter().enumerate() {
        for &(a, x) in r {
            by_item[a as usize].push((u as u32, x));
        }
    }
    // G = XᵀX + λI, one row per task: row a counts, over a's users, their
    // items. G is symmetric, so its rows laid end to end are its columns too.
    let lambda = f64::from(params.lambda);
    let mut gram = vec![0f64; n * n];
    gram.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(a, row)| {
            for &(u, xa) in &by_item[a] {
                let xa = f64::from(xa);
                for &(b, xb) in &rows[u as usize] {
                    row[b as usize] += xa * f64::from(xb);
                }
            }
            row[a] += lambda;
        });
    drop(by_item);
    use faer::linalg::solvers::DenseSolveCore;
    let llt = faer::linalg::solvers::Llt::new(
        faer::MatRef::from_column_major_slice(&gram, n, n),
        faer::Side::Lower,
    )
    .map_err(|_| EaseError::NotPositiveDefinite {
        items: n,
        lambda: params.lambda,
    })?;
    drop(gram);
    let p = llt.inverse();
    drop(llt);
    let diag: Vec<f64> = (0..n).map(|j| p[(j, j)]).collect();
    let mut weights = vec![0f32; n * n];
    weights
        .par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(a, row)| {
            for (b, w) in row.iter_mut().enumerate() {
                *w = if a == b {
                    0.0
                } else {
                    (-p[(a, b)] / diag[b]) as f32
                };
            }
        });
    if weights.iter().any(|w| !w.is_finite()) {
        return Err(EaseError::NotPositiveDefinite {
            items: n,
            lambda: params.lambda,
        });
    }
    let users = rows.iter().filter(|r| !r.is_empty()).count().max(1) as f32;
    let prior = kept
        .iter()
        .map(|&c| users_of[c as usize] as f32 / users)
        .collect();
    Ok(EaseModel {
        items: train.cols,
        kept,
        position,
        weights,
        prior,
        input,
        cost: EaseCost {
            items_kept: n,
            items_seen,
            interactions_covered: covered as f64 / interactions as f64,
            weight_bytes: (n * n * 4) as u64,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two blocks of users and items: a user of the first block who has seen
    /// some of its items gets the rest of that block first.
    fn blocks() -> Csr {
        let mut t = Vec::new();
        for u in 0..40u32 {
            let base = if u < 20 { 0 } else { 5 };
            for i in 0..5u32 {
                if (u + i) % 5 != 0 {
                    t.push((u, base + i, 1.0));
                }
            }
        }
        Csr::from_triplets(40, 10, &t)
    }

    #[test]
    fn recommends_within_the_block_and_matches_the_closed_form() {
        let train = blocks();
        let m = fit(
            &EaseParams {
                lambda: 1.0,
                max_items: 100,
                input: Input::Binary,
            },
            &train,
        )
        .unwrap();
        assert_eq!(m.kept.len(), 10);
        let mut s = Vec::new();
        m.scores_into(&[0, 1, 2], &[1.0; 3], &mut s);
        let best = crate::ml::metrics::top_k(&s, |i| ![0, 1, 2].contains(&i), 2);
        assert_eq!(best.len(), 2);
        assert!(best.iter().all(|&i| i < 5), "{best:?} {s:?}");
        // The diagonal is zero, and B = I − P·diag(1/diag P) with P = (G + λI)⁻¹,
        // so (G + λI)(I − B) = diag(1/diag P): its off-diagonal cells are zero.
        let n = m.kept.len();
        for a in 0..n {
            assert_eq!(m.weights[a * n + a], 0.0);
        }
        let mut g = vec![0f64; n * n];
        for u in 0..train.rows {
            let cols: Vec<usize> = train
                .row(u)
                .0
                .iter()
                .map(|&c| m.position[c as usize] as usize)
                .collect();
            for &a in &cols {
                for &b in &cols {
                    g[a * n + b] += 1.0;
                }
            }
        }
        for a in 0..n {
            g[a * n + a] += 1.0;
        }
        for a in 0..n {
            for j in 0..n {
                if a == j {
                    continue;
                }
                let v: f64 = (0..n)
                    .map(|b| {
                        let ib = if b == j { 1.0 } else { 0.0 };
                        g[a * n + b] * (ib - f64::from(m.weights[b * n + j]))
                    })
                    .sum();
                assert!(v.abs() < 1e-3, "off-diagonal ({a}, {j}) = {v}");
            }
        }
    }

    #[test]
    fn keeps_the_most_popular_items_and_says_so() {
        let train = Csr::from_triplets(
            3,
            4,
            &[
                (0, 0, 1.0),
                (1, 0, 1.0),
                (2, 0, 1.0),
                (0, 2, 1.0),
                (1, 2, 1.0),
                (2, 3, 1.0),
            ],
        );
        let m = fit(
            &EaseParams {
                lambda: 1.0,
                max_items: 2,
                input: Input::Binary,
            },
            &train,
        )
        .unwrap();
        assert_eq!(m.kept, vec![0, 2]);
        assert_eq!(m.cost.items_kept, 2);
        assert_eq!(m.cost.items_seen, 3);
        assert!((m.cost.interactions_covered - 5.0 / 6.0).abs() < 1e-9);
        let mut s = Vec::new();
        m.scores_into(&[3], &[1.0], &mut s);
        assert_eq!(s[3], f32::NEG_INFINITY);
        assert_eq!(s[1], f32::NEG_INFINITY);
        // Only the prior orders a history without kept items: the most popular first.
        assert!(s[0] > s[2] && s[2] > 0.0);
    }

    #[test]
    fn a_sparsified_model_keeps_each_rows_largest_weights() {
        let m = fit(
            &EaseParams {
                lambda: 1.0,
                max_items: 100,
                input: Input::Binary,
            },
            &blocks(),
        )
        .unwrap();
        let n = m.kept.len();
        let s = m.sparsified(3);
        for a in 0..n {
            let row = &m.weights[a * n..(a + 1) * n];
            let cut = &s.weights[a * n..(a + 1) * n];
            assert_eq!(cut.iter().filter(|w| **w != 0.0).count(), 3);
            let smallest_kept = cut
                .iter()
                .filter(|w| **w != 0.0)
                .map(|w| w.abs())
                .fold(f32::INFINITY, f32::min);
            for (w, c) in row.iter().zip(cut) {
                if *c == 0.0 {
                    assert!(w.abs() <= smallest_kept, "{row:?} → {cut:?}");
                } else {
                    assert_eq!(w, c);
                }
            }
        }
        assert_eq!(m.sparsified(n).weights, m.weights);
    }

    #[test]
    fn bad_parameters_and_empty_data_are_named() {
        let e = EaseParams {
            lambda: -1.0,
            ..EaseParams::default()
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("lambda"), "{e}");
        let e = EaseParams {
            max_items: 0,
            ..EaseParams::default()
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("max_items"), "{e}");
        let empty = Csr::from_triplets(2, 2, &[]);
        assert_eq!(
            fit(&EaseParams::default(), &empty).unwrap_err(),
            EaseError::Empty
        );
    }
}
