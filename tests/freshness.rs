//! Real-time recommendations, through the broker: after one view of the item
//! ranked first for a user, their list drops it (fold-in, no retrain); a
//! brand-new user gets personalised results after a few events; a restart
//! folds the same users in again. An item × item champion (item-kNN) takes a
//! view into the next list the same way, from the user's history.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{ctl_json, produce_video, spawn_daemon, wait_reply, wait_status, Broker, Daemon};
use playpulse::domain::event::{Event, VideoEvent};
use playpulse::kafka;
use playpulse::kafka::config::KafkaConfig;
use serde_json::Value;

const TOPIC: &str = "fresh.video";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PLAYPULSE_MODELS__MIN_EVENTS", "100"),
        ("PLAYPULSE_MODELS__TRAIN_EVERY_EVENTS", "0"),
        ("PLAYPULSE_MODELS__TRAIN_EVERY_SECONDS", "0"),
        ("PLAYPULSE_MODELS__RETRAIN_FOLDED_USERS", "0"),
        ("PLAYPULSE_MODELS__CLASSIFIERS", "false"),
        ("PLAYPULSE_MODELS__AFFINITY_WEIGHT", "0"),
    ]
}

fn start(dir: &Path, broker: &Broker, run: usize) -> Daemon {
    // ALS: titles new since training rank only beside an ALS champion's items.
    start_with(
        dir,
        broker,
        run,
        &[("PLAYPULSE_MODELS__SEARCH_FAMILIES", "[\"als\"]")],
    )
}

fn start_with(
    dir: &Path,
    broker: &Broker,
    run: usize,
    more: &[(&'static str, &'static str)],
) -> Daemon {
    let mut env = env();
    env.extend_from_slice(more);
    spawn_daemon(
        dir,
        &broker.bootstrap,
        "fresh",
        &[("video", TOPIC)],
        &env,
        run,
    )
}

fn send(broker: &Broker, events: &[VideoEvent]) {
    let producer = kafka::producer(&broker.bootstrap, &KafkaConfig::default()).unwrap();
    for (i, ev) in events.iter().enumerate() {
        let payload = playpulse::ingest::wire::to_json(&Event::Video(ev.clone()));
        kafka::send(&producer, TOPIC, i.to_string().as_bytes(), &payload, None).unwrap();
    }
    kafka::flush(&producer, Duration::from_secs(30)).unwrap();
}

