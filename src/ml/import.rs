//! Factors trained elsewhere, made a candidate like any other: the Spark route
//! for training past one machine. `spark/train_als.py` trains Spark MLlib's
//! implicit ALS on the Parquet lake (`playpulse export parquet`) and writes
//!
//! - `DIR/meta.json`: `{"source", "rank", "iterations", "reg_param", "alpha",
//!   "fit_s", "pairs"}`;
//! - `DIR/users/*.parquet` and `DIR/items/*.parquet`: one row per id, columns
//!   `id` (string) and `features` (list of `rank` floats), zstd or uncompressed.
//!
//! [`read_factors`] reads and checks them (every count, length and value is
//! bounded; a bad row is named with its file, row, field and value);
//! [`candidate`] lays them over a training snapshot's held-out split (the
//! same seeded split the trainer draws), so the evaluator scores them against
//! the champion and popularity on the same data and promotion decides as for
//! any trained version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow_array::{Array, Float32Array, Float64Array, ListArray, StringArray};
use serde::{Deserialize, Serialize};

use super::als::{AlsModel, AlsParams};
use super::dataset::Interactions;
use super::train::Candidate;

/// Most rows a side (users, items) may hold.
pub const MAX_ROWS: usize = 50_000_000;
/// Most factor values a side may hold (2 GB of f32).
pub const MAX_VALUES: usize = 500_000_000;
/// Longest id, in bytes.
pub const MAX_ID_BYTES: usize = 1024;
/// Largest `meta.json`, in bytes.
const MAX_META_BYTES: u64 = 64 * 1024;

/// What the job says it trained (`meta.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportMeta {
    /// Who trained them, e.g. "spark-mllib-als 4.3.0".
    pub source: String,
    pub rank: usize,
    pub iterations: usize,
    pub reg_param: f32,
    pub alpha: f32,
    /// Seconds the fit took there.
    #[serde(default)]
    pub fit_s: f64,
    /// Pairs it trained on.
    #[serde(default)]
    pub pairs: u64,
    /// The lake's held-out draw its training left out (`split.json`): the
    /// store's must be the same, or the evaluator's test pairs may have
    /// been trained on.
    pub split: super::dataset::Split,
}

/// One side's factors: names, their rows, and `rank` floats a row.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub names: Vec<String>,
    pub index: HashMap<String, u32>,
    pub factors: Vec<f32>,
}

impl Side {
    fn row(&self, name: &str, rank: usize) -> Option<&[f32]> {
        let &r = self.index.get(name)?;
        let r = r as usize;
        self.factors.get(r * rank..(r + 1) * rank)
    }
}

#[derive(Debug, Clone)]
pub struct ImportedFactors {
    pub dir: PathBuf,
    pub meta: ImportMeta,
    pub users: Side,
    pub items: Side,
}

