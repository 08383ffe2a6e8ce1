//! Content affinity: how well a title (movie or series) matches a user's profile
//! from the catalog producers — shared genres, directors, actors, the rating
//! class and a favourite decade. It serves the cold start of users with a
//! profile and no viewing history, with the matches as the reason.
//!
//! score = 0.35 · (share of the title's genres the user likes)
//!       + 0.20 · (a director the user likes)
//!       + 0.20 · (share of the title's actors the user likes)
//!       + 0.10 · (same classification)
//!       + 0.15 · (released in a favourite decade)
//!
//! Names compare case-insensitively, trimmed. The store keeps a [`CatalogIndex`]
//! of every title (latest record wins) so a ranking reads no disk.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::domain::event::{Title, UserProfile};

pub const W_GENRES: f64 = 0.35;
pub const W_DIRECTORS: f64 = 0.20;
pub const W_ACTORS: f64 = 0.20;
pub const W_CLASSIFICATION: f64 = 0.10;
pub const W_DECADE: f64 = 0.15;

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

fn set(v: &[String]) -> HashSet<String> {
    v.iter()
        .map(|s| norm(s))
        .filter(|s| !s.is_empty())
        .collect()
}

/// A user's preferences, normalised for matching.
#[derive(Debug, Clone, Default)]
pub struct Prefs {
    genres: HashSet<String>,
    directors: HashSet<String>,
    actors: HashSet<String>,
    classification: String,
    decades: HashSet<String>,
}

impl Prefs {
    pub fn of(p: &UserProfile) -> Prefs {
        Prefs {
            genres: set(&p.genres),
            directors: set(&p.directors),
            actors: set(&p.actors),
            classification: norm(&p.classification),
            decades: set(&p.favorite_decades),
        }
    }
}

/// One title's score for a user, with what matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Affinity {
    pub score: f64,
    /// What matched, in words: "genre drama", "director d. one", ...
    pub matched: Vec<String>,
}

/// The affinity of `t` for a user with preferences `p`.
pub fn affinity(p: &Prefs, t: &Title) -> Affinity {
    let mut matched = Vec::new();
    let mut share = |names: &[String], liked: &HashSet<String>, what: &str| -> f64 {
        let names = set(names);
        if names.is_empty() {
            return 0.0;
        }
        let mut hits: Vec<&String> = names.iter().filter(|n| liked.contains(*n)).collect();
        hits.sort();
        for h in &hits {
            matched.push(format!("{what} {h}"));
        }
        hits.len() as f64 / names.len() as f64
    };
    let genres = share(&t.genres, &p.genres, "genre");
    let directors = share(&t.directors, &p.directors, "director");
    let actors = share(&t.actors, &p.actors, "actor");
    let class = norm(&t.classification);
    let classification = !class.is_empty() && class == p.classification;
    if classification {
        matched.push(format!("rated {class}"));
    }
    let decade = norm(&t.release_decade);
    let in_decade = !decade.is_empty() && p.decades.contains(&decade);
    if in_decade {
        matched.push(format!("from the {decade}"));
    }
    let score = W_GENRES * genres
        + W_DIRECTORS * f64::from(u8::from(directors > 0.0))
        + W_ACTORS * actors
        + W_CLASSIFICATION * f64::from(u8::from(classification))
        + W_DECADE * f64::from(u8::from(in_decade));
    Affinity { score, matched }
}

/// Blends a user's ALS scores with content affinity, in place: the finite
/// scores are min-max scaled to [0, 1], then `(1 - weight) · scaled + weight ·
/// affinity` (an item with no catalog title has affinity 0).
pub fn blend_scores<'a>(
    scores: &mut [f32],
    items: &[String],
    prefs: &Prefs,
    weight: f64,
    title_of: impl Fn(&str) -> Option<&'a Title>,
) {
    let (lo, hi) = scores
        .iter()
        .filter(|s| s.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| {
            (lo.min(s), hi.max(s))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    for (s, item) in scores.iter_mut().zip(items) {
        if !s.is_finite() {
            continue;
        }
        let a = title_of(item).map_or(0.0, |t| affinity(prefs, t).score);
        *s = ((1.0 - weight) * f64::from((*s - lo) / span) + weight * a) as f32;
    }
}

/// What the evaluator needs to score the blend: the weight, the profiles of the
/// users and the titles, as of the training snapshot.
#[derive(Debug, Clone, Default)]
pub struct Blend {
    pub weight: f64,
    pub prefs: HashMap<String, Prefs>,
    pub titles: HashMap<String, Title>,
}

/// A title in the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub kind: &'static str,
    pub title: Title,
}

/// A ranked title for a user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub item: String,
    pub kind: &'static str,
    pub title: String,
    pub score: f64,
    pub reason: String,
}

/// The kinds of title a [`CatalogIndex`] holds.
pub const MOVIE: &str = "movie";
pub const SERIES: &str = "series";

/// Every movie and series, by id (the latest record of each).
#[derive(Debug, Clone, Default)]
pub struct CatalogIndex {
    titles: BTreeMap<String, Entry>,
}

impl CatalogIndex {
    /// A movie or series record; an older record than the one held is ignored.
    pub fn upsert(&mut self, kind: &'static str, t: &Title) {
        match self.titles.get(&t.id) {
            Some(e) if e.title.timestamp_ms > t.timestamp_ms => {}
            _ => {
                self.titles.insert(
                    t.id.clone(),
                    Entry {
                        kind,
                        title: t.clone(),
                    },
                );
            }
        }
    }

