//! Kafka glue: client configuration, the consumer that seeks to the offsets kept
//! in the store, the embedded broker, a paced producer, topic → kind mapping.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use thiserror::Error;

use crate::ingest::topics::TopicError;
pub use crate::ingest::topics::TopicKinds;

pub mod claims;
pub mod config;

use crate::domain::record::{RawRecord, SourcePos};
use crate::ingest::pipeline::Flight;
use crate::kafka::claims::Chain;
use crate::store::{member_id, read_offset};
use config::KafkaConfig;

#[derive(Debug, Error)]
pub enum KafkaGlueError {
    #[error("kafka client setup failed: {0}; check kafka.brokers and kafka.properties")]
    Client(#[from] KafkaError),
    #[error("embedded broker failed to start: {0}")]
    Embedded(String),
    #[error("topic {topic:?}: {message}")]
    Topic { topic: String, message: String },
    #[error(transparent)]
    TopicSpec(#[from] TopicError),
    #[error("a record of {size} bytes for topic {topic:?} is over kafka.max_record_bytes: split it, or raise the limit (and the brokers' message.max.bytes)")]
    TooLarge { topic: String, size: usize },
    #[error("{failed} records were not delivered (first: {first}); check that the brokers run and the topic exists, then send them again")]
    Undelivered { failed: u64, first: String },
}

/// Partitions this consumer currently owns.
pub type Assignment = Arc<Mutex<Vec<(String, i32)>>>;

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
    mode: Mutex<Option<GroupCommit>>,
    chains: Mutex<HashMap<(String, i32), Chain>>,
    /// Claims the group refused (their records were read again).
    refused: AtomicU64,
    /// Records read back at start: claimed before the last stop, not stored.
    recovered: AtomicU64,
    /// For the metadata probe: the brokers, client settings and group.
    probe: (String, KafkaConfig),
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

    fn claiming(&self) -> bool {
        self.mode() == Some(GroupCommit::ClaimBeforeWrite)
    }

    /// Decides the mode with a probe on `topic`/`partition` if still undecided.
    fn decide(&self, topic: &str, partition: i32) {
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

    fn chain(&self, topic: &str, partition: i32) -> Chain {
        self.chains
            .lock()
            .ok()
            .and_then(|c| c.get(&(topic.to_string(), partition)).cloned())
            .unwrap_or_default()
    }

    fn set_chain(&self, topic: &str, partition: i32, chain: Chain) {
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
fn group_commits<'a, C: ConsumerContext>(
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

/// Consumer context. On every assignment a partition starts at the later of the
/// next offset stored in sled and the group's committed offset (another member
/// of the group may have stored or claimed past this store), else at the
/// beginning, and its owner chain is read from the commit's metadata. Where
/// offsets are committed after writes, before a partition is revoked every batch
/// consumed from it is settled in the store and the store's offset committed, so
/// its next owner starts exactly there.
pub struct StoreSeekContext {
    claims: Arc<Claims>,
    tree: sled::Tree,
    namespace: String,
    assignment: Assignment,
    paused: Arc<AtomicBool>,
    flight: Arc<Flight>,
    /// Revocations so far: records a poll fetched before one are checked against
    /// the assignment before they go on.
    revocations: Arc<AtomicU64>,
}

/// How long a revocation waits for the batches in flight to reach the store.
const REVOKE_SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an assignment waits for the group's committed offsets.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

impl StoreSeekContext {
    /// Where each newly assigned partition starts, and why.
    fn start_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
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
                let stored = read_offset(&self.tree, &self.namespace, t, *p);
                match (stored, committed.get(&(t.clone(), *p)).copied()) {
                    (Some(s), Some(c)) if c > s => (Offset::Offset(c), "the group's commit"),
                    (Some(s), _) => (Offset::Offset(s), "the store"),
                    (None, Some(c)) => (Offset::Offset(c), "the group's commit"),
                    (None, None) => (Offset::Beginning, "nothing stored or committed"),
                }
            })
            .collect()
    }

    /// Where offsets are committed after writes: settles the batches in flight
    /// and commits the store's offsets of `parts` (synchronously) before they go
    /// to another member. Where batches are claimed, nothing is left to do.
    fn hand_over(&self, consumer: &BaseConsumer<Self>, parts: &[(String, i32)]) {
        if self.claims.claiming() {
            // Every batch read was claimed before it went on: the next owner
            // starts after the claims; this store writes what it claimed.
            return;
        }
        if consumer.assignment_lost() {
            tracing::warn!(
                "partitions {parts:?} were lost (this member missed its session): records stored \
                 since the last commit may be stored again by their next owner"
            );
            return;
        }
        if !self.flight.wait_settled(REVOKE_SETTLE_TIMEOUT) {
            tracing::error!(
                "batches still in flight after {REVOKE_SETTLE_TIMEOUT:?} while handing over {parts:?}; committing what is stored"
            );
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p) in parts {
            if let Some(o) = read_offset(&self.tree, &self.namespace, t, *p) {
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
}

/// Asks the brokers for high watermarks (the next offset each partition will
/// write), for lag: a client of its own, outside any group.
pub struct WatermarkProbe {
    consumer: BaseConsumer,
}

impl WatermarkProbe {
    pub fn new(brokers: &str, cfg: &KafkaConfig) -> Result<WatermarkProbe, KafkaGlueError> {
        Ok(WatermarkProbe {
            consumer: base_config(brokers, cfg).create()?,
        })
    }

    /// The high watermark of each partition, in one request per broker (blocking).
    pub fn high_watermarks(
        &self,
        parts: &[(String, i32)],
        timeout: Duration,
    ) -> Result<BTreeMap<(String, i32), i64>, KafkaGlueError> {
        if parts.is_empty() {
            // Nothing to ask about: still tell whether the brokers answer.
            self.consumer.fetch_metadata(None, timeout)?;
            return Ok(BTreeMap::new());
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p) in parts {
            // The "timestamp" -1 (OFFSET_END) asks for the latest offset.
            tpl.add_partition_offset(t, *p, Offset::End)?;
        }
        let got = self.consumer.offsets_for_times(tpl, timeout)?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                _ => None,
            })
            .collect())
    }
}

impl ClientContext for StoreSeekContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "{fac}: {log_message}")
            }
            // The broker dropped records before this consumer read them (retention;
            // the embedded broker keeps ~5 MiB a partition): they cannot be stored.
            RDKafkaLogLevel::Warning if log_message.contains("Offset out of range") => {
                tracing::error!(
                    target: "librdkafka",
                    "records lost before they were read (broker retention; slow the producers or raise retention): {fac}: {log_message}"
                )
            }
            // Async commits refused while the group rebalances: the hand-over
            // commits synchronously once the partitions are revoked.
            RDKafkaLogLevel::Warning
                if fac == "COMMITFAIL" && log_message.contains("rebalance in progress") =>
            {
                tracing::debug!(target: "librdkafka", "{fac}: {log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "{fac}: {log_message}")
            }
            _ => tracing::debug!(target: "librdkafka", "{fac}: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "kafka client error: {error}: {reason}");
    }
}

