//! Serving recommendations from a trained model: top-N for a user excluding what
//! they have seen, similar items by factor cosine, a cold start for unknown users
//! (popular in their region and genre, else in their region, else in their genre,
//! else overall), and an explanation ("because you watched X": the seen item most
//! similar to the recommendation). [`Serving`] is the champion every reader shares.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::als::{dot, AlsModel, AlsParams};
use super::item_fold::FoldedItems;
use super::item_model::ItemModel;
use super::metrics::top_k;
use super::sparse::Csr;
use crate::domain::event::Domain;

/// Everything needed to serve: factors, id dictionaries, what each user has seen,
/// item genres, domains and popularity.
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
    /// Each item's domain (video or music): lists never mix them.
    pub item_domain: Vec<Domain>,
    /// The ranking stage video lists are reordered by (none: the recommender
    /// alone ranked better on the held-out data, or it was not fitted).
    pub rerank: Option<super::rerank::Reranker>,
    /// The item × item family that ranks in ALS's place (it won the search
    /// and ranked the held-out data); none: ALS ranks. `model` is kept either
    /// way: the fold-in, warm starts and items new since use its factors.
    pub item_model: Option<ItemModel>,
}

/// Why a stored bundle does not decode.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Layout(#[from] postcard::Error),
    #[error("its item domains do not match its items")]
    Domains,
    #[error("its item model does not match its items")]
    ItemModel,
    #[error("bytes are left past every known layout")]
    Trailing,
}

impl Bundle {
    /// Decodes a stored bundle. Each older layout is a prefix of this one
    /// (fields were only ever added at the end, each absent one empty): a
    /// bundle stored before the item × item model, before the ranking stage,
    /// or before items carried their domain (it takes the domain from
    /// `is_track`: an item with a track catalog record is music). A layout
    /// counts only when it is the whole value, so a newer bundle damaged in a
    /// later field is an error, not an older bundle.
    /// Whether `bytes` are a serving bundle this build reads (the layouts it
    /// writes: a bundle from another member of the group).
    pub fn check(bytes: &[u8]) -> Result<(), BundleError> {
        Bundle::decode(bytes, |_| false).map(|_| ())
    }

    fn decode(bytes: &[u8], is_track: impl Fn(&str) -> bool) -> Result<Bundle, BundleError> {
        // The absent fields' empty encodings: no item model; no ranking
        // stage; no domains (an empty list).
        const ABSENT: [&[u8]; 4] = [&[], &[0], &[0, 0], &[0, 0, 0]];
        let mut first = None;
        let mut padded = Vec::new();
        for (n, tail) in ABSENT.iter().enumerate() {
            padded.clear();
            padded.extend_from_slice(bytes);
            padded.extend_from_slice(tail);
            match postcard::take_from_bytes::<Bundle>(&padded) {
                Ok((mut b, [])) => {
                    let without_domains = n == ABSENT.len() - 1;
                    if without_domains {
                        b.item_domain = b
                            .items
                            .iter()
                            .map(|i| {
                                if is_track(i) {
                                    Domain::Music
                                } else {
                                    Domain::Video
                                }
                            })
                            .collect();
                    }
                    if b.item_domain.len() != b.items.len() {
                        return Err(BundleError::Domains);
                    }
                    if b.item_model
                        .as_ref()
                        .is_some_and(|m| !m.fits(b.items.len()))
                    {
                        return Err(BundleError::ItemModel);
                    }
                    return Ok(b);
                }
                Ok(_) => {}
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.map_or(BundleError::Trailing, BundleError::Layout))
    }
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
    pub domain: Domain,
    /// The seen item most like this one, when the user is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
    /// Why, in words: "because you watched X", "popular in region R", ...
    pub reason: String,
}

/// Whose taste a list follows: a user as the model was trained, or as their
/// events since have folded them in (factors and what they have seen, in the
/// bundle's item order, with its implicit-feedback weights, empty: 1 each;
/// `user`: their row in the bundle, if it has them).
#[derive(Debug, Clone, Copy)]
pub enum Taste<'a> {
    Trained(u32),
    Folded {
        factors: &'a [f32],
        seen: &'a [u32],
        weights: &'a [f32],
        user: Option<u32>,
    },
}

