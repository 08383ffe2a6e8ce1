//! Claims in a real consumer group (librdkafka's mock cluster, owned by the
//! test), through the daemon's own consumer and store:
//! - each batch is claimed in the group before it goes on (the group's committed
//!   offsets cover it before the store has it);
//! - a member that stops between a claim and its write reads exactly the claimed
//!   records back when it starts again, before anything else, and the
//!   partitions' next owner starts after the claims: every record reaches
//!   exactly one store;
//! - a claim the group refuses (a rebalance began; the connection dropped) is
//!   dropped and its records read again: none is skipped, none comes twice;
//! - the daemon claiming through a broker outage longer than its session: it
//!   stays up, waits to learn what became of its claims, rejoins, and stores
//!   every record exactly once;
//! - where the brokers drop commit metadata (tansu), offsets are committed
//!   after writes and at each hand-over, and a hand-over never moves the
//!   group's offset back;
//! - there, a batch read before a hand-over writes none of the handed-over
//!   partition's records: its next owner reads them, and stores them once.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use playpulse::config::{KafkaConfig, ValidationConfig};
use playpulse::domain::event::Kind;
use playpulse::domain::record::RawRecord;
use playpulse::ingest::pipeline::{parse_batch, validate_batch, Ownership};
use playpulse::ingest::validate::Validator;
use playpulse::kafka::{GroupCommit, Source, TopicKinds};
use playpulse::store::Store;
use rdkafka::types::RDKafkaRespErr;

const NS: &str = "claims-test";

fn source(bootstrap: &str, topic: &str, group: &str, store: &Store) -> Source {
    source_with(bootstrap, topic, group, store, Arc::default())
}

/// A source whose hand-overs fence `ownership`'s writes.
fn source_with(
    bootstrap: &str,
    topic: &str,
    group: &str,
    store: &Store,
    ownership: Arc<Ownership>,
) -> Source {
    let cfg = KafkaConfig {
        group_id: group.into(),
        topics: [(Kind::Video, topic.to_string())].into(),
        ..KafkaConfig::default()
    };
    let kinds = TopicKinds::new(&cfg.topics).unwrap();
    Source::new(bootstrap, &cfg, &kinds, store.view(), NS, ownership).unwrap()
}

/// The next non-empty batch (the first polls join the group).
fn batch(src: &mut Source, max: usize) -> Vec<RawRecord> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = src.next_batch(max, Duration::from_millis(100));
        if !b.is_empty() {
            return b;
        }
        assert!(Instant::now() < deadline, "no records within 60 s");
    }
}

/// Batches until `n` records came.
fn take(src: &mut Source, n: usize, max: usize) -> Vec<RawRecord> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(batch(src, max));
    }
    out
}

fn positions(rs: &[RawRecord]) -> Vec<(i32, i64)> {
    rs.iter().map(|r| (r.pos.partition, r.pos.offset)).collect()
}

/// Parses, validates and prepares records, as the pipeline does.
fn prepare(rs: Vec<RawRecord>) -> playpulse::store::Prepared {
    let kinds = TopicKinds::new(&[(Kind::Video, rs[0].pos.topic.to_string())].into()).unwrap();
    let v = Validator::new(&ValidationConfig::default());
    playpulse::store::prepare(validate_batch(&v, parse_batch(&kinds, rs)))
}

/// Parses, validates and stores records, as the pipeline does.
fn store_records(store: &mut Store, rs: Vec<RawRecord>) {
    store.apply(NS, prepare(rs)).unwrap();
}

/// Every position a store holds, as an event or a dead letter.
fn stored_positions(store: &Store) -> Vec<(i32, i64)> {
    let mut out: Vec<(i32, i64)> = store
        .events()
        .map(|e| {
            let (pos, _) = e.unwrap();
            (pos.partition, pos.offset)
        })
        .collect();
    out.extend(
        store
            .dead_letters()
            .unwrap()
            .iter()
            .map(|l| (l.partition, l.offset)),
    );
    out.sort_unstable();
    out
}

