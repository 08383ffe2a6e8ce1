//! Serving: `recommend` (a user's list) and `similar` (items like an item).

use serde::{Deserialize, Serialize};

use crate::admin::bounds::{id, in_range, opt, MAX_K};
use crate::admin::context::Admin;
use crate::admin::error::{CommandError, RequestError};
use crate::ml::recommend::{RecommendReply, SimilarReply, TrendingReply};
use crate::ml::serve::Hints;

/// `recommend USER [K] [--domain video|music] [--region R] [--genre G]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Recommend {
    pub user: String,
    /// How many (default 10).
    pub k: Option<usize>,
    /// Video or music (default: where most of what the user has seen is; video
    /// for a user with nothing seen). A list never mixes the two.
    #[arg(long)]
    #[serde(default)]
    pub domain: Option<crate::domain::event::Domain>,
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

/// `trending [K] [--domain video|music] [--region R] [--genre G]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TrendingArgs {
    /// How many (default 10).
    pub k: Option<usize>,
    /// Video or music (default video). A list never mixes the two.
    #[arg(long)]
    #[serde(default)]
    pub domain: Option<crate::domain::event::Domain>,
    /// Only what trends in this region (videos).
    #[arg(long)]
    #[serde(default)]
    pub region: Option<String>,
    /// Only what trends in this genre.
    #[arg(long)]
    #[serde(default)]
    pub genre: Option<String>,
}

impl TrendingArgs {
    pub fn check(&self) -> Result<(), RequestError> {
        opt("region", &self.region)?;
        opt("genre", &self.genre)?;
        in_range("k", self.k, 1, MAX_K)
    }
}

pub async fn trending(a: &Admin, req: TrendingArgs) -> Result<TrendingReply, CommandError> {
    let champion = a.serving.get();
    let half_life = a.cfg.analytics.trending_half_life_minutes;
    // Answered where it is asked, as `recommend` and `similar` are: a
    // bounded top-k under a read lock, shorter than a hand-off to the
    // blocking pool and back (two thread wake-ups on a loaded machine).
    let region = req
        .region
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let genre = req.genre.filter(|s| !s.is_empty());
    Ok(a.indexes.lookup(|ix| {
        crate::ml::recommend::trending_now(
            ix,
            champion.as_deref(),
            req.domain.unwrap_or_default(),
            region,
            genre,
            req.k.unwrap_or(10),
            half_life,
        )
    })?)
}

pub async fn recommend(a: &Admin, req: Recommend) -> Result<RecommendReply, CommandError> {
    let champion = a.serving.get();
    let hints = Hints {
        region: req.region.filter(|s| !s.is_empty()),
        genre: req.genre.filter(|s| !s.is_empty()),
    };
    let ask = crate::ml::recommend::Ask {
        k: req.k.unwrap_or(10),
        domain: req.domain,
        hints,
        user: req.user,
    };
    let mut live = champion
        .as_deref()
        .map(|c| a.serving.live_user(c, &ask.user.trim().to_lowercase()))
        .unwrap_or_default();
    // The folded items as of the user's state (every row it names is there).
    let items = live.items.clone();
    // Answered where it is asked (see `trending`).
    let view = &a.view;
    if champion.is_none() {
        // No model: what the user has is read from the store, for the
        // trending list to leave out.
        let user = ask.user.trim().to_lowercase();
        // A store that cannot be read here costs the list that, not the list.
        let video = view
            .user_video_pairs(&user)
            .map(|(v, _)| v)
            .unwrap_or_default();
        live.history = video.into_iter().map(|(item, _)| item).collect();
        let edges = a.indexes.with_graph(|g| g.edges_of(&user))?;
        live.history
            .extend(edges.into_iter().map(|(t, _)| t.to_string()));
    }
    let reply = a.indexes.lookup(|ix| {
        crate::ml::recommend::recommend(
            champion.as_deref(),
            &live,
            items.as_deref(),
            |u| view.user_profile(u),
            ix,
            &ask,
        )
    })??;
    reply.ok_or_else(|| a.no_champion())
}

pub async fn similar(a: &Admin, req: Similar) -> Result<SimilarReply, CommandError> {
    let c = a.champion()?;
    let k = req.k.unwrap_or(10);
    let item = req.item;
    let id = c.id;
    let catalog = a.indexes.catalog()?;
    crate::ml::recommend::similar(&c, &catalog, &item, k).ok_or_else(|| {
        CommandError::NotFound(format!(
            "item {:?} is not in model v{id}: list items with `recommend`",
            item.trim().to_lowercase()
        ))
    })
}