impl ConsumerContext for StoreSeekContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
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
            }
            other => {
                tracing::error!("rebalance error: {:?}", RDKafkaErrorCode::from(other));
                if let Err(e) = consumer.unassign() {
                    tracing::error!("unassign after rebalance error failed: {e}");
                }
                if let Ok(mut a) = self.assignment.lock() {
                    a.clear();
                }
            }
        }
    }
}

fn base_config(brokers: &str, cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", &cfg.client_id);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// The consumer: batches of raw records, each claimed before it goes on (or,
/// on brokers that drop commit metadata, committed after its durable write).
pub struct Source {
    consumer: BaseConsumer<StoreSeekContext>,
    /// Records over this are dead-lettered (`kafka.max_record_bytes`).
    max_record_bytes: usize,
    pub assignment: Assignment,
    pub claims: Arc<Claims>,
    paused: Arc<AtomicBool>,
    /// Set when the daemon stops: a wait on the brokers gives up.
    stopping: Arc<AtomicBool>,
    revocations: Arc<AtomicU64>,
    /// Records this member claimed before it last stopped and its store lacks:
    /// read (before anything else) by a consumer outside the group.
    recovery: Option<Recovery>,
}

/// How long a debt recovery may go without reading a record.
const RECOVERY_STALL_LIMIT: Duration = Duration::from_secs(60);

/// Reads back the ranges `[from, to)` a member claimed and did not store.
struct Recovery {
    consumer: BaseConsumer,
    /// Per partition, the end of what is owed (removed once read).
    until: HashMap<(String, i32), i64>,
    read: u64,
    last_progress: Instant,
}

/// Builds a raw record from a consumed message (topic names shared per batch).
fn raw_record(m: &BorrowedMessage<'_>, topics: &mut Vec<Arc<str>>) -> RawRecord {
    let topic = match topics.iter().find(|t| ***t == *m.topic()) {
        Some(t) => t.clone(),
        None => {
            let t: Arc<str> = Arc::from(m.topic());
            topics.push(t.clone());
            t
        }
    };
    let (mut format, mut columns, mut origin) = (None, None, None);
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            match h.key {
                crate::ingest::parse::HEADER_FORMAT => format = header_str(&h),
                crate::ingest::parse::HEADER_COLUMNS => columns = header_str(&h),
                crate::ingest::parse::HEADER_SOURCE => origin = header_str(&h),
                _ => {}
            }
        }
    }
    RawRecord {
        pos: SourcePos {
            topic,
            partition: m.partition(),
            offset: m.offset(),
        },
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        format,
        columns,
        origin,
        kafka_ts_ms: m.timestamp().to_millis(),
        oversized: None,
    }
}

