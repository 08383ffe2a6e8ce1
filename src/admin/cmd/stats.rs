//! Reads of what is stored and live: `stats` (stored aggregates) and
//! `analytics` (the live 1-minute windows).

use serde::{Deserialize, Serialize};

use crate::actors::messages::GetStats;
use crate::admin::bounds::{in_range, opt, MAX_MINUTES, MAX_PAGE};
use crate::admin::context::Admin;
use crate::admin::error::{CommandError, RequestError};
use crate::store::{Stats as StoredStats, StatsSection};
use crate::views::analytics::{AnalyticsError, Answer, Dim, View};

/// `stats [SECTION]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// One section (all when none is named).
    #[arg(value_enum)]
    pub section: Option<StatsSection>,
}

impl Stats {
    pub fn check(&self) -> Result<(), RequestError> {
        Ok(())
    }
}

pub async fn stats(a: &Admin, req: Stats) -> Result<StoredStats, CommandError> {
    Ok(a.store.stats.send(GetStats(req.section)).await??)
}

/// `analytics VIEW [--dim D] [--key K] [--minutes M] [--limit N]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Analytics {
    #[arg(value_enum)]
    pub view: View,
    /// The breakdown (qoe, series).
    #[arg(long, value_enum)]
    pub dim: Option<Dim>,
    /// A key of --dim (series).
    #[arg(long)]
    pub key: Option<String>,
    /// Minutes back from the newest (default 15).
    #[arg(long)]
    pub minutes: Option<u32>,
    /// Most rows (default 20).
    #[arg(long)]
    pub limit: Option<usize>,
}

impl Analytics {
    pub fn check(&self) -> Result<(), RequestError> {
        opt("key", &self.key)?;
        in_range("minutes", self.minutes, 1, MAX_MINUTES)?;
        in_range("limit", self.limit, 1, MAX_PAGE)
    }

    pub fn query(self) -> crate::views::analytics::Query {
        crate::views::analytics::Query {
            view: self.view,
            dim: self.dim,
            key: self.key,
            minutes: self.minutes,
            limit: self.limit,
        }
    }
}

pub fn analytics(a: &Admin, req: Analytics) -> Result<Answer, CommandError> {
    let live = a
        .analytics
        .lock()
        .map_err(|_| AnalyticsError::Unavailable)?;
    Ok(live.query(&req.query()))
}
