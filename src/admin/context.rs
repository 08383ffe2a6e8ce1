//! What every admin command reaches: the running daemon's handles ([`Admin`]),
//! the stored-event rate, the brokers' high watermarks. What each command does
//! with them is in [`super::cmd`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::cmd::status::BrokerState;
use super::cmd::Reply;
use super::error::CommandError;
use super::protocol::{parse_request, to_wire, Request};
use crate::actors::messages::{
    Backup, EvaluateChampion, GetCounters, GetStats, GetStoreStatus, ProducerControl, SetChampion,
    SetPaused, TrainNow,
};
use crate::config::Config;
use crate::domain::event::Kind;
use crate::ingest::pipeline::Progress;
use crate::kafka::WatermarkProbe;
use crate::ml::serve::Serving;
use crate::store::StoreView;
use crate::views::indexes::SharedIndexes;

/// Stored-event counts sampled once a second, for rates over a window.
#[derive(Default)]
pub struct Rates {
    samples: VecDeque<(Instant, u64)>,
}

impl Rates {
    pub fn sample(&mut self, stored: u64) {
        let now = Instant::now();
        self.samples.push_back((now, stored));
        while self.samples.len() > 61 {
            self.samples.pop_front();
        }
    }

    /// Events stored per second over the last `secs` seconds (or what is sampled).
    pub fn per_sec(&self, secs: u64) -> f64 {
        let Some(&(t1, n1)) = self.samples.back() else {
            return 0.0;
        };
        let Some(&(t0, n0)) = self
            .samples
            .iter()
            .find(|(t, _)| t1.duration_since(*t) <= Duration::from_secs(secs))
        else {
            return 0.0;
        };
        let dt = t1.duration_since(t0).as_secs_f64();
        if dt > 0.0 {
            n1.saturating_sub(n0) as f64 / dt
        } else {
            0.0
        }
    }
}

/// Everything the admin commands reach: the daemon's handles (reached
/// through `Deref`, e.g. `a.store`), and the admin edge's own state.
pub struct Admin {
    pub cfg: Config,
    handles: Handles,
    /// High watermarks, for lag (queried at most once a second).
    probe: Arc<WatermarkProbe>,
    marks: Mutex<Option<(Instant, HighWatermarks)>>,
    /// Since when the brokers have not answered, and why (None: they answer).
    outage: Mutex<Option<(Instant, String)>>,
    pub rates: Arc<Mutex<Rates>>,
    /// Notified by the `shutdown` command.
    pub shutdown: Arc<tokio::sync::Notify>,
    /// Where the HTTP server listens, once it does.
    pub http: std::sync::OnceLock<String>,
}

impl std::ops::Deref for Admin {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.handles
    }
}

/// (topic, partition) → high watermark.
pub(crate) type HighWatermarks = BTreeMap<(String, i32), i64>;

/// Runs `f` on a blocking thread (long reads and writes never stall the actors).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CommandError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CommandError::Worker(e.to_string()))
}

/// What the commands ask of the store's actor (reads between two batch writes).
#[derive(Clone)]
pub struct StoreHandle {
    pub status: Recipient<GetStoreStatus>,
    pub stats: Recipient<GetStats>,
    pub counters: Recipient<GetCounters>,
    pub backup: Recipient<Backup>,
}

/// The running daemon's handles the commands reach (the runtime hands them
/// over): the actors by the messages they take, never by their types.
pub struct Handles {
    pub started: Instant,
    pub namespace: String,
    pub bootstrap: String,
    pub store: StoreHandle,
    pub view: StoreView,
    pub indexes: SharedIndexes,
    pub pause: Recipient<SetPaused>,
    pub train: Recipient<TrainNow>,
    pub evaluate: Recipient<EvaluateChampion>,
    pub set_champion: Recipient<SetChampion>,
    pub import_model: Recipient<crate::actors::messages::ImportModel>,
    pub serving: Serving,
    pub producers: Vec<(Kind, Recipient<ProducerControl>)>,
    pub progress: Arc<Progress>,
    /// The consumer's paused flag.
    pub paused: Arc<AtomicBool>,
    /// The partitions the consumer owns now.
    pub assignment: crate::kafka::Assignment,
    /// This member's name in the group and how it commits there.
    pub claims: Arc<crate::kafka::Claims>,
    /// A fault that stops the daemon (the store cannot write), once raised.
    pub fatal: Arc<crate::ingest::pipeline::Fatal>,
    pub analytics: Arc<Mutex<crate::views::analytics::Analytics>>,
    /// The alert rules' states.
    pub alerts: Arc<Mutex<crate::views::alerts::Book>>,
    /// This member's part in its group (`cluster.enabled`).
    pub cluster: Option<crate::cluster::Cluster>,
}

