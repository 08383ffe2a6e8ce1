//! `status`: uptime, offsets and lag per partition, rates, the group, the
//! producers, actor health and the champion.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ingest::ProducerEntry;
use crate::actors::messages::{GetStoreStatus, ProducerControl};
use crate::admin::context::Admin;
use crate::admin::error::CommandError;
use crate::ingest::pipeline::Progress;
use crate::kafka::GroupCommit;

/// Whether the brokers answered the last probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerState {
    pub reachable: bool,
    pub error: Option<String>,
    pub down_for_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestStatus {
    pub paused: bool,
    pub consumed: u64,
    pub stored: u64,
    pub rejected: u64,
    pub duplicates_skipped: u64,
    pub batches_in_flight: u64,
    /// Records read, then left to their partition's next owner: it was
    /// handed over before they were written.
    #[serde(default)]
    pub left_to_next_owner: u64,
    pub events_per_sec_10s: f64,
    pub events_per_sec_60s: f64,
    /// Records in the brokers not yet stored, over the owned partitions.
    pub lag: i64,
}

/// One partition this store holds offsets for, or this member owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// None: owned, nothing stored from it yet.
    pub next_offset: Option<i64>,
    pub high_watermark: Option<i64>,
    /// Only for the partitions this member owns.
    pub lag: Option<i64>,
    pub assigned: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Damage {
    pub what: String,
    pub why: String,
}

/// What the store holds per distinct id, against its bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub videos: usize,
    pub max_tracked_videos: usize,
    pub folded_video_events: u64,
    pub listening_pairs: usize,
    pub max_listening_pairs: usize,
    pub folded_listening_events: u64,
}

/// The raw event log: what `[store.retention]` allows (0: no bound), what
/// is held, and what retention deleted since the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLog {
    pub max_age_hours: f64,
    pub max_size_mb: f64,
    #[serde(flatten)]
    pub held: crate::store::retention::Retained,
}

/// sled's files (see `store::rewrite`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreFiles {
    pub size_on_disk_bytes: u64,
    /// The runs log's files (the journal parts and pair runs, beside sled's).
    #[serde(default)]
    pub runs_log_files: u64,
    #[serde(default)]
    pub runs_log_bytes: u64,
    #[serde(flatten)]
    pub rewrite: crate::store::rewrite::RewriteStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub damaged: Vec<Damage>,
    pub quarantined: usize,
    pub held: Option<Held>,
    /// The raw event log against `[store.retention]`.
    #[serde(default)]
    pub event_log: Option<EventLog>,
    /// The video pairs held in memory until compacted into chunks.
    #[serde(default)]
    pub pairs: Option<crate::store::PairsStatus>,
    /// The durable rollups: batches held until compacted, compactions, retention.
    #[serde(default)]
    pub rollups: Option<crate::store::rollup::RollupStatus>,
    /// sled's files and the rewrites that keep their size level.
    #[serde(default)]
    pub files: Option<StoreFiles>,
    /// The fault that stops the daemon, once raised.
    pub fault: Option<String>,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub member: String,
    pub commit: Option<GroupCommit>,
    pub claims_refused: u64,
    pub claimed_records_read_back: u64,
    /// Times this member rejoined a group that settled without giving it a
    /// partition it should hold.
    #[serde(default)]
    pub rejoins: u64,
}

/// "ok", "stopped" or why the actor does not answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorHealth {
    pub store: String,
    pub parser: String,
    pub trainer: String,
    pub evaluator: String,
    pub producers: String,
}

