//! The aggregates, held in memory and made durable as a journal: each input
//! batch writes its aggregate *deltas* as one journal entry inside the batch's
//! atomic write; a checkpoint now and then writes the whole state and drops the
//! journal it covers. Opening loads the latest checkpoint and replays the
//! journal after it. Deltas combine associatively (sums add, maxima max), so
//! replay gives exactly the state the writes produced.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use super::keys;
use super::slots::{self, Layout};

/// Many-keyed aggregates (per (user, track) pair) live in a hash map; the
/// others (QoE, genre, counters, per video) in a hash map too, with their keys
/// in order beside it for prefix scans. Every batch merges a delta into
/// thousands of them (three per video it views): a hash lookup each, where
/// an ordered map compared keys a dozen times over. A key is added to the
/// order only when new.
#[derive(Default)]
pub struct State {
    pub big: FxHashMap<Vec<u8>, Box<[f64]>>,
    small: FxHashMap<Vec<u8>, Box<[f64]>>,
    small_order: BTreeSet<Vec<u8>>,
    /// [`State::approx_bytes`], kept as keys are added (only [`State::merge`]
    /// adds them): the checkpoint policy asks after every batch.
    bytes: usize,
}

/// The layout of a held aggregate's key; `None` for keys the state does not
/// hold, which merging drops: among them per (user, video) keys, which older
/// stores wrote into checkpoints and the journal (those aggregates are derived
/// from the stored events now).
pub fn layout_of(key: &[u8]) -> Option<Layout> {
    if key.starts_with(keys::MUSIC_PAIR) {
        Some(slots::MUSIC)
    } else if key.starts_with(b"q/") || key.starts_with(keys::GENRE) {
        Some(slots::QOE)
    } else if key.starts_with(keys::COUNTER)
        || key.starts_with(keys::ITEM_GENRE)
        || key.starts_with(keys::ITEM_REGION)
    {
        Some(slots::COUNT)
    } else {
        None
    }
}

fn is_big(key: &[u8]) -> bool {
    key.starts_with(keys::MUSIC_PAIR)
}

impl State {
    pub fn get(&self, key: &[u8]) -> Option<&[f64]> {
        if is_big(key) {
            self.big.get(key)
        } else {
            self.small.get(key)
        }
        .map(|b| &b[..])
    }

    /// Combines a delta into the state (keys without a layout are dropped).
    pub fn merge(&mut self, key: &[u8], delta: &[f64]) {
        let Some(layout) = layout_of(key) else { return };
        if delta.len() != layout.slots() {
            return;
        }
        let big = is_big(key);
        let slot = if big {
            self.big.get_mut(key)
        } else {
            self.small.get_mut(key)
        };
        match slot {
            Some(v) => slots::combine(layout, v, delta),
            // A first delta combined into zero slots is the delta itself.
            None => {
                let v = delta.to_vec().into_boxed_slice();
                self.bytes += entry_bytes(key, &v);
                if big {
                    self.big.insert(key.to_vec(), v);
                } else {
                    self.small_order.insert(key.to_vec());
                    self.small.insert(key.to_vec(), v);
                }
            }
        }
    }

    /// The aggregates (other than per pair) whose keys start with `p`, in
    /// the order of their keys: (the key after `p`, slots).
    pub fn small_prefix<'a>(
        &'a self,
        p: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [f64])> + 'a {
        self.small_order
            .range::<[u8], _>((std::ops::Bound::Included(p), std::ops::Bound::Unbounded))
            .take_while(move |k| k.starts_with(p))
            .filter_map(move |k| Some((&k[p.len()..], &self.small.get(k.as_slice())?[..])))
    }

    pub fn entries(&self) -> impl Iterator<Item = (&Vec<u8>, &Box<[f64]>)> {
        self.big.iter().chain(self.small.iter())
    }

    /// Rough bytes held (for the checkpoint policy).
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }
}

fn entry_bytes(key: &[u8], slots: &[f64]) -> usize {
    key.len() + slots.len() * 8 + 48
}

/// Encodes (key, slots) entries: `u32 key length (LE), key, u8 slot count,
/// slots (f64 LE)`. Keys are never cut, whatever their length.
pub fn encode_entries<'a>(entries: impl Iterator<Item = (&'a [u8], &'a [f64])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in entries {
        push_entry(&mut out, k, v);
    }
    out
}

/// One entry as [`encode_entries`] writes it.
pub fn push_entry(out: &mut Vec<u8>, k: &[u8], v: &[f64]) {
    out.extend_from_slice(&(k.len() as u32).to_le_bytes());
    out.extend_from_slice(k);
    push_values(out, v);
}

/// An entry's values as [`encode_entries`] writes them (after its key).
pub fn push_values(out: &mut Vec<u8>, v: &[f64]) {
    out.push(v.len() as u8);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// How journal entries and checkpoints were encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// This layout: u32 key lengths, length-prefixed key parts.
    Current,
    /// Stores before layout 2: u16 key lengths, key parts joined by a 0 byte.
    Legacy,
}

