//! Read side of the store: events, dead letters, aggregates, counters, catalog.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{keys, slots, MusicAgg, PairAgg, Qoe, Store, StoreError, StoreView};
use crate::domain::event::Event;
use crate::domain::record::SourcePos;
use crate::domain::reject::Rejection;

/// A dead-letter entry: why, where from, and the bytes as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(flatten)]
    pub rejection: Rejection,
    /// The offset namespace of the position (a cluster, or one run of the
    /// embedded broker), and its number in this store (part of the id).
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub namespace_id: u32,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// How to read `raw` again (format headers), for a replay.
    #[serde(flatten)]
    pub headers: crate::domain::record::FormatHeaders,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_hex: Option<String>,
}

/// A dead letter's id: where it came from, `namespace:topic/partition/offset`
/// (the namespace's number in this store: positions repeat across namespaces).
pub fn dead_letter_id(d: &DeadLetter) -> String {
    format!(
        "{}:{}/{}/{}",
        d.namespace_id, d.topic, d.partition, d.offset
    )
}

/// The store key of a dead letter id.
pub fn dead_letter_key(id: &str) -> Result<Vec<u8>, StoreError> {
    let bad = || StoreError::BadId {
        id: id.chars().take(200).collect(),
        rule: "a dead letter id is namespace:topic/partition/offset, as `dlq list` shows",
    };
    let (ns, rest) = id.split_once(':').ok_or_else(bad)?;
    let ns: u32 = ns.parse().map_err(|_| bad())?;
    let mut parts = rest.rsplitn(3, '/');
    let offset: i64 = parts.next().and_then(|o| o.parse().ok()).ok_or_else(bad)?;
    let partition: i32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let topic = parts.next().filter(|t| !t.is_empty()).ok_or_else(bad)?;
    Ok(keys::position(keys::DEAD, ns, topic, partition, offset))
}

/// A dead letter read from its entry: the key says where it came from.
fn decode_dead_letter(view: &StoreView, k: &[u8], v: &[u8]) -> Result<DeadLetter, StoreError> {
    let mut d: DeadLetter = serde_json::from_slice(v).map_err(|e| corrupt(k, e.to_string()))?;
    if let Some((ns, ..)) = keys::parse_position(&k[keys::DEAD.len()..]) {
        if d.namespace.is_empty() || d.namespace_id != ns {
            d.namespace = view.namespace_name(ns).unwrap_or_default();
        }
        d.namespace_id = ns;
    }
    Ok(d)
}

/// One stored event with where it came from.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// The offset namespace's number in this store (see `Store::namespaces`).
    pub namespace: u32,
    pub pos: SourcePos,
    pub event: Event,
}

fn corrupt(key: &[u8], message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: message.into(),
    }
}

/// When a write of marks reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Before the call returns.
    Now,
    /// With the store's next flushed write (its next batch): a crash before
    /// it loses the marks, not other data.
    WithNextBatch,
}

/// Which QoE breakdown to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QoeDim {
    Video,
    Region,
    Resolution,
    Genre,
}

impl QoeDim {
    fn prefix(self) -> &'static [u8] {
        match self {
            QoeDim::Video => keys::QOE_VIDEO,
            QoeDim::Region => keys::QOE_REGION,
            QoeDim::Resolution => keys::QOE_RESOLUTION,
            QoeDim::Genre => keys::GENRE,
        }
    }
}

pub(super) fn decode_segment(k: &[u8], v: &[u8]) -> Result<Vec<LoggedEvent>, StoreError> {
    let (namespace, topic, partition, _) = keys::parse_position(&k[keys::EVENT.len()..])
        .ok_or_else(|| corrupt(k, "bad segment key"))?;
    let topic: std::sync::Arc<str> = topic.into();
    let entries = super::segment::entries(v).map_err(|e| corrupt(k, e.to_string()))?;
    let mut out = Vec::with_capacity(entries.len());
    for (offset, body) in entries {
        let event = Event::decode(body).map_err(|e| corrupt(k, e.to_string()))?;
        out.push(LoggedEvent {
            namespace,
            pos: SourcePos {
                topic: topic.clone(),
                partition,
                offset,
            },
            event,
        });
    }
    Ok(out)
}

