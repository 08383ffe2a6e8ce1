//! `[models]`: training cadence, ALS and classifier hyperparameters, promotion.

use serde::{Deserialize, Serialize};

pub use super::promote::PromoteMetric;
use crate::domain::setting::{invalid, Invalid};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Train the recommender in the daemon.
    pub enabled: bool,
    /// Train after this many newly stored events (0 = never on count).
    pub train_every_events: u64,
    /// Train at least this often while new events arrive (0 = never on time).
    #[serde(
        rename = "train_every_seconds",
        with = "crate::domain::setting::seconds"
    )]
    pub train_every: std::time::Duration,
    /// Stored events needed before the first training.
    pub min_events: u64,
    /// Model versions kept (the newest; every champion in the history and
    /// the newest of each kind stay as well).
    pub keep_versions: usize,
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f32,
    pub alpha: f32,
    pub cg_steps: usize,
    pub weighted_regularization: bool,
    /// Share of (user, item) pairs held out for evaluation (seeded hash of the names).
    pub test_fraction: f64,
    /// Users with fewer distinct items are not scored.
    pub min_user_items: usize,
    /// Cut-off of the ranking metrics.
    pub k: usize,
    pub promote_metric: PromoteMetric,
    /// A model is promoted only when it also scores higher than the popularity
    /// baseline on the same held-out split; until one does, popularity
    /// (what trends now) serves.
    pub promote_over_popularity: bool,
    pub seed: u64,
    /// Weight of content affinity (catalog profile vs title) blended into the
    /// ALS scores of users with a profile; the evaluator scores the blend against
    /// pure ALS and serves it only when it ranks better. 0 = never.
    pub affinity_weight: f64,
    /// Also train and evaluate the engagement classifiers (decision tree, SVM).
    pub classifiers: bool,
    /// Most recent video events the classifiers train and test on.
    pub classifier_max_events: usize,
    /// Deepest decision tree.
    pub tree_max_depth: usize,
    /// Rows of the SVM's stratified training subsample (a cascade of fits of
    /// 2,000 rows past 2,000: see `ml::cascade`).
    pub svm_max_rows: usize,
    /// Weight of each listening action in a (user, track) pair's implicit feedback;
    /// negative = a negative preference. Music pairs train with the video pairs.
    pub event_weights: EventWeights,
    /// Fold each durable batch's users into the serving champion (their
    /// factors re-solved against its item factors, their seen set updated):
    /// lists follow events without a retrain.
    pub fold_in: bool,
    /// Users held folded in (the least recently folded give way past it).
    pub fold_in_max_users: usize,
    /// Items the champion was not trained on get factors from their users'
    /// once this many users have them (see `ml::item_fold`).
    pub fold_in_item_min_users: usize,
    /// Such items followed at most (past it, those with the fewest users go).
    pub fold_in_max_items: usize,
    /// Threads that solve the fold-in's users; 0 = every core but one (at
    /// least one). Every throughput thread (ingest's stages, the fold-in,
    /// the compactors) is in one background class, where a solve thread on
    /// each core takes as much CPU as ingest's stages together: ingest then
    /// falls behind the stream. Fewer solve threads cost no fold-ins: a round
    /// takes every batch queued meanwhile and solves a user once.
    pub fold_in_threads: usize,
    /// Retrain once this many users were folded in since the champion began
    /// serving (the drift from what it was trained on); 0 = never on drift.
    pub retrain_folded_users: u64,
    /// Retrain once the users folded in since the champion hold this share of
    /// its pairs as pairs it was not trained on (new users' and new items'
    /// pairs, as of each user's last fold-in); 0 = never on new pairs. The
    /// fold-in keeps the champion's item factors, so its quality falls behind
    /// a retrain as new pairs grow: on Last.fm 2k, NDCG@10 −0.5 % at 1 %
    /// new pairs, −0.8 % at 3 %, −1.1 % at 5 %, −3.4 % at 25 %.
    pub retrain_new_pairs_share: f64,
    /// A retrain starts from the champion's factors (users and items it
    /// knows; the others start random) and runs this many iterations instead
    /// of `iterations`; 0 = every training starts cold.
    pub warm_start_iterations: usize,
    /// Seconds the trainer's search of ALS's hyperparameters may take per
    /// training (0 = no search: the ALS above is trained as configured).
    pub search_budget_seconds: f64,
    /// The search's budget also in fits of the configured ALS (its first
    /// trial's fit is the unit): the search costs at most this many fits
    /// whatever the data's size, within `search_budget_seconds` (0: seconds
    /// alone).
    pub search_budget_fits: f64,
    /// Most item columns EASE keeps (the most popular): its dense inverse
    /// costs items³ flops and items² × 8 bytes while it is fitted.
    pub ease_max_items: usize,
    /// The families the trainer's search tries (popularity is always the
    /// baseline): the best on the validation share serves. ALS is fitted
    /// whatever wins (the fold-in, warm starts and new items use its factors).
    pub search_families: Vec<crate::ml::family::Family>,
    /// An item × item champion (EASE, item-kNN) serves each item's this many
    /// strongest weights.
    pub item_neighbours: usize,
    /// Fit the ranking stage with each recommender: an engagement model
    /// (decision tree) on features known before a view, trained on the most
    /// recent `classifier_max_events` video events; video lists are
    /// reordered by it when the held-out data says it ranks better (see
    /// `ml::rerank`).
    pub rerank: bool,
    /// The recommender's top candidates the ranking stage reorders.
    pub rerank_candidates: usize,
    /// Fewest training views a leaf of its tree holds.
    pub rerank_min_leaf: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventWeights {
    pub play: f64,
    pub like: f64,
    pub pause: f64,
    pub seek: f64,
    pub skip: f64,
}

