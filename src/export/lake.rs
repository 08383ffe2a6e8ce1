//! The Parquet data lake: `playpulse export parquet --data-dir D --out DIR`
//! writes what the store holds as `DIR/<kind>/date=YYYY-MM-DD/part-00000.parquet`
//! (hive-style partitions by the row's date, zstd), so Spark, DuckDB or pandas
//! read it directly:
//!
//! | kind | rows | date of |
//! |---|---|---|
//! | `video_events` | every stored viewing event with its source position | the event |
//! | `music_events` | every stored listening event | the event |
//! | `pair_aggregates` | per (user, video) implicit feedback, `held_out` by the trainer's split | the last event |
//! | `music_pairs` | per (user, track) implicit feedback (listening counts × `models.event_weights`), `held_out` likewise | the last event |
//! | `catalog_users`, `catalog_titles`, `catalog_tracks` | the latest catalog records | the record (tracks: the export) |
//! | `graph_edges` | User-[PLAYED…]->Track (count, last_ts), Track-[BY]->Artist, Track-[IN_GENRE]->Genre | the last event (BY, IN_GENRE: the export) |
//! | `recommendations` | the champion's top k per user, with titles | the export |

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use thiserror::Error;

use crate::domain::event::{Event, MusicAction};
use crate::store::Store;
use crate::views::affinity::Entry;

#[derive(Debug, Error)]
pub enum LakeError {
    #[error("cannot write {path}: {message}; check the --out directory is writable")]
    Write { path: String, message: String },
    #[error("reading the store failed: {0}")]
    Store(String),
}

/// A column's type.
#[derive(Debug, Clone, Copy)]
enum Col {
    Str,
    OptStr,
    I64,
    OptI64,
    F64,
    OptF64,
    Bool,
    /// Milliseconds since the epoch, UTC.
    Ts,
    OptTs,
    List,
}

/// One cell of a row, in its column's type.
#[derive(Debug, Clone)]
enum Cell {
    S(String),
    OS(Option<String>),
    I(i64),
    OI(Option<i64>),
    F(f64),
    OF(Option<f64>),
    B(bool),
    T(i64),
    OT(Option<i64>),
    L(Vec<String>),
}

const UTC: &str = "UTC";

fn data_type(c: Col) -> DataType {
    match c {
        Col::Str | Col::OptStr => DataType::Utf8,
        Col::I64 | Col::OptI64 => DataType::Int64,
        Col::F64 | Col::OptF64 => DataType::Float64,
        Col::Bool => DataType::Boolean,
        Col::Ts | Col::OptTs => DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into())),
        Col::List => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
    }
}

fn nullable(c: Col) -> bool {
    matches!(c, Col::OptStr | Col::OptI64 | Col::OptF64 | Col::OptTs)
}

/// One date partition: rows not written yet, and its file once opened.
type Part = (Vec<Vec<Cell>>, Option<ArrowWriter<std::fs::File>>);

