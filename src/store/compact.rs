//! The pair compactor: a thread of each open store that writes the frozen
//! overlay layer out as per-user chunks (see [`super::pairs`]), off the
//! store's write path. A failed write poisons the store like any other
//! (nothing is written after it) and stops ingest with the reason.

use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::pairs::{self, Chunk, Layer, Slots};
use super::{bounds, StoreError, StoreView};

/// Writes `layer` (every run below `tag`) as one chunk per user, deletes the
/// runs it covers and records `tag`, in one atomic write; then deletes the
/// chunks that merged chunks replaced. Answers (chunks written, users merged).
pub fn compact(
    view: &StoreView,
    path: &std::path::Path,
    layer: &Layer,
    tag: u64,
    merge_at: usize,
    min_free_bytes: u64,
) -> Result<(u64, u64), StoreError> {
    let mut batch = sled::Batch::default();
    let mut replaced: Vec<sled::IVec> = Vec::new();
    let (mut written, mut merged_users, mut bytes) = (0u64, 0u64, 0usize);
    for (user, deltas) in &layer.users {
        let mut keys = Vec::new();
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut readable = true;
        for item in view.tree.scan_prefix(pairs::user_prefix(user)) {
            let (k, v) = item?;
            match pairs::decode_chunk(&k, &v) {
                Some(c) => chunks.push(c),
                // Left for `check --repair`: merging would drop it.
                None => readable = false,
            }
            keys.push(k);
        }
        let key = pairs::chunk_key(user, tag);
        let value = if readable && keys.len() + 1 >= merge_at {
            let mut all: FxHashMap<String, Slots> = FxHashMap::default();
            pairs::fold_chunks(&chunks, &mut all);
            for (video, s) in deltas {
                match all.get_mut(video) {
                    Some(t) => super::slots::combine(super::slots::PAIR, t, s),
                    None => {
                        all.insert(video.clone(), *s);
                    }
                }
            }
            let mut rows: Vec<(&String, &Slots)> = all.iter().collect();
            rows.sort_by(|a, b| a.0.cmp(b.0));
            merged_users += 1;
            replaced.extend(keys);
            pairs::encode_chunk(true, rows.into_iter().map(|(v, s)| (v.as_str(), s)))
        } else {
            let mut rows: Vec<(&String, &Slots)> = deltas.iter().collect();
            rows.sort_by(|a, b| a.0.cmp(b.0));
            pairs::encode_chunk(false, rows.into_iter().map(|(v, s)| (v.as_str(), s)))
        };
        bytes += key.len() + value.len();
        batch.insert(key, value);
        written += 1;
    }
    let end = pairs::run_key(tag, 0);
    for item in view.tree.range(pairs::RUN.to_vec()..end) {
        batch.remove(item?.0);
    }
    batch.insert(pairs::THROUGH, &tag.to_be_bytes());
    if min_free_bytes > 0 {
        if let Some(free) = bounds::free_bytes(path) {
            if free < min_free_bytes.saturating_add((bytes as u64).saturating_mul(2)) {
                let why = format!(
                    "the disk has {} MiB free, less than store.min_free_mb = {} plus the pair \
                     compaction's {} MiB",
                    free >> 20,
                    min_free_bytes >> 20,
                    (bytes as u64).div_ceil(1 << 20)
                );
                // Nothing may be written after a refused write (see `Store::check_space`).
                let _ = view.failed.set(why.clone());
                return Err(StoreError::Refused(why));
            }
        }
    }
    view.commit(batch)?;
    if !replaced.is_empty() {
        // The merged chunks are durable: what they replace may go.
        let mut batch = sled::Batch::default();
        for k in replaced {
            batch.remove(k);
        }
        view.commit(batch)?;
    }
    Ok((written, merged_users))
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
                    layer.users.len(),
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
