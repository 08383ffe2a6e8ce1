//! Serving recommendations from a trained model: top-N for a user excluding what
//! they have seen, similar items by factor cosine, a cold start for unknown users
//! (popular in their region and genre, else in their region, else in their genre,
//! else overall), and an explanation ("because you watched X": the seen item most
//! similar to the recommendation). [`Serving`] is the champion every reader shares.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::als::AlsModel;
use super::metrics::top_k;
use super::sparse::Csr;

/// Everything needed to serve: factors, id dictionaries, what each user has seen,
/// item genres and popularity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    pub model: AlsModel,
    pub users: Vec<String>,
    pub items: Vec<String>,
    /// users × items: every pair seen (train and held out).
    pub seen: Csr,
    pub item_genre: Vec<String>,
    /// Distinct users per item.
    pub popularity: Vec<u32>,
    /// Region → (item, events there), sorted by item.
    pub region_popularity: HashMap<String, Vec<(u32, u32)>>,
}

/// What is known of a user the model has never seen, for the cold start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints {
    pub region: Option<String>,
    pub genre: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub item: String,
    pub score: f32,
    pub genre: String,
    /// The seen item most like this one, when the user is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
    /// Why, in words: "because you watched X", "popular in region R", ...
    pub reason: String,
}

pub struct Recommender {
    b: Bundle,
    user_index: HashMap<String, u32>,
    item_index: HashMap<String, u32>,
    norms: Vec<f32>,
}

fn cosine(a: &[f32], b: &[f32], na: f32, nb: f32) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    if na > 0.0 && nb > 0.0 {
        d / (na * nb)
    } else {
        0.0
    }
}

impl Recommender {
    pub fn new(b: Bundle) -> Recommender {
        let user_index = b
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), i as u32))
            .collect();
        let item_index = b
            .items
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), i as u32))
            .collect();
        let norms = (0..b.model.items)
            .map(|i| b.model.item(i).iter().map(|x| x * x).sum::<f32>().sqrt())
            .collect();
        Recommender {
            b,
            user_index,
            item_index,
            norms,
        }
    }

    pub fn bundle(&self) -> &Bundle {
        &self.b
    }

    fn rec(&self, i: u32, score: f32, because: Option<String>, reason: String) -> Recommendation {
        Recommendation {
            item: self.b.items[i as usize].clone(),
            score,
            genre: self
                .b
                .item_genre
                .get(i as usize)
                .cloned()
                .unwrap_or_default(),
            because,
            reason,
        }
    }

    /// Whether the model knows `user` (else [`Recommender::recommend`] is a cold start).
    pub fn knows(&self, user: &str) -> bool {
        self.user_index.contains_key(user)
    }

    /// Top `k` for `user`; unknown users get the cold start narrowed by `hints`.
    pub fn recommend(&self, user: &str, k: usize, hints: &Hints) -> Vec<Recommendation> {
        self.recommend_adjusted(user, k, hints, |_, _| {})
    }

    /// As [`Recommender::recommend`], with the known user's ALS scores (one per
    /// item, in the bundle's item order) adjusted before ranking (a blend).
    pub fn recommend_adjusted(
        &self,
        user: &str,
        k: usize,
        hints: &Hints,
        adjust: impl FnOnce(&mut [f32], &[String]),
    ) -> Vec<Recommendation> {
        let Some(&u) = self.user_index.get(user) else {
            return self.popular(k, hints);
        };
        let mut scores = Vec::with_capacity(self.b.model.items);
        self.b.model.scores_into(u as usize, &mut scores);
        adjust(&mut scores, &self.b.items);
        let seen = self.b.seen.row(u as usize).0;
        top_k(&scores, |i| seen.binary_search(&(i as u32)).is_err(), k)
            .into_iter()
            .map(|i| {
                let yi = self.b.model.item(i as usize);
                let because = seen
                    .iter()
                    .map(|&s| {
                        (
                            s,
                            cosine(
                                yi,
                                self.b.model.item(s as usize),
                                self.norms[i as usize],
                                self.norms[s as usize],
                            ),
                        )
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(s, _)| self.b.items[s as usize].clone());
                let reason = match &because {
                    Some(b) => format!("because you watched {b}"),
                    None => "from your taste".to_string(),
                };
                self.rec(i, scores[i as usize], because, reason)
            })
            .collect()
    }

    /// Most popular items: in the hinted region and genre, else the region, else
    /// the genre, else overall (the first of these that has any item).
    pub fn popular(&self, k: usize, hints: &Hints) -> Vec<Recommendation> {
        let genre = hints.genre.as_deref();
        let of_genre =
            |i: usize| genre.is_none_or(|g| self.b.item_genre.get(i).is_some_and(|x| x == g));
        if let Some((region, list)) = hints
            .region
            .as_deref()
            .and_then(|r| self.b.region_popularity.get_key_value(r))
        {
            let mut pop = vec![f32::NEG_INFINITY; self.b.items.len()];
            for &(i, n) in list {
                if let Some(p) = pop.get_mut(i as usize) {
                    *p = n as f32;
                }
            }
            for (with_genre, label) in [(true, "and genre"), (false, "")] {
                if with_genre && genre.is_none() {
                    continue;
                }
                let top = top_k(&pop, |i| !with_genre || of_genre(i), k);
                if !top.is_empty() {
                    let reason = match (with_genre, genre) {
                        (true, Some(g)) => format!("popular in region {region} {label} {g}"),
                        _ => format!("popular in region {region}"),
                    };
                    return top
                        .into_iter()
                        .map(|i| self.rec(i, pop[i as usize], None, reason.clone()))
                        .collect();
                }
            }
        }
        let pop: Vec<f32> = self.b.popularity.iter().map(|&p| p as f32).collect();
        let mut top = top_k(&pop, of_genre, k);
        let mut reason = match genre {
            Some(g) => format!("popular in genre {g}"),
            None => "popular overall".to_string(),
        };
        if top.is_empty() {
            top = top_k(&pop, |_| true, k);
            reason = "popular overall".to_string();
        }
        if let Some(r) = &hints.region {
            reason = format!("{reason} (nothing seen in region {r})");
        }
        top.into_iter()
            .map(|i| self.rec(i, pop[i as usize], None, reason.clone()))
            .collect()
    }

    /// Items most like `item` by factor cosine.
    pub fn similar(&self, item: &str, k: usize) -> Option<Vec<Recommendation>> {
        let &i = self.item_index.get(item)?;
        let yi = self.b.model.item(i as usize);
        let scores: Vec<f32> = (0..self.b.model.items)
            .map(|j| {
                cosine(
                    yi,
                    self.b.model.item(j),
                    self.norms[i as usize],
                    self.norms[j],
                )
            })
            .collect();
        Some(
            top_k(&scores, |j| j != i as usize, k)
                .into_iter()
                .map(|j| self.rec(j, scores[j as usize], None, format!("similar to {item}")))
                .collect(),
        )
    }
}

