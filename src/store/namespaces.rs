//! Offset namespaces: a cluster (or one run of the embedded broker) per
//! namespace, each with a store-local number; a new epoch when a cluster's
//! partitions hold fewer records than the store read of them.

use super::{keys, PartitionReset, Registration, Store, StoreError};

impl Store {
    /// The store-local number of an offset namespace, and the writes that
    /// register it when it is new (none when it is known).
    pub(super) fn namespace_number(
        &self,
        namespace: &str,
    ) -> Result<(u32, Registration), StoreError> {
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
}
