//! The ranking stage in the daemon: an engagement model (a linfa decision
//! tree) trained with each recommender on what is known before a view, and
//! the re-ranking of a user's top video candidates by it, served only when
//! the held-out data says it ranks better.
//!
//! [`fit`] runs on the evaluator's thread with the candidate recommender and
//! the snapshot's most recent video events:
//! - the history (user views, genre shares and skips; item views and skips;
//!   region buffering; the user's last region, resolution and hour) is built
//!   from the events of the candidate's *training* pairs only, so nothing a
//!   held-out pair did is a feature;
//! - the users with held-out pairs are split by a seeded hash: half give the
//!   tree its training rows (their held-out views, with the candidate's score
//!   for a pair it never trained on, labelled engaged or not), a quarter are
//!   validation and a quarter test;
//! - each validation and test user's top `candidates` unseen videos by the
//!   recommender are ordered by its score plus `weight` × the engagement
//!   score (both standardized over the user's candidates, as `bench rank`);
//!   validation chooses the weight by NDCG@k against the held-out videos, and
//!   the test quarter confirms it. Only then does the version serve with it.
//!
//! At serve time ([`Reranker::rerank`]) the features are the training
//! snapshot's until the next retrain; only the recommender's score is live.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::classify::{class_metrics, ClassMetrics, GrowRule, TreeNode};
use super::metrics::top_k;
use super::rank::{
    auc, both_classes, choose_weight, combined, engaged, genre_slot, hour_of, pair_key,
    resolution_rank, Context, History, Interner, ListQuality, RankError, UserLists, NF,
};
use super::train::Candidate;
use crate::domain::event::VideoEvent;

/// How the ranking stage is fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RerankSpec {
    /// Candidates per user (the recommender's top) the stage orders.
    pub candidates: usize,
    pub k: usize,
    pub seed: u64,
    pub max_depth: usize,
    /// Fewest training rows a leaf holds (its engaged share is the score).
    pub min_leaf: usize,
    /// Users (at most) whose lists are scored in each of validation and test.
    pub eval_users: usize,
}

impl Default for RerankSpec {
    fn default() -> Self {
        RerankSpec {
            candidates: 50,
            k: 10,
            seed: 57,
            max_depth: 8,
            min_leaf: 50,
            eval_users: 2_000,
        }
    }
}

/// What the ranking stage serves with: the tree, the chosen weight and the
/// training snapshot's history (rows in the bundle's user and item order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reranker {
    pub weight: f64,
    pub candidates: u32,
    tree: TreeNode,
    history: History,
}

impl Reranker {
    /// How many candidates to draw for a list of `k`.
    pub fn draw(&self, k: usize) -> usize {
        (self.candidates as usize).max(k)
    }

    /// `cands` (best first by the recommender, whose scores by row are
    /// `scores`) reordered by recommender + weight × engagement; the best `k`.
    /// `user`: the user's row in the bundle (none: a user the training
    /// snapshot did not have); `genre`: a row's genre; `raw`: a row's
    /// recommender score before any blend (the tree's feature, as it was
    /// trained).
    pub fn rerank<'g>(
        &self,
        user: Option<u32>,
        cands: &[u32],
        scores: &[f32],
        genre: impl Fn(usize) -> &'g str,
        raw: impl Fn(usize) -> f32,
        k: usize,
    ) -> Vec<u32> {
        let u = user.map_or(usize::MAX, |u| u as usize);
        let ctx = self.history.context(u);
        let rec: Vec<f64> = cands
            .iter()
            .map(|&i| f64::from(scores[i as usize]))
            .collect();
        let eng: Vec<f64> = cands
            .iter()
            .map(|&i| {
                let i = i as usize;
                let s = f64::from(raw(i));
                self.tree
                    .score(&self.history.row(u, i, genre_slot(genre(i)), ctx, s))
            })
            .collect();
        let order = combined(&rec, &eng, self.weight);
        top_k(&order, |_| true, k)
            .into_iter()
            .map(|j| cands[j as usize])
            .collect()
    }
}

