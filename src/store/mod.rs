//! The sled store. Each input batch — its events (one log segment per
//! partition), the deltas of the aggregates (QoE and engagement counters, pair
//! aggregates), catalog upserts, dead letters and the next source offset per
//! partition — is one atomic `apply_batch` on one tree, flushed before it is
//! acknowledged. A record whose offset is below its partition's stored next
//! offset was already stored and is skipped: replays never count twice.
//! Aggregates are served from memory (see [`state`]), except the per (user,
//! video) pairs: as many as the data has pairs, so each batch writes their
//! deltas as one run and a compactor folds the runs into per-user chunks off
//! the write path (see [`pairs`]); reading every pair costs O(pairs).

pub mod bounds;
pub mod check;
mod checkpoint;
mod compact;
pub mod config;
pub mod eventlog;
pub mod generation;
pub mod keys;
mod migrate;
pub mod models;
mod namespaces;
pub mod pairs;
pub mod plan;
pub mod prepare;
mod read;
mod recovery;
pub mod retention;
pub mod rewrite;
pub mod rollup;
mod scan;
pub mod segment;
pub mod slots;
mod state;
mod stats;

use std::collections::HashMap;

use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::domain::event::{Event, Name};
use crate::domain::record::{Outcome, Processed};

pub use prepare::{prepare, prepare_with, Prepared};
pub use read::{dead_letter_id, DeadLetter, Flush, LoggedEvent, QoeDim};
pub use slots::{MusicAgg, PairAgg, Qoe};
pub use stats::{CatalogCounts, QoeStats, Stats, StatsSection};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}; is another playpulse using this data dir? (stop it, or pass another --data-dir)")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store write failed: {0}; check free disk space and permissions of the data dir")]
    Sled(sled::Error),
    #[error("the store's files are damaged ({0}): run `playpulse check --data-dir DIR` to see what, and `--repair` to set it aside")]
    Damaged(String),
    #[error("store entry {key} is unreadable: {message}; run `playpulse check --data-dir DIR` to see what is damaged, and `--repair` to set it aside")]
    Corrupt { key: String, message: String },
    #[error("the store at {path} is damaged past what sled can recover (its log does not read back): restore the data dir from a snapshot (`ctl snapshot`), or move it aside to start empty")]
    Unrecoverable { path: PathBuf },
    #[error("the disk under {path} has {free_mb} MiB free, less than store.min_free_mb = {min_mb} plus this write's {write_mb} MiB: nothing was written; free some space (or lower store.min_free_mb) and start again")]
    DiskFull {
        path: PathBuf,
        free_mb: u64,
        min_mb: u64,
        write_mb: u64,
    },
    #[error("the store at {path} has layout {found}, newer than this playpulse reads ({known}): run the playpulse that wrote it, or a newer one")]
    NewerLayout {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("cannot write the log file {path}: {source}; check free disk space and permissions of the data dir")]
    EventLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{id:?}: {rule}")]
    BadId { id: String, rule: &'static str },
    #[error("{0}")]
    Refused(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        match e {
            sled::Error::Corruption { .. } => StoreError::Damaged(e.to_string()),
            e => StoreError::Sled(e),
        }
    }
}

/// Journal bytes since the last checkpoint that trigger the next one (at least).
const MIN_CHECKPOINT_JOURNAL_BYTES: usize = 64 << 20;

/// Largest value written, so sled keeps every value inline in its log (it writes
/// values past ~128 KiB as one file each, which costs far more).
const MAX_VALUE_BYTES: usize = 64 << 10;
/// The runs log's files are this large at most: one goes once the journal
/// parts and pair runs in it are all deleted.
const RUNS_ROLL: eventlog::Roll = eventlog::Roll {
    bytes: 16 << 20,
    age_ms: 0,
};

/// What the status shows of the store (see [`Store::status`]).
#[derive(Debug, Clone, Default)]
pub struct StoreStatus {
    pub offsets: Vec<(String, i32, i64)>,
    pub damage: Vec<(String, String)>,
    pub quarantined: usize,
    pub limits: bounds::Limits,
    pub tracked: bounds::Tracked,
    pub folded_video_events: u64,
    pub folded_listening_events: u64,
    pub retention: retention::Retention,
    pub retained: retention::Retained,
    pub pairs: PairsStatus,
    /// sled's files: their size, and the rewrites that keep it level.
    pub size_on_disk: u64,
    pub rewrite: rewrite::RewriteStatus,
    /// The runs log's files (journal parts and pair runs): how many, and
    /// their bytes on disk.
    pub runs_files: (u64, u64),
}

