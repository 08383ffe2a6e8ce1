//! The admin protocol: one JSON object per line in each direction. A request
//! names its command in `cmd` and carries the command's arguments as fields:
//!
//! ```text
//! {"cmd":"recommend","user":"user_00042","k":5}
//! {"ok":true,"model":3,"user":"user_00042","known":true,"recommendations":[...]}
//! {"cmd":"nope"}
//! {"ok":false,"error":"unknown command \"nope\"; commands: status, stats, ..."}
//! ```

use serde::Deserialize;

/// Every command with its arguments, as `help` lists them.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "status",
        "",
        "uptime, offsets, lag, rates, producers, actor health",
    ),
    (
        "stats",
        "[section: counters|qoe|catalog|size]",
        "stored aggregates",
    ),
    (
        "pause",
        "",
        "stop consuming (the consumer stays in its group)",
    ),
    ("resume", "", "consume again"),
    (
        "producer",
        "action: start|stop|rate|status, [kind: video|users|movies|series|music], [rate: events/s]",
        "control the built-in producers (all kinds when none is named)",
    ),
    (
        "analytics",
        "view: qoe|series|top|engagement|pipeline, [dim: all|video|region|resolution|genre], [key], [minutes: 15], [limit: 20]",
        "live 1-minute windows: QoE, engagement, top videos, pipeline progress",
    ),
    ("train", "", "train now"),
    (
        "evaluate",
        "",
        "score the champion and popularity on a fresh held-out split",
    ),
    (
        "models",
        "[action: list|show|promote|rollback], [id]",
        "model versions and the champion",
    ),
    (
        "recommend",
        "user, [k: 10], [region], [genre]",
        "the champion's top k for a user",
    ),
    ("similar", "item, [k: 10]", "items most like an item"),
    (
        "graph",
        "query: user_tracks|artist_tracks|genre_tracks|top|also_liked|artist_neighbours|genre_neighbours, [user], [action: play|skip|like|pause|seek], [artist], [genre], [offset: 0], [limit: 20]",
        "the listening graph: a user's tracks, tracks by artist or genre, who paused what, users like me also liked, neighbourhoods",
    ),
    (
        "dlq",
        "[action: list|show|replay|purge], [id], [after], [limit: 50], [reason]",
        "the dead-letter store; replay re-sends records to their topic",
    ),
    (
        "export",
        "what: recommendations|predictions|events, out: path, [k: 5]",
        "write a CSV (or JSON Lines for events) on the daemon's machine",
    ),
    (
        "snapshot",
        "out: directory",
        "a consistent copy of the store (a data dir to run from)",
    ),
    ("config", "", "the effective configuration"),
    ("help", "", "this list"),
    ("shutdown", "", "stop the daemon cleanly"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProducerAction {
    Start,
    Stop,
    Rate,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelsAction {
    #[default]
    List,
    Show,
    Promote,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlqAction {
    #[default]
    List,
    Show,
    Replay,
    Purge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportWhat {
    Recommendations,
    Predictions,
    Events,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status {},
    Stats {
        section: Option<String>,
    },
    Pause {},
    Resume {},
    Producer {
        action: ProducerAction,
        kind: Option<String>,
        rate: Option<f64>,
    },
    Analytics {
        view: String,
        dim: Option<String>,
        key: Option<String>,
        minutes: Option<u32>,
        limit: Option<usize>,
    },
    Train {},
    Evaluate {},
    Models {
        #[serde(default)]
        action: ModelsAction,
        id: Option<u64>,
    },
    Recommend {
        user: String,
        k: Option<usize>,
        region: Option<String>,
        genre: Option<String>,
    },
    Similar {
        item: String,
        k: Option<usize>,
    },
    Graph(crate::graph::GraphRequest),
    Dlq {
        #[serde(default)]
        action: DlqAction,
        id: Option<String>,
        after: Option<String>,
        limit: Option<usize>,
        reason: Option<String>,
    },
    Export {
        what: ExportWhat,
        out: String,
        k: Option<usize>,
    },
    Snapshot {
        out: String,
    },
    Config {},
    Help {},
    Shutdown {},
}

/// Largest `k` (recommendations, similar items, export rows per user).
pub const MAX_K: usize = 1000;
/// Largest page of dead letters, analytics rows or graph items.
pub const MAX_PAGE: usize = 10_000;
/// Largest number of dead letters one replay or purge handles.
pub const MAX_BULK: usize = 1_000_000;
/// Largest live-analytics window, minutes (a day).
pub const MAX_MINUTES: u32 = 1440;
/// Largest producer rate, events/s.
pub const MAX_RATE: f64 = 10_000_000.0;
/// Longest id or name argument, bytes.
pub const MAX_ARG_BYTES: usize = 1024;
/// Longest path argument, bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Largest graph page offset.
pub const MAX_OFFSET: usize = 100_000_000;

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    v: Option<T>,
    lo: T,
    hi: T,
) -> Result<(), String> {
    match v {
        Some(x) if !(x >= lo && x <= hi) => {
            Err(format!("`{name}` = {x} is out of range: give {lo} to {hi}"))
        }
        _ => Ok(()),
    }
}

fn text(name: &str, v: Option<&str>, required: bool, max: usize) -> Result<(), String> {
    let Some(s) = v else { return Ok(()) };
    if required && s.trim().is_empty() {
        return Err(format!("`{name}` is empty: give a non-empty value"));
    }
    if s.len() > max {
        return Err(format!(
            "`{name}` is {} bytes long: give at most {max}",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "`{name}` holds the control character {c:?}: send printable text"
        ));
    }
    Ok(())
}

/// `k` from a command line (`--k`): 1 to [`MAX_K`].
pub fn parse_k(s: &str) -> Result<usize, String> {
    let k: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a count: give 1 to {MAX_K}"))?;
    in_range("k", Some(k), 1, MAX_K)?;
    Ok(k)
}

impl Request {
    /// Checks every size, count and id against its bound (for the socket and
    /// HTTP alike): the error names the argument, its value and the range.
    pub fn check(&self) -> Result<(), String> {
        let id = |name: &str, v: &str| text(name, Some(v), true, MAX_ARG_BYTES);
        let opt = |name: &str, v: &Option<String>| text(name, v.as_deref(), false, MAX_ARG_BYTES);
        match self {
            Request::Stats { section } => opt("section", section),
            Request::Producer { kind, rate, .. } => {
                opt("kind", kind)?;
                if let Some(r) = rate {
                    if !r.is_finite() {
                        return Err(format!(
                            "`rate` = {r} is not a number: give 0 to {MAX_RATE}"
                        ));
                    }
                }
                in_range("rate", *rate, 0.0, MAX_RATE)
            }
            Request::Analytics {
                view,
                dim,
                key,
                minutes,
                limit,
            } => {
                id("view", view)?;
                opt("dim", dim)?;
                opt("key", key)?;
                in_range("minutes", *minutes, 1, MAX_MINUTES)?;
                in_range("limit", *limit, 1, MAX_PAGE)
            }
            Request::Recommend {
                user,
                k,
                region,
                genre,
            } => {
                id("user", user)?;
                opt("region", region)?;
                opt("genre", genre)?;
                in_range("k", *k, 1, MAX_K)
            }
            Request::Similar { item, k } => {
                id("item", item)?;
                in_range("k", *k, 1, MAX_K)
            }
            Request::Graph(g) => {
                id("query", &g.query)?;
                for (name, v) in [
                    ("user", &g.user),
                    ("action", &g.action),
                    ("artist", &g.artist),
                    ("genre", &g.genre),
                ] {
                    opt(name, v)?;
                }
                in_range("offset", g.offset, 0, MAX_OFFSET)?;
                in_range("limit", g.limit, 1, crate::graph::MAX_LIMIT)
            }
            Request::Dlq {
                action,
                id: dlq_id,
                after,
                limit,
                reason,
            } => {
                opt("id", dlq_id)?;
                opt("after", after)?;
                opt("reason", reason)?;
                let max = match action {
                    DlqAction::List | DlqAction::Show => MAX_PAGE,
                    DlqAction::Replay | DlqAction::Purge => MAX_BULK,
                };
                in_range("limit", *limit, 1, max)
            }
            Request::Export { out, k, .. } => {
                text("out", Some(out), true, MAX_PATH_BYTES)?;
                in_range("k", *k, 1, MAX_K)
            }
            Request::Snapshot { out } => text("out", Some(out), true, MAX_PATH_BYTES),
            Request::Status {}
            | Request::Pause {}
            | Request::Resume {}
            | Request::Train {}
            | Request::Evaluate {}
            | Request::Models { .. }
            | Request::Config {}
            | Request::Help {}
            | Request::Shutdown {} => Ok(()),
        }
    }
}

/// Parses one request line; the error says what is wrong and how to fix it.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
        format!("malformed JSON ({e}): send one JSON object per line, e.g. {{\"cmd\":\"status\"}}")
    })?;
    let Some(obj) = v.as_object() else {
        return Err(format!(
            "a request is a JSON object, got {v}: send e.g. {{\"cmd\":\"status\"}}"
        ));
    };
    let cmd = match obj.get("cmd") {
        Some(serde_json::Value::String(c)) => c.as_str(),
        Some(other) => return Err(format!("`cmd` must be a string, got {other}")),
        None => {
            return Err("missing `cmd`: name a command, e.g. {\"cmd\":\"status\"}".into());
        }
    };
    if !COMMANDS.iter().any(|(c, _, _)| *c == cmd) {
        let names: Vec<&str> = COMMANDS.iter().map(|(c, _, _)| *c).collect();
        return Err(format!(
            "unknown command {cmd:?}; commands: {}",
            names.join(", ")
        ));
    }
    serde_json::from_value(v.clone()).map_err(|e| {
        let usage = COMMANDS
            .iter()
            .find(|(c, _, _)| *c == cmd)
            .map(|(_, a, _)| *a)
            .unwrap_or("");
        let args = if usage.is_empty() { "none" } else { usage };
        format!("command {cmd:?}: {e}; its arguments: {args}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_names_every_mistake() {
        assert_eq!(
            parse_request(br#"{"cmd":"status"}"#).unwrap(),
            Request::Status {}
        );
        assert_eq!(
            parse_request(br#"{"cmd":"recommend","user":"u1","k":3}"#).unwrap(),
            Request::Recommend {
                user: "u1".into(),
                k: Some(3),
                region: None,
                genre: None
            }
        );
        assert_eq!(
            parse_request(br#"{"cmd":"models"}"#).unwrap(),
            Request::Models {
                action: ModelsAction::List,
                id: None
            }
        );
        let e = parse_request(b"{nope").unwrap_err();
        assert!(e.starts_with("malformed JSON"), "{e}");
        let e = parse_request(b"[1]").unwrap_err();
        assert!(e.contains("JSON object"), "{e}");
        let e = parse_request(br#"{"user":"x"}"#).unwrap_err();
        assert!(e.contains("missing `cmd`"), "{e}");
        let e = parse_request(br#"{"cmd":"fly"}"#).unwrap_err();
        assert!(
            e.contains("unknown command \"fly\"") && e.contains("status"),
            "{e}"
        );
        let e = parse_request(br#"{"cmd":"recommend"}"#).unwrap_err();
        assert!(
            e.contains("missing field `user`") && e.contains("user, [k"),
            "{e}"
        );
        let e = parse_request(br#"{"cmd":"status","verbose":true}"#).unwrap_err();
        assert!(e.contains("unknown field `verbose`"), "{e}");
        let e = parse_request(br#"{"cmd":"producer","action":"explode"}"#).unwrap_err();
        assert!(e.contains("explode") && e.contains("start"), "{e}");
        let e = parse_request(br#"{"cmd":"recommend","user":"u","k":"ten"}"#).unwrap_err();
        assert!(e.contains("\"ten\""), "{e}");
    }

    #[test]
    fn every_size_count_and_id_is_bounded() {
        let check = |line: &str| parse_request(line.as_bytes()).unwrap().check();
        for (line, needle) in [
            (
                r#"{"cmd":"recommend","user":"x","k":100000000000}"#,
                "`k` = 100000000000 is out of range: give 1 to 1000",
            ),
            (r#"{"cmd":"recommend","user":"x","k":0}"#, "`k` = 0"),
            (r#"{"cmd":"recommend","user":""}"#, "`user` is empty"),
            (r#"{"cmd":"recommend","user":"  "}"#, "`user` is empty"),
            (
                r#"{"cmd":"recommend","user":"a\u0000b"}"#,
                "control character",
            ),
            (r#"{"cmd":"similar","item":"x","k":0}"#, "`k` = 0"),
            (
                r#"{"cmd":"analytics","view":"qoe","minutes":0}"#,
                "`minutes` = 0",
            ),
            (
                r#"{"cmd":"analytics","view":"qoe","minutes":100000}"#,
                "give 1 to 1440",
            ),
            (
                r#"{"cmd":"analytics","view":"qoe","limit":0}"#,
                "`limit` = 0",
            ),
            (
                r#"{"cmd":"graph","query":"top","limit":5000}"#,
                "`limit` = 5000",
            ),
            (
                r#"{"cmd":"graph","query":"top","offset":1000000000000}"#,
                "`offset`",
            ),
            (r#"{"cmd":"dlq","limit":0}"#, "`limit` = 0"),
            (r#"{"cmd":"dlq","limit":20000}"#, "give 1 to 10000"),
            (
                r#"{"cmd":"export","what":"recommendations","out":"/tmp/x","k":0}"#,
                "`k` = 0",
            ),
            (
                r#"{"cmd":"export","what":"recommendations","out":""}"#,
                "`out` is empty",
            ),
            (
                r#"{"cmd":"producer","action":"rate","rate":-1}"#,
                "`rate` = -1",
            ),
            (
                r#"{"cmd":"producer","action":"rate","rate":1e300}"#,
                "`rate`",
            ),
        ] {
            let e = check(line).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
        let long = format!(r#"{{"cmd":"recommend","user":"{}"}}"#, "u".repeat(2000));
        assert!(check(&long).unwrap_err().contains("at most 1024"));
        for ok in [
            r#"{"cmd":"recommend","user":"x","k":1000}"#,
            r#"{"cmd":"dlq","action":"purge","limit":500000}"#,
            r#"{"cmd":"graph","query":"top","offset":0,"limit":1000}"#,
            r#"{"cmd":"status"}"#,
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }
}
