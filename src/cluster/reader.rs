//! Reads the shared topics (`pairs`, `models`, `members`, `users`,
//! `rollups`, `titles`) from their start
//! into the group's state, measures this member's lag on each, and records
//! and serves each new champion another member published.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use std::collections::{BTreeMap, BTreeSet};

use super::wire::{self, ModelRecord, PairKey, PairValue};
use super::{Cluster, Deps, State};
use crate::ml::serve::Serving;
use crate::store::rollup::group::PeerBucket;
use crate::store::rollup::{Cube, Grain, Sums};
use crate::store::StoreView;

/// How often the lag is measured.
const ROUND: Duration = Duration::from_millis(500);
/// How often the peers' rollups past retention are deleted.
const PRUNE: Duration = Duration::from_secs(60);
/// The most members whose rollups are held (records of others are skipped).
const MAX_ROLLUP_MEMBERS: usize = 256;
/// The most titles held from peers (each also in the titles index).
const MAX_PEER_TITLES: usize = 1_000_000;
/// Rows of peers' rollups read before they are written to the store (memory
/// stays bounded whatever a round reads).
const MAX_PENDING_ROWS: usize = 200_000;

/// Peers' rollup records read and not yet written to the store: (member,
/// grain, cube, bucket) → lead → rows.
type PendingRollups =
    BTreeMap<(String, Grain, Cube, i64), BTreeMap<String, Vec<([String; 3], Sums)>>>;

struct Reader {
    cluster: Cluster,
    consumer: BaseConsumer,
    topics: [String; 6],
    assigned: Vec<(String, i32)>,
    view: StoreView,
    serving: Serving,
    keep_versions: usize,
    max_peer_users: usize,
    /// The newest head recorded or found to be this member's own.
    adopted: Option<(u64, i64)>,
    /// The high watermarks (topic, partition, low, high) fetched at a
    /// round's start, until this member has read up to them.
    target: Option<(Instant, Watermarks)>,
    /// Members whose rollups are held.
    rollup_members: BTreeSet<String>,
    indexes: crate::views::indexes::SharedIndexes,
}

/// (topic, partition, low, high) of each assigned partition.
type Watermarks = Vec<(String, i32, i64, i64)>;