/// Decodes what [`encode_entries`] wrote (or, for [`Encoding::Legacy`], what
/// older stores wrote, with its keys rewritten to today's parts), calling `f`
/// per entry; `None` if malformed.
pub fn decode_entries(
    mut b: &[u8],
    encoding: Encoding,
    mut f: impl FnMut(&[u8], &[f64]),
) -> Option<()> {
    let width = match encoding {
        Encoding::Current => 4,
        Encoding::Legacy => 2,
    };
    let mut slots_buf = Vec::with_capacity(16);
    let mut key_buf = Vec::new();
    while !b.is_empty() {
        let head = b.get(..width)?;
        let klen = match encoding {
            Encoding::Current => u32::from_le_bytes(head.try_into().ok()?) as usize,
            Encoding::Legacy => u16::from_le_bytes(head.try_into().ok()?) as usize,
        };
        let end = width.checked_add(klen)?;
        let mut key = b.get(width..end)?;
        let n = *b.get(end)? as usize;
        let start = end + 1;
        let raw = b.get(start..start.checked_add(n * 8)?)?;
        slots_buf.clear();
        slots_buf.extend(
            raw.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
        );
        if encoding == Encoding::Legacy {
            key_buf.clear();
            legacy_key(key, &mut key_buf);
            key = &key_buf;
        }
        f(key, &slots_buf);
        b = &b[start + n * 8..];
    }
    Some(())
}

/// An aggregate key of an older store in today's form: its two-part keys
/// joined their parts with a 0 byte.
fn legacy_key(key: &[u8], out: &mut Vec<u8>) {
    for prefix in [keys::MUSIC_PAIR, keys::ITEM_GENRE, keys::ITEM_REGION] {
        if let Some(rest) = key.strip_prefix(prefix) {
            if let Some(i) = rest.iter().position(|&b| b == 0) {
                keys::extend_parts(out, prefix, &[&rest[..i], &rest[i + 1..]]);
                return;
            }
        }
    }
    out.extend_from_slice(key);
}

pub const JOURNAL: &[u8] = b"j/";
pub const CHECKPOINT_CURRENT: &[u8] = b"k/current";
pub const CHECKPOINT: &[u8] = b"k/g/";

/// A journal entry's key: the batch's sequence number and the part within it.
pub fn journal_key(seq: u64, part: u32) -> Vec<u8> {
    let mut k = JOURNAL.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(&part.to_be_bytes());
    k
}

pub fn journal_seq(key: &[u8]) -> u64 {
    key.get(JOURNAL.len()..JOURNAL.len() + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

pub fn checkpoint_chunk_key(gen: u64, chunk: u32) -> Vec<u8> {
    let mut k = CHECKPOINT.to_vec();
    k.extend_from_slice(&gen.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

pub fn checkpoint_gen_prefix(gen: u64) -> Vec<u8> {
    let mut k = CHECKPOINT.to_vec();
    k.extend_from_slice(&gen.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_bytes_follow_every_key_added() {
        let mut st = State::default();
        let pair = keys::join(keys::MUSIC_PAIR, &[b"u1", b"t1"]);
        let qoe = keys::join(keys::QOE_VIDEO, &[b"v1"]);
        let count = keys::join(keys::COUNTER, &[b"stored"]);
        for _ in 0..3 {
            st.merge(&pair, &[1.0; 7][..slots::MUSIC.slots()]);
            st.merge(&qoe, &vec![1.0; slots::QOE.slots()]);
            st.merge(&count, &[2.0]);
        }
        // A key without a layout is dropped, and so is a delta of the wrong shape.
        st.merge(b"x/none", &[1.0]);
        st.merge(&count, &[1.0, 2.0]);
        let summed: usize = st.entries().map(|(k, v)| entry_bytes(k, v)).sum();
        assert_eq!(st.approx_bytes(), summed);
        assert_eq!(st.entries().count(), 3);
        assert_eq!(st.get(&count), Some(&[6.0][..]));
    }

    #[test]
    fn a_prefix_reads_its_keys_in_order_whatever_order_they_came_in() {
        let mut st = State::default();
        let region = |r: &[u8]| keys::join(keys::QOE_REGION, &[r]);
        let count = |n: &[u8]| keys::join(keys::COUNTER, &[n]);
        let q = vec![1.0; slots::QOE.slots()];
        for r in [&b"US"[..], b"BR", b"IN", b"DE", b"BR"] {
            st.merge(&region(r), &q);
        }
        for n in [&b"stored"[..], b"rejected", b"stored/view"] {
            st.merge(&count(n), &[1.0]);
        }
        // A key sorting just past the prefix's own keys is not read with them.
        st.merge(&keys::join(keys::QOE_RESOLUTION, &[b"1080p"]), &q);
        let read: Vec<(Vec<u8>, f64)> = st
            .small_prefix(keys::QOE_REGION)
            .map(|(k, v)| (k.to_vec(), v[0]))
            .collect();
        let want: Vec<(Vec<u8>, f64)> =
            [(&b"BR"[..], 2.0), (b"DE", 1.0), (b"IN", 1.0), (b"US", 1.0)]
                .iter()
                .map(|(r, n)| (region(r)[keys::QOE_REGION.len()..].to_vec(), *n))
                .collect();
        assert_eq!(read, want);
        let counters: Vec<&[u8]> = st.small_prefix(keys::COUNTER).map(|(k, _)| k).collect();
        let mut sorted = counters.clone();
        sorted.sort();
        assert_eq!(counters, sorted);
        assert_eq!(counters.len(), 3);
        assert_eq!(st.small_prefix(b"q/zz/").count(), 0);
    }
}
