//! What `stats` shows of the store: counters, QoE by dimension, catalog
//! sizes and size on disk, by section.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{Qoe, QoeDim, Store, StoreError};

/// The sections of [`Store::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum StatsSection {
    Counters,
    Qoe,
    Catalog,
    Size,
}

impl TryFrom<String> for StatsSection {
    type Error = StoreError;

    fn try_from(s: String) -> Result<StatsSection, StoreError> {
        Ok(match s.as_str() {
            "counters" => StatsSection::Counters,
            "qoe" => StatsSection::Qoe,
            "catalog" => StatsSection::Catalog,
            "size" => StatsSection::Size,
            _ => {
                return Err(StoreError::Refused(format!(
                    "{s:?}: no such stats section: use counters, qoe, catalog or size"
                )))
            }
        })
    }
}

/// Stored QoE by region, resolution and genre, and how many videos have some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QoeStats {
    pub region: BTreeMap<String, Qoe>,
    pub resolution: BTreeMap<String, Qoe>,
    pub genre: BTreeMap<String, Qoe>,
    pub videos: usize,
}

/// Catalog records held, by type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogCounts {
    pub users: usize,
    pub movies: usize,
    pub series: usize,
    pub tracks: usize,
}

/// What [`Store::stats`] answers: the sections asked for.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qoe: Option<QoeStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogCounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_on_disk_bytes: Option<u64>,
}

impl Store {
    /// Counters, QoE by region/resolution/genre, catalog sizes and size on disk;
    /// one section of them when `section` names one.
    pub fn stats(&self, section: Option<StatsSection>) -> Result<Stats, StoreError> {
        let want = |s: StatsSection| section.is_none_or(|x| x == s);
        let mut out = Stats::default();
        if want(StatsSection::Counters) {
            out.counters = Some(self.counters()?);
        }
        if want(StatsSection::Qoe) {
            out.qoe = Some(QoeStats {
                region: self.qoe(QoeDim::Region)?,
                resolution: self.qoe(QoeDim::Resolution)?,
                genre: self.qoe(QoeDim::Genre)?,
                videos: self.qoe(QoeDim::Video)?.len(),
            });
        }
        if want(StatsSection::Catalog) {
            out.catalog = Some(CatalogCounts {
                users: self.catalog_len("user"),
                movies: self.catalog_len("movie"),
                series: self.catalog_len("series"),
                tracks: self.catalog_len("track"),
            });
        }
        if want(StatsSection::Size) {
            out.size_on_disk_bytes = Some(self.size_on_disk());
        }
        Ok(out)
    }
}
