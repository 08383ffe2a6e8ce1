//! Per (user, video) implicit-feedback pairs, durable without a read or a
//! row per pair on the write path.
//!
//! - Each input batch writes its pair *deltas* as one run (`P/` seq part) in
//!   its atomic write, with the offsets it writes (a run whose offsets did not
//!   reach the disk is a fragment of a write that failed, dropped at open, as
//!   journal parts are). Once durable, the deltas join the in-memory
//!   [`Overlay`]'s active [`Layer`].
//! - Past [`Tuning::freeze_at`] deltas (the entries of the runs it holds,
//!   however few pairs they name) the active layer is frozen and the
//!   compactor thread ([`super::compact`]) writes it out as one chunk per user
//!   (`U/` user · tag, covering every run below the tag) in small writes, then
//!   deletes the runs it covers in one; then the frozen layer is dropped (a
//!   compaction cut short is undone at open: its runs are all still there).
//!   About one compaction in [`Tuning::merge_at`] that touches a user gives
//!   them one *merged* chunk instead (covering every older chunk too); the
//!   older chunks are deleted once it is durable. Ingest waits only when the
//!   active layer reaches four times the freeze size while a compaction is
//!   still running (memory stays bounded).
//! - A reader takes the user's deltas from the overlay, then reads the user's
//!   chunks: the newest merged chunk and the chunks after it count; a layer
//!   counts unless a chunk's tag covers it (it was compacted meanwhile). Each
//!   compaction writes one chunk per user in one write, and a merge deletes
//!   what it replaced only after the merged chunk is durable, so a reader
//!   running beside a compaction sees each delta exactly once.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rustc_hash::{FxHashMap, FxHashSet};

use super::{keys, slots, state, StoreError};

/// A pair's slots ([`slots::PAIR`]).
pub type Slots = [f64; 5];

/// Runs: `P/` seq (be64) part (be32) → entries (see [`encode_run`]).
pub const RUN: &[u8] = b"P/";
/// Chunks: `P/`-free user rows, `U/` user · tag (be64) → kind byte, entries.
pub const CHUNK: &[u8] = b"U/";
/// The tag of the last compaction (be64): every run below it is in chunks.
pub const THROUGH: &[u8] = b"i/pairs-through";
/// Set while a compaction writes its chunks (its tag, be64); see
/// [`super::compact::undo_unfinished`].
pub const COMPACTING: &[u8] = b"i/pairs-compacting";
/// Set once the pairs are in chunks (stores before them held one row per pair
/// under [`keys::VIDEO_PAIR`], or none: converted once at open).
pub const CHUNKS_MARK: &[u8] = b"i/pair-chunks";

const FRESH: u8 = 0;
const MERGED: u8 = 1;

/// When the overlay is compacted, and when a user's chunks are merged.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Entries of the active layer that freeze it for compaction.
    pub freeze_at: usize,
    /// Chunks of one user (with the one being written) that merge them.
    pub merge_at: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            freeze_at: 1_000_000,
            merge_at: 8,
        }
    }
}

pub fn run_key(seq: u64, part: u32) -> Vec<u8> {
    let mut k = RUN.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(&part.to_be_bytes());
    k
}

pub fn run_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        key.get(RUN.len()..RUN.len() + 8)?.try_into().ok()?,
    ))
}

/// The key prefix of every chunk of `user`.
pub fn user_prefix(user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(CHUNK.len() + 4 + user.len());
    k.extend_from_slice(CHUNK);
    k.extend_from_slice(&(user.len() as u32).to_be_bytes());
    k.extend_from_slice(user.as_bytes());
    k
}

pub fn chunk_key(user: &str, tag: u64) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.extend_from_slice(&tag.to_be_bytes());
    k
}

/// (user, tag) of a chunk key.
pub fn parse_chunk_key(key: &[u8]) -> Option<(&str, u64)> {
    let (user, tag) = keys::split_pair_bytes(key.strip_prefix(CHUNK)?)?;
    Some((
        std::str::from_utf8(user).ok()?,
        u64::from_be_bytes(tag.try_into().ok()?),
    ))
}

/// A user's chunk: its tag, whether it replaces every older one, its pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub tag: u64,
    pub merged: bool,
    pub pairs: Vec<(String, Slots)>,
}

