//! One training run on a snapshot of the store, in three steps the actors run
//! on threads of their own: [`fit_candidate`] (held-out split and ALS fit, the
//! trainer), [`evaluate_candidate`] (held-out ranking metrics, RMSE, popularity
//! baseline, and the champion scored on the same split, the evaluator) and
//! [`serving_bundle`] (what serving needs). [`train`] runs all three.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use super::als::{fit_from, AlsError, AlsModel, CheckedAlsParams, WarmStart};
use super::dataset::{build, Interactions};
use super::family::{Family, Params};
use super::item_model::ItemModel;
use super::live;
use super::metrics::{evaluate, RankingMetrics};
use super::serve::{Bundle, Champion};
use super::sparse::Csr;
use crate::domain::event::{Title, UserProfile, VideoEvent};
use crate::store::{PairAgg, Store, StoreView};
use crate::views::affinity::{blend_scores, Blend, Prefs};

#[derive(Clone)]
pub struct TrainSpec {
    pub als: CheckedAlsParams,
    pub test_fraction: f64,
    pub min_items: usize,
    pub k: usize,
    pub seed: u64,
    /// Start from this champion's factors, running this many iterations
    /// (0, none, or another factor count: a cold start).
    pub warm: Option<std::sync::Arc<super::serve::Champion>>,
    pub warm_iterations: usize,
    /// Search ALS's hyperparameters on a validation share of the training
    /// side for at most this long before the fit (zero: fit `als` as given).
    pub search_budget: std::time::Duration,
    /// The search's budget in fits of `als` as well (0: seconds alone).
    pub search_budget_fits: f64,
    /// The families the search tries; an item × item winner serves (cut
    /// to `item_neighbours` weights an item), ALS is fitted whatever wins.
    pub families: Vec<super::family::Family>,
    pub item_neighbours: usize,
    pub ease_max_items: usize,
}

impl TrainSpec {
    /// The spec `cfg` asks for, with ALS's checked parameters `als` and no
    /// warm start.
    pub fn new(als: CheckedAlsParams, cfg: &super::config::ModelsConfig) -> TrainSpec {
        TrainSpec {
            als,
            test_fraction: cfg.test_fraction,
            min_items: cfg.min_user_items,
            k: cfg.k,
            seed: cfg.seed,
            warm: None,
            warm_iterations: cfg.warm_start_iterations,
            search_budget: std::time::Duration::from_secs_f64(cfg.search_budget_seconds),
            search_budget_fits: cfg.search_budget_fits,
            families: cfg.search_families.clone(),
            item_neighbours: cfg.item_neighbours,
            ease_max_items: cfg.ease_max_items,
        }
    }
}

/// What a training run reads from the store, taken at once on the store's
/// thread (so as of the stored offsets), except the video pairs: those are
/// read from their rows by [`Snapshot::derive_video_pairs`] (one pass over the
/// pairs, not the events), off the store's thread (so ingest goes on
/// meanwhile, and events stored since the snapshot may count too).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Video pairs then music pairs (weighted by action); the video pairs once derived.
    pub pairs: Vec<(String, String, PairAgg)>,
    /// What the video pairs are derived from, until they are.
    view: Option<StoreView>,
    /// Item → genre (videos and catalog tracks).
    pub genres: HashMap<String, String>,
    /// The items of the music pairs (every other item is a video).
    pub music_items: std::collections::HashSet<String>,
    /// Region → (video, events).
    pub regions: HashMap<String, Vec<(String, u64)>>,
    /// The most recent video events, for the classifiers.
    pub events: Vec<VideoEvent>,
    /// Counts recorded with the model version.
    pub data: super::version::SnapshotInfo,
    /// The store's music pairs, weighted into `pairs` by [`Snapshot::derive_video_pairs`].
    music: Vec<(String, String, crate::store::MusicAgg)>,
    music_weights: [f64; 5],
    /// The other members' pairs (a group's trainer), added by [`Snapshot::derive_video_pairs`].
    pub peers: Option<PeerPairs>,
    /// The catalog's user profiles and titles (content affinity).
    pub profiles: HashMap<String, UserProfile>,
    pub titles: HashMap<String, Title>,
}

impl Snapshot {
    /// Reads the video pairs from their rows (one pass over them: call it off
    /// the store's thread) and puts them before the music pairs.
    pub fn derive_video_pairs(&mut self) -> Result<(), super::TrainError> {
        let Some(view) = self.view.take() else {
            return Ok(());
        };
        let t = Instant::now();
        let mut pairs: Vec<(String, String, PairAgg)> = view
            .pair_aggregates()
            .collect::<Result<_, _>>()
            .map_err(|e| super::TrainError::Unreadable(e.to_string()))?;
        let mut music = std::mem::take(&mut self.music);
        if let Some(peers) = self.peers.take() {
            pairs = merge_pairs(pairs, peers.video, PairAgg::merge);
            music = merge_pairs(music, peers.music, crate::store::MusicAgg::merge);
            self.data.covered.extend(peers.covered);
        }
        self.data.video_pairs = pairs.len();
        self.data.video_pairs_s = t.elapsed().as_secs_f64();
        let mut music = super::dataset::music_pairs(music, self.music_weights);
        self.music_items = music.iter().map(|(_, t, _)| t.clone()).collect();
        self.data.music_pairs = music.len();
        pairs.append(&mut music);
        self.pairs = pairs;
        Ok(())
    }