/// What an import matched, recorded with the version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportInfo {
    pub from: String,
    pub source: String,
    /// Seconds the fit took where it ran.
    pub fit_s: f64,
    /// Pairs it trained on there.
    pub pairs: u64,
    /// The snapshot's users and items with imported factors, and without
    /// (those score 0: a user without factors gets no personal order).
    pub users_matched: usize,
    pub users_missing: usize,
    pub items_matched: usize,
    pub items_missing: usize,
    /// Imported rows the snapshot does not have.
    pub users_unused: usize,
    pub items_unused: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {what}: {fix}")]
    Invalid {
        path: String,
        what: String,
        fix: &'static str,
    },
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> ImportError {
    ImportError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn invalid(path: &Path, what: String, fix: &'static str) -> ImportError {
    ImportError::Invalid {
        path: path.display().to_string(),
        what,
        fix,
    }
}

/// Reads and checks `dir`'s factors (see the module's documentation).
pub fn read_factors(dir: &Path) -> Result<ImportedFactors, ImportError> {
    let meta_path = dir.join("meta.json");
    let meta_file = std::fs::File::open(&meta_path).map_err(|e| read_err(&meta_path, e))?;
    let size = meta_file
        .metadata()
        .map_err(|e| read_err(&meta_path, e))?
        .len();
    if size > MAX_META_BYTES {
        return Err(invalid(
            &meta_path,
            format!("{size} bytes"),
            "meta.json is at most 64 KiB: the job writes a few fields",
        ));
    }
    let meta: ImportMeta = serde_json::from_reader(std::io::BufReader::new(meta_file))
        .map_err(|e| {
            invalid(
                &meta_path,
                e.to_string(),
                "it needs source, rank, iterations, reg_param, alpha and split (spark/train_als.py writes them)",
            )
        })?;
    // The same bounds as a fit here.
    AlsParams {
        factors: meta.rank,
        iterations: meta.iterations,
        regularization: meta.reg_param,
        alpha: meta.alpha,
        ..AlsParams::default()
    }
    .check()
    .map_err(|e| {
        invalid(
            &meta_path,
            e.to_string(),
            "rank, iterations, reg_param and alpha are bounded as models.* are",
        )
    })?;
    if meta.source.len() > MAX_ID_BYTES || !meta.fit_s.is_finite() || meta.fit_s < 0.0 {
        return Err(invalid(
            &meta_path,
            format!(
                "source of {} bytes, fit_s {}",
                meta.source.len(),
                meta.fit_s
            ),
            "source is at most 1024 bytes and fit_s a finite number ≥ 0",
        ));
    }
    let users = read_side(&dir.join("users"), meta.rank)?;
    let items = read_side(&dir.join("items"), meta.rank)?;
    Ok(ImportedFactors {
        dir: dir.to_path_buf(),
        meta,
        users,
        items,
    })
}

/// The Parquet files of one side, in name order (Spark's `part-*`; its
/// marker and checksum files are skipped).
fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read_err(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_')
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(invalid(
            dir,
            "no .parquet file".into(),
            "the job writes DIR/users/*.parquet and DIR/items/*.parquet",
        ));
    }
    Ok(files)
}

fn read_side(dir: &Path, rank: usize) -> Result<Side, ImportError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut side = Side::default();
    for path in parquet_files(dir)? {
        let file = std::fs::File::open(&path).map_err(|e| read_err(&path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(8192).build())
            .map_err(|e| read_err(&path, e))?;
        let mut row = 0usize;
        for batch in reader {
            let batch = batch.map_err(|e| read_err(&path, e))?;
            let column = |name: &str| {
                batch.column_by_name(name).ok_or_else(|| {
                    invalid(
                        &path,
                        format!("no column {name:?}"),
                        "each row is an id (string) and its features (a list of floats)",
                    )
                })
            };
            let ids = column("id")?
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| {
                    invalid(
                        &path,
                        "id is not a string column".into(),
                        "write the ids as strings",
                    )
                })?;
            let lists = column("features")?
                .as_any()
                .downcast_ref::<ListArray>()
                .ok_or_else(|| {
                    invalid(
                        &path,
                        "features is not a list column".into(),
                        "write each row's factors as a list of floats",
                    )
                })?;
            for r in 0..batch.num_rows() {
                let at = |field: &str, value: String| format!("row {}: {field} = {value}", row + r);
                if ids.is_null(r) || lists.is_null(r) {
                    return Err(invalid(
                        &path,
                        at("id/features", "null".into()),
                        "every row has an id and its factors",
                    ));
                }
                let id = ids.value(r);
                if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
                    let shown: String = id.chars().take(40).collect();
                    return Err(invalid(
                        &path,
                        at("id", format!("{shown:?} ({} bytes)", id.len())),
                        "ids are 1..=1024 bytes without control characters, as stored",
                    ));
                }
                let values = lists.value(r);
                let floats: Vec<f32> =
                    if let Some(f) = values.as_any().downcast_ref::<Float32Array>() {
                        f.iter().map(|x| x.unwrap_or(f32::NAN)).collect()
                    } else if let Some(f) = values.as_any().downcast_ref::<Float64Array>() {
                        f.iter().map(|x| x.map_or(f32::NAN, |x| x as f32)).collect()
                    } else {
                        return Err(invalid(
                            &path,
                            at("features", format!("a list of {}", values.data_type())),
                            "factors are floats",
                        ));
                    };
                if floats.len() != rank {
                    return Err(invalid(
                        &path,
                        at("features", format!("{} values", floats.len())),
                        "every row has meta.json's rank values",
                    ));
                }
                if let Some(bad) = floats.iter().find(|x| !x.is_finite()) {
                    return Err(invalid(
                        &path,
                        at(&format!("features of {id:?}"), bad.to_string()),
                        "factors are finite numbers",
                    ));
                }
                if side.names.len() >= MAX_ROWS || side.factors.len() + rank > MAX_VALUES {
                    return Err(invalid(
                        dir,
                        format!("more than {MAX_ROWS} rows or {MAX_VALUES} values"),
                        "import at most 50 million users and items a side, 500 million factor values",
                    ));
                }
                let n = side.names.len() as u32;
                if side.index.insert(id.to_string(), n).is_some() {
                    return Err(invalid(
                        &path,
                        at("id", format!("{id:?} (again)")),
                        "each id has one row",
                    ));
                }
                side.names.push(id.to_string());
                side.factors.extend_from_slice(&floats);
            }
            row += batch.num_rows();
        }
    }
    Ok(side)
}