impl Default for EventWeights {
    fn default() -> Self {
        EventWeights {
            play: 1.0,
            like: 4.0,
            pause: 0.25,
            seek: 0.25,
            skip: -1.0,
        }
    }
}

impl EventWeights {
    /// In the order of [`crate::domain::event::MusicAction`]: play, skip, like, pause, seek.
    pub fn by_action(&self) -> [f64; 5] {
        [self.play, self.skip, self.like, self.pause, self.seek]
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            enabled: true,
            train_every_events: 200_000,
            train_every: std::time::Duration::from_secs(600),
            min_events: 10_000,
            keep_versions: 30,
            factors: 32,
            iterations: 15,
            regularization: 0.1,
            alpha: 1.0,
            cg_steps: 3,
            weighted_regularization: true,
            test_fraction: 0.2,
            min_user_items: 5,
            k: 10,
            promote_metric: PromoteMetric::Ndcg,
            promote_over_popularity: true,
            seed: 42,
            affinity_weight: 0.3,
            classifiers: true,
            classifier_max_events: 100_000,
            tree_max_depth: 20,
            svm_max_rows: 20_000,
            event_weights: EventWeights::default(),
            fold_in: true,
            fold_in_max_users: 1_000_000,
            fold_in_item_min_users: 3,
            fold_in_max_items: 50_000,
            fold_in_threads: 0,
            retrain_folded_users: 100_000,
            retrain_new_pairs_share: 0.03,
            warm_start_iterations: 5,
            search_budget_seconds: 60.0,
            search_budget_fits: 8.0,
            ease_max_items: 6_000,
            search_families: crate::ml::family::Family::SEARCHED.to_vec(),
            item_neighbours: 200,
            rerank: true,
            rerank_candidates: 50,
            rerank_min_leaf: 50,
        }
    }
}

impl ModelsConfig {
    /// The fold-in's solve threads: [`ModelsConfig::fold_in_threads`], or
    /// every core but one.
    pub fn fold_in_solvers(&self) -> usize {
        match self.fold_in_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
            n => n,
        }
    }

    pub fn classify(&self) -> crate::ml::classify::ClassifyParams {
        crate::ml::classify::ClassifyParams {
            tree_max_depth: self.tree_max_depth,
            svm_max_rows: self.svm_max_rows,
            ..crate::ml::classify::ClassifyParams::default()
        }
    }

    pub fn rerank(&self) -> crate::ml::rerank::RerankSpec {
        crate::ml::rerank::RerankSpec {
            candidates: self.rerank_candidates,
            k: self.k,
            seed: self.seed,
            min_leaf: self.rerank_min_leaf,
            ..crate::ml::rerank::RerankSpec::default()
        }
    }

    pub fn als(&self) -> crate::ml::als::AlsParams {
        crate::ml::als::AlsParams {
            factors: self.factors,
            iterations: self.iterations,
            regularization: self.regularization,
            alpha: self.alpha,
            cg_steps: self.cg_steps,
            seed: self.seed,
            nonnegative: false,
            weighted_regularization: self.weighted_regularization,
            exact: false,
        }
    }
}

