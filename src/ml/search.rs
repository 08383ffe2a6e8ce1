//! Hyperparameter search across families, inside a time budget.
//!
//! The training data is split once more: a validation share of each eligible
//! user's items is carved out ([`carve`]), every trial is fitted on the rest
//! and scored on it (NDCG@k) — the test split is never looked at. The first
//! trials are the starting points (the configured ALS point when the budget
//! is counted in its fits, the given ones, e.g. the last search's best, then
//! each family's defaults); after them each trial picks a family (the better
//! its best validation score and the cheaper its trials, the likelier) and
//! either samples its space afresh or perturbs its best point (log-scale
//! steps: a local refinement around what worked, the exploitation half of
//! TPE-style searches). The budget is seconds, and optionally also a number
//! of fits of the configured ALS point (its first fit's seconds are the
//! unit), so the search costs the same multiple of one fit on any data. A
//! trial whose expected time (from the family's last trial, scaled by its
//! size, with half again as margin) would overrun the budget, or take more
//! than a quarter of it, is not started; 16 trials in a row without a better
//! winner end the search early. Every trial is recorded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::als::AlsParams;
use super::ease::{EaseParams, Input};
use super::family::{self, Family, Params};
use super::knn::{KnnParams, Weighting};
use super::sparse::Csr;

#[derive(Debug, Clone)]
pub struct SearchSpec {
    pub budget: Duration,
    /// The budget also in fits of `base_als` (the first trial: its fit's
    /// seconds on the fitting share are the unit); 0: seconds alone.
    pub budget_fits: f64,
    pub families: Vec<Family>,
    /// ALS fields the search does not vary (cg_steps, seed), and the ALS
    /// starting point when `start` has none.
    pub base_als: AlsParams,
    pub ease_max_items: usize,
    /// Share of each eligible user's training items held out for validation.
    pub validation_fraction: f64,
    /// Users with fewer items keep them all for fitting.
    pub min_items: usize,
    /// Validation users scored at most (a seeded sample past it).
    pub max_validation_users: usize,
    pub k: usize,
    pub seed: u64,
    /// Tried first (e.g. the last search's best of each family).
    pub start: Vec<Params>,
}

impl SearchSpec {
    /// The search over every family with `base_als` as ALS's starting point.
    pub fn new(budget: Duration, base_als: AlsParams, k: usize, seed: u64) -> SearchSpec {
        SearchSpec {
            budget,
            budget_fits: 0.0,
            families: Family::ALL.to_vec(),
            base_als,
            ease_max_items: EaseParams::default().max_items,
            validation_fraction: 0.2,
            min_items: 5,
            max_validation_users: 20_000,
            k,
            seed,
            start: Vec::new(),
        }
    }
}

/// One trial: what was fitted, how it scored on validation, what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub params: Params,
    /// NDCG@k on the validation split (`None`: the fit failed).
    pub validation: Option<f64>,
    pub fit_s: f64,
    pub eval_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    pub trials: Vec<Trial>,
    /// Index of the best trial of each family that has one.
    pub best: BTreeMap<Family, usize>,
    /// Index of the best trial overall.
    pub winner: Option<usize>,
    /// The budget the search kept to: the seconds given, or fewer when
    /// counted in fits of the configured point (`fit_unit_s`).
    pub budget_s: f64,
    /// Seconds of one fit of the configured ALS point on the fitting share,
    /// when the budget is also counted in such fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit_unit_s: Option<f64>,
    pub seconds: f64,
    pub validation_users: usize,
    pub validation_pairs: usize,
    /// Trials not started because they would have overrun the budget.
    pub skipped_for_budget: usize,
    /// Ended before its budget: the last trials found nothing better.
    #[serde(default)]
    pub converged: bool,
}

impl SearchReport {
    pub fn winner(&self) -> Option<&Trial> {
        self.winner.map(|i| &self.trials[i])
    }

    pub fn best_of(&self, f: Family) -> Option<&Trial> {
        self.best.get(&f).map(|&i| &self.trials[i])
    }

    /// The best point of each family, to start the next search from.
    pub fn starts(&self) -> Vec<Params> {
        self.best
            .values()
            .map(|&i| self.trials[i].params.clone())
            .collect()
    }
}