fn all_positions(partitions: i32, per: &[(i32, i64)]) -> BTreeSet<(i32, i64)> {
    (0..partitions)
        .flat_map(|p| {
            let n = per.iter().find(|(q, _)| *q == p).map_or(0, |(_, n)| *n);
            (0..n).map(move |o| (p, o))
        })
        .collect()
}

/// High watermark per partition.
fn highs(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<(i32, i64)> {
    let w = GroupWatch::new(bootstrap, group, &[(topic, partitions)]);
    (0..partitions).map(|p| (p, w.high(topic, p))).collect()
}

fn open(dir: &Path) -> Store {
    Store::open(dir, 16).unwrap()
}

#[test]
fn a_member_stopped_between_claim_and_write_reads_its_claim_back_and_nobody_else_stores_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (topic, group) = ("claims.video", "claims-group");
    let broker = Broker::start(&[(topic, 2)]);
    produce_video(&broker.bootstrap, topic, 600, 0.02, 7);
    let want = all_positions(2, &highs(&broker.bootstrap, group, topic, 2));
    assert_eq!(want.len(), 600);

    // A claims two batches, stores the first and stops before the second is written.
    let mut store_a = open(&tmp.path().join("a"));
    let mut a = source(&broker.bootstrap, topic, group, &store_a);
    let first = batch(&mut a, 100);
    assert_eq!(a.claims.mode(), Some(GroupCommit::ClaimBeforeWrite));
    let second = batch(&mut a, 100);
    let claimed = first.len() + second.len();
    let watch = GroupWatch::new(&broker.bootstrap, group, &[(topic, 2)]);
    assert_eq!(
        watch.progress().0,
        claimed as i64,
        "the group's commits cover both batches before the second is written"
    );
    let unwritten: BTreeSet<(i32, i64)> = positions(&second).into_iter().collect();
    store_records(&mut store_a, first);
    drop(a);

    // B, a new member, owns everything now: it starts after A's claims.
    let mut store_b = open(&tmp.path().join("b"));
    let mut b = source(&broker.bootstrap, topic, group, &store_b);
    let rest = take(&mut b, 600 - claimed, 100);
    assert_eq!(rest.len(), 600 - claimed, "B read past the end");
    assert!(
        positions(&rest).iter().all(|p| !unwritten.contains(p)),
        "B read records A had claimed"
    );
    store_records(&mut store_b, rest);

    // A starts again: before anything else it reads back exactly what it claimed
    // and did not write.
    let mut a = source(&broker.bootstrap, topic, group, &store_a);
    let back = take(&mut a, unwritten.len(), 1000);
    assert_eq!(
        positions(&back).into_iter().collect::<BTreeSet<_>>(),
        unwritten
    );
    assert_eq!(back.len(), unwritten.len(), "a record read back twice");
    assert_eq!(a.claims.recovered(), unwritten.len() as u64);
    store_records(&mut store_a, back);
    drop(a);
    drop(b);

    // Every record in exactly one store.
    let (in_a, in_b) = (stored_positions(&store_a), stored_positions(&store_b));
    let union: BTreeSet<(i32, i64)> = in_a.iter().chain(&in_b).copied().collect();
    assert_eq!(
        in_a.len() + in_b.len(),
        union.len(),
        "a record in both stores"
    );
    assert_eq!(union, want);
    assert_eq!(in_a.len(), claimed);
}