impl Taste<'_> {
    /// The user's row in the bundle, if it has them.
    pub fn user(&self) -> Option<u32> {
        match *self {
            Taste::Trained(u) => Some(u),
            Taste::Folded { user, .. } => user,
        }
    }
}

pub struct Recommender {
    b: Bundle,
    user_index: HashMap<String, u32>,
    item_index: HashMap<String, u32>,
    norms: Vec<f32>,
}

fn cosine(a: &[f32], b: &[f32], na: f32, nb: f32) -> f32 {
    let d = dot(a, b);
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

    /// An item's genre as the model knows it.
    pub fn item_genre(&self, item: &str) -> Option<&str> {
        let i = *self.item_index.get(item)?;
        self.b.item_genre.get(i as usize).map(String::as_str)
    }

    /// The model's row of an item.
    pub fn item_row(&self, item: &str) -> Option<u32> {
        self.item_index.get(item).copied()
    }

    /// The model's row of a user.
    pub fn user_row(&self, user: &str) -> Option<u32> {
        self.user_index.get(user).copied()
    }

    pub fn domain_of(&self, i: u32) -> Domain {
        self.b
            .item_domain
            .get(i as usize)
            .copied()
            .unwrap_or_default()
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
            domain: self.domain_of(i),
            because,
            reason,
        }
    }

    /// Whether the model knows `user` (else [`Recommender::recommend`] is a cold start).
    pub fn knows(&self, user: &str) -> bool {
        self.user_index.contains_key(user)
    }

    /// The domain most of what a user has seen is in (video when even or none).
    pub fn main_domain(&self, seen: &[u32]) -> Domain {
        let music = seen
            .iter()
            .filter(|&&i| self.domain_of(i) == Domain::Music)
            .count();
        if music * 2 > seen.len() {
            Domain::Music
        } else {
            Domain::Video
        }
    }

    /// The ranking stage lists of `domain` are reordered by (video lists of a
    /// version that serves with one).
    pub fn reranker(&self, domain: Domain) -> Option<&super::rerank::Reranker> {
        self.b.rerank.as_ref().filter(|_| domain == Domain::Video)
    }

    /// What a trained user has seen, in item order.
    pub fn seen_of(&self, u: u32) -> &[u32] {
        self.b.seen.row(u as usize).0
    }

    /// The implicit-feedback weights of what a trained user has seen (as
    /// [`Recommender::seen_of`]; 1 each in a bundle stored before they were kept).
    pub fn seen_weights_of(&self, u: u32) -> &[f32] {
        self.b.seen.row(u as usize).1
    }

    /// The family that ranks this bundle's lists.
    pub fn family(&self) -> super::family::Family {
        self.b
            .item_model
            .as_ref()
            .map_or(super::family::Family::Als, |m| m.family())
    }

    /// Top `k` of `domain` for `user`; unknown users get the cold start narrowed by `hints`.
    pub fn recommend(
        &self,
        user: &str,
        k: usize,
        domain: Domain,
        hints: &Hints,
    ) -> Vec<Recommendation> {
        match self.user_index.get(user) {
            Some(&u) => self.recommend_taste(Taste::Trained(u), k, domain, None, |_, _| {}),
            None => self.popular(k, domain, hints),
        }
    }

    /// Top `k` of `domain` for a taste, its scores (one per item, in the
    /// bundle's item order) adjusted before ranking (a blend). `extra`: items
    /// folded in since the champion was trained (rows after its own), ranked
    /// beside them (unblended).
    pub fn recommend_taste(
        &self,
        taste: Taste<'_>,
        k: usize,
        domain: Domain,
        extra: Option<&FoldedItems>,
        adjust: impl FnOnce(&mut [f32], &[String]),
    ) -> Vec<Recommendation> {
        let f = self.b.model.factors;
        let n = self.b.model.items;
        let mut scores = Vec::with_capacity(n);
        let (x, seen, weights) = match taste {
            Taste::Trained(u) => {
                let (seen, weights) = self.b.seen.row(u as usize);
                (self.b.model.user(u as usize), seen, weights)
            }
            Taste::Folded {
                factors,
                seen,
                weights,
                ..
            } => (factors, seen, weights),
        };
        match (&self.b.item_model, taste) {
            (Some(m), _) => m.scores_into(seen, weights, &mut scores),
            (None, Taste::Trained(u)) => self.b.model.scores_into(u as usize, &mut scores),
            (None, Taste::Folded { factors, .. }) => scores.extend(
                self.b
                    .model
                    .item_factors
                    .chunks_exact(f)
                    .map(|y| dot(y, factors)),
            ),
        }
        adjust(&mut scores, &self.b.items);
        // Folded items of this champion only (rows right after its own),
        // ranked by its factors beside an ALS champion's own.
        let extra = extra.filter(|e| {
            self.b.item_model.is_none()
                && e.first_row as usize == n
                && e.factors_per_item == f
                && x.len() == f
        });
        if let Some(e) = extra {
            scores.extend((0..e.len()).map(|j| dot(e.item(j), x)));
        }
        let domain_at = |i: usize| match (i.checked_sub(n), extra) {
            (None, _) => self.domain_of(i as u32),
            (Some(j), Some(e)) => e.domains.get(j).copied().unwrap_or_default(),
            (Some(_), None) => Domain::default(),
        };
        let vector = |i: usize| -> &[f32] {
            match (i.checked_sub(n), extra) {
                (None, _) => self.b.model.item(i),
                (Some(j), Some(e)) => e.item(j),
                (Some(_), None) => &[],
            }
        };
        let norm = |i: usize| match i.checked_sub(n) {
            None => self.norms[i],
            Some(_) => dot(vector(i), vector(i)).sqrt(),
        };
        let verb = match domain {
            Domain::Video => "watched",
            Domain::Music => "listened to",
        };
        let candidate = |i| domain_at(i) == domain && seen.binary_search(&(i as u32)).is_err();
        // Video lists: the recommender's top candidates reordered by the
        // ranking stage, when the version serves with one.
        let picked = match self.reranker(domain) {
            Some(r) => {
                let cands = top_k(&scores, candidate, r.draw(k));
                let genre = |i: usize| self.b.item_genre.get(i).map_or("", String::as_str);
                // The tree learned from ALS's own score, not a blend's.
                let raw = |i: usize| dot(vector(i), x);
                r.rerank(taste.user(), &cands, &scores, genre, raw, k)
            }
            None => top_k(&scores, candidate, k),
        };
        picked
            .into_iter()
            .map(|i| {
                let i = i as usize;
                let yi = vector(i);
                let ni = norm(i);
                let in_domain = seen
                    .iter()
                    .map(|&s| s as usize)
                    .filter(|&s| s < scores.len() && domain_at(s) == domain);
                // The seen item that added most to its score (an item ×
                // item model), else the most like it by factor cosine.
                let because = match &self.b.item_model {
                    Some(m) => in_domain
                        .map(|s| (s, m.weight(s as u32, i as u32)))
                        .filter(|&(_, w)| w > 0.0)
                        .max_by(|a, b| a.1.total_cmp(&b.1)),
                    None => in_domain
                        .map(|s| (s, cosine(yi, vector(s), ni, norm(s))))
                        .max_by(|a, b| a.1.total_cmp(&b.1)),
                }
                .map(|(s, _)| self.row_name(s, extra).unwrap_or_default().to_string());
                let reason = match &because {
                    Some(b) => format!("because you {verb} {b}"),
                    None => "from your taste".to_string(),
                };
                match i.checked_sub(n).zip(extra) {
                    None => self.rec(i as u32, scores[i], because, reason),
                    Some((j, e)) => Recommendation {
                        item: e.names[j].clone(),
                        score: scores[i],
                        genre: String::new(),
                        domain: domain_at(i),
                        because,
                        reason,
                    },
                }
            })
            .collect()
    }

    /// The name of row `i`: the champion's items, then `extra`'s (when they
    /// were folded in after this champion's); none past both.
    pub fn row_name<'a>(&'a self, i: usize, extra: Option<&'a FoldedItems>) -> Option<&'a str> {
        let n = self.b.items.len();
        match i.checked_sub(n) {
            None => self.b.items.get(i).map(String::as_str),
            Some(j) => extra
                .filter(|e| e.first_row as usize == n)
                .and_then(|e| e.names.get(j))
                .map(String::as_str),
        }
    }

    /// Most popular items of `domain`: in the hinted region and genre, else the
    /// region, else the genre, else overall (the first of these that has any item).
    pub fn popular(&self, k: usize, domain: Domain, hints: &Hints) -> Vec<Recommendation> {
        let genre = hints.genre.as_deref();
        let in_domain = |i: usize| self.domain_of(i as u32) == domain;
        let of_genre = |i: usize| {
            in_domain(i) && genre.is_none_or(|g| self.b.item_genre.get(i).is_some_and(|x| x == g))
        };
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
                let top = top_k(
                    &pop,
                    |i| {
                        if with_genre {
                            of_genre(i)
                        } else {
                            in_domain(i)
                        }
                    },
                    k,
                );
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
            top = top_k(&pop, in_domain, k);
            reason = "popular overall".to_string();
        }
        if let Some(r) = &hints.region {
            reason = format!("{reason} (nothing seen in region {r})");
        }
        top.into_iter()
            .map(|i| self.rec(i, pop[i as usize], None, reason.clone()))
            .collect()
    }

    /// Items of `item`'s domain most like it: the largest positive weights
    /// of its row when an item × item model ranks, then (the rest of a list
    /// of `k`, or all of it) by factor cosine.
    pub fn similar(&self, item: &str, k: usize) -> Option<Vec<Recommendation>> {
        let &i = self.item_index.get(item)?;
        let domain = self.domain_of(i);
        let reason = || format!("similar to {item}");
        let mut out: Vec<Recommendation> = Vec::new();
        let mut listed: Vec<u32> = Vec::new();
        if let Some(m) = &self.b.item_model {
            let (cols, weights) = m.row(i);
            let mut near: Vec<(u32, f32)> = cols
                .iter()
                .zip(weights)
                .filter(|&(&j, &w)| w > 0.0 && j != i && self.domain_of(j) == domain)
                .map(|(&j, &w)| (j, w))
                .collect();
            near.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            near.truncate(k);
            listed = near.iter().map(|&(j, _)| j).collect();
            listed.sort_unstable();
            out = near
                .into_iter()
                .map(|(j, w)| self.rec(j, w, None, reason()))
                .collect();
            if out.len() == k {
                return Some(out);
            }
        }
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
        let rest = top_k(
            &scores,
            |j| {
                j != i as usize
                    && self.domain_of(j as u32) == domain
                    && listed.binary_search(&(j as u32)).is_err()
            },
            k - out.len(),
        );
        out.extend(
            rest.into_iter()
                .map(|j| self.rec(j, scores[j as usize], None, reason())),
        );
        Some(out)
    }
}

