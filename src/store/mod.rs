//! The sled store. Each input batch — its events (one log segment per
//! partition), the deltas of the aggregates (QoE and engagement counters, pair
//! aggregates), catalog upserts, dead letters and the next source offset per
//! partition — is one atomic `apply_batch` on one tree, flushed before it is
//! acknowledged. A record whose offset is below its partition's stored next
//! offset was already stored and is skipped: replays never count twice.
//! Aggregates are served from memory (see [`state`]).

pub mod bounds;
pub mod check;
pub mod config;
pub mod keys;
mod migrate;
pub mod models;
pub mod plan;
pub mod prepare;
mod read;
mod scan;
pub mod segment;
pub mod slots;
mod state;

use std::collections::HashMap;

use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::domain::event::Event;
use crate::domain::record::{Outcome, Processed};

pub use prepare::{prepare, Prepared};
pub use read::{
    dead_letter_id, CatalogCounts, DeadLetter, LoggedEvent, QoeDim, QoeStats, Stats, StatsSection,
};
pub use slots::{MusicAgg, PairAgg, Qoe};

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
    #[error("{id:?}: {rule}")]
    BadId { id: String, rule: &'static str },
    #[error("{0}")]
    Refused(String),
}

/// sled writes its snapshot to `snap.<lsn>.generating` and renames it when
/// done: one left behind (the disk filled, the process was killed) is never
/// finished and would stop every later open. The finished snapshots and the
/// log are what recovery reads.
fn remove_unfinished_snapshots(path: &Path) {
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::warn!(
                    "removed {}: an unfinished snapshot of an earlier run",
                    e.path().display()
                ),
                Err(err) => tracing::warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
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
}

/// Writes that register a new offset namespace.
type Registration = Vec<(Vec<u8>, Vec<u8>)>;

/// A committed batch: what it wrote, and its records with whether each was new
/// (`fresh[i]`), for the views fed after the commit.
#[derive(Debug)]
pub struct Committed {
    pub report: ApplyReport,
    pub records: Vec<Processed>,
    pub fresh: Vec<bool>,
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
    db: sled::Db,
    tree: sled::Tree,
    /// What reads found damaged since the store opened (what → why).
    damaged: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
    /// Set by the first failed write: nothing is written (or flushed) after it.
    failed: std::sync::Arc<std::sync::OnceLock<String>>,
}

pub struct Store {
    view: StoreView,
    path: PathBuf,
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
    fn poison(&self, e: &sled::Error) {
        if self.failed.set(e.to_string()).is_ok() {
            std::mem::forget(self.db.clone());
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
        self.writable()?;
        self.guard(self.tree.apply_batch(batch))?;
        self.guard(self.db.flush())?;
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
            if self.tree.contains_key(&k)? {
                n += 1;
                batch.remove(k);
            }
        }
        self.commit(batch)?;
        Ok(n)
    }
}

impl Store {
    /// A handle for reads on other threads.
    pub fn view(&self) -> StoreView {
        self.view.clone()
    }

