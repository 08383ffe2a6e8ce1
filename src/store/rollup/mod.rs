//! Durable rollups: per-minute and per-hour sums of the viewing and listening
//! events by their dimensions, kept for days, queried by time range and any
//! combination of filters (`ctl analytics --last 24h --region EU`,
//! `/api/analytics?from=…&genre=…`).
//!
//! - **Held in memory, replayed at open.** A durable batch's rollup deltas
//!   are added up in memory ([`Generation`]); nothing of them is written with
//!   the batch, so rollups cost ingest no bytes. Readers see them at once. The
//!   compactor writes them into chunks with the next offset of each partition
//!   they cover ([`COVERED`]) in one atomic write; opening replays the event
//!   log past those offsets, so a crash loses no event and counts none twice.
//!   Retention keeps the segments not yet covered.
//! - **Compacted off the write path.** The compactor thread ([`compact`]) takes
//!   the held generation every few seconds (`analytics.rollup_compact_seconds`),
//!   adds it up per (grain, cube, bucket) and writes each bucket's rows as one
//!   chunk (`M/` grain cube bucket tag part). A bucket whose chunks reach
//!   [`MERGE_AT`] gets them merged into one in that write. Hours are written
//!   as minutes are (a long range reads hours, never sixty times as many
//!   minutes).
//! - **Downsampled and retained** relative to the newest event minute rolled
//!   up (replayed history is kept like live data): minute chunks older than
//!   `minute_retention` are deleted (their hours stay), hour chunks older than
//!   `hour_retention` too. A late event updates its own minute while that
//!   minute is retained, else only its hour; older than the hours kept, it is
//!   counted as dropped (`late_dropped`).
//! - **Cubes.** `dims` (genre, region, resolution) answers every question
//!   without a title, by minute and by hour, with the views in progress;
//!   `titles` (title, genre, region, resolution) those with one, by the hour
//!   only (a minute of titles holds about a row per view: as many rows as
//!   the event log, for little); `music` (track, device) the listening
//!   events. Rows past `max_rows` in a bucket of
//!   titles or music add up under the title (or track) `(other)`.
//! - **Concurrent viewers.** A view counts once in the minute it starts
//!   (`views`) and once in the minute it ends (`ended`: its start plus its
//!   startup, play and rebuffering time, at most `max_view` later); the views
//!   in progress during a bucket are those started by its end and not ended
//!   before it starts.

pub mod chunk;
pub mod compact;
pub mod group;
pub mod query;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::event::{Event, MusicAction};

/// Runs, as earlier versions wrote them with each batch: `R/` seq (be64)
/// part (be32) → [`RunValue`] (postcard). Opening holds them and the next
/// compaction deletes them.
pub const RUN: &[u8] = b"R/";
/// Chunks: `M/` grain cube bucket (be64, sign flipped) tag (be64) part (be32) →
/// rows (postcard).
pub const CHUNK: &[u8] = b"M/";
/// The tag of the last compaction (be64): every run below it is in chunks.
pub const THROUGH: &[u8] = b"i/rollup-through";
/// The next offset of each partition whose events are in chunks (postcard
/// `Vec<(namespace, topic, partition, next)>`): opening replays the events past it.
pub const COVERED: &[u8] = b"i/rollup-covered";
/// (namespace, topic, partition) → the next offset whose events are in chunks
/// (what [`COVERED`] holds).
pub type Covered = std::collections::BTreeMap<(String, String, i32), i64>;

/// The newest event minute rolled up (be64, ms): retention counts from it.
pub const NEWEST: &[u8] = b"i/rollup-newest";
/// Events older than the hours kept when they arrived (be64).
pub const LATE: &[u8] = b"i/rollup-late";

/// A bucket's chunks that are merged into one.
pub const MERGE_AT: usize = 8;
/// The title (or track) that rows past `max_rows` in a bucket add up under.
pub const OTHER: &str = "(other)";

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;

/// How fine a bucket is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    Minute,
    Hour,
}

impl Grain {
    pub const ALL: [Grain; 2] = [Grain::Minute, Grain::Hour];

    pub fn ms(self) -> i64 {
        match self {
            Grain::Minute => MINUTE_MS,
            Grain::Hour => HOUR_MS,
        }
    }

    /// The start of the bucket `ts_ms` falls in.
    pub fn bucket(self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.ms()) * self.ms()
    }

    fn byte(self) -> u8 {
        match self {
            Grain::Minute => b'm',
            Grain::Hour => b'h',
        }
    }
}

/// Which dimensions a row is kept by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cube {
    /// Views by (genre, region, resolution).
    Dims,
    /// Views by (title, genre, region, resolution).
    Titles,
    /// Listening events by (track, device).
    Music,
    /// Views in progress at the start of each hour, by (genre, region,
    /// resolution), in the ENDED slot: the count a series of views in
    /// progress starts from (hours only).
    Anchors,
}

impl Cube {
    pub const ALL: [Cube; 4] = [Cube::Dims, Cube::Titles, Cube::Music, Cube::Anchors];

    /// Whether the cube is kept by the minute as well as by the hour.
    pub fn has_minutes(self) -> bool {
        matches!(self, Cube::Dims | Cube::Music)
    }

    fn byte(self) -> u8 {
        match self {
            Cube::Dims => b'd',
            Cube::Titles => b't',
            Cube::Music => b'l',
            Cube::Anchors => b'a',
        }
    }
}

