//! A member the group coordinator left without partitions while records wait.
//!
//! Some coordinators can settle a group with partitions owned by nobody: tansu
//! 0.6 expires a dead leader while a follower's SyncGroup is in hand, makes
//! that follower the leader, and keeps the empty assignment it sent; the group
//! then heartbeats happily with every partition unassigned. Nothing is read
//! and nothing says why. The watch notices it and rejoins.
//!
//! The sign: this member has held nothing for [`EMPTY_FOR`], and on two looks
//! [`CHECK_EVERY`] apart some subscribed partition has records past the
//! group's committed offset and that offset did not move — nobody reads it.
//! (A live owner commits what it stores within a batch.) The member then
//! leaves the group and subscribes again, so the coordinator forms a new
//! generation. A rejoin that did not help doubles the wait before the next
//! one (up to [`MAX_BACKOFF`]), so a group whose owner is only stalled is not
//! churned.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;

use super::group::group_commits;

/// How long a member holds nothing before the group's progress is looked at.
pub(super) const EMPTY_FOR: Duration = Duration::from_secs(20);
/// The pause between two looks.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(10);
/// The longest wait between two rejoins that did not help.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long one question to the brokers may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Per subscribed partition with records past its commit: the committed
/// offset (None when the group never committed one).
pub(super) type Waiting = HashMap<(String, i32), Option<i64>>;

/// When to look, and what the last look saw.
#[derive(Debug)]
pub(super) struct OrphanWatch {
    empty_since: Option<Instant>,
    last_check: Option<Instant>,
    previous: Option<Waiting>,
    /// How long to hold nothing before a look (grows after each rejoin).
    wait: Duration,
}

impl Default for OrphanWatch {
    fn default() -> Self {
        OrphanWatch {
            empty_since: None,
            last_check: None,
            previous: None,
            wait: EMPTY_FOR,
        }
    }
}

impl OrphanWatch {
    /// Whether to look now: the member has held nothing for the current wait
    /// and was not looked at in the last [`CHECK_EVERY`]. An assignment
    /// starts everything over.
    pub(super) fn due(&mut self, empty: bool, now: Instant) -> bool {
        if !empty {
            *self = OrphanWatch::default();
            return false;
        }
        let since = *self.empty_since.get_or_insert(now);
        if now.duration_since(since) < self.wait
            || self
                .last_check
                .is_some_and(|t| now.duration_since(t) < CHECK_EVERY)
        {
            return false;
        }
        self.last_check = Some(now);
        true
    }

    /// Records a look; answers the partitions nobody read since the previous
    /// look (non-empty: rejoin now — the watch then waits twice as long
    /// before the next rejoin).
    pub(super) fn stuck(&mut self, waiting: Waiting, now: Instant) -> Vec<(String, i32)> {
        let mut stuck: Vec<(String, i32)> = match &self.previous {
            Some(before) => waiting
                .iter()
                .filter(|(k, c)| before.get(*k) == Some(c))
                .map(|(k, _)| k.clone())
                .collect(),
            None => Vec::new(),
        };
        stuck.sort();
        if stuck.is_empty() {
            self.previous = Some(waiting);
        } else {
            self.empty_since = Some(now);
            self.last_check = None;
            self.previous = None;
            self.wait = (self.wait * 2).min(MAX_BACKOFF);
        }
        stuck
    }
}

/// The subscribed partitions with records past the group's committed offset.
pub(super) fn waiting<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[String],
) -> KafkaResult<Waiting> {
    let mut parts: Vec<(String, i32)> = Vec::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), ASK_TIMEOUT)?;
        for mt in md.topics().iter().filter(|mt| mt.error().is_none()) {
            parts.extend(mt.partitions().iter().map(|p| (t.clone(), p.id())));
        }
    }
    let commits = group_commits(consumer, parts.iter().map(|(t, p)| (t.as_str(), *p)))?;
    let mut out = Waiting::new();
    for (t, p) in parts {
        let (low, high) = consumer.fetch_watermarks(&t, p, ASK_TIMEOUT)?;
        let committed = commits.get(&(t.clone(), p)).and_then(|(c, _)| *c);
        if high > committed.unwrap_or(low).max(low) {
            out.insert((t, p), committed);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(parts: &[(i32, Option<i64>)]) -> Waiting {
        parts
            .iter()
            .map(|(p, c)| (("t".to_string(), *p), *c))
            .collect()
    }

    #[test]
    fn looks_only_after_holding_nothing_for_a_while_and_then_at_a_pace() {
        let t0 = Instant::now();
        let mut w = OrphanWatch::default();
        assert!(!w.due(true, t0));
        assert!(!w.due(true, t0 + EMPTY_FOR - Duration::from_millis(1)));
        assert!(w.due(true, t0 + EMPTY_FOR));
        assert!(!w.due(true, t0 + EMPTY_FOR + Duration::from_secs(1)));
        assert!(w.due(true, t0 + EMPTY_FOR + CHECK_EVERY));
        // An assignment arrives: the clock starts over.
        assert!(!w.due(false, t0 + EMPTY_FOR + CHECK_EVERY));
        assert!(!w.due(true, t0 + EMPTY_FOR + CHECK_EVERY + Duration::from_secs(1)));
    }

    #[test]
    fn a_partition_whose_commit_does_not_move_between_two_looks_is_stuck() {
        let t0 = Instant::now();
        let mut w = OrphanWatch::default();
        // First look: nothing to compare with.
        assert!(w.stuck(waiting(&[(0, Some(10)), (1, None)]), t0).is_empty());
        // Partition 0 moved, 1 has no commit yet but moved nowhere either.
        let s = w.stuck(waiting(&[(0, Some(20)), (1, None)]), t0);
        assert_eq!(s, vec![("t".to_string(), 1)]);
        // After a rejoin the watch waits twice as long, and compares afresh.
        assert!(!w.due(true, t0 + EMPTY_FOR));
        assert!(w.due(true, t0 + EMPTY_FOR * 2));
        assert!(w.stuck(waiting(&[(1, None)]), t0).is_empty());
    }

    #[test]
    fn partitions_that_keep_moving_or_catch_up_are_never_stuck() {
        let t0 = Instant::now();
        let mut w = OrphanWatch::default();
        for c in 0..5 {
            assert!(w.stuck(waiting(&[(0, Some(c * 100))]), t0).is_empty());
        }
        assert!(w.stuck(waiting(&[]), t0).is_empty());
        assert!(w.stuck(waiting(&[(0, Some(400))]), t0).is_empty());
    }

    #[test]
    fn the_wait_between_rejoins_is_bounded() {
        let t0 = Instant::now();
        let mut w = OrphanWatch::default();
        for _ in 0..20 {
            w.stuck(waiting(&[(0, Some(1))]), t0);
            w.stuck(waiting(&[(0, Some(1))]), t0);
        }
        assert_eq!(w.wait, MAX_BACKOFF);
    }
}
