//! Item fold-in: items the serving champion was not trained on (new titles,
//! new tracks) get factors from their users' factors once enough users have
//! them, without a retrain — the item half of an implicit-ALS iteration
//! (`(XᵀX + λI + Xᵀ(Cᵢ − I)X) yᵢ = XᵀCᵢpᵢ`), with `XᵀX` over the champion's
//! user factors computed once per champion and each user's current factors
//! (folded in, else trained).
//!
//! A folded item gets the row after the champion's items: item `j` of
//! [`FoldedItems`] is row `champion items + j`, so a user's seen set (sorted
//! rows) can hold it next to the champion's items. Users are solved against the
//! champion's items only (its `YᵀY`); the folded items take part in ranking and
//! in what a user has seen.
//!
//! Bounded: at most `max_items` items are followed (past it the half with the
//! fewest users is dropped) and at most as many are folded in per champion
//! (past it no new one is), and each follows at most [`MAX_ITEM_USERS`] users.

use std::sync::Arc;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::als::Solver;
use super::serve::Champion;
use crate::domain::event::Domain;

/// Users an item's solve follows (more add little to a row of factors).
pub const MAX_ITEM_USERS: usize = 2_000;

/// The items folded in against one champion, as readers see them.
#[derive(Debug, Clone, Default)]
pub struct FoldedItems {
    /// The champion's item count: folded item `j` is row `first_row + j`.
    pub first_row: u32,
    pub factors_per_item: usize,
    pub names: Vec<String>,
    pub domains: Vec<Domain>,
    /// `names.len()` rows of `factors_per_item`.
    pub factors: Vec<f32>,
    index: FxHashMap<String, u32>,
}

impl FoldedItems {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The row of a folded item.
    pub fn row(&self, item: &str) -> Option<u32> {
        self.index.get(item).map(|j| self.first_row + j)
    }

    /// Folded item `j`'s factors.
    pub fn item(&self, j: usize) -> &[f32] {
        let f = self.factors_per_item;
        &self.factors[j * f..(j + 1) * f]
    }

    /// Sets `item`'s factors (a new item gets the next row); answers whether it is new.
    pub(crate) fn set(&mut self, item: &str, domain: Domain, y: &[f32]) -> bool {
        let f = self.factors_per_item;
        match self.index.get(item) {
            Some(&j) => {
                let j = j as usize;
                self.factors[j * f..(j + 1) * f].copy_from_slice(y);
                false
            }
            None => {
                self.index.insert(item.to_string(), self.names.len() as u32);
                self.names.push(item.to_string());
                self.domains.push(domain);
                self.factors.extend_from_slice(y);
                true
            }
        }
    }
}

/// An item the champion does not have, followed until it is folded in.
#[derive(Debug, Default)]
struct Followed {
    domain: Domain,
    /// User → implicit-feedback weight (as the fold-in weighs pair changes).
    users: FxHashMap<String, f32>,
    /// Users when last solved (0: not yet).
    solved_with: usize,
}

/// What one [`ItemFold::solve`] did.
#[derive(Debug, Default)]
pub struct Solved {
    /// Items folded in for the first time: (row, its users and their weights).
    pub new: Vec<(u32, Vec<(String, f32)>)>,
    /// Items whose factors were solved again.
    pub updated: usize,
}

/// The fold-in worker's item side: the items it follows for the champion.
pub struct ItemFold {
    model: Option<u64>,
    solver: Option<Solver>,
    followed: FxHashMap<String, Followed>,
    items: Arc<FoldedItems>,
    pub min_users: usize,
    pub max_items: usize,
    /// Items let go past `max_items`.
    pub dropped: u64,
}

impl ItemFold {
    pub fn new(min_users: usize, max_items: usize) -> ItemFold {
        ItemFold {
            model: None,
            solver: None,
            followed: FxHashMap::default(),
            items: Arc::default(),
            min_users: min_users.max(1),
            max_items: max_items.max(1),
            dropped: 0,
        }
    }

    /// Starts afresh for a champion it does not follow yet (its users' `XᵀX`).
    pub fn follow(&mut self, c: &Champion) {
        if self.model == Some(c.id) {
            return;
        }
        let model = &c.recommender.bundle().model;
        let mut params = c.params.clone();
        params.factors = model.factors;
        self.solver = Some(Solver::new(&params, &model.user_factors));
        self.followed.clear();
        self.items = Arc::new(FoldedItems {
            first_row: model.items as u32,
            factors_per_item: model.factors,
            ..FoldedItems::default()
        });
        self.model = Some(c.id);
    }

