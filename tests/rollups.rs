//! The durable rollups against figures the test computes itself from the
//! events it produced: a minute series (views, concurrent viewers, QoE) and
//! breakdowns over a range with filters, the same before and after the daemon
//! is SIGKILLed and started again, and after late events land in old minutes.

mod common;

use std::time::Duration;

use common::rollups::{check, MINUTE};
use common::{spawn_daemon, wait_status, Broker, Daemon};
use playpulse::domain::event::{Event, VideoEvent};
use playpulse::domain::timefmt::now_ms;
use playpulse::kafka;
use playpulse::synth::generate::{VideoGen, World};

fn send(bootstrap: &str, topic: &str, evs: &[VideoEvent]) {
    let p = kafka::producer(bootstrap, &Default::default()).unwrap();
    for (i, v) in evs.iter().enumerate() {
        let payload = playpulse::ingest::wire::to_json(&Event::Video(v.clone()));
        kafka::send(&p, topic, i.to_string().as_bytes(), &payload, None).unwrap();
    }
    kafka::flush(&p, Duration::from_secs(30)).unwrap();
}

/// `n` views from `start_ms`, one every `step_ms`.
fn views(n: usize, start_ms: i64, step_ms: i64, seed: u64) -> Vec<VideoEvent> {
    let mut g = VideoGen::new(World::new(400, 60, 7), seed, start_ms, step_ms);
    (0..n).map(|_| g.next_event()).collect()
}

fn start(dir: &std::path::Path, broker: &Broker, topic: &str, run: usize) -> (Daemon, String) {
    let mut d = spawn_daemon(
        dir,
        &broker.bootstrap,
        "rollups",
        &[("video", topic)],
        &[("PLAYPULSE_MODELS__ENABLED", "false")],
        run,
    );
    let s = wait_status(dir, &mut d, Duration::from_secs(60), |s| {
        s["http"].is_string()
    });
    (d, s["http"].as_str().unwrap().to_string())
}

fn wait_stored(dir: &std::path::Path, d: &mut Daemon, n: usize) {
    wait_status(dir, d, Duration::from_secs(120), |s| {
        common::stored_below_offsets(s) == n as i64 && s["ingest"]["batches_in_flight"] == 0
    });
}

#[test]
fn rollups_equal_the_events_across_a_kill_and_late_events() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "rollups-v";
    let broker = Broker::start(&[(topic, 2)]);
    // Five hours of views up to a few minutes ago, one every 4 s.
    let from = (now_ms() / MINUTE - 5 * 60) * MINUTE;
    let to = from + 5 * 60 * MINUTE;
    let mut events = views(4400, from + 1_000, 4_000, 1);
    events.retain(|v| v.timestamp_ms < to);
    let (mut d, addr) = start(dir.path(), &broker, topic, 0);
    send(&broker.bootstrap, topic, &events);
    wait_stored(dir.path(), &mut d, events.len());
    let before = check(&addr, &events, from, to);

    // Killed and started again: the same answers, from the store alone.
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(30));
    let (mut d, addr) = start(dir.path(), &broker, topic, 1);
    let after = check(&addr, &events, from, to);
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a["points"], b["points"], "the series across the restart");
        assert_eq!(a["rows"], b["rows"], "the breakdowns across the restart");
        assert_eq!(
            a["videos"], b["videos"],
            "the top titles across the restart"
        );
    }

    // Late views of the first hour, and more of the last: each lands in its own minute.
    let late = views(900, from + 2_000, 4_000, 2);
    send(&broker.bootstrap, topic, &late);
    events.extend(late);
    wait_stored(dir.path(), &mut d, events.len());
    check(&addr, &events, from, to);
    let s = common::ctl_status(dir.path());
    assert_eq!(
        s["store"]["rollups"]["late_dropped"].as_u64(),
        Some(0),
        "{s}"
    );
}
