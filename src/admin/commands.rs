//! What each admin command does: reads go to the store actor (aggregates) or to
//! a [`StoreView`] on a blocking thread (exports, dead letters), controls go to
//! the actors, recommendations read the shared serving champion.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};

use super::protocol::{
    parse_request, DlqAction, ExportWhat, ModelsAction, ProducerAction, Request, COMMANDS,
};
use crate::actors::evaluator::{EvaluateChampion, EvaluatorActor, SetChampion};
use crate::actors::messages::{ProducerControl, SetPaused};
use crate::actors::parser::ParserActor;
use crate::actors::producer::ProducerActor;
use crate::actors::store::{StoreActor, WithStore, WithStoreMut};
use crate::actors::trainer::{TrainNow, TrainerActor};
use crate::config::Config;
use crate::daemon::Daemon;
use crate::event::Kind;
use crate::kafka::WatermarkProbe;
use crate::ml::serve::{Hints, Serving};
use crate::pipeline::Progress;
use crate::store::{Store, StoreView};

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

/// Everything the admin commands reach.
pub struct Admin {
    pub cfg: Config,
    /// A fault that stops the daemon (the store cannot write), once raised.
    pub fatal: Arc<crate::pipeline::Fatal>,
    pub started: Instant,
    pub namespace: String,
    pub bootstrap: String,
    pub store: Addr<StoreActor>,
    pub view: StoreView,
    pub parser: Addr<ParserActor>,
    pub trainer: Addr<TrainerActor>,
    pub evaluator: Addr<EvaluatorActor>,
    pub serving: Serving,
    pub producers: Vec<(Kind, Addr<ProducerActor>)>,
    pub progress: Arc<Progress>,
    /// High watermarks, for lag (queried at most once a second).
    probe: Arc<WatermarkProbe>,
    marks: Mutex<Option<(Instant, HighWatermarks)>>,
    /// Since when the brokers have not answered, and why (None: they answer).
    outage: Mutex<Option<(Instant, String)>>,
    /// The consumer's paused flag.
    pub paused: Arc<AtomicBool>,
    /// The partitions the consumer owns now.
    pub assignment: crate::kafka::Assignment,
    /// This member's name in the group and how it commits there.
    pub claims: Arc<crate::kafka::Claims>,
    pub rates: Arc<Mutex<Rates>>,
    pub analytics: Arc<Mutex<crate::analytics::Analytics>>,
    /// Notified by the `shutdown` command.
    pub shutdown: Arc<tokio::sync::Notify>,
    /// Where the HTTP server listens, once it does.
    pub http: std::sync::OnceLock<String>,
}

type Reply = Result<Value, String>;

/// (topic, partition) → high watermark.
type HighWatermarks = BTreeMap<(String, i32), i64>;

fn gone(e: MailboxError) -> String {
    format!("the daemon is stopping ({e})")
}

/// Runs `f` on a blocking thread (long reads and writes never stall the actors).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the work failed: {e}"))
}