impl StoreView {
    /// The bytes of the segment whose entry is (`k`, `v`): read from the event
    /// log's files when `v` points there. `None`: the segment is gone (deleted
    /// by retention since its entry was read).
    pub(super) fn segment_bytes<'a>(
        &self,
        k: &[u8],
        v: &'a [u8],
    ) -> Result<Option<std::borrow::Cow<'a, [u8]>>, StoreError> {
        match self.log.resolve(v) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => match self.tree().get(k) {
                Ok(Some(now)) if now.as_ref() == v => Err(corrupt(k, e.to_string())),
                Ok(None) => Ok(None),
                // Deleted and written again (a replay of the same positions
                // after a reset): read what is there now.
                Ok(Some(now)) => self
                    .log
                    .resolve(&now)
                    .map(|b| Some(std::borrow::Cow::Owned(b.into_owned())))
                    .map_err(|e| corrupt(k, e.to_string())),
                Err(_) => Err(corrupt(k, e.to_string())),
            },
        }
    }

    /// The events of the segment whose entry is (`k`, `v`) (see
    /// [`StoreView::segment_bytes`]).
    pub(super) fn read_segment(
        &self,
        k: &[u8],
        v: &[u8],
    ) -> Result<Option<Vec<LoggedEvent>>, StoreError> {
        match self.segment_bytes(k, v)? {
            Some(bytes) => decode_segment(k, &bytes).map(Some),
            None => Ok(None),
        }
    }
}

/// A segment key as people read it: `namespace:topic/partition from offset`.
pub fn segment_name(k: &[u8]) -> String {
    let rest = k.get(keys::EVENT.len()..).unwrap_or_default();
    match keys::parse_position(rest) {
        Some((ns, t, p, o)) => format!("{ns}:{t}/{p} from offset {o}"),
        None => String::from_utf8_lossy(k).into_owned(),
    }
}

impl StoreView {
    /// A namespace's name by its number in this store.
    pub fn namespace_name(&self, number: u32) -> Option<String> {
        let v = self.tree().get(keys::namespace_name_key(number)).ok()??;
        String::from_utf8(v.to_vec()).ok()
    }