impl Admin {
    /// Gathers the handles of a running daemon.
    pub async fn new(d: Handles, cfg: Config) -> Result<Admin, CommandError> {
        let probe = Arc::new(WatermarkProbe::new(&d.bootstrap, &cfg.kafka)?);
        let rates = Arc::new(Mutex::new(Rates::default()));
        let (r, p) = (rates.clone(), d.progress.clone());
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Ok(mut r) = r.lock() {
                    r.sample(Progress::get(&p.stored) + Progress::get(&p.rejected));
                }
            }
        });
        Ok(Admin {
            cfg: cfg.clone(),
            handles: d,
            probe,
            marks: Mutex::new(None),
            outage: Mutex::new(None),
            rates,
            shutdown: Arc::new(tokio::sync::Notify::new()),
            http: std::sync::OnceLock::new(),
        })
    }

    /// One request line in, one reply object out (never fails).
    pub async fn handle(&self, line: &[u8]) -> serde_json::Value {
        let outcome = match parse_request(line) {
            Ok(req) => self.call(req).await,
            Err(e) => Err(e.into()),
        };
        to_wire(&outcome)
    }

    /// One request in, its reply or why it failed.
    pub async fn call(&self, req: Request) -> Result<Reply, CommandError> {
        req.check()?;
        super::cmd::run(self, req).await
    }

    /// The serving champion, or why there is none.
    pub fn champion(&self) -> Result<Arc<crate::ml::serve::Champion>, CommandError> {
        self.serving.get().ok_or_else(|| self.no_champion())
    }

    /// Why no model serves: none trained yet, or none promoted (the error
    /// path only: it reads the versions' list).
    pub fn no_champion(&self) -> CommandError {
        let trained = crate::ml::version::versions(&self.view).map_or(0, |v| {
            v.iter()
                .filter(|m| m.kind() == crate::ml::version::ModelKind::Als)
                .count()
        });
        match trained {
            0 => CommandError::NoModel {
                min_events: self.cfg.models.min_events,
            },
            trained => CommandError::NotPromoted { trained },
        }
    }

    /// High watermarks of the stored partitions (cached for a second; empty
    /// while the brokers do not answer).
    pub(crate) async fn high_watermarks(&self, offsets: &[(String, i32, i64)]) -> HighWatermarks {
        if let Ok(m) = self.marks.lock() {
            if let Some((at, marks)) = &*m {
                if at.elapsed() < Duration::from_secs(1) {
                    return marks.clone();
                }
            }
        }
        let parts: Vec<(String, i32)> = offsets.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        let probe = self.probe.clone();
        let got = blocking(move || probe.high_watermarks(&parts, Duration::from_secs(3))).await;
        let got = match got {
            Ok(Ok(marks)) => Ok(marks),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut outage = self.outage.lock().ok();
        match got {
            Ok(marks) => {
                if let Some(o) = outage.as_mut() {
                    if let Some((since, _)) = o.take() {
                        tracing::info!(
                            "brokers answer again after {:.0} s",
                            since.elapsed().as_secs_f64()
                        );
                    }
                }
                if let Ok(mut m) = self.marks.lock() {
                    *m = Some((Instant::now(), marks.clone()));
                }
                marks
            }
            Err(e) => {
                if let Some(o) = outage.as_mut() {
                    if o.is_none() {
                        tracing::error!("brokers {} do not answer: {e}; ingest waits and resumes when they are back", self.bootstrap);
                        **o = Some((Instant::now(), e));
                    } else if let Some((_, why)) = o.as_mut() {
                        *why = e;
                    }
                }
                BTreeMap::new()
            }
        }
    }

    /// Whether the brokers answered the last probe: (reachable, error, seconds down).
    pub(crate) fn broker_state(&self) -> BrokerState {
        match self.outage.lock().ok().and_then(|o| o.clone()) {
            None => BrokerState {
                reachable: true,
                error: None,
                down_for_s: None,
            },
            Some((since, why)) => BrokerState {
                reachable: false,
                error: Some(why),
                down_for_s: Some(since.elapsed().as_secs_f64()),
            },
        }
    }
}