/// The running daemon's `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// "running".
    pub state: String,
    pub uptime_s: f64,
    pub version: String,
    pub data_dir: PathBuf,
    pub brokers: String,
    pub offset_namespace: String,
    pub http: Option<String>,
    pub broker: BrokerState,
    pub ingest: IngestStatus,
    pub partitions: Vec<PartitionStatus>,
    pub store: StoreStatus,
    pub group: GroupStatus,
    pub producers: Vec<ProducerEntry>,
    pub actors: ActorHealth,
    pub champion: Option<u64>,
    /// What serves lists: "model vN", else "popularity" (no model trained
    /// yet, or none has beaten popularity on held-out data).
    #[serde(default)]
    pub serving: String,
    /// The family that ranks the champion's lists (als, ease, knn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_family: Option<crate::ml::family::Family>,
    /// What the fold-in did: users held folded into the champion, solves,
    /// their speed, commit → served latency, the item factors' age.
    #[serde(default)]
    pub fold_in: crate::ml::live::LiveStats,
    /// The alert rules, those firing, evaluations so far.
    #[serde(default)]
    pub alerts: AlertsSummary,
    /// The group acting as one (`cluster.enabled`): members, the trainer,
    /// what each serves, the shared topics' lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertsSummary {
    pub rules: usize,
    pub firing: Vec<String>,
    pub evaluations: u64,
}

/// `status` while the daemon starts (waiting for its store or brokers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartingStatus {
    /// "starting".
    pub state: String,
    pub waiting_for: String,
    pub uptime_s: f64,
    pub version: String,
    pub data_dir: PathBuf,
    pub brokers: String,
}

/// Either `status` (for clients that read it before the daemon runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnyStatus {
    Running(Box<StatusReply>),
    Starting(StartingStatus),
}

fn health(connected: bool) -> String {
    if connected { "ok" } else { "stopped" }.to_string()
}