    /// Every stored event with its namespace and source position, by namespace,
    /// topic, partition and offset. A segment found damaged (its checksum or
    /// its entries do not hold), or a stretch of sled's files that cannot be
    /// read, is skipped, logged once and listed in [`StoreView::damage`].
    pub fn event_log(&self) -> impl Iterator<Item = Result<LoggedEvent, StoreError>> + '_ {
        super::scan::scan_prefix(self.tree(), keys::EVENT).flat_map(move |step| {
            let events = match step {
                Err(u) => {
                    self.note_unreadable(&u);
                    Vec::new()
                }
                Ok((k, v)) => match self.read_segment(&k, &v) {
                    Ok(events) => events.unwrap_or_default(),
                    Err(e) => {
                        self.note_damage(segment_name(&k), e.to_string());
                        Vec::new()
                    }
                },
            };
            events.into_iter().map(Ok)
        })
    }

    /// Every stored event with its source position (see [`StoreView::event_log`]).
    pub fn events(&self) -> impl Iterator<Item = Result<(SourcePos, Event), StoreError>> + '_ {
        self.event_log().map(|r| r.map(|e| (e.pos, e.event)))
    }

    pub(super) fn note_damage(&self, what: String, why: String) {
        let mut d = self.damaged.lock().unwrap_or_else(|p| p.into_inner());
        if let std::collections::btree_map::Entry::Vacant(e) = d.entry(what) {
            tracing::error!(
                "{} is damaged ({why}); reads skip it: run `playpulse check --data-dir DIR --repair` to set it aside",
                e.key()
            );
            e.insert(why);
        }
    }

    fn note_unreadable(&self, u: &super::scan::Unreadable) {
        let what = match &u.resumed_at {
            Some(k) => format!(
                "the entries after {} up to {}",
                entry_name(&u.after),
                entry_name(k)
            ),
            None => format!("every entry after {}", entry_name(&u.after)),
        };
        self.note_damage(what, u.error.clone());
    }

    /// Per (user, video) implicit-feedback aggregates: one pass over the
    /// per-user chunks with the deltas held in memory added (see
    /// [`super::pairs`]), never over the events. A damaged stretch of chunks
    /// is stepped over and noted.
    pub fn pair_aggregates(
        &self,
    ) -> impl Iterator<Item = Result<(String, String, PairAgg), StoreError>> + '_ {
        super::pairs::Scan::new(self.tree(), &self.pairs, move |u| self.note_unreadable(u))
            .map(|r| r.map(|(u, v, s)| (u, v, PairAgg::from_slots(&s))))
    }

    /// One user's video pairs (sorted by video), and the first batch sequence
    /// number they do not reflect (every batch below it is in them).
    pub fn user_video_pairs(
        &self,
        user: &str,
    ) -> Result<(Vec<(String, PairAgg)>, u64), StoreError> {
        let got = super::pairs::read_user(&self.tree(), &self.pairs, user)?;
        let pairs = got
            .pairs
            .into_iter()
            .map(|(v, s)| (v, PairAgg::from_slots(&s)))
            .collect();
        Ok((pairs, got.upto))
    }

    /// Video pairs held in memory, not yet in chunks: (active, being compacted),
    /// and what the compactor did.
    pub fn pair_overlay(&self) -> (usize, usize, super::pairs::CompactionStats) {
        let (active, frozen) = self.pairs.held();
        (active, frozen, self.pairs.lock().stats)
    }

    /// Records that `users` were folded in against `model` (at the given ms),
    /// durably: a restart folds them in again.
    pub fn mark_folded<'a>(
        &self,
        model: u64,
        users: impl Iterator<Item = (&'a str, i64)>,
        flush: Flush,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (u, at) in users {
            let mut v = model.to_be_bytes().to_vec();
            v.extend_from_slice(&at.to_be_bytes());
            batch.insert(keys::join(keys::FOLDED, &[u.as_bytes()]), v);
        }
        match flush {
            Flush::Now => self.commit(batch),
            Flush::WithNextBatch => self.apply_unflushed(batch),
        }
    }

    /// The users folded in against `model`; marks of other models are removed.
    pub fn folded_users(&self, model: u64) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut stale = sled::Batch::default();
        let mut any_stale = false;
        for item in self.tree().scan_prefix(keys::FOLDED) {
            let (k, v) = item?;
            let of = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            match (of, std::str::from_utf8(&k[keys::FOLDED.len()..])) {
                (Some(m), Ok(u)) if m == model => out.push(u.to_string()),
                _ => {
                    stale.remove(k);
                    any_stale = true;
                }
            }
        }
        if any_stale {
            self.commit(stale)?;
        }
        Ok(out)
    }

    /// Whether `user` was folded in against `model`.
    pub fn is_folded(&self, model: u64, user: &str) -> Result<bool, StoreError> {
        Ok(self
            .tree()
            .get(keys::join(keys::FOLDED, &[user.as_bytes()]))?
            .and_then(|v| {
                v.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
            })
            == Some(model))
    }

    /// The pairs derived from the stored events (one pass; memory for the
    /// pairs while they are read): how stores written before the pair rows
    /// get them.
    pub(super) fn pairs_from_events(
        &self,
    ) -> Result<rustc_hash::FxHashMap<(String, String), [f64; 5]>, StoreError> {
        let mut pairs: rustc_hash::FxHashMap<(String, String), [f64; 5]> = Default::default();
        for item in self.events() {
            if let (_, Event::Video(v)) = item? {
                let d = super::prepare::pair_delta(&v);
                pairs
                    .entry((v.user_id.into(), v.video_id.into()))
                    .and_modify(|agg| slots::combine(slots::PAIR, agg, &d))
                    .or_insert(d);
            }
        }
        Ok(pairs)
    }

    /// Up to `n` of the most recently stored video events (by log position).
    pub fn recent_video_events(
        &self,
        n: usize,
    ) -> Result<Vec<crate::domain::event::VideoEvent>, StoreError> {
        let mut out = Vec::new();
        if n == 0 {
            return Ok(out);
        }
        for item in self.tree().scan_prefix(keys::EVENT).rev() {
            let Ok((k, v)) = item else {
                // A stretch of the files cannot be read: the forward scan
                // steps over it (and notes it); keep its last `n`.
                let mut last = std::collections::VecDeque::with_capacity(n.min(1 << 20));
                for e in self.event_log().flatten() {
                    if let Event::Video(v) = e.event {
                        if last.len() == n {
                            last.pop_front();
                        }
                        last.push_back(v);
                    }
                }
                return Ok(last.into_iter().rev().collect());
            };
            let events = match self.read_segment(&k, &v) {
                Ok(events) => events.unwrap_or_default(),
                Err(e) => {
                    self.note_damage(segment_name(&k), e.to_string());
                    continue;
                }
            };
            for logged in events.into_iter().rev() {
                if let Event::Video(e) = logged.event {
                    out.push(e);
                    if out.len() >= n {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every dead letter; damaged ones are skipped and noted (see [`StoreView::damage`]).
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        for step in super::scan::scan_prefix(self.tree(), keys::DEAD) {
            match step {
                Ok((k, v)) => match decode_dead_letter(self, &k, &v) {
                    Ok(d) => out.push(d),
                    Err(e) => self.note_damage(entry_name(&k), e.to_string()),
                },
                Err(u) => self.note_unreadable(&u),
            }
        }
        Ok(out)
    }

    /// Up to `limit` dead letters after the one with id `after` (the first page
    /// when `None`), each with its id, in source order; only those whose reason is
    /// `reason` when given.
    pub fn dead_letter_page(
        &self,
        after: Option<&str>,
        limit: usize,
        reason: Option<&str>,
    ) -> Result<Vec<(String, DeadLetter)>, StoreError> {
        let start = match after {
            Some(id) => {
                let mut k = dead_letter_key(id)?;
                k.push(0);
                k
            }
            None => keys::DEAD.to_vec(),
        };
        let mut out = Vec::new();
        for item in self.tree().range(start..) {
            let (k, v) = item?;
            if !k.starts_with(keys::DEAD) || out.len() >= limit {
                break;
            }
            let d = decode_dead_letter(self, &k, &v)?;
            if reason.is_none_or(|r| d.rejection.reason == r) {
                out.push((dead_letter_id(&d), d));
            }
        }
        Ok(out)
    }

    /// One dead letter by id (`topic/partition/offset`).
    pub fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let k = dead_letter_key(id)?;
        match self.tree().get(&k)? {
            Some(v) => Ok(Some(decode_dead_letter(self, &k, &v)?)),
            None => Ok(None),
        }
    }

    /// What reads found damaged since the store opened: (what, why).
    pub fn damage(&self) -> Vec<(String, String)> {
        let d = self.damaged.lock().unwrap_or_else(|p| p.into_inner());
        d.iter().map(|(k, why)| (k.clone(), why.clone())).collect()
    }
}

/// A store key as people read it.
pub fn entry_name(k: &[u8]) -> String {
    if k.starts_with(keys::EVENT) {
        format!("event segment {}", segment_name(k))
    } else if k.starts_with(keys::DEAD) {
        match keys::parse_position(&k[keys::DEAD.len()..]) {
            Some((ns, t, p, o)) => format!("dead letter {ns}:{t}/{p}/{o}"),
            None => String::from_utf8_lossy(k).into_owned(),
        }
    } else if let Some((user, tag)) = super::pairs::parse_chunk_key(k) {
        format!("pair chunk {tag} of user {user:?}")
    } else if k.starts_with(super::state::JOURNAL) {
        format!("journal part {}", super::state::journal_seq(k))
    } else if let Some(seq) = k
        .starts_with(super::pairs::RUN)
        .then(|| super::pairs::run_seq(k))
        .flatten()
    {
        format!("pair run {seq}")
    } else {
        String::from_utf8_lossy(&k[..k.len().min(120)]).into_owned()
    }
}

impl Store {
    /// The sequence number the next batch gets: every batch below it is stored.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Per (user, track) listening counters.
    pub fn music_aggregates(&self) -> Result<Vec<(String, String, MusicAgg)>, StoreError> {
        self.state
            .big
            .iter()
            .filter(|(k, _)| k.starts_with(keys::MUSIC_PAIR))
            .map(|(k, v)| {
                let (u, t) = keys::split_pair(&k[keys::MUSIC_PAIR.len()..])
                    .ok_or_else(|| corrupt(k, "bad key"))?;
                Ok((u, t, MusicAgg::from_slots(v)))
            })
            .collect()
    }

    fn small_prefix<'a>(&'a self, p: &'a [u8]) -> impl Iterator<Item = (String, &'a [f64])> + 'a {
        self.state
            .small_prefix(p)
            .map(move |(k, v)| (String::from_utf8_lossy(k).into_owned(), v))
    }

    pub fn qoe(&self, dim: QoeDim) -> Result<BTreeMap<String, Qoe>, StoreError> {
        Ok(self
            .small_prefix(dim.prefix())
            .map(|(k, v)| (k, Qoe::from_slots(v)))
            .collect())
    }

    /// Every counter (`stored`, `rejected`, `stored/<type>`, `rejected/<reason[:field]>`, ...).
    pub fn counters(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        Ok(self
            .small_prefix(keys::COUNTER)
            .map(|(k, v)| (k, v[0] as u64))
            .collect())
    }

    /// Each video's genre (the most frequent among its events).
    pub fn item_genres(&self) -> std::collections::HashMap<String, String> {
        let mut best: std::collections::HashMap<String, (String, f64)> =
            std::collections::HashMap::new();
        for (k, v) in self.state.small_prefix(keys::ITEM_GENRE) {
            if let Some((video, genre)) = keys::split_pair(k) {
                let e = best
                    .entry(video.to_string())
                    .or_insert_with(|| (genre.to_string(), 0.0));
                if v[0] > e.1 {
                    *e = (genre.to_string(), v[0]);
                }
            }
        }
        best.into_iter().map(|(k, (g, _))| (k, g)).collect()
    }

    /// Events per video in each region: region → (video, events).
    pub fn item_regions(&self) -> std::collections::HashMap<String, Vec<(String, u64)>> {
        let mut out: std::collections::HashMap<String, Vec<(String, u64)>> =
            std::collections::HashMap::new();
        for (k, v) in self.state.small_prefix(keys::ITEM_REGION) {
            if let Some((video, region)) = keys::split_pair(k) {
                out.entry(region.to_string())
                    .or_default()
                    .push((video.to_string(), v[0] as u64));
            }
        }
        out
    }

    /// Each catalog track's genre.
    pub fn track_genres(&self) -> std::collections::HashMap<String, String> {
        self.tree()
            .scan_prefix(keys::CAT_TRACK)
            .filter_map(|item| item.ok())
            .filter_map(|(_, v)| match Event::decode(&v) {
                Ok(Event::Track(t)) => Some((t.track_id, t.genre)),
                _ => None,
            })
            .collect()
    }

    pub fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let k = keys::join(keys::COUNTER, &[name.as_bytes()]);
        Ok(self.state.get(&k).map(|s| s[0] as u64).unwrap_or(0))
    }
}

