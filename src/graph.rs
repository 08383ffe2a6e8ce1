//! The listening graph: User -[PLAYED|SKIPPED|LIKED|PAUSED|SEEKED {count,
//! last_ts}]-> Track -[BY]-> Artist, Track -[IN_GENRE]-> Genre.
//!
//! Its edges are durable in sled: the (user, track) listening aggregates (one per
//! pair, a count per action and the last time, written in each batch's atomic
//! write) and the track catalog. This module is the index over them the queries
//! use, adjacency in both directions (user → tracks, track → users, artist →
//! tracks, genre → tracks) and, per action, the edges ordered by count, so no
//! query scans the graph. The store rebuilds it when it opens and feeds it every
//! stored listening event and track.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::event::{MusicAction, MusicEvent, Track};
use crate::store::MusicAgg;

/// The relation name of an action, as the graph calls it.
pub fn relation(a: MusicAction) -> &'static str {
    match a {
        MusicAction::Play => "PLAYED",
        MusicAction::Skip => "SKIPPED",
        MusicAction::Like => "LIKED",
        MusicAction::Pause => "PAUSED",
        MusicAction::Seek => "SEEKED",
    }
}

/// An action named by its event type (`like`) or its relation (`LIKED`).
pub fn parse_action(s: &str) -> Option<MusicAction> {
    MusicAction::parse(&s.to_ascii_lowercase()).or_else(|| {
        MusicAction::ALL
            .into_iter()
            .find(|a| relation(*a).eq_ignore_ascii_case(s))
    })
}

#[derive(Debug, Clone, Default)]
struct TrackNode {
    artist: Option<Arc<str>>,
    genre: Option<Arc<str>>,
    album: Option<Arc<str>>,
    /// Every user with an edge to this track.
    listeners: FxHashSet<u32>,
}

/// Edges ordered by count (highest first), then user and track id.
type Ranked = BTreeSet<(Reverse<u64>, Arc<str>, Arc<str>)>;

#[derive(Default)]
pub struct MusicGraph {
    user_ix: FxHashMap<Arc<str>, u32>,
    users: Vec<Arc<str>>,
    track_ix: FxHashMap<Arc<str>, u32>,
    tracks: Vec<Arc<str>>,
    /// user → track → edge.
    out: Vec<FxHashMap<u32, MusicAgg>>,
    nodes: Vec<TrackNode>,
    by_artist: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    by_genre: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    ranked: [Ranked; 5],
}

/// One page of a query's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// Answers in all (before paging).
    pub total: usize,
    pub offset: usize,
    pub items: Vec<T>,
}

fn page<T>(all: Vec<T>, offset: usize, limit: usize) -> Page<T> {
    let total = all.len();
    Page {
        total,
        offset,
        items: all.into_iter().skip(offset).take(limit).collect(),
    }
}

/// A user's edge to a track.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackEdge {
    pub track: String,
    pub relation: &'static str,
    pub count: u64,
    pub last_ts_ms: i64,
    pub artist: Option<String>,
    pub genre: Option<String>,
}

/// A track of an artist or in a genre.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackInfo {
    pub track: String,
    pub artist: Option<String>,
    pub album: Option<String>,
    pub genre: Option<String>,
    /// Users with any edge to it.
    pub listeners: usize,
}

/// An edge in a ranking of one relation over the whole graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedEdge {
    pub user: String,
    pub track: String,
    pub relation: &'static str,
    pub count: u64,
}

/// A scored neighbour: a track, an artist or a genre.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    pub name: String,
    /// How many users connect it (co-occurrence).
    pub score: u64,
}

fn s(a: &Option<Arc<str>>) -> Option<String> {
    a.as_deref().map(str::to_string)
}

/// Highest score first, then name.
fn rank(scores: FxHashMap<Arc<str>, u64>) -> Vec<Scored> {
    let mut v: Vec<Scored> = scores
        .into_iter()
        .map(|(n, score)| Scored {
            name: n.to_string(),
            score,
        })
        .collect();
    v.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.name.cmp(&b.name)));
    v
}

