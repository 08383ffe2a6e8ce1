//! Raw-event retention (`[store.retention]`): the event log keeps at most a
//! maximum age and/or size of segments; older segments are deleted, oldest
//! first. Nothing else goes with them: the pair rows, aggregates, catalog,
//! dead letters and stored offsets stay, so training, serving and the
//! exactly-once skip of redelivered records are unchanged (a redelivery is
//! skipped by its partition's stored next offset, not by its segment).
//!
//! Every segment has an index entry written in the batch that writes the
//! segment: `T/` write time (be64 ms) · segment key → its size (be64). The index
//! orders segments by age and sums their bytes without reading them. A store
//! written before the index builds it once when it opens (those segments count
//! as written then); the mark [`keys::SEGMENT_INDEX_MARK`] is set with it.

use serde::{Deserialize, Serialize};

use super::{keys, Store, StoreError, StoreView};

/// Most segments one retention pass deletes (the next batch goes on).
const MAX_PER_PASS: usize = 512;

/// What the event log may hold (0: no bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub max_age_ms: u64,
    pub max_bytes: u64,
}

impl Retention {
    pub fn is_off(&self) -> bool {
        self.max_age_ms == 0 && self.max_bytes == 0
    }
}

/// The event log as the index counts it, and what retention deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retained {
    pub segments: u64,
    pub bytes: u64,
    /// Write time of the oldest segment kept (ms since the epoch).
    pub oldest_ms: Option<i64>,
    /// Since the start: segments and bytes deleted by retention.
    pub deleted_segments: u64,
    pub deleted_bytes: u64,
    /// The event log's files on disk: how many, and their bytes (past
    /// `bytes` by the segments of files not yet wholly deleted).
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub file_bytes: u64,
}

/// The index key of the segment `segment` written at `write_ms`.
pub fn index_key(write_ms: i64, segment: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(keys::SEGMENT_INDEX.len() + 8 + segment.len());
    k.extend_from_slice(keys::SEGMENT_INDEX);
    k.extend_from_slice(&(write_ms.max(0) as u64).to_be_bytes());
    k.extend_from_slice(segment);
    k
}

/// (write time, segment key, size) of an index entry.
fn parse(k: &[u8], v: &[u8]) -> Option<(i64, Vec<u8>, u64)> {
    let rest = k.strip_prefix(keys::SEGMENT_INDEX)?;
    let at = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as i64;
    let size = u64::from_be_bytes(v.try_into().ok()?);
    Some((at, rest[8..].to_vec(), size))
}

impl StoreView {
    /// The events of the segments written at or after `since_ms`, each with
    /// its segment's write time, oldest first; at most about `max_events` (the
    /// newest segments kept). Damage (an unreadable index entry or segment) is
    /// skipped and noted, never an error.
    pub fn events_written_since(
        &self,
        since_ms: i64,
        max_events: usize,
    ) -> Result<Vec<(i64, crate::domain::event::Event)>, StoreError> {
        let mut segments: Vec<Vec<(i64, crate::domain::event::Event)>> = Vec::new();
        let mut n = 0usize;
        let start = index_key(since_ms, &[]);
        let mut end = keys::SEGMENT_INDEX.to_vec();
        end.push(0xff);
        for item in self.tree().range(start..end).rev() {
            // Damage is noted and stepped over: this read is a convenience
            // (seeding what trends), never a reason not to start.
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    self.note_damage("the segment index (newest entries)".into(), e.to_string());
                    break;
                }
            };
            let Some((at, seg, _)) = parse(&k, &v) else {
                self.note_damage(
                    super::read::entry_name(&k),
                    "a segment index entry of the wrong shape".into(),
                );
                continue;
            };
            let value = match self.tree().get(&seg) {
                Ok(Some(value)) => value,
                Ok(None) => continue,
                Err(e) => {
                    self.note_damage(super::read::entry_name(&seg), e.to_string());
                    continue;
                }
            };
            match self.read_segment(&seg, &value) {
                Ok(None) => continue,
                Ok(Some(events)) => {
                    n += events.len();
                    segments.push(events.into_iter().map(|e| (at, e.event)).collect());
                }
                Err(e) => self.note_damage(super::read::entry_name(&seg), e.to_string()),
            }
            if n >= max_events {
                break;
            }
        }
        Ok(segments.into_iter().rev().flatten().collect())
    }
}

fn corrupt(k: &[u8]) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(&k[..k.len().min(120)]).into_owned(),
        message: "a segment index entry of the wrong shape".into(),
    }
}

