//! The pair compactor: a thread of each open store that writes the frozen
//! overlay layer out as per-user chunks (see [`super::pairs`]), off the
//! store's write path. A failed write poisons the store like any other
//! (nothing is written after it) and stops ingest with the reason.

use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::pairs::{self, Chunk, Layer, Slots};
use super::{StoreError, StoreView};

/// Users whose chunks one write of a compaction holds: small writes, so the
/// store's batch writes (sled serialises every batch write) wait for one of
/// them at most, never for the whole compaction.
const USERS_PER_WRITE: usize = 2_000;

/// Whether `user`'s chunks are merged in the compaction tagged `tag`: about
/// one compaction in `merge_at` that touches a user merges their chunks, so
/// the others write a chunk without reading any (no count is kept per user).
fn merges(user: &str, tag: u64, merge_at: usize) -> bool {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    user.hash(&mut h);
    tag.hash(&mut h);
    h.finish() % merge_at.max(1) as u64 == 0
}

/// Writes `layer` (every run below `tag`) as one chunk per user: first a mark
/// that names the compaction, then the chunks in writes of
/// [`USERS_PER_WRITE`] users, then one write that deletes the runs covered,
/// records `tag` and drops the mark; then the chunks that merged chunks
/// replaced are deleted. A store opened with the mark still set deletes the
/// chunks tagged `tag` (see [`undo_unfinished`]): its runs are all still
/// there. Answers (chunks written, users merged).
pub fn compact(
    view: &StoreView,
    path: &std::path::Path,
    layer: &Layer,
    tag: u64,
    merge_at: usize,
    min_free_bytes: u64,
) -> Result<(u64, u64), StoreError> {
    let mut replaced: Vec<sled::IVec> = Vec::new();
    let (mut written, mut merged_users) = (0u64, 0u64);
    let space =
        |bytes: usize| view.refuse_unless_room(path, min_free_bytes, bytes, "pair compaction");
    let mut mark = sled::Batch::default();
    mark.insert(pairs::COMPACTING, &tag.to_be_bytes());
    view.commit(mark)?;
    let users: Vec<&str> = layer.user_names().collect();
    for group in users.chunks(USERS_PER_WRITE) {
        let mut batch = sled::Batch::default();
        let mut bytes = 0usize;
        for user in group {
            let deltas: Vec<(&str, &Slots)> = layer.user(user).into_iter().flatten().collect();
            let key = pairs::chunk_key(user, tag);
            let value = if merges(user, tag, merge_at) {
                merge(view, user, &deltas, &mut replaced)?
            } else {
                None
            };
            let value = match value {
                Some(v) => {
                    merged_users += 1;
                    v
                }
                None => pairs::encode_rows(false, deltas),
            };
            bytes += key.len() + value.len();
            batch.insert(key, value);
            written += 1;
        }
        space(bytes)?;
        view.apply_unflushed(batch)?;
    }
    let mut batch = sled::Batch::default();
    let end = pairs::run_key(tag, 0);
    for item in view.tree().range(pairs::RUN.to_vec()..end) {
        batch.remove(item?.0);
    }
    batch.insert(pairs::THROUGH, &tag.to_be_bytes());
    batch.remove(pairs::COMPACTING);
    view.commit(batch)?;
    // The merged chunks are durable: what they replace may go.
    for group in replaced.chunks(USERS_PER_WRITE * 4) {
        let mut batch = sled::Batch::default();
        for k in group {
            batch.remove(k.clone());
        }
        view.apply_unflushed(batch)?;
    }
    Ok((written, merged_users))
}