pub async fn status(a: &Admin) -> Result<StatusReply, CommandError> {
    // One read: `champion` and `serving` name the same model.
    let (champion, serving_family) = a
        .serving
        .get()
        .map(|c| (c.id, c.recommender.family()))
        .unzip();
    let ns = a.namespace.clone();
    let store = tokio::time::timeout(
        Duration::from_secs(5),
        a.store.status.send(GetStoreStatus { namespace: ns }),
    )
    .await;
    let (offsets, damage, quarantined, held, (event_log, pairs, files), store_health) = match store
    {
        Ok(Ok(s)) => {
            let held = Held {
                videos: s.tracked.videos,
                max_tracked_videos: s.limits.videos,
                folded_video_events: s.folded_video_events,
                listening_pairs: s.tracked.listening_pairs,
                max_listening_pairs: s.limits.listening_pairs,
                folded_listening_events: s.folded_listening_events,
            };
            let log = EventLog {
                max_age_hours: s.retention.max_age_ms as f64 / 3_600_000.0,
                max_size_mb: s.retention.max_bytes as f64 / f64::from(1 << 20),
                held: s.retained,
            };
            let files = StoreFiles {
                size_on_disk_bytes: s.size_on_disk,
                runs_log_files: s.runs_files.0,
                runs_log_bytes: s.runs_files.1,
                rewrite: s.rewrite,
            };
            let (o, d, q) = (s.offsets, s.damage, s.quarantined);
            (
                o,
                d,
                q,
                Some(held),
                (Some(log), Some(s.pairs), Some(files)),
                "ok",
            )
        }
        Ok(Err(_)) => (
            Vec::new(),
            Vec::new(),
            0,
            None,
            (None, None, None),
            "stopped",
        ),
        Err(_) => (
            Vec::new(),
            Vec::new(),
            0,
            None,
            (None, None, None),
            "not answering within 5 s",
        ),
    };
    let damaged: Vec<Damage> = damage
        .into_iter()
        .map(|(what, why)| Damage { what, why })
        .collect();
    let assigned: Vec<(String, i32)> = a.assignment.lock().map(|x| x.clone()).unwrap_or_default();
    // Owned partitions nothing was stored from yet count from offset 0.
    let unstored: Vec<(String, i32, i64)> = assigned
        .iter()
        .filter(|(t, p)| !offsets.iter().any(|(ot, op, _)| ot == t && op == p))
        .map(|(t, p)| (t.clone(), *p, 0))
        .collect();
    let asked: Vec<(String, i32, i64)> = offsets.iter().chain(&unstored).cloned().collect();
    let marks = a.high_watermarks(&asked).await;
    let mut lag_total = 0i64;
    let mut partitions: Vec<PartitionStatus> = offsets
        .iter()
        .map(|(t, p, next)| {
            let high = marks.get(&(t.clone(), *p)).copied();
            let owned = assigned.iter().any(|(at, ap)| at == t && ap == p);
            // Lag is this member's only for the partitions it owns.
            let lag = high.filter(|_| owned).map(|h| (h - next).max(0));
            lag_total += lag.unwrap_or(0);
            PartitionStatus {
                topic: t.clone(),
                partition: *p,
                next_offset: Some(*next),
                high_watermark: high,
                lag,
                assigned: owned,
            }
        })
        .collect();
    for (t, p, _) in &unstored {
        let high = marks.get(&(t.clone(), *p)).copied();
        lag_total += high.unwrap_or(0);
        partitions.push(PartitionStatus {
            topic: t.clone(),
            partition: *p,
            next_offset: None,
            high_watermark: high,
            lag: high,
            assigned: true,
        });
    }
    let mut producers = Vec::new();
    for (kind, p) in &a.producers {
        if let Ok(state) = p.send(ProducerControl::Status).await {
            producers.push(ProducerEntry { kind: *kind, state });
        }
    }
    let (r10, r60) = a
        .rates
        .lock()
        .map(|r| (r.per_sec(10), r.per_sec(60)))
        .unwrap_or_default();
    let p = &a.progress;
    let hint = (!damaged.is_empty())
        .then(|| "stop the daemon and run `playpulse check --data-dir DIR --repair`".to_string());
    Ok(StatusReply {
        state: "running".into(),
        uptime_s: a.started.elapsed().as_secs_f64(),
        version: env!("CARGO_PKG_VERSION").into(),
        data_dir: a.cfg.data_dir.clone(),
        brokers: a.bootstrap.clone(),
        offset_namespace: a.namespace.clone(),
        http: a.http.get().cloned(),
        broker: a.broker_state(),
        ingest: IngestStatus {
            paused: a.paused.load(Ordering::Relaxed),
            consumed: Progress::get(&p.consumed),
            stored: Progress::get(&p.stored),
            rejected: Progress::get(&p.rejected),
            duplicates_skipped: Progress::get(&p.duplicates_skipped),
            batches_in_flight: Progress::get(&p.in_flight),
            left_to_next_owner: Progress::get(&p.left_to_next_owner),
            events_per_sec_10s: r10,
            events_per_sec_60s: r60,
            lag: lag_total,
        },
        partitions,
        store: StoreStatus {
            damaged,
            quarantined,
            held,
            event_log,
            pairs,
            rollups: Some(a.view.rollup_status()),
            files,
            fault: a.fatal.get(),
            hint,
        },
        group: GroupStatus {
            member: a.claims.member.clone(),
            commit: a.claims.mode(),
            claims_refused: a.claims.refused(),
            claimed_records_read_back: a.claims.recovered(),
            rejoins: a.claims.rejoins(),
        },
        producers,
        actors: ActorHealth {
            store: store_health.into(),
            parser: health(a.pause.connected()),
            trainer: health(a.train.connected()),
            evaluator: health(a.evaluate.connected()),
            producers: health(a.producers.iter().all(|(_, p)| p.connected())),
        },
        champion,
        serving: champion.map_or_else(|| "popularity".to_string(), |id| format!("model v{id}")),
        serving_family,
        cluster: a.cluster.as_ref().map(|c| c.status()),
        fold_in: a.serving.fold_stats(),
        alerts: a.alerts.lock().map_or_else(
            |_| AlertsSummary::default(),
            |b| {
                let r = b.reply();
                AlertsSummary {
                    rules: r.rules,
                    firing: r.firing,
                    evaluations: r.evaluations,
                }
            },
        ),
    })
}
