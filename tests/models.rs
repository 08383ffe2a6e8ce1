//! The daemon trains on its own trigger, evaluates, promotes; the champion's
//! recommendations for users with a planted taste are dominated by that taste's
//! genre; a restart serves the stored champion without retraining. The
//! trainer's hyperparameter search runs on the stored events and its trials
//! are recorded in the version.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bin, recommend_offline, run_ok};
use playpulse::ml::family::{Family, Params};
use playpulse::ml::rerank::RerankOutcome;
use playpulse::ml::version;
use playpulse::store::Store;
use playpulse::synth::generate::{user_id, World, GENRES};

fn start(data: &std::path::Path, env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(bin());
    cmd.args([
        "run",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        "--data-dir",
    ])
    .arg(data)
    .env("PLAYPULSE_HTTP__LISTEN", "127.0.0.1:0")
    .env("PLAYPULSE_MODELS__RETRAIN_NEW_PAIRS_SHARE", "0")
    .env("RUST_LOG", "info,librdkafka=warn")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn daemon");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        stderr
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx.send(l)))
    });
    (child, rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, child: &mut Child, what: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut log = String::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains(what) {
                    return log;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("no `{what}` within {limit:?}; log:\n{log}");
            }
        }
    }
}

fn stop(mut child: Child, rx: &mpsc::Receiver<String>) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().expect("wait");
    if !status.success() {
        let log: Vec<String> = rx.try_iter().collect();
        panic!(
            "the daemon stopped with {status}; its last lines:\n{}",
            log[log.len().saturating_sub(40)..].join("\n")
        );
    }
}