/// The video pairs not yet in chunks (see [`pairs`]) and the compactor's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct PairsStatus {
    /// Deltas held in memory, and of those being compacted.
    pub held: usize,
    pub compacting: usize,
    pub compactions: u64,
    pub chunks_written: u64,
    pub merged_users: u64,
    pub last_compaction_s: f64,
    /// Times ingest waited for the compactor.
    pub ingest_waits: u64,
}

/// Writes that register a new offset namespace.
type Registration = Vec<(Vec<u8>, Vec<u8>)>;

/// A committed batch: what it wrote, and its records with whether each was new
/// (`fresh[i]`), for the views fed after the commit.
#[derive(Debug, Default)]
pub struct Committed {
    pub report: ApplyReport,
    pub records: Vec<Processed>,
    pub fresh: Vec<bool>,
    /// Every (user, item) pair the batch changed (see [`PairChange`]).
    pub pairs: Vec<PairChange>,
}

/// A (user, item) pair a batch changed: a video pair's *delta* (what the
/// batch's events add; see [`pairs`]), a listening pair's aggregate after the
/// batch; and the batch's sequence number (a read of a user's pairs says the
/// first it does not reflect: [`pairs::UserPairs::upto`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PairChange {
    pub user: Name,
    pub item: Name,
    pub agg: PairChangeAgg,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PairChangeAgg {
    /// The batch's delta of the pair.
    Video(PairAgg),
    /// The pair's aggregate after the batch.
    Music(MusicAgg),
}

/// The stored rows a plan reads, from the tree.
struct TreeRows<'a>(&'a sled::Tree);

impl plan::Rows for TreeRows<'_> {
    fn catalog_ts(&mut self, key: &[u8]) -> Result<Option<i64>, StoreError> {
        Ok(self
            .0
            .get(key)?
            .and_then(|b| Event::decode(&b).ok())
            .map(|e| plan::catalog_ts(&e)))
    }
}

/// What one applied batch did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApplyReport {
    pub stored: u64,
    pub rejected: u64,
    /// Records at or below the stored offsets (redelivered): skipped.
    pub duplicates_skipped: u64,
    /// (topic, partition, next offset) written in this batch.
    pub offsets: Vec<(String, i32, i64)>,
    /// Time spent preparing the write (encoding, aggregating), in sled's
    /// `apply_batch`, and in the flush, nanoseconds.
    pub prepare_ns: u64,
    pub write_ns: u64,
    pub flush_ns: u64,
}

/// A partition found holding fewer records than the store read of it:
/// (topic, partition, the store's next offset, the partition's high watermark).
pub type PartitionReset = (String, i32, i64, i64);

/// The part of the store any thread may read (and that model versions and dead
/// letters are written through): events, dead letters, catalog, models. A
/// [`Store`] derefs to it; [`Store::view`] hands a clone to other threads, so long
/// reads (exports) never hold up ingestion.
#[derive(Clone)]
pub struct StoreView {
    /// The current generation of sled's files (see [`generation`]).
    current: std::sync::Arc<std::sync::RwLock<std::sync::Arc<generation::Handles>>>,
    /// Every write holds this shared; a rewrite holds it alone to subscribe to
    /// the changes it copies past and to apply the last of them, so no write
    /// lands in a generation being replaced (see [`rewrite`]).
    writes: std::sync::Arc<std::sync::RwLock<()>>,
    /// What reads found damaged since the store opened (what → why).
    damaged: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
    /// Set by the first failed write: nothing is written (or flushed) after it.
    failed: std::sync::Arc<std::sync::OnceLock<String>>,
    /// The video pairs not yet in chunks, and the compactor's signals.
    pairs: std::sync::Arc<pairs::Shared>,
    /// The event log's files (see [`eventlog`]).
    log: std::sync::Arc<eventlog::LogFiles>,
    /// The runs log's files: the journal parts and pair runs.
    runs: std::sync::Arc<eventlog::LogFiles>,
    /// The rollup deltas not yet in chunks, and the rollup compactor's signals.
    rollups: std::sync::Arc<rollup::Shared>,
}