#[test]
fn refused_claims_are_read_again_never_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let (topic, group) = ("refused.video", "refused-group");
    let broker = Broker::start(&[(topic, 3)]);
    produce_video(&broker.bootstrap, topic, 900, 0.0, 11);
    let want = all_positions(3, &highs(&broker.bootstrap, group, topic, 3));

    let store = open(&tmp.path().join("a"));
    let mut a = source(&broker.bootstrap, topic, group, &store);
    let mut got = batch(&mut a, 50);
    assert_eq!(a.claims.mode(), Some(GroupCommit::ClaimBeforeWrite));
    // The group refuses a claim (a rebalance began), then the connection drops
    // during one (the member cannot know whether it landed until it asks).
    broker.fail_commits(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS]);
    got.extend(batch(&mut a, 50));
    broker.fail_commits(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT]);
    while got.len() < want.len() {
        got.extend(batch(&mut a, 50));
    }
    assert!(a.claims.refused() >= 1, "no claim was refused");
    let pos = positions(&got);
    let unique: BTreeSet<(i32, i64)> = pos.iter().copied().collect();
    assert_eq!(pos.len(), unique.len(), "a record went on twice");
    assert_eq!(unique, want);
    let watch = GroupWatch::new(&broker.bootstrap, group, &[(topic, 3)]);
    assert_eq!(watch.progress(), (900, 900));
}

#[test]
fn a_daemon_claiming_through_a_broker_outage_stores_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = ("outage.video", "outage-group");
    let broker = Broker::start(&[(topic, 8)]);
    // A backlog (within what the mock broker keeps, ~12,000 records a
    // partition): the daemon has records fetched and unclaimed when it goes.
    let first = produce_video(&broker.bootstrap, topic, 60_000, 0.01, 31);
    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        group,
        &[("video", topic)],
        &[
            ("PLAYPULSE_INGEST__BATCH_SIZE", "300"),
            ("PLAYPULSE_MODELS__ENABLED", "false"),
        ],
        0,
    );
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        stored_below_offsets(s) >= 2_000
    });
    assert_eq!(s["group"]["commit"], "claim_before_write", "{s}");
    // Down for longer than the session (10 s): the member is out of the group.
    broker.down();
    wait_status(dir.path(), &mut d, Duration::from_secs(30), |s| {
        s["broker"]["reachable"] == false
    });
    std::thread::sleep(Duration::from_secs(15));
    d.assert_alive();
    broker.up();
    let second = produce_video(&broker.bootstrap, topic, 5_000, 0.01, 32);
    wait_status(dir.path(), &mut d, Duration::from_secs(120), |s| {
        stored_below_offsets(s) == 65_000 && s["broker"]["reachable"] == true
    });
    let log = d.log_text();
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        d.log_text()
    );
    // Claims were tried while it was down, and settled once it was back: a
    // claim the group holds keeps its records, one it does not is read again
    // (which of the two depends on when the broker went; the records are
    // stored once either way, as the check below shows).
    assert!(
        log.contains("asking whether it landed") && log.contains("claims settled"),
        "{log}"
    );
    let mut all = first;
    all.valid.extend(second.valid);
    all.bad_reasons.extend(second.bad_reasons);
    check_exactly_once(dir.path(), &all);
}

/// Polls `src` until the group assigns it a partition; no record comes.
fn joined(src: &mut Source) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while src.assignment.lock().unwrap().is_empty() {
        let b = src.next_batch(100, Duration::from_millis(100));
        assert!(
            b.is_empty(),
            "records past the group's commit: {:?}",
            positions(&b)
        );
        assert!(Instant::now() < deadline, "not assigned within 60 s");
    }
}

