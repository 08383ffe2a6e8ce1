//! The event log's files. Event segments (see [`super::segment`]) are appended
//! to files of their own under `DATA_DIR/events/`, and the sled entry of a
//! segment holds a [`Pointer`] to its bytes. sled then holds only small values,
//! so deleting old segments (retention) frees the disk: a file whose segments
//! are all deleted is removed whole. (Held in sled, the segments made its
//! leaves larger than its blob threshold, and the space of deleted ones came
//! back slowly or not at all.)
//!
//! Exactly once is kept by order: a batch's segments are appended and synced
//! before the sled batch that points at them (with the offsets and the
//! [`Head`], the committed end of the log) is applied and flushed. Opening cuts
//! each file back to what a committed batch wrote: files past the head are
//! deleted, the head file is truncated to its committed length, and appends go
//! to a new file. A pointer names its file, position and length; the segment's
//! own checksum says whether the bytes read back are the ones written.
//!
//! Segments written inline by earlier versions stay readable where they are.
//!
//! The same files, in a directory of their own ([`RUNS_DIR`]), hold the
//! journal parts and pair runs each batch writes (see `Store::apply`): values
//! of up to 64 KiB that made sled split its leaves and write them as blob
//! files of their own on every batch. A file there is removed once no entry
//! points into it (`Store::sweep_runs`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use thiserror::Error;

/// The log's directory, in the data dir (beside sled's `store/`).
pub const DIR: &str = "events";
/// The event log's files' extension.
pub const EXT: &str = "events";
/// The directory and extension of the journal parts' and pair runs' log.
pub const RUNS_DIR: &str = "runs";
pub const RUNS_EXT: &str = "runs";
/// First byte of a pointer value (an inline segment starts with its version, 2).
const TAG: u8 = b'P';
const POINTER_LEN: usize = 1 + 8 + 8 + 4;
/// Read handles kept open.
const MAX_OPEN: usize = 16;

/// Where a segment's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    pub file: u64,
    pub at: u64,
    pub len: u32,
}

