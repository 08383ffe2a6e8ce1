//! What opening a store recovers: the aggregates from the latest checkpoint
//! and the journal after it, and what a write that did not complete left behind
//! (dropped: it was never acknowledged).

use std::collections::HashMap;
use std::path::Path;

use super::{keys, state, Store, StoreError};

/// sled writes its snapshot to `snap.<lsn>.generating` and renames it when
/// done: one left behind (the disk filled, the process was killed) is never
/// finished and would stop every later open. The finished snapshots and the
/// log are what recovery reads.
pub(super) fn remove_unfinished_snapshots(path: &Path) {
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::warn!(
                    "removed {}: an unfinished snapshot of an earlier run",
                    e.path().display()
                ),
                Err(err) => tracing::warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

impl Store {
    /// Loads the latest checkpoint, drops unfinished ones, replays the journal after it.
    pub(super) fn load_state(&mut self, encoding: state::Encoding) -> Result<(), StoreError> {
        let (gen, covered) = match self.tree().get(state::CHECKPOINT_CURRENT)? {
            Some(v) if v.len() == 16 => {
                let gen = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
                let covered = u64::from_be_bytes(v[8..].try_into().unwrap_or([0; 8]));
                (gen, Some(covered))
            }
            Some(_) => {
                return Err(StoreError::Corrupt {
                    key: "k/current".into(),
                    message: "wrong length".into(),
                })
            }
            None => (0, None),
        };
        self.gen = gen;
        let current = state::checkpoint_gen_prefix(gen);
        let mut orphans = Vec::new();
        for item in self.tree().scan_prefix(state::CHECKPOINT) {
            let (k, v) = item?;
            if covered.is_some() && k.starts_with(&current) {
                let st = &mut self.state;
                state::decode_entries(&v, encoding, |key, slots| st.merge(key, slots)).ok_or_else(
                    || StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        message: "unreadable checkpoint chunk".into(),
                    },
                )?;
            } else {
                orphans.push(k);
            }
        }
        for k in orphans {
            self.tree().remove(k)?;
        }
        let mut next = covered.map_or(0, |c| c + 1);
        let mut fragments = Vec::new();
        for item in self.tree().scan_prefix(state::JOURNAL) {
            let (k, v) = item?;
            let seq = state::journal_seq(&k);
            if covered.is_some_and(|c| seq <= c) {
                continue;
            }
            let v = self.view.runs.resolve_checked(&v).map_err(|e| StoreError::Corrupt {
                key: format!("j/{seq}"),
                message: format!(
                    "the journal part cannot be read: {e} (`playpulse check --repair` recomputes the aggregates from the events)"
                ),
            })?;
            let mut entries: Vec<(Vec<u8>, Vec<f64>)> = Vec::new();
            state::decode_entries(&v, encoding, |key, slots| {
                entries.push((key.to_vec(), slots.to_vec()))
            })
            .ok_or_else(|| StoreError::Corrupt {
                key: format!("j/{seq}"),
                message: "unreadable journal entry".into(),
            })?;
            if let Some(why) = self.fragment(&entries) {
                // A write that failed left this part behind without its offsets.
                tracing::warn!(
                    "dropping journal entry {seq} of a write that did not complete ({why})"
                );
                fragments.push(k);
                continue;
            }
            for (key, slots) in &entries {
                self.state.merge(key, slots);
            }
            self.journal_bytes += v.len();
            next = seq + 1;
        }
        for k in fragments {
            self.tree().remove(k)?;
        }
        self.seq = next;
        Ok(())
    }

    /// Holds what of the rollups is not yet in chunks, kept by `tuning`: the runs earlier
    /// versions wrote with each batch (dropping those a compaction holds and
    /// fragments of a write that did not complete) and the events stored past
    /// the offsets the chunks cover ([`super::rollup::COVERED`]), replayed
    /// from the event log; and the rollups' newest minute and late count.
    pub(super) fn load_rollups(&mut self, tuning: super::rollup::Tuning) -> Result<(), StoreError> {
        use super::rollup;
        let be64 = |key: &[u8], name: &str| self.stored_be64(key, name);
        let through = be64(rollup::THROUGH, "i/rollup-through")?.unwrap_or(0);
        let newest = be64(rollup::NEWEST, "i/rollup-newest")?.map(|v| v as i64);
        let late = be64(rollup::LATE, "i/rollup-late")?.unwrap_or(0);
        let mut gen = rollup::Generation::default();
        let mut runs: std::collections::BTreeMap<u64, Vec<(u32, sled::IVec, sled::IVec)>> =
            Default::default();
        for item in self.tree().scan_prefix(rollup::RUN) {
            let (k, v) = item?;
            let (seq, part) = rollup::parse_run_key(&k).ok_or_else(|| StoreError::Corrupt {
                key: super::read::entry_name(&k),
                message: "a rollup run's key of the wrong shape".into(),
            })?;
            runs.entry(seq).or_default().push((part, k, v));
        }
        let mut dropped = Vec::new();
        for (seq, mut parts) in runs {
            parts.sort_by_key(|p| p.0);
            let mut why = (seq < through).then(|| "a compaction already holds it".to_string());
            let mut decoded = Vec::new();
            for (_, k, v) in &parts {
                if why.is_some() {
                    break;
                }
                let Some(run) = rollup::decode_run_borrowed(v) else {
                    return Err(StoreError::Corrupt {
                        key: super::read::entry_name(k),
                        message: "a rollup run that does not read back".into(),
                    });
                };
                let marks: Vec<(Vec<u8>, Vec<f64>)> = run
                    .offsets
                    .iter()
                    .map(|(ns, t, p, n)| (keys::offset_key(ns, t, *p), vec![*n as f64]))
                    .collect();
                why = self.fragment(&marks);
                decoded.push(run);
            }
            match why {
                Some(why) => {
                    tracing::warn!("dropping rollup run {seq} ({why})");
                    dropped.extend(parts.into_iter().map(|p| p.1));
                }
                None => {
                    for e in decoded.iter().flat_map(|r| &r.entries) {
                        gen.add_entry(e.cube, e.minute, &e.tuple, &e.sums);
                    }
                    gen.batches += 1;
                    gen.legacy.extend(parts.iter().map(|p| p.1.to_vec()));
                }
            }
        }
        let covered = match self.tree().get(rollup::COVERED)? {
            Some(v) => rollup::compact::decode_covered(&v).ok_or_else(|| StoreError::Corrupt {
                key: "i/rollup-covered".into(),
                message: "the offsets the rollup chunks cover do not read back".into(),
            })?,
            None => {
                // Written by an earlier version, whose batches wrote their
                // runs: every stored event is in chunks or runs.
                let c: rollup::Covered =
                    self.offsets.iter().map(|(k, n)| (k.clone(), *n)).collect();
                self.tree()
                    .insert(rollup::COVERED, rollup::compact::encode_covered(&c))?;
                c
            }
        };
        let replayed = self.replay_rollups(&covered, &mut gen, &tuning)?;
        {
            let mut h = self.view.rollups.lock();
            h.tuning = tuning;
            if h.taken > 0 {
                // (Again, for another tuning) the compactor took what opening held.
                drop(h);
                self.rollups_replayed_with = None;
                return Ok(());
            }
            h.pending = gen;
            h.covered = covered;
            h.through = through;
            h.status.newest_minute = newest;
            h.status.late_dropped = late;
            h.status.replayed_events = replayed;
        }
        self.rollups_replayed_with = (replayed > 0).then_some(tuning);
        for k in dropped {
            self.tree().remove(k)?;
        }
        Ok(())
    }

    /// Adds the events stored past `covered` to `gen`; answers how many.
    fn replay_rollups(
        &self,
        covered: &super::rollup::Covered,
        gen: &mut super::rollup::Generation,
        tuning: &super::rollup::Tuning,
    ) -> Result<u64, StoreError> {
        use super::rollup;
        let now = crate::domain::timefmt::now_ms();
        let mut n = 0u64;
        let mut positions: Vec<(&(String, String, i32), &i64)> = self.offsets.iter().collect();
        positions.sort();
        for (at, next) in positions {
            let from = covered.get(at).copied().unwrap_or(0);
            let (namespace, topic, partition) = at;
            let Some(&ns) = self.namespaces.get(namespace) else {
                continue;
            };
            if *next <= from {
                continue;
            }
            let start = keys::position(keys::EVENT, ns, topic, *partition, from);
            let end = keys::position(keys::EVENT, ns, topic, *partition, i64::MAX);
            for item in self.tree().range(start..end) {
                let (k, v) = item?;
                let events = match self.view.read_segment(&k, &v) {
                    Ok(Some(events)) => events,
                    Ok(None) => continue,
                    Err(e) => {
                        self.view
                            .note_damage(super::read::segment_name(&k), e.to_string());
                        continue;
                    }
                };
                let fresh: Vec<(u32, &crate::domain::event::Event)> = events
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.pos.offset >= from && e.pos.offset < *next)
                    .map(|(i, e)| (i as u32, &e.event))
                    .collect();
                n += fresh.len() as u64;
                let d = rollup::deltas_of(fresh.into_iter(), now, tuning).into_batch();
                gen.add(&d, |i| {
                    events
                        .get(i as usize)
                        .map_or("", |e| rollup::id_of(&e.event))
                });
                gen.batches += 1;
            }
            gen.note_offsets(
                namespace,
                std::iter::once((topic.as_str(), *partition, *next)),
            );
        }
        if n > 0 {
            // Retention keeps every segment until these are in chunks.
            gen.oldest_write_ms = Some(i64::MIN);
            tracing::info!(
                "rollups: {n} stored events past the chunks replayed from the event log"
            );
        }
        Ok(n)
    }

    /// The be64 stored under `key` (named `name` when it reads wrong).
    fn stored_be64(&self, key: &[u8], name: &str) -> Result<Option<u64>, StoreError> {
        match self.tree().get(key)? {
            Some(v) => Ok(Some(u64::from_be_bytes(v.as_ref().try_into().map_err(
                |_| StoreError::Corrupt {
                    key: name.into(),
                    message: "wrong length".into(),
                },
            )?))),
            None => Ok(None),
        }
    }

    /// Loads the pair runs not yet in chunks into the overlay's active layer
    /// (see [`super::pairs`]); drops the runs of a write that did not complete
    /// (their offsets did not reach the disk) and any a compaction covered.
    pub(super) fn load_pair_runs(&mut self) -> Result<(), StoreError> {
        use super::pairs;
        let through = self
            .stored_be64(pairs::THROUGH, "i/pairs-through")?
            .unwrap_or(0);
        let mut dropped = Vec::new();
        let mut o = self.view.pairs.lock();
        for item in self.tree().scan_prefix(pairs::RUN) {
            let (k, v) = item?;
            let corrupt = |message: &str| StoreError::Corrupt {
                key: super::read::entry_name(&k),
                message: message.into(),
            };
            let v = self.view.runs.resolve_checked(&v).map_err(|e| {
                corrupt(&format!(
                    "the pair run cannot be read: {e} (`playpulse check --repair` keeps it apart)"
                ))
            })?;
            let seq = pairs::run_seq(&k)
                .ok_or_else(|| corrupt("a pair run's key has no sequence number"))?;
            let mut entries: Vec<(Vec<u8>, Vec<f64>)> = Vec::new();
            state::decode_entries(&v, state::Encoding::Current, |key, slots| {
                entries.push((key.to_vec(), slots.to_vec()))
            })
            .ok_or_else(|| corrupt("unreadable pair run"))?;
            if seq < through {
                tracing::warn!("dropping pair run {seq}: a compaction already holds it");
                dropped.push(k);
                continue;
            }
            if let Some(why) = self.fragment(&entries) {
                tracing::warn!("dropping pair run {seq} of a write that did not complete ({why})");
                dropped.push(k);
                continue;
            }
            for (user, video, d) in pairs::run_pairs(&entries)
                .ok_or_else(|| corrupt("a pair run of the wrong shape"))?
            {
                o.active.add(seq, &user, &video, &d);
            }
            o.last = Some(o.last.map_or(seq, |l| l.max(seq)));
        }
        drop(o);
        for k in dropped {
            self.tree().remove(k)?;
        }
        Ok(())
    }

    /// Why journal entries are a fragment of a write that did not complete:
    /// an offset they name is past the one stored.
    pub(super) fn fragment(&self, entries: &[(Vec<u8>, Vec<f64>)]) -> Option<String> {
        entries.iter().find_map(|(k, v)| {
            let rest = k.strip_prefix(keys::OFFSET)?;
            let (ns, rest) = rest.split_at(rest.iter().position(|&b| b == 0)?);
            let rest = &rest[1..];
            let (topic, tail) = rest.split_at(rest.iter().position(|&b| b == 0)?);
            let partition = u32::from_be_bytes(tail.get(1..5)?.try_into().ok()?) as i32;
            let (ns, topic) = (
                std::str::from_utf8(ns).ok()?,
                std::str::from_utf8(topic).ok()?,
            );
            let want = *v.first()? as i64;
            let stored = self.next_offset(ns, topic, partition).unwrap_or(0);
            (stored < want)
                .then(|| format!("{topic}/{partition}: stored {stored}, the entry names {want}"))
        })
    }

    /// Drops what a write that did not complete left behind: event segments
    /// and dead letters at or past the stored offset of their partition (a
    /// stored batch always moves the offset past what it holds). One seek per
    /// partition.
    pub(super) fn drop_fragments(&mut self) -> Result<(), StoreError> {
        let names: HashMap<u32, &str> = self
            .namespaces
            .iter()
            .map(|(n, i)| (*i, n.as_str()))
            .collect();
        let with_offsets: std::collections::HashSet<&str> =
            self.offsets.keys().map(|(ns, _, _)| ns.as_str()).collect();
        let mut dropped = Vec::new();
        for prefix in [keys::EVENT, keys::DEAD] {
            let mut start = prefix.to_vec();
            loop {
                let Some(item) = self.tree().range(start.clone()..).next() else {
                    break;
                };
                // A stretch of sled's files that cannot be read is not a
                // fragment to drop: reads step over it and `check` names it.
                let Ok((k, _)) = item else {
                    tracing::warn!(
                        "part of the store cannot be read; open goes on (run `playpulse check`)"
                    );
                    break;
                };
                if !k.starts_with(prefix) {
                    break;
                }
                let Some((ns, topic, partition, _)) = keys::parse_position(&k[prefix.len()..])
                else {
                    break;
                };
                // Past this partition: its key prefix with the largest offset.
                let mut next_partition = keys::position(prefix, ns, &topic, partition, -1);
                next_partition.push(0xff);
                let judged = names.get(&ns).filter(|n| with_offsets.contains(*n));
                if let Some(name) = judged {
                    let stored = self.next_offset(name, &topic, partition).unwrap_or(0);
                    let from = keys::position(prefix, ns, &topic, partition, stored);
                    for item in self.tree().range(from..next_partition.clone()) {
                        match item {
                            Ok((k, _)) => dropped.push(k),
                            Err(_) => break,
                        }
                    }
                }
                start = next_partition;
            }
        }
        if !dropped.is_empty() {
            tracing::warn!(
                "dropped {} event segments and dead letters of a write that did not complete",
                dropped.len()
            );
            let mut batch = sled::Batch::default();
            for k in dropped {
                batch.remove(k);
            }
            self.view.commit(batch)?;
        }
        Ok(())
    }
}
