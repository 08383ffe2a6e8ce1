//! Claims: which member of a consumer group owes which records to its store.
//!
//! Two members keep two stores, and a store write and a group commit cannot be
//! one atomic step. Writing first and committing after leaves a window (written,
//! not yet committed) in which a killed member's records are stored again by
//! their next owner. So on a broker that keeps commit metadata and fences stale
//! generations (Apache Kafka, the embedded broker), a member *claims* a batch
//! before it writes it: it commits the batch's end offset synchronously, with
//! metadata naming who claimed the partition from which offset on (a [`Chain`]).
//! The next owner starts after the claim; a claim the broker refused (a
//! rebalance began) is dropped and read again. A member killed between its
//! claim and its write finds, when it starts again, the claims the chain
//! attributes to it beyond its store's offset (its *debt*), and reads them back
//! before anything else. Each record is then stored by exactly one member.

/// Version tag of the metadata format.
const TAG: &str = "pp1";
/// Owners remembered per partition (oldest forgotten first): a member whose
/// last ownership is further back than this cannot find a debt there.
pub const MAX_OWNERS: usize = 32;

/// Who claimed a partition from which offset on: `(member, since)` in offset
/// order. An owner's claims run from its `since` to the next owner's (the last
/// one's to the committed offset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    owners: Vec<(String, i64)>,
}

impl Chain {
    /// Reads commit metadata; anything not written by [`Chain::encode`] (empty,
    /// another client's) is an empty chain.
    pub fn parse(metadata: &str) -> Chain {
        let mut parts = metadata.split(' ');
        if parts.next() != Some(TAG) {
            return Chain::default();
        }
        let mut owners: Vec<(String, i64)> = Vec::new();
        for part in parts {
            let Some((member, since)) = part.rsplit_once('@') else {
                return Chain::default();
            };
            let Ok(since) = since.parse::<i64>() else {
                return Chain::default();
            };
            if member.is_empty() || owners.last().is_some_and(|(_, s)| *s > since) {
                return Chain::default();
            }
            owners.push((member.to_string(), since));
        }
        Chain { owners }
    }

    pub fn encode(&self) -> String {
        let mut s = String::from(TAG);
        for (m, since) in &self.owners {
            s.push(' ');
            s.push_str(m);
            s.push('@');
            s.push_str(&since.to_string());
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// `member` claims from `from` on. Owners recorded past `from` are dropped
    /// (the group's offsets were moved back: that history was rewritten).
    pub fn claim(&mut self, member: &str, from: i64) {
        while self.owners.last().is_some_and(|(_, s)| *s > from) {
            self.owners.pop();
        }
        if self.owners.last().is_none_or(|(m, _)| m != member) {
            self.owners.push((member.to_string(), from));
        }
        if self.owners.len() > MAX_OWNERS {
            let extra = self.owners.len() - MAX_OWNERS;
            self.owners.drain(..extra);
        }
    }

    /// The member that claimed `offset`, given the committed offset (records at
    /// or past it are claimed by nobody yet).
    pub fn owner(&self, offset: i64, committed: i64) -> Option<&str> {
        if offset >= committed {
            return None;
        }
        self.owners
            .iter()
            .rev()
            .find(|(_, since)| *since <= offset)
            .map(|(m, _)| m.as_str())
    }

    /// The records `member` claimed in its last ownership and its store does not
    /// hold (`stored`: the store's next offset): `[from, to)`, if any.
    pub fn debt(&self, member: &str, stored: Option<i64>, committed: i64) -> Option<(i64, i64)> {
        let i = self.owners.iter().rposition(|(m, _)| m == member)?;
        let since = self.owners[i].1;
        let end = self
            .owners
            .get(i + 1)
            .map_or(committed, |(_, next)| *next)
            .min(committed);
        let from = stored.map_or(since, |s| s.max(since));
        (from < end).then_some((from, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(owners: &[(&str, i64)]) -> Chain {
        let mut c = Chain::default();
        for (m, s) in owners {
            c.claim(m, *s);
        }
        c
    }

    #[test]
    fn metadata_round_trips_and_foreign_metadata_is_empty() {
        let c = chain(&[("a1", 0), ("b2", 100), ("a1", 250)]);
        assert_eq!(c.encode(), "pp1 a1@0 b2@100 a1@250");
        assert_eq!(Chain::parse(&c.encode()), c);
        for foreign in ["", "pp1 x", "pp1 a@x", "pp2 a@1", "pp1 a@5 b@3", "pp1 @4"] {
            assert!(Chain::parse(foreign).is_empty(), "{foreign:?}");
        }
        assert!(Chain::parse("pp1").is_empty());
    }

    #[test]
    fn claims_extend_the_last_owner_and_forget_the_oldest() {
        let mut c = chain(&[("a", 0)]);
        c.claim("a", 50);
        assert_eq!(c.encode(), "pp1 a@0");
        for i in 0..(MAX_OWNERS as i64 + 5) {
            c.claim(if i % 2 == 0 { "b" } else { "a" }, 100 + i);
        }
        assert_eq!(c.owners.len(), MAX_OWNERS);
        assert_eq!(
            c.owners.last(),
            Some(&("b".to_string(), 100 + MAX_OWNERS as i64 + 4))
        );
        // Offsets moved back: later history goes.
        let mut c = chain(&[("a", 0), ("b", 100), ("a", 200)]);
        c.claim("b", 150);
        assert_eq!(c.encode(), "pp1 a@0 b@100");
    }

    #[test]
    fn owners_of_offsets() {
        let c = chain(&[("a", 10), ("b", 100), ("a", 250)]);
        assert_eq!(c.owner(5, 300), None);
        assert_eq!(c.owner(10, 300), Some("a"));
        assert_eq!(c.owner(99, 300), Some("a"));
        assert_eq!(c.owner(100, 300), Some("b"));
        assert_eq!(c.owner(299, 300), Some("a"));
        assert_eq!(c.owner(300, 300), None);
    }

    #[test]
    fn debts_are_claims_past_the_store() {
        // a claimed [0, 100) and stored up to 60 before it was killed; b went on.
        let c = chain(&[("a", 0), ("b", 100)]);
        assert_eq!(c.debt("a", Some(60), 400), Some((60, 100)));
        assert_eq!(c.debt("a", Some(100), 400), None);
        assert_eq!(c.debt("a", None, 400), Some((0, 100)));
        assert_eq!(c.debt("b", Some(400), 400), None);
        assert_eq!(c.debt("b", Some(350), 400), Some((350, 400)));
        assert_eq!(c.debt("c", None, 400), None);
        // a's store is from an earlier ownership: only its last one is owed.
        let c = chain(&[("a", 0), ("b", 100), ("a", 250)]);
        assert_eq!(c.debt("a", Some(100), 300), Some((250, 300)));
        assert_eq!(c.debt("a", Some(300), 300), None);
        // Nothing committed past the last owner's start: nothing owed.
        assert_eq!(c.debt("a", Some(100), 250), None);
    }
}