pub fn spawn(
    cluster: &Cluster,
    deps: &Deps,
) -> Result<std::thread::JoinHandle<()>, super::ClusterError> {
    let t = &cluster.inner.topics;
    let consumer: BaseConsumer = crate::kafka::base_config(&deps.brokers, &deps.kafka)
        .set(
            "group.id",
            format!("{}.reader.{}", deps.kafka.group_id, cluster.member()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "fetch.message.max.bytes",
            (deps.kafka.max_record_bytes + 65_536).to_string(),
        )
        .create()
        .map_err(crate::kafka::KafkaGlueError::from)?;
    let r = Reader {
        cluster: cluster.clone(),
        consumer,
        topics: [
            t.pairs.clone(),
            t.models.clone(),
            t.members.clone(),
            t.users.clone(),
            t.rollups.clone(),
            t.titles.clone(),
        ],
        assigned: Vec::new(),
        view: deps.view.clone(),
        serving: deps.serving.clone(),
        keep_versions: deps.keep_versions,
        max_peer_users: deps.max_peer_users,
        adopted: None,
        target: None,
        rollup_members: BTreeSet::new(),
        indexes: deps.indexes.clone(),
    };
    let mut r = r;
    Ok(cluster.spawn_supervised("reader", move |restarts| {
        if restarts > 0 {
            // Read every shared topic again from its start (what it
            // holds is replaced record by record).
            r.assigned.clear();
            r.target = None;
        }
        r.run()
    })?)
}

impl Reader {
    fn run(&mut self) {
        let mut last_round = Instant::now() - ROUND;
        let mut last_prune = Instant::now();
        let mut warned = false;
        let mut rollups = PendingRollups::new();
        let mut pending_rows = 0usize;
        while !self.cluster.stopping() {
            if self.assigned.is_empty() {
                if let Err(e) = self.assign() {
                    if !warned {
                        tracing::warn!(
                            "cannot read the group's topics yet: {e}; trying again each second"
                        );
                        warned = true;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
            let mut n = 0;
            let mut models_read = false;
            let mut wait = Duration::from_millis(100);
            while n < 10_000 {
                match self.consumer.poll(wait) {
                    Some(Ok(m)) if m.topic() == self.cluster.inner.topics.rollups => {
                        let r = take_rollup(
                            &mut rollups,
                            &mut self.rollup_members,
                            self.cluster.member(),
                            m.key().unwrap_or_default(),
                            m.payload(),
                        );
                        match r {
                            Ok(rows) => pending_rows += rows,
                            Err(e) => self.unreadable(&m, &e),
                        }
                        if pending_rows >= MAX_PENDING_ROWS {
                            self.store_rollups(std::mem::take(&mut rollups));
                            pending_rows = 0;
                        }
                    }
                    Some(Ok(m)) => {
                        models_read |= m.topic() == self.cluster.inner.topics.models;
                        self.take(&m)
                    }
                    Some(Err(e)) => {
                        tracing::debug!("group reader: {e}");
                        break;
                    }
                    None => break,
                }
                wait = Duration::ZERO;
                n += 1;
            }
            if !rollups.is_empty() {
                self.store_rollups(std::mem::take(&mut rollups));
                pending_rows = 0;
            }
            if last_prune.elapsed() >= PRUNE {
                last_prune = Instant::now();
                if let Err(e) = self.view.prune_peer_rollups() {
                    tracing::warn!("cannot delete the group's rollups past retention: {e}");
                }
            }
            if last_round.elapsed() >= ROUND {
                last_round = Instant::now();
                self.measure();
                self.adopt();
            } else if models_read {
                self.adopt();
            }
        }
    }

    fn assign(&mut self) -> Result<(), String> {
        let mut tpl = TopicPartitionList::new();
        let mut assigned = Vec::new();
        for topic in &self.topics {
            let md = self
                .consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .map_err(|e| format!("{topic}: {e}"))?;
            let parts = md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .filter(|t| t.error().is_none())
                .map_or(0, |t| t.partitions().len() as i32);
            if parts == 0 {
                return Err(format!("{topic}: no such topic yet"));
            }
            for p in 0..parts {
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .map_err(|e| e.to_string())?;
                assigned.push((topic.clone(), p));
            }
        }
        self.consumer.assign(&tpl).map_err(|e| e.to_string())?;
        self.assigned = assigned;
        Ok(())
    }

    fn take(&self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let t = &self.cluster.inner.topics;
        let key = m.key().unwrap_or_default();
        let mut s = self.cluster.lock();
        let ok = if m.topic() == t.users {
            self.take_user(key, m.payload())
        } else if m.topic() == t.titles {
            self.take_title(&mut s, key, m.payload())
        } else if m.topic() == t.pairs {
            take_pair(&mut s, key, m.payload())
        } else if m.topic() == t.models {
            match m.payload().map(wire::model_record) {
                Some(Ok(ModelRecord::Head(h))) => {
                    s.head = Some(h);
                    Ok(())
                }
                Some(Ok(ModelRecord::Chunk(c))) => {
                    if c.data.len()
                        <= self
                            .cluster
                            .inner
                            .cfg
                            .model_chunk_bytes
                            .max(wire::MAX_META_BYTES)
                    {
                        s.chunks.insert(c.index, c);
                        Ok(())
                    } else {
                        Err(format!("a chunk of {} bytes", c.data.len()))
                    }
                }
                Some(Err(e)) => Err(e.to_string()),
                None => Ok(()),
            }
        } else if m.topic() == t.members {
            match m.payload().map(wire::heartbeat) {
                Some(Ok(h)) => {
                    s.members.insert(h.member.clone(), (h, Instant::now()));
                    Ok(())
                }
                Some(Err(e)) => Err(e.to_string()),
                None => Ok(()),
            }
        } else {
            Ok(())
        };
        drop(s);
        if let Err(e) = ok {
            self.unreadable(m, &e);
        }
    }

    /// Counts and logs a record skipped.
    fn unreadable(&self, m: &rdkafka::message::BorrowedMessage<'_>, e: &str) {
        let mut s = self.cluster.lock();
        s.unreadable += 1;
        if s.unreadable <= 10 || s.unreadable.is_power_of_two() {
            tracing::warn!(
                "skipped a record of {} at {}/{} (unreadable records so far: {}): {e}",
                m.topic(),
                m.partition(),
                m.offset(),
                s.unreadable
            );
        }
    }

    /// Writes the peers' rollups read into the store (each lead replaces
    /// what was held of it).
    fn store_rollups(&self, pending: PendingRollups) {
        let buckets: Vec<PeerBucket> = pending
            .into_iter()
            .map(|((member, grain, cube, bucket), leads)| PeerBucket {
                member,
                grain,
                cube,
                bucket,
                leads,
            })
            .collect();
        match self.view.put_peer_rollups(&buckets) {
            Ok(_) => {
                let mut s = self.cluster.lock();
                s.rollup_buckets += buckets.len() as u64;
            }
            Err(e) => tracing::error!(
                "cannot hold the group's rollups ({} buckets dropped; a restart reads them again): {e}",
                buckets.len()
            ),
        }
    }

    /// A user another member folded in: served from here on.
    fn take_user(&self, key: &[u8], payload: Option<&[u8]>) -> Result<(), String> {
        let Some(payload) = payload else {
            return Ok(());
        };
        let (user, r) = wire::user_record(key, payload).map_err(|e| e.to_string())?;
        if r.origin != self.cluster.member() {
            if let Ok(mut peers) = self.serving.peers().write() {
                peers.insert(user, r.user, self.max_peer_users);
            }
        }
        Ok(())
    }

    /// A movie or series another member stored: named and ranked here too.
    fn take_title(&self, s: &mut State, key: &[u8], payload: Option<&[u8]>) -> Result<(), String> {
        let Some(payload) = payload else {
            return Ok(());
        };
        let r = wire::title_record(key, payload).map_err(|e| e.to_string())?;
        if r.origin == self.cluster.member() {
            return Ok(());
        }
        let t = &r.title;
        if !s.peer_titles.contains_key(&t.id) && s.peer_titles.len() >= MAX_PEER_TITLES {
            return Err(format!(
                "more than {MAX_PEER_TITLES} titles from peers: {:?} not held",
                t.id
            ));
        }
        s.peer_titles.insert(t.id.clone(), t.timestamp_ms);
        self.indexes.upsert_title(r.kind(), t);
        Ok(())
    }

    /// Each shared topic's lag; and caught up (as of a round's start) once
    /// this member has read up to the high watermarks fetched then (records
    /// keep coming — heartbeats — so "no lag now" may never hold).
    fn measure(&mut self) {
        let fetched = Instant::now();
        let positions = self.consumer.position().ok();
        let position = |topic: &str, p: i32, low: i64| {
            positions
                .as_ref()
                .and_then(|tpl| tpl.find_partition(topic, p))
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0)
                .unwrap_or(low)
                .max(low)
        };
        let mut lag = std::collections::BTreeMap::<String, i64>::new();
        let mut highs = Vec::new();
        for (topic, p) in &self.assigned {
            let Ok((low, high)) = self
                .consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(2))
            else {
                continue;
            };
            *lag.entry(topic.clone()).or_default() += (high - position(topic, *p, low)).max(0);
            highs.push((topic.clone(), *p, low, high));
        }
        let reached = self.target.as_ref().filter(|(_, target)| {
            target
                .iter()
                .all(|(topic, p, low, high)| position(topic, *p, *low) >= *high)
        });
        let mut s = self.cluster.lock();
        s.lag = lag;
        if let Some((at, _)) = reached {
            s.caught_up = Some(*at);
        }
        drop(s);
        if reached.is_some() || self.target.is_none() {
            self.target = (highs.len() == self.assigned.len()).then_some((fetched, highs));
        }
    }

    /// Records and serves the newest published champion once all its chunks are read.
    fn adopt(&mut self) {
        let (head, bundle) = {
            let s = self.cluster.lock();
            let Some(h) = s.head.clone() else { return };
            if self.adopted == Some((h.id, h.at_ms)) {
                return;
            }
            // Not all read yet (or a publication cut short: the next one replaces it).
            if (0..h.chunks).any(|i| s.chunks.get(&i).is_none_or(|c| c.id != h.id)) {
                return;
            }
            let mut bundle = Vec::new();
            for c in (0..h.chunks).filter_map(|i| s.chunks.get(&i)) {
                bundle.extend_from_slice(&c.data);
            }
            (h, bundle)
        };
        self.adopted = Some((head.id, head.at_ms));
        // Its chunks are not needed again (a new model sends all of its own).
        self.cluster.lock().chunks.retain(|_, c| c.id != head.id);
        if bundle.len() as u64 != head.bytes {
            tracing::warn!(
                "the group's model v{} has {} bytes, its head says {}: not served",
                head.id,
                bundle.len(),
                head.bytes
            );
            return;
        }
        let serving_it = self.serving.get().map(|c| c.id) == Some(head.id);
        if head.by == self.cluster.member() && serving_it {
            return;
        }
        match crate::ml::registry::adopt(&self.view, &head.meta, &bundle, self.keep_versions) {
            Ok(m) => {
                tracing::info!(
                    "serving the group's model v{} (trained by member {}; {} users, {} items)",
                    m.id,
                    head.by,
                    m.bundle.users.len(),
                    m.bundle.items.len()
                );
                self.serving.set(m);
            }
            Err(e) => tracing::error!("cannot serve the group's model v{}: {e}", head.id),
        }
    }
}

fn take_pair(s: &mut State, key: &[u8], payload: Option<&[u8]>) -> Result<(), String> {
    let k = wire::pair_key(key).map_err(|e| e.to_string())?;
    let origin = s.pairs.entry(k.origin().to_string()).or_default();
    let Some(payload) = payload else {
        // A tombstone: the pair is gone.
        match k {
            PairKey::Video { user, item, .. } => {
                origin.video.remove(&(user, item));
            }
            PairKey::Music { user, item, .. } => {
                origin.music.remove(&(user, item));
            }
            PairKey::Through { .. } => {}
        }
        return Ok(());
    };
    match (k, wire::pair_value(payload).map_err(|e| e.to_string())?) {
        (PairKey::Video { user, item, .. }, PairValue::Video(a)) => {
            origin.video.insert((user, item), a);
        }
        (PairKey::Music { user, item, .. }, PairValue::Music(a)) => {
            origin.music.insert((user, item), a);
        }
        (PairKey::Through { .. }, PairValue::Through(seq)) => {
            origin.through = origin.through.max(seq)
        }
        _ => return Err("a key and value of different kinds".into()),
    }
    Ok(())
}

/// A record of the rollups topic: held until the round's write (this
/// member's own are skipped, as are tombstones). Answers the rows held.
fn take_rollup(
    pending: &mut PendingRollups,
    members: &mut BTreeSet<String>,
    this_member: &str,
    key: &[u8],
    payload: Option<&[u8]>,
) -> Result<usize, String> {
    let (k, v) = wire::rollup_record(key, payload).map_err(|e| e.to_string())?;
    let Some(v) = v else { return Ok(0) };
    if k.origin == this_member {
        return Ok(0);
    }
    if !members.contains(&k.origin) {
        if members.len() >= MAX_ROLLUP_MEMBERS {
            return Err(format!(
                "rollups of a member past the {MAX_ROLLUP_MEMBERS} held ({:?})",
                k.origin
            ));
        }
        members.insert(k.origin.clone());
    }
    let rows = v.rows.len();
    pending
        .entry((k.origin, k.grain, k.cube, k.bucket))
        .or_default()
        .insert(k.lead, v.rows);
    Ok(rows)
}
