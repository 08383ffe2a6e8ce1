//! The store's sled files by generation. sled 0.34 reclaims the space of
//! rewritten pages slowly (a segment is cleaned only below half live, one page
//! per later write), so under a steady write load its files grow with the
//! bytes written, not with the bytes kept. The store therefore rewrites itself
//! from time to time (see [`super::rewrite`]): it copies what is live into a
//! new directory, `store.g<N>`, and names that directory in `store.current`
//! (written beside it and renamed over the old name, so a crash leaves either
//! name whole). A data dir without `store.current` keeps its sled files in
//! `store`, as every store did before generations.
//!
//! Readers on other threads may still hold the generation a rewrite replaced:
//! its directory is removed when the last handle to it drops (see
//! [`Handles`]), and every iterator the store hands out holds one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::StoreError;

/// The file that names the current generation's directory.
pub const POINTER: &str = "store.current";
/// The directory of a data dir that has no pointer (generation 0).
pub const FIRST: &str = "store";
/// Generation directories are this prefix and a number.
const PREFIX: &str = "store.g";

/// A generation's number from its directory name (`store` is 0).
pub fn number(name: &str) -> Option<u64> {
    if name == FIRST {
        return Some(0);
    }
    let digits = name.strip_prefix(PREFIX)?;
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The directory name of generation `n`.
pub fn name(n: u64) -> String {
    if n == 0 {
        FIRST.to_string()
    } else {
        format!("{PREFIX}{n}")
    }
}

/// The current generation of the data dir `dir`: its number and directory. A
/// pointer that does not read as a generation's name, or that names a missing
/// directory, is damage to report, never a reason to open an empty store.
pub fn current(dir: &Path) -> Result<(u64, PathBuf), StoreError> {
    let pointer = dir.join(POINTER);
    let text = match std::fs::read_to_string(&pointer) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((0, dir.join(FIRST)));
        }
        Err(e) => {
            return Err(StoreError::Damaged(format!(
                "{} cannot be read: {e}",
                pointer.display()
            )))
        }
    };
    let named = text.trim();
    let Some(n) = number(named) else {
        return Err(StoreError::Damaged(format!(
            "{} holds {:?}, not a store generation's name (`store` or `store.g<N>`)",
            pointer.display(),
            named.chars().take(64).collect::<String>()
        )));
    };
    let path = dir.join(named);
    if !path.is_dir() {
        return Err(StoreError::Damaged(format!(
            "{} names {named}, which is missing from the data dir",
            pointer.display()
        )));
    }
    Ok((n, path))
}

/// Removes the generations other than `keep`: one a rewrite replaced (its
/// readers were in a process that has stopped), or one a rewrite was writing
/// when the process stopped (the pointer was never moved to it). Answers the
/// names removed.
pub fn tidy(dir: &Path, keep: u64) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let Some(n) = number(name) else {
            continue;
        };
        if n == keep || !e.path().is_dir() {
            continue;
        }
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => removed.push(name.to_string()),
            Err(err) => tracing::warn!(
                "cannot remove the old store files {}: {err}",
                e.path().display()
            ),
        }
    }
    removed
}

/// Makes generation `n` the current one: the pointer is written beside its
/// final name, synced, renamed over it, and the directory synced.
pub fn switch(dir: &Path, n: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{POINTER}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{}\n", name(n)).as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(POINTER))?;
    super::eventlog::sync_dir(dir)
}

/// One generation's open sled files. When a rewrite has replaced it, the
/// last handle to drop closes sled and removes the directory.
pub struct Handles {
    /// `None` only while dropping.
    open: Option<(sled::Db, sled::Tree)>,
    dir: PathBuf,
    retired: AtomicBool,
}

impl Handles {
    pub fn new(db: sled::Db, tree: sled::Tree, dir: PathBuf) -> Handles {
        Handles {
            open: Some((db, tree)),
            dir,
            retired: AtomicBool::new(false),
        }
    }

    pub fn db(&self) -> &sled::Db {
        &self.open.as_ref().expect("open until dropped").0
    }

    pub fn tree(&self) -> &sled::Tree {
        &self.open.as_ref().expect("open until dropped").1
    }