/// Rows of one kind, buffered per date partition and written in batches.
struct Table {
    kind: &'static str,
    cols: Vec<(&'static str, Col)>,
    schema: Arc<Schema>,
    out: PathBuf,
    parts: HashMap<String, Part>,
    rows: u64,
}

const BATCH_ROWS: usize = 65_536;

fn werr(path: &Path, e: impl std::fmt::Display) -> LakeError {
    LakeError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn column(c: Col, rows: &[Vec<Cell>], i: usize) -> ArrayRef {
    // One builder per column; a cell of another shape is a null.
    macro_rules! build {
        ($b:expr, $($pat:pat => $v:expr),+) => {{
            let mut b = $b;
            for r in rows {
                match &r[i] {
                    $($pat => b.append_option($v),)+
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    match c {
        Col::Str | Col::OptStr => build!(StringBuilder::new(),
            Cell::S(s) => Some(s.as_str()), Cell::OS(s) => s.as_deref()),
        Col::I64 | Col::OptI64 => build!(Int64Builder::new(),
            Cell::I(v) => Some(*v), Cell::OI(v) => *v),
        Col::F64 | Col::OptF64 => build!(Float64Builder::new(),
            Cell::F(v) => Some(*v), Cell::OF(v) => *v),
        Col::Bool => build!(BooleanBuilder::new(), Cell::B(v) => Some(*v)),
        Col::Ts | Col::OptTs => build!(TimestampMillisecondBuilder::new().with_timezone(UTC),
            Cell::T(v) => Some(*v), Cell::OT(v) => *v),
        Col::List => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for r in rows {
                match &r[i] {
                    Cell::L(v) => {
                        for s in v {
                            b.values().append_value(s);
                        }
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
    }
}

impl Table {
    fn new(out: &Path, kind: &'static str, cols: Vec<(&'static str, Col)>) -> Table {
        let schema = Arc::new(Schema::new(
            cols.iter()
                .map(|(n, c)| Field::new(*n, data_type(*c), nullable(*c)))
                .collect::<Vec<_>>(),
        ));
        Table {
            kind,
            cols,
            schema,
            out: out.join(kind),
            parts: HashMap::new(),
            rows: 0,
        }
    }

    fn push(&mut self, date: String, row: Vec<Cell>) -> Result<(), LakeError> {
        let part = self.parts.entry(date.clone()).or_default();
        part.0.push(row);
        self.rows += 1;
        if part.0.len() >= BATCH_ROWS {
            self.flush(&date)?;
        }
        Ok(())
    }

    fn flush(&mut self, date: &str) -> Result<(), LakeError> {
        let dir = self.out.join(format!("date={date}"));
        let Some((rows, writer)) = self.parts.get_mut(date) else {
            return Ok(());
        };
        if rows.is_empty() {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .cols
            .iter()
            .enumerate()
            .map(|(i, (_, c))| column(*c, rows, i))
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| werr(&dir, e))?;
        rows.clear();
        if writer.is_none() {
            std::fs::create_dir_all(&dir).map_err(|e| werr(&dir, e))?;
            let path = dir.join("part-00000.parquet");
            let file = std::fs::File::create(&path).map_err(|e| werr(&path, e))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            *writer = Some(
                ArrowWriter::try_new(file, self.schema.clone(), Some(props))
                    .map_err(|e| werr(&path, e))?,
            );
        }
        if let Some(w) = writer {
            w.write(&batch).map_err(|e| werr(&dir, e))?;
        }
        Ok(())
    }

    /// Writes what is buffered and closes every file; answers (rows, partitions).
    fn finish(mut self) -> Result<(u64, usize), LakeError> {
        let dates: Vec<String> = self.parts.keys().cloned().collect();
        for d in &dates {
            self.flush(d)?;
        }
        for (d, (_, w)) in self.parts.drain() {
            if let Some(w) = w {
                w.close()
                    .map_err(|e| werr(&self.out.join(format!("date={d}")), e))?;
            }
        }
        Ok((self.rows, dates.len()))
    }
}

/// The UTC date of a time in ms, as partitions name it.
pub fn date_of(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// What one kind wrote.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub rows: u64,
    pub partitions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LakeReport {
    pub out: String,
    pub kinds: BTreeMap<&'static str, KindReport>,
    pub seconds: f64,
}

/// How the trainer weighs and splits pairs (`[models]`): the lake marks the
/// pairs it holds out, so a model trained elsewhere on the others is scored
/// on pairs it never saw (`split.json` at the lake's root says which draw).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LakeSplit {
    pub draw: crate::ml::dataset::Split,
    /// Listening weights, in [`MusicAction`] order.
    pub music_weights: [f64; 5],
}

impl LakeSplit {
    pub fn of(m: &crate::ml::config::ModelsConfig) -> LakeSplit {
        LakeSplit {
            draw: crate::ml::dataset::Split::of(m),
            music_weights: m.event_weights.by_action(),
        }
    }
}

/// Writes the lake from a store (the daemon stopped, or a `snapshot` of it).
/// `k` recommendations per user when a champion exists.
pub fn export_parquet(
    store: &Store,
    out: &Path,
    k: usize,
    split: &LakeSplit,
) -> Result<LakeReport, LakeError> {
    use Cell::*;
    let t = std::time::Instant::now();
    let today = date_of(crate::domain::timefmt::now_ms());
    let serr = |e: crate::store::StoreError| LakeError::Store(e.to_string());
    let mut video = Table::new(
        out,
        "video_events",
        vec![
            ("namespace", Col::Str),
            ("topic", Col::Str),
            ("partition", Col::I64),
            ("offset", Col::I64),
            ("user_id", Col::Str),
            ("video_id", Col::Str),
            ("watch_time_seconds", Col::F64),
            ("resolution", Col::Str),
            ("bitrate_kbps", Col::I64),
            ("buffering_events", Col::I64),
            ("paused", Col::Bool),
            ("skipped", Col::Bool),
            ("genre", Col::Str),
            ("region", Col::Str),
            ("recommended", Col::Bool),
            ("timestamp", Col::Ts),
            ("startup_time_ms", Col::OptF64),
            ("rebuffer_ms", Col::OptF64),
            ("error", Col::OptStr),
        ],
    );
    let mut music = Table::new(
        out,
        "music_events",
        vec![
            ("namespace", Col::Str),
            ("topic", Col::Str),
            ("partition", Col::I64),
            ("offset", Col::I64),
            ("user_id", Col::Str),
            ("track_id", Col::Str),
            ("event_type", Col::Str),
            ("event_ts", Col::Ts),
            ("session_id", Col::Str),
            ("device", Col::Str),
        ],
    );
    let mut names: std::collections::HashMap<u32, String> = Default::default();
    for item in store.event_log() {
        let logged = item.map_err(serr)?;
        let ns = names
            .entry(logged.namespace)
            .or_insert_with(|| store.namespace_name(logged.namespace).unwrap_or_default())
            .clone();
        let (pos, ev) = (logged.pos, logged.event);
        let (topic, p, o) = (pos.topic.to_string(), i64::from(pos.partition), pos.offset);
        match ev {
            Event::Video(v) => video.push(
                date_of(v.timestamp_ms),
                vec![
                    S(ns),
                    S(topic),
                    I(p),
                    I(o),
                    S(v.user_id.into()),
                    S(v.video_id.into()),
                    F(v.watch_time_seconds),
                    S(v.resolution.into()),
                    I(v.bitrate_kbps),
                    I(v.buffering_events),
                    B(v.paused),
                    B(v.skipped),
                    S(v.genre.into()),
                    S(v.region.into()),
                    B(v.recommended),
                    T(v.timestamp_ms),
                    OF(v.startup_time_ms),
                    OF(v.rebuffer_ms),
                    OS(v.error),
                ],
            )?,
            Event::Music(m) => music.push(
                date_of(m.event_ts_ms),
                vec![
                    S(ns),
                    S(topic),
                    I(p),
                    I(o),
                    S(m.user_id.into()),
                    S(m.track_id.into()),
                    S(m.event_type.as_str().into()),
                    T(m.event_ts_ms),
                    S(m.session_id.into()),
                    S(m.device.into()),
                ],
            )?,
            // Catalog records: their latest versions are written below.
            _ => {}
        }
    }

    let mut pairs = Table::new(
        out,
        "pair_aggregates",
        vec![
            ("user_id", Col::Str),
            ("item_id", Col::Str),
            ("weight", Col::F64),
            ("events", Col::I64),
            ("positive_events", Col::I64),
            ("max_feedback", Col::F64),
            ("last_ts", Col::Ts),
            ("held_out", Col::Bool),
        ],
    );
    let held_out = crate::ml::dataset::HeldOut::new(split.draw.test_fraction, split.draw.seed);
    for item in store.pair_aggregates() {
        let (u, i, a) = item.map_err(serr)?;
        let h = held_out.of(&u, &i);
        pairs.push(
            date_of(a.last_ts_ms),
            vec![
                S(u),
                S(i),
                F(a.weight),
                I(a.events as i64),
                I(a.positive_events as i64),
                F(a.max_feedback),
                T(a.last_ts_ms),
                B(h),
            ],
        )?;
    }
    let mut music_pairs = Table::new(
        out,
        "music_pairs",
        vec![
            ("user_id", Col::Str),
            ("track_id", Col::Str),
            ("weight", Col::F64),
            ("events", Col::I64),
            ("last_ts", Col::Ts),
            ("held_out", Col::Bool),
        ],
    );
    let aggs = store.music_aggregates().map_err(serr)?;
    for (u, t, a) in crate::ml::dataset::music_pairs(aggs, split.music_weights) {
        let h = held_out.of(&u, &t);
        music_pairs.push(
            date_of(a.last_ts_ms),
            vec![
                S(u),
                S(t),
                F(a.weight),
                I(a.events as i64),
                T(a.last_ts_ms),
                B(h),
            ],
        )?;
    }

    let mut users = Table::new(
        out,
        "catalog_users",
        vec![
            ("id", Col::Str),
            ("timestamp", Col::Ts),
            ("name", Col::Str),
            ("subscription_date", Col::Str),
            ("genres", Col::List),
            ("directors", Col::List),
            ("actors", Col::List),
            ("classification", Col::Str),
            ("favorite_decades", Col::List),
        ],
    );
    for (_, p) in store.user_profiles().map_err(serr)? {
        users.push(
            date_of(p.timestamp_ms),
            vec![
                S(p.id),
                T(p.timestamp_ms),
                S(p.name),
                S(p.subscription_date),
                L(p.genres),
                L(p.directors),
                L(p.actors),
                S(p.classification),
                L(p.favorite_decades),
            ],
        )?;
    }
    let mut titles = Table::new(
        out,
        "catalog_titles",
        vec![
            ("kind", Col::Str),
            ("id", Col::Str),
            ("timestamp", Col::Ts),
            ("title", Col::Str),
            ("genres", Col::List),
            ("directors", Col::List),
            ("actors", Col::List),
            ("classification", Col::Str),
            ("release_decade", Col::Str),
            ("seasons", Col::OptI64),
            ("episodes", Col::OptI64),
        ],
    );
    let catalog = crate::views::indexes::titles_of(store).map_err(serr)?;
    for (id, Entry { kind, title: t }) in catalog.entries() {
        titles.push(
            date_of(t.timestamp_ms),
            vec![
                S(kind.to_string()),
                S(id.clone()),
                T(t.timestamp_ms),
                S(t.title.clone()),
                L(t.genres.clone()),
                L(t.directors.clone()),
                L(t.actors.clone()),
                S(t.classification.clone()),
                S(t.release_decade.clone()),
                OI(t.seasons),
                OI(t.episodes),
            ],
        )?;
    }
    let mut tracks = Table::new(
        out,
        "catalog_tracks",
        vec![
            ("track_id", Col::Str),
            ("artist", Col::Str),
            ("album", Col::Str),
            ("duration_ms", Col::I64),
            ("genre", Col::Str),
            ("title", Col::Str),
        ],
    );
    let mut edges = Table::new(
        out,
        "graph_edges",
        vec![
            ("src", Col::Str),
            ("relation", Col::Str),
            ("dst", Col::Str),
            ("count", Col::OptI64),
            ("last_ts", Col::OptTs),
        ],
    );
    for t in store.tracks().map_err(serr)? {
        for (rel, dst) in [("BY", &t.artist), ("IN_GENRE", &t.genre)] {
            edges.push(
                today.clone(),
                vec![
                    S(t.track_id.clone()),
                    S(rel.into()),
                    S(dst.clone()),
                    OI(None),
                    OT(None),
                ],
            )?;
        }
        tracks.push(
            today.clone(),
            vec![
                S(t.track_id),
                S(t.artist),
                S(t.album),
                I(t.duration_ms),
                S(t.genre),
                S(t.title),
            ],
        )?;
    }
    for (u, t, a) in store.music_aggregates().map_err(serr)? {
        for action in MusicAction::ALL {
            let c = a.counts[action.index()];
            if c > 0 {
                edges.push(
                    date_of(a.last_ts_ms),
                    vec![
                        S(u.clone()),
                        S(crate::views::graph::relation(action).into()),
                        S(t.clone()),
                        OI(Some(c as i64)),
                        OT(Some(a.last_ts_ms)),
                    ],
                )?;
            }
        }
    }

    let mut recs = Table::new(
        out,
        "recommendations",
        vec![
            ("model", Col::I64),
            ("user_id", Col::Str),
            ("rank", Col::I64),
            ("item", Col::Str),
            ("title", Col::OptStr),
            ("score", Col::F64),
            ("domain", Col::Str),
        ],
    );
    if let Some((id, bundle)) =
        crate::ml::serve::load_champion(store).map_err(|e| LakeError::Store(e.to_string()))?
    {
        let r = crate::ml::serve::Recommender::new(bundle);
        for (row, u) in r.bundle().users.iter().enumerate() {
            let lists = super::csv::domains_seen(&r, row as u32)
                .into_iter()
                .map(|d| {
                    let taste = crate::ml::serve::Taste::Trained(row as u32);
                    r.recommend_taste(taste, k, d, None, |_, _| {})
                });
            for (rank, rec) in lists.flat_map(|l| l.into_iter().enumerate()) {
                let title = catalog.get(&rec.item).map(|e| e.title.title.clone());
                recs.push(
                    today.clone(),
                    vec![
                        I(id as i64),
                        S(u.clone()),
                        I(rank as i64 + 1),
                        S(rec.item),
                        OS(title),
                        F(f64::from(rec.score)),
                        S(rec.domain.to_string()),
                    ],
                )?;
            }
        }
    }

    let mut kinds = BTreeMap::new();
    for table in [
        video,
        music,
        pairs,
        music_pairs,
        users,
        titles,
        tracks,
        edges,
        recs,
    ] {
        let kind = table.kind;
        let (rows, partitions) = table.finish()?;
        kinds.insert(kind, KindReport { rows, partitions });
    }
    let split_path = out.join("split.json");
    std::fs::write(
        &split_path,
        serde_json::to_vec(&split.draw).map_err(|e| LakeError::Store(e.to_string()))?,
    )
    .map_err(|e| LakeError::Write {
        path: split_path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(LakeReport {
        out: out.display().to_string(),
        kinds,
        seconds: t.elapsed().as_secs_f64(),
    })
}
