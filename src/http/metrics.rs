//! Prometheus `/metrics` in the text exposition format (version 0.0.4): ingest
//! counters and stage times, lag per topic, rejections by reason, actor health,
//! QoE per region over the last 5 minutes, and the champion model.

use std::fmt::Write;

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::admin::Admin;
use crate::ingest::pipeline::Progress;
use crate::views::analytics::{Answer, Dim, Query, View};

/// A label value escaped as the format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes metric families: `# HELP`, `# TYPE`, then samples.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        self
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let value = if value.is_finite() { value } else { 0.0 };
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
                .collect();
            let _ = writeln!(self.0, "{name}{{{}}} {value}", l.join(","));
        }
        self
    }

    pub fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    pub fn text(self) -> String {
        self.0
    }
}

/// Everything `/metrics` shows, read from a running daemon.
pub async fn exposition(a: &Admin) -> String {
    let mut e = Exposition::default();
    let p = &a.progress;
    let c = |x: &std::sync::atomic::AtomicU64| Progress::get(x) as f64;
    e.one(
        "playpulse_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        a.started.elapsed().as_secs_f64(),
    );
    for (name, kind, help, value) in [
        (
            "playpulse_events_produced_total",
            "counter",
            "Records sent by the built-in producers.",
            &p.produced,
        ),
        (
            "playpulse_events_consumed_total",
            "counter",
            "Records consumed from Kafka.",
            &p.consumed,
        ),
        (
            "playpulse_events_stored_total",
            "counter",
            "Valid events durably stored.",
            &p.stored,
        ),
        (
            "playpulse_events_rejected_total",
            "counter",
            "Records sent to the dead-letter store.",
            &p.rejected,
        ),
        (
            "playpulse_duplicates_skipped_total",
            "counter",
            "Redelivered records skipped (already stored).",
            &p.duplicates_skipped,
        ),
        (
            "playpulse_batches_in_flight",
            "gauge",
            "Batches between the consumer and the store.",
            &p.in_flight,
        ),
    ] {
        e.one(name, kind, help, c(value));
    }
    e.family(
        "playpulse_stage_seconds_total",
        "counter",
        "Busy seconds per pipeline stage.",
    );
    for (stage, secs) in p.stage_seconds().all() {
        e.sample("playpulse_stage_seconds_total", &[("stage", stage)], secs);
    }
    let flag = |b: bool| f64::from(u8::from(b));
    if let Ok(status) = crate::admin::cmd::status::status(a).await {
        e.one(
            "playpulse_ingest_paused",
            "gauge",
            "1 while an operator has paused ingest.",
            flag(status.ingest.paused),
        );
        e.one(
            "playpulse_broker_up",
            "gauge",
            "1 while the Kafka brokers answer (probed when status or metrics are read).",
            flag(status.broker.reachable),
        );
        e.one(
            "playpulse_events_per_second",
            "gauge",
            "Events stored or rejected per second over the last 10 s.",
            status.ingest.events_per_sec_10s,
        );
        e.family(
            "playpulse_consumer_lag",
            "gauge",
            "Records in the broker not yet stored, per topic.",
        );
        let mut lag: std::collections::BTreeMap<&str, i64> = Default::default();
        for part in &status.partitions {
            *lag.entry(part.topic.as_str()).or_default() += part.lag.unwrap_or(0);
        }
        for (topic, n) in &lag {
            e.sample("playpulse_consumer_lag", &[("topic", topic)], *n as f64);
        }
        e.family("playpulse_actor_up", "gauge", "1 when the actor answers.");
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
        "playpulse_rejected_total",
        "counter",
        "Rejected records by reason and field.",
    );
    for (name, n) in &counters {
        if let Some(rest) = name.strip_prefix("rejected/") {
            let (reason, field) = rest.split_once(':').unwrap_or((rest, ""));
            e.sample(
                "playpulse_rejected_total",
                &[("reason", reason), ("field", field)],
                *n as f64,
            );
        }
    }
    let qoe = a.analytics.lock().ok().map(|an| {
        an.query(&Query {
            view: View::Qoe,
            dim: Some(Dim::Region),
            key: None,
            minutes: Some(5),
            limit: Some(1000),
        })
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
        e.family(metric, "gauge", help);
        for r in &rows {
            e.sample(metric, &[("region", &r.key)], field(&r.metrics));
        }
    }
    if let Some(ch) = a.serving.get() {
        e.one(
            "playpulse_model_champion",
            "gauge",
            "The serving recommender's version.",
            ch.id as f64,
        );
    }
    e.text()
}

pub async fn render(super::Ready(a): super::Ready) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        exposition(&a).await,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_text_format_with_escaped_labels() {
        let mut e = Exposition::default();
        e.one("x_total", "counter", "Things.", 3.0)
            .family("y", "gauge", "Ys.")
            .sample("y", &[("a", "q\"uo\\te"), ("b", "n\nl")], 1.5)
            .sample("y", &[], f64::NAN);
        assert_eq!(
            e.text(),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n# HELP y Ys.\n# TYPE y gauge\ny{a=\"q\\\"uo\\\\te\",b=\"n\\nl\"} 1.5\ny 0\n"
        );
    }
}
