//! `playpulse ctl`: the admin socket's client. Builds one request from the
//! command line, prints the reply as tables (or as the raw JSON line with
//! `--json`), and exits non-zero when the daemon answers with an error.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use crate::admin::cmd::dlq::DlqReply;
use crate::admin::cmd::ingest::{ProducerEntry, ProducersReply};
use crate::admin::cmd::models::ModelsReply;
use crate::admin::cmd::status::{AnyStatus, StatusReply};
use crate::admin::protocol::{Request, Verdict};
use crate::ml::recommend::{Listed, RecommendReply, SimilarReply, TrendingReply};
use crate::store::Stats;
use crate::views::analytics::{Answer, QoeMetrics};

#[derive(Debug, Error)]
pub enum CtlError {
    #[error("cannot connect to the control socket {path}: {source}; is the daemon running with this data dir? (pass --socket or --data-dir)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the daemon's reply is not JSON ({0})")]
    Reply(String),
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The control socket (default: <data dir>/playpulse.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// The daemon's data dir, to find its socket.
    #[arg(
        long,
        env = "PLAYPULSE_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Print the daemon's JSON reply as is (one line), for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for a reply.
    #[arg(long, default_value_t = 600, global = true)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Request,
}

/// Paths go to the daemon absolute: it may run elsewhere in the file system.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The request a command line stands for, as the daemon is to read it.
pub fn request(c: &Request) -> Request {
    let mut r = c.clone();
    match &mut r {
        Request::Export(e) => e.out = absolute(&e.out),
        Request::Snapshot(s) => s.out = absolute(&s.out),
        _ => {}
    }
    r
}

/// Sends one request, returns the reply.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Value, CtlError> {
    let path = socket.display().to_string();
    let io = |source| CtlError::Io {
        path: path.clone(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(|source| CtlError::Connect {
        path: path.clone(),
        source,
    })?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| CtlError::Reply(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).map_err(io)?;
    serde_json::from_str(&reply).map_err(|e| CtlError::Reply(format!("{e}: {reply:?}")))
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    t
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.4}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn num(x: f64) -> String {
    format!("{x:.4}")
}

fn opt<T: ToString>(x: &Option<T>) -> String {
    x.as_ref().map_or_else(|| "-".into(), T::to_string)
}

/// Reads the reply as the command's reply type.
fn typed<T: DeserializeOwned>(r: &Value) -> Result<T, CtlError> {
    T::deserialize(r).map_err(|e| CtlError::Reply(format!("unexpected reply ({e}): {r}")))
}

/// Collections longer than this are summarised (`--json` has them whole).
const LIST_SHOWN: usize = 8;

/// Any reply's fields, one per row: nested objects flattened into dotted
/// names (`metrics.ranking.ndcg`), short lists of plain values joined, long
/// or nested lists summarised by their size.
fn fields(r: &Value) -> String {
    fn flatten(prefix: &str, v: &Value, rows: &mut Vec<(String, String)>) {
        match v {
            Value::Object(o) if o.len() > LIST_SHOWN * 4 => rows.push((
                prefix.to_string(),
                format!("{} entries (--json shows them)", o.len()),
            )),
            Value::Object(o) => {
                for (k, v) in o {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&name, v, rows);
                }
            }
            Value::Array(a) if a.is_empty() => rows.push((prefix.to_string(), "-".into())),
            Value::Array(a)
                if a.len() <= LIST_SHOWN && a.iter().all(|x| !x.is_object() && !x.is_array()) =>
            {
                rows.push((
                    prefix.to_string(),
                    a.iter().map(text).collect::<Vec<_>>().join(", "),
                ))
            }
            Value::Array(a) => rows.push((
                prefix.to_string(),
                format!("{} entries (--json shows them)", a.len()),
            )),
            other => rows.push((prefix.to_string(), text(other))),
        }
    }
    let mut rows = Vec::new();
    if let Some(o) = r.as_object() {
        for (k, v) in o.iter().filter(|(k, _)| k.as_str() != "ok") {
            flatten(k, v, &mut rows);
        }
    }
    let mut t = table(&["field", "value"]);
    for (k, v) in rows {
        t.add_row(vec![k, v]);
    }
    t.to_string()
}

/// The trials shown of a search (best first; `--json` has them all).
const TRIALS_SHOWN: usize = 15;

/// A model search: one line of totals, then its best trials.
fn search_text(s: &crate::ml::search::SearchReport) -> String {
    let mut out = format!(
        "search: {} trials in {:.1} s (budget {:.1} s{}{}), {} validation users",
        s.trials.len(),
        s.seconds,
        s.budget_s,
        s.fit_unit_s
            .map(|u| format!(" = {:.1} fits of {u:.2} s", s.budget_s / u.max(1e-9)))
            .unwrap_or_default(),
        if s.converged {
            "; ended early, nothing better in its last trials"
        } else {
            ""
        },
        s.validation_users,
    );
    let mut order: Vec<&crate::ml::search::Trial> = s.trials.iter().collect();
    order.sort_by(|a, b| {
        b.validation
            .unwrap_or(f64::NEG_INFINITY)
            .total_cmp(&a.validation.unwrap_or(f64::NEG_INFINITY))
    });
    let mut t = table(&["trial", "validation ndcg", "fit s", "eval s"]);
    for trial in order.iter().take(TRIALS_SHOWN) {
        t.add_row(vec![
            trial.params.describe(),
            trial.validation.map_or_else(
                || format!("failed: {}", trial.error.as_deref().unwrap_or("-")),
                num,
            ),
            format!("{:.2}", trial.fit_s),
            format!("{:.2}", trial.eval_s),
        ]);
    }
    out.push('\n');
    out.push_str(&t.to_string());
    if order.len() > TRIALS_SHOWN {
        out.push_str(&format!(
            "\n… {} more trials (--json shows every one)",
            order.len() - TRIALS_SHOWN
        ));
    }
    out
}

/// Rows of JSON objects as a table, their fields as the columns.
fn rows(items: &[Value]) -> String {
    let cols: Vec<String> = items
        .first()
        .and_then(|i| i.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let mut t = table(&names);
    for i in items {
        if let Some(o) = i.as_object() {
            t.add_row(
                cols.iter()
                    .map(|c| o.get(c).map_or_else(|| "-".into(), text))
                    .collect::<Vec<_>>(),
            );
        }
    }
    t.to_string()
}

/// A snapshot's source offsets in one line: how many partitions, in how
/// many namespaces.
fn offsets_text(
    offsets: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
) -> String {
    let partitions: usize = offsets.values().map(|p| p.len()).sum();
    format!(
        "snapshot offsets: {partitions} partitions in {} namespaces (--json shows them)",
        offsets.len()
    )
}

/// A share as a percentage with one decimal.
fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

/// A figure rounded to `d` decimals.
fn fixed(x: f64, d: usize) -> String {
    format!("{x:.d$}")
}

fn qoe_table(first: &str, rows: &[(String, &QoeMetrics)]) -> String {
    let mut t = table(&[
        first,
        "views",
        "watch h",
        "rebuffering %",
        "startup ms",
        "start failures %",
        "bitrate kbps",
        "skip %",
    ]);
    for (k, m) in rows {
        t.add_row(vec![
            k.clone(),
            m.views.to_string(),
            fixed(m.watch_hours, 1),
            pct(m.rebuffering_ratio),
            fixed(m.startup_time_ms, 0),
            pct(m.start_failure_rate),
            fixed(m.avg_bitrate_kbps, 0),
            pct(m.skip_rate),
        ]);
    }
    t.to_string()
}

/// The range a rollup answer covers, its step and filters, on one line.
fn range_line(r: &Option<crate::views::analytics::range::RangeInfo>) -> Option<String> {
    let r = r.as_ref()?;
    let f = &r.filter;
    let filters: Vec<String> = [
        ("genre", &f.genre),
        ("region", &f.region),
        ("resolution", &f.resolution),
        ("title", &f.title),
        ("device", &f.device),
        ("track", &f.track),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
    .collect();
    let step = match r.step {
        crate::store::rollup::Grain::Minute => "minute",
        crate::store::rollup::Grain::Hour => "hour",
    };
    Some(format!(
        "range: {} to {}, by {step}; filters: {}; {} rollup rows read{}",
        r.from,
        r.to,
        if filters.is_empty() {
            "none".to_string()
        } else {
            filters.join(", ")
        },
        r.rows_read,
        r.members.map_or_else(String::new, |n| format!(
            "; the group's: {n} member(s) reported"
        ))
    ))
}

/// A range series: QoE with concurrent viewers and the recommendation share.
fn series_table(points: &[crate::views::analytics::MinuteQoe]) -> String {
    // A group member's answer says how many members reported each bucket.
    let group = points.iter().any(|p| p.members.is_some());
    let mut header = vec!["bucket"];
    if group {
        header.push("members");
    }
    header.extend([
        "views",
        "concurrent",
        "watch h",
        "rebuffering %",
        "startup ms",
        "start failures %",
        "exits before start %",
        "bitrate kbps",
        "recommended %",
    ]);
    let mut t = table(&header);
    for p in points {
        let m = &p.metrics;
        let mut row = vec![p.minute.clone()];
        if group {
            row.push(p.members.unwrap_or(0).to_string());
        }
        row.extend([
            m.views.to_string(),
            p.concurrent_viewers
                .map_or_else(|| "-".into(), |c| c.to_string()),
            fixed(m.watch_hours, 1),
            pct(m.rebuffering_ratio),
            fixed(m.startup_time_ms, 0),
            pct(m.start_failure_rate),
            pct(m.exits_before_start_rate),
            fixed(m.avg_bitrate_kbps, 0),
            pct(m.recommended_rate),
        ]);
        t.add_row(row);
    }
    t.to_string()
}

/// Keys in their natural order: resolutions lowest first (240p … 4K), other
/// values by name; keys outside the vocabulary after the known ones.
fn natural<'a, V>(
    dim: &str,
    by: &'a std::collections::BTreeMap<String, V>,
) -> Vec<(&'a String, &'a V)> {
    let mut rows: Vec<(&String, &V)> = by.iter().collect();
    if dim == "resolution" {
        let rank = |k: &str| {
            crate::domain::vocab::RESOLUTIONS
                .iter()
                .position(|r| r.eq_ignore_ascii_case(k))
                .unwrap_or(usize::MAX)
        };
        rows.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then(a.0.cmp(b.0)));
    }
    rows
}

/// The store's QoE totals by one dimension, as rates and units per view.
fn stored_qoe_table(
    dim: &str,
    by: &std::collections::BTreeMap<String, crate::store::Qoe>,
) -> String {
    let mut t = table(&[
        dim,
        "views",
        "watch h",
        "avg watch min",
        "buffering / view",
        "rebuffer s / view",
        "startup ms",
        "start failures %",
        "bitrate kbps",
        "skip %",
        "recommended %",
    ]);
    for (k, q) in natural(dim, by) {
        let per = |x: f64| {
            if q.events > 0 {
                x / q.events as f64
            } else {
                0.0
            }
        };
        t.add_row(vec![
            k.clone(),
            q.events.to_string(),
            fixed(q.watch_seconds / 3600.0, 1),
            fixed(per(q.watch_seconds) / 60.0, 1),
            fixed(per(q.buffering_events as f64), 2),
            fixed(per(q.rebuffer_ms) / 1000.0, 2),
            if q.startups > 0 {
                fixed(q.startup_ms_sum / q.startups as f64, 0)
            } else {
                "-".into()
            },
            pct(per(q.start_failures as f64)),
            fixed(per(q.bitrate_kbps_sum), 0),
            pct(per(q.skipped as f64)),
            pct(per(q.recommended as f64)),
        ]);
    }
    t.to_string()
}

fn listed_table(list: &[Listed]) -> String {
    let mut t = table(&["rank", "item", "title", "genre", "score", "reason"]);
    for (i, x) in list.iter().enumerate() {
        t.add_row(vec![
            (i + 1).to_string(),
            x.item.clone(),
            opt(&x.title),
            opt(&x.genre),
            num(x.score),
            x.reason.clone(),
        ]);
    }
    t.to_string()
}

/// Seconds as "1 h 02 min 03 s" (the largest units that apply).
fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s:02} s"),
        (h, m, s) => format!("{h} h {m:02} min {s:02} s"),
    }
}