impl Recovery {
    /// Finds what `member` owes its store: for every partition of the subscribed
    /// topics, the claims the group's owner chain attributes to it past the
    /// store's next offset. None when nothing is owed.
    fn find(
        brokers: &str,
        cfg: &KafkaConfig,
        group: &BaseConsumer<StoreSeekContext>,
        kinds: &TopicKinds,
        tree: &sled::Tree,
        namespace: &str,
        member: &str,
    ) -> Result<Option<Recovery>, KafkaGlueError> {
        let md = group.fetch_metadata(None, COMMITTED_TIMEOUT)?;
        let parts: Vec<(&str, i32)> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && kinds.kind_of(t.name()).is_some())
            .flat_map(|t| t.partitions().iter().map(move |p| (t.name(), p.id())))
            .collect();
        if parts.is_empty() {
            return Ok(None);
        }
        let mut until = HashMap::new();
        let mut start = TopicPartitionList::new();
        for ((t, p), (committed, chain)) in group_commits(group, parts)? {
            let Some(c) = committed else {
                continue;
            };
            if let Some((from, to)) = chain.debt(member, read_offset(tree, namespace, &t, p), c) {
                tracing::warn!(
                    "{t}/{p}: this member claimed offsets {from}..{to} and stopped before storing them: reading them back first"
                );
                start.add_partition_offset(&t, p, Offset::Offset(from))?;
                until.insert((t, p), to);
            }
        }
        if until.is_empty() {
            return Ok(None);
        }
        // Assigned, never joined nor committed: the group id is only required.
        let mut c = base_config(brokers, cfg);
        c.set("group.id", format!("{}.read-back.{member}", cfg.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "50");
        let consumer: BaseConsumer = c.create()?;
        consumer.assign(&start)?;
        Ok(Some(Recovery {
            consumer,
            until,
            read: 0,
            last_progress: Instant::now(),
        }))
    }