    /// A rewrite replaced this generation: its files go with its last handle.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Keeps sled from ever flushing again (see `StoreView::poison`).
    pub fn forget(&self) {
        std::mem::forget(self.db().clone());
    }
}

impl Drop for Handles {
    fn drop(&mut self) {
        // sled's own last flush runs here, into the files about to go.
        drop(self.open.take());
        if self.retired.load(Ordering::Acquire) {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => tracing::info!("removed the replaced store files {}", self.dir.display()),
                Err(e) => tracing::warn!(
                    "cannot remove the replaced store files {} (the next start removes them): {e}",
                    self.dir.display()
                ),
            }
        }
    }
}

/// A generation held while it is read: derefs to its tree. Its `scan_prefix`,
/// `range` and `iter` answer iterators that hold the generation too, so a
/// rewrite never removes files a reader is still reading.
#[derive(Clone)]
pub struct Held(pub(super) Arc<Handles>);

impl std::ops::Deref for Held {
    type Target = sled::Tree;

    fn deref(&self) -> &sled::Tree {
        self.0.tree()
    }
}

impl Held {
    /// Holds sled files opened outside a store (by `check`, or a test): they
    /// are never retired.
    pub fn of(db: &sled::Db, tree: &sled::Tree, dir: &Path) -> Held {
        Held(Arc::new(Handles::new(
            db.clone(),
            tree.clone(),
            dir.to_path_buf(),
        )))
    }

    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> HeldIter {
        HeldIter {
            iter: self.0.tree().scan_prefix(prefix),
            _held: self.0.clone(),
        }
    }

    pub fn range<K: AsRef<[u8]>, R: std::ops::RangeBounds<K>>(&self, range: R) -> HeldIter {
        HeldIter {
            iter: self.0.tree().range(range),
            _held: self.0.clone(),
        }
    }

    pub fn iter(&self) -> HeldIter {
        HeldIter {
            iter: self.0.tree().iter(),
            _held: self.0.clone(),
        }
    }

    pub fn db(&self) -> &sled::Db {
        self.0.db()
    }
}

/// A sled iterator with the generation it reads held.
pub struct HeldIter {
    iter: sled::Iter,
    _held: Arc<Handles>,
}

impl Iterator for HeldIter {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.iter.next()
    }
}

impl DoubleEndedIterator for HeldIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.iter.next_back()
    }
}

impl HeldIter {
    pub fn keys(self) -> impl DoubleEndedIterator<Item = sled::Result<sled::IVec>> {
        self.map(|r| r.map(|(k, _)| k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip_and_others_are_not_generations() {
        for n in [0, 1, 2, 17, u64::MAX / 10] {
            assert_eq!(number(&name(n)), Some(n));
        }
        for other in [
            "store.g",
            "store.gx",
            "store.g-1",
            "store.rebuild",
            "store.damaged-1",
            "store.current",
            "stor",
            "store.g99999999999999999999",
        ] {
            assert_eq!(number(other), None, "{other}");
        }
    }

    #[test]
    fn a_pointer_that_is_unreadable_or_names_a_missing_dir_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(current(dir.path()).unwrap(), (0, dir.path().join("store")));
        std::fs::write(dir.path().join(POINTER), "../../etc\n").unwrap();
        let e = current(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a store generation's name"), "{e}");
        switch(dir.path(), 3).unwrap();
        let e = current(dir.path()).unwrap_err().to_string();
        assert!(e.contains("names store.g3, which is missing"), "{e}");
        std::fs::create_dir(dir.path().join("store.g3")).unwrap();
        assert_eq!(
            current(dir.path()).unwrap(),
            (3, dir.path().join("store.g3"))
        );
    }

    #[test]
    fn tidy_removes_only_other_generations() {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "store",
            "store.g2",
            "store.g3",
            "store.rebuild",
            "store.damaged-5",
            "events",
        ] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("db"), b"x").unwrap();
        }
        let mut removed = tidy(dir.path(), 3);
        removed.sort();
        assert_eq!(removed, ["store", "store.g2"]);
        for d in ["store.g3", "store.rebuild", "store.damaged-5", "events"] {
            assert!(dir.path().join(d).join("db").exists(), "{d}");
        }
    }
}
