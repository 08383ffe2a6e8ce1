//! Every size, count and id a request carries is bounded: over HTTP and the
//! control socket, a hostile value gets a 400 / an error reply naming the
//! parameter and its range, and the daemon goes on serving.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn hostile_sizes_and_ids_get_clear_errors_and_never_hurt_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[("q.video", 2), ("q.music", 1)]);
    let p = produce_video(&broker.bootstrap, "q.video", 1500, 0.0, 3);
    let (mut d, addr) = quiet_daemon(
        dir.path(),
        &broker,
        &[
            ("PLAYPULSE_MODELS__MIN_EVENTS", "100"),
            ("PLAYPULSE_MODELS__ENABLED", "true"),
        ],
    );
    wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        s["ingest"]["stored"].as_u64() == Some(p.valid.len() as u64)
    });
    let train = ctl_json(&dir.path().join("data"), &["train"]);
    assert_eq!(train["ok"], true, "{train}");
    let user = p.valid[0].user_id.clone();
    for (path, param, range) in [
        (
            format!("/api/recommend?user={user}&k=100000000000"),
            "`k` = 100000000000",
            "give 1 to 1000",
        ),
        (
            format!("/api/recommend?user={user}&k=0"),
            "`k` = 0",
            "give 1 to 1000",
        ),
        (
            "/api/recommend?user=&k=5".to_string(),
            "`user` is empty",
            "non-empty",
        ),
        (
            "/api/recommend?user=%20%20".to_string(),
            "`user` is empty",
            "non-empty",
        ),
        (
            format!("/api/recommend?user={}", "u".repeat(5000)),
            "`user` is 5000 bytes",
            "at most 1024",
        ),
        (
            "/api/recommend?user=a%00b".to_string(),
            "control character",
            "printable",
        ),
        (
            "/api/similar?item=v1&k=99999999".to_string(),
            "`k` = 99999999",
            "give 1 to 1000",
        ),
        (
            "/api/analytics?view=qoe&minutes=0".to_string(),
            "`minutes` = 0",
            "give 1 to 1440",
        ),
        (
            "/api/analytics?view=qoe&limit=100000000".to_string(),
            "`limit` = 100000000",
            "give 1 to 10000",
        ),
        (
            "/api/graph?query=top&limit=100000".to_string(),
            "`limit` = 100000",
            "give 1 to 1000",
        ),
        (
            "/api/graph?query=top&offset=99999999999".to_string(),
            "`offset`",
            "give 0 to",
        ),
        (
            "/api/recommend?user=x&k=-1".to_string(),
            "k=\"-1\" is not a number",
            "",
        ),
    ] {
        let (code, body) = http_get(&addr, &path);
        assert_eq!(code, 400, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(param) && e.contains(range), "{path}: {e}");
    }
    // The same bounds on the control socket.
    for (args, needle) in [
        (
            vec!["recommend", user.as_str(), "100000000000"],
            "`k` = 100000000000",
        ),
        (vec!["recommend", user.as_str(), "0"], "`k` = 0"),
        (vec!["similar", "v1", "0"], "`k` = 0"),
        (vec!["dlq", "--limit", "0"], "`limit` = 0"),
    ] {
        let r = ctl_json(&dir.path().join("data"), &args);
        assert_eq!(r["ok"], false, "{args:?}: {r}");
        assert!(
            r["error"].as_str().unwrap().contains(needle),
            "{args:?}: {r}"
        );
    }
    // Still serving, and the largest k allowed answers no more than the catalog.
    d.assert_alive();
    let (code, body) = http_get(&addr, &format!("/api/recommend?user={user}&k=1000"));
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let n = v["recommendations"].as_array().unwrap().len();
    assert!(
        n > 0 && n <= 80,
        "{n} recommendations of an 80-video catalog"
    );
    // The offline command refuses it too, naming the flag's range.
    let out = std::process::Command::new(bin())
        .args(["recommend", "--user", "x", "--k", "0", "--data-dir"])
        .arg(dir.path().join("nothing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give 1 to 1000"));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}