    pub fn open(dir: &Path, cache_mb: u64) -> Result<Store, StoreError> {
        let path = dir.join("store");
        remove_unfinished_snapshots(&path);
        // Every write is flushed by the store itself, never in the background:
        // after a failed write nothing more may reach the disk (see `poison`).
        let config = sled::Config::new()
            .path(&path)
            .flush_every_ms(None)
            .cache_capacity(cache_mb.saturating_mul(1 << 20));
        // sled's recovery panics on some damage to its log: that is a damaged
        // store to report, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(sled::Error::Corruption { .. })) | Err(_) => {
                return Err(StoreError::Unrecoverable { path: path.clone() })
            }
            Ok(Err(source)) => {
                return Err(StoreError::Open {
                    path: path.clone(),
                    source,
                })
            }
        };
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
        let mut store = Store {
            view: StoreView {
                db,
                tree,
                damaged: Default::default(),
                failed: Default::default(),
            },
            path,
            offsets,
            namespaces,
            limits: bounds::Limits::default(),
            tracked: bounds::Tracked::default(),
            state: state::State::default(),
            seq: 0,
            gen: 0,
            journal_bytes: 0,
        };
        store.drop_fragments()?;
        store.load_state(encoding)?;
        if encoding == state::Encoding::Legacy {
            // The aggregates in today's encoding, and the layout mark, in one step.
            store.write_checkpoint(true)?;
        }
        store.tracked = bounds::Tracked::of(&store.state);
        Ok(store)
    }

    /// Bounds the ids held from now on (see [`bounds`]).
    pub fn set_limits(&mut self, limits: bounds::Limits) {
        self.limits = limits;
    }

    /// Refuses a write of about `bytes` that would leave the disk with less
    /// than the configured free space: a write that fails half way is what
    /// must not happen, so it is not begun.
    fn check_space(&self, bytes: u64) -> Result<(), StoreError> {
        let min = self.limits.min_free_bytes;
        if min == 0 {
            return Ok(());
        }
        let Some(free) = bounds::free_bytes(&self.path) else {
            return Ok(());
        };
        if free < min.saturating_add(bytes.saturating_mul(2)) {
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

    /// The bounds and how many ids are held.
    pub fn tracked(&self) -> (bounds::Limits, bounds::Tracked) {
        (self.limits, self.tracked)
    }

    /// Loads the latest checkpoint, drops unfinished ones, replays the journal after it.
    fn load_state(&mut self, encoding: state::Encoding) -> Result<(), StoreError> {
        let (gen, covered) = match self.tree.get(state::CHECKPOINT_CURRENT)? {
            Some(v) if v.len() == 16 => {
                let gen = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
                let covered = u64::from_be_bytes(v[8..].try_into().unwrap_or([0; 8]));
                (gen, Some(covered))
            }
            Some(_) => {
                return Err(StoreError::Corrupt {
                    key: "k/current".into(),
                    message: "wrong length".into(),
                })
            }
            None => (0, None),
        };
        self.gen = gen;
        let current = state::checkpoint_gen_prefix(gen);
        let mut orphans = Vec::new();
        for item in self.tree.scan_prefix(state::CHECKPOINT) {
            let (k, v) = item?;
            if covered.is_some() && k.starts_with(&current) {
                let st = &mut self.state;
                state::decode_entries(&v, encoding, |key, slots| st.merge(key, slots)).ok_or_else(
                    || StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        message: "unreadable checkpoint chunk".into(),
                    },
                )?;
            } else {
                orphans.push(k);
            }
        }
        for k in orphans {
            self.tree.remove(k)?;
        }
        let mut next = covered.map_or(0, |c| c + 1);
        let mut fragments = Vec::new();
        for item in self.tree.scan_prefix(state::JOURNAL) {
            let (k, v) = item?;
            let seq = state::journal_seq(&k);
            if covered.is_some_and(|c| seq <= c) {
                continue;
            }
            let mut entries: Vec<(Vec<u8>, Vec<f64>)> = Vec::new();
            state::decode_entries(&v, encoding, |key, slots| {
                entries.push((key.to_vec(), slots.to_vec()))
            })
            .ok_or_else(|| StoreError::Corrupt {
                key: format!("j/{seq}"),
                message: "unreadable journal entry".into(),
            })?;
            if let Some(why) = self.fragment(&entries) {
                // A write that failed left this part behind without its offsets.
                tracing::warn!(
                    "dropping journal entry {seq} of a write that did not complete ({why})"
                );
                fragments.push(k);
                continue;
            }
            for (key, slots) in &entries {
                self.state.merge(key, slots);
            }
            self.journal_bytes += v.len();
            next = seq + 1;
        }
        for k in fragments {
            self.tree.remove(k)?;
        }
        self.seq = next;
        Ok(())
    }

    /// Why journal entries are a fragment of a write that did not complete:
    /// an offset they name is past the one stored.
    fn fragment(&self, entries: &[(Vec<u8>, Vec<f64>)]) -> Option<String> {
        entries.iter().find_map(|(k, v)| {
            let rest = k.strip_prefix(keys::OFFSET)?;
            let (ns, rest) = rest.split_at(rest.iter().position(|&b| b == 0)?);
            let rest = &rest[1..];
            let (topic, tail) = rest.split_at(rest.iter().position(|&b| b == 0)?);
            let partition = u32::from_be_bytes(tail.get(1..5)?.try_into().ok()?) as i32;
            let (ns, topic) = (
                std::str::from_utf8(ns).ok()?,
                std::str::from_utf8(topic).ok()?,
            );
            let want = *v.first()? as i64;
            let stored = self.next_offset(ns, topic, partition).unwrap_or(0);
            (stored < want)
                .then(|| format!("{topic}/{partition}: stored {stored}, the entry names {want}"))
        })
    }

    /// Drops what a write that did not complete left behind: event segments
    /// and dead letters at or past the stored offset of their partition (a
    /// stored batch always moves the offset past what it holds). One seek per
    /// partition.
    fn drop_fragments(&mut self) -> Result<(), StoreError> {
        let names: HashMap<u32, &str> = self
            .namespaces
            .iter()
            .map(|(n, i)| (*i, n.as_str()))
            .collect();
        let with_offsets: std::collections::HashSet<&str> =
            self.offsets.keys().map(|(ns, _, _)| ns.as_str()).collect();
        let mut dropped = Vec::new();
        for prefix in [keys::EVENT, keys::DEAD] {
            let mut start = prefix.to_vec();
            loop {
                let Some(item) = self.tree.range(start.clone()..).next() else {
                    break;
                };
                let (k, _) = item?;
                if !k.starts_with(prefix) {
                    break;
                }
                let Some((ns, topic, partition, _)) = keys::parse_position(&k[prefix.len()..])
                else {
                    break;
                };
                // Past this partition: its key prefix with the largest offset.
                let mut next_partition = keys::position(prefix, ns, &topic, partition, -1);
                next_partition.push(0xff);
                let judged = names.get(&ns).filter(|n| with_offsets.contains(*n));
                if let Some(name) = judged {
                    let stored = self.next_offset(name, &topic, partition).unwrap_or(0);
                    let from = keys::position(prefix, ns, &topic, partition, stored);
                    for item in self.tree.range(from..next_partition.clone()) {
                        dropped.push(item?.0);
                    }
                }
                start = next_partition;
            }
        }
        if !dropped.is_empty() {
            tracing::warn!(
                "dropped {} event segments and dead letters of a write that did not complete",
                dropped.len()
            );
            let mut batch = sled::Batch::default();
            for k in dropped {
                batch.remove(k);
            }
            self.view.commit(batch)?;
        }
        Ok(())
    }

    /// Writes the whole aggregate state as a new checkpoint and drops the journal it covers.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        if self.seq == 0 {
            return Ok(());
        }
        self.write_checkpoint(false)
    }

    /// Writes a checkpoint; with `mark_layout`, the layout mark in the same
    /// atomic step (a store opened in an older layout).
    fn write_checkpoint(&mut self, mark_layout: bool) -> Result<(), StoreError> {
        self.writable()?;
        self.check_space(self.state.approx_bytes() as u64)?;
        let gen = self.gen + 1;
        let entries: Vec<(&Vec<u8>, &Box<[f64]>)> = self.state.entries().collect();
        for (i, chunk) in entries.chunks(MAX_VALUE_BYTES / 96).enumerate() {
            let value = state::encode_entries(chunk.iter().map(|(k, v)| (k.as_slice(), &v[..])));
            let r = self
                .tree
                .insert(state::checkpoint_chunk_key(gen, i as u32), value);
            self.view.guard(r)?;
        }
        let mut batch = sled::Batch::default();
        if mark_layout {
            batch.insert(keys::LAYOUT_KEY, &keys::LAYOUT.to_be_bytes());
        }
        if self.seq > 0 {
            let covered = self.seq - 1;
            let mut pointer = gen.to_be_bytes().to_vec();
            pointer.extend_from_slice(&covered.to_be_bytes());
            batch.insert(state::CHECKPOINT_CURRENT, pointer);
        }
        for item in self.tree.scan_prefix(state::JOURNAL) {
            batch.remove(item?.0);
        }
        for item in self
            .tree
            .scan_prefix(state::checkpoint_gen_prefix(self.gen))
        {
            batch.remove(item?.0);
        }
        self.view.commit(batch)?;
        self.gen = gen;
        self.journal_bytes = 0;
        Ok(())
    }

    /// Checkpoints and flushes (a clean shutdown makes the next open fast).
    pub fn close(&mut self) -> Result<(), StoreError> {
        self.writable()?;
        if self.journal_bytes > 0 {
            self.checkpoint()?;
        }
        self.view.guard(self.db.flush())?;
        Ok(())
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

    /// A consistent copy of the whole store into the data dir `dest` (which must
    /// not hold a store yet): checkpoints, then copies every entry while no batch
    /// is written (call it on the store's thread). `playpulse run --data-dir DEST`
    /// starts from the copy. The copy is a new member of the consumer group: its
    /// member id (see `claims`) is not copied. Answers (entries, bytes).
    pub fn backup(&mut self, dest: &Path) -> Result<(u64, u64), StoreError> {
        let path = dest.join("store");
        if path.exists() {
            return Err(StoreError::Refused(format!(
                "{:?}: already holds a store: choose an empty or new directory for the snapshot",
                dest.display().to_string()
            )));
        }
        self.checkpoint()?;
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let db = sled::Config::new().path(&path).open().map_err(open_err)?;
        let tree = db.open_tree("main").map_err(open_err)?;
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        for item in self.tree.iter() {
            let (k, v) = item?;
            if k.as_ref() == keys::MEMBER {
                continue;
            }
            n += 1;
            bytes += (k.len() + v.len()) as u64;
            pending += k.len() + v.len();
            batch.insert(k, v);
            if pending > 8 << 20 {
                tree.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        tree.apply_batch(batch)?;
        db.flush()?;
        Ok((n, bytes))
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
        };
        let tree = &self.tree;
        let p = plan::plan(&reads, prepared, |key| {
            Ok(tree
                .get(key)?
                .and_then(|b| Event::decode(&b).ok())
                .map(|e| plan::catalog_ts(&e)))
        })?;
        let mut batch = sled::Batch::default();
        for (k, v) in registration.iter().chain(&p.writes) {
            batch.insert(k.as_slice(), v.as_slice());
        }
        self.check_space(p.bytes as u64)?;
        let t1 = std::time::Instant::now();
        self.view.guard(self.tree.apply_batch(batch))?;
        let t2 = std::time::Instant::now();
        self.view.guard(self.db.flush())?;
        let mut report = p.report;
        report.prepare_ns = (t1 - t0).as_nanos() as u64;
        report.write_ns = (t2 - t1).as_nanos() as u64;
        report.flush_ns = t2.elapsed().as_nanos() as u64;

        // Durable: now the in-memory state may follow.
        self.tracked = p.tracked;
        if !registration.is_empty() {
            self.namespaces.insert(namespace.to_string(), ns);
        }
        for (k, d) in &p.deltas.map {
            self.state.merge(k, d);
        }
        self.seq += 1;
        self.journal_bytes += p.journal_bytes;
        for (t, q, o) in &p.offsets {
            self.offsets
                .insert((namespace.to_string(), t.clone(), *q), *o);
        }
        report.offsets = p.offsets;
        if self.journal_bytes > MIN_CHECKPOINT_JOURNAL_BYTES.max(self.state.approx_bytes()) {
            self.checkpoint()?;
        }
        Ok(Committed {
            report,
            records: p.records,
            fresh: p.fresh,
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

    /// The store-local number of an offset namespace, and the writes that
    /// register it when it is new (none when it is known).
    fn namespace_number(&self, namespace: &str) -> Result<(u32, Registration), StoreError> {
        if let Some(n) = self.namespaces.get(namespace) {
            return Ok((*n, Vec::new()));
        }
        let n = self
            .namespaces
            .values()
            .max()
            .map_or(Some(1), |m| m.checked_add(1))
            .ok_or_else(|| {
                StoreError::Refused(format!(
                    "{namespace:?}: no namespace number is left (2^32 used)"
                ))
            })?;
        Ok((
            n,
            vec![
                (keys::namespace_key(namespace), n.to_be_bytes().to_vec()),
                (keys::namespace_name_key(n), namespace.as_bytes().to_vec()),
            ],
        ))
    }

    /// The offset namespace to read `base` (a cluster's name) under, given the
    /// partitions' high watermarks now: the latest epoch of `base` this store
    /// read (`base`, `base~2`, `base~3`, ...), or a new epoch when a partition
    /// holds fewer records than the store read of it (the topic was recreated,
    /// or the cluster's offsets reset). A new epoch starts with the offsets of
    /// every partition that was not reset, in one atomic write; the reset ones
    /// are read again from their start, stored beside the earlier epoch's
    /// records, never over them. Answers the namespace and the partitions
    /// found reset.
    /// `high` asks the brokers for the high watermarks of the partitions it is
    /// given (`None` when they cannot say: the latest epoch is kept).
    pub fn namespace_epoch(
        &mut self,
        base: &str,
        high: impl FnOnce(&[(String, i32)]) -> Option<std::collections::BTreeMap<(String, i32), i64>>,
    ) -> Result<(String, Vec<PartitionReset>), StoreError> {
        let epoch_of = |ns: &str| -> Option<u64> {
            if ns == base {
                Some(1)
            } else {
                ns.strip_prefix(base)?.strip_prefix('~')?.parse().ok()
            }
        };
        let latest = self
            .offsets
            .keys()
            .filter_map(|(ns, _, _)| epoch_of(ns))
            .max();
        let Some(latest) = latest else {
            return Ok((base.to_string(), Vec::new()));
        };
        let current = if latest == 1 {
            base.to_string()
        } else {
            format!("{base}~{latest}")
        };
        let stored = self.offsets(&current);
        let parts: Vec<(String, i32)> = stored.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        let Some(high) = high(&parts) else {
            return Ok((current, Vec::new()));
        };
        let mut reset = Vec::new();
        let mut kept = Vec::new();
        for (t, p, next) in stored {
            match high.get(&(t.clone(), p)) {
                Some(&h) if h < next => reset.push((t, p, next, h)),
                _ => kept.push((t, p, next)),
            }
        }
        if reset.is_empty() {
            return Ok((current, reset));
        }
        let next = format!("{base}~{}", latest + 1);
        let mut batch = sled::Batch::default();
        for (t, p, o) in &kept {
            batch.insert(keys::offset_key(&next, t, *p), &o.to_be_bytes());
        }
        self.view.commit(batch)?;
        for (t, p, o) in kept {
            self.offsets.insert((next.clone(), t, p), o);
        }
        Ok((next, reset))
    }

    /// Every offset namespace this store holds positions of, by number.
    pub fn namespaces(&self) -> std::collections::BTreeMap<u32, String> {
        self.namespaces
            .iter()
            .map(|(k, v)| (*v, k.clone()))
            .collect()
    }

    /// Recomputes every aggregate from the event log and the dead letters
    /// (after a repair dropped what could not be read) and checkpoints them;
    /// answers the events read.
    pub fn recompute_aggregates(&mut self) -> Result<u64, StoreError> {
        let mut st = state::State::default();
        let mut events = 0u64;
        let mut chunk = Vec::with_capacity(50_000);
        let flush = |chunk: &mut Vec<Processed>, st: &mut state::State| {
            let d = prepare::deltas_of(chunk.iter());
            for (k, v) in &d.map {
                st.merge(k, v);
            }
            chunk.clear();
        };
        for item in self.view.event_log() {
            let e = item?;
            events += 1;
            chunk.push(Processed {
                pos: e.pos,
                origin: None,
                headers: Default::default(),
                outcome: Outcome::Valid(e.event),
            });
            if chunk.len() == chunk.capacity() {
                flush(&mut chunk, &mut st);
            }
        }
        for d in self.view.dead_letters()? {
            chunk.push(Processed {
                pos: crate::domain::record::SourcePos {
                    topic: d.topic.as_str().into(),
                    partition: d.partition,
                    offset: d.offset,
                },
                origin: None,
                headers: Default::default(),
                outcome: Outcome::Rejected {
                    rejection: d.rejection,
                    raw: Vec::new(),
                },
            });
            if chunk.len() == chunk.capacity() {
                flush(&mut chunk, &mut st);
            }
        }
        flush(&mut chunk, &mut st);
        self.state = st;
        self.seq = self.seq.max(1);
        self.write_checkpoint(true)?;
        Ok(events)
    }

    /// Entries kept apart by `check --repair`.
    pub fn quarantined(&self) -> usize {
        self.tree.scan_prefix(keys::QUARANTINE).count()
    }
}

#[cfg(test)]
mod tests;