/// The imported factors over `data`'s users and items (rows without
/// factors are zero), as a candidate the evaluator scores like a fit.
pub fn candidate(f: &ImportedFactors, data: Interactions) -> (Candidate, ImportInfo) {
    let rank = f.meta.rank;
    let lay = |names: &[String], side: &Side| {
        let mut out = vec![0f32; names.len() * rank];
        let mut matched = 0;
        for (row, name) in out.chunks_exact_mut(rank.max(1)).zip(names) {
            if let Some(x) = side.row(name, rank) {
                row.copy_from_slice(x);
                matched += 1;
            }
        }
        (out, matched)
    };
    let (user_factors, users_matched) = lay(&data.users, &f.users);
    let (item_factors, items_matched) = lay(&data.items, &f.items);
    let info = ImportInfo {
        from: f.dir.display().to_string(),
        source: f.meta.source.clone(),
        fit_s: f.meta.fit_s,
        pairs: f.meta.pairs,
        users_matched,
        users_missing: data.users.len() - users_matched,
        items_matched,
        items_missing: data.items.len() - items_matched,
        users_unused: f.users.names.len().saturating_sub(users_matched),
        items_unused: f.items.names.len().saturating_sub(items_matched),
    };
    let model = AlsModel {
        factors: rank,
        users: data.users.len(),
        items: data.items.len(),
        user_factors,
        item_factors,
    };
    let params = AlsParams {
        factors: rank,
        iterations: f.meta.iterations,
        regularization: f.meta.reg_param,
        alpha: f.meta.alpha,
        // Spark MLlib scales λ by each row's count of ratings (ALS-WR).
        weighted_regularization: true,
        ..AlsParams::default()
    };
    let c = Candidate {
        data,
        model,
        params,
        fit_s: f.meta.fit_s,
        warm_start: None,
        search: None,
        items: None,
    };
    (c, info)
}

/// What `playpulse models --import DIR` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    pub model: u64,
    pub promoted: bool,
    pub decision: String,
    pub metric: super::promote::PromoteMetric,
    pub value: f64,
    pub popularity: f64,
    /// The champion's score on the same split (none: there was none).
    pub champion: Option<f64>,
    pub imported: ImportInfo,
}

/// Imported factors scored on a snapshot's held-out split, ready to record.
pub struct ScoredImport {
    pub evaluation: super::train::Evaluation,
    pub bundle: super::serve::Bundle,
    pub encoded: Vec<u8>,
    pub params: AlsParams,
    pub fit_s: f64,
    pub data: super::version::SnapshotInfo,
    pub info: ImportInfo,
}

