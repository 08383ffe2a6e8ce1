//! Exports for notebooks and BI tools: the champion's recommendations as
//! `final_recommendations.csv` (user_id, rank, recommended_content, title,
//! predicted_rating), as the reference notebooks wrote for Power BI, and the
//! engagement classifiers' held-out predictions, and a stored classifier's
//! predictions for new events.

use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;
use thiserror::Error;

use crate::domain::event::{Domain, Event, VideoEvent};
use crate::ml::classify::{self, ClassifierBundle};
use crate::ml::serve::{load_champion, Recommender, Taste};
use crate::ml::{ModelKind, ModelVersion};
use crate::store::StoreView;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("no model has been trained yet: let the daemon ingest models.min_events events first")]
    NoModel,
    #[error("no {0} classifier has been trained yet: let the daemon train with models.classifiers = true")]
    NoClassifier(String),
    #[error("store: {0}")]
    Store(String),
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ExportReport {
    pub file: String,
    pub model: u64,
    pub users: usize,
    /// Lists written: one per (user, domain they have seen items of).
    #[serde(default)]
    pub lists: usize,
    pub rows: usize,
    pub with_title: usize,
}

fn write_error(out: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Write {
        path: out.display().to_string(),
        message: e.to_string(),
    }
}

/// user_id, rank, recommended_content, title, predicted_rating, domain
type Row = (String, usize, String, String, f32, Domain);

/// The domains a trained user has seen items of (a list per domain).
pub fn domains_seen(r: &Recommender, u: u32) -> Vec<Domain> {
    let seen = r.seen_of(u);
    [Domain::Video, Domain::Music]
        .into_iter()
        .filter(|d| seen.iter().any(|&i| r.domain_of(i) == *d))
        .collect()
}

/// Writes the top `k` of every known user, one list per domain they have
/// seen items of (video and music never share a list).
pub fn recommendations_csv(
    store: &StoreView,
    out: &Path,
    k: usize,
) -> Result<ExportReport, ExportError> {
    let (id, bundle) = load_champion(store)
        .map_err(|e| ExportError::Store(e.to_string()))?
        .ok_or(ExportError::NoModel)?;
    let r = Recommender::new(bundle);
    let titles: Vec<String> = r
        .bundle()
        .items
        .iter()
        .map(|i| match store.catalog("movie", i) {
            Ok(Some(Event::Movie(t))) => t.title,
            _ => String::new(),
        })
        .collect();
    let index: std::collections::HashMap<&str, usize> = r
        .bundle()
        .items
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_str(), i))
        .collect();
    let pb = crate::domain::progress::bar(r.bundle().users.len() as u64, "recommendations");
    let rows: Vec<Vec<Row>> = r
        .bundle()
        .users
        .par_iter()
        .enumerate()
        .map(|(row, u)| {
            pb.inc(1);
            domains_seen(&r, row as u32)
                .into_iter()
                .flat_map(|d| {
                    r.recommend_taste(Taste::Trained(row as u32), k, d, None, |_, _| {})
                        .into_iter()
                        .enumerate()
                        .map(move |(rank, rec)| (d, rank, rec))
                })
                .map(|(d, rank, rec)| {
                    let title = index
                        .get(rec.item.as_str())
                        .map(|&i| titles[i].clone())
                        .unwrap_or_default();
                    (u.clone(), rank + 1, rec.item, title, rec.score, d)
                })
                .collect()
        })
        .collect();
    pb.finish_and_clear();
    let werr = |e: csv::Error| write_error(out, e);
    let mut w = csv::Writer::from_path(out).map_err(werr)?;
    w.write_record([
        "user_id",
        "rank",
        "recommended_content",
        "title",
        "predicted_rating",
        "domain",
    ])
    .map_err(werr)?;
    let (mut n, mut with_title, mut lists) = (0, 0, 0);
    for (user, rank, item, title, score, domain) in rows.into_iter().flatten() {
        with_title += usize::from(!title.is_empty());
        lists += usize::from(rank == 1);
        w.write_record([
            user,
            rank.to_string(),
            item,
            title,
            format!("{score:.6}"),
            domain.to_string(),
        ])
        .map_err(werr)?;
        n += 1;
    }
    w.flush().map_err(|e| write_error(out, e))?;
    Ok(ExportReport {
        file: out.display().to_string(),
        model: id,
        users: r.bundle().users.len(),
        lists,
        rows: n,
        with_title,
    })
}

