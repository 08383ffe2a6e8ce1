//! Reads of the rollups: a time range, any combination of filters, grouped
//! by a dimension, by bucket (with the views in progress), or in total.

use std::collections::BTreeMap;

use super::*;
use crate::store::StoreView;

/// Equality filters on the dimensions (each `None`: any).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
}

/// A dimension of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Genre,
    Region,
    Resolution,
    Title,
    Device,
    Track,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Genre => "genre",
            Field::Region => "region",
            Field::Resolution => "resolution",
            Field::Title => "title",
            Field::Device => "device",
            Field::Track => "track",
        }
    }

    fn is_music(self) -> bool {
        matches!(self, Field::Device | Field::Track)
    }

    /// Where `self` is in a row of `cube`.
    fn index(self, cube: Cube) -> Option<usize> {
        match (cube, self) {
            (Cube::Dims, Field::Genre) => Some(0),
            (Cube::Dims, Field::Region) => Some(1),
            (Cube::Dims, Field::Resolution) => Some(2),
            (Cube::Titles, Field::Title) => Some(0),
            (Cube::Titles, Field::Genre) => Some(1),
            (Cube::Titles, Field::Region) => Some(2),
            (Cube::Titles, Field::Resolution) => Some(3),
            (Cube::Music, Field::Track) => Some(0),
            (Cube::Music, Field::Device) => Some(1),
            _ => None,
        }
    }
}

impl Filter {
    fn fields(&self) -> impl Iterator<Item = (Field, &str)> {
        [
            (Field::Genre, &self.genre),
            (Field::Region, &self.region),
            (Field::Resolution, &self.resolution),
            (Field::Title, &self.title),
            (Field::Device, &self.device),
            (Field::Track, &self.track),
        ]
        .into_iter()
        .filter_map(|(f, v)| v.as_deref().map(|v| (f, v)))
    }
}

/// How the rows are added up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Total,
    /// One point per bucket of the range (empty ones too).
    Series,
    By(Field),
}

/// A question for the rollups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangeQuery {
    /// Listening events (else views).
    pub music: bool,
    pub from_ms: i64,
    /// Exclusive.
    pub to_ms: i64,
    pub grain: Grain,
    pub filter: Filter,
    pub group: Group,
}

/// A question the rollups cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("{field} is a dimension of {of} only; drop it, or ask about {of}")]
    Mismatch {
        field: &'static str,
        of: &'static str,
    },
    #[error("titles are kept by the hour: ask with --step hour (or without --step)")]
    TitlesByHour,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One bucket of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub bucket: i64,
    pub sums: Sums,
    /// Views in progress during the bucket (views by the dimensions only:
    /// titles are kept without their ends).
    pub in_progress: Option<u64>,
    /// Members of the group holding rows of the bucket (this one included).
    pub members: u32,
}

/// What a [`RangeQuery`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RangeRows {
    /// (key, sums), most viewed first (`Group::By`), or one "all" row.
    pub groups: Vec<(String, Sums)>,
    pub points: Vec<Point>,
    /// Rows read (chunks and held batches).
    pub rows_read: u64,
    /// Members of the group holding rows of the range (this one included).
    pub members: u32,
}

impl RangeQuery {
    /// The cube that answers it.
    pub fn cube(&self) -> Result<Cube, RangeError> {
        let fields = self
            .filter
            .fields()
            .map(|(f, _)| f)
            .chain(match self.group {
                Group::By(f) => Some(f),
                _ => None,
            });
        let mut titles = false;
        for f in fields {
            if f.is_music() != self.music {
                return Err(RangeError::Mismatch {
                    field: f.name(),
                    of: if f.is_music() {
                        "listening events"
                    } else {
                        "views"
                    },
                });
            }
            titles |= f == Field::Title;
        }
        Ok(match (self.music, titles) {
            (true, _) => Cube::Music,
            (false, true) => Cube::Titles,
            (false, false) => Cube::Dims,
        })
    }
}