/// The serving champion and what its users' events since have folded in,
/// shared by the evaluator (which replaces the champion), the fold-in (which
/// follows each durable batch) and every reader (admin socket, HTTP): readers
/// never wait on training, and wait on a fold-in only while it swaps users in.
#[derive(Clone, Default)]
pub struct Serving {
    champion: Arc<RwLock<Option<Arc<Champion>>>>,
    live: Arc<super::live::Live>,
    /// Users other members of the group folded in (a group's members only).
    peers: Arc<RwLock<super::live::Peers>>,
}

pub struct Champion {
    pub id: u64,
    pub recommender: Recommender,
    /// Content affinity blended into the scores of users with a profile (0: none;
    /// set when the blend ranked better on the held-out data).
    pub affinity_weight: f64,
    /// The parameters it was trained with (a fold-in solves as its training did).
    pub params: AlsParams,
    /// When it began serving (ms since the epoch).
    pub since_ms: i64,
}

/// A model version ready to serve.
pub struct ServingModel {
    pub id: u64,
    pub bundle: Bundle,
    pub affinity_weight: f64,
    pub params: AlsParams,
}

impl ServingModel {
    pub fn into_champion(self) -> Champion {
        Champion {
            id: self.id,
            recommender: Recommender::new(self.bundle),
            affinity_weight: self.affinity_weight,
            params: self.params,
            since_ms: crate::domain::timefmt::now_ms(),
        }
    }
}

