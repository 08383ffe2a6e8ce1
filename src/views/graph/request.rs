//! Graph queries by name with their arguments (the admin socket's and the HTTP
//! API's form), answered one page at a time.

use crate::domain::event::MusicAction;

use super::{parse_action, MusicGraph, Page, RankedEdge, Scored, TrackEdge, TrackInfo};

/// The graph's queries, as the admin socket and the HTTP API name them.
pub const QUERIES: &[(&str, &str)] = &[
    (
        "user_tracks",
        "a user's tracks with one relation (user, action)",
    ),
    ("artist_tracks", "tracks BY an artist (artist)"),
    ("genre_tracks", "tracks IN_GENRE a genre (genre)"),
    (
        "top",
        "the edges of one relation with the highest counts, e.g. who paused what ([action: pause])",
    ),
    ("also_liked", "users like me also liked (user)"),
    (
        "artist_neighbours",
        "artists sharing listeners with an artist (artist)",
    ),
    (
        "genre_neighbours",
        "genres sharing listeners with a genre (genre)",
    ),
];

/// Answers at most this many items a page.
pub const MAX_LIMIT: usize = 1000;

/// One graph query with its arguments.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct GraphRequest {
    /// user_tracks | artist_tracks | genre_tracks | top | also_liked |
    /// artist_neighbours | genre_neighbours
    pub query: String,
    #[arg(long)]
    pub user: Option<String>,
    /// play | skip | like | pause | seek (or PLAYED, LIKED, ...).
    #[arg(long)]
    pub action: Option<String>,
    #[arg(long)]
    pub artist: Option<String>,
    #[arg(long)]
    pub genre: Option<String>,
    /// Skip this many answers (default 0).
    #[arg(long)]
    pub offset: Option<usize>,
    /// Most answers (default 20).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// A graph query that cannot be answered as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("graph query {query:?} needs `{arg}`")]
    Needs { query: String, arg: &'static str },
    #[error("graph query {0:?} needs `action`: play, skip, like, pause or seek")]
    NeedsAction(String),
    #[error("action {0:?} is not one of play, skip, like, pause, seek (or PLAYED, SKIPPED, LIKED, PAUSED, SEEKED)")]
    Action(String),
    #[error("limit {0}: give 1 to {MAX_LIMIT} and page with offset")]
    Limit(usize),
    #[error("unknown graph query {query:?}; queries: {known}")]
    Unknown { query: String, known: String },
}

fn need<'a>(v: &'a Option<String>, query: &str, arg: &'static str) -> Result<&'a str, GraphError> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| GraphError::Needs {
            query: query.to_string(),
            arg,
        })
}

fn action_of(
    v: &Option<String>,
    query: &str,
    default: Option<MusicAction>,
) -> Result<MusicAction, GraphError> {
    match v.as_deref().map(str::trim) {
        None | Some("") => default.ok_or_else(|| GraphError::NeedsAction(query.to_string())),
        Some(a) => parse_action(a).ok_or_else(|| GraphError::Action(a.to_string())),
    }
}

/// The items of a page, by query.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum GraphItems {
    UserTracks(Vec<TrackEdge>),
    Tracks(Vec<TrackInfo>),
    Edges(Vec<RankedEdge>),
    Scored(Vec<Scored>),
}

impl GraphItems {
    pub fn len(&self) -> usize {
        match self {
            GraphItems::UserTracks(v) => v.len(),
            GraphItems::Tracks(v) => v.len(),
            GraphItems::Edges(v) => v.len(),
            GraphItems::Scored(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One page of a graph query's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GraphAnswer {
    pub query: String,
    /// Answers in all (before paging).
    pub total: usize,
    pub offset: usize,
    pub items: GraphItems,
}

fn answered<T>(query: &str, p: Page<T>, items: impl FnOnce(Vec<T>) -> GraphItems) -> GraphAnswer {
    GraphAnswer {
        query: query.to_string(),
        total: p.total,
        offset: p.offset,
        items: items(p.items),
    }
}

/// Whether answering `r` visits at most about `budget` of the graph's
/// entries (edges, listeners, neighbours, skipped ones), found with no more
/// visits than that: a request that fails validation answers at once.
pub fn within(g: &MusicGraph, r: &GraphRequest, budget: usize) -> bool {
    let (offset, limit) = r.paging();
    let page = offset.saturating_add(limit);
    let user = || r.user.as_deref().map(str::to_lowercase).unwrap_or_default();
    let work = match r.query.trim() {
        "user_tracks" => g.degree(&user()),
        "artist_tracks" | "genre_tracks" | "top" => page,
        "also_liked" => g.also_liked_work(&user(), budget),
        "artist_neighbours" => g.artist_row(r.artist.as_deref().unwrap_or_default()),
        "genre_neighbours" => g.genre_row(r.genre.as_deref().unwrap_or_default()),
        _ => 0,
    };
    work <= budget
}

impl GraphRequest {
    /// (offset, limit) with their defaults.
    fn paging(&self) -> (usize, usize) {
        (self.offset.unwrap_or(0), self.limit.unwrap_or(20))
    }
}

/// Answers a graph query: one page of it.
pub fn answer(g: &MusicGraph, r: &GraphRequest) -> Result<GraphAnswer, GraphError> {
    let (offset, limit) = r.paging();
    if limit == 0 || limit > MAX_LIMIT {
        return Err(GraphError::Limit(limit));
    }
    let q = r.query.trim();
    // Ids are stored lower-cased (validation.lowercase_ids); names as sent.
    let user = || need(&r.user, q, "user").map(str::to_lowercase);
    Ok(match q {
        "user_tracks" => {
            let u = user()?;
            let a = action_of(&r.action, q, None)?;
            answered(
                q,
                g.user_tracks(&u, a, offset, limit),
                GraphItems::UserTracks,
            )
        }
        "artist_tracks" => answered(
            q,
            g.artist_tracks(need(&r.artist, q, "artist")?, offset, limit),
            GraphItems::Tracks,
        ),
        "genre_tracks" => answered(
            q,
            g.genre_tracks(need(&r.genre, q, "genre")?, offset, limit),
            GraphItems::Tracks,
        ),
        "top" => {
            let a = action_of(&r.action, q, Some(MusicAction::Pause))?;
            answered(q, g.top_edges(a, offset, limit), GraphItems::Edges)
        }
        "also_liked" => answered(q, g.also_liked(&user()?, offset, limit), GraphItems::Scored),
        "artist_neighbours" => answered(
            q,
            g.artist_neighbours(need(&r.artist, q, "artist")?, offset, limit),
            GraphItems::Scored,
        ),
        "genre_neighbours" => answered(
            q,
            g.genre_neighbours(need(&r.genre, q, "genre")?, offset, limit),
            GraphItems::Scored,
        ),
        other => {
            let names: Vec<&str> = QUERIES.iter().map(|(n, _)| *n).collect();
            return Err(GraphError::Unknown {
                query: other.to_string(),
                known: names.join(", "),
            });
        }
    })
}