impl Admin {
    /// Gathers the handles of a running daemon.
    pub async fn new(d: &Daemon, cfg: Config) -> Result<Admin, String> {
        let view = d
            .store
            .send(WithStore(|s: &Store| s.view()))
            .await
            .map_err(gone)?;
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
            started: d.started,
            namespace: d.namespace.clone(),
            bootstrap: d.bootstrap.clone(),
            store: d.store.clone(),
            view,
            parser: d.parser.clone(),
            trainer: d.trainer.clone(),
            evaluator: d.evaluator.clone(),
            serving: d.serving.clone(),
            producers: d.producers.clone(),
            progress: d.progress.clone(),
            probe: Arc::new(
                WatermarkProbe::new(&d.bootstrap, &cfg.kafka).map_err(|e| e.to_string())?,
            ),
            marks: Mutex::new(None),
            outage: Mutex::new(None),
            paused: d.paused.clone(),
            assignment: d.assignment.clone(),
            claims: d.claims.clone(),
            fatal: d.fatal.clone(),
            rates,
            analytics: d.analytics.clone(),
            shutdown: Arc::new(tokio::sync::Notify::new()),
            http: std::sync::OnceLock::new(),
        })
    }

    /// One request line in, one reply object out (never fails).
    pub async fn handle(&self, line: &[u8]) -> Value {
        match parse_request(line) {
            Ok(req) => self.call(req).await,
            Err(e) => json!({ "ok": false, "error": e }),
        }
    }

    /// One request in, one reply object out (never fails).
    pub async fn call(&self, req: Request) -> Value {
        if let Err(error) = req.check() {
            return json!({ "ok": false, "error": error });
        }
        match self.run(req).await {
            Ok(Value::Object(mut m)) => {
                m.insert("ok".into(), true.into());
                Value::Object(m)
            }
            Ok(other) => json!({ "ok": true, "result": other }),
            Err(error) => json!({ "ok": false, "error": error }),
        }
    }

    async fn run(&self, req: Request) -> Reply {
        match req {
            Request::Status {} => self.status().await,
            Request::Stats { section } => self
                .store
                .send(WithStore(move |s: &Store| {
                    s.stats(section.as_deref()).map_err(|e| e.to_string())
                }))
                .await
                .map_err(gone)?,
            Request::Graph(req) => self
                .store
                .send(WithStore(move |s: &Store| {
                    crate::graph::answer(s.graph(), &req)
                }))
                .await
                .map_err(gone)?,
            Request::Pause {} => self.set_paused(true).await,
            Request::Resume {} => self.set_paused(false).await,
            Request::Producer { action, kind, rate } => self.producer(action, kind, rate).await,
            Request::Analytics {
                view,
                dim,
                key,
                minutes,
                limit,
            } => {
                let q = crate::analytics::Query {
                    view,
                    dim,
                    key,
                    minutes,
                    limit,
                };
                let a = self.analytics.lock().map_err(|_| "analytics unavailable")?;
                a.query(&q)
            }
            Request::Train {} => self.trainer.send(TrainNow).await.map_err(gone)?,
            Request::Evaluate {} => self.evaluator.send(EvaluateChampion).await.map_err(gone)?,
            Request::Models { action, id } => self.models(action, id).await,
            Request::Recommend {
                user,
                k,
                region,
                genre,
            } => {
                let user = user.trim().to_lowercase();
                let k = k.unwrap_or(10);
                let champion = self.serving.get();
                if let Some(c) = champion.as_ref().filter(|c| c.recommender.knows(&user)) {
                    // The champion blends content affinity in for users with a profile
                    // when that ranked better on held-out data.
                    let blended = if c.affinity_weight > 0.0 {
                        let (c2, u2) = (c.clone(), user.clone());
                        self.store
                            .send(WithStore(move |s: &Store| match s.user_profile(&u2) {
                                Ok(Some(p)) => {
                                    let prefs = crate::affinity::Prefs::of(&p);
                                    let titles = s.titles();
                                    let w = c2.affinity_weight;
                                    Some(c2.recommender.recommend_adjusted(
                                        &u2,
                                        k,
                                        &Hints::default(),
                                        |scores, items| {
                                            crate::affinity::blend_scores(
                                                scores,
                                                items,
                                                &prefs,
                                                w,
                                                |i| titles.get(i).map(|e| &e.title),
                                            )
                                        },
                                    ))
                                }
                                _ => None,
                            }))
                            .await
                            .map_err(gone)?
                    } else {
                        None
                    };
                    let affinity = blended.as_ref().map(|_| c.affinity_weight);
                    let recs = blended
                        .unwrap_or_else(|| c.recommender.recommend(&user, k, &Hints::default()));
                    let recs = self
                        .with_titles(serde_json::to_value(recs).map_err(|e| e.to_string())?)
                        .await?;
                    return Ok(json!({ "model": c.id, "user": user, "known": true,
                        "affinity_weight": affinity, "recommendations": recs }));
                }
                // Not in the model: a catalog profile's content affinity, else popularity.
                let u = user.clone();
                let by_profile = self
                    .store
                    .send(WithStore(move |s: &Store| {
                        s.user_profile(&u)
                            .map(|p| p.map(|p| s.titles().rank(&p, k, |_| false)))
                            .map_err(|e| e.to_string())
                    }))
                    .await
                    .map_err(gone)??;
                if let Some(ranked) = by_profile.filter(|r| !r.is_empty()) {
                    return Ok(
                        json!({ "model": champion.as_ref().map(|c| c.id), "user": user,
                        "known": false, "cold_start": "profile affinity",
                        "recommendations": ranked }),
                    );
                }
                let c = self.champion()?;
                let hints = Hints { region, genre };
                let recs = c.recommender.recommend(&user, k, &hints);
                let recs = self
                    .with_titles(serde_json::to_value(recs).map_err(|e| e.to_string())?)
                    .await?;
                Ok(json!({ "model": c.id, "user": user, "known": false,
                    "cold_start": "popularity", "recommendations": recs }))
            }
            Request::Similar { item, k } => {
                let c = self.champion()?;
                let item = item.trim().to_lowercase();
                let similar = c
                    .recommender
                    .similar(&item, k.unwrap_or(10))
                    .ok_or_else(|| {
                        format!(
                            "item {item:?} is not in model v{}: list items with `recommend`",
                            c.id
                        )
                    })?;
                Ok(json!({ "model": c.id, "item": item, "similar": similar }))
            }
            Request::Dlq {
                action,
                id,
                after,
                limit,
                reason,
            } => self.dlq(action, id, after, limit, reason).await,
            Request::Export { what, out, k } => self.export(what, out, k).await,
            Request::Snapshot { out } => {
                let dest = std::path::PathBuf::from(&out);
                let t = Instant::now();
                let (entries, bytes) = self
                    .store
                    // On the store's thread: no batch is written while it copies.
                    .send(WithStoreMut(move |s: &mut Store| {
                        s.backup(&dest).map_err(|e| e.to_string())
                    }))
                    .await
                    .map_err(gone)??;
                Ok(json!({ "snapshot": out, "entries": entries, "bytes": bytes,
                    "seconds": t.elapsed().as_secs_f64() }))
            }
            Request::Config {} => Ok(json!({ "config": self.cfg })),
            Request::Help {} => Ok(json!({ "commands": COMMANDS.iter().map(|(c, a, d)|
                json!({ "cmd": c, "args": a, "does": d })).collect::<Vec<_>>() })),
            Request::Shutdown {} => {
                self.shutdown.notify_one();
                Ok(json!({ "shutdown": "stopping: in-flight batches are stored first" }))
            }
        }
    }

    fn champion(&self) -> Result<Arc<crate::ml::serve::Champion>, String> {
        self.serving.get().ok_or_else(|| {
            format!(
                "no model has been trained yet: it trains after models.min_events = {} stored events, or run `train`",
                self.cfg.models.min_events
            )
        })
    }

    /// Adds each recommended item's catalog title (when the catalog has it).
    async fn with_titles(&self, mut recs: Value) -> Result<Value, String> {
        let ids: Vec<String> = recs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["item"].as_str().map(str::to_string))
            .collect();
        let titles: Vec<Option<String>> = self
            .store
            .send(WithStore(move |s: &Store| {
                ids.iter()
                    .map(|i| s.titles().get(i).map(|e| e.title.title.clone()))
                    .collect()
            }))
            .await
            .map_err(gone)?;
        for (r, t) in recs.as_array_mut().into_iter().flatten().zip(titles) {
            if let (Some(o), Some(t)) = (r.as_object_mut(), t) {
                o.insert("title".into(), json!(t));
            }
        }
        Ok(recs)
    }

    async fn status(&self) -> Reply {
        let ns = self.namespace.clone();
        let store = tokio::time::timeout(
            Duration::from_secs(5),
            self.store.send(WithStore(move |s: &Store| {
                let (limits, tracked) = s.tracked();
                let folded = |name: &str| s.counter(name).unwrap_or(0);
                let held = json!({
                    "videos": tracked.videos,
                    "max_tracked_videos": limits.videos,
                    "folded_video_events": folded("folded/video_events"),
                    "listening_pairs": tracked.listening_pairs,
                    "max_listening_pairs": limits.listening_pairs,
                    "folded_listening_events": folded("folded/listening_events"),
                });
                (s.offsets(&ns), s.damage(), s.quarantined(), held)
            })),
        )
        .await;
        let (offsets, damage, quarantined, held, store_health) = match store {
            Ok(Ok((o, d, q, h))) => (o, d, q, h, "ok"),
            Ok(Err(_)) => (Vec::new(), Vec::new(), 0, Value::Null, "stopped"),
            Err(_) => (
                Vec::new(),
                Vec::new(),
                0,
                Value::Null,
                "not answering within 5 s",
            ),
        };
        let damaged: Vec<Value> = damage
            .iter()
            .map(|(what, why)| json!({ "what": what, "why": why }))
            .collect();
        let assigned: Vec<(String, i32)> = self
            .assignment
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        // Owned partitions nothing was stored from yet count from offset 0.
        let unstored: Vec<(String, i32, i64)> = assigned
            .iter()
            .filter(|(t, p)| !offsets.iter().any(|(ot, op, _)| ot == t && op == p))
            .map(|(t, p)| (t.clone(), *p, 0))
            .collect();
        let asked: Vec<(String, i32, i64)> = offsets.iter().chain(&unstored).cloned().collect();
        let marks = self.high_watermarks(&asked).await;
        let mut lag_total = 0i64;
        let mut partitions: Vec<Value> = offsets
            .iter()
            .map(|(t, p, next)| {
                let high = marks.get(&(t.clone(), *p)).copied();
                let owned = assigned.iter().any(|(at, ap)| at == t && ap == p);
                // Lag is this member's only for the partitions it owns.
                let lag = high.filter(|_| owned).map(|h| (h - next).max(0));
                lag_total += lag.unwrap_or(0);
                json!({ "topic": t, "partition": p, "next_offset": next,
                    "high_watermark": high, "lag": lag, "assigned": owned })
            })
            .collect();
        for (t, p, _) in &unstored {
            let high = marks.get(&(t.clone(), *p)).copied();
            lag_total += high.unwrap_or(0);
            partitions.push(json!({ "topic": t, "partition": p, "next_offset": null,
                "high_watermark": high, "lag": high, "assigned": true }));
        }
        let mut producers = Vec::new();
        for (kind, p) in &self.producers {
            if let Ok(s) = p.send(ProducerControl::Status).await {
                producers.push(json!({ "kind": kind, "state": s }));
            }
        }
        let health = |connected: bool| if connected { "ok" } else { "stopped" };
        let (r10, r60) = self
            .rates
            .lock()
            .map(|r| (r.per_sec(10), r.per_sec(60)))
            .unwrap_or_default();
        let p = &self.progress;
        Ok(json!({
            "state": "running",
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "version": env!("CARGO_PKG_VERSION"),
            "data_dir": self.cfg.data_dir,
            "brokers": self.bootstrap,
            "offset_namespace": self.namespace,
            "http": self.http.get(),
            "broker": self.broker_state(),
            "ingest": {
                "paused": self.paused.load(Ordering::Relaxed),
                "consumed": Progress::get(&p.consumed),
                "stored": Progress::get(&p.stored),
                "rejected": Progress::get(&p.rejected),
                "duplicates_skipped": Progress::get(&p.duplicates_skipped),
                "batches_in_flight": Progress::get(&p.in_flight),
                "events_per_sec_10s": r10,
                "events_per_sec_60s": r60,
                "lag": lag_total,
            },
            "partitions": partitions,
            "store": {
                "damaged": damaged,
                "quarantined": quarantined,
                "held": held,
                "fault": self.fatal.get(),
                "hint": (!damaged.is_empty()).then_some("stop the daemon and run `playpulse check --data-dir DIR --repair`"),
            },
            "group": {
                "member": self.claims.member,
                "commit": self.claims.mode(),
                "claims_refused": self.claims.refused(),
                "claimed_records_read_back": self.claims.recovered(),
            },
            "producers": producers,
            "actors": {
                "store": store_health,
                "parser": health(self.parser.connected()),
                "trainer": health(self.trainer.connected()),
                "evaluator": health(self.evaluator.connected()),
                "producers": health(self.producers.iter().all(|(_, p)| p.connected())),
            },
            "champion": self.serving.get().map(|c| c.id),
        }))
    }

    /// High watermarks of the stored partitions (cached for a second; empty
    /// while the brokers do not answer).
    async fn high_watermarks(&self, offsets: &[(String, i32, i64)]) -> HighWatermarks {
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
        let got = got.and_then(|r| r.map_err(|e| e.to_string()));
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
    fn broker_state(&self) -> Value {
        match self.outage.lock().ok().and_then(|o| o.clone()) {
            None => json!({ "reachable": true, "error": null, "down_for_s": null }),
            Some((since, why)) => json!({ "reachable": false, "error": why,
                "down_for_s": since.elapsed().as_secs_f64() }),
        }
    }

    async fn set_paused(&self, paused: bool) -> Reply {
        self.parser.send(SetPaused(paused)).await.map_err(gone)??;
        Ok(json!({ "paused": paused }))
    }

    async fn producer(
        &self,
        action: ProducerAction,
        kind: Option<String>,
        rate: Option<f64>,
    ) -> Reply {
        let kind =
            match kind.as_deref() {
                Some(k) => Some(Kind::parse(k).ok_or_else(|| {
                    format!("kind {k:?}: use video, users, movies, series or music")
                })?),
                None => None,
            };
        let msg = || -> Result<ProducerControl, String> {
            Ok(match action {
                ProducerAction::Start => ProducerControl::Start,
                ProducerAction::Stop => ProducerControl::Stop,
                ProducerAction::Status => ProducerControl::Status,
                ProducerAction::Rate => match rate {
                    Some(r) if r.is_finite() && r >= 0.0 => ProducerControl::Rate(r),
                    Some(r) => {
                        return Err(format!(
                            "rate {r}: must be ≥ 0 events/s (0 = as fast as the pipeline takes)"
                        ))
                    }
                    None => return Err("action rate needs `rate` (events/s)".into()),
                },
            })
        };
        let mut out = Vec::new();
        for (k, p) in &self.producers {
            if kind.is_none_or(|want| want == *k) {
                let s = p.send(msg()?).await.map_err(gone)?;
                out.push(json!({ "kind": k, "state": s }));
            }
        }
        if out.is_empty() {
            return Err(match kind {
                Some(k) => format!("no {k} producer: add it under [producers.rate] in the config"),
                None => "no producers are configured: add them under [producers.rate]".into(),
            });
        }
        Ok(json!({ "producers": out }))
    }

    async fn models(&self, action: ModelsAction, id: Option<u64>) -> Reply {
        match action {
            ModelsAction::List | ModelsAction::Show => {
                let view = self.view.clone();
                let (models, champion) = blocking(move || {
                    Ok::<_, String>((
                        view.models().map_err(|e| e.to_string())?,
                        view.champion_id().map_err(|e| e.to_string())?,
                    ))
                })
                .await??;
                if action == ModelsAction::Show {
                    let id = id.or(champion).ok_or("no model has been trained yet")?;
                    let m = models
                        .into_iter()
                        .find(|m| m.id == id)
                        .ok_or_else(|| format!("no model version {id}; `models` lists them"))?;
                    return Ok(json!({ "model": m, "champion": Some(id) == champion }));
                }
                if models.is_empty() {
                    return Err(format!(
                        "no model has been trained yet: it trains after models.min_events = {} stored events, or run `train`",
                        self.cfg.models.min_events
                    ));
                }
                Ok(json!({ "champion": champion, "models": models }))
            }
            ModelsAction::Promote => {
                let id = id.ok_or("promote needs `id`: `models` lists the versions")?;
                let id = self
                    .evaluator
                    .send(SetChampion(Some(id)))
                    .await
                    .map_err(gone)??;
                Ok(json!({ "champion": id }))
            }
            ModelsAction::Rollback => {
                let id = self
                    .evaluator
                    .send(SetChampion(None))
                    .await
                    .map_err(gone)??;
                Ok(json!({ "champion": id }))
            }
        }
    }

    async fn dlq(
        &self,
        action: DlqAction,
        id: Option<String>,
        after: Option<String>,
        limit: Option<usize>,
        reason: Option<String>,
    ) -> Reply {
        let view = self.view.clone();
        match action {
            DlqAction::List => {
                let limit = limit.unwrap_or(50).clamp(1, 10_000);
                let page = blocking(move || {
                    view.dead_letter_page(after.as_deref(), limit, reason.as_deref())
                        .map_err(|e| e.to_string())
                })
                .await??;
                let next = (page.len() == limit).then(|| page.last().map(|(id, _)| id.clone()));
                let items: Vec<Value> = page
                    .into_iter()
                    .map(|(id, d)| {
                        let mut v = serde_json::to_value(d).unwrap_or_default();
                        v["id"] = id.into();
                        v
                    })
                    .collect();
                Ok(json!({ "dead_letters": items, "next_after": next.flatten() }))
            }
            DlqAction::Show => {
                let id =
                    id.ok_or("show needs `id` (topic/partition/offset, as `dlq list` shows)")?;
                let d = blocking(move || view.dead_letter(&id).map(|d| (id, d)))
                    .await?
                    .map_err(|e| e.to_string())?;
                match d {
                    (id, Some(d)) => Ok(json!({ "id": id, "dead_letter": d })),
                    (id, None) => Err(format!("no dead letter {id:?}; `dlq list` shows them")),
                }
            }
            DlqAction::Purge => {
                let n = blocking(move || -> Result<usize, String> {
                    let mut removed = 0;
                    let mut after: Option<String> = None;
                    loop {
                        let page = view
                            .dead_letter_page(after.as_deref(), 10_000, reason.as_deref())
                            .map_err(|e| e.to_string())?;
                        let Some((last, _)) = page.last() else { break };
                        after = Some(last.clone());
                        let ids: Vec<String> = page.into_iter().map(|(id, _)| id).collect();
                        removed += view.remove_dead_letters(&ids).map_err(|e| e.to_string())?;
                    }
                    Ok(removed)
                })
                .await??;
                Ok(json!({ "purged": n }))
            }
            DlqAction::Replay => {
                let brokers = self.bootstrap.clone();
                let kafka = self.cfg.kafka.clone();
                let limit = limit.unwrap_or(10_000).clamp(1, 1_000_000);
                blocking(move || super::replay::replay(&view, &brokers, &kafka, id, reason, limit))
                    .await?
            }
        }
    }

    async fn export(&self, what: ExportWhat, out: String, k: Option<usize>) -> Reply {
        let view = self.view.clone();
        let path = std::path::PathBuf::from(&out);
        let t = Instant::now();
        let report = blocking(move || match what {
            ExportWhat::Recommendations => {
                crate::export::recommendations_csv(&view, &path, k.unwrap_or(5))
            }
            ExportWhat::Predictions => crate::export::predictions_csv(&view, &path),
            ExportWhat::Events => crate::export::events_jsonl(&view, &path),
        })
        .await?
        .map_err(|e| e.to_string())?;
        let mut v = serde_json::to_value(report).unwrap_or_default();
        v["seconds"] = t.elapsed().as_secs_f64().into();
        Ok(v)
    }
}
