//! The fold-in worker: a thread of its own (CPU work, off the ingest path)
//! that follows the store's durable batches. The store's actor sends it the
//! pair changes each batch committed ([`Touched`]); it takes whatever has
//! queued up at once (a user touched by several batches is solved once), brings
//! each user's pairs up to date — the users it solved recently are held with
//! their pairs ([`PairRows`]) and follow the changes; any other is read from
//! the store (their rows and listening edges) — folds them into the serving
//! champion ([`crate::ml::live`]), records them as folded (a restart folds them
//! in again) and swaps them in for readers. A new champion gets the users held
//! against the old one re-solved against its own item factors. The thread
//! ends when the store's actor drops its sender (at shutdown).

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::domain::event::{Domain, Name};
use crate::ml::config::ModelsConfig;
use crate::ml::item_fold::ItemFold;
use crate::ml::live::{self, ChampionSolver, FoldResult, PairRows};
use crate::ml::serve::Serving;
use crate::store::{Flush, PairChange, PairChangeAgg, StoreView};
use crate::views::indexes::SharedIndexes;

/// Users whose listening edges a fold-in round copies per read of the
/// graph: the graph's writer waits for a read under way before it publishes
/// a batch, so a read stays short.
const EDGES_PER_READ: usize = 256;

/// The pair changes one durable batch committed (see
/// [`crate::store::PairChange`]), and when it was committed.
#[derive(Debug)]
pub struct Touched {
    pub changes: Vec<PairChange>,
    pub committed: Instant,
}

/// Where the store's actor sends what each batch touched.
pub type FoldSender = Sender<Touched>;

/// How long the worker waits for a batch before it looks for a new champion.
const IDLE: Duration = Duration::from_millis(200);

struct Worker {
    pool: Arc<rayon::ThreadPool>,
    rx: Receiver<Touched>,
    serving: Serving,
    view: StoreView,
    indexes: SharedIndexes,
    weights: [f64; 5],
    max_users: usize,
    solver: Option<ChampionSolver>,
    pairs: PairRows,
    items: ItemFold,
    /// This store's member id: a champion's snapshot says which of its
    /// batches it covers under that name.
    member: Option<String>,
    /// The last batch that changed each user's pairs (the users held, and
    /// those of the rounds since).
    last_batch: FxHashMap<Name, u64>,
    /// The group's publisher, told each round's users (none: no group).
    share: Option<crate::cluster::UserFeed>,
    /// Set once the store's actor has dropped its sender (the daemon stops):
    /// what is still queued is recorded, not solved (see [`Worker::close`]).
    closing: Arc<AtomicBool>,
}

/// Starts the worker; it runs until every sender is dropped. A thread in
/// front of it ("fold-in-seen") notes each batch's items as seen the moment
/// it arrives — lists leave them out at once, while the worker may still be
/// solving an earlier round — and hands the batch on.
pub fn spawn(
    cfg: &ModelsConfig,
    serving: Serving,
    view: StoreView,
    indexes: SharedIndexes,
    share: Option<crate::cluster::UserFeed>,
) -> std::io::Result<(FoldSender, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (to_worker, worker_rx) = std::sync::mpsc::channel();
    let closing = Arc::new(AtomicBool::new(false));
    let front = Front {
        rx,
        tx: to_worker,
        serving: serving.clone(),
        max_users: cfg.fold_in_max_users,
        closing: closing.clone(),
    };
    let w = Worker::new(cfg, worker_rx, serving, view, indexes, share, closing)?;
    // Both threads keep the class of the thread that starts the daemon; only
    // the solves run at background priority. (In the idle class a round's
    // bookkeeping waited on ingest for a core: in `bench freshness` the
    // refold's median went from about 190 to 760 ms, and the longer probes
    // let the data and the ingest queue grow.)
    let worker = std::thread::Builder::new()
        .name("fold-in".into())
        .spawn(move || w.run())?;
    let handle = std::thread::Builder::new()
        .name("fold-in-seen".into())
        .spawn(move || {
            front.run();
            // The worker ends once the front's sender is dropped.
            if worker.join().is_err() {
                tracing::error!("the fold-in worker panicked");
            }
        })?;
    Ok((tx, handle))
}

