//! "Trending now" through the broker: the scores equal the produced views
//! (decayed by arrival, so a few seconds old count almost whole); a burst of
//! views of a title no model knows puts it first overall and in its region,
//! where a newcomer's cold start serves it; the HTTP API answers the same;
//! a restart seeds the scores again from the stored segments.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    ctl_json, http_get, produce_video, quiet_daemon_with, wait_reply, wait_status, Broker,
};
use playpulse::domain::event::{Event, VideoEvent};
use playpulse::kafka;
use playpulse::kafka::config::KafkaConfig;
use serde_json::Value;

const TOPIC: &str = "trend.video";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PLAYPULSE_MODELS__MIN_EVENTS", "100"),
        ("PLAYPULSE_MODELS__TRAIN_EVERY_EVENTS", "0"),
        ("PLAYPULSE_MODELS__TRAIN_EVERY_SECONDS", "0"),
        ("PLAYPULSE_MODELS__CLASSIFIERS", "false"),
        ("PLAYPULSE_MODELS__AFFINITY_WEIGHT", "0"),
    ]
}

fn items(list: &Value) -> Vec<(String, f64)> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["item"].as_str().unwrap_or_default().to_string(),
                        r["score"].as_f64().unwrap_or(-1.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn views_trend_by_arrival_and_a_new_title_serves_cold_starts_before_any_model_knows_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = Broker::start(&[(TOPIC, 2)]);
    let produced = produce_video(&broker.bootstrap, TOPIC, 3000, 0.0, 41);
    let (mut d, addr) = quiet_daemon_with(dir.path(), &broker, &[("video", TOPIC)], &env());
    wait_status(dir.path(), &mut d, Duration::from_secs(120), |s| {
        s["ingest"]["stored"].as_u64() == Some(3000)
    });

    // Every view arrived within the last minute: each counts (almost) one.
    let mut views: HashMap<&str, f64> = HashMap::new();
    for v in &produced.valid {
        *views.entry(v.video_id.as_str()).or_default() += 1.0;
    }
    let t = ctl_json(&data, &["trending", "10", "--domain", "video"]);
    let top = items(&t["items"]);
    assert_eq!(top.len(), 10, "{t}");
    let most = views.values().cloned().fold(0.0, f64::max);
    for (i, (item, score)) in top.iter().enumerate() {
        let n = views[item.as_str()];
        assert!(
            *score <= n && *score > 0.98 * n,
            "{item}: {score} for {n} views in {t}"
        );
        if i > 0 {
            assert!(*score <= top[i - 1].1, "best first: {t}");
        }
    }
    assert!(top[0].1 > 0.98 * most, "the most viewed first: {t}");
    assert_eq!(t["items"][0]["reason"], "trending now", "{t}");

    // A burst of views of a title no model has: first overall and in its region.
    let train = ctl_json(&data, &["train"]);
    assert!(train["model"].is_u64(), "{train}");
    let region = produced.valid[0].region.clone();
    let burst: Vec<VideoEvent> = (0..(most as usize + 40))
        .map(|i| {
            let mut v = produced.valid[i % 50].clone();
            v.user_id = format!("burst-{i}").into();
            v.video_id = "vid_new_hit".into();
            v.region = region.clone();
            v
        })
        .collect();
    let producer = kafka::producer(&broker.bootstrap, &KafkaConfig::default()).unwrap();
    for (i, ev) in burst.iter().enumerate() {
        let payload = playpulse::ingest::wire::to_json(&Event::Video(ev.clone()));
        kafka::send(&producer, TOPIC, i.to_string().as_bytes(), &payload, None).unwrap();
    }
    kafka::flush(&producer, Duration::from_secs(30)).unwrap();
    let first = |v: &Value| items(&v["items"]).first().map(|p| p.0.clone());
    let t = wait_reply(
        &mut d,
        Duration::from_secs(60),
        "the new title trends first",
        || ctl_json(&data, &["trending", "5", "--domain", "video"]),
        |v| first(v).as_deref() == Some("vid_new_hit"),
    );
    let in_region = ctl_json(
        &data,
        &["trending", "5", "--domain", "video", "--region", &region],
    );
    assert_eq!(
        first(&in_region).as_deref(),
        Some("vid_new_hit"),
        "{in_region}"
    );
    assert_eq!(
        in_region["items"][0]["reason"],
        format!("trending in region {region}"),
        "{in_region}"
    );
    // Music trends apart: no video there.
    let music = ctl_json(&data, &["trending", "5", "--domain", "music"]);
    assert!(
        items(&music["items"])
            .iter()
            .all(|(i, _)| i != "vid_new_hit"),
        "{music}"
    );

    // A newcomer in that region: the cold start serves what trends there,
    // the new title first, though the model has never seen it.
    let cold = ctl_json(
        &data,
        &[
            "recommend",
            "someone-new",
            "5",
            "--domain",
            "video",
            "--region",
            &region,
        ],
    );
    assert_eq!(cold["cold_start"], "trending", "{cold}");
    assert_eq!(cold["recommendations"][0]["item"], "vid_new_hit", "{cold}");

    // The HTTP API answers the same list.
    let (code, body) = http_get(&addr, "/api/trending?k=5&domain=video");
    assert_eq!(code, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    let names = |v: &Value| {
        items(&v["items"])
            .into_iter()
            .map(|p| p.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&api), names(&t), "{api}");
    let (code, body) = http_get(&addr, "/api/trending?k=100000");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("k"), "{body}");

    // A restart seeds the scores from the segments written meanwhile.
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    let (mut d, _) = quiet_daemon_with(dir.path(), &broker, &[("video", TOPIC)], &env());
    let again = wait_reply(
        &mut d,
        Duration::from_secs(60),
        "the trending list after the restart",
        || ctl_json(&data, &["trending", "5", "--domain", "video"]),
        |v| !items(&v["items"]).is_empty(),
    );
    assert_eq!(first(&again).as_deref(), Some("vid_new_hit"), "{again}");
    let (before, after) = (items(&t["items"])[0].1, items(&again["items"])[0].1);
    assert!(
        (after - before).abs() < 0.02 * before,
        "{before} then {after}"
    );
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}