    /// What the evaluator needs to score ALS blended with content affinity
    /// (`None` when the weight is 0 or no user has a profile).
    pub fn blend(&self, weight: f64) -> Option<Blend> {
        (weight > 0.0 && !self.profiles.is_empty()).then(|| Blend {
            weight,
            prefs: self
                .profiles
                .iter()
                .map(|(id, p)| (id.clone(), Prefs::of(p)))
                .collect(),
            titles: self.titles.clone(),
        })
    }
}

/// The pairs of a group's other members, for its trainer: their aggregates
/// (a pair whose events went to several members is in several), and what of
/// each member's batches they cover (member → every batch below it).
#[derive(Debug, Clone, Default)]
pub struct PeerPairs {
    pub video: Vec<(String, String, PairAgg)>,
    pub music: Vec<(String, String, crate::store::MusicAgg)>,
    pub covered: std::collections::BTreeMap<String, u64>,
}

/// `own` with `peers` added: the parts of one pair summed with `merge`.
fn merge_pairs<A: Copy>(
    own: Vec<(String, String, A)>,
    peers: Vec<(String, String, A)>,
    merge: fn(&mut A, &A),
) -> Vec<(String, String, A)> {
    if peers.is_empty() {
        return own;
    }
    let mut at: HashMap<(String, String), A> = HashMap::with_capacity(own.len() + peers.len());
    for (u, i, a) in own.into_iter().chain(peers) {
        match at.entry((u, i)) {
            std::collections::hash_map::Entry::Occupied(mut e) => merge(e.get_mut(), &a),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(a);
            }
        }
    }
    let mut out: Vec<(String, String, A)> = at.into_iter().map(|((u, i), a)| (u, i, a)).collect();
    // In a stable order: the split and the fit see the same pairs in the same order.
    out.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

/// What a training snapshot holds.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotSpec {
    /// Listening weights by action (see `models.event_weights`).
    pub music_weights: [f64; 5],
    /// Most recent video events kept for the classifiers (0: none).
    pub max_events: usize,
    /// Stored events below which training waits.
    pub min_events: u64,
    /// Also the user profiles and titles (only a blend with content affinity reads them).
    pub catalog: bool,
}

/// Takes a snapshot; `Err` says why training waits. `titles`: the stored
/// movies and series (read when `spec.catalog`).
pub fn snapshot(
    s: &Store,
    titles: &crate::views::affinity::CatalogIndex,
    spec: &SnapshotSpec,
) -> Result<Snapshot, super::TrainError> {
    let SnapshotSpec {
        music_weights,
        max_events,
        min_events,
        catalog,
    } = *spec;
    let stored = s.counter("stored").unwrap_or(0);
    if stored < min_events {
        return Err(super::TrainError::Waiting { stored, min_events });
    }
    let music = s.music_aggregates()?;
    let events = s.recent_video_events(max_events)?;
    let mut genres = s.item_genres();
    genres.extend(s.track_genres());
    // As of these offsets: the snapshot is taken between two store writes.
    let data = super::version::SnapshotInfo {
        stored_events: stored,
        music_pairs: music.len(),
        classifier_events: events.len(),
        offsets: s.all_offsets(),
        video_pairs: 0,
        video_pairs_s: 0.0,
        covered: [(s.view().member_id()?, s.next_seq())].into(),
    };
    Ok(Snapshot {
        pairs: Vec::new(),
        view: Some(s.view()),
        music,
        music_weights,
        peers: None,
        genres,
        music_items: Default::default(),
        regions: s.item_regions(),
        events,
        data,
        profiles: if catalog {
            s.user_profiles()?
        } else {
            HashMap::new()
        },
        titles: if catalog {
            titles
                .entries()
                .map(|(id, e)| (id.clone(), e.title.clone()))
                .collect()
        } else {
            HashMap::new()
        },
    })
}

/// A fitted model and the split it was fitted on.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub data: Interactions,
    pub model: AlsModel,
    /// What it was fitted with (the search's choice, when one ran).
    pub params: super::als::AlsParams,
    pub fit_s: f64,
    pub warm_start: Option<super::version::WarmStartInfo>,
    pub search: Option<super::search::SearchReport>,
    /// The item × item family that serves instead of ALS (the search's
    /// winner on the validation share); none: ALS serves.
    pub items: Option<ItemCandidate>,
}

/// An item × item model fitted on the candidate's training side.
#[derive(Debug, Clone)]
pub struct ItemCandidate {
    pub model: ItemModel,
    pub params: Params,
    pub fit_s: f64,
}

impl Candidate {
    /// Every item's score for row `u` of the split as the candidate serves:
    /// the item × item model on the user's training pairs, else ALS.
    pub fn scores_into(&self, u: usize, out: &mut Vec<f32>) {
        match &self.items {
            Some(i) => {
                let (h, w) = self.data.train.row(u);
                i.model.scores_into(h, w, out)
            }
            None => self.model.scores_into(u, out),
        }
    }
}

