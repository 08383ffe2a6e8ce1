//! Opening a store written in an older layout.
//!
//! Before layout 2, event segments (`e/`) and dead letters (`d/`) were keyed by
//! topic, partition and offset alone: a second run of the embedded broker (which
//! starts every partition at offset 0 again), a recreated topic or another
//! cluster wrote over the first one's. Such a store's entries are moved, in
//! atomic steps that can be cut anywhere and resumed, to the namespaced keys
//! (`E/`, `D/`) under namespace number 0, named [`LEGACY_NAMESPACE`]; its
//! segments gain their checksum. The aggregates are rewritten in today's
//! encoding by the first checkpoint, which also writes the layout mark.

use std::collections::HashMap;
use std::path::Path;

use super::state::Encoding;
use super::{keys, segment, StoreError};

/// The name of the namespace that holds what an older store had stored.
pub const LEGACY_NAMESPACE: &str = "stored before namespaced positions";

/// Bytes moved per atomic step.
const STEP_BYTES: usize = 8 << 20;

fn corrupt(k: &[u8], message: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        message: message.into(),
    }
}

/// Brings event positions to layout 2 and answers how the aggregates are
/// encoded (`Legacy` until the first checkpoint marks the layout).
pub fn positions(tree: &sled::Tree, path: &Path) -> Result<Encoding, StoreError> {
    match tree.get(keys::LAYOUT_KEY)? {
        Some(v) => {
            let found = u32::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt(keys::LAYOUT_KEY, "layout mark has the wrong length"))?,
            );
            if found > keys::LAYOUT {
                return Err(StoreError::NewerLayout {
                    path: path.to_path_buf(),
                    found,
                    known: keys::LAYOUT,
                });
            }
            if found < keys::LAYOUT {
                // Layout 2 reads as it is; what is written from now on may be
                // in the event log's files, which an older playpulse cannot read.
                tree.insert(keys::LAYOUT_KEY, &keys::LAYOUT.to_be_bytes())?;
                tree.flush()?;
            }
            return Ok(Encoding::Current);
        }
        None if tree
            .iter()
            .keys()
            .take(2)
            .all(|k| k.is_ok_and(|k| k.as_ref() == keys::MEMBER)) =>
        {
            // A new store.
            tree.insert(keys::LAYOUT_KEY, &keys::LAYOUT.to_be_bytes())?;
            tree.flush()?;
            return Ok(Encoding::Current);
        }
        None => {}
    }
    let mut moved = 0u64;
    for (old, new) in [
        (keys::LEGACY_EVENT, keys::EVENT),
        (keys::LEGACY_DEAD, keys::DEAD),
    ] {
        loop {
            let mut batch = sled::Batch::default();
            let mut bytes = 0;
            let mut any = false;
            for item in tree.scan_prefix(old) {
                let (k, v) = item?;
                let (topic, partition, offset) = keys::parse_legacy_position(&k[old.len()..])
                    .ok_or_else(|| corrupt(&k, "bad position key"))?;
                let value = if old == keys::LEGACY_EVENT {
                    let entries =
                        segment::raw_entries(&v).map_err(|_| corrupt(&k, "truncated segment"))?;
                    let mut w = segment::SegmentWriter::new();
                    for (o, e) in entries {
                        w.push(o, e);
                    }
                    w.finish()
                } else {
                    v.to_vec()
                };
                bytes += k.len() + value.len();
                batch.insert(keys::position(new, 0, &topic, partition, offset), value);
                batch.remove(k);
                any = true;
                moved += 1;
                if bytes > STEP_BYTES {
                    break;
                }
            }
            if !any {
                break;
            }
            batch.insert(keys::namespace_key(LEGACY_NAMESPACE), &0u32.to_be_bytes());
            batch.insert(keys::namespace_name_key(0), LEGACY_NAMESPACE.as_bytes());
            tree.apply_batch(batch)?;
        }
    }
    tree.flush()?;
    if moved > 0 {
        tracing::info!(
            "store at {}: moved {moved} event segments and dead letters to namespaced positions (layout {})",
            path.display(),
            keys::LAYOUT
        );
    }
    Ok(Encoding::Legacy)
}

