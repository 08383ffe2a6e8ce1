//! `[store]`: cache, bounds on ids held, free-space floor, write timeout,
//! raw-event retention.

use serde::{Deserialize, Serialize};

use crate::domain::setting::{invalid, Invalid};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// sled page cache, MiB.
    pub cache_mb: u64,
    /// A store write that has not finished after this many seconds, with
    /// batches waiting, stops the daemon (a full or failing disk can make sled
    /// wait instead of fail).
    #[serde(
        rename = "write_timeout_seconds",
        with = "crate::domain::setting::seconds"
    )]
    pub write_timeout: std::time::Duration,
    /// Most distinct videos whose counters are held; later ones add up
    /// under `(other)` (their events are stored whole).
    pub max_tracked_videos: usize,
    /// Most distinct (user, track) pairs held (the listening graph's edges);
    /// later ones add up under (`(other)`, `(other)`).
    pub max_listening_pairs: usize,
    /// Free space kept on the store's disk, MiB: a write that would leave
    /// less is not begun, and the daemon stops cleanly (0: no check).
    pub min_free_mb: u64,
    /// Video pair deltas (the runs' entries, a repeated pair counting again)
    /// held before the compactor writes them into per-user chunks and deletes
    /// their runs (see `store::pairs`); ingest waits at four times it.
    pub pair_compaction_deltas: usize,
    /// A user's chunks that are merged into one.
    pub pair_merge_chunks: usize,
    /// The store rewrites its sled files (copying what is live into new
    /// ones) when they reach this many times their size after the last
    /// rewrite, and `rewrite_min_mb`: sled reclaims rewritten pages slowly,
    /// so this is what keeps disk use level (see `store::rewrite`). 0: never.
    pub rewrite_ratio: f64,
    pub rewrite_min_mb: u64,
    /// How much of the raw event log is kept (see `store::retention`).
    pub retention: RetentionConfig,
}

/// `[store.retention]`: the event log's bounds, oldest segments deleted first
/// (pairs, aggregates, catalog and offsets are kept). 0: no bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub max_age_hours: u64,
    pub max_size_mb: u64,
}

impl StoreConfig {
    pub fn rewrite_tuning(&self) -> super::rewrite::Tuning {
        super::rewrite::Tuning {
            ratio: self.rewrite_ratio,
            min_bytes: self.rewrite_min_mb.saturating_mul(1 << 20),
        }
    }

    pub fn pair_tuning(&self) -> super::pairs::Tuning {
        super::pairs::Tuning {
            freeze_at: self.pair_compaction_deltas,
            merge_at: self.pair_merge_chunks,
        }
    }
}

impl RetentionConfig {
    pub fn retention(&self) -> super::retention::Retention {
        super::retention::Retention {
            max_age_ms: self.max_age_hours.saturating_mul(3_600_000),
            max_bytes: self.max_size_mb.saturating_mul(1 << 20),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_mb: 256,
            write_timeout: std::time::Duration::from_secs(60),
            max_tracked_videos: 500_000,
            max_listening_pairs: 2_000_000,
            min_free_mb: 64,
            pair_compaction_deltas: 1_000_000,
            pair_merge_chunks: 8,
            rewrite_ratio: 2.0,
            rewrite_min_mb: 512,
            retention: RetentionConfig::default(),
        }
    }
}

impl StoreConfig {
    /// Checks what a type cannot (ranges, sets, names); errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.cache_mb == 0 {
            return Err(invalid("store.cache_mb", 0, "must be at least 1"));
        }
        for (key, v) in [
            ("store.max_tracked_videos", self.max_tracked_videos),
            ("store.max_listening_pairs", self.max_listening_pairs),
        ] {
            if !(1..=1_000_000_000).contains(&v) {
                return Err(invalid(key, v, "must be 1..=1000000000"));
            }
        }
        if !(1_000..=50_000_000).contains(&self.pair_compaction_deltas) {
            return Err(invalid(
                "store.pair_compaction_deltas",
                self.pair_compaction_deltas,
                "must be 1000..=50000000 (about 100 bytes of memory each)",
            ));
        }
        if !(2..=1000).contains(&self.pair_merge_chunks) {
            return Err(invalid(
                "store.pair_merge_chunks",
                self.pair_merge_chunks,
                "must be 2..=1000",
            ));
        }
        if self.min_free_mb > 1_000_000 {
            return Err(invalid(
                "store.min_free_mb",
                self.min_free_mb,
                "must be 0..=1000000",
            ));
        }
        if !(self.rewrite_ratio == 0.0 || (1.5..=100.0).contains(&self.rewrite_ratio)) {
            return Err(invalid(
                "store.rewrite_ratio",
                self.rewrite_ratio,
                "must be 0 (never rewrite) or 1.5..=100",
            ));
        }
        if !(1..=1_000_000_000).contains(&self.rewrite_min_mb) {
            return Err(invalid(
                "store.rewrite_min_mb",
                self.rewrite_min_mb,
                "must be 1..=1000000000",
            ));
        }
        let r = &self.retention;
        if r.max_age_hours > 1_000_000 {
            return Err(invalid(
                "store.retention.max_age_hours",
                r.max_age_hours,
                "must be 0 (keep all) ..=1000000",
            ));
        }
        if r.max_size_mb > 1_000_000_000 {
            return Err(invalid(
                "store.retention.max_size_mb",
                r.max_size_mb,
                "must be 0 (keep all) ..=1000000000",
            ));
        }
        if !(5..=86_400).contains(&self.write_timeout.as_secs()) {
            return Err(invalid(
                "store.write_timeout_seconds",
                self.write_timeout.as_secs(),
                "must be 5..=86400",
            ));
        }
        Ok(())
    }
}