fn status_text(r: &StatusReply) -> String {
    let mut t = table(&["field", "value"]);
    let f = &r.fold_in;
    for (k, v) in [
        ("uptime", duration(r.uptime_s)),
        ("version", r.version.clone()),
        ("data_dir", r.data_dir.display().to_string()),
        ("brokers", r.brokers.clone()),
        (
            "broker",
            match (r.broker.reachable, &r.broker.error, r.broker.down_for_s) {
                (true, _, _) => "reachable".to_string(),
                (false, e, down) => format!(
                    "unreachable{}{}",
                    down.map(|d| format!(" for {}", duration(d)))
                        .unwrap_or_default(),
                    e.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
                ),
            },
        ),
        ("http", opt(&r.http)),
        ("offset_namespace", r.offset_namespace.clone()),
        ("champion", opt(&r.champion)),
        (
            "serving",
            match r.serving_family {
                Some(f) => format!("{} ({f} ranks)", r.serving),
                None => r.serving.clone(),
            },
        ),
        (
            "fold_in",
            format!(
                "{} users held ({} new), {} folded since the champion with {} pairs new to it, {} solves in {} batches; last {} users in {:.3} s, {:.3} s from commit; {} failed rounds",
                f.users,
                f.new_users,
                f.folded_since_champion,
                f.new_pairs_since_champion,
                f.folded_total,
                f.batches,
                f.last_users,
                f.last_seconds,
                f.last_latency_seconds,
                f.failed_rounds
            ),
        ),
        (
            "item_factors_age",
            f.item_factors_age_seconds.map_or_else(|| "-".into(), duration),
        ),
        (
            "alerts",
            match (r.alerts.rules, r.alerts.firing.is_empty()) {
                (0, _) => "no rules".to_string(),
                (n, true) => format!("{n} rules, none firing"),
                (n, false) => format!("{n} rules; firing: {}", r.alerts.firing.join(", ")),
            },
        ),
        ("ingest.paused", r.ingest.paused.to_string()),
        ("ingest.consumed", r.ingest.consumed.to_string()),
        ("ingest.stored", r.ingest.stored.to_string()),
        ("ingest.rejected", r.ingest.rejected.to_string()),
        (
            "ingest.duplicates_skipped",
            r.ingest.duplicates_skipped.to_string(),
        ),
        (
            "ingest.batches_in_flight",
            r.ingest.batches_in_flight.to_string(),
        ),
        (
            "ingest.left_to_next_owner",
            r.ingest.left_to_next_owner.to_string(),
        ),
        (
            "ingest.events_per_sec_10s",
            fixed(r.ingest.events_per_sec_10s, 0),
        ),
        (
            "ingest.events_per_sec_60s",
            fixed(r.ingest.events_per_sec_60s, 0),
        ),
        ("ingest.lag", r.ingest.lag.to_string()),
        ("group.member", r.group.member.clone()),
        (
            "group.commit",
            r.group
                .commit
                .map_or_else(|| "-".into(), |c| c.as_str().to_string()),
        ),
        ("group.claims_refused", r.group.claims_refused.to_string()),
        ("group.rejoins", r.group.rejoins.to_string()),
        (
            "group.claimed_records_read_back",
            r.group.claimed_records_read_back.to_string(),
        ),
        (
            "store.event_log",
            r.store.event_log.as_ref().map_or_else(
                || "-".into(),
                |l| {
                    let bound = match (l.max_age_hours, l.max_size_mb) {
                        (a, s) if a == 0.0 && s == 0.0 => "all kept".to_string(),
                        (a, s) => format!("kept: {a} h / {s} MiB (0 = no bound)"),
                    };
                    format!(
                        "{} segments, {:.1} MiB in {} files ({:.1} MiB on disk); {bound}; {} deleted",
                        l.held.segments,
                        l.held.bytes as f64 / f64::from(1 << 20),
                        l.held.files,
                        l.held.file_bytes as f64 / f64::from(1 << 20),
                        l.held.deleted_segments
                    )
                },
            ),
        ),
        (
            "store.pairs",
            r.store.pairs.as_ref().map_or_else(
                || "-".into(),
                |p| {
                    format!(
                        "{} held in memory ({} compacting); {} compactions, {} chunks, last {:.2} s; ingest waited {}×",
                        p.held, p.compacting, p.compactions, p.chunks_written, p.last_compaction_s, p.ingest_waits
                    )
                },
            ),
        ),
        (
            "store.files",
            r.store.files.as_ref().map_or_else(
                || "-".into(),
                |f| {
                    let mib = |b: u64| b as f64 / f64::from(1 << 20);
                    let next = match f.rewrite.next_at_bytes {
                        0 => "never rewritten".to_string(),
                        b => format!("rewritten at {:.0} MiB", mib(b)),
                    };
                    let last = f.rewrite.last.map_or_else(String::new, |l| {
                        format!(
                            "; last rewrite {:.1} s, {:.0} → {:.0} MiB",
                            l.seconds,
                            mib(l.size_before),
                            mib(l.size_after)
                        )
                    });
                    format!(
                        "{:.1} MiB (generation {}; {next}); {} rewrites, {} failed{last}; runs log {:.1} MiB in {} files",
                        mib(f.size_on_disk_bytes),
                        f.rewrite.generation,
                        f.rewrite.done,
                        f.rewrite.failed,
                        mib(f.runs_log_bytes),
                        f.runs_log_files
                    )
                },
            ),
        ),
        (
            "store.rollups",
            r.store.rollups.as_ref().map_or_else(
                || "-".into(),
                |p| {
                    format!(
                        "newest minute {}; {} batches held ({:.1} MiB); {} compactions, {} chunks, {} buckets merged, {} expired, last {:.2} s; {} late events dropped; {} events replayed at open; ingest waited {}×",
                        p.newest_minute.map_or_else(|| "-".into(), crate::domain::timefmt::format_timestamp_ms),
                        p.held_runs,
                        p.held_bytes as f64 / f64::from(1 << 20),
                        p.compactions,
                        p.chunks_written,
                        p.buckets_merged,
                        p.chunks_expired,
                        p.last_compaction_s,
                        p.late_dropped,
                        p.replayed_events,
                        p.ingest_waits
                    )
                },
            ),
        ),
        ("actor.store", r.actors.store.clone()),
        ("actor.parser", r.actors.parser.clone()),
        ("actor.trainer", r.actors.trainer.clone()),
        ("actor.evaluator", r.actors.evaluator.clone()),
        ("actor.producers", r.actors.producers.clone()),
    ] {
        t.add_row(vec![k.to_string(), v]);
    }
    let mut out = t.to_string();
    out.push('\n');
    // Lag per topic (partitions summed).
    let mut by_topic: std::collections::BTreeMap<&str, (i64, i64, usize, usize)> =
        Default::default();
    for p in &r.partitions {
        let e = by_topic.entry(p.topic.as_str()).or_default();
        e.0 += p.next_offset.unwrap_or(0);
        e.1 += p.lag.unwrap_or(0);
        e.2 += 1;
        e.3 += usize::from(p.assigned);
    }
    let mut t = table(&[
        "topic",
        "partitions (owned now)",
        "stored up to (sum of next offsets)",
        "lag (owned)",
    ]);
    for (topic, (next, lag, n, owned)) in by_topic {
        t.add_row(vec![
            topic.to_string(),
            format!("{n} ({owned})"),
            next.to_string(),
            lag.to_string(),
        ]);
    }
    out.push_str(&t.to_string());
    out.push('\n');
    out.push_str(&producers_table(&r.producers));
    if let Some(c) = &r.cluster {
        out.push('\n');
        out.push_str(&cluster_table(c));
    }
    out
}

