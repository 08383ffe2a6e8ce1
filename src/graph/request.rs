//! Graph queries by name with their arguments (the admin socket's and the HTTP
//! API's form), answered as JSON.

use crate::event::MusicAction;

use super::{parse_action, MusicGraph};

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
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphRequest {
    pub query: String,
    pub user: Option<String>,
    pub action: Option<String>,
    pub artist: Option<String>,
    pub genre: Option<String>,
    pub offset: Option<usize>,
    pub limit: Option<usize>,
}

fn need<'a>(v: &'a Option<String>, query: &str, arg: &str) -> Result<&'a str, String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("graph query {query:?} needs `{arg}`"))
}

fn action_of(
    v: &Option<String>,
    query: &str,
    default: Option<MusicAction>,
) -> Result<MusicAction, String> {
    match v.as_deref().map(str::trim) {
        None | Some("") => default.ok_or_else(|| {
            format!("graph query {query:?} needs `action`: play, skip, like, pause or seek")
        }),
        Some(a) => parse_action(a).ok_or_else(|| {
            format!("action {a:?} is not one of play, skip, like, pause, seek (or PLAYED, SKIPPED, LIKED, PAUSED, SEEKED)")
        }),
    }
}

/// Answers a graph query as JSON: `{query, total, offset, items}`.
pub fn answer(g: &MusicGraph, r: &GraphRequest) -> Result<serde_json::Value, String> {
    let (offset, limit) = (r.offset.unwrap_or(0), r.limit.unwrap_or(20));
    if limit == 0 || limit > MAX_LIMIT {
        return Err(format!(
            "limit {limit}: give 1 to {MAX_LIMIT} and page with offset"
        ));
    }
    let q = r.query.trim();
    // Ids are stored lower-cased (validation.lowercase_ids); names as sent.
    let user = || need(&r.user, q, "user").map(str::to_lowercase);
    let page = match q {
        "user_tracks" => {
            let u = user()?;
            let a = action_of(&r.action, q, None)?;
            serde_json::to_value(g.user_tracks(&u, a, offset, limit))
        }
        "artist_tracks" => {
            serde_json::to_value(g.artist_tracks(need(&r.artist, q, "artist")?, offset, limit))
        }
        "genre_tracks" => {
            serde_json::to_value(g.genre_tracks(need(&r.genre, q, "genre")?, offset, limit))
        }
        "top" => {
            let a = action_of(&r.action, q, Some(MusicAction::Pause))?;
            serde_json::to_value(g.top_edges(a, offset, limit))
        }
        "also_liked" => serde_json::to_value(g.also_liked(&user()?, offset, limit)),
        "artist_neighbours" => {
            serde_json::to_value(g.artist_neighbours(need(&r.artist, q, "artist")?, offset, limit))
        }
        "genre_neighbours" => {
            serde_json::to_value(g.genre_neighbours(need(&r.genre, q, "genre")?, offset, limit))
        }
        other => {
            let names: Vec<&str> = QUERIES.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown graph query {other:?}; queries: {}",
                names.join(", ")
            ));
        }
    }
    .map_err(|e| e.to_string())?;
    let mut v = page;
    if let Some(o) = v.as_object_mut() {
        o.insert("query".into(), serde_json::json!(q));
    }
    Ok(v)
}