#[test]
fn a_member_given_a_partition_back_hands_it_over_without_moving_the_group_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (topic, group) = ("after-write.video", "after-write-group");
    let broker = Tansu::start(&tmp.path().join("tansu"), "pp-after-write", &[(topic, 1)]);
    produce_video(&broker.bootstrap, topic, 200, 0.0, 11);
    let watch = GroupWatch::new(&broker.bootstrap, group, &[(topic, 1)]);

    // A stores the first batch and leaves: its hand-over commits its end.
    let mut store_a = open(&tmp.path().join("a"));
    let mut a = source(&broker.bootstrap, topic, group, &store_a);
    let first = batch(&mut a, 80);
    assert_eq!(a.claims.mode(), Some(GroupCommit::AfterWrite));
    let k = first.len() as i64;
    store_records(&mut store_a, first);
    drop(a);
    assert_eq!(
        watch.progress().0,
        k,
        "A's hand-over commits what it stored"
    );

    // B stores the rest and leaves.
    let mut store_b = open(&tmp.path().join("b"));
    let mut b = source(&broker.bootstrap, topic, group, &store_b);
    let rest = take(&mut b, 200 - k as usize, 1000);
    assert!(
        positions(&rest).iter().all(|(_, o)| *o >= k),
        "B read A's records"
    );
    store_records(&mut store_b, rest);
    drop(b);
    assert_eq!(watch.progress().0, 200);

    // A gets the partition back at the group's commit (its store ends at k),
    // stores nothing, and hands it over again: the group stays at 200.
    let mut a = source(&broker.bootstrap, topic, group, &store_a);
    joined(&mut a);
    drop(a);
    assert_eq!(
        watch.progress().0,
        200,
        "A's hand-over moved the group back to its own stored offset"
    );

    // A new member reads only what came after.
    produce_video(&broker.bootstrap, topic, 50, 0.0, 12);
    let store_c = open(&tmp.path().join("c"));
    let mut c = source(&broker.bootstrap, topic, group, &store_c);
    let next = take(&mut c, 50, 1000);
    let offsets: Vec<i64> = positions(&next).into_iter().map(|(_, o)| o).collect();
    assert_eq!(
        offsets,
        (200..250).collect::<Vec<_>>(),
        "C stored again what B holds"
    );
    drop(c);
    assert_eq!(
        stored_positions(&store_a).len() as i64 + stored_positions(&store_b).len() as i64,
        200
    );
}

#[test]
fn a_batch_read_before_a_hand_over_leaves_the_partition_to_its_next_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let (topic, group) = ("fence.video", "fence-group");
    let broker = Tansu::start(&tmp.path().join("tansu"), "pp-fence", &[(topic, 1)]);
    produce_video(&broker.bootstrap, topic, 200, 0.02, 13);
    let want = all_positions(1, &highs(&broker.bootstrap, group, topic, 1));
    assert_eq!(want.len(), 200);
    let watch = GroupWatch::new(&broker.bootstrap, group, &[(topic, 1)]);

    // A stores its first batch; its second is on its way to the store when A
    // hands the partition over.
    let mut store_a = open(&tmp.path().join("a"));
    let fence = Arc::new(Ownership::default());
    let mut a = source_with(&broker.bootstrap, topic, group, &store_a, fence.clone());
    let first = batch(&mut a, 60);
    assert_eq!(a.claims.mode(), Some(GroupCommit::AfterWrite));
    let k = first.len();
    let w = fence
        .write(&mut store_a, NS, a.epoch(), prepare(first))
        .unwrap();
    assert_eq!(
        (
            w.committed.report.stored + w.committed.report.rejected,
            w.dropped
        ),
        (k as u64, 0)
    );
    let second = batch(&mut a, 60);
    let (n2, read_in) = (second.len(), a.epoch());
    let late = prepare(second);
    drop(a);
    assert_eq!(
        watch.progress().0,
        k as i64,
        "A's hand-over commits what it stored"
    );
    let w = fence.write(&mut store_a, NS, read_in, late).unwrap();
    assert_eq!(
        (
            w.dropped,
            w.committed.report.stored + w.committed.report.rejected
        ),
        (n2 as u64, 0),
        "A wrote records of a partition it had handed over"
    );
    assert_eq!(stored_positions(&store_a).len(), k);

    // B starts at A's hand-over and stores the rest, the second batch too.
    let mut store_b = open(&tmp.path().join("b"));
    let mut b = source(&broker.bootstrap, topic, group, &store_b);
    let rest = take(&mut b, 200 - k, 1000);
    assert_eq!(
        positions(&rest).first().map(|(_, o)| *o),
        Some(k as i64),
        "B starts where A's store ends"
    );
    store_records(&mut store_b, rest);
    drop(b);
    let mut all = stored_positions(&store_a);
    all.extend(stored_positions(&store_b));
    all.sort_unstable();
    let unique: BTreeSet<(i32, i64)> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a record stored twice");
    assert_eq!(unique, want, "every record stored");
}
