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

use crate::domain::event::{MusicAction, MusicEvent, Track};
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
    /// The users who liked it, in the order of their first like.
    likers: Vec<u32>,
}

/// Edges ordered by count (highest first), then user and track id.
type Ranked = BTreeSet<(Reverse<u64>, Arc<str>, Arc<str>)>;

/// Users per artist (or genre) and artists (or genres) per user, each with how
/// many of the user's tracks carry it: neighbourhoods walk these, not edges.
/// Names are interned to dense ids so a walk only hashes integers.
#[derive(Clone, Default)]
struct Facet {
    ids: FxHashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
    /// name id → user → tracks.
    users: Vec<FxHashMap<u32, u32>>,
    /// user → name id → tracks.
    of_user: FxHashMap<u32, FxHashMap<u32, u32>>,
    /// name id → other name id → users having both: kept as users join and
    /// leave names, so a neighbour query reads one row instead of walking
    /// the name's users.
    co: Vec<FxHashMap<u32, u64>>,
}

fn dec<K: std::hash::Hash + Eq>(m: &mut FxHashMap<K, u32>, k: &K) {
    if let Some(c) = m.get_mut(k) {
        *c -= 1;
        if *c == 0 {
            m.remove(k);
        }
    }
}

impl Facet {
    fn id(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.ids.insert(name.clone(), i);
        self.names.push(name.clone());
        self.users.push(FxHashMap::default());
        self.co.push(FxHashMap::default());
        i
    }

    fn add(&mut self, user: u32, name: &Arc<str>) {
        let n = self.id(name);
        *self.users[n as usize].entry(user).or_default() += 1;
        let mine = self.of_user.entry(user).or_default();
        let c = mine.entry(n).or_default();
        *c += 1;
        if *c == 1 {
            // The user joins `n`: it now shares them with each of their names.
            for &m in mine.keys().filter(|&&m| m != n) {
                *self.co[n as usize].entry(m).or_default() += 1;
                *self.co[m as usize].entry(n).or_default() += 1;
            }
        }
    }

    fn remove(&mut self, user: u32, name: &Arc<str>) {
        let Some(&n) = self.ids.get(name) else { return };
        dec(&mut self.users[n as usize], &user);
        let Some(mine) = self.of_user.get_mut(&user) else {
            return;
        };
        dec(mine, &n);
        if mine.contains_key(&n) {
            return;
        }
        // The user left `n`: one user fewer shares it with each of their names.
        let co = &mut self.co;
        let mut drop = |a: u32, b: u32| {
            if let Some(c) = co[a as usize].get_mut(&b) {
                *c -= 1;
                if *c == 0 {
                    co[a as usize].remove(&b);
                }
            }
        };
        for &m in mine.keys() {
            drop(n, m);
            drop(m, n);
        }
    }

    /// For each other name, how many of `name`'s users also have it.
    fn neighbours(&self, name: &str) -> impl Iterator<Item = (&str, u64)> {
        let row = self.ids.get(name).map(|&n| &self.co[n as usize]);
        row.into_iter()
            .flatten()
            .map(|(&m, &c)| (&*self.names[m as usize], c))
    }

    /// How many other names share users with `name` (what
    /// [`Facet::neighbours`] reads).
    fn row_len(&self, name: &str) -> usize {
        self.ids.get(name).map_or(0, |&n| self.co[n as usize].len())
    }

    /// [`Facet::neighbours`] by walking the name's users (what the kept
    /// counts must always equal).
    #[cfg(test)]
    fn neighbours_by_walk(&self, name: &str) -> FxHashMap<Arc<str>, u64> {
        let Some(&n) = self.ids.get(name) else {
            return FxHashMap::default();
        };
        let mut scores = vec![0u64; self.names.len()];
        for u in self.users[n as usize].keys() {
            for &other in self.of_user.get(u).into_iter().flat_map(FxHashMap::keys) {
                scores[other as usize] += 1;
            }
        }
        scores[n as usize] = 0;
        scores
            .into_iter()
            .enumerate()
            .filter(|(_, c)| *c > 0)
            .map(|(i, c)| (self.names[i].clone(), c))
            .collect()
    }
}