pub struct Store {
    view: StoreView,
    /// The current generation's directory (see [`generation`]).
    path: PathBuf,
    /// The data dir, and the current generation's number.
    dir: PathBuf,
    generation: u64,
    /// sled's cache, MiB (each generation opens with it).
    cache_mb: u64,
    /// The rewrites of this run (see [`rewrite`]).
    rewrites: rewrite::Rewrites,
    /// Next offset per (namespace, topic, partition), as stored.
    offsets: HashMap<(String, String, i32), i64>,
    /// Each offset namespace's store-local number (see `keys::position`).
    namespaces: HashMap<String, u32>,
    /// Bounds on the ids held (see [`bounds`]), and how many are.
    limits: bounds::Limits,
    tracked: bounds::Tracked,
    /// The aggregates (durable through the journal and checkpoints).
    state: state::State,
    /// Next journal sequence number.
    seq: u64,
    /// Current checkpoint generation.
    gen: u64,
    /// Journal bytes written since the last checkpoint.
    journal_bytes: usize,
    /// What the event log may hold, and what it holds (see [`retention`]).
    retention: retention::Retention,
    retained: retention::Retained,
    /// The pair compactor (see [`compact`]) and the free space it keeps.
    compactor: Option<std::thread::JoinHandle<()>>,
    /// The rollup compactor (see [`rollup::compact`]).
    rollup_compactor: Option<std::thread::JoinHandle<()>>,
    /// The tuning events were replayed into the rollups with at open, until
    /// a batch is applied (see [`Store::set_rollup_tuning`]).
    rollups_replayed_with: Option<rollup::Tuning>,
    min_free: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Appends segments to the event log's files, and how many segments each
    /// file holds (a file none of whose segments is left is removed).
    log: eventlog::LogWriter,
    log_live: std::collections::BTreeMap<u64, u64>,
    log_roll: eventlog::Roll,
    /// Appends the journal parts and pair runs to the runs log's files, and
    /// when it starts a new one.
    runs: eventlog::LogWriter,
    runs_roll: eventlog::Roll,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_rewrite();
        {
            let mut o = self.view.pairs.lock();
            o.stop = true;
            self.view.pairs.changed.notify_all();
        }
        if let Some(h) = self.compactor.take() {
            let _ = h.join();
        }
        {
            let mut h = self.view.rollups.lock();
            h.stop = true;
            h.closing = true;
            self.view.rollups.changed.notify_all();
        }
        if let Some(h) = self.rollup_compactor.take() {
            let _ = h.join();
        }
    }
}

impl std::ops::Deref for Store {
    type Target = StoreView;

    fn deref(&self) -> &StoreView {
        &self.view
    }
}

impl std::fmt::Debug for StoreView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreView")
    }
}

impl StoreView {
    /// Refuses writes once one has failed.
    fn writable(&self) -> Result<(), StoreError> {
        match self.failed.get() {
            Some(why) => Err(StoreError::Refused(format!(
                "the store stopped writing after a failed write ({why}); restart the daemon once the cause is fixed"
            ))),
            None => Ok(()),
        }
    }

    /// After a failed write, sled may hold part of that write in memory: it
    /// must never reach the disk. No write or flush follows, and sled's final
    /// flush (when its last handle drops) is kept from running.
    fn poison(&self, e: &dyn std::fmt::Display) {
        if self.failed.set(e.to_string()).is_ok() {
            self.tree().0.forget();
            tracing::error!("store write failed ({e}): the store takes no more writes");
        }
    }

    /// A result of sled's, poisoning the store on an error.
    fn guard<T>(&self, r: sled::Result<T>) -> Result<T, StoreError> {
        r.map_err(|e| {
            self.poison(&e);
            StoreError::from(e)
        })
    }

    /// Applies `batch` atomically and flushes it (see [`StoreView::poison`]).
    fn commit(&self, batch: sled::Batch) -> Result<(), StoreError> {
        let _write = self.write_gate();
        self.writable()?;
        let tree = self.tree();
        self.guard(tree.apply_batch(batch))?;
        self.guard(tree.db().flush())?;
        Ok(())
    }

