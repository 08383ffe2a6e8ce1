//! `playpulse check [--repair]`: reads every entry of a stopped daemon's store,
//! verifies event segments (read from the event log's files: checksum,
//! entries, events), dead letters and catalog records, and lists what is
//! damaged: entries whose value does not hold (a segment whose file is missing
//! or short included), and stretches of sled's files that cannot be read.
//!
//! `--repair` rebuilds the store from what reads back: every readable entry is
//! copied into a new store, damaged values are kept apart under `Q/` (with why
//! and when), the aggregates are recomputed from the event log and the dead
//! letters (so they equal what the store holds), and the new store takes the
//! old one's place; the old files stay beside it as `store.damaged-<ms>` until
//! the operator removes them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::eventlog::{self, LogFiles};
use super::{keys, read, scan, segment, Store, StoreError};
use crate::domain::event::Event;

/// One damaged thing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Damage {
    pub what: String,
    pub why: String,
}

/// What `check` found (and did).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckReport {
    pub path: PathBuf,
    pub entries: u64,
    pub segments: u64,
    pub events: u64,
    pub dead_letters: u64,
    pub catalog: u64,
    /// (user, video) pair entries in chunks (or rows of an older layout).
    pub pairs: u64,
    /// Entries kept apart by earlier repairs.
    pub quarantined: u64,
    pub damaged: Vec<Damage>,
    /// Set by `--repair`: where the damaged store's files were moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Repair>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repair {
    pub old_files: PathBuf,
    pub entries_copied: u64,
    pub quarantined: u64,
    pub events_kept: u64,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
    }
}

/// Why a value does not hold, if it does not (`files`: the event log's,
/// `runs`: the runs log's).
fn verify(
    k: &[u8],
    v: &[u8],
    files: &LogFiles,
    runs: &LogFiles,
    report: &mut CheckReport,
) -> Option<String> {
    if k.starts_with(keys::EVENT) {
        report.segments += 1;
        let bytes = match files.resolve(v) {
            Ok(b) => b,
            Err(e) => return Some(e.to_string()),
        };
        let entries = match segment::entries(&bytes) {
            Ok(e) => e,
            Err(e) => return Some(e.to_string()),
        };
        for (offset, body) in &entries {
            if let Err(e) = Event::decode(body) {
                return Some(format!("the event at offset {offset} does not decode: {e}"));
            }
        }
        report.events += entries.len() as u64;
    } else if k.starts_with(keys::DEAD) {
        report.dead_letters += 1;
        if let Err(e) = serde_json::from_slice::<read::DeadLetter>(v) {
            return Some(format!("not a dead letter: {e}"));
        }
    } else if [
        keys::CAT_USER,
        keys::CAT_MOVIE,
        keys::CAT_SERIES,
        keys::CAT_TRACK,
    ]
    .iter()
    .any(|p| k.starts_with(p))
    {
        report.catalog += 1;
        if let Err(e) = Event::decode(v) {
            return Some(format!("not a catalog record: {e}"));
        }
    } else if k.starts_with(keys::VIDEO_PAIR) {
        report.pairs += 1;
        if super::slots::decode_pair(v).is_none() || keys::split_pair(&k[2..]).is_none() {
            return Some("not a pair row (5 numbers under a user·video key)".into());
        }
    } else if k.starts_with(super::pairs::CHUNK) {
        match super::pairs::decode_chunk(k, v) {
            Some(c) => report.pairs += c.pairs.len() as u64,
            None => return Some("not a pair chunk (a kind byte, then video → 5 numbers)".into()),
        }
    } else if k.starts_with(super::state::JOURNAL) {
        // Not kept by a repair (the aggregates are recomputed), but a part
        // whose bytes are not in the runs log stops the store from opening.
        if let Err(e) = runs.resolve_checked(v) {
            return Some(e.to_string());
        }
    } else if k.starts_with(super::pairs::RUN) {
        let bytes = match runs.resolve_checked(v) {
            Ok(b) => b,
            Err(e) => return Some(e.to_string()),
        };
        let mut entries: Vec<(Vec<u8>, Vec<f64>)> = Vec::new();
        let read =
            super::state::decode_entries(&bytes, super::state::Encoding::Current, |key, s| {
                entries.push((key.to_vec(), s.to_vec()))
            });
        if read.is_none()
            || super::pairs::run_pairs(&entries).is_none()
            || super::pairs::run_seq(k).is_none()
        {
            return Some("not a pair run (user·video → 5 numbers, and offsets)".into());
        }
    } else if k.starts_with(keys::QUARANTINE) {
        report.quarantined += 1;
    }
    None
}

