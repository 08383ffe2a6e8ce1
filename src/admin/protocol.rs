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
}
