//! Group membership: how this member commits to the group (claims before
//! writes, or commits after them where the brokers drop commit metadata), the
//! owner chains of its partitions, and what a rebalance does — where each
//! assigned partition starts, and the hand-over of a revoked one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::claims::Chain;
use super::config::KafkaConfig;
use super::*;
use crate::ingest::pipeline::Ownership;
use crate::store::StoreView;

/// How this member commits its progress to the group (see [`crate::kafka::claims`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupCommit {
    /// Each batch is claimed (committed synchronously with its owner chain)
    /// before it is written: a killed member's records are never stored twice.
    ClaimBeforeWrite,
    /// The brokers drop commit metadata (tansu 0.6): offsets are committed after
    /// each durable write and at every hand-over. A member killed between a
    /// write and its commit leaves records its partitions' next owner stores
    /// again (each store alone still holds every record once).
    AfterWrite,
}

impl GroupCommit {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupCommit::ClaimBeforeWrite => "claim_before_write",
            GroupCommit::AfterWrite => "after_write",
        }
    }
}

/// The group-commit state this member shares between its consumer and its
/// rebalance callback: its name, the commit mode, the owner chains of the
/// partitions it owns.
pub struct Claims {
    pub member: String,
    pub(super) mode: Mutex<Option<GroupCommit>>,
    pub(super) chains: Mutex<HashMap<(String, i32), Chain>>,
    /// Claims the group refused (their records were read again).
    pub(super) refused: AtomicU64,
    /// Records read back at start: claimed before the last stop, not stored.
    pub(super) recovered: AtomicU64,
    /// Times this member left and rejoined a group that orphaned it.
    pub(super) rejoins: AtomicU64,
    /// For the metadata probe: the brokers, client settings and group.
    pub(super) probe: (String, KafkaConfig),
}

impl Claims {
    /// The commit mode, once known (it is decided before the first assignment's
    /// records are read; until then nothing is committed).
    pub fn mode(&self) -> Option<GroupCommit> {
        self.mode.lock().ok().and_then(|m| *m)
    }

    /// Claims the group refused so far (their records were read again).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Records read back at start (claimed before the last stop, not stored).
    pub fn recovered(&self) -> u64 {
        self.recovered.load(Ordering::Relaxed)
    }

    /// Times this member rejoined a group that had left it without partitions.
    pub fn rejoins(&self) -> u64 {
        self.rejoins.load(Ordering::Relaxed)
    }

    pub(super) fn claiming(&self) -> bool {
        self.mode() == Some(GroupCommit::ClaimBeforeWrite)
    }

    /// Decides the mode with a probe on `topic`/`partition` if still undecided.
    pub(super) fn decide(&self, topic: &str, partition: i32) {
        let Ok(mut mode) = self.mode.lock() else {
            return;
        };
        if mode.is_some() {
            return;
        }
        let (brokers, cfg) = &self.probe;
        let m = match probe_commit_metadata(brokers, cfg, topic, partition) {
            Ok(true) => GroupCommit::ClaimBeforeWrite,
            Ok(false) => {
                tracing::warn!(
                    "the brokers drop commit metadata: offsets are committed after each write; \
                     a member killed between a write and its commit leaves records that its \
                     partitions' next owner stores again"
                );
                GroupCommit::AfterWrite
            }
            Err(e) => {
                tracing::warn!(
                    "cannot tell whether the brokers keep commit metadata ({e}): committing after writes"
                );
                GroupCommit::AfterWrite
            }
        };
        tracing::info!("group commits: {m:?} (member {})", self.member);
        *mode = Some(m);
    }

    pub(super) fn chain(&self, topic: &str, partition: i32) -> Chain {
        self.chains
            .lock()
            .ok()
            .and_then(|c| c.get(&(topic.to_string(), partition)).cloned())
            .unwrap_or_default()
    }

    pub(super) fn set_chain(&self, topic: &str, partition: i32, chain: Chain) {
        if let Ok(mut c) = self.chains.lock() {
            c.insert((topic.to_string(), partition), chain);
        }
    }
}

/// Commit metadata of a partition entry ("" when it is not UTF-8: the client
/// library panics on such metadata, which another client may have written).
fn metadata_of(e: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>) -> String {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.metadata().to_string()))
        .unwrap_or_default()
}