    pub fn len(&self) -> usize {
        self.titles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.titles.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.titles.get(id)
    }

    /// Every title (with its kind) by id.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.titles.iter()
    }

    /// The `k` titles with the highest affinity for `profile` (score > 0),
    /// highest first, then by id; `skip` leaves titles out (already seen).
    pub fn rank(
        &self,
        profile: &UserProfile,
        k: usize,
        skip: impl Fn(&str) -> bool,
    ) -> Vec<Ranked> {
        let p = Prefs::of(profile);
        let mut all: Vec<(f64, &String, &Entry, Vec<String>)> = self
            .titles
            .iter()
            .filter(|(id, _)| !skip(id))
            .filter_map(|(id, e)| {
                let a = affinity(&p, &e.title);
                (a.score > 0.0).then_some((a.score, id, e, a.matched))
            })
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        all.into_iter()
            .take(k)
            .map(|(score, id, e, matched)| Ranked {
                item: id.clone(),
                kind: e.kind,
                title: e.title.title.clone(),
                score,
                reason: format!("matches your profile: {}", matched.join(", ")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn title(
        id: &str,
        genre: &str,
        director: &str,
        actors: &[&str],
        class: &str,
        decade: &str,
    ) -> Title {
        Title {
            id: id.into(),
            timestamp_ms: 1,
            title: format!("Title {id}"),
            genres: vec![genre.into()],
            directors: vec![director.into()],
            actors: actors.iter().map(|a| a.to_string()).collect(),
            classification: class.into(),
            release_decade: decade.into(),
            seasons: None,
            episodes: None,
        }
    }

    fn profile() -> UserProfile {
        UserProfile {
            id: "u".into(),
            timestamp_ms: 1,
            name: "n".into(),
            subscription_date: "2024-01-01".into(),
            genres: vec!["Horror".into(), "Drama".into()],
            directors: vec!["D. One".into()],
            actors: vec!["A. Two".into()],
            classification: "R".into(),
            favorite_decades: vec!["1980s".into()],
        }
    }

    #[test]
    fn scores_each_kind_of_match_and_ranks_by_it() {
        let p = Prefs::of(&profile());
        let all = title(
            "m1",
            " horror",
            "d. one",
            &["A. Two", "A. Three"],
            "R",
            "1980s",
        );
        let a = affinity(&p, &all);
        // 0.35·1 + 0.20 + 0.20·½ + 0.10 + 0.15
        assert!((a.score - 0.9).abs() < 1e-12, "{a:?}");
        assert_eq!(
            a.matched,
            vec![
                "genre horror",
                "director d. one",
                "actor a. two",
                "rated r",
                "from the 1980s"
            ]
        );
        assert_eq!(
            affinity(&p, &title("m2", "Comedy", "X", &["Y"], "PG", "2010s")).score,
            0.0
        );

        let mut idx = CatalogIndex::default();
        idx.upsert("movie", &all);
        idx.upsert("movie", &title("m2", "Comedy", "X", &["Y"], "PG", "2010s"));
        idx.upsert("series", &title("s1", "Drama", "X", &["Y"], "PG", "1980s"));
        idx.upsert("movie", &title("m3", "Horror", "X", &["Y"], "PG", "2010s"));
        let r = idx.rank(&profile(), 10, |_| false);
        let got: Vec<(&str, f64)> = r
            .iter()
            .map(|x| (x.item.as_str(), (x.score * 100.0).round() / 100.0))
            .collect();
        assert_eq!(got, vec![("m1", 0.9), ("s1", 0.5), ("m3", 0.35)]);
        assert_eq!(r[1].kind, "series");
        assert!(r[1].reason.contains("genre drama") && r[1].reason.contains("from the 1980s"));
        assert_eq!(idx.rank(&profile(), 10, |id| id == "m1")[0].item, "s1");
        // An older record does not replace a newer one.
        let mut older = title("m1", "Comedy", "X", &["Y"], "PG", "2010s");
        older.timestamp_ms = 0;
        idx.upsert("movie", &older);
        assert_eq!(idx.get("m1").unwrap().title.genres, vec![" horror"]);
    }

    #[test]
    fn blending_scales_als_scores_and_adds_affinity() {
        let p = Prefs::of(&profile());
        let titles: HashMap<String, Title> = [
            (
                "m1".to_string(),
                title("m1", "Horror", "X", &["Y"], "PG", "2010s"),
            ),
            (
                "m2".to_string(),
                title("m2", "Comedy", "X", &["Y"], "PG", "2010s"),
            ),
        ]
        .into_iter()
        .collect();
        let items: Vec<String> = ["m1", "m2", "v9", "v8"].map(String::from).to_vec();
        // ALS prefers m2; scaled: m1 0.5, m2 1, v9 0, v8 skipped (not finite).
        let mut s = vec![2.0, 3.0, 1.0, f32::NEG_INFINITY];
        blend_scores(&mut s, &items, &p, 0.5, |i| titles.get(i));
        let want = [0.5 * 0.5 + 0.5 * 0.35, 0.5, 0.0];
        for (g, w) in s.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{s:?}");
        }
        assert_eq!(s[3], f32::NEG_INFINITY);
        // Weight 1: affinity alone decides (m1 matches the genre, m2 nothing).
        let mut s = vec![2.0, 3.0, 1.0, 0.0];
        blend_scores(&mut s, &items, &p, 1.0, |i| titles.get(i));
        assert!(s[0] > s[1] && s[1] == 0.0);
    }
}
