//! The write of one input batch, planned without touching sled: which records
//! are new (at or past their partition's stored next offset), the event
//! segments, dead letters, catalog upserts, journal parts and next offsets to
//! write, and the aggregate deltas to merge once the write is durable. The
//! store commits a plan in one atomic sled batch ([`super::Store::apply`]); what
//! the plan reads of the store (stored offsets, the catalog's current records,
//! the aggregates) it is handed, so it is tested here with plain maps.

use rustc_hash::FxHashMap;

use super::bounds::{self, Limits, Tracked};
use super::prepare::{self, Deltas, Prepared};
use super::read::DeadLetter;
use super::state::{self, State};
use super::{keys, pairs, rollup, segment, ApplyReport, StoreError, MAX_VALUE_BYTES};
use crate::domain::event::Event;
use crate::domain::record::{Outcome, Processed};

/// What a plan reads of the store.
pub struct Reads<'a> {
    /// The offset namespace (a cluster, or one run of the embedded broker) and
    /// its store-local number.
    pub namespace: &'a str,
    pub ns: u32,
    /// The stored next offset of a partition in `namespace`.
    pub stored_next: &'a dyn Fn(&str, i32) -> Option<i64>,
    /// The aggregates as stored, the bounds on ids held and how many are.
    pub state: &'a State,
    pub limits: Limits,
    pub tracked: Tracked,
    /// The journal sequence number this batch writes.
    pub seq: u64,
    /// When the batch is written (ms), and how the rollups are kept.
    pub now_ms: i64,
    pub rollup: rollup::Tuning,
}

/// One planned batch write.
pub struct Plan {
    pub records: Vec<Processed>,
    /// `fresh[i]`: record i is stored now (not skipped as a redelivery).
    pub fresh: Vec<bool>,
    /// Every (key, value) the batch inserts.
    pub writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Merged into the in-memory aggregates once the write is durable.
    pub deltas: Deltas,
    /// Each touched (user, video) pair's delta, as written in the batch's run
    /// (see [`super::pairs`]), in the order of their first records: the pair
    /// is that of the record at the index ([`Plan::pair_deltas`] names them).
    pub pairs: Vec<(u32, [f64; 5])>,
    /// The batch's rollup deltas, held once the write is durable (see [`super::rollup`]).
    pub rollup: rollup::BatchDeltas,
    /// The CPU time the rollup deltas took, from the preparation on.
    pub rollup_cpu_ns: u64,
    pub tracked: Tracked,
    /// (topic, partition, next offset) written, sorted.
    pub offsets: Vec<(String, i32, i64)>,
    pub journal_bytes: usize,
    /// About how many bytes the write holds (for the free-space check).
    pub bytes: usize,
    /// Counts of the batch (timings and offsets are filled in by the commit).
    pub report: ApplyReport,
}

impl Plan {
    /// Each touched (user, video) pair and its delta, in the run's order.
    pub fn pair_deltas(&self) -> impl Iterator<Item = (&str, &str, &[f64; 5])> + '_ {
        named(&self.records, &self.pairs)
    }
}

/// The (user, video) of record `i` (`None`: no such record, or not a
/// viewing event).
fn pair_at(records: &[Processed], i: u32) -> Option<(&str, &str)> {
    records.get(i as usize).and_then(prepare::video_pair)
}