/// Per partition, the group's committed offset (none when nothing is
/// committed) and the owner chain its metadata names.
type GroupCommits = HashMap<(String, i32), (Option<i64>, Chain)>;

/// The group's commits of `parts`.
pub(super) fn group_commits<'a, C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    parts: impl IntoIterator<Item = (&'a str, i32)>,
) -> Result<GroupCommits, KafkaError> {
    let mut ask = TopicPartitionList::new();
    for (t, p) in parts {
        ask.add_partition(t, p);
    }
    Ok(consumer
        .committed_offsets(ask, COMMITTED_TIMEOUT)?
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            let chain = Chain::parse(&metadata_of(e));
            ((e.topic().to_string(), e.partition()), (offset, chain))
        })
        .collect())
}

/// Whether the brokers keep commit metadata: commits a marker to a probe group
/// of this group's (`<group>.commit-probe`, never joined) and reads it back.
fn probe_commit_metadata(
    brokers: &str,
    cfg: &KafkaConfig,
    topic: &str,
    partition: i32,
) -> Result<bool, KafkaError> {
    let mut c = base_config(brokers, cfg);
    c.set("group.id", format!("{}.commit-probe", cfg.group_id))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create()?;
    let marker = format!("playpulse-probe-{:016x}", rand::random::<u64>());
    let mut tpl = TopicPartitionList::new();
    let mut e = tpl.add_partition(topic, partition);
    e.set_offset(Offset::Offset(0))?;
    e.set_metadata(&marker);
    consumer.commit(&tpl, CommitMode::Sync)?;
    let mut ask = TopicPartitionList::new();
    ask.add_partition(topic, partition);
    let got = consumer.committed_offsets(ask, COMMITTED_TIMEOUT)?;
    Ok(got
        .find_partition(topic, partition)
        .is_some_and(|e| metadata_of(&e) == marker))
}

/// How long an assignment waits for the group's committed offsets.
pub(super) const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// What a rebalance does. On every assignment a partition starts at the later of the
/// next offset stored in sled and the group's committed offset (another member
/// of the group may have stored or claimed past this store), else at the
/// beginning, and its owner chain is read from the commit's metadata. Where
/// offsets are committed after writes, a revoked partition is fenced off in the
/// store (batches read before write none of its records, see [`Ownership`])
/// and the store's offset committed at once, so its next owner starts exactly
/// where this store stopped.
pub struct Membership {
    pub(super) claims: Arc<Claims>,
    /// Where the stored offsets are read.
    pub(super) store: StoreView,
    pub(super) namespace: String,
    pub(super) assignment: Assignment,
    pub(super) paused: Arc<AtomicBool>,
    /// Batches read before a hand-over write none of its partitions' records.
    pub(super) ownership: Arc<Ownership>,
    /// Revocations so far: records a poll fetched before one are checked against
    /// the assignment before they go on.
    pub(super) revocations: Arc<AtomicU64>,
    /// Where each partition this member owns started: the group's progress on
    /// it when it was assigned (a hand-over never commits below it).
    pub(super) starts: Mutex<HashMap<(String, i32), i64>>,
}

/// The offset a hand-over commits: the store's next offset, never below where
/// the partition started here. A member that stored a partition long ago and
/// got it back at the group's later commit has an older stored offset;
/// committing that would move the group back, and the next owner would store
/// again what others stored since.
pub(super) fn hand_over_offset(stored: Option<i64>, started: Option<i64>) -> Option<i64> {
    stored.max(started)
}

