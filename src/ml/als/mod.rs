//! Implicit-feedback ALS (Hu, Koren, Volinsky 2008) with the conjugate-gradient
//! solver of Takács et al., as the `implicit` library does: each half-iteration
//! solves, for every user (then every item), `(YᵀY + Yᵀ(Cᵤ − I)Y + λI) xᵤ = YᵀCᵤ pᵤ`
//! by a few CG steps warm-started from the current factors. Rows are solved in
//! parallel (rayon), in f32.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::sparse::Csr;

#[derive(Debug, Clone, Error, PartialEq)]
pub enum AlsError {
    #[error("ALS parameter `{name}` = {value}: {rule}")]
    Param {
        name: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("no interactions to train on; ingest some events first")]
    Empty,
}

/// ALS hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlsParams {
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f32,
    /// Confidence `c = 1 + alpha * w` for an interaction of weight `w`.
    pub alpha: f32,
    pub cg_steps: usize,
    pub seed: u64,
    /// Non-negative factors: exact solves use a non-negative least-squares
    /// solve (as Spark's NNLS); CG steps are projected onto ≥ 0.
    pub nonnegative: bool,
    /// Scale the regularization of each row by its number of interactions
    /// (ALS-WR, as Spark MLlib does) instead of one λ for every row.
    pub weighted_regularization: bool,
    /// Solve each row exactly (Cholesky) instead of by `cg_steps` CG steps.
    pub exact: bool,
}

impl Default for AlsParams {
    fn default() -> Self {
        AlsParams {
            factors: 64,
            iterations: 15,
            regularization: 0.1,
            alpha: 1.0,
            cg_steps: 3,
            seed: 42,
            nonnegative: false,
            weighted_regularization: false,
            exact: false,
        }
    }
}

/// Parameters checked once before training (linfa's ParamGuard pattern).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedAlsParams(AlsParams);

impl AlsParams {
    pub fn check(self) -> Result<CheckedAlsParams, AlsError> {
        let bad = |name, value: String, rule| Err(AlsError::Param { name, value, rule });
        if !(1..=1024).contains(&self.factors) {
            return bad("factors", self.factors.to_string(), "must be 1..=1024");
        }
        if !(1..=10_000).contains(&self.iterations) {
            return bad(
                "iterations",
                self.iterations.to_string(),
                "must be 1..=10000",
            );
        }
        if !(self.regularization.is_finite() && self.regularization >= 0.0) {
            return bad(
                "regularization",
                self.regularization.to_string(),
                "must be a finite number ≥ 0",
            );
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(
                "alpha",
                self.alpha.to_string(),
                "must be a finite number > 0",
            );
        }
        if !(1..=256).contains(&self.cg_steps) {
            return bad("cg_steps", self.cg_steps.to_string(), "must be 1..=256");
        }
        Ok(CheckedAlsParams(self))
    }
}

impl CheckedAlsParams {
    pub fn params(&self) -> &AlsParams {
        &self.0
    }
}

/// Learned factors, row-major (`factors` floats per user / item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlsModel {
    pub factors: usize,
    pub users: usize,
    pub items: usize,
    pub user_factors: Vec<f32>,
    pub item_factors: Vec<f32>,
}

impl AlsModel {
    pub fn user(&self, u: usize) -> &[f32] {
        &self.user_factors[u * self.factors..(u + 1) * self.factors]
    }

    pub fn item(&self, i: usize) -> &[f32] {
        &self.item_factors[i * self.factors..(i + 1) * self.factors]
    }

    pub fn score(&self, u: usize, i: usize) -> f32 {
        dot(self.user(u), self.item(i))
    }

    /// Every item's score for user `u`, into `out`.
    pub fn scores_into(&self, u: usize, out: &mut Vec<f32>) {
        let x = self.user(u);
        out.clear();
        out.extend(
            self.item_factors
                .chunks_exact(self.factors)
                .map(|y| dot(x, y)),
        );
    }
}