/// The slots of a row's [`Sums`].
pub mod slot {
    // Views (cubes dims and titles).
    pub const VIEWS: usize = 0;
    pub const PLAY_MS: usize = 1;
    pub const REBUFFER_MS: usize = 2;
    pub const REBUFFERS: usize = 3;
    pub const STARTUP_MS: usize = 4;
    pub const STARTS: usize = 5;
    pub const START_FAILURES: usize = 6;
    pub const EXITS_BEFORE_START: usize = 7;
    /// Σ bitrate × play time, kbps·s.
    pub const BITRATE_PLAY_S: usize = 8;
    pub const SKIPPED: usize = 9;
    pub const PAUSED: usize = 10;
    pub const RECOMMENDED: usize = 11;
    /// Views that ended in this bucket (concurrency).
    pub const ENDED: usize = 12;
    // Listening events (cube music).
    pub const EVENTS: usize = 0;
    pub const PLAY: usize = 1;
    pub const SKIP: usize = 2;
    pub const LIKE: usize = 3;
    pub const PAUSE: usize = 4;
    pub const SEEK: usize = 5;
}

pub const SLOTS: usize = 13;

/// A row's sums (integers: they add up exactly in any order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums(pub [u64; SLOTS]);

impl Sums {
    pub fn add(&mut self, o: &Sums) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a = a.saturating_add(b);
        }
    }

    pub fn get(&self, slot: usize) -> u64 {
        self.0[slot]
    }

    /// The sums postcard wrote at the start of `bytes` (13 varints), and the
    /// bytes after them; `None` where postcard would refuse them. A breakdown
    /// by title reads one per title and bucket: this is several times faster
    /// than serde's path.
    pub fn read(bytes: &[u8]) -> Option<(Sums, &[u8])> {
        let mut s = Sums::default();
        let mut at = 0;
        for slot in s.0.iter_mut() {
            let mut v = 0u64;
            let mut shift = 0u32;
            loop {
                let b = *bytes.get(at)?;
                at += 1;
                // The tenth byte of a u64 holds its top bit alone.
                if shift == 63 && b > 1 {
                    return None;
                }
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 63 {
                    return None;
                }
            }
            *slot = v;
        }
        Some((s, bytes.get(at..)?))
    }

    /// Appends these sums as postcard writes them (13 varints): what
    /// [`Sums::read`] reads. A compaction writes a row per view on a
    /// backfill; this is several times faster than serde's path.
    pub fn write(&self, out: &mut Vec<u8>) {
        for v in self.0 {
            put_varint(out, v);
        }
    }

    /// Views started (video cubes) or events (music): what "most" ranks by.
    pub fn weight(&self) -> u64 {
        self.0[slot::VIEWS]
    }
}

/// Appends `v` as postcard writes a u64 or a length (LEB128: seven bits a
/// byte, low first, the top bit set on all but the last).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `s` as postcard writes a string (its length, then its bytes).
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A row's dimension values: dims (genre, region, resolution, ""), titles
/// (title, genre, region, resolution), music (track, device, "", "").
pub type Tuple<S> = [S; 4];

/// How the rollups are kept (from `[analytics]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    pub minute_retention_ms: i64,
    pub hour_retention_ms: i64,
    /// A view counts as in progress for at most this long.
    pub max_view_ms: i64,
    /// Events dated past the write time by more than this are not rolled up.
    pub future_skew_ms: i64,
    /// Most rows of titles (or tracks) a bucket keeps.
    pub max_rows: usize,
    /// Held bytes that start a compaction (it also runs every `compact_every_ms`).
    pub compact_bytes: usize,
    pub compact_every_ms: u64,
}

impl Tuning {
    /// The first bucket each grain keeps when the newest minute is `now`:
    /// minutes past `minute_retention`, hours past `hour_retention` go.
    pub fn cuts(&self, now: i64) -> [(Grain, i64); 2] {
        [
            (Grain::Minute, now.saturating_sub(self.minute_retention_ms)),
            (
                Grain::Hour,
                Grain::Hour.bucket(now.saturating_sub(self.hour_retention_ms)),
            ),
        ]
    }
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            minute_retention_ms: 48 * HOUR_MS,
            hour_retention_ms: 90 * 24 * HOUR_MS,
            max_view_ms: 240 * MINUTE_MS,
            future_skew_ms: 300_000,
            max_rows: 200_000,
            compact_bytes: 32 << 20,
            compact_every_ms: 5000,
        }
    }
}

/// One entry of a run: a minute's sums of one tuple of one cube.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry<S> {
    pub cube: Cube,
    pub minute: i64,
    pub tuple: Tuple<S>,
    pub sums: Sums,
}

/// A run part as stored: its entries, then the offsets its batch writes
/// (namespace, topic, partition, next). The entries are encoded off the
/// store's thread ([`Deltas::encode_entries`]); the store appends the offsets
/// ([`finish_run`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunValue<S> {
    pub entries: Vec<Entry<S>>,
    pub offsets: Vec<(S, S, i32, i64)>,
}

/// A batch's rollup deltas as they are summed (see [`BatchDeltas`], which
/// they become without a copy), with the batch's numbering of the strings.
#[derive(Debug, Default)]
pub struct Deltas<'a> {
    batch: BatchDeltas,
    names: Vec<&'a str>,
    numbers: FxHashMap<&'a str, u16>,
    id_numbers: FxHashMap<&'a str, u32>,
    /// Each id by its number (the tests' [`Deltas::entries`] name them).
    #[cfg(test)]
    id_names: Vec<&'a str>,
}

/// No id (the dims cube).
const NO_ID: u32 = u32::MAX;