/// The families' hyperparameters searched on a validation share of `train`
/// (never the test side) within `spec.search_budget`, starting from the
/// serving champion's ALS point and the configured one: ALS's best point, the
/// winner when an item × item family won, and the report.
fn search(
    train: &Csr,
    spec: &TrainSpec,
) -> Result<
    (
        CheckedAlsParams,
        Option<Params>,
        super::search::SearchReport,
    ),
    AlsError,
> {
    let mut s = super::search::SearchSpec::new(
        spec.search_budget,
        spec.als.params().clone(),
        spec.k,
        spec.seed,
    );
    s.families = spec.families.clone();
    s.budget_fits = spec.search_budget_fits;
    s.min_items = spec.min_items;
    s.ease_max_items = spec.ease_max_items;
    // The champion's points (its ALS, and the item × item model it serves
    // with), then the configured ALS (the search tries each once).
    let champion = spec.warm.as_deref();
    s.start = champion
        .and_then(|c| c.recommender.bundle().item_model.as_ref())
        .map(|m| m.params.params())
        .into_iter()
        .chain(
            champion
                .map(|c| c.params.clone())
                .into_iter()
                .chain([spec.als.params().clone()])
                .map(Params::Als),
        )
        .collect();
    let report = super::search::search(train, &s, |_| {});
    let chosen = match report.best_of(Family::Als).map(|t| &t.params) {
        Some(Params::Als(p)) => p.clone().check()?,
        _ => spec.als.clone(),
    };
    let items = report
        .winner()
        .map(|t| t.params.clone())
        .filter(|p| matches!(p.family(), Family::Ease | Family::Knn));
    Ok((chosen, items, report))
}

/// The held-out split, the search (when it has a budget) and the ALS fit on
/// its training side.
pub fn fit_candidate(
    pairs: Vec<(String, String, PairAgg)>,
    spec: &TrainSpec,
) -> Result<Candidate, AlsError> {
    let data = build(pairs, spec.test_fraction, spec.min_items, spec.seed);
    let (als, items, search) = if spec.search_budget.is_zero() || data.train.nnz() == 0 {
        (spec.als.clone(), None, None)
    } else {
        let (als, items, report) = search(&data.train, spec)?;
        (als, items, Some(report))
    };
    // The winner, when an item × item family won, on the whole training side.
    let items = items.and_then(|params| {
        let t = Instant::now();
        match super::family::fit(&params, &data.train) {
            Ok(fitted) => {
                ItemModel::of(&params, &fitted, spec.item_neighbours).map(|model| ItemCandidate {
                    model,
                    params,
                    fit_s: t.elapsed().as_secs_f64(),
                })
            }
            Err(e) => {
                tracing::warn!(
                    "the search's winner {} did not fit on the training side ({e}): ALS serves",
                    params.describe()
                );
                None
            }
        }
    });
    let t = Instant::now();
    let warm = spec.warm.as_deref().filter(|c| {
        spec.warm_iterations > 0 && c.recommender.bundle().model.factors == als.params().factors
    });
    let (model, warm_start) = match warm {
        Some(c) => {
            let r = &c.recommender;
            let w = WarmStart {
                from: &r.bundle().model,
                users: data.users.iter().map(|u| r.user_row(u)).collect(),
                items: data.items.iter().map(|i| r.item_row(i)).collect(),
            };
            let params = super::als::AlsParams {
                iterations: spec.warm_iterations,
                ..als.params().clone()
            }
            .check()?;
            let model = fit_from(&params, &data.train, Some(&w), |_, _| {})?;
            let (users, items) = w.reused();
            let info = super::version::WarmStartInfo {
                from: c.id,
                iterations: spec.warm_iterations,
                users,
                items,
            };
            (model, Some(info))
        }
        None => (fit_from(&als, &data.train, None, |_, _| {})?, None),
    };
    Ok(Candidate {
        data,
        model,
        params: als.params().clone(),
        fit_s: t.elapsed().as_secs_f64(),
        warm_start,
        search,
        items,
    })
}

/// A candidate's quality on its held-out split.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub metrics: RankingMetrics,
    /// Root mean squared error of the predicted preference against the held-out
    /// pairs' implicit feedback (as the notebooks' RegressionEvaluator).
    pub rmse: f64,
    pub baseline: RankingMetrics,
    /// The serving champion scored on the same held-out split (so the two compare).
    pub champion: Option<RankingMetrics>,
    /// The candidate blended with content affinity, on the same split.
    pub blend: Option<BlendEvaluation>,
    pub eval_s: f64,
    pub users: usize,
    pub items: usize,
    pub train_pairs: usize,
    pub test_pairs: usize,
    /// The serving champion as the fold-in keeps it, on the same split: its
    /// item factors, every user folded in from their training pairs.
    pub folded: Option<FoldedEvaluation>,
    /// The ranking stage fitted with the candidate, on the same split.
    pub rerank: Option<super::rerank::RerankOutcome>,
    /// The item × item family that serves (`metrics` are its), with ALS's
    /// figures on the same split; none: ALS serves.
    pub item_family: Option<ItemServing>,
}