/// The serving champion, shared by the evaluator (which replaces it) and every
/// reader (admin socket, HTTP): readers never wait on training.
#[derive(Clone, Default)]
pub struct Serving(Arc<RwLock<Option<Arc<Champion>>>>);

pub struct Champion {
    pub id: u64,
    pub recommender: Recommender,
    /// Content affinity blended into the scores of users with a profile (0: none;
    /// set when the blend ranked better on the held-out data).
    pub affinity_weight: f64,
}

impl Serving {
    pub fn get(&self) -> Option<Arc<Champion>> {
        self.0.read().ok().and_then(|c| c.clone())
    }

    pub fn set(&self, id: u64, bundle: Bundle, affinity_weight: f64) {
        let c = Arc::new(Champion {
            id,
            recommender: Recommender::new(bundle),
            affinity_weight,
        });
        if let Ok(mut w) = self.0.write() {
            *w = Some(c);
        }
    }
}

/// The content-affinity weight a model version serves with (recorded by the
/// evaluator; 0 when the blend did not rank better).
pub fn serving_affinity_weight(meta: &super::ModelVersion) -> f64 {
    meta.recommender()
        .map_or(0.0, |r| r.metrics.serving_affinity_weight)
}

/// The champion's serving bundle and affinity weight, from the store.
pub fn load_serving(
    store: &crate::store::StoreView,
) -> Result<Option<(u64, Bundle, f64)>, super::TrainError> {
    let weight = super::version::champion(store)?.map_or(0.0, |m| serving_affinity_weight(&m));
    Ok(load_champion(store)?.map(|(id, b)| (id, b, weight)))
}

