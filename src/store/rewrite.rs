//! Rewrites of the store's sled files, so that disk use follows the bytes the
//! store keeps, not the bytes written (see [`super::generation`] for why sled
//! needs it). When sled's files have grown to `ratio` times their size after
//! the last rewrite (and past `min_bytes`), a thread of its own copies every
//! entry into the next generation's directory while the store goes on:
//!
//! 1. With the store's write gate held alone for a moment (every write holds
//!    it shared), it subscribes to every change of the tree, so a write is
//!    either in what the copy reads or in the changes, never in neither.
//! 2. It copies the tree's entries, in batches, into the new generation; a
//!    second thread collects the changes meanwhile.
//! 3. With the gate held alone again, it applies the changes collected (in
//!    the order they were made: sled's batches are serialized, and each key
//!    has one writer), flushes, moves the pointer to the new generation and
//!    serves from it. Writes wait only for this step.
//!
//! A copy that fails (a full disk, a damaged page read) or that a close stops
//! is removed, and the store goes on with the generation it had; after a
//! failure the next attempt waits [`RETRY_AFTER`]. A crash during the copy
//! leaves the pointer on the old generation, and the next open removes the
//! unfinished one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{generation, Store, StoreError, StoreView};

/// How often the files' size is looked at: this long, or once the batches
/// have written a 64th of `min_bytes`, whichever comes first.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// After a failed rewrite, the next is not tried before this.
const RETRY_AFTER: Duration = Duration::from_secs(600);
/// The size of sled's files right after the rewrite that wrote them, kept in
/// them: the next open measures growth from it (0 or missing: never rewritten).
pub const BASE: &[u8] = b"i/rewrite-base";
/// Bytes copied per batch into the new generation.
const COPY_BATCH_BYTES: usize = 4 << 20;

/// When the store rewrites itself (`store.rewrite_ratio`, `store.rewrite_min_mb`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// Rewrite when the files reach this many times their size after the last
    /// rewrite; 0: never.
    pub ratio: f64,
    /// ... and at least this many bytes.
    pub min_bytes: u64,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            ratio: 2.0,
            min_bytes: 512 << 20,
        }
    }
}

/// One finished rewrite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rewritten {
    /// The generation written.
    pub generation: u64,
    pub at_ms: i64,
    /// From the start of the copy to serving from the new generation.
    pub seconds: f64,
    /// How long writes waited for the last step.
    pub writes_waited_seconds: f64,
    pub entries: u64,
    /// Keys and values copied, and changes applied after the copy.
    pub bytes_copied: u64,
    pub changes_applied: u64,
    /// sled's files before and after.
    pub size_before: u64,
    pub size_after: u64,
}

/// What the status shows of the rewrites.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewriteStatus {
    /// The generation served from (0: the data dir's `store`).
    pub generation: u64,
    /// Whether a copy is running now.
    pub running: bool,
    /// Rewrites finished and failed since the store opened.
    pub done: u64,
    pub failed: u64,
    /// The size of sled's files at which the next rewrite starts (0: never).
    pub next_at_bytes: u64,
    pub last: Option<Rewritten>,
    /// Why the last failed one failed.
    pub last_failure: Option<String>,
}

/// A rewrite in progress.
#[derive(Debug)]
struct Running {
    thread: std::thread::JoinHandle<Result<(Rewritten, PathBuf), StoreError>>,
    cancel: Arc<AtomicBool>,
}

/// The store's rewrite bookkeeping.
#[derive(Debug, Default)]
pub(super) struct Rewrites {
    tuning: Tuning,
    /// sled's files' size after the last rewrite (0: none yet).
    base: u64,
    checked: Option<Instant>,
    /// Bytes the batches wrote since the size was last looked at.
    pub(super) written: u64,
    retry_at: Option<Instant>,
    running: Option<Running>,
    /// Tests: the copy waits on this twice once it has read every entry, so
    /// a test writes while it is between reading and applying the changes.
    #[cfg(test)]
    pub(super) pause: Option<Arc<std::sync::Barrier>>,
    done: u64,
    failed: u64,
    last: Option<Rewritten>,
    last_failure: Option<String>,
}

impl Rewrites {
    fn threshold(&self) -> u64 {
        if self.tuning.ratio <= 0.0 {
            return 0;
        }
        let scaled = (self.base as f64 * self.tuning.ratio).min(u64::MAX as f64) as u64;
        scaled.max(self.tuning.min_bytes)
    }
}

impl Store {
    /// When the store rewrites itself from now on.
    pub fn set_rewrite_tuning(&mut self, tuning: Tuning) {
        self.rewrites.tuning = tuning;
    }

