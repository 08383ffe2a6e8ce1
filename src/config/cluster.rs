//! `[cluster]`: daemons of one consumer group acting as one (the `cluster` module).

use serde::{Deserialize, Serialize};

use crate::domain::setting::{invalid, Invalid};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Share pair state, the champion model and member states through Kafka
    /// topics, with one member of the group training for all.
    pub enabled: bool,
    /// The shared topics are `<topic_prefix><kafka.group_id>.<what>`: `coord`
    /// (the trainer role), `pairs`, `models`, `members`, `users`, `rollups`,
    /// `titles`.
    pub topic_prefix: String,
    /// How often a member publishes the pairs its batches changed, ms.
    pub publish_interval_ms: u64,
    /// How often a member publishes the rollup rows its batches changed, ms
    /// (a row changed many times in between is sent once).
    pub rollup_interval_ms: u64,
    /// How often a member says who it is and what it serves, ms.
    pub heartbeat_interval_ms: u64,
    /// A member silent for this long is no longer listed, ms.
    pub member_timeout_ms: u64,
    /// How long the trainer waits to read its peers' pairs before a snapshot, s.
    pub catch_up_seconds: u64,
    /// Bytes of serving bundle per record of the models topic.
    pub model_chunk_bytes: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            topic_prefix: "playpulse.".into(),
            publish_interval_ms: 1000,
            rollup_interval_ms: 5000,
            heartbeat_interval_ms: 2000,
            member_timeout_ms: 15_000,
            catch_up_seconds: 30,
            model_chunk_bytes: 256 * 1024,
        }
    }
}

/// The shared topics of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTopics {
    pub coord: String,
    pub pairs: String,
    pub models: String,
    pub members: String,
    pub users: String,
    pub rollups: String,
    pub titles: String,
}

impl ClusterTopics {
    /// Every shared topic: (what it is, its name, partitions, compacted).
    pub fn all(&self) -> [(&'static str, &str, i32, bool); 7] {
        [
            ("coord", &self.coord, 1, false),
            ("pairs", &self.pairs, 1, true),
            ("models", &self.models, 1, true),
            ("members", &self.members, 1, true),
            ("users", &self.users, 1, true),
            ("rollups", &self.rollups, 1, true),
            ("titles", &self.titles, 1, true),
        ]
    }
}

impl ClusterConfig {
    pub fn topics(&self, group_id: &str) -> ClusterTopics {
        let t = |what: &str| format!("{}{group_id}.{what}", self.topic_prefix);
        ClusterTopics {
            coord: t("coord"),
            pairs: t("pairs"),
            models: t("models"),
            members: t("members"),
            users: t("users"),
            rollups: t("rollups"),
            titles: t("titles"),
        }
    }

    /// `max_record_bytes`: the largest record the producers send (`kafka.max_record_bytes`).
    pub fn validate(&self, max_record_bytes: usize) -> Result<(), Invalid> {
        let legal = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if self.topic_prefix.len() > 100 || !self.topic_prefix.chars().all(legal) {
            return Err(invalid(
                "cluster.topic_prefix",
                &self.topic_prefix,
                "must be at most 100 of the characters Kafka allows in topic names (letters, digits, '.', '_', '-')",
            ));
        }
        for (name, v, lo, hi) in [
            (
                "cluster.publish_interval_ms",
                self.publish_interval_ms,
                50,
                60_000,
            ),
            (
                "cluster.rollup_interval_ms",
                self.rollup_interval_ms,
                50,
                600_000,
            ),
            (
                "cluster.heartbeat_interval_ms",
                self.heartbeat_interval_ms,
                100,
                60_000,
            ),
            (
                "cluster.member_timeout_ms",
                self.member_timeout_ms,
                1000,
                3_600_000,
            ),
            ("cluster.catch_up_seconds", self.catch_up_seconds, 1, 3600),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(invalid(name, v, format!("must be in {lo}..={hi}")));
            }
        }
        if self.member_timeout_ms < 2 * self.heartbeat_interval_ms {
            return Err(invalid(
                "cluster.member_timeout_ms",
                self.member_timeout_ms,
                "must be at least twice cluster.heartbeat_interval_ms, or live members drop off the list",
            ));
        }
        let most = max_record_bytes.saturating_sub(4096);
        if self.model_chunk_bytes < 4096 || self.model_chunk_bytes > most {
            return Err(invalid(
                "cluster.model_chunk_bytes",
                self.model_chunk_bytes,
                format!(
                    "must be in 4096..={most} (kafka.max_record_bytes less 4 KiB for the record's other fields)"
                ),
            ));
        }
        Ok(())
    }
}
