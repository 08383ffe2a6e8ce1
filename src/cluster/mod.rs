//! Daemons of one consumer group acting as one, through Kafka alone (no
//! protocol of our own, no shared disk):
//!
//! - **The trainer role** ([`role`]): each member joins a second consumer
//!   group, `<kafka.group_id>.trainer`, on the one-partition topic `coord`;
//!   the member Kafka assigns that partition trains for the group. When it
//!   leaves or dies, Kafka's rebalance (after the session timeout) moves the
//!   role to another member.
//! - **Pair state** ([`publish`]): each member publishes the absolute
//!   aggregates of the (user, item) pairs its batches changed, keyed by
//!   (member, user, item), to the compacted topic `pairs`, then a `through`
//!   mark (every batch below it is published). At start it publishes all it
//!   holds (a crash between a write and its publication loses nothing). The
//!   trainer adds its peers' aggregates to its own: a pair whose events went
//!   to several members (partitions move) is the sum of their parts.
//! - **The champion** ([`publish`], [`reader`]): the trainer publishes each new
//!   champion (version metadata and serving bundle, in chunks) to the
//!   compacted topic `models`; every member records the newest in its own
//!   registry and serves it, and folds in its own users against it.
//! - **Folded users** ([`publish`], [`reader`]): each member publishes the
//!   users its fold-in solved (factors, seen items with weights, the
//!   champion solved against) to the compacted topic `users`, keyed by user;
//!   the others serve them from it, so a user's list is the same on every
//!   member between trainings too.
//! - **One view** ([`publish`], [`reader`]): each member publishes its
//!   rollup rows (per bucket and lead, absolute) to `rollups` and the titles
//!   it stored to `titles`; every member adds its peers' rows to its range
//!   answers (`store::rollup::group`) and their titles to its index.
//! - **Members** ([`reader`]): each member says who it is, whether it trains,
//!   what it serves and how many events it holds, on `members`; `status`
//!   lists them with each shared topic's lag.
//!
//! Every member reads `pairs`, `models` and `members` from the start
//! (standby state: a new trainer has its peers' pairs at hand).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{ClusterConfig, ClusterTopics};
use crate::store::{MusicAgg, PairAgg};

mod publish;
mod reader;
mod role;
pub mod wire;

pub use publish::{PairFeed, UserFeed};

/// The group's view of one member, as its heartbeats say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    pub member: String,
    pub trainer: bool,
    pub serving: Option<u64>,
    pub stored: u64,
    pub http: Option<String>,
    /// Since its last heartbeat, ms.
    pub age_ms: u64,
    pub this_member: bool,
}

/// What `status` says of the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub member: String,
    pub trainer: bool,
    /// The member that trains, as the heartbeats say (None while the role moves).
    pub trainer_member: Option<String>,
    pub members: Vec<MemberState>,
    /// Shared topic → records this member has not read yet.
    pub lag: BTreeMap<String, i64>,
    /// The newest model published to the group.
    pub group_model: Option<u64>,
    /// Users other members folded in, held to serve them.
    #[serde(default)]
    pub peer_users: usize,
    /// Members whose pairs this member holds, and how many pairs.
    pub pair_origins: usize,
    pub peer_pairs: usize,
    /// Records of the shared topics that did not decode (skipped).
    pub unreadable: u64,
    /// Times a group thread panicked and was started again (see the log).
    #[serde(default)]
    pub thread_restarts: u64,
    /// Peers' rollup buckets this member wrote into its store since it
    /// started (a bucket once per round it changed in).
    #[serde(default)]
    pub peer_rollup_buckets: u64,
    /// Movies and series other members stored, named and ranked here.
    #[serde(default)]
    pub peer_titles: usize,
    pub topics: BTreeMap<String, String>,
    /// What this member published since it started: shared topic → records, bytes.
    #[serde(default)]
    pub published: BTreeMap<String, Sent>,
}

/// Records and bytes (keys and values) sent to one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub records: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaGlueError),
    #[error("cannot start a group thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

#[derive(Default)]
struct OriginPairs {
    video: HashMap<(String, String), PairAgg>,
    music: HashMap<(String, String), MusicAgg>,
    through: u64,
}

