//! Bounds on the state held per distinct id: past `store.max_tracked_videos`
//! videos, a new video's counters (QoE, events by genre and region) add up
//! under the video `(other)`; past `store.max_listening_pairs` (user, track)
//! pairs, a new pair's listening counts add up under (`(other)`, `(other)`)
//! and stay out of the listening graph. The decision is made before the
//! batch's journal entry is written, so a replay gives the same state; the
//! events themselves are stored whole.

use super::keys;
use super::prepare::Deltas;
use super::slots;
use super::state::{layout_of, State};

/// Where folded ids add up.
pub const OTHER: &str = "(other)";

/// The bounds (no bound: `usize::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub videos: usize,
    pub listening_pairs: usize,
    /// Free space the disk must keep: a write that would leave less is not
    /// attempted (0: no check).
    pub min_free_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            videos: usize::MAX,
            listening_pairs: usize::MAX,
            min_free_bytes: 0,
        }
    }
}

/// The bytes free under `path` when a write of about `bytes` would leave less
/// than `min_free` (twice its bytes, for sled's log); `None` when it fits, no
/// floor is set (0), or the filesystem cannot say.
pub fn short_of_room(path: &std::path::Path, min_free: u64, bytes: u64) -> Option<u64> {
    if min_free == 0 {
        return None;
    }
    let free = free_bytes(path)?;
    (free < min_free.saturating_add(bytes.saturating_mul(2))).then_some(free)
}

/// Bytes free to an unprivileged writer on the filesystem of `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) fills the struct it is given; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (r == 0).then(|| (st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// How many distinct ids the state holds, and how many events were folded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tracked {
    pub videos: usize,
    pub listening_pairs: usize,
}

impl Tracked {
    /// Counts what `state` holds.
    pub fn of(state: &State) -> Tracked {
        let other_video = keys::join(keys::QOE_VIDEO, &[OTHER.as_bytes()]);
        let other_pair = keys::join(keys::MUSIC_PAIR, &[OTHER.as_bytes(), OTHER.as_bytes()]);
        Tracked {
            videos: state
                .small_prefix(keys::QOE_VIDEO)
                .filter(|(k, _)| *k != &other_video[keys::QOE_VIDEO.len()..])
                .count(),
            listening_pairs: state
                .big
                .keys()
                .filter(|k| k.starts_with(keys::MUSIC_PAIR) && **k != other_pair)
                .count(),
        }
    }
}

/// The video a video-keyed aggregate key names, if it is one.
fn video_of(key: &[u8]) -> Option<&[u8]> {
    if let Some(v) = key.strip_prefix(keys::QOE_VIDEO) {
        return Some(v);
    }
    for p in [keys::ITEM_GENRE, keys::ITEM_REGION] {
        if let Some(rest) = key.strip_prefix(p) {
            return keys::split_pair_bytes(rest).map(|(v, _)| v);
        }
    }
    None
}

/// Rewrites the deltas of ids new past the limits to `(other)`; updates
/// `tracked` with the ids admitted; answers (video events, listening events)
/// folded.
pub fn fold(
    deltas: &mut Deltas,
    state: &State,
    limits: Limits,
    tracked: &mut Tracked,
) -> (u64, u64) {
    let mut folded_videos: Vec<Vec<u8>> = Vec::new();
    let mut moves: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let (mut video_events, mut listening_events) = (0u64, 0u64);
    // Videos first: their QoE keys decide, the genre and region keys follow.
    let mut qoe_keys: Vec<&Vec<u8>> = deltas
        .map
        .keys()
        .filter(|k| k.starts_with(keys::QOE_VIDEO))
        .collect();
    qoe_keys.sort();
    for k in qoe_keys {
        let video = &k[keys::QOE_VIDEO.len()..];
        if video == OTHER.as_bytes() || state.get(k).is_some() {
            continue;
        }
        if tracked.videos < limits.videos {
            tracked.videos += 1;
        } else {
            folded_videos.push(video.to_vec());
            video_events += deltas.map[k][0] as u64;
        }
    }
    let mut pair_keys: Vec<&Vec<u8>> = deltas
        .map
        .keys()
        .filter(|k| k.starts_with(keys::MUSIC_PAIR))
        .collect();
    pair_keys.sort();
    let other_pair = keys::join(keys::MUSIC_PAIR, &[OTHER.as_bytes(), OTHER.as_bytes()]);
    for k in pair_keys {
        if **k == other_pair || state.get(k).is_some() {
            continue;
        }
        if tracked.listening_pairs < limits.listening_pairs {
            tracked.listening_pairs += 1;
        } else {
            listening_events += deltas.map[k][..5].iter().sum::<f64>() as u64;
            moves.push((k.clone(), other_pair.clone()));
        }
    }
    if !folded_videos.is_empty() {
        for k in deltas.map.keys() {
            let Some(video) = video_of(k) else { continue };
            if !folded_videos.iter().any(|f| f == video) {
                continue;
            }
            let target = if k.starts_with(keys::QOE_VIDEO) {
                keys::join(keys::QOE_VIDEO, &[OTHER.as_bytes()])
            } else {
                let prefix = if k.starts_with(keys::ITEM_GENRE) {
                    keys::ITEM_GENRE
                } else {
                    keys::ITEM_REGION
                };
                let rest = keys::split_pair_bytes(&k[prefix.len()..]).map_or(&[][..], |(_, r)| r);
                keys::join(prefix, &[OTHER.as_bytes(), rest])
            };
            moves.push((k.clone(), target));
        }
    }
    for (from, to) in moves {
        let Some(delta) = deltas.map.remove(&from) else {
            continue;
        };
        let Some(layout) = layout_of(&to) else {
            continue;
        };
        match deltas.map.get_mut(&to) {
            Some(d) => slots::combine(layout, d, &delta),
            None => {
                deltas.map.insert(to, delta);
            }
        }
    }
    (video_events, listening_events)
}