fn items(reply: &Value) -> Vec<String> {
    reply["recommendations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["item"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `recommend USER 5` until `pred` holds; answers the reply.
fn wait_list(
    dir: &Path,
    d: &mut Daemon,
    user: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let data = dir.join("data");
    wait_reply(
        d,
        Duration::from_secs(60),
        what,
        || ctl_json(&data, &["recommend", user, "5", "--domain", "video"]),
        pred,
    )
}

/// A finished view of `video` by `user`, shaped as the produced events are.
fn view(like: &VideoEvent, user: &str, video: &str, ts_ms: i64) -> VideoEvent {
    let mut v = like.clone();
    v.user_id = user.into();
    v.video_id = video.into();
    v.timestamp_ms = ts_ms;
    v.watch_time_seconds = 3600.0;
    v.buffering_events = 0;
    v.skipped = false;
    v.paused = false;
    v.error = None;
    v
}

/// `newcomer` finishes each of `mine` (shaped like `like`, after
/// `last_ts`); their list once they are folded in.
fn first_views(
    dir: &Path,
    d: &mut Daemon,
    broker: &Broker,
    like: &VideoEvent,
    newcomer: &str,
    mine: &[String],
    last_ts: i64,
) -> Value {
    let views: Vec<VideoEvent> = mine
        .iter()
        .enumerate()
        .map(|(i, item)| view(like, newcomer, item, last_ts + 2000 + i as i64))
        .collect();
    send(broker, &views);
    wait_list(dir, d, newcomer, "the newcomer is folded in", |r| {
        r["known"] == true && items(r).len() == 5
    })
}

#[test]
fn a_view_reaches_the_viewers_next_list_without_a_retrain() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[(TOPIC, 2)]);
    let produced = produce_video(&broker.bootstrap, TOPIC, 4000, 0.0, 31);
    let mut d = start(dir.path(), &broker, 0);
    let data = dir.path().join("data");
    wait_status(dir.path(), &mut d, Duration::from_secs(120), |s| {
        s["ingest"]["stored"].as_u64() == Some(4000)
    });
    let t = ctl_json(&data, &["train"]);
    let model = t["model"].as_u64().unwrap_or_else(|| panic!("train: {t}"));

    // A known user: one finished view of their first item drops it from the list.
    let user = produced.valid[0].user_id.clone();
    let before = ctl_json(&data, &["recommend", &user, "5", "--domain", "video"]);
    assert_eq!(before["known"], true, "{before}");
    assert!(before["folded_at_ms"].is_null(), "{before}");
    let first = items(&before)[0].clone();
    let last_ts = produced.valid.iter().map(|v| v.timestamp_ms).max().unwrap();
    send(
        &broker,
        &[view(&produced.valid[0], &user, &first, last_ts + 1000)],
    );
    let after = wait_list(
        dir.path(),
        &mut d,
        &user,
        "the watched item leaves the list",
        |r| r["folded_at_ms"].is_i64() && !items(r).is_empty() && !items(r).contains(&first),
    );
    assert_eq!(after["model"], model, "no retrain: {after}");
    assert_eq!(items(&after).len(), 5);

    // A brand-new user: what trends first, their own taste after a few events.
    let newcomer = "newcomer-7";
    let cold = ctl_json(&data, &["recommend", newcomer, "5", "--domain", "video"]);
    assert_eq!(
        (cold["known"].as_bool(), cold["cold_start"].as_str()),
        (Some(false), Some("trending")),
        "{cold}"
    );
    // Three videos one known user watched most: the newcomer shares that taste.
    let mine: Vec<String> = {
        let mut n: std::collections::HashMap<&str, usize> = Default::default();
        for v in produced.valid.iter().filter(|v| v.user_id == user) {
            *n.entry(&v.video_id).or_default() += 1;
        }
        let mut v: Vec<(&str, usize)> = n.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.into_iter().take(3).map(|(i, _)| i.to_string()).collect()
    };
    let warm = first_views(
        dir.path(),
        &mut d,
        &broker,
        &produced.valid[0],
        newcomer,
        &mine,
        last_ts,
    );
    assert!(warm["cold_start"].is_null(), "{warm}");
    assert!(
        items(&warm).iter().all(|i| !mine.contains(i)),
        "what they watched is not recommended: {warm}"
    );
    assert_ne!(items(&warm), items(&cold), "personal, not the popular list");
    let status = ctl_json(&data, &["status"]);
    assert!(
        status["fold_in"]["folded_total"].as_u64().unwrap_or(0) >= 2,
        "{}",
        status["fold_in"]
    );

    // A title the model was not trained on: once three users watched it, it
    // gets factors from theirs and ranks in other users' lists, not theirs.
    let title = "vid_brand_new";
    let mut watchers: Vec<String> = Vec::new();
    for v in &produced.valid {
        if v.user_id != user && !watchers.iter().any(|w| *w == v.user_id) {
            watchers.push(v.user_id.to_string());
        }
        if watchers.len() == 3 {
            break;
        }
    }
    // One at a time: the first two are folded in (and held) before the
    // title has enough users; it reaches their seen items when it is folded in.
    for (i, w) in watchers.iter().enumerate() {
        send(
            &broker,
            &[view(
                &produced.valid[0],
                w,
                title,
                last_ts + 3000 + i as i64,
            )],
        );
        wait_list(dir.path(), &mut d, w, "the watcher is folded in", |r| {
            r["folded_at_ms"].is_i64()
        });
    }
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        s["fold_in"]["folded_items"].as_u64() >= Some(1)
    });
    assert_eq!(s["fold_in"]["items_pending"], 0, "{}", s["fold_in"]);
    let whole = |who: &str| ctl_json(&data, &["recommend", who, "100", "--domain", "video"]);
    let other = produced
        .valid
        .iter()
        .map(|v| v.user_id.to_string())
        .find(|u| *u != user && !watchers.contains(u))
        .unwrap();
    let theirs = whole(&other);
    assert_eq!(theirs["model"], model, "no retrain: {theirs}");
    assert!(items(&theirs).iter().any(|i| i == title), "{theirs}");
    for w in &watchers {
        let l = whole(w);
        assert!(l["folded_at_ms"].is_i64(), "{l}");
        assert!(!items(&l).iter().any(|i| i == title), "seen: {l}");
    }

    // A restart folds the same users in again (no retrain, same model).
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    let mut d = start(dir.path(), &broker, 1);
    let again = wait_list(
        dir.path(),
        &mut d,
        newcomer,
        "the newcomer is folded in after the restart",
        |r| r["known"] == true && r["folded_at_ms"].is_i64(),
    );
    assert_eq!(again["model"], model);
    assert_eq!(items(&again), items(&warm));
    let u = wait_list(
        dir.path(),
        &mut d,
        &user,
        "the viewer is folded in after the restart",
        |r| r["folded_at_ms"].is_i64(),
    );
    assert!(!items(&u).contains(&first));
    // The title folds in again from its watchers' stored pairs, no new event.
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        s["fold_in"]["folded_items"].as_u64() >= Some(1)
    });
    assert_eq!(s["fold_in"]["items_pending"], 0, "{}", s["fold_in"]);
    let theirs = ctl_json(&data, &["recommend", &other, "100", "--domain", "video"]);
    assert_eq!(theirs["model"], model, "no retrain: {theirs}");
    assert!(items(&theirs).iter().any(|i| i == title), "{theirs}");
    for w in &watchers {
        let l = ctl_json(&data, &["recommend", w, "100", "--domain", "video"]);
        assert!(!items(&l).iter().any(|i| i == title), "seen: {l}");
    }
}