/// A listed row's place: cube, minute (or hour), its id's number in the
/// batch, the small vocabularies' numbers.
#[derive(Debug, Clone, Copy)]
struct Listed {
    cube: Cube,
    minute: i64,
    number: u32,
    small: [u16; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    cube: Cube,
    minute: i64,
    small: [u16; 3],
}

fn ms(x: f64) -> u64 {
    // `as` saturates (and maps NaN to 0); validation bounds the values.
    x.max(0.0).round() as u64
}

impl<'a> Deltas<'a> {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        cube: Cube,
        minute: i64,
        id: &'a str,
        record: u32,
        small: [u16; 3],
        sums: &Sums,
    ) {
        if !id.is_empty() {
            let number = match self.id_numbers.get(id) {
                Some(n) => *n,
                None => {
                    let n = self.batch.ids.len() as u32;
                    self.batch.ids.push(record);
                    self.id_numbers.insert(id, n);
                    #[cfg(test)]
                    self.id_names.push(id);
                    n
                }
            };
            let at = Listed {
                cube,
                minute,
                number,
                small,
            };
            self.batch.listed.push((at, *sums));
            return;
        }
        let key = Key {
            cube,
            minute,
            small,
        };
        self.batch.map.entry(key).or_default().add(sums);
    }

    /// The number of a small vocabulary's value (0 is "").
    fn number(&mut self, s: &'a str) -> u16 {
        if self.names.is_empty() {
            self.names.push("");
            self.numbers.insert("", 0);
        }
        if let Some(n) = self.numbers.get(s) {
            return *n;
        }
        // Validation bounds the vocabularies; past u16, values add up under (other).
        let Ok(n) = u16::try_from(self.names.len()) else {
            return self.number(OTHER);
        };
        self.names.push(s);
        self.numbers.insert(s, n);
        n
    }

