//! Key layout of the single sled tree. Everything one input batch changes lives
//! in one tree so that the batch is one atomic `apply_batch`.
//!
//! | prefix | key                                   | value                          |
//! |--------|---------------------------------------|--------------------------------|
//! | `e/`   | topic 0 partition(be32) first offset(be64) | a log segment: (offset, length, event JSON)* |
//! | `d/`   | topic 0 partition offset              | dead letter, JSON              |
//! | `o/`   | namespace 0 topic 0 partition         | next offset to read (be64)     |
//! | `j/`   | sequence(be64)                        | aggregate deltas of one batch  |
//! | `k/`   | `current`, `g/` generation chunk      | aggregate checkpoints          |
//! | `c/u/`, `c/m/`, `c/s/`, `c/t/` | id        | latest catalog record, JSON    |
//!
//! Aggregate keys (in the journal, checkpoints and memory): `a/` user 0 item
//! (pair aggregate), `q/v/`, `q/r/`, `q/s/` video / region / resolution (QoE
//! counters), `g/` genre (engagement), `m/` user 0 track (listening counts),
//! `s/` counter name, `n/` video 0 genre (events).

pub const EVENT: &[u8] = b"e/";
pub const DEAD: &[u8] = b"d/";
pub const OFFSET: &[u8] = b"o/";
pub const PAIR: &[u8] = b"a/";
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

pub fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    k.extend_from_slice(prefix);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

pub fn position(prefix: &[u8], topic: &str, partition: i32, offset: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + topic.len() + 13);
    k.extend_from_slice(prefix);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k.extend_from_slice(&(offset as u64).to_be_bytes());
    k
}

/// (topic, partition, offset) back out of a position key (after its prefix).
pub fn parse_position(rest: &[u8]) -> Option<(String, i32, i64)> {
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

pub fn offset_key(namespace: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = join(OFFSET, &[namespace.as_bytes(), topic.as_bytes()]);
    k.push(0);
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

pub fn offset_prefix(namespace: &str) -> Vec<u8> {
    let mut k = join(OFFSET, &[namespace.as_bytes()]);
    k.push(0);
    k
}

/// Splits `a 0 b` into (a, b).
pub fn split_pair(rest: &[u8]) -> Option<(String, String)> {
    let i = rest.iter().position(|&b| b == 0)?;
    Some((
        String::from_utf8(rest[..i].to_vec()).ok()?,
        String::from_utf8(rest[i + 1..].to_vec()).ok()?,
    ))
}