impl StoreView {
    /// Answers `q` from the rollups' chunks and the batches not yet in them.
    pub fn rollups(&self, q: &RangeQuery) -> Result<RangeRows, RangeError> {
        let cube = q.cube()?;
        if cube == Cube::Titles && q.grain == Grain::Minute {
            return Err(RangeError::TitlesByHour);
        }
        let g = q.grain.ms();
        let from = q.grain.bucket(q.from_ms);
        let to = q.grain.bucket(q.to_ms.saturating_sub(1)).saturating_add(g);
        // A series of views counts those in progress from the start of the
        // hour its range starts in: the views in progress then (kept by the
        // hour in `anchors`), plus those started since, less those ended.
        let anchored = q.group == Group::Series && cube == Cube::Dims;
        let scan_from = if anchored {
            Grain::Hour.bucket(from)
        } else {
            from
        };
        let filters: Vec<(usize, &str)> = q
            .filter
            .fields()
            .filter_map(|(f, v)| f.index(cube).map(|i| (i, v)))
            .collect();
        let key_at = match q.group {
            Group::By(f) => f.index(cube),
            _ => None,
        };
        let mut by_bucket: BTreeMap<i64, Sums> = BTreeMap::new();
        let mut by_key: FxHashMap<String, Sums> = FxHashMap::default();
        let mut rows_read = 0u64;
        let mut anchor = 0u64;
        let mut reported = Reported::default();
        {
            let _gate = self.rollups.gate.read().unwrap_or_else(|p| p.into_inner());
            let mut take = |bucket: i64, tuple: &Tuple<&str>, sums: &Sums| {
                rows_read += 1;
                if bucket < scan_from || bucket >= to {
                    return;
                }
                if !filters.iter().all(|(i, v)| tuple[*i] == *v) {
                    return;
                }
                match q.group {
                    Group::Series => by_bucket.entry(bucket).or_default().add(sums),
                    Group::Total | Group::By(_) => {
                        // Rows of views ended (started before the range) only count in series.
                        if bucket < from || sums.weight() == 0 {
                            return;
                        }
                        let key = key_at.map_or("all", |i| tuple[i]);
                        match by_key.get_mut(key) {
                            Some(s) => s.add(sums),
                            None => {
                                by_key.insert(key.to_string(), *sums);
                            }
                        }
                    }
                }
            };
            self.scan_rollups(
                cube,
                q.grain,
                scan_from,
                to,
                &filters,
                key_at,
                &mut take,
                Some(&mut reported),
            )?;
            if anchored {
                let at = scan_from;
                let mut count = |bucket: i64, tuple: &Tuple<&str>, sums: &Sums| {
                    if bucket == at && filters.iter().all(|(i, v)| tuple[*i] == *v) {
                        anchor = anchor.saturating_add(sums.get(slot::ENDED));
                    }
                };
                let hour = at.saturating_add(HOUR_MS);
                self.scan_rollups(
                    Cube::Anchors,
                    Grain::Hour,
                    at,
                    hour,
                    &filters,
                    None,
                    &mut count,
                    None,
                )?;
            }
        }
        let (per_bucket, members) = reported.counts(from, to);
        let mut out = RangeRows {
            rows_read,
            members,
            ..RangeRows::default()
        };
        match q.group {
            Group::Series => {
                let (mut started, mut ended) = (anchor, 0u64);
                let mut b = scan_from;
                while b < to {
                    let sums = by_bucket.get(&b).copied().unwrap_or_default();
                    started = started.saturating_add(sums.get(slot::VIEWS));
                    if b >= from {
                        out.points.push(Point {
                            bucket: b,
                            sums,
                            in_progress: anchored.then(|| started.saturating_sub(ended)),
                            members: per_bucket.get(&b).copied().unwrap_or(0),
                        });
                    }
                    ended = ended.saturating_add(sums.get(slot::ENDED));
                    b = b.saturating_add(g);
                }
            }
            Group::Total | Group::By(_) => {
                let mut v: Vec<(String, Sums)> = by_key.into_iter().collect();
                v.sort_by(|a, b| b.1.weight().cmp(&a.1.weight()).then_with(|| a.0.cmp(&b.0)));
                out.groups = v;
            }
        }
        Ok(out)
    }

