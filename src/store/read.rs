//! Read side of the store: events, dead letters, aggregates, counters, catalog.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{keys, slots, MusicAgg, PairAgg, Qoe, Store, StoreError};
use crate::event::Event;
use crate::record::SourcePos;
use crate::reject::Rejection;

/// A dead-letter entry: why, where from, and the bytes as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(flatten)]
    pub rejection: Rejection,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub raw: Option<String>,
    #[serde(default)]
    pub raw_hex: Option<String>,
}

fn corrupt(key: &[u8], message: impl Into<String>) -> StoreError {
    StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), message: message.into() }
}

/// Which QoE breakdown to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QoeDim {
    Video,
    Region,
    Resolution,
    Genre,
}

impl QoeDim {
    fn prefix(self) -> &'static [u8] {
        match self {
            QoeDim::Video => keys::QOE_VIDEO,
            QoeDim::Region => keys::QOE_REGION,
            QoeDim::Resolution => keys::QOE_RESOLUTION,
            QoeDim::Genre => keys::GENRE,
        }
    }
}

impl Store {
    /// Every stored event with its source position, in key order.
    pub fn events(&self) -> impl Iterator<Item = Result<(SourcePos, Event), StoreError>> + '_ {
        self.tree.scan_prefix(keys::EVENT).map(|item| {
            let (k, v) = item?;
            let (topic, partition, offset) =
                keys::parse_position(&k[keys::EVENT.len()..]).ok_or_else(|| corrupt(&k, "bad event key"))?;
            let ev: Event = serde_json::from_slice(&v).map_err(|e| corrupt(&k, e.to_string()))?;
            Ok((SourcePos { topic: topic.into(), partition, offset }, ev))
        })
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.tree
            .scan_prefix(keys::DEAD)
            .map(|item| {
                let (k, v) = item?;
                serde_json::from_slice(&v).map_err(|e| corrupt(&k, e.to_string()))
            })
            .collect()
    }

    /// Per (user, item) implicit-feedback aggregates.
    pub fn pair_aggregates(&self) -> impl Iterator<Item = Result<(String, String, PairAgg), StoreError>> + '_ {
        self.tree.scan_prefix(keys::PAIR).map(|item| {
            let (k, v) = item?;
            let (u, i) = keys::split_pair(&k[keys::PAIR.len()..]).ok_or_else(|| corrupt(&k, "bad pair key"))?;
            let s = slots::decode(slots::PAIR, &v).ok_or_else(|| corrupt(&k, "bad pair value"))?;
            Ok((u, i, PairAgg::from_slots(&s)))
        })
    }

    /// Per (user, track) listening counters.
    pub fn music_aggregates(&self) -> Result<Vec<(String, String, MusicAgg)>, StoreError> {
        self.tree
            .scan_prefix(keys::MUSIC_PAIR)
            .map(|item| {
                let (k, v) = item?;
                let (u, t) = keys::split_pair(&k[keys::MUSIC_PAIR.len()..]).ok_or_else(|| corrupt(&k, "bad key"))?;
                let s = slots::decode(slots::MUSIC, &v).ok_or_else(|| corrupt(&k, "bad value"))?;
                Ok((u, t, MusicAgg::from_slots(&s)))
            })
            .collect()
    }

    pub fn qoe(&self, dim: QoeDim) -> Result<BTreeMap<String, Qoe>, StoreError> {
        let p = dim.prefix();
        self.tree
            .scan_prefix(p)
            .map(|item| {
                let (k, v) = item?;
                let s = slots::decode(slots::QOE, &v).ok_or_else(|| corrupt(&k, "bad QoE value"))?;
                Ok((String::from_utf8_lossy(&k[p.len()..]).into_owned(), Qoe::from_slots(&s)))
            })
            .collect()
    }

    /// Every counter (`stored`, `rejected`, `stored/<type>`, `rejected/<reason[:field]>`, ...).
    pub fn counters(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.tree
            .scan_prefix(keys::COUNTER)
            .map(|item| {
                let (k, v) = item?;
                let s = slots::decode(slots::COUNT, &v).ok_or_else(|| corrupt(&k, "bad counter"))?;
                Ok((String::from_utf8_lossy(&k[keys::COUNTER.len()..]).into_owned(), s[0] as u64))
            })
            .collect()
    }

    pub fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let k = keys::join(keys::COUNTER, &[name.as_bytes()]);
        Ok(self.tree.get(&k)?.and_then(|v| slots::decode(slots::COUNT, &v)).map(|s| s[0] as u64).unwrap_or(0))
    }

    /// The latest catalog record of a kind (`user`, `movie`, `series`, `track`) and id.
    pub fn catalog(&self, record_type: &str, id: &str) -> Result<Option<Event>, StoreError> {
        let prefix = match record_type {
            "user" => keys::CAT_USER,
            "movie" => keys::CAT_MOVIE,
            "series" => keys::CAT_SERIES,
            _ => keys::CAT_TRACK,
        };
        let k = keys::join(prefix, &[id.as_bytes()]);
        match self.tree.get(&k)? {
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| corrupt(&k, e.to_string())),
            None => Ok(None),
        }
    }

    /// Number of catalog records of a kind.
    pub fn catalog_len(&self, record_type: &str) -> usize {
        let prefix = match record_type {
            "user" => keys::CAT_USER,
            "movie" => keys::CAT_MOVIE,
            "series" => keys::CAT_SERIES,
            _ => keys::CAT_TRACK,
        };
        self.tree.scan_prefix(prefix).count()
    }

    /// On-disk size of the store, bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// Reads a partition's stored next offset from a tree handle (for threads that do
/// not own the [`Store`], such as the consumer's rebalance callback).
pub fn read_offset(tree: &sled::Tree, namespace: &str, topic: &str, partition: i32) -> Option<i64> {
    let v = tree.get(keys::offset_key(namespace, topic, partition)).ok()??;
    Some(i64::from_be_bytes(v.as_ref().try_into().ok()?))
}
