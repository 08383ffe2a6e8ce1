//! Getting a batch ready for the store, off the store's thread: valid events
//! encoded, aggregate deltas summed (assuming every record is new; the store
//! recomputes them in the rare batch that holds redelivered records).

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::keys;
use super::slots::{self, Layout, Qoe};
use crate::domain::event::{Event, VideoEvent};
use crate::domain::record::{Outcome, Processed};

/// Aggregate deltas of one batch, by aggregate key.
#[derive(Default, Debug, Clone)]
pub struct Deltas {
    pub map: FxHashMap<Vec<u8>, Vec<f64>>,
    /// Per (user, video) pair deltas ([`slots::PAIR`]), in the order of their
    /// first records: each names its pair by the index of the batch's first
    /// record of it (see [`video_pair`]), so no key is built or split on the
    /// way to the store.
    pub pairs: Vec<(u32, [f64; 5])>,
    key: Vec<u8>,
}

impl Deltas {
    /// Adds `delta` under the key [`keys::join`] makes, allocating the key only when new.
    fn add(&mut self, prefix: &[u8], parts: &[&[u8]], layout: Layout, delta: &[f64]) {
        self.key.clear();
        keys::extend_parts(&mut self.key, prefix, parts);
        match self.map.get_mut(self.key.as_slice()) {
            Some(v) => slots::combine(layout, v, delta),
            // A first delta combined into zero slots is the delta itself.
            None => {
                self.map.insert(self.key.clone(), delta.to_vec());
            }
        }
    }

    pub fn count(&mut self, name: &str, n: f64) {
        if n != 0.0 {
            self.add(keys::COUNTER, &[name.as_bytes()], slots::COUNT, &[n]);
        }
    }
}

/// QoE slots ([`slots::QOE`]).
type QoeSlots = [f64; 12];

/// A batch's deltas as they are summed: by the events' own strings, so an
/// event costs a few lookups of short borrowed keys and no key is built or
/// allocated until [`Summing::finish`], once per distinct key. Each key's
/// deltas combine in the events' order, as [`Deltas::add`] would.
#[derive(Default)]
struct Summing<'a> {
    /// Each title's number in the batch, and its sums by number: one lookup
    /// of a title an event adds its QoE and its views by genre and region.
    title_numbers: FxHashMap<&'a str, u32>,
    titles: Vec<(&'a str, TitleSums<'a>)>,
    regions: FxHashMap<&'a str, QoeSlots>,
    resolutions: FxHashMap<&'a str, QoeSlots>,
    genres: FxHashMap<&'a str, QoeSlots>,
    /// (user, video) pairs ([`slots::PAIR`]): the index of the pair's first
    /// record, and its deltas; and (user, track) pairs ([`slots::MUSIC`]).
    video_pairs: FxHashMap<(&'a str, &'a str), (u32, [f64; 5])>,
    music_pairs: FxHashMap<(&'a str, &'a str), [f64; 6]>,
}

/// One title's sums in a batch: its QoE ([`keys::QOE_VIDEO`]) and its views
/// by genre ([`keys::ITEM_GENRE`]) and by region ([`keys::ITEM_REGION`]). A
/// title has one genre and a few regions in a batch: short lists, no map
/// (validation keeps both to the configured `validation.genres` and
/// `validation.regions`, so a list is never longer than those).
struct TitleSums<'a> {
    qoe: QoeSlots,
    genres: SmallVec<[(&'a str, f64); 1]>,
    regions: SmallVec<[(&'a str, f64); 4]>,
}

/// Counts one more under `key` in `list`.
fn count_in<const N: usize>(list: &mut SmallVec<[(&str, f64); N]>, key: &str) -> bool {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => {
            *n += 1.0;
            true
        }
        None => false,
    }
}

/// Adds `delta` to `key`'s slots in `map` (`delta` itself when new).
fn sum_into<K: std::hash::Hash + Eq, const N: usize>(
    map: &mut FxHashMap<K, [f64; N]>,
    key: K,
    layout: Layout,
    delta: &[f64; N],
) {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(mut e) => {
            slots::combine(layout, e.get_mut(), delta)
        }
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(*delta);
        }
    }
}