/// Builds the index of a store written before it (once), then counts it.
pub(super) fn load(view: &StoreView, now_ms: i64) -> Result<Retained, StoreError> {
    if !view.tree().contains_key(keys::SEGMENT_INDEX_MARK)? {
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for item in view.tree().scan_prefix(keys::EVENT) {
            let (k, v) = item?;
            let size =
                super::eventlog::Pointer::decode(&v).map_or(v.len() as u64, |p| p.len as u64);
            batch.insert(index_key(now_ms, &k), &size.to_be_bytes());
            n += 1;
            if n % 4096 == 0 {
                view.tree().apply_batch(std::mem::take(&mut batch))?;
            }
        }
        batch.insert(keys::SEGMENT_INDEX_MARK, &1u64.to_be_bytes());
        view.tree().apply_batch(batch)?;
        view.tree().db().flush()?;
        if n > 0 {
            tracing::info!("indexed {n} event segments for retention (once)");
        }
    }
    let mut r = Retained::default();
    for item in view.tree().scan_prefix(keys::SEGMENT_INDEX) {
        let (k, v) = item?;
        let (at, _, size) = parse(&k, &v).ok_or_else(|| corrupt(&k))?;
        r.oldest_ms.get_or_insert(at);
        r.segments += 1;
        r.bytes += size;
    }
    Ok(r)
}

impl Store {
    /// Sets what the event log may hold ([`Store::retain`] enforces it).
    pub fn set_retention(&mut self, r: Retention) {
        self.retention = r;
        self.log_roll = super::eventlog::Roll::for_retention(r.max_bytes, r.max_age_ms);
    }

    /// The event log as the index counts it.
    pub fn retained(&self) -> Retained {
        self.retained.clone()
    }

    /// Deletes the oldest segments past the retention (at most
    /// [`MAX_PER_PASS`] a call), with their index entries, in one atomic
    /// write. Answers how many were deleted.
    pub fn retain(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        let r = self.retention;
        if r.is_off() {
            return Ok(0);
        }
        let cutoff = now_ms.saturating_sub(r.max_age_ms.min(i64::MAX as u64) as i64);
        // What the index counts in memory says whether anything is due: most
        // batches read nothing of the store here.
        let t = &self.retained;
        let too_old = r.max_age_ms > 0 && t.oldest_ms.is_some_and(|o| o < cutoff);
        let too_big = r.max_bytes > 0 && t.bytes > r.max_bytes;
        if !(too_old || too_big) {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        let (mut n, mut bytes) = (0usize, self.retained.bytes);
        let mut deleted = 0u64;
        let mut oldest = None;
        let mut files: Vec<(u64, u64)> = Vec::new();
        // Segments whose events are not yet in the rollups' chunks stay
        // (opening would replay them).
        let floor = self.view.rollups.uncovered_since().unwrap_or(i64::MAX);
        for item in self.tree().scan_prefix(keys::SEGMENT_INDEX) {
            let (k, v) = item?;
            let (at, segment, size) = parse(&k, &v).ok_or_else(|| corrupt(&k))?;
            let too_old = r.max_age_ms > 0 && at < cutoff;
            let too_big = r.max_bytes > 0 && bytes > r.max_bytes;
            if !(too_old || too_big) || n == MAX_PER_PASS || at >= floor {
                oldest = Some(at);
                break;
            }
            // The file it is in: removed once none of its segments is left.
            if let Some(p) = self
                .tree()
                .get(&segment)?
                .and_then(|v| super::eventlog::Pointer::decode(&v))
            {
                super::eventlog::tally(&mut files, p.file);
            }
            batch.remove(k);
            batch.remove(segment);
            bytes = bytes.saturating_sub(size);
            deleted += size;
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        self.view.commit(batch)?;
        for (file, n) in files {
            self.log_segments_deleted(file, n);
        }
        let t = &mut self.retained;
        t.segments = t.segments.saturating_sub(n as u64);
        t.bytes = bytes;
        t.oldest_ms = oldest;
        t.deleted_segments += n as u64;
        t.deleted_bytes += deleted;
        Ok(n)
    }

    /// Counts segments a commit wrote (their index entries went with them).
    pub(super) fn retained_add(&mut self, write_ms: i64, segments: u64, bytes: u64) {
        let t = &mut self.retained;
        if segments > 0 {
            t.oldest_ms.get_or_insert(write_ms);
        }
        t.segments += segments;
        t.bytes += bytes;
    }
}