impl MusicGraph {
    fn intern(
        ix: &mut FxHashMap<Arc<str>, u32>,
        names: &mut Vec<Arc<str>>,
        name: &str,
    ) -> (u32, bool) {
        if let Some(&i) = ix.get(name) {
            return (i, false);
        }
        let a: Arc<str> = Arc::from(name);
        let i = names.len() as u32;
        names.push(a.clone());
        ix.insert(a, i);
        (i, true)
    }

    fn user(&mut self, name: &str) -> u32 {
        let (i, new) = Self::intern(&mut self.user_ix, &mut self.users, name);
        if new {
            self.out.push(FxHashMap::default());
        }
        i
    }

    fn track(&mut self, name: &str) -> u32 {
        let (i, new) = Self::intern(&mut self.track_ix, &mut self.tracks, name);
        if new {
            self.nodes.push(TrackNode::default());
        }
        i
    }

    /// Sets a (user, track) edge to `agg` (rebuilding from the store).
    pub fn set_edge(&mut self, user: &str, track: &str, agg: MusicAgg) {
        let (u, t) = (self.user(user), self.track(track));
        let old = self.out[u as usize].insert(t, agg);
        self.reindex(u, t, old.as_ref(), Some(&agg));
        self.nodes[t as usize].listeners.insert(u);
    }

    /// One stored listening event.
    pub fn observe(&mut self, m: &MusicEvent) {
        let (u, t) = (self.user(&m.user_id), self.track(&m.track_id));
        let edge = self.out[u as usize].entry(t).or_default();
        let old = *edge;
        edge.counts[m.event_type.index()] += 1;
        edge.last_ts_ms = edge.last_ts_ms.max(m.event_ts_ms);
        let new = *edge;
        self.reindex(u, t, Some(&old), Some(&new));
        self.nodes[t as usize].listeners.insert(u);
    }

    fn reindex(&mut self, u: u32, t: u32, old: Option<&MusicAgg>, new: Option<&MusicAgg>) {
        let (user, track) = (&self.users[u as usize], &self.tracks[t as usize]);
        for (a, ranked) in self.ranked.iter_mut().enumerate() {
            let before = old.map_or(0, |e| e.counts[a]);
            let after = new.map_or(0, |e| e.counts[a]);
            if before == after {
                continue;
            }
            if before > 0 {
                ranked.remove(&(Reverse(before), user.clone(), track.clone()));
            }
            if after > 0 {
                ranked.insert((Reverse(after), user.clone(), track.clone()));
            }
        }
    }

    /// A track record (latest wins): its BY and IN_GENRE edges.
    pub fn upsert_track(&mut self, tr: &Track) {
        let t = self.track(&tr.track_id);
        let name = self.tracks[t as usize].clone();
        let node = &mut self.nodes[t as usize];
        if let Some(old) = node.artist.take() {
            if let Some(set) = self.by_artist.get_mut(&old) {
                set.remove(&name);
            }
        }
        if let Some(old) = node.genre.take() {
            if let Some(set) = self.by_genre.get_mut(&old) {
                set.remove(&name);
            }
        }
        let artist: Arc<str> = Arc::from(tr.artist.as_str());
        let genre: Arc<str> = Arc::from(tr.genre.as_str());
        node.artist = Some(artist.clone());
        node.genre = Some(genre.clone());
        node.album = Some(Arc::from(tr.album.as_str()));
        self.by_artist
            .entry(artist)
            .or_default()
            .insert(name.clone());
        self.by_genre.entry(genre).or_default().insert(name);
    }

    pub fn users(&self) -> usize {
        self.users.len()
    }

    pub fn tracks(&self) -> usize {
        self.tracks.len()
    }