    /// The generation that reads and writes go to now.
    pub(crate) fn tree(&self) -> generation::Held {
        generation::Held(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// Held (shared) across a write, so no rewrite copies the store meanwhile.
    fn write_gate(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.writes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `batch` atomically without flushing it: sled recovers a prefix
    /// of its log, so a later flushed write makes it durable first.
    fn apply_unflushed(&self, batch: sled::Batch) -> Result<(), StoreError> {
        let _write = self.write_gate();
        self.writable()?;
        self.guard(self.tree().apply_batch(batch))
    }

    /// Refuses a background write of about `bytes` (a compaction named
    /// `what`) that would leave less than `min_free_bytes` on the store's disk
    /// (twice its size, for sled's log): the store takes no write after it.
    fn refuse_unless_room(
        &self,
        path: &Path,
        min_free_bytes: u64,
        bytes: usize,
        what: &str,
    ) -> Result<(), StoreError> {
        if let Some(free) = bounds::short_of_room(path, min_free_bytes, bytes as u64) {
            let why = format!(
                "the disk has {} MiB free, less than store.min_free_mb = {} plus the {what}'s {} MiB",
                free >> 20,
                min_free_bytes >> 20,
                (bytes as u64).div_ceil(1 << 20)
            );
            // Nothing may be written after a refused write (see `Store::check_space`).
            let _ = self.failed.set(why.clone());
            return Err(StoreError::Refused(why));
        }
        Ok(())
    }

    /// The first failed write, if one failed.
    pub fn write_failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    /// Removes dead letters by id (after a replay, or a purge); answers how many
    /// existed.
    pub fn remove_dead_letters(&self, ids: &[String]) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for id in ids {
            let k = read::dead_letter_key(id)?;
            if self.tree().contains_key(&k)? {
                n += 1;
                batch.remove(k);
            }
        }
        self.commit(batch)?;
        Ok(n)
    }
}

/// The ids of the event log's files, each counted as holding more segments
/// than can be deleted (so that none is removed).
fn list_ids(files: &eventlog::LogFiles) -> std::collections::BTreeMap<u64, u64> {
    files
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|(id, _)| (id, u64::MAX))
        .collect()
}

/// The writer of the log in `dir` (files ending in `.ext`), its files cut
/// back to the committed end `tree` holds under `head_key`.
fn recover_log(
    tree: &sled::Tree,
    dir: &Path,
    ext: &'static str,
    head_key: &[u8],
) -> Result<eventlog::LogWriter, StoreError> {
    let head = match tree.get(head_key)? {
        Some(v) => Some(
            eventlog::Head::decode(&v).ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(head_key).into_owned(),
                message: format!(
                    "the head of the log in {} has the wrong length",
                    dir.display()
                ),
            })?,
        ),
        None => None,
    };
    let (log, _) =
        eventlog::LogWriter::recover(dir, ext, head).map_err(|source| StoreError::EventLog {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(log)
}

/// Removes file `id` of a log (and its read handle); `why` goes to the debug log.
fn remove_file_of(files: &eventlog::LogFiles, id: u64, why: &str) {
    let path = files.path_of(id);
    files.forget(id);
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::debug!("removed {}: {why}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
    }
}

/// Opens a generation's sled files (see [`open_waiting_for_lock`]). Every
/// write is flushed by the store itself, never in the background: after a
/// failed write nothing more may reach the disk (see `StoreView::poison`).
fn open_sled(path: &Path, cache_mb: u64) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(path)
        .flush_every_ms(None)
        .cache_capacity(cache_mb.saturating_mul(1 << 20));
    // sled's recovery panics on some damage to its log: that is a damaged
    // store to report, not a crash.
    match open_waiting_for_lock(&config) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Corruption { .. })) | Err(_) => Err(StoreError::Unrecoverable {
            path: path.to_path_buf(),
        }),
        Ok(Err(source)) => Err(StoreError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// How long an open waits for the store's file lock: a handle of this process
/// that was just dropped can hold it a moment longer (sled's I/O threads finish
/// their last writes first); another daemon holds it for good.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens sled, retrying while its file lock is held (see [`LOCK_WAIT`]). sled's
/// recovery panics on some damage to its log: that comes back as `Err(_)`.
pub(crate) fn open_waiting_for_lock(
    config: &sled::Config,
) -> std::thread::Result<Result<sled::Db, sled::Error>> {
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        let locked = matches!(&opened, Ok(Err(sled::Error::Io(e)))
            if e.to_string().contains("could not acquire lock"));
        if !locked || start.elapsed() >= LOCK_WAIT {
            return opened;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(200));
    }
}

impl Store {
    /// A handle for reads on other threads.
    pub fn view(&self) -> StoreView {
        self.view.clone()
    }

