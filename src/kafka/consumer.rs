//! The consumer: batches of raw records from the group's partitions, each
//! claimed before it goes on, and the recovery of what this member claimed
//! and did not store before it last stopped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::config::KafkaConfig;
use super::context::StoreSeekContext;
use super::group::{group_commits, Claims, Membership, COMMITTED_TIMEOUT};
use super::orphan::{waiting, OrphanWatch};
use super::*;
use crate::domain::record::{RawRecord, SourcePos};
use crate::ingest::pipeline::Ownership;
use crate::store::StoreView;

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
    ownership: Arc<Ownership>,
    /// Records this member claimed before it last stopped and its store lacks:
    /// read (before anything else) by a consumer outside the group.
    recovery: Option<Recovery>,
    subscription: Vec<String>,
    /// Notices a group that settled with this member's share unassigned.
    orphan: OrphanWatch,
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
        store: &StoreView,
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
            if let Some((from, to)) = chain.debt(member, store.stored_offset(namespace, &t, p), c) {
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
        store: StoreView,
        namespace: &str,
        ownership: Arc<Ownership>,
    ) -> Result<Source, KafkaGlueError> {
        let assignment: Assignment = Arc::default();
        let paused = Arc::new(AtomicBool::new(false));
        let revocations = Arc::new(AtomicU64::new(0));
        let member = store.member_id().map_err(|e| KafkaGlueError::Topic {
            topic: String::new(),
            message: format!("cannot read or make this member's id: {e}"),
        })?;
        let claims = Arc::new(Claims {
            member,
            mode: Mutex::new(None),
            chains: Mutex::default(),
            refused: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            rejoins: AtomicU64::new(0),
            probe: (brokers.to_string(), cfg.clone()),
        });
        let ctx = StoreSeekContext {
            membership: Membership {
                claims: claims.clone(),
                store: store.clone(),
                namespace: namespace.to_string(),
                assignment: assignment.clone(),
                paused: paused.clone(),
                ownership: ownership.clone(),
                revocations: revocations.clone(),
                starts: Mutex::default(),
            },
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
            &store,
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
            ownership,
            recovery,
            subscription: subs,
            orphan: OrphanWatch::default(),
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
        self.watch_orphan();
        let raws = self.poll_batch(max, linger);
        if raws.is_empty() || !self.claims.claiming() {
            return raws;
        }
        self.claim(raws)
    }

    /// Rejoins the group when it left this member holding nothing while
    /// records of a subscribed partition wait unread (see [`super::orphan`]).
    fn watch_orphan(&mut self) {
        let empty = self.assignment.lock().is_ok_and(|a| a.is_empty());
        let now = Instant::now();
        if !self.orphan.due(empty, now) {
            return;
        }
        let waiting = match waiting(&self.consumer, &self.subscription) {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!("cannot look at the group's progress: {e}");
                return;
            }
        };
        let stuck = self.orphan.stuck(waiting, now);
        if stuck.is_empty() {
            return;
        }
        let parts: Vec<String> = stuck.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        tracing::warn!(
            "this member holds no partition, and nobody has read {} for {:?} although records wait: \
             leaving the group and joining again so the coordinator assigns them",
            parts.join(", "),
            super::orphan::CHECK_EVERY
        );
        self.claims.rejoins.fetch_add(1, Ordering::Relaxed);
        self.consumer.unsubscribe();
        let refs: Vec<&str> = self.subscription.iter().map(String::as_str).collect();
        if let Err(e) = self.consumer.subscribe(&refs) {
            tracing::error!("cannot subscribe again to {refs:?} after leaving the group: {e}");
        }
    }

    /// The ownership epoch of the records read so far: a hand-over after it
    /// fences the batch's records of its partitions off (see [`Ownership`]).
    pub fn epoch(&self) -> u64 {
        self.ownership.epoch()
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
                let landed = self.landed_claims(&ranges);
                // A claim whose answer was lost can land before a retry is
                // refused: the group's commits, not the error, decide.
                tracing::info!(
                    "claims settled: the group holds {} of the {} asked about",
                    landed.len(),
                    ranges.len()
                );
                landed
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
            // One clock read a record: the deadline ends a batch that has records.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() && !out.is_empty() {
                break;
            }
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
        }
        out
    }

    /// Commits next offsets after their durable write (when the group's brokers
    /// drop commit metadata; claims already committed them otherwise). Only
    /// partitions this member owns now: a revoked one was committed at its
    /// hand-over, and its next owner may have moved the group's offset on since.
    pub fn commit(&self, offsets: &[(String, i32, i64)], mode: CommitMode) {
        if offsets.is_empty() || self.claims.claiming() {
            return;
        }
        let Ok(owned) = self.assignment.lock().map(|a| a.clone()) else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in offsets {
            if !owned.iter().any(|(ot, op)| ot == t && op == p) {
                continue;
            }
            if let Err(e) = tpl.add_partition_offset(t, *p, Offset::Offset(*o)) {
                tracing::warn!("cannot commit {t}/{p}@{o}: {e}");
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::debug!("kafka commit failed (the store keeps the offsets): {e}");
        }
    }

    pub fn close(self) {
        self.consumer.unsubscribe();
    }
}
