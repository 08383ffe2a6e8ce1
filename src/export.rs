//! Exports for notebooks and BI tools: the champion's recommendations as
//! `final_recommendations.csv` (user_id, rank, recommended_content, title,
//! predicted_rating), as the reference notebooks wrote for Power BI, and the
//! engagement classifiers' held-out predictions.

use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;
use thiserror::Error;

use crate::actors::trainer::{load_champion, Prediction};
use crate::event::Event;
use crate::ml::serve::Recommender;
use crate::store::Store;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("no model has been trained yet: let the daemon ingest models.min_events events first")]
    NoModel,
    #[error("store: {0}")]
    Store(String),
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub file: String,
    pub model: u64,
    pub users: usize,
    pub rows: usize,
    pub with_title: usize,
}

fn write_error(out: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Write {
        path: out.display().to_string(),
        message: e.to_string(),
    }
}

/// user_id, rank, recommended_content, title, predicted_rating
type Row = (String, usize, String, String, f32);

/// Writes the top `k` of every known user.
pub fn recommendations_csv(
    store: &Store,
    out: &Path,
    k: usize,
) -> Result<ExportReport, ExportError> {
    let (id, bundle) = load_champion(store)
        .map_err(ExportError::Store)?
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
    let rows: Vec<Vec<Row>> = r
        .bundle()
        .users
        .par_iter()
        .map(|u| {
            r.recommend(u, k, None)
                .into_iter()
                .enumerate()
                .map(|(rank, rec)| {
                    let title = index
                        .get(rec.item.as_str())
                        .map(|&i| titles[i].clone())
                        .unwrap_or_default();
                    (u.clone(), rank + 1, rec.item, title, rec.score)
                })
                .collect()
        })
        .collect();
    let werr = |e: csv::Error| write_error(out, e);
    let mut w = csv::Writer::from_path(out).map_err(werr)?;
    w.write_record([
        "user_id",
        "rank",
        "recommended_content",
        "title",
        "predicted_rating",
    ])
    .map_err(werr)?;
    let (mut n, mut with_title) = (0, 0);
    for (user, rank, item, title, score) in rows.into_iter().flatten() {
        with_title += usize::from(!title.is_empty());
        w.write_record([user, rank.to_string(), item, title, format!("{score:.6}")])
            .map_err(werr)?;
        n += 1;
    }
    w.flush().map_err(|e| write_error(out, e))?;
    Ok(ExportReport {
        file: out.display().to_string(),
        model: id,
        users: r.bundle().users.len(),
        rows: n,
        with_title,
    })
}

/// Writes the held-out predictions of the latest version of each engagement
/// classifier: model, version, user_id, video_id, timestamp, engaged, predicted.
pub fn predictions_csv(store: &Store, out: &Path) -> Result<ExportReport, ExportError> {
    let models = store
        .models()
        .map_err(|e| ExportError::Store(e.to_string()))?;
    let mut latest: Vec<&crate::store::models::ModelVersion> = Vec::new();
    for kind in ["decision_tree", "svm"] {
        if let Some(m) = models
            .iter()
            .filter(|m| m.kind == kind)
            .max_by_key(|m| m.id)
        {
            latest.push(m);
        }
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
    for m in &latest {
        let bytes = store
            .model_bundle(m.id)
            .map_err(|e| ExportError::Store(e.to_string()))?
            .unwrap_or_default();
        let preds: Vec<Prediction> = postcard::from_bytes(&bytes).map_err(|e| {
            ExportError::Store(format!("model {}: unreadable predictions: {e}", m.id))
        })?;
        for p in preds {
            w.write_record([
                m.kind.clone(),
                m.id.to_string(),
                p.user_id,
                p.video_id,
                crate::timefmt::format_timestamp_ms(p.timestamp_ms),
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
        model: latest[0].id,
        users: 0,
        rows,
        with_title: 0,
    })
}