    /// Each entry: (cube, minute, tuple, sums).
    #[cfg(test)]
    pub fn entries(&self) -> impl Iterator<Item = (Cube, i64, Tuple<&'a str>, &Sums)> + '_ {
        self.batch.rows().map(move |r| {
            let n = |i: usize| {
                self.names
                    .get(usize::from(r.small[i]))
                    .copied()
                    .unwrap_or("")
            };
            let id = self.id_names.get(r.id as usize).copied().unwrap_or("");
            let tuple = match r.cube {
                Cube::Dims | Cube::Anchors => [n(0), n(1), n(2), ""],
                Cube::Titles => [id, n(0), n(1), n(2)],
                Cube::Music => [id, n(0), "", ""],
            };
            (r.cube, r.minute, tuple, r.sums)
        })
    }

    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Adds stored event `record` written at `now_ms` (events dated further
    /// ahead than the skew allows are left out).
    pub fn event(&mut self, record: u32, ev: &'a Event, now_ms: i64, t: &Tuning) {
        match ev {
            Event::Video(v) => {
                if v.timestamp_ms > now_ms.saturating_add(t.future_skew_ms) {
                    return;
                }
                let mut s = Sums::default();
                let play_ms = ms(v.watch_time_seconds * 1000.0);
                let rebuffer_ms = ms(v.rebuffer_ms.unwrap_or(0.0));
                s.0[slot::VIEWS] = 1;
                s.0[slot::PLAY_MS] = play_ms;
                s.0[slot::REBUFFER_MS] = rebuffer_ms;
                s.0[slot::REBUFFERS] = v.buffering_events.max(0) as u64;
                let mut startup = 0;
                if v.error.is_some() && play_ms == 0 {
                    s.0[slot::START_FAILURES] = 1;
                } else if let (Some(st), true) = (v.startup_time_ms, play_ms > 0) {
                    startup = ms(st);
                    s.0[slot::STARTUP_MS] = startup;
                    s.0[slot::STARTS] = 1;
                } else if play_ms == 0 {
                    s.0[slot::EXITS_BEFORE_START] = 1;
                }
                s.0[slot::BITRATE_PLAY_S] =
                    (v.bitrate_kbps.max(0) as u64).saturating_mul(play_ms) / 1000;
                s.0[slot::SKIPPED] = u64::from(v.skipped);
                s.0[slot::PAUSED] = u64::from(v.paused);
                s.0[slot::RECOMMENDED] = u64::from(v.recommended);
                let start = Grain::Minute.bucket(v.timestamp_ms);
                let lasted = startup
                    .saturating_add(play_ms)
                    .saturating_add(rebuffer_ms)
                    .min(t.max_view_ms.max(0) as u64) as i64;
                let end = Grain::Minute.bucket(v.timestamp_ms.saturating_add(lasted));
                // Titles are kept by the hour, without the ends (concurrency is
                // kept by the dimensions).
                let small = [
                    self.number(&v.genre),
                    self.number(&v.region),
                    self.number(&v.resolution),
                ];
                let hour = Grain::Hour.bucket(v.timestamp_ms);
                self.add(Cube::Titles, hour, &v.video_id, record, small, &s);
                let mut ended = Sums::default();
                ended.0[slot::ENDED] = 1;
                if end == start {
                    s.0[slot::ENDED] = 1;
                    self.add(Cube::Dims, start, "", record, small, &s);
                } else {
                    self.add(Cube::Dims, start, "", record, small, &s);
                    self.add(Cube::Dims, end, "", record, small, &ended);
                }
                // In progress at the start of each hour after its start
                // minute, up to its end minute (at most max_view of hours).
                let mut h = Grain::Hour.bucket(start).saturating_add(HOUR_MS);
                while h <= end {
                    self.add(Cube::Anchors, h, "", record, small, &ended);
                    h = h.saturating_add(HOUR_MS);
                }
            }
            Event::Music(m) => {
                if m.event_ts_ms > now_ms.saturating_add(t.future_skew_ms) {
                    return;
                }
                let mut s = Sums::default();
                s.0[slot::EVENTS] = 1;
                s.0[match m.event_type {
                    MusicAction::Play => slot::PLAY,
                    MusicAction::Skip => slot::SKIP,
                    MusicAction::Like => slot::LIKE,
                    MusicAction::Pause => slot::PAUSE,
                    MusicAction::Seek => slot::SEEK,
                }] = 1;
                let small = [self.number(&m.device), 0, 0];
                let minute = Grain::Minute.bucket(m.event_ts_ms);
                self.add(Cube::Music, minute, &m.track_id, record, small, &s);
            }
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.batch.len() == 0
    }

    /// The deltas owned, each id named by the index of the first record
    /// carrying it (the sums stay where they were summed).
    pub fn into_batch(self) -> BatchDeltas {
        let mut batch = self.batch;
        batch.names.extend(self.names.iter().map(|s| s.to_string()));
        batch
    }

    /// The entries as run parts without their offsets, as earlier versions
    /// wrote them (each part under [`super::MAX_VALUE_BYTES`] once
    /// [`finish_run`] adds them).
    #[cfg(test)]
    pub fn encode_entries(&self) -> Vec<Vec<u8>> {
        let mut parts = Vec::new();
        let mut part: Vec<Entry<&str>> = Vec::new();
        let mut size = 0;
        // Room for the offsets [`finish_run`] appends.
        let limit = super::MAX_VALUE_BYTES - 8192;
        for (cube, minute, tuple, sums) in self.entries() {
            // At most: 2 + 10 + 4 × (5 + len) + 13 × 10 bytes.
            let n = 160 + tuple.iter().map(|s| s.len()).sum::<usize>();
            if !part.is_empty() && size + n > limit {
                parts.push(postcard::to_stdvec(&part).unwrap_or_default());
                part.clear();
                size = 0;
            }
            size += n;
            part.push(Entry {
                cube,
                minute,
                tuple,
                sums: *sums,
            });
        }
        if !part.is_empty() {
            parts.push(postcard::to_stdvec(&part).unwrap_or_default());
        }
        parts
    }

    /// The run parts of these deltas, each naming `offsets`.
    #[cfg(test)]
    pub fn encode(&self, offsets: &[(&str, &str, i32, i64)]) -> Vec<Vec<u8>> {
        self.encode_entries()
            .iter()
            .map(|p| finish_run(p, offsets))
            .collect()
    }
}

/// The rollup deltas of `events` (each with its record's index) written at `now_ms`.
pub fn deltas_of<'a>(
    events: impl Iterator<Item = (u32, &'a Event)>,
    now_ms: i64,
    t: &Tuning,
) -> Deltas<'a> {
    let events = events.into_iter();
    let mut d = Deltas {
        batch: BatchDeltas::reused(),
        ..Deltas::default()
    };
    // (a filtered iterator's lower bound is 0: growing by rehash moved
    // every entry several times per batch)
    let n = events.size_hint().1.unwrap_or(0);
    d.batch.map.reserve(n / 2);
    d.batch.listed.reserve(n);
    for (i, e) in events {
        d.event(i, e, now_ms, t);
    }
    d
}

/// [`deltas_of`] owned ([`Deltas::into_batch`]), and the CPU time they took
/// (see [`RollupStatus::cpu_seconds`]).
pub fn batch_of<'a>(
    events: impl Iterator<Item = (u32, &'a Event)>,
    now_ms: i64,
    t: &Tuning,
) -> (BatchDeltas, u64) {
    crate::domain::worker::with_cpu(|| deltas_of(events, now_ms, t).into_batch())
}

/// The id an event's rows are kept by: its title (views) or track
/// (listening events); "" for the rest.
pub fn id_of(ev: &Event) -> &str {
    match ev {
        Event::Video(v) => &v.video_id,
        Event::Music(m) => &m.track_id,
        _ => "",
    }
}

/// A batch's rollup deltas, owned. The rows without an id (dims, anchors)
/// are summed by a key of integers only: the values of the small
/// vocabularies (genre, region, resolution, device) by number, so a key
/// hashes and compares without touching a string. The rows of an id (title,
/// track) are listed, each with its id's number in the batch; each id names
/// the first record carrying it (the records stay with the batch until it is
/// durable), so the store looks up each id once per batch, not once per row.
/// Once held, its buffers go back for the next batch ([`BatchDeltas::recycle`]).
#[derive(Debug, Clone, Default)]
pub struct BatchDeltas {
    names: Vec<String>,
    /// The record first carrying each id, by the id's number in the batch.
    ids: Vec<u32>,
    /// The rows lie in a list in the order they came, beside a table of
    /// their places (8 bytes a row): a probe reads that small table, and the
    /// sums it adds to lie among the batch's rows only. A hash map of the
    /// rows themselves (about 130 bytes a slot, reserved for half a batch)
    /// spread a batch's few thousand rows over megabytes, and adding a view
    /// missed the cache on nearly every row (`cargo bench --bench rollups`,
    /// deltas: 36-37 against 59-61 ms at step 50, 31-42 against 52-62 ms at
    /// step 0, 3 runs each).
    map: indexmap::IndexMap<Key, Sums, rustc_hash::FxBuildHasher>,
    /// Rows of a title or a track, listed as they come: one rarely repeats
    /// within a batch, and the generation adds them up anyway, so summing
    /// them here first cost a map insert a row for nothing.
    listed: Vec<(Listed, Sums)>,
}

/// One row of a [`BatchDeltas`].
#[derive(Debug, Clone, Copy)]
struct BatchRow<'d> {
    cube: Cube,
    minute: i64,
    /// The id's number in the batch ([`NO_ID`]: none).
    id: u32,
    small: [u16; 3],
    sums: &'d Sums,
}

/// Emptied batch buffers, taken by the next batches' sums: a batch's map and
/// rows (a few MB) are then neither allocated nor faulted in again.
static SPARE: Mutex<Vec<BatchDeltas>> = Mutex::new(Vec::new());
/// Most emptied buffers kept, and the most rows a kept one may have room for.
const SPARE_MAX: usize = 4;
const SPARE_MAX_ROWS: usize = 1 << 20;

impl BatchDeltas {
    /// The record carrying id number `n` of the batch.
    fn id_record(&self, n: u32) -> u32 {
        self.ids.get(n as usize).copied().unwrap_or(NO_ID)
    }