impl Serving {
    pub fn get(&self) -> Option<Arc<Champion>> {
        self.champion.read().ok().and_then(|c| c.clone())
    }

    pub fn set(&self, m: ServingModel) {
        let c = Arc::new(m.into_champion());
        if let Ok(mut w) = self.champion.write() {
            *w = Some(c);
        }
    }

    /// The folded-in state.
    pub fn live(&self) -> &Arc<super::live::Live> {
        &self.live
    }

    /// What the fold-in did, with the age of the champion's item factors.
    pub fn fold_stats(&self) -> super::live::LiveStats {
        let mut s = self.live.stats();
        s.item_factors_age_seconds = self
            .get()
            .map(|c| (crate::domain::timefmt::now_ms() - c.since_ms).max(0) as f64 / 1000.0);
        s
    }

    /// `user` as the fold-in has them against `champion`: their folded
    /// state, if any, and what they watched since.
    pub fn live_user(&self, champion: &Champion, user: &str) -> super::live::LiveUser {
        let mut u = self.live.live_user(champion.id, user);
        if u.folded.is_none() {
            // Folded in by another member of the group (its partitions hold their events).
            let items = u.items.clone().or_else(|| self.folded_items(champion));
            u.folded = self
                .peers
                .read()
                .ok()
                .and_then(|p| p.folded(champion, items.as_deref(), user))
                .map(Arc::new);
            if u.folded.is_some() {
                u.items = items;
            }
        }
        u
    }

