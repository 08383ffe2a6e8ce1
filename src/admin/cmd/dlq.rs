//! `dlq`: the dead-letter store — list, show, replay to the source topic, purge.

use serde::{Deserialize, Serialize};

use crate::admin::bounds::{in_range, opt, MAX_BULK, MAX_PAGE};
use crate::admin::context::{blocking, Admin};
use crate::admin::error::{CommandError, RequestError};
use crate::admin::replay::Replayed;
use crate::store::DeadLetter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DlqAction {
    #[default]
    List,
    Show,
    Replay,
    Purge,
}

/// `dlq [ACTION] [ID] [--reason R] [--limit N] [--after ID]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Dlq {
    #[serde(default)]
    #[arg(value_enum, default_value = "list")]
    pub action: DlqAction,
    /// A dead letter (namespace:topic/partition/offset, as `dlq list` shows).
    pub id: Option<String>,
    /// List after this id (the previous page's `next_after`).
    #[arg(long)]
    pub after: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only this rejection reason.
    #[arg(long)]
    pub reason: Option<String>,
}

impl Dlq {
    pub fn check(&self) -> Result<(), RequestError> {
        opt("id", &self.id)?;
        opt("after", &self.after)?;
        opt("reason", &self.reason)?;
        let max = match self.action {
            DlqAction::List | DlqAction::Show => MAX_PAGE,
            DlqAction::Replay | DlqAction::Purge => MAX_BULK,
        };
        in_range("limit", self.limit, 1, max)
    }
}

/// A dead letter with its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    pub id: String,
    #[serde(flatten)]
    pub letter: DeadLetter,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub dead_letters: Vec<Listed>,
    /// Pass as `after` for the next page (none: this is the last).
    pub next_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shown {
    pub id: String,
    pub dead_letter: DeadLetter,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purged {
    pub purged: usize,
}

/// What `dlq` answers, by action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DlqReply {
    Page(Page),
    Shown(Box<Shown>),
    Replayed(Replayed),
    Purged(Purged),
}

pub async fn dlq(a: &Admin, req: Dlq) -> Result<DlqReply, CommandError> {
    let view = a.view.clone();
    let Dlq {
        action,
        id,
        after,
        limit,
        reason,
    } = req;
    match action {
        DlqAction::List => {
            let limit = limit.unwrap_or(50).clamp(1, MAX_PAGE);
            let page =
                blocking(move || view.dead_letter_page(after.as_deref(), limit, reason.as_deref()))
                    .await??;
            let next_after = if page.len() == limit {
                page.last().map(|(id, _)| id.clone())
            } else {
                None
            };
            let dead_letters = page
                .into_iter()
                .map(|(id, letter)| Listed { id, letter })
                .collect();
            Ok(DlqReply::Page(Page {
                dead_letters,
                next_after,
            }))
        }
        DlqAction::Show => {
            let id = id.ok_or(RequestError::Needs(
                "show needs `id` (topic/partition/offset, as `dlq list` shows)",
            ))?;
            let (id, d) = blocking(move || view.dead_letter(&id).map(|d| (id, d))).await??;
            match d {
                Some(dead_letter) => Ok(DlqReply::Shown(Box::new(Shown { id, dead_letter }))),
                None => Err(CommandError::NotFound(format!(
                    "no dead letter {id:?}; `dlq list` shows them"
                ))),
            }
        }
        DlqAction::Purge => {
            let purged = blocking(move || -> Result<usize, CommandError> {
                let mut removed = 0;
                let mut after: Option<String> = None;
                loop {
                    let page =
                        view.dead_letter_page(after.as_deref(), MAX_PAGE, reason.as_deref())?;
                    let Some((last, _)) = page.last() else { break };
                    after = Some(last.clone());
                    let ids: Vec<String> = page.into_iter().map(|(id, _)| id).collect();
                    removed += view.remove_dead_letters(&ids)?;
                }
                Ok(removed)
            })
            .await??;
            Ok(DlqReply::Purged(Purged { purged }))
        }
        DlqAction::Replay => {
            let brokers = a.bootstrap.clone();
            let kafka = a.cfg.kafka.clone();
            let limit = limit.unwrap_or(10_000).clamp(1, MAX_BULK);
            let done = blocking(move || {
                crate::admin::replay::replay(&view, &brokers, &kafka, id, reason, limit)
            })
            .await??;
            Ok(DlqReply::Replayed(done))
        }
    }
}