/// Loads the champion's serving bundle from the store.
pub fn load_champion(
    store: &crate::store::StoreView,
) -> Result<Option<(u64, Bundle)>, super::TrainError> {
    use super::TrainError;
    let Some(id) = store.champion_id()? else {
        return Ok(None);
    };
    let bytes = store
        .model_bundle(id)?
        .ok_or_else(|| TrainError::Decode(format!("model {id} has no bundle")))?;
    let bundle: Bundle = postcard::from_bytes(&bytes).map_err(|e| {
        TrainError::Decode(format!("model {id}: unreadable bundle ({e}); it was stored by an older version: train a new one"))
    })?;
    Ok(Some((id, bundle)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Bundle {
        // Two blocks: users 0,1 like items 0,1,2; users 2,3 like items 3,4,5.
        let f = 2;
        let user_factors = vec![1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9];
        let item_factors = vec![1.0, 0.0, 0.8, 0.1, 0.7, 0.0, 0.0, 1.0, 0.1, 0.8, 0.0, 0.6];
        let seen = Csr::from_triplets(4, 6, &[(0, 0, 1.0), (1, 1, 1.0), (2, 3, 1.0), (3, 4, 1.0)]);
        Bundle {
            model: AlsModel {
                factors: f,
                users: 4,
                items: 6,
                user_factors,
                item_factors,
            },
            users: (0..4).map(|u| format!("u{u}")).collect(),
            items: (0..6).map(|i| format!("v{i}")).collect(),
            seen,
            item_genre: ["Drama", "Drama", "Drama", "Comedy", "Comedy", "Comedy"]
                .map(String::from)
                .to_vec(),
            popularity: vec![5, 1, 1, 2, 9, 3],
            region_popularity: [
                ("eu".to_string(), vec![(1, 7), (2, 1), (3, 4)]),
                ("us".to_string(), vec![(5, 2)]),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn recommends_unseen_items_of_the_users_taste_with_a_reason() {
        let r = Recommender::new(bundle());
        let got = r.recommend("u0", 2, &Hints::default());
        assert_eq!(
            got.iter().map(|x| x.item.as_str()).collect::<Vec<_>>(),
            vec!["v1", "v2"]
        );
        assert!(got
            .iter()
            .all(|x| x.genre == "Drama" && x.because.as_deref() == Some("v0")));
        assert_eq!(got[0].reason, "because you watched v0");
        let got = r.recommend("u2", 3, &Hints::default());
        assert_eq!(got[0].item, "v4");
        assert!(got.iter().all(|x| x.item != "v3"));
    }

    #[test]
    fn cold_start_serves_the_popular_in_region_and_genre_then_wider() {
        let r = Recommender::new(bundle());
        let hints = |region: Option<&str>, genre: Option<&str>| Hints {
            region: region.map(String::from),
            genre: genre.map(String::from),
        };
        let items = |v: Vec<Recommendation>| v.into_iter().map(|x| x.item).collect::<Vec<_>>();
        assert!(!r.knows("nobody") && r.knows("u0"));
        assert_eq!(
            items(r.recommend("nobody", 2, &Hints::default())),
            vec!["v4", "v0"]
        );
        assert_eq!(
            items(r.recommend("nobody", 2, &hints(None, Some("Drama")))),
            vec!["v0", "v1"]
        );
        assert_eq!(
            items(r.recommend("nobody", 1, &hints(None, Some("Western")))),
            vec!["v4"]
        );
        // By region: what is watched there, not overall.
        let eu = r.recommend("nobody", 2, &hints(Some("eu"), None));
        assert_eq!(items(eu.clone()), vec!["v1", "v3"]);
        assert_eq!(eu[0].reason, "popular in region eu");
        assert_eq!(
            items(r.recommend("nobody", 3, &hints(Some("eu"), Some("Comedy")))),
            vec!["v3"]
        );
        // Nothing of that genre in the region: the region's popular items.
        assert_eq!(
            items(r.recommend("nobody", 1, &hints(Some("us"), Some("Drama")))),
            vec!["v5"]
        );
        // An unknown region: the genre, then overall.
        assert_eq!(
            items(r.recommend("nobody", 1, &hints(Some("mars"), Some("Drama")))),
            vec!["v0"]
        );
    }

    #[test]
    fn similar_items_by_cosine() {
        let r = Recommender::new(bundle());
        let s = r.similar("v3", 2).unwrap();
        assert_eq!(s[0].item, "v5");
        assert!(r.similar("zzz", 2).is_none());
    }
}
