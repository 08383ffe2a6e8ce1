//! Aggregates as fixed arrays of f64 slots: the first `sums` slots add up, the
//! rest keep the maximum. Encoded little-endian, 8 bytes a slot.

use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub sums: usize,
    pub maxes: usize,
}

impl Layout {
    /// Number of slots.
    pub const fn slots(self) -> usize {
        self.sums + self.maxes
    }
}

/// Per (user, video): weight, events, positive events | max feedback, last timestamp.
pub const PAIR: Layout = Layout { sums: 3, maxes: 2 };
/// QoE and engagement counters, all sums (see [`Qoe`]).
pub const QOE: Layout = Layout { sums: 12, maxes: 0 };
/// Per (user, track): play, skip, like, pause, seek counts | last timestamp.
pub const MUSIC: Layout = Layout { sums: 5, maxes: 1 };
/// A plain counter.
pub const COUNT: Layout = Layout { sums: 1, maxes: 0 };

pub fn combine(layout: Layout, base: &mut [f64], delta: &[f64]) {
    for i in 0..layout.sums {
        base[i] += delta[i];
    }
    for i in layout.sums..layout.slots() {
        base[i] = base[i].max(delta[i]);
    }
}

/// A pair row's value: its [`PAIR`] slots, little-endian.
pub fn encode_pair(s: &[f64; 5]) -> Vec<u8> {
    s.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// What [`encode_pair`] wrote; `None` for any other value (a damaged row).
pub fn decode_pair(v: &[u8]) -> Option<[f64; 5]> {
    if v.len() != 40 {
        return None;
    }
    let mut out = [0.0; 5];
    for (o, c) in out.iter_mut().zip(v.chunks_exact(8)) {
        *o = f64::from_le_bytes(c.try_into().ok()?);
        if o.is_nan() {
            return None;
        }
    }
    Some(out)
}

pub fn zero(layout: Layout) -> Vec<f64> {
    let mut v = vec![0.0; layout.slots()];
    for x in &mut v[layout.sums..] {
        *x = f64::NEG_INFINITY;
    }
    v
}

/// The implicit-feedback aggregate of one (user, item) pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct PairAgg {
    /// Sum of the per-event implicit feedback.
    pub weight: f64,
    pub events: u64,
    /// Events with feedback ≥ 0.5 (the notebooks' engagement label).
    pub positive_events: u64,
    pub max_feedback: f64,
    pub last_ts_ms: i64,
}

impl PairAgg {
    /// Adds another store's aggregate of the same pair (the members of a
    /// group each hold the events of the partitions they consumed).
    pub fn merge(&mut self, o: &PairAgg) {
        self.weight += o.weight;
        self.events += o.events;
        self.positive_events += o.positive_events;
        self.max_feedback = self.max_feedback.max(o.max_feedback);
        self.last_ts_ms = self.last_ts_ms.max(o.last_ts_ms);
    }

    pub fn from_slots(s: &[f64]) -> PairAgg {
        PairAgg {
            weight: s[0],
            events: s[1] as u64,
            positive_events: s[2] as u64,
            max_feedback: s[3],
            last_ts_ms: s[4] as i64,
        }
    }
}

/// QoE and engagement counters of a video, region, resolution or genre.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, serde::Deserialize)]
pub struct Qoe {
    pub events: u64,
    pub watch_seconds: f64,
    pub buffering_events: u64,
    pub rebuffer_ms: f64,
    pub startup_ms_sum: f64,
    pub startups: u64,
    /// Video start failures (an error before playback).
    pub start_failures: u64,
    pub skipped: u64,
    pub paused: u64,
    pub bitrate_kbps_sum: f64,
    pub recommended: u64,
    pub feedback_sum: f64,
}

impl Qoe {
    pub fn slots(&self) -> [f64; 12] {
        [
            self.events as f64,
            self.watch_seconds,
            self.buffering_events as f64,
            self.rebuffer_ms,
            self.startup_ms_sum,
            self.startups as f64,
            self.start_failures as f64,
            self.skipped as f64,
            self.paused as f64,
            self.bitrate_kbps_sum,
            self.recommended as f64,
            self.feedback_sum,
        ]
    }

    pub fn from_slots(s: &[f64]) -> Qoe {
        Qoe {
            events: s[0] as u64,
            watch_seconds: s[1],
            buffering_events: s[2] as u64,
            rebuffer_ms: s[3],
            startup_ms_sum: s[4],
            startups: s[5] as u64,
            start_failures: s[6] as u64,
            skipped: s[7] as u64,
            paused: s[8] as u64,
            bitrate_kbps_sum: s[9],
            recommended: s[10] as u64,
            feedback_sum: s[11],
        }
    }

    /// Rebuffering ratio (Conviva, Mux): rebuffer time / (play time + rebuffer time).
    pub fn rebuffering_ratio(&self) -> f64 {
        let rebuffer_s = self.rebuffer_ms / 1000.0;
        let total = self.watch_seconds + rebuffer_s;
        if total > 0.0 {
            rebuffer_s / total
        } else {
            0.0
        }
    }
}

/// Listening counters of one (user, track) pair.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, serde::Deserialize)]
pub struct MusicAgg {
    /// play, skip, like, pause, seek.
    pub counts: [u64; 5],
    pub last_ts_ms: i64,
}

impl MusicAgg {
    /// Adds another store's counters of the same pair.
    pub fn merge(&mut self, o: &MusicAgg) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        self.last_ts_ms = self.last_ts_ms.max(o.last_ts_ms);
    }

    pub fn from_slots(s: &[f64]) -> MusicAgg {
        MusicAgg {
            counts: std::array::from_fn(|i| s[i] as u64),
            last_ts_ms: s[5] as i64,
        }
    }
}