/// A chunk of `pairs`, sorted by video.
pub fn encode_sorted(merged: bool, pairs: &FxHashMap<String, Slots>) -> Vec<u8> {
    encode_rows(merged, pairs.iter().map(|(v, s)| (v.as_str(), s)).collect())
}

/// A chunk of `rows` (video, slots; one row a video) in any order: sorted
/// by video here.
pub fn encode_rows(merged: bool, mut rows: Vec<(&str, &Slots)>) -> Vec<u8> {
    rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
    encode_chunk(merged, rows.into_iter())
}

pub fn encode_chunk<'a>(
    merged: bool,
    pairs: impl Iterator<Item = (&'a str, &'a Slots)>,
) -> Vec<u8> {
    let mut out = vec![if merged { MERGED } else { FRESH }];
    out.extend(state::encode_entries(
        pairs.map(|(video, s)| (video.as_bytes(), &s[..])),
    ));
    out
}

/// What [`encode_chunk`] wrote under `key`; `None` for anything else.
pub fn decode_chunk(key: &[u8], v: &[u8]) -> Option<Chunk> {
    let (_, tag) = parse_chunk_key(key)?;
    let merged = match *v.first()? {
        FRESH => false,
        MERGED => true,
        _ => return None,
    };
    let mut pairs = Vec::new();
    let mut bad = false;
    state::decode_entries(&v[1..], state::Encoding::Current, |video, s| {
        match (std::str::from_utf8(video), <Slots>::try_from(s)) {
            (Ok(video), Ok(s)) if s.iter().all(|x| !x.is_nan()) => {
                pairs.push((video.to_string(), s))
            }
            _ => bad = true,
        }
    })?;
    (!bad).then_some(Chunk { tag, merged, pairs })
}

/// A run's bytes: each pair's delta under its row key ([`keys::VIDEO_PAIR`]
/// user·video), then the offset marks; what [`state::encode_entries`] makes
/// of those entries, without a key built per pair.
pub fn encode_run<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str, &'a Slots)>,
    marks: &[(Vec<u8>, [f64; 1])],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.size_hint().0 * 80);
    for (user, video, d) in pairs {
        let key_len = keys::VIDEO_PAIR.len() + 4 + user.len() + video.len();
        out.extend_from_slice(&(key_len as u32).to_le_bytes());
        keys::extend_parts(
            &mut out,
            keys::VIDEO_PAIR,
            &[user.as_bytes(), video.as_bytes()],
        );
        state::push_values(&mut out, d);
    }
    for (k, v) in marks {
        state::push_entry(&mut out, k, v);
    }
    out
}

/// The pairs of one run: entries under a [`keys::VIDEO_PAIR`] key (user·video,
/// five slots); the offset marks (`o/` key, one slot) ride along.
pub fn run_pairs(entries: &[(Vec<u8>, Vec<f64>)]) -> Option<Vec<(String, String, Slots)>> {
    let mut out = Vec::new();
    for (k, v) in entries {
        if let Some(rest) = k.strip_prefix(keys::VIDEO_PAIR) {
            let (user, video) = keys::split_pair(rest)?;
            let s = <Slots>::try_from(v.as_slice()).ok()?;
            if s.iter().any(|x| x.is_nan()) {
                return None;
            }
            out.push((user, video, s));
        } else if !k.starts_with(keys::OFFSET) {
            return None;
        }
    }
    Some(out)
}

/// Pair deltas of consecutive runs, by user then video. A layer names each
/// video once (a million deltas name a few thousand videos): its pairs hold
/// the video's number in [`Layer::videos`].
#[derive(Debug, Default, Clone)]
pub struct Layer {
    users: FxHashMap<Box<str>, FxHashMap<u32, Slots>>,
    videos: Vec<Box<str>>,
    video_ids: FxHashMap<Box<str>, u32>,
    pub entries: usize,
    /// Deltas merged in: the entries of the runs this layer holds (a pair
    /// that comes back counts again). They bound the runs on disk, where a
    /// stream that repeats its pairs keeps `entries` low.
    pub deltas: usize,
    /// The seq of the last run merged in (`None` while empty).
    pub last: Option<u64>,
}