/// What the ranking stage did on a candidate's held-out data (recorded with
/// the version, served or not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankEvaluation {
    /// The weight validation chose (0: the recommender alone ranked best).
    pub weight: f64,
    /// Whether the version serves with it: a weight above 0 that the test
    /// quarter confirms (NDCG@k against the held-out videos rose).
    pub used: bool,
    pub candidates: usize,
    pub k: usize,
    /// Snapshot events read, and those of held-out pairs (the rows).
    pub events: usize,
    pub held_out_views: usize,
    pub train_rows: usize,
    pub test_rows: usize,
    /// Users whose lists were scored in validation and test.
    pub users: [usize; 2],
    /// The tree on the test users' held-out views.
    pub auc: f64,
    pub recommender_score_auc: f64,
    pub metrics: ClassMetrics,
    pub validation_plain: ListQuality,
    pub validation_reranked: ListQuality,
    pub test_plain: ListQuality,
    pub test_reranked: ListQuality,
    pub tree: String,
    pub seconds: f64,
}

/// The ranking stage of one training run, as its version records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RerankOutcome {
    Evaluated(Box<RerankEvaluation>),
    /// Not fitted: too little data, or one class only (the reason).
    Skipped {
        why: String,
    },
}

/// A held-out view: who, what, where, and whether it engaged.
struct HeldView {
    user: usize,
    item: usize,
    ctx: Context,
    engaged: bool,
}

/// Which part of the held-out users a user is in: 0–1 training, 2
/// validation, 3 test (a seeded hash of the row, stable across runs).
fn quarter(seed: u64, user: usize) -> u64 {
    let mut x = seed ^ (user as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) % 4
}

