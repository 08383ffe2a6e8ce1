//! A user's recommendations, as the daemon and the offline `playpulse
//! recommend` both serve them: the champion's list for a user it knows (with
//! content affinity blended in when that ranked better on held-out data), a
//! catalog profile's content affinity for a user it does not, else popularity
//! narrowed by the hints. Every item carries its catalog title when there is one.

use serde::{Deserialize, Serialize};

use super::serve::{Champion, Hints, Recommendation};
use crate::domain::event::UserProfile;
use crate::views::affinity::{CatalogIndex, Prefs, Ranked};

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    pub item: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
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
    fn of(r: Recommendation, titles: &CatalogIndex) -> Listed {
        Listed {
            title: titles.get(&r.item).map(|e| e.title.title.clone()),
            item: r.item,
            kind: None,
            genre: Some(r.genre),
            score: f64::from(r.score),
            because: r.because,
            reason: r.reason,
        }
    }

    fn ranked(r: Ranked) -> Listed {
        Listed {
            item: r.item,
            title: Some(r.title),
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
    /// Whether the model knows the user.
    pub known: bool,
    /// The content-affinity weight blended in (known users with a profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_weight: Option<f64>,
    /// For an unknown user: "profile affinity" or "popularity".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<String>,
    pub recommendations: Vec<Listed>,
}

/// The items most like an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarReply {
    pub model: u64,
    pub item: String,
    pub similar: Vec<Listed>,
}

/// Top `k` for `user` (ids are compared trimmed and lower-cased); `Ok(None)`
/// when there is no champion and no catalog profile to rank by. `profile`
/// reads the user's catalog profile (by the normalised id), only when the list
/// needs it: a user the model knows, when affinity is blended in; a user it
/// does not know.
pub fn recommend<E>(
    champion: Option<&Champion>,
    profile: impl FnOnce(&str) -> Result<Option<UserProfile>, E>,
    titles: &CatalogIndex,
    user: &str,
    k: usize,
    hints: &Hints,
) -> Result<Option<RecommendReply>, E> {
    let user = user.trim().to_lowercase();
    let listed = |recs: Vec<Recommendation>| -> Vec<Listed> {
        recs.into_iter().map(|r| Listed::of(r, titles)).collect()
    };
    if let Some(c) = champion.filter(|c| c.recommender.knows(&user)) {
        let profile = if c.affinity_weight > 0.0 {
            profile(&user)?
        } else {
            None
        };
        let blend = profile.map(|p| {
            let prefs = Prefs::of(&p);
            c.recommender
                .recommend_adjusted(&user, k, &Hints::default(), |scores, items| {
                    crate::views::affinity::blend_scores(
                        scores,
                        items,
                        &prefs,
                        c.affinity_weight,
                        |i| titles.get(i).map(|e| &e.title),
                    )
                })
        });
        let affinity_weight = blend.as_ref().map(|_| c.affinity_weight);
        let recs = blend.unwrap_or_else(|| c.recommender.recommend(&user, k, &Hints::default()));
        return Ok(Some(RecommendReply {
            model: Some(c.id),
            user,
            known: true,
            affinity_weight,
            cold_start: None,
            recommendations: listed(recs),
        }));
    }
    // Not in the model: a catalog profile's content affinity, else popularity.
    if let Some(p) = profile(&user)? {
        let ranked = titles.rank(&p, k, |_| false);
        if !ranked.is_empty() {
            return Ok(Some(RecommendReply {
                model: champion.map(|c| c.id),
                user,
                known: false,
                affinity_weight: None,
                cold_start: Some("profile affinity".into()),
                recommendations: ranked.into_iter().map(Listed::ranked).collect(),
            }));
        }
    }
    let Some(c) = champion else {
        return Ok(None);
    };
    let recs = c.recommender.recommend(&user, k, hints);
    Ok(Some(RecommendReply {
        model: Some(c.id),
        user,
        known: false,
        affinity_weight: None,
        cold_start: Some("popularity".into()),
        recommendations: listed(recs),
    }))
}

/// The `k` items most like `item` (`None`: the model does not have it).
pub fn similar(
    champion: &Champion,
    titles: &CatalogIndex,
    item: &str,
    k: usize,
) -> Option<SimilarReply> {
    let item = item.trim().to_lowercase();
    let similar = champion.recommender.similar(&item, k)?;
    Some(SimilarReply {
        model: champion.id,
        similar: similar.into_iter().map(|r| Listed::of(r, titles)).collect(),
        item,
    })
}