/// An item × item family serving in ALS's place: the search's winner on the
/// validation share, fitted on the whole training side.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ItemServing {
    pub params: Params,
    /// Most weights an item keeps as it serves.
    pub neighbours: usize,
    pub fit_s: f64,
    /// ALS (fitted too: the fold-in, warm starts and new items use its
    /// factors) on the same split.
    pub als: RankingMetrics,
}

/// A champion with every user of a split folded in from the split's training
/// pairs (the fold-in's exact solve against its item factors, as the daemon
/// does between retrains), scored on that split's held-out pairs: what the
/// live model serves next to what a full retrain on the same data serves.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct FoldedEvaluation {
    /// The champion whose item factors the users were folded against.
    pub from: u64,
    pub metrics: RankingMetrics,
    /// Users folded in (the others have no pair on its items: popularity).
    pub users: usize,
    /// The split's items the champion does not have (never recommended).
    pub unknown_items: usize,
    pub seconds: f64,
}

/// ALS blended with content affinity, scored on the candidate's split: users
/// with a profile rank by the blend, the others by ALS alone.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct BlendEvaluation {
    pub weight: f64,
    pub metrics: RankingMetrics,
    pub test_users_with_profile: usize,
}

/// Scores the candidate, the popularity baseline, the blend with content
/// affinity (when given) and the champion (when given) on the candidate's
/// held-out split.
///
/// With `genres` (item → genre), every list's intra-list genre diversity too.
pub fn evaluate_candidate(
    c: &Candidate,
    champion: Option<&Bundle>,
    k: usize,
    blend: Option<&Blend>,
    genres: &HashMap<String, String>,
) -> Evaluation {
    let d = &c.data;
    let t = Instant::now();
    let genres = super::metrics::genre_ids(&d.items, genres);
    let genres = genres.as_deref();
    let evaluate =
        |train: &Csr, test: &Csr, k: usize, f: &(dyn Fn(usize, &mut Vec<f32>) + Sync)| {
            super::metrics::evaluate_with_genres(train, test, k, genres, f)
        };
    let metrics = evaluate(&d.train, &d.test, k, &|u, s| c.scores_into(u, s));
    let item_family = c.items.as_ref().map(|i| ItemServing {
        params: i.params.clone(),
        neighbours: i.model.neighbours(),
        fit_s: i.fit_s,
        als: evaluate(&d.train, &d.test, k, &|u, s| c.model.scores_into(u, s)),
    });
    let blend = blend.map(|b| {
        let with_profile = (0..d.test.rows)
            .filter(|&u| !d.test.row(u).0.is_empty() && b.prefs.contains_key(&d.users[u]))
            .count();
        let metrics = evaluate(&d.train, &d.test, k, &|u, s| {
            c.scores_into(u, s);
            if let Some(p) = b.prefs.get(&d.users[u]) {
                blend_scores(s, &d.items, p, b.weight, |i| b.titles.get(i));
            }
        });
        BlendEvaluation {
            weight: b.weight,
            metrics,
            test_users_with_profile: with_profile,
        }
    });
    let (mut se, mut n) = (0.0f64, 0usize);
    for u in 0..d.test.rows {
        let (items, weights) = d.test.row(u);
        for (&i, &w) in items.iter().zip(weights) {
            se += (f64::from(c.model.score(u, i as usize)) - f64::from(w)).powi(2);
            n += 1;
        }
    }
    let rmse = (se / n.max(1) as f64).sqrt();
    let pop_scores: Vec<f32> = popularity(&d.train).iter().map(|&p| p as f32).collect();
    let baseline = evaluate(&d.train, &d.test, k, &|_, s| {
        s.clear();
        s.extend_from_slice(&pop_scores);
    });
    let champion = champion.map(|b| score_champion(d, b, k, genres));
    Evaluation {
        metrics,
        rmse,
        baseline,
        champion,
        blend,
        eval_s: t.elapsed().as_secs_f64(),
        users: d.users.len(),
        items: d.items.len(),
        train_pairs: d.train.nnz(),
        test_pairs: d.test.nnz(),
        folded: None,
        rerank: None,
        item_family,
    }
}