impl Layer {
    pub fn add(&mut self, seq: u64, user: &str, video: &str, d: &Slots) {
        let id = match self.video_ids.get(video) {
            Some(&id) => id,
            None => {
                let id = self.videos.len() as u32;
                self.videos.push(video.into());
                self.video_ids.insert(video.into(), id);
                id
            }
        };
        let pairs = match self.users.get_mut(user) {
            Some(p) => p,
            None => self.users.entry(user.into()).or_default(),
        };
        match pairs.entry(id) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                slots::combine(slots::PAIR, e.get_mut(), d)
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(*d);
                self.entries += 1;
            }
        }
        self.deltas += 1;
        self.last = Some(self.last.map_or(seq, |l| l.max(seq)));
    }

    /// `user`'s deltas (video, slots), in no order; `None` when the layer has none.
    pub fn user(&self, user: &str) -> Option<impl Iterator<Item = (&str, &Slots)> + '_> {
        let pairs = self.users.get(user)?;
        Some(pairs.iter().map(|(id, s)| (&*self.videos[*id as usize], s)))
    }

    /// Every user with deltas here, in no order.
    pub fn user_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.users.keys().map(|u| &**u)
    }

    /// How many users have deltas here.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Whether a chunk tagged `tag` holds this layer (it was compacted).
    fn covered_by(&self, tag: Option<u64>) -> bool {
        covered(self.last, tag)
    }
}

/// Whether a chunk tagged `tag` holds a layer whose last run is `last`.
fn covered(last: Option<u64>, tag: Option<u64>) -> bool {
    match (last, tag) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(last), Some(tag)) => tag > last,
    }
}

/// What is held in memory of the pairs not yet in chunks.
#[derive(Debug, Default)]
pub struct Overlay {
    pub active: Layer,
    /// The layer being compacted.
    pub frozen: Option<Arc<Layer>>,
    /// The seq of the last run merged in.
    pub last: Option<u64>,
    /// Set while the compactor writes `frozen`.
    pub compacting: bool,
    /// Why compaction stopped (a failed write): ingest stops too.
    pub broken: Option<String>,
    pub stop: bool,
    pub stats: CompactionStats,
}

/// What the status shows of the pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CompactionStats {
    pub compactions: u64,
    pub chunks_written: u64,
    pub merged_users: u64,
    pub last_seconds: f64,
    /// Times ingest waited for a compaction.
    pub waits: u64,
}

/// One layer's deltas of one user: the layer's last run, video → slots.
type LayerDeltas = (Option<u64>, Vec<(String, Slots)>);