impl ModelsConfig {
    /// Checks what a type cannot (ranges, sets, names); errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let m = self;
        if let Err(e) = m.als().check() {
            return Err(invalid("models", "", e.to_string()));
        }
        if !(0.0..=1.0).contains(&m.affinity_weight) {
            return Err(invalid(
                "models.affinity_weight",
                m.affinity_weight,
                "must be in [0, 1] (0 turns the blend off)",
            ));
        }
        if !(m.test_fraction > 0.0 && m.test_fraction < 1.0) {
            return Err(invalid(
                "models.test_fraction",
                m.test_fraction,
                "must be in (0, 1)",
            ));
        }
        if let Err(e) = m.classify().check() {
            return Err(invalid("models", "", e.to_string()));
        }
        if m.event_weights.by_action().iter().any(|w| !w.is_finite()) {
            return Err(invalid(
                "models.event_weights",
                &m.event_weights,
                "every weight must be a finite number",
            ));
        }
        if !(1..=50_000_000).contains(&m.fold_in_max_users) {
            return Err(invalid(
                "models.fold_in_max_users",
                m.fold_in_max_users,
                "must be 1..=50000000 (each holds its factors and seen items)",
            ));
        }
        if !(1..=100_000).contains(&m.fold_in_item_min_users) {
            return Err(invalid(
                "models.fold_in_item_min_users",
                m.fold_in_item_min_users,
                "must be 1..=100000 (users an item needs before it is folded in)",
            ));
        }
        if !(1..=10_000_000).contains(&m.fold_in_max_items) {
            return Err(invalid(
                "models.fold_in_max_items",
                m.fold_in_max_items,
                "must be 1..=10000000 (each followed item holds up to 2000 users)",
            ));
        }
        if m.fold_in_threads > 256 {
            return Err(invalid(
                "models.fold_in_threads",
                m.fold_in_threads,
                "must be 0..=256 (0 = every core but one)",
            ));
        }
        if !(m.retrain_new_pairs_share.is_finite()
            && (0.0..=1.0).contains(&m.retrain_new_pairs_share))
        {
            return Err(invalid(
                "models.retrain_new_pairs_share",
                m.retrain_new_pairs_share,
                "must be in [0, 1] (a share of the champion's pairs; 0: never on new pairs)",
            ));
        }
        if m.warm_start_iterations > 10_000 {
            return Err(invalid(
                "models.warm_start_iterations",
                m.warm_start_iterations,
                "must be 0..=10000 (0: every training starts cold)",
            ));
        }
        if !(m.search_budget_seconds.is_finite()
            && (0.0..=86_400.0).contains(&m.search_budget_seconds))
        {
            return Err(invalid(
                "models.search_budget_seconds",
                m.search_budget_seconds,
                "must be 0..=86400 seconds (0: no search, the configured ALS is trained)",
            ));
        }
        if !(m.search_budget_fits.is_finite() && (0.0..=10_000.0).contains(&m.search_budget_fits)) {
            return Err(invalid(
                "models.search_budget_fits",
                m.search_budget_fits,
                "must be 0..=10000 fits of the configured ALS (0: search_budget_seconds alone)",
            ));
        }
        if !(1..=crate::ml::ease::MAX_ITEMS).contains(&m.ease_max_items) {
            return Err(invalid(
                "models.ease_max_items",
                m.ease_max_items,
                "must be 1..=20000 (EASE's inverse is items² × 8 bytes: 20000 items = 3.2 GB)",
            ));
        }
        let families = &m.search_families;
        let twice = families
            .iter()
            .enumerate()
            .any(|(i, f)| families[..i].contains(f));
        if families.is_empty()
            || twice
            || families
                .iter()
                .any(|f| !crate::ml::family::Family::SEARCHED.contains(f))
        {
            return Err(invalid(
                "models.search_families",
                families.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "must list each of \"als\", \"ease\", \"knn\" at most once, at least one (popularity is always the baseline)",
            ));
        }
        if !(1..=crate::ml::item_model::MAX_NEIGHBOURS).contains(&m.item_neighbours) {
            return Err(invalid(
                "models.item_neighbours",
                m.item_neighbours,
                "must be 1..=5000 (weights an item keeps when EASE or item-kNN serves)",
            ));
        }
        if !(1..=1000).contains(&m.k) {
            return Err(invalid("models.k", m.k, "must be 1..=1000"));
        }
        if !(m.k..=1000).contains(&m.rerank_candidates) {
            return Err(invalid(
                "models.rerank_candidates",
                m.rerank_candidates,
                "must be models.k..=1000 (the ranking stage reorders that many of the recommender's top)",
            ));
        }
        if !(1..=1_000_000).contains(&m.rerank_min_leaf) {
            return Err(invalid(
                "models.rerank_min_leaf",
                m.rerank_min_leaf,
                "must be 1..=1000000 (training views a leaf of the ranking stage's tree holds)",
            ));
        }
        if !(1..=100_000).contains(&m.keep_versions) {
            return Err(invalid(
                "models.keep_versions",
                m.keep_versions,
                "must be 1..=100000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fold_in_leaves_a_core_to_ingest_unless_told() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut m = ModelsConfig::default();
        assert_eq!(m.fold_in_threads, 0);
        assert_eq!(m.fold_in_solvers(), cores.saturating_sub(1).max(1));
        m.fold_in_threads = 3;
        assert_eq!(m.fold_in_solvers(), 3);
    }
}
