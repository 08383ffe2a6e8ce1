//! The ingest path against an independent broker: tansu (a Kafka-protocol
//! broker written apart from librdkafka, SQLite storage), installed by
//! tests/run.sh into ~/.cache/playpulse. The same exactly-once checks as with the
//! embedded broker: a full run, and a SIGKILL mid-stream then restart.

mod common;

use std::time::Duration;

use common::*;

const TOPIC: &str = "tansu.video";
const PARTITIONS: i32 = 4;

fn daemon(dir: &std::path::Path, t: &Tansu, group: &str, run: usize) -> Daemon {
    spawn_daemon(
        dir,
        &t.bootstrap,
        group,
        &[("video", TOPIC)],
        &[
            ("PLAYPULSE_INGEST__BATCH_SIZE", "500"),
            ("PLAYPULSE_MODELS__ENABLED", "false"),
        ],
        run,
    )
}

#[test]
fn ingest_through_tansu_stores_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tansu::start(
        &dir.path().join("tansu"),
        "pp-tansu-1",
        &[(TOPIC, PARTITIONS)],
    );
    let produced = produce_video(&t.bootstrap, TOPIC, 20_000, 0.01, 21);
    let watch = GroupWatch::new(&t.bootstrap, "tansu-e2e", &[(TOPIC, PARTITIONS)]);
    let mut d = daemon(dir.path(), &t, "tansu-e2e", 0);
    watch.wait_until(&mut d, Duration::from_secs(180), |c, h| {
        c == h && h == 20_000
    });
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        d.log_text()
    );
    assert!(d.log_text().contains("using brokers"), "{}", d.log_text());
    check_exactly_once(dir.path(), &produced);
}

#[test]
fn sigkill_mid_stream_through_tansu_then_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tansu::start(
        &dir.path().join("tansu"),
        "pp-tansu-2",
        &[(TOPIC, PARTITIONS)],
    );
    let total = 30_000i64;
    let produced = produce_video(&t.bootstrap, TOPIC, total as usize, 0.01, 22);
    let mut d = daemon(dir.path(), &t, "tansu-kill", 0);
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(180), |s| {
        stored_below_offsets(s) >= total / 10
    });
    let c = stored_below_offsets(&s);
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    assert!(
        c < total,
        "the kill must land mid-stream (stored {c} of {total})"
    );
    drop(d);
    let mut d = daemon(dir.path(), &t, "tansu-kill", 1);
    wait_status(dir.path(), &mut d, Duration::from_secs(180), |s| {
        stored_below_offsets(s) == total
    });
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        d.log_text()
    );
    check_exactly_once(dir.path(), &produced);
}