    /// Reads the size the last rewrite left (see [`BASE`]) at open.
    pub(super) fn load_rewrite_base(&mut self) -> Result<(), StoreError> {
        self.rewrites.base = match self.tree().get(BASE)? {
            Some(v) => {
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    key: String::from_utf8_lossy(BASE).into_owned(),
                    message: "the size the last rewrite left has the wrong length".into(),
                })?)
            }
            None => 0,
        };
        Ok(())
    }

    /// What the status shows of the rewrites.
    pub fn rewrite_status(&self) -> RewriteStatus {
        let r = &self.rewrites;
        RewriteStatus {
            generation: self.generation,
            running: r.running.is_some(),
            done: r.done,
            failed: r.failed,
            next_at_bytes: r.threshold(),
            last: r.last,
            last_failure: r.last_failure.clone(),
        }
    }

    /// Starts a rewrite when the files have grown past the tuning's bound
    /// (looked at as [`CHECK_EVERY`] says), and takes in the result of one
    /// that finished. Call it between batches on the store's thread.
    pub fn maybe_rewrite(&mut self) {
        if self.rewrites.running.is_some() {
            self.take_rewrite(Wait::No);
            return;
        }
        let now = Instant::now();
        let failed = self.write_failure().is_some();
        let r = &mut self.rewrites;
        if failed
            || r.tuning.ratio <= 0.0
            || r.checked.is_some_and(|t| {
                now.duration_since(t) < CHECK_EVERY && r.written < r.tuning.min_bytes / 64
            })
            || r.retry_at.is_some_and(|t| now < t)
        {
            return;
        }
        r.checked = Some(now);
        r.written = 0;
        let (size, threshold) = (self.size_on_disk(), self.rewrites.threshold());
        if size < threshold {
            return;
        }
        tracing::info!(
            "store rewrite started: {} MiB of files, past {} MiB",
            size >> 20,
            threshold >> 20
        );
        if let Err(e) = self.start_rewrite() {
            self.rewrite_failed(&e);
        }
    }

    /// Starts copying into the next generation on a thread of its own.
    pub(super) fn start_rewrite(&mut self) -> Result<(), StoreError> {
        self.writable()?;
        let cancel = Arc::new(AtomicBool::new(false));
        let copy = Copy {
            view: self.view.clone(),
            dir: self.dir.clone(),
            generation: self.generation + 1,
            cache_mb: self.cache_mb,
            min_free: self.limits.min_free_bytes,
            cancel: cancel.clone(),
            #[cfg(test)]
            pause: self.rewrites.pause.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("store-rewrite".into())
            .spawn(move || {
                crate::domain::worker::background_priority();
                copy.run()
            })
            .map_err(|e| StoreError::Refused(format!("cannot start the store's rewrite: {e}")))?;
        self.rewrites.running = Some(Running { thread, cancel });
        Ok(())
    }

    /// Takes in the running rewrite's result: not before it finished
    /// ([`Wait::No`]), waiting for it ([`Wait::Finish`]), or stopping it first
    /// ([`Wait::Cancel`]). Answers its result, if it was taken in.
    fn take_rewrite(&mut self, wait: Wait) -> Option<Result<Rewritten, StoreError>> {
        let running = self.rewrites.running.take()?;
        if wait == Wait::No && !running.thread.is_finished() {
            self.rewrites.running = Some(running);
            return None;
        }
        if wait == Wait::Cancel {
            running.cancel.store(true, Ordering::Release);
        }
        let result = running.thread.join().unwrap_or_else(|_| {
            Err(StoreError::Refused(
                "the store's rewrite thread panicked".into(),
            ))
        });
        match result {
            Ok((done, path)) => {
                self.path = path;
                self.generation = done.generation;
                let r = &mut self.rewrites;
                r.base = done.size_after;
                r.done += 1;
                r.last = Some(done);
                r.retry_at = None;
                Some(Ok(done))
            }
            Err(StoreError::Refused(why)) if why == CANCELLED => {
                Some(Err(StoreError::Refused(why)))
            }
            Err(e) => {
                self.rewrite_failed(&e);
                Some(Err(e))
            }
        }
    }

    /// Stops a running rewrite (its copy is removed) and waits for it.
    pub(super) fn stop_rewrite(&mut self) {
        self.take_rewrite(Wait::Cancel);
    }

    fn rewrite_failed(&mut self, e: &StoreError) {
        tracing::error!(
            "store rewrite failed, the store goes on with its files as they were (next try in {} s): {e}",
            RETRY_AFTER.as_secs()
        );
        let r = &mut self.rewrites;
        r.failed += 1;
        r.last_failure = Some(e.to_string());
        r.retry_at = Some(Instant::now() + RETRY_AFTER);
    }

    /// Rewrites the store now, whatever its size, and waits for it (see the
    /// module's note); batches are not applied meanwhile on this thread.
    pub fn rewrite(&mut self) -> Result<Rewritten, StoreError> {
        if self.rewrites.running.is_none() {
            self.start_rewrite()?;
        }
        self.take_rewrite(Wait::Finish)
            .unwrap_or_else(|| Err(StoreError::Refused(CANCELLED.into())))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    No,
    Finish,
    Cancel,
}

const CANCELLED: &str = "the store's rewrite was stopped by its close";

/// What the rewrite thread needs.
struct Copy {
    view: StoreView,
    dir: PathBuf,
    generation: u64,
    cache_mb: u64,
    min_free: u64,
    cancel: Arc<AtomicBool>,
    #[cfg(test)]
    pause: Option<Arc<std::sync::Barrier>>,
}

impl Copy {
    fn run(self) -> Result<(Rewritten, PathBuf), StoreError> {
        let started = Instant::now();
        let path = self.dir.join(generation::name(self.generation));
        remove_unfinished(&path);
        let db = super::open_sled(&path, self.cache_mb)?;
        match self.copy_into(&db, &path, started) {
            Ok(done) => Ok((done, path)),
            Err(e) => {
                drop(db);
                remove_unfinished(&path);
                Err(e)
            }
        }
    }

    fn copy_into(
        &self,
        db: &sled::Db,
        path: &Path,
        started: Instant,
    ) -> Result<Rewritten, StoreError> {
        let tree = db.open_tree("main")?;
        let old = self.view.tree();
        let size_before = old.db().size_on_disk().unwrap_or(0);
        // Subscribed while no write is under way (see the module's note).
        let changes = {
            let _alone = self.view.writes.write().unwrap_or_else(|p| p.into_inner());
            Changes::collect(&self.view, old.clone())?
        };
        let (entries, bytes) = copy_entries(
            &old,
            &tree,
            COPY_BATCH_BYTES,
            |_| true,
            |n| self.may_write(n),
        )?;
        #[cfg(test)]
        if let Some(b) = &self.pause {
            b.wait();
            b.wait();
        }
        // Most of what was written meanwhile, still without holding writes up.
        let mut changes_applied = 0u64;
        let early = changes.take();
        changes_applied += early.len() as u64;
        self.may_write(0)?;
        tree.apply_batch(early.into_batch())?;
        db.flush()?;
        let writes = self.view.writes.clone();
        let alone = writes.write().unwrap_or_else(|p| p.into_inner());
        let waited = Instant::now();
        self.view.writable()?;
        let rest = changes.finish()?;
        changes_applied += rest.len() as u64;
        tree.apply_batch(rest.into_batch())?;
        db.flush()?;
        let size_after = db.size_on_disk().unwrap_or(0);
        tree.insert(BASE, &size_after.to_be_bytes())?;
        db.flush()?;
        super::eventlog::sync_dir(path).map_err(|e| io(path, e))?;
        generation::switch(&self.dir, self.generation).map_err(|e| io(&self.dir, e))?;
        let new = Arc::new(generation::Handles::new(
            db.clone(),
            tree,
            path.to_path_buf(),
        ));
        let replaced = std::mem::replace(
            &mut *self.view.current.write().unwrap_or_else(|p| p.into_inner()),
            new,
        );
        drop(alone);
        let writes_waited_seconds = waited.elapsed().as_secs_f64();
        replaced.retire();
        drop((replaced, old));
        let done = Rewritten {
            generation: self.generation,
            at_ms: crate::domain::timefmt::now_ms(),
            seconds: started.elapsed().as_secs_f64(),
            writes_waited_seconds,
            entries,
            bytes_copied: bytes,
            changes_applied,
            size_before,
            size_after,
        };
        tracing::info!(
            "store rewritten into {} in {:.1} s (writes waited {:.3} s): {entries} entries and {changes_applied} changes, {} MiB of files now against {} MiB before",
            generation::name(self.generation),
            done.seconds,
            writes_waited_seconds,
            size_after >> 20,
            size_before >> 20
        );
        Ok(done)
    }

    /// Refuses the copy's next batch of `bytes` when the store is closing or
    /// the disk would be left with less than the free space kept: the copy
    /// stops, the store does not.
    fn may_write(&self, bytes: usize) -> Result<(), StoreError> {
        if self.cancel.load(Ordering::Acquire) {
            return Err(StoreError::Refused(CANCELLED.into()));
        }
        if let Some(free) = super::bounds::short_of_room(&self.dir, self.min_free, bytes as u64) {
            return Err(StoreError::Refused(format!(
                "the disk under {} has {} MiB free, less than store.min_free_mb = {} plus the copy's next {} MiB: the rewrite stopped before filling it",
                self.dir.display(),
                free >> 20,
                self.min_free >> 20,
                (bytes as u64).div_ceil(1 << 20)
            )));
        }
        Ok(())
    }
}

/// Copies every entry of `from` that `keep` keeps into `to`, in batches of
/// about `batch_bytes`, each first passed to `may_write` with its bytes.
/// Answers the entries and the key and value bytes copied.
pub(super) fn copy_entries(
    from: &generation::Held,
    to: &sled::Tree,
    batch_bytes: usize,
    keep: impl Fn(&[u8]) -> bool,
    mut may_write: impl FnMut(usize) -> Result<(), StoreError>,
) -> Result<(u64, u64), StoreError> {
    let (mut entries, mut bytes, mut pending) = (0u64, 0u64, 0usize);
    let mut batch = sled::Batch::default();
    for item in from.iter() {
        let (k, v) = item?;
        if !keep(&k) {
            continue;
        }
        entries += 1;
        pending += k.len() + v.len();
        batch.insert(k, v);
        if pending >= batch_bytes {
            may_write(pending)?;
            to.apply_batch(std::mem::take(&mut batch))?;
            bytes += pending as u64;
            pending = 0;
        }
    }
    may_write(pending)?;
    to.apply_batch(batch)?;
    Ok((entries, bytes + pending as u64))
}

/// The changes made to the old generation while it is copied, collected by
/// a thread of their own (sled makes a writer wait once 1024 are unread).
/// The thread stops at [`MARK`]: a key written (and removed) after every
/// change wanted, so every change before it is in.
struct Changes {
    got: Arc<Mutex<Vec<sled::Event>>>,
    old: generation::Held,
    failed: Arc<std::sync::OnceLock<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The key that ends a collection of changes; never copied.
const MARK: &[u8] = b"i/rewrite-mark";

/// The changes in the order they were made.
struct Ordered(Vec<sled::Event>);

impl Ordered {
    fn len(&self) -> usize {
        self.0.len()
    }

    /// One batch with each key's last change.
    fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for e in self.0 {
            match e {
                sled::Event::Insert { key, value } => batch.insert(key, value),
                sled::Event::Remove { key } => batch.remove(key),
            }
        }
        batch
    }
}

impl Changes {
    /// Starts collecting the changes of `old` (call with no write under way).
    fn collect(view: &StoreView, old: generation::Held) -> Result<Changes, StoreError> {
        let got: Arc<Mutex<Vec<sled::Event>>> = Default::default();
        let sub = old.watch_prefix(b"");
        let g = got.clone();
        let thread = std::thread::Builder::new()
            .name("store-rewrite-log".into())
            .spawn(move || {
                // sled's blocking iterator steps over the reservations of
                // writes that changed nothing, and ends with the store.
                for e in sub {
                    if e.key().as_ref() == MARK {
                        return;
                    }
                    g.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                }
            })
            .map_err(|e| StoreError::Refused(format!("cannot start the store's rewrite: {e}")))?;
        Ok(Changes {
            got,
            old,
            failed: view.failed.clone(),
            thread: Some(thread),
        })
    }

    /// The changes collected so far.
    fn take(&self) -> Ordered {
        Ordered(std::mem::take(
            &mut *self.got.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }

    /// Writes the mark and waits for the thread to reach it.
    fn stop(&mut self) -> Result<(), StoreError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.old.insert(MARK, b"")?;
        self.old.remove(MARK)?;
        thread
            .join()
            .map_err(|_| StoreError::Refused("the store's rewrite log thread panicked".into()))
    }

    /// Every change not taken yet; call with no write under way.
    fn finish(mut self) -> Result<Ordered, StoreError> {
        self.stop()?;
        Ok(self.take())
    }
}

impl Drop for Changes {
    /// A copy that stopped early: its thread ends at the mark, unless the
    /// store takes no more writes (then it ends with the store).
    fn drop(&mut self) {
        // After a failed write nothing more may be written (see `StoreView::poison`).
        if self.thread.is_some() && self.failed.get().is_none() {
            if let Err(e) = self.stop() {
                tracing::warn!("the store's rewrite log did not stop: {e}");
            }
        }
    }
}

fn remove_unfinished(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(
                "cannot remove the unfinished store files {}: {e}",
                path.display()
            );
        }
    }
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Refused(format!(
        "cannot write the rewritten store's files under {}: {e}",
        path.display()
    ))
}