/// The group acting as one: who trains, each member's state, the shared topics' lag.
fn cluster_table(c: &crate::cluster::ClusterStatus) -> String {
    let mut out = format!(
        "group: this member {}{}; trainer {}; group model {}; lag {}; pairs of {} peers held: {}; peers' rollup buckets written: {}; peers' titles: {}; unreadable records {}\n",
        c.member,
        if c.trainer { " (trains)" } else { "" },
        c.trainer_member.as_deref().unwrap_or("- (the role is moving)"),
        c.group_model.map_or_else(|| "-".into(), |v| format!("v{v}")),
        c.lag
            .iter()
            .map(|(t, l)| format!("{t} {l}"))
            .collect::<Vec<_>>()
            .join(", "),
        c.pair_origins.saturating_sub(1),
        c.peer_pairs,
        c.peer_rollup_buckets,
        c.peer_titles,
        c.unreadable
    );
    let mut t = table(&[
        "member",
        "role",
        "serving",
        "events stored",
        "last heard",
        "http",
    ]);
    for m in &c.members {
        t.add_row(vec![
            format!("{}{}", m.member, if m.this_member { " (this)" } else { "" }),
            if m.trainer { "trainer" } else { "member" }.to_string(),
            m.serving
                .map_or_else(|| "popularity".into(), |v| format!("model v{v}")),
            m.stored.to_string(),
            format!("{:.1} s ago", m.age_ms as f64 / 1000.0),
            opt(&m.http),
        ]);
    }
    out.push_str(&t.to_string());
    out
}

