//! A consumer group of three daemons acting as one (`cluster.enabled`), on a
//! broker the test owns (librdkafka's mock cluster, and tansu): they share the ingest
//! exactly once; one of them holds the trainer role and trains on the union
//! of every member's pairs; every member records and serves the champion it
//! publishes, so every member answers every user with the same list (a
//! view after training too: the member that stores it folds the viewer in and
//! publishes them to the others); when
//! the trainer is SIGKILLed, another member takes the role after the session
//! timeout and the next promotion reaches every member left. Every member's
//! analytics answer for the whole group (each member publishes its rollups;
//! the others add them to their own), equal to figures computed from every
//! event produced, the dead member's too.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use playpulse::domain::event::{Event, VideoEvent};
use playpulse::kafka;
use playpulse::kafka::config::KafkaConfig;
use playpulse::synth::generate::{CatalogGen, World};
use serde_json::Value;

const TOPIC: &str = "group.video";
/// Movies: one partition, so one member stores the catalog.
const MOVIES: &str = "group.movies";
const GROUP: &str = "one";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PLAYPULSE_CLUSTER__ENABLED", "true"),
        ("PLAYPULSE_CLUSTER__PUBLISH_INTERVAL_MS", "200"),
        ("PLAYPULSE_CLUSTER__ROLLUP_INTERVAL_MS", "200"),
        ("PLAYPULSE_CLUSTER__HEARTBEAT_INTERVAL_MS", "300"),
        ("PLAYPULSE_CLUSTER__MEMBER_TIMEOUT_MS", "4000"),
        // A killed member's partitions and role move after its session times out.
        (
            "PLAYPULSE_KAFKA__PROPERTIES",
            r#"{ "session.timeout.ms" = "3000", "heartbeat.interval.ms" = "500" }"#,
        ),
        ("PLAYPULSE_INGEST__BATCH_SIZE", "200"),
        ("PLAYPULSE_MODELS__MIN_EVENTS", "100"),
        ("PLAYPULSE_MODELS__TRAIN_EVERY_EVENTS", "0"),
        ("PLAYPULSE_MODELS__TRAIN_EVERY_SECONDS", "0"),
        ("PLAYPULSE_MODELS__RETRAIN_FOLDED_USERS", "0"),
        ("PLAYPULSE_MODELS__CLASSIFIERS", "false"),
        ("PLAYPULSE_MODELS__RERANK", "false"),
        ("PLAYPULSE_MODELS__AFFINITY_WEIGHT", "0"),
        ("PLAYPULSE_MODELS__SEARCH_BUDGET_SECONDS", "5"),
    ]
}

fn cluster(s: &Value) -> &Value {
    &s["cluster"]
}

struct Member {
    dir: PathBuf,
    daemon: Daemon,
}

impl Member {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn status(&self) -> Value {
        ctl_status(&self.dir)
    }

    fn wait(&mut self, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let dir = self.dir.clone();
        wait_reply(&mut self.daemon, limit, what, || ctl_status(&dir), pred)
    }

    /// Polls `path` of its HTTP API until `pred` holds (60 s at most).
    fn wait_http(&mut self, what: &str, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let addr = self.http();
        let what = format!("{what} on {addr}");
        wait_reply(
            &mut self.daemon,
            Duration::from_secs(60),
            &what,
            || rollups::ask(&addr, path),
            pred,
        )
    }

    fn http(&self) -> String {
        self.status()["http"].as_str().unwrap().to_string()
    }

    fn list(&self, user: &str) -> Vec<String> {
        let r = ctl_json(
            &self.data(),
            &["recommend", user, "10", "--domain", "video"],
        );
        r["recommendations"]
            .as_array()
            .unwrap_or_else(|| panic!("recommend {user}: {r}"))
            .iter()
            .map(|x| x["item"].as_str().unwrap().to_string())
            .collect()
    }
}

