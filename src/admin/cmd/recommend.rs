//! Serving: `recommend` (a user's list) and `similar` (items like an item).

use serde::{Deserialize, Serialize};

use crate::actors::store::WithStore;
use crate::admin::bounds::{id, in_range, opt, MAX_K};
use crate::admin::context::Admin;
use crate::admin::error::{CommandError, RequestError};
use crate::ml::recommend::{RecommendReply, SimilarReply};
use crate::ml::serve::Hints;
use crate::store::Store;

/// `recommend USER [K] [--region R] [--genre G]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Recommend {
    pub user: String,
    /// How many (default 10).
    pub k: Option<usize>,
    /// For a user the model has never seen: their region.
    #[arg(long)]
    #[serde(default)]
    pub region: Option<String>,
    /// For a user the model has never seen: a genre they like.
    #[arg(long)]
    #[serde(default)]
    pub genre: Option<String>,
}

impl Recommend {
    pub fn check(&self) -> Result<(), RequestError> {
        id("user", &self.user)?;
        opt("region", &self.region)?;
        opt("genre", &self.genre)?;
        in_range("k", self.k, 1, MAX_K)
    }
}

/// `similar ITEM [K]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Similar {
    pub item: String,
    /// How many (default 10).
    pub k: Option<usize>,
}

impl Similar {
    pub fn check(&self) -> Result<(), RequestError> {
        id("item", &self.item)?;
        in_range("k", self.k, 1, MAX_K)
    }
}

pub async fn recommend(a: &Admin, req: Recommend) -> Result<RecommendReply, CommandError> {
    let champion = a.serving.get();
    let hints = Hints {
        region: req.region.filter(|s| !s.is_empty()),
        genre: req.genre.filter(|s| !s.is_empty()),
    };
    let k = req.k.unwrap_or(10);
    let user = req.user;
    let reply = a
        .store
        .send(WithStore(move |s: &Store| {
            crate::ml::recommend::recommend(
                champion.as_deref(),
                |u| s.user_profile(u),
                s.titles(),
                &user,
                k,
                &hints,
            )
        }))
        .await??;
    reply.ok_or(CommandError::NoModel {
        min_events: a.cfg.models.min_events,
    })
}

pub async fn similar(a: &Admin, req: Similar) -> Result<SimilarReply, CommandError> {
    let c = a.champion()?;
    let k = req.k.unwrap_or(10);
    let item = req.item;
    let id = c.id;
    a.store
        .send(WithStore(move |s: &Store| {
            crate::ml::recommend::similar(&c, s.titles(), &item, k).ok_or_else(|| {
                CommandError::NotFound(format!(
                    "item {:?} is not in model v{id}: list items with `recommend`",
                    item.trim().to_lowercase()
                ))
            })
        }))
        .await?
}