/// `user`'s chunks merged with `deltas` into one merged chunk (its value),
/// the keys it replaces added to `replaced`; `None` when a chunk does not
/// read back (left for `check --repair`: merging would drop it).
fn merge(
    view: &StoreView,
    user: &str,
    deltas: &[(&str, &Slots)],
    replaced: &mut Vec<sled::IVec>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut keys = Vec::new();
    let mut chunks: Vec<Chunk> = Vec::new();
    for item in view.tree().scan_prefix(pairs::user_prefix(user)) {
        // A stretch that does not read back is left for `check --repair`.
        let Ok((k, v)) = item else {
            return Ok(None);
        };
        match pairs::decode_chunk(&k, &v) {
            Some(c) => chunks.push(c),
            None => return Ok(None),
        }
        keys.push(k);
    }
    let mut all: FxHashMap<String, Slots> = FxHashMap::default();
    pairs::fold_chunks(&chunks, &mut all);
    for (video, s) in deltas {
        pairs::add(&mut all, video, s);
    }
    replaced.extend(keys);
    Ok(Some(pairs::encode_sorted(true, &all)))
}

/// A compaction the process did not finish (its mark is set): its chunks go,
/// its runs stay (they were deleted only by its last write). One pass over
/// the chunks, only after such an interruption. Answers the chunks deleted.
pub fn undo_unfinished(view: &StoreView) -> Result<usize, StoreError> {
    let Some(v) = view.tree().get(pairs::COMPACTING)? else {
        return Ok(0);
    };
    let tag = u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
        key: "i/pairs-compacting".into(),
        message: "wrong length".into(),
    })?);
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for item in view.tree().scan_prefix(pairs::CHUNK) {
        let (k, _) = item?;
        if pairs::parse_chunk_key(&k).is_some_and(|(_, t)| t == tag) {
            batch.remove(k);
            n += 1;
        }
    }
    batch.remove(pairs::COMPACTING);
    view.commit(batch)?;
    tracing::warn!("undid {n} pair chunks of a compaction that did not finish (its runs are kept)");
    Ok(n)
}

/// Runs the compactor until the store closes (see [`Shared::stop`]).
pub fn run(view: StoreView, path: std::path::PathBuf, min_free: Arc<std::sync::atomic::AtomicU64>) {
    let shared = view.pairs.clone();
    loop {
        let layer = {
            let mut o = shared.lock();
            loop {
                if o.stop {
                    return;
                }
                if let (Some(f), false) = (&o.frozen, o.compacting) {
                    let f = f.clone();
                    o.compacting = true;
                    break f;
                }
                o = shared.changed.wait(o).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(last) = layer.last else {
            let mut o = shared.lock();
            o.frozen = None;
            o.compacting = false;
            shared.changed.notify_all();
            continue;
        };
        let t = Instant::now();
        let result = {
            let _gate = shared.gate.lock().unwrap_or_else(|p| p.into_inner());
            let tuning = shared.tuning();
            let min_free = min_free.load(std::sync::atomic::Ordering::Relaxed);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                compact(&view, &path, &layer, last + 1, tuning.merge_at, min_free)
            }))
            .unwrap_or_else(|p| {
                Err(StoreError::Refused(format!(
                    "the pair compaction panicked: {}",
                    crate::domain::worker::panic_message(p.as_ref())
                )))
            })
        };
        let mut o = shared.lock();
        o.compacting = false;
        match result {
            Ok((written, merged)) => {
                o.frozen = None;
                o.stats.compactions += 1;
                o.stats.chunks_written += written;
                o.stats.merged_users += merged;
                o.stats.last_seconds = t.elapsed().as_secs_f64();
                tracing::debug!(
                    "compacted {} pairs of {} users in {:.2}s ({merged} merged)",
                    layer.entries,
                    layer.user_count(),
                    o.stats.last_seconds
                );
                shared.changed.notify_all();
            }
            Err(e) => {
                tracing::error!(
                    "the pair compaction failed: {e}; the pairs stay in their runs and ingest stops"
                );
                // The store is poisoned (or refused): keep the frozen layer for readers.
                o.broken = Some(e.to_string());
                shared.changed.notify_all();
                return;
            }
        }
    }
}
