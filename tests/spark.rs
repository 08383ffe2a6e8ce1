//! The Spark route: events go through a broker into the daemon, the lake is
//! exported, Spark MLlib ALS (pyspark, local[2]; installed by tests/run.sh,
//! `PYARROW_PYTHON` names its interpreter) trains on the pairs the daemon's
//! split does not hold out, `playpulse models --import` scores the factors on
//! the held-out pairs against popularity, records and promotes them, and the
//! daemon serves them after a restart. A factors directory for another split,
//! or with rows of the wrong length, is refused with the reason.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const TOPIC: &str = "spark.video";

fn daemon(dir: &Path, broker: &Broker, run: usize) -> Daemon {
    spawn_daemon(
        dir,
        &broker.bootstrap,
        "spark",
        &[("video", TOPIC)],
        // Nothing trains here: the champion is the import.
        &[("PLAYPULSE_MODELS__MIN_EVENTS", "1000000000")],
        run,
    )
}

fn python() -> String {
    std::env::var("PYARROW_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `playpulse models --import DIR` with extra environment: (ok, stdout, stderr).
fn import(data: &Path, factors: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["models", "--data-dir"])
        .arg(data)
        .arg("--import")
        .arg(factors);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run playpulse");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn spark_als_trained_on_the_lake_is_imported_scored_promoted_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[(TOPIC, 2)]);
    let produced = produce_video(&broker.bootstrap, TOPIC, 20_000, 0.0, 53);
    let mut d = daemon(dir.path(), &broker, 0);
    wait_status(dir.path(), &mut d, Duration::from_secs(120), |s| {
        s["ingest"]["stored"].as_u64() == Some(20_000)
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    let data = dir.path().join("data");

    // The lake, with the pairs the daemon's split holds out marked.
    let lake = dir.path().join("lake");
    run_ok(&[
        "export",
        "parquet",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        lake.to_str().unwrap(),
    ]);
    let split: Value =
        serde_json::from_slice(&std::fs::read(lake.join("split.json")).unwrap()).unwrap();
    assert_eq!(
        (split["seed"].as_u64(), split["test_fraction"].as_f64()),
        (Some(42), Some(0.2))
    );

    // Spark MLlib ALS on it.
    let factors = dir.path().join("factors");
    let job = concat!(env!("CARGO_MANIFEST_DIR"), "/spark/train_als.py");
    let out = Command::new(python())
        .arg(job)
        .arg("--lake")
        .arg(&lake)
        .arg("--out")
        .arg(&factors)
        .args(["--rank", "16", "--iterations", "8", "--driver-memory", "1g"])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; run tests/run.sh (it installs pyspark)", python()));
    assert!(
        out.status.success(),
        "the Spark job failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value =
        serde_json::from_slice(&std::fs::read(factors.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["rank"], 16, "{meta}");
    assert!(
        meta["source"]
            .as_str()
            .unwrap()
            .starts_with("spark-mllib-als"),
        "{meta}"
    );

    // Another split's factors are refused: its test pairs may have been trained on.
    let (ok, _, err) = import(&data, &factors, &[("PLAYPULSE_MODELS__SEED", "7")]);
    assert!(!ok && err.contains("held-out draw seed 42"), "{err}");
    // Rows that are not meta.json's rank long are refused, naming the row.
    let bad = dir.path().join("bad-factors");
    copy_dir(&factors, &bad);
    let mut m = meta.clone();
    m["rank"] = 17.into();
    std::fs::write(bad.join("meta.json"), m.to_string()).unwrap();
    let (ok, _, err) = import(&data, &bad, &[]);
    assert!(
        !ok && err.contains("features = 16 values") && err.contains("rank"),
        "{err}"
    );

    // Imported: scored on the held-out pairs, recorded, promoted (the first
    // model, above popularity).
    let (ok, out, err) = import(&data, &factors, &[]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    let id = report["model"].as_u64().unwrap();
    assert_eq!(report["promoted"], true, "{report}");
    assert!(
        report["value"].as_f64().unwrap() > report["popularity"].as_f64().unwrap(),
        "{report}"
    );
    let info = &report["imported"];
    // (A user all of whose pairs are held out has no factors from Spark.)
    let (matched, missing) = (
        info["users_matched"].as_u64().unwrap(),
        info["users_missing"].as_u64().unwrap(),
    );
    assert!(matched > 100 && missing * 20 <= matched, "{report}");
    assert_eq!(info["items_missing"], 0, "{report}");
    // Spark trained on the pairs not held out.
    let pairs = meta["pairs"].as_u64().unwrap();
    let listed = run_ok(&["models", "--data-dir", data.to_str().unwrap()]);
    let version: Value = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["model"].clone())
        .find(|v| v["id"] == id)
        .unwrap();
    assert!(
        version["imported"]["source"]
            .as_str()
            .unwrap()
            .starts_with("spark-mllib-als"),
        "{version}"
    );
    // (Those with feedback: at most the training side, none held out.)
    let train_pairs = version["data"]["train_pairs"].as_u64().unwrap();
    assert!(
        pairs <= train_pairs && pairs * 10 > train_pairs * 9,
        "Spark trained on {pairs} pairs, the split's training side holds {train_pairs}: {version}"
    );

    // Served: offline, and by the daemon after a restart.
    let user = &produced.valid[0].user_id;
    let rec = recommend_offline(&data, user, 5, &[]);
    assert_eq!(
        (rec["model"].as_u64(), rec["family"].as_str()),
        (Some(id), Some("als")),
        "{rec}"
    );
    assert_eq!(
        rec["recommendations"].as_array().map(Vec::len),
        Some(5),
        "{rec}"
    );
    let mut d = daemon(dir.path(), &broker, 1);
    let served = wait_reply(
        &mut d,
        Duration::from_secs(60),
        "the daemon serves the import",
        || ctl_json(&data, &["recommend", user, "5"]),
        |r| r["model"].as_u64() == Some(id),
    );
    assert_eq!(
        served["recommendations"], rec["recommendations"],
        "{served}"
    );

    // Through the running daemon: the same factors again, scored on the same
    // split against the champion they are, so kept; a bad directory is
    // refused with the reason; the champion still serves.
    let again = ctl_json(
        &data,
        &["models", "import", "--dir", factors.to_str().unwrap()],
    );
    let second = again["model"].as_u64().unwrap_or_else(|| panic!("{again}"));
    assert!(second > id, "{again}");
    assert_eq!(again["promoted"], false, "{again}");
    assert!(
        (again["value"].as_f64().unwrap() - again["champion"].as_f64().unwrap()).abs() < 1e-9,
        "{again}"
    );
    let refused = ctl_json(&data, &["models", "import", "--dir", bad.to_str().unwrap()]);
    assert!(
        refused.to_string().contains("features = 16 values"),
        "{refused}"
    );
    let status = ctl_json(&data, &["status"]);
    assert_eq!(status["champion"].as_u64(), Some(id), "{status}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
