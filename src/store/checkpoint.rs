//! Checkpoints (the aggregates written whole, the journal they cover dropped),
//! the clean close, consistent backups, and recomputing the aggregates from the
//! event log after a repair.

use std::path::Path;

use super::{keys, prepare, state, Store, StoreError, MAX_VALUE_BYTES};
use crate::domain::record::{Outcome, Processed};

impl Store {
    /// Writes the whole aggregate state as a new checkpoint and drops the journal it covers.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        if self.seq == 0 {
            return Ok(());
        }
        self.write_checkpoint(false)
    }

    /// Writes a checkpoint; with `mark_layout`, the layout mark in the same
    /// atomic step (a store opened in an older layout).
    pub(super) fn write_checkpoint(&mut self, mark_layout: bool) -> Result<(), StoreError> {
        self.writable()?;
        self.check_space(self.state.approx_bytes() as u64)?;
        let gen = self.gen + 1;
        let entries: Vec<(&Vec<u8>, &Box<[f64]>)> = self.state.entries().collect();
        for (i, chunk) in entries.chunks(MAX_VALUE_BYTES / 96).enumerate() {
            let value = state::encode_entries(chunk.iter().map(|(k, v)| (k.as_slice(), &v[..])));
            let r = self
                .tree()
                .insert(state::checkpoint_chunk_key(gen, i as u32), value);
            self.view.guard(r)?;
        }
        let mut batch = sled::Batch::default();
        if mark_layout {
            batch.insert(keys::LAYOUT_KEY, &keys::LAYOUT.to_be_bytes());
        }
        if self.seq > 0 {
            let covered = self.seq - 1;
            let mut pointer = gen.to_be_bytes().to_vec();
            pointer.extend_from_slice(&covered.to_be_bytes());
            batch.insert(state::CHECKPOINT_CURRENT, pointer);
        }
        for item in self.tree().scan_prefix(state::JOURNAL) {
            batch.remove(item?.0);
        }
        for item in self
            .tree()
            .scan_prefix(state::checkpoint_gen_prefix(self.gen))
        {
            batch.remove(item?.0);
        }
        self.view.commit(batch)?;
        self.gen = gen;
        self.journal_bytes = 0;
        // The journal parts are gone: the runs log's files holding only them go too.
        self.sweep_runs()
    }

    /// Checkpoints and flushes (a clean shutdown makes the next open fast).
    pub fn close(&mut self) -> Result<(), StoreError> {
        self.stop_rewrite();
        self.writable()?;
        if self.journal_bytes > 0 {
            self.checkpoint()?;
        }
        self.view.guard(self.tree().db().flush())?;
        Ok(())
    }

    /// A consistent copy of the whole store into the data dir `dest` (which must
    /// not hold a store yet): checkpoints, then copies every entry while no batch
    /// is written (call it on the store's thread). `playpulse run --data-dir DEST`
    /// starts from the copy. The copy is a new member of the consumer group: its
    /// member id (see `claims`) is not copied. Answers (entries, bytes).
    pub fn backup(&mut self, dest: &Path) -> Result<(u64, u64), StoreError> {
        let path = dest.join("store");
        if path.exists() || dest.join(super::generation::POINTER).exists() {
            return Err(StoreError::Refused(format!(
                "{:?}: already holds a store: choose an empty or new directory for the snapshot",
                dest.display().to_string()
            )));
        }
        self.checkpoint()?;
        // No compaction changes the store while it is copied.
        let _gate = self
            .view
            .pairs
            .gate
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let db = sled::Config::new().path(&path).open().map_err(open_err)?;
        let tree = db.open_tree("main").map_err(open_err)?;
        let (n, mut bytes) = super::rewrite::copy_entries(
            &self.tree(),
            &tree,
            8 << 20,
            |k| k != keys::MEMBER,
            |_| Ok(()),
        )?;
        db.flush()?;
        bytes += copy_log_files(
            &self.view.log,
            &self.log,
            |id| self.log_live.contains_key(&id),
            &dest.join(super::eventlog::DIR),
        )?;
        // The checkpoint above swept the runs log: every file left is used.
        bytes += copy_log_files(
            &self.view.runs,
            &self.runs,
            |_| true,
            &dest.join(super::eventlog::RUNS_DIR),
        )?;
        Ok((n, bytes))
    }

    /// Recomputes every aggregate from the event log and the dead letters
    /// (after a repair dropped what could not be read) and checkpoints them;
    /// answers the events read.
    pub fn recompute_aggregates(&mut self) -> Result<u64, StoreError> {
        let mut st = state::State::default();
        let mut events = 0u64;
        let mut chunk = Vec::with_capacity(50_000);
        let flush = |chunk: &mut Vec<Processed>, st: &mut state::State| {
            let d = prepare::deltas_of(chunk.iter().enumerate().map(|(i, r)| (i as u32, r)));
            for (k, v) in &d.map {
                st.merge(k, v);
            }
            chunk.clear();
        };
        for item in self.view.event_log() {
            let e = item?;
            events += 1;
            chunk.push(Processed::at(e.pos, Outcome::Valid(e.event)));
            if chunk.len() == chunk.capacity() {
                flush(&mut chunk, &mut st);
            }
        }
        for d in self.view.dead_letters()? {
            chunk.push(Processed::at(
                crate::domain::record::SourcePos::new(&d.topic, d.partition, d.offset),
                Outcome::Rejected {
                    rejection: d.rejection,
                    raw: Vec::new(),
                },
            ));
            if chunk.len() == chunk.capacity() {
                flush(&mut chunk, &mut st);
            }
        }
        flush(&mut chunk, &mut st);
        self.state = st;
        self.seq = self.seq.max(1);
        self.write_checkpoint(true)?;
        Ok(events)
    }
}

/// Copies the files of a log (`files`, appended to by `writer`) that `keep`
/// keeps into `to`: the head file up to its committed end; the others are
/// never written again, so a hard link does where the disk allows. Answers
/// the bytes.
fn copy_log_files(
    files: &super::eventlog::LogFiles,
    writer: &super::eventlog::LogWriter,
    keep: impl Fn(u64) -> bool,
    to: &Path,
) -> Result<u64, StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::EventLog { path, source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    let from = files.dir();
    let head = writer.head();
    let mut bytes = 0;
    for (id, size) in files.list().map_err(io(from))? {
        if !keep(id) {
            continue;
        }
        let (src, dst) = (
            files.path_of(id),
            to.join(super::eventlog::file_name(id, files.ext())),
        );
        if id == head.file {
            std::fs::copy(&src, &dst).map_err(io(&dst))?;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&dst)
                .map_err(io(&dst))?;
            f.set_len(head.len)
                .and_then(|()| f.sync_all())
                .map_err(io(&dst))?;
            bytes += head.len;
        } else {
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).map_err(io(&dst))?;
            }
            bytes += size;
        }
    }
    Ok(bytes)
}
