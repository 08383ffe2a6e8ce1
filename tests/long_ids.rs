//! Hostile ids: an id past `validation.max_id_bytes` (70 KB) or holding a
//! control character (a NUL) is dead-lettered with a reason naming the field;
//! nothing it could do to the store's keys happens — the store opens again,
//! and `eve`'s likes count only `eve`'s.

mod common;

use std::time::Duration;

use common::*;
use playpulse::config::KafkaConfig;
use playpulse::domain::event::{Event, MusicAction, MusicEvent};
use playpulse::kafka;

fn listen(user: &str, track: &str) -> Vec<u8> {
    playpulse::ingest::wire::to_json(&Event::Music(MusicEvent {
        user_id: user.into(),
        track_id: track.into(),
        event_type: MusicAction::Like,
        event_ts_ms: 1_735_689_600_000,
        session_id: "s1".into(),
        device: "web".into(),
    }))
}

#[test]
fn long_and_nul_ids_are_refused_by_name_and_never_reach_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[("li.music", 1), ("li.video", 1)]);
    let p = kafka::producer(&broker.bootstrap, &KafkaConfig::default()).unwrap();
    let long = "u".repeat(70_000);
    let mut video = playpulse::synth::generate::VideoGen::new(
        playpulse::synth::generate::World::new(10, 10, 1),
        1,
        1_735_689_600_000,
        50,
    )
    .next_event();
    video.video_id = "v".repeat(70_000).into();
    let video = playpulse::ingest::wire::to_json(&Event::Video(video));
    for payload in [
        listen("eve", "t1"),
        listen(&long, "t1"),
        listen("eve\u{0}x", "t1"),
        listen("eve", "t1\u{7}"),
        listen("eve", "t2"),
    ] {
        kafka::send(&p, "li.music", b"k", &payload, None).unwrap();
    }
    kafka::send(&p, "li.video", b"k", &video, None).unwrap();
    kafka::flush(&p, Duration::from_secs(30)).unwrap();

    let topics = [("music", "li.music"), ("video", "li.video")];
    let env = [("PLAYPULSE_MODELS__ENABLED", "false")];
    for run in 0..2 {
        let mut d = spawn_daemon(dir.path(), &broker.bootstrap, "li", &topics, &env, run);
        wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
            stored_below_offsets(s) == 6
        });
        let data = dir.path().join("data");
        let v = ctl_json(
            &data,
            &["graph", "user_tracks", "--user", "eve", "--action", "like"],
        );
        assert_eq!(v["ok"], true, "{v}");
        let tracks: Vec<(String, u64)> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["track"].as_str().unwrap().to_string(),
                    i["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            tracks,
            vec![("t1".to_string(), 1), ("t2".to_string(), 1)],
            "run {run}: only eve's own likes"
        );
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit(Duration::from_secs(60)).success());
    }
    let store = playpulse::store::Store::open(&dir.path().join("data"), 16).unwrap();
    assert_eq!(store.events().count(), 2);
    let mut dead: Vec<(String, String, String)> = store
        .dead_letters()
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                d.rejection.reason,
                d.rejection.field.unwrap_or_default(),
                d.rejection.value.unwrap_or_default(),
            )
        })
        .collect();
    dead.sort();
    assert_eq!(dead.len(), 4, "{dead:?}");
    assert_eq!(dead[0].0, "control_character");
    assert_eq!(dead[0].1, "track_id");
    assert_eq!(
        (dead[1].0.as_str(), dead[1].1.as_str()),
        ("control_character", "user_id")
    );
    assert!(dead[1].2.contains("\\0"), "{:?}", dead[1].2);
    assert_eq!(
        (dead[2].0.as_str(), dead[2].1.as_str(), dead[2].2.as_str()),
        ("id_too_long", "user_id", "70000 bytes")
    );
    assert_eq!(
        (dead[3].0.as_str(), dead[3].1.as_str(), dead[3].2.as_str()),
        ("id_too_long", "video_id", "70000 bytes")
    );
}