/// Every registered offset namespace: name → number.
pub fn namespaces(tree: &sled::Tree) -> Result<HashMap<String, u32>, StoreError> {
    let mut out = HashMap::new();
    for item in tree.scan_prefix(keys::NAMESPACE_NUMBER) {
        let (k, v) = item?;
        let name = std::str::from_utf8(&k[keys::NAMESPACE_NUMBER.len()..])
            .map_err(|_| corrupt(&k, "namespace name is not UTF-8"))?;
        let n = u32::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| corrupt(&k, "namespace number has the wrong length"))?,
        );
        out.insert(name.to_string(), n);
    }
    Ok(out)
}

/// Brings the video pairs into per-user chunks ([`super::pairs`]) once:
/// stores that held a row per pair ([`keys::VIDEO_PAIR`], marked by
/// [`keys::PAIRS_MARK`]) move them, a user at a time, in atomic steps that may
/// be cut anywhere (each step writes its users' chunks and deletes their rows);
/// stores before those rows derive the pairs from their events and write them
/// whole (a step done twice writes the same chunks). The chunks are tagged
/// `seq`, the next journal sequence number: they cover no run yet to come.
/// The mark ([`super::pairs::CHUNKS_MARK`]) is set with the last step.
/// Answers the pairs moved or derived.
pub fn pair_chunks(view: &super::StoreView, seq: u64) -> Result<usize, StoreError> {
    use super::pairs;
    if view.tree().contains_key(pairs::CHUNKS_MARK)? {
        return Ok(0);
    }
    let mut n = 0usize;
    let mut batch = sled::Batch::default();
    let mut bytes = 0usize;
    let mut write_user =
        |batch: &mut sled::Batch, user: &str, rows: &mut Vec<(String, [f64; 5])>| {
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            let key = pairs::chunk_key(user, seq);
            let value = pairs::encode_chunk(true, rows.iter().map(|(v, s)| (v.as_str(), s)));
            n += rows.len();
            let size = key.len() + value.len();
            batch.insert(key, value);
            rows.clear();
            size
        };
    if view.tree().contains_key(keys::PAIRS_MARK)? {
        let mut current: Option<String> = None;
        let mut rows: Vec<(String, [f64; 5])> = Vec::new();
        for item in view.tree().scan_prefix(keys::VIDEO_PAIR) {
            let (k, v) = item?;
            let (user, video) =
                keys::split_pair(&k[keys::VIDEO_PAIR.len()..]).ok_or_else(|| {
                    corrupt(&k, "a pair row's key does not split into user and video")
                })?;
            let row = super::slots::decode_pair(&v)
                .ok_or_else(|| corrupt(&k, "a pair row of the wrong shape"))?;
            if current.as_deref() != Some(user.as_str()) {
                if let Some(u) = current.take() {
                    bytes += write_user(&mut batch, &u, &mut rows);
                    // A step ends between users: each user's rows go in one step.
                    if bytes > STEP_BYTES {
                        view.commit(std::mem::take(&mut batch))?;
                        bytes = 0;
                    }
                }
                current = Some(user);
            }
            rows.push((video, row));
            batch.remove(k);
        }
        if let Some(u) = current.take() {
            write_user(&mut batch, &u, &mut rows);
        }
    } else {
        let mut by_user: std::collections::BTreeMap<String, Vec<(String, [f64; 5])>> =
            Default::default();
        for ((user, video), row) in view.pairs_from_events()? {
            by_user.entry(user).or_default().push((video, row));
        }
        for (user, mut rows) in by_user {
            bytes += write_user(&mut batch, &user, &mut rows);
            if bytes > STEP_BYTES {
                view.commit(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        batch.insert(keys::PAIRS_MARK, &1u64.to_be_bytes());
    }
    batch.insert(pairs::CHUNKS_MARK, &1u64.to_be_bytes());
    view.commit(batch)?;
    if n > 0 {
        tracing::info!("wrote {n} (user, video) pairs into per-user chunks (once)");
    }
    Ok(n)
}