/// Fits the ranking stage next to candidate `c` on `events` (the snapshot's
/// most recent video events) and scores it on `c`'s held-out split. `music`:
/// whether a candidate row is a music item (only video lists are re-ranked);
/// `genres`: item → genre. The reranker is returned only when it is used.
pub fn fit(
    c: &Candidate,
    events: &[VideoEvent],
    music: &HashSet<String>,
    genres: &HashMap<String, String>,
    spec: &RerankSpec,
) -> Result<(Option<Reranker>, RerankEvaluation), RankError> {
    let t = Instant::now();
    let d = &c.data;
    let m = &c.model;
    let mut held: HashSet<u64> = HashSet::new();
    for set in [&d.test, &d.unscored] {
        for u in 0..set.rows {
            held.extend(set.row(u).0.iter().map(|&i| pair_key(u, i as usize)));
        }
    }
    let item_genre: Vec<usize> = d
        .items
        .iter()
        .map(|i| {
            genres
                .get(i)
                .map_or(super::rank::GENRE_SLOTS - 1, |g| genre_slot(g))
        })
        .collect();
    let is_video: Vec<bool> = d.items.iter().map(|i| !music.contains(i)).collect();

    // The history from the training pairs' events, in time order; the
    // held-out pairs' views aside.
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].timestamp_ms);
    let mut regions = Interner::default();
    let mut h = History::default();
    let mut views = Vec::new();
    for &ix in &order {
        let e = &events[ix];
        let (Some(&u), Some(&i)) = (
            d.user_index.get(e.user_id.as_str()),
            d.item_index.get(e.video_id.as_str()),
        ) else {
            continue;
        };
        let (u, i) = (u as usize, i as usize);
        let region = regions.id(&e.region) as u32;
        if held.contains(&pair_key(u, i)) {
            views.push(HeldView {
                user: u,
                item: i,
                ctx: Context {
                    region,
                    resolution: resolution_rank(&e.resolution),
                    hour: hour_of(e.timestamp_ms),
                    recommended: e.recommended,
                },
                engaged: engaged(e),
            });
        } else {
            h.add(u, i, region, e);
        }
    }
    let score = |u: usize, i: usize| f64::from(m.score(u, i));
    let row = |v: &HeldView| {
        h.row(
            v.user,
            v.item,
            item_genre[v.item],
            v.ctx,
            score(v.user, v.item),
        )
    };
    let (mut train_x, mut train_y, mut test_x, mut test_y) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in &views {
        match quarter(spec.seed, v.user) {
            0 | 1 => {
                train_x.push(row(v));
                train_y.push(v.engaged);
            }
            3 => {
                test_x.push(row(v));
                test_y.push(v.engaged);
            }
            _ => {}
        }
    }
    let need = 2 * spec.min_leaf;
    if train_x.len() < need {
        return Err(RankError::Data(format!(
            "{} held-out views of training users in the {} most recent video events; the \
             ranking stage needs at least {need} (2 × its least leaf)",
            train_x.len(),
            events.len()
        )));
    }
    both_classes(&train_y, "held-out training views")?;
    let x = Array2::from_shape_fn((train_x.len(), NF), |(r, c)| train_x[r][c]);
    let rule = GrowRule {
        max_depth: spec.max_depth,
        min_leaf: spec.min_leaf,
        merge: false,
    };
    let tree = TreeNode::grow_with(&x, &train_y, (0..train_x.len()).collect(), 0, &rule)?;
    let (depth, leaves) = tree.shape();

    // Validation and test lists: each user's top unseen videos.
    let engaged_items: HashSet<u64> = views
        .iter()
        .filter(|v| v.engaged)
        .map(|v| pair_key(v.user, v.item))
        .collect();
    // One user's list: candidates, their scores and rows, what was viewed
    // and engaged (every user scored against every item: in parallel).
    type List = (Vec<u32>, Vec<f64>, Vec<[f64; NF]>, Vec<u32>, Vec<u32>);
    let list_of = |u: usize| -> List {
        let viewed: Vec<u32> = d
            .test
            .row(u)
            .0
            .iter()
            .copied()
            .filter(|&i| is_video[i as usize])
            .collect();
        let mut scores = Vec::new();
        m.scores_into(u, &mut scores);
        let seen = d.train.row(u).0;
        let cands = top_k(
            &scores,
            |i| is_video[i] && seen.binary_search(&(i as u32)).is_err(),
            spec.candidates,
        );
        let ctx = h.context(u);
        let rec = cands
            .iter()
            .map(|&i| f64::from(scores[i as usize]))
            .collect();
        let rows = cands
            .iter()
            .map(|&i| {
                let i = i as usize;
                h.row(u, i, item_genre[i], ctx, f64::from(scores[i]))
            })
            .collect();
        let engaged = viewed
            .iter()
            .copied()
            .filter(|&i| engaged_items.contains(&pair_key(u, i as usize)))
            .collect();
        (cands, rec, rows, viewed, engaged)
    };
    let lists_of = |part: u64| {
        let users: Vec<usize> = (0..d.test.rows)
            .filter(|&u| quarter(spec.seed, u) == part)
            .filter(|&u| d.test.row(u).0.iter().any(|&i| is_video[i as usize]))
            .take(spec.eval_users)
            .collect();
        let mut lists = UserLists::default();
        for (cands, rec, rows, viewed, engaged) in
            users.into_par_iter().map(list_of).collect::<Vec<_>>()
        {
            lists.candidates.push(cands);
            lists.scores.push(rec);
            lists.rows.extend(rows);
            lists.viewed.push(viewed);
            lists.engaged.push(engaged);
        }
        lists
    };
    let (val, test) = (lists_of(2), lists_of(3));
    if val.candidates.is_empty() || test.candidates.is_empty() {
        return Err(RankError::Data(
            "no held-out user with videos in the validation or the test quarter".into(),
        ));
    }
    let engagement = |l: &UserLists| -> Vec<f64> { l.rows.iter().map(|r| tree.score(r)).collect() };
    let (val_e, test_e) = (engagement(&val), engagement(&test));
    // Chosen by the held-out videos, as the evaluator ranks recommenders.
    let chosen = choose_weight((&val, &val_e), (&test, &test_e), spec.k, |q| q.ndcg_views);
    let test_scores: Vec<f64> = test_x.iter().map(|r| tree.score(r)).collect();
    let predicted: Vec<bool> = test_scores.iter().map(|&s| s >= 0.5).collect();
    let evaluation = RerankEvaluation {
        weight: chosen.weight,
        used: chosen.used,
        candidates: spec.candidates,
        k: spec.k,
        events: events.len(),
        held_out_views: views.len(),
        train_rows: train_x.len(),
        test_rows: test_x.len(),
        users: [val.candidates.len(), test.candidates.len()],
        auc: auc(&test_y, &test_scores),
        recommender_score_auc: auc(
            &test_y,
            &test_x.iter().map(|r| r[NF - 1]).collect::<Vec<_>>(),
        ),
        metrics: class_metrics(&test_y, &predicted),
        validation_plain: chosen.validation_plain,
        validation_reranked: chosen.validation_reranked,
        test_plain: chosen.test_plain,
        test_reranked: chosen.test_reranked,
        tree: format!(
            "decision tree max_depth={} min_leaf={} depth={depth} leaves={leaves}",
            spec.max_depth, spec.min_leaf
        ),
        seconds: t.elapsed().as_secs_f64(),
    };
    let reranker = chosen.used.then(|| Reranker {
        weight: chosen.weight,
        candidates: spec.candidates as u32,
        tree,
        history: h.without_pairs(),
    });
    Ok((reranker, evaluation))
}