#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[inline]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `YᵀY + λI` (f × f, row-major).
fn gram(y: &[f32], f: usize, reg: f32) -> Vec<f32> {
    let mut g = y
        .par_chunks(f * 4096)
        .map(|block| {
            let mut g = vec![0f32; f * f];
            for row in block.chunks_exact(f) {
                for a in 0..f {
                    let ra = row[a];
                    axpy(ra, row, &mut g[a * f..(a + 1) * f]);
                }
            }
            g
        })
        .reduce(
            || vec![0f32; f * f],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    for a in 0..f {
        g[a * f + a] += reg;
    }
    g
}

struct Scratch {
    r: Vec<f32>,
    p: Vec<f32>,
    ap: Vec<f32>,
    a: Vec<f64>,
    b: Vec<f64>,
    x: Vec<f64>,
    /// The row's item factors, the same weighted, and their product.
    yu: Vec<f32>,
    yw: Vec<f32>,
    c: Vec<f32>,
}

impl Scratch {
    fn new(f: usize) -> Scratch {
        Scratch {
            r: vec![0.0; f],
            p: vec![0.0; f],
            ap: vec![0.0; f],
            a: vec![0.0; f * f],
            b: vec![0.0; f],
            x: vec![0.0; f],
            yu: Vec::new(),
            yw: Vec::new(),
            c: vec![0.0; f * f],
        }
    }
}

/// Solves one row's system exactly: builds `A` and `b`, Cholesky, substitution.
/// Leaves `x` unchanged if `A` is not positive definite.
#[allow(clippy::too_many_arguments)]
fn solve_row_exact(
    x: &mut [f32],
    yty: &[f32],
    y: &[f32],
    f: usize,
    cols: &[u32],
    conf: &[f32],
    extra_reg: f32,
    nonnegative: bool,
    s: &mut Scratch,
) {
    // A = YᵀY + λI + Yᵤᵀ·diag(|c|−1)·Yᵤ over the row's items: the last term
    // as one matrix product (matrixmultiply's kernels, picked for the CPU at
    // run time), summed in f32; A is solved in f64.
    let (yu, yw) = (&mut s.yu, &mut s.yw);
    yu.clear();
    yw.clear();
    let b = &mut s.b;
    b.iter_mut().for_each(|v| *v = 0.0);
    for (&i, &c) in cols.iter().zip(conf) {
        let yi = &y[i as usize * f..(i as usize + 1) * f];
        yu.extend_from_slice(yi);
        let w = c.abs() - 1.0;
        yw.extend(yi.iter().map(|&v| w * v));
        if c > 0.0 {
            for (br, &yr) in b.iter_mut().zip(yi) {
                *br += c as f64 * yr as f64;
            }
        }
    }
    let a = &mut s.a;
    if cols.is_empty() {
        for (ai, &g) in a.iter_mut().zip(yty) {
            *ai = g as f64;
        }
    } else {
        let n = cols.len();
        let u = ndarray::ArrayView2::from_shape((n, f), &yu[..]);
        let w = ndarray::ArrayView2::from_shape((n, f), &yw[..]);
        let out = ndarray::ArrayViewMut2::from_shape((f, f), &mut s.c[..]);
        if let (Ok(u), Ok(w), Ok(mut out)) = (u, w, out) {
            ndarray::linalg::general_mat_mul(1.0, &u.t(), &w, 0.0, &mut out);
        }
        for ((ai, &g), &c) in a.iter_mut().zip(yty).zip(&s.c) {
            *ai = g as f64 + c as f64;
        }
    }
    for d in 0..f {
        a[d * f + d] += extra_reg as f64;
    }
    if nonnegative {
        // min ½xᵀAx − bᵀx subject to x ≥ 0, by cyclic coordinate descent from
        // the current (projected) factors: exact for this convex box-constrained QP.
        for r in 0..f {
            for k in r + 1..f {
                a[r * f + k] = a[k * f + r];
            }
        }
        let xs = &mut s.x;
        for (xd, &xi) in xs.iter_mut().zip(x.iter()) {
            *xd = (xi as f64).max(0.0);
        }
        for _ in 0..200 {
            let mut moved = 0f64;
            for j in 0..f {
                let ajj = a[j * f + j];
                if ajj <= 0.0 {
                    continue;
                }
                let grad: f64 = (0..f).map(|k| a[j * f + k] * xs[k]).sum::<f64>() - b[j];
                let new = (xs[j] - grad / ajj).max(0.0);
                moved = moved.max((new - xs[j]).abs());
                xs[j] = new;
            }
            if moved < 1e-9 {
                break;
            }
        }
        for (xi, &v) in x.iter_mut().zip(xs.iter()) {
            *xi = v as f32;
        }
        return;
    }
    // In-place Cholesky of the lower triangle: A = L Lᵀ.
    for j in 0..f {
        let (above, rest) = a.split_at_mut((j + 1) * f);
        let lj = &mut above[j * f..(j + 1) * f];
        let d = lj[j] - dot64(&lj[..j], &lj[..j]);
        if d <= 0.0 || !d.is_finite() {
            return;
        }
        let d = d.sqrt();
        lj[j] = d;
        let lj = &lj[..j];
        for li in rest.chunks_exact_mut(f) {
            li[j] = (li[j] - dot64(&li[..j], lj)) / d;
        }
    }
    for i in 0..f {
        let mut v = b[i];
        for k in 0..i {
            v -= a[i * f + k] * b[k];
        }
        b[i] = v / a[i * f + i];
    }
    for i in (0..f).rev() {
        let mut v = b[i];
        for k in i + 1..f {
            v -= a[k * f + i] * b[k];
        }
        b[i] = v / a[i * f + i];
    }
    for (xi, &bi) in x.iter_mut().zip(b.iter()) {
        *xi = bi as f32;
    }
}

/// The dot product of two f64 slices, four partial sums at a time (so it
/// vectorises; the order of the additions differs from a plain loop's).
fn dot64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// A few CG steps on one row's system, warm-started from `x`.
#[allow(clippy::too_many_arguments)]
fn solve_row(
    x: &mut [f32],
    yty: &[f32],
    y: &[f32],
    f: usize,
    cols: &[u32],
    conf: &[f32],
    extra_reg: f32,
    steps: usize,
    s: &mut Scratch,
) {
    let Scratch { r, p, ap, .. } = s;
    // r = YᵀCᵤpᵤ − (YᵀY + λI + Yᵀ(Cᵤ − I)Y) x   (λ partly in `yty`, partly `extra_reg`)
    for a in 0..f {
        r[a] = -dot(&yty[a * f..(a + 1) * f], x) - extra_reg * x[a];
    }
    for (&i, &c) in cols.iter().zip(conf) {
        let yi = &y[i as usize * f..(i as usize + 1) * f];
        let yx = dot(yi, x);
        // Negative confidence: a negative preference (pᵤᵢ = 0) of weight |c|.
        let coef = if c > 0.0 {
            c - (c - 1.0) * yx
        } else {
            -(-c - 1.0) * yx
        };
        axpy(coef, yi, r);
    }
    p.copy_from_slice(r);
    let mut rs_old = dot(r, r);
    if rs_old < 1e-20 {
        return;
    }
    for _ in 0..steps {
        for a in 0..f {
            ap[a] = dot(&yty[a * f..(a + 1) * f], p) + extra_reg * p[a];
        }
        for (&i, &c) in cols.iter().zip(conf) {
            let yi = &y[i as usize * f..(i as usize + 1) * f];
            axpy((c.abs() - 1.0) * dot(yi, p), yi, ap);
        }
        let pap = dot(p, ap);
        if pap <= 0.0 || !pap.is_finite() {
            break;
        }
        let step = rs_old / pap;
        axpy(step, p, x);
        axpy(-step, ap, r);
        let rs_new = dot(r, r);
        if rs_new < 1e-20 {
            break;
        }
        let beta = rs_new / rs_old;
        for (pi, ri) in p.iter_mut().zip(r.iter()) {
            *pi = ri + beta * *pi;
        }
        rs_old = rs_new;
    }
}

/// The regularization on every row (`λI` in `YᵀY + λI`) and the one added per
/// interaction (weighted-λ regularization), as `p` asks.
fn regularization(p: &AlsParams) -> (f32, f32) {
    if p.weighted_regularization {
        (0.0, p.regularization)
    } else {
        (p.regularization, 0.0)
    }
}

/// Confidence of an interaction of weight `w`: `1 + alpha·w`, negated for a
/// negative weight (a negative preference).
fn confidence(alpha: f32, w: f32) -> f32 {
    if w >= 0.0 {
        1.0 + alpha * w
    } else {
        -(1.0 + alpha * -w)
    }
}

/// One half-iteration: every row of `x` re-solved given `y`.
fn solve_all(x: &mut [f32], y: &[f32], m: &Csr, p: &AlsParams) {
    let f = p.factors;
    let (base_reg, per_interaction) = regularization(p);
    let yty = gram(y, f, base_reg);
    x.par_chunks_mut(f).enumerate().for_each_init(
        || Scratch::new(f),
        |s, (u, xu)| {
            let (cols, conf) = m.row(u);
            let extra = per_interaction * cols.len() as f32;
            if p.exact {
                solve_row_exact(xu, &yty, y, f, cols, conf, extra, p.nonnegative, s);
            } else {
                solve_row(xu, &yty, y, f, cols, conf, extra, p.cg_steps, s);
            }
            if p.nonnegative {
                xu.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        },
    );
}

/// Solves more rows against fixed factors, exactly as a half-iteration of
/// [`fit`] with exact solves does (`(YᵀY + λI + Yᵀ(Cᵤ − I)Y) xᵤ = YᵀCᵤpᵤ`), with
/// `YᵀY + λI` computed once: how a user's factors follow their new events
/// without a retrain (fold-in), or a new item's from its users' factors.
pub struct Solver {
    f: usize,
    yty: Vec<f32>,
    alpha: f32,
    per_interaction: f32,
    nonnegative: bool,
}

/// A solver's working memory (one per thread).
pub struct SolveScratch(Scratch, Vec<f32>);

impl Solver {
    /// For rows solved against `fixed` (`factors` floats a row) under `p`.
    pub fn new(p: &AlsParams, fixed: &[f32]) -> Solver {
        let f = p.factors;
        let (base_reg, per_interaction) = regularization(p);
        Solver {
            f,
            yty: gram(fixed, f, base_reg),
            alpha: p.alpha,
            per_interaction,
            nonnegative: p.nonnegative,
        }
    }

    pub fn factors(&self) -> usize {
        self.f
    }

    pub fn scratch(&self) -> SolveScratch {
        SolveScratch(Scratch::new(self.f), Vec::new())
    }

    /// The row for interactions `(cols[j], weights[j])` with rows of `fixed`
    /// (implicit-feedback weights: confidence `1 + alpha·w`, negative weights
    /// negative preferences), into `x` (zeros when the system is singular).
    pub fn solve(
        &self,
        fixed: &[f32],
        cols: &[u32],
        weights: &[f32],
        x: &mut [f32],
        s: &mut SolveScratch,
    ) {
        let mut conf = std::mem::take(&mut s.1);
        conf.clear();
        conf.extend(weights.iter().map(|&w| confidence(self.alpha, w)));
        x.iter_mut().for_each(|v| *v = 0.0);
        let extra = self.per_interaction * cols.len() as f32;
        solve_row_exact(
            x,
            &self.yty,
            fixed,
            self.f,
            cols,
            &conf,
            extra,
            self.nonnegative,
            &mut s.0,
        );
        if self.nonnegative {
            x.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        s.1 = conf;
    }
}

/// Rows a fit starts from instead of random ones (a warm start from a model
/// trained before): for each user and item row of the data, the row of
/// `from` it continues, if any (the others start random). `from` must have
/// the fit's factor count.
pub struct WarmStart<'a> {
    pub from: &'a AlsModel,
    pub users: Vec<Option<u32>>,
    pub items: Vec<Option<u32>>,
}

impl WarmStart<'_> {
    /// Rows of the data it starts from `from`'s rows: (users, items).
    pub fn reused(&self) -> (usize, usize) {
        (
            self.users.iter().flatten().count(),
            self.items.iter().flatten().count(),
        )
    }
}

/// Trains on `weights` (users × items, implicit-feedback weights; confidence is
/// `1 + alpha·w`, negative weights are negative preferences). `on_iteration` gets
/// each iteration's index and seconds.
pub fn fit(
    params: &CheckedAlsParams,
    weights: &Csr,
    on_iteration: impl FnMut(usize, f64),
) -> Result<AlsModel, AlsError> {
    fit_from(params, weights, None, on_iteration)
}

/// [`fit`] from a warm start's rows where it has them.
pub fn fit_from(
    params: &CheckedAlsParams,
    weights: &Csr,
    warm: Option<&WarmStart<'_>>,
    mut on_iteration: impl FnMut(usize, f64),
) -> Result<AlsModel, AlsError> {
    let p = params.params();
    if weights.nnz() == 0 {
        return Err(AlsError::Empty);
    }
    let conf_u = weights.map_values(|w| confidence(p.alpha, w));
    let conf_i = conf_u.transpose();
    let f = p.factors;
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    // As Spark MLlib: unit-norm Gaussian rows (absolute values for non-negative
    // factors); items are solved first.
    let normal = rand_distr::StandardNormal;
    let mut init = |n: usize| {
        let mut v: Vec<f32> = (0..n * f)
            .map(|_| rand_distr::Distribution::<f32>::sample(&normal, &mut rng))
            .collect();
        for row in v.chunks_exact_mut(f) {
            let norm = dot(row, row).sqrt().max(1e-12);
            row.iter_mut()
                .for_each(|x| *x = if p.nonnegative { x.abs() } else { *x } / norm);
        }
        v
    };
    let mut user_factors = init(weights.rows);
    let mut item_factors = init(weights.cols);
    if let Some(w) = warm.filter(|w| w.from.factors == f) {
        let copy = |dst: &mut [f32], map: &[Option<u32>], src: &[f32]| {
            for (row, from) in dst.chunks_exact_mut(f).zip(map) {
                let Some(r) = from.map(|r| r as usize) else {
                    continue;
                };
                if let Some(s) = src.get(r * f..(r + 1) * f) {
                    row.copy_from_slice(s);
                }
            }
        };
        copy(&mut user_factors, &w.users, &w.from.user_factors);
        copy(&mut item_factors, &w.items, &w.from.item_factors);
    }
    for it in 0..p.iterations {
        let t = std::time::Instant::now();
        solve_all(&mut item_factors, &user_factors, &conf_i, p);
        solve_all(&mut user_factors, &item_factors, &conf_u, p);
        on_iteration(it, t.elapsed().as_secs_f64());
    }
    Ok(AlsModel {
        factors: f,
        users: weights.rows,
        items: weights.cols,
        user_factors,
        item_factors,
    })
}

#[cfg(test)]
mod tests;