fn trainer_of(members: &[Member]) -> Option<usize> {
    let t: Vec<usize> = members
        .iter()
        .enumerate()
        .filter(|(_, m)| cluster(&m.status())["trainer"] == true)
        .map(|(i, _)| i)
        .collect();
    (t.len() == 1).then(|| t[0])
}

fn wait_for_trainer(members: &mut [Member], limit: Duration) -> usize {
    let t0 = Instant::now();
    loop {
        if let Some(t) = trainer_of(members) {
            return t;
        }
        for m in members.iter_mut() {
            m.daemon.assert_alive();
        }
        assert!(
            t0.elapsed() < limit,
            "no single trainer after {limit:?}: {:?}",
            members
                .iter()
                .map(|m| cluster(&m.status()).clone())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a reply refuses because another member trains, or the role is
/// moving (it moved since the trainer was asked for).
fn role_moved(reply: &Value) -> bool {
    reply["error"]
        .as_str()
        .is_some_and(|e| e.contains("trains for the group") || e.contains("role is moving"))
}

/// `ctl train` on the member that trains (the role may move while it is
/// asked: a member that lost it says so, and the new trainer is asked).
fn train(members: &mut [Member]) -> (usize, Value) {
    let t0 = Instant::now();
    loop {
        let t = wait_for_trainer(members, Duration::from_secs(60));
        let run = ctl_json(&members[t].data(), &["train"]);
        if run["model"].as_u64().is_some() {
            return (t, run);
        }
        assert!(
            role_moved(&run) && t0.elapsed() < Duration::from_secs(60),
            "train: {run}"
        );
        eprintln!("the role moved while asked: {run}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The member that trains, once every member names it.
fn agreed_trainer(members: &mut [Member]) -> usize {
    let t0 = Instant::now();
    loop {
        let t = wait_for_trainer(members, Duration::from_secs(60));
        let id = cluster(&members[t].status())["member"]
            .as_str()
            .unwrap()
            .to_string();
        let agreed = members
            .iter()
            .all(|m| cluster(&m.status())["trainer_member"].as_str() == Some(id.as_str()));
        if agreed && trainer_of(members) == Some(t) {
            return t;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the members do not agree on the trainer: {:?}",
            members
                .iter()
                .map(|m| cluster(&m.status())["trainer_member"].clone())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Trains on the member that trains and makes the new version the champion
/// (promoted by the run, else by `models promote`); when the role moves in
/// between, trains again on the new trainer. Answers (trainer, version, when
/// it became the champion).
fn train_and_promote(members: &mut [Member]) -> (usize, u64, Instant) {
    let t0 = Instant::now();
    loop {
        let (t, run) = train(members);
        let id = run["model"].as_u64().unwrap();
        if run["promoted"] == true {
            return (t, id, Instant::now());
        }
        let r = ctl_json(&members[t].data(), &["models", "promote", &id.to_string()]);
        if r["champion"].as_u64() == Some(id) {
            return (t, id, Instant::now());
        }
        assert!(
            role_moved(&r) && t0.elapsed() < Duration::from_secs(120),
            "promote v{id}: {r}"
        );
        eprintln!("the role moved before the promotion: {r}");
    }
}

/// Every member serves `id` (promoted at `promoted`), and answers each of
/// `users` with the same list.
fn all_serve_the_same(members: &mut [Member], id: u64, promoted: Instant, users: &[String]) {
    for m in members.iter_mut() {
        m.wait(
            "the group's champion served",
            Duration::from_secs(60),
            |s| s["champion"].as_u64() == Some(id),
        );
    }
    eprintln!(
        "v{id}: every member serves it {:?} after its promotion (status polled every 50 ms)",
        promoted.elapsed()
    );
    let mut personal = 0;
    for u in users {
        let lists: Vec<Vec<String>> = members.iter().map(|m| m.list(u)).collect();
        for (i, l) in lists.iter().enumerate().skip(1) {
            assert_eq!(&lists[0], l, "user {u}: member 0 and member {i} differ");
        }
        let r = ctl_json(
            &members[0].data(),
            &["recommend", u, "10", "--domain", "video"],
        );
        personal += usize::from(r["known"] == true);
    }
    assert_eq!(
        personal,
        users.len(),
        "every sampled user is known to the model"
    );
}

/// Every member's analytics over [from, to) answer for every event of
/// `events` (each member stores a part; the others' come from the group's
/// rollups), and every member of `reporting` reported the range.
fn group_analytics(
    members: &mut [Member],
    events: &[VideoEvent],
    from: i64,
    to: i64,
    reporting: u64,
) {
    let path = format!("/api/analytics?view=qoe&from={from}&to={to}&step=minute");
    let want = events.len() as u64;
    for m in members.iter_mut() {
        let addr = m.http();
        let t0 = Instant::now();
        m.wait_http("the group's views and members", &path, |r| {
            r["rows"][0]["views"].as_u64() == Some(want)
                && r["range"]["members"].as_u64() == Some(reporting)
        });
        eprintln!(
            "the group's analytics on {addr}: every event after {:?} of polling",
            t0.elapsed()
        );
        let replies = rollups::check(&addr, events, from, to);
        // Each minute says how many members reported it.
        let points = replies[0]["points"].as_array().unwrap();
        assert!(
            points
                .iter()
                .all(|p| p["members"].as_u64().is_some_and(|n| n <= reporting)),
            "{points:?}"
        );
    }
}

fn spawn(dir: &Path, bootstrap: &str, run: usize) -> Daemon {
    spawn_daemon(
        dir,
        bootstrap,
        GROUP,
        &[("video", TOPIC), ("movies", MOVIES)],
        &env(),
        run,
    )
}

/// The ingest topic (6 partitions) and the group's shared topics (1 each),
/// as the broker is to create them.
fn topics() -> Vec<(String, i32)> {
    let prefix = format!("playpulse.{GROUP}");
    let mut topics = vec![(TOPIC.to_string(), 6), (MOVIES.to_string(), 1)];
    topics.extend(
        [
            "coord", "pairs", "models", "members", "users", "rollups", "titles",
        ]
        .iter()
        .map(|w| (format!("{prefix}.{w}"), 1)),
    );
    topics
}

#[test]
fn three_members_train_once_and_serve_the_same_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let t = topics();
    let refs: Vec<(&str, i32)> = t.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let broker = Broker::start(&refs);
    three_members(tmp.path(), &broker.bootstrap);
}

/// The same group on tansu, a broker written apart from librdkafka (its
/// own group coordinator: the cooperative-sticky trainer role, the
/// members' partitions and the reader's assignments go through it).
#[test]
fn three_members_act_as_one_through_tansu() {
    let tmp = tempfile::tempdir().unwrap();
    let t = topics();
    let refs: Vec<(&str, i32)> = t.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let broker = Tansu::start(&tmp.path().join("tansu"), "pp-group", &refs);
    three_members(tmp.path(), &broker.bootstrap);
}

fn three_members(tmp: &Path, bootstrap: &str) {
    let mut members = start_members(tmp, bootstrap, &["a", "b", "c"]);
    for m in members.iter_mut() {
        m.wait("three members listed", Duration::from_secs(60), |s| {
            cluster(s)["members"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
        });
    }
    let produced = produce_video(bootstrap, TOPIC, 6000, 0.0, 17);
    wait_stored(&mut members, produced.valid.len() as u64);
    // Ingest is shared: more than one member stores events.
    let storing = members
        .iter()
        .filter(|m| m.status()["ingest"]["stored"].as_u64().unwrap_or(0) > 0)
        .count();
    assert!(storing >= 2, "only {storing} member(s) store events");

    // The others refuse to train, naming the trainer (on a broker whose
    // coordinator does not keep the sticky assignment, the role may move at
    // each join: then the refusal names where it went).
    let t = agreed_trainer(&mut members);
    let other = (t + 1) % 3;
    let ids: Vec<String> = members
        .iter()
        .map(|m| cluster(&m.status())["member"].as_str().unwrap().to_string())
        .collect();
    let refused = ctl_json(&members[other].data(), &["train"]);
    let named = ids
        .iter()
        .enumerate()
        .any(|(i, id)| i != other && refused.to_string().contains(id.as_str()));
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("trains for the group"))
            && named,
        "a member that does not train says who does: {refused}"
    );
    // The trainer has every member's pairs before it trains.
    members[t].wait("the peers' pairs read", Duration::from_secs(60), |s| {
        cluster(s)["pair_origins"].as_u64() == Some(3)
    });
    let (t, run) = train(&mut members);
    let promoted = Instant::now();
    let id = run["model"].as_u64().unwrap();
    assert_eq!(run["promoted"], true, "{run}");
    // Trained on the union: the snapshot's video pairs are every pair produced.
    let show = ctl_json(&members[t].data(), &["models", "show", &id.to_string()]);
    let pairs = reference_pairs(&produced.valid).len() as u64;
    assert_eq!(
        show["model"]["data"]["snapshot"]["video_pairs"].as_u64(),
        Some(pairs),
        "{show}"
    );
    let users = sample_users(&produced.valid, 25);
    all_serve_the_same(&mut members, id, promoted, &users);

    // A view after training: the member whose partition it lands on folds the
    // viewer in and publishes them; every member then leaves the item out of
    // the viewer's list, and the lists stay the same on every member.
    let viewer = users[0].clone();
    let watched = members[0].list(&viewer)[0].clone();
    let mut view = produced
        .valid
        .iter()
        .find(|e| e.user_id == viewer)
        .unwrap()
        .clone();
    view.video_id = watched.as_str().into();
    view.timestamp_ms = produced.valid.iter().map(|e| e.timestamp_ms).max().unwrap() + 1000;
    view.watch_time_seconds = 3600.0;
    view.skipped = false;
    view.error = None;
    let producer = kafka::producer(bootstrap, &KafkaConfig::default()).unwrap();
    let payload = playpulse::ingest::wire::to_json(&Event::Video(view.clone()));
    let mut valid = produced.valid.clone();
    valid.push(view);
    let pairs = reference_pairs(&valid).len() as u64;
    kafka::send(&producer, TOPIC, viewer.as_bytes(), &payload, None).unwrap();
    kafka::flush(&producer, Duration::from_secs(30)).unwrap();
    let sent = Instant::now();
    loop {
        let lists: Vec<Vec<String>> = members.iter().map(|m| m.list(&viewer)).collect();
        let done = lists.iter().all(|l| !l.contains(&watched) && l.len() == 10)
            && lists.iter().all(|l| *l == lists[0]);
        if done {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "{viewer} watched {watched}; the members' lists: {lists:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "a view after training: out of the viewer's list, the same on every member, {:?} after it was sent",
        sent.elapsed()
    );

    // One view of the group on every member: each adds its peers' rollups
    // to its own.
    let (from, to, storing) = span(&members, &valid);
    group_analytics(&mut members, &valid, from, to, storing);
    // The catalog lands on one member; every member names the titles.
    group_titles(&mut members, bootstrap, from, to);

    // The trainer dies: another member takes the role, and its next
    // promotion reaches every member left.
    members[t].daemon.signal(libc::SIGKILL);
    members[t].daemon.wait_exit(Duration::from_secs(10));
    let dead = members.remove(t);
    for m in members.iter_mut() {
        m.wait(
            "the dead member's pairs still held",
            Duration::from_secs(30),
            |s| cluster(s)["pair_origins"].as_u64() == Some(3),
        );
    }
    let (t2, id2, promoted) = train_and_promote(&mut members);
    assert!(
        id2 > id,
        "the new trainer numbers after the group's v{id}: v{id2}"
    );
    let show = ctl_json(&members[t2].data(), &["models", "show", &id2.to_string()]);
    assert_eq!(
        show["model"]["data"]["snapshot"]["video_pairs"].as_u64(),
        Some(pairs),
        "the new trainer trains on every member's pairs, the dead one's too: {show}"
    );
    all_serve_the_same(&mut members, id2, promoted, &users);
    // The dead member's rollups stay in the group's view.
    group_analytics(&mut members, &valid, from, to, storing);
    drop(dead);
    for m in members.iter_mut() {
        m.daemon.signal(libc::SIGTERM);
        m.daemon.wait_exit(Duration::from_secs(30));
    }
}

/// Sends a movie record of every video to the one-partition movies topic
/// (one member stores them), then waits until every member's top titles
/// over [from, to) carry their names.
fn group_titles(members: &mut [Member], bootstrap: &str, from: i64, to: i64) {
    let mut cat = CatalogGen::new(World::new(300, 80, 17), 17);
    let producer = kafka::producer(bootstrap, &KafkaConfig::default()).unwrap();
    let mut names = std::collections::HashMap::new();
    for _ in 0..80 {
        let t = cat.next_movie(1_735_689_600_000);
        names.insert(t.id.clone(), t.title.clone());
        let payload = playpulse::ingest::wire::to_json(&Event::Movie(t.clone()));
        kafka::send(&producer, MOVIES, t.id.as_bytes(), &payload, None).unwrap();
    }
    kafka::flush(&producer, Duration::from_secs(30)).unwrap();
    let path = format!("/api/analytics?view=top&from={from}&to={to}&step=hour&limit=10");
    for m in members.iter_mut() {
        m.wait_http("the top titles named", &path, |r| {
            let videos = r["videos"].as_array().cloned().unwrap_or_default();
            !videos.is_empty()
                && videos.iter().all(|v| {
                    let id = v["video"].as_str().unwrap_or("");
                    v["title"].as_str() == names.get(id).map(String::as_str)
                })
        });
    }
}

/// Members named `names`, each in its own dir under `tmp`.
fn start_members(tmp: &Path, bootstrap: &str, names: &[&str]) -> Vec<Member> {
    names
        .iter()
        .map(|n| {
            let dir = tmp.join(n);
            std::fs::create_dir_all(&dir).unwrap();
            let daemon = spawn(&dir, bootstrap, 0);
            Member { dir, daemon }
        })
        .collect()
}

/// The first `n` users of `events`.
fn sample_users(events: &[VideoEvent], n: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e.user_id.to_string()))
        .take(n)
        .map(|e| e.user_id.to_string())
        .collect()
}

/// Stored events summed over `members`.
fn stored(members: &[Member]) -> u64 {
    members
        .iter()
        .map(|m| m.status()["ingest"]["stored"].as_u64().unwrap_or(0))
        .sum()
}

fn wait_stored(members: &mut [Member], total: u64) {
    let t0 = Instant::now();
    loop {
        let n = stored(members);
        if n == total {
            return;
        }
        for m in members.iter_mut() {
            m.daemon.assert_alive();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "stored {n} of {total}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [from, to) covering `events`' minutes, and the members storing any.
fn span(members: &[Member], events: &[VideoEvent]) -> (i64, i64, u64) {
    let minute = |ms: i64| ms.div_euclid(rollups::MINUTE) * rollups::MINUTE;
    let from = minute(events.iter().map(|e| e.timestamp_ms).min().unwrap());
    let to = minute(events.iter().map(|e| e.timestamp_ms).max().unwrap()) + 2 * rollups::MINUTE;
    let storing = members
        .iter()
        .filter(|m| m.status()["ingest"]["stored"].as_u64().unwrap_or(0) > 0)
        .count() as u64;
    (from, to, storing)
}

#[test]
fn a_group_whose_broker_goes_away_keeps_answering_and_catches_up_when_it_is_back() {
    // (and skips records on its shared topics that no member wrote)
    let tmp = tempfile::tempdir().unwrap();
    let t = topics();
    let refs: Vec<(&str, i32)> = t.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let broker = Broker::start(&refs);
    let mut members = start_members(tmp.path(), &broker.bootstrap, &["a", "b"]);
    for m in members.iter_mut() {
        m.wait("two members listed", Duration::from_secs(60), |s| {
            cluster(s)["members"]
                .as_array()
                .is_some_and(|a| a.len() == 2)
        });
    }
    // Records no member wrote on the shared topics are counted and skipped.
    let producer = kafka::producer(&broker.bootstrap, &KafkaConfig::default()).unwrap();
    for (what, key, value) in [
        ("rollups", &b"\x01\xff"[..], &b"\x01\x00"[..]),
        ("rollups", &b"not postcard"[..], &b"\x01"[..]),
        ("pairs", &b"\x07"[..], &b""[..]),
    ] {
        let topic = format!("playpulse.{GROUP}.{what}");
        kafka::send(&producer, &topic, key, value, None).unwrap();
    }
    kafka::flush(&producer, Duration::from_secs(30)).unwrap();
    for m in members.iter_mut() {
        m.wait(
            "the hostile records skipped",
            Duration::from_secs(30),
            |s| cluster(s)["unreadable"].as_u64() >= Some(3),
        );
    }
    let first = produce_video(&broker.bootstrap, TOPIC, 3000, 0.0, 23);
    wait_stored(&mut members, first.valid.len() as u64);
    let (_, run) = train(&mut members);
    let promoted = Instant::now();
    let id = run["model"].as_u64().unwrap();
    let users = sample_users(&first.valid, 10);
    all_serve_the_same(&mut members, id, promoted, &users);
    let (from, to, storing) = span(&members, &first.valid);
    group_analytics(&mut members, &first.valid, from, to, storing);
    let lists: Vec<Vec<String>> = users.iter().map(|u| members[0].list(u)).collect();

    // The broker goes away for longer than the members' timeout: each says
    // so, and keeps serving the group's champion, lists and view as held.
    broker.down();
    for m in members.iter_mut() {
        m.wait(
            "the broker away and the peer unheard",
            Duration::from_secs(60),
            |s| {
                s["broker"]["reachable"] == false
                    && cluster(s)["members"]
                        .as_array()
                        .is_some_and(|a| a.len() <= 1)
            },
        );
    }
    for m in members.iter_mut() {
        m.daemon.assert_alive();
        assert_eq!(m.status()["champion"].as_u64(), Some(id));
        for (u, l) in users.iter().zip(&lists) {
            assert_eq!(&m.list(u), l, "{u} while the broker is away");
        }
    }
    group_analytics(&mut members, &first.valid, from, to, storing);

    // Back: ingest resumes exactly once, and what each member stored while
    // publications failed reaches the others.
    broker.up();
    let second = produce_video(&broker.bootstrap, TOPIC, 2000, 0.0, 24);
    let mut all = first.valid.clone();
    all.extend(second.valid.iter().cloned());
    wait_stored(&mut members, all.len() as u64);
    let (from, to, storing) = span(&members, &all);
    group_analytics(&mut members, &all, from, to, storing);
    for m in members.iter_mut() {
        m.wait("two members listed again", Duration::from_secs(60), |s| {
            cluster(s)["members"]
                .as_array()
                .is_some_and(|a| a.len() == 2)
        });
    }
    for m in members.iter_mut() {
        m.daemon.signal(libc::SIGTERM);
        assert!(
            m.daemon.wait_exit(Duration::from_secs(60)).success(),
            "{}",
            m.daemon.log_text()
        );
    }
}
