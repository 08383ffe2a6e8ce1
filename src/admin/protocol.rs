//! The admin protocol: one JSON object per line in each direction. A request
//! names its command in `cmd` and carries the command's arguments as fields:
//!
//! ```text
//! {"cmd":"recommend","user":"user_00042","k":5}
//! {"ok":true,"model":3,"user":"user_00042","known":true,"recommendations":[...]}
//! {"cmd":"nope"}
//! {"ok":false,"error":"unknown command \"nope\"; commands: status, stats, ..."}
//! ```
//!
//! [`Request`] is the one definition of every command: serde reads and writes
//! it on the socket, clap parses it from `ctl`'s command line, the HTTP routes
//! build it from query parameters, and `help` lists it. Each command's
//! arguments, bounds, reply and work live in one file of [`super::cmd`].

use clap::{CommandFactory, Parser};
use serde::{Deserialize, Serialize};

use super::cmd::{data, dlq, graph, ingest, models, recommend, stats};
use super::error::RequestError;

/// A command without arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// Every admin command with its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Uptime, offsets and lag per partition, rates, producers, actor health.
    Status(NoArgs),
    /// Stored aggregates: counters, qoe, catalog or size (all when none is named).
    Stats(stats::Stats),
    /// Stop consuming (the consumer stays in its group).
    Pause(NoArgs),
    /// Consume again.
    Resume(NoArgs),
    /// Control the built-in producers (all kinds when none is named).
    Producer(ingest::Producer),
    /// QoE, engagement, top videos, pipeline progress: live 1-minute windows,
    /// or over days from the rollups (--last/--from/--to, filters, listening).
    Analytics(stats::Analytics),
    /// The alert rules: firing, pending, ok or no data, and the webhook's deliveries.
    Alerts(NoArgs),
    /// Train now (answers when the run is recorded).
    Train(NoArgs),
    /// Score the champion and popularity on a fresh held-out split.
    Evaluate(NoArgs),
    /// Model versions and the champion: list, show [ID], promote ID, rollback,
    /// import --dir DIR (factors trained elsewhere: the Spark route).
    Models(models::Models),
    /// The champion's top k for a user.
    Recommend(recommend::Recommend),
    /// Items most like an item.
    Similar(recommend::Similar),
    /// What trends now (time-decayed popularity), overall or by region/genre.
    Trending(recommend::TrendingArgs),
    /// The listening graph: a user's tracks, tracks by artist or genre, who
    /// paused what, users like me also liked, neighbourhoods.
    Graph(graph::Graph),
    /// The dead-letter store: list, show ID, replay [ID], purge; replay re-sends
    /// records to their topic.
    Dlq(dlq::Dlq),
    /// Write recommendations (CSV), predictions (CSV) or events (JSON Lines) on
    /// the daemon's machine.
    Export(data::Export),
    /// A consistent copy of the store into a directory (a data dir to run from).
    Snapshot(data::Snapshot),
    /// The daemon's effective configuration.
    Config(NoArgs),
    /// This list.
    #[command(skip)]
    Help(NoArgs),
    /// Stop the daemon cleanly.
    Shutdown(NoArgs),
}

/// Clap's view of [`Request`], for the command list and usage lines.
#[derive(Parser)]
#[command(name = "admin", disable_help_subcommand = true)]
struct Commands {
    #[command(subcommand)]
    request: Request,
}

/// One command as `help` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandHelp {
    pub cmd: String,
    pub args: String,
    pub does: String,
}

/// Every command with its arguments and what it does (from [`Request`]).
pub fn commands() -> Vec<CommandHelp> {
    let c = Commands::command();
    let mut out: Vec<CommandHelp> = c
        .get_subcommands()
        .map(|s| CommandHelp {
            cmd: s.get_name().to_string(),
            args: usage(s),
            does: s
                .get_about()
                .map(|a| a.to_string().trim_end_matches('.').to_string())
                .unwrap_or_default(),
        })
        .collect();
    // `help` is the socket's own (clap's `--help` serves the command line).
    let at = out.len().saturating_sub(1);
    out.insert(
        at,
        CommandHelp {
            cmd: "help".into(),
            args: String::new(),
            does: "this list".into(),
        },
    );
    out
}

