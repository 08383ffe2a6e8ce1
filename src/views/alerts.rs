//! Alerts on QoE and engagement, evaluated over the durable rollups (see
//! `store::rollup`) the way Conviva and Mux alert: a metric of a cohort (any
//! filter on genre, region, resolution) over the last minutes, against a
//! threshold or against its own baseline just before, only once the cohort
//! has enough views, and only after it held for a number of evaluations.
//! Windows are the complete minutes before the newest event minute rolled up
//! (that one is still filling: a traffic rule on it would fire at the start of
//! every minute); replayed history alerts as live data does. The rules are pure data; [`Book`] keeps their states
//! and answers the transitions of each evaluation (fired, resolved) for the
//! notifier.

use serde::{Deserialize, Serialize};

use crate::domain::setting::{invalid, Invalid};
use crate::store::rollup::query::{Filter, Group, RangeError, RangeQuery, RangeRows};
use crate::store::rollup::{Grain, MINUTE_MS};
use crate::views::analytics::range::qoe_of;
use crate::views::analytics::QoeSums;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Views,
    ConcurrentViewers,
    RebufferingRatio,
    StartupTimeMs,
    StartFailureRate,
    ExitsBeforeStartRate,
    AvgBitrateKbps,
    SkipRate,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Views => "views",
            Metric::ConcurrentViewers => "concurrent_viewers",
            Metric::RebufferingRatio => "rebuffering_ratio",
            Metric::StartupTimeMs => "startup_time_ms",
            Metric::StartFailureRate => "start_failure_rate",
            Metric::ExitsBeforeStartRate => "exits_before_start_rate",
            Metric::AvgBitrateKbps => "avg_bitrate_kbps",
            Metric::SkipRate => "skip_rate",
        }
    }

    fn of(self, s: &QoeSums) -> f64 {
        let m = s.metrics();
        match self {
            Metric::Views | Metric::ConcurrentViewers => m.views as f64,
            Metric::RebufferingRatio => m.rebuffering_ratio,
            Metric::StartupTimeMs => m.startup_time_ms,
            Metric::StartFailureRate => m.start_failure_rate,
            Metric::ExitsBeforeStartRate => m.exits_before_start_rate,
            Metric::AvgBitrateKbps => m.avg_bitrate_kbps,
            Metric::SkipRate => m.skip_rate,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Above,
    Below,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Above => "above",
            Op::Below => "below",
        }
    }
}

/// One alert rule (`[[alerts.rules]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub metric: Metric,
    pub op: Op,
    /// The value the metric is compared with; with `baseline_minutes`, the
    /// ratio of the window's value to the baseline's (1.5: half as much again).
    pub threshold: f64,
    /// The cohort: genre, region, resolution (any combination).
    #[serde(default)]
    pub filter: Filter,
    #[serde(default = "one")]
    pub window_minutes: u32,
    /// Fewer views in the window: no data (a firing alert resolves).
    #[serde(default)]
    pub min_views: u64,
    /// Consecutive evaluations the condition holds before the alert fires.
    #[serde(default = "one")]
    pub for_evaluations: u32,
    /// Compare with the same metric over these minutes before the window
    /// (0: with `threshold` itself).
    #[serde(default)]
    pub baseline_minutes: u32,
}

fn one() -> u32 {
    1
}

/// `[alerts]`: the rules, how often they are evaluated, the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    pub interval_seconds: u32,
    /// `http[s]://host:port/path` that gets a JSON POST when an alert fires or
    /// resolves ("" for none).
    pub webhook_url: String,
    /// PEM certificates of a private CA trusted for an https webhook, beside
    /// Mozilla's roots ("" for none).
    pub webhook_ca_file: String,
    pub webhook_timeout_ms: u64,
    /// Attempts after the first, with a doubling pause from 500 ms.
    pub webhook_retries: u32,
    pub rules: Vec<Rule>,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        AlertsConfig {
            interval_seconds: 60,
            webhook_url: String::new(),
            webhook_ca_file: String::new(),
            webhook_timeout_ms: 2000,
            webhook_retries: 3,
            rules: Vec::new(),
        }
    }
}