/// Splits `train` into (fit, validation): for each user with at least
/// `min_items` positive items, `round(fraction · n)` of them, chosen by a
/// seeded shuffle, go to validation (value 1).
pub fn carve(train: &Csr, fraction: f64, min_items: usize, seed: u64) -> (Csr, Csr) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005E_A4C4);
    let mut fit = Vec::with_capacity(train.nnz());
    let mut val = Vec::new();
    let mut positive = Vec::new();
    for u in 0..train.rows {
        let (cols, vals) = train.row(u);
        positive.clear();
        positive.extend((0..cols.len()).filter(|&j| vals[j] > 0.0));
        let n = if positive.len() >= min_items.max(2) {
            ((fraction * positive.len() as f64) + 0.5).floor() as usize
        } else {
            0
        };
        // A partial Fisher–Yates: the first n of `positive` are held out.
        for j in 0..n.min(positive.len()) {
            let r = rng.gen_range(j..positive.len());
            positive.swap(j, r);
        }
        let held = &mut positive[..n];
        held.sort_unstable();
        for (j, (&c, &v)) in cols.iter().zip(vals).enumerate() {
            if held.binary_search(&j).is_ok() {
                val.push((u as u32, c, 1.0));
            } else {
                fit.push((u as u32, c, v));
            }
        }
    }
    (
        Csr::from_triplets(train.rows, train.cols, &fit),
        Csr::from_triplets(train.rows, train.cols, &val),
    )
}

/// Keeps the validation rows of at most `max` users (a seeded sample).
fn sample_users(val: Csr, max: usize, seed: u64) -> Csr {
    let users: Vec<u32> = (0..val.rows as u32)
        .filter(|&u| !val.row(u as usize).0.is_empty())
        .collect();
    if users.len() <= max {
        return val;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005A_4D1E);
    let keep: std::collections::HashSet<u32> = rand::seq::index::sample(&mut rng, users.len(), max)
        .into_iter()
        .map(|j| users[j])
        .collect();
    let mut t = Vec::new();
    for &u in &keep {
        let (cols, _) = val.row(u as usize);
        t.extend(cols.iter().map(|&c| (u, c, 1.0)));
    }
    Csr::from_triplets(val.rows, val.cols, &t)
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    (rng.gen_range(lo.ln()..hi.ln())).exp()
}

/// A multiplicative step of about ×/÷ e^0.5, kept in `[lo, hi]`.
fn nudge(rng: &mut ChaCha8Rng, x: f32, lo: f32, hi: f32) -> f32 {
    let step: f32 = rng.gen_range(-0.7..0.7);
    (x * step.exp()).clamp(lo, hi)
}

/// Trials in a row without a better winner that end a search early (small
/// data fits fast: its search converges long before its budget).
const PATIENCE: usize = 16;

/// Most trials of one search.
const MAX_TRIALS: usize = 200;

/// The largest share of the budget one trial may be expected to take.
const MAX_TRIAL_SHARE: f64 = 0.25;

/// Fresh points each tunable family gets before the search favours the best.
const EXPLORE: usize = 3;

/// Where a family's search starts after the given points: its defaults, and
/// for ALS an unweighted-regularization point (the two regimes differ in λ's
/// scale by orders of magnitude; data sets favour either) and the configured
/// point with twice its factors (up to 128), three times its regularization
/// and 8 iterations (rich data sets want more factors, and more factors want
/// more regularization; CG-ALS is near its optimum by 8 iterations, which
/// keeps the point's cost near the configured one's; where it is expected to
/// cost more than a quarter of the budget, it is skipped).
fn defaults(f: Family, spec: &SearchSpec) -> Vec<Params> {
    match f {
        Family::Als => vec![
            Params::Als(spec.base_als.clone()),
            Params::Als(AlsParams {
                factors: 16,
                regularization: 20.0,
                alpha: 5.0,
                weighted_regularization: false,
                ..spec.base_als.clone()
            }),
            Params::Als(AlsParams {
                factors: (spec.base_als.factors * 2).clamp(spec.base_als.factors, 128),
                regularization: spec.base_als.regularization * 3.0,
                iterations: spec.base_als.iterations.min(8),
                ..spec.base_als.clone()
            }),
        ],
        Family::Ease => vec![Params::Ease(EaseParams {
            max_items: spec.ease_max_items.min(EASE_START_ITEMS),
            ..EaseParams::default()
        })],
        Family::Knn => vec![Params::Knn(KnnParams::default())],
        Family::Popularity => vec![Params::Popularity],
    }
}

const FACTORS: [usize; 6] = [16, 32, 48, 64, 96, 128];
const ITERATIONS: [usize; 4] = [8, 12, 15, 20];