    pub fn open(dir: &Path, cache_mb: u64) -> Result<Store, StoreError> {
        let (generation, path) = generation::current(dir)?;
        recovery::remove_unfinished_snapshots(&path);
        let db = open_sled(&path, cache_mb)?;
        // Past the lock: no other process uses this data dir's store.
        for name in generation::tidy(dir, generation) {
            tracing::info!("removed {name}: a store rewrite replaced it, or did not finish");
        }
        let tree = db.open_tree("main").map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let encoding = migrate::positions(&tree, &path)?;
        let mut offsets = HashMap::new();
        for item in tree.scan_prefix(keys::OFFSET) {
            let (k, v) = item?;
            let rest = &k[keys::OFFSET.len()..];
            let parsed = (|| {
                let i = rest.iter().position(|&b| b == 0)?;
                let ns = String::from_utf8(rest[..i].to_vec()).ok()?;
                let tail = &rest[i + 1..];
                let j = tail.iter().position(|&b| b == 0)?;
                let topic = String::from_utf8(tail[..j].to_vec()).ok()?;
                let partition = u32::from_be_bytes(tail.get(j + 1..j + 5)?.try_into().ok()?) as i32;
                let next = i64::from_be_bytes(v.as_ref().try_into().ok()?);
                Some(((ns, topic, partition), next))
            })();
            let (key, next) = parsed.ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                message: "offset entry has the wrong shape".into(),
            })?;
            offsets.insert(key, next);
        }
        let namespaces = migrate::namespaces(&tree)?;
        let log_dir = dir.join(eventlog::DIR);
        let log = recover_log(&tree, &log_dir, eventlog::EXT, keys::EVENT_LOG_HEAD)?;
        let runs_dir = dir.join(eventlog::RUNS_DIR);
        let runs = recover_log(&tree, &runs_dir, eventlog::RUNS_EXT, keys::RUNS_LOG_HEAD)?;
        let mut store = Store {
            view: StoreView {
                current: std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(
                    generation::Handles::new(db, tree, path.clone()),
                ))),
                writes: Default::default(),
                damaged: Default::default(),
                failed: Default::default(),
                pairs: Default::default(),
                log: std::sync::Arc::new(eventlog::LogFiles::new(log_dir)),
                runs: std::sync::Arc::new(eventlog::LogFiles::with_ext(
                    runs_dir,
                    eventlog::RUNS_EXT,
                )),
                rollups: Default::default(),
            },
            path,
            dir: dir.to_path_buf(),
            generation,
            cache_mb,
            rewrites: Default::default(),
            offsets,
            namespaces,
            limits: bounds::Limits::default(),
            tracked: bounds::Tracked::default(),
            state: state::State::default(),
            seq: 0,
            gen: 0,
            journal_bytes: 0,
            retention: retention::Retention::default(),
            retained: retention::Retained::default(),
            compactor: None,
            rollup_compactor: None,
            rollups_replayed_with: None,
            min_free: Default::default(),
            log,
            log_live: Default::default(),
            log_roll: eventlog::Roll::default(),
            runs,
            runs_roll: RUNS_ROLL,
        };
        store.drop_fragments()?;
        store.count_log_files()?;
        store.load_state(encoding)?;
        migrate::pair_chunks(&store.view, store.seq)?;
        compact::undo_unfinished(&store.view)?;
        store.load_pair_runs()?;
        store.sweep_runs()?;
        store.load_rollups(rollup::Tuning::default())?;
        store.retained = retention::load(&store.view, crate::domain::timefmt::now_ms())?;
        store.load_rewrite_base()?;
        if encoding == state::Encoding::Legacy {
            // The aggregates in today's encoding, and the layout mark, in one step.
            store.write_checkpoint(true)?;
        }
        store.tracked = bounds::Tracked::of(&store.state);
        let (view, path, min_free) = (
            store.view.clone(),
            store.dir.clone(),
            store.min_free.clone(),
        );
        let compactor = std::thread::Builder::new()
            .name("pair-compactor".into())
            .spawn(move || {
                crate::domain::worker::background_priority();
                compact::run(view, path, min_free)
            })
            .map_err(|e| StoreError::Refused(format!("cannot start the pair compactor: {e}")))?;
        store.compactor = Some(compactor);
        let (view, shared, path, min_free) = (
            store.view.clone(),
            store.view.rollups.clone(),
            store.dir.clone(),
            store.min_free.clone(),
        );
        let rollup_compactor = std::thread::Builder::new()
            .name("rollup-compactor".into())
            .spawn(move || {
                crate::domain::worker::background_priority();
                rollup::compact::run(view, shared, path, min_free)
            })
            .map_err(|e| StoreError::Refused(format!("cannot start the rollup compactor: {e}")))?;
        store.rollup_compactor = Some(rollup_compactor);
        Ok(store)
    }

    /// How the rollups are kept from now on (see [`rollup`]). Events replayed
    /// at open with another view length or skew are replayed again with
    /// these, unless a batch or a compaction came first.
    pub fn set_rollup_tuning(&mut self, tuning: rollup::Tuning) -> Result<(), StoreError> {
        let again = self.rollups_replayed_with.is_some_and(|before| {
            (before.max_view_ms, before.future_skew_ms)
                != (tuning.max_view_ms, tuning.future_skew_ms)
        });
        if again {
            // (The tuning is set with what is held, in one hold of the lock.)
            self.load_rollups(tuning)?;
        } else {
            self.view.rollups.lock().tuning = tuning;
        }
        self.view.rollups.changed.notify_all();
        Ok(())
    }

    /// How the rollups are kept now.
    pub fn rollup_tuning(&self) -> rollup::Tuning {
        self.view.rollups.lock().tuning
    }

    /// Bounds the ids held from now on (see [`bounds`]).
    pub fn set_limits(&mut self, limits: bounds::Limits) {
        self.limits = limits;
        self.min_free
            .store(limits.min_free_bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// When the pairs held in memory are compacted (see [`pairs::Tuning`]).
    pub fn set_pair_tuning(&self, tuning: pairs::Tuning) {
        *self
            .view
            .pairs
            .tuning
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = tuning;
    }

    /// Refuses a write of about `bytes` that would leave the disk with less
    /// than the configured free space: a write that fails half way is what
    /// must not happen, so it is not begun.
    fn check_space(&self, bytes: u64) -> Result<(), StoreError> {
        let min = self.limits.min_free_bytes;
        if let Some(free) = bounds::short_of_room(&self.dir, min, bytes) {
            let e = StoreError::DiskFull {
                path: self.path.clone(),
                free_mb: free >> 20,
                min_mb: min >> 20,
                write_mb: bytes.div_ceil(1 << 20),
            };
            // No later batch may be written over the one refused: its records
            // would be skipped by the offsets the later one stores.
            let _ = self.view.failed.set(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// An event log write's result; its failure stops the store's writes (the
    /// bytes appended are cut off when it opens again: no head names them).
    fn log_io<T>(&self, r: std::io::Result<T>) -> Result<T, StoreError> {
        self.written(&self.log, r)
    }

    /// A runs log write's result, as [`Store::log_io`].
    fn runs_io<T>(&self, r: std::io::Result<T>) -> Result<T, StoreError> {
        self.written(&self.runs, r)
    }

    /// The result of a write to `log`: a failure names the file and stops
    /// the store's writes.
    fn written<T>(
        &self,
        log: &eventlog::LogWriter,
        r: std::io::Result<T>,
    ) -> Result<T, StoreError> {
        r.map_err(|source| {
            let e = StoreError::EventLog {
                path: log.path_of(log.current()),
                source,
            };
            self.view.poison(&e);
            e
        })
    }

    /// Removes the runs log's files no journal part or pair run points into
    /// any more (a checkpoint deleted the parts, a pair compaction the runs),
    /// but never the file appended to. Only the store's thread adds entries
    /// that point there, so a file found unused stays unused.
    pub(super) fn sweep_runs(&mut self) -> Result<(), StoreError> {
        let mut used = std::collections::BTreeSet::new();
        for prefix in [state::JOURNAL, pairs::RUN] {
            for item in self.tree().scan_prefix(prefix) {
                let Ok((_, v)) = item else {
                    tracing::warn!(
                        "part of the journal or the pair runs cannot be read: every runs log file is kept"
                    );
                    return Ok(());
                };
                if let Some(p) = eventlog::Pointer::decode(&v) {
                    used.insert(p.file);
                }
            }
        }
        for (id, _) in self.view.runs.list().unwrap_or_default() {
            if id >= self.runs.current() || used.contains(&id) {
                continue;
            }
            remove_file_of(&self.view.runs, id, "nothing points into it");
        }
        Ok(())
    }

    /// Counts the segments each event log file holds, and removes the files
    /// that hold none (retention deleted their segments, and the process
    /// stopped before the files went).
    fn count_log_files(&mut self) -> Result<(), StoreError> {
        let mut live = std::collections::BTreeMap::new();
        for item in self.tree().scan_prefix(keys::EVENT) {
            let Ok((_, v)) = item else {
                // A stretch of sled's files cannot be read: which files it
                // points into is not known, so every file is kept.
                tracing::warn!(
                    "part of the event index cannot be read: every event log file is kept"
                );
                self.log_live = list_ids(&self.view.log);
                return Ok(());
            };
            if let Some(p) = eventlog::Pointer::decode(&v) {
                *live.entry(p.file).or_insert(0u64) += 1;
            }
        }
        self.log_live = live;
        let unused: Vec<u64> = list_ids(&self.view.log)
            .into_keys()
            .filter(|id| !self.log_live.contains_key(id))
            .collect();
        for id in unused {
            self.remove_log_file(id);
        }
        Ok(())
    }

    /// Segments deleted from `file` (their entries are gone, durably): the
    /// file goes with its last one.
    pub(super) fn log_segments_deleted(&mut self, file: u64, n: u64) {
        let left = match self.log_live.get_mut(&file) {
            Some(live) => {
                *live = live.saturating_sub(n);
                *live
            }
            None => return,
        };
        if left == 0 {
            self.log_live.remove(&file);
            if file != self.log.current() {
                self.remove_log_file(file);
            }
        }
    }

    fn remove_log_file(&mut self, id: u64) {
        remove_file_of(&self.view.log, id, "none of its segments is kept");
    }

    /// The runs log's files: how many, and their bytes on disk.
    pub fn runs_files(&self) -> (u64, u64) {
        self.view.runs.on_disk()
    }

    /// The event log's files: how many, and their bytes on disk.
    pub fn event_files(&self) -> (u64, u64) {
        self.view.log.on_disk()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored next offset of a partition in an offset namespace.
    pub fn next_offset(&self, namespace: &str, topic: &str, partition: i32) -> Option<i64> {
        self.offsets
            .get(&(namespace.to_string(), topic.to_string(), partition))
            .copied()
    }

    /// All stored next offsets of a namespace.
    pub fn offsets(&self, namespace: &str) -> Vec<(String, i32, i64)> {
        let mut v: Vec<_> = self
            .offsets
            .iter()
            .filter(|((ns, _, _), _)| ns == namespace)
            .map(|((_, t, p), o)| (t.clone(), *p, *o))
            .collect();
        v.sort();
        v
    }

    /// Every stored next offset: namespace → `topic/partition` → next offset.
    pub fn all_offsets(
        &self,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> {
        let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> =
            Default::default();
        for ((ns, t, p), o) in &self.offsets {
            out.entry(ns.clone())
                .or_default()
                .insert(format!("{t}/{p}"), *o);
        }
        out
    }

    /// Applies one prepared input batch atomically and durably (see the module
    /// docs): plans it ([`plan::plan`]), commits the plan in one sled batch and
    /// flushes it, then moves the in-memory aggregates and offsets. Answers
    /// what was written and which records were new, for the views fed after it.
    pub fn apply(&mut self, namespace: &str, prepared: Prepared) -> Result<Committed, StoreError> {
        let t0 = std::time::Instant::now();
        self.writable()?;
        self.view.rollups.writable()?;
        let (ns, registration) = self.namespace_number(namespace)?;
        let stored_next =
            |topic: &str, partition: i32| self.next_offset(namespace, topic, partition);
        let reads = plan::Reads {
            namespace,
            ns,
            stored_next: &stored_next,
            state: &self.state,
            limits: self.limits,
            tracked: self.tracked,
            seq: self.seq,
            now_ms: crate::domain::timefmt::now_ms(),
            rollup: self.view.rollups.lock().tuning,
        };
        let mut p = plan::plan(&reads, prepared, &mut TreeRows(&self.tree()))?;
        self.check_space(p.bytes as u64)?;
        self.rewrites.written += p.bytes as u64;
        let mut batch = sled::Batch::default();
        // Each segment goes to the event log's files, its entry points at it,
        // with its index entry (retention finds the oldest by it).
        let write_ms = crate::domain::timefmt::now_ms();
        let (mut segments, mut segment_bytes) = (0u64, 0u64);
        let mut files: Vec<(u64, u64)> = Vec::new();
        let rolled = self.log.roll_past(self.log_roll, write_ms);
        self.log_io(rolled)?;
        let rolled = self.runs.roll_past(self.runs_roll, write_ms);
        self.runs_io(rolled)?;
        let mut runs = false;
        for (k, v) in registration.iter().chain(&p.writes) {
            if k.starts_with(keys::EVENT) {
                let at = self.log.append(v);
                let at = self.log_io(at)?;
                batch.insert(k.as_slice(), &at.encode());
                eventlog::tally(&mut files, at.file);
                let size = v.len() as u64;
                batch.insert(retention::index_key(write_ms, k), &size.to_be_bytes());
                segments += 1;
                segment_bytes += size;
            } else if k.starts_with(state::JOURNAL) || k.starts_with(pairs::RUN) {
                // Journal parts and pair runs go to the runs log's files (see
                // `eventlog`), their entries point at them.
                let at = self.runs.append_checked(v);
                let at = self.runs_io(at)?;
                batch.insert(k.as_slice(), &at.encode());
                runs = true;
            } else {
                batch.insert(k.as_slice(), v.as_slice());
            }
        }
        // Both logs' appends are made durable at once (each sync waits on
        // the disk: one after the other held the store's thread for both). A
        // log with nothing appended has nothing to sync.
        let (log, runs_log) = (&mut self.log, &mut self.runs);
        let (log_synced, runs_synced) = if segments > 0 && runs {
            std::thread::scope(|scope| {
                let other = scope.spawn(|| runs_log.sync());
                let synced = log.sync();
                let other = other
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the runs log's sync panicked")));
                (synced, other)
            })
        } else {
            (log.sync(), runs_log.sync())
        };
        self.log_io(log_synced)?;
        self.runs_io(runs_synced)?;
        if segments > 0 {
            batch.insert(keys::EVENT_LOG_HEAD, &self.log.head().encode());
        }
        if runs {
            batch.insert(keys::RUNS_LOG_HEAD, &self.runs.head().encode());
        }
        let t1 = std::time::Instant::now();
        let write = self.view.write_gate();
        let tree = self.tree();
        self.view.guard(tree.apply_batch(batch))?;
        let t2 = std::time::Instant::now();
        self.view.guard(tree.db().flush())?;
        drop((tree, write));
        let mut report = std::mem::take(&mut p.report);
        report.prepare_ns = (t1 - t0).as_nanos() as u64;
        report.write_ns = (t2 - t1).as_nanos() as u64;
        report.flush_ns = t2.elapsed().as_nanos() as u64;

        // Durable: now the in-memory state may follow.
        self.retained_add(write_ms, segments, segment_bytes);
        for (f, n) in files {
            *self.log_live.entry(f).or_default() += n;
        }
        self.tracked = p.tracked;
        if !registration.is_empty() {
            self.namespaces.insert(namespace.to_string(), ns);
        }
        let seq = self.seq;
        let mut pairs = Vec::with_capacity(p.pairs.len());
        for (user, item, delta) in p.pair_deltas() {
            pairs.push(PairChange {
                user: user.into(),
                item: item.into(),
                agg: PairChangeAgg::Video(PairAgg::from_slots(delta)),
                seq,
            });
        }
        for (k, d) in &p.deltas.map {
            self.state.merge(k, d);
            if let Some(rest) = k.strip_prefix(keys::MUSIC_PAIR) {
                let held = self.state.get(k).map(MusicAgg::from_slots);
                if let (Some((user, item)), Some(agg)) = (keys::split_pair(rest), held) {
                    let agg = PairChangeAgg::Music(agg);
                    pairs.push(PairChange {
                        user: user.into(),
                        item: item.into(),
                        agg,
                        seq,
                    });
                }
            }
        }
        self.seq += 1;
        self.journal_bytes += p.journal_bytes;
        for (t, q, o) in &p.offsets {
            self.offsets
                .insert((namespace.to_string(), t.clone(), *q), *o);
        }
        // Readers find the batch's pair and rollup deltas in memory from now on.
        self.view.pairs.add_batch(seq, p.pair_deltas())?;
        let records = &p.records;
        self.view.rollups.add_batch(
            &p.rollup,
            |i| match records.get(i as usize).map(|r| &r.outcome) {
                Some(Outcome::Valid(ev)) => rollup::id_of(ev),
                _ => "",
            },
            namespace,
            &p.offsets,
            write_ms,
            p.rollup_cpu_ns,
        )?;
        p.rollup.recycle();
        self.rollups_replayed_with = None;
        report.offsets = p.offsets;
        if self.journal_bytes > MIN_CHECKPOINT_JOURNAL_BYTES.max(self.state.approx_bytes()) {
            self.checkpoint()?;
        }
        Ok(Committed {
            report,
            records: p.records,
            fresh: p.fresh,
            pairs,
        })
    }

    /// What the status shows of the store: the stored offsets of `namespace`,
    /// damage found by reads, quarantined entries, the ids held and folded.
    pub fn status(&self, namespace: &str) -> StoreStatus {
        StoreStatus {
            offsets: self.offsets(namespace),
            damage: self.damage(),
            quarantined: self.quarantined(),
            limits: self.limits,
            tracked: self.tracked,
            folded_video_events: self.counter("folded/video_events").unwrap_or(0),
            folded_listening_events: self.counter("folded/listening_events").unwrap_or(0),
            retention: self.retention,
            retained: {
                let mut r = self.retained.clone();
                (r.files, r.file_bytes) = self.event_files();
                r
            },
            pairs: {
                let (active, frozen, st) = self.pair_overlay();
                PairsStatus {
                    held: active + frozen,
                    compacting: frozen,
                    compactions: st.compactions,
                    chunks_written: st.chunks_written,
                    merged_users: st.merged_users,
                    last_compaction_s: st.last_seconds,
                    ingest_waits: st.waits,
                }
            },
            size_on_disk: self.size_on_disk(),
            runs_files: self.runs_files(),
            rewrite: self.rewrite_status(),
        }
    }

    /// Whether the listening pair (user, track) is held under its own ids (not
    /// folded under `(other)` by the bounds).
    pub fn holds_music_pair(&self, user: &str, track: &str) -> bool {
        self.state
            .get(&keys::join(
                keys::MUSIC_PAIR,
                &[user.as_bytes(), track.as_bytes()],
            ))
            .is_some()
    }

    /// Entries kept apart by `check --repair`.
    pub fn quarantined(&self) -> usize {
        self.tree().scan_prefix(keys::QUARANTINE).count()
    }
}

#[cfg(test)]
mod tests;
