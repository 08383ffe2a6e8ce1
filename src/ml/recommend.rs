//! A user's recommendations, as the daemon and the offline `playpulse
//! recommend` both serve them: the champion's list for a user it knows (with
//! content affinity blended in when that ranked better on held-out data), a
//! catalog profile's content affinity for a user it does not, else what trends
//! now (time-decayed popularity, see [`crate::views::trending`]) narrowed by
//! the hints, else the model's popularity. Every item carries its catalog
//! title when there is one.

use serde::{Deserialize, Serialize};

use super::item_fold::FoldedItems;
use super::live::LiveUser;
use super::recent::merge_sorted;
use super::serve::{Champion, Hints, Recommendation, Taste};
use crate::domain::event::{Domain, UserProfile};
use crate::views::affinity::{Prefs, Ranked};
use crate::views::indexes::{Catalog, Lookup};

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    pub item: String,
    pub domain: Domain,
    /// The catalog title (movies and series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The track's artist and album (tracks with a catalog record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// movie or series (content affinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    pub score: f64,
    /// The seen item most like this one, when the user is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
    /// Why, in words.
    pub reason: String,
}

impl Listed {
    fn of(r: Recommendation, catalog: &Catalog) -> Listed {
        let (artist, album) = match r.domain {
            Domain::Music => catalog
                .track_artist(&r.item)
                .map_or((None, None), |(a, al)| {
                    (Some(a.to_string()), Some(al.to_string()))
                }),
            Domain::Video => (None, None),
        };
        let title = match r.domain {
            Domain::Video => catalog.titles.get(&r.item).map(|e| e.title.title.clone()),
            Domain::Music => catalog.track_title(&r.item).map(str::to_string),
        };
        Listed {
            title,
            artist,
            album,
            item: r.item,
            domain: r.domain,
            kind: None,
            genre: Some(r.genre).filter(|g| !g.is_empty()),
            score: f64::from(r.score),
            because: r.because,
            reason: r.reason,
        }
    }

    fn ranked(r: Ranked) -> Listed {
        Listed {
            item: r.item,
            domain: Domain::Video,
            title: Some(r.title),
            artist: None,
            album: None,
            kind: Some(r.kind.to_string()),
            genre: None,
            score: r.score,
            because: None,
            reason: r.reason,
        }
    }
}

/// A user's list and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendReply {
    /// The champion's version (none before the first model).
    pub model: Option<u64>,
    pub user: String,
    /// The list's domain: asked for, else where most of what the user has seen is.
    pub domain: Domain,
    /// Whether the model knows the user (trained on them, or folded them in).
    pub known: bool,
    /// The family that ranked a known user's list (als, ease, knn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<super::family::Family>,
    /// When the user's events since the model's training were folded in (ms
    /// since the epoch); none when the list is the trained model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded_at_ms: Option<i64>,
    /// Items the user watched since that fold-in (or since the training),
    /// left out of the list ahead of their next fold-in.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seen_since_fold: usize,
    /// The content-affinity weight blended in (known users with a profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_weight: Option<f64>,
    /// The ranking stage's weight, when it reordered the list (video lists
    /// of a version that serves with one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank_weight: Option<f64>,
    /// For an unknown user: "profile affinity" or "popularity".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<String>,
    pub recommendations: Vec<Listed>,
}

/// The items most like an item (of its domain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarReply {
    pub model: u64,
    pub item: String,
    pub domain: Domain,
    pub similar: Vec<Listed>,
}

/// What a list is asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ask {
    pub user: String,
    pub k: usize,
    /// `None`: the domain most of what the user has seen is in (video for a
    /// user with nothing seen).
    pub domain: Option<Domain>,
    pub hints: Hints,
}

/// Top `k` for `user` (ids are compared trimmed and lower-cased); without a
/// champion, a catalog profile's content affinity, else what trends now;
/// `Ok(None)` when there is no champion and nothing to rank by. `live`: the
/// user as the fold-in has them against this champion (their events since
/// its training), which takes the place of their trained row, and the items
/// they watched since (left out of every list); `items`: the
/// items folded in against it since (ranked beside its own). `profile`
/// reads the user's catalog profile (by the normalised id), only when the list
/// needs it: a user the model knows, when affinity is blended in; a user it
/// does not know.
/// Most of a user's history a trending list is lengthened by to leave it out.
const MAX_HISTORY_SKIPPED: usize = 1000;