    /// The items folded in so far (for readers).
    pub fn items(&self) -> Arc<FoldedItems> {
        self.items.clone()
    }

    /// Items followed and not yet folded in.
    pub fn pending(&self) -> usize {
        self.followed
            .iter()
            .filter(|(k, _)| self.items.row(k).is_none())
            .count()
    }

    /// A committed pair change on an item the champion does not have:
    /// `delta` adds `w` to the user's weight (a video delta), else `w`
    /// replaces it (a listening edge's aggregate).
    pub fn observe(&mut self, item: &str, domain: Domain, user: &str, w: f32, delta: bool) {
        if !self.followed.contains_key(item) {
            if self.followed.len() >= self.max_items {
                self.shed();
            }
            self.followed.insert(
                item.to_string(),
                Followed {
                    domain,
                    ..Followed::default()
                },
            );
        }
        let Some(f) = self.followed.get_mut(item) else {
            return;
        };
        let room = f.users.len() < MAX_ITEM_USERS;
        match f.users.get_mut(user) {
            Some(x) if delta => *x += w,
            Some(x) => *x = w,
            None if room => {
                f.users.insert(user.to_string(), w);
            }
            None => {}
        }
    }

    /// Drops the half of the followed items with the fewest users (folded
    /// items keep their factors; they are no longer solved again).
    fn shed(&mut self) {
        let mut by: Vec<(usize, String)> = self
            .followed
            .iter()
            .map(|(k, f)| (f.users.len(), k.clone()))
            .collect();
        by.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, k) in by.into_iter().skip(self.max_items / 2) {
            self.followed.remove(&k);
            self.dropped += 1;
        }
    }

    /// Solves the followed items with at least `min_users` users, new ones and
    /// those whose users grew by a quarter since their last solve; `factors`
    /// appends a user's current factors to the buffer it is given (`false`:
    /// the user is not known, and left out).
    pub fn solve(&mut self, factors: impl Fn(&str, &mut Vec<f32>) -> bool + Sync) -> Solved {
        let Some(solver) = &self.solver else {
            return Solved::default();
        };
        let f = solver.factors();
        let due: Vec<(&String, &Followed)> = self
            .followed
            .iter()
            .filter(|(_, it)| {
                it.users.len() >= self.min_users
                    && (it.solved_with == 0 || it.users.len() * 4 >= it.solved_with * 5)
            })
            .collect();
        if due.is_empty() {
            return Solved::default();
        }
        let rows: Vec<(String, Domain, usize, Vec<f32>)> = due
            .into_par_iter()
            .map_init(
                || (solver.scratch(), Vec::new(), Vec::new()),
                |(scratch, fixed, weights), (item, it)| {
                    fixed.clear();
                    weights.clear();
                    for (u, w) in &it.users {
                        let at = fixed.len();
                        if factors(u, fixed) {
                            if fixed.len() != at + f {
                                fixed.truncate(at);
                                continue;
                            }
                            weights.push(*w);
                        }
                    }
                    if weights.len() < self.min_users {
                        return None;
                    }
                    let cols: Vec<u32> = (0..weights.len() as u32).collect();
                    let mut y = vec![0f32; f];
                    solver.solve(fixed, &cols, weights, &mut y, scratch);
                    y.iter()
                        .all(|v| v.is_finite())
                        .then(|| (item.clone(), it.domain, it.users.len(), y))
                },
            )
            .flatten()
            .collect();
        let mut out = Solved::default();
        if rows.is_empty() {
            return out;
        }
        let items = Arc::make_mut(&mut self.items);
        for (item, domain, users, y) in rows {
            // As many folded items as followed ones at most: past it, no new one.
            if items.row(&item).is_none() && items.len() >= self.max_items {
                self.dropped += 1;
                self.followed.remove(&item);
                continue;
            }
            let new = items.set(&item, domain, &y);
            let Some(it) = self.followed.get_mut(&item) else {
                continue;
            };
            it.solved_with = users;
            if new {
                if let Some(row) = items.row(&item) {
                    out.new
                        .push((row, it.users.iter().map(|(u, w)| (u.clone(), *w)).collect()));
                }
            } else {
                out.updated += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
