//! Records over `kafka.max_record_bytes`: a producer of ours refuses one at
//! once with an error naming the limit; one that reaches the daemon (a broker
//! that allows more) is dead-lettered with its position and first bytes, and
//! takes nothing with it: every record before and after it is stored.

mod common;

use std::time::Duration;

use common::*;
use playpulse::config::KafkaConfig;
use playpulse::domain::event::Event;
use playpulse::kafka;
use playpulse::synth::generate::{VideoGen, World};

#[test]
fn an_oversized_record_is_dead_lettered_alone() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[("ov.video", 2)]);
    // Our producers keep to the limit: a 2 MiB record is refused, by name.
    let ours = kafka::producer(&broker.bootstrap, &KafkaConfig::default()).unwrap();
    let big = vec![b'x'; 2 << 20];
    let e = kafka::send(&ours, "ov.video", b"k", &big, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("max_record_bytes") && e.contains("2097152 bytes"),
        "{e}"
    );

    // Another client, allowed 3 MiB, sends one between ordinary records.
    let cfg = KafkaConfig {
        max_record_bytes: 3 << 20,
        ..KafkaConfig::default()
    };
    let theirs = kafka::producer(&broker.bootstrap, &cfg).unwrap();
    let mut g = VideoGen::new(World::new(50, 20, 4), 4, 1_735_689_600_000, 50);
    let mut valid = Vec::new();
    for i in 0..400 {
        if i == 150 {
            let mut payload = br#"{"user_id":"huge","pad":""#.to_vec();
            payload.extend(std::iter::repeat_n(b'y', (2 << 20) + 17));
            payload.extend_from_slice(b"\"}");
            kafka::send(&theirs, "ov.video", b"same-key", &payload, None).unwrap();
        }
        let ev = g.next_event();
        let payload = playpulse::ingest::wire::to_json(&Event::Video(ev.clone()));
        // One key: every record in one partition, the big one among them.
        kafka::send(&theirs, "ov.video", b"same-key", &payload, None).unwrap();
        valid.push(ev);
    }
    kafka::flush(&theirs, Duration::from_secs(30)).unwrap();

    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        "ov",
        &[("video", "ov.video")],
        &[("PLAYPULSE_MODELS__ENABLED", "false")],
        0,
    );
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        stored_below_offsets(s) == 401
    });
    assert_eq!(s["ingest"]["lag"], 0, "{s}");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    let store = playpulse::store::Store::open(&dir.path().join("data"), 16).unwrap();
    assert_eq!(store.events().count(), 400, "every other record stored");
    let dead = store.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    let d0 = &dead[0];
    assert_eq!(d0.rejection.reason, "record_too_large");
    assert_eq!(d0.rejection.field.as_deref(), Some("record"));
    assert_eq!(d0.rejection.value.as_deref(), Some("2097196 bytes"));
    assert!(d0.rejection.message.contains("kafka.max_record_bytes"));
    assert_eq!(d0.offset, 150);
    let kept = d0.raw.as_deref().unwrap();
    assert!(kept.starts_with(r#"{"user_id":"huge""#) && kept.len() == 4096);
    assert_pairs_match(&store, &valid);
}
