//! Getting a batch ready for the store, off the store's thread: valid events
//! encoded, aggregate deltas summed (assuming every record is new; the store
//! recomputes them in the rare batch that holds redelivered records).

use rustc_hash::FxHashMap;

use super::keys;
use super::slots::{self, Layout, Qoe};
use crate::domain::event::{Event, VideoEvent};
use crate::domain::record::{Outcome, Processed};

/// Aggregate deltas of one batch, by aggregate key.
#[derive(Default, Debug, Clone)]
pub struct Deltas {
    pub map: FxHashMap<Vec<u8>, Vec<f64>>,
    /// Per (user, video) pair deltas, by pair row key ([`keys::VIDEO_PAIR`]):
    /// not held in memory, their rows are read and rewritten in the batch.
    pub pairs: FxHashMap<Vec<u8>, [f64; 5]>,
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

    fn event(&mut self, ev: &Event) {
        match ev {
            Event::Video(v) => {
                // Per (user, video) aggregates: as many as the data has pairs,
                // so not held; the plan rewrites each touched pair's row.
                self.key.clear();
                keys::extend_parts(
                    &mut self.key,
                    keys::VIDEO_PAIR,
                    &[v.user_id.as_bytes(), v.video_id.as_bytes()],
                );
                let d = pair_delta(v);
                match self.pairs.get_mut(self.key.as_slice()) {
                    Some(p) => slots::combine(slots::PAIR, p, &d),
                    None => {
                        self.pairs.insert(self.key.clone(), d);
                    }
                }
                let fb = v.implicit_feedback();
                let q = video_qoe(v, fb).slots();
                self.add(keys::QOE_VIDEO, &[v.video_id.as_bytes()], slots::QOE, &q);
                self.add(keys::QOE_REGION, &[v.region.as_bytes()], slots::QOE, &q);
                self.add(
                    keys::QOE_RESOLUTION,
                    &[v.resolution.as_bytes()],
                    slots::QOE,
                    &q,
                );
                self.add(keys::GENRE, &[v.genre.as_bytes()], slots::QOE, &q);
                self.add(
                    keys::ITEM_GENRE,
                    &[v.video_id.as_bytes(), v.genre.as_bytes()],
                    slots::COUNT,
                    &[1.0],
                );
                self.add(
                    keys::ITEM_REGION,
                    &[v.video_id.as_bytes(), v.region.as_bytes()],
                    slots::COUNT,
                    &[1.0],
                );
            }
            Event::Music(m) => {
                let mut d = [0.0; 6];
                d[m.event_type.index()] = 1.0;
                d[5] = m.event_ts_ms as f64;
                self.add(
                    keys::MUSIC_PAIR,
                    &[m.user_id.as_bytes(), m.track_id.as_bytes()],
                    slots::MUSIC,
                    &d,
                );
            }
            Event::User(_) | Event::Movie(_) | Event::Series(_) | Event::Track(_) => {}
        }
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

/// The aggregate deltas and counters of `records`.
pub fn deltas_of<'a>(records: impl Iterator<Item = &'a Processed>) -> Deltas {
    let (low, high) = records.size_hint();
    let mut d = Deltas {
        map: FxHashMap::with_capacity_and_hasher(high.unwrap_or(low) + 64, Default::default()),
        pairs: FxHashMap::default(),
        key: Vec::new(),
    };
    let mut per_type: Vec<(&'static str, f64)> = Vec::new();
    let mut rejected_by: FxHashMap<String, f64> = FxHashMap::default();
    let (mut stored, mut rejected) = (0.0, 0.0);
    for r in records {
        match &r.outcome {
            Outcome::Valid(ev) => {
                stored += 1.0;
                match per_type.iter_mut().find(|(t, _)| *t == ev.type_name()) {
                    Some((_, n)) => *n += 1.0,
                    None => per_type.push((ev.type_name(), 1.0)),
                }
                d.event(ev);
            }
            Outcome::Rejected { rejection, .. } => {
                rejected += 1.0;
                *rejected_by.entry(rejection.key()).or_default() += 1.0;
            }
        }
    }
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

/// A batch ready for [`super::Store::apply`].
#[derive(Debug, Clone)]
pub struct Prepared {
    pub records: Vec<Processed>,
    /// The encoded event per record (empty for rejected ones).
    pub encoded: Vec<Vec<u8>>,
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
    let encoded = records
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Valid(ev) => ev.encode(),
            Outcome::Rejected { .. } => Vec::new(),
        })
        .collect();
    let deltas = deltas_of(records.iter());
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