impl Worker {
    fn new(
        cfg: &ModelsConfig,
        rx: Receiver<Touched>,
        serving: Serving,
        view: StoreView,
        indexes: SharedIndexes,
        share: Option<crate::cluster::UserFeed>,
        closing: Arc<AtomicBool>,
    ) -> std::io::Result<Worker> {
        // The solves run in the background on a pool of their own, of fewer
        // threads than cores (see `ModelsConfig::fold_in_threads`).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.fold_in_solvers())
            .thread_name(|i| format!("fold-in-{i}"))
            .start_handler(|_| crate::domain::worker::background_priority())
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Worker {
            pool: Arc::new(pool),
            rx,
            serving,
            indexes,
            weights: cfg.event_weights.by_action(),
            max_users: cfg.fold_in_max_users,
            solver: None,
            pairs: PairRows::default(),
            items: ItemFold::new(cfg.fold_in_item_min_users, cfg.fold_in_max_items),
            member: view.member_id().ok(),
            last_batch: Default::default(),
            share,
            closing,
            view,
        })
    }
}

/// Notes what each batch's users watched, then hands the batch to the worker.
struct Front {
    rx: Receiver<Touched>,
    tx: Sender<Touched>,
    serving: Serving,
    max_users: usize,
    closing: Arc<AtomicBool>,
}

impl Front {
    fn run(self) {
        while let Ok(t) = self.rx.recv() {
            if let Some(c) = self.serving.get() {
                let items = self.serving.folded_items(&c);
                let rows: Vec<(&str, u32, u64)> = t
                    .changes
                    .iter()
                    .filter_map(|p| {
                        let row = live::item_row(&c, items.as_deref(), &p.item)?;
                        Some((p.user.as_str(), row, p.seq))
                    })
                    .collect();
                self.serving.live().note_seen(c.id, rows, self.max_users);
            }
            if self.tx.send(t).is_err() {
                return;
            }
        }
        // The store has closed: the worker records what is queued behind it.
        self.closing.store(true, Ordering::SeqCst);
    }
}

