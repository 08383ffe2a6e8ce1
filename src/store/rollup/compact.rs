//! The rollup compactor: a thread of each open store that adds the held runs
//! up into per-bucket chunks, merges a bucket's chunks once they are
//! [`MERGE_AT`], and expires what retention no longer keeps — each
//! compaction one atomic write that also deletes the runs it covers.

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

type Buckets<'a> = FxHashMap<(Grain, Cube, i64), FxHashMap<Tuple<&'a str>, Sums>>;

/// The runs' entries added up per bucket (minutes kept only while retained,
/// hours while retained; titles by the hour only); answers them, the newest
/// minute and the late count.
fn gather<'a>(
    runs: &'a [HeldRun],
    newest: Option<i64>,
    t: &Tuning,
) -> Result<(Buckets<'a>, Option<i64>, u64), String> {
    let mut entries: Vec<Entry<&'a str>> = Vec::new();
    let mut newest = newest;
    for run in runs {
        for (i, part) in run.parts.iter().enumerate() {
            let v = decode_run_borrowed(part)
                .ok_or_else(|| format!("rollup run {} part {i} does not read back", run.seq))?;
            for e in v.entries {
                if e.sums.weight() > 0 {
                    newest = Some(newest.map_or(e.minute, |n| n.max(e.minute)));
                }
                entries.push(e);
            }
        }
    }
    let Some(now) = newest else {
        return Ok((Buckets::default(), None, 0));
    };
    let minute_cut = now.saturating_sub(t.minute_retention_ms);
    let hour_cut = Grain::Hour.bucket(now.saturating_sub(t.hour_retention_ms));
    let mut out = Buckets::default();
    let mut late = 0u64;
    for e in entries {
        if e.minute >= minute_cut && e.cube != Cube::Titles {
            add_row(
                &mut out,
                (Grain::Minute, e.cube, e.minute),
                &e.tuple,
                &e.sums,
            );
        }
        let hour = Grain::Hour.bucket(e.minute);
        if hour >= hour_cut {
            add_row(&mut out, (Grain::Hour, e.cube, hour), &e.tuple, &e.sums);
        } else if e.cube != Cube::Titles {
            // (a view's titles row repeats its dims row)
            late += e.sums.weight();
        }
    }
    Ok((out, newest, late))
}

fn add_row<'a>(out: &mut Buckets<'a>, at: (Grain, Cube, i64), tuple: &Tuple<&'a str>, sums: &Sums) {
    out.entry(at)
        .or_default()
        .entry(*tuple)
        .or_default()
        .add(sums);
}

