//! Fold-in: the serving champion follows every durable batch without a
//! retrain. Each user a batch touched gets their factors re-solved against the
//! champion's item factors — the exact least-squares solve of implicit ALS
//! with `YᵀY + λI` computed once per champion ([`Solver`]), confidence from
//! all their current pairs — and their seen set replaced; a user the champion
//! never saw gets factors from their first events. Readers take a user's
//! folded state ([`Folded`]) in place of the trained row.
//!
//! The folded users are held for the champion they were folded against; a new
//! champion starts from its own rows and the fold-in re-solves the users it
//! held against the new item factors. At most `max_users` are held: the least
//! recently folded give way (their trained rows serve until the next retrain).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::als::Solver;
use super::item_fold::FoldedItems;
use super::recent::RecentSeen;
use super::serve::Champion;
use crate::domain::event::Domain;
use crate::store::{PairChange, PairChangeAgg, StoreError, StoreView};
use crate::views::graph::MusicGraph;

/// A user as the fold-in has them: factors and what they have seen, in the
/// champion's item order (sorted).
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    pub factors: Vec<f32>,
    pub seen: Vec<u32>,
    /// `seen`'s implicit-feedback weights (an item × item champion scores
    /// from them).
    pub weights: Vec<f32>,
    /// When this was folded (ms since the epoch).
    pub at_ms: i64,
    /// Of the pairs folded, those the champion was not trained on (every pair
    /// of a user it never saw); 0 where a peer folded the user.
    pub new_pairs: u32,
}

/// The fold-in's counts a retrain's drift is measured by ([`Live::drift`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drift {
    /// The champion the held users are folded against.
    pub model: Option<u64>,
    /// User solves since the start.
    pub folded_total: u64,
    /// The held users' pairs that champion was not trained on.
    pub new_pairs: u64,
}