/// The reply as a person reads it.
pub fn render(c: &Request, r: &Value) -> Result<String, CtlError> {
    let mut out = String::new();
    let mut push = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    match c {
        Request::Status(_) => match typed::<AnyStatus>(r)? {
            AnyStatus::Running(s) => push(status_text(&s)),
            AnyStatus::Starting(_) => push(fields(r)),
        },
        Request::Producer(_) => push(producers_table(&typed::<ProducersReply>(r)?.producers)),
        Request::Alerts(_) => {
            let a = typed::<crate::views::alerts::AlertsReply>(r)?;
            push(format!(
                "{} rules, {} firing; {} evaluations; webhook: {} delivered, {} failed{}",
                a.rules,
                a.firing.len(),
                a.evaluations,
                a.delivered,
                a.failed,
                a.last_delivery
                    .map(|d| format!(" (last: {d})"))
                    .unwrap_or_default()
            ));
            let mut t = table(&[
                "alert",
                "state",
                "metric",
                "op",
                "threshold",
                "value",
                "baseline",
                "views",
                "since",
            ]);
            for s in &a.alerts {
                t.add_row(vec![
                    s.name.clone(),
                    s.state.name().into(),
                    s.metric.name().into(),
                    s.op.name().into(),
                    num(s.threshold),
                    s.value.map_or_else(|| "-".into(), num),
                    s.baseline.map_or_else(|| "-".into(), num),
                    s.views.to_string(),
                    opt(&s.since),
                ]);
            }
            push(t.to_string());
        }
        Request::Analytics(_) => match typed::<Answer>(r)? {
            Answer::Qoe { rows, range, .. } => {
                if let Some(line) = range_line(&range) {
                    push(line);
                }
                let rows: Vec<(String, &QoeMetrics)> =
                    rows.iter().map(|x| (x.key.clone(), &x.metrics)).collect();
                push("rows:".into());
                push(qoe_table("key", &rows));
            }
            Answer::Series { points, range, .. } => {
                if let Some(line) = range_line(&range) {
                    push(line);
                    push("points:".into());
                    push(series_table(&points));
                } else {
                    let rows: Vec<(String, &QoeMetrics)> = points
                        .iter()
                        .map(|x| (x.minute.clone(), &x.metrics))
                        .collect();
                    push("points:".into());
                    push(qoe_table("minute", &rows));
                }
            }
            Answer::Listening { by, rows, range } => {
                if let Some(line) = range_line(&range) {
                    push(line);
                }
                let mut t = table(&[
                    by.name(),
                    "events",
                    "plays",
                    "skips",
                    "likes",
                    "skip %",
                    "like %",
                ]);
                for x in &rows {
                    t.add_row(vec![
                        x.key.clone(),
                        x.events.to_string(),
                        x.plays.to_string(),
                        x.skips.to_string(),
                        x.likes.to_string(),
                        pct(x.skip_rate),
                        pct(x.like_rate),
                    ]);
                }
                push("rows:".into());
                push(t.to_string());
            }
            Answer::Top { videos, range, .. } => {
                if let Some(line) = range_line(&range) {
                    push(line);
                }
                let mut t = table(&["video", "title", "views", "watch h"]);
                for v in &videos {
                    t.add_row(vec![
                        v.video.clone(),
                        v.title.clone().unwrap_or_else(|| "-".into()),
                        v.views.to_string(),
                        num(v.watch_hours),
                    ]);
                }
                push("videos:".into());
                push(t.to_string());
            }
            Answer::Engagement {
                genre,
                region,
                range,
                ..
            } => {
                if let Some(line) = range_line(&range) {
                    push(line);
                }
                for (name, list) in [("genre", genre), ("region", region)] {
                    let mut t = table(&[
                        name,
                        "views",
                        "watch h",
                        "avg watch s",
                        "skip rate",
                        "pause rate",
                    ]);
                    for x in &list {
                        t.add_row(vec![
                            x.key.clone(),
                            x.views.to_string(),
                            num(x.watch_hours),
                            num(x.avg_watch_s),
                            num(x.skip_rate),
                            num(x.pause_rate),
                        ]);
                    }
                    push(format!("{name}:"));
                    push(t.to_string());
                }
            }
            Answer::Pipeline { points, .. } => {
                let mut t = table(&[
                    "minute",
                    "stored",
                    "rejected",
                    "duplicates skipped",
                    "rows/s",
                    "latency p50 ms",
                    "latency p99 ms",
                ]);
                for p in &points {
                    t.add_row(vec![
                        p.minute.clone(),
                        p.stored.to_string(),
                        p.rejected.to_string(),
                        p.duplicates_skipped.to_string(),
                        num(p.rows_per_sec),
                        opt(&p.latency_ms_p50),
                        opt(&p.latency_ms_p99),
                    ]);
                }
                push("points:".into());
                push(t.to_string());
            }
        },
        Request::Models(_) => match typed::<ModelsReply>(r)? {
            ModelsReply::List(list) => {
                let mut t = table(&[
                    "id",
                    "kind",
                    "created",
                    "ndcg / accuracy",
                    "decision",
                    "champion",
                ]);
                for m in &list.models {
                    t.add_row(vec![
                        m.id.to_string(),
                        m.kind().to_string(),
                        crate::domain::timefmt::format_timestamp_ms(m.created_ms),
                        num(m.score()),
                        m.decision.clone(),
                        if Some(m.id) == list.champion {
                            "*".into()
                        } else {
                            String::new()
                        },
                    ]);
                }
                push(t.to_string());
            }
            ModelsReply::Shown(mut shown) => {
                // The search's trials as a table of their own, not a JSON cell.
                let search = match &mut shown.model.trained {
                    crate::ml::version::Trained::Als(v) => v.search.take(),
                    _ => None,
                };
                // Source offsets (a row per partition) summarised; --json has them.
                let offsets = std::mem::take(&mut shown.model.snapshot_mut().offsets);
                let rest = serde_json::to_value(&shown)
                    .map_err(|e| CtlError::Reply(format!("cannot show the version ({e}): {r}")))?;
                push(fields(&rest));
                push(offsets_text(&offsets));
                if let Some(s) = &search {
                    push(search_text(s));
                }
            }
            ModelsReply::Champion(_) | ModelsReply::Imported(_) => push(fields(r)),
        },
        Request::Recommend(_) => {
            let rec: RecommendReply = typed(r)?;
            push(match &rec.cold_start {
                Some(how) => format!("model v{} (not in it: {how})", opt(&rec.model)),
                None => match rec.family {
                    Some(f) => format!("model v{} ({f})", opt(&rec.model)),
                    None => format!("model v{}", opt(&rec.model)),
                },
            });
            push(listed_table(&rec.recommendations));
        }
        Request::Trending(_) => {
            let t: TrendingReply = typed(r)?;
            push(format!(
                "trending {} (an event counts half after {} min)",
                t.domain.as_str(),
                t.half_life_minutes
            ));
            push(listed_table(&t.items));
        }
        Request::Similar(_) => {
            let s: SimilarReply = typed(r)?;
            push(format!("model v{}", s.model));
            push(listed_table(&s.similar));
        }
        Request::Graph(_) => {
            // The items' fields depend on the query: shown as they come.
            #[derive(serde::Deserialize)]
            struct Page {
                query: String,
                total: usize,
                offset: usize,
                items: Vec<Value>,
            }
            let p: Page = typed(r)?;
            push(format!(
                "{}: {} of {} from {}",
                p.query,
                p.items.len(),
                p.total,
                p.offset
            ));
            if !p.items.is_empty() {
                push(rows(&p.items));
            }
        }
        Request::Dlq(_) => match typed::<DlqReply>(r)? {
            DlqReply::Page(page) => {
                let mut t = table(&["id", "reason", "field", "value", "message"]);
                for d in &page.dead_letters {
                    let j = &d.letter.rejection;
                    t.add_row(vec![
                        d.id.clone(),
                        j.reason.clone(),
                        j.field.clone().unwrap_or_else(|| "-".into()),
                        j.value.clone().unwrap_or_else(|| "-".into()),
                        j.message.clone(),
                    ]);
                }
                push(t.to_string());
                if let Some(next) = &page.next_after {
                    push(format!("more: --after {next}"));
                }
            }
            _ => push(fields(r)),
        },
        Request::Stats(_) => {
            let s: Stats = typed(r)?;
            if let Some(c) = &s.counters {
                let mut t = table(&["counter", "value"]);
                for (k, v) in c {
                    t.add_row(vec![k.clone(), v.to_string()]);
                }
                push(t.to_string());
            }
            if let Some(q) = &s.qoe {
                for (dim, by) in [
                    ("region", &q.region),
                    ("resolution", &q.resolution),
                    ("genre", &q.genre),
                ] {
                    push(stored_qoe_table(dim, by));
                }
            }
            if let Some(c) = &s.catalog {
                push(format!(
                    "catalog: users {}, movies {}, series {}, tracks {}",
                    c.users, c.movies, c.series, c.tracks
                ));
            }
            if let Some(b) = s.size_on_disk_bytes {
                push(format!("size_on_disk_bytes: {b}"));
            }
        }
        _ => push(fields(r)),
    }
    Ok(out)
}