/// Most rules.
pub const MAX_RULES: usize = 100;

impl AlertsConfig {
    /// The webhook of `webhook_url` (with `webhook_ca_file`).
    pub fn webhook(&self) -> Result<crate::notify::Webhook, crate::notify::WebhookUrlError> {
        crate::notify::Webhook::parse(
            &self.webhook_url,
            std::time::Duration::from_millis(self.webhook_timeout_ms),
            self.webhook_retries,
            (!self.webhook_ca_file.is_empty()).then(|| std::path::Path::new(&self.webhook_ca_file)),
        )
    }

    /// Checks what a type cannot; errors name the key and the rule.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(1..=3600).contains(&self.interval_seconds) {
            return Err(invalid(
                "alerts.interval_seconds",
                self.interval_seconds,
                "must be 1..=3600",
            ));
        }
        if !self.webhook_url.is_empty() {
            if let Err(e) = self.webhook() {
                let ca = matches!(e, crate::notify::WebhookUrlError::CaFile { .. });
                return Err(if ca {
                    invalid(
                        "alerts.webhook_ca_file",
                        &self.webhook_ca_file,
                        format!("{e}: give a readable file of PEM certificates (or \"\" for Mozilla's roots alone)"),
                    )
                } else {
                    invalid(
                        "alerts.webhook_url",
                        &self.webhook_url,
                        format!("{e}: give http[s]://host[:port][/path] (or \"\" for none)"),
                    )
                });
            }
        } else if !self.webhook_ca_file.is_empty() {
            return Err(invalid(
                "alerts.webhook_ca_file",
                &self.webhook_ca_file,
                "is set without alerts.webhook_url: set both, or neither",
            ));
        }
        if !(100..=60_000).contains(&self.webhook_timeout_ms) {
            return Err(invalid(
                "alerts.webhook_timeout_ms",
                self.webhook_timeout_ms,
                "must be 100..=60000",
            ));
        }
        if self.webhook_retries > 10 {
            return Err(invalid(
                "alerts.webhook_retries",
                self.webhook_retries,
                "must be 0..=10",
            ));
        }
        if self.rules.len() > MAX_RULES {
            return Err(invalid(
                "alerts.rules",
                self.rules.len(),
                format!("at most {MAX_RULES} rules"),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.rules {
            let key = |k: &str| format!("alerts.rules[{:?}].{k}", r.name);
            if r.name.trim().is_empty()
                || r.name.len() > 128
                || r.name.chars().any(char::is_control)
            {
                return Err(invalid(
                    "alerts.rules.name",
                    &r.name,
                    "must be 1 to 128 printable characters",
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(invalid(
                    "alerts.rules.name",
                    &r.name,
                    "names must be unique",
                ));
            }
            if !(r.threshold.is_finite() && r.threshold >= 0.0) {
                return Err(invalid(
                    &key("threshold"),
                    r.threshold,
                    "must be a number >= 0",
                ));
            }
            if !(1..=1440).contains(&r.window_minutes) {
                return Err(invalid(
                    &key("window_minutes"),
                    r.window_minutes,
                    "must be 1..=1440",
                ));
            }
            if !(1..=1440).contains(&r.for_evaluations) {
                return Err(invalid(
                    &key("for_evaluations"),
                    r.for_evaluations,
                    "must be 1..=1440",
                ));
            }
            if r.baseline_minutes > 10_080 {
                return Err(invalid(
                    &key("baseline_minutes"),
                    r.baseline_minutes,
                    "must be 0..=10080",
                ));
            }
            if r.min_views > 1_000_000_000_000 {
                return Err(invalid(&key("min_views"), r.min_views, "must be 0..=10^12"));
            }
            let f = &r.filter;
            if f.title.is_some() || f.device.is_some() || f.track.is_some() {
                return Err(invalid(
                    &key("filter"),
                    f,
                    "filters genre, region and resolution only (titles are kept by the hour, listening apart)",
                ));
            }
            for v in [&f.genre, &f.region, &f.resolution].into_iter().flatten() {
                if v.is_empty() || v.len() > 1024 {
                    return Err(invalid(&key("filter"), v, "values must be 1 to 1024 bytes"));
                }
            }
        }
        Ok(())
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not evaluated yet.
    Unknown,
    Ok,
    /// The condition holds, not yet for `for_evaluations`.
    Pending,
    Firing,
    /// Fewer views than `min_views` (or no baseline to compare with).
    NoData,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Ok => "ok",
            State::Pending => "pending",
            State::Firing => "firing",
            State::NoData => "no_data",
        }
    }
}

/// An alert's state and what it was last evaluated on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertStatus {
    pub name: String,
    pub state: State,
    pub metric: Metric,
    pub op: Op,
    pub threshold: f64,
    pub filter: Filter,
    /// The metric over the window (with a baseline: the ratio to it).
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub views: u64,
    /// Consecutive evaluations the condition held.
    pub held: u32,
    /// When the state began (wall clock) and the newest minute evaluated.
    pub since: Option<String>,
    pub window_end: Option<String>,
    pub fired: u64,
}

/// The alerts' states (`ctl alerts`, `/api/alerts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertsReply {
    pub rules: usize,
    pub firing: Vec<String>,
    pub evaluations: u64,
    pub delivered: u64,
    pub failed: u64,
    pub last_delivery: Option<String>,
    pub last_error: Option<String>,
    pub alerts: Vec<AlertStatus>,
}

