//! What this member tells the group: the pairs its batches changed (absolute
//! aggregates, then a `through` mark), a heartbeat, and — while it trains —
//! each new champion, chunked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wire::{self, Heartbeat, ModelChunk, ModelHead, ModelRecord, PairKey, PairValue};
use super::{Cluster, ClusterError, Deps};
use crate::ingest::pipeline::Progress;
use crate::kafka::{self, KafkaGlueError, Producer};
use crate::ml::serve::Serving;
use crate::store::rollup::{Cube, Grain, Sums, Tuple, OTHER};
use crate::store::{MusicAgg, PairAgg, PairChange, PairChangeAgg, StoreView};

/// Where the store's actor sends each durable batch's pair changes.
pub type PairFeed = Sender<Vec<PairChange>>;

/// Where the fold-in sends the users of each round.
pub type UserFeed = Sender<Vec<(String, crate::ml::live::PeerUser)>>;

/// How long a flush of the shared topics may take before it is retried.
const FLUSH: Duration = Duration::from_secs(30);
/// How long the last flush at shutdown may take (brokers gone: the next
/// start publishes every pair again).
const LAST_FLUSH: Duration = Duration::from_secs(5);

struct Publisher {
    cluster: Cluster,
    producer: Producer,
    rx: Receiver<Vec<PairChange>>,
    users_rx: Option<Receiver<Vec<(String, crate::ml::live::PeerUser)>>>,
    /// Users folded in since the last publication (the newest state of each).
    users: HashMap<String, crate::ml::live::PeerUser>,
    view: StoreView,
    serving: Serving,
    progress: Arc<Progress>,
    http: Option<String>,
    /// Pairs changed since the last publication: video (user → items; read
    /// whole at publication), music (the aggregate after the change).
    video: HashMap<String, HashSet<String>>,
    music: HashMap<(String, String), MusicAgg>,
    /// Every batch below it is in the changes taken.
    through: u64,
    /// The start's publication of every pair is still to be done.
    full: Option<Vec<(String, String, MusicAgg)>>,
    last_champion: Option<u64>,
    published_model: Option<u64>,
    /// A champion set here while this member trained (a promotion, a
    /// rollback), until it is published: the role moving away in between
    /// does not keep it from the group.
    owed: Option<u64>,
    /// Whether this member trained at the last look.
    trained: bool,
    /// After a failed publication of the champion: when to try again.
    model_retry_at: Option<Instant>,
    /// How long a flush may take (shorter at shutdown).
    flush: Duration,
    /// Every rollup bucket is still to be published (at start, or after
    /// more changed than are noted).
    rollups_full: bool,
    indexes: crate::views::indexes::SharedIndexes,
    /// Titles published: id → the record's time.
    titles_sent: HashMap<String, i64>,
}

pub fn spawn(
    cluster: &Cluster,
    deps: Deps,
) -> Result<(PairFeed, std::thread::JoinHandle<()>), ClusterError> {
    let producer = kafka::producer(&deps.brokers, &deps.kafka)?;
    // Noted before the start's publication lists the buckets: a batch held
    // in between is in one or the other.
    deps.view.track_rollup_changes();
    let (tx, rx) = std::sync::mpsc::channel();
    let p = Publisher {
        cluster: cluster.clone(),
        producer,
        rx,
        users_rx: deps.users,
        users: HashMap::new(),
        view: deps.view,
        serving: deps.serving,
        progress: deps.progress,
        http: deps.http,
        video: HashMap::new(),
        music: HashMap::new(),
        through: deps.seq,
        full: Some(deps.music),
        last_champion: None,
        published_model: None,
        owed: None,
        trained: false,
        model_retry_at: None,
        flush: FLUSH,
        rollups_full: true,
        indexes: deps.indexes,
        titles_sent: HashMap::new(),
    };
    let mut p = p;
    let h = cluster.spawn_supervised("publish", move |restarts| {
        if restarts > 0 {
            // What a panic cut short is published again: every rollup
            // bucket (pairs changed since go as they change).
            p.rollups_full = true;
        }
        p.run()
    })?;
    Ok((tx, h))
}