/// `pairs`' deltas with the (user, video) of the records they name (a delta
/// naming no viewing event is none).
fn named<'a>(
    records: &'a [Processed],
    pairs: &'a [(u32, [f64; 5])],
) -> impl Iterator<Item = (&'a str, &'a str, &'a [f64; 5])> + 'a {
    pairs.iter().filter_map(|(i, d)| {
        let (user, video) = pair_at(records, *i)?;
        Some((user, video, d))
    })
}

/// The timestamp a catalog record is ordered by (tracks carry none: the latest
/// delivered wins).
pub fn catalog_ts(e: &Event) -> i64 {
    match e {
        Event::User(u) => u.timestamp_ms,
        Event::Movie(t) | Event::Series(t) => t.timestamp_ms,
        Event::Track(_) => i64::MAX,
        Event::Video(_) | Event::Music(_) => i64::MIN,
    }
}

/// The catalog key of a catalog record (`None` for viewing and listening events).
fn catalog_key(ev: &Event) -> Option<Vec<u8>> {
    Some(match ev {
        Event::User(u) => keys::join(keys::CAT_USER, &[u.id.as_bytes()]),
        Event::Movie(t) => keys::join(keys::CAT_MOVIE, &[t.id.as_bytes()]),
        Event::Series(t) => keys::join(keys::CAT_SERIES, &[t.id.as_bytes()]),
        Event::Track(t) => keys::join(keys::CAT_TRACK, &[t.track_id.as_bytes()]),
        Event::Video(_) | Event::Music(_) => return None,
    })
}

/// What a plan reads of the stored rows.
pub trait Rows {
    /// The timestamp of the stored catalog record under `key`, if there is one.
    fn catalog_ts(&mut self, key: &[u8]) -> Result<Option<i64>, StoreError>;
}

/// Plans the write of `prepared`, reading the stored rows it changes from `rows`.
pub fn plan(
    reads: &Reads<'_>,
    prepared: Prepared,
    rows: &mut impl Rows,
) -> Result<Plan, StoreError> {
    let Prepared {
        records,
        encoded,
        deltas,
        rollup: rollup_entries,
        mut rollup_cpu_ns,
    } = prepared;
    let ns = reads.ns;
    let seg_key = |topic: &str, partition: i32, first: i64| {
        keys::position(keys::EVENT, ns, topic, partition, first)
    };
    let mut writes: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut segments: FxHashMap<(&str, i32), (i64, segment::SegmentWriter)> = FxHashMap::default();
    let mut running: FxHashMap<(&str, i32), i64> = FxHashMap::default();
    let mut report = ApplyReport::default();
    let mut catalog_pending: FxHashMap<Vec<u8>, i64> = FxHashMap::default();
    let mut fresh = Vec::with_capacity(records.len());
    let mut bytes = 0usize;

    for (i, r) in records.iter().enumerate() {
        let value = encoded.get(i);
        let topic: &str = &r.pos.topic;
        let partition = r.pos.partition;
        let next = running
            .entry((topic, partition))
            .or_insert_with(|| (reads.stored_next)(topic, partition).unwrap_or(0));
        let is_new = r.pos.offset >= *next;
        fresh.push(is_new);
        if !is_new {
            report.duplicates_skipped += 1;
            continue;
        }
        *next = r.pos.offset + 1;
        match &r.outcome {
            Outcome::Valid(ev) => {
                report.stored += 1;
                bytes += value.len();
                if let Some(key) = catalog_key(ev) {
                    let ts = catalog_ts(ev);
                    let current = match catalog_pending.get(&key) {
                        Some(ts) => Some(*ts),
                        None => rows.catalog_ts(&key)?,
                    };
                    if current.is_none_or(|c| ts >= c) {
                        catalog_pending.insert(key.clone(), ts);
                        writes.push((key, value.to_vec()));
                    }
                }
                let seg = segments
                    .entry((topic, partition))
                    .or_insert_with(|| (r.pos.offset, segment::SegmentWriter::new()));
                if !seg.1.is_empty() && seg.1.len_with(value.len()) > MAX_VALUE_BYTES {
                    let full = std::mem::take(&mut seg.1);
                    writes.push((seg_key(topic, partition, seg.0), full.finish()));
                    seg.0 = r.pos.offset;
                    seg.1 = segment::SegmentWriter::new();
                }
                seg.1.push(r.pos.offset, value);
            }
            Outcome::Rejected { rejection, raw } => {
                report.rejected += 1;
                let text = std::str::from_utf8(raw).ok();
                let dead = DeadLetter {
                    rejection: rejection.clone(),
                    namespace: reads.namespace.to_string(),
                    namespace_id: ns,
                    topic: topic.to_string(),
                    partition,
                    offset: r.pos.offset,
                    origin: r.origin.clone(),
                    headers: r.headers.clone(),
                    raw: text.map(str::to_string),
                    raw_hex: if text.is_none() {
                        Some(raw.iter().map(|b| format!("{b:02x}")).collect())
                    } else {
                        None
                    },
                };
                let value = serde_json::to_vec(&dead).unwrap_or_default();
                bytes += value.len();
                writes.push((
                    keys::position(keys::DEAD, ns, topic, partition, r.pos.offset),
                    value,
                ));
            }
        }
    }
    // Redelivered records were skipped: their deltas must not count.
    let mut deltas = if report.duplicates_skipped > 0 {
        prepare::deltas_of(
            records
                .iter()
                .enumerate()
                .zip(&fresh)
                .filter(|(_, f)| **f)
                .map(|((i, r), _)| (i as u32, r)),
        )
    } else {
        deltas
    };
    deltas.count("duplicates_skipped", report.duplicates_skipped as f64);
    // The touched pairs' deltas: one run (see `super::pairs`), written below
    // with the offsets like the journal; no stored row is read or rewritten.
    let mut pairs = std::mem::take(&mut deltas.pairs);
    pairs.retain(|(i, _)| pair_at(&records, *i).is_some());
    let mut tracked = reads.tracked;
    let (folded_videos, folded_listening) =
        bounds::fold(&mut deltas, reads.state, reads.limits, &mut tracked);
    deltas.count("folded/video_events", folded_videos as f64);
    deltas.count("folded/listening_events", folded_listening as f64);

    for ((topic, partition), (first, seg)) in segments {
        writes.push((seg_key(topic, partition, first), seg.finish()));
    }
    // Every journal part also names the offsets this batch writes: a part whose
    // offsets did not reach the disk with it is a fragment of a write that
    // failed, and opening drops it (see `Store::load_state`). Merging ignores them.
    let offset_marks: Vec<(Vec<u8>, [f64; 1])> = running
        .iter()
        .map(|((t, p), next)| (keys::offset_key(reads.namespace, t, *p), [*next as f64]))
        .collect();
    let mut journal_bytes = 0;
    let entries: Vec<(&Vec<u8>, &Vec<f64>)> = deltas.map.iter().collect();
    // About 70 bytes an entry: parts of at most MAX_VALUE_BYTES.
    for (part, chunk) in entries.chunks(MAX_VALUE_BYTES / 96).enumerate() {
        let journal = state::encode_entries(
            chunk
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .chain(offset_marks.iter().map(|(k, v)| (k.as_slice(), &v[..]))),
        );
        journal_bytes += journal.len();
        writes.push((state::journal_key(reads.seq, part as u32), journal));
    }
    // About 80 bytes a pair: parts of at most MAX_VALUE_BYTES.
    for (part, chunk) in pairs.chunks(MAX_VALUE_BYTES / 96).enumerate() {
        let run = pairs::encode_run(named(&records, chunk), &offset_marks);
        bytes += run.len();
        writes.push((pairs::run_key(reads.seq, part as u32), run));
    }
    // The rollup deltas of the fresh events (prepared before, unless some
    // records were redelivered); nothing of them is written (see `super::rollup`).
    let rollup = if report.duplicates_skipped > 0 {
        rollup_entries.recycle();
        let (d, cpu) = rollup::batch_of(
            records
                .iter()
                .enumerate()
                .zip(&fresh)
                .filter(|(_, f)| **f)
                .filter_map(|((i, r), _)| match &r.outcome {
                    Outcome::Valid(ev) => Some((i as u32, ev)),
                    Outcome::Rejected { .. } => None,
                }),
            reads.now_ms,
            &reads.rollup,
        );
        rollup_cpu_ns += cpu;
        d
    } else {
        rollup_entries
    };
    let mut offsets = Vec::with_capacity(running.len());
    for ((topic, partition), next) in running {
        writes.push((
            keys::offset_key(reads.namespace, topic, partition),
            next.to_be_bytes().to_vec(),
        ));
        offsets.push((topic.to_string(), partition, next));
    }
    offsets.sort();
    Ok(Plan {
        records,
        fresh,
        writes,
        deltas,
        pairs,
        rollup,
        rollup_cpu_ns,
        tracked,
        offsets,
        journal_bytes,
        bytes: bytes + journal_bytes,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::SourcePos;
    use crate::domain::reject::Rejection;

    /// Stored rows from plain maps.
    #[derive(Default)]
    struct Held {
        catalog: FxHashMap<Vec<u8>, i64>,
    }

    impl Rows for Held {
        fn catalog_ts(&mut self, key: &[u8]) -> Result<Option<i64>, StoreError> {
            Ok(self.catalog.get(key).copied())
        }
    }

    fn reads<'a>(stored: &'a dyn Fn(&str, i32) -> Option<i64>, state: &'a State) -> Reads<'a> {
        Reads {
            namespace: "ns",
            ns: 1,
            stored_next: stored,
            state,
            limits: Limits::default(),
            tracked: Tracked::default(),
            seq: 7,
            now_ms: 1_735_689_600_000,
            rollup: rollup::Tuning::default(),
        }
    }

    fn valid(offset: i64, ev: Event) -> Processed {
        Processed::at(
            SourcePos {
                topic: "t".into(),
                partition: 0,
                offset,
            },
            Outcome::Valid(ev),
        )
    }

    fn video(offset: i64) -> Processed {
        use crate::synth::generate::{VideoGen, World};
        let mut g = VideoGen::new(World::new(20, 10, 9), 9, 1_735_689_600_000, 50);
        valid(offset, Event::Video(g.next_event()))
    }

    #[test]
    fn redeliveries_are_skipped_and_offsets_advance_past_the_batch() {
        let state = State::default();
        let stored = |t: &str, p: i32| (t == "t" && p == 0).then_some(2);
        let r = reads(&stored, &state);
        let records: Vec<Processed> = (0..5).map(video).collect();
        let p = plan(&r, prepare::prepare(records), &mut Held::default()).unwrap();
        assert_eq!(p.fresh, vec![false, false, true, true, true]);
        assert_eq!(p.report.stored, 3);
        assert_eq!(p.report.duplicates_skipped, 2);
        assert_eq!(p.offsets, vec![("t".to_string(), 0, 5)]);
        // One segment starting at the first new offset, one journal part, one offset.
        let seg = keys::position(keys::EVENT, 1, "t", 0, 2);
        assert!(p.writes.iter().any(|(k, _)| *k == seg));
        assert!(p.writes.iter().any(|(k, _)| *k == state::journal_key(7, 0)));
        let off = p
            .writes
            .iter()
            .find(|(k, _)| *k == keys::offset_key("ns", "t", 0))
            .unwrap();
        assert_eq!(off.1, 5i64.to_be_bytes().to_vec());
        // The skipped records' deltas do not count.
        let events = p
            .deltas
            .map
            .iter()
            .filter(|(k, _)| **k == keys::join(keys::COUNTER, &[b"stored"]))
            .map(|(_, v)| v[0])
            .sum::<f64>();
        assert_eq!(events, 3.0);
    }

    #[test]
    fn rejections_become_dead_letters_at_their_position() {
        let state = State::default();
        let stored = |_: &str, _: i32| None;
        let r = reads(&stored, &state);
        let bad = Processed {
            outcome: Outcome::Rejected {
                rejection: Rejection::new("invalid_json", "x"),
                raw: vec![0xff, 0x00],
            },
            ..video(4)
        };
        let p = plan(&r, prepare::prepare(vec![bad]), &mut Held::default()).unwrap();
        assert_eq!(p.report.rejected, 1);
        let key = keys::position(keys::DEAD, 1, "t", 0, 4);
        let (_, v) = p.writes.iter().find(|(k, _)| *k == key).unwrap();
        let d: DeadLetter = serde_json::from_slice(v).unwrap();
        assert_eq!((d.offset, d.raw_hex.as_deref()), (4, Some("ff00")));
        assert_eq!(p.offsets, vec![("t".to_string(), 0, 5)]);
    }

    #[test]
    fn an_older_catalog_record_never_replaces_a_newer_one() {
        let state = State::default();
        let stored = |_: &str, _: i32| None;
        let r = reads(&stored, &state);
        let movie = |offset: i64, ts: i64| {
            let t = crate::domain::event::Title {
                id: "m1".into(),
                timestamp_ms: ts,
                title: format!("at {ts}"),
                genres: vec!["Drama".into()],
                directors: Vec::new(),
                actors: Vec::new(),
                classification: "PG".into(),
                release_decade: "1990s".into(),
                seasons: None,
                episodes: None,
            };
            valid(offset, Event::Movie(t))
        };
        let key = keys::join(keys::CAT_MOVIE, &[b"m1"]);
        // Stored at ts 100: the record of ts 50 is kept out, the one of ts 200 in.
        let mut held = Held::default();
        held.catalog.insert(key.clone(), 100);
        let p = plan(
            &r,
            prepare::prepare(vec![movie(0, 50), movie(1, 200), movie(2, 150)]),
            &mut held,
        )
        .unwrap();
        let upserts: Vec<i64> = p
            .writes
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| match Event::decode(v).unwrap() {
                Event::Movie(t) => t.timestamp_ms,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(upserts, vec![200]);
        assert_eq!(p.report.stored, 3, "every record is still in the event log");
    }

    #[test]
    fn a_batch_writes_its_new_pair_deltas_as_one_run_with_its_offsets() {
        let state = State::default();
        let stored = |_: &str, _: i32| Some(1);
        let r = reads(&stored, &state);
        let records: Vec<Processed> = (0..2).map(video).collect();
        let Outcome::Valid(Event::Video(v)) = records[1].outcome.clone() else {
            unreachable!()
        };
        let key = keys::join(
            keys::VIDEO_PAIR,
            &[v.user_id.as_bytes(), v.video_id.as_bytes()],
        );
        let d = prepare::pair_delta(&v);
        // Offset 0 was stored already: only offset 1 is in the run.
        let p = plan(&r, prepare::prepare(records), &mut Held::default()).unwrap();
        assert_eq!(
            p.pair_deltas().collect::<Vec<_>>(),
            vec![(v.user_id.as_str(), v.video_id.as_str(), &d)]
        );
        let (_, run) = p
            .writes
            .iter()
            .find(|(k, _)| *k == pairs::run_key(7, 0))
            .unwrap();
        let mut entries = Vec::new();
        state::decode_entries(run, state::Encoding::Current, |k, v| {
            entries.push((k.to_vec(), v.to_vec()))
        })
        .unwrap();
        assert!(entries.iter().any(|(k, _)| *k == key), "the pair's row key");
        let got = pairs::run_pairs(&entries).unwrap();
        assert_eq!(
            got,
            vec![(v.user_id.to_string(), v.video_id.to_string(), d)]
        );
        // The run names the offsets it was written with (a fragment is found by them).
        assert!(entries
            .iter()
            .any(|(k, v)| *k == keys::offset_key("ns", "t", 0) && v == &vec![2.0]));
    }
}
