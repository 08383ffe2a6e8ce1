//! `playpulse ctl`: the admin socket's client. Builds one request from the
//! command line, prints the reply as tables (or as the raw JSON line with
//! `--json`), and exits non-zero when the daemon answers with an error.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::{json, Value};
use thiserror::Error;

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
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Uptime, offsets and lag per partition, rates, producers, actor health.
    Status,
    /// Stored aggregates: counters, qoe, catalog or size (all when none is named).
    Stats { section: Option<String> },
    /// Stop consuming (the consumer stays in its group).
    Pause,
    /// Consume again.
    Resume,
    /// The built-in producers: start, stop, rate RATE, status.
    Producer {
        /// start | stop | rate | status
        action: String,
        /// Events per second (for `rate`).
        rate: Option<f64>,
        /// Only this kind: video, users, movies, series or music.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Live 1-minute windows: qoe, series, top, engagement or pipeline.
    Analytics {
        /// qoe | series | top | engagement | pipeline
        view: String,
        /// all | video | region | resolution | genre
        #[arg(long)]
        dim: Option<String>,
        /// A key of --dim (series).
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        minutes: Option<u32>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Train now (answers when the run is recorded).
    Train,
    /// Score the champion and popularity on a fresh held-out split.
    Evaluate,
    /// Model versions: list, show [ID], promote ID, rollback.
    Models {
        /// list | show | promote | rollback
        #[arg(default_value = "list")]
        action: String,
        id: Option<u64>,
    },
    /// The champion's top K for a user.
    Recommend {
        user: String,
        #[arg(default_value_t = 10)]
        k: usize,
        /// For a user the model has never seen: their region.
        #[arg(long)]
        region: Option<String>,
        /// For a user the model has never seen: a genre they like.
        #[arg(long)]
        genre: Option<String>,
    },
    /// Items most like ITEM.
    Similar {
        item: String,
        #[arg(default_value_t = 10)]
        k: usize,
    },
    /// The listening graph: user_tracks, artist_tracks, genre_tracks, top (who
    /// paused what), also_liked, artist_neighbours, genre_neighbours.
    Graph {
        query: String,
        #[arg(long)]
        user: Option<String>,
        /// play | skip | like | pause | seek (or PLAYED, LIKED, ...).
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        artist: Option<String>,
        #[arg(long)]
        genre: Option<String>,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The dead-letter store: list, show ID, replay [ID], purge.
    Dlq {
        /// list | show | replay | purge
        #[arg(default_value = "list")]
        action: String,
        /// A dead letter (namespace:topic/partition/offset, as `dlq list` shows).
        id: Option<String>,
        /// Only this rejection reason.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        /// List after this id (the previous page's `next_after`).
        #[arg(long)]
        after: Option<String>,
    },
    /// Write recommendations (CSV), predictions (CSV) or events (JSON Lines) to OUT.
    Export {
        /// recommendations | predictions | events
        what: String,
        /// A path on the daemon's machine.
        out: PathBuf,
        #[arg(long)]
        k: Option<usize>,
    },
    /// A consistent copy of the store into the directory OUT (a data dir to run from).
    Snapshot { out: PathBuf },
    /// The daemon's effective configuration.
    Config,
    /// Stop the daemon cleanly.
    Shutdown,
}

/// Paths go to the daemon absolute: it may run elsewhere in the file system.
fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

fn opt<T: serde::Serialize>(o: &mut serde_json::Map<String, Value>, k: &str, v: Option<T>) {
    if let Some(v) = v {
        o.insert(k.into(), json!(v));
    }
}

/// The request a command line stands for.
pub fn request(c: &CtlCommand) -> Value {
    let mut o = serde_json::Map::new();
    let cmd = match c {
        CtlCommand::Status => "status",
        CtlCommand::Stats { section } => {
            opt(&mut o, "section", section.as_ref());
            "stats"
        }
        CtlCommand::Pause => "pause",
        CtlCommand::Resume => "resume",
        CtlCommand::Producer { action, rate, kind } => {
            o.insert("action".into(), json!(action));
            opt(&mut o, "rate", *rate);
            opt(&mut o, "kind", kind.as_ref());
            "producer"
        }
        CtlCommand::Analytics {
            view,
            dim,
            key,
            minutes,
            limit,
        } => {
            o.insert("view".into(), json!(view));
            opt(&mut o, "dim", dim.as_ref());
            opt(&mut o, "key", key.as_ref());
            opt(&mut o, "minutes", *minutes);
            opt(&mut o, "limit", *limit);
            "analytics"
        }
        CtlCommand::Train => "train",
        CtlCommand::Evaluate => "evaluate",
        CtlCommand::Models { action, id } => {
            o.insert("action".into(), json!(action));
            opt(&mut o, "id", *id);
            "models"
        }
        CtlCommand::Recommend {
            user,
            k,
            region,
            genre,
        } => {
            o.insert("user".into(), json!(user));
            o.insert("k".into(), json!(k));
            opt(&mut o, "region", region.as_ref());
            opt(&mut o, "genre", genre.as_ref());
            "recommend"
        }
        CtlCommand::Similar { item, k } => {
            o.insert("item".into(), json!(item));
            o.insert("k".into(), json!(k));
            "similar"
        }
        CtlCommand::Graph {
            query,
            user,
            action,
            artist,
            genre,
            offset,
            limit,
        } => {
            o.insert("query".into(), json!(query));
            opt(&mut o, "user", user.as_ref());
            opt(&mut o, "action", action.as_ref());
            opt(&mut o, "artist", artist.as_ref());
            opt(&mut o, "genre", genre.as_ref());
            o.insert("offset".into(), json!(offset));
            o.insert("limit".into(), json!(limit));
            "graph"
        }
        CtlCommand::Dlq {
            action,
            id,
            reason,
            limit,
            after,
        } => {
            o.insert("action".into(), json!(action));
            opt(&mut o, "id", id.as_ref());
            opt(&mut o, "reason", reason.as_ref());
            opt(&mut o, "limit", *limit);
            opt(&mut o, "after", after.as_ref());
            "dlq"
        }
        CtlCommand::Export { what, out, k } => {
            o.insert("what".into(), json!(what));
            o.insert("out".into(), json!(absolute(out)));
            opt(&mut o, "k", *k);
            "export"
        }
        CtlCommand::Snapshot { out } => {
            o.insert("out".into(), json!(absolute(out)));
            "snapshot"
        }
        CtlCommand::Config => "config",
        CtlCommand::Shutdown => "shutdown",
    };
    o.insert("cmd".into(), json!(cmd));
    Value::Object(o)
}

/// Sends one request, returns the reply.
pub fn call(socket: &Path, req: &Value, timeout: Duration) -> Result<Value, CtlError> {
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

/// The reply as a person reads it.
pub fn render(c: &CtlCommand, r: &Value) -> String {
    let mut out = String::new();
    let mut push = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    match c {
        CtlCommand::Status => {
            let mut t = table(&["", ""]);
            for k in [
                "uptime_s",
                "version",
                "data_dir",
                "brokers",
                "offset_namespace",
                "champion",
            ] {
                t.add_row(vec![k.to_string(), text(&r[k])]);
            }
            for (section, prefix) in [
                ("ingest", "ingest"),
                ("group", "group"),
                ("actors", "actor"),
            ] {
                for (k, v) in r[section].as_object().into_iter().flatten() {
                    t.add_row(vec![format!("{prefix}.{k}"), text(v)]);
                }
            }
            push(t.to_string());
            // Lag per topic (partitions summed).
            let mut by_topic: std::collections::BTreeMap<String, (i64, i64, usize, usize)> =
                Default::default();
            for p in r["partitions"].as_array().into_iter().flatten() {
                let e = by_topic.entry(text(&p["topic"])).or_default();
                e.0 += p["next_offset"].as_i64().unwrap_or(0);
                e.1 += p["lag"].as_i64().unwrap_or(0);
                e.2 += 1;
                e.3 += usize::from(p["assigned"] == true);
            }
            let mut t = table(&[
                "topic",
                "partitions (owned now)",
                "stored up to (sum of next offsets)",
                "lag (owned)",
            ]);
            for (topic, (next, lag, n, owned)) in by_topic {
                t.add_row(vec![
                    topic,
                    format!("{n} ({owned})"),
                    next.to_string(),
                    lag.to_string(),
                ]);
            }
            push(t.to_string());
            push(producers_table(&r["producers"]));
        }
        CtlCommand::Producer { .. } => push(producers_table(&r["producers"])),
        CtlCommand::Analytics { .. } => {
            // Rows of objects under whichever list the view answers with.
            for list in ["rows", "points", "videos", "genre", "region"] {
                let Some(rows) = r[list].as_array().filter(|a| !a.is_empty()) else {
                    continue;
                };
                let cols: Vec<String> = rows[0]
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                let mut t = table(&cols.iter().map(String::as_str).collect::<Vec<_>>());
                for row in rows {
                    t.add_row(cols.iter().map(|c| text(&row[c])).collect::<Vec<_>>());
                }
                push(format!("{list}:"));
                push(t.to_string());
            }
        }
        CtlCommand::Models { .. } if r["models"].is_array() => {
            let mut t = table(&[
                "id",
                "kind",
                "created",
                "ndcg / accuracy",
                "decision",
                "champion",
            ]);
            let champion = r["champion"].as_u64();
            for m in r["models"].as_array().into_iter().flatten() {
                let score = if m["kind"] == "als" {
                    &m["metrics"]["ndcg"]
                } else {
                    &m["metrics"]["accuracy"]
                };
                let created = m["created_ms"]
                    .as_i64()
                    .map(crate::timefmt::format_timestamp_ms)
                    .unwrap_or_default();
                t.add_row(vec![
                    text(&m["id"]),
                    text(&m["kind"]),
                    created,
                    text(score),
                    text(&m["decision"]),
                    if m["id"].as_u64() == champion {
                        "*".into()
                    } else {
                        String::new()
                    },
                ]);
            }
            push(t.to_string());
        }
        CtlCommand::Recommend { .. } | CtlCommand::Similar { .. } => {
            let list = if r["recommendations"].is_array() {
                &r["recommendations"]
            } else {
                &r["similar"]
            };
            push(match r["cold_start"].as_str() {
                Some(how) => format!("model v{} (not in it: {how})", text(&r["model"])),
                None => format!("model v{}", text(&r["model"])),
            });
            let mut t = table(&["rank", "item", "title", "genre", "score", "reason"]);
            for (i, x) in list.as_array().into_iter().flatten().enumerate() {
                t.add_row(vec![
                    (i + 1).to_string(),
                    text(&x["item"]),
                    text(&x["title"]),
                    text(&x["genre"]),
                    text(&x["score"]),
                    text(&x["reason"]),
                ]);
            }
            push(t.to_string());
        }
        CtlCommand::Graph { .. } => {
            let items: Vec<&Value> = r["items"].as_array().into_iter().flatten().collect();
            // Columns: the fields of the first item, in their order.
            let cols: Vec<String> = items
                .first()
                .and_then(|i| i.as_object())
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            let names: Vec<&str> = cols.iter().map(String::as_str).collect();
            let mut t = table(&names);
            for i in &items {
                t.add_row(cols.iter().map(|c| text(&i[c])).collect::<Vec<_>>());
            }
            push(format!(
                "{}: {} of {} from {}",
                text(&r["query"]),
                items.len(),
                text(&r["total"]),
                text(&r["offset"])
            ));
            if !items.is_empty() {
                push(t.to_string());
            }
        }
        CtlCommand::Dlq { .. } if r["dead_letters"].is_array() => {
            let mut t = table(&["id", "reason", "field", "value", "message"]);
            for d in r["dead_letters"].as_array().into_iter().flatten() {
                t.add_row(vec![
                    text(&d["id"]),
                    text(&d["reason"]),
                    text(&d["field"]),
                    text(&d["value"]),
                    text(&d["message"]),
                ]);
            }
            push(t.to_string());
            if !r["next_after"].is_null() {
                push(format!("more: --after {}", text(&r["next_after"])));
            }
        }
        CtlCommand::Stats { .. } if r["counters"].is_object() || r["qoe"].is_object() => {
            if let Some(c) = r["counters"].as_object() {
                let mut t = table(&["counter", "value"]);
                for (k, v) in c {
                    t.add_row(vec![k.clone(), text(v)]);
                }
                push(t.to_string());
            }
            for dim in ["region", "resolution", "genre"] {
                if let Some(q) = r["qoe"][dim].as_object() {
                    let mut t = table(&[
                        dim,
                        "events",
                        "watch s",
                        "buffering",
                        "rebuffer ms",
                        "skipped",
                    ]);
                    for (k, v) in q {
                        t.add_row(vec![
                            k.clone(),
                            text(&v["events"]),
                            text(&v["watch_seconds"]),
                            text(&v["buffering_events"]),
                            text(&v["rebuffer_ms"]),
                            text(&v["skipped"]),
                        ]);
                    }
                    push(t.to_string());
                }
            }
            for k in ["catalog", "size_on_disk_bytes"] {
                if !r[k].is_null() {
                    push(format!("{k}: {}", r[k]));
                }
            }
        }
        _ => {
            // Any other reply: its fields, one per line.
            let mut t = table(&["", ""]);
            if let Some(o) = r.as_object() {
                for (k, v) in o.iter().filter(|(k, _)| k.as_str() != "ok") {
                    let v = match v {
                        Value::Object(_) | Value::Array(_) => {
                            serde_json::to_string_pretty(v).unwrap_or_default()
                        }
                        other => text(other),
                    };
                    t.add_row(vec![k.clone(), v]);
                }
            }
            push(t.to_string());
        }
    }
    out
}

fn producers_table(p: &Value) -> String {
    let mut t = table(&["kind", "topic", "running", "rate/s", "sent"]);
    for x in p.as_array().into_iter().flatten() {
        let s = &x["state"];
        t.add_row(vec![
            text(&x["kind"]),
            text(&s["topic"]),
            text(&s["running"]),
            text(&s["rate"]),
            text(&s["sent"]),
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
    let ok = reply["ok"].as_bool() == Some(true);
    if args.json {
        println!("{reply}");
    } else if ok {
        print!("{}", render(&args.command, &reply));
    }
    if ok {
        Ok(0)
    } else {
        Err(CtlError::Refused(text(&reply["error"])))
    }
}
