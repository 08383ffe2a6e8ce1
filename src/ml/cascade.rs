//! A Gaussian-kernel SVM on more rows than one dense kernel holds: a cascade
//! of linfa-svm fits (Graf et al., "Parallel Support Vector Machines: The
//! Cascade SVM", NIPS 2004). The rows are dealt into chunks of at most
//! `chunk_rows`; each chunk is fitted alone (in parallel) and keeps only its
//! support vectors; the support vectors of two chunks are fitted together,
//! and so on, until one fit holds them all: that fit is the model. A row
//! that is no support vector of its chunk lies outside its chunk's margin
//! and rarely becomes one of the whole set, so the last fit sees few rows.
//!
//! linfa-svm builds the dense n×n kernel of the rows it fits: one fit of
//! 20,000 rows holds 3.2 GB and takes about 25 s on two cores, a chunk of
//! 2,000 holds 32 MB. Each fit is capped at `max_fit_rows` (a union past it
//! keeps a seeded sample of its rows), so memory stays bounded however
//! noisy the labels are.

use linfa::prelude::*;
use linfa_svm::{Svm, SvmError};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// How the cascade fits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CascadeParams {
    /// Penalty C (both classes).
    pub c: f64,
    /// Gaussian kernel width (linfa-svm's `eps` of `gaussian_kernel`).
    pub width: f64,
    /// The solver's stopping tolerance.
    pub tolerance: f64,
    /// Rows of a first-layer fit.
    pub chunk_rows: usize,
    /// Most rows of any fit (a union past it is sampled).
    pub max_fit_rows: usize,
    pub seed: u64,
}

impl Default for CascadeParams {
    fn default() -> CascadeParams {
        CascadeParams {
            c: 1.0,
            width: 1.0,
            tolerance: 1e-3,
            chunk_rows: 2_000,
            max_fit_rows: 6_000,
            seed: 57,
        }
    }
}

/// The fitted model and how the cascade went.
pub struct Cascade {
    pub svm: Svm<f64, bool>,
    /// First-layer fits.
    pub chunks: usize,
    /// Fits in all.
    pub fits: usize,
    /// Rows of the last fit (the support vectors that reached it).
    pub last_fit_rows: usize,
    /// Rows left out because a union passed `max_fit_rows`.
    pub sampled_out: usize,
}

/// One fit of linfa-svm on `rows` of (standardized) `x`.
fn fit_rows(
    x: ArrayView2<f64>,
    y: &[bool],
    rows: &[usize],
    p: &CascadeParams,
) -> Result<Svm<f64, bool>, SvmError> {
    let ds = Dataset::new(
        x.select(Axis(0), rows),
        rows.iter()
            .map(|&i| y.get(i).copied().unwrap_or(false))
            .collect::<Array1<bool>>(),
    );
    // linfa-svm's shrinking stays off: it panics in its solver.
    Svm::<f64, bool>::params()
        .pos_neg_weights(p.c, p.c)
        .gaussian_kernel(p.width)
        .eps(p.tolerance)
        .fit(&ds)
}

/// The rows of `rows` that are support vectors of `svm` (fitted on them, in
/// their order). Rows of one class alone cannot be fitted: all are kept.
fn support(svm: &Svm<f64, bool>, rows: &[usize]) -> Vec<usize> {
    rows.iter()
        .zip(&svm.alpha)
        .filter(|(_, a)| a.abs() > 100.0 * f64::EPSILON)
        .map(|(r, _)| *r)
        .collect()
}

/// Whether `rows` hold both classes.
fn both(y: &[bool], rows: &[usize]) -> bool {
    let pos = rows.iter().filter(|&&i| y.get(i) == Some(&true)).count();
    pos > 0 && pos < rows.len()
}

/// `max` of `rows` at random, each class in its share (at least one of each
/// class present).
fn sample(rows: Vec<usize>, y: &[bool], max: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let (mut pos, mut neg): (Vec<usize>, Vec<usize>) =
        rows.iter().partition(|&&i| y.get(i) == Some(&true));
    pos.shuffle(rng);
    neg.shuffle(rng);
    let share = (pos.len() as f64 / rows.len().max(1) as f64 * max as f64).round() as usize;
    let lo = usize::from(!pos.is_empty());
    let hi = max.saturating_sub(usize::from(!neg.is_empty())).max(lo);
    let take_pos = share.clamp(lo, hi);
    pos.truncate(take_pos);
    neg.truncate(max - pos.len());
    pos.extend(neg);
    pos
}