#[test]
fn a_failed_fold_in_round_is_counted_and_the_next_view_still_folds_in() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[(TOPIC, 2)]);
    let produced = produce_video(&broker.bootstrap, TOPIC, 3000, 0.0, 37);
    let mut env = env();
    env.push(("PP_FAULT_PANIC_ONCE", "fold-in"));
    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        "fresh-fault",
        &[("video", TOPIC)],
        &env,
        0,
    );
    let data = dir.path().join("data");
    wait_status(dir.path(), &mut d, Duration::from_secs(120), |s| {
        s["ingest"]["stored"].as_u64() == Some(3000)
    });
    let t = ctl_json(&data, &["train"]);
    assert!(t["model"].is_u64(), "train: {t}");
    let user = produced.valid[0].user_id.clone();
    let before = ctl_json(&data, &["recommend", &user, "5", "--domain", "video"]);
    let listed = items(&before);
    let last_ts = produced.valid.iter().map(|v| v.timestamp_ms).max().unwrap();

    // The first fold-in round with users panics: counted, the worker lives on.
    send(
        &broker,
        &[view(&produced.valid[0], &user, &listed[0], last_ts + 1000)],
    );
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        s["fold_in"]["failed_rounds"].as_u64() == Some(1)
    });
    assert_eq!(s["fold_in"]["folded_total"], 0, "{}", s["fold_in"]);
    assert!(
        d.log_text().contains("fold-in round of 1 users failed"),
        "{}",
        d.log_text()
    );
    // Not folded in, yet the watched item is out of the list: it was noted as
    // seen the moment its batch committed, ahead of the fold-in.
    assert_eq!(s["fold_in"]["seen_pending_users"], 1, "{}", s["fold_in"]);
    let noted = ctl_json(&data, &["recommend", &user, "5", "--domain", "video"]);
    assert!(noted["folded_at_ms"].is_null(), "{noted}");
    assert_eq!(noted["seen_since_fold"], 1, "{noted}");
    assert!(!items(&noted).contains(&listed[0]), "{noted}");
    assert_eq!(items(&noted).len(), 5, "{noted}");

    // The next view folds the user in with all their pairs: both items leave.
    send(
        &broker,
        &[view(&produced.valid[0], &user, &listed[1], last_ts + 2000)],
    );
    let after = wait_list(
        dir.path(),
        &mut d,
        &user,
        "the next view folds the user in",
        |r| r["folded_at_ms"].is_i64(),
    );
    let now = items(&after);
    assert!(
        !now.contains(&listed[0]) && !now.contains(&listed[1]),
        "{after}"
    );
    assert!(
        after["seen_since_fold"].is_null(),
        "covered by the fold-in: {after}"
    );
    let s = ctl_json(&data, &["status"]);
    assert_eq!(s["fold_in"]["failed_rounds"], 1, "{}", s["fold_in"]);
    assert!(s["fold_in"]["folded_total"].as_u64() >= Some(1));
    assert_eq!(s["fold_in"]["seen_pending_users"], 0, "{}", s["fold_in"]);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}