    fn len(&self) -> usize {
        self.map.len() + self.listed.len()
    }

    fn rows(&self) -> impl Iterator<Item = BatchRow<'_>> {
        let kept = self.map.iter().map(|(k, sums)| BatchRow {
            cube: k.cube,
            minute: k.minute,
            id: NO_ID,
            small: k.small,
            sums,
        });
        let listed = self.listed.iter().map(|(at, sums)| BatchRow {
            cube: at.cube,
            minute: at.minute,
            id: at.number,
            small: at.small,
            sums,
        });
        kept.chain(listed)
    }

    /// Emptied buffers of an earlier batch, or new ones.
    fn reused() -> BatchDeltas {
        SPARE
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default()
    }

    /// Empties the buffers and keeps them for a later batch (at most
    /// [`SPARE_MAX`], none with room for more than [`SPARE_MAX_ROWS`]).
    pub fn recycle(mut self) {
        if self.map.capacity() > SPARE_MAX_ROWS || self.listed.capacity() > SPARE_MAX_ROWS {
            return;
        }
        self.names.clear();
        self.ids.clear();
        self.map.clear();
        self.listed.clear();
        if let Ok(mut s) = SPARE.lock() {
            if s.len() < SPARE_MAX {
                s.push(self);
            }
        }
    }
}

/// A run part: its encoded entries, then `offsets` (see [`RunValue`]).
#[cfg(test)]
pub fn finish_run(entries: &[u8], offsets: &[(&str, &str, i32, i64)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(entries.len() + 16 + offsets.len() * 40);
    v.extend_from_slice(entries);
    v.extend_from_slice(&postcard::to_stdvec(offsets).unwrap_or_default());
    v
}

/// A run part back (`None`: unreadable).
#[cfg(test)]
pub fn decode_run(bytes: &[u8]) -> Option<RunValue<String>> {
    postcard::from_bytes(bytes).ok()
}

/// A run part back, its ids borrowed from `bytes`.
pub fn decode_run_borrowed(bytes: &[u8]) -> Option<RunValue<&str>> {
    postcard::from_bytes(bytes).ok()
}

/// The key of run `seq`'s part `part`.
pub fn run_key(seq: u64, part: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(RUN.len() + 12);
    k.extend_from_slice(RUN);
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(&part.to_be_bytes());
    k
}

/// (seq, part) of a run key.
pub fn parse_run_key(k: &[u8]) -> Option<(u64, u32)> {
    let rest = k.strip_prefix(RUN)?;
    if rest.len() != 12 {
        return None;
    }
    Some((
        u64::from_be_bytes(rest[..8].try_into().ok()?),
        u32::from_be_bytes(rest[8..].try_into().ok()?),
    ))
}

fn ordered(bucket: i64) -> [u8; 8] {
    ((bucket as u64) ^ (1 << 63)).to_be_bytes()
}

fn unordered(b: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(b.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// The prefix of every chunk of (grain, cube, bucket); bucket `i64::MAX` ends a range.
pub fn bucket_prefix(grain: Grain, cube: Cube, bucket: i64) -> Vec<u8> {
    prefixed(CHUNK, grain, cube, bucket)
}

/// `prefix` grain cube bucket (be64, sign flipped): how this store's chunks
/// ([`CHUNK`]) and its peers' ([`group::GROUP`]) start.
fn prefixed(prefix: &[u8], grain: Grain, cube: Cube, bucket: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 10);
    k.extend_from_slice(prefix);
    k.push(grain.byte());
    k.push(cube.byte());
    k.extend_from_slice(&ordered(bucket));
    k
}

pub fn chunk_key(grain: Grain, cube: Cube, bucket: i64, tag: u64, part: u32) -> Vec<u8> {
    let mut k = bucket_prefix(grain, cube, bucket);
    k.extend_from_slice(&tag.to_be_bytes());
    k.extend_from_slice(&part.to_be_bytes());
    k
}

/// The bucket of a chunk key.
pub fn chunk_bucket(k: &[u8]) -> Option<i64> {
    unordered(k.get(CHUNK.len() + 2..CHUNK.len() + 10)?)
}

/// A chunk part's rows, their ids borrowed from its bytes.
pub type Rows<'a> = Vec<(Tuple<&'a str>, Sums)>;

/// A bucket's rows as chunk parts (each under [`super::MAX_VALUE_BYTES`]).
pub fn encode_rows(rows: &[(Tuple<&str>, Sums)]) -> Vec<Vec<u8>> {
    let limit = super::MAX_VALUE_BYTES - 1024;
    let mut parts = Vec::new();
    let mut from = 0;
    let mut size = 0;
    for (i, (t, _)) in rows.iter().enumerate() {
        let n = 150 + t.iter().map(|s| s.len()).sum::<usize>();
        if i > from && size + n > limit {
            parts.push(postcard::to_stdvec(&rows[from..i]).unwrap_or_default());
            from = i;
            size = 0;
        }
        size += n;
    }
    if from < rows.len() {
        parts.push(postcard::to_stdvec(&rows[from..]).unwrap_or_default());
    }
    parts
}

pub fn decode_rows(bytes: &[u8]) -> Option<Rows<'_>> {
    postcard::from_bytes(bytes).ok()
}

/// One bucket's rows of a cube in a [`Generation`]: ids → sums, in the order
/// they came. The table holds each row's place; the rows lie in a list,
/// where a new one is appended. On a backfill nearly every row of titles is
/// new: it is written at the list's end, and its probe reads only the table
/// (8 bytes a row, which stays in cache), not rows of 128 bytes strewn over
/// megabytes. The compactor and readers walk the list. (Listing the rows of
/// titles without a table, for the compaction's sort to add up, took less
/// on the store's thread but more in all: the sort then handles every
/// event's row, not each distinct one.)
pub type BucketRows = indexmap::IndexMap<[u32; 4], Sums, rustc_hash::FxBuildHasher>;

