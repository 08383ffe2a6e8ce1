//! Reads of what is stored and live: `stats` (stored aggregates) and
//! `analytics` (the live 1-minute windows).

use serde::{Deserialize, Serialize};

use crate::actors::messages::GetStats;
use crate::admin::bounds::{in_range, opt, MAX_MINUTES, MAX_PAGE};
use crate::admin::context::{blocking, Admin};
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

/// `analytics VIEW [--dim D] [--key K] [--minutes M] [--limit N]`, and over
/// days from the durable rollups: `[--from T] [--to T] [--last 24h] [--step
/// minute|hour] [--region R] [--resolution R] [--genre G] [--title T]
/// [--device D] [--track T] [--by device|track]`.
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
    /// The range's start (RFC 3339 or ms since the epoch): the rollups answer.
    #[arg(long)]
    #[serde(default)]
    pub from: Option<String>,
    /// The range's end (default: the newest minute).
    #[arg(long)]
    #[serde(default)]
    pub to: Option<String>,
    /// The range back from --to: 15m, 1h, 24h, 7d.
    #[arg(long)]
    #[serde(default)]
    pub last: Option<String>,
    /// Buckets of a minute or an hour (default: minutes up to 6 h, else hours).
    #[arg(long, value_enum)]
    #[serde(default)]
    pub step: Option<crate::store::rollup::Grain>,
    #[arg(long)]
    #[serde(default)]
    pub region: Option<String>,
    #[arg(long)]
    #[serde(default)]
    pub resolution: Option<String>,
    #[arg(long)]
    #[serde(default)]
    pub genre: Option<String>,
    /// A video id.
    #[arg(long)]
    #[serde(default)]
    pub title: Option<String>,
    /// A listening device (listening).
    #[arg(long)]
    #[serde(default)]
    pub device: Option<String>,
    /// A track id (listening).
    #[arg(long)]
    #[serde(default)]
    pub track: Option<String>,
    /// The breakdown of listening: device (default) or track.
    #[arg(long, value_enum)]
    #[serde(default)]
    pub by: Option<crate::store::rollup::query::Field>,
}

impl Analytics {
    pub fn check(&self) -> Result<(), RequestError> {
        opt("key", &self.key)?;
        in_range("minutes", self.minutes, 1, MAX_MINUTES)?;
        in_range("limit", self.limit, 1, MAX_PAGE)?;
        opt("from", &self.from)?;
        opt("to", &self.to)?;
        opt("last", &self.last)?;
        opt("region", &self.region)?;
        opt("resolution", &self.resolution)?;
        opt("genre", &self.genre)?;
        opt("title", &self.title)?;
        opt("device", &self.device)?;
        opt("track", &self.track)
    }

    pub fn query(self) -> crate::views::analytics::Query {
        crate::views::analytics::Query {
            view: self.view,
            dim: self.dim,
            key: self.key,
            minutes: self.minutes,
            limit: self.limit,
            from: self.from,
            to: self.to,
            last: self.last,
            step: self.step,
            filter: crate::store::rollup::query::Filter {
                genre: self.genre,
                region: self.region,
                resolution: self.resolution,
                title: self.title,
                device: self.device,
                track: self.track,
            },
            by: self.by,
        }
    }
}

/// Answers from the live windows, or from the durable rollups when the
/// question names a range, a step, a filter, or listening.
/// Titles are named from the catalog.
pub async fn analytics(a: &Admin, req: Analytics) -> Result<Answer, CommandError> {
    let q = req.query();
    // A group member's live windows hold its own events only: the rollups
    // hold the group's.
    let group = a.cluster.is_some();
    let mut answer = if q.is_range() || (group && q.view != View::Pipeline) {
        let kept = i64::from(a.cfg.analytics.minute_retention_hours) * 3_600_000;
        let view = a.view.clone();
        // A long range reads many rows: off the server's thread.
        blocking(move || {
            crate::views::analytics::range::answer(&view, &q, kept, group)
                .map_err(CommandError::from)
        })
        .await??
    } else {
        let live = a
            .analytics
            .lock()
            .map_err(|_| AnalyticsError::Unavailable)?;
        live.query(&q)?
    };
    if let Ok(catalog) = a.indexes.catalog() {
        answer.name_titles(|id| catalog.titles.get(id).map(|e| e.title.title.clone()));
    }
    Ok(answer)
}