/// Fits the cascade on `rows` of `x` (standardized features) with labels `y`.
pub fn fit(
    x: ArrayView2<f64>,
    y: &[bool],
    rows: &[usize],
    p: &CascadeParams,
) -> Result<Cascade, SvmError> {
    let one_class = |n: usize| {
        SvmError::BaseCrate(linfa::Error::Parameters(format!(
            "{n} training rows of one class: an SVM needs both"
        )))
    };
    if !both(y, rows) {
        return Err(one_class(rows.len()));
    }
    let chunk = p.chunk_rows.max(10);
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed ^ 0xCA5C);
    let mut order = rows.to_vec();
    order.shuffle(&mut rng);
    let k = order.len().div_ceil(chunk).max(1);
    if k == 1 {
        let svm = fit_rows(x, y, &order, p)?;
        return Ok(Cascade {
            svm,
            chunks: 1,
            fits: 1,
            last_fit_rows: order.len(),
            sampled_out: 0,
        });
    }
    // Dealt in turn, each chunk has the classes in about the whole's shares.
    let mut sets: Vec<Vec<usize>> = vec![Vec::with_capacity(chunk); k];
    for (i, r) in order.into_iter().enumerate() {
        sets[i % k].push(r);
    }
    let chunks = k;
    let mut fits = 0usize;
    let mut sampled_out = 0usize;
    let layer = |sets: Vec<Vec<usize>>| -> Result<Vec<Vec<usize>>, SvmError> {
        sets.into_par_iter()
            .map(|set| {
                if !both(y, &set) {
                    return Ok(set);
                }
                let svm = fit_rows(x, y, &set, p)?;
                Ok(support(&svm, &set))
            })
            .collect()
    };
    loop {
        fits += sets.iter().filter(|s| both(y, s)).count();
        sets = layer(sets)?;
        // Pairs of support-vector sets are the next layer.
        let mut next: Vec<Vec<usize>> = Vec::with_capacity(sets.len().div_ceil(2));
        let mut it = sets.into_iter();
        while let Some(mut a) = it.next() {
            if let Some(b) = it.next() {
                a.extend(b);
            }
            if a.len() > p.max_fit_rows {
                sampled_out += a.len() - p.max_fit_rows;
                a = sample(a, y, p.max_fit_rows.max(2), &mut rng);
            }
            next.push(a);
        }
        sets = next;
        if sets.len() == 1 {
            break;
        }
    }
    let last = sets.pop().unwrap_or_default();
    // (Fits whose support vectors are all of one class could leave one.)
    if !both(y, &last) {
        return Err(one_class(last.len()));
    }
    let svm = fit_rows(x, y, &last, p)?;
    Ok(Cascade {
        svm,
        chunks,
        fits: fits + 1,
        last_fit_rows: last.len(),
        sampled_out,
    })
}

/// A cascade fitted on every row of `x` standardized (each feature by its
/// mean and deviation; a constant one by 1): (mean, deviation, cascade).
pub fn fit_standardized(
    x: &Array2<f64>,
    y: &[bool],
    p: &CascadeParams,
) -> Result<(Array1<f64>, Array1<f64>, Cascade), SvmError> {
    let mean = x
        .mean_axis(Axis(0))
        .ok_or(SvmError::BaseCrate(linfa::Error::NotEnoughSamples))?;
    let std = x
        .std_axis(Axis(0), 0.0)
        .mapv(|s| if s > 0.0 { s } else { 1.0 });
    let standardized = (x - &mean) / &std;
    let rows: Vec<usize> = (0..x.nrows()).collect();
    let cascade = fit(standardized.view(), y, &rows, p)?;
    Ok((mean, std, cascade))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::Rng;

    /// Two noisy rings: a boundary no line draws.
    fn rings(n: usize, seed: u64) -> (Array2<f64>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Array2::zeros((n, 2));
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let inner = rng.gen_bool(0.5);
            let r = if inner { 1.0 } else { 2.0 } + rng.gen_range(-0.3..0.3);
            let a = rng.gen_range(0.0..std::f64::consts::TAU);
            x[[i, 0]] = r * a.cos();
            x[[i, 1]] = r * a.sin();
            y.push(inner);
        }
        (x, y)
    }

    fn accuracy(svm: &Svm<f64, bool>, x: &Array2<f64>, y: &[bool]) -> f64 {
        let p = svm.predict(x);
        p.iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64
    }

    #[test]
    fn the_cascade_scores_as_one_fit_of_all_rows_and_its_last_fit_is_small() {
        let (x, y) = rings(4_000, 1);
        let (xt, yt) = rings(2_000, 2);
        let rows: Vec<usize> = (0..x.nrows()).collect();
        let p = CascadeParams {
            chunk_rows: 500,
            ..CascadeParams::default()
        };
        let one = fit_rows(x.view(), &y, &rows, &p).unwrap();
        let cascade = fit(x.view(), &y, &rows, &p).unwrap();
        assert_eq!(cascade.chunks, 8);
        assert_eq!(cascade.fits, 8 + 4 + 2 + 1);
        assert_eq!(cascade.sampled_out, 0);
        assert!(
            cascade.last_fit_rows < rows.len() / 4,
            "the last fit sees the support vectors only: {}",
            cascade.last_fit_rows
        );
        let (a1, ac) = (accuracy(&one, &xt, &yt), accuracy(&cascade.svm, &xt, &yt));
        assert!(a1 > 0.95, "one fit {a1}");
        assert!((a1 - ac).abs() < 0.01, "one fit {a1}, cascade {ac}");
    }

    #[test]
    fn a_fit_never_holds_more_than_its_bound_and_one_class_fits_nothing() {
        // Labels at random: every row is a support vector, the unions are cut.
        let (x, _) = rings(3_000, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let y: Vec<bool> = (0..x.nrows()).map(|_| rng.gen_bool(0.5)).collect();
        let rows: Vec<usize> = (0..x.nrows()).collect();
        let p = CascadeParams {
            chunk_rows: 400,
            max_fit_rows: 600,
            ..CascadeParams::default()
        };
        let c = fit(x.view(), &y, &rows, &p).unwrap();
        assert!(c.last_fit_rows <= 600, "{}", c.last_fit_rows);
        assert!(c.sampled_out > 0);
        // A chunk of one class is kept whole, not fitted, and a sample of a
        // union keeps a row of each class.
        let mut y1 = vec![false; x.nrows()];
        y1[0] = true;
        let c = fit(x.view(), &y1, &rows, &p).unwrap();
        assert!(c.last_fit_rows <= 600);
        assert!(c.svm.predict(&x).iter().filter(|p| **p).count() <= 10);
        // One class alone is refused, naming why.
        let e = fit(x.view(), &vec![false; x.nrows()], &rows, &p)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("one class"), "{e}");
        // And so is it where the rows fit in one chunk.
        let e = fit(x.view(), &vec![true; x.nrows()], &rows[..300], &p)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("300 training rows of one class"), "{e}");
    }
}