/// The champion folded in on the candidate's split ([`FoldedEvaluation`]).
pub fn evaluate_folded(c: &Candidate, champion: &Champion, k: usize) -> FoldedEvaluation {
    let t = Instant::now();
    let d = &c.data;
    let r = &champion.recommender;
    let item_map: Vec<Option<usize>> = d
        .items
        .iter()
        .map(|i| r.item_row(i).map(|j| j as usize))
        .collect();
    let users: Vec<(String, Vec<(u32, f32)>)> = (0..d.train.rows)
        .map(|u| {
            let (cols, w) = d.train.row(u);
            let rows = live::sorted_rows(
                cols.iter()
                    .zip(w)
                    .filter_map(|(&j, &w)| Some((item_map[j as usize]? as u32, w))),
            );
            (d.users[u].clone(), rows)
        })
        .collect();
    let b = r.bundle();
    // An item × item champion ranks from the users' pairs themselves: no
    // factors to solve (the fold-in leaves out users without a pair on its
    // items; so does the count).
    let (folded, users_folded) = if b.item_model.is_some() {
        let n = users.iter().filter(|(_, rows)| !rows.is_empty()).count();
        (HashMap::new(), n)
    } else {
        let solver = live::ChampionSolver::new(champion);
        let folded: HashMap<String, Vec<f32>> = live::fold_rows(champion, &solver, users)
            .into_iter()
            .map(|(u, f, _)| (u, f.factors))
            .collect();
        let n = folded.len();
        (folded, n)
    };
    let metrics = evaluate(&d.train, &d.test, k, |u, s| {
        let x = folded.get(&d.users[u]).map(Vec::as_slice);
        champion_scores(s, &item_map, b, x, d.train.row(u));
    });
    FoldedEvaluation {
        from: champion.id,
        metrics,
        users: users_folded,
        unknown_items: item_map.iter().filter(|j| j.is_none()).count(),
        seconds: t.elapsed().as_secs_f64(),
    }
}

/// Distinct training users per item.
fn popularity(train: &Csr) -> Vec<u32> {
    let mut p = vec![0u32; train.cols];
    for &i in &train.indices {
        p[i as usize] += 1;
    }
    p
}

/// The champion on `d`'s held-out split: this split's ids mapped onto the
/// champion's; items it never saw cannot be recommended, users it never saw get
/// its cold start (popularity).
fn score_champion(
    d: &Interactions,
    c: &Bundle,
    k: usize,
    genres: Option<&super::metrics::Genres>,
) -> RankingMetrics {
    fn index(names: &[String]) -> HashMap<&str, usize> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect()
    }
    let (cu, ci) = (index(&c.users), index(&c.items));
    let item_map: Vec<Option<usize>> = d
        .items
        .iter()
        .map(|i| ci.get(i.as_str()).copied())
        .collect();
    super::metrics::evaluate_with_genres(&d.train, &d.test, k, genres, |u, s| {
        let x = cu.get(d.users[u].as_str()).map(|&cu| c.model.user(cu));
        champion_scores(s, &item_map, c, x, d.train.row(u));
    })
}

/// Scores of this split's items (`item_map`: their rows in the champion `c`)
/// for a user: an item × item champion scores from their training pairs
/// (`history`, columns of the split) on its items, an ALS champion from
/// their factors `x`; with neither, the champion's cold start (popularity).
/// Items the champion does not have are never recommended.
fn champion_scores(
    s: &mut Vec<f32>,
    item_map: &[Option<usize>],
    c: &Bundle,
    x: Option<&[f32]>,
    history: (&[u32], &[f32]),
) {
    s.clear();
    if let Some(m) = &c.item_model {
        let (rows, weights): (Vec<u32>, Vec<f32>) = history
            .0
            .iter()
            .zip(history.1)
            .filter_map(|(&j, &w)| Some((item_map[j as usize]? as u32, w)))
            .unzip();
        if !rows.is_empty() {
            let mut all = Vec::new();
            m.scores_into(&rows, &weights, &mut all);
            s.extend(
                item_map
                    .iter()
                    .map(|j| j.map_or(f32::NEG_INFINITY, |j| all[j])),
            );
            return;
        }
    } else if let Some(x) = x {
        s.extend(item_map.iter().map(|j| match j {
            Some(j) => c.model.item(*j).iter().zip(x).map(|(a, b)| a * b).sum(),
            None => f32::NEG_INFINITY,
        }));
        return;
    }
    s.extend(
        item_map
            .iter()
            .map(|j| j.map_or(f32::NEG_INFINITY, |j| c.popularity[j] as f32)),
    );
}

/// What serving needs: factors, ids, every pair seen (train and held out, so
/// serving never recommends them), genres, and popularity overall and by region.
pub fn serving_bundle(
    c: Candidate,
    genres: &HashMap<String, String>,
    regions: &HashMap<String, Vec<(String, u64)>>,
    music_items: &std::collections::HashSet<String>,
) -> Bundle {
    let d = c.data;
    // With their implicit-feedback weights (an item × item champion scores
    // from them).
    let mut seen = Vec::with_capacity(d.train.nnz() + d.test.nnz() + d.unscored.nnz());
    for m in [&d.train, &d.test, &d.unscored] {
        for u in 0..m.rows {
            let (items, weights) = m.row(u);
            seen.extend(items.iter().zip(weights).map(|(&i, &w)| (u as u32, i, w)));
        }
    }
    let seen = Csr::from_triplets(d.users.len(), d.items.len(), &seen);
    let item_genre = d
        .items
        .iter()
        .map(|i| genres.get(i).cloned().unwrap_or_default())
        .collect();
    let region_popularity = regions
        .iter()
        .map(|(region, videos)| {
            let mut v: Vec<(u32, u32)> = videos
                .iter()
                .filter_map(|(video, n)| {
                    let &i = d.item_index.get(video)?;
                    Some((i, u32::try_from(*n).unwrap_or(u32::MAX)))
                })
                .collect();
            v.sort_unstable();
            (region.clone(), v)
        })
        .collect();
    let item_domain = d
        .items
        .iter()
        .map(|i| {
            if music_items.contains(i) {
                crate::domain::event::Domain::Music
            } else {
                crate::domain::event::Domain::Video
            }
        })
        .collect();
    Bundle {
        item_domain,
        popularity: popularity(&d.train),
        model: c.model,
        users: d.users,
        items: d.items,
        seen,
        item_genre,
        region_popularity,
        rerank: None,
        item_model: c.items.map(|i| i.model),
    }
}