impl RerankOutcome {
    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            RerankOutcome::Skipped { why } => format!("skipped: {why}"),
            RerankOutcome::Evaluated(e) => format!(
                "{} (weight {} chosen on {} validation users; test ndcg@{} {:.4} -> {:.4} over {} users; tree auc {:.3} against the recommender's score {:.3}; {} training views; {:.2} s)",
                if e.used { "serves" } else { "not used" },
                e.weight,
                e.users[0],
                e.k,
                e.test_plain.ndcg_views,
                e.test_reranked.ndcg_views,
                e.users[1],
                e.auc,
                e.recommender_score_auc,
                e.train_rows,
                e.seconds
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Domain;
    use crate::ml::als::AlsParams;
    use crate::ml::serve::{Bundle, Recommender, Taste};
    use crate::ml::train::{fit_candidate, serving_bundle, TrainSpec};
    use crate::store::PairAgg;
    use crate::synth::generate::{VideoGen, World};

    /// Generated views, their pairs and their genres.
    type Data = (
        Vec<VideoEvent>,
        Vec<(String, String, PairAgg)>,
        HashMap<String, String>,
    );

    fn data(events: usize) -> Data {
        let mut g = VideoGen::new(World::new(600, 150, 5), 11, 1_735_689_600_000, 1000);
        let events: Vec<VideoEvent> = (0..events).map(|_| g.next_event()).collect();
        let genres = events
            .iter()
            .map(|e| (e.video_id.to_string(), e.genre.to_string()))
            .collect();
        let pairs = crate::ml::dataset::pairs_of_events(events.iter());
        (events, pairs, genres)
    }

    fn spec() -> TrainSpec {
        let als = AlsParams {
            factors: 16,
            iterations: 8,
            ..AlsParams::default()
        };
        TrainSpec {
            seed: 3,
            warm_iterations: 0,
            search_budget: std::time::Duration::ZERO,
            ..TrainSpec::new(als.check().unwrap(), &Default::default())
        }
    }

    #[test]
    fn the_stage_learns_engagement_and_serves_only_when_held_out_lists_rank_better() {
        let (events, pairs, genres) = data(80_000);
        let c = fit_candidate(pairs, &spec()).unwrap();
        let music = HashSet::new();
        let (r, e) = fit(&c, &events, &music, &genres, &RerankSpec::default()).unwrap();
        let line = RerankOutcome::Evaluated(Box::new(e.clone())).describe();
        assert!(e.train_rows >= 100 && e.test_rows > 0, "{line}");
        assert!(e.users[0] > 0 && e.users[1] > 0, "{line}");
        assert_eq!(r.is_some(), e.used);
        assert_eq!(
            e.used,
            e.weight > 0.0 && e.test_reranked.ndcg_views > e.test_plain.ndcg_views
        );
        // Skips follow the user's taste and the network (planted): the tree
        // knows more than the recommender's score, and its order ranks the
        // held-out videos higher, so the version serves with it.
        assert!(e.auc > e.recommender_score_auc + 0.05, "{line}");
        assert!(e.used && e.weight > 0.0, "{line}");
        assert!(line.starts_with("serves (weight"), "{line}");

        // Served: video lists are the recommender's top candidates reordered.
        let r = r.unwrap();
        let mut b = serving_bundle(c, &genres, &HashMap::new(), &music);
        b.rerank = Some(r.clone());
        let plain = Recommender::new(Bundle {
            rerank: None,
            ..b.clone()
        });
        // Stored and read back, it serves the same lists.
        let bytes = postcard::to_stdvec(&b).unwrap();
        let staged = Recommender::new(postcard::from_bytes::<Bundle>(&bytes).unwrap());
        let (mut differ, mut users) = (0, 0);
        for u in 0..staged.bundle().users.len() as u32 {
            let list = |rec: &Recommender, k| -> Vec<String> {
                rec.recommend_taste(Taste::Trained(u), k, Domain::Video, None, |_, _| {})
                    .into_iter()
                    .map(|x| x.item)
                    .collect()
            };
            let got = list(&staged, 10);
            let top = list(&plain, r.draw(10));
            assert_eq!(got.len(), 10.min(top.len()));
            assert!(
                got.iter().all(|i| top.contains(i)),
                "{got:?} not in {top:?}"
            );
            let seen = staged.seen_of(u);
            assert!(got
                .iter()
                .all(|i| seen.binary_search(&staged.item_row(i).unwrap()).is_err()));
            users += 1;
            differ += usize::from(got[..] != top[..got.len()]);
        }
        assert!(differ * 4 > users, "{differ} of {users} lists reordered");
        // The same order as the stage's own, through the folded path too.
        let x = staged.bundle().model.user(0).to_vec();
        let folded = staged.recommend_taste(
            Taste::Folded {
                factors: &x,
                seen: staged.seen_of(0),
                weights: staged.seen_weights_of(0),
                user: Some(0),
            },
            10,
            Domain::Video,
            None,
            |_, _| {},
        );
        let trained = staged.recommend_taste(Taste::Trained(0), 10, Domain::Video, None, |_, _| {});
        assert_eq!(folded, trained);
        // A blend moves the order's scores, not the tree's feature: scores
        // shifted alike keep the same standardized order and the same list.
        let shifted = staged.recommend_taste(Taste::Trained(0), 10, Domain::Video, None, |s, _| {
            s.iter_mut().for_each(|x| *x += 1000.0)
        });
        let names = |l: &[crate::ml::serve::Recommendation]| -> Vec<String> {
            l.iter().map(|x| x.item.clone()).collect()
        };
        assert_eq!(names(&shifted), names(&trained));
    }

    #[test]
    fn too_little_data_or_one_class_is_a_reason_not_a_panic() {
        let (events, pairs, genres) = data(80_000);
        let c = fit_candidate(pairs, &spec()).unwrap();
        let music = HashSet::new();
        let e = fit(&c, &events[..300], &music, &genres, &RerankSpec::default()).unwrap_err();
        assert!(
            e.to_string().contains("ranking stage needs at least 100"),
            "{e}"
        );
        let engaged_only: Vec<VideoEvent> = events.iter().filter(|e| engaged(e)).cloned().collect();
        let e = fit(&c, &engaged_only, &music, &genres, &RerankSpec::default()).unwrap_err();
        assert!(e.to_string().contains("is engaged"), "{e}");
        // Every item music: no video list to reorder.
        let all: HashSet<String> = c.data.items.iter().cloned().collect();
        let e = fit(&c, &events, &all, &genres, &RerankSpec::default()).unwrap_err();
        assert!(
            e.to_string().contains("no held-out user with videos"),
            "{e}"
        );
    }
}