/// What one [`Generation`] holds of a cube: minute (or hour) → its rows. A
/// batch's rows fall in a few buckets, whose tables stay in cache while it
/// adds them; one table of every bucket's rows (tens of MB on a backfill)
/// missed the cache for nearly every row. The compactor and readers take
/// them bucket by bucket.
#[derive(Debug, Default)]
struct CubeRows {
    buckets: FxHashMap<i64, BucketRows>,
    rows: usize,
    /// Emptied tables of this cube (an emptied generation's), taken by its
    /// new buckets before any is allocated: a live stream's one hour of
    /// titles gets back the room it needed, not a minute's.
    pool: Vec<BucketRows>,
}

impl CubeRows {
    /// The table of `minute`'s rows (an emptied one from the pool when the
    /// bucket is new), and the count of rows the cube holds.
    fn bucket(&mut self, minute: i64) -> (&mut BucketRows, &mut usize) {
        let pool = &mut self.pool;
        let table = self
            .buckets
            .entry(minute)
            .or_insert_with(|| pool.pop().unwrap_or_default());
        (table, &mut self.rows)
    }
}

/// Adds `sums` to the row `ids` of `table`, counting it in `held` when new.
fn add_into(table: &mut BucketRows, held: &mut usize, ids: [u32; 4], sums: &Sums) {
    match table.entry(ids) {
        indexmap::map::Entry::Occupied(mut e) => e.get_mut().add(sums),
        indexmap::map::Entry::Vacant(e) => {
            e.insert(*sums);
            *held += 1;
        }
    }
}

/// Most emptied bucket tables a cube keeps for its next buckets.
const POOL_MAX: usize = 1 << 12;

/// The rollup deltas of the durable batches since a compaction, added up in
/// memory (nothing of them is written with the batches: the event log holds
/// their events, and opening replays those past [`COVERED`]). Ids are held
/// by number, each generation with its own names, so memory stays bounded
/// by what one compaction covers.
#[derive(Debug, Default)]
pub struct Generation {
    names: Vec<Arc<str>>,
    numbers: FxHashMap<Arc<str>, u32>,
    rows: [CubeRows; 4],
    /// (namespace, topic, partition) → the next offset of the newest batch held.
    offsets: FxHashMap<(String, String, i32), i64>,
    /// Batches held, and the write time of the oldest (retention keeps its
    /// segments until the generation is in chunks).
    pub batches: usize,
    pub oldest_write_ms: Option<i64>,
    /// Keys of runs written by earlier versions, deleted with this generation's compaction.
    pub legacy: Vec<Vec<u8>>,
    names_bytes: usize,
    /// The newest minute (or hour) of a row with weight.
    newest: Option<i64>,
}

fn cube_index(c: Cube) -> usize {
    match c {
        Cube::Dims => 0,
        Cube::Titles => 1,
        Cube::Music => 2,
        Cube::Anchors => 3,
    }
}

/// About the bytes a held row takes: its entry in the list (with its hash),
/// and its place in the table with the table's spare room.
const ROW_BYTES: usize = std::mem::size_of::<([u32; 4], Sums)>() + 8 + 16;

/// A batch's row on its way into a [`Generation`]: cube index, bucket,
/// the hash of its ids (what places it in the bucket's table).
struct Placed<'d> {
    cube: usize,
    minute: i64,
    hash: u64,
    ids: [u32; 4],
    sums: &'d Sums,
}

/// The slots of a table with room for `rows` (hashbrown's sizing: a power of
/// two at most 7/8 full), whose low bits place a hash in it.
fn table_buckets(rows: usize) -> u64 {
    if rows < 8 {
        return 8;
    }
    (rows.saturating_mul(8) / 7).next_power_of_two() as u64
}

impl Generation {
    fn intern(&mut self, s: &str) -> u32 {
        if self.names.is_empty() {
            let empty: Arc<str> = Arc::from("");
            self.names.push(empty.clone());
            self.numbers.insert(empty, 0);
        }
        if let Some(n) = self.numbers.get(s) {
            return *n;
        }
        let n = self.names.len() as u32;
        let a: Arc<str> = Arc::from(s);
        self.names_bytes += s.len() + 48;
        self.names.push(a.clone());
        self.numbers.insert(a, n);
        n
    }

    pub fn name(&self, n: u32) -> &str {
        self.names.get(n as usize).map_or("", |s| s)
    }