/// Reads `dir`'s factors, checks they were trained for `cfg`'s split, and
/// scores them on `snap` (its video pairs derived here, off the store's
/// thread) against `champion` and popularity.
pub fn score_import(
    dir: &Path,
    mut snap: super::train::Snapshot,
    cfg: &super::config::ModelsConfig,
    champion: Option<&super::serve::Bundle>,
) -> Result<ScoredImport, super::TrainError> {
    use super::train::{evaluate_candidate, serving_bundle};
    use super::TrainError;
    let f = &read_factors(dir)?;
    let split = f.meta.split;
    if split != super::dataset::Split::of(cfg) {
        return Err(TrainError::Refused(format!(
            "{}: trained without the pairs of the held-out draw seed {} test_fraction {}, but this store is scored on seed {} test_fraction {} (models.seed, models.test_fraction): export the lake with the same config (`export parquet --config`) and train again",
            dir.display(),
            split.seed,
            split.test_fraction,
            cfg.seed,
            cfg.test_fraction
        )));
    }
    snap.derive_video_pairs()?;
    let data = super::dataset::build(snap.pairs, cfg.test_fraction, cfg.min_user_items, cfg.seed);
    if data.train.nnz() == 0 || data.test.nnz() == 0 {
        return Err(TrainError::Refused(format!(
            "the store's pairs give no held-out split to score {} on ({} users, {} items): ingest more events first",
            dir.display(),
            data.users.len(),
            data.items.len()
        )));
    }
    let (c, info) = candidate(f, data);
    if info.users_matched == 0 || info.items_matched == 0 {
        return Err(TrainError::Refused(format!(
            "{}: none of the store's {} (of {} users and {} items) have imported factors: were they trained on this store's lake?",
            dir.display(),
            if info.users_matched == 0 { "users" } else { "items" },
            info.users_missing,
            info.items_missing
        )));
    }
    let evaluation = evaluate_candidate(&c, champion, cfg.k, None, &snap.genres);
    let (fit_s, params) = (c.fit_s, c.params.clone());
    let bundle = serving_bundle(c, &snap.genres, &snap.regions, &snap.music_items);
    let encoded = postcard::to_stdvec(&bundle).map_err(|e| TrainError::Encode(e.to_string()))?;
    Ok(ScoredImport {
        evaluation,
        bundle,
        encoded,
        params,
        fit_s,
        data: snap.data,
        info,
    })
}

/// Records a scored import as a version, promoted when `cfg`'s rule says so.
pub fn record_import(
    view: &crate::store::StoreView,
    cfg: &super::config::ModelsConfig,
    s: &ScoredImport,
) -> Result<ImportReport, super::TrainError> {
    use super::promote;
    let metric = cfg.promote_metric;
    let e = &s.evaluation;
    let value = promote::score(&e.metrics, metric);
    let champion = e.champion.as_ref().map(|m| promote::score(m, metric));
    let recorded = super::registry::record_run(
        view,
        super::registry::Run {
            cfg,
            metric,
            evaluation: e,
            value,
            champion_score: champion,
            fit_s: s.fit_s,
            warm_start: None,
            params: &s.params,
            search: None,
            data: s.data.clone(),
            blend_weight: 0.0,
            encoded: &s.encoded,
            classifiers: &[],
            imported: Some(s.info.clone()),
        },
    )?;
    Ok(ImportReport {
        model: recorded.id,
        promoted: recorded.decision.promote,
        decision: recorded.decision.why,
        metric,
        value,
        popularity: promote::score(&e.baseline, metric),
        champion,
        imported: s.info.clone(),
    })
}

/// The snapshot an import is scored on: every pair, weighed as the trainer does.
pub fn snapshot_spec(cfg: &super::config::ModelsConfig) -> super::train::SnapshotSpec {
    super::train::SnapshotSpec {
        music_weights: cfg.event_weights.by_action(),
        max_events: 0,
        min_events: 0,
        catalog: false,
    }
}

