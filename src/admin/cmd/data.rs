//! Files on the daemon's machine: `export` (recommendations, predictions,
//! events) and `snapshot` (a consistent copy of the store).

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::actors::messages::Backup;
use crate::admin::bounds::{in_range, path, MAX_K};
use crate::admin::context::{blocking, Admin};
use crate::admin::error::{CommandError, RequestError};
use crate::export::csv::ExportReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ExportWhat {
    Recommendations,
    Predictions,
    Events,
}

/// `export WHAT OUT [--k K]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Export {
    #[arg(value_enum)]
    pub what: ExportWhat,
    /// A path on the daemon's machine.
    pub out: PathBuf,
    /// Recommendations per user (default 5).
    #[arg(long)]
    pub k: Option<usize>,
}

impl Export {
    pub fn check(&self) -> Result<(), RequestError> {
        path("out", &self.out)?;
        in_range("k", self.k, 1, MAX_K)
    }
}

/// `snapshot OUT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// A directory on the daemon's machine (a data dir to run from).
    pub out: PathBuf,
}

impl Snapshot {
    pub fn check(&self) -> Result<(), RequestError> {
        path("out", &self.out)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exported {
    #[serde(flatten)]
    pub report: ExportReport,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotTaken {
    pub snapshot: PathBuf,
    pub entries: u64,
    pub bytes: u64,
    pub seconds: f64,
}

pub async fn export(a: &Admin, req: Export) -> Result<Exported, CommandError> {
    let view = a.view.clone();
    let t = Instant::now();
    let Export { what, out, k } = req;
    let report = blocking(move || match what {
        ExportWhat::Recommendations => {
            crate::export::csv::recommendations_csv(&view, &out, k.unwrap_or(5))
        }
        ExportWhat::Predictions => crate::export::csv::predictions_csv(&view, &out),
        ExportWhat::Events => crate::export::csv::events_jsonl(&view, &out),
    })
    .await??;
    Ok(Exported {
        report,
        seconds: t.elapsed().as_secs_f64(),
    })
}

pub async fn snapshot(a: &Admin, req: Snapshot) -> Result<SnapshotTaken, CommandError> {
    let dest = req.out.clone();
    let t = Instant::now();
    // On the store's thread: no batch is written while it copies.
    let (entries, bytes) = a.store.backup.send(Backup { dest }).await??;
    Ok(SnapshotTaken {
        snapshot: req.out,
        entries,
        bytes,
        seconds: t.elapsed().as_secs_f64(),
    })
}