/// `user, [k], [region], [genre]`: required arguments bare, optional ones
/// bracketed, choices after a colon.
fn usage(c: &clap::Command) -> String {
    c.get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .map(|a| {
            let name = a.get_id().as_str().to_string();
            let choices: Vec<String> = a
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            let shown = if choices.is_empty() {
                name
            } else {
                format!("{name}: {}", choices.join("|"))
            };
            if a.is_required_set() {
                shown
            } else {
                format!("[{shown}]")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Request {
    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status(_) => "status",
            Request::Stats(_) => "stats",
            Request::Pause(_) => "pause",
            Request::Resume(_) => "resume",
            Request::Producer(_) => "producer",
            Request::Analytics(_) => "analytics",
            Request::Alerts(_) => "alerts",
            Request::Train(_) => "train",
            Request::Evaluate(_) => "evaluate",
            Request::Models(_) => "models",
            Request::Recommend(_) => "recommend",
            Request::Similar(_) => "similar",
            Request::Trending(_) => "trending",
            Request::Graph(_) => "graph",
            Request::Dlq(_) => "dlq",
            Request::Export(_) => "export",
            Request::Snapshot(_) => "snapshot",
            Request::Config(_) => "config",
            Request::Help(_) => "help",
            Request::Shutdown(_) => "shutdown",
        }
    }

    /// Checks every size, count and id against its bound (for the socket and
    /// HTTP alike): the error names the argument, its value and the range.
    pub fn check(&self) -> Result<(), RequestError> {
        match self {
            Request::Stats(s) => s.check(),
            Request::Producer(p) => p.check(),
            Request::Analytics(a) => a.check(),
            Request::Recommend(r) => r.check(),
            Request::Similar(s) => s.check(),
            Request::Trending(t) => t.check(),
            Request::Graph(g) => g.check(),
            Request::Dlq(d) => d.check(),
            Request::Export(e) => e.check(),
            Request::Snapshot(s) => s.check(),
            Request::Status(_)
            | Request::Alerts(_)
            | Request::Pause(_)
            | Request::Resume(_)
            | Request::Train(_)
            | Request::Evaluate(_)
            | Request::Models(_)
            | Request::Config(_)
            | Request::Help(_)
            | Request::Shutdown(_) => Ok(()),
        }
    }
}

/// Parses one request line; the error says what is wrong and how to fix it.
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| RequestError::Malformed(e.to_string()))?;
    let Some(obj) = v.as_object() else {
        return Err(RequestError::NotAnObject(v.to_string()));
    };
    let cmd = match obj.get("cmd") {
        Some(serde_json::Value::String(c)) => c.clone(),
        Some(other) => return Err(RequestError::CmdNotText(other.to_string())),
        None => return Err(RequestError::MissingCmd),
    };
    let known = commands();
    let Some(help) = known.iter().find(|c| c.cmd == cmd) else {
        let names: Vec<&str> = known.iter().map(|c| c.cmd.as_str()).collect();
        return Err(RequestError::UnknownCommand {
            name: cmd,
            known: names.join(", "),
        });
    };
    serde_json::from_value(v).map_err(|e| RequestError::Arguments {
        cmd: cmd.clone(),
        message: e.to_string(),
        usage: if help.args.is_empty() {
            "none".into()
        } else {
            help.args.clone()
        },
    })
}

/// A reply or an error in its wire form: the reply's fields with `"ok": true`,
/// or `{"ok": false, "error": ...}`.
pub fn to_wire(
    outcome: &Result<super::cmd::Reply, super::error::CommandError>,
) -> serde_json::Value {
    match outcome {
        Ok(reply) => ok_wire(reply),
        Err(e) => error_wire(&e.to_string()),
    }
}

/// A reply's fields with `"ok": true` (a reply that is no object goes under `result`).
pub fn ok_wire(reply: &impl Serialize) -> serde_json::Value {
    match serde_json::to_value(reply) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("ok".into(), true.into());
            serde_json::Value::Object(m)
        }
        Ok(other) => serde_json::json!({ "ok": true, "result": other }),
        Err(e) => error_wire(&format!("the reply could not be written: {e}")),
    }
}