fn producers_table(p: &[ProducerEntry]) -> String {
    let mut t = table(&["kind", "topic", "running", "rate/s", "sent"]);
    for x in p {
        t.add_row(vec![
            x.kind.to_string(),
            x.state.topic.clone(),
            x.state.running.to_string(),
            num(x.state.rate),
            x.state.sent.to_string(),
        ]);
    }
    t.to_string()
}

/// Runs `ctl`; answers the process exit code.
pub fn run(args: &CtlArgs) -> Result<i32, CtlError> {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| args.data_dir.join("playpulse.sock"));
    let req = request(&args.command);
    let reply = call(&socket, &req, Duration::from_secs(args.timeout))?;
    let verdict: Verdict = typed(&reply)?;
    if args.json {
        println!("{reply}");
    } else if verdict.ok {
        print!("{}", render(&args.command, &reply)?);
    }
    if verdict.ok {
        Ok(0)
    } else {
        Err(CtlError::Refused(verdict.error.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_fields_are_flattened_and_long_lists_summarised() {
        let offsets: serde_json::Map<String, Value> = (0..100)
            .map(|p| (format!("video/{p}"), Value::from(p * 10)))
            .collect();
        let reply = serde_json::json!({
            "ok": true,
            "id": 7,
            "metrics": {"ranking": {"ndcg": 0.25, "k": 10}},
            "params": {"factors": [16, 32]},
            "counts": offsets,
            "trials": [{"a": 1}, {"a": 2}],
        });
        let out = fields(&reply);
        for cell in [
            "metrics.ranking.ndcg",
            "0.2500",
            "metrics.ranking.k",
            "params.factors",
            "16, 32",
            "100 entries (--json shows them)",
            "2 entries (--json shows them)",
        ] {
            assert!(out.contains(cell), "{cell}: {out}");
        }
        assert!(!out.contains("video/42"), "{out}");
        assert!(!out.contains("│ ok"), "{out}");
        assert!(out.lines().count() < 15, "{out}");
        // A snapshot's offsets are summarised however few: partitions, not namespaces.
        let few: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> = [(
            "kafka:c".to_string(),
            [("video/0".to_string(), 5), ("video/1".to_string(), 6)]
                .into_iter()
                .collect(),
        )]
        .into_iter()
        .collect();
        let out = offsets_text(&few);
        assert!(out.contains("2 partitions in 1 namespaces"), "{out}");
    }

    #[test]
    fn stored_qoe_reads_in_units_and_resolutions_in_their_order() {
        let q = |events: u64, watch_h: f64, skipped: u64| crate::store::Qoe {
            events,
            watch_seconds: watch_h * 3600.0,
            buffering_events: events,
            rebuffer_ms: 1500.0 * events as f64,
            startup_ms_sum: 900.0 * events as f64,
            startups: events,
            skipped,
            bitrate_kbps_sum: 5400.0 * events as f64,
            ..Default::default()
        };
        let by: std::collections::BTreeMap<String, crate::store::Qoe> = [
            ("1080p", q(100, 7325.2, 25)),
            ("240p", q(10, 1.0, 5)),
            ("4K", q(4, 2.0, 0)),
            ("720p", q(50, 30.0, 10)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let out = stored_qoe_table("resolution", &by);
        let at = |k: &str| {
            out.find(&format!(" {k} "))
                .unwrap_or_else(|| panic!("{k}: {out}"))
        };
        assert!(at("240p") < at("720p") && at("720p") < at("1080p") && at("1080p") < at("4K"));
        // Hours, not summed seconds; rates per view, percentages.
        let row = out.lines().find(|l| l.contains(" 1080p ")).unwrap();
        for cell in ["7325.2", "4395.1", "1.00", "1.50", "900", "5400", "25.0"] {
            assert!(row.contains(cell), "{cell} in {row}");
        }
        assert!(!out.contains("26370720"), "{out}");
        // Other dimensions keep their order by name.
        let genres = stored_qoe_table("genre", &by);
        assert!(genres.find(" 1080p ").unwrap() < genres.find(" 240p ").unwrap());
    }

    #[test]
    fn a_search_shows_its_totals_and_best_trials_first() {
        use crate::ml::family::Params;
        use crate::ml::search::{SearchReport, Trial};
        let trials: Vec<Trial> = (0..20u32)
            .map(|i| Trial {
                params: Params::Als(crate::ml::als::AlsParams {
                    factors: 8 + i as usize,
                    ..Default::default()
                }),
                validation: (i != 3).then(|| f64::from(i) / 100.0),
                fit_s: 0.5,
                eval_s: 0.1,
                error: (i == 3).then(|| "bad point".to_string()),
            })
            .collect();
        let report = SearchReport {
            trials,
            best: Default::default(),
            winner: Some(19),
            budget_s: 60.0,
            fit_unit_s: None,
            seconds: 12.5,
            validation_users: 400,
            validation_pairs: 900,
            skipped_for_budget: 0,
            converged: true,
        };
        let out = search_text(&report);
        assert!(
            out.starts_with("search: 20 trials in 12.5 s (budget 60.0 s; ended early"),
            "{out}"
        );
        assert!(out.contains("400 validation users"), "{out}");
        // A budget counted in fits says so.
        let in_fits = SearchReport {
            budget_s: 16.0,
            fit_unit_s: Some(2.0),
            ..report.clone()
        };
        let text = search_text(&in_fits);
        assert!(
            text.contains("(budget 16.0 s = 8.0 fits of 2.00 s;"),
            "{text}"
        );
        // Best first (f27 scored 0.19); the failed one is past the 15 shown.
        let first_row = out.lines().find(|l| l.contains("als f")).unwrap();
        assert!(
            first_row.contains("als f27") && first_row.contains("0.1900"),
            "{out}"
        );
        assert!(!out.contains("bad point"), "{out}");
        assert!(
            out.ends_with("… 5 more trials (--json shows every one)"),
            "{out}"
        );
    }
}
