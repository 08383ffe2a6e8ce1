//! The ranking stage: an engagement model trained on what is known *before* a
//! view, and the re-ranking of a recommender's top candidates by it.
//!
//! Every video event becomes a row of features computed from the events
//! before it alone (time order): the user's history (views, the share of them
//! in the item's genre, their skip rate), the item's (views, skip rate), the
//! region's mean buffering (its network), the resolution, the hour, the
//! `recommended` flag and the recommender's score for the pair. The label is
//! engagement: the view played and was not skipped. The notebooks' label is
//! computed from the event's own watch time, buffering and skip, which no
//! model can know before the view; this one is.
//!
//! Time-ordered periods of the events: the first half trains the recommender
//! (ALS) and starts the histories; the next 20 % trains the engagement
//! models; the next 10 % (validation) chooses how much the engagement score
//! weighs against the recommender's when re-ranking; the last 20 % (test) is
//! where both are judged. Re-ranking takes each user's top `candidates`
//! unseen items by the recommender and orders them by the recommender's score
//! plus `weight` × the engagement score (each standardized over the user's
//! candidates); NDCG@k is measured against the items the user then viewed and
//! against the views that engaged. A weight of 0 is the recommender alone: the
//! re-ranking is used only when validation chooses a weight above 0 and the
//! test period confirms it ranks engaged views better.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use linfa_svm::Svm;
use ndarray::{Array1, Array2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::als::{self, AlsError, AlsModel, AlsParams};
use super::classify::{class_metrics, stratified, ClassMetrics, ClassifyError, GrowRule, TreeNode};
use super::metrics::{top_k, user_metrics};
use super::sparse::Csr;
use super::ModelKind;
use crate::domain::event::VideoEvent;
use crate::domain::vocab::{GENRES, RESOLUTIONS};

pub const FEATURES: [&str; 10] = [
    "user_views",
    "user_genre_share",
    "user_skip_rate",
    "item_views",
    "item_skip_rate",
    "region_buffering",
    "resolution",
    "hour",
    "recommended",
    "recommender_score",
];
pub(super) const NF: usize = FEATURES.len();
/// Pseudo-views of the overall rate that every rate starts from.
const PRIOR_VIEWS: f64 = 5.0;
pub(super) const GENRE_SLOTS: usize = GENRES.len() + 1;
/// Re-ranking weights validation chooses from (0: the recommender alone).
pub const WEIGHTS: [f64; 8] = [0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5];

#[derive(Debug, Error)]
pub enum RankError {
    #[error("ranking parameter `{name}` = {value}: {rule}")]
    Param {
        name: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("not enough data: {0}")]
    Data(String),
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error("recommender: {0}")]
    Als(#[from] AlsError),
}

/// An error unless `y` holds engaged and disengaged views both (`what`:
/// which views, for the message).
pub(super) fn both_classes(y: &[bool], what: &str) -> Result<(), RankError> {
    let engaged = y.iter().filter(|&&b| b).count();
    if engaged > 0 && engaged < y.len() {
        return Ok(());
    }
    Err(RankError::Data(format!(
        "every one of the {} {what} is {}: a model needs both engaged and disengaged views",
        y.len(),
        if engaged > 0 { "engaged" } else { "disengaged" }
    )))
}

/// The engagement label: the view played and was not skipped.
pub fn engaged(e: &VideoEvent) -> bool {
    !e.skipped && e.error.is_none() && e.watch_time_seconds > 0.0
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankParams {
    pub seed: u64,
    pub tree_max_depth: usize,
    /// Fewest training rows a tree leaf holds (its engaged share is the score).
    pub tree_min_leaf: usize,
    pub tree_max_rows: usize,
    pub svm_max_rows: usize,
    pub svm_c: f64,
    /// Candidates per user the re-ranking orders (the recommender's top).
    pub candidates: usize,
    /// Users (at most) whose lists are re-ranked in each of validation and test.
    pub eval_users: usize,
    /// Test rows (at most, a seeded sample) the classification metrics read.
    pub max_test_rows: usize,
    pub k: usize,
    pub als: AlsParams,
}

impl Default for RankParams {
    fn default() -> Self {
        RankParams {
            seed: 57,
            tree_max_depth: 8,
            tree_min_leaf: 100,
            tree_max_rows: 200_000,
            svm_max_rows: 3_000,
            svm_c: 1.0,
            candidates: 50,
            eval_users: 2_000,
            max_test_rows: 50_000,
            k: 10,
            als: AlsParams::default(),
        }
    }
}

impl RankParams {
    pub fn check(&self) -> Result<(), RankError> {
        let bad = |name, value: String, rule| Err(RankError::Param { name, value, rule });
        let n = |v: usize| v.to_string();
        if !(1..=32).contains(&self.tree_max_depth) {
            return bad("tree_max_depth", n(self.tree_max_depth), "must be 1..=32");
        }
        if !(1..=1_000_000).contains(&self.tree_min_leaf) {
            return bad(
                "tree_min_leaf",
                n(self.tree_min_leaf),
                "must be 1..=1000000",
            );
        }
        if !(10..=2_000_000).contains(&self.tree_max_rows) {
            return bad(
                "tree_max_rows",
                n(self.tree_max_rows),
                "must be 10..=2000000",
            );
        }
        if !(10..=200_000).contains(&self.svm_max_rows) {
            return bad(
                "svm_max_rows",
                n(self.svm_max_rows),
                "must be 10..=200000 (the SVM is a cascade of fits of 2,000 rows)",
            );
        }
        if !(self.svm_c.is_finite() && self.svm_c > 0.0) {
            return bad("svm_c", self.svm_c.to_string(), "must be > 0");
        }
        if !(1..=1000).contains(&self.k) {
            return bad("k", n(self.k), "must be 1..=1000");
        }
        if !(self.k..=1000).contains(&self.candidates) {
            return bad("candidates", n(self.candidates), "must be k..=1000");
        }
        if !(1..=100_000).contains(&self.eval_users) {
            return bad("eval_users", n(self.eval_users), "must be 1..=100000");
        }
        if !(100..=10_000_000).contains(&self.max_test_rows) {
            return bad(
                "max_test_rows",
                n(self.max_test_rows),
                "must be 100..=10000000",
            );
        }
        self.als.clone().check()?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Counts {
    views: u32,
    disengaged: u32,
}

impl Counts {
    fn add(&mut self, engaged: bool) {
        self.views += 1;
        self.disengaged += u32::from(!engaged);
    }

    /// The disengaged share, starting from `prior` with PRIOR_VIEWS weight.
    fn rate(&self, prior: f64) -> f64 {
        (f64::from(self.disengaged) + prior * PRIOR_VIEWS) / (f64::from(self.views) + PRIOR_VIEWS)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UserHistory {
    counts: Counts,
    genres: [u32; GENRE_SLOTS],
    region: u32,
    resolution: f64,
    hour: f64,
}

/// What is known before each event: running counts over the events so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct History {
    users: Vec<UserHistory>,
    items: Vec<Counts>,
    regions: Vec<(f64, u32)>,
    /// The (user, item) pairs added (not kept with a stored ranking stage).
    #[serde(skip)]
    seen: HashSet<u64>,
    total: Counts,
    buffering: (f64, u32),
}

pub(super) fn genre_slot(g: &str) -> usize {
    GENRES.iter().position(|x| *x == g).unwrap_or(GENRES.len())
}

pub(super) fn resolution_rank(r: &str) -> f64 {
    RESOLUTIONS
        .iter()
        .position(|x| *x == r)
        .map_or(-1.0, |p| p as f64)
}

pub(super) fn hour_of(ts_ms: i64) -> f64 {
    ts_ms.div_euclid(3_600_000).rem_euclid(24) as f64
}

/// Where a candidate would be shown: the user's last known context.
#[derive(Debug, Clone, Copy)]
pub(super) struct Context {
    pub(super) region: u32,
    pub(super) resolution: f64,
    pub(super) hour: f64,
    pub(super) recommended: bool,
}

impl History {
    pub(super) fn row(
        &self,
        user: usize,
        item: usize,
        genre: usize,
        ctx: Context,
        score: f64,
    ) -> [f64; NF] {
        let empty_user = UserHistory::default();
        let u = self.users.get(user).unwrap_or(&empty_user);
        let i = self.items.get(item).copied().unwrap_or_default();
        let prior = self.total.rate(0.5);
        let mean_buffering = if self.buffering.1 > 0 {
            self.buffering.0 / f64::from(self.buffering.1)
        } else {
            0.0
        };
        let (bsum, bn) = self
            .regions
            .get(ctx.region as usize)
            .copied()
            .unwrap_or((0.0, 0));
        [
            f64::from(u.counts.views).ln_1p(),
            (f64::from(u.genres[genre]) + 1.0 / GENRE_SLOTS as f64)
                / (f64::from(u.counts.views) + 1.0),
            u.counts.rate(prior),
            f64::from(i.views).ln_1p(),
            i.rate(prior),
            (bsum + mean_buffering * PRIOR_VIEWS) / (f64::from(bn) + PRIOR_VIEWS),
            ctx.resolution,
            ctx.hour,
            f64::from(u8::from(ctx.recommended)),
            score,
        ]
    }

    pub(super) fn add(&mut self, user: usize, item: usize, region: u32, e: &VideoEvent) {
        let eng = engaged(e);
        if self.users.len() <= user {
            self.users.resize(user + 1, UserHistory::default());
        }
        if self.items.len() <= item {
            self.items.resize(item + 1, Counts::default());
        }
        if self.regions.len() <= region as usize {
            self.regions.resize(region as usize + 1, (0.0, 0));
        }
        let u = &mut self.users[user];
        u.counts.add(eng);
        u.genres[genre_slot(&e.genre)] += 1;
        u.region = region;
        u.resolution = resolution_rank(&e.resolution);
        u.hour = hour_of(e.timestamp_ms);
        self.items[item].add(eng);
        let r = &mut self.regions[region as usize];
        r.0 += e.buffering_events as f64;
        r.1 += 1;
        self.buffering.0 += e.buffering_events as f64;
        self.buffering.1 += 1;
        self.total.add(eng);
        self.seen.insert(pair_key(user, item));
    }

    /// The history without its (user, item) pairs: what serving reads.
    pub(super) fn without_pairs(mut self) -> History {
        self.seen = HashSet::new();
        self
    }

    pub(super) fn context(&self, user: usize) -> Context {
        let u = self.users.get(user).cloned().unwrap_or_default();
        Context {
            // A user with no history has no region: the overall buffering.
            region: if u.counts.views == 0 {
                u32::MAX
            } else {
                u.region
            },
            resolution: u.resolution,
            hour: u.hour,
            recommended: true,
        }
    }
}

pub(super) fn pair_key(user: usize, item: usize) -> u64 {
    ((user as u64) << 32) | item as u64
}

/// Dense numbers for ids, in order of first appearance.
#[derive(Debug, Default)]
pub(super) struct Interner(HashMap<String, usize>);

impl Interner {
    pub(super) fn id(&mut self, s: &str) -> usize {
        let next = self.0.len();
        *self.0.entry(s.to_string()).or_insert(next)
    }
}

/// A period's sampled users and what each viewed in it (item, engaged).
type PeriodViews = (Vec<usize>, HashMap<usize, Vec<(u32, bool)>>);

/// One user's re-ranking problem: candidates with their recommender scores
/// and feature rows, and what the user then viewed (and engaged with).
#[derive(Debug, Default)]
pub(super) struct UserLists {
    pub(super) candidates: Vec<Vec<u32>>,
    pub(super) scores: Vec<Vec<f64>>,
    pub(super) rows: Vec<[f64; NF]>,
    pub(super) viewed: Vec<Vec<u32>>,
    pub(super) engaged: Vec<Vec<u32>>,
}

/// The quality of a list ordering: NDCG@k against the viewed items and against
/// the engaged ones (users with none of the latter not counted there).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ListQuality {
    pub ndcg_views: f64,
    pub ndcg_engaged: f64,
}

/// Re-ranking by one engagement model: the chosen weight and both orderings'
/// quality on validation and test.
#[derive(Debug, Clone, Serialize)]
pub struct Rerank {
    pub weight: f64,
    pub validation_plain: ListQuality,
    pub validation_reranked: ListQuality,
    pub test_plain: ListQuality,
    pub test_reranked: ListQuality,
    /// Validation chose a weight above 0 and the test period confirms that
    /// engaged views rank higher: the recommender would re-rank.
    pub used: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RankModelReport {
    pub model: ModelKind,
    pub fit_s: f64,
    pub train_rows: usize,
    pub train_rows_available: usize,
    pub test_rows: usize,
    #[serde(flatten)]
    pub metrics: ClassMetrics,
    pub auc: f64,
    pub params: String,
    pub rerank: Rerank,
}

/// What a run of the ranking stage read and how it split it: the part of
/// the report every model shares.
#[derive(Debug, Clone, Serialize)]
pub struct RankRun {
    pub events: usize,
    /// Events in each period: recommender, engagement training, validation, test.
    pub periods: [usize; 4],
    pub engaged_share_train: f64,
    pub engaged_share_test: f64,
    /// AUC of the recommender's score alone on the test rows (what the
    /// engagement models add to it).
    pub recommender_score_auc: f64,
    pub als_fit_s: f64,
    /// Users whose lists were re-ranked in validation and test.
    pub users: [usize; 2],
    pub candidates: usize,
    pub k: usize,
    pub features: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RankReport {
    #[serde(flatten)]
    pub run: RankRun,
    pub models: Vec<RankModelReport>,
}

/// Area under the ROC curve (ties count half).
pub fn auc(truth: &[bool], score: &[f64]) -> f64 {
    let mut idx: Vec<usize> = (0..truth.len()).collect();
    idx.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let (mut rank_sum, mut pos) = (0.0, 0usize);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && score[idx[j + 1]] == score[idx[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mean_rank = (i + j + 2) as f64 / 2.0;
        for &r in &idx[i..=j] {
            if truth[r] {
                rank_sum += mean_rank;
                pos += 1;
            }
        }
        i = j + 1;
    }
    let neg = truth.len() - pos;
    if pos == 0 || neg == 0 {
        return 0.5;
    }
    (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64)
}

/// The engagement model behind one score function.
enum Scorer {
    Tree(TreeNode),
    Svm {
        mean: Array1<f64>,
        std: Array1<f64>,
        svm: Box<Svm<f64, bool>>,
    },
}

impl Scorer {
    fn scores(&self, rows: &[[f64; NF]]) -> Vec<f64> {
        match self {
            Scorer::Tree(t) => rows.iter().map(|r| t.score(r)).collect(),
            Scorer::Svm { mean, std, svm } => rows
                .par_iter()
                .map(|r| {
                    let x = (Array1::from(r.to_vec()) - mean) / std;
                    svm.weighted_sum(&x) - svm.rho
                })
                .collect(),
        }
    }

    fn threshold(&self) -> f64 {
        match self {
            Scorer::Tree(_) => 0.5,
            Scorer::Svm { .. } => 0.0,
        }
    }
}

fn standardized(v: &[f64]) -> Vec<f64> {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    v.iter()
        .map(|x| if sd > 0.0 { (x - mean) / sd } else { 0.0 })
        .collect()
}

/// The order of a user's candidates: the recommender's score plus `weight` ×
/// the engagement score, each standardized over the candidates.
pub(super) fn combined(recommender: &[f64], engagement: &[f64], weight: f64) -> Vec<f32> {
    standardized(recommender)
        .iter()
        .zip(standardized(engagement))
        .map(|(r, e)| (r + weight * e) as f32)
        .collect()
}

/// The weight of [`WEIGHTS`] whose order ranks best on validation by `key`
/// (0, the recommender alone, unless one is strictly better), and both
/// orderings on validation and test (lists with their engagement scores).
/// Used when the test lists confirm it by the same key.
pub(super) fn choose_weight(
    (val, val_e): (&UserLists, &[f64]),
    (test, test_e): (&UserLists, &[f64]),
    k: usize,
    key: impl Fn(&ListQuality) -> f64,
) -> Rerank {
    let validation_plain = list_quality(val, val_e, 0.0, k);
    let mut best = (0.0, validation_plain);
    for &w in &WEIGHTS[1..] {
        let q = list_quality(val, val_e, w, k);
        if key(&q) > key(&best.1) {
            best = (w, q);
        }
    }
    let test_plain = list_quality(test, test_e, 0.0, k);
    let test_reranked = list_quality(test, test_e, best.0, k);
    Rerank {
        weight: best.0,
        validation_plain,
        validation_reranked: best.1,
        test_plain,
        test_reranked,
        used: best.0 > 0.0 && key(&test_reranked) > key(&test_plain),
    }
}

/// NDCG of every user's candidates ordered by recommender + weight × engagement.
pub(super) fn list_quality(
    lists: &UserLists,
    engagement: &[f64],
    weight: f64,
    k: usize,
) -> ListQuality {
    let (mut views, mut eng, mut n_eng) = (0.0, 0.0, 0usize);
    let mut at = 0;
    for (u, cands) in lists.candidates.iter().enumerate() {
        let m = cands.len();
        let combined = combined(&lists.scores[u], &engagement[at..at + m], weight);
        at += m;
        let ranked: Vec<u32> = top_k(&combined, |_| true, k)
            .into_iter()
            .map(|i| cands[i as usize])
            .collect();
        views += user_metrics(&ranked, &lists.viewed[u], k).2;
        if !lists.engaged[u].is_empty() {
            eng += user_metrics(&ranked, &lists.engaged[u], k).2;
            n_eng += 1;
        }
    }
    ListQuality {
        ndcg_views: views / lists.candidates.len().max(1) as f64,
        ndcg_engaged: eng / n_eng.max(1) as f64,
    }
}

/// Trains the recommender and the engagement models on time-ordered periods of
/// `events` and reports classification and re-ranking quality.
pub fn evaluate(events: &[VideoEvent], p: &RankParams) -> Result<RankReport, RankError> {
    p.check()?;
    let n = events.len();
    if n < 1000 {
        return Err(RankError::Data(format!(
            "{n} video events; the time-ordered periods need at least 1000"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| events[i].timestamp_ms);
    let cuts = [n / 2, n * 7 / 10, n * 8 / 10];

    let mut users = Interner::default();
    let mut items = Interner::default();
    let mut regions = Interner::default();
    let ids: Vec<(usize, usize, u32)> = order
        .iter()
        .map(|&i| {
            let e = &events[i];
            (
                users.id(&e.user_id),
                items.id(&e.video_id),
                regions.id(&e.region) as u32,
            )
        })
        .collect();
    let item_genre: Vec<usize> = {
        let mut g = vec![GENRES.len(); items.0.len()];
        for (pos, &i) in order.iter().enumerate() {
            g[ids[pos].1] = genre_slot(&events[i].genre);
        }
        g
    };

    // The recommender: ALS on the first period's pairs (weights summed).
    let mut pairs: HashMap<u64, f32> = HashMap::new();
    let (mut n_users, mut n_items) = (0, 0);
    for (pos, &i) in order[..cuts[0]].iter().enumerate() {
        let (u, it, _) = ids[pos];
        n_users = n_users.max(u + 1);
        n_items = n_items.max(it + 1);
        *pairs.entry(pair_key(u, it)).or_default() += events[i].implicit_feedback() as f32;
    }
    let triplets: Vec<(u32, u32, f32)> = pairs
        .into_iter()
        .map(|(k, w)| ((k >> 32) as u32, k as u32, w))
        .collect();
    let train = Csr::from_triplets(n_users, n_items, &triplets);
    let t = Instant::now();
    let model = als::fit(&p.als.clone().check()?, &train, |_, _| {})?;
    let als_fit_s = t.elapsed().as_secs_f64();
    let score = |u: usize, i: usize| -> f64 {
        if u < model.users && i < model.items {
            f64::from(model.score(u, i))
        } else {
            0.0
        }
    };

    // Who views what in the validation and test periods.
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let period_users = |from: usize, to: usize, rng: &mut ChaCha8Rng| {
        let mut seen: HashMap<usize, Vec<(u32, bool)>> = HashMap::new();
        for (pos, &i) in order.iter().enumerate().take(to).skip(from) {
            let (u, it, _) = ids[pos];
            if u < model.users {
                seen.entry(u)
                    .or_default()
                    .push((it as u32, engaged(&events[i])));
            }
        }
        let mut us: Vec<usize> = seen.keys().copied().collect();
        us.sort_unstable();
        us.shuffle(rng);
        us.truncate(p.eval_users);
        us.sort_unstable();
        (us, seen)
    };
    let val_period = period_users(cuts[1], cuts[2], &mut rng);
    let test_period = period_users(cuts[2], n, &mut rng);

    let lists_at = |h: &History, (us, seen): &PeriodViews, model: &AlsModel| {
        let mut lists = UserLists::default();
        let mut scores = Vec::new();
        for &u in us {
            let mut viewed: Vec<u32> = Vec::new();
            let mut eng: Vec<u32> = Vec::new();
            for &(it, e) in &seen[&u] {
                if (it as usize) < model.items && !h.seen.contains(&pair_key(u, it as usize)) {
                    viewed.push(it);
                    if e {
                        eng.push(it);
                    }
                }
            }
            viewed.sort_unstable();
            viewed.dedup();
            eng.sort_unstable();
            eng.dedup();
            if viewed.is_empty() {
                continue;
            }
            model.scores_into(u, &mut scores);
            let cands = top_k(&scores, |i| !h.seen.contains(&pair_key(u, i)), p.candidates);
            let ctx = h.context(u);
            lists.scores.push(
                cands
                    .iter()
                    .map(|&i| f64::from(scores[i as usize]))
                    .collect(),
            );
            for &i in &cands {
                let i = i as usize;
                lists
                    .rows
                    .push(h.row(u, i, item_genre[i], ctx, f64::from(scores[i])));
            }
            lists.candidates.push(cands);
            lists.viewed.push(viewed);
            lists.engaged.push(eng);
        }
        lists
    };

    // One pass in time order: each event's row from the history before it.
    let mut h = History::default();
    let (mut train_rows, mut train_y) = (Vec::new(), Vec::new());
    let (mut test_rows, mut test_y) = (Vec::new(), Vec::new());
    let mut val_lists = None;
    let mut test_lists = None;
    for (pos, &i) in order.iter().enumerate() {
        if pos == cuts[1] {
            val_lists = Some(lists_at(&h, &val_period, &model));
        }
        if pos == cuts[2] {
            test_lists = Some(lists_at(&h, &test_period, &model));
        }
        let e = &events[i];
        let (u, it, region) = ids[pos];
        if pos >= cuts[0] && !(cuts[1]..cuts[2]).contains(&pos) {
            let ctx = Context {
                region,
                resolution: resolution_rank(&e.resolution),
                hour: hour_of(e.timestamp_ms),
                recommended: e.recommended,
            };
            let row = h.row(u, it, item_genre[it], ctx, score(u, it));
            if pos < cuts[1] {
                train_rows.push(row);
                train_y.push(engaged(e));
            } else {
                test_rows.push(row);
                test_y.push(engaged(e));
            }
        }
        h.add(u, it, region, e);
    }
    let (Some(val_lists), Some(test_lists)) = (val_lists, test_lists) else {
        return Err(RankError::Data("the periods are empty".into()));
    };
    if val_lists.candidates.is_empty() || test_lists.candidates.is_empty() {
        return Err(RankError::Data(
            "no user of the recommender's period views anything new later".into(),
        ));
    }
    // A seeded sample of the test rows for the classification metrics.
    if test_rows.len() > p.max_test_rows {
        let mut idx: Vec<usize> = (0..test_rows.len()).collect();
        idx.shuffle(&mut rng);
        idx.truncate(p.max_test_rows);
        idx.sort_unstable();
        test_rows = idx.iter().map(|&i| test_rows[i]).collect();
        test_y = idx.iter().map(|&i| test_y[i]).collect();
    }
    let share = |y: &[bool]| y.iter().filter(|b| **b).count() as f64 / y.len().max(1) as f64;
    let train_share = share(&train_y);
    both_classes(&train_y, "training views")?;
    let x = Array2::from_shape_fn((train_rows.len(), NF), |(r, c)| train_rows[r][c]);
    let recommender_score_auc = auc(
        &test_y,
        &test_rows.iter().map(|r| r[NF - 1]).collect::<Vec<_>>(),
    );

    let report =
        |model: ModelKind, scorer: &Scorer, fit_s: f64, used_rows: usize, params: String| {
            let s = scorer.scores(&test_rows);
            let predicted: Vec<bool> = s.iter().map(|v| *v >= scorer.threshold()).collect();
            let val_e = scorer.scores(&val_lists.rows);
            let test_e = scorer.scores(&test_lists.rows);
            RankModelReport {
                model,
                fit_s,
                train_rows: used_rows,
                train_rows_available: train_rows.len(),
                test_rows: test_rows.len(),
                metrics: class_metrics(&test_y, &predicted),
                auc: auc(&test_y, &s),
                params,
                // Chosen by the views that engaged.
                rerank: choose_weight((&val_lists, &val_e), (&test_lists, &test_e), p.k, |q| {
                    q.ndcg_engaged
                }),
            }
        };
    let mut models = Vec::new();

    // The tree: leaves of at least tree_min_leaf rows, scored by their engaged share.
    let mut tree_rows: Vec<usize> = (0..train_rows.len()).collect();
    if tree_rows.len() > p.tree_max_rows {
        tree_rows.shuffle(&mut rng);
        tree_rows.truncate(p.tree_max_rows);
        tree_rows.sort_unstable();
    }
    let n_tree = tree_rows.len();
    let t = Instant::now();
    let rule = GrowRule {
        max_depth: p.tree_max_depth,
        min_leaf: p.tree_min_leaf,
        merge: false,
    };
    let tree = TreeNode::grow_with(&x, &train_y, tree_rows, 0, &rule)?;
    let fit_s = t.elapsed().as_secs_f64();
    let (depth, leaves) = tree.shape();
    let params = format!(
        "max_depth={} min_leaf={} depth={depth} leaves={leaves}",
        p.tree_max_depth, p.tree_min_leaf
    );
    models.push(report(
        ModelKind::DecisionTree,
        &Scorer::Tree(tree),
        fit_s,
        n_tree,
        params,
    ));

    // The SVM: Gaussian kernel on standardized features, stratified subsample.
    let all: Vec<usize> = (0..train_rows.len()).collect();
    let svm_rows = stratified(&all, &train_y, p.svm_max_rows, p.seed);
    let x_svm = x.select(Axis(0), &svm_rows);
    let y_svm: Vec<bool> = svm_rows.iter().map(|&i| train_y[i]).collect();
    let t = Instant::now();
    // scikit-learn's tolerance (see classify's SVM); a cascade past 2,000 rows.
    let (mean, std, cascade) = crate::ml::cascade::fit_standardized(
        &x_svm,
        &y_svm,
        &crate::ml::cascade::CascadeParams {
            c: p.svm_c,
            width: NF as f64,
            seed: p.seed,
            ..Default::default()
        },
    )
    .map_err(ClassifyError::from)?;
    let svm = cascade.svm;
    let fit_s = t.elapsed().as_secs_f64();
    let params = format!(
        "kernel=gaussian width={NF} C={} eps=0.001 stratified_subsample={} cascade_chunks={} cascade_fits={} last_fit_rows={} sampled_out={} support_vectors={}",
        p.svm_c,
        svm_rows.len(),
        cascade.chunks,
        cascade.fits,
        cascade.last_fit_rows,
        cascade.sampled_out,
        svm.nsupport()
    );
    models.push(report(
        ModelKind::Svm,
        &Scorer::Svm {
            mean,
            std,
            svm: Box::new(svm),
        },
        fit_s,
        svm_rows.len(),
        params,
    ));

    Ok(RankReport {
        run: RankRun {
            events: n,
            periods: [cuts[0], cuts[1] - cuts[0], cuts[2] - cuts[1], n - cuts[2]],
            engaged_share_train: train_share,
            engaged_share_test: share(&test_y),
            recommender_score_auc,
            als_fit_s,
            users: [val_lists.candidates.len(), test_lists.candidates.len()],
            candidates: p.candidates,
            k: p.k,
            features: FEATURES.to_vec(),
        },
        models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::generate::{VideoGen, World};

    #[test]
    fn auc_matches_hand_computed_values() {
        assert_eq!(auc(&[false, true], &[0.1, 0.9]), 1.0);
        assert_eq!(auc(&[true, false], &[0.1, 0.9]), 0.0);
        assert_eq!(auc(&[true, false], &[0.5, 0.5]), 0.5);
        // Positives at 0.8 and 0.3; negatives at 0.5 and 0.1: 3 of 4 pairs ordered.
        let a = auc(&[true, false, true, false], &[0.8, 0.5, 0.3, 0.1]);
        assert!((a - 0.75).abs() < 1e-12, "{a}");
    }

    #[test]
    fn features_see_only_the_past() {
        let mut h = History::default();
        let mut g = VideoGen::new(World::new(20, 10, 3), 3, 1_735_689_600_000, 1000);
        let e = g.next_event();
        let ctx = Context {
            region: 0,
            resolution: 1.0,
            hour: 0.0,
            recommended: false,
        };
        let before = h.row(0, 0, genre_slot(&e.genre), ctx, 0.0);
        assert_eq!(before[0], 0.0, "no views before the first event");
        h.add(0, 0, 0, &e);
        let after = h.row(0, 0, genre_slot(&e.genre), ctx, 0.0);
        assert!((after[0] - 1f64.ln_1p()).abs() < 1e-12);
        assert!(after[1] > before[1], "the genre's share grew: {after:?}");
        assert!(h.seen.contains(&pair_key(0, 0)));
    }

    #[test]
    fn engagement_models_learn_from_what_is_known_before_a_view() {
        let mut g = VideoGen::new(World::new(600, 150, 5), 11, 1_735_689_600_000, 1000);
        let events: Vec<VideoEvent> = (0..60_000).map(|_| g.next_event()).collect();
        let p = RankParams {
            als: AlsParams {
                factors: 16,
                iterations: 8,
                ..AlsParams::default()
            },
            svm_max_rows: 1_000,
            eval_users: 300,
            ..RankParams::default()
        };
        let r = evaluate(&events, &p).unwrap();
        assert_eq!(r.run.periods.iter().sum::<usize>(), events.len());
        assert_eq!(r.models.len(), 2);
        for m in &r.models {
            // Skips follow the user's taste and the network: a model that
            // learned them orders engaged views above the others.
            assert!(m.auc > 0.58, "{m:?}");
            assert!(
                m.metrics.accuracy
                    > r.run.engaged_share_test.max(1.0 - r.run.engaged_share_test) - 0.02
            );
            for w in [m.rerank.test_plain, m.rerank.test_reranked] {
                assert!(w.ndcg_views > 0.0 && w.ndcg_views <= 1.0, "{w:?}");
            }
            if m.rerank.weight == 0.0 {
                assert_eq!(m.rerank.test_plain, m.rerank.test_reranked);
            }
        }
        // The tree learns more than the recommender's score says, and on the
        // planted data its re-ranking puts engaged views higher.
        let tree = &r.models[0];
        assert!(tree.auc > r.run.recommender_score_auc + 0.05, "{r:?}");
        assert!(tree.rerank.used && tree.rerank.weight > 0.0, "{r:?}");
        assert!(
            tree.rerank.test_reranked.ndcg_engaged > tree.rerank.test_plain.ndcg_engaged,
            "{r:?}"
        );
        // Too little data is an error naming it, not a panic.
        let e = evaluate(&events[..500], &p).unwrap_err();
        assert!(e.to_string().contains("500 video events"), "{e}");
        let bad = RankParams { candidates: 5, ..p };
        assert!(evaluate(&events, &bad)
            .unwrap_err()
            .to_string()
            .contains("candidates"));
    }
}