    /// Hands `take` the rows of `cube` by `grain` in buckets [from, to): the
    /// chunks', the held generations' and the group's peers' (see
    /// [`super::group`]). A filter on the lead (genre of dims, title, track)
    /// seeks its groups; without filters or a breakdown on the other values,
    /// the groups' totals answer, and with one filter (or a breakdown) on
    /// another value, the parts' facet totals of it. The caller holds the
    /// gate and filters what it is handed. `reported`, when asked, gets the
    /// members holding rows of each bucket (this one as the empty name).
    #[allow(clippy::too_many_arguments)]
    fn scan_rollups(
        &self,
        cube: Cube,
        grain: Grain,
        from: i64,
        to: i64,
        filters: &[(usize, &str)],
        key_at: Option<usize>,
        take: &mut dyn FnMut(i64, &Tuple<&str>, &Sums),
        mut reported: Option<&mut Reported>,
    ) -> Result<(), RangeError> {
        let reading = Reading {
            lead: filters.iter().find(|(i, _)| *i == 0).map(|(_, v)| *v),
            need_rows: filters.iter().any(|(i, _)| *i != 0) || key_at.is_some_and(|i| i != 0),
            facet_at: match (filters, key_at) {
                ([(p, _)], None) if *p != 0 => Some(*p),
                ([(p, _)], Some(k)) if *p != 0 && k == *p => Some(*p),
                ([], Some(k)) if k != 0 => Some(k),
                _ => None,
            },
        };
        let start = bucket_prefix(grain, cube, from);
        let end = bucket_prefix(grain, cube, to);
        for item in self.tree().range(start..end) {
            let (k, v) = item.map_err(StoreError::from)?;
            let bucket = read_chunk(&k, &v, &reading, take)?;
            if let Some(r) = reported.as_deref_mut() {
                r.note(bucket, b"");
            }
        }
        // The held generations, read in one hold of the lock: the compactor
        // moves pending to compacting under it, and compacting to chunks
        // only with the gate.
        {
            let h = self.rollups.lock();
            // (this store's buckets noted once each, not once per row)
            let mut held_buckets = rustc_hash::FxHashSet::default();
            for gen in h.generations() {
                // (only the held minutes of the range: a backfill holds many)
                for (minute, held) in gen.buckets(cube) {
                    let bucket = grain.bucket(minute);
                    if bucket < from || bucket >= to {
                        continue;
                    }
                    for (ids, sums) in held {
                        take(bucket, &ids.map(|n| gen.name(n)), sums);
                    }
                    if reported.is_some() {
                        held_buckets.insert(bucket);
                    }
                }
            }
            if let Some(r) = reported.as_deref_mut() {
                for bucket in held_buckets {
                    r.note(bucket, b"");
                }
            }
        }
        let start = super::group::group_prefix(grain, cube, from);
        let end = super::group::group_prefix(grain, cube, to);
        for item in self.tree().range(start..end) {
            let (k, v) = item.map_err(StoreError::from)?;
            let bucket = read_chunk(&k, &v, &reading, take)?;
            if let (Some(r), Some(member)) =
                (reported.as_deref_mut(), super::group::group_member(&k))
            {
                r.note(bucket, member);
            }
        }
        Ok(())
    }

    /// The rollups' compactor counters.
    pub fn rollup_status(&self) -> RollupStatus {
        self.rollups.status()
    }
}

/// How a scan reads a chunk (see [`StoreView::scan_rollups`]).
struct Reading<'q> {
    lead: Option<&'q str>,
    need_rows: bool,
    facet_at: Option<usize>,
}

/// Hands `take` the rows of one chunk part (this store's or a peer's);
/// answers its bucket.
fn read_chunk(
    k: &[u8],
    v: &[u8],
    r: &Reading<'_>,
    take: &mut dyn FnMut(i64, &Tuple<&str>, &Sums),
) -> Result<i64, RangeError> {
    let bucket = chunk_bucket(k).ok_or_else(|| StoreError::Corrupt {
        key: crate::store::read::entry_name(k),
        message: "a rollup chunk key of the wrong length".into(),
    })?;
    let corrupt = || StoreError::Corrupt {
        key: crate::store::read::entry_name(k),
        message: "a rollup chunk that does not read back".into(),
    };
    if !chunk::is_grouped(k) {
        for (t, s) in &decode_rows(v).ok_or_else(corrupt)? {
            take(bucket, t, s);
        }
        return Ok(bucket);
    }
    let g = chunk::Grouped::parse(v).ok_or_else(corrupt)?;
    if let Some((p, values)) = r.facet_at.and_then(|p| g.facet(p).map(|v| (p, v))) {
        for (value, s) in values {
            let mut t = [""; 4];
            t[p] = value;
            take(bucket, &t, &s);
        }
        return Ok(bucket);
    }
    for i in r.lead.map_or(0..g.len(), |l| g.find(l)) {
        let l = g.lead(i).ok_or_else(corrupt)?;
        if r.need_rows {
            for (row, s) in g.rows(i).ok_or_else(corrupt)? {
                take(bucket, &[l, row[0], row[1], row[2]], &s);
            }
        } else {
            take(bucket, &[l, "", "", ""], &g.total(i).ok_or_else(corrupt)?);
        }
    }
    Ok(bucket)
}

/// The members holding rows of each bucket a scan read (this store's as the
/// empty name).
#[derive(Debug, Default)]
pub struct Reported(BTreeMap<i64, Vec<Vec<u8>>>);

impl Reported {
    fn note(&mut self, bucket: i64, member: &[u8]) {
        let at = self.0.entry(bucket).or_default();
        if !at.iter().any(|m| m == member) {
            at.push(member.to_vec());
        }
    }

    /// Members per bucket in [from, to), and members in all of it.
    fn counts(&self, from: i64, to: i64) -> (BTreeMap<i64, u32>, u32) {
        let mut all: Vec<&[u8]> = Vec::new();
        let mut per = BTreeMap::new();
        for (b, members) in self.0.range(from..to) {
            per.insert(*b, members.len() as u32);
            for m in members {
                if !all.contains(&m.as_slice()) {
                    all.push(m);
                }
            }
        }
        (per, all.len() as u32)
    }
}
