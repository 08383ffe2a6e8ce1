//! What the shared topics hold. Keys and values are postcard, each value led
//! by a format byte; a record that does not decode, or names an id past the
//! store's bounds, is counted and skipped (the topics are an input like any).

use serde::{Deserialize, Serialize};

use crate::store::rollup::{group, Cube, Grain, Sums};
use crate::store::{MusicAgg, PairAgg};

/// The format byte every value starts with.
pub const FORMAT: u8 = 1;
/// The longest member id, user id or item id a record may name.
pub const MAX_ID_BYTES: usize = 1024;
/// The most chunks a model may have (at the smallest chunk, 4 KiB, 1 GiB).
pub const MAX_CHUNKS: u32 = 262_144;
/// The longest version metadata a model head may carry.
pub const MAX_META_BYTES: usize = 1 << 20;

/// The key of a record of the pairs topic: one pair of one member's store,
/// or the member's `through` mark.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PairKey {
    Video {
        origin: String,
        user: String,
        item: String,
    },
    Music {
        origin: String,
        user: String,
        item: String,
    },
    /// Every batch below the value's sequence number is in this member's
    /// records published before this one.
    Through { origin: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PairValue {
    Video(PairAgg),
    Music(MusicAgg),
    Through(u64),
}

impl PairKey {
    pub fn origin(&self) -> &str {
        match self {
            PairKey::Video { origin, .. }
            | PairKey::Music { origin, .. }
            | PairKey::Through { origin } => origin,
        }
    }

    fn ids_fit(&self) -> bool {
        match self {
            PairKey::Video { origin, user, item } | PairKey::Music { origin, user, item } => {
                fits(origin) && fits(user) && fits(item)
            }
            PairKey::Through { origin } => fits(origin),
        }
    }
}

/// The newest model: its id, how many chunks hold its bundle, the bundle's
/// size, its version metadata (the registry's JSON), who published it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHead {
    pub id: u64,
    pub chunks: u32,
    pub bytes: u64,
    pub meta: Vec<u8>,
    pub by: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelChunk {
    pub id: u64,
    pub index: u32,
    pub data: Vec<u8>,
}

/// The models topic's records: a head, or one chunk of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelRecord {
    Head(ModelHead),
    Chunk(ModelChunk),
}

impl ModelRecord {
    pub fn key(&self) -> Vec<u8> {
        match self {
            ModelRecord::Head(_) => b"head".to_vec(),
            ModelRecord::Chunk(c) => format!("chunk/{}", c.index).into_bytes(),
        }
    }
}

/// The most factors a folded user may have, and the most items they may have seen.
pub const MAX_FACTORS: usize = 4096;
pub const MAX_USER_ITEMS: usize = 20_000;

/// A user one member folded in (the `users` topic's value; the key is the user id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub origin: String,
    pub user: crate::ml::live::PeerUser,
}

/// How far past this member's clock a rollup bucket may start.
pub const MAX_ROLLUP_AHEAD_MS: i64 = 24 * 3_600_000;

/// The most rows one record of the rollups topic may carry.
pub const MAX_ROLLUP_ROWS: usize = 4096;

/// The key of a record of the rollups topic: one lead value (genre of
/// dims and anchors, title, track) of one bucket of one member's rollups.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RollupKey {
    pub origin: String,
    pub grain: Grain,
    pub cube: Cube,
    pub bucket: i64,
    pub lead: String,
}

/// Every row of that lead in that bucket (absolute: it replaces what was
/// held of it): the tuple's other values, and their sums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollupValue {
    pub rows: Vec<([String; 3], Sums)>,
}

/// The most entries a shared title's lists (genres, directors, actors) hold.
pub const MAX_TITLE_LIST: usize = 256;
/// The longest text a shared title carries (its name, a genre, a person).
pub const MAX_TITLE_TEXT: usize = 4096;

