//! Ingest controls: `pause`, `resume`, and the built-in producers (`producer`).

use serde::{Deserialize, Serialize};

use crate::actors::messages::{ProducerControl, ProducerState, SetPaused};
use crate::admin::bounds::{finite, MAX_RATE};
use crate::admin::context::Admin;
use crate::admin::error::{CommandError, RequestError};
use crate::domain::event::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ProducerAction {
    Start,
    Stop,
    Rate,
    Status,
}

/// `producer ACTION [RATE] [--kind K]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Producer {
    pub action: ProducerAction,
    /// Events per second (for `rate`; 0 = as fast as the pipeline takes them).
    pub rate: Option<f64>,
    /// Only this kind.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
}

impl Producer {
    pub fn check(&self) -> Result<(), RequestError> {
        finite("rate", self.rate, 0.0, MAX_RATE)
    }
}

/// A producer and what it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub kind: Kind,
    pub state: ProducerState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProducersReply {
    pub producers: Vec<ProducerEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PausedReply {
    pub paused: bool,
}

pub async fn set_paused(a: &Admin, paused: bool) -> Result<PausedReply, CommandError> {
    a.pause
        .send(SetPaused(paused))
        .await?
        .map_err(|e| CommandError::Refused(e.to_string()))?;
    Ok(PausedReply { paused })
}

pub async fn producer(a: &Admin, req: Producer) -> Result<ProducersReply, CommandError> {
    let msg = match req.action {
        ProducerAction::Start => ProducerControl::Start,
        ProducerAction::Stop => ProducerControl::Stop,
        ProducerAction::Status => ProducerControl::Status,
        ProducerAction::Rate => match req.rate {
            Some(r) => ProducerControl::Rate(r),
            None => return Err(RequestError::Needs("action rate needs `rate` (events/s)").into()),
        },
    };
    let mut producers = Vec::new();
    for (k, p) in &a.producers {
        if req.kind.is_none_or(|want| want == *k) {
            let state = p.send(msg).await?;
            producers.push(ProducerEntry { kind: *k, state });
        }
    }
    if producers.is_empty() {
        return Err(CommandError::Refused(match req.kind {
            Some(k) => format!(
                "no {} producer: add it under [producers.rate] in the config",
                k.as_str()
            ),
            None => "no producers are configured: add them under [producers.rate]".into(),
        }));
    }
    Ok(ProducersReply { producers })
}
