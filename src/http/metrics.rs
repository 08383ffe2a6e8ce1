//! Prometheus `/metrics` in the OpenMetrics text format (prometheus-client): ingest
//! counters and stage times, lag per topic, rejections by reason, actor health,
//! QoE per region over the last 5 minutes, and the champion model.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::admin::Admin;
use crate::ingest::pipeline::Progress;
use crate::views::analytics::{Answer, Dim, Query, View};

/// A label value, escaped as the exposition format requires (the client
/// library writes label values as they are).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Escaped(String);

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

type Labels = Vec<(&'static str, Escaped)>;

/// What a metric family counts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (exposed as `<name>_total`).
    Counter,
    /// A measurement that goes up and down.
    Gauge,
    /// A whole number that goes up and down (flags, counts, ids).
    Level,
}

enum FamilyOf {
    Counter(Family<Labels, Counter<f64, AtomicU64>>),
    Gauge(Family<Labels, Gauge<f64, AtomicU64>>),
    Level(Family<Labels, Gauge>),
}

/// A family's help without its final full stop: the registry adds one.
fn help_text(help: &str) -> &str {
    help.trim_end_matches('.')
}

/// The families of one scrape, in a prometheus-client registry.
#[derive(Default)]
pub struct Exposition {
    registry: Registry,
    families: HashMap<String, FamilyOf>,
}

impl Exposition {
    /// Declares the family `name` (for a counter, the name before `_total`).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help_text(help);
        let f = match kind {
            Kind::Counter => {
                let f = Family::<Labels, Counter<f64, AtomicU64>>::default();
                self.registry.register(name, help, f.clone());
                FamilyOf::Counter(f)
            }
            Kind::Gauge => {
                let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
                self.registry.register(name, help, f.clone());
                FamilyOf::Gauge(f)
            }
            Kind::Level => {
                let f = Family::<Labels, Gauge>::default();
                self.registry.register(name, help, f.clone());
                FamilyOf::Level(f)
            }
        };
        self.families.insert(name.to_string(), f);
        self
    }

    /// One sample of a declared family (a value that is not finite reads 0).
    pub fn sample(&mut self, name: &str, labels: &[(&'static str, &str)], value: f64) -> &mut Self {
        let value = if value.is_finite() { value } else { 0.0 };
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (*k, Escaped(v.to_string())))
            .collect();
        match self.families.get(name) {
            Some(FamilyOf::Counter(f)) => {
                f.get_or_create(&labels).inc_by(value.max(0.0));
            }
            Some(FamilyOf::Gauge(f)) => {
                f.get_or_create(&labels).set(value);
            }
            Some(FamilyOf::Level(f)) => {
                f.get_or_create(&labels).set(value as i64);
            }
            None => tracing::error!("metric {name} sampled before it was declared"),
        }
        self
    }

    /// A family of one sample without labels.
    pub fn one(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        let help = help_text(help);
        let value = if value.is_finite() { value } else { 0.0 };
        match kind {
            Kind::Counter => {
                let c = Counter::<f64, AtomicU64>::default();
                c.inc_by(value.max(0.0));
                self.registry.register(name, help, c);
            }
            Kind::Gauge => {
                let g = Gauge::<f64, AtomicU64>::default();
                g.set(value);
                self.registry.register(name, help, g);
            }
            Kind::Level => {
                let g = Gauge::<i64>::default();
                g.set(value as i64);
                self.registry.register(name, help, g);
            }
        }
        self
    }

    /// The OpenMetrics text of every family.
    /// A histogram kept by the daemon (its observations so far).
    pub fn histogram(&mut self, name: &str, help: &str, h: Histogram) -> &mut Self {
        self.registry.register(name, help_text(help), h);
        self
    }

    pub fn text(self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        out
    }
}