/// `rows` sorted, at most `max` of them for titles and music (the least
/// viewed add up under [`OTHER`]).
fn bounded(cube: Cube, rows: FxHashMap<Tuple<&str>, Sums>, max: usize) -> Vec<(Tuple<&str>, Sums)> {
    let mut v: Vec<(Tuple<&str>, Sums)> = rows.into_iter().collect();
    if cube != Cube::Dims && v.len() > max.max(1) {
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
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// One compaction of `runs` (the held runs, oldest first), committed with
/// the gate held so that readers see the runs or the chunks, never both.
pub fn compact(
    view: &StoreView,
    shared: &Shared,
    runs: &[HeldRun],
    path: &std::path::Path,
    min_free_bytes: u64,
) -> Result<Done, StoreError> {
    let (tuning, newest, late_before) = {
        let h = shared.lock();
        (h.tuning, h.status.newest_minute, h.status.late_dropped)
    };
    let Some(last) = runs.iter().map(|r| r.seq).max() else {
        return Ok(Done::default());
    };
    let tag = last + 1;
    let (buckets, newest, late) =
        gather(runs, newest, &tuning).map_err(|m| StoreError::Corrupt {
            key: "R/".into(),
            message: m,
        })?;
    let mut done = Done {
        late,
        newest,
        ..Done::default()
    };
    let mut batch = sled::Batch::default();
    let mut bytes = 0usize;
    let mut order: Vec<(Grain, Cube, i64)> = buckets.keys().copied().collect();
    order.sort();
    let mut buckets = buckets;
    for at in order {
        let Some(new_rows) = buckets.remove(&at) else {
            continue;
        };
        let mut rows: FxHashMap<Tuple<&str>, Sums> = new_rows;
        let (grain, cube, bucket) = at;
        let prefix = bucket_prefix(grain, cube, bucket);
        let mut existing: Vec<(sled::IVec, sled::IVec)> = Vec::new();
        for item in view.tree.scan_prefix(&prefix) {
            existing.push(item?);
        }
        let mut tags: Vec<&[u8]> = existing
            .iter()
            .filter_map(|(k, _)| k.get(prefix.len()..prefix.len() + 8))
            .collect();
        tags.dedup();
        if tags.len() + 1 >= MERGE_AT {
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
                    rows.entry(t).or_default().add(&s);
                }
                batch.remove(k.clone());
            }
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
        let cuts = [
            (
                Grain::Minute,
                now.saturating_sub(tuning.minute_retention_ms),
            ),
            (
                Grain::Hour,
                Grain::Hour.bucket(now.saturating_sub(tuning.hour_retention_ms)),
            ),
        ];
        for (grain, cut) in cuts {
            for cube in Cube::ALL {
                let from = bucket_prefix(grain, cube, i64::MIN);
                for item in view.tree.range(from..bucket_prefix(grain, cube, cut)) {
                    batch.remove(item?.0);
                    done.chunks_expired += 1;
                }
            }
        }
        batch.insert(NEWEST, &now.to_be_bytes());
    }
    for run in runs {
        for part in 0..run.parts.len() {
            batch.remove(run_key(run.seq, part as u32));
        }
    }
    batch.insert(THROUGH, &tag.to_be_bytes());
    batch.insert(LATE, &late_before.saturating_add(late).to_be_bytes());
    view.refuse_unless_room(path, min_free_bytes, bytes, "rollup compaction")?;
    let _gate = shared.gate.write().unwrap_or_else(|p| p.into_inner());
    view.commit(batch)?;
    let mut h = shared.lock();
    let dropped: usize = h
        .runs
        .iter()
        .filter(|r| r.seq <= last)
        .flat_map(|r| r.parts.iter().map(|p| p.len()))
        .sum();
    h.runs.retain(|r| r.seq > last);
    h.bytes = h.bytes.saturating_sub(dropped);
    Ok(done)
}

/// Runs the compactor until the store closes: a compaction each second while
/// runs are held, or as soon as they pass `compact_bytes`.
pub fn run(
    view: StoreView,
    shared: Arc<Shared>,
    path: std::path::PathBuf,
    min_free: Arc<AtomicU64>,
) {
    let mut last = Instant::now();
    loop {
        let runs = {
            let mut h = shared.lock();
            loop {
                if h.stop {
                    return;
                }
                let due =
                    last.elapsed() >= Duration::from_secs(1) || h.bytes >= h.tuning.compact_bytes;
                if !h.runs.is_empty() && due {
                    break h.runs.clone();
                }
                h = shared
                    .changed
                    .wait_timeout(h, Duration::from_millis(250))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        last = Instant::now();
        let t = Instant::now();
        let min_free = min_free.load(Ordering::Relaxed);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            compact(&view, &shared, &runs, &path, min_free)
        }))
        .unwrap_or_else(|p| {
            Err(StoreError::Refused(format!(
                "the rollup compaction panicked: {}",
                crate::domain::worker::panic_message(p.as_ref())
            )))
        });
        let mut h = shared.lock();
        match result {
            Ok(d) => {
                let s = &mut h.status;
                s.compactions += 1;
                s.chunks_written += d.chunks_written;
                s.buckets_merged += d.buckets_merged;
                s.chunks_expired += d.chunks_expired;
                s.late_dropped += d.late;
                s.newest_minute = d.newest.or(s.newest_minute);
                s.last_compaction_s = t.elapsed().as_secs_f64();
                shared.changed.notify_all();
            }
            Err(e) => {
                tracing::error!(
                    "the rollup compaction failed: {e}; the runs stay held and ingest stops"
                );
                h.broken = Some(e.to_string());
                shared.changed.notify_all();
                return;
            }
        }
    }
}