#[test]
fn trains_promotes_recommends_the_planted_taste_and_serves_it_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        (
            "PLAYPULSE_PRODUCERS__RATE",
            "{ video = 20000.0, movies = 400.0 }",
        ),
        ("PLAYPULSE_MODELS__MIN_EVENTS", "150000"),
        ("PLAYPULSE_MODELS__TRAIN_EVERY_EVENTS", "150000"),
        ("PLAYPULSE_MODELS__FACTORS", "16"),
        // The search's budget in fits of the configured point: this data set's
        // fit takes a fraction of a second, so 40 of them leave room for a
        // few dozen trials.
        ("PLAYPULSE_MODELS__SEARCH_BUDGET_FITS", "40"),
        // ALS alone: this test follows its search, ranking stage and taste
        // (an item × item champion: tests/freshness.rs, src/ml/train.rs).
        ("PLAYPULSE_MODELS__SEARCH_FAMILIES", "[\"als\"]"),
    ];
    let (mut child, rx) = start(&data, &env);
    let log = wait_for(&rx, &mut child, "promoted", Duration::from_secs(300));
    assert!(log.contains("model v1 trained"), "{log}");
    stop(child, &rx);

    let store = Store::open(&data, 64).unwrap();
    let champion = version::champion(&store).unwrap().expect("a champion");
    let rec = champion.recommender().expect("a recommender");
    let ndcg = rec.metrics.ranking.ndcg;
    let baseline = rec.baseline.ndcg;
    // The ranking stage was fitted with it and scored on the same held-out
    // split; the version says whether it serves with it.
    let stage = match rec
        .rerank
        .as_ref()
        .expect("the ranking stage (models.rerank)")
    {
        RerankOutcome::Evaluated(e) => e.clone(),
        other => panic!("the ranking stage was not fitted: {other:?}"),
    };
    eprintln!(
        "ranking stage: {}",
        RerankOutcome::Evaluated(stage.clone()).describe()
    );
    assert!(stage.train_rows >= 100 && stage.test_rows > 0, "{stage:?}");
    assert!(stage.users[0] > 0 && stage.users[1] > 0, "{stage:?}");
    assert_eq!(
        stage.used,
        stage.weight > 0.0 && stage.test_reranked.ndcg_views > stage.test_plain.ndcg_views,
        "{stage:?}"
    );
    // The trainer searched ALS's hyperparameters on a validation share of its
    // training side (config.toml's budget), starting from the configured
    // point, and fitted the best one.
    let search = rec
        .search
        .as_ref()
        .expect("a search (models.search_budget_seconds)");
    assert!(search.trials.len() >= 4, "{search:?}");
    assert!(search.validation_users > 0, "{search:?}");
    // Counted in fits of the configured point, the first trial.
    let unit = search.fit_unit_s.expect("the budget's unit");
    assert_eq!(unit, search.trials[0].fit_s, "{search:?}");
    assert!(
        (search.budget_s - (40.0 * unit).min(60.0)).abs() < 1e-9,
        "{search:?}"
    );
    assert!(search
        .trials
        .iter()
        .all(|t| t.params.family() == Family::Als && t.validation.is_some()));
    match &search.trials[0].params {
        Params::Als(p) => assert_eq!(p.factors, 16, "the configured point first: {p:?}"),
        other => panic!("{other:?}"),
    }
    let best = search.best_of(Family::Als).expect("a best ALS trial");
    assert_eq!(best.params, Params::Als(rec.params.clone()));
    let top = best.validation.unwrap();
    eprintln!(
        "search: {} trials, best {} (validation {top:.4}); test ndcg {:.4}, popularity {:.4}",
        search.trials.len(),
        best.params.describe(),
        rec.metrics.ranking.ndcg,
        rec.baseline.ndcg
    );
    assert!(search.trials.iter().all(|t| t.validation.unwrap() <= top));
    assert!(
        ndcg > baseline * 1.5,
        "ALS ndcg {ndcg} vs popularity {baseline}"
    );
    let models_before = version::versions(&store).unwrap().len();
    // The version records the offsets its snapshot was taken at: every stored
    // event came from below them.
    let snap = champion.snapshot();
    let below: i64 = snap.offsets.values().flat_map(|m| m.values()).sum();
    assert!(below as u64 >= snap.stored_events && below > 0, "{snap:?}");

    // Users of the synthetic world (config.toml's producers) with one preferred genre.
    let world = World::new(5000, 1000, 42);
    let mut activity: HashMap<String, u64> = HashMap::new();
    for p in store.pair_aggregates() {
        let (u, _, a) = p.unwrap();
        *activity.entry(u).or_default() += a.events;
    }
    drop(store);
    let mut planted: Vec<(u64, String, &str)> = (0..world.users)
        .filter(|&u| world.user_genres[u].len() == 1)
        .map(|u| {
            (
                activity.get(&user_id(u)).copied().unwrap_or(0),
                user_id(u),
                GENRES[world.user_genres[u][0]],
            )
        })
        .collect();
    // Typical users: the most active have already seen most of their genre.
    planted.sort_by(|a, b| b.cmp(a));
    let typical = planted.len() / 4;
    let (mut hits, mut total, mut chance) = (0, 0, 0.0);
    for (_, user, genre) in planted.iter().skip(typical).take(20) {
        // What a genre-blind pick would give: the genre's share of the catalog.
        let g = GENRES.iter().position(|x| x == genre).unwrap();
        chance +=
            world.video_genre.iter().filter(|&&v| v == g).count() as f64 / world.videos as f64;
        let v = recommend_offline(&data, user, 10, &[]);
        let recs = v["recommendations"].as_array().unwrap();
        assert_eq!(recs.len(), 10, "{v}");
        // Reordered by the ranking stage exactly when the version serves with it.
        assert_eq!(
            v["rerank_weight"].as_f64(),
            stage.used.then_some(stage.weight),
            "{v}"
        );
        assert!(recs.iter().all(|r| r["because"].is_string()), "{v}");
        hits += recs.iter().filter(|r| r["genre"] == *genre).count();
        total += recs.len();
    }
    let share = hits as f64 / total as f64;
    let chance = chance / 20.0;
    eprintln!("planted genre share {share:.3}, chance {chance:.3}");
    // The search picks by held-out NDCG (its choice ranks the held-out views
    // better than the configured point); its lists spread a little beyond the
    // one planted genre (0.60–0.84 of them in it over four runs, against 0.7+
    // for the configured point), still far above a genre-blind pick.
    assert!(
        share > 0.5 && share > 3.0 * chance,
        "planted genre share {share:.2} of {total} recommendations (chance {chance:.2})"
    );

    // The notebooks' export for Power BI, with the catalog's titles.
    let csv_path = dir.path().join("final_recommendations.csv");
    run_ok(&[
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        csv_path.to_str().unwrap(),
        "--k",
        "5",
    ]);
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    assert_eq!(
        reader.headers().unwrap(),
        vec![
            "user_id",
            "rank",
            "recommended_content",
            "title",
            "predicted_rating",
            "domain"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    // One list of 5 per (user, domain), never mixing domains.
    let mut lists: std::collections::HashMap<(&str, &str), usize> = Default::default();
    for r in &rows {
        assert!(["video", "music"].contains(&&r[5]), "{r:?}");
        *lists.entry((&r[0], &r[5])).or_default() += 1;
    }
    assert!(!lists.is_empty());
    assert!(lists.values().all(|&n| n == 5), "{lists:?}");
    assert!(rows
        .iter()
        .all(|r| (1..=5).contains(&r[1].parse::<u32>().unwrap()) && r[4].parse::<f32>().is_ok()));
    let titled = rows.iter().filter(|r| !r[3].is_empty()).count();
    assert!(
        titled * 10 >= rows.len() * 9,
        "{titled} of {} rows have a title",
        rows.len()
    );

    // The classifiers were trained alongside, and their held-out predictions export.
    let store = Store::open(&data, 64).unwrap();
    let models = version::versions(&store).unwrap();
    let accuracy = |m: &version::ModelVersion| m.classifier().unwrap().metrics.accuracy;
    drop(store);
    for kind in ["decision_tree", "svm"] {
        let m = models
            .iter()
            .find(|m| m.kind().as_str() == kind)
            .unwrap_or_else(|| panic!("no {kind} version: {models:?}"));
        assert!(accuracy(m) > 0.9, "{m:?}");
    }
    let pred_path = dir.path().join("predictions.csv");
    run_ok(&[
        "export",
        "--what",
        "predictions",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        pred_path.to_str().unwrap(),
    ]);
    let mut reader = csv::Reader::from_path(&pred_path).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    for kind in ["decision_tree", "svm"] {
        let mine: Vec<&csv::StringRecord> = rows.iter().filter(|r| &r[0] == kind).collect();
        let right = mine.iter().filter(|r| r[5] == r[6]).count() as f64 / mine.len() as f64;
        let stored = accuracy(models.iter().find(|m| m.kind().as_str() == kind).unwrap());
        assert!(
            (right - stored).abs() < 1e-9,
            "{kind}: CSV accuracy {right} vs recorded {stored}"
        );
    }

    // The stored classifiers predict new events (not seen in training) as well as
    // they did on their held-out rows.
    let mut g = playpulse::synth::generate::VideoGen::new(
        World::new(5000, 1000, 7),
        7,
        1_767_225_600_000,
        50,
    );
    let events_path = dir.path().join("new_events.jsonl");
    let mut lines = Vec::new();
    for _ in 0..2000 {
        let e = playpulse::domain::event::Event::Video(g.next_event());
        lines.extend(playpulse::ingest::wire::to_json(&e));
        lines.push(b'\n');
    }
    std::fs::write(&events_path, lines).unwrap();
    for kind in ["decision_tree", "svm"] {
        let out_csv = dir.path().join(format!("{kind}.csv"));
        let out = run_ok(&[
            "predict",
            "--model",
            kind,
            "--data-dir",
            data.to_str().unwrap(),
            "--events",
            events_path.to_str().unwrap(),
            "--out",
            out_csv.to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["events"], 2000, "{v}");
        assert!(v["accuracy"].as_f64().unwrap() > 0.9, "{v}");
        let version = models
            .iter()
            .filter(|m| m.kind().as_str() == kind)
            .map(|m| m.id)
            .max();
        assert_eq!(v["version"].as_u64(), version, "{v}");
        let rows: Vec<csv::StringRecord> = csv::Reader::from_path(&out_csv)
            .unwrap()
            .records()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2000);
        let right = rows.iter().filter(|r| r[3] == r[4]).count() as f64 / 2000.0;
        assert!((right - v["accuracy"].as_f64().unwrap()).abs() < 1e-12);
    }

    // A user the model has never seen: the cold start, by region when given.
    let store = Store::open(&data, 64).unwrap();
    let regions = store.item_regions();
    drop(store);
    let (region, counts) = regions.iter().max_by_key(|(_, v)| v.len()).unwrap();
    let counts: HashMap<&str, u64> = counts.iter().map(|(v, n)| (v.as_str(), *n)).collect();
    let v = recommend_offline(&data, "someone-new", 10, &["--region", region]);
    assert_eq!(v["known"], false, "{v}");
    let recs = v["recommendations"].as_array().unwrap();
    assert_eq!(recs.len(), 10, "{v}");
    let mut last = f64::INFINITY;
    for r in recs {
        assert_eq!(r["reason"], format!("trending in region {region}"), "{v}");
        // The score is the item's event count in the region when the model was
        // trained: at most what the store holds now (ingest went on).
        let score = r["score"].as_f64().unwrap();
        let now = counts[r["item"].as_str().unwrap()] as f64;
        assert!(
            score > 0.0 && score <= now && score <= last,
            "{r} ({now} now) in {v}"
        );
        last = score;
    }

    // Restart with no training due: the stored champion is served as is.
    let (mut child, rx) = start(&data, &[("PLAYPULSE_PRODUCERS__MODE", "never")]);
    let log = wait_for(
        &rx,
        &mut child,
        &format!("serving champion model v{}", champion.id),
        Duration::from_secs(60),
    );
    assert!(!log.contains("trained in"), "{log}");
    stop(child, &rx);
    let store = Store::open(&data, 64).unwrap();
    assert_eq!(version::versions(&store).unwrap().len(), models_before);
    assert_eq!(store.champion_id().unwrap(), Some(champion.id));
}
