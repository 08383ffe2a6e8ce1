//! Content affinity end to end: the catalog producers' movies and series and a
//! planted user profile go through a broker into the daemon; the new user (no
//! viewing history, no model yet) gets the titles that match the profile,
//! ranked exactly as the affinity formula computed here from the produced
//! records says, with titles and the matches as the reason.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use playpulse::config::KafkaConfig;
use playpulse::domain::event::{Event, Title, UserProfile};
use playpulse::kafka;
use playpulse::synth::generate::{CatalogGen, World};

const USERS: &str = "aff.users";
const MOVIES: &str = "aff.movies";
const SERIES: &str = "aff.series";

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

/// The documented formula, written again from its definition.
fn expected(p: &UserProfile, t: &Title) -> f64 {
    let liked = |v: &[String]| -> HashSet<String> { v.iter().map(|s| norm(s)).collect() };
    let share = |names: &[String], liked: &HashSet<String>| -> f64 {
        let names: HashSet<String> = names.iter().map(|s| norm(s)).collect();
        if names.is_empty() {
            0.0
        } else {
            names.iter().filter(|n| liked.contains(*n)).count() as f64 / names.len() as f64
        }
    };
    let directors = share(&t.directors, &liked(&p.directors));
    0.35 * share(&t.genres, &liked(&p.genres))
        + if directors > 0.0 { 0.20 } else { 0.0 }
        + 0.20 * share(&t.actors, &liked(&p.actors))
        + if norm(&t.classification) == norm(&p.classification) {
            0.10
        } else {
            0.0
        }
        + if liked(&p.favorite_decades).contains(&norm(&t.release_decade)) {
            0.15
        } else {
            0.0
        }
}

#[test]
fn a_new_user_with_a_planted_profile_gets_the_matching_titles_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[(USERS, 2), (MOVIES, 2), (SERIES, 2)]);
    let producer = kafka::producer(&broker.bootstrap, &KafkaConfig::default()).unwrap();
    let mut g = CatalogGen::new(World::new(200, 300, 9), 9);
    let mut titles: Vec<Title> = Vec::new();
    for i in 0..300 {
        let m = g.next_movie(1_767_225_600_000 + i);
        let rec = playpulse::ingest::wire::to_json(&Event::Movie(m.clone()));
        kafka::send(&producer, MOVIES, m.id.as_bytes(), &rec, None).unwrap();
        titles.push(m);
    }
    for i in 0..60 {
        let s = g.next_series(1_767_225_600_000 + i);
        let rec = playpulse::ingest::wire::to_json(&Event::Series(s.clone()));
        kafka::send(&producer, SERIES, s.id.as_bytes(), &rec, None).unwrap();
        titles.push(s);
    }
    // The planted profile: the genre, a director and the actors of one horror
    // title, a rating class and a decade.
    let seed = titles
        .iter()
        .find(|t| t.genres.iter().any(|g| g == "Horror"))
        .expect("a horror title")
        .clone();
    let planted = UserProfile {
        id: "planted_user".into(),
        timestamp_ms: 1_767_225_600_000,
        name: "Planted".into(),
        subscription_date: "2025-01-01".into(),
        genres: vec!["Horror".into()],
        directors: seed.directors.clone(),
        actors: seed.actors.clone(),
        classification: seed.classification.clone(),
        favorite_decades: vec![seed.release_decade.clone()],
    };
    let rec = playpulse::ingest::wire::to_json(&Event::User(planted.clone()));
    kafka::send(&producer, USERS, b"planted_user", &rec, None).unwrap();
    kafka::flush(&producer, Duration::from_secs(30)).unwrap();

    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        "affinity-test",
        &[("users", USERS), ("movies", MOVIES), ("series", SERIES)],
        &[("PLAYPULSE_MODELS__ENABLED", "false")],
        0,
    );
    let total = titles.len() as u64 + 1;
    wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        s["ingest"]["stored"].as_u64() == Some(total)
    });
    let data = dir.path().join("data");

    let r = ctl_json(&data, &["recommend", "planted_user", "20"]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["cold_start"], "profile affinity", "{r}");
    assert_eq!(r["known"], false);
    let got: Vec<(String, f64)> = r["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["item"].as_str().unwrap().to_string(),
                x["score"].as_f64().unwrap(),
            )
        })
        .collect();
    // The expected ranking: the latest record of each id, score > 0, highest
    // first, then by id.
    let mut latest: std::collections::BTreeMap<&str, &Title> = Default::default();
    for t in &titles {
        latest.insert(&t.id, t);
    }
    let mut want: Vec<(String, f64)> = latest
        .values()
        .map(|t| (t.id.clone(), expected(&planted, t)))
        .filter(|(_, s)| *s > 0.0)
        .collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    want.truncate(20);
    assert_eq!(got.len(), 20);
    for ((gi, gs), (wi, ws)) in got.iter().zip(&want) {
        assert_eq!(gi, wi, "ranking: {got:?}\nwant {want:?}");
        assert!((gs - ws).abs() < 1e-9, "{gi}: {gs} vs {ws}");
    }
    // Matching content first: the seed title tops it, and every one of the top
    // ten shares the planted genre.
    assert_eq!(got[0].0, seed.id);
    for x in r["recommendations"].as_array().unwrap().iter().take(10) {
        let t = latest[x["item"].as_str().unwrap()];
        assert!(t.genres.iter().any(|g| g == "Horror"), "{x}");
        assert_eq!(x["title"].as_str(), Some(t.title.as_str()));
        assert!(
            x["reason"].as_str().unwrap().contains("genre horror"),
            "{x}"
        );
    }
    // A user with neither a profile nor a model: the error says why.
    let none = ctl_json(&data, &["recommend", "nobody_at_all"]);
    assert!(
        none["error"]
            .as_str()
            .unwrap()
            .contains("no model has been trained yet"),
        "{none}"
    );
}