/// Imports `dir`'s factors into `store` (the daemon stopped; the next start
/// serves a promoted import): read, scored, recorded.
pub fn import_version(
    store: &crate::store::Store,
    cfg: &super::config::ModelsConfig,
    dir: &Path,
) -> Result<ImportReport, super::TrainError> {
    use super::TrainError;
    let view = store.view();
    let titles =
        crate::views::indexes::titles_of(&view).map_err(|e| TrainError::Store(e.to_string()))?;
    let snap = super::train::snapshot(store, &titles, &snapshot_spec(cfg))?;
    let champion = super::serve::load_champion(&view)?;
    let scored = score_import(dir, snap, cfg, champion.as_ref().map(|(_, b)| b))?;
    record_import(&view, cfg, &scored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{Float32Builder, ListBuilder};
    use arrow_array::{ArrayRef, RecordBatch};
    use std::sync::Arc;

    fn write_side(dir: &Path, side: &str, rows: &[(&str, Vec<f32>)]) {
        let d = dir.join(side);
        std::fs::create_dir_all(&d).unwrap();
        let ids: ArrayRef = Arc::new(StringArray::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        ));
        let mut lists = ListBuilder::new(Float32Builder::new());
        for (_, f) in rows {
            lists.values().append_slice(f);
            lists.append(true);
        }
        let lists: ArrayRef = Arc::new(lists.finish());
        let batch = RecordBatch::try_from_iter([("id", ids), ("features", lists)]).unwrap();
        let file = std::fs::File::create(d.join("part-00000.parquet")).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        std::fs::write(d.join("_SUCCESS"), b"").unwrap();
    }

    fn meta(dir: &Path, rank: usize) {
        let m = serde_json::json!({
            "source": "test", "rank": rank, "iterations": 5, "reg_param": 0.1,
            "alpha": 1.0, "fit_s": 0.5, "pairs": 4,
            "split": {"seed": 42, "test_fraction": 0.2}
        });
        std::fs::write(dir.join("meta.json"), m.to_string()).unwrap();
    }

    fn err(dir: &Path) -> String {
        read_factors(dir).unwrap_err().to_string()
    }

    #[test]
    fn factors_read_back_and_lie_over_a_split() {
        let d = tempfile::tempdir().unwrap();
        meta(d.path(), 2);
        write_side(
            d.path(),
            "users",
            &[("u1", vec![1.0, 0.0]), ("u2", vec![0.0, 1.0])],
        );
        write_side(
            d.path(),
            "items",
            &[("a", vec![2.0, 0.5]), ("zz", vec![0.0, 3.0])],
        );
        let f = read_factors(d.path()).unwrap();
        assert_eq!(
            (f.meta.rank, f.users.names.len(), f.items.names.len()),
            (2, 2, 2)
        );
        let pair = |u: &str, i: &str| {
            (
                u.to_string(),
                i.to_string(),
                crate::store::PairAgg {
                    weight: 1.0,
                    events: 1,
                    positive_events: 1,
                    max_feedback: 1.0,
                    last_ts_ms: 0,
                },
            )
        };
        let data = crate::ml::dataset::build(
            vec![pair("u1", "a"), pair("u2", "b"), pair("u3", "a")],
            0.0,
            1,
            1,
        );
        let (c, info) = candidate(&f, data);
        assert_eq!((info.users_matched, info.users_missing), (2, 1));
        assert_eq!(
            (info.items_matched, info.items_missing, info.items_unused),
            (1, 1, 1)
        );
        let u1 = c.data.user_index["u1"] as usize;
        let a = c.data.item_index["a"] as usize;
        let b = c.data.item_index["b"] as usize;
        assert_eq!(c.model.score(u1, a), 2.0);
        assert_eq!(c.model.score(u1, b), 0.0, "no factors: zero");
        assert!(c.params.weighted_regularization && c.params.factors == 2);
    }

    #[test]
    fn bad_factors_are_refused_with_the_file_the_row_and_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let e = err(d.path());
        assert!(e.contains("meta.json"), "{e}");
        meta(d.path(), 0);
        assert!(err(d.path()).contains("factors"), "{}", err(d.path()));
        meta(d.path(), 2);
        assert!(err(d.path()).contains("no .parquet file") || err(d.path()).contains("users"));
        write_side(
            d.path(),
            "users",
            &[("u1", vec![1.0, 0.0]), ("u1", vec![0.0, 1.0])],
        );
        write_side(d.path(), "items", &[("a", vec![1.0, 1.0])]);
        let e = err(d.path());
        assert!(
            e.contains("row 1: id = \"u1\" (again)") && e.contains("one row"),
            "{e}"
        );
        write_side(d.path(), "users", &[("u1", vec![1.0, f32::NAN])]);
        let e = err(d.path());
        assert!(e.contains("NaN") && e.contains("finite"), "{e}");
        write_side(d.path(), "users", &[("u1", vec![1.0, 2.0, 3.0])]);
        let e = err(d.path());
        assert!(
            e.contains("features = 3 values") && e.contains("rank"),
            "{e}"
        );
        write_side(d.path(), "users", &[("", vec![1.0, 2.0])]);
        assert!(err(d.path()).contains("ids are 1..=1024 bytes"));
        std::fs::write(d.path().join("meta.json"), vec![b' '; 70_000]).unwrap();
        assert!(err(d.path()).contains("at most 64 KiB"));
    }
}