/// A movie or series a member stored (the `titles` topic's value; the key
/// is [`title_key`]): every member names it and ranks it by content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TitleRecord {
    pub origin: String,
    pub series: bool,
    pub title: crate::domain::event::Title,
}

fn title_kind(series: bool) -> &'static str {
    use crate::views::affinity::{MOVIE, SERIES};
    if series {
        SERIES
    } else {
        MOVIE
    }
}

impl TitleRecord {
    /// The title's kind, as the titles index holds it.
    pub fn kind(&self) -> &'static str {
        title_kind(self.series)
    }
}

/// The key of a title's record: `movie/<id>` or `series/<id>`.
pub fn title_key(series: bool, id: &str) -> Vec<u8> {
    format!("{}/{id}", title_kind(series)).into_bytes()
}

/// What a member says of itself, every `cluster.heartbeat_interval_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub member: String,
    pub trainer: bool,
    /// The champion it serves.
    pub serving: Option<u64>,
    /// Events its store holds.
    pub stored: u64,
    /// Its dashboard and API, when it serves HTTP.
    pub http: Option<String>,
    pub at_ms: i64,
    /// It is leaving the group (a clean shutdown).
    pub leaving: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("a folded user with {factors} factors and {items} items (at most {MAX_FACTORS} and {MAX_USER_ITEMS}), or a value that is not finite")]
    User { factors: usize, items: usize },
    #[error("title {id:?}: a list of more than {MAX_TITLE_LIST} entries or a text of more than {MAX_TITLE_TEXT} bytes")]
    Title { id: String },
    #[error("unreadable record ({0})")]
    Decode(String),
    #[error("format {0}, this build reads format {FORMAT}")]
    Format(u8),
    #[error("an id is empty or over {MAX_ID_BYTES} bytes")]
    Id,
    #[error("a model of {0} chunks (at most {MAX_CHUNKS})")]
    Chunks(u32),
    #[error("version metadata of {0} bytes (at most {MAX_META_BYTES})")]
    Meta(usize),
    #[error("a rollup bucket {bucket} of {cube:?} by {grain:?} with {rows} rows (at most {MAX_ROLLUP_ROWS}; the bucket must start a {grain:?}, at most a day past this member's clock, and the cube be kept by it)")]
    Rollup {
        grain: Grain,
        cube: Cube,
        bucket: i64,
        rows: usize,
    },
}

/// An id a record may name: not empty, at most [`MAX_ID_BYTES`].
fn fits(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_BYTES
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    // Encoding these plain types into a Vec cannot fail.
    out.extend(postcard::to_stdvec(v).unwrap_or_default());
    out
}

fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, WireError> {
    match b.split_first() {
        Some((&FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|e| WireError::Decode(e.to_string()))
        }
        Some((&f, _)) => Err(WireError::Format(f)),
        None => Err(WireError::Decode("empty".into())),
    }
}

pub fn pair_key(b: &[u8]) -> Result<PairKey, WireError> {
    let k: PairKey = decode(b)?;
    if !k.ids_fit() {
        return Err(WireError::Id);
    }
    Ok(k)
}

pub fn pair_value(b: &[u8]) -> Result<PairValue, WireError> {
    decode(b)
}

pub fn model_record(b: &[u8]) -> Result<ModelRecord, WireError> {
    let r: ModelRecord = decode(b)?;
    if let ModelRecord::Head(h) = &r {
        if h.chunks > MAX_CHUNKS {
            return Err(WireError::Chunks(h.chunks));
        }
        if h.meta.len() > MAX_META_BYTES {
            return Err(WireError::Meta(h.meta.len()));
        }
        if !fits(&h.by) {
            return Err(WireError::Id);
        }
    }
    Ok(r)
}

