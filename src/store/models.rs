//! Model versions: the metadata (JSON, typed by `ml::version`) and the serving
//! bundle of each, and which version is the champion — written in one batch.
//! The store reads of a version's metadata only its `kind` (for pruning).

use serde::Deserialize;

use super::{keys, StoreError, StoreView, MAX_VALUE_BYTES};

/// What the store reads of a version's metadata.
#[derive(Deserialize)]
struct Peek {
    kind: String,
}

fn id_key(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// A bundle's part `part`: `x/b/` id (be64) part (be32). A bundle is written
/// in parts of at most [`MAX_VALUE_BYTES`], so no tree node holds a whole one:
/// a node is rewritten whole when sled consolidates it, and the nodes next to
/// the bundles hold the offsets and counters every batch updates (a bundle of
/// 9 MB in one value was rewritten a few times a second). Stores written
/// before hold each bundle whole under `x/b/` id, read the same way.
fn bundle_part_key(id: u64, part: u32) -> Vec<u8> {
    let mut k = id_key(keys::MODEL_BUNDLE, id);
    k.extend_from_slice(&part.to_be_bytes());
    k
}

impl StoreView {
    /// The next free model id.
    pub fn next_model_id(&self) -> Result<u64, StoreError> {
        Ok(match self.tree().scan_prefix(keys::MODEL_META).last() {
            Some(item) => {
                let (k, _) = item?;
                u64::from_be_bytes(k[keys::MODEL_META.len()..].try_into().unwrap_or([0; 8])) + 1
            }
            None => 1,
        })
    }

    /// Records a version and its bundle; makes it the champion when `promote`.
    pub fn add_model(
        &self,
        id: u64,
        meta: &[u8],
        bundle: &[u8],
        promote: bool,
    ) -> Result<(), StoreError> {
        // Pruning reads the kind back: a record without one is refused here.
        if serde_json::from_slice::<Peek>(meta).is_err() {
            return Err(StoreError::Refused(format!(
                "model {id}: its metadata does not name its kind"
            )));
        }
        let mut batch = sled::Batch::default();
        batch.insert(id_key(keys::MODEL_META, id), meta);
        for (part, chunk) in bundle.chunks(MAX_VALUE_BYTES).enumerate() {
            batch.insert(bundle_part_key(id, part as u32), chunk);
        }
        if bundle.is_empty() {
            batch.insert(bundle_part_key(id, 0), bundle);
        }
        if promote {
            let mut history = self.champion_history()?;
            history.push(id);
            batch.insert(keys::MODEL_CHAMPION, &id.to_be_bytes());
            batch.insert(
                keys::MODEL_HISTORY,
                serde_json::to_vec(&history).unwrap_or_default(),
            );
        }
        self.commit(batch)?;
        Ok(())
    }

    /// The champions in the order they served, the current one last.
    pub fn champion_history(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .tree()
            .get(keys::MODEL_HISTORY)?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default())
    }

    fn write_champion(&self, id: u64, history: &[u64]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(keys::MODEL_CHAMPION, &id.to_be_bytes());
        batch.insert(
            keys::MODEL_HISTORY,
            serde_json::to_vec(history).unwrap_or_default(),
        );
        self.commit(batch)?;
        Ok(())
    }

    /// Makes an existing version the champion.
    pub fn promote(&self, id: u64) -> Result<(), StoreError> {
        if self.tree().get(id_key(keys::MODEL_META, id))?.is_none() {
            return Err(StoreError::Refused(format!(
                "no model version {id}; list them with `playpulse models`"
            )));
        }
        let mut history = self.champion_history()?;
        if history.last() == Some(&id) {
            // Already the champion: rolling back must not land on it again.
            return Ok(());
        }
        history.push(id);
        self.write_champion(id, &history)
    }

    /// Deletes model versions (and their bundles) beyond the newest `keep`;
    /// every version in the champion history and the newest of each kind stay.
    /// Answers how many were deleted.
    pub fn prune_models(&self, keep: usize) -> Result<usize, StoreError> {
        let mut models = Vec::new();
        for (id, meta) in self.model_metas()? {
            let peek: Peek = serde_json::from_slice(&meta).map_err(|e| StoreError::Corrupt {
                key: format!("model {id}"),
                message: e.to_string(),
            })?;
            models.push((id, peek.kind));
        }
        let history = self.champion_history()?;
        let mut kept: std::collections::HashSet<u64> = history.iter().copied().collect();
        let mut newest_of_kind: std::collections::HashMap<&str, u64> = Default::default();
        for (id, kind) in &models {
            let e = newest_of_kind.entry(kind.as_str()).or_insert(*id);
            *e = (*e).max(*id);
        }
        kept.extend(newest_of_kind.values());
        let mut ids: Vec<u64> = models.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        kept.extend(ids.iter().take(keep));
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for id in ids.into_iter().filter(|id| !kept.contains(id)) {
            batch.remove(id_key(keys::MODEL_META, id));
            for item in self.tree().scan_prefix(id_key(keys::MODEL_BUNDLE, id)) {
                batch.remove(item?.0);
            }
            n += 1;
        }
        if n > 0 {
            self.commit(batch)?;
        }
        Ok(n)
    }

    /// Goes back to the champion before the current one; returns it.
    pub fn rollback(&self) -> Result<u64, StoreError> {
        let mut history = self.champion_history()?;
        if history.len() < 2 {
            return Err(StoreError::Refused(
                "no earlier champion to roll back to (the champion history has one model)".into(),
            ));
        }
        history.pop();
        let id = *history.last().unwrap_or(&0);
        self.write_champion(id, &history)?;
        Ok(id)
    }

    /// Every version's id and metadata, oldest first.
    pub fn model_metas(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.tree()
            .scan_prefix(keys::MODEL_META)
            .map(|item| {
                let (k, v) = item?;
                let id = k[keys::MODEL_META.len()..]
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        message: "not a model id".into(),
                    })?;
                Ok((id, v.to_vec()))
            })
            .collect()
    }

    pub fn champion_id(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .tree()
            .get(keys::MODEL_CHAMPION)?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u64::from_be_bytes))
    }

    /// The serving bundle of a version, as stored (its parts in order, or
    /// the whole value of an older store).
    pub fn model_bundle(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut out: Option<Vec<u8>> = None;
        for item in self.tree().scan_prefix(id_key(keys::MODEL_BUNDLE, id)) {
            let (_, v) = item?;
            out.get_or_insert_with(Vec::new).extend_from_slice(&v);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    fn meta(kind: &str) -> Vec<u8> {
        format!(r#"{{"kind":"{kind}"}}"#).into_bytes()
    }

    #[test]
    fn versions_promote_and_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16).unwrap();
        assert_eq!(s.next_model_id().unwrap(), 1);
        s.add_model(1, &meta("als"), b"one", true).unwrap();
        s.add_model(2, &meta("als"), b"two", false).unwrap();
        s.add_model(3, &meta("als"), b"three", true).unwrap();
        assert!(s.add_model(4, b"{}", b"x", false).is_err());
        assert_eq!(s.next_model_id().unwrap(), 4);
        assert_eq!(s.champion_id().unwrap(), Some(3));
        assert_eq!(s.model_bundle(2).unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(s.rollback().unwrap(), 1);
        assert_eq!(s.champion_id().unwrap(), Some(1));
        assert!(s.rollback().is_err());
        s.promote(2).unwrap();
        assert_eq!(s.champion_id().unwrap(), Some(2));
        assert!(s
            .promote(9)
            .unwrap_err()
            .to_string()
            .contains("no model version 9"));
        assert_eq!(s.model_metas().unwrap().len(), 3);
    }

    #[test]
    fn a_large_bundle_is_stored_in_parts_and_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16).unwrap();
        let big: Vec<u8> = (0..(super::MAX_VALUE_BYTES * 3 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        s.add_model(1, &meta("als"), &big, true).unwrap();
        s.add_model(2, &meta("als"), b"", false).unwrap();
        let parts = s
            .tree()
            .scan_prefix(super::id_key(crate::store::keys::MODEL_BUNDLE, 1))
            .count();
        assert_eq!(parts, 4);
        assert!(s
            .tree()
            .scan_prefix(crate::store::keys::MODEL_BUNDLE)
            .all(|kv| kv.unwrap().1.len() <= super::MAX_VALUE_BYTES));
        assert_eq!(s.model_bundle(1).unwrap(), Some(big));
        assert_eq!(s.model_bundle(2).unwrap(), Some(Vec::new()));
        assert_eq!(s.model_bundle(3).unwrap(), None);
        // A store written before parts holds the bundle whole under its id.
        s.tree()
            .insert(
                super::id_key(crate::store::keys::MODEL_BUNDLE, 5),
                &b"whole"[..],
            )
            .unwrap();
        assert_eq!(s.model_bundle(5).unwrap().as_deref(), Some(&b"whole"[..]));
    }

    #[test]
    fn pruning_keeps_the_newest_the_champions_and_the_newest_of_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16).unwrap();
        for id in 1..=8 {
            let kind = if id == 2 { "decision_tree" } else { "als" };
            s.add_model(id, &meta(kind), b"b", id == 1 || id == 4)
                .unwrap();
        }
        assert_eq!(s.prune_models(2).unwrap(), 3);
        let ids: Vec<u64> = s.model_metas().unwrap().iter().map(|m| m.0).collect();
        assert_eq!(ids, vec![1, 2, 4, 7, 8]);
        assert!(s.model_bundle(3).unwrap().is_none());
        assert_eq!(s.champion_id().unwrap(), Some(4));
        assert_eq!(s.prune_models(2).unwrap(), 0);
    }
}
