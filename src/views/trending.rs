//! "Trending now": time-decayed popularity by arrival time. Every stored
//! view (video) and play or like (music) adds one to its item's score overall,
//! in its genre and (videos) in its region; scores halve every
//! `analytics.trending_half_life_minutes`, so a score reads as "events, the
//! recent ones counting most" (an event one half-life old counts ½). Scores
//! are kept relative to a reference time and rescaled when it moves, so an
//! update is a multiply-add. Fed after each durable batch; at start, seeded
//! from the event segments written in the last few half-lives. Bounded: past
//! [`MAX_ENTRIES`] entries of a domain, the lower-scored half is dropped.
//!
//! Requests read a [`TrendingView`]: the scores as of a batch, published by
//! the writer (see `views::indexes`), so a request never waits for it. A
//! view shares each scope's scores with the writer until the writer next
//! changes that scope, which then copies it once (`Arc::make_mut`): a
//! publication costs no copy, and a batch copies the scopes it touches once.
//!
//! Items are numbered once per domain: a scope's scores are keyed by the
//! number, so an event looks its item's name up once (not once a scope), and
//! the copy of a scope a batch makes is of plain numbers, with no name's
//! reference count to touch (as keys of names, those copies and their drops
//! were a third of the trending's time on the store's thread).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::domain::event::{Domain, Event, MusicAction};

/// Most (scope, item) entries a domain keeps.
pub const MAX_ENTRIES: usize = 200_000;

/// Where a score counts: overall, in a region, in a genre.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope<'a> {
    Overall,
    Region(&'a str),
    Genre(&'a str),
}

/// Item number → score in one scope, shared with the views published since
/// the writer last changed it.
type ScopeScores = Arc<FxHashMap<u32, f64>>;

/// The scores of every scope of a domain, and the names of its items by
/// number (shared with the views; the writer copies it only when a batch
/// brings an item it has not numbered).
#[derive(Debug, Default, Clone)]
struct Scores {
    names: Arc<Vec<Arc<str>>>,
    overall: ScopeScores,
    region: FxHashMap<String, ScopeScores>,
    genre: FxHashMap<String, ScopeScores>,
    entries: usize,
}

/// The scores of scope `k`, made when missing.
fn nested<'m>(m: &'m mut FxHashMap<String, ScopeScores>, k: &str) -> Option<&'m mut ScopeScores> {
    if !m.contains_key(k) {
        m.insert(k.to_string(), ScopeScores::default());
    }
    m.get_mut(k)
}

impl Scores {
    fn get(&self, scope: Scope<'_>) -> Option<&FxHashMap<u32, f64>> {
        match scope {
            Scope::Overall => Some(&self.overall),
            Scope::Region(r) => self.region.get(r).map(|m| &**m),
            Scope::Genre(g) => self.genre.get(g).map(|m| &**m),
        }
    }

    fn add(&mut self, scope: Scope<'_>, item: u32, w: f64) {
        let map = match scope {
            Scope::Overall => Some(&mut self.overall),
            Scope::Region(r) => nested(&mut self.region, r),
            Scope::Genre(g) => nested(&mut self.genre, g),
        };
        let Some(map) = map else { return };
        // Copied here if a published view still shares it.
        match Arc::make_mut(map).entry(item) {
            std::collections::hash_map::Entry::Occupied(mut e) => *e.get_mut() += w,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(w);
                self.entries += 1;
            }
        }
    }

    /// Every score map.
    fn maps(&self) -> impl Iterator<Item = &FxHashMap<u32, f64>> {
        std::iter::once(&self.overall)
            .chain(self.region.values())
            .chain(self.genre.values())
            .map(|m| &**m)
    }

    /// Every score map, to change (each copied if a view shares it).
    fn maps_mut(&mut self) -> impl Iterator<Item = &mut FxHashMap<u32, f64>> {
        std::iter::once(&mut self.overall)
            .chain(self.region.values_mut())
            .chain(self.genre.values_mut())
            .map(Arc::make_mut)
    }

    /// Keeps the scores `keep` answers true for; drops scopes left empty,
    /// and numbers the items left afresh (`numbers`: the writer's lookup),
    /// so the names held are those of items with a score.
    fn retain(&mut self, numbers: &mut FxHashMap<Arc<str>, u32>, keep: impl Fn(f64) -> bool) {
        let old = std::mem::take(&mut self.names);
        let mut renumber: Vec<u32> = vec![u32::MAX; old.len()];
        let mut names: Vec<Arc<str>> = Vec::new();
        let mut n = 0;
        for m in self.maps_mut() {
            m.retain(|_, v| keep(*v));
            n += m.len();
            for item in m.keys() {
                if let (Some(r), Some(name)) =
                    (renumber.get_mut(*item as usize), old.get(*item as usize))
                {
                    if *r == u32::MAX {
                        *r = names.len() as u32;
                        names.push(name.clone());
                    }
                }
            }
        }
        for m in self.maps_mut() {
            let held = std::mem::take(m);
            m.extend(held.into_iter().filter_map(|(item, v)| {
                let r = *renumber.get(item as usize)?;
                (r != u32::MAX).then_some((r, v))
            }));
        }
        numbers.clear();
        numbers.extend(names.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)));
        self.names = Arc::new(names);
        self.region.retain(|_, m| !m.is_empty());
        self.genre.retain(|_, m| !m.is_empty());
        self.entries = n;
    }
}