    /// Adds a batch's deltas; `id_of(record)` names the id a record carries.
    ///
    /// The rows go into each bucket's table in the order of their places in
    /// it (their hashes' low bits), not as they came: the table is walked
    /// from one end to the other, in cache lines the prefetcher brings ahead,
    /// where rows in the order of the events each read a line of a table
    /// evicted since the last batch (a bucket of titles holds about a row per
    /// view on a backfill).
    pub fn add<'r>(&mut self, d: &BatchDeltas, id_of: impl Fn(u32) -> &'r str) {
        use std::hash::BuildHasher;
        let small: Vec<u32> = d.names.iter().map(|s| self.intern(s)).collect();
        let ids: Vec<u32> = d.ids.iter().map(|r| self.intern(id_of(*r))).collect();
        let s = |i: u16| small.get(usize::from(i)).copied().unwrap_or(0);
        let id = |n: u32| ids.get(n as usize).copied().unwrap_or(0);
        let hasher = rustc_hash::FxBuildHasher;
        let mut rows: Vec<Placed<'_>> = d
            .rows()
            .map(|e| {
                let ids = match e.cube {
                    Cube::Dims | Cube::Anchors => [s(e.small[0]), s(e.small[1]), s(e.small[2]), 0],
                    Cube::Titles => [id(e.id), s(e.small[0]), s(e.small[1]), s(e.small[2])],
                    Cube::Music => [id(e.id), s(e.small[0]), 0, 0],
                };
                Placed {
                    cube: cube_index(e.cube),
                    minute: e.minute,
                    hash: hasher.hash_one(ids),
                    ids,
                    sums: e.sums,
                }
            })
            .collect();
        rows.sort_unstable_by_key(|r| (r.cube, r.minute));
        for group in rows.chunk_by_mut(|a, b| a.cube == b.cube && a.minute == b.minute) {
            let Some(first) = group.first() else { continue };
            let (cube, minute) = (first.cube, first.minute);
            if group.iter().any(|r| r.sums.weight() > 0) {
                self.newest = Some(self.newest.map_or(minute, |n| n.max(minute)));
            }
            let (table, held) = self.rows[cube].bucket(minute);
            let mask = table_buckets(table.capacity().max(table.len() + group.len())) - 1;
            group.sort_unstable_by_key(|r| r.hash & mask);
            for r in group.iter() {
                add_into(table, held, r.ids, r.sums);
            }
        }
    }

    fn add_row(&mut self, cube: Cube, minute: i64, ids: [u32; 4], sums: &Sums) {
        if sums.weight() > 0 {
            self.newest = Some(self.newest.map_or(minute, |n| n.max(minute)));
        }
        let (table, held) = self.rows[cube_index(cube)].bucket(minute);
        add_into(table, held, ids, sums);
    }

    /// The names' numbers in the order of the strings (rank → number).
    pub fn order(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.names.len() as u32).collect();
        order.sort_unstable_by(|a, b| self.name(*a).cmp(self.name(*b)));
        order
    }

    /// This generation emptied, its tables' and names' room kept: the next
    /// pending generation fills memory already in place instead of faulting
    /// in new tables of the same size.
    pub fn emptied(mut self) -> Generation {
        for c in &mut self.rows {
            for (_, mut t) in c.buckets.drain() {
                if c.pool.len() < POOL_MAX {
                    t.clear();
                    c.pool.push(t);
                }
            }
            // The largest last: taken first.
            c.pool.sort_unstable_by_key(|t| t.capacity());
            c.rows = 0;
        }
        self.names.clear();
        self.numbers.clear();
        self.offsets.clear();
        self.legacy.clear();
        Generation {
            names: self.names,
            numbers: self.numbers,
            rows: self.rows,
            offsets: self.offsets,
            legacy: self.legacy,
            ..Generation::default()
        }
    }

    /// An empty generation with room for as many buckets and names as this one.
    pub fn sized_like(&self) -> Generation {
        let mut g = Generation::default();
        for (to, from) in g.rows.iter_mut().zip(&self.rows) {
            to.buckets.reserve(from.buckets.len());
        }
        g.names.reserve(self.names.len());
        g.numbers.reserve(self.names.len());
        g
    }

    /// Adds one row (a run written by an earlier version).
    pub fn add_entry(&mut self, cube: Cube, minute: i64, tuple: &Tuple<&str>, sums: &Sums) {
        let ids = tuple.map(|v| self.intern(v));
        self.add_row(cube, minute, ids, sums);
    }

    /// Notes the next offsets a batch held here wrote.
    pub fn note_offsets<'s>(
        &mut self,
        namespace: &str,
        offsets: impl Iterator<Item = (&'s str, i32, i64)>,
    ) {
        for (topic, partition, next) in offsets {
            let n = self
                .offsets
                .entry((namespace.to_string(), topic.to_string(), partition))
                .or_insert(next);
            *n = (*n).max(next);
        }
    }

    /// The rows of `cube`: (minute, or hour for titles; tuple; sums).
    pub fn rows(&self, cube: Cube) -> impl Iterator<Item = (i64, Tuple<&str>, &Sums)> + '_ {
        self.buckets(cube).flat_map(move |(minute, t)| {
            t.iter()
                .map(move |(ids, s)| (minute, ids.map(|n| self.name(n)), s))
        })
    }

    /// The minutes (or hours, for titles) of `cube` held, each with its rows
    /// by number (see [`Generation::name`]), in no order.
    pub fn buckets(&self, cube: Cube) -> impl Iterator<Item = (i64, &BucketRows)> {
        self.rows[cube_index(cube)]
            .buckets
            .iter()
            .map(|(minute, t)| (*minute, t))
    }

    pub fn offsets(&self) -> impl Iterator<Item = (&(String, String, i32), &i64)> {
        self.offsets.iter()
    }

    /// The newest event minute it holds (rows with weight).
    pub fn newest(&self) -> Option<i64> {
        self.newest
    }

    pub fn row_count(&self) -> usize {
        self.rows.iter().map(|c| c.rows).sum()
    }

    /// About the bytes its tables have room for (the pool's included).
    pub fn room_bytes(&self) -> usize {
        let tables: usize = self
            .rows
            .iter()
            .flat_map(|c| c.buckets.values().chain(&c.pool))
            .map(|t| t.capacity())
            .sum();
        tables * ROW_BYTES
    }

    /// About the bytes it holds.
    pub fn bytes(&self) -> usize {
        self.row_count() * ROW_BYTES + self.names_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.batches == 0 && self.row_count() == 0 && self.legacy.is_empty()
    }
}

