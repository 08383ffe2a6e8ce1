//! The rollup compactor: a thread of each open store that writes the held
//! generation into per-bucket chunks, merges a bucket's chunks once they are
//! [`MERGE_AT`], and expires what retention no longer keeps — each
//! compaction one atomic write that also moves the offsets the chunks cover
//! ([`COVERED`]) and deletes the runs of earlier versions it holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::*;
use crate::store::StoreView;

/// What one compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Done {
    pub chunks_written: u64,
    pub buckets_merged: u64,
    pub chunks_expired: u64,
    pub late: u64,
    pub newest: Option<i64>,
}

/// Where a row goes: (grain, cube, bucket), then the ranks of its values
/// (see [`Generation::order`]): a bucket's rows sorted by them are in the
/// order of their tuples.
type Place = ((Grain, Cube, i64), [u32; 4]);

/// The generation's rows added up per bucket (minutes kept only while
/// retained, hours while retained; titles by the hour only), each bucket's
/// rows together and sorted by their ranks (`rank`: a name's rank by its
/// number); answers them, the newest minute and the late count. The held
/// minutes of an hour are added up into it; each bucket's rows are sorted
/// on their own (no sort of every row).
fn gather<'g>(
    gen: &'g Generation,
    rank: &[u32],
    newest: Option<i64>,
    t: &Tuning,
) -> (Vec<(Place, Sums)>, Option<i64>, u64) {
    let newest = newest.into_iter().chain(gen.newest()).max();
    let Some(now) = newest else {
        return (Vec::new(), None, 0);
    };
    let [(_, minute_cut), (_, hour_cut)] = t.cuts(now);
    let ranks = |ids: &[u32; 4]| ids.map(|n| rank.get(n as usize).copied().unwrap_or(0));
    let mut out: Vec<(Place, Sums)> = Vec::with_capacity(gen.row_count() * 2);
    let mut late = 0u64;
    let mut sorting: Vec<([u32; 4], &'g Sums)> = Vec::new();
    // Adds a bucket's rows (from one or more held tables) to `out`, sorted.
    let mut place = |at: (Grain, Cube, i64), tables: &[(i64, &'g BucketRows)]| {
        sorting.clear();
        for (_, rows) in tables {
            sorting.extend(rows.iter().map(|(ids, s)| (ranks(ids), s)));
        }
        sorting.sort_unstable_by_key(|(r, _)| *r);
        for (r, s) in sorting.drain(..) {
            match out.last_mut() {
                Some((q, sums)) if q.0 == at && q.1 == r => sums.add(s),
                _ => out.push(((at, r), *s)),
            }
        }
    };
    for cube in Cube::ALL {
        let mut held: Vec<(i64, &'g BucketRows)> = gen.buckets(cube).collect();
        held.sort_unstable_by_key(|(m, _)| *m);
        if cube.has_minutes() {
            for b in held.iter().filter(|(m, _)| *m >= minute_cut) {
                place((Grain::Minute, cube, b.0), std::slice::from_ref(b));
            }
        }
        for hour in held.chunk_by(|a, b| Grain::Hour.bucket(a.0) == Grain::Hour.bucket(b.0)) {
            let Some((first, _)) = hour.first() else {
                continue;
            };
            let at = Grain::Hour.bucket(*first);
            if at >= hour_cut {
                place((Grain::Hour, cube, at), hour);
            } else if cube.has_minutes() {
                // (a view's titles row repeats its dims row; anchors weigh nothing)
                late += hour
                    .iter()
                    .flat_map(|(_, rows)| rows.values())
                    .map(Sums::weight)
                    .sum::<u64>();
            }
        }
    }
    (out, newest, late)
}

/// `rows` (sorted by tuple) with at most `max` of them for titles and music
/// (the least viewed add up under [`OTHER`]), still sorted.
pub(super) fn bounded(
    cube: Cube,
    rows: Vec<(Tuple<&str>, Sums)>,
    max: usize,
) -> Vec<(Tuple<&str>, Sums)> {
    let mut v = rows;
    if matches!(cube, Cube::Titles | Cube::Music) && v.len() > max.max(1) {
        v.sort_by(|a, b| b.1.weight().cmp(&a.1.weight()).then_with(|| a.0.cmp(&b.0)));
        let mut other = Sums::default();
        let other_key: Tuple<&str> = [OTHER, "", "", ""];
        let keep = max.max(1) - 1;
        for (_, s) in v.drain(keep..) {
            other.add(&s);
        }
        if let Some(pos) = v.iter().position(|(t, _)| *t == other_key) {
            v[pos].1.add(&other);
        } else {
            v.push((other_key, other));
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
    }
    v
}

/// One compaction of `gen` (the generation taken from pending), committed
/// with the gate held so that readers see the generation or the chunks,
/// never both.
pub fn compact(
    view: &StoreView,
    shared: &Shared,
    gen: &Generation,
    path: &std::path::Path,
    min_free_bytes: u64,
) -> Result<Done, StoreError> {
    let (tuning, newest, late_before, tag, mut covered) = {
        let h = shared.lock();
        (
            h.tuning,
            h.status.newest_minute,
            h.status.late_dropped,
            h.through + 1,
            h.covered.clone(),
        )
    };
    // Values rank in the order of their strings: rows sorted by ranks are
    // sorted by tuple.
    let order = gen.order();
    let mut rank = vec![0u32; order.len()];
    for (r, n) in order.iter().enumerate() {
        if let Some(x) = rank.get_mut(*n as usize) {
            *x = r as u32;
        }
    }
    let name = |r: u32| gen.name(order.get(r as usize).copied().unwrap_or(0));
    let (placed, newest, late) = gather(gen, &rank, newest, &tuning);
    let mut done = Done {
        late,
        newest,
        ..Done::default()
    };
    let mut batch = sled::Batch::default();
    let mut bytes = 0usize;
    for bucket_rows in placed.chunk_by(|a, b| a.0 .0 == b.0 .0) {
        let Some(((at, _), _)) = bucket_rows.first() else {
            continue;
        };
        let mut rows: Vec<(Tuple<&str>, Sums)> = bucket_rows
            .iter()
            .map(|((_, ranks), s)| (ranks.map(name), *s))
            .collect();
        let (grain, cube, bucket) = *at;
        let prefix = bucket_prefix(grain, cube, bucket);
        let mut existing: Vec<(sled::IVec, sled::IVec)> = Vec::new();
        for item in view.tree().scan_prefix(&prefix) {
            existing.push(item?);
        }
        let mut tags: Vec<&[u8]> = existing
            .iter()
            .filter_map(|(k, _)| k.get(prefix.len()..prefix.len() + 8))
            .collect();
        tags.dedup();
        if tags.len() + 1 >= MERGE_AT {
            let mut merged: FxHashMap<Tuple<&str>, Sums> = rows.drain(..).collect();
            for (k, v) in &existing {
                // A part that does not read back stays (for `check`): merging would drop it.
                let Some(old) = chunk::all_rows(k, v) else {
                    tracing::warn!(
                        "rollup chunk {} does not read back; left as it is",
                        crate::store::read::entry_name(k)
                    );
                    continue;
                };
                for (t, s) in old {
                    merged.entry(t).or_default().add(&s);
                }
                batch.remove(k.clone());
            }
            rows = merged.into_iter().collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            done.buckets_merged += 1;
        }
        let rows = bounded(cube, rows, tuning.max_rows);
        // Titles are asked about by title: their parts keep no facets.
        for (part, value) in chunk::encode(&rows, cube != Cube::Titles) {
            let key = chunk_key(grain, cube, bucket, tag, part);
            bytes += key.len() + value.len();
            batch.insert(key, value);
            done.chunks_written += 1;
        }
    }
    // Retention, from the newest minute.
    if let Some(now) = newest {
        let cuts = tuning.cuts(now);
        for (grain, cut) in cuts {
            for cube in Cube::ALL {
                let from = bucket_prefix(grain, cube, i64::MIN);
                for item in view.tree().range(from..bucket_prefix(grain, cube, cut)) {
                    batch.remove(item?.0);
                    done.chunks_expired += 1;
                }
            }
        }
        batch.insert(NEWEST, &now.to_be_bytes());
    }
    for k in &gen.legacy {
        batch.remove(k.as_slice());
    }
    for ((ns, topic, partition), next) in gen.offsets() {
        let c = covered
            .entry((ns.clone(), topic.clone(), *partition))
            .or_insert(*next);
        *c = (*c).max(*next);
    }
    batch.insert(COVERED, encode_covered(&covered));
    batch.insert(THROUGH, &tag.to_be_bytes());
    batch.insert(LATE, &late_before.saturating_add(late).to_be_bytes());
    view.refuse_unless_room(path, min_free_bytes, bytes, "rollup compaction")?;
    let _gate = shared.gate.write().unwrap_or_else(|p| p.into_inner());
    view.commit(batch)?;
    let mut h = shared.lock();
    h.compacting = None;
    h.covered = covered;
    h.through = tag;
    Ok(done)
}

/// The [`COVERED`] value of `covered`.
pub fn encode_covered(covered: &Covered) -> Vec<u8> {
    let v: Vec<(&str, &str, i32, i64)> = covered
        .iter()
        .map(|((ns, t, p), n)| (ns.as_str(), t.as_str(), *p, *n))
        .collect();
    postcard::to_stdvec(&v).unwrap_or_default()
}

/// A [`COVERED`] value back (`None`: unreadable).
pub fn decode_covered(bytes: &[u8]) -> Option<Covered> {
    let v: Vec<(String, String, i32, i64)> = postcard::from_bytes(bytes).ok()?;
    Some(v.into_iter().map(|(ns, t, p, n)| ((ns, t, p), n)).collect())
}

/// Runs the compactor until the store closes: a compaction every
/// `compact_every_ms` while batches are held, or as soon as they pass
/// `compact_bytes`.
pub fn run(
    view: StoreView,
    shared: Arc<Shared>,
    path: std::path::PathBuf,
    min_free: Arc<AtomicU64>,
) {
    let mut last = Instant::now();
    loop {
        let (gen, last_one) = {
            let mut h = shared.lock();
            loop {
                // Closing: what is held is written first (opening then
                // replays nothing); stopped otherwise, as a crash would.
                let closing = h.stop && h.closing && h.broken.is_none();
                if h.stop && !closing {
                    return;
                }
                // A generation whose compaction failed stays until a restart.
                if h.compacting.is_none() && !h.pending.is_empty() {
                    let due = closing
                        || last.elapsed() >= Duration::from_millis(h.tuning.compact_every_ms)
                        || h.pending.bytes() >= h.tuning.compact_bytes;
                    if due {
                        let next = match h.spare.take() {
                            Some(g) => g,
                            None => h.pending.sized_like(),
                        };
                        let gen = Arc::new(std::mem::replace(&mut h.pending, next));
                        h.compacting = Some(gen.clone());
                        h.taken += 1;
                        shared.changed.notify_all();
                        break (gen, h.stop);
                    }
                }
                if h.stop {
                    return;
                }
                h = shared
                    .changed
                    .wait_timeout(h, Duration::from_millis(250))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        last = Instant::now();
        let spare_limit = shared.lock().tuning.compact_bytes.saturating_mul(4);
        let t = Instant::now();
        let min_free = min_free.load(Ordering::Relaxed);
        let (result, cpu) = crate::domain::worker::with_cpu(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                compact(&view, &shared, &gen, &path, min_free)
            }))
            .unwrap_or_else(|p| {
                Err(StoreError::Refused(format!(
                    "the rollup compaction panicked: {}",
                    crate::domain::worker::panic_message(p.as_ref())
                )))
            })
        });
        shared.cpu_ns.fetch_add(cpu, Ordering::Relaxed);
        // Written and no longer read: its room serves the next generation,
        // unless a burst made it larger than 4 times what starts a compaction
        // (its memory then goes back).
        let spare = match (&result, Arc::try_unwrap(gen)) {
            (Ok(_), Ok(g)) if g.room_bytes() <= spare_limit => Some(g.emptied()),
            _ => None,
        };
        let mut h = shared.lock();
        match result {
            Ok(d) => {
                h.spare = spare;
                let s = &mut h.status;
                s.compactions += 1;
                s.chunks_written += d.chunks_written;
                s.buckets_merged += d.buckets_merged;
                s.chunks_expired += d.chunks_expired;
                s.late_dropped += d.late;
                s.newest_minute = d.newest.or(s.newest_minute);
                s.last_compaction_s = t.elapsed().as_secs_f64();
                shared.changed.notify_all();
                if last_one {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(
                    "the rollup compaction failed: {e}; the batches stay held and ingest stops"
                );
                h.broken = Some(e.to_string());
                shared.changed.notify_all();
                return;
            }
        }
    }
}
