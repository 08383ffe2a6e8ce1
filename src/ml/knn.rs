//! Item-based k-nearest neighbours on co-occurrence: each item keeps its
//! `neighbours` most similar items, `sim(a, b) = ⟨wₐ, w_b⟩ / (‖wₐ‖·‖w_b‖ + shrink)`
//! over the users' weights of the two items — binary (cosine) or BM25-weighted
//! (as `implicit`'s `bm25_weight`: K1 = 100, B = 0.8, idf per user, length per
//! item). A user's score of item b is `Σ_{a ∈ history} sim(a, b)`.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::sparse::Csr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    Cosine,
    Bm25,
}

impl Weighting {
    pub fn as_str(self) -> &'static str {
        match self {
            Weighting::Cosine => "cosine",
            Weighting::Bm25 => "bm25",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KnnParams {
    /// Neighbours kept per item.
    pub neighbours: usize,
    /// Added to the norm product: pulls down similarities of rare items.
    pub shrink: f32,
    pub weighting: Weighting,
}

impl Default for KnnParams {
    fn default() -> Self {
        KnnParams {
            neighbours: 100,
            shrink: 10.0,
            weighting: Weighting::Cosine,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KnnError {
    #[error("item-kNN parameter `{name}` = {value}: {rule}")]
    Param {
        name: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("no interactions to train item-kNN on; ingest some events first")]
    Empty,
}

impl KnnParams {
    pub fn check(&self) -> Result<(), KnnError> {
        let bad = |name, value: String, rule| Err(KnnError::Param { name, value, rule });
        if !(1..=5000).contains(&self.neighbours) {
            return bad(
                "neighbours",
                self.neighbours.to_string(),
                "must be 1..=5000",
            );
        }
        if !(self.shrink.is_finite() && (0.0..=1e6).contains(&self.shrink)) {
            return bad(
                "shrink",
                self.shrink.to_string(),
                "must be a finite number in [0, 1e6]",
            );
        }
        Ok(())
    }
}

/// Each item's neighbours (column, similarity), best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnModel {
    pub params: KnnParams,
    pub neighbours: Csr,
    /// Each item's share of the training users, a tie-breaker far below any
    /// similarity (so a history with no neighbours gets the popular items).
    pub prior: Vec<f32>,
}

const PRIOR: f32 = 1e-6;

impl KnnModel {
    /// Scores of every column for a user with `history`, into `out`.
    pub fn scores_into(&self, history: &[u32], out: &mut Vec<f32>) {
        out.clear();
        out.extend(self.prior.iter().map(|p| p * PRIOR));
        for &a in history {
            if (a as usize) >= self.neighbours.rows {
                continue;
            }
            let (cols, sims) = self.neighbours.row(a as usize);
            for (&b, &s) in cols.iter().zip(sims) {
                out[b as usize] += s;
            }
        }
    }

    /// `item`'s neighbours, best first, at most `k`.
    pub fn similar(&self, item: u32, k: usize) -> Vec<(u32, f32)> {
        if (item as usize) >= self.neighbours.rows {
            return Vec::new();
        }
        let (cols, sims) = self.neighbours.row(item as usize);
        let mut v: Vec<(u32, f32)> = cols.iter().copied().zip(sims.iter().copied()).collect();
        v.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        v.truncate(k);
        v
    }
}

const K1: f32 = 100.0;
const B: f32 = 0.8;

/// The users' weight of each of their items under `weighting` (positive
/// weights only; the others are left out).
fn weigh(train: &Csr, weighting: Weighting) -> Csr {
    let mut t = Vec::with_capacity(train.nnz());
    for u in 0..train.rows {
        let (cols, vals) = train.row(u);
        for (&c, &v) in cols.iter().zip(vals) {
            if v > 0.0 {
                t.push((u as u32, c, 1.0f32));
            }
        }
    }
    let x = Csr::from_triplets(train.rows, train.cols, &t);
    match weighting {
        Weighting::Cosine => x,
        Weighting::Bm25 => {
            // Items as documents, users as terms (implicit's bm25_weight on
            // the item × user matrix).
            let n_items = train.cols.max(1) as f32;
            let mut item_len = vec![0f32; train.cols];
            for &c in &x.indices {
                item_len[c as usize] += 1.0;
            }
            let seen = item_len.iter().filter(|&&l| l > 0.0).count().max(1) as f32;
            let avg = item_len.iter().sum::<f32>() / seen;
            let mut values = Vec::with_capacity(x.nnz());
            for u in 0..x.rows {
                let (cols, vals) = x.row(u);
                let idf = n_items.ln() - (cols.len() as f32).ln_1p();
                for (&c, &v) in cols.iter().zip(vals) {
                    let norm = (1.0 - B) + B * item_len[c as usize] / avg.max(1e-9);
                    values.push(v * (K1 + 1.0) / (K1 * norm + v) * idf.max(0.0));
                }
            }
            Csr { values, ..x }
        }
    }
}

pub fn fit(params: &KnnParams, train: &Csr) -> Result<KnnModel, KnnError> {
    params.check()?;
    let x = weigh(train, params.weighting);
    if x.nnz() == 0 {
        return Err(KnnError::Empty);
    }
    let xt = x.transpose();
    let norm: Vec<f32> = (0..xt.rows)
        .map(|i| xt.row(i).1.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    let k = params.neighbours;
    let rows: Vec<Vec<(u32, f32)>> = (0..xt.rows)
        .into_par_iter()
        .map_init(
            || {
                (
                    vec![0f32; xt.rows],
                    vec![u32::MAX; xt.rows],
                    Vec::<u32>::new(),
                )
            },
            |(acc, mark, touched), a| {
                let (users, wa) = xt.row(a);
                for (&u, &w) in users.iter().zip(wa) {
                    let (items, wb) = x.row(u as usize);
                    for (&b, &v) in items.iter().zip(wb) {
                        if b as usize == a {
                            continue;
                        }
                        if mark[b as usize] != a as u32 {
                            mark[b as usize] = a as u32;
                            touched.push(b);
                        }
                        acc[b as usize] += w * v;
                    }
                }
                let mut sims: Vec<(u32, f32)> = touched
                    .drain(..)
                    .map(|b| {
                        let dot = std::mem::take(&mut acc[b as usize]);
                        (b, dot / (norm[a] * norm[b as usize] + params.shrink))
                    })
                    .filter(|&(_, s)| s > 0.0 && s.is_finite())
                    .collect();
                if sims.len() > k {
                    sims.select_nth_unstable_by(k, |p, q| q.1.total_cmp(&p.1).then(p.0.cmp(&q.0)));
                    sims.truncate(k);
                }
                sims.sort_by_key(|&(b, _)| b);
                sims
            },
        )
        .collect();
    let mut t = Vec::with_capacity(rows.iter().map(Vec::len).sum());
    for (a, r) in rows.into_iter().enumerate() {
        t.extend(r.into_iter().map(|(b, s)| (a as u32, b, s)));
    }
    let users = (0..x.rows)
        .filter(|&u| !x.row(u).0.is_empty())
        .count()
        .max(1) as f32;
    let prior = (0..xt.rows)
        .map(|i| xt.row(i).0.len() as f32 / users)
        .collect();
    Ok(KnnModel {
        params: *params,
        neighbours: Csr::from_triplets(xt.rows, xt.rows, &t),
        prior,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_the_co_occurring_items_by_cosine() {
        // Items 0 and 1 always together; 2 with 0 once; 3 alone.
        let train = Csr::from_triplets(
            4,
            4,
            &[
                (0, 0, 1.0),
                (0, 1, 2.0),
                (1, 0, 1.0),
                (1, 1, 1.0),
                (2, 0, 1.0),
                (2, 2, 1.0),
                (3, 3, 1.0),
            ],
        );
        let m = fit(
            &KnnParams {
                neighbours: 5,
                shrink: 0.0,
                weighting: Weighting::Cosine,
            },
            &train,
        )
        .unwrap();
        // cos(0, 1) = 2 / (√3·√2), cos(0, 2) = 1 / (√3·1).
        let s = m.similar(0, 5);
        assert_eq!(s.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((s[0].1 - 2.0 / (3f32.sqrt() * 2f32.sqrt())).abs() < 1e-6);
        assert!((s[1].1 - 1.0 / 3f32.sqrt()).abs() < 1e-6);
        assert!(m.similar(3, 5).is_empty());
        let mut out = Vec::new();
        m.scores_into(&[1], &mut out);
        assert!(out[0] > out[2] && out[2] >= 0.0 && out[3] < 1e-5);
        // One neighbour kept: only the best.
        let one = fit(
            &KnnParams {
                neighbours: 1,
                shrink: 0.0,
                weighting: Weighting::Bm25,
            },
            &train,
        )
        .unwrap();
        assert_eq!(one.similar(0, 5).len(), 1);
        assert_eq!(one.similar(0, 5)[0].0, 1);
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = KnnParams {
            neighbours: 0,
            ..KnnParams::default()
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("neighbours"), "{e}");
        let e = KnnParams {
            shrink: f32::NAN,
            ..KnnParams::default()
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("shrink"), "{e}");
    }
}
