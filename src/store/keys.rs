//! Key layout of the single sled tree. Everything one input batch changes lives
//! in one tree so that the batch is one atomic `apply_batch`.
//!
//! | prefix | key                                   | value                          |
//! |--------|---------------------------------------|--------------------------------|
//! | `E/`   | namespace(be32) topic 0 partition(be32) first offset(be64) | where the segment is in the event log files (see `store::eventlog`); before layout 3, the segment itself: version, crc32, (offset, length, event)* |
//! | `D/`   | namespace(be32) topic 0 partition offset | dead letter, JSON           |
//! | `N/`   | `n/` name, `i/` number                | offset namespaces (both ways)  |
//! | `Q/`   | a damaged segment's key               | the segment, quarantined       |
//! | `o/`   | namespace 0 topic 0 partition         | next offset to read (be64)     |
//! | `j/`   | sequence(be64) part(be32)              | where a part of one batch's aggregate deltas is in the runs log's files (see `store::eventlog`); written by earlier versions, the part itself |
//! | `P/`   | sequence(be64) part(be32)              | where a part of a batch's pair deltas (a run) is in the runs log's files; written by earlier versions, the part itself |
//! | `R/`   | sequence(be64) part(be32)              | a batch's rollup deltas (a run, see `store::rollup`) |
//! | `M/`   | grain cube bucket(be64) tag(be64) part(be32) | a bucket's rollup rows (a chunk) |
//! | `G/`   | grain cube bucket(be64) member length(be16) member part(be32) | a group peer's rollup rows of a bucket (see `store::rollup::group`) |
//! | `U/`   | user·tag(be64)                         | a user's pairs (a chunk)       |
//! | `V/`   | user·video                            | pair aggregate (layout before `U/`: moved at open) |
//! | `T/`   | write ms(be64) · segment key           | the segment's size (be64)      |
//! | `k/`   | `current`, `g/` generation chunk      | aggregate checkpoints          |
//! | `c/u/`, `c/m/`, `c/s/`, `c/t/` | id        | latest catalog record, JSON    |
//!
//! Aggregate keys (in the journal, checkpoints and memory): `q/v/`, `q/r/`,
//! `q/s/` video / region / resolution (QoE counters), `g/` genre (engagement),
//! `m/` user·track (listening counts), `s/` counter name, `n/` video·genre and
//! `r/` video·region (events). A key of several parts is made by [`join`]:
//! every part but the last carries its length, so none can collide.

pub const EVENT: &[u8] = b"E/";
pub const DEAD: &[u8] = b"D/";
/// Where a store laid out before namespaced positions kept its events and dead
/// letters; moved to [`EVENT`] and [`DEAD`] when the store opens.
pub const LEGACY_EVENT: &[u8] = b"e/";
pub const LEGACY_DEAD: &[u8] = b"d/";
/// Offset namespaces: `N/n/` name → number (be32), `N/i/` number → name.
pub const NAMESPACE_NUMBER: &[u8] = b"N/n/";
pub const NAMESPACE_NAME: &[u8] = b"N/i/";
/// Segments found damaged: `Q/` + the segment's key → the damaged value, its
/// reason and when (see `Store::check`).
pub const QUARANTINE: &[u8] = b"Q/";
/// The store's layout version (be32): absent in stores older than [`LAYOUT`].
pub const LAYOUT_KEY: &[u8] = b"i/layout";
/// Layout 2: namespaced positions, checksummed segments, length-prefixed key
/// parts and journal entries. Layout 3: segments in the event log's files,
/// pointed at from their entries (a store of layout 2 is read as it is, and
/// writes new segments to the files).
pub const LAYOUT: u32 = 3;
/// The committed end of the event log's files (see `store::eventlog::Head`).
pub const EVENT_LOG_HEAD: &[u8] = b"i/event-log-head";
/// The committed end of the runs log's files (the journal parts and pair runs).
pub const RUNS_LOG_HEAD: &[u8] = b"i/runs-log-head";
pub const OFFSET: &[u8] = b"o/";
pub const PAIR: &[u8] = b"a/";
/// Per (user, video) implicit-feedback rows of the layout before per-user
/// chunks (see `store::pairs`): `V/` user·video → [`super::slots::PAIR`]
/// slots; moved into chunks when such a store opens. Run entries use the same
/// user·video key.
pub const VIDEO_PAIR: &[u8] = b"V/";
/// Users folded in against a model: `F/` user → model id (be64), when (be64 ms).
pub const FOLDED: &[u8] = b"F/";
/// Set once the video pair rows hold every stored event's pair (stores
/// written before them derive the rows once, when they open).
pub const PAIRS_MARK: &[u8] = b"i/pairs";
/// The event segments by write time, for retention: `T/` write ms (be64) ·
/// segment key → the segment's size (be64). See `store::retention`.
pub const SEGMENT_INDEX: &[u8] = b"T/";
/// Set once every stored segment has its index entry.
pub const SEGMENT_INDEX_MARK: &[u8] = b"i/segment-index";
pub const QOE_VIDEO: &[u8] = b"q/v/";
pub const QOE_REGION: &[u8] = b"q/r/";
pub const QOE_RESOLUTION: &[u8] = b"q/s/";
pub const GENRE: &[u8] = b"g/";
pub const MUSIC_PAIR: &[u8] = b"m/";
pub const CAT_USER: &[u8] = b"c/u/";
pub const CAT_MOVIE: &[u8] = b"c/m/";
pub const CAT_SERIES: &[u8] = b"c/s/";
pub const CAT_TRACK: &[u8] = b"c/t/";
pub const COUNTER: &[u8] = b"s/";
/// This store's name among the members of its consumer group (see `claims`).
pub const MEMBER: &[u8] = b"i/member";

