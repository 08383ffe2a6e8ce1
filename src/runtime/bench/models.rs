//! `playpulse bench models`: the trainer's search across families on a train
//! split (validation carved from it), each family's best refitted on the whole
//! train split and scored on the test split; one JSON line per family, then
//! one for the champion (the best on validation).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ml::als::AlsParams;
use crate::ml::family::{self, Family, Params};
use crate::ml::search::{search, SearchSpec, Trial};
use crate::ml::split::load;

#[derive(Debug, Clone)]
pub struct ModelsBenchArgs {
    pub train: PathBuf,
    pub test: PathBuf,
    pub k: usize,
    pub threads: usize,
    pub budget: Duration,
    pub budget_fits: f64,
    pub families: Vec<Family>,
    pub base_als: AlsParams,
    pub ease_max_items: usize,
    pub seed: u64,
    /// Item genres (`item`, `genre` columns) for the diversity metric.
    pub genres: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestMetrics {
    #[serde(rename = "ndcg@10")]
    pub ndcg: f64,
    #[serde(rename = "precision@10")]
    pub precision: f64,
    #[serde(rename = "recall@10")]
    pub recall: f64,
    #[serde(rename = "map@10")]
    pub map: f64,
    pub coverage: f64,
    pub novelty: f64,
    pub popularity_bias: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diversity: Option<f64>,
    pub k: usize,
    /// The refit on the whole train split, seconds.
    pub fit_s: f64,
}

/// One family: its best trial and that point's test score.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyLine {
    pub bench: &'static str,
    pub family: Family,
    pub params: Params,
    pub describe: String,
    pub validation_ndcg: f64,
    pub trials: usize,
    /// Seconds the family's trials took (fits + validation scoring).
    pub trial_s: f64,
    pub test: TestMetrics,
    /// EASE only: the test NDCG@k with each item's row cut to its
    /// `SPARSE_NEIGHBOURS` largest weights (what a sparse serving form keeps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse: Option<SparseCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SparseCheck {
    pub neighbours: usize,
    pub ndcg: f64,
}

/// Weights an item's row keeps in the sparse check.
pub const SPARSE_NEIGHBOURS: usize = 200;

#[derive(Debug, Clone, Serialize)]
pub struct ChampionLine {
    pub bench: &'static str,
    pub champion: Family,
    pub params: Params,
    pub describe: String,
    pub validation_ndcg: f64,
    #[serde(flatten)]
    pub test: TestMetrics,
    pub trials: usize,
    pub skipped_for_budget: usize,
    /// Ended before its budget (nothing better in its last trials).
    pub converged: bool,
    pub budget_s: f64,
    /// One fit of the default ALS on the search's fitting share, when the
    /// budget is counted in such fits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit_unit_s: Option<f64>,
    pub search_s: f64,
    /// One fit of the ALS starting point (the daemon's defaults) on the whole
    /// train split, seconds: the search's time is quoted against it.
    pub default_fit_s: f64,
    pub default_ndcg: f64,
    pub search_over_default_fit: f64,
    pub validation_users: usize,
    pub users: usize,
    pub items: usize,
    pub train_pairs: usize,
    pub threads: usize,
    pub peak_rss_mb: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Line {
    Family(FamilyLine),
    Champion(ChampionLine),
}

/// Runs the search, then the refits; `on_trial` sees each trial as it ends.
pub fn models(
    args: &ModelsBenchArgs,
    on_trial: impl FnMut(&Trial) + Send,
) -> anyhow::Result<Vec<Line>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build()?;
    let (train, test) = load(&args.train, &args.test)?;
    let genres = match &args.genres {
        Some(path) => {
            let (ids, outside) = crate::ml::split::read_genres(path, train.cols)?;
            if ids.iter().all(|&g| g == crate::ml::metrics::NO_GENRE) {
                anyhow::bail!(
                    "--genres {}: no item of the split has a genre ({outside} rows name items past its {} ids)",
                    path.display(),
                    train.cols
                );
            }
            Some(ids)
        }
        None => None,
    };
    pool.install(|| run(args, &train, &test, genres.as_deref(), on_trial))
}

fn run(
    args: &ModelsBenchArgs,
    train: &crate::ml::sparse::Csr,
    test: &crate::ml::sparse::Csr,
    genres: Option<&crate::ml::metrics::Genres>,
    on_trial: impl FnMut(&Trial),
) -> anyhow::Result<Vec<Line>> {
    // The refit on the whole train split, its test metrics, and the model.
    let score = |p: &Params| -> anyhow::Result<(TestMetrics, family::Fitted)> {
        let t = Instant::now();
        let m = family::fit(p, train)?;
        let fit_s = t.elapsed().as_secs_f64();
        let r = family::evaluate(&m, train, test, args.k, genres);
        let metrics = TestMetrics {
            ndcg: r.ndcg,
            precision: r.precision,
            recall: r.recall,
            map: r.map,
            coverage: r.coverage,
            novelty: r.novelty,
            popularity_bias: r.popularity_bias,
            diversity: r.diversity,
            k: r.k,
            fit_s,
        };
        Ok((metrics, m))
    };
    let (default, _) = score(&Params::Als(args.base_als.clone()))?;
    let mut spec = SearchSpec::new(args.budget, args.base_als.clone(), args.k, args.seed);
    spec.families = args.families.clone();
    spec.budget_fits = args.budget_fits;
    spec.ease_max_items = args.ease_max_items;
    let report = search(train, &spec, on_trial);
    let mut lines = Vec::new();
    let mut winner = None;
    for (&f, &i) in &report.best {
        let best = &report.trials[i];
        let of: Vec<&Trial> = report
            .trials
            .iter()
            .filter(|t| t.params.family() == f)
            .collect();
        let (metrics, fitted) = score(&best.params)?;
        let sparse = match &fitted {
            family::Fitted::Ease(full) => {
                let cut = family::Fitted::Ease(full.sparsified(SPARSE_NEIGHBOURS));
                Some(SparseCheck {
                    neighbours: SPARSE_NEIGHBOURS,
                    ndcg: family::evaluate(&cut, train, test, args.k, None).ndcg,
                })
            }
            _ => None,
        };
        if Some(i) == report.winner {
            winner = Some((best.clone(), metrics.clone()));
        }
        lines.push(Line::Family(FamilyLine {
            bench: "models",
            family: f,
            params: best.params.clone(),
            describe: best.params.describe(),
            validation_ndcg: best.validation.unwrap_or(0.0),
            trials: of.len(),
            trial_s: of.iter().map(|t| t.fit_s + t.eval_s).sum(),
            test: metrics,
            sparse,
        }));
    }
    let Some((best, test)) = winner else {
        anyhow::bail!(
            "no trial of the search succeeded ({} tried): see the errors above",
            report.trials.len()
        );
    };
    lines.push(Line::Champion(ChampionLine {
        bench: "models",
        champion: best.params.family(),
        describe: best.params.describe(),
        params: best.params,
        validation_ndcg: best.validation.unwrap_or(0.0),
        test,
        trials: report.trials.len(),
        skipped_for_budget: report.skipped_for_budget,
        converged: report.converged,
        budget_s: report.budget_s,
        fit_unit_s: report.fit_unit_s,
        search_s: report.seconds,
        default_fit_s: default.fit_s,
        default_ndcg: default.ndcg,
        search_over_default_fit: report.seconds / default.fit_s.max(1e-9),
        validation_users: report.validation_users,
        users: train.rows,
        items: train.cols,
        train_pairs: train.nnz(),
        threads: args.threads,
        peak_rss_mb: super::ml::peak_rss_mb(),
    }));
    Ok(lines)
}