impl Pointer {
    pub fn encode(&self) -> [u8; POINTER_LEN] {
        let mut b = [0u8; POINTER_LEN];
        b[0] = TAG;
        b[1..9].copy_from_slice(&self.file.to_be_bytes());
        b[9..17].copy_from_slice(&self.at.to_be_bytes());
        b[17..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// The pointer a value holds; `None` for an inline segment.
    pub fn decode(v: &[u8]) -> Option<Pointer> {
        if v.len() != POINTER_LEN || v[0] != TAG {
            return None;
        }
        Some(Pointer {
            file: u64::from_be_bytes(v[1..9].try_into().ok()?),
            at: u64::from_be_bytes(v[9..17].try_into().ok()?),
            len: u32::from_be_bytes(v[17..].try_into().ok()?),
        })
    }
}

/// Counts one more segment of `file` in `files` (segments come file by
/// file, so a file's count is the last one or a new one).
pub fn tally(files: &mut Vec<(u64, u64)>, file: u64) {
    match files.last_mut() {
        Some((f, n)) if *f == file => *n += 1,
        _ => files.push((file, 1)),
    }
}

/// Whether a segment entry's value is a pointer (else an inline segment).
pub fn is_pointer(v: &[u8]) -> bool {
    v.first() == Some(&TAG)
}

/// The committed end of the log: the file appended to last and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    pub file: u64,
    pub len: u64,
}

impl Head {
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.file.to_be_bytes());
        b[8..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    pub fn decode(v: &[u8]) -> Option<Head> {
        Some(Head {
            file: u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
            len: u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
        })
    }
}

/// The name of file `id` of a log whose files end in `.ext`.
pub fn file_name(id: u64, ext: &str) -> String {
    format!("{id:016x}.{ext}")
}

fn parse_name(name: &str, ext: &str) -> Option<u64> {
    let hex = name.strip_suffix(ext)?.strip_suffix('.')?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The files of a log in `dir` whose files end in `.ext`, by id, with their sizes.
pub fn list(dir: &Path, ext: &str) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if let Some(id) = parse_name(&e.file_name().to_string_lossy(), ext) {
            out.push((id, e.metadata()?.len()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Why a segment's bytes cannot be read from the log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LogReadError {
    #[error("its log file {0} is missing")]
    Missing(String),
    #[error("its log file {file} ends before the value ({len} bytes at {at})")]
    Short { file: String, at: u64, len: u32 },
    #[error("its log file {file} cannot be read: {why}")]
    Io { file: String, why: String },
    #[error("its bytes in log file {file} ({len} at {at}) fail their checksum")]
    Checksum { file: String, at: u64, len: u32 },
}

/// Reads segments from the log's files (any thread).
#[derive(Debug)]
pub struct LogFiles {
    dir: PathBuf,
    ext: &'static str,
    open: Mutex<HashMap<u64, Arc<File>>>,
}

impl LogFiles {
    /// The event log's files in `dir`.
    pub fn new(dir: PathBuf) -> LogFiles {
        LogFiles::with_ext(dir, EXT)
    }

    /// The files in `dir` of a log whose files end in `.ext`.
    pub fn with_ext(dir: PathBuf, ext: &'static str) -> LogFiles {
        LogFiles {
            dir,
            ext,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn ext(&self) -> &'static str {
        self.ext
    }

    /// This log's files, by id, with their sizes.
    pub fn list(&self) -> std::io::Result<Vec<(u64, u64)>> {
        list(&self.dir, self.ext)
    }

    /// How many files this log has, and their bytes on disk.
    pub fn on_disk(&self) -> (u64, u64) {
        let files = self.list().unwrap_or_default();
        (files.len() as u64, files.iter().map(|(_, b)| b).sum())
    }

    /// The path of file `id`.
    pub fn path_of(&self, id: u64) -> PathBuf {
        self.dir.join(file_name(id, self.ext))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn handle(&self, id: u64) -> Result<Arc<File>, LogReadError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = open.get(&id) {
            return Ok(f.clone());
        }
        let path = self.path_of(id);
        let f = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LogReadError::Missing(path.display().to_string()),
            _ => LogReadError::Io {
                file: path.display().to_string(),
                why: e.to_string(),
            },
        })?;
        if open.len() >= MAX_OPEN {
            open.clear();
        }
        let f = Arc::new(f);
        open.insert(id, f.clone());
        Ok(f)
    }

    /// The bytes `p` points at.
    pub fn read(&self, p: &Pointer) -> Result<Vec<u8>, LogReadError> {
        let f = self.handle(p.file)?;
        let mut buf = vec![0u8; p.len as usize];
        f.read_exact_at(&mut buf, p.at).map_err(|e| {
            let file = self.path_of(p.file).display().to_string();
            match e.kind() {
                std::io::ErrorKind::UnexpectedEof => LogReadError::Short {
                    file,
                    at: p.at,
                    len: p.len,
                },
                _ => LogReadError::Io {
                    file,
                    why: e.to_string(),
                },
            }
        })?;
        Ok(buf)
    }

    /// The segment a sled entry's value stands for: read from these files
    /// when the value is a pointer, the value itself when it is an inline
    /// segment (stores of layout 2).
    pub fn resolve<'a>(&self, v: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, LogReadError> {
        match Pointer::decode(v) {
            Some(p) => self.read(&p).map(std::borrow::Cow::Owned),
            None => Ok(std::borrow::Cow::Borrowed(v)),
        }
    }

    /// A value [`LogWriter::append_checked`] wrote, read from these files
    /// and its checksum verified (without it); the value itself when it is
    /// not a pointer (written inline by earlier versions).
    pub fn resolve_checked<'a>(
        &self,
        v: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, LogReadError> {
        let Some(p) = Pointer::decode(v) else {
            return Ok(std::borrow::Cow::Borrowed(v));
        };
        let mut bytes = self.read(&p)?;
        let failed = || LogReadError::Checksum {
            file: self.path_of(p.file).display().to_string(),
            at: p.at,
            len: p.len,
        };
        let body = bytes.len().checked_sub(4).ok_or_else(failed)?;
        let want = bytes
            .get(body..)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(failed)?;
        bytes.truncate(body);
        if crc32fast::hash(&bytes) != want {
            return Err(failed());
        }
        Ok(std::borrow::Cow::Owned(bytes))
    }

    /// Drops the read handle of a deleted file.
    pub fn forget(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// When the writer starts a new file: past a size, or an age (0: none). A
/// file is removed when all its segments are deleted, so with retention on
/// files are kept small against what it keeps (see [`Roll::for_retention`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roll {
    pub bytes: u64,
    pub age_ms: i64,
}

/// Largest file size, and the smallest a retention makes it.
const MAX_FILE_BYTES: u64 = 64 << 20;
const MIN_FILE_BYTES: u64 = 1 << 20;

impl Default for Roll {
    fn default() -> Roll {
        Roll {
            bytes: MAX_FILE_BYTES,
            age_ms: 0,
        }
    }
}

impl Roll {
    /// Files of an eighth of what retention keeps (by size and by age), so the
    /// disk holds at most about an eighth more than it.
    pub fn for_retention(max_bytes: u64, max_age_ms: u64) -> Roll {
        Roll {
            bytes: if max_bytes > 0 {
                (max_bytes / 8).clamp(MIN_FILE_BYTES, MAX_FILE_BYTES)
            } else {
                MAX_FILE_BYTES
            },
            age_ms: (max_age_ms / 8).min(i64::MAX as u64) as i64,
        }
    }
}

/// Appends segments (the store's thread only).
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    ext: &'static str,
    /// The file appended to, once a batch has written to it, and when it was
    /// begun (ms since the epoch).
    file: Option<File>,
    started_ms: i64,
    id: u64,
    len: u64,
    /// Appended since the last sync.
    dirty: bool,
    /// Appended and not yet written to the file: a batch's values go in
    /// one write at its sync (a write per segment cost the store's thread
    /// a few hundred calls a batch), or sooner past [`WRITE_AT`].
    pending: Vec<u8>,
}

/// Bytes held before they are written even though no sync came.
const WRITE_AT: usize = 8 << 20;

/// The files a recovery kept, by id, with their sizes.
pub type Kept = Vec<(u64, u64)>;

impl LogWriter {
    /// Cuts the files in `dir` back to `head` (the committed end; `None`: no
    /// batch ever committed to the log) and answers a writer that appends to
    /// a new file, with the files kept.
    pub fn recover(
        dir: &Path,
        ext: &'static str,
        head: Option<Head>,
    ) -> std::io::Result<(LogWriter, Kept)> {
        std::fs::create_dir_all(dir)?;
        let mut kept = Vec::new();
        let mut last = head.map_or(0, |h| h.file);
        for (id, size) in list(dir, ext)? {
            let path = dir.join(file_name(id, ext));
            match head {
                Some(h) if id < h.file => kept.push((id, size)),
                Some(h) if id == h.file => {
                    if size > h.len {
                        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                        f.set_len(h.len)?;
                        f.sync_all()?;
                        tracing::warn!(
                            "cut {} back to {} bytes: the rest was a write that did not complete",
                            path.display(),
                            h.len
                        );
                    }
                    kept.push((id, size.min(h.len)));
                }
                _ => {
                    std::fs::remove_file(&path)?;
                    if size > 0 {
                        tracing::warn!("removed {}: a write that did not complete", path.display());
                    }
                }
            }
            last = last.max(id);
        }
        sync_dir(dir)?;
        Ok((
            LogWriter {
                dir: dir.to_path_buf(),
                ext,
                file: None,
                started_ms: 0,
                id: last + 1,
                len: 0,
                dirty: false,
                pending: Vec::new(),
            },
            kept,
        ))
    }

    /// Starts a new file for the next append when this one is due (`roll`).
    /// What is appended and not yet written goes to the file it belongs to first.
    pub fn roll_past(&mut self, roll: Roll, now_ms: i64) -> std::io::Result<()> {
        let old = roll.age_ms > 0 && now_ms.saturating_sub(self.started_ms) >= roll.age_ms;
        if self.file.is_some() && (self.len >= roll.bytes || old) {
            self.write_pending()?;
            self.file = None;
            self.id += 1;
            self.len = 0;
        }
        Ok(())
    }

    /// Writes what is held to the file appended to.
    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some(f) = self.file.as_mut() else {
            // Values are held only once their file is open.
            return Err(std::io::Error::other(
                "values held with no file to write them to",
            ));
        };
        let written = f.write_all(&self.pending);
        // Kept, in place, for the next batch (its pages already faulted in).
        self.pending.clear();
        written
    }

    /// The file appended to (or next appended to).
    pub fn current(&self) -> u64 {
        self.id
    }

    /// Appends one segment; it is durable after [`LogWriter::sync`].
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<Pointer> {
        self.append_parts(&[bytes])
    }

    /// Appends `bytes` and their CRC-32 (a journal part or pair run carries
    /// no checksum of its own, as a segment does): read back with
    /// [`LogFiles::resolve_checked`].
    pub fn append_checked(&mut self, bytes: &[u8]) -> std::io::Result<Pointer> {
        self.append_parts(&[bytes, &crc32fast::hash(bytes).to_le_bytes()])
    }

    /// Appends `parts` as one value.
    fn append_parts(&mut self, parts: &[&[u8]]) -> std::io::Result<Pointer> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(total).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "value past 4 GiB")
        })?;
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(self.path_of(self.id))?;
            sync_dir(&self.dir)?;
            self.file = Some(f);
            self.started_ms = crate::domain::timefmt::now_ms();
            self.len = 0;
        }
        for part in parts {
            self.pending.extend_from_slice(part);
        }
        if self.pending.len() >= WRITE_AT {
            self.write_pending()?;
        }
        let p = Pointer {
            file: self.id,
            at: self.len,
            len,
        };
        self.len += u64::from(len);
        self.dirty = true;
        Ok(p)
    }

    /// Makes what was appended durable.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.write_pending()?;
        if let (true, Some(f)) = (self.dirty, self.file.as_ref()) {
            f.sync_data()?;
        }
        self.dirty = false;
        Ok(())
    }

    /// The log's end after the appends so far.
    pub fn head(&self) -> Head {
        Head {
            file: self.id,
            len: self.len,
        }
    }

    pub fn path_of(&self, id: u64) -> PathBuf {
        self.dir.join(file_name(id, self.ext))
    }
}