impl Publisher {
    fn run(&mut self) {
        let cfg = self.cluster.inner.cfg.clone();
        let publish_every = Duration::from_millis(cfg.publish_interval_ms);
        let rollups_every = Duration::from_millis(cfg.rollup_interval_ms);
        let mut rolled_up = Instant::now() - rollups_every;
        let beat_every = Duration::from_millis(cfg.heartbeat_interval_ms);
        let (mut published, mut beat) =
            (Instant::now() - publish_every, Instant::now() - beat_every);
        while !self.cluster.stopping() {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(changes) => self.take(changes),
                Err(RecvTimeoutError::Timeout) => {}
                // The store's actor stopped: publish what is left, then wait for the stop.
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
            }
            while let Ok(changes) = self.rx.try_recv() {
                self.take(changes);
            }
            if let Some(rx) = &self.users_rx {
                while let Ok(users) = rx.try_recv() {
                    for (user, mut p) in users {
                        if p.items.len() > wire::MAX_USER_ITEMS {
                            // The heaviest are kept (a list leaves out what it holds).
                            p.items.sort_by(|a, b| b.1.total_cmp(&a.1));
                            p.items.truncate(wire::MAX_USER_ITEMS);
                        }
                        self.users.insert(user, p);
                    }
                }
            }
            if published.elapsed() >= publish_every {
                published = Instant::now();
                if let Err(e) = self.publish_pairs() {
                    tracing::warn!("cannot publish this member's pairs to the group (tried again in {publish_every:?}): {e}");
                }
                if let Err(e) = self.publish_users() {
                    tracing::warn!("cannot publish the users folded in here to the group (tried again in {publish_every:?}): {e}");
                }
            }
            if rolled_up.elapsed() >= rollups_every {
                rolled_up = Instant::now();
                if let Err(e) = self.publish_rollups() {
                    tracing::warn!("cannot publish this member's rollups to the group (tried again in {rollups_every:?}): {e}");
                }
                if let Err(e) = self.publish_titles() {
                    tracing::warn!("cannot publish this member's titles to the group (tried again in {rollups_every:?}): {e}");
                }
            }
            if beat.elapsed() >= beat_every {
                beat = Instant::now();
                if let Err(e) = self.heartbeat(false) {
                    tracing::warn!("cannot tell the group this member's state: {e}");
                }
            }
            if self.model_retry_at.is_none_or(|t| Instant::now() >= t) {
                self.model_retry_at = None;
                if let Err(e) = self.publish_model() {
                    tracing::error!("cannot publish the champion to the group (tried again in {beat_every:?}): {e}");
                    self.model_retry_at = Some(Instant::now() + beat_every);
                    self.last_champion = None;
                }
            }
        }
        self.flush = LAST_FLUSH;
        let last = self
            .publish_pairs()
            .and_then(|()| self.publish_rollups())
            .and_then(|()| self.heartbeat(true));
        if let Err(e) = last {
            tracing::warn!("leaving the group without publishing all ({e}); the next start publishes every pair again");
        }
    }

    fn take(&mut self, changes: Vec<PairChange>) {
        for c in changes {
            self.through = self.through.max(c.seq + 1);
            match c.agg {
                PairChangeAgg::Video(_) => {
                    self.video
                        .entry(c.user.into_string())
                        .or_default()
                        .insert(c.item.into_string());
                }
                PairChangeAgg::Music(a) => {
                    self.music
                        .insert((c.user.into_string(), c.item.into_string()), a);
                }
            }
        }
    }

    /// Sends one record to the shared topic `topic`, counted in `status`.
    fn send(&self, topic: &str, key: &[u8], value: &[u8]) -> Result<(), KafkaGlueError> {
        kafka::send(&self.producer, topic, key, value, None)?;
        self.cluster.sent(topic, key.len() + value.len());
        Ok(())
    }

    fn send_pair(&self, key: &PairKey, value: &PairValue) -> Result<(), KafkaGlueError> {
        let topic = &self.cluster.inner.topics.pairs;
        self.send(topic, &wire::encode(key), &wire::encode(value))
    }

    fn send_video(
        &self,
        origin: &str,
        user: String,
        item: String,
        agg: PairAgg,
    ) -> Result<(), KafkaGlueError> {
        let origin = origin.to_string();
        self.send_pair(
            &PairKey::Video { origin, user, item },
            &PairValue::Video(agg),
        )
    }

    fn send_music(
        &self,
        origin: &str,
        user: String,
        item: String,
        agg: MusicAgg,
    ) -> Result<(), KafkaGlueError> {
        let origin = origin.to_string();
        self.send_pair(
            &PairKey::Music { origin, user, item },
            &PairValue::Music(agg),
        )
    }

    /// Publishes the pairs changed since the last call (at the first call,
    /// every pair the store holds), then the `through` mark; what is not
    /// delivered is published again at the next call.
    fn publish_pairs(&mut self) -> Result<(), KafkaGlueError> {
        let origin = self.cluster.member().to_string();
        if let Some(music) = &self.full {
            let t = Instant::now();
            let mut n = 0usize;
            for r in self.view.pair_aggregates() {
                let (user, item, agg) = r.map_err(|e| KafkaGlueError::Topic {
                    topic: self.cluster.inner.topics.pairs.clone(),
                    message: format!("cannot read this member's pairs: {e}"),
                })?;
                self.send_video(&origin, user, item, agg)?;
                n += 1;
            }
            for (user, item, agg) in music {
                self.send_music(&origin, user.clone(), item.clone(), *agg)?;
                n += 1;
            }
            self.mark_through(&origin)?;
            self.full = None;
            tracing::info!(
                "published this member's {n} pairs to the group in {:?}",
                t.elapsed()
            );
            return Ok(());
        }
        if self.video.is_empty() && self.music.is_empty() {
            return Ok(());
        }
        let video = std::mem::take(&mut self.video);
        let music = std::mem::take(&mut self.music);
        let sent = (|| {
            for (user, items) in &video {
                let (pairs, _) =
                    self.view
                        .user_video_pairs(user)
                        .map_err(|e| KafkaGlueError::Topic {
                            topic: self.cluster.inner.topics.pairs.clone(),
                            message: format!("cannot read the pairs of {user:?}: {e}"),
                        })?;
                for (item, agg) in pairs.into_iter().filter(|(i, _)| items.contains(i)) {
                    self.send_video(&origin, user.clone(), item, agg)?;
                }
            }
            for ((user, item), agg) in &music {
                self.send_music(&origin, user.clone(), item.clone(), *agg)?;
            }
            self.mark_through(&origin)
        })();
        if sent.is_err() {
            // Published again next time (an aggregate is absolute: sending it twice is harmless).
            for (u, items) in video {
                self.video.entry(u).or_default().extend(items);
            }
            for (k, a) in music {
                self.music.entry(k).or_insert(a);
            }
        }
        sent
    }

    /// Publishes the users folded in since the last call (each once, its
    /// newest state); what is not delivered is published again next time.
    fn publish_users(&mut self) -> Result<(), KafkaGlueError> {
        if self.users.is_empty() {
            return Ok(());
        }
        let users = std::mem::take(&mut self.users);
        let topic = self.cluster.inner.topics.users.clone();
        let origin = self.cluster.member().to_string();
        let sent = (|| {
            for (user, p) in &users {
                let r = wire::UserRecord {
                    origin: origin.clone(),
                    user: p.clone(),
                };
                self.send(&topic, user.as_bytes(), &wire::encode(&r))?;
            }
            kafka::flush(&self.producer, self.flush)
        })();
        if sent.is_err() {
            for (u, p) in users {
                self.users.entry(u).or_insert(p);
            }
        }
        sent
    }

    /// Publishes the rollup rows changed since the last call (at the first
    /// call, or after more changed than are noted, every bucket this store
    /// holds): per (bucket, lead), all of its rows, absolute. What is not
    /// delivered is published again at the next call.
    fn publish_rollups(&mut self) -> Result<(), KafkaGlueError> {
        let touched = self.view.take_rollup_touched();
        let full = self.rollups_full || touched.overflow;
        if !full && touched.leads.is_empty() {
            return Ok(());
        }
        let topic = self.cluster.inner.topics.rollups.clone();
        let store = |e: crate::store::StoreError| KafkaGlueError::Topic {
            topic: topic.clone(),
            message: format!("cannot read this member's rollups: {e}"),
        };
        // Bucket → the leads changed (`None`: all of them).
        let mut buckets: BTreeMap<(Grain, Cube, i64), Option<HashSet<&str>>> = BTreeMap::new();
        if full {
            match self.view.own_rollup_buckets() {
                Ok(all) => buckets.extend(all.into_iter().map(|b| (b, None))),
                Err(e) => {
                    self.view.retouch(touched);
                    return Err(store(e));
                }
            }
        } else {
            for (grain, cube, bucket, lead) in &touched.leads {
                if let Some(leads) = buckets
                    .entry((*grain, *cube, *bucket))
                    .or_insert_with(|| Some(HashSet::new()))
                {
                    leads.insert(lead.as_str());
                }
            }
        }
        let t = Instant::now();
        let origin = self.cluster.member().to_string();
        let sent = (|| {
            let mut records = 0usize;
            for ((grain, cube, bucket), leads) in &buckets {
                let rows = self
                    .view
                    .own_bucket_rows(*grain, *cube, *bucket)
                    .map_err(store)?;
                for lead_rows in rows.chunk_by(|a, b| a.0[0] == b.0[0]) {
                    let lead = lead_rows[0].0[0].as_str();
                    if leads.as_ref().is_some_and(|l| !l.contains(lead)) {
                        continue;
                    }
                    let key = wire::RollupKey {
                        origin: origin.clone(),
                        grain: *grain,
                        cube: *cube,
                        bucket: *bucket,
                        lead: lead.to_string(),
                    };
                    let value = wire::RollupValue {
                        rows: rollup_rows(lead_rows),
                    };
                    self.send(&topic, &wire::encode(&key), &wire::encode(&value))?;
                    records += 1;
                }
            }
            kafka::flush(&self.producer, self.flush)?;
            Ok(records)
        })();
        match sent {
            Ok(records) => {
                if full {
                    self.rollups_full = false;
                    tracing::info!(
                        "published this member's rollups to the group: {} buckets, {records} records in {:?}",
                        buckets.len(),
                        t.elapsed()
                    );
                }
                Ok(())
            }
            Err(e) => {
                if !full {
                    self.view.retouch(touched);
                }
                Err(e)
            }
        }
    }

    /// Publishes the movies and series of this member's index that it has
    /// not published in their current version (a peer's are left out).
    fn publish_titles(&mut self) -> Result<(), KafkaGlueError> {
        let fresh: Vec<(bool, crate::domain::event::Title)> = {
            let Ok(catalog) = self.indexes.catalog() else {
                return Ok(());
            };
            catalog
                .titles
                .entries()
                .filter(|(id, e)| self.titles_sent.get(*id) != Some(&e.title.timestamp_ms))
                .map(|(_, e)| (e.kind == crate::views::affinity::SERIES, e.title.clone()))
                .collect()
        };
        let fresh: Vec<_> = {
            let s = self.cluster.lock();
            fresh
                .into_iter()
                .filter(|(_, t)| s.peer_titles.get(&t.id) != Some(&t.timestamp_ms))
                .collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let topic = self.cluster.inner.topics.titles.clone();
        let origin = self.cluster.member().to_string();
        for (series, title) in &fresh {
            let key = wire::title_key(*series, &title.id);
            let r = wire::TitleRecord {
                origin: origin.clone(),
                series: *series,
                title: title.clone(),
            };
            self.send(&topic, &key, &wire::encode(&r))?;
        }
        kafka::flush(&self.producer, self.flush)?;
        for (_, t) in fresh {
            self.titles_sent.insert(t.id, t.timestamp_ms);
        }
        Ok(())
    }

    /// Waits for the pairs sent so far, then says every batch below `through` is published.
    fn mark_through(&self, origin: &str) -> Result<(), KafkaGlueError> {
        kafka::flush(&self.producer, self.flush)?;
        let key = PairKey::Through {
            origin: origin.to_string(),
        };
        self.send_pair(&key, &PairValue::Through(self.through))?;
        kafka::flush(&self.producer, self.flush)
    }

    fn heartbeat(&self, leaving: bool) -> Result<(), KafkaGlueError> {
        let h = Heartbeat {
            member: self.cluster.member().to_string(),
            trainer: self.cluster.is_trainer() && !leaving,
            serving: self.serving.get().map(|c| c.id),
            stored: self
                .cluster
                .member_stored(Progress::get(&self.progress.stored)),
            http: self.http.clone(),
            at_ms: crate::domain::timefmt::now_ms(),
            leaving,
        };
        let topic = &self.cluster.inner.topics.members;
        self.send(topic, h.member.as_bytes(), &wire::encode(&h))?;
        kafka::flush(&self.producer, self.flush)
    }

    /// While this member trains: publishes the champion when it is newer
    /// than the group's, or when it changed here (a promotion, a rollback);
    /// a champion set while it trained is published even if the role has
    /// moved since.
    fn publish_model(&mut self) -> Result<(), KafkaGlueError> {
        let champion = self.serving.get().map(|c| c.id);
        let changed = self.last_champion.is_some() && champion != self.last_champion;
        self.last_champion = champion;
        // (trained now or at the last look, 100 ms ago: a promotion just
        // before the role moved is still this member's to publish)
        let trainer = self.cluster.is_trainer();
        let trained = std::mem::replace(&mut self.trained, trainer) || trainer;
        let Some(id) = champion else { return Ok(()) };
        if changed && trained {
            self.owed = Some(id);
        }
        let owed = self.owed == Some(id);
        if (!trainer && !owed) || self.published_model == Some(id) {
            return Ok(());
        }
        let (head, caught_up) = {
            let s = self.cluster.lock();
            (s.head.as_ref().map(|h| h.id), s.caught_up.is_some())
        };
        // Until the models topic is read, the group's newest is not known.
        if !caught_up || head == Some(id) || !(head.is_none_or(|h| id > h) || changed || owed) {
            return Ok(());
        }
        let store = |e: crate::store::StoreError| KafkaGlueError::Topic {
            topic: self.cluster.inner.topics.models.clone(),
            message: format!("cannot read model v{id}: {e}"),
        };
        let meta = self
            .view
            .model_metas()
            .map_err(store)?
            .into_iter()
            .find(|(m, _)| *m == id)
            .map(|(_, meta)| meta);
        let (Some(meta), Some(bundle)) = (meta, self.view.model_bundle(id).map_err(store)?) else {
            return Ok(());
        };
        let topic = self.cluster.inner.topics.models.clone();
        let size = self.cluster.inner.cfg.model_chunk_bytes;
        let chunks: Vec<&[u8]> = bundle.chunks(size).collect();
        for (index, data) in chunks.iter().enumerate() {
            let r = ModelRecord::Chunk(ModelChunk {
                id,
                index: index as u32,
                data: data.to_vec(),
            });
            let value = wire::encode(&r);
            kafka::send_to(&self.producer, &topic, 0, &r.key(), &value)?;
            self.cluster.sent(&topic, r.key().len() + value.len());
        }
        kafka::flush(&self.producer, self.flush)?;
        let head = ModelRecord::Head(ModelHead {
            id,
            chunks: chunks.len() as u32,
            bytes: bundle.len() as u64,
            meta,
            by: self.cluster.member().to_string(),
            at_ms: crate::domain::timefmt::now_ms(),
        });
        let value = wire::encode(&head);
        kafka::send_to(&self.producer, &topic, 0, &head.key(), &value)?;
        self.cluster.sent(&topic, head.key().len() + value.len());
        kafka::flush(&self.producer, self.flush)?;
        self.published_model = Some(id);
        self.owed = None;
        tracing::info!(
            "published model v{id} to the group ({} bytes in {} chunks)",
            bundle.len(),
            chunks.len()
        );
        Ok(())
    }
}

/// A lead's rows as a record carries them: at most
/// [`wire::MAX_ROLLUP_ROWS`], the lightest past that added up under
/// `(other)` in every other value.
fn rollup_rows(rows: &[(Tuple<String>, Sums)]) -> Vec<([String; 3], Sums)> {
    let mut out: Vec<([String; 3], Sums)> = rows
        .iter()
        .map(|(t, s)| ([t[1].clone(), t[2].clone(), t[3].clone()], *s))
        .collect();
    if out.len() > wire::MAX_ROLLUP_ROWS {
        out.sort_by_key(|r| std::cmp::Reverse(r.1.weight()));
        let mut other = Sums::default();
        for (_, s) in out.drain(wire::MAX_ROLLUP_ROWS - 1..) {
            other.add(&s);
        }
        out.push(([OTHER.into(), OTHER.into(), OTHER.into()], other));
    }
    out
}
