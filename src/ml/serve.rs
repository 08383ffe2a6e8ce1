//! Serving recommendations from a trained model: top-N for a user excluding what
//! they have seen, similar items by factor cosine, a cold start for unknown users
//! (popular in their genre, else globally), and an explanation ("because you
//! watched X": the seen item most similar to the recommendation).

use std::collections::HashMap;

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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub item: String,
    pub score: f32,
    pub genre: String,
    /// The seen item most like this one, when the user is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
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

    fn rec(&self, i: u32, score: f32, because: Option<String>) -> Recommendation {
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
        }
    }

    /// Top `k` for `user`; unknown users get the cold start (`genre` narrows it).
    pub fn recommend(&self, user: &str, k: usize, genre: Option<&str>) -> Vec<Recommendation> {
        let Some(&u) = self.user_index.get(user) else {
            return self.popular(k, genre);
        };
        let mut scores = Vec::with_capacity(self.b.model.items);
        self.b.model.scores_into(u as usize, &mut scores);
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
                self.rec(i, scores[i as usize], because)
            })
            .collect()
    }

    /// Most popular items (in `genre` when given and known, else overall).
    pub fn popular(&self, k: usize, genre: Option<&str>) -> Vec<Recommendation> {
        let pop: Vec<f32> = self.b.popularity.iter().map(|&p| p as f32).collect();
        let in_genre =
            |i: usize| genre.is_none_or(|g| self.b.item_genre.get(i).is_some_and(|x| x == g));
        let mut top = top_k(&pop, in_genre, k);
        if top.is_empty() {
            top = top_k(&pop, |_| true, k);
        }
        top.into_iter()
            .map(|i| self.rec(i, pop[i as usize], None))
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
                .map(|j| self.rec(j, scores[j as usize], None))
                .collect(),
        )
    }
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
        }
    }

    #[test]
    fn recommends_unseen_items_of_the_users_taste_with_a_reason() {
        let r = Recommender::new(bundle());
        let got = r.recommend("u0", 2, None);
        assert_eq!(
            got.iter().map(|x| x.item.as_str()).collect::<Vec<_>>(),
            vec!["v1", "v2"]
        );
        assert!(got
            .iter()
            .all(|x| x.genre == "Drama" && x.because.as_deref() == Some("v0")));
        let got = r.recommend("u2", 3, None);
        assert_eq!(got[0].item, "v4");
        assert!(got.iter().all(|x| x.item != "v3"));
    }

    #[test]
    fn cold_start_serves_the_popular_in_genre_then_overall() {
        let r = Recommender::new(bundle());
        let items = |v: Vec<Recommendation>| v.into_iter().map(|x| x.item).collect::<Vec<_>>();
        assert_eq!(items(r.recommend("nobody", 2, None)), vec!["v4", "v0"]);
        assert_eq!(
            items(r.recommend("nobody", 2, Some("Drama"))),
            vec!["v0", "v1"]
        );
        assert_eq!(items(r.recommend("nobody", 1, Some("Western"))), vec!["v4"]);
    }

    #[test]
    fn similar_items_by_cosine() {
        let r = Recommender::new(bundle());
        let s = r.similar("v3", 2).unwrap();
        assert_eq!(s[0].item, "v5");
        assert!(r.similar("zzz", 2).is_none());
    }
}