/// Time-decayed event counts per item (see the module docs).
#[derive(Debug)]
pub struct Trending {
    /// Decay per millisecond (ln 2 / half-life).
    lambda: f64,
    half_life_ms: f64,
    /// Scores are `Σ exp(λ (t - t0))`.
    t0: i64,
    video: Scores,
    music: Scores,
    /// Each domain's item numbers by name (the writer's alone).
    video_numbers: FxHashMap<Arc<str>, u32>,
    music_numbers: FxHashMap<Arc<str>, u32>,
}

/// One trending item: its decayed count now.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendingItem {
    pub item: String,
    pub score: f64,
}

impl Trending {
    pub fn new(half_life: std::time::Duration) -> Trending {
        let half_life_ms = (half_life.as_millis() as f64).max(1.0);
        Trending {
            lambda: std::f64::consts::LN_2 / half_life_ms,
            half_life_ms,
            t0: 0,
            video: Scores::default(),
            music: Scores::default(),
            video_numbers: FxHashMap::default(),
            music_numbers: FxHashMap::default(),
        }
    }

    pub fn half_life_ms(&self) -> f64 {
        self.half_life_ms
    }

    /// Moves the reference time to `now` when the exponent grows large.
    fn rebase(&mut self, now: i64) {
        if self.t0 == 0 {
            self.t0 = now;
            return;
        }
        let x = self.lambda * (now - self.t0) as f64;
        if x < 40.0 {
            return;
        }
        let f = (-x).exp();
        for (s, numbers) in [
            (&mut self.video, &mut self.video_numbers),
            (&mut self.music, &mut self.music_numbers),
        ] {
            s.maps_mut()
                .for_each(|m| m.values_mut().for_each(|v| *v *= f));
            // Below a millionth of an event: nothing left to rank.
            s.retain(numbers, |v| v > 1e-6);
        }
        self.t0 = now;
    }