    /// The users other members of the group folded in.
    pub fn peers(&self) -> &Arc<RwLock<super::live::Peers>> {
        &self.peers
    }

    /// The items folded in against `champion` (none: not one yet).
    pub fn folded_items(&self, champion: &Champion) -> Option<Arc<FoldedItems>> {
        self.live.items(champion.id)
    }
}

/// The content-affinity weight a model version serves with (recorded by the
/// evaluator; 0 when the blend did not rank better).
pub fn serving_affinity_weight(meta: &super::ModelVersion) -> f64 {
    meta.recommender()
        .map_or(0.0, |r| r.metrics.serving_affinity_weight)
}

/// The champion as it serves, from the store.
pub fn load_serving(
    store: &crate::store::StoreView,
) -> Result<Option<ServingModel>, super::TrainError> {
    let meta = super::version::champion(store)?;
    let weight = meta.as_ref().map_or(0.0, serving_affinity_weight);
    let params = meta
        .as_ref()
        .and_then(|m| m.recommender())
        .map(|r| r.params.clone())
        .unwrap_or_default();
    Ok(load_champion(store)?.map(|(id, bundle)| ServingModel {
        id,
        bundle,
        affinity_weight: weight,
        params,
    }))
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
    let is_track = |i: &str| store.catalog("track", i).ok().flatten().is_some();
    let bundle = Bundle::decode(&bytes, is_track).map_err(|e| {
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
            item_domain: vec![Domain::Video; 6],
            rerank: None,
            item_model: None,
        }
    }

    #[test]
    fn bundles_stored_in_older_layouts_still_decode() {
        let b = bundle();
        let bytes = postcard::to_stdvec(&b).unwrap();
        // (Region popularity is a map: compared as one, not by its bytes.)
        let same_as = |x: &Bundle| {
            assert_eq!(
                (&x.users, &x.items, &x.seen.indices),
                (&b.users, &b.items, &b.seen.indices)
            );
            assert_eq!(
                (&x.popularity, &x.item_genre),
                (&b.popularity, &b.item_genre)
            );
            assert_eq!(x.region_popularity, b.region_popularity);
            assert_eq!(x.model.item_factors, b.model.item_factors);
        };
        let same = Bundle::decode(&bytes, |_| false).unwrap();
        same_as(&same);
        assert_eq!(same.item_domain, b.item_domain);
        // Before the item × item model: the same bytes without its `None` tag.
        assert_eq!(bytes[bytes.len() - 2..], [0, 0]);
        let no_items = Bundle::decode(&bytes[..bytes.len() - 1], |_| false).unwrap();
        assert!(no_items.item_model.is_none() && no_items.rerank.is_none());
        same_as(&no_items);
        // Before the ranking stage: without its tag either.
        let old = Bundle::decode(&bytes[..bytes.len() - 2], |_| false).unwrap();
        assert!(old.rerank.is_none());
        same_as(&old);
        assert_eq!(old.item_domain, b.item_domain);
        // Before item domains: no domain list either (a length byte and a
        // byte per item); domains come from the catalog.
        let older =
            Bundle::decode(&bytes[..bytes.len() - 3 - b.items.len()], |i| i == "v5").unwrap();
        same_as(&older);
        assert_eq!(older.item_domain[..5], [Domain::Video; 5]);
        assert_eq!(older.item_domain[5], Domain::Music);
        assert!(Bundle::decode(&bytes[..bytes.len() / 2], |_| false).is_err());
        // A later field that does not decode is an error, not an older bundle.
        for at in [2, 1] {
            let mut damaged = bytes.clone();
            let n = damaged.len();
            damaged[n - at] = 1;
            damaged.extend_from_slice(&[7, 7, 7]);
            assert!(Bundle::decode(&damaged, |_| false).is_err(), "{at}");
        }
        let mut damaged = bytes.clone();
        *damaged.last_mut().unwrap() = 1;
        damaged.extend_from_slice(&[7, 7, 7]);
        assert!(Bundle::decode(&damaged, |_| false).is_err());
    }

    #[test]
    fn recommends_unseen_items_of_the_users_taste_with_a_reason() {
        let r = Recommender::new(bundle());
        let got = r.recommend("u0", 2, Domain::Video, &Hints::default());
        assert_eq!(
            got.iter().map(|x| x.item.as_str()).collect::<Vec<_>>(),
            vec!["v1", "v2"]
        );
        assert!(got
            .iter()
            .all(|x| x.genre == "Drama" && x.because.as_deref() == Some("v0")));
        assert_eq!(got[0].reason, "because you watched v0");
        let got = r.recommend("u2", 3, Domain::Video, &Hints::default());
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
            items(r.recommend("nobody", 2, Domain::Video, &Hints::default())),
            vec!["v4", "v0"]
        );
        assert_eq!(
            items(r.recommend("nobody", 2, Domain::Video, &hints(None, Some("Drama")))),
            vec!["v0", "v1"]
        );
        assert_eq!(
            items(r.recommend("nobody", 1, Domain::Video, &hints(None, Some("Western")))),
            vec!["v4"]
        );
        // By region: what is watched there, not overall.
        let eu = r.recommend("nobody", 2, Domain::Video, &hints(Some("eu"), None));
        assert_eq!(items(eu.clone()), vec!["v1", "v3"]);
        assert_eq!(eu[0].reason, "popular in region eu");
        assert_eq!(
            items(r.recommend(
                "nobody",
                3,
                Domain::Video,
                &hints(Some("eu"), Some("Comedy"))
            )),
            vec!["v3"]
        );
        // Nothing of that genre in the region: the region's popular items.
        assert_eq!(
            items(r.recommend(
                "nobody",
                1,
                Domain::Video,
                &hints(Some("us"), Some("Drama"))
            )),
            vec!["v5"]
        );
        // An unknown region: the genre, then overall.
        assert_eq!(
            items(r.recommend(
                "nobody",
                1,
                Domain::Video,
                &hints(Some("mars"), Some("Drama"))
            )),
            vec!["v0"]
        );
    }

    #[test]
    fn an_item_by_item_model_ranks_explains_and_finds_similar_items_in_als_place() {
        let mut b = bundle();
        b.item_model = Some(ItemModel {
            params: crate::ml::item_model::ItemParams::Ease(Default::default()),
            // A history item counts its weight.
            input: Some(crate::ml::ease::Input::Linear),
            weights: Csr::from_triplets(
                6,
                6,
                &[
                    (0, 2, 0.9),
                    (0, 1, 0.1),
                    (3, 5, 0.8),
                    (3, 4, 0.2),
                    (4, 5, 0.3),
                ],
            ),
            prior: vec![1e-6; 6],
        });
        let bytes = postcard::to_stdvec(&b).unwrap();
        let r = Recommender::new(Bundle::decode(&bytes, |_| false).unwrap());
        assert_eq!(r.family(), crate::ml::family::Family::Ease);
        let items = |v: &[Recommendation]| v.iter().map(|x| x.item.clone()).collect::<Vec<_>>();
        // ALS ranks v1 first for u0 (the test above); the weights say v2.
        let got = r.recommend("u0", 2, Domain::Video, &Hints::default());
        assert_eq!(items(&got), ["v2", "v1"]);
        assert_eq!(got[0].reason, "because you watched v0");
        // A folded user: what they just watched drives the list at once.
        let folded = r.recommend_taste(
            Taste::Folded {
                factors: &[],
                seen: &[3],
                weights: &[2.0],
                user: None,
            },
            2,
            Domain::Video,
            None,
            |_, _| {},
        );
        assert_eq!(items(&folded), ["v5", "v4"]);
        assert!((folded[0].score - 1.6).abs() < 1e-5, "{folded:?}");
        assert_eq!(folded[1].because.as_deref(), Some("v3"));
        // Similar items: the row's positive weights, else factor cosine.
        assert_eq!(items(&r.similar("v0", 2).unwrap()), ["v2", "v1"]);
        assert_eq!(items(&r.similar("v3", 1).unwrap()), ["v5"]);
        // A row short of k: the rest by factor cosine (v4, then v3's other neighbours).
        assert_eq!(items(&r.similar("v4", 2).unwrap()), ["v5", "v3"]);
        assert_eq!(items(&r.similar("v5", 1).unwrap()), ["v3"]);
        // A stored item model whose shape does not match its items is refused.
        let mut bad = b.clone();
        if let Some(m) = bad.item_model.as_mut() {
            m.prior.push(0.0);
        }
        let err = Bundle::decode(&postcard::to_stdvec(&bad).unwrap(), |_| false).unwrap_err();
        assert!(matches!(err, BundleError::ItemModel), "{err}");
    }

    #[test]
    fn similar_items_by_cosine() {
        let r = Recommender::new(bundle());
        let s = r.similar("v3", 2).unwrap();
        assert_eq!(s[0].item, "v5");
        assert!(r.similar("zzz", 2).is_none());
    }

    #[test]
    fn lists_similar_items_and_popularity_keep_to_one_domain() {
        let mut b = bundle();
        // v3..v5 are tracks: a video list never holds them, nor a music list a video.
        b.item_domain = [0, 0, 0, 1, 1, 1]
            .map(|d| if d == 0 { Domain::Video } else { Domain::Music })
            .to_vec();
        let r = Recommender::new(b);
        let domains = |v: &[Recommendation]| v.iter().map(|x| x.domain).collect::<Vec<_>>();
        let video = r.recommend("u2", 6, Domain::Video, &Hints::default());
        assert_eq!(domains(&video), vec![Domain::Video; 3]);
        let music = r.recommend("u0", 6, Domain::Music, &Hints::default());
        assert_eq!(domains(&music), vec![Domain::Music; 3]);
        assert!(music
            .iter()
            .all(|m| m.reason.starts_with("from your taste")));
        let music = r.recommend("u2", 6, Domain::Music, &Hints::default());
        assert_eq!(music[0].reason, "because you listened to v3");
        let pop = r.popular(6, Domain::Music, &Hints::default());
        assert_eq!(
            pop.iter().map(|x| x.item.as_str()).collect::<Vec<_>>(),
            vec!["v4", "v5", "v3"]
        );
        let eu = Hints {
            region: Some("eu".into()),
            genre: None,
        };
        assert_eq!(
            domains(&r.popular(6, Domain::Video, &eu)),
            vec![Domain::Video; 2]
        );
        let s = r.similar("v3", 5).unwrap();
        assert_eq!(domains(&s), vec![Domain::Music; 2]);
        assert_eq!(r.main_domain(r.seen_of(2)), Domain::Music);
        assert_eq!(r.main_domain(r.seen_of(0)), Domain::Video);
    }
}