/// The overlay and the compactor's signals, shared by every handle of a store.
#[derive(Debug, Default)]
pub struct Shared {
    pub overlay: Mutex<Overlay>,
    pub changed: Condvar,
    /// Held by the compactor while it writes; a backup holds it to copy a
    /// store no compaction is changing.
    pub gate: Mutex<()>,
    pub tuning: Mutex<Tuning>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn tuning(&self) -> Tuning {
        *self.tuning.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Merges a durable batch's pair deltas (keys [`keys::VIDEO_PAIR`]) into
    /// the active layer; freezes it for the compactor when it holds
    /// `freeze_at` deltas, and waits while it holds four times as many and a
    /// compaction runs (deltas, not distinct pairs: those bound memory, and
    /// deltas bound the runs on disk too).
    pub fn add_batch<'a>(
        &self,
        seq: u64,
        pairs: impl Iterator<Item = (&'a str, &'a str, &'a Slots)>,
    ) -> Result<(), StoreError> {
        let tuning = self.tuning();
        let mut o = self.lock();
        let mut any = false;
        for (user, video, d) in pairs {
            o.active.add(seq, user, video, d);
            any = true;
        }
        if any {
            o.last = Some(seq);
        }
        if o.active.deltas >= tuning.freeze_at && o.frozen.is_none() {
            let layer = std::mem::take(&mut o.active);
            o.frozen = Some(Arc::new(layer));
            self.changed.notify_all();
        }
        let mut waited = false;
        while o.active.deltas >= tuning.freeze_at.saturating_mul(4) && o.frozen.is_some() {
            if let Some(why) = &o.broken {
                return Err(StoreError::Refused(format!(
                    "the pair compaction failed ({why}); restart the daemon once the cause is fixed"
                )));
            }
            if o.stop {
                break;
            }
            if !waited {
                o.stats.waits += 1;
                waited = true;
            }
            o = self.changed.wait(o).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    /// `user`'s deltas held in memory: (layer last seq, video → slots) of the
    /// frozen and the active layer, and the last seq merged in.
    fn user_deltas(&self, user: &str) -> (Vec<LayerDeltas>, Option<u64>) {
        let o = self.lock();
        let mut out = Vec::with_capacity(2);
        let layers = o
            .frozen
            .as_deref()
            .into_iter()
            .chain(std::iter::once(&o.active));
        for layer in layers {
            if let Some(p) = layer.user(user) {
                out.push((layer.last, p.map(|(v, s)| (v.to_string(), *s)).collect()));
            }
        }
        (out, o.last)
    }

    /// Every layer held now (the active one copied).
    fn layers(&self) -> Vec<Arc<Layer>> {
        let o = self.lock();
        let mut out = Vec::with_capacity(2);
        if let Some(f) = &o.frozen {
            out.push(f.clone());
        }
        out.push(Arc::new(o.active.clone()));
        out
    }

    /// Entries held in memory (both layers).
    pub fn held(&self) -> (usize, usize) {
        let o = self.lock();
        (o.active.entries, o.frozen.as_ref().map_or(0, |f| f.entries))
    }
}

/// Combines a user's chunks (the newest merged one and those after it) into
/// `into`; answers the highest tag.
pub fn fold_chunks(chunks: &[Chunk], into: &mut FxHashMap<String, Slots>) -> Option<u64> {
    let from = chunks
        .iter()
        .filter(|c| c.merged)
        .map(|c| c.tag)
        .max()
        .unwrap_or(0);
    let mut top = None;
    for c in chunks {
        top = Some(top.map_or(c.tag, |t: u64| t.max(c.tag)));
        if c.tag < from {
            continue;
        }
        for (video, s) in &c.pairs {
            add(into, video, s);
        }
    }
    top
}

/// Combines `s` into `video`'s slots in `into`.
pub fn add(into: &mut FxHashMap<String, Slots>, video: &str, s: &Slots) {
    match into.get_mut(video) {
        Some(t) => slots::combine(slots::PAIR, t, s),
        None => {
            into.insert(video.to_string(), *s);
        }
    }
}

/// One user's pairs, sorted by video, and the first run seq they do not
/// reflect (every run below it is in them).
pub struct UserPairs {
    pub pairs: Vec<(String, Slots)>,
    pub upto: u64,
}

/// Reads one user's pairs: overlay first, then chunks (see the module docs).
pub fn read_user(tree: &sled::Tree, shared: &Shared, user: &str) -> Result<UserPairs, StoreError> {
    let (layers, last) = shared.user_deltas(user);
    let mut chunks = Vec::new();
    for item in tree.scan_prefix(user_prefix(user)) {
        let (k, v) = item?;
        chunks.push(decode_chunk(&k, &v).ok_or_else(|| StoreError::Corrupt {
            key: super::read::entry_name(&k),
            message: "a pair chunk of the wrong shape".into(),
        })?);
    }
    let mut map = FxHashMap::default();
    let tag = fold_chunks(&chunks, &mut map);
    for (layer_last, deltas) in &layers {
        if !covered(*layer_last, tag) {
            for (video, s) in deltas {
                add(&mut map, video, s);
            }
        }
    }
    let mut pairs: Vec<(String, Slots)> = map.into_iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let upto = tag.unwrap_or(0).max(last.map_or(0, |l| l + 1));
    Ok(UserPairs { pairs, upto })
}

/// Every user's pairs: a pass over the chunks (grouped by user, as keyed)
/// with the overlay's deltas added, then the users only the overlay holds.
pub struct Scan<'a> {
    steps: Box<dyn Iterator<Item = super::scan::Step> + 'a>,
    layers: Vec<Arc<Layer>>,
    seen: FxHashSet<String>,
    /// The user being gathered and their chunks.
    current: Option<(String, Vec<Chunk>)>,
    out: std::vec::IntoIter<(String, String, Slots)>,
    /// Users only the overlay holds, once the chunks are done.
    rest: Option<std::vec::IntoIter<String>>,
    on_damage: Box<dyn Fn(&super::scan::Unreadable) + 'a>,
    done: bool,
}

impl<'a> Scan<'a> {
    pub fn new(
        tree: crate::store::generation::Held,
        shared: &Shared,
        on_damage: impl Fn(&super::scan::Unreadable) + 'a,
    ) -> Scan<'a> {
        Scan {
            layers: shared.layers(),
            steps: Box::new(super::scan::scan_prefix(tree, CHUNK)),
            seen: FxHashSet::default(),
            current: None,
            out: Vec::new().into_iter(),
            rest: None,
            on_damage: Box::new(on_damage),
            done: false,
        }
    }

    /// The pairs of `user` from `chunks` and the layers.
    fn emit(&mut self, user: String, chunks: Vec<Chunk>) {
        let mut map = FxHashMap::default();
        let tag = fold_chunks(&chunks, &mut map);
        let mut held = false;
        for layer in &self.layers {
            if let Some(d) = layer.user(&user) {
                held = true;
                if !layer.covered_by(tag) {
                    for (video, s) in d {
                        add(&mut map, video, s);
                    }
                }
            }
        }
        if held {
            self.seen.insert(user.clone());
        }
        let mut rows: Vec<(String, String, Slots)> =
            map.into_iter().map(|(v, s)| (user.clone(), v, s)).collect();
        rows.sort_by(|a, b| a.1.cmp(&b.1));
        self.out = rows.into_iter();
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<(String, String, Slots), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(row) = self.out.next() {
                return Some(Ok(row));
            }
            if let Some(rest) = &mut self.rest {
                let user = rest.next()?;
                self.emit(user, Vec::new());
                continue;
            }
            if self.done {
                let mut users: Vec<String> = self
                    .layers
                    .iter()
                    .flat_map(|l| l.user_names())
                    .filter(|u| !self.seen.contains(*u))
                    .map(str::to_string)
                    .collect::<FxHashSet<String>>()
                    .into_iter()
                    .collect();
                users.sort();
                self.rest = Some(users.into_iter());
                continue;
            }
            match self.steps.next() {
                None => {
                    self.done = true;
                    if let Some((user, chunks)) = self.current.take() {
                        self.emit(user, chunks);
                    }
                }
                Some(Err(u)) => (self.on_damage)(&u),
                Some(Ok((k, v))) => {
                    let Some(chunk) = decode_chunk(&k, &v) else {
                        return Some(Err(StoreError::Corrupt {
                            key: super::read::entry_name(&k),
                            message: "a pair chunk of the wrong shape".into(),
                        }));
                    };
                    let user = parse_chunk_key(&k).map(|(u, _)| u.to_string());
                    let Some(user) = user else { continue };
                    match &mut self.current {
                        Some((u, chunks)) if *u == user => chunks.push(chunk),
                        _ => {
                            let previous = self.current.replace((user, vec![chunk]));
                            if let Some((u, chunks)) = previous {
                                self.emit(u, chunks);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod unit {
    use super::*;

    fn s(w: f64, ts: f64) -> Slots {
        [w, 1.0, 0.0, w, ts]
    }

    #[test]
    fn a_chunk_reads_back_and_its_key_names_user_and_tag() {
        let pairs = [
            ("v1".to_string(), s(0.5, 10.0)),
            ("v2".to_string(), s(0.2, 20.0)),
        ];
        let key = chunk_key("user\0x", 42);
        let v = encode_chunk(true, pairs.iter().map(|(a, b)| (a.as_str(), b)));
        let c = decode_chunk(&key, &v).unwrap();
        assert_eq!((c.tag, c.merged), (42, true));
        assert_eq!(c.pairs, pairs.to_vec());
        assert_eq!(parse_chunk_key(&key), Some(("user\0x", 42)));
        assert!(decode_chunk(&key, &[7]).is_none());
        assert!(key.starts_with(&user_prefix("user\0x")));
        assert!(!key.starts_with(&user_prefix("user")));
    }

    #[test]
    fn the_newest_merged_chunk_replaces_the_older_ones() {
        let c = |tag, merged, w| Chunk {
            tag,
            merged,
            pairs: vec![("v".to_string(), s(w, tag as f64))],
        };
        let mut m = FxHashMap::default();
        // 3 and 5 are merged into 7 (a merge whose old chunks are not deleted yet).
        let top = fold_chunks(
            &[
                c(3, false, 1.0),
                c(5, false, 2.0),
                c(7, true, 3.0),
                c(9, false, 0.5),
            ],
            &mut m,
        );
        assert_eq!(top, Some(9));
        assert_eq!(m["v"][0], 3.5);
        assert_eq!(m["v"][1], 2.0);
    }

    #[test]
    fn a_layer_counts_until_a_chunk_covers_it() {
        let mut l = Layer::default();
        assert!(l.covered_by(None), "an empty layer adds nothing");
        l.add(4, "u", "v", &s(1.0, 1.0));
        l.add(6, "u", "v", &s(1.0, 2.0));
        assert_eq!((l.entries, l.deltas, l.last), (1, 2, Some(6)));
        assert!(!l.covered_by(None));
        assert!(!l.covered_by(Some(4)));
        assert!(!l.covered_by(Some(6)));
        assert!(l.covered_by(Some(7)));
    }

    #[test]
    fn a_run_is_its_pairs_under_their_row_keys() {
        // Users and videos of different lengths and bytes, in no key order.
        let names = ["zz", "", "a", "b\u{e9}", "ab", "aaa", "\u{1f600}"];
        let mut pairs = Vec::new();
        for (i, u) in names.iter().enumerate() {
            for (j, v) in names.iter().enumerate() {
                pairs.push((*u, *v, s(i as f64, j as f64)));
            }
        }
        let key = |u: &str, v: &str| keys::join(keys::VIDEO_PAIR, &[u.as_bytes(), v.as_bytes()]);
        let marks = vec![(keys::offset_key("ns", "t", 3), [7.0])];
        let run = encode_run(pairs.iter().map(|(u, v, d)| (*u, *v, d)), &marks);
        let keyed: Vec<(Vec<u8>, Vec<f64>)> = pairs
            .iter()
            .map(|(u, v, d)| (key(u, v), d.to_vec()))
            .chain(marks.iter().map(|(k, v)| (k.clone(), v.to_vec())))
            .collect();
        let want = state::encode_entries(keyed.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(run, want);
        let mut entries = Vec::new();
        state::decode_entries(&run, state::Encoding::Current, |k, v| {
            entries.push((k.to_vec(), v.to_vec()))
        })
        .unwrap();
        let back = run_pairs(&entries).unwrap();
        let owned: Vec<(String, String, Slots)> = pairs
            .iter()
            .map(|(u, v, d)| (u.to_string(), v.to_string(), *d))
            .collect();
        assert_eq!(back, owned);
    }

    #[test]
    fn the_active_layer_freezes_when_full() {
        let shared = Shared::default();
        *shared.tuning.lock().unwrap() = Tuning {
            freeze_at: 3,
            merge_at: 8,
        };
        let d = s(1.0, 0.0);
        shared
            .add_batch(0, [("a", "1", &d), ("a", "2", &d)].into_iter())
            .unwrap();
        assert!(shared.lock().frozen.is_none());
        shared.add_batch(1, [("b", "1", &d)].into_iter()).unwrap();
        let o = shared.lock();
        let f = o.frozen.as_ref().unwrap();
        assert_eq!(
            (f.entries, f.last, o.active.entries, o.last),
            (3, Some(1), 0, Some(1))
        );
    }

    #[test]
    fn a_stream_that_repeats_its_pairs_freezes_by_deltas() {
        // One pair, again and again: a pair count never reaches the bound,
        // while each batch's run stays on disk until a compaction covers it.
        let shared = Shared::default();
        *shared.tuning.lock().unwrap() = Tuning {
            freeze_at: 3,
            merge_at: 8,
        };
        let d = s(1.0, 0.0);
        for seq in 0..2 {
            shared.add_batch(seq, [("a", "1", &d)].into_iter()).unwrap();
        }
        assert!(shared.lock().frozen.is_none());
        shared.add_batch(2, [("a", "1", &d)].into_iter()).unwrap();
        let o = shared.lock();
        let f = o.frozen.as_ref().unwrap();
        assert_eq!((f.entries, f.deltas, f.last), (1, 3, Some(2)));
        assert_eq!((o.active.entries, o.active.deltas), (0, 0));
    }
}