impl<'a> Summing<'a> {
    /// Room for a batch of `n` records: nearly every (user, video) pair and
    /// (title, region) is new within a batch, so those maps would otherwise
    /// grow by rehashing several times a batch.
    fn with_capacity(n: usize) -> Summing<'a> {
        let n = n.min(1 << 20);
        Summing {
            title_numbers: FxHashMap::with_capacity_and_hasher(n / 4, Default::default()),
            titles: Vec::with_capacity(n / 4),
            video_pairs: FxHashMap::with_capacity_and_hasher(n, Default::default()),
            ..Summing::default()
        }
    }

    /// Adds the event of record `index`.
    fn event(&mut self, index: u32, ev: &'a Event) {
        match ev {
            Event::Video(v) => {
                let d = pair_delta(v);
                match self
                    .video_pairs
                    .entry((v.user_id.as_str(), v.video_id.as_str()))
                {
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        slots::combine(slots::PAIR, &mut e.get_mut().1, &d)
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert((index, d));
                    }
                }
                let q = video_qoe(v, v.implicit_feedback()).slots();
                self.title(v.video_id.as_str(), v.genre.as_str(), v.region.as_str(), &q);
                sum_into(&mut self.regions, v.region.as_str(), slots::QOE, &q);
                sum_into(&mut self.resolutions, v.resolution.as_str(), slots::QOE, &q);
                sum_into(&mut self.genres, v.genre.as_str(), slots::QOE, &q);
            }
            Event::Music(m) => {
                let mut d = [0.0; 6];
                d[m.event_type.index()] = 1.0;
                d[5] = m.event_ts_ms as f64;
                sum_into(
                    &mut self.music_pairs,
                    (m.user_id.as_str(), m.track_id.as_str()),
                    slots::MUSIC,
                    &d,
                );
            }
            Event::User(_) | Event::Movie(_) | Event::Series(_) | Event::Track(_) => {}
        }
    }

    /// Adds a view of `title` (of `genre`, in `region`) with QoE `q`.
    fn title(&mut self, title: &'a str, genre: &'a str, region: &'a str, q: &QoeSlots) {
        let titles = &mut self.titles;
        let n = *self.title_numbers.entry(title).or_insert_with(|| {
            titles.push((
                title,
                TitleSums {
                    qoe: [0.0; 12],
                    genres: SmallVec::new(),
                    regions: SmallVec::new(),
                },
            ));
            // A batch holds far fewer titles than u32 counts.
            (titles.len() - 1) as u32
        });
        let Some((_, t)) = self.titles.get_mut(n as usize) else {
            return;
        };
        if t.genres.is_empty() {
            // A first delta is the delta itself (as [`sum_into`] keeps it).
            t.qoe = *q;
        } else {
            slots::combine(slots::QOE, &mut t.qoe, q);
        }
        if !count_in(&mut t.genres, genre) {
            t.genres.push((genre, 1.0));
        }
        if !count_in(&mut t.regions, region) {
            t.regions.push((region, 1.0));
        }
    }

    /// The sums under their aggregate keys.
    fn finish(self, into: &mut Deltas) {
        let distinct = self
            .titles
            .iter()
            .map(|(_, t)| 1 + t.genres.len() + t.regions.len())
            .sum::<usize>()
            + self.regions.len()
            + self.resolutions.len()
            + self.genres.len()
            + self.music_pairs.len();
        into.map.reserve(distinct);
        let map = &mut into.map;
        let mut put = |prefix: &[u8], parts: &[&[u8]], v: &[f64]| {
            map.insert(keys::join(prefix, parts), v.to_vec());
        };
        for (title, t) in &self.titles {
            put(keys::QOE_VIDEO, &[title.as_bytes()], &t.qoe);
            for (genre, n) in &t.genres {
                put(
                    keys::ITEM_GENRE,
                    &[title.as_bytes(), genre.as_bytes()],
                    &[*n],
                );
            }
            for (region, n) in &t.regions {
                put(
                    keys::ITEM_REGION,
                    &[title.as_bytes(), region.as_bytes()],
                    &[*n],
                );
            }
        }
        for (prefix, sums) in [
            (keys::QOE_REGION, &self.regions),
            (keys::QOE_RESOLUTION, &self.resolutions),
            (keys::GENRE, &self.genres),
        ] {
            for (k, v) in sums {
                put(prefix, &[k.as_bytes()], v);
            }
        }
        for ((u, t), v) in &self.music_pairs {
            put(keys::MUSIC_PAIR, &[u.as_bytes(), t.as_bytes()], v);
        }
        // In the order of their first records: the passes over them read
        // the records in order (a run's order means nothing to its readers).
        into.pairs.extend(self.video_pairs.into_values());
        into.pairs.sort_unstable_by_key(|(i, _)| *i);
    }
}

/// One video event's contribution to its (user, video) aggregate, in
/// [`slots::PAIR`] layout: weight, events, positive events, max feedback, time.
pub fn pair_delta(v: &VideoEvent) -> [f64; 5] {
    let fb = v.implicit_feedback();
    let positive = if fb >= 0.5 { 1.0 } else { 0.0 };
    [fb, 1.0, positive, fb, v.timestamp_ms as f64]
}