impl StoreView {
    /// Bytes of the live keys and values, by key prefix (the text before the
    /// first `/`, e.g. `E` event segments, `U` pair chunks, `P` pair runs):
    /// what the store holds, to set beside the size of its files. One pass.
    pub fn bytes_by_prefix(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let mut out = std::collections::BTreeMap::new();
        for item in self.tree().iter() {
            let (k, v) = item?;
            let end = k.iter().position(|&b| b == b'/').unwrap_or(k.len()).min(8);
            let name = String::from_utf8_lossy(&k[..end]).into_owned();
            *out.entry(name).or_insert(0u64) += (k.len() + v.len()) as u64;
        }
        Ok(out)
    }

    /// The latest catalog record of a kind (`user`, `movie`, `series`, `track`) and id.
    pub fn catalog(&self, record_type: &str, id: &str) -> Result<Option<Event>, StoreError> {
        let prefix = keys::catalog_prefix(record_type);
        let k = keys::join(prefix, &[id.as_bytes()]);
        match self.tree().get(&k)? {
            Some(v) => Event::decode(&v)
                .map(Some)
                .map_err(|e| corrupt(&k, e.to_string())),
            None => Ok(None),
        }
    }

    /// Number of catalog records of a kind.
    pub fn catalog_len(&self, record_type: &str) -> usize {
        let prefix = keys::catalog_prefix(record_type);
        self.tree().scan_prefix(prefix).count()
    }