/// The champion and the popularity baseline scored on a fresh held-out split of
/// `pairs` (the same draw as training uses, so the champion never trained on it).
pub fn evaluate_champion(
    pairs: Vec<(String, String, PairAgg)>,
    champion: &Bundle,
    spec: &TrainSpec,
) -> (RankingMetrics, RankingMetrics, usize) {
    let d = build(pairs, spec.test_fraction, spec.min_items, spec.seed);
    let pop: Vec<f32> = popularity(&d.train).iter().map(|&p| p as f32).collect();
    let baseline = evaluate(&d.train, &d.test, spec.k, |_, s| {
        s.clear();
        s.extend_from_slice(&pop);
    });
    (
        score_champion(&d, champion, spec.k, None),
        baseline,
        d.test.nnz(),
    )
}

/// A whole run: fit, evaluate, bundle.
pub fn train(
    snapshot: Snapshot,
    spec: &TrainSpec,
    champion: Option<&Bundle>,
) -> Result<(Evaluation, f64, Bundle), AlsError> {
    let c = fit_candidate(snapshot.pairs, spec)?;
    let e = evaluate_candidate(&c, champion, spec.k, None, &snapshot.genres);
    let fit_s = c.fit_s;
    Ok((
        e,
        fit_s,
        serving_bundle(
            c,
            &snapshot.genres,
            &snapshot.regions,
            &snapshot.music_items,
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::als::AlsParams;
    use crate::synth::generate::{VideoGen, World};

    fn pairs() -> Snapshot {
        pairs_of(20_000)
    }

    /// The pairs of the first `events` generated events.
    fn pairs_of(events: usize) -> Snapshot {
        let mut g = VideoGen::new(World::new(300, 80, 5), 5, 1_735_689_600_000, 50);
        let events: Vec<VideoEvent> = (0..events).map(|_| g.next_event()).collect();
        let v = crate::ml::dataset::pairs_of_events(events.iter());
        Snapshot {
            pairs: v,
            view: None,
            music: Vec::new(),
            music_weights: [0.0; 5],
            peers: None,
            genres: HashMap::new(),
            music_items: Default::default(),
            regions: HashMap::new(),
            events: Vec::new(),
            data: Default::default(),
            profiles: HashMap::new(),
            titles: HashMap::new(),
        }
    }

    fn spec(iterations: usize) -> TrainSpec {
        let als = AlsParams {
            factors: 8,
            iterations,
            ..AlsParams::default()
        };
        TrainSpec {
            seed: 1,
            warm_iterations: 0,
            search_budget: std::time::Duration::ZERO,
            // ALS alone unless a test says otherwise.
            families: vec![crate::ml::family::Family::Als],
            ..TrainSpec::new(als.check().unwrap(), &Default::default())
        }
    }

    #[test]
    fn beats_popularity_and_scores_the_champion_on_the_same_split() {
        let spec = spec(10);
        let (first, _, bundle) = train(pairs(), &spec, None).unwrap();
        assert!(first.champion.is_none());
        assert!(
            first.metrics.ndcg > first.baseline.ndcg * 1.2,
            "{:?} vs {:?}",
            first.metrics,
            first.baseline
        );
        assert!(first.test_pairs > 0 && first.train_pairs > first.test_pairs);
        // Same data, same seed: the challenger is the champion, and scores the same.
        let (second, _, _) = train(pairs(), &spec, Some(&bundle)).unwrap();
        let champ = second.champion.unwrap();
        assert!(
            (champ.ndcg - second.metrics.ndcg).abs() < 1e-9,
            "{champ:?} vs {:?}",
            second.metrics
        );
        assert!((champ.ndcg - first.metrics.ndcg).abs() < 1e-9);
    }

    #[test]
    fn the_search_starts_from_the_champion_and_fits_its_best_point() {
        use crate::ml::family::{Family, Params};
        let (_, _, bundle) = train(pairs_of(8_000), &spec(5), None).unwrap();
        let theirs = AlsParams {
            factors: 8,
            iterations: 5,
            regularization: 0.3,
            alpha: 2.0,
            ..AlsParams::default()
        };
        let champion = std::sync::Arc::new(
            crate::ml::serve::ServingModel {
                id: 7,
                bundle,
                affinity_weight: 0.0,
                params: theirs.clone(),
            }
            .into_champion(),
        );
        let s = TrainSpec {
            warm: Some(champion),
            warm_iterations: 0,
            search_budget: std::time::Duration::from_secs(3),
            search_budget_fits: 0.0,
            ..spec(5)
        };
        let c = fit_candidate(pairs().pairs, &s).unwrap();
        let r = c.search.as_ref().expect("a search");
        assert!(r.validation_users > 0 && r.trials.len() >= 3, "{r:?}");
        // The champion's point first, then the configured one; ALS only.
        assert_eq!(r.trials[0].params, Params::Als(theirs));
        assert_eq!(r.trials[1].params, Params::Als(s.als.params().clone()));
        assert!(r.trials.iter().all(|t| t.params.family() == Family::Als));
        // The candidate is the best trial's point, fitted on the whole training side.
        let best = r.best_of(Family::Als).unwrap();
        assert_eq!(best.params, Params::Als(c.params.clone()));
        assert_eq!(c.model.factors, c.params.factors);
        assert_eq!(c.model.users, c.data.train.rows);
        // Without a budget: no search, the configured point.
        let plain = fit_candidate(pairs().pairs, &spec(5)).unwrap();
        assert!(plain.search.is_none());
        assert_eq!(&plain.params, spec(5).als.params());
    }

    #[test]
    fn an_item_by_item_winner_serves_and_scores_as_champion_what_it_scored_as_candidate() {
        use crate::ml::family::{Family, Params};
        for family in [Family::Ease, Family::Knn] {
            let s = TrainSpec {
                search_budget: std::time::Duration::from_secs(30),
                search_budget_fits: 0.0,
                families: vec![family],
                item_neighbours: 50,
                ..spec(5)
            };
            let (e, _, bundle) = train(pairs(), &s, None).unwrap();
            let served = e.item_family.clone().expect("the winner serves");
            assert_eq!(served.params.family(), family);
            assert!(
                served.neighbours > 0 && served.neighbours <= 50,
                "{served:?}"
            );
            // Ranked by it, not by ALS (fitted too, and scored on the same split).
            assert_ne!(e.metrics.ndcg, served.als.ndcg);
            assert!(
                e.metrics.ndcg > e.baseline.ndcg,
                "{family}: {:?} vs popularity {:?}",
                e.metrics,
                e.baseline
            );
            let m = bundle.item_model.as_ref().expect("an item model");
            assert_eq!(m.family(), family);
            assert!(m.fits(bundle.items.len()));
            // As the champion of a run on the same data and seed, on the same
            // split: the same figure (scored from the users' histories).
            let (again, _, _) = train(pairs(), &s, Some(&bundle)).unwrap();
            let champ = again.champion.unwrap();
            assert!(
                (champ.ndcg - e.metrics.ndcg).abs() < 1e-9,
                "{family}: champion {} vs candidate {}",
                champ.ndcg,
                e.metrics.ndcg
            );
            // The next search starts from the point the champion serves with.
            let served_params = m.params.params();
            let champion = std::sync::Arc::new(
                crate::ml::serve::ServingModel {
                    id: 3,
                    bundle: bundle.clone(),
                    affinity_weight: 0.0,
                    params: s.als.params().clone(),
                }
                .into_champion(),
            );
            let warm = TrainSpec {
                warm: Some(champion.clone()),
                ..s.clone()
            };
            let c = fit_candidate(pairs().pairs, &warm).unwrap();
            assert_eq!(c.search.as_ref().unwrap().trials[0].params, served_params);
            // Live, it ranks from each user's pairs: on the same split, what
            // it scored as the champion, with no factors solved.
            let live = evaluate_folded(&c, &champion, 10);
            assert!(
                (live.metrics.ndcg - champ.ndcg).abs() < 1e-9,
                "{live:?} vs {champ:?}"
            );
            assert!(
                live.users > 0 && live.users <= c.data.users.len(),
                "{live:?}"
            );
            // The search recorded what it tried, and the version what serves.
            let c = fit_candidate(pairs().pairs, &s).unwrap();
            let r = c.search.as_ref().unwrap();
            assert!(r.trials.iter().all(|t| t.params.family() == family));
            assert!(matches!(
                (&c.items.as_ref().unwrap().params, family),
                (Params::Ease(_), Family::Ease) | (Params::Knn(_), Family::Knn)
            ));
        }
    }

    #[test]
    fn a_warm_started_retrain_matches_a_cold_one_in_a_third_of_the_iterations() {
        // The champion: trained cold on the first 8k events' pairs.
        let (_, _, bundle) = train(pairs_of(8_000), &spec(15), None).unwrap();
        let champion = std::sync::Arc::new(
            crate::ml::serve::ServingModel {
                id: 7,
                bundle,
                affinity_weight: 0.0,
                params: spec(15).als.params().clone(),
            }
            .into_champion(),
        );
        // A retrain on the first 20k events' pairs: cold with 15 iterations,
        // cold with 5, warm with 5 from the champion; scored on the same split.
        let cold = fit_candidate(pairs().pairs, &spec(15)).unwrap();
        let cold5 = fit_candidate(pairs().pairs, &spec(5)).unwrap();
        let warm_spec = TrainSpec {
            warm: Some(champion.clone()),
            warm_iterations: 5,
            ..spec(15)
        };
        let warm = fit_candidate(pairs().pairs, &warm_spec).unwrap();
        let info = warm.warm_start.clone().unwrap();
        assert_eq!((info.from, info.iterations), (7, 5));
        assert!(info.users > 0 && info.users <= warm.data.users.len());
        assert!(info.items > 0 && info.items <= warm.data.items.len());
        assert!(cold.warm_start.is_none());
        let ndcg = |c: &Candidate| {
            evaluate_candidate(c, None, 10, None, &HashMap::new())
                .metrics
                .ndcg
        };
        let (c15, c5, w5) = (ndcg(&cold), ndcg(&cold5), ndcg(&warm));
        assert!(
            w5 >= c15 * 0.99,
            "warm 5 {w5} vs cold 15 {c15} (cold 5 {c5})"
        );
        // Another factor count than the champion's: a cold start.
        let other = TrainSpec {
            als: AlsParams {
                factors: 4,
                ..spec(3).als.params().clone()
            }
            .check()
            .unwrap(),
            ..warm_spec
        };
        assert!(fit_candidate(pairs().pairs, &other)
            .unwrap()
            .warm_start
            .is_none());
    }

    #[test]
    fn a_champion_folded_in_on_grown_data_scores_near_a_full_retrain() {
        // The champion: trained on the first 12k events' pairs. The data then
        // grows to 20k events; the fold-in keeps the champion's item factors
        // and re-solves every user from their pairs, a retrain fits it all.
        let (_, _, bundle) = train(pairs_of(12_000), &spec(15), None).unwrap();
        let champion = crate::ml::serve::ServingModel {
            id: 4,
            bundle,
            affinity_weight: 0.0,
            params: spec(15).als.params().clone(),
        }
        .into_champion();
        let retrain = fit_candidate(pairs().pairs, &spec(15)).unwrap();
        let mut e = evaluate_candidate(&retrain, None, 10, None, &HashMap::new());
        assert!(e.folded.is_none());
        let folded = evaluate_folded(&retrain, &champion, 10);
        assert_eq!(folded.from, 4);
        assert!(folded.users > retrain.data.users.len() / 2, "{folded:?}");
        assert_eq!(folded.metrics.k, 10);
        let (f, r) = (folded.metrics.ndcg, e.metrics.ndcg);
        assert!(
            f >= r * 0.97 && f > e.baseline.ndcg,
            "folded-in {f} vs retrain {r} (popularity {})",
            e.baseline.ndcg
        );
        // Recorded with the version: it reads back as it was written.
        e.folded = Some(folded.clone());
        let json = serde_json::to_string(&e.folded).unwrap();
        let back: Option<FoldedEvaluation> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Some(folded));
    }

    #[test]
    fn scores_the_blend_with_content_affinity_on_the_same_split() {
        let spec = spec(5);
        let mut snap = pairs();
        assert!(snap.blend(0.3).is_none(), "no profiles: no blend");
        let users: std::collections::BTreeSet<String> =
            snap.pairs.iter().map(|p| p.0.clone()).collect();
        let items: std::collections::BTreeSet<String> =
            snap.pairs.iter().map(|p| p.1.clone()).collect();
        for (n, u) in users.iter().enumerate() {
            let genre = if n % 2 == 0 { "Drama" } else { "Comedy" };
            snap.profiles.insert(
                u.clone(),
                UserProfile {
                    id: u.clone(),
                    timestamp_ms: 0,
                    name: u.clone(),
                    subscription_date: String::new(),
                    genres: vec![genre.into()],
                    directors: vec![],
                    actors: vec![],
                    classification: String::new(),
                    favorite_decades: vec![],
                },
            );
        }
        for (n, i) in items.iter().enumerate() {
            let genre = if n % 2 == 0 { "Drama" } else { "Comedy" };
            snap.titles.insert(
                i.clone(),
                Title {
                    id: i.clone(),
                    timestamp_ms: 0,
                    title: i.clone(),
                    genres: vec![genre.into()],
                    directors: vec![],
                    actors: vec![],
                    classification: String::new(),
                    release_decade: String::new(),
                    seasons: None,
                    episodes: None,
                },
            );
        }
        assert!(snap.blend(0.0).is_none(), "weight 0: no blend");
        let blend = snap.blend(1.0).unwrap();
        let c = fit_candidate(snap.pairs.clone(), &spec).unwrap();
        let e = evaluate_candidate(&c, None, spec.k, Some(&blend), &HashMap::new());
        let b = e.blend.unwrap();
        assert_eq!(b.weight, 1.0);
        assert_eq!(b.test_users_with_profile, e.metrics.users);
        // Weight 1 ranks by the profile alone: a different ranking from ALS,
        // scored on the same users.
        assert_eq!(b.metrics.users, e.metrics.users);
        assert!((b.metrics.ndcg - e.metrics.ndcg).abs() > 1e-6, "{b:?}");
        // A small weight keeps ALS's order where affinity ties (all items of the
        // user's genre score alike).
        let small = snap.blend(1e-6).unwrap();
        let e2 = evaluate_candidate(&c, None, spec.k, Some(&small), &HashMap::new());
        assert!(e2.blend.unwrap().metrics.ndcg > 0.0);
    }
}
