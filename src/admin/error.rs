//! The admin edge's errors: a request refused before anything runs
//! ([`RequestError`]), and a command that ran and failed ([`CommandError`]).
//! Each variant knows its HTTP status; the text names the thing, the value and
//! what to do.

use thiserror::Error;

use crate::store::StoreError;

/// A request that is not understood or is out of bounds.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RequestError {
    #[error("malformed JSON ({0}): send one JSON object per line, e.g. {{\"cmd\":\"status\"}}")]
    Malformed(String),
    #[error("a request is a JSON object, got {0}: send e.g. {{\"cmd\":\"status\"}}")]
    NotAnObject(String),
    #[error("`cmd` must be a string, got {0}")]
    CmdNotText(String),
    #[error("missing `cmd`: name a command, e.g. {{\"cmd\":\"status\"}}")]
    MissingCmd,
    #[error("unknown command {name:?}; commands: {known}")]
    UnknownCommand { name: String, known: String },
    #[error("command {cmd:?}: {message}; its arguments: {usage}")]
    Arguments {
        cmd: String,
        message: String,
        usage: String,
    },
    #[error("`{name}` = {value} is out of range: give {lo} to {hi}")]
    OutOfRange {
        name: &'static str,
        value: String,
        lo: String,
        hi: String,
    },
    #[error("`{name}` = {value} is not a number: give {lo} to {hi}")]
    NotFinite {
        name: &'static str,
        value: f64,
        lo: f64,
        hi: f64,
    },
    #[error("`{name}` is empty: give a non-empty value")]
    Empty { name: &'static str },
    #[error("`{name}` is {len} bytes long: give at most {max}")]
    TooLong {
        name: &'static str,
        len: usize,
        max: usize,
    },
    #[error("`{name}` holds the control character {c:?}: send printable text")]
    ControlCharacter { name: &'static str, c: char },
    #[error("{value:?} is not a count: give 1 to {max}")]
    NotACount { value: String, max: usize },
    #[error("query parameter {key}={value:?} is not a number")]
    ParamNotANumber { key: String, value: String },
    #[error("query parameter `{key}` is missing")]
    ParamMissing { key: String },
    #[error("query parameters: {0}")]
    Params(String),
    #[error("query parameter {key}={value:?}: {message}")]
    Param {
        key: String,
        value: String,
        message: String,
    },
    #[error("{0}")]
    Needs(&'static str),
}

/// A command that could not be done.
#[derive(Debug, Error)]
pub enum CommandError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("no model has been trained yet: it trains after models.min_events = {min_events} stored events, or run `train`")]
    NoModel { min_events: u64 },
    #[error("no model serves: the {trained} trained so far did not beat the popularity baseline on held-out data (see `models`), and nothing trends to list yet; promote one by hand (`models promote ID`) or let more events come")]
    NotPromoted { trained: usize },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("the daemon is starting (waiting for {0}): try again once `status` says it runs")]
    Starting(String),
    #[error("the daemon is stopping ({0})")]
    Stopping(String),
    #[error("the work failed: {0}")]
    Worker(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Analytics(#[from] crate::views::analytics::AnalyticsError),
    #[error(transparent)]
    Graph(#[from] crate::views::graph::GraphError),
    #[error(transparent)]
    Index(#[from] crate::views::indexes::Poisoned),
    #[error(transparent)]
    Export(#[from] crate::export::csv::ExportError),
    #[error(transparent)]
    Replay(#[from] super::replay::ReplayError),
    #[error(transparent)]
    Training(#[from] crate::ml::TrainError),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaGlueError),
}

impl CommandError {
    /// The HTTP status this error answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            CommandError::NoModel { .. }
            | CommandError::NotPromoted { .. }
            | CommandError::Kafka(_)
            | CommandError::Starting(_)
            | CommandError::Stopping(_) => 503,
            CommandError::NotFound(_) => 404,
            CommandError::Store(StoreError::Refused(_) | StoreError::BadId { .. }) => 400,
            CommandError::Store(_) | CommandError::Worker(_) | CommandError::Index(_) => 500,
            CommandError::Analytics(
                crate::views::analytics::AnalyticsError::Store(_)
                | crate::views::analytics::AnalyticsError::Unavailable,
            ) => 500,
            CommandError::Training(e) if e.is_internal() => 500,
            CommandError::Export(crate::export::csv::ExportError::NoModel) => 503,
            CommandError::Request(_)
            | CommandError::Refused(_)
            | CommandError::Analytics(_)
            | CommandError::Graph(_)
            | CommandError::Export(_)
            | CommandError::Replay(_)
            | CommandError::Training(_) => 400,
        }
    }
}

impl From<actix::MailboxError> for CommandError {
    fn from(e: actix::MailboxError) -> Self {
        CommandError::Stopping(e.to_string())
    }
}