    fn add(&mut self, domain: Domain, scopes: [Option<Scope<'_>>; 3], item: &str, at: i64) {
        let w = (self.lambda * (at - self.t0) as f64).exp();
        let (s, numbers) = match domain {
            Domain::Video => (&mut self.video, &mut self.video_numbers),
            Domain::Music => (&mut self.music, &mut self.music_numbers),
        };
        let n = match numbers.get(item) {
            Some(n) => *n,
            None => {
                let n = s.names.len() as u32;
                let name: Arc<str> = Arc::from(item);
                Arc::make_mut(&mut s.names).push(name.clone());
                numbers.insert(name, n);
                n
            }
        };
        for scope in scopes.into_iter().flatten() {
            s.add(scope, n, w);
        }
        if s.entries > MAX_ENTRIES {
            let mut v: Vec<f64> = s.maps().flat_map(|m| m.values().copied()).collect();
            let mid = v.len() / 2;
            v.select_nth_unstable_by(mid, f64::total_cmp);
            let cut = v[mid];
            s.retain(numbers, |x| x > cut);
        }
    }

    /// Counts one stored event that arrived at `at` (ms); `genre_of` gives a
    /// track's genre (listening events carry none).
    pub fn observe(&mut self, e: &Event, at: i64, genre_of: impl Fn(&str) -> Option<String>) {
        self.rebase(at);
        match e {
            Event::Video(v) => self.add(
                Domain::Video,
                [
                    Some(Scope::Overall),
                    Some(Scope::Region(&v.region)),
                    Some(Scope::Genre(&v.genre)),
                ],
                &v.video_id,
                at,
            ),
            Event::Music(m) if matches!(m.event_type, MusicAction::Play | MusicAction::Like) => {
                let genre = genre_of(&m.track_id);
                let genre = genre.as_deref().map(Scope::Genre);
                self.add(
                    Domain::Music,
                    [Some(Scope::Overall), genre, None],
                    &m.track_id,
                    at,
                )
            }
            _ => {}
        }
    }

    /// The scores as of now, for readers: no copy is made here (see the
    /// module docs).
    pub fn view(&self) -> TrendingView {
        TrendingView {
            lambda: self.lambda,
            t0: self.t0,
            video: self.video.clone(),
            music: self.music.clone(),
        }
    }

    /// Items numbered in `domain` (what the writer holds names for).
    #[cfg(test)]
    fn numbered(&self, domain: Domain) -> usize {
        match domain {
            Domain::Video => self.video_numbers.len(),
            Domain::Music => self.music_numbers.len(),
        }
    }
}

/// The trending scores as requests read them: made by [`Trending::view`]
/// and never changed after, so any number of readers share one without a
/// lock.
#[derive(Debug)]
pub struct TrendingView {
    lambda: f64,
    t0: i64,
    video: Scores,
    music: Scores,
}

impl TrendingView {
    /// The `k` items of `domain` trending most at `now` in `region` and/or
    /// `genre` (both: items in the region whose genre is `genre`, by their
    /// regional score), best first.
    pub fn top(
        &self,
        domain: Domain,
        region: Option<&str>,
        genre: Option<&str>,
        k: usize,
        now: i64,
    ) -> Vec<TrendingItem> {
        let s = match domain {
            Domain::Video => &self.video,
            Domain::Music => &self.music,
        };
        let scale = (-self.lambda * (now - self.t0).max(0) as f64).exp();
        let scope = match (region, genre) {
            (Some(r), _) => Scope::Region(r),
            (None, Some(g)) => Scope::Genre(g),
            (None, None) => Scope::Overall,
        };
        let genre_scores = match (region, genre) {
            (Some(_), Some(g)) => Some(s.get(Scope::Genre(g))),
            _ => None,
        };
        let in_genre = |item: u32| match genre_scores {
            Some(g) => g.is_some_and(|g| g.contains_key(&item)),
            None => true,
        };
        if k == 0 {
            return Vec::new();
        }
        // The best k by reference (a partial selection), then only those copied.
        let mut all: Vec<(&Arc<str>, f64)> = s
            .get(scope)
            .into_iter()
            .flatten()
            .filter(|(item, _)| in_genre(**item))
            .filter_map(|(item, v)| Some((s.names.get(*item as usize)?, *v)))
            .collect();
        let order = |a: &(&Arc<str>, f64), b: &(&Arc<str>, f64)| {
            b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0))
        };
        if all.len() > k {
            all.select_nth_unstable_by(k - 1, order);
            all.truncate(k);
        }
        all.sort_by(order);
        all.into_iter()
            .map(|(item, v)| TrendingItem {
                item: item.to_string(),
                score: v * scale,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::generate::{VideoGen, World};
    use std::time::Duration;

    fn view(video: &str, region: &str, genre: &str) -> Event {
        let mut g = VideoGen::new(World::new(5, 5, 1), 1, 1_735_689_600_000, 50);
        let mut v = g.next_event();
        v.video_id = video.into();
        v.region = region.into();
        v.genre = genre.into();
        Event::Video(v)
    }

    #[test]
    fn recent_views_outrank_more_older_ones_and_scores_halve_per_half_life() {
        let hour = 3_600_000i64;
        let mut t = Trending::new(Duration::from_secs(3600));
        let t0 = 1_800_000_000_000i64;
        // Four views of "old" two hours ago, three of "new" now.
        for _ in 0..4 {
            t.observe(&view("old", "eu", "Drama"), t0, |_| None);
        }
        for _ in 0..3 {
            t.observe(&view("new", "us", "Comedy"), t0 + 2 * hour, |_| None);
        }
        let top = t.view().top(Domain::Video, None, None, 10, t0 + 2 * hour);
        assert_eq!(top[0].item, "new");
        assert!((top[0].score - 3.0).abs() < 1e-9);
        assert!(
            (top[1].score - 1.0).abs() < 1e-9,
            "4 views two half-lives old count 1"
        );
        // By region and genre; music stays apart.
        let eu = t
            .view()
            .top(Domain::Video, Some("eu"), None, 10, t0 + 2 * hour);
        assert_eq!(eu.len(), 1);
        assert_eq!(eu[0].item, "old");
        assert!(t
            .view()
            .top(Domain::Video, Some("us"), Some("Drama"), 10, t0 + 2 * hour)
            .is_empty());
        assert_eq!(
            t.view().top(Domain::Video, None, Some("Comedy"), 10, t0)[0].item,
            "new"
        );
        assert!(t.view().top(Domain::Music, None, None, 10, t0).is_empty());
        // Far later the reference moves; the order stays and old scores fade.
        let later = t0 + 60 * hour;
        t.observe(&view("late", "eu", "Drama"), later, |_| None);
        let top = t.view().top(Domain::Video, None, None, 10, later);
        assert_eq!(
            top.len(),
            1,
            "what faded below a millionth is dropped: {top:?}"
        );
        assert!((top[0].score - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_top_k_is_the_k_best_in_order_ties_by_name() {
        let t0 = 1_800_000_000_000i64;
        let mut t = Trending::new(Duration::from_secs(3600));
        // Views: e 5, c 3, a 3, d 2, b 1 (a and c tie).
        for (item, n) in [("b", 1), ("c", 3), ("e", 5), ("a", 3), ("d", 2)] {
            for _ in 0..n {
                t.observe(&view(item, "eu", "Drama"), t0, |_| None);
            }
        }
        let names = |k| -> Vec<String> {
            t.view()
                .top(Domain::Video, None, None, k, t0)
                .into_iter()
                .map(|i| i.item)
                .collect()
        };
        assert_eq!(names(3), ["e", "a", "c"]);
        assert_eq!(names(1), ["e"]);
        assert_eq!(names(10), ["e", "a", "c", "d", "b"]);
        assert!(names(0).is_empty());
    }

    #[test]
    fn a_view_ranks_a_region_within_a_genre_and_keeps_what_it_was_made_from() {
        let t0 = 1_800_000_000_000i64;
        let mut t = Trending::new(Duration::from_secs(3600));
        // In eu: a (Drama) 4, b (Comedy) 3, c (Drama) 2; in us: c 5.
        for (item, region, genre, n) in [
            ("a", "eu", "Drama", 4),
            ("b", "eu", "Comedy", 3),
            ("c", "eu", "Drama", 2),
            ("c", "us", "Drama", 5),
        ] {
            for _ in 0..n {
                t.observe(&view(item, region, genre), t0, |_| None);
            }
        }
        let v = t.view();
        let names = |r: Option<&str>, g: Option<&str>, k| -> Vec<(String, f64)> {
            v.top(Domain::Video, r, g, k, t0)
                .into_iter()
                .map(|i| (i.item, i.score))
                .collect()
        };
        // By the regional score: c counts 2 in eu, not its 7 overall.
        assert_eq!(
            names(Some("eu"), Some("Drama"), 10),
            [("a".to_string(), 4.0), ("c".to_string(), 2.0)]
        );
        assert_eq!(names(Some("eu"), Some("Drama"), 1).len(), 1);
        assert!(names(Some("us"), Some("Comedy"), 10).is_empty());
        assert!(names(Some("asia"), None, 10).is_empty());
        assert_eq!(names(None, Some("Drama"), 10)[0], ("c".to_string(), 7.0));
        // Made once: later events show in the next view only.
        for _ in 0..10 {
            t.observe(&view("b", "eu", "Comedy"), t0, |_| None);
        }
        assert_eq!(names(None, None, 1)[0], ("c".to_string(), 7.0));
        let next = t.view().top(Domain::Video, None, None, 1, t0);
        assert_eq!((next[0].item.as_str(), next[0].score), ("b", 13.0));
    }

    #[test]
    fn past_the_bound_the_lower_half_goes_and_the_items_left_keep_their_names() {
        let t0 = 1_800_000_000_000i64;
        let mut t = Trending::new(Duration::from_secs(3600));
        // Ten items seen ten times each, then one view each of more items
        // than the bound holds (three entries a view: overall, region, genre).
        for k in 0..10 {
            for _ in 0..10 {
                t.observe(&view(&format!("hot-{k}"), "eu", "Drama"), t0, |_| None);
            }
        }
        let cold = MAX_ENTRIES / 3 + 100;
        for i in 0..cold {
            t.observe(&view(&format!("cold-{i}"), "us", "Comedy"), t0, |_| None);
        }
        // The drop came when the entries passed the bound: every item seen
        // once by then went, the hot ones stayed, and later ones count anew.
        let dropped_at = (MAX_ENTRIES - 30) / 3 + 1;
        let after = cold - dropped_at;
        assert_eq!(t.numbered(Domain::Video), 10 + after);
        let v = t.view();
        let top = v.top(Domain::Video, None, None, 12, t0);
        let names: Vec<&str> = top.iter().map(|i| i.item.as_str()).collect();
        assert_eq!(
            &names[..10],
            (0..10).map(|k| format!("hot-{k}")).collect::<Vec<_>>()
        );
        assert!(top[..10].iter().all(|i| (i.score - 10.0).abs() < 1e-9));
        assert!((top[10].score - 1.0).abs() < 1e-9);
        let in_eu = v.top(Domain::Video, Some("eu"), Some("Drama"), 100, t0);
        assert_eq!(in_eu.len(), 10, "the hot items keep their region and genre");
        let last = format!("cold-{}", cold - 1);
        let us = v.top(Domain::Video, Some("us"), Some("Comedy"), cold, t0);
        assert_eq!(us.len(), after);
        assert!(us
            .iter()
            .any(|i| i.item == last && (i.score - 1.0).abs() < 1e-9));
        assert!(!us.iter().any(|i| i.item == "cold-0"));
    }
}