#[test]
fn an_item_by_item_champion_takes_a_view_into_the_next_list_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[(TOPIC, 2)]);
    let produced = produce_video(&broker.bootstrap, TOPIC, 4000, 0.0, 43);
    let mut d = start_with(
        dir.path(),
        &broker,
        0,
        &[
            ("PLAYPULSE_MODELS__SEARCH_FAMILIES", "[\"knn\"]"),
            ("PLAYPULSE_MODELS__SEARCH_BUDGET_SECONDS", "10"),
        ],
    );
    let data = dir.path().join("data");
    wait_status(dir.path(), &mut d, Duration::from_secs(120), |s| {
        s["ingest"]["stored"].as_u64() == Some(4000)
    });
    let t = ctl_json(&data, &["train"]);
    let model = t["model"].as_u64().unwrap_or_else(|| panic!("train: {t}"));
    assert_eq!(t["promoted"], true, "{t}");
    // The version says what ranks: the search's item-kNN, ALS beside it.
    let shown = ctl_json(&data, &["models", "show", &model.to_string()]);
    let text = shown.to_string();
    assert!(
        text.contains("\"item_family\"") && text.contains("\"knn\""),
        "{shown}"
    );

    let user = produced.valid[0].user_id.clone();
    let before = ctl_json(&data, &["recommend", &user, "5", "--domain", "video"]);
    assert_eq!(
        (before["known"].as_bool(), before["family"].as_str()),
        (Some(true), Some("knn")),
        "{before}"
    );
    let first = items(&before)[0].clone();
    let sim = ctl_json(&data, &["similar", &first, "5"]);
    assert_eq!(sim["similar"].as_array().map(Vec::len), Some(5), "{sim}");
    let last_ts = produced.valid.iter().map(|v| v.timestamp_ms).max().unwrap();
    send(
        &broker,
        &[view(&produced.valid[0], &user, &first, last_ts + 1000)],
    );
    let after = wait_list(
        dir.path(),
        &mut d,
        &user,
        "the watched item leaves the list",
        |r| r["folded_at_ms"].is_i64() && items(r).len() == 5 && !items(r).contains(&first),
    );
    assert_eq!(
        (after["model"].as_u64(), after["family"].as_str()),
        (Some(model), Some("knn")),
        "{after}"
    );

    // A brand-new user: their three views are their whole history, and the
    // model ranks from it with no retrain.
    let newcomer = "newcomer-knn";
    let cold = ctl_json(&data, &["recommend", newcomer, "5", "--domain", "video"]);
    assert_eq!(cold["cold_start"], "trending", "{cold}");
    let mine: Vec<String> = {
        let mut seen: Vec<String> = Vec::new();
        for v in produced.valid.iter().filter(|v| v.user_id == user) {
            if !seen.iter().any(|s| *s == v.video_id) {
                seen.push(v.video_id.to_string());
            }
        }
        seen.truncate(3);
        seen
    };
    let warm = first_views(
        dir.path(),
        &mut d,
        &broker,
        &produced.valid[0],
        newcomer,
        &mine,
        last_ts,
    );
    assert_eq!(warm["family"], "knn", "{warm}");
    assert!(items(&warm).iter().all(|i| !mine.contains(i)), "{warm}");
    assert_ne!(items(&warm), items(&cold), "personal, not the popular list");
    // Explained by the item of their history that added most to each.
    let reasons: Vec<&str> = warm["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["because"].as_str())
        .collect();
    assert!(
        !reasons.is_empty() && reasons.iter().all(|b| mine.iter().any(|m| m == b)),
        "{warm}"
    );
}