    pub fn edges(&self) -> usize {
        self.out.iter().map(FxHashMap::len).sum()
    }

    /// A user's tracks with `action` (count > 0): most often first, then latest,
    /// then track id.
    pub fn user_tracks(
        &self,
        user: &str,
        action: MusicAction,
        offset: usize,
        limit: usize,
    ) -> Page<TrackEdge> {
        let a = action.index();
        let mut v: Vec<TrackEdge> = match self.user_ix.get(user) {
            Some(&u) => self.out[u as usize]
                .iter()
                .filter(|(_, e)| e.counts[a] > 0)
                .map(|(&t, e)| {
                    let node = &self.nodes[t as usize];
                    TrackEdge {
                        track: self.tracks[t as usize].to_string(),
                        relation: relation(action),
                        count: e.counts[a],
                        last_ts_ms: e.last_ts_ms,
                        artist: s(&node.artist),
                        genre: s(&node.genre),
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        v.sort_by(|x, y| {
            y.count
                .cmp(&x.count)
                .then(y.last_ts_ms.cmp(&x.last_ts_ms))
                .then_with(|| x.track.cmp(&y.track))
        });
        page(v, offset, limit)
    }

    fn info(&self, track: &Arc<str>) -> TrackInfo {
        let node = self.track_ix.get(track).map(|&t| &self.nodes[t as usize]);
        TrackInfo {
            track: track.to_string(),
            artist: node.and_then(|n| s(&n.artist)),
            album: node.and_then(|n| s(&n.album)),
            genre: node.and_then(|n| s(&n.genre)),
            listeners: node.map_or(0, |n| n.listeners.len()),
        }
    }

    /// Tracks BY an artist, by track id.
    pub fn artist_tracks(&self, artist: &str, offset: usize, limit: usize) -> Page<TrackInfo> {
        let set = self.by_artist.get(artist);
        Page {
            total: set.map_or(0, BTreeSet::len),
            offset,
            items: set
                .into_iter()
                .flatten()
                .skip(offset)
                .take(limit)
                .map(|t| self.info(t))
                .collect(),
        }
    }

    /// Tracks IN_GENRE a genre, by track id.
    pub fn genre_tracks(&self, genre: &str, offset: usize, limit: usize) -> Page<TrackInfo> {
        let set = self.by_genre.get(genre);
        Page {
            total: set.map_or(0, BTreeSet::len),
            offset,
            items: set
                .into_iter()
                .flatten()
                .skip(offset)
                .take(limit)
                .map(|t| self.info(t))
                .collect(),
        }
    }

    /// The (user, track) edges of one relation with the highest counts ("who
    /// paused what"), then by user and track id.
    pub fn top_edges(&self, action: MusicAction, offset: usize, limit: usize) -> Page<RankedEdge> {
        let ranked = &self.ranked[action.index()];
        Page {
            total: ranked.len(),
            offset,
            items: ranked
                .iter()
                .skip(offset)
                .take(limit)
                .map(|(Reverse(c), u, t)| RankedEdge {
                    user: u.to_string(),
                    track: t.to_string(),
                    relation: relation(action),
                    count: *c,
                })
                .collect(),
        }
    }

    /// "Users like me also liked": tracks liked by the users who liked a track
    /// this user liked, scored by how many such users, without the user's own
    /// liked tracks.
    pub fn also_liked(&self, user: &str, offset: usize, limit: usize) -> Page<Scored> {
        let like = MusicAction::Like.index();
        let Some(&me) = self.user_ix.get(user) else {
            return page(Vec::new(), offset, limit);
        };
        let mine: FxHashSet<u32> = self.out[me as usize]
            .iter()
            .filter(|(_, e)| e.counts[like] > 0)
            .map(|(&t, _)| t)
            .collect();
        let mut peers: FxHashSet<u32> = FxHashSet::default();
        for &t in &mine {
            for &u in &self.nodes[t as usize].listeners {
                if u != me && self.out[u as usize][&t].counts[like] > 0 {
                    peers.insert(u);
                }
            }
        }
        let mut scores: FxHashMap<Arc<str>, u64> = FxHashMap::default();
        for &u in &peers {
            for (&t, e) in &self.out[u as usize] {
                if e.counts[like] > 0 && !mine.contains(&t) {
                    *scores.entry(self.tracks[t as usize].clone()).or_default() += 1;
                }
            }
        }
        page(rank(scores), offset, limit)
    }

    /// Artists or genres sharing listeners with `name`: for each other one, how
    /// many users have an edge to a track of both.
    fn neighbours(
        &self,
        name: &str,
        index: &HashMap<Arc<str>, BTreeSet<Arc<str>>>,
        key: impl Fn(&TrackNode) -> Option<&Arc<str>>,
        offset: usize,
        limit: usize,
    ) -> Page<Scored> {
        let mut listeners: FxHashSet<u32> = FxHashSet::default();
        for t in index.get(name).into_iter().flatten() {
            if let Some(&ti) = self.track_ix.get(t) {
                listeners.extend(self.nodes[ti as usize].listeners.iter().copied());
            }
        }
        let mut scores: FxHashMap<Arc<str>, u64> = FxHashMap::default();
        for &u in &listeners {
            let mut seen: FxHashSet<&Arc<str>> = FxHashSet::default();
            for &t in self.out[u as usize].keys() {
                if let Some(k) = key(&self.nodes[t as usize]) {
                    if &**k != name && seen.insert(k) {
                        *scores.entry(k.clone()).or_default() += 1;
                    }
                }
            }
        }
        page(rank(scores), offset, limit)
    }

    /// Artists sharing listeners with an artist.
    pub fn artist_neighbours(&self, artist: &str, offset: usize, limit: usize) -> Page<Scored> {
        self.neighbours(
            artist,
            &self.by_artist,
            |n| n.artist.as_ref(),
            offset,
            limit,
        )
    }

    /// Genres sharing listeners with a genre.
    pub fn genre_neighbours(&self, genre: &str, offset: usize, limit: usize) -> Page<Scored> {
        self.neighbours(genre, &self.by_genre, |n| n.genre.as_ref(), offset, limit)
    }
}

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
#[derive(Debug, Clone, Default, PartialEq)]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(u: &str, t: &str, a: MusicAction, ts: i64) -> MusicEvent {
        MusicEvent {
            user_id: u.into(),
            track_id: t.into(),
            event_type: a,
            event_ts_ms: ts,
            session_id: "s".into(),
            device: "d".into(),
        }
    }

    fn track(t: &str, artist: &str, genre: &str) -> Track {
        Track {
            track_id: t.into(),
            artist: artist.into(),
            album: "al".into(),
            duration_ms: 1000,
            genre: genre.into(),
        }
    }

    fn names(p: &Page<Scored>) -> Vec<(&str, u64)> {
        p.items.iter().map(|s| (s.name.as_str(), s.score)).collect()
    }

    #[test]
    fn queries_follow_the_edges_both_ways() {
        let mut g = MusicGraph::default();
        for (t, a, gen) in [
            ("t1", "A", "rock"),
            ("t2", "A", "pop"),
            ("t3", "B", "rock"),
            ("t4", "C", "jazz"),
        ] {
            g.upsert_track(&track(t, a, gen));
        }
        use MusicAction::*;
        for (u, t, a, ts) in [
            ("u1", "t1", Like, 1),
            ("u1", "t1", Play, 2),
            ("u1", "t1", Play, 3),
            ("u1", "t2", Pause, 4),
            ("u2", "t1", Like, 5),
            ("u2", "t3", Like, 6),
            ("u2", "t4", Like, 7),
            ("u3", "t1", Like, 8),
            ("u3", "t3", Like, 9),
            ("u3", "t2", Pause, 10),
            ("u3", "t2", Pause, 11),
            ("u4", "t4", Play, 12),
        ] {
            g.observe(&ev(u, t, a, ts));
        }
        let played = g.user_tracks("u1", Play, 0, 10);
        assert_eq!(played.total, 1);
        assert_eq!((played.items[0].count, played.items[0].last_ts_ms), (2, 3));
        assert_eq!(played.items[0].artist.as_deref(), Some("A"));
        assert_eq!(g.user_tracks("nobody", Like, 0, 10).total, 0);
        // Paged by track id.
        let a = g.artist_tracks("A", 1, 5);
        assert_eq!(
            (a.total, a.items.len(), a.items[0].track.as_str()),
            (2, 1, "t2")
        );
        assert_eq!(
            g.genre_tracks("rock", 0, 5)
                .items
                .iter()
                .map(|t| t.listeners)
                .collect::<Vec<_>>(),
            vec![3, 2]
        );
        // Who paused what: u3 twice, then u1 once.
        let top = g.top_edges(Pause, 0, 10);
        let got: Vec<_> = top
            .items
            .iter()
            .map(|e| (e.user.as_str(), e.track.as_str(), e.count))
            .collect();
        assert_eq!(got, vec![("u3", "t2", 2), ("u1", "t2", 1)]);
        // u1 liked t1; u2 and u3 liked it too; they also liked t3 (both) and t4 (u2).
        assert_eq!(
            names(&g.also_liked("u1", 0, 10)),
            vec![("t3", 2), ("t4", 1)]
        );
        // Listeners of A (t1, t2): u1, u2, u3; u2 and u3 reach B, u2 reaches C.
        assert_eq!(
            names(&g.artist_neighbours("A", 0, 10)),
            vec![("B", 2), ("C", 1)]
        );
        assert_eq!(names(&g.genre_neighbours("jazz", 0, 10)), vec![("rock", 1)]);
        // A track moved to another artist leaves the old artist's index.
        g.upsert_track(&track("t2", "B", "pop"));
        assert_eq!(g.artist_tracks("A", 0, 5).total, 1);
        assert_eq!(g.artist_tracks("B", 0, 5).total, 2);
        // Rebuilding from aggregates gives the same ranking as observing.
        let mut h = MusicGraph::default();
        h.set_edge(
            "u3",
            "t2",
            MusicAgg {
                counts: [0, 0, 0, 2, 0],
                last_ts_ms: 11,
            },
        );
        h.set_edge(
            "u1",
            "t2",
            MusicAgg {
                counts: [0, 0, 0, 1, 0],
                last_ts_ms: 4,
            },
        );
        assert_eq!(h.top_edges(Pause, 0, 10), g.top_edges(Pause, 0, 10));
        assert_eq!(parse_action("LIKED"), Some(Like));
        assert_eq!(parse_action("pause"), Some(Pause));
        assert_eq!(parse_action("x"), None);
        // The request form names what is missing or wrong.
        let req = |q: &str| GraphRequest {
            query: q.into(),
            ..Default::default()
        };
        assert!(answer(&g, &req("user_tracks"))
            .unwrap_err()
            .contains("needs `user`"));
        let mut r = req("user_tracks");
        r.user = Some("U1".into());
        assert!(answer(&g, &r).unwrap_err().contains("needs `action`"));
        r.action = Some("LIKED".into());
        let v = answer(&g, &r).unwrap();
        assert_eq!(
            (v["total"].as_u64(), v["items"][0]["track"].as_str()),
            (Some(1), Some("t1"))
        );
        r.limit = Some(5000);
        assert!(answer(&g, &r).unwrap_err().contains("limit 5000"));
        assert!(answer(&g, &req("nope"))
            .unwrap_err()
            .contains("queries: user_tracks"));
        assert_eq!(answer(&g, &req("top")).unwrap()["items"][0]["user"], "u3");
    }
}