pub fn recommend<E>(
    champion: Option<&Champion>,
    live: &LiveUser,
    items: Option<&FoldedItems>,
    profile: impl FnOnce(&str) -> Result<Option<UserProfile>, E>,
    ix: &Lookup<'_>,
    ask: &Ask,
) -> Result<Option<RecommendReply>, E> {
    let user = ask.user.trim().to_lowercase();
    let k = ask.k;
    let listed = |recs: Vec<Recommendation>| -> Vec<Listed> {
        recs.into_iter()
            .map(|r| Listed::of(r, ix.catalog))
            .collect()
    };
    let folded = live.folded.as_deref();
    let taste = champion.and_then(|c| match (folded, c.recommender.user_row(&user)) {
        (Some(f), row) => Some((
            c,
            Taste::Folded {
                factors: &f.factors,
                seen: &f.seen,
                weights: &f.weights,
                user: row,
            },
        )),
        (None, Some(u)) => Some((c, Taste::Trained(u))),
        (None, None) => None,
    });
    // What they watched since their fold-in (or training) counts as seen.
    // (Weighing 1 each: an item × item champion scores from the weights.)
    let (merged, merged_weights);
    let taste = match taste {
        Some((c, taste)) if !live.recent.is_empty() => {
            let (factors, seen, weights) = match taste {
                Taste::Trained(u) => (
                    c.recommender.bundle().model.user(u as usize),
                    c.recommender.seen_of(u),
                    c.recommender.seen_weights_of(u),
                ),
                Taste::Folded {
                    factors,
                    seen,
                    weights,
                    ..
                } => (factors, seen, weights),
            };
            merged = merge_sorted(seen, &live.recent);
            merged_weights = merged
                .iter()
                .map(|i| match seen.binary_search(i) {
                    Ok(at) => weights.get(at).copied().unwrap_or(1.0),
                    Err(_) => 1.0,
                })
                .collect::<Vec<f32>>();
            Some((
                c,
                Taste::Folded {
                    factors,
                    seen: &merged,
                    weights: &merged_weights,
                    user: taste.user(),
                },
            ))
        }
        other => other,
    };
    if let Some((c, taste)) = taste {
        let seen = match taste {
            Taste::Trained(u) => c.recommender.seen_of(u),
            Taste::Folded { seen, .. } => seen,
        };
        let domain = ask
            .domain
            .unwrap_or_else(|| c.recommender.main_domain(seen));
        let profile = if c.affinity_weight > 0.0 && domain == Domain::Video {
            profile(&user)?
        } else {
            None
        };
        let affinity_weight = profile.as_ref().map(|_| c.affinity_weight);
        let recs = match profile {
            Some(p) => {
                let prefs = Prefs::of(&p);
                c.recommender
                    .recommend_taste(taste, k, domain, items, |scores, names| {
                        crate::views::affinity::blend_scores(
                            scores,
                            names,
                            &prefs,
                            c.affinity_weight,
                            |i| ix.catalog.titles.get(i).map(|e| &e.title),
                        )
                    })
            }
            None => c
                .recommender
                .recommend_taste(taste, k, domain, items, |_, _| {}),
        };
        let rerank_weight = c.recommender.reranker(domain).map(|r| r.weight);
        return Ok(Some(RecommendReply {
            model: Some(c.id),
            user,
            domain,
            known: true,
            family: Some(c.recommender.family()),
            folded_at_ms: folded.map(|f| f.at_ms),
            seen_since_fold: live.recent.len(),
            affinity_weight,
            rerank_weight,
            cold_start: None,
            recommendations: listed(recs),
        }));
    }
    let domain = ask.domain.unwrap_or_default();
    // What a user the model does not know watched since it began serving is
    // left out of a cold start's list too.
    let watched: Vec<&str> = champion.map_or_else(Vec::new, |c| {
        live.recent
            .iter()
            .filter_map(|&row| c.recommender.row_name(row as usize, items))
            .collect()
    });
    let unseen = |l: &Vec<Listed>| -> Vec<Listed> {
        l.iter()
            .filter(|x| !watched.contains(&x.item.as_str()))
            .take(k)
            .cloned()
            .collect()
    };
    // Not in the model: a catalog profile's content affinity (videos), else popularity.
    if domain == Domain::Video {
        if let Some(p) = profile(&user)? {
            let ranked = ix.catalog.titles.rank(&p, k, |i| watched.contains(&i));
            if !ranked.is_empty() {
                return Ok(Some(RecommendReply {
                    model: champion.map(|c| c.id),
                    user,
                    domain,
                    known: false,
                    family: None,
                    folded_at_ms: None,
                    seen_since_fold: watched.len(),
                    affinity_weight: None,
                    rerank_weight: None,
                    cold_start: Some("profile affinity".into()),
                    recommendations: ranked.into_iter().map(Listed::ranked).collect(),
                }));
            }
        }
    }
    let now = crate::domain::timefmt::now_ms();
    let Some(c) = champion else {
        // No model serves (none trained yet, or none has beaten popularity on
        // held-out data): what trends now, less what the user already has.
        let had: std::collections::HashSet<&str> =
            live.history.iter().map(String::as_str).collect();
        let more = k.saturating_add(had.len().min(MAX_HISTORY_SKIPPED));
        return Ok(
            trending(ix, None, domain, &ask.hints, more, now).map(|list| RecommendReply {
                model: None,
                user,
                domain,
                known: false,
                family: None,
                folded_at_ms: None,
                seen_since_fold: 0,
                affinity_weight: None,
                rerank_weight: None,
                cold_start: Some("trending".into()),
                recommendations: list
                    .into_iter()
                    .filter(|x| !had.contains(x.item.as_str()))
                    .take(k)
                    .collect(),
            }),
        );
    };
    let more = k + watched.len();
    let (cold_start, recommendations) = match trending(ix, Some(c), domain, &ask.hints, more, now) {
        Some(list) => ("trending", unseen(&list)),
        None => (
            "popularity",
            unseen(&listed(c.recommender.popular(more, domain, &ask.hints))),
        ),
    };
    Ok(Some(RecommendReply {
        model: Some(c.id),
        user,
        domain,
        known: false,
        family: None,
        folded_at_ms: None,
        seen_since_fold: watched.len(),
        affinity_weight: None,
        rerank_weight: None,
        cold_start: Some(cold_start.into()),
        recommendations,
    }))
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `trending`: what trends now (exactly the scope asked, not widened).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendingReply {
    pub domain: Domain,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    /// Minutes after which an event counts half.
    pub half_life_minutes: f64,
    /// Best first; `score` is the time-decayed event count.
    pub items: Vec<Listed>,
}

/// What trends now in exactly the scope asked.
pub fn trending_now(
    ix: &Lookup<'_>,
    champion: Option<&Champion>,
    domain: Domain,
    region: Option<String>,
    genre: Option<String>,
    k: usize,
    half_life_minutes: f64,
) -> TrendingReply {
    let now = crate::domain::timefmt::now_ms();
    let top = ix
        .trending
        .top(domain, region.as_deref(), genre.as_deref(), k, now);
    let reason = trending_reason(region.as_deref(), genre.as_deref());
    let items = listed_trending(ix, champion, domain, genre.as_deref(), top, &reason);
    TrendingReply {
        domain,
        region,
        genre,
        half_life_minutes,
        items,
    }
}

/// Why an item of what trends in this scope is listed, in words.
fn trending_reason(region: Option<&str>, genre: Option<&str>) -> String {
    match (region, genre) {
        (Some(r), Some(g)) => format!("trending in region {r} and genre {g}"),
        (Some(r), None) => format!("trending in region {r}"),
        (None, Some(g)) => format!("trending in genre {g}"),
        (None, None) => "trending now".to_string(),
    }
}

/// Trending items as listed items, with their genre and titles.
fn listed_trending(
    ix: &Lookup<'_>,
    champion: Option<&Champion>,
    domain: Domain,
    genre: Option<&str>,
    top: Vec<crate::views::trending::TrendingItem>,
    reason: &str,
) -> Vec<Listed> {
    let genre_of = |item: &str| -> String {
        let known = champion.and_then(|c| c.recommender.item_genre(item));
        match (known, domain) {
            (Some(g), _) => g.to_string(),
            (None, Domain::Music) => ix.catalog.track_genre(item).unwrap_or_default().to_string(),
            (None, Domain::Video) => ix
                .catalog
                .titles
                .get(item)
                .and_then(|e| e.title.genres.first().cloned())
                .or_else(|| genre.map(str::to_string))
                .unwrap_or_default(),
        }
    };
    top.into_iter()
        .map(|it| {
            let r = Recommendation {
                genre: genre_of(&it.item),
                item: it.item,
                score: it.score as f32,
                domain,
                because: None,
                reason: reason.to_string(),
            };
            Listed::of(r, ix.catalog)
        })
        .collect()
}

/// What trends now in `domain`: in the hinted region and genre, else the
/// region, else the genre, else overall (the first of these with any item);
/// `None` when nothing does.
pub fn trending(
    ix: &Lookup<'_>,
    champion: Option<&Champion>,
    domain: Domain,
    hints: &Hints,
    k: usize,
    now_ms: i64,
) -> Option<Vec<Listed>> {
    let t = ix.trending;
    let (region, genre) = (hints.region.as_deref(), hints.genre.as_deref());
    let mut tries = Vec::with_capacity(4);
    if region.is_some() && genre.is_some() {
        tries.push((region, genre));
    }
    if region.is_some() {
        tries.push((region, None));
    }
    if genre.is_some() {
        tries.push((None, genre));
    }
    tries.push((None, None));
    let (scope, top) = tries
        .into_iter()
        .map(|(r, g)| ((r, g), t.top(domain, r, g, k, now_ms)))
        .find(|(_, top)| !top.is_empty())?;
    let reason = trending_reason(scope.0, scope.1);
    Some(listed_trending(ix, champion, domain, scope.1, top, &reason))
}

/// The `k` items most like `item` (`None`: the model does not have it).
pub fn similar(
    champion: &Champion,
    catalog: &Catalog,
    item: &str,
    k: usize,
) -> Option<SimilarReply> {
    let item = item.trim().to_lowercase();
    let row = champion.recommender.item_row(&item)?;
    let similar = champion.recommender.similar(&item, k)?;
    Some(SimilarReply {
        model: champion.id,
        domain: champion.recommender.domain_of(row),
        similar: similar
            .into_iter()
            .map(|r| Listed::of(r, catalog))
            .collect(),
        item,
    })
}
