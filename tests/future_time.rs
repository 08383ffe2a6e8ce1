//! An event dated far in the future (allowed by validation's skew) is stored,
//! but counted apart by live analytics (`future_events`): it does not move the
//! windows, and every real event after it still counts.

mod common;

use std::time::Duration;

use common::*;
use playpulse::config::KafkaConfig;
use playpulse::domain::event::Event;
use playpulse::kafka;
use playpulse::synth::generate::{VideoGen, World};
use serde_json::Value;

#[test]
fn an_event_from_the_future_does_not_blank_the_live_windows() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[("ft.video", 1)]);
    let (mut d, addr) = quiet_daemon_with(
        dir.path(),
        &broker,
        &[("video", "ft.video")],
        &[("PLAYPULSE_MODELS__ENABLED", "false")],
    );
    let now = playpulse::domain::timefmt::now_ms();
    let mut g = VideoGen::new(World::new(50, 20, 3), 3, now - 120_000, 50);
    let p = kafka::producer(&broker.bootstrap, &KafkaConfig::default()).unwrap();
    let send = |ev: &playpulse::domain::event::VideoEvent| {
        let payload = playpulse::ingest::wire::to_json(&Event::Video(ev.clone()));
        kafka::send(&p, "ft.video", b"k", &payload, None).unwrap();
    };
    for _ in 0..200 {
        send(&g.next_event());
    }
    let mut future = g.next_event();
    future.timestamp_ms = now + 20 * 3_600_000;
    send(&future);
    for _ in 0..300 {
        send(&g.next_event());
    }
    kafka::flush(&p, Duration::from_secs(30)).unwrap();
    wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        s["ingest"]["stored"].as_u64() == Some(501)
    });
    let get = |path: &str| -> Value {
        let (code, body) = http_get(&addr, path);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let pipeline = get("/api/analytics?view=pipeline&minutes=60");
    assert_eq!(pipeline["future_events"], 1, "{pipeline}");
    assert_eq!(pipeline["late_events"], 0, "{pipeline}");
    let qoe = get("/api/analytics?view=qoe&dim=all&minutes=60");
    let views: u64 = qoe["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["views"].as_u64().unwrap())
        .sum();
    assert_eq!(views, 500, "every real event counts: {qoe}");
    let latest = playpulse::domain::timefmt::parse_timestamp_ms(
        qoe["latest_minute"].as_str().unwrap(),
        playpulse::domain::timefmt::TimePolicy::Strict,
    )
    .unwrap();
    assert!(
        latest <= now + 300_000,
        "the window stays at the wall clock: {qoe}"
    );
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}