impl Membership {
    /// Where each newly assigned partition starts, and why.
    fn start_offsets<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        parts: &[(String, i32)],
    ) -> Vec<(Offset, &'static str)> {
        if let Some((t, p)) = parts.first() {
            self.claims.decide(t, *p);
        }
        let committed: BTreeMap<(String, i32), i64> =
            match group_commits(consumer, parts.iter().map(|(t, p)| (t.as_str(), *p))) {
                Ok(commits) => commits
                    .into_iter()
                    .filter_map(|((t, p), (offset, chain))| {
                        self.claims.set_chain(&t, p, chain);
                        Some(((t, p), offset?))
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!(
                    "cannot read the group's committed offsets ({e}); starting from the store's"
                );
                    BTreeMap::new()
                }
            };
        parts
            .iter()
            .map(|(t, p)| {
                let stored = self.store.stored_offset(&self.namespace, t, *p);
                match (stored, committed.get(&(t.clone(), *p)).copied()) {
                    (Some(s), Some(c)) if c > s => (Offset::Offset(c), "the group's commit"),
                    (Some(s), _) => (Offset::Offset(s), "the store"),
                    (None, Some(c)) => (Offset::Offset(c), "the group's commit"),
                    (None, None) => (Offset::Beginning, "nothing stored or committed"),
                }
            })
            .collect()
    }

    /// Where offsets are committed after writes: fences `parts` off in the
    /// store (the records of them still on their way are left to the next
    /// owner), then commits the store's offsets of them, synchronously. The
    /// sooner the commit lands the better: a coordinator that assigns a
    /// partition before its last owner has rejoined (tansu's does) has the next
    /// owner start at the group's commit as it is then. Where batches are
    /// claimed, nothing is left to do.
    fn hand_over<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, parts: &[(String, i32)]) {
        if self.claims.claiming() {
            // Every batch read was claimed before it went on: the next owner
            // starts after the claims; this store writes what it claimed.
            return;
        }
        // Waits for the write under way; nothing of `parts` is written after.
        self.ownership.revoke(parts);
        if consumer.assignment_lost() {
            tracing::warn!(
                "partitions {parts:?} were lost (this member missed its session): records stored \
                 since the last commit may be stored again by their next owner"
            );
            return;
        }
        let started = self.starts.lock().map(|s| s.clone()).unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for (t, p) in parts {
            let stored = self.store.stored_offset(&self.namespace, t, *p);
            let start = started.get(&(t.clone(), *p)).copied();
            if let Some(o) = hand_over_offset(stored, start) {
                if let Err(e) = tpl.add_partition_offset(t, *p, Offset::Offset(o)) {
                    tracing::error!("cannot commit {t}/{p}@{o}: {e}");
                }
            }
        }
        if tpl.count() > 0 {
            match consumer.commit(&tpl, CommitMode::Sync) {
                Ok(()) => tracing::info!("handed over {parts:?} at the stored offsets"),
                Err(e) => tracing::error!(
                    "commit while handing over {parts:?} failed ({e}): their next owner may store again what this store holds past the last commit"
                ),
            }
        }
    }

    /// A rebalance event: seeks newly assigned partitions, hands revoked ones over.
    pub(super) fn rebalance<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let starts = self.start_offsets(consumer, &parts);
                if let Ok(mut started) = self.starts.lock() {
                    if !cooperative {
                        started.clear();
                    }
                    for ((t, p), (offset, _)) in parts.iter().zip(&starts) {
                        match offset {
                            Offset::Offset(o) => started.insert((t.clone(), *p), *o),
                            _ => started.remove(&(t.clone(), *p)),
                        };
                    }
                }
                for ((topic, partition), (offset, why)) in parts.iter().zip(starts) {
                    if let Err(e) = tpl.set_partition_offset(topic, *partition, offset) {
                        tracing::error!("cannot seek {topic}/{partition} to {offset:?}: {e}");
                    }
                    tracing::info!("assigned {topic}/{partition}, starting at {offset:?} ({why})");
                }
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::error!("partition assignment failed: {e}");
                }
                // Ingest is paused by the operator: new partitions stay paused too.
                if self.paused.load(Ordering::Relaxed) {
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::error!("cannot pause newly assigned partitions: {e}");
                    }
                }
                if let Ok(mut a) = self.assignment.lock() {
                    if !cooperative {
                        a.clear();
                    }
                    a.extend(parts);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!("partitions revoked: {parts:?}");
                self.hand_over(consumer, &parts);
                self.revocations.fetch_add(1, Ordering::SeqCst);
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    tracing::error!("partition revocation failed: {e}");
                }
                if let Ok(mut a) = self.assignment.lock() {
                    a.retain(|p| !parts.contains(p));
                }
                if let Ok(mut s) = self.starts.lock() {
                    s.retain(|p, _| !parts.contains(p));
                }
            }
            other => {
                tracing::error!("rebalance error: {:?}", RDKafkaErrorCode::from(other));
                if let Err(e) = consumer.unassign() {
                    tracing::error!("unassign after rebalance error failed: {e}");
                }
                if let Ok(mut a) = self.assignment.lock() {
                    a.clear();
                }
                if let Ok(mut s) = self.starts.lock() {
                    s.clear();
                }
            }
        }
    }
}