/// A retrain starts on its own once the users folded in since the champion
/// bring pairs it was not trained on worth `retrain_new_pairs_share` of its
/// pairs, and the new version scores the champion folded in beside itself.
#[test]
fn a_retrain_starts_once_new_pairs_reach_their_share_of_the_champions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[(TOPIC, 2)]);
    let produced = produce_video(&broker.bootstrap, TOPIC, 3000, 0.0, 41);
    let mut d = start_with(
        dir.path(),
        &broker,
        0,
        &[
            ("PLAYPULSE_MODELS__SEARCH_FAMILIES", "[\"als\"]"),
            ("PLAYPULSE_MODELS__RETRAIN_NEW_PAIRS_SHARE", "0.05"),
            // The first model trains on every produced event.
            ("PLAYPULSE_MODELS__MIN_EVENTS", "3000"),
        ],
    );
    let data = dir.path().join("data");
    wait_status(dir.path(), &mut d, Duration::from_secs(120), |s| {
        s["ingest"]["stored"].as_u64() == Some(3000)
    });
    let t = ctl_json(&data, &["train"]);
    let v1 = t["model"].as_u64().expect("trained");
    assert_eq!(t["promoted"], true, "{t}");
    let show = ctl_json(&data, &["models", "show", &v1.to_string()]);
    let pairs = show["model"]["data"]["snapshot"]["video_pairs"]
        .as_u64()
        .unwrap();
    let s = ctl_json(&data, &["status"]);
    assert_eq!(
        s["fold_in"]["new_pairs_since_champion"], 0,
        "v1 was trained on every stored event: {}",
        s["fold_in"]
    );

    // Brand-new users, three views each of titles the champion knows: every
    // pair is new to it. A twentieth of its pairs, and a few more.
    let titles: Vec<String> = {
        let mut t: Vec<String> = produced
            .valid
            .iter()
            .map(|v| v.video_id.to_string())
            .collect();
        t.sort();
        t.dedup();
        t
    };
    let last_ts = produced.valid.iter().map(|v| v.timestamp_ms).max().unwrap();
    let users = (pairs / 20 / 3 + 3) as usize;
    let mut views = Vec::new();
    for u in 0..users {
        for j in 0..3 {
            let title = &titles[(u * 7 + j * 13) % titles.len()];
            let ts = last_ts + 1000 + (u * 3 + j) as i64;
            views.push(view(&produced.valid[0], &format!("drift-{u}"), title, ts));
        }
    }
    send(&broker, &views);
    // A version of its own, promoted or not (it is scored like any other).
    let models = wait_reply(
        &mut d,
        Duration::from_secs(120),
        "a retrain on the new pairs",
        || ctl_json(&data, &["models"]),
        |m| {
            m["models"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|v| v["kind"] == "als" && v["id"].as_u64().is_some_and(|id| id > v1))
            })
        },
    );
    let v2 = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "als")
        .filter_map(|v| v["id"].as_u64())
        .max()
        .unwrap();
    let log = d.log_text();
    assert!(
        log.contains("new pairs folded in since the last training")
            && log.contains(&format!("of champion v{v1}'s {pairs}")),
        "the retrain says why it started:\n{log}"
    );
    // It scores the champion folded in on its own split.
    let show = ctl_json(&data, &["models", "show", &v2.to_string()]);
    let folded = &show["model"]["folded_champion"];
    assert_eq!(folded["from"], v1, "{show}");
    assert!(folded["metrics"]["ndcg"].as_f64().is_some(), "{show}");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}