impl Worker {
    fn run(mut self) {
        loop {
            let mut round = Round::default();
            match self.rx.recv_timeout(IDLE) {
                Ok(t) => round.take(t),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(t) = self.rx.try_recv() {
                round.take(t);
            }
            if self.closing.load(Ordering::SeqCst) {
                self.close(round);
                continue;
            }
            // A round that panics costs its users' fold-in (they fold in at
            // their next event or the next champion), not the worker.
            let users = round.users.len();
            let pool = self.pool.clone();
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.install(|| self.round(round))
            }));
            match run {
                Ok(Flow::Go) => {}
                Ok(Flow::Stop) => return,
                Err(p) => {
                    tracing::error!(
                        "a fold-in round of {users} users failed: {}; the worker goes on \
                         (those users fold in at their next event or the next champion)",
                        crate::domain::worker::panic_message(p.as_ref())
                    );
                    // A new champion's solver, or the held pairs, may be half made:
                    // make them again.
                    self.solver = None;
                    self.pairs = PairRows::default();
                    self.items = ItemFold::new(self.items.min_users, self.items.max_items);
                    self.serving.live().failed();
                }
            }
        }
    }

    /// Folds in one round's users against the serving champion.
    fn round(&mut self, round: Round) -> Flow {
        let Round {
            mut users,
            changes,
            mut oldest,
            batches,
        } = round;
        // Until a first champion serves, no user is held and nothing is
        // noted: the first champion refolds the users it finds held with no
        // note (none then), so notes taken before it would be dropped
        // unread. (A champion, once set, is only ever replaced.)
        let Some(champion) = self.serving.get() else {
            return Flow::Go;
        };
        for c in &changes {
            match self.last_batch.get_mut(c.user.as_str()) {
                Some(b) => *b = (*b).max(c.seq),
                None => {
                    self.last_batch.insert(c.user.clone(), c.seq);
                }
            }
        }
        if self.last_batch.len() > 2 * self.max_users.max(1) {
            // Bounded: only the users held need it.
            let held: FxHashSet<String> = self.serving.live().user_ids().into_iter().collect();
            self.last_batch.retain(|u, _| held.contains(u.as_str()));
        }
        if self.solver.as_ref().map(|s| s.model) != Some(champion.id) {
            // A new champion (or the first since the start): the users held
            // against the one before, and those recorded as folded against
            // this one (before a restart), are solved against it.
            // Those whose every change is in the champion's training
            // snapshot serve their trained rows: only what came after is
            // folded in (so every member of a group serves them the same).
            let covered = self.covered(champion.id);
            let held = self.serving.live().user_ids();
            let mut again: FxHashSet<String> = held
                .into_iter()
                .filter(|u| {
                    self.last_batch
                        .get(u.as_str())
                        .is_none_or(|b| *b >= covered)
                })
                .collect();
            self.last_batch
                .retain(|u, b| *b >= covered && again.contains(u.as_str()));
            match self.view.folded_users(champion.id) {
                Ok(stored) => again.extend(stored),
                Err(e) => tracing::warn!("cannot read the users folded in before: {e}"),
            }
            if !again.is_empty() {
                tracing::info!(
                    "folding {} users into model v{} (held or recorded before)",
                    again.len(),
                    champion.id
                );
            }
            users.extend(again);
            let t = Instant::now();
            self.solver = Some(ChampionSolver::new(&champion));
            tracing::debug!("fold-in solver for v{}: {:?}", champion.id, t.elapsed());
            oldest.get_or_insert_with(Instant::now);
        }
        if users.is_empty() {
            return Flow::Go;
        }
        let Some(solver) = &self.solver else {
            return Flow::Go;
        };
        let t = Instant::now();
        // Items the champion does not have are followed, from the changes and
        // from the pairs of the users read whole (after a restart, those of
        // the users folded in before it: so the items folded in then fold in
        // again). Those with enough users get factors from their users'
        // current ones (folded, else trained) before the users are solved, so
        // what a user has seen holds them.
        self.items.follow(&champion);
        self.pairs.follow(champion.id);
        let r = &champion.recommender;
        for c in &changes {
            if r.item_row(&c.item).is_none() {
                let (domain, delta) = match c.agg {
                    PairChangeAgg::Video(_) => (Domain::Video, true),
                    PairChangeAgg::Music(_) => (Domain::Music, false),
                };
                let w = live::change_weight(&c.agg, self.weights);
                self.items.observe(&c.item, domain, &c.user, w, delta);
            }
        }
        // The held users follow the changes in commit order; the others are
        // read whole (a read has every change committed before it).
        let misses: Vec<&String> = users.iter().filter(|u| !self.pairs.holds(u)).collect();
        let closing = &self.closing;
        // Their listening edges first, from the graph (memory only, a few
        // hundred users per read); then the store's reads, outside the
        // graph's read: the graph's writer would wait for them.
        let mut edges = Vec::with_capacity(misses.len());
        for chunk in misses.chunks(EDGES_PER_READ) {
            let read = self.indexes.with_graph(|graph| {
                edges.extend(chunk.iter().map(|u| graph.edges_of(u)));
            });
            if read.is_err() {
                tracing::error!("the indexes are poisoned: fold-in stops");
                return Flow::Stop;
            }
        }
        let read = misses
            .into_par_iter()
            .zip(edges)
            .filter_map(|(u, edges)| {
                // A stop while a long round reads (a new champion's
                // refold) ends the reads: see below.
                if closing.load(Ordering::Relaxed) {
                    return None;
                }
                match live::user_pairs_with_edges(&self.view, edges, u, self.weights) {
                    Ok(p) => Some((u.clone(), p)),
                    Err(e) => {
                        tracing::warn!("cannot read the pairs of {u:?} to fold in: {e}");
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        if crate::domain::worker::inject("fold-in") {
            panic!("injected fault (PP_FAULT_PANIC_ONCE=fold-in)");
        }
        let (n_read, t_read) = (read.len(), t.elapsed());
        if self.closing.load(Ordering::SeqCst) {
            // The daemon stops: this round's users are recorded, not solved.
            drop(read);
            self.close(Round {
                users,
                batches,
                ..Round::default()
            });
            return Flow::Go;
        }
        for (u, (pairs, _)) in &read {
            for (item, w, domain) in pairs {
                if r.item_row(item).is_none() {
                    self.items.observe(item, *domain, u, *w, false);
                }
            }
        }
        let solved = {
            let live = self.serving.live();
            let model = &r.bundle().model;
            self.items.solve(|u, into| {
                if let Some(f) = live.user(champion.id, u) {
                    into.extend_from_slice(&f.factors);
                    return true;
                }
                match r.user_row(u) {
                    Some(row) => {
                        into.extend_from_slice(model.user(row as usize));
                        true
                    }
                    None => false,
                }
            })
        };
        let items = self.items.items();
        for c in &changes {
            self.pairs.apply(&champion, Some(&items), c, self.weights);
        }
        for (row, item_users) in &solved.new {
            for (u, w) in item_users {
                if self.pairs.add_row(u, *row, *w) {
                    users.insert(u.clone());
                }
            }
        }
        for (u, (pairs, upto)) in read {
            let pairs: Vec<(String, f32)> = pairs.into_iter().map(|(i, w, _)| (i, w)).collect();
            self.pairs.insert(&champion, Some(&items), u, &pairs, upto);
        }
        let t_items = t.elapsed();
        let users: Vec<String> = users.into_iter().collect();
        let input: Vec<(String, Vec<(u32, f32)>)> = users
            .into_iter()
            .filter_map(|u| {
                let rows = self.pairs.rows(&u)?;
                Some((u, rows))
            })
            .collect();
        self.pairs.trim(self.max_users);
        let t_rows = t.elapsed();
        let folded = live::fold_rows(&champion, solver, input);
        let t_solve = t.elapsed();
        // Recorded after they serve: the record only tells a restart whom to
        // fold in again, so only users not yet held against this champion
        // are (the others were recorded when they first were), and with the
        // store's next batch, not flushed here. Every round flushed a mark
        // per user it solved: a quarter of the worker's time in `bench
        // freshness` (median 28 ms a round), for marks that had not changed.
        let record: Vec<(String, i64)> = {
            let live = self.serving.live();
            folded
                .iter()
                .filter(|(u, _, _)| live.user(champion.id, u).is_none())
                .map(|(u, f, _)| (u.clone(), f.at_ms))
                .collect()
        };
        let result = FoldResult {
            users: folded,
            batches,
            seconds: t.elapsed().as_secs_f64(),
            upto: changes.iter().map(|c| c.seq + 1).max().unwrap_or(0),
            items: Some(live::FoldedItemsUpdate {
                items: items.clone(),
                pending: self.items.pending(),
                dropped: self.items.dropped,
            }),
        };
        let latency = oldest.map_or(Duration::ZERO, |o| o.elapsed());
        let (n_users, n_changes) = (result.users.len(), changes.len());
        if let Some(tx) = &self.share {
            let peers = result
                .users
                .iter()
                .map(|(u, f, _)| (u.clone(), live::to_peer(&champion, Some(&items), f)))
                .collect();
            if tx.send(peers).is_err() {
                tracing::warn!("the group's publisher stopped: other members serve these users their trained rows");
                self.share = None;
            }
        }
        self.serving
            .live()
            .install(champion.id, result, self.max_users, latency);
        let t_installed = t.elapsed();
        if let Err(e) = live::record_folded(&self.view, champion.id, &record, Flush::WithNextBatch)
        {
            tracing::warn!(
                "cannot record the users folded in (a restart serves their trained rows): {e}"
            );
        }
        tracing::debug!(
            "fold-in round: {batches} batches, {n_changes} changes, {n_users} users \
             ({n_read} read); read {t_read:?}, items {t_items:?}, rows {t_rows:?}, \
             solved {t_solve:?}, installed {t_installed:?}, recorded {:?}; oldest commit \
             {latency:?} before serving",
            t.elapsed()
        );
        Flow::Go
    }
}

impl Worker {
    /// At shutdown: the users of what is still queued are recorded as folded
    /// against the serving champion instead of solved (a start folds the
    /// recorded users in again, from their stored pairs), so the daemon stops
    /// in moments however much is queued. A new champion's refold of the
    /// users held is not started either: they serve its trained rows, which
    /// cover what was stored when it trained. (A refold of 50k users after
    /// a retrain held a stop for about a minute, past `run`'s 30 s limit.)
    fn close(&mut self, round: Round) {
        if round.users.is_empty() {
            return;
        }
        let Some(champion) = self.serving.get() else {
            return;
        };
        let now = crate::domain::timefmt::now_ms();
        let record: Vec<(String, i64)> = round.users.into_iter().map(|u| (u, now)).collect();
        match live::record_folded(&self.view, champion.id, &record, Flush::Now) {
            Ok(()) => tracing::info!(
                "stopping: {} users of {} queued batches recorded to fold in at the next start",
                record.len(),
                round.batches
            ),
            Err(e) => tracing::warn!(
                "stopping: cannot record {} queued users to fold in at the next start \
                 (they serve their trained rows until their next event): {e}",
                record.len()
            ),
        }
    }

    /// Every batch of this store below the answer is in the champion's training snapshot.
    fn covered(&self, model: u64) -> u64 {
        let Some(member) = &self.member else { return 0 };
        match crate::ml::version::champion(&self.view) {
            Ok(Some(v)) if v.id == model => v.snapshot().covered.get(member).copied().unwrap_or(0),
            _ => 0,
        }
    }
}

/// What queued up since the last round: the users touched (each once), the
/// changes in commit order, the oldest batch's commit, and how many batches.
#[derive(Default)]
struct Round {
    users: FxHashSet<String>,
    changes: Vec<PairChange>,
    oldest: Option<Instant>,
    batches: u64,
}

impl Round {
    fn take(&mut self, t: Touched) {
        self.oldest = Some(self.oldest.map_or(t.committed, |o| o.min(t.committed)));
        for c in &t.changes {
            if !self.users.contains(c.user.as_str()) {
                self.users.insert(c.user.to_string());
            }
        }
        self.changes.extend(t.changes);
        self.batches += 1;
    }
}

/// Whether the worker goes on after a round.
enum Flow {
    Go,
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Event;
    use crate::domain::record::{Outcome, Processed, SourcePos};
    use crate::ml::als::{AlsModel, AlsParams};
    use crate::ml::serve::{Bundle, ServingModel};
    use crate::ml::sparse::Csr;
    use crate::store::Store;
    use crate::synth::generate::{video_id, VideoGen, World};

    const VIDEOS: usize = 10;

    /// A champion of the world's videos and no users.
    fn champion() -> ServingModel {
        let f = 4;
        let items: Vec<String> = (0..VIDEOS).map(video_id).collect();
        ServingModel {
            id: 7,
            bundle: Bundle {
                model: AlsModel {
                    factors: f,
                    users: 0,
                    items: VIDEOS,
                    user_factors: Vec::new(),
                    item_factors: (0..VIDEOS * f)
                        .map(|i| 0.1 + (i % 7) as f32 * 0.1)
                        .collect(),
                },
                users: Vec::new(),
                items,
                seen: Csr::from_triplets(0, VIDEOS, &[]),
                item_genre: vec![String::new(); VIDEOS],
                popularity: vec![1; VIDEOS],
                region_popularity: Default::default(),
                item_domain: vec![Domain::Video; VIDEOS],
                rerank: None,
                item_model: None,
            },
            affinity_weight: 0.0,
            params: AlsParams {
                factors: f,
                exact: true,
                ..AlsParams::default()
            },
        }
    }

    /// Stores 3 batches of views in `store` and queues what each committed
    /// for a worker (closing at once if `closing`); answers the worker and
    /// the users of the batches.
    fn queued(store: &mut Store, serving: &Serving, closing: bool) -> (Worker, Vec<String>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Worker::new(
            &ModelsConfig::default(),
            rx,
            serving.clone(),
            store.view(),
            Default::default(),
            None,
            Arc::new(AtomicBool::new(closing)),
        )
        .unwrap();
        let mut g = VideoGen::new(World::new(30, VIDEOS, 3), 3, 1_735_689_600_000, 50);
        let mut users = FxHashSet::default();
        for b in 0..3i64 {
            let records = (0..50)
                .map(|i| {
                    let v = g.next_event();
                    users.insert(v.user_id.to_string());
                    Processed {
                        pos: SourcePos {
                            topic: Arc::from("v"),
                            partition: 0,
                            offset: b * 50 + i,
                        },
                        origin: None,
                        headers: Default::default(),
                        outcome: Outcome::Valid(Event::Video(v)),
                    }
                })
                .collect();
            let c = store
                .apply("t", crate::store::prepare::prepare(records))
                .unwrap();
            tx.send(Touched {
                changes: c.pairs,
                committed: Instant::now(),
            })
            .unwrap();
        }
        let mut users: Vec<String> = users.into_iter().collect();
        users.sort();
        (w, users)
    }

    /// Runs a worker over 3 queued batches until its sender is gone; answers
    /// the serving state, the batches' users and the users recorded as folded.
    fn run_queued(closing: bool) -> (Serving, Vec<String>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 16).unwrap();
        let serving = Serving::default();
        serving.set(champion());
        let (w, users) = queued(&mut store, &serving, closing);
        w.run();
        let mut recorded = store.view().folded_users(7).unwrap();
        recorded.sort();
        (serving, users, recorded)
    }

    /// While the daemon runs, what is queued is solved: each user serves
    /// folded factors and is recorded as folded.
    #[test]
    fn queued_batches_are_solved_while_the_daemon_runs() {
        let (serving, users, recorded) = run_queued(false);
        for u in &users {
            assert!(serving.live().user(7, u).is_some(), "{u} was not solved");
        }
        assert_eq!(recorded, users);
    }

    /// What is queued when the daemon stops is recorded for the next start
    /// (every user of it), not solved: a stop does not wait for the solves.
    #[test]
    fn what_is_queued_at_a_stop_is_recorded_for_the_next_start_not_solved() {
        let (serving, users, recorded) = run_queued(true);
        for u in &users {
            assert!(serving.live().user(7, u).is_none(), "{u} was solved");
        }
        assert_eq!(recorded, users);
    }
}