/// Syncs a directory's entries (the files made, renamed or removed in it).
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_and_heads_round_trip() {
        let p = Pointer {
            file: 7,
            at: 1 << 40,
            len: 65_000,
        };
        assert_eq!(Pointer::decode(&p.encode()), Some(p));
        assert!(is_pointer(&p.encode()));
        assert_eq!(Pointer::decode(&[2, 0, 0]), None);
        let h = Head { file: 3, len: 99 };
        assert_eq!(Head::decode(&h.encode()), Some(h));
        assert_eq!(Head::decode(&[1, 2]), None);
        assert_eq!(parse_name(&file_name(0xabc, EXT), EXT), Some(0xabc));
        assert_eq!(parse_name("x.events", EXT), None);
        assert_eq!(parse_name(&file_name(7, RUNS_EXT), RUNS_EXT), Some(7));
        assert_eq!(parse_name(&file_name(7, EXT), RUNS_EXT), None);
    }

    #[test]
    fn a_checked_value_reads_back_whole_and_a_changed_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = LogWriter::recover(dir.path(), RUNS_EXT, None).unwrap();
        let a = w.append_checked(b"a journal part").unwrap();
        let b = w.append_checked(b"a pair run").unwrap();
        w.sync().unwrap();
        assert_eq!((a.len, b.at), (14 + 4, 18));
        let files = LogFiles::with_ext(dir.path().to_path_buf(), RUNS_EXT);
        let read = |p: &Pointer| files.resolve_checked(&p.encode()).map(|c| c.into_owned());
        assert_eq!(read(&a).unwrap(), b"a journal part");
        assert_eq!(read(&b).unwrap(), b"a pair run");
        // A value written inline by an earlier version is itself.
        assert_eq!(&*files.resolve_checked(b"inline").unwrap(), b"inline");
        // One byte changed on the disk.
        let path = files.path_of(a.file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read(&a),
            Err(LogReadError::Checksum { at: 0, .. })
        ));
        assert_eq!(read(&b).unwrap(), b"a pair run");
        // Shorter than a checksum: not a checked value.
        let short = Pointer {
            file: a.file,
            at: 0,
            len: 3,
        };
        assert!(matches!(read(&short), Err(LogReadError::Checksum { .. })));
    }

    #[test]
    fn appends_reach_the_file_at_the_sync_or_once_past_the_bound_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = LogWriter::recover(dir.path(), EXT, None).unwrap();
        let a = w.append(b"one segment").unwrap();
        let b = w.append_checked(b"a run").unwrap();
        let path = w.path_of(a.file);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "held until the sync"
        );
        assert_eq!(w.head().len, 11 + 5 + 4);
        w.sync().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 20);
        let files = LogFiles::new(dir.path().to_path_buf());
        assert_eq!(files.read(&a).unwrap(), b"one segment");
        assert_eq!(&*files.resolve_checked(&b.encode()).unwrap(), b"a run");
        // Past the bound, the values held are written without a sync.
        let big = vec![b'x'; WRITE_AT];
        let c = w.append(&big).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            20 + WRITE_AT as u64
        );
        assert_eq!(files.read(&c).unwrap().len(), WRITE_AT);
    }

    #[test]
    fn recovery_cuts_back_to_the_committed_head() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, kept) = LogWriter::recover(dir.path(), EXT, None).unwrap();
        assert!(kept.is_empty());
        let a = w.append(b"first").unwrap();
        w.sync().unwrap();
        let committed = w.head();
        let b = w.append(b"never committed").unwrap();
        w.roll_past(
            Roll {
                bytes: 1,
                age_ms: 0,
            },
            0,
        )
        .unwrap();
        let c = w.append(b"next file, never committed").unwrap();
        assert_eq!((a.file, b.file, c.file), (1, 1, 2));
        drop(w);

        let (w, kept) = LogWriter::recover(dir.path(), EXT, Some(committed)).unwrap();
        assert_eq!(kept, vec![(1, 5)]);
        assert_eq!(w.current(), 3, "appends go to a file past every one seen");
        assert!(!dir.path().join(file_name(2, EXT)).exists());
        let files = LogFiles::new(dir.path().to_path_buf());
        assert_eq!(files.read(&a).unwrap(), b"first");
        assert!(matches!(files.read(&b), Err(LogReadError::Short { .. })));
        assert!(matches!(files.read(&c), Err(LogReadError::Missing(_))));

        // No head: nothing was ever committed.
        let (_, kept) = LogWriter::recover(dir.path(), EXT, None).unwrap();
        assert!(kept.is_empty());
        assert!(list(dir.path(), EXT).unwrap().is_empty());
    }
}