/// A fresh point of `family`'s space.
fn sample(family: Family, spec: &SearchSpec, rng: &mut ChaCha8Rng) -> Params {
    match family {
        Family::Als => {
            let wr = rng.gen_bool(0.5);
            Params::Als(AlsParams {
                factors: FACTORS[rng.gen_range(0..FACTORS.len())],
                iterations: ITERATIONS[rng.gen_range(0..ITERATIONS.len())],
                regularization: if wr {
                    log_uniform(rng, 0.005, 2.0)
                } else {
                    log_uniform(rng, 0.01, 100.0)
                },
                alpha: log_uniform(rng, 0.1, 50.0),
                weighted_regularization: wr,
                ..spec.base_als.clone()
            })
        }
        Family::Ease => Params::Ease(EaseParams {
            lambda: log_uniform(rng, 5.0, 20_000.0),
            max_items: spec.ease_max_items.min(EASE_START_ITEMS),
            input: [Input::Binary, Input::Linear, Input::Sqrt][rng.gen_range(0..3)],
        }),
        Family::Knn => Params::Knn(KnnParams {
            neighbours: log_uniform(rng, 10.0, 1000.0).round() as usize,
            shrink: log_uniform(rng, 1.0, 200.0) - 1.0,
            weighting: if rng.gen_bool(0.5) {
                Weighting::Cosine
            } else {
                Weighting::Bm25
            },
        }),
        Family::Popularity => Params::Popularity,
    }
}

/// A point near `p` (`max_items`: the most items an EASE point may keep).
fn perturb(p: &Params, max_items: usize, rng: &mut ChaCha8Rng) -> Params {
    match p {
        Params::Als(a) => {
            let mut a = a.clone();
            match rng.gen_range(0..4) {
                0 => {
                    let at = FACTORS.iter().position(|&f| f >= a.factors).unwrap_or(0);
                    let to = if rng.gen_bool(0.5) {
                        at.saturating_sub(1)
                    } else {
                        (at + 1).min(FACTORS.len() - 1)
                    };
                    a.factors = FACTORS[to];
                }
                1 => {
                    let at = ITERATIONS
                        .iter()
                        .position(|&i| i >= a.iterations)
                        .unwrap_or(ITERATIONS.len() - 1);
                    let to = if rng.gen_bool(0.5) {
                        at.saturating_sub(1)
                    } else {
                        (at + 1).min(ITERATIONS.len() - 1)
                    };
                    a.iterations = ITERATIONS[to];
                }
                _ => {}
            }
            a.regularization = nudge(rng, a.regularization.max(1e-3), 1e-3, 1000.0);
            a.alpha = nudge(rng, a.alpha, 0.05, 200.0);
            Params::Als(a)
        }
        Params::Ease(e) => Params::Ease(EaseParams {
            lambda: nudge(rng, e.lambda, 0.5, 1e6),
            max_items: match rng.gen_range(0..3) {
                0 => ease_step(e.max_items, true, max_items),
                1 => ease_step(e.max_items, false, max_items),
                _ => e.max_items,
            },
            ..*e
        }),
        Params::Knn(k) => Params::Knn(KnnParams {
            neighbours: (nudge(rng, k.neighbours as f32, 2.0, 5000.0).round() as usize).max(1),
            shrink: nudge(rng, k.shrink + 1.0, 1.0, 1000.0) - 1.0,
            weighting: k.weighting,
        }),
        Params::Popularity => Params::Popularity,
    }
}

/// The mean seconds of `f`'s trials in `report` (fit and scoring).
fn mean_s(f: Family, report: &SearchReport) -> f64 {
    let (n, s) = report
        .trials
        .iter()
        .filter(|t| t.params.family() == f)
        .fold((0usize, 0.0), |(n, s), t| (n + 1, s + t.fit_s + t.eval_s));
    if n == 0 {
        1.0
    } else {
        s / n as f64
    }
}

/// What a trial of `p` is expected to cost, from `last` (a trial of the same
/// family): ALS's fit scales with factors^1.5 × iterations, EASE's with the
/// cube of the items it keeps (of the `items` that have interactions), the
/// others as they were.
fn expected_s(p: &Params, last: &Trial, items: usize) -> f64 {
    let t = last.fit_s + last.eval_s;
    match (p, &last.params) {
        (Params::Als(a), Params::Als(b)) => {
            let size = |x: &AlsParams| (x.factors as f64).powf(1.5) * x.iterations as f64;
            last.fit_s * size(a) / size(b) + last.eval_s
        }
        (Params::Ease(a), Params::Ease(b)) => {
            let n = |x: &EaseParams| x.max_items.min(items).max(1) as f64;
            last.fit_s * (n(a) / n(b)).powi(3) + last.eval_s
        }
        _ => t,
    }
}