/// The latest version of a classifier kind (`decision_tree`, `svm`) and its stored model.
pub fn latest_classifier(
    store: &StoreView,
    kind: ModelKind,
) -> Result<Option<(ModelVersion, ClassifierBundle)>, ExportError> {
    let models =
        crate::ml::version::versions(store).map_err(|e| ExportError::Store(e.to_string()))?;
    let Some(m) = models
        .into_iter()
        .filter(|m| m.kind() == kind)
        .max_by_key(|m| m.id)
    else {
        return Ok(None);
    };
    let bytes = store
        .model_bundle(m.id)
        .map_err(|e| ExportError::Store(e.to_string()))?
        .unwrap_or_default();
    let b: ClassifierBundle = postcard::from_bytes(&bytes).map_err(|e| {
        ExportError::Store(format!(
            "model {}: unreadable classifier ({e}); it was stored by an older version: train a new one",
            m.id
        ))
    })?;
    Ok(Some((m, b)))
}

/// Writes the held-out predictions of the latest version of each engagement
/// classifier: model, version, user_id, video_id, timestamp, engaged, predicted.
pub fn predictions_csv(store: &StoreView, out: &Path) -> Result<ExportReport, ExportError> {
    let mut latest = Vec::new();
    for kind in ModelKind::CLASSIFIERS {
        latest.extend(latest_classifier(store, kind)?);
    }
    if latest.is_empty() {
        return Err(ExportError::NoModel);
    }
    let werr = |e: csv::Error| write_error(out, e);
    let mut w = csv::Writer::from_path(out).map_err(werr)?;
    w.write_record([
        "model",
        "version",
        "user_id",
        "video_id",
        "timestamp",
        "engaged",
        "predicted",
    ])
    .map_err(werr)?;
    let mut rows = 0;
    let first = latest[0].0.id;
    for (m, b) in latest {
        for p in b.predictions {
            w.write_record([
                m.kind().to_string(),
                m.id.to_string(),
                p.user_id,
                p.video_id,
                crate::domain::timefmt::format_timestamp_ms(p.timestamp_ms),
                p.engaged.to_string(),
                p.predicted.to_string(),
            ])
            .map_err(werr)?;
            rows += 1;
        }
    }
    w.flush().map_err(|e| write_error(out, e))?;
    Ok(ExportReport {
        file: out.display().to_string(),
        model: first,
        users: 0,
        lists: 0,
        rows,
        with_title: 0,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct PredictReport {
    pub file: String,
    pub model: ModelKind,
    pub version: u64,
    pub events: usize,
    pub predicted_engaged: usize,
    /// Against the label computed from the events themselves (implicit feedback ≥ 0.5).
    pub accuracy: f64,
}

/// The latest `kind` classifier's prediction for each event, written as CSV
/// (user_id, video_id, timestamp, engaged, predicted).
pub fn predict_csv(
    store: &StoreView,
    kind: ModelKind,
    events: &[VideoEvent],
    out: &Path,
) -> Result<PredictReport, ExportError> {
    let (m, b) = latest_classifier(store, kind)?
        .ok_or_else(|| ExportError::NoClassifier(kind.to_string()))?;
    let predicted = b.classifier.predict(events);
    let werr = |e: csv::Error| write_error(out, e);
    let mut w = csv::Writer::from_path(out).map_err(werr)?;
    w.write_record(["user_id", "video_id", "timestamp", "engaged", "predicted"])
        .map_err(werr)?;
    let mut right = 0;
    for (e, &p) in events.iter().zip(&predicted) {
        let engaged = classify::label(e);
        right += usize::from(engaged == p);
        w.write_record([
            e.user_id.to_string(),
            e.video_id.to_string(),
            crate::domain::timefmt::format_timestamp_ms(e.timestamp_ms),
            engaged.to_string(),
            p.to_string(),
        ])
        .map_err(werr)?;
    }
    w.flush().map_err(|e| write_error(out, e))?;
    Ok(PredictReport {
        file: out.display().to_string(),
        model: m.kind(),
        version: m.id,
        events: events.len(),
        predicted_engaged: predicted.iter().filter(|&&p| p).count(),
        accuracy: right as f64 / events.len().max(1) as f64,
    })
}

/// Writes every stored event as JSON Lines (the canonical record form, one per
/// line, in topic/partition/offset order); answers how many.
pub fn events_jsonl(store: &StoreView, out: &Path) -> Result<ExportReport, ExportError> {
    use std::io::Write;
    let file = std::fs::File::create(out).map_err(|e| write_error(out, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut rows = 0;
    let pb = crate::domain::progress::bar(0, "events");
    for item in store.events() {
        pb.inc(1);
        let (_, ev) = item.map_err(|e| ExportError::Store(e.to_string()))?;
        w.write_all(&crate::ingest::wire::to_json(&ev))
            .and_then(|()| w.write_all(b"\n"))
            .map_err(|e| write_error(out, e))?;
        rows += 1;
    }
    pb.finish_and_clear();
    w.flush().map_err(|e| write_error(out, e))?;
    Ok(ExportReport {
        file: out.display().to_string(),
        model: 0,
        users: 0,
        lists: 0,
        rows,
        with_title: 0,
    })
}