    /// Every stored movie and series (latest record of each), with its kind.
    pub fn titles(&self) -> Result<Vec<(&'static str, crate::domain::event::Title)>, StoreError> {
        let mut out = Vec::new();
        for prefix in [keys::CAT_MOVIE, keys::CAT_SERIES] {
            for item in self.tree().scan_prefix(prefix) {
                let (k, v) = item?;
                match Event::decode(&v) {
                    Ok(Event::Movie(t)) => out.push(("movie", t)),
                    Ok(Event::Series(t)) => out.push(("series", t)),
                    _ => return Err(corrupt(&k, "not a movie or series record")),
                }
            }
        }
        Ok(out)
    }

    /// Every catalog track.
    pub fn tracks(&self) -> Result<Vec<crate::domain::event::Track>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree().scan_prefix(keys::CAT_TRACK) {
            let (k, v) = item?;
            match Event::decode(&v) {
                Ok(Event::Track(t)) => out.push(t),
                _ => return Err(corrupt(&k, "not a track")),
            }
        }
        Ok(out)
    }

    /// A user's catalog profile.
    pub fn user_profile(
        &self,
        id: &str,
    ) -> Result<Option<crate::domain::event::UserProfile>, StoreError> {
        match self.catalog("user", id)? {
            Some(Event::User(u)) => Ok(Some(u)),
            Some(_) => Err(corrupt(
                &keys::join(keys::CAT_USER, &[id.as_bytes()]),
                "not a user profile",
            )),
            None => Ok(None),
        }
    }

    /// Every user profile of the catalog, by id.
    pub fn user_profiles(
        &self,
    ) -> Result<std::collections::HashMap<String, crate::domain::event::UserProfile>, StoreError>
    {
        let mut out = std::collections::HashMap::new();
        for item in self.tree().scan_prefix(keys::CAT_USER) {
            let (k, v) = item?;
            match Event::decode(&v) {
                Ok(Event::User(u)) => {
                    out.insert(u.id.clone(), u);
                }
                _ => return Err(corrupt(&k, "not a user profile")),
            }
        }
        Ok(out)
    }

    /// On-disk size of the store, bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.tree().db().size_on_disk().unwrap_or(0)
    }
}

impl StoreView {
    /// This store's member id in the consumer group (made and kept on first use).
    pub fn member_id(&self) -> Result<String, StoreError> {
        if let Some(v) = self.tree().get(keys::MEMBER)? {
            if let Ok(s) = std::str::from_utf8(&v) {
                if !s.is_empty() {
                    return Ok(s.to_string());
                }
            }
        }
        let id = format!("{:016x}", rand::random::<u64>());
        let _write = self.write_gate();
        self.tree().insert(keys::MEMBER, id.as_bytes())?;
        self.tree().flush()?;
        Ok(id)
    }

    /// The stored next offset of a partition, as on disk now (readable from
    /// any thread, e.g. the consumer's rebalance callback).
    pub fn stored_offset(&self, namespace: &str, topic: &str, partition: i32) -> Option<i64> {
        let v = self
            .tree()
            .get(keys::offset_key(namespace, topic, partition))
            .ok()??;
        Some(i64::from_be_bytes(v.as_ref().try_into().ok()?))
    }
}