/// Buckets of the event → served latency histogram (seconds).
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What the fold-in did, for `status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LiveStats {
    /// Seconds since the serving item factors were trained into a champion
    /// (they change only with the next champion).
    #[serde(default)]
    pub item_factors_age_seconds: Option<f64>,
    /// The champion the held users are folded against.
    pub model: Option<u64>,
    /// Users held folded in, and how many of them the champion never saw.
    pub users: usize,
    pub new_users: usize,
    /// Users folded in since the champion began serving (the retrain's drift).
    pub folded_since_champion: u64,
    /// The held users' pairs the champion was not trained on, each user
    /// counted as of their last fold-in (the retrain's drift by pairs; users
    /// let go past the bound still count).
    #[serde(default)]
    pub new_pairs_since_champion: u64,
    /// User solves since the start, and the durable batches they followed.
    pub folded_total: u64,
    pub batches: u64,
    /// Users that gave way to newer ones past `max_users`.
    pub evicted: u64,
    pub max_users: usize,
    /// The last fold-in: users solved, seconds, and users per second.
    pub last_users: usize,
    pub last_seconds: f64,
    pub last_users_per_s: f64,
    /// From a batch's commit to its users served folded in: the last one, seconds.
    pub last_latency_seconds: f64,
    /// Fold-in rounds that failed (a panic): their users fold in at their
    /// next event, or at the next champion.
    #[serde(default)]
    pub failed_rounds: u64,
    /// Items the champion was not trained on, folded in from their users'
    /// factors ([`crate::ml::item_fold`]); those followed that have too few
    /// users yet; those let go past the bound.
    #[serde(default)]
    pub folded_items: usize,
    #[serde(default)]
    pub items_pending: usize,
    #[serde(default)]
    pub items_dropped: u64,
    /// Users whose newest views are left out of their lists ahead of their
    /// fold-in ([`super::recent`]); and its rows not noted past a user's
    /// bound plus users let go past the user bound.
    #[serde(default)]
    pub seen_pending_users: usize,
    #[serde(default)]
    pub seen_dropped: u64,
}

/// A user as serving has them against one champion: the folded-in state, if
/// any, and what they watched since (rows, sorted) that it does not cover yet.
#[derive(Debug, Clone, Default)]
pub struct LiveUser {
    pub folded: Option<Arc<Folded>>,
    pub recent: Vec<u32>,
    /// The items the user has pairs with, read from the store where no model
    /// serves (the trending list leaves them out; rows need a model).
    pub history: Vec<String>,
    /// The items folded in against the champion, as of the user's state (every
    /// row it names is among them).
    pub items: Option<Arc<FoldedItems>>,
}

/// Shards of the held users: a fold-in writes one shard at a time, so a
/// reader waits at most for the users of one round that fall in its shard.
const SHARDS: usize = 64;

/// A held user: folded state, fold sequence number (the least recent give
/// way first), and whether the champion never saw them.
type Held = (Arc<Folded>, u64, bool);

/// The users of one shard, on the rows of the champion `model`.
#[derive(Default)]
struct Shard {
    model: Option<u64>,
    /// The items folded in against `model`, installed before the users that
    /// name them.
    items: Option<Arc<FoldedItems>>,
    users: FxHashMap<String, Held>,
    /// Rows seen since the users' fold-in.
    recent: RecentSeen,
}

impl Shard {
    /// Keeps what is held if it is against `model`, else lets it go (dropped
    /// by the caller, outside the lock).
    fn follow(&mut self, model: u64) -> Option<FxHashMap<String, Held>> {
        if self.model == Some(model) {
            return None;
        }
        self.model = Some(model);
        self.items = None;
        self.recent.follow(model);
        Some(std::mem::take(&mut self.users))
    }
}

/// The champion the held users are folded against, its folded items, and
/// what the fold-in did.
#[derive(Default)]
struct Head {
    model: Option<u64>,
    /// Items folded in against `model`.
    items: Option<Arc<FoldedItems>>,
    stats: LiveStats,
}

/// The folded-in users of the serving champion. Every method takes `&self`:
/// the users are held in [`SHARDS`] shards, each behind its own lock, and a
/// writer holds one shard at a time for the users of its batch or round that
/// fall in it, so readers (requests) never wait for a whole round.
pub struct Live {
    head: RwLock<Head>,
    shards: Box<[RwLock<Shard>]>,
    /// Fold sequence numbers and seen-row ticks (distinct across shards: the
    /// bounds keep the most recent overall).
    seq: AtomicU64,
    tick: AtomicU64,
    /// Commit → served latency of every folded batch.
    latency: Histogram,
}

impl Default for Live {
    fn default() -> Live {
        Live {
            head: RwLock::new(Head::default()),
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            seq: AtomicU64::new(0),
            tick: AtomicU64::new(0),
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

/// The shard holding `user`.
fn shard_of(user: &str) -> usize {
    use std::hash::BuildHasher;
    (rustc_hash::FxBuildHasher.hash_one(user) >> 58) as usize % SHARDS
}

/// `items` grouped by the shard of their user (`user` names it).
fn by_shard<T>(items: impl IntoIterator<Item = T>, user: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..SHARDS).map(|_| Vec::new()).collect();
    for t in items {
        let s = shard_of(user(&t));
        out[s].push(t);
    }
    out
}

/// Past `max` entries over all shards by a tenth, keeps the `max` most recent
/// (by their distinct ticks; [`super::recent::eviction_cut`]) and answers how
/// many gave way. Each shard is locked on its own: to count, to read its
/// ticks, and to let go.
fn evict_sharded(
    shards: &[RwLock<Shard>],
    max: usize,
    len: impl Fn(&Shard) -> usize,
    ticks: impl Fn(&Shard, &mut Vec<u64>),
    retain_newer: impl Fn(&mut Shard, u64) -> usize,
) -> usize {
    let total: usize = shards.iter().map(|s| s.read().map_or(0, |s| len(&s))).sum();
    let Some(below) = super::recent::eviction_cut(total, max, |order| {
        for s in shards {
            if let Ok(s) = s.read() {
                ticks(&s, order);
            }
        }
    }) else {
        return 0;
    };
    shards
        .iter()
        .map(|s| s.write().map_or(0, |mut s| retain_newer(&mut s, below)))
        .sum()
}

impl Live {
    fn shard(&self, user: &str) -> &RwLock<Shard> {
        &self.shards[shard_of(user)]
    }

    /// `user` folded against `model`, if held.
    pub fn user(&self, model: u64, user: &str) -> Option<Arc<Folded>> {
        let s = self.shard(user).read().ok()?;
        if s.model != Some(model) {
            return None;
        }
        s.users.get(user).map(|(f, _, _)| f.clone())
    }

    /// `user` against `model`: folded state and the rows seen since.
    pub fn live_user(&self, model: u64, user: &str) -> LiveUser {
        let Ok(s) = self.shard(user).read() else {
            return LiveUser::default();
        };
        let (folded, items) = match s.model {
            Some(m) if m == model => (
                s.users.get(user).map(|(f, _, _)| f.clone()),
                s.items.clone().filter(|i| !i.is_empty()),
            ),
            _ => (None, None),
        };
        LiveUser {
            folded,
            recent: s.recent.rows(model, user),
            history: Vec::new(),
            items,
        }
    }

    /// A committed batch's `(user, row)` pairs on `model`'s rows: lists leave
    /// those items out until the users' fold-in covers batch `seq`.
    pub fn note_seen<'a>(
        &self,
        model: u64,
        rows: impl IntoIterator<Item = (&'a str, u32, u64)>,
        max_users: usize,
    ) {
        for (i, rows) in by_shard(rows, |r| r.0).into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let Ok(mut s) = self.shards[i].write() else {
                continue;
            };
            for (user, row, seq) in rows {
                let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
                s.recent.note(model, user, row, seq, tick);
            }
        }
        evict_sharded(
            &self.shards,
            max_users,
            |s| s.recent.len(),
            |s, into| s.recent.ticks(into),
            |s, below| s.recent.retain_newer(below),
        );
    }

    /// The items folded in against `model`, if any.
    pub fn items(&self, model: u64) -> Option<Arc<FoldedItems>> {
        let h = self.head.read().ok()?;
        if h.model != Some(model) {
            return None;
        }
        h.items.clone().filter(|i| !i.is_empty())
    }

    /// The champion the held users are folded against.
    pub fn model(&self) -> Option<u64> {
        self.head.read().ok()?.model
    }

    /// Every held user (to re-solve against a new champion).
    pub fn user_ids(&self) -> Vec<String> {
        let model = self.model();
        let mut out = Vec::new();
        for s in self.shards.iter() {
            if let Ok(s) = s.read() {
                if s.model == model {
                    out.extend(s.users.keys().cloned());
                }
            }
        }
        out
    }

    pub fn stats(&self) -> LiveStats {
        let Ok(h) = self.head.read() else {
            return LiveStats::default();
        };
        let mut st = LiveStats {
            model: h.model,
            ..h.stats.clone()
        };
        drop(h);
        for s in self.shards.iter() {
            let Ok(s) = s.read() else { continue };
            st.seen_dropped += s.recent.dropped();
            if s.model != st.model {
                continue;
            }
            st.users += s.users.len();
            st.new_users += s.users.values().filter(|(_, _, new)| *new).count();
            st.seen_pending_users += s.recent.len();
        }
        st
    }

    /// What a retrain's drift is measured by, from the head's counters alone
    /// (no walk over the held users, as [`Live::stats`] makes).
    pub fn drift(&self) -> Drift {
        let Ok(h) = self.head.read() else {
            return Drift::default();
        };
        Drift {
            model: h.model,
            folded_total: h.stats.folded_total,
            new_pairs: h.stats.new_pairs_since_champion,
        }
    }

    /// Counts a fold-in round that failed.
    pub fn failed(&self) {
        if let Ok(mut h) = self.head.write() {
            h.stats.failed_rounds += 1;
        }
    }

    /// The commit → served latency histogram (seconds).
    pub fn latency(&self) -> Histogram {
        self.latency.clone()
    }

    /// Installs users folded against `model` (a new model drops what was held
    /// against another: its users are re-solved by the caller); keeps at most
    /// `max_users`. `latency`: the oldest of the batches folded, commit → now.
    /// The users' states cover every batch below `fold.upto`.
    pub fn install(&self, model: u64, fold: FoldResult, max_users: usize, latency: Duration) {
        // The champion and its folded items first: a reader that sees a
        // user's new state then has every row it names (folded items only
        // grow within a champion).
        let update = fold.items;
        let items = update.as_ref().map(|u| u.items.clone());
        if let Ok(mut h) = self.head.write() {
            if h.model != Some(model) {
                h.model = Some(model);
                h.items = None;
                h.stats.folded_items = 0;
                h.stats.folded_since_champion = 0;
                h.stats.new_pairs_since_champion = 0;
            }
            if let Some(u) = update {
                h.stats.items_pending = u.pending;
                h.stats.items_dropped = u.dropped;
                h.stats.folded_items = u.items.len();
                h.items = Some(u.items);
            }
        }
        let n = fold.users.len();
        // The change in the held users' new pairs (a refolded user's count
        // replaces their last one).
        let mut new_pairs = 0i64;
        // Then each shard: what was held against another champion goes (freed
        // outside the lock), the items, then its users.
        for (i, users) in by_shard(fold.users, |u| u.0.as_str())
            .into_iter()
            .enumerate()
        {
            let users: Vec<(String, Arc<Folded>, bool)> = users
                .into_iter()
                .map(|(u, f, new)| (u, Arc::new(f), new))
                .collect();
            let mut replaced = Vec::with_capacity(users.len());
            let mut old = None;
            if let Ok(mut s) = self.shards[i].write() {
                old = s.follow(model);
                if let Some(items) = &items {
                    s.items = Some(items.clone());
                }
                for (user, folded, new) in users {
                    s.recent.covered(model, &user, fold.upto);
                    let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
                    new_pairs += i64::from(folded.new_pairs);
                    let was = s.users.insert(user, (folded, seq, new));
                    if let Some((f, _, _)) = &was {
                        new_pairs -= i64::from(f.new_pairs);
                    }
                    replaced.push(was);
                }
            }
            drop(old);
            drop(replaced);
        }
        // Past the bound by a tenth: the least recently folded give way.
        let evicted = evict_sharded(
            &self.shards,
            max_users,
            |s| {
                if s.model == Some(model) {
                    s.users.len()
                } else {
                    0
                }
            },
            |s, into| into.extend(s.users.values().map(|(_, seq, _)| *seq)),
            |s, below| {
                let before = s.users.len();
                s.users.retain(|_, (_, seq, _)| *seq > below);
                before - s.users.len()
            },
        );
        if let Ok(mut h) = self.head.write() {
            let s = &mut h.stats;
            s.evicted += evicted as u64;
            s.max_users = max_users;
            s.folded_total += n as u64;
            s.folded_since_champion += n as u64;
            s.new_pairs_since_champion =
                s.new_pairs_since_champion.saturating_add_signed(new_pairs);
            s.batches += fold.batches;
            s.last_users = n;
            s.last_seconds = fold.seconds;
            s.last_users_per_s = if fold.seconds > 0.0 {
                n as f64 / fold.seconds
            } else {
                0.0
            };
            s.last_latency_seconds = latency.as_secs_f64();
        }
        self.latency.observe(latency.as_secs_f64());
    }
}

/// A user another member of the group folded in, as it published them: the
/// champion it solved against, the factors, and what they have seen as item
/// ids with their weights (rows are each member's own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerUser {
    pub model: u64,
    pub factors: Vec<f32>,
    pub items: Vec<(String, f32)>,
    pub at_ms: i64,
}

/// The users other members of the group folded in (newest state of each,
/// bounded: the least recently received give way).
#[derive(Default)]
pub struct Peers {
    users: FxHashMap<String, (Arc<PeerUser>, u64)>,
    seq: u64,
}

impl Peers {
    pub fn insert(&mut self, user: String, state: PeerUser, max_users: usize) {
        self.seq += 1;
        match self.users.get(&user) {
            // An older state read after a newer one (a re-read from the start) is not kept.
            Some((held, _)) if held.model == state.model && held.at_ms > state.at_ms => {}
            _ => {
                self.users.insert(user, (Arc::new(state), self.seq));
            }
        }
        super::recent::evict_least_recent(&mut self.users, max_users, |(_, s)| *s);
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// `user` as a peer folded them against `c`, on this member's rows (items
    /// it does not have are left out).
    pub fn folded(&self, c: &Champion, items: Option<&FoldedItems>, user: &str) -> Option<Folded> {
        let (p, _) = self.users.get(user)?;
        if p.model != c.id || p.factors.len() != c.recommender.bundle().model.factors {
            return None;
        }
        let (seen, weights) = rows_with(c, items, &p.items).into_iter().unzip();
        Some(Folded {
            factors: p.factors.clone(),
            seen,
            weights,
            at_ms: p.at_ms,
            new_pairs: 0,
        })
    }
}

/// A folded user as a peer reads them: their seen rows as item ids.
pub fn to_peer(c: &Champion, items: Option<&FoldedItems>, f: &Folded) -> PeerUser {
    let r = &c.recommender;
    PeerUser {
        model: c.id,
        factors: f.factors.clone(),
        items: f
            .seen
            .iter()
            .zip(&f.weights)
            .filter_map(|(row, w)| Some((r.row_name(*row as usize, items)?.to_string(), *w)))
            .collect(),
        at_ms: f.at_ms,
    }
}

/// Users folded in one step.
#[derive(Debug, Default)]
pub struct FoldResult {
    /// (user, folded state, whether the champion never saw them).
    pub users: Vec<(String, Folded, bool)>,
    pub batches: u64,
    pub seconds: f64,
    /// The first batch the users' states do not cover (0: none known).
    pub upto: u64,
    /// The items folded in against the champion (installed before the users:
    /// their seen rows may name them), with those still pending and dropped.
    pub items: Option<FoldedItemsUpdate>,
}

/// The folded items a fold-in round leaves, for [`Live::install`].
#[derive(Debug)]
pub struct FoldedItemsUpdate {
    pub items: Arc<FoldedItems>,
    pub pending: usize,
    pub dropped: u64,
}

/// A champion's solver, made once per champion (`YᵀY` over every item).
pub struct ChampionSolver {
    pub model: u64,
    solver: Solver,
}

impl ChampionSolver {
    pub fn new(c: &Champion) -> ChampionSolver {
        let mut params = c.params.clone();
        // The bundle's factor count is what the rows hold, whatever was recorded.
        params.factors = c.recommender.bundle().model.factors;
        ChampionSolver {
            model: c.id,
            solver: Solver::new(&params, &c.recommender.bundle().model.item_factors),
        }
    }
}

/// Folds in `users`, each with all their current pairs `(item, weight)`
/// (items the champion does not have are left out of the solve), in parallel.
/// A user with no pair on the champion's items is left out.
pub fn fold_users(
    c: &Champion,
    solver: &ChampionSolver,
    users: Vec<(String, Vec<(String, f32)>)>,
) -> Vec<(String, Folded, bool)> {
    let users = users
        .into_iter()
        .map(|(u, pairs)| (u, champion_rows(c, &pairs)))
        .collect();
    fold_rows(c, solver, users)
}

/// `pairs` on the champion's item rows, sorted by row (one weight per row;
/// items it does not have are left out).
pub fn champion_rows(c: &Champion, pairs: &[(String, f32)]) -> Vec<(u32, f32)> {
    rows_with(c, None, pairs)
}

/// An item's row: the champion's, else a folded item's (after the champion's).
pub fn item_row(c: &Champion, items: Option<&FoldedItems>, item: &str) -> Option<u32> {
    c.recommender
        .item_row(item)
        .or_else(|| items.and_then(|i| i.row(item)))
}

/// `pairs` on the champion's rows and those of the items folded in (`items`),
/// sorted by row (one weight per row; items neither has are left out).
pub fn rows_with(
    c: &Champion,
    items: Option<&FoldedItems>,
    pairs: &[(String, f32)],
) -> Vec<(u32, f32)> {
    sorted_rows(
        pairs
            .iter()
            .filter_map(|(item, w)| Some((item_row(c, items, item)?, *w))),
    )
}

/// `(row, weight)` pairs sorted by row, the first weight of a row kept.
pub fn sorted_rows(rows: impl Iterator<Item = (u32, f32)>) -> Vec<(u32, f32)> {
    let mut rows: Vec<(u32, f32)> = rows.collect();
    rows.sort_by_key(|p| p.0);
    rows.dedup_by_key(|p| p.0);
    rows
}

/// Folds in `users`, each with their pairs on the champion's item rows
/// (sorted by row, as [`champion_rows`] makes them; rows past the champion's
/// items, folded items, count as seen but not in the solve), in parallel. A
/// user with no row on the champion's items is left out.
pub fn fold_rows(
    c: &Champion,
    solver: &ChampionSolver,
    users: Vec<(String, Vec<(u32, f32)>)>,
) -> Vec<(String, Folded, bool)> {
    let r = &c.recommender;
    let y = &r.bundle().model.item_factors;
    let f = solver.solver.factors();
    let n = r.bundle().model.items as u32;
    let now = crate::domain::timefmt::now_ms();
    users
        .into_par_iter()
        .map_init(
            || solver.solver.scratch(),
            |scratch, (user, rows)| {
                let (cols, weights): (Vec<u32>, Vec<f32>) = rows.into_iter().unzip();
                let own = cols.partition_point(|&c| c < n);
                if own == 0 {
                    return None;
                }
                let mut x = vec![0f32; f];
                solver
                    .solver
                    .solve(y, &cols[..own], &weights[..own], &mut x, scratch);
                let trained = r.user_row(&user).map_or(&[][..], |u| r.seen_of(u));
                let new_pairs = cols
                    .iter()
                    .filter(|c| trained.binary_search(c).is_err())
                    .count();
                let new_pairs = u32::try_from(new_pairs).unwrap_or(u32::MAX);
                let new = !r.knows(&user);
                Some((
                    user,
                    Folded {
                        factors: x,
                        seen: cols,
                        weights,
                        at_ms: now,
                        new_pairs,
                    },
                    new,
                ))
            },
        )
        .flatten()
        .collect()
}

/// One committed pair change as the fold-in weighs it (as [`user_pairs`]
/// does: a video row's summed feedback, a listening edge's action counts ×
/// `music_weights`).
pub fn change_weight(agg: &PairChangeAgg, music_weights: [f64; 5]) -> f32 {
    match agg {
        PairChangeAgg::Video(a) => a.weight as f32,
        PairChangeAgg::Music(a) => super::dataset::music_weight(a, music_weights) as f32,
    }
}

/// The pairs of the users the fold-in solved recently, on the champion's item
/// rows, kept current from each batch's committed changes: a user held here is
/// folded in again without reading their pairs from the store. The rows are
/// the champion's, so a new champion starts empty; at most `max_users` are
/// held (the least recently folded give way and are read again when next
/// touched).
///
/// A user read from the store reflects every batch below the sequence number
/// the read answers ([`crate::store::pairs::UserPairs::upto`]): a video
/// change (a batch's delta) of an earlier batch is already in it and is
/// skipped, a later one is added. A listening change carries the pair's whole
/// aggregate after its batch and replaces the row's weight (changes come in
/// commit order, so the last one applied is the stored value).
#[derive(Default)]
pub struct PairRows {
    model: Option<u64>,
    users: FxHashMap<String, HeldUser>,
    seq: u64,
}

struct HeldUser {
    rows: Vec<(u32, f32)>,
    /// When last used (for the bound).
    used: u64,
    /// The first batch the read did not reflect.
    upto: u64,
}

impl PairRows {
    /// Keeps what is held if it is on `model`'s rows, else drops it.
    pub fn follow(&mut self, model: u64) {
        if self.model != Some(model) {
            self.users.clear();
            self.model = Some(model);
        }
    }

    pub fn holds(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Applies one committed change to its user if held (a user not held is
    /// read whole when next folded in).
    pub fn apply(
        &mut self,
        c: &Champion,
        items: Option<&FoldedItems>,
        change: &PairChange,
        music_weights: [f64; 5],
    ) {
        let Some(held) = self.users.get_mut(change.user.as_str()) else {
            return;
        };
        let Some(row) = item_row(c, items, &change.item) else {
            return;
        };
        let w = change_weight(&change.agg, music_weights);
        let delta = match change.agg {
            PairChangeAgg::Video(_) if change.seq < held.upto => return,
            PairChangeAgg::Video(_) => true,
            PairChangeAgg::Music(_) => false,
        };
        match held.rows.binary_search_by_key(&row, |p| p.0) {
            Ok(i) if delta => held.rows[i].1 += w,
            Ok(i) => held.rows[i].1 = w,
            Err(i) => held.rows.insert(i, (row, w)),
        }
    }

    /// Holds `user` with all their current pairs (as [`user_pairs`] reads
    /// them, reflecting every batch below `upto`).
    pub fn insert(
        &mut self,
        c: &Champion,
        items: Option<&FoldedItems>,
        user: String,
        pairs: &[(String, f32)],
        upto: u64,
    ) {
        self.seq += 1;
        let held = HeldUser {
            rows: rows_with(c, items, pairs),
            used: self.seq,
            upto,
        };
        self.users.insert(user, held);
    }

    /// A row of an item folded in just now for a held user who has it (the
    /// item's weight as the item fold-in followed it); `false` when the user
    /// is not held or has the row already.
    pub fn add_row(&mut self, user: &str, row: u32, w: f32) -> bool {
        let Some(held) = self.users.get_mut(user) else {
            return false;
        };
        match held.rows.binary_search_by_key(&row, |p| p.0) {
            Ok(_) => false,
            Err(i) => {
                held.rows.insert(i, (row, w));
                true
            }
        }
    }

    /// `user`'s rows to fold in (and marks them as just used).
    pub fn rows(&mut self, user: &str) -> Option<Vec<(u32, f32)>> {
        self.seq += 1;
        let seq = self.seq;
        self.users.get_mut(user).map(|h| {
            h.used = seq;
            h.rows.clone()
        })
    }

    /// Past `max_users` by a tenth: the least recently used give way.
    pub fn trim(&mut self, max_users: usize) {
        super::recent::evict_least_recent(&mut self.users, max_users, |h| h.used);
    }
}

/// All of `user`'s current pairs as implicit-feedback weights, as training
/// weighs them: video pairs (their summed feedback) and listening edges
/// (action counts × `music_weights`); and the first batch the video pairs do
/// not reflect.
pub fn user_pairs(
    view: &StoreView,
    graph: &MusicGraph,
    user: &str,
    music_weights: [f64; 5],
) -> Result<(Vec<(String, f32)>, u64), StoreError> {
    let (pairs, upto) = user_pairs_by_domain(view, graph, user, music_weights)?;
    Ok((pairs.into_iter().map(|(i, w, _)| (i, w)).collect(), upto))
}

/// A user's pairs, each with its item's domain.
pub type DomainPairs = Vec<(String, f32, Domain)>;

/// As [`user_pairs`], each pair with its item's domain (video pairs, listening
/// edges of tracks).
pub fn user_pairs_by_domain(
    view: &StoreView,
    graph: &MusicGraph,
    user: &str,
    music_weights: [f64; 5],
) -> Result<(DomainPairs, u64), StoreError> {
    user_pairs_with_edges(view, graph.edges_of(user), user, music_weights)
}

/// As [`user_pairs_by_domain`], the user's listening edges already read from
/// the graph (so the graph's lock need not be held across the store's reads).
pub fn user_pairs_with_edges(
    view: &StoreView,
    edges: Vec<(std::sync::Arc<str>, crate::store::MusicAgg)>,
    user: &str,
    music_weights: [f64; 5],
) -> Result<(DomainPairs, u64), StoreError> {
    let (video, upto) = view.user_video_pairs(user)?;
    let mut out: DomainPairs = video
        .into_iter()
        .map(|(item, a)| (item, a.weight as f32, Domain::Video))
        .collect();
    out.extend(edges.into_iter().map(|(t, a)| {
        let w = super::dataset::music_weight(&a, music_weights);
        (t.to_string(), w as f32, Domain::Music)
    }));
    Ok((out, upto))
}

/// Users folded in against `model` (durable: a restart folds them in again).
/// `users`: (user, when folded, ms since the epoch).
pub fn record_folded(
    view: &StoreView,
    model: u64,
    users: &[(String, i64)],
    flush: crate::store::Flush,
) -> Result<(), StoreError> {
    if users.is_empty() {
        return Ok(());
    }
    view.mark_folded(model, users.iter().map(|(u, at)| (u.as_str(), *at)), flush)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::event::Domain;
    use crate::ml::als::{fit, AlsParams};
    use crate::ml::serve::{Bundle, ServingModel};
    use crate::ml::sparse::Csr;

    /// A champion trained on two blocks of taste: users 0..20 like items
    /// 0..10, users 20..40 like items 10..20.
    pub(crate) fn champion(exact: bool) -> (Champion, Csr) {
        let mut t = Vec::new();
        for u in 0..40u32 {
            let base = if u < 20 { 0 } else { 10 };
            for j in 0..6u32 {
                t.push((u, base + (u + j * 3) % 10, 1.0 + (j % 3) as f32));
            }
        }
        let m = Csr::from_triplets(40, 20, &t);
        let params = AlsParams {
            factors: 8,
            iterations: 12,
            regularization: 0.05,
            exact,
            ..AlsParams::default()
        };
        let model = fit(&params.clone().check().unwrap(), &m, |_, _| {}).unwrap();
        let bundle = Bundle {
            model,
            users: (0..40).map(|u| format!("u{u}")).collect(),
            items: (0..20).map(|i| format!("v{i}")).collect(),
            seen: m.clone(),
            item_genre: vec![String::new(); 20],
            popularity: vec![1; 20],
            region_popularity: Default::default(),
            item_domain: vec![Domain::Video; 20],
            rerank: None,
            item_model: None,
        };
        let c = ServingModel {
            id: 3,
            bundle,
            affinity_weight: 0.0,
            params,
        }
        .into_champion();
        (c, m)
    }

    #[test]
    fn folding_in_a_trained_user_reproduces_their_exact_solve() {
        // With exact solves, a user's trained row is the solve against the
        // final item factors: the fold-in of the same pairs gives it back.
        let (c, m) = champion(true);
        let s = ChampionSolver::new(&c);
        let pairs: Vec<(String, f32)> = {
            let (cols, w) = m.row(5);
            cols.iter()
                .zip(w)
                .map(|(&i, &w)| (format!("v{i}"), w))
                .collect()
        };
        let got = fold_users(&c, &s, vec![("u5".into(), pairs)]);
        let (_, f, new) = &got[0];
        assert!(!new);
        let trained = c.recommender.bundle().model.user(5);
        for (a, b) in f.factors.iter().zip(trained) {
            assert!((a - b).abs() < 2e-3, "{:?} vs {:?}", f.factors, trained);
        }
        assert_eq!(f.seen, m.row(5).0.to_vec());
    }

    #[test]
    fn a_new_user_gets_the_taste_of_their_first_events() {
        let (c, _) = champion(false);
        let s = ChampionSolver::new(&c);
        let pairs = vec![
            ("v12".to_string(), 3.0),
            ("v15".to_string(), 2.0),
            ("v17".to_string(), 2.0),
            ("not-in-the-model".to_string(), 5.0),
        ];
        let got = fold_users(
            &c,
            &s,
            vec![
                ("newcomer".into(), pairs),
                ("only-unknown".into(), vec![("zzz".into(), 1.0)]),
            ],
        );
        assert_eq!(got.len(), 1, "no pair on the model's items: left out");
        let (user, f, new) = &got[0];
        assert_eq!((user.as_str(), *new), ("newcomer", true));
        let recs = c.recommender.recommend_taste(
            crate::ml::serve::Taste::Folded {
                factors: &f.factors,
                seen: &f.seen,
                weights: &f.weights,
                user: None,
            },
            5,
            Domain::Video,
            None,
            |_, _| {},
        );
        assert_eq!(recs.len(), 5);
        for r in &recs[..3] {
            let i: u32 = r.item[1..].parse().unwrap();
            assert!(i >= 10, "the second block's taste first: {recs:?}");
        }
        assert!(recs
            .iter()
            .all(|r| !["v12", "v15", "v17"].contains(&r.item.as_str())));
    }

    #[test]
    fn readers_beside_a_fold_in_see_each_user_against_the_champion_asked_for() {
        // Installs switch champions while readers look users up: a user read
        // against champion m always carries m's state (factors[0] == m), and
        // the items folded in are there before a user that names them.
        let live = Arc::new(Live::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (live, stop) = (live.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut seen = 0;
                    loop {
                        // A last pass after the installs: every user is there.
                        let last = stop.load(Ordering::Relaxed);
                        for m in 1..=3u64 {
                            for i in 0..200 {
                                let u = live.live_user(m, &format!("u{i}"));
                                if let Some(f) = u.folded {
                                    assert_eq!(f.factors[0], m as f32, "user u{i} against v{m}");
                                    assert!(
                                        u.items.is_some_and(|it| it.len() as f32 >= f.factors[1]),
                                        "the items u{i} names are there with them"
                                    );
                                    seen += 1;
                                }
                            }
                        }
                        if last {
                            return seen;
                        }
                    }
                })
            })
            .collect();
        for round in 0..60u64 {
            let model = round / 20 + 1;
            let n_items = round % 20 + 1;
            let mut items = FoldedItems::default();
            items.first_row = 10;
            items.factors_per_item = 2;
            for j in 0..n_items {
                items.set(&format!("new{j}"), Domain::Video, &[0.0, 0.0]);
            }
            let users = (0..200)
                .map(|i| {
                    let f = Folded {
                        factors: vec![model as f32, n_items as f32],
                        seen: vec![],
                        weights: vec![],
                        at_ms: 0,
                        new_pairs: 0,
                    };
                    (format!("u{i}"), f, false)
                })
                .collect();
            let fold = FoldResult {
                users,
                batches: 1,
                seconds: 0.01,
                upto: 0,
                items: Some(FoldedItemsUpdate {
                    items: Arc::new(items),
                    pending: 0,
                    dropped: 0,
                }),
            };
            live.install(model, fold, 1000, Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() >= 200, "the last pass finds every user");
        }
        let st = live.stats();
        assert_eq!((st.model, st.users, st.folded_items), (Some(3), 200, 20));
    }

    #[test]
    fn held_users_are_bounded_and_a_new_champion_starts_afresh() {
        let live = Live::default();
        let fold = |from: usize, to: usize| FoldResult {
            users: (from..to)
                .map(|i| {
                    let f = Folded {
                        factors: vec![0.0; 2],
                        seen: vec![],
                        weights: vec![],
                        at_ms: 0,
                        new_pairs: 0,
                    };
                    (format!("u{i}"), f, i % 2 == 0)
                })
                .collect(),
            batches: 1,
            seconds: 0.5,
            upto: 0,
            items: None,
        };
        let d = Duration::from_millis(20);
        live.install(1, fold(0, 100), 100, d);
        live.install(1, fold(100, 120), 100, d);
        let st = live.stats();
        assert_eq!((st.users, st.evicted, st.folded_total), (100, 20, 120));
        assert!(live.user(1, "u0").is_none(), "the least recent gave way");
        assert!(live.user(1, "u119").is_some());
        assert!(
            live.user(2, "u119").is_none(),
            "folded against another model"
        );
        assert_eq!(st.last_users_per_s, 40.0);
        live.install(2, fold(0, 3), 100, d);
        let st = live.stats();
        assert_eq!(
            (st.model, st.users, st.folded_since_champion),
            (Some(2), 3, 3)
        );
        assert_eq!(st.new_users, 2);
    }

    #[test]
    fn new_pairs_count_each_user_as_of_their_last_fold_and_restart_with_a_champion() {
        let live = Live::default();
        let fold = |users: &[(&str, u32)]| FoldResult {
            users: users
                .iter()
                .map(|(u, n)| {
                    let f = Folded {
                        factors: vec![0.0; 2],
                        seen: vec![],
                        weights: vec![],
                        at_ms: 0,
                        new_pairs: *n,
                    };
                    (u.to_string(), f, false)
                })
                .collect(),
            batches: 1,
            seconds: 0.1,
            upto: 0,
            items: None,
        };
        let d = Duration::from_millis(5);
        live.install(1, fold(&[("a", 3), ("b", 0), ("c", 5)]), 100, d);
        assert_eq!(live.stats().new_pairs_since_champion, 8);
        // a's count grows to 4, c's to 6: their last folds replace the first.
        live.install(1, fold(&[("a", 4), ("c", 6)]), 100, d);
        assert_eq!(live.stats().new_pairs_since_champion, 10);
        // Users let go past the bound still count.
        live.install(1, fold(&[("d", 1), ("e", 1), ("f", 1)]), 2, d);
        let st = live.stats();
        assert!(st.evicted > 0, "{st:?}");
        assert_eq!(st.new_pairs_since_champion, 13);
        // A new champion was trained on them: the count starts again.
        live.install(2, fold(&[("a", 1)]), 100, d);
        assert_eq!(live.stats().new_pairs_since_champion, 1);
        // The trainer's view of the same counts.
        let st = live.stats();
        assert_eq!(
            live.drift(),
            Drift {
                model: Some(2),
                folded_total: st.folded_total,
                new_pairs: 1
            }
        );
        assert_eq!(st.folded_total, 9);
    }

    #[test]
    fn seen_rows_are_bounded_over_all_shards_and_their_drops_outlast_a_champion() {
        let live = Live::default();
        let users: Vec<String> = (0..120).map(|i| format!("u{i}")).collect();
        live.note_seen(1, users.iter().map(|u| (u.as_str(), 7, 1)), 100);
        let st = live.stats();
        assert_eq!((st.seen_pending_users, st.seen_dropped), (100, 20));
        assert!(
            live.live_user(1, "u0").recent.is_empty(),
            "the least recent went"
        );
        assert_eq!(live.live_user(1, "u119").recent, vec![7]);
        let fold = FoldResult {
            users: vec![],
            batches: 1,
            seconds: 0.1,
            upto: 0,
            items: None,
        };
        live.install(2, fold, 100, Duration::ZERO);
        let st = live.stats();
        assert_eq!((st.seen_pending_users, st.seen_dropped), (0, 20));
    }

    #[test]
    fn held_pairs_follow_the_changes_as_a_fresh_read_would_see_them() {
        let (c, _) = champion(true);
        let s = ChampionSolver::new(&c);
        let w = [1.0, -0.5, 2.0, 0.0, 0.0];
        let video = |user: &str, item: &str, weight: f64, seq: u64| PairChange {
            user: user.into(),
            item: item.into(),
            agg: PairChangeAgg::Video(crate::store::PairAgg {
                weight,
                events: 1,
                positive_events: 1,
                max_feedback: weight,
                last_ts_ms: 0,
            }),
            seq,
        };
        let mut rows = PairRows::default();
        rows.follow(3);
        // Read whole, reflecting the batches below 10: two video pairs and an
        // item the champion does not have.
        let read = vec![
            ("v4".to_string(), 1.0f32),
            ("v1".to_string(), 2.0),
            ("new-title".to_string(), 9.0),
        ];
        rows.insert(&c, None, "u5".into(), &read, 10);
        // Batch 9's delta is in the read already; batches 10 and 11 add.
        rows.apply(&c, None, &video("u5", "v1", 7.0, 9), w);
        rows.apply(&c, None, &video("u5", "v1", 1.0, 10), w);
        rows.apply(&c, None, &video("u5", "v7", 0.5, 10), w);
        rows.apply(&c, None, &video("u5", "v1", 0.5, 11), w);
        rows.apply(&c, None, &video("u5", "v4", 0.5, 11), w);
        rows.apply(&c, None, &video("u9", "v2", 1.0, 11), w);
        assert!(!rows.holds("u9"), "a user not held is read when folded");
        let music = crate::store::MusicAgg {
            counts: [3, 1, 1, 0, 0],
            last_ts_ms: 0,
        };
        // The weight a listening edge gets: 3×1 − 1×0.5 + 1×2.
        assert_eq!(change_weight(&PairChangeAgg::Music(music), w), 4.5);
        // The same pairs read afresh after those commits.
        let fresh = vec![
            ("v1".to_string(), 3.5f32),
            ("v4".to_string(), 1.5),
            ("v7".to_string(), 0.5),
            ("new-title".to_string(), 9.0),
        ];
        let held = rows.rows("u5").unwrap();
        assert_eq!(held, champion_rows(&c, &fresh));
        assert_eq!(held, vec![(1, 3.5), (4, 1.5), (7, 0.5)]);
        let a = fold_rows(&c, &s, vec![("u5".into(), held)]);
        let b = fold_users(&c, &s, vec![("u5".into(), fresh)]);
        assert_eq!(a[0].1.factors, b[0].1.factors);
        // The champion was trained on u5's v1, v4 and v7 (of v0 v1 v4 v5 v7
        // v8); a user it never saw brings only new pairs.
        assert_eq!(a[0].1.new_pairs, 0);
        let a = fold_rows(
            &c,
            &s,
            vec![("u5".into(), vec![(1, 1.0), (2, 1.0), (3, 1.0)])],
        );
        assert_eq!(a[0].1.new_pairs, 2, "v2 and v3 are new to the champion");
        let a = fold_rows(&c, &s, vec![("stranger".into(), vec![(1, 1.0), (2, 1.0)])]);
        assert_eq!(a[0].1.new_pairs, 2);
        // Bounded: past the bound by a tenth, the least recently used go.
        for i in 0..30 {
            rows.insert(&c, None, format!("x{i}"), &read, 0);
        }
        let _ = rows.rows("u5");
        rows.trim(10);
        assert_eq!(rows.len(), 10);
        assert!(rows.holds("u5") && rows.holds("x29") && !rows.holds("x0"));
        // Another champion's rows are not these.
        rows.follow(4);
        assert!(rows.is_empty());
    }
}