/// EASE's first point keeps at most this many items: its dense inverse is
/// cheap there, and the most popular items carry most of the signal (on the
/// synthetic medium split 800 items score 0.278 on test, all 5,000 items
/// 0.279). Perturbing a point steps its item count along EASE_ITEMS.
const EASE_START_ITEMS: usize = 1_000;
const EASE_ITEMS: [usize; 9] = [
    500, 1_000, 2_000, 3_000, 4_000, 6_000, 9_000, 13_000, 20_000,
];

/// The item count one step up or down EASE_ITEMS from `n`, within `max`.
fn ease_step(n: usize, up: bool, max: usize) -> usize {
    let at = EASE_ITEMS
        .iter()
        .position(|&x| x >= n)
        .unwrap_or(EASE_ITEMS.len() - 1);
    let to = if up {
        (at + 1).min(EASE_ITEMS.len() - 1)
    } else {
        at.saturating_sub(1)
    };
    EASE_ITEMS[to].min(max).max(1)
}

/// Runs the search on `train` (user × item weights); `on_trial` sees each
/// trial as it ends.
pub fn search(train: &Csr, spec: &SearchSpec, mut on_trial: impl FnMut(&Trial)) -> SearchReport {
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let (fit_part, val) = carve(train, spec.validation_fraction, spec.min_items, spec.seed);
    let val = sample_users(val, spec.max_validation_users.max(1), spec.seed);
    let validation_users = (0..val.rows).filter(|&u| !val.row(u).0.is_empty()).count();
    let mut report = SearchReport {
        trials: Vec::new(),
        best: BTreeMap::new(),
        winner: None,
        budget_s: spec.budget.as_secs_f64(),
        fit_unit_s: None,
        seconds: 0.0,
        validation_users,
        validation_pairs: val.nnz(),
        skipped_for_budget: 0,
        converged: false,
    };
    if validation_users == 0 || spec.families.is_empty() {
        report.seconds = started.elapsed().as_secs_f64();
        return report;
    }
    let items_used = {
        let mut used = vec![false; fit_part.cols];
        for &c in &fit_part.indices {
            used[c as usize] = true;
        }
        used.iter().filter(|u| **u).count()
    };
    let mut last: BTreeMap<Family, usize> = BTreeMap::new();
    let mut run = |p: Params, report: &mut SearchReport, last: &mut BTreeMap<Family, usize>| {
        let family = p.family();
        let t = Instant::now();
        let fitted = family::fit(&p, &fit_part);
        let fit_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let trial = match fitted {
            Ok(m) => {
                let m = family::evaluate(&m, &fit_part, &val, spec.k, None);
                Trial {
                    params: p,
                    validation: Some(m.ndcg),
                    fit_s,
                    eval_s: t.elapsed().as_secs_f64(),
                    error: None,
                }
            }
            Err(e) => Trial {
                params: p,
                validation: None,
                fit_s,
                eval_s: 0.0,
                error: Some(e.to_string()),
            },
        };
        on_trial(&trial);
        // The first fit of the configured point is the budget's unit.
        if spec.budget_fits > 0.0
            && report.fit_unit_s.is_none()
            && trial.error.is_none()
            && trial.params == Params::Als(spec.base_als.clone())
        {
            report.fit_unit_s = Some(trial.fit_s);
            report.budget_s = report.budget_s.min(spec.budget_fits * trial.fit_s);
        }
        let i = report.trials.len();
        if let Some(v) = trial.validation {
            let beats = |j: Option<usize>, trials: &[Trial]| {
                j.is_none_or(|j| trials[j].validation.is_none_or(|b| v > b))
            };
            if beats(report.best.get(&family).copied(), &report.trials) {
                report.best.insert(family, i);
            }
            if beats(report.winner, &report.trials) {
                report.winner = Some(i);
            }
        }
        last.insert(family, i);
        report.trials.push(trial);
    };
    // A trial starts when it is expected to end within the budget and to
    // take at most MAX_TRIAL_SHARE of it (so one costly point cannot eat the
    // search). A family's first trial is a cheap point (EASE's starts on at
    // most EASE_START_ITEMS items); later ones are expected to cost what the
    // family's last trial did, scaled by their size.
    let fits = |p: &Params, report: &SearchReport, last: &BTreeMap<Family, usize>| {
        let budget = report.budget_s;
        let left = budget - started.elapsed().as_secs_f64();
        let t = match last.get(&p.family()) {
            Some(&i) => expected_s(p, &report.trials[i], items_used),
            None => 0.0,
        };
        // Trials' times vary (a loaded machine, a size the scaling misjudges):
        // one starts only with half as much time again left as it expects.
        left > 0.0 && t * 1.5 <= left && t <= budget * MAX_TRIAL_SHARE
    };
    // The starting points: the configured ALS point when the budget counts
    // its fits (the unit comes first), the given ones, then each family's
    // defaults, each point once.
    let mut starts: Vec<Params> = Vec::new();
    let unit = (spec.budget_fits > 0.0 && spec.families.contains(&Family::Als))
        .then(|| Params::Als(spec.base_als.clone()));
    let given = spec
        .start
        .iter()
        .filter(|p| spec.families.contains(&p.family()))
        .cloned();
    for p in unit
        .into_iter()
        .chain(given)
        .chain(spec.families.iter().flat_map(|f| defaults(*f, spec)))
    {
        if !starts.contains(&p) {
            starts.push(p);
        }
    }
    // The first always runs: a search ends with a model whatever its budget.
    for p in starts {
        if report.trials.is_empty() || fits(&p, &report, &last) {
            run(p, &mut report, &mut last);
        } else {
            report.skipped_for_budget += 1;
        }
    }
    // Exploration: every tunable family gets EXPLORE trials of fresh points,
    // the cheapest families first.
    let mut order: Vec<Family> = spec
        .families
        .iter()
        .copied()
        .filter(|f| *f != Family::Popularity)
        .collect();
    let cost = |f: Family, report: &SearchReport| {
        report
            .trials
            .iter()
            .filter(|t| t.params.family() == f)
            .map(|t| t.fit_s + t.eval_s)
            .fold(f64::INFINITY, f64::min)
    };
    order.sort_by(|a, b| cost(*a, &report).total_cmp(&cost(*b, &report)));
    for f in order {
        let mut misses = 0;
        while report
            .trials
            .iter()
            .filter(|t| t.params.family() == f)
            .count()
            < EXPLORE
            && misses < 3
            && started.elapsed().as_secs_f64() < report.budget_s
        {
            let p = sample(f, spec, &mut rng);
            if fits(&p, &report, &last) {
                run(p, &mut report, &mut last);
            } else {
                misses += 1;
                report.skipped_for_budget += 1;
            }
        }
    }
    // Then: families by their best score, sampled or refined.
    let tunable: Vec<Family> = spec
        .families
        .iter()
        .copied()
        .filter(|f| *f != Family::Popularity)
        .collect();
    let mut misses = 0;
    while !tunable.is_empty() && misses < 8 && report.trials.len() < MAX_TRIALS {
        if started.elapsed().as_secs_f64() >= report.budget_s {
            break;
        }
        // Patience: PATIENCE trials in a row without a better winner end it.
        let since_best = report.trials.len() - 1 - report.winner.unwrap_or(0);
        if since_best >= PATIENCE {
            report.converged = true;
            break;
        }
        let top = report
            .winner()
            .and_then(|t| t.validation)
            .unwrap_or(0.0)
            .max(1e-9);
        // Weight e^{(s/top − 1)/0.1} over the family's mean trial seconds: a
        // family 10 % behind the best is tried e times less often, one whose
        // trials take 4 times as long 4 times less often (what a second of
        // the budget buys); one that failed or never ran, rarely.
        let weights: Vec<f64> = tunable
            .iter()
            .map(|f| match report.best_of(*f).and_then(|t| t.validation) {
                Some(s) => ((s / top - 1.0) / 0.1).exp() / mean_s(*f, &report).max(1e-3),
                None => 0.0,
            })
            .collect();
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut pick = rng.gen_range(0.0..total);
        let mut family = tunable[0];
        for (f, w) in tunable.iter().zip(&weights) {
            if pick < *w {
                family = *f;
                break;
            }
            pick -= w;
        }
        let tried = report
            .trials
            .iter()
            .filter(|t| t.params.family() == family)
            .count();
        let p = match report.best_of(family) {
            Some(best) if tried >= EXPLORE && rng.gen_bool(0.6) => {
                perturb(&best.params, spec.ease_max_items, &mut rng)
            }
            _ => sample(family, spec, &mut rng),
        };
        if fits(&p, &report, &last) {
            misses = 0;
            run(p, &mut report, &mut last);
        } else {
            misses += 1;
            report.skipped_for_budget += 1;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(users: u32, items: u32) -> Csr {
        let mut t = Vec::new();
        for u in 0..users {
            let base = (u % 4) * (items / 4);
            for j in 0..items / 4 {
                if (u * 7 + j * 3) % 5 != 0 {
                    t.push((u, base + j, 1.0 + (j % 3) as f32));
                }
            }
        }
        Csr::from_triplets(users as usize, items as usize, &t)
    }

    #[test]
    fn carve_holds_out_a_share_of_each_eligible_user_and_keeps_the_rest() {
        let train = blocks(50, 40);
        let (fit, val) = carve(&train, 0.2, 5, 7);
        assert_eq!(fit.nnz() + val.nnz(), train.nnz());
        for u in 0..train.rows {
            let n = train.row(u).0.len();
            let held = val.row(u).0;
            assert_eq!(held.len(), ((0.2 * n as f64) + 0.5).floor() as usize);
            for c in held {
                assert!(fit.row(u).0.binary_search(c).is_err());
            }
        }
        // Seeded: the same split again, another with another seed.
        assert_eq!(carve(&train, 0.2, 5, 7).1, val);
        assert_ne!(carve(&train, 0.2, 5, 8).1, val);
        // Users below min_items keep everything.
        let (_, none) = carve(&train, 0.2, 100, 7);
        assert_eq!(none.nnz(), 0);
    }

    #[test]
    fn search_records_every_trial_and_beats_popularity_on_block_data() {
        let train = blocks(200, 80);
        let mut spec = SearchSpec::new(
            Duration::from_secs(3),
            AlsParams {
                factors: 8,
                iterations: 5,
                ..AlsParams::default()
            },
            5,
            1,
        );
        spec.ease_max_items = 80;
        let mut seen = 0;
        let r = search(&train, &spec, |_| seen += 1);
        assert_eq!(seen, r.trials.len());
        assert!(r.trials.len() >= 4, "{} trials", r.trials.len());
        for f in Family::ALL {
            assert!(r.best.contains_key(&f), "no {f} trial: {:?}", r.trials);
        }
        let pop = r.best_of(Family::Popularity).unwrap().validation.unwrap();
        let win = r.winner().unwrap();
        assert_ne!(win.params.family(), Family::Popularity);
        assert!(
            win.validation.unwrap() > pop + 0.1,
            "{win:?} vs popularity {pop}"
        );
        // The next search starts from this one's best points.
        let starts = r.starts();
        assert_eq!(starts.len(), 4);
        let mut again = spec.clone();
        again.start = starts.clone();
        again.budget = Duration::ZERO;
        let r2 = search(&train, &again, |_| {});
        // No budget: the first starting point alone, the others skipped.
        assert_eq!(r2.trials.len(), 1);
        assert_eq!(r2.trials.first().map(|t| &t.params), starts.first());
        assert!(r2.skipped_for_budget >= 3, "{}", r2.skipped_for_budget);
    }

    #[test]
    fn a_budget_in_fits_starts_with_the_configured_point_and_counts_in_its_fit() {
        let train = blocks(200, 80);
        let base = AlsParams {
            factors: 8,
            iterations: 5,
            ..AlsParams::default()
        };
        let mut spec = SearchSpec::new(Duration::from_secs(60), base.clone(), 5, 1);
        spec.ease_max_items = 80;
        spec.budget_fits = 200.0;
        // A given point is tried after the configured one, whose fit is the unit.
        let given = Params::Als(AlsParams {
            factors: 12,
            ..base.clone()
        });
        spec.start = vec![given.clone()];
        let r = search(&train, &spec, |_| {});
        assert_eq!(r.trials[0].params, Params::Als(base));
        assert_eq!(r.trials[1].params, given);
        let unit = r.fit_unit_s.expect("the unit is measured");
        assert_eq!(unit, r.trials[0].fit_s);
        assert!(
            (r.budget_s - (200.0 * unit).min(60.0)).abs() < 1e-12,
            "{r:?}"
        );
        // Without fits in the budget: seconds alone, no unit.
        spec.budget_fits = 0.0;
        spec.budget = Duration::ZERO;
        let r = search(&train, &spec, |_| {});
        assert_eq!(r.fit_unit_s, None);
        assert_eq!(r.trials[0].params, given);
    }
}