#[derive(Default)]
struct State {
    pairs: HashMap<String, OriginPairs>,
    head: Option<wire::ModelHead>,
    chunks: HashMap<u32, wire::ModelChunk>,
    members: BTreeMap<String, (wire::Heartbeat, Instant)>,
    lag: BTreeMap<String, i64>,
    /// When the reader last reached the high watermarks it fetched, as of
    /// the fetch.
    caught_up: Option<Instant>,
    unreadable: u64,
    /// Peers' rollup buckets written to the store.
    rollup_buckets: u64,
    /// Titles read from peers: id → the record's time (this member does
    /// not publish them again).
    peer_titles: HashMap<String, i64>,
}

struct Inner {
    cfg: ClusterConfig,
    topics: ClusterTopics,
    member: String,
    trainer: AtomicBool,
    stop: AtomicBool,
    state: Mutex<State>,
    /// Shared topic → what this member sent to it.
    sent: Mutex<BTreeMap<String, Sent>>,
    /// Panics of the group's threads (each started again).
    restarts: std::sync::atomic::AtomicU64,
    /// Events this member's store held at start (its progress counts since).
    stored_at_start: u64,
    serving: crate::ml::serve::Serving,
}

/// The handle every part of the daemon shares.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

/// The threads of the group's work; [`Threads::stop`] ends them.
pub struct Threads {
    cluster: Cluster,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    /// Says goodbye on `members`, leaves the trainer group, ends the threads.
    pub fn stop(self) {
        self.cluster.inner.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            if h.join().is_err() {
                tracing::error!("a group thread panicked");
            }
        }
    }
}

/// What the group's threads need from the daemon.
pub struct Deps {
    pub brokers: String,
    pub kafka: crate::kafka::config::KafkaConfig,
    pub view: crate::store::StoreView,
    pub serving: crate::ml::serve::Serving,
    pub progress: Arc<crate::ingest::pipeline::Progress>,
    /// Model versions a member keeps (`models.keep_versions`).
    pub keep_versions: usize,
    pub http: Option<String>,
    /// The store's music pairs, next batch sequence number and stored
    /// events at start.
    pub music: Vec<(String, String, MusicAgg)>,
    pub seq: u64,
    pub stored: u64,
    /// Where the fold-in says whom it folded in (none: no fold-in).
    pub users: Option<std::sync::mpsc::Receiver<Vec<(String, crate::ml::live::PeerUser)>>>,
    /// Peers' folded users held at most (`models.fold_in_max_users`).
    pub max_peer_users: usize,
    /// The titles index: this member publishes its titles from it, and adds
    /// its peers' to it.
    pub indexes: crate::views::indexes::SharedIndexes,
}