/// The catalog prefix of a record type (`user`, `movie`, `series`, else tracks).
pub fn catalog_prefix(record_type: &str) -> &'static [u8] {
    match record_type {
        "user" => CAT_USER,
        "movie" => CAT_MOVIE,
        "series" => CAT_SERIES,
        _ => CAT_TRACK,
    }
}
/// Events per (video, genre): a video's genre is its most frequent one.
pub const ITEM_GENRE: &[u8] = b"n/";
/// Events per (video, region): what is popular where (the cold start by region).
pub const ITEM_REGION: &[u8] = b"r/";
/// Model versions (`x/v/` id), their serving bundles (`x/b/` id), the champion (`x/champion`).
pub const MODEL_META: &[u8] = b"x/v/";
pub const MODEL_BUNDLE: &[u8] = b"x/b/";
pub const MODEL_CHAMPION: &[u8] = b"x/champion";
pub const MODEL_HISTORY: &[u8] = b"x/history";

/// Writes `prefix` and `parts` into `out`: every part but the last is preceded
/// by its length (u32, big-endian), so no id can run into the next part
/// whatever bytes it holds, and no part is ever cut.
pub fn extend_parts(out: &mut Vec<u8>, prefix: &[u8], parts: &[&[u8]]) {
    out.extend_from_slice(prefix);
    if let Some((last, init)) = parts.split_last() {
        for p in init {
            out.extend_from_slice(&(p.len() as u32).to_be_bytes());
            out.extend_from_slice(p);
        }
        out.extend_from_slice(last);
    }
}

pub fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = prefix.len() + parts.iter().map(|p| p.len() + 4).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    extend_parts(&mut k, prefix, parts);
    k
}

/// Splits what [`join`] made of two parts (after its prefix) into (a, b).
pub fn split_pair_bytes(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let a = rest.get(4..4usize.checked_add(n)?)?;
    Some((a, &rest[4 + n..]))
}

/// [`split_pair_bytes`] as strings.
pub fn split_pair(rest: &[u8]) -> Option<(String, String)> {
    let (a, b) = split_pair_bytes(rest)?;
    Some((
        String::from_utf8(a.to_vec()).ok()?,
        String::from_utf8(b.to_vec()).ok()?,
    ))
}

/// A source position key: `prefix`, the store-local number of the offset
/// namespace (see [`NAMESPACE_NAME`]), topic, 0, partition, offset. Positions of
/// two namespaces (two runs of the embedded broker, two clusters, a topic
/// recreated) never share a key. Topic names hold no 0 byte (Kafka allows only
/// `[a-zA-Z0-9._-]`), and the tail has a fixed width, so the key parses back.
pub fn position(
    prefix: &[u8],
    namespace: u32,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + topic.len() + 17);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&namespace.to_be_bytes());
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k.extend_from_slice(&(offset as u64).to_be_bytes());
    k
}

/// (namespace number, topic, partition, offset) back out of a position key
/// (after its prefix).
pub fn parse_position(rest: &[u8]) -> Option<(u32, String, i32, i64)> {
    if rest.len() < 17 {
        return None;
    }
    let namespace = u32::from_be_bytes(rest[..4].try_into().ok()?);
    let (topic, tail) = rest[4..].split_at(rest.len() - 17);
    if tail[0] != 0 {
        return None;
    }
    let partition = u32::from_be_bytes(tail[1..5].try_into().ok()?) as i32;
    let offset = u64::from_be_bytes(tail[5..13].try_into().ok()?) as i64;
    Some((
        namespace,
        String::from_utf8(topic.to_vec()).ok()?,
        partition,
        offset,
    ))
}

/// The position key of a store laid out before namespaces (`e/`, `d/`):
/// topic 0 partition offset, no namespace.
pub fn parse_legacy_position(rest: &[u8]) -> Option<(String, i32, i64)> {
    if rest.len() < 13 {
        return None;
    }
    let (topic, tail) = rest.split_at(rest.len() - 13);
    if tail[0] != 0 {
        return None;
    }
    let partition = u32::from_be_bytes(tail[1..5].try_into().ok()?) as i32;
    let offset = u64::from_be_bytes(tail[5..13].try_into().ok()?) as i64;
    Some((String::from_utf8(topic.to_vec()).ok()?, partition, offset))
}

/// The key of a namespace's number, by name.
pub fn namespace_key(name: &str) -> Vec<u8> {
    let mut k = NAMESPACE_NUMBER.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The key of a namespace's name, by number.
pub fn namespace_name_key(number: u32) -> Vec<u8> {
    let mut k = NAMESPACE_NAME.to_vec();
    k.extend_from_slice(&number.to_be_bytes());
    k
}

/// `o/` namespace 0 topic 0 partition: neither a namespace name (a cluster id,
/// `embedded:<ms>`) nor a topic holds a 0 byte.
pub fn offset_key(namespace: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(OFFSET.len() + namespace.len() + topic.len() + 6);
    k.extend_from_slice(OFFSET);
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}