fn video_qoe(v: &VideoEvent, feedback: f64) -> Qoe {
    let failed = v.error.is_some() && v.watch_time_seconds == 0.0;
    Qoe {
        events: 1,
        watch_seconds: v.watch_time_seconds,
        buffering_events: v.buffering_events as u64,
        rebuffer_ms: v.rebuffer_ms.unwrap_or(0.0),
        startup_ms_sum: v.startup_time_ms.unwrap_or(0.0),
        startups: u64::from(v.startup_time_ms.is_some()),
        start_failures: u64::from(failed),
        skipped: u64::from(v.skipped),
        paused: u64::from(v.paused),
        bitrate_kbps_sum: v.bitrate_kbps as f64,
        recommended: u64::from(v.recommended),
        feedback_sum: feedback,
    }
}

/// The (user, video) of a viewing event: what a pair delta's record index
/// names (`None` for any other record).
pub fn video_pair(r: &Processed) -> Option<(&str, &str)> {
    match &r.outcome {
        Outcome::Valid(Event::Video(v)) => Some((v.user_id.as_str(), v.video_id.as_str())),
        _ => None,
    }
}

/// The aggregate deltas and counters of `records`, each with its index in the
/// batch (which the pair deltas name).
pub fn deltas_of<'a>(records: impl Iterator<Item = (u32, &'a Processed)>) -> Deltas {
    let mut d = Deltas::default();
    let mut sums = Summing::with_capacity(records.size_hint().0);
    let mut per_type: Vec<(&'static str, f64)> = Vec::new();
    let mut rejected_by: FxHashMap<String, f64> = FxHashMap::default();
    let (mut stored, mut rejected) = (0.0, 0.0);
    for (i, r) in records {
        match &r.outcome {
            Outcome::Valid(ev) => {
                stored += 1.0;
                match per_type.iter_mut().find(|(t, _)| *t == ev.type_name()) {
                    Some((_, n)) => *n += 1.0,
                    None => per_type.push((ev.type_name(), 1.0)),
                }
                sums.event(i, ev);
            }
            Outcome::Rejected { rejection, .. } => {
                rejected += 1.0;
                *rejected_by.entry(rejection.key()).or_default() += 1.0;
            }
        }
    }
    sums.finish(&mut d);
    for (t, n) in per_type {
        d.count(&format!("stored/{t}"), n);
    }
    for (k, n) in rejected_by {
        d.count(&format!("rejected/{k}"), n);
    }
    d.count("stored", stored);
    d.count("rejected", rejected);
    d
}

/// A batch's encoded events ([`Event::encode`]) in one buffer: record i's
/// bytes end at `ends[i]` (a rejected record's are empty).
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Encoded {
    pub fn of(records: &[Processed]) -> Encoded {
        // About 100 bytes an event: one growth or none.
        let mut e = Encoded {
            bytes: Vec::with_capacity(records.len() * 128),
            ends: Vec::with_capacity(records.len()),
        };
        for r in records {
            if let Outcome::Valid(ev) = &r.outcome {
                ev.encode_into(&mut e.bytes);
            }
            e.ends.push(e.bytes.len());
        }
        e
    }

    /// Record `i`'s bytes (empty past the end).
    pub fn get(&self, i: usize) -> &[u8] {
        let start = match i.checked_sub(1) {
            Some(p) => self.ends.get(p).copied().unwrap_or(usize::MAX),
            None => 0,
        };
        let end = self.ends.get(i).copied().unwrap_or(0);
        self.bytes.get(start..end).unwrap_or_default()
    }
}

/// A batch ready for [`super::Store::apply`].
#[derive(Debug, Clone)]
pub struct Prepared {
    pub records: Vec<Processed>,
    /// The encoded event per record (empty for rejected ones).
    pub encoded: Encoded,
    pub deltas: Deltas,
    /// The rollup deltas (see [`super::rollup`]), as if every record were new.
    pub rollup: super::rollup::BatchDeltas,
    /// The CPU time summing the rollup deltas took (see
    /// [`super::rollup::RollupStatus::cpu_seconds`]).
    pub rollup_cpu_ns: u64,
}

/// [`prepare_with`] the default rollup tuning.
pub fn prepare(records: Vec<Processed>) -> Prepared {
    prepare_with(records, &super::rollup::Tuning::default())
}

/// Encodes the valid events and sums the batch's deltas (aggregates and
/// rollups), off the store's thread.
pub fn prepare_with(records: Vec<Processed>, rollup: &super::rollup::Tuning) -> Prepared {
    let encoded = Encoded::of(&records);
    let deltas = deltas_of(records.iter().enumerate().map(|(i, r)| (i as u32, r)));
    let (rollup, rollup_cpu_ns) = super::rollup::batch_of(
        records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match &r.outcome {
                Outcome::Valid(ev) => Some((i as u32, ev)),
                Outcome::Rejected { .. } => None,
            }),
        crate::domain::timefmt::now_ms(),
        rollup,
    );
    Prepared {
        records,
        encoded,
        deltas,
        rollup,
        rollup_cpu_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::reject::Rejection;
    use crate::store::pairs::tests::records;

    #[test]
    fn a_titles_qoe_and_views_by_genre_and_region_sum_as_one_key_at_a_time_would() {
        // 40 titles over 3,000 views: each title in every region (past the
        // short list's inline room), and some titles under a second genre.
        let mut rs = records(3_000);
        for (i, r) in rs.iter_mut().enumerate() {
            if let Outcome::Valid(Event::Video(v)) = &mut r.outcome {
                if i % 7 == 0 {
                    v.genre = "Other genre".into();
                }
            }
        }
        let got = deltas_of(rs.iter().enumerate().map(|(i, r)| (i as u32, r)));
        let mut want = Deltas::default();
        for r in &rs {
            let Outcome::Valid(Event::Video(v)) = &r.outcome else {
                unreachable!()
            };
            let t = v.video_id.as_bytes();
            let q = video_qoe(v, v.implicit_feedback()).slots();
            want.add(keys::QOE_VIDEO, &[t], slots::QOE, &q);
            want.add(
                keys::ITEM_GENRE,
                &[t, v.genre.as_bytes()],
                slots::COUNT,
                &[1.0],
            );
            want.add(
                keys::ITEM_REGION,
                &[t, v.region.as_bytes()],
                slots::COUNT,
                &[1.0],
            );
        }
        let of = |d: &Deltas| {
            let mut v: Vec<(Vec<u8>, Vec<f64>)> = d
                .map
                .iter()
                .filter(|(k, _)| {
                    [keys::QOE_VIDEO, keys::ITEM_GENRE, keys::ITEM_REGION]
                        .iter()
                        .any(|p| k.starts_with(p))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let (got, want) = (of(&got), of(&want));
        assert!(want.len() > 40 * 5, "{} keys", want.len());
        assert_eq!(got, want);
    }

    #[test]
    fn a_batch_encodes_each_valid_event_as_alone_and_a_rejected_one_as_nothing() {
        let mut rs = records(40);
        rs[7].outcome = Outcome::Rejected {
            rejection: Rejection::new("invalid_json", "x"),
            raw: vec![0xff],
        };
        rs[39].outcome = rs[7].outcome.clone();
        let e = Encoded::of(&rs);
        for (i, r) in rs.iter().enumerate() {
            let want = match &r.outcome {
                Outcome::Valid(ev) => ev.encode(),
                Outcome::Rejected { .. } => Vec::new(),
            };
            assert_eq!(e.get(i), want.as_slice(), "record {i}");
            if let Outcome::Valid(ev) = &r.outcome {
                assert_eq!(&Event::decode(e.get(i)).unwrap(), ev);
            }
        }
        assert!(e.get(40).is_empty() && e.get(usize::MAX).is_empty());
        assert!(Encoded::of(&[]).get(0).is_empty());
    }

    #[test]
    fn pair_deltas_name_each_pair_by_its_first_record_in_record_order() {
        // 60 users and 40 videos: pairs repeat within the batch.
        let rs = records(3_000);
        let d = deltas_of(rs.iter().enumerate().map(|(i, r)| (i as u32, r)));
        let mut want: Vec<((&str, &str), u32, [f64; 5])> = Vec::new();
        for (i, r) in rs.iter().enumerate() {
            let Outcome::Valid(Event::Video(v)) = &r.outcome else {
                unreachable!()
            };
            let pair = video_pair(r).unwrap();
            match want.iter_mut().find(|(p, _, _)| *p == pair) {
                Some((_, _, s)) => slots::combine(slots::PAIR, s, &pair_delta(v)),
                None => want.push((pair, i as u32, pair_delta(v))),
            }
        }
        assert!(want.len() < rs.len(), "some pairs repeat");
        let got: Vec<((&str, &str), u32, [f64; 5])> = d
            .pairs
            .iter()
            .map(|(i, s)| (video_pair(&rs[*i as usize]).unwrap(), *i, *s))
            .collect();
        assert_eq!(got, want);
    }
}