/// An alert that fired or resolved in an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub alert: AlertStatus,
    /// `firing` or `resolved`.
    pub event: String,
    pub window_minutes: u32,
    pub at: String,
}

/// The rules and their states.
#[derive(Debug, Clone, Default)]
pub struct Book {
    rules: Vec<Rule>,
    states: Vec<AlertStatus>,
    pub evaluations: u64,
    pub last_error: Option<String>,
    /// Notifications the webhook took, and those it did not after every retry.
    pub delivered: u64,
    pub failed: u64,
    pub last_delivery: Option<String>,
}

fn rfc3339(ms: i64) -> String {
    crate::domain::timefmt::format_timestamp_ms(ms)
}

impl Book {
    pub fn new(rules: Vec<Rule>) -> Book {
        let states = rules
            .iter()
            .map(|r| AlertStatus {
                name: r.name.clone(),
                state: State::Unknown,
                metric: r.metric,
                op: r.op,
                threshold: r.threshold,
                filter: r.filter.clone(),
                value: None,
                baseline: None,
                views: 0,
                held: 0,
                since: None,
                window_end: None,
                fired: 0,
            })
            .collect();
        Book {
            rules,
            states,
            ..Book::default()
        }
    }

    pub fn statuses(&self) -> &[AlertStatus] {
        &self.states
    }

    pub fn firing(&self) -> Vec<String> {
        self.states
            .iter()
            .filter(|s| s.state == State::Firing)
            .map(|s| s.name.clone())
            .collect()
    }

    /// What `alerts` answers.
    pub fn reply(&self) -> AlertsReply {
        AlertsReply {
            rules: self.rules.len(),
            firing: self.firing(),
            evaluations: self.evaluations,
            delivered: self.delivered,
            failed: self.failed,
            last_delivery: self.last_delivery.clone(),
            last_error: self.last_error.clone(),
            alerts: self.states.clone(),
        }
    }