/// Everything `/metrics` shows, read from a running daemon.
pub async fn exposition(a: &Admin) -> String {
    let mut e = Exposition::default();
    let p = &a.progress;
    let c = |x: &std::sync::atomic::AtomicU64| Progress::get(x) as f64;
    e.one(
        "playpulse_uptime_seconds",
        Kind::Gauge,
        "Seconds since the daemon started.",
        a.started.elapsed().as_secs_f64(),
    );
    for (name, kind, help, value) in [
        (
            "playpulse_events_produced",
            Kind::Counter,
            "Records sent by the built-in producers.",
            &p.produced,
        ),
        (
            "playpulse_events_consumed",
            Kind::Counter,
            "Records consumed from Kafka.",
            &p.consumed,
        ),
        (
            "playpulse_events_stored",
            Kind::Counter,
            "Valid events durably stored.",
            &p.stored,
        ),
        (
            "playpulse_events_rejected",
            Kind::Counter,
            "Records sent to the dead-letter store.",
            &p.rejected,
        ),
        (
            "playpulse_duplicates_skipped",
            Kind::Counter,
            "Redelivered records skipped (already stored).",
            &p.duplicates_skipped,
        ),
        (
            "playpulse_batches_in_flight",
            Kind::Level,
            "Batches between the consumer and the store.",
            &p.in_flight,
        ),
        (
            "playpulse_left_to_next_owner",
            Kind::Counter,
            "Records read, then left to their partition's next owner (handed over before they were written).",
            &p.left_to_next_owner,
        ),
    ] {
        e.one(name, kind, help, c(value));
    }
    e.family(
        "playpulse_stage_seconds",
        Kind::Counter,
        "Busy seconds per pipeline stage.",
    );
    for (stage, secs) in p.stage_seconds().all() {
        e.sample("playpulse_stage_seconds", &[("stage", stage)], secs);
    }
    let flag = |b: bool| f64::from(u8::from(b));
    if let Ok(status) = crate::admin::cmd::status::status(a).await {
        e.one(
            "playpulse_ingest_paused",
            Kind::Level,
            "1 while an operator has paused ingest.",
            flag(status.ingest.paused),
        );
        e.one(
            "playpulse_broker_up",
            Kind::Level,
            "1 while the Kafka brokers answer (probed when status or metrics are read).",
            flag(status.broker.reachable),
        );
        e.one(
            "playpulse_events_per_second",
            Kind::Gauge,
            "Events stored or rejected per second over the last 10 s.",
            status.ingest.events_per_sec_10s,
        );
        e.family(
            "playpulse_consumer_lag",
            Kind::Level,
            "Records in the broker not yet stored, per topic.",
        );
        let mut lag: std::collections::BTreeMap<&str, i64> = Default::default();
        for part in &status.partitions {
            *lag.entry(part.topic.as_str()).or_default() += part.lag.unwrap_or(0);
        }
        for (topic, n) in &lag {
            e.sample("playpulse_consumer_lag", &[("topic", topic)], *n as f64);
        }
        e.family(
            "playpulse_actor_up",
            Kind::Level,
            "1 when the actor answers.",
        );
        let h = &status.actors;
        for (actor, state) in [
            ("store", &h.store),
            ("parser", &h.parser),
            ("trainer", &h.trainer),
            ("evaluator", &h.evaluator),
            ("producers", &h.producers),
        ] {
            e.sample(
                "playpulse_actor_up",
                &[("actor", actor)],
                flag(state == "ok"),
            );
        }
    }
    let counters = a
        .store
        .counters
        .send(crate::actors::messages::GetCounters)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    e.family(
        "playpulse_rejected",
        Kind::Counter,
        "Rejected records by reason and field.",
    );
    for (name, n) in &counters {
        if let Some(rest) = name.strip_prefix("rejected/") {
            let (reason, field) = rest.split_once(':').unwrap_or((rest, ""));
            e.sample(
                "playpulse_rejected",
                &[("reason", reason), ("field", field)],
                *n as f64,
            );
        }
    }
    let qoe = a.analytics.lock().ok().and_then(|an| {
        an.query(&Query {
            view: View::Qoe,
            dim: Some(Dim::Region),
            key: None,
            minutes: Some(5),
            limit: Some(1000),
            from: None,
            to: None,
            last: None,
            step: None,
            filter: Default::default(),
            by: None,
        })
        .ok()
    });
    let rows = match qoe {
        Some(Answer::Qoe { rows, .. }) => rows,
        _ => Vec::new(),
    };
    type Field = fn(&crate::views::analytics::QoeMetrics) -> f64;
    let fields: [(&str, Field, &str); 5] = [
        (
            "playpulse_qoe_views",
            |m| m.views as f64,
            "Views in the last 5 event minutes, by region.",
        ),
        (
            "playpulse_qoe_rebuffering_ratio",
            |m| m.rebuffering_ratio,
            "Rebuffer time / (play + rebuffer time), last 5 minutes.",
        ),
        (
            "playpulse_qoe_startup_time_ms",
            |m| m.startup_time_ms,
            "Mean video startup time, last 5 minutes.",
        ),
        (
            "playpulse_qoe_start_failure_rate",
            |m| m.start_failure_rate,
            "Video start failures per view, last 5 minutes.",
        ),
        (
            "playpulse_qoe_avg_bitrate_kbps",
            |m| m.avg_bitrate_kbps,
            "Play-time-weighted bitrate, last 5 minutes.",
        ),
    ];
    for (metric, field, help) in fields {
        e.family(metric, Kind::Gauge, help);
        for r in &rows {
            e.sample(metric, &[("region", &r.key)], field(&r.metrics));
        }
    }
    if let Ok(book) = a.alerts.lock() {
        let r = book.reply();
        if !r.alerts.is_empty() {
            e.family(
                "playpulse_alert_firing",
                Kind::Level,
                "1 while the alert rule fires (see [alerts] and /api/alerts).",
            );
            for s in &r.alerts {
                let firing = s.state == crate::views::alerts::State::Firing;
                e.sample(
                    "playpulse_alert_firing",
                    &[("alert", &s.name)],
                    f64::from(u8::from(firing)),
                );
            }
            e.family(
                "playpulse_alert_value",
                Kind::Level,
                "The alert rule's metric over its window at its last evaluation (a ratio to the baseline for change rules).",
            );
            for s in r.alerts.iter().filter(|s| s.value.is_some()) {
                e.sample(
                    "playpulse_alert_value",
                    &[("alert", &s.name)],
                    s.value.unwrap_or(0.0),
                );
            }
        }
    }
    if let Some(ch) = a.serving.get() {
        e.one(
            "playpulse_model_champion",
            Kind::Level,
            "The serving recommender's version.",
            ch.id as f64,
        );
    }
    let fold = a.serving.fold_stats();
    e.one(
        "playpulse_foldin_users",
        Kind::Counter,
        "User solves of the fold-in (users folded into the champion after a durable batch).",
        fold.folded_total as f64,
    )
    .one(
        "playpulse_foldin_failed_rounds",
        Kind::Counter,
        "Fold-in rounds that failed (their users fold in at their next event).",
        fold.failed_rounds as f64,
    )
    .one(
        "playpulse_foldin_new_pairs",
        Kind::Level,
        "Pairs of the users folded in since the champion that it was not trained on (a retrain starts at models.retrain_new_pairs_share of its pairs).",
        fold.new_pairs_since_champion as f64,
    )
    .one(
        "playpulse_foldin_held_users",
        Kind::Level,
        "Users held folded into the serving champion.",
        fold.users as f64,
    )
    .one(
        "playpulse_foldin_items",
        Kind::Level,
        "Items the serving champion was not trained on, folded in from their users' factors.",
        fold.folded_items as f64,
    )
    .one(
        "playpulse_foldin_items_pending",
        Kind::Level,
        "Items followed for the fold-in that have too few users yet.",
        fold.items_pending as f64,
    )
    .one(
        "playpulse_foldin_seen_pending_users",
        Kind::Level,
        "Users whose newest views are left out of their lists ahead of their fold-in.",
        fold.seen_pending_users as f64,
    )
    .one(
        "playpulse_foldin_last_seconds",
        Kind::Gauge,
        "Seconds the last fold-in took.",
        fold.last_seconds,
    )
    .one(
        "playpulse_foldin_users_per_second",
        Kind::Gauge,
        "Users per second of the last fold-in.",
        fold.last_users_per_s,
    )
    .one(
        "playpulse_item_factors_age_seconds",
        Kind::Gauge,
        "Seconds since the serving champion's item factors began serving.",
        fold.item_factors_age_seconds.unwrap_or(0.0),
    );
    e.one(
        "playpulse_store_size_bytes",
        Kind::Gauge,
        "Size of the store's sled files (the event log's files not included).",
        a.view.size_on_disk() as f64,
    );
    let (active, frozen, pairs) = a.view.pair_overlay();
    e.one(
        "playpulse_store_pair_deltas_held",
        Kind::Level,
        "Video pair deltas held in memory until the compactor writes them into per-user chunks.",
        (active + frozen) as f64,
    )
    .one(
        "playpulse_store_pair_compactions",
        Kind::Counter,
        "Compactions of the held pair deltas into per-user chunks.",
        pairs.compactions as f64,
    )
    .one(
        "playpulse_store_pair_compaction_last_seconds",
        Kind::Gauge,
        "Seconds the last pair compaction took.",
        pairs.last_seconds,
    )
    .one(
        "playpulse_store_pair_ingest_waits",
        Kind::Counter,
        "Times ingest waited for the pair compactor (too many deltas held).",
        pairs.waits as f64,
    );
    e.histogram(
        "playpulse_freshness_seconds",
        "From a batch's durable commit to its users served folded in.",
        a.serving.live().latency(),
    );
    e.text()
}

pub async fn render(super::Ready(a): super::Ready) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        exposition(&a).await,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_openmetrics_with_escaped_labels() {
        let mut e = Exposition::default();
        e.one("x", Kind::Counter, "Things.", 3.0)
            .family("y", Kind::Gauge, "Ys.")
            .sample("y", &[("a", "q\"uo\\te"), ("b", "n\nl")], 1.5)
            .one("z", Kind::Level, "Zs.", f64::NAN)
            .sample("undeclared", &[], 1.0);
        assert_eq!(
            e.text(),
            "# HELP x Things.\n# TYPE x counter\nx_total 3.0\n\
             # HELP y Ys.\n# TYPE y gauge\ny{a=\"q\\\"uo\\\\te\",b=\"n\\nl\"} 1.5\n\
             # HELP z Zs.\n# TYPE z gauge\nz 0\n# EOF\n"
        );
    }
}