/// Checks the store of the data dir `dir` (its daemon stopped); with
/// `repair`, rebuilds it from what reads back (see the module docs).
pub fn check(dir: &Path, repair: bool) -> Result<CheckReport, StoreError> {
    let (_, path) = super::generation::current(dir)?;
    if !path.exists() {
        return Err(StoreError::Refused(format!(
            "{}: no store there; pass the data dir of a daemon (--data-dir)",
            dir.display()
        )));
    }
    let db = super::open_sled(&path, 64)?;
    let tree = db.open_tree("main")?;
    let mut report = CheckReport {
        path: path.clone(),
        ..CheckReport::default()
    };
    let files = LogFiles::new(dir.join(eventlog::DIR));
    let runs = LogFiles::with_ext(dir.join(eventlog::RUNS_DIR), eventlog::RUNS_EXT);
    let mut damaged_keys = Vec::new();
    for step in scan::scan_prefix(super::generation::Held::of(&db, &tree, &path), b"") {
        match step {
            Ok((k, v)) => {
                report.entries += 1;
                if let Some(why) = verify(&k, &v, &files, &runs, &mut report) {
                    report.damaged.push(Damage {
                        what: read::entry_name(&k),
                        why,
                    });
                    damaged_keys.push((k, v));
                }
            }
            Err(u) => report.damaged.push(Damage {
                what: match &u.resumed_at {
                    Some(k) => format!(
                        "unreadable entries after {} up to {}",
                        read::entry_name(&u.after),
                        read::entry_name(k)
                    ),
                    None => format!("every entry after {}", read::entry_name(&u.after)),
                },
                why: u.error,
            }),
        }
    }
    if !repair || report.is_clean() {
        return Ok(report);
    }
    // Copy what reads back into a new store beside the old one.
    let rebuilt = dir.join("store.rebuild");
    if rebuilt.exists() {
        std::fs::remove_dir_all(&rebuilt).map_err(|e| {
            StoreError::Refused(format!("cannot remove {}: {e}", rebuilt.display()))
        })?;
    }
    let new_db = super::open_sled(&rebuilt, 64)?;
    let new_tree = new_db.open_tree("main")?;
    let bad: std::collections::HashSet<Vec<u8>> =
        damaged_keys.iter().map(|(k, _)| k.to_vec()).collect();
    let now = crate::domain::timefmt::now_ms();
    let mut batch = sled::Batch::default();
    let (mut pending, mut copied) = (0usize, 0u64);
    for step in scan::scan_prefix(super::generation::Held::of(&db, &tree, &path), b"").flatten() {
        let (k, v) = step;
        // The aggregates are recomputed below, from what is kept.
        if k.starts_with(super::state::JOURNAL)
            || k.starts_with(super::state::CHECKPOINT_CURRENT)
            || k.starts_with(super::state::CHECKPOINT)
        {
            continue;
        }
        pending += k.len() + v.len();
        if bad.contains(k.as_ref()) {
            let mut qk = keys::QUARANTINE.to_vec();
            qk.extend_from_slice(&k);
            let why = report
                .damaged
                .iter()
                .find(|d| d.what == read::entry_name(&k))
                .map_or("", |d| d.why.as_str());
            // A segment in the event log's files is kept with its bytes as
            // read: the file goes once no segment entry points into it.
            let value = files
                .resolve(&v)
                .map_or_else(|_| v.to_vec(), |b| b.into_owned());
            let record = serde_json::json!({
                "why": why,
                "quarantined_at_ms": now,
                "value_hex": value.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            });
            batch.insert(qk, serde_json::to_vec(&record).unwrap_or_default());
        } else {
            batch.insert(k, v);
        }
        copied += 1;
        if pending > 8 << 20 {
            new_tree.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    new_tree.apply_batch(batch)?;
    new_db.flush()?;
    drop((new_tree, new_db, tree, db));
    let old_files = dir.join(format!("store.damaged-{now}"));
    std::fs::rename(&path, &old_files)
        .and_then(|()| std::fs::rename(&rebuilt, &path))
        .map_err(|e| {
            StoreError::Refused(format!(
                "cannot move the rebuilt store into place ({e}): the rebuilt copy is {}",
                rebuilt.display()
            ))
        })?;
    let mut store = Store::open(dir, 64)?;
    let events_kept = store.recompute_aggregates()?;
    store.close()?;
    report.repaired = Some(Repair {
        old_files,
        entries_copied: copied,
        quarantined: bad.len() as u64,
        events_kept,
    });
    Ok(report)
}