/// The compactor's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RollupStatus {
    /// Batches (and their bytes, about) held in memory, not yet in chunks.
    pub held_runs: usize,
    pub held_bytes: usize,
    pub compactions: u64,
    pub chunks_written: u64,
    pub buckets_merged: u64,
    pub chunks_expired: u64,
    pub last_compaction_s: f64,
    /// Events older than the hours kept when they arrived (not rolled up).
    pub late_dropped: u64,
    /// The newest event minute rolled up (ms), held rows included.
    pub newest_minute: Option<i64>,
    /// Times ingest waited for the compactor.
    pub ingest_waits: u64,
    /// Events read back from the event log at open (batches not yet in chunks).
    #[serde(default)]
    pub replayed_events: u64,
    /// The newest minute of the rows other members of the group published
    /// (see [`group`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_newest_minute: Option<i64>,
    /// The CPU seconds spent on the rollups since the store opened: summing
    /// each batch's deltas (off the store's thread), holding them, and the
    /// compactions. What the rollups cost ingest, against the process's CPU.
    #[serde(default)]
    pub cpu_seconds: f64,
}

impl RollupStatus {
    /// The newest minute rolled up here or by a peer of the group.
    pub fn group_newest(&self) -> Option<i64> {
        self.newest_minute.max(self.peer_newest_minute)
    }
}

/// What the compactor and readers share.
#[derive(Debug, Default)]
pub struct Held {
    /// The batches since the generation being compacted.
    pub pending: Generation,
    /// The generation being written into chunks (readers see it until it is).
    pub compacting: Option<Arc<Generation>>,
    /// The last generation written, emptied: the next pending one.
    pub spare: Option<Generation>,
    /// Generations taken by the compactor since the store opened.
    pub taken: u64,
    /// The next offset of each partition whose events are in chunks.
    pub covered: Covered,
    /// The tag of the last compaction (chunks are tagged past it).
    pub through: u64,
    /// `stop` with `closing`: the compactor writes what is held, then ends.
    pub stop: bool,
    pub closing: bool,
    pub broken: Option<String>,
    pub status: RollupStatus,
    pub tuning: Tuning,
    /// Which (bucket, lead) the batches held since the group's last
    /// publication changed (`None`: not in a group, nothing noted).
    pub touched: Option<group::Touched>,
    /// The newest minute of a peer's rows held (see [`group`]).
    pub peer_newest: Option<i64>,
}

impl Held {
    /// The held generations: the one being compacted, then the pending one.
    pub fn generations(&self) -> impl Iterator<Item = &Generation> {
        self.compacting
            .as_deref()
            .into_iter()
            .chain([&self.pending])
    }
}

#[derive(Debug, Default)]
pub struct Shared {
    pub held: Mutex<Held>,
    pub changed: Condvar,
    /// Readers hold it while they read chunks and held generations; the
    /// compactor takes it to commit a compaction and drop the generation it
    /// covers, so a read sees each batch exactly once.
    pub gate: RwLock<()>,
    /// The CPU time spent on the rollups since the store opened (see
    /// [`RollupStatus::cpu_seconds`]), in nanoseconds.
    pub cpu_ns: AtomicU64,
}

fn refused_if_broken(h: &Held) -> Result<(), StoreError> {
    match &h.broken {
        Some(why) => Err(StoreError::Refused(format!(
            "the rollup compaction failed ({why}); restart the daemon once the cause is fixed"
        ))),
        None => Ok(()),
    }
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a durable batch's deltas (written at `write_ms`, with `offsets`
    /// of `namespace`); waits while the compactor is far behind (memory stays
    /// bounded). `prepared_cpu_ns`: the CPU time the deltas took to sum.
    #[allow(clippy::too_many_arguments)]
    pub fn add_batch<'r>(
        &self,
        d: &BatchDeltas,
        id_of: impl Fn(u32) -> &'r str,
        namespace: &str,
        offsets: &[(String, i32, i64)],
        write_ms: i64,
        prepared_cpu_ns: u64,
    ) -> Result<(), StoreError> {
        let ((mut h, bytes), spent) = crate::domain::worker::with_cpu(|| {
            let mut h = self.lock();
            if let Some(t) = h.touched.as_mut() {
                t.note(d, &id_of);
            }
            let g = &mut h.pending;
            g.add(d, &id_of);
            g.note_offsets(
                namespace,
                offsets.iter().map(|(t, p, n)| (t.as_str(), *p, *n)),
            );
            g.batches += 1;
            g.oldest_write_ms = Some(g.oldest_write_ms.map_or(write_ms, |o| o.min(write_ms)));
            let bytes = g.bytes();
            (h, bytes)
        });
        self.cpu_ns
            .fetch_add(prepared_cpu_ns.saturating_add(spent), Ordering::Relaxed);
        let limit = h.tuning.compact_bytes.saturating_mul(8);
        if bytes >= h.tuning.compact_bytes {
            self.changed.notify_all();
        }
        let mut waited = false;
        while h.pending.bytes() > limit && h.broken.is_none() && !h.stop {
            if !waited {
                h.status.ingest_waits += 1;
                waited = true;
            }
            h = self
                .changed
                .wait_timeout(h, std::time::Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        refused_if_broken(&h)
    }

    /// Refuses batches once a compaction has failed (the store checks before
    /// it writes one, so a refused batch is not stored: it comes again after
    /// the restart).
    pub fn writable(&self) -> Result<(), StoreError> {
        refused_if_broken(&self.lock())
    }

    /// The write time of the oldest batch not yet in chunks: retention keeps
    /// the segments written since (opening replays them).
    pub fn uncovered_since(&self) -> Option<i64> {
        let h = self.lock();
        h.generations().filter_map(|g| g.oldest_write_ms).min()
    }

    pub fn status(&self) -> RollupStatus {
        let h = self.lock();
        RollupStatus {
            held_runs: h.generations().map(|g| g.batches).sum(),
            held_bytes: h.generations().map(Generation::bytes).sum(),
            // Readers see the held rows at once: their newest minute too.
            newest_minute: h
                .generations()
                .filter_map(Generation::newest)
                .chain(h.status.newest_minute)
                .max(),
            peer_newest_minute: h.peer_newest,
            cpu_seconds: self.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9,
            ..h.status
        }
    }
}

#[cfg(test)]
mod tests;