    /// Evaluates every rule on windows ending where `newest` (the newest event
    /// minute rolled up, still filling) begins, reading the rollups through `read`; `now_ms` dates
    /// the transitions. Answers the alerts that fired or resolved.
    pub fn evaluate(
        &mut self,
        newest: Option<i64>,
        now_ms: i64,
        mut read: impl FnMut(&RangeQuery) -> Result<RangeRows, RangeError>,
    ) -> Vec<Transition> {
        self.evaluations += 1;
        let Some(newest) = newest else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (rule, st) in self.rules.iter().zip(self.states.iter_mut()) {
            // The complete minutes before the newest.
            let to = newest;
            let from = to - i64::from(rule.window_minutes) * MINUTE_MS;
            let query = |from_ms, to_ms, group| RangeQuery {
                music: false,
                from_ms,
                to_ms,
                grain: Grain::Minute,
                filter: rule.filter.clone(),
                group,
            };
            let group = if rule.metric == Metric::ConcurrentViewers {
                Group::Series
            } else {
                Group::Total
            };
            let measure = |rows: &RangeRows| -> (f64, u64) {
                match group {
                    Group::Series => {
                        let peak = rows
                            .points
                            .iter()
                            .filter_map(|p| p.in_progress)
                            .max()
                            .unwrap_or(0);
                        let views = rows.points.iter().map(|p| p.sums.get(0)).sum();
                        (peak as f64, views)
                    }
                    _ => {
                        let s = rows
                            .groups
                            .first()
                            .map(|g| qoe_of(&g.1))
                            .unwrap_or_default();
                        (rule.metric.of(&s), s.views)
                    }
                }
            };
            let window = match read(&query(from, to, group)) {
                Ok(r) => measure(&r),
                Err(e) => {
                    self.last_error = Some(format!("{}: {e}", rule.name));
                    continue;
                }
            };
            let (value, views) = window;
            let baseline = if rule.baseline_minutes > 0 {
                let b_from = from - i64::from(rule.baseline_minutes) * MINUTE_MS;
                match read(&query(b_from, from, group)) {
                    Ok(r) => Some(measure(&r).0),
                    Err(e) => {
                        self.last_error = Some(format!("{}: {e}", rule.name));
                        continue;
                    }
                }
            } else {
                None
            };
            let compared = match baseline {
                Some(b) if b > 0.0 => Some(value / b),
                Some(_) => None,
                None => Some(value),
            };
            let was = st.state;
            st.views = views;
            st.baseline = baseline;
            st.value = compared;
            st.window_end = Some(rfc3339(newest));
            let next = match compared {
                Some(v) if views >= rule.min_views => {
                    let holds = match rule.op {
                        Op::Above => v > rule.threshold,
                        Op::Below => v < rule.threshold,
                    };
                    if holds {
                        st.held = st.held.saturating_add(1);
                        if st.held >= rule.for_evaluations {
                            State::Firing
                        } else {
                            State::Pending
                        }
                    } else {
                        st.held = 0;
                        State::Ok
                    }
                }
                _ => {
                    st.held = 0;
                    State::NoData
                }
            };
            if next != was {
                st.since = Some(rfc3339(now_ms));
            }
            st.state = next;
            let event = match (was == State::Firing, next == State::Firing) {
                (false, true) => {
                    st.fired += 1;
                    Some("firing")
                }
                (true, false) => Some("resolved"),
                _ => None,
            };
            if let Some(event) = event {
                out.push(Transition {
                    alert: st.clone(),
                    event: event.into(),
                    window_minutes: rule.window_minutes,
                    at: rfc3339(now_ms),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rollup::query::Point;
    use crate::store::rollup::{slot, Sums};

    fn sums(views: u64, play_ms: u64, rebuffer_ms: u64) -> Sums {
        let mut s = Sums::default();
        s.0[slot::VIEWS] = views;
        s.0[slot::PLAY_MS] = play_ms;
        s.0[slot::REBUFFER_MS] = rebuffer_ms;
        s
    }

    fn total(s: Sums) -> RangeRows {
        RangeRows {
            groups: vec![("all".into(), s)],
            ..RangeRows::default()
        }
    }

    fn rule() -> Rule {
        Rule {
            name: "rebuffering".into(),
            metric: Metric::RebufferingRatio,
            op: Op::Above,
            threshold: 0.05,
            filter: Filter {
                region: Some("US".into()),
                ..Filter::default()
            },
            window_minutes: 5,
            min_views: 100,
            for_evaluations: 2,
            baseline_minutes: 0,
        }
    }

    #[test]
    fn an_alert_fires_after_holding_and_resolves_and_thin_cohorts_are_no_data() {
        let mut b = Book::new(vec![rule()]);
        let bad = total(sums(200, 900_000, 100_000)); // 10 % rebuffering
        let good = total(sums(200, 990_000, 10_000)); // 1 %
        let thin = total(sums(50, 500_000, 500_000));
        let mut asked = Vec::new();
        let mut eval = |b: &mut Book, rows: &RangeRows| {
            b.evaluate(Some(10 * MINUTE_MS), 0, |q| {
                asked.push(q.clone());
                Ok(rows.clone())
            })
        };
        assert!(eval(&mut b, &bad).is_empty(), "one evaluation: pending");
        assert_eq!(b.statuses()[0].state, State::Pending);
        let t = eval(&mut b, &bad);
        assert_eq!((t.len(), t[0].event.as_str()), (1, "firing"));
        assert!((t[0].alert.value.unwrap() - 0.1).abs() < 1e-12);
        assert!(eval(&mut b, &bad).is_empty(), "fires once");
        let t = eval(&mut b, &good);
        assert_eq!(t[0].event, "resolved");
        assert_eq!(b.statuses()[0].state, State::Ok);
        assert!(eval(&mut b, &thin).is_empty());
        assert_eq!(b.statuses()[0].state, State::NoData);
        // The window: the 5 complete minutes before the newest, of the rule's cohort.
        let q = &asked[0];
        assert_eq!((q.from_ms, q.to_ms), (5 * MINUTE_MS, 10 * MINUTE_MS));
        assert_eq!(q.filter.region.as_deref(), Some("US"));
    }

    #[test]
    fn a_change_against_the_baseline_fires_on_the_ratio() {
        let mut r = rule();
        r.metric = Metric::Views;
        r.op = Op::Below;
        r.threshold = 0.5; // traffic halves
        r.min_views = 0;
        r.for_evaluations = 1;
        r.baseline_minutes = 30;
        let mut b = Book::new(vec![r]);
        let t = b.evaluate(Some(100 * MINUTE_MS), 0, |q| {
            // Baseline: 1000 views; window: 300.
            Ok(total(sums(
                if q.to_ms <= 96 * MINUTE_MS { 1000 } else { 300 },
                0,
                0,
            )))
        });
        assert_eq!(t[0].event, "firing");
        assert_eq!(b.statuses()[0].baseline, Some(1000.0));
        assert!((b.statuses()[0].value.unwrap() - 0.3).abs() < 1e-12);
    }

    #[test]
    fn concurrent_viewers_take_the_window_s_peak() {
        let mut r = rule();
        r.metric = Metric::ConcurrentViewers;
        r.threshold = 1000.0;
        r.min_views = 0;
        r.for_evaluations = 1;
        let mut b = Book::new(vec![r]);
        let point = |n| Point {
            bucket: 0,
            sums: sums(10, 0, 0),
            in_progress: Some(n),
            members: 1,
        };
        let t = b.evaluate(Some(0), 0, |q| {
            assert_eq!(q.group, Group::Series);
            Ok(RangeRows {
                points: vec![point(400), point(1500), point(900)],
                ..RangeRows::default()
            })
        });
        assert_eq!(t[0].alert.value, Some(1500.0));
    }

    #[test]
    fn rules_are_checked_naming_the_rule_and_the_key() {
        let mut c = AlertsConfig {
            rules: vec![rule()],
            ..AlertsConfig::default()
        };
        assert!(c.validate().is_ok());
        c.rules[0].window_minutes = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("alerts.rules[\"rebuffering\"].window_minutes"),
            "{e}"
        );
        c.rules[0].window_minutes = 5;
        c.rules[0].filter.title = Some("vid_1".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("titles are kept by the hour"));
        c.rules[0].filter.title = None;
        c.rules.push(rule());
        assert!(c.validate().unwrap_err().to_string().contains("unique"));
        c.rules.pop();
        c.webhook_url = "https://hooks.example/x".into();
        c.validate().unwrap();
        c.webhook_url = "hooks.example/x".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("alerts.webhook_url") && e.contains("http[s]://"),
            "{e}"
        );
        c.webhook_url = "https://hooks.example/x".into();
        c.webhook_ca_file = "/no/such/ca.pem".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("alerts.webhook_ca_file") && e.contains("/no/such/ca.pem"),
            "{e}"
        );
        c.webhook_url = String::new();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("without alerts.webhook_url"), "{e}");
    }
}
