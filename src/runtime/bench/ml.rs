//! `playpulse bench als`: fit on a train split, evaluate top-k on its test split.

use std::path::PathBuf;
use std::time::Instant;

use rand::SeedableRng;
use rayon::prelude::*;
use serde::Serialize;

use crate::ml::als::{fit, fit_from, AlsModel, AlsParams, CheckedAlsParams, Solver, WarmStart};
use crate::ml::metrics::evaluate;
use crate::ml::sparse::Csr;
use crate::ml::split::load;

#[derive(Debug, Clone)]
pub struct AlsBenchArgs {
    pub train: PathBuf,
    pub test: PathBuf,
    pub params: AlsParams,
    pub k: usize,
    pub threads: usize,
    /// With a share in (0, 1): the champion comparison ([`ChampionComparison`]).
    pub champion_fraction: f64,
    pub warm_iterations: usize,
}

/// A champion fitted on a share of the training pairs (the model serving
/// before the data grew), then three ways to the full training data, all
/// scored on the same test split (NDCG@k).
#[derive(Debug, Clone, Serialize)]
pub struct ChampionComparison {
    pub champion_fraction: f64,
    pub champion_pairs: usize,
    pub champion_ndcg: f64,
    /// Warm-started from the champion's rows, `warm_iterations` iterations.
    pub warm_iterations: usize,
    pub warm_ndcg: f64,
    pub warm_fit_s: f64,
    /// Cold, the same iterations.
    pub cold_same_iterations_ndcg: f64,
    /// The champion's item factors with every user folded in from all their
    /// training pairs (the daemon's fold-in, no retrain).
    pub folded_ndcg: f64,
    pub fold_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlsBenchReport {
    pub bench: &'static str,
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f32,
    pub alpha: f32,
    pub cg_steps: usize,
    pub exact: bool,
    pub weighted_regularization: bool,
    pub nonnegative: bool,
    pub threads: usize,
    pub users: usize,
    pub items: usize,
    pub train_pairs: usize,
    pub load_s: f64,
    pub fit_s: f64,
    /// Median seconds per iteration.
    pub per_iter_s: f64,
    pub iter_s: Vec<f64>,
    pub peak_rss_mb: f64,
    #[serde(rename = "precision@10")]
    pub precision: f64,
    #[serde(rename = "recall@10")]
    pub recall: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg: f64,
    #[serde(rename = "map@10")]
    pub map: f64,
    pub coverage: f64,
    /// Mean self-information of the listed items, bits.
    pub novelty: f64,
    /// Their mean training popularity over the catalog's.
    pub popularity_bias: f64,
    pub k: usize,
    pub eval_users: usize,
    pub eval_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub champion: Option<ChampionComparison>,
}

/// Peak resident memory of this process, MiB (Linux `VmHWM`).
pub fn peak_rss_mb() -> f64 {
    crate::runtime::bench::proc_status_mb("VmHWM")
}

pub fn als(args: &AlsBenchArgs) -> anyhow::Result<AlsBenchReport> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let params = args.params.clone().check()?;
    let t = Instant::now();
    let (train, test) = load(&args.train, &args.test)?;
    let load_s = t.elapsed().as_secs_f64();
    let mut iter_s = Vec::new();
    let t = Instant::now();
    let pb = crate::domain::progress::bar(params.params().iterations as u64, "ALS iterations");
    let model = pool.install(|| {
        fit(&params, &train, |_, s| {
            iter_s.push(s);
            pb.inc(1);
        })
    })?;
    pb.finish_and_clear();
    let fit_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let m = pool.install(|| {
        evaluate(&train, &test, args.k, |u, scores| {
            model.scores_into(u, scores)
        })
    });
    let champion = if args.champion_fraction > 0.0 && args.champion_fraction < 1.0 {
        Some(pool.install(|| compare_champion(args, &params, &train, &test))?)
    } else {
        None
    };
    let mut sorted = iter_s.clone();
    sorted.sort_by(f64::total_cmp);
    let p = params.params();
    Ok(AlsBenchReport {
        bench: "als",
        factors: p.factors,
        iterations: p.iterations,
        regularization: p.regularization,
        alpha: p.alpha,
        cg_steps: p.cg_steps,
        exact: p.exact,
        weighted_regularization: p.weighted_regularization,
        nonnegative: p.nonnegative,
        threads: args.threads,
        users: train.rows,
        items: train.cols,
        train_pairs: train.nnz(),
        load_s,
        fit_s,
        per_iter_s: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
        iter_s,
        peak_rss_mb: peak_rss_mb(),
        precision: m.precision,
        recall: m.recall,
        ndcg: m.ndcg,
        map: m.map,
        coverage: m.coverage,
        novelty: m.novelty,
        popularity_bias: m.popularity_bias,
        k: m.k,
        eval_users: m.users,
        eval_s: t.elapsed().as_secs_f64(),
        champion,
    })
}