    /// Up to `max` owed records (waits up to `linger` for the first).
    fn poll(&mut self, max: usize, linger: Duration) -> Vec<RawRecord> {
        let deadline = Instant::now() + linger;
        let mut out = Vec::new();
        let mut topics: Vec<Arc<str>> = Vec::new();
        while out.len() < max && !self.until.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.consumer.poll(left) {
                Some(Ok(m)) => {
                    let key = (m.topic().to_string(), m.partition());
                    let Some(&to) = self.until.get(&key) else {
                        continue;
                    };
                    if m.offset() < to {
                        out.push(raw_record(&m, &mut topics));
                    }
                    if m.offset() + 1 >= to {
                        self.until.remove(&key);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    let gone: Vec<(String, i32)> = self
                        .until
                        .keys()
                        .filter(|(_, q)| *q == p)
                        .cloned()
                        .collect();
                    // The log ends before the claim's end: only if it was cut.
                    for key in gone {
                        tracing::error!(
                            "{}/{}: the log ends before the end of this member's claim: the rest is lost",
                            key.0,
                            key.1
                        );
                        self.until.remove(&key);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("reading back claimed records: {e}");
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                None => break,
            }
        }
        if !out.is_empty() {
            self.read += out.len() as u64;
            self.last_progress = Instant::now();
        } else if self.last_progress.elapsed() > RECOVERY_STALL_LIMIT {
            tracing::error!(
                "no claimed record read back for {RECOVERY_STALL_LIMIT:?}: giving up on {:?} (those records are not stored)",
                self.until
            );
            self.until.clear();
        }
        out
    }
}

fn header_str(h: &Header<'_, &[u8]>) -> Option<String> {
    h.value
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

impl Source {
    pub fn new(
        brokers: &str,
        cfg: &KafkaConfig,
        kinds: &TopicKinds,
        tree: sled::Tree,
        namespace: &str,
        flight: Arc<Flight>,
    ) -> Result<Source, KafkaGlueError> {
        let assignment: Assignment = Arc::default();
        let paused = Arc::new(AtomicBool::new(false));
        let revocations = Arc::new(AtomicU64::new(0));
        let member = member_id(&tree).map_err(|e| KafkaGlueError::Topic {
            topic: String::new(),
            message: format!("cannot read or make this member's id: {e}"),
        })?;
        let claims = Arc::new(Claims {
            member,
            mode: Mutex::new(None),
            chains: Mutex::default(),
            refused: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            probe: (brokers.to_string(), cfg.clone()),
        });
        let ctx = StoreSeekContext {
            claims: claims.clone(),
            tree: tree.clone(),
            namespace: namespace.to_string(),
            assignment: assignment.clone(),
            paused: paused.clone(),
            flight,
            revocations: revocations.clone(),
        };
        let mut c = base_config(brokers, cfg);
        c.set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("queued.min.messages", "200000")
            .set("fetch.wait.max.ms", "50");
        for (k, v) in &cfg.properties {
            c.set(k, v);
        }
        let consumer: BaseConsumer<StoreSeekContext> = c.create_with_context(ctx)?;
        let recovery = Recovery::find(
            brokers,
            cfg,
            &consumer,
            kinds,
            &tree,
            namespace,
            &claims.member,
        )?;
        let subs = kinds.subscription();
        let refs: Vec<&str> = subs.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        Ok(Source {
            consumer,
            max_record_bytes: cfg.max_record_bytes,
            assignment,
            claims,
            paused,
            stopping: Arc::new(AtomicBool::new(false)),
            revocations,
            recovery,
        })
    }

    /// The next batch to parse: first what this member claimed before it last
    /// stopped and did not store; then records of its partitions, claimed
    /// before they go on (records whose claim the group refused are read again,
    /// here or by their next owner).
    pub fn next_batch(&mut self, max: usize, linger: Duration) -> Vec<RawRecord> {
        let mut out = self.next_records(max, linger);
        for r in &mut out {
            r.cap(self.max_record_bytes);
        }
        out
    }

    fn next_records(&mut self, max: usize, linger: Duration) -> Vec<RawRecord> {
        if let Some(r) = &mut self.recovery {
            let out = r.poll(max, linger);
            self.claims
                .recovered
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            if r.until.is_empty() {
                tracing::info!(
                    "read back {} records this member had claimed before it stopped",
                    r.read
                );
                self.recovery = None;
            }
            return out;
        }
        let raws = self.poll_batch(max, linger);
        if raws.is_empty() || !self.claims.claiming() {
            return raws;
        }
        self.claim(raws)
    }

    /// Set when the daemon stops: waits on the brokers give up.
    pub fn stopping_flag(&self) -> Arc<AtomicBool> {
        self.stopping.clone()
    }

    /// Claims a batch: commits each partition's end offset with the owner chain
    /// naming this member, synchronously. Answers the records of the partitions
    /// whose claim landed; the others are dropped and their partitions sought
    /// back to the claim's start.
    fn claim(&self, mut raws: Vec<RawRecord>) -> Vec<RawRecord> {
        let mut ranges: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
        for r in &raws {
            let e = ranges
                .entry((r.pos.topic.to_string(), r.pos.partition))
                .or_insert((r.pos.offset, r.pos.offset + 1));
            e.0 = e.0.min(r.pos.offset);
            e.1 = e.1.max(r.pos.offset + 1);
        }
        let member = &self.claims.member;
        let mut tpl = TopicPartitionList::new();
        let mut chains = Vec::with_capacity(ranges.len());
        for ((t, p), (from, to)) in &ranges {
            let mut chain = self.claims.chain(t, *p);
            chain.claim(member, *from);
            let mut e = tpl.add_partition(t, *p);
            // A consumed offset is never a logical one: this cannot fail.
            if let Err(err) = e.set_offset(Offset::Offset(*to)) {
                tracing::error!("claim {t}/{p}@{to}: {err}");
            }
            e.set_metadata(chain.encode());
            chains.push(chain);
        }
        let landed: HashSet<(String, i32)> = match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => ranges.keys().cloned().collect(),
            Err(e) => {
                tracing::info!(
                    "claim of {} partitions failed ({e}); asking whether it landed",
                    ranges.len()
                );
                self.landed_claims(&ranges)
            }
        };
        for (((t, p), (from, _)), chain) in ranges.iter().zip(chains) {
            if landed.contains(&(t.clone(), *p)) {
                self.claims.set_chain(t, *p, chain);
            } else {
                self.claims.refused.fetch_add(1, Ordering::Relaxed);
                // Read again from the claim's start, here or by the next owner
                // (a partition revoked meanwhile cannot be sought: that is fine).
                if let Err(e) =
                    self.consumer
                        .seek(t, *p, Offset::Offset(*from), Duration::from_secs(5))
                {
                    tracing::debug!("{t}/{p}: not sought back to {from}: {e}");
                }
            }
        }
        let before = raws.len();
        raws.retain(|r| landed.contains(&(r.pos.topic.to_string(), r.pos.partition)));
        if raws.len() < before {
            tracing::info!(
                "dropped {} records whose claim did not land (they are read again)",
                before - raws.len()
            );
        }
        raws
    }

    /// After a failed claim commit: which of the claims the group holds. Reads
    /// the committed offsets and chains back until the brokers answer. If the
    /// daemon stops first, none is taken as landed: a claim that did land is
    /// this member's debt, read back at its next start.
    fn landed_claims(
        &self,
        ranges: &BTreeMap<(String, i32), (i64, i64)>,
    ) -> HashSet<(String, i32)> {
        let mut attempts = 0u64;
        loop {
            match group_commits(&self.consumer, ranges.keys().map(|(t, p)| (t.as_str(), *p))) {
                Ok(commits) => {
                    let member = self.claims.member.as_str();
                    return ranges
                        .iter()
                        .filter(|(k, (_, to))| {
                            commits.get(*k).is_some_and(|(c, chain)| {
                                c.is_some_and(|c| chain.owner(to - 1, c) == Some(member))
                            })
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                }
                Err(e) => {
                    if self.stopping.load(Ordering::Relaxed) {
                        tracing::warn!(
                            "stopping before the brokers told whether a claim landed: if it did, the next start reads it back"
                        );
                        return HashSet::new();
                    }
                    if attempts % 10 == 0 {
                        tracing::warn!(
                            "cannot read the group's commits ({e}): waiting for the brokers to tell whether a claim landed"
                        );
                    }
                    attempts += 1;
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Stops (or restarts) fetching from every assigned partition; the consumer
    /// keeps polling, so it stays in its group and rebalances still happen.
    pub fn set_paused(&self, paused: bool) -> Result<(), KafkaGlueError> {
        let before = self.paused.swap(paused, Ordering::Relaxed);
        let r = self.consumer.assignment().and_then(|tpl| {
            if paused {
                self.consumer.pause(&tpl)
            } else {
                self.consumer.resume(&tpl)
            }
        });
        if let Err(e) = r {
            self.paused.store(before, Ordering::Relaxed);
            return Err(e.into());
        }
        Ok(())
    }

    /// Whether ingest is paused (the flag the rebalance callback also reads).
    pub fn paused_flag(&self) -> Arc<AtomicBool> {
        self.paused.clone()
    }

    /// Up to `max` records: waits up to `linger` for the first, then takes what is
    /// buffered until `max` or `linger` runs out.
    fn poll_batch(&self, max: usize, linger: Duration) -> Vec<RawRecord> {
        let deadline = Instant::now() + linger;
        let mut out = Vec::with_capacity(max.min(65_536));
        let mut topics: Vec<Arc<str>> = Vec::new();
        let mut revocations = self.revocations.load(Ordering::SeqCst);
        while out.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = if out.is_empty() {
                left
            } else {
                Duration::ZERO.max(left.min(Duration::from_millis(2)))
            };
            let polled = self.consumer.poll(wait);
            let now_revoked = self.revocations.load(Ordering::SeqCst);
            if now_revoked != revocations {
                // A rebalance ran inside that poll: records of partitions this
                // member no longer owns belong to their next owner now.
                revocations = now_revoked;
                if let Ok(a) = self.assignment.lock() {
                    let before = out.len();
                    out.retain(|r: &RawRecord| {
                        a.iter()
                            .any(|(t, p)| *p == r.pos.partition && t.as_str() == &*r.pos.topic)
                    });
                    if out.len() < before {
                        tracing::info!(
                            "dropped {} records of revoked partitions (their next owner reads them)",
                            before - out.len()
                        );
                    }
                }
            }
            match polled {
                Some(Ok(m)) => out.push(raw_record(&m, &mut topics)),
                Some(Err(e)) => {
                    tracing::warn!("consume error: {e}");
                    if out.is_empty() && Instant::now() >= deadline {
                        break;
                    }
                }
                None => {
                    if !out.is_empty() || Instant::now() >= deadline {
                        break;
                    }
                }
            }
            if Instant::now() >= deadline && !out.is_empty() {
                break;
            }
        }
        out
    }

    /// Commits next offsets after their durable write (when the group's brokers
    /// drop commit metadata; claims already committed them otherwise).
    pub fn commit(&self, offsets: &[(String, i32, i64)], mode: CommitMode) {
        if offsets.is_empty() || self.claims.claiming() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in offsets {
            if let Err(e) = tpl.add_partition_offset(t, *p, Offset::Offset(*o)) {
                tracing::warn!("cannot commit {t}/{p}@{o}: {e}");
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::debug!("kafka commit failed (the store keeps the offsets): {e}");
        }
    }

    pub fn close(self) {
        self.consumer.unsubscribe();
    }
}

/// Waits for the brokers until they answer (or `stop` is set: `None`),
/// telling `waiting` why it still waits now and then; answers the cluster's
/// offset namespace (see [`cluster_namespace`]).
pub fn wait_for_cluster(
    brokers: &str,
    cfg: &KafkaConfig,
    stop: &AtomicBool,
    waiting: impl Fn(String),
) -> Result<Option<String>, KafkaGlueError> {
    let consumer: BaseConsumer = base_config(brokers, cfg).create()?;
    let t0 = Instant::now();
    let mut logged = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(id) = consumer.client().fetch_cluster_id(Duration::from_secs(2)) {
            return Ok(Some(format!("kafka:{id}")));
        }
        let why = format!(
            "the brokers at {brokers} (no answer for {} s; check kafka.brokers and that they run)",
            t0.elapsed().as_secs()
        );
        if logged.elapsed() >= Duration::from_secs(10) {
            tracing::warn!("waiting for {why}");
            logged = Instant::now();
        }
        waiting(why);
    }
    Ok(None)
}

/// The identity of the cluster behind `brokers`, to name the offset namespace
/// (offsets are only meaningful for the cluster they were read from).
pub fn cluster_namespace(
    brokers: &str,
    cfg: &KafkaConfig,
    wait: Duration,
) -> Result<String, KafkaGlueError> {
    let consumer: BaseConsumer = base_config(brokers, cfg).create()?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(id) = consumer.client().fetch_cluster_id(Duration::from_secs(2)) {
            return Ok(format!("kafka:{id}"));
        }
        if Instant::now() >= deadline {
            return Err(KafkaGlueError::Topic {
                topic: String::new(),
                message: format!("no broker at {brokers} answered within {wait:?}; check kafka.brokers and that the brokers run"),
            });
        }
        tracing::warn!("waiting for the brokers at {brokers} ...");
    }
}

/// Counts records the brokers did not take (their delivery failed), so a
/// flush can say so instead of returning as if all were sent.
#[derive(Default)]
pub struct Delivery {
    failed: std::sync::atomic::AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Delivery {}

impl rdkafka::producer::ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// The producers' type: deliveries counted (see [`Delivery`]).
pub type Producer = BaseProducer<Delivery>;

/// A producer for a command that must end: the brokers are asked first
/// (within `timeout`) whether `topic` exists, and records not delivered
/// within `timeout` fail the flush instead of waiting forever.
pub fn cli_producer(
    brokers: &str,
    cfg: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Producer, KafkaGlueError> {
    check_topic(brokers, cfg, topic, timeout)?;
    let mut cfg = cfg.clone();
    cfg.properties
        .entry("message.timeout.ms".into())
        .or_insert_with(|| timeout.as_millis().max(1000).to_string());
    producer(brokers, &cfg)
}

/// Asks the brokers whether `topic` exists (within `timeout`): an error names
/// what is wrong (no broker answered, no such topic) and what to do.
pub fn check_topic(
    brokers: &str,
    cfg: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<(), KafkaGlueError> {
    let consumer: BaseConsumer = base_config(brokers, cfg).set("log_level", "0").create()?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| KafkaGlueError::Topic {
            topic: topic.to_string(),
            message: format!("no broker at {brokers} answered within {timeout:?} ({e}); check --brokers / kafka.brokers and that the brokers run"),
        })?;
    let missing = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .is_none_or(|t| t.error().is_some() || t.partitions().is_empty());
    if missing {
        return Err(KafkaGlueError::Topic {
            topic: topic.to_string(),
            message: format!(
                "no such topic on the brokers at {brokers}: create it, or name an existing one"
            ),
        });
    }
    Ok(())
}

/// A producer with idempotence (no duplicates on retries).
pub fn producer(brokers: &str, cfg: &KafkaConfig) -> Result<Producer, KafkaGlueError> {
    let mut c = base_config(brokers, cfg);
    c.set("enable.idempotence", "true")
        // A record over the limit is refused at once, with a clear error.
        .set(
            "message.max.bytes",
            cfg.max_record_bytes.max(1000).to_string(),
        )
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", "0");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    Ok(c.create_with_context(Delivery::default())?)
}

/// Sends one record, waiting for queue room when the local queue is full.
pub fn send(
    p: &Producer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: Option<&OwnedHeaders>,
) -> Result<(), KafkaGlueError> {
    loop {
        let mut rec = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(h) = headers {
            rec = rec.headers(h.clone());
        }
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                p.poll(Duration::from_millis(5))
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                return Err(KafkaGlueError::TooLarge {
                    topic: topic.to_string(),
                    size: payload.len(),
                })
            }
            Err((e, _)) => return Err(KafkaGlueError::Client(e)),
        }
    }
}

/// Waits until every queued record is delivered.
pub fn flush(p: &Producer, timeout: Duration) -> Result<(), KafkaGlueError> {
    p.flush(timeout).map_err(|e| KafkaGlueError::Topic {
        topic: String::new(),
        message: format!(
            "records not delivered within {timeout:?} ({e}); check that the brokers run"
        ),
    })?;
    let ctx = p.context();
    let failed = ctx.failed.swap(0, Ordering::Relaxed);
    if failed > 0 {
        let first = ctx
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        return Err(KafkaGlueError::Undelivered { failed, first });
    }
    Ok(())
}

/// The embedded Kafka-protocol broker (librdkafka's mock cluster). It lives on
/// its own thread (it is not `Send`) until this handle is dropped.
pub struct Embedded {
    pub bootstrap: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Embedded {
    pub fn start(topics: &[String], partitions: i32) -> Result<Embedded, KafkaGlueError> {
        let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let topics = topics.to_vec();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match rdkafka::mocking::MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for t in &topics {
                    if let Err(e) = cluster.create_topic(t, partitions, 1) {
                        let _ = tx.send(Err(format!("create topic {t}: {e}")));
                        return;
                    }
                }
                let _ = tx.send(Ok(cluster.bootstrap_servers()));
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|e| KafkaGlueError::Embedded(e.to_string()))?;
        let bootstrap = rx
            .recv()
            .map_err(|e| KafkaGlueError::Embedded(e.to_string()))?
            .map_err(KafkaGlueError::Embedded)?;
        Ok(Embedded {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Record headers for a replayed record.
pub fn import_headers(format: &str, columns: Option<&str>, origin: &str) -> OwnedHeaders {
    let mut h = OwnedHeaders::new().insert(Header {
        key: crate::ingest::parse::HEADER_FORMAT,
        value: Some(format),
    });
    if let Some(c) = columns {
        h = h.insert(Header {
            key: crate::ingest::parse::HEADER_COLUMNS,
            value: Some(c),
        });
    }
    h.insert(Header {
        key: crate::ingest::parse::HEADER_SOURCE,
        value: Some(origin),
    })
}