impl Cluster {
    /// Starts the role, the reader and the publisher; answers the handle, the
    /// threads, and where the store's actor sends each batch's pair changes.
    pub fn start(
        cfg: &ClusterConfig,
        deps: Deps,
    ) -> Result<(Cluster, Threads, PairFeed), ClusterError> {
        let member = deps.view.member_id()?;
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            topics: cfg.topics(&deps.kafka.group_id),
            member,
            trainer: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            sent: Mutex::new(BTreeMap::new()),
            restarts: Default::default(),
            stored_at_start: deps.stored,
            serving: deps.serving.clone(),
        });
        let cluster = Cluster { inner };
        crate::kafka::ensure_topics(&deps.brokers, &deps.kafka, &cluster.topic_specs());
        let mut handles = Vec::new();
        handles.push(role::spawn(&cluster, &deps)?);
        handles.push(reader::spawn(&cluster, &deps)?);
        let (feed, h) = publish::spawn(&cluster, deps)?;
        handles.push(h);
        tracing::info!(
            "group member {}: sharing pairs, models and states on {}, {}, {}; the trainer role on {}",
            cluster.member(),
            cluster.inner.topics.pairs,
            cluster.inner.topics.models,
            cluster.inner.topics.members,
            cluster.inner.topics.coord
        );
        Ok((cluster.clone(), Threads { cluster, handles }, feed))
    }

    /// The shared topics: (name, partitions, compacted).
    fn topic_specs(&self) -> Vec<(String, i32, bool)> {
        let t = self.inner.topics.all();
        t.iter()
            .map(|(_, name, parts, compact)| (name.to_string(), *parts, *compact))
            .collect()
    }

    /// The shared topics, for an embedded broker to create: (name, partitions).
    pub fn embedded_topics(cfg: &ClusterConfig, group_id: &str) -> Vec<(String, i32)> {
        let t = cfg.topics(group_id);
        t.all()
            .iter()
            .map(|(_, name, parts, _)| (name.to_string(), *parts))
            .collect()
    }

    pub fn member(&self) -> &str {
        &self.inner.member
    }

    /// Whether this member trains for the group.
    pub fn is_trainer(&self) -> bool {
        self.inner.trainer.load(Ordering::SeqCst)
    }

    fn stopping(&self) -> bool {
        self.inner.stop.load(Ordering::SeqCst)
    }

    /// Starts the thread `group-<what>` running `run` under
    /// [`Cluster::supervise`].
    fn spawn_supervised(
        &self,
        what: &'static str,
        run: impl FnMut(u32) + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let cluster = self.clone();
        std::thread::Builder::new()
            .name(format!("group-{what}"))
            .spawn(move || cluster.supervise(what, run))
    }

    /// Runs the body of the group thread `what` under [`supervised`],
    /// counting its restarts in `status`.
    fn supervise(&self, what: &str, run: impl FnMut(u32)) {
        supervised(
            what,
            || self.stopping(),
            || {
                self.inner.restarts.fetch_add(1, Ordering::SeqCst);
            },
            run,
        )
    }

    /// Counts a record sent to `topic`.
    fn sent(&self, topic: &str, bytes: usize) {
        let mut sent = self.inner.sent.lock().unwrap_or_else(|p| p.into_inner());
        let e = sent.entry(topic.to_string()).or_default();
        e.records += 1;
        e.bytes += bytes as u64;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The members heard within `cluster.member_timeout_ms` that did not
    /// say they leave, with when they were last heard.
    fn live_members<'a>(
        &self,
        s: &'a State,
    ) -> impl Iterator<Item = (&'a wire::Heartbeat, Instant)> + 'a {
        let timeout = Duration::from_millis(self.inner.cfg.member_timeout_ms);
        s.members
            .values()
            .filter(move |(h, seen)| !h.leaving && seen.elapsed() <= timeout)
            .map(|(h, seen)| (h, *seen))
    }

    /// The member that trains: this one, else the one whose heartbeat says so.
    fn trainer_in(&self, s: &State) -> Option<String> {
        if self.is_trainer() {
            return Some(self.member().to_string());
        }
        self.live_members(s)
            .find(|(h, _)| h.trainer)
            .map(|(h, _)| h.member.clone())
    }

    /// The member that trains, as the heartbeats say.
    pub fn trainer_member(&self) -> Option<String> {
        self.trainer_in(&self.lock())
    }

    /// Refuses `what` (training, a change of champion) unless this member
    /// trains for the group: the error names the member that does.
    pub fn check_trainer(&self, what: &str) -> Result<(), crate::ml::TrainError> {
        if self.is_trainer() {
            return Ok(());
        }
        Err(crate::ml::TrainError::Refused(match self.trainer_member() {
            Some(t) => format!(
                "member {t} trains for the group and decides its champion; this member ({}) serves the group's models: {what} on that member (`status` lists the members)",
                self.member()
            ),
            None => format!(
                "the group's trainer role is moving (a member left): {what} again after the Kafka session timeout"
            ),
        }))
    }

    /// Events the group's stores hold: this member's (`own` stored since it
    /// started, and what its store held then), its peers' as their heartbeats
    /// last said.
    pub fn group_stored(&self, own: u64) -> u64 {
        let s = self.lock();
        let peers: u64 = self
            .live_members(&s)
            .filter(|(h, _)| h.member != self.inner.member)
            .map(|(h, _)| h.stored)
            .sum();
        self.member_stored(own) + peers
    }

    /// Events this member's store holds (`own`: stored since it started).
    pub fn member_stored(&self, own: u64) -> u64 {
        own + self.inner.stored_at_start
    }

    /// The peers' pairs, once this member has read every record published
    /// before the call (waiting at most `cluster.catch_up_seconds`; past that,
    /// what it has read, with a warning).
    pub fn peer_pairs(&self) -> crate::ml::train::PeerPairs {
        let asked = Instant::now();
        let limit = Duration::from_secs(self.inner.cfg.catch_up_seconds);
        loop {
            let caught_up = self.lock().caught_up.is_some_and(|t| t >= asked);
            if caught_up {
                break;
            }
            if asked.elapsed() >= limit || self.stopping() {
                tracing::warn!(
                    "the group's pairs are not all read after {limit:?} (see `status` for the lag): training on what is read"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let s = self.lock();
        let mut out = crate::ml::train::PeerPairs::default();
        for (origin, p) in &s.pairs {
            if *origin == self.inner.member {
                continue;
            }
            out.video
                .extend(p.video.iter().map(|((u, i), a)| (u.clone(), i.clone(), *a)));
            out.music
                .extend(p.music.iter().map(|((u, i), a)| (u.clone(), i.clone(), *a)));
            out.covered.insert(origin.clone(), p.through);
        }
        out
    }

    pub fn status(&self) -> ClusterStatus {
        let s = self.lock();
        let members: Vec<MemberState> = self
            .live_members(&s)
            .map(|(h, seen)| MemberState {
                member: h.member.clone(),
                trainer: h.trainer,
                serving: h.serving,
                stored: h.stored,
                http: h.http.clone(),
                age_ms: seen.elapsed().as_millis() as u64,
                this_member: h.member == self.inner.member,
            })
            .collect();
        ClusterStatus {
            member: self.inner.member.clone(),
            trainer: self.is_trainer(),
            trainer_member: self.trainer_in(&s),
            members,
            lag: s.lag.clone(),
            group_model: s.head.as_ref().map(|h| h.id),
            peer_users: self.inner.serving.peers().read().map_or(0, |p| p.len()),
            pair_origins: s.pairs.len(),
            peer_pairs: s
                .pairs
                .iter()
                .filter(|(o, _)| **o != self.inner.member)
                .map(|(_, p)| p.video.len() + p.music.len())
                .sum(),
            unreadable: s.unreadable,
            thread_restarts: self.inner.restarts.load(Ordering::SeqCst),
            peer_rollup_buckets: s.rollup_buckets,
            peer_titles: s.peer_titles.len(),
            topics: self
                .inner
                .topics
                .all()
                .iter()
                .map(|(what, name, _, _)| (what.to_string(), name.to_string()))
                .collect(),
            published: self
                .inner
                .sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Runs `run` (its argument: how many times it panicked before) until it
/// returns: a panic is logged with its message, counted (`on_panic`), and
/// `run` starts again after a second unless `stopping` — a fault in one
/// record or one publication does not end the group's work.
fn supervised(
    what: &str,
    stopping: impl Fn() -> bool,
    on_panic: impl Fn(),
    mut run: impl FnMut(u32),
) {
    let mut restarts = 0u32;
    loop {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(restarts)));
        let Err(p) = r else { return };
        restarts = restarts.saturating_add(1);
        on_panic();
        tracing::error!(
            "the group's {what} thread panicked ({}); started again (restart {restarts})",
            crate::domain::worker::panic_message(p.as_ref())
        );
        if stopping() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[test]
    fn a_group_thread_that_panics_is_started_again_and_counted() {
        let (runs, panics) = (AtomicU32::new(0), AtomicU32::new(0));
        supervised(
            "test",
            || false,
            || {
                panics.fetch_add(1, Ordering::SeqCst);
            },
            |before| {
                let n = runs.fetch_add(1, Ordering::SeqCst);
                assert_eq!(before, n, "each run is told how many panicked before it");
                if n < 2 {
                    panic!("a fault in round {n}");
                }
            },
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(panics.load(Ordering::SeqCst), 2);
        // Stopping: not started again.
        let runs = AtomicU32::new(0);
        supervised(
            "test",
            || true,
            || {},
            |_| {
                runs.fetch_add(1, Ordering::SeqCst);
                panic!("a fault while stopping");
            },
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