/// [`ChampionComparison`] on `train` / `test` under `params`.
fn compare_champion(
    args: &AlsBenchArgs,
    params: &CheckedAlsParams,
    train: &Csr,
    test: &Csr,
) -> anyhow::Result<ChampionComparison> {
    use rand::Rng;
    let ndcg = |m: &AlsModel| evaluate(train, test, args.k, |u, s| m.scores_into(u, s)).ndcg;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(params.params().seed ^ 0x5eed);
    let mut part = Vec::with_capacity(train.nnz());
    for u in 0..train.rows {
        let (cols, w) = train.row(u);
        for (&i, &w) in cols.iter().zip(w) {
            if rng.gen::<f64>() < args.champion_fraction {
                part.push((u as u32, i, w));
            }
        }
    }
    let part = Csr::from_triplets(train.rows, train.cols, &part);
    let champion = fit(params, &part, |_, _| {})?;
    let few = AlsParams {
        iterations: args.warm_iterations.max(1),
        ..params.params().clone()
    }
    .check()?;
    // Same rows on both sides: every row starts from the champion's.
    let warm_start = WarmStart {
        from: &champion,
        users: (0..train.rows as u32).map(Some).collect(),
        items: (0..train.cols as u32).map(Some).collect(),
    };
    let t = Instant::now();
    let warm = fit_from(&few, train, Some(&warm_start), |_, _| {})?;
    let warm_fit_s = t.elapsed().as_secs_f64();
    let cold = fit(&few, train, |_, _| {})?;
    // The fold-in: the champion's item factors, each user solved exactly from
    // all their training pairs.
    let t = Instant::now();
    let solver = Solver::new(params.params(), &champion.item_factors);
    let f = champion.factors;
    let y = &champion.item_factors;
    let user_factors: Vec<f32> = (0..train.rows)
        .into_par_iter()
        .map_init(
            || solver.scratch(),
            |s, u| {
                let (cols, w) = train.row(u);
                let mut x = vec![0f32; f];
                if !cols.is_empty() {
                    solver.solve(y, cols, w, &mut x, s);
                }
                x
            },
        )
        .flatten()
        .collect();
    let fold_s = t.elapsed().as_secs_f64();
    let folded = AlsModel {
        user_factors,
        ..champion.clone()
    };
    Ok(ChampionComparison {
        champion_fraction: args.champion_fraction,
        champion_pairs: part.nnz(),
        champion_ndcg: ndcg(&champion),
        warm_iterations: few.params().iterations,
        warm_ndcg: ndcg(&warm),
        warm_fit_s,
        cold_same_iterations_ndcg: ndcg(&cold),
        folded_ndcg: ndcg(&folded),
        fold_s,
    })
}

/// Valid video events of a JSON Lines file (rejected lines are counted, not used).
pub fn read_video_events(
    path: &std::path::Path,
) -> anyhow::Result<(Vec<crate::domain::event::VideoEvent>, usize)> {
    use std::io::BufRead;
    let validator =
        crate::ingest::validate::Validator::new(&crate::config::ValidationConfig::default());
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let (mut events, mut rejected) = (Vec::new(), 0);
    for line in std::io::BufReader::with_capacity(1 << 20, file).split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = crate::ingest::parse::parse_payload(
            crate::domain::event::Kind::Video,
            &crate::ingest::parse::Format::Sniff,
            &line,
        )
        .and_then(|e| validator.validate(e));
        match parsed {
            Ok(crate::domain::event::Event::Video(v)) => events.push(v),
            _ => rejected += 1,
        }
    }
    Ok((events, rejected))
}

/// One line of `playpulse bench classify`: a model's report and what it read.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyBenchReport {
    #[serde(flatten)]
    pub report: crate::ml::classify::ClassifierReport,
    pub events: usize,
    pub rejected_lines: usize,
    pub peak_rss_mb: f64,
}

/// `playpulse bench classify`: one report per model.
pub fn classify(
    path: &std::path::Path,
    params: &crate::ml::classify::ClassifyParams,
) -> anyhow::Result<Vec<ClassifyBenchReport>> {
    let (events, rejected) = read_video_events(path)?;
    let reports = crate::ml::classify::train_and_evaluate(&events, params)?;
    Ok(reports
        .into_iter()
        .map(|(report, _)| ClassifyBenchReport {
            report,
            events: events.len(),
            rejected_lines: rejected,
            peak_rss_mb: peak_rss_mb(),
        })
        .collect())
}

/// One line of `playpulse bench rank`: an engagement model's report and the
/// run it belongs to.
#[derive(Debug, Clone, Serialize)]
pub struct RankBenchLine {
    pub bench: &'static str,
    #[serde(flatten)]
    pub model: crate::ml::rank::RankModelReport,
    #[serde(flatten)]
    pub run: crate::ml::rank::RankRun,
    pub rejected_lines: usize,
    pub seconds: f64,
    pub peak_rss_mb: f64,
}

/// `playpulse bench rank`: one line per engagement model.
pub fn rank(
    path: &std::path::Path,
    params: &crate::ml::rank::RankParams,
) -> anyhow::Result<Vec<RankBenchLine>> {
    let (events, rejected) = read_video_events(path)?;
    let t = std::time::Instant::now();
    let r = crate::ml::rank::evaluate(&events, params)?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(r.models
        .iter()
        .map(|m| RankBenchLine {
            bench: "rank",
            model: m.clone(),
            run: r.run.clone(),
            rejected_lines: rejected,
            seconds,
            peak_rss_mb: peak_rss_mb(),
        })
        .collect())
}
