//! What users watched since their last fold-in: the items of each durable
//! batch's pair changes, noted on the champion's rows (and the folded items')
//! the moment the batch is committed, before the fold-in has re-solved the
//! users. Lists leave those items out at once; the user's re-solved factors
//! follow with the next fold-in round, which clears the rows it covered.
//!
//! Bounded: at most `max_users` users (the least recently noted give way) and
//! [`MAX_ROWS`] rows a user; a new champion starts empty (rows are its own).

use rustc_hash::FxHashMap;

/// Rows held for one user at most (past it, newer rows wait for the fold-in).
pub const MAX_ROWS: usize = 4096;

#[derive(Debug, Default)]
pub struct RecentSeen {
    model: Option<u64>,
    users: FxHashMap<String, Recent>,
    /// Rows not noted (past [`MAX_ROWS`] for their user), and users let go
    /// past the user bound.
    dropped: u64,
}

#[derive(Debug)]
struct Recent {
    /// (row, sequence number of the batch that committed it), in note order.
    rows: Vec<(u32, u64)>,
    /// When last noted (for the bound).
    tick: u64,
}

impl RecentSeen {
    /// Keeps what is held if it is on `model`'s rows, else drops it (the
    /// count of what was dropped stays).
    pub fn follow(&mut self, model: u64) {
        if self.model != Some(model) {
            self.users.clear();
            self.model = Some(model);
        }
    }

    /// `user` has `row` of `model` since the batch `seq`; `tick` orders the
    /// notes (increasing: the bound lets the least recent go).
    pub fn note(&mut self, model: u64, user: &str, row: u32, seq: u64, tick: u64) {
        self.follow(model);
        if let Some(r) = self.users.get_mut(user) {
            r.tick = tick;
            if r.rows.iter().any(|&(have, _)| have == row) {
                return;
            }
            if r.rows.len() >= MAX_ROWS {
                self.dropped += 1;
                return;
            }
            r.rows.push((row, seq));
            return;
        }
        self.users.insert(
            user.to_string(),
            Recent {
                rows: vec![(row, seq)],
                tick,
            },
        );
    }

    /// The fold-in served `user` with every batch below `upto` against
    /// `model`: the rows those batches noted are in their folded state now.
    pub fn covered(&mut self, model: u64, user: &str, upto: u64) {
        self.follow(model);
        if let Some(r) = self.users.get_mut(user) {
            r.rows.retain(|&(_, seq)| seq >= upto);
            if r.rows.is_empty() {
                self.users.remove(user);
            }
        }
    }

    /// The users' last-noted ticks (the bound over all shards of
    /// [`super::live::Live`] picks the cut from them).
    pub fn ticks(&self, into: &mut Vec<u64>) {
        into.extend(self.users.values().map(|r| r.tick));
    }

    /// Lets go the users last noted at `below` or before (their items stay
    /// listed until their fold-in); answers how many.
    pub fn retain_newer(&mut self, below: u64) -> usize {
        let before = self.users.len();
        self.users.retain(|_, r| r.tick > below);
        let gone = before - self.users.len();
        self.dropped += gone as u64;
        gone
    }

    /// `user`'s rows of `model` noted and not yet folded in, sorted.
    pub fn rows(&self, model: u64, user: &str) -> Vec<u32> {
        if self.model != Some(model) {
            return Vec::new();
        }
        let mut rows: Vec<u32> = self
            .users
            .get(user)
            .map(|r| r.rows.iter().map(|&(row, _)| row).collect())
            .unwrap_or_default();
        rows.sort_unstable();
        rows
    }

    /// Users with rows waiting for their fold-in.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Rows not noted past [`MAX_ROWS`], plus users let go past the user bound.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The bound's cut: when `total` entries are past `max` by a tenth, the tick
/// at or below which entries give way so that the `max` most recent stay
/// (`ticks` lists every entry's, distinct per entry); else none.
pub fn eviction_cut(total: usize, max: usize, ticks: impl FnOnce(&mut Vec<u64>)) -> Option<u64> {
    if total <= max + max / 10 {
        return None;
    }
    let mut order = Vec::with_capacity(total);
    ticks(&mut order);
    let cut = order.len().checked_sub(max).filter(|c| *c > 0)?;
    order.select_nth_unstable(cut - 1);
    Some(order[cut - 1])
}

/// Past `max` entries by a tenth, keeps the `max` most recent (by `tick`,
/// distinct per entry) and answers how many gave way.
pub fn evict_least_recent<K: Eq + std::hash::Hash, V>(
    map: &mut FxHashMap<K, V>,
    max: usize,
    tick: impl Fn(&V) -> u64,
) -> usize {
    let Some(below) = eviction_cut(map.len(), max, |order| {
        order.extend(map.values().map(&tick))
    }) else {
        return 0;
    };
    let before = map.len();
    map.retain(|_, v| tick(v) > below);
    before - map.len()
}

/// `a` and `b` (each sorted) as one sorted list without repeats.
pub fn merge_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x <= y => {
                i += 1;
                if x == y {
                    j += 1;
                }
                x
            }
            (_, Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, None) => break,
        };
        if out.last() != Some(&next) {
            out.push(next);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_wait_until_a_fold_in_covers_their_batch() {
        let mut r = RecentSeen::default();
        r.note(1, "u", 7, 10, 1);
        r.note(1, "u", 3, 11, 2);
        r.note(1, "u", 7, 12, 3);
        assert_eq!(r.rows(1, "u"), vec![3, 7]);
        assert!(r.rows(2, "u").is_empty(), "another champion's rows");
        r.covered(1, "u", 11);
        assert_eq!(r.rows(1, "u"), vec![3], "batch 10 folded in, 11 not yet");
        r.covered(1, "u", 12);
        assert!(r.is_empty());
        r.note(1, "v", 1, 13, 4);
        r.note(2, "w", 1, 14, 5);
        assert!(r.rows(1, "v").is_empty(), "a new champion starts empty");
        assert_eq!(r.rows(2, "w"), vec![1]);
    }

    #[test]
    fn users_and_rows_are_bounded() {
        let mut r = RecentSeen::default();
        for u in 0..100 {
            r.note(1, &format!("u{u}"), 1, u, u + 1);
        }
        let mut ticks = Vec::new();
        r.ticks(&mut ticks);
        assert_eq!(ticks.len(), 100);
        assert_eq!(r.retain_newer(50), 50, "ticks 1..=50 go");
        assert_eq!(r.len(), 50);
        assert_eq!(r.dropped(), 50);
        assert!(r.rows(1, "u10").is_empty(), "the least recent went");
        assert_eq!(r.rows(1, "u99"), vec![1]);
        for row in 0..(MAX_ROWS as u32 + 10) {
            r.note(1, "big", row, 1, 1000 + u64::from(row));
        }
        assert_eq!(r.rows(1, "big").len(), MAX_ROWS);
        assert_eq!(r.dropped(), 60);
    }

    #[test]
    fn merging_keeps_order_and_drops_repeats() {
        assert_eq!(merge_sorted(&[1, 4, 9], &[2, 4, 10]), vec![1, 2, 4, 9, 10]);
        assert_eq!(merge_sorted(&[], &[3]), vec![3]);
        assert_eq!(merge_sorted(&[3], &[]), vec![3]);
        assert!(merge_sorted(&[], &[]).is_empty());
    }
}