#[derive(Clone, Default)]
pub struct MusicGraph {
    user_ix: FxHashMap<Arc<str>, u32>,
    users: Vec<Arc<str>>,
    track_ix: FxHashMap<Arc<str>, u32>,
    tracks: Vec<Arc<str>>,
    /// user → track → edge.
    out: Vec<FxHashMap<u32, MusicAgg>>,
    /// user → the tracks they liked, in the order of their first like: what
    /// "also liked" walks, instead of every edge of every user it meets.
    liked: Vec<Vec<u32>>,
    nodes: Vec<TrackNode>,
    by_artist: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    by_genre: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    ranked: [Ranked; 5],
    artist_facet: Facet,
    genre_facet: Facet,
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

/// The page of `scores` ranked highest first, then by name: only the names
/// up to the page's end are sorted, and only the page's are copied.
fn ranked_page<'a>(
    scores: impl Iterator<Item = (&'a str, u64)>,
    offset: usize,
    limit: usize,
) -> Page<Scored> {
    let mut v: Vec<(&str, u64)> = scores.collect();
    let order = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
    let end = offset.saturating_add(limit).min(v.len());
    if end < v.len() && end > 0 {
        v.select_nth_unstable_by(end - 1, order);
    }
    v[..end].sort_unstable_by(order);
    Page {
        total: v.len(),
        offset,
        items: v[offset.min(end)..end]
            .iter()
            .map(|&(name, score)| Scored {
                name: name.to_string(),
                score,
            })
            .collect(),
    }
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
            self.liked.push(Vec::new());
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

    /// Every track `user` has an edge to, with its counters.
    pub fn edges_of(&self, user: &str) -> Vec<(Arc<str>, MusicAgg)> {
        let Some(&u) = self.user_ix.get(user) else {
            return Vec::new();
        };
        self.out[u as usize]
            .iter()
            .map(|(&t, a)| (self.tracks[t as usize].clone(), *a))
            .collect()
    }

    /// Sets a (user, track) edge to `agg` (rebuilding from the store).
    pub fn set_edge(&mut self, user: &str, track: &str, agg: MusicAgg) {
        let (u, t) = (self.user(user), self.track(track));
        let old = self.out[u as usize].insert(t, agg);
        self.reindex(u, t, old.as_ref(), Some(&agg));
        self.listen(u, t);
        let like = MusicAction::Like.index();
        match (old.map_or(0, |o| o.counts[like]) > 0, agg.counts[like] > 0) {
            (false, true) => self.like(u, t),
            (true, false) => {
                self.liked[u as usize].retain(|&x| x != t);
                self.nodes[t as usize].likers.retain(|&x| x != u);
            }
            _ => {}
        }
    }

    /// `u` liked `t` for the first time.
    fn like(&mut self, u: u32, t: u32) {
        self.liked[u as usize].push(t);
        self.nodes[t as usize].likers.push(u);
    }

    /// Marks `u` a listener of `t`; a new listener joins the track's artist and genre.
    fn listen(&mut self, u: u32, t: u32) {
        let node = &mut self.nodes[t as usize];
        if node.listeners.insert(u) {
            if let Some(a) = &node.artist {
                self.artist_facet.add(u, a);
            }
            if let Some(g) = &node.genre {
                self.genre_facet.add(u, g);
            }
        }
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
        self.listen(u, t);
        let like = MusicAction::Like.index();
        if old.counts[like] == 0 && new.counts[like] > 0 {
            self.like(u, t);
        }
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

    /// A track record (latest wins): its BY and IN_GENRE edges; its listeners
    /// move from the old artist and genre to the new ones.
    pub fn upsert_track(&mut self, tr: &Track) {
        let t = self.track(&tr.track_id);
        let name = self.tracks[t as usize].clone();
        let node = &mut self.nodes[t as usize];
        if let Some(old) = node.artist.take() {
            if let Some(set) = self.by_artist.get_mut(&old) {
                set.remove(&name);
            }
            for &u in &node.listeners {
                self.artist_facet.remove(u, &old);
            }
        }
        if let Some(old) = node.genre.take() {
            if let Some(set) = self.by_genre.get_mut(&old) {
                set.remove(&name);
            }
            for &u in &node.listeners {
                self.genre_facet.remove(u, &old);
            }
        }
        let artist: Arc<str> = Arc::from(tr.artist.as_str());
        let genre: Arc<str> = Arc::from(tr.genre.as_str());
        for &u in &node.listeners {
            self.artist_facet.add(u, &artist);
            self.genre_facet.add(u, &genre);
        }
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

    fn tracks_page(
        &self,
        set: Option<&BTreeSet<Arc<str>>>,
        offset: usize,
        limit: usize,
    ) -> Page<TrackInfo> {
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

    /// Tracks BY an artist, by track id.
    pub fn artist_tracks(&self, artist: &str, offset: usize, limit: usize) -> Page<TrackInfo> {
        self.tracks_page(self.by_artist.get(artist), offset, limit)
    }

    /// Tracks IN_GENRE a genre, by track id.
    pub fn genre_tracks(&self, genre: &str, offset: usize, limit: usize) -> Page<TrackInfo> {
        self.tracks_page(self.by_genre.get(genre), offset, limit)
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
        let Some(&me) = self.user_ix.get(user) else {
            return page(Vec::new(), offset, limit);
        };
        let mine: FxHashSet<u32> = self.liked[me as usize].iter().copied().collect();
        let mut peers: FxHashSet<u32> = FxHashSet::default();
        for &t in &mine {
            peers.extend(self.nodes[t as usize].likers.iter().filter(|&&u| u != me));
        }
        let mut scores: FxHashMap<u32, u64> = FxHashMap::default();
        for &u in &peers {
            for t in &self.liked[u as usize] {
                if !mine.contains(t) {
                    *scores.entry(*t).or_default() += 1;
                }
            }
        }
        let named = scores
            .into_iter()
            .map(|(t, c)| (&*self.tracks[t as usize], c));
        ranked_page(named, offset, limit)
    }

    /// Entries [`MusicGraph::also_liked`] visits for `user`, counted up to
    /// `budget + 1` (a peer reached through two tracks counts twice): the
    /// count stops as soon as it is over.
    pub fn also_liked_work(&self, user: &str, budget: usize) -> usize {
        let Some(&me) = self.user_ix.get(user) else {
            return 0;
        };
        let mut work = self.liked[me as usize].len();
        for &t in &self.liked[me as usize] {
            if work > budget {
                break;
            }
            for &u in &self.nodes[t as usize].likers {
                work += 1 + self.liked[u as usize].len();
                if work > budget {
                    break;
                }
            }
        }
        work.min(budget + 1)
    }

    /// Tracks `user` has an edge to.
    pub fn degree(&self, user: &str) -> usize {
        self.user_ix
            .get(user)
            .map_or(0, |&u| self.out[u as usize].len())
    }

    /// How many other artists share listeners with `artist`.
    pub fn artist_row(&self, artist: &str) -> usize {
        self.artist_facet.row_len(artist)
    }

    /// How many other genres share listeners with `genre`.
    pub fn genre_row(&self, genre: &str) -> usize {
        self.genre_facet.row_len(genre)
    }

    /// Artists sharing listeners with `artist`: for each other one, how many
    /// users have an edge to a track of both, most first.
    pub fn artist_neighbours(&self, artist: &str, offset: usize, limit: usize) -> Page<Scored> {
        ranked_page(self.artist_facet.neighbours(artist), offset, limit)
    }

    /// Genres sharing listeners with `genre`, as [`MusicGraph::artist_neighbours`].
    pub fn genre_neighbours(&self, genre: &str, offset: usize, limit: usize) -> Page<Scored> {
        ranked_page(self.genre_facet.neighbours(genre), offset, limit)
    }
}

mod request;
mod shared;
pub use request::{
    answer, within, GraphAnswer, GraphError, GraphItems, GraphRequest, MAX_LIMIT, QUERIES,
};
pub use shared::{GraphOp, SharedGraph};

#[cfg(test)]
mod tests;
