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

/// Stores written before the pair rows ([`keys::VIDEO_PAIR`]) derive them once
/// from their events, in steps that may be cut anywhere (a row is written
/// whole, as derived, so a step done twice changes nothing); the mark
/// ([`keys::PAIRS_MARK`]) is set with the last step. Answers the pairs written.
pub fn pair_rows(view: &super::StoreView) -> Result<usize, StoreError> {
    if view.tree.contains_key(keys::PAIRS_MARK)? {
        return Ok(0);
    }
    let pairs = view.pairs_from_events()?;
    let n = pairs.len();
    let mut batch = sled::Batch::default();
    let mut bytes = 0;
    for ((user, video), row) in pairs {
        let k = keys::join(keys::VIDEO_PAIR, &[user.as_bytes(), video.as_bytes()]);
        bytes += k.len() + 40;
        batch.insert(k, super::slots::encode_pair(&row));
        if bytes > STEP_BYTES {
            view.tree.apply_batch(std::mem::take(&mut batch))?;
            bytes = 0;
        }
    }
    batch.insert(keys::PAIRS_MARK, &1u64.to_be_bytes());
    view.tree.apply_batch(batch)?;
    view.db.flush()?;
    if n > 0 {
        tracing::info!("derived {n} (user, video) pair rows from the stored events (once)");
    }
    Ok(n)
}