/// A `users` record: (user, record).
pub fn user_record(key: &[u8], b: &[u8]) -> Result<(String, UserRecord), WireError> {
    let user = std::str::from_utf8(key)
        .ok()
        .filter(|u| fits(u))
        .ok_or(WireError::Id)?;
    let r: UserRecord = decode(b)?;
    let u = &r.user;
    if !fits(&r.origin) || u.items.iter().any(|(i, _)| !fits(i)) {
        return Err(WireError::Id);
    }
    let finite =
        u.factors.iter().all(|x| x.is_finite()) && u.items.iter().all(|(_, w)| w.is_finite());
    if u.factors.len() > MAX_FACTORS || u.items.len() > MAX_USER_ITEMS || !finite {
        return Err(WireError::User {
            factors: u.factors.len(),
            items: u.items.len(),
        });
    }
    Ok((user.to_string(), r))
}

/// A `rollups` record: its key, and its rows (`None`: a tombstone).
pub fn rollup_record(
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(RollupKey, Option<RollupValue>), WireError> {
    let k: RollupKey = decode(key)?;
    let short = |s: &str| s.len() <= MAX_ID_BYTES;
    if !fits(&k.origin) || !short(&k.lead) {
        return Err(WireError::Id);
    }
    let bad = |rows: usize| WireError::Rollup {
        grain: k.grain,
        cube: k.cube,
        bucket: k.bucket,
        rows,
    };
    // Members roll up no event dated past their write time's skew: a bucket
    // a day ahead of this member's clock is not one of theirs.
    let ahead = crate::domain::timefmt::now_ms().saturating_add(MAX_ROLLUP_AHEAD_MS);
    if k.grain.bucket(k.bucket) != k.bucket || !group::kept_by(k.cube, k.grain) || k.bucket > ahead
    {
        return Err(bad(0));
    }
    let Some(value) = value else {
        return Ok((k, None));
    };
    let v: RollupValue = decode(value)?;
    if v.rows.len() > MAX_ROLLUP_ROWS {
        return Err(bad(v.rows.len()));
    }
    if v.rows
        .iter()
        .any(|(rest, _)| !rest.iter().all(|s| short(s)))
    {
        return Err(WireError::Id);
    }
    Ok((k, Some(v)))
}

/// A `titles` record, checked against its key.
pub fn title_record(key: &[u8], b: &[u8]) -> Result<TitleRecord, WireError> {
    let r: TitleRecord = decode(b)?;
    let t = &r.title;
    if !fits(&r.origin) || !fits(&t.id) || key != title_key(r.series, &t.id).as_slice() {
        return Err(WireError::Id);
    }
    let lists = [&t.genres, &t.directors, &t.actors];
    let texts = [&t.title, &t.classification, &t.release_decade]
        .into_iter()
        .chain(lists.iter().flat_map(|l| l.iter()));
    if lists.iter().any(|l| l.len() > MAX_TITLE_LIST)
        || texts.into_iter().any(|x| x.len() > MAX_TITLE_TEXT)
    {
        return Err(WireError::Title { id: t.id.clone() });
    }
    Ok(r)
}

pub fn heartbeat(b: &[u8]) -> Result<Heartbeat, WireError> {
    let h: Heartbeat = decode(b)?;
    if !fits(&h.member) || h.http.as_deref().is_some_and(|s| s.len() > MAX_ID_BYTES) {
        return Err(WireError::Id);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_hostile_ones_are_refused() {
        let k = PairKey::Video {
            origin: "m1".into(),
            user: "u".into(),
            item: "v".into(),
        };
        assert_eq!(pair_key(&encode(&k)), Ok(k));
        let v = PairValue::Through(7);
        assert_eq!(pair_value(&encode(&v)), Ok(v));
        assert!(matches!(pair_key(b""), Err(WireError::Decode(_))));
        assert!(matches!(pair_key(&[9, 1, 2]), Err(WireError::Format(9))));
        assert!(matches!(
            pair_key(&[FORMAT, 0xff, 0xff]),
            Err(WireError::Decode(_))
        ));
        let long = PairKey::Through {
            origin: "x".repeat(MAX_ID_BYTES + 1),
        };
        assert_eq!(pair_key(&encode(&long)), Err(WireError::Id));
        let head = ModelRecord::Head(ModelHead {
            id: 3,
            chunks: MAX_CHUNKS + 1,
            bytes: 0,
            meta: vec![],
            by: "m".into(),
            at_ms: 0,
        });
        assert_eq!(
            model_record(&encode(&head)),
            Err(WireError::Chunks(MAX_CHUNKS + 1))
        );
        let mut user = UserRecord {
            origin: "m".into(),
            user: crate::ml::live::PeerUser {
                model: 1,
                at_ms: 5,
                factors: vec![0.5, -1.0],
                items: vec![("v1".into(), 2.0)],
            },
        };
        assert_eq!(
            user_record(b"u1", &encode(&user)),
            Ok(("u1".into(), user.clone()))
        );
        assert_eq!(user_record(b"", &encode(&user)), Err(WireError::Id));
        let rk = RollupKey {
            origin: "m".into(),
            grain: Grain::Minute,
            cube: Cube::Dims,
            bucket: 120_000,
            lead: "Drama".into(),
        };
        let rv = RollupValue {
            rows: vec![(["EU".into(), "720p".into(), String::new()], Sums::default())],
        };
        assert_eq!(
            rollup_record(&encode(&rk), Some(&encode(&rv))),
            Ok((rk.clone(), Some(rv.clone())))
        );
        assert_eq!(rollup_record(&encode(&rk), None), Ok((rk.clone(), None)));
        // A bucket that does not start a minute, titles by the minute, too many rows.
        let off = RollupKey {
            bucket: 120_001,
            ..rk.clone()
        };
        assert!(matches!(
            rollup_record(&encode(&off), None),
            Err(WireError::Rollup { .. })
        ));
        let titles = RollupKey {
            cube: Cube::Titles,
            ..rk.clone()
        };
        let future = RollupKey {
            bucket: Grain::Minute
                .bucket(crate::domain::timefmt::now_ms() + MAX_ROLLUP_AHEAD_MS + 120_000),
            ..rk.clone()
        };
        assert!(matches!(
            rollup_record(&encode(&future), None),
            Err(WireError::Rollup { .. })
        ));
        assert!(matches!(
            rollup_record(&encode(&titles), None),
            Err(WireError::Rollup { .. })
        ));
        let many = RollupValue {
            rows: vec![rv.rows[0].clone(); MAX_ROLLUP_ROWS + 1],
        };
        assert!(matches!(
            rollup_record(&encode(&rk), Some(&encode(&many))),
            Err(WireError::Rollup { rows, .. }) if rows == MAX_ROLLUP_ROWS + 1
        ));
        let long = RollupValue {
            rows: vec![(
                ["x".repeat(MAX_ID_BYTES + 1), String::new(), String::new()],
                Sums::default(),
            )],
        };
        assert_eq!(
            rollup_record(&encode(&rk), Some(&encode(&long))),
            Err(WireError::Id)
        );
        let title = TitleRecord {
            origin: "m".into(),
            series: false,
            title: crate::domain::event::Title {
                id: "vid_1".into(),
                timestamp_ms: 5,
                title: "A Title".into(),
                genres: vec!["Drama".into()],
                directors: vec![],
                actors: vec![],
                classification: "PG".into(),
                release_decade: "1990s".into(),
                seasons: None,
                episodes: None,
            },
        };
        assert_eq!(
            title_record(b"movie/vid_1", &encode(&title)),
            Ok(title.clone())
        );
        // A key naming another title, a list past its bound.
        assert_eq!(
            title_record(b"series/vid_1", &encode(&title)),
            Err(WireError::Id)
        );
        let mut long = title.clone();
        long.title.actors = vec!["a".into(); MAX_TITLE_LIST + 1];
        assert!(matches!(
            title_record(b"movie/vid_1", &encode(&long)),
            Err(WireError::Title { .. })
        ));
        user.user.factors[0] = f32::NAN;
        assert!(matches!(
            user_record(b"u1", &encode(&user)),
            Err(WireError::User { .. })
        ));
    }
}