/// `{"ok": false, "error": message}`.
pub fn error_wire(message: &str) -> serde_json::Value {
    serde_json::json!({ "ok": false, "error": message })
}

/// The wire form's verdict, as a client reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Verdict {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &[u8]) -> String {
        parse_request(line).unwrap_err().to_string()
    }

    #[test]
    fn parses_commands_and_names_every_mistake() {
        assert_eq!(
            parse_request(br#"{"cmd":"status"}"#).unwrap(),
            Request::Status(NoArgs {})
        );
        assert_eq!(
            parse_request(br#"{"cmd":"recommend","user":"u1","k":3}"#).unwrap(),
            Request::Recommend(recommend::Recommend {
                user: "u1".into(),
                domain: None,
                k: Some(3),
                region: None,
                genre: None
            })
        );
        assert_eq!(
            parse_request(br#"{"cmd":"models"}"#).unwrap(),
            Request::Models(models::Models {
                action: models::ModelsAction::List,
                id: None,
                dir: None
            })
        );
        let e = err(b"{nope");
        assert!(e.starts_with("malformed JSON"), "{e}");
        let e = err(b"[1]");
        assert!(e.contains("JSON object"), "{e}");
        let e = err(br#"{"user":"x"}"#);
        assert!(e.contains("missing `cmd`"), "{e}");
        let e = err(br#"{"cmd":"fly"}"#);
        assert!(
            e.contains("unknown command \"fly\"") && e.contains("status"),
            "{e}"
        );
        let e = err(br#"{"cmd":"recommend"}"#);
        assert!(
            e.contains("missing field `user`") && e.contains("user, [k"),
            "{e}"
        );
        let e = err(br#"{"cmd":"status","verbose":true}"#);
        assert!(e.contains("unknown field `verbose`"), "{e}");
        let e = err(br#"{"cmd":"producer","action":"explode"}"#);
        assert!(e.contains("explode") && e.contains("start"), "{e}");
        let e = err(br#"{"cmd":"recommend","user":"u","k":"ten"}"#);
        assert!(e.contains("\"ten\""), "{e}");
    }

    #[test]
    fn a_request_reads_back_as_it_was_written() {
        for line in [
            r#"{"cmd":"recommend","user":"u1","k":3,"region":"BR","genre":null}"#,
            r#"{"cmd":"dlq","action":"replay","id":"0:t/0/5","limit":9}"#,
            r#"{"cmd":"producer","action":"rate","kind":"music","rate":5.0}"#,
            r#"{"cmd":"graph","query":"top","action":"pause","limit":3}"#,
            r#"{"cmd":"help"}"#,
        ] {
            let r = parse_request(line.as_bytes()).unwrap();
            let again = parse_request(&serde_json::to_vec(&r).unwrap()).unwrap();
            assert_eq!(r, again, "{line}");
        }
    }

    #[test]
    fn help_lists_every_command_with_its_arguments() {
        let c = commands();
        let names: Vec<&str> = c.iter().map(|c| c.cmd.as_str()).collect();
        assert_eq!(names.len(), 20, "{names:?}");
        for n in [
            "status",
            "help",
            "shutdown",
            "recommend",
            "trending",
            "dlq",
            "alerts",
        ] {
            assert!(names.contains(&n), "{names:?}");
        }
        let rec = c.iter().find(|c| c.cmd == "recommend").unwrap();
        assert_eq!(
            rec.args,
            "user, [k], [domain: video|music], [region], [genre]"
        );
        let t = c.iter().find(|c| c.cmd == "trending").unwrap();
        assert_eq!(t.args, "[k], [domain: video|music], [region], [genre]");
        let p = c.iter().find(|c| c.cmd == "producer").unwrap();
        assert!(
            p.args.starts_with("action: start|stop|rate|status"),
            "{p:?}"
        );
    }

    #[test]
    fn every_size_count_and_id_is_bounded() {
        let check = |line: &str| {
            parse_request(line.as_bytes())
                .unwrap()
                .check()
                .map_err(|e| e.to_string())
        };
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
            (r#"{"cmd":"trending","k":100000}"#, "`k` = 100000"),
            (
                r#"{"cmd":"trending","region":"a\u0000b"}"#,
                "control character",
            ),
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
