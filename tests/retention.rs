//! Raw-event retention through the daemon: with `[store.retention]` set, the
//! oldest event segments are deleted while the pair rows (what training and
//! the fold-in read) still hold every stored event, and `status` says so.
//! The store's sled files are rewritten meanwhile (a bound of 1 MiB makes it
//! rewrite often): nothing stored is lost or doubled by it.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn retention_bounds_the_event_log_and_keeps_every_pair() {
    let dir = tempfile::tempdir().unwrap();
    // Enough events in small batches for two rewrites: sled holds small
    // values only (the segments, journal parts and pair runs are in files of
    // their own) and grows by what each batch rewrites of its nodes; 40,000
    // events in batches of 500 stayed below a second rewrite. Spread so that
    // no partition of the embedded broker holds more than it keeps (about 5 MiB).
    let topics = [("ret.video", 8)];
    let broker = Broker::start(&topics);
    let p = produce_video(&broker.bootstrap, "ret.video", 100_000, 0.0, 23);
    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        "retention",
        &[("video", "ret.video")],
        &[
            ("PLAYPULSE_MODELS__ENABLED", "false"),
            ("PLAYPULSE_INGEST__BATCH_SIZE", "100"),
            ("PLAYPULSE_STORE__RETENTION__MAX_SIZE_MB", "1"),
            ("PLAYPULSE_STORE__REWRITE_RATIO", "1.5"),
            ("PLAYPULSE_STORE__REWRITE_MIN_MB", "1"),
        ],
        0,
    );
    let want = p.valid.len() as i64;
    let status = wait_status(dir.path(), &mut d, Duration::from_secs(120), |s| {
        stored_below_offsets(s) >= want
            && s["store"]["event_log"]["bytes"]
                .as_u64()
                .unwrap_or(u64::MAX)
                <= 1 << 20
            && s["store"]["files"]["done"].as_u64().unwrap_or(0) >= 2
    });
    let files = &status["store"]["files"];
    assert_eq!(files["failed"], 0, "{files}");
    assert!(files["generation"].as_u64().unwrap() >= 2, "{files}");
    assert!(files["last"]["entries"].as_u64().unwrap() > 0, "{files}");
    let log = &status["store"]["event_log"];
    assert_eq!(log["max_size_mb"], 1.0, "{log}");
    assert!(log["deleted_segments"].as_u64().unwrap() > 0, "{log}");
    assert!(log["deleted_bytes"].as_u64().unwrap() > 0, "{log}");
    // The disk follows (retention of 1 MiB makes files of 1 MiB): a file goes
    // with its last segment, so what stays is the kept bytes, the oldest file's
    // deleted part and the file being written.
    let on_disk = log["file_bytes"].as_u64().unwrap();
    assert!(on_disk > 0 && on_disk <= 3 << 20, "{log}");
    let total: u64 = log["bytes"].as_u64().unwrap() + log["deleted_bytes"].as_u64().unwrap();
    assert!(
        on_disk < total,
        "files were removed: {on_disk} of {total} bytes on disk"
    );
    let text = run_ok(&[
        "ctl",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "status",
    ]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("store.event_log")
            && text.contains("deleted")
            && text.contains("store.files")
            && text.contains("rewrites, 0 failed"),
        "{text}"
    );
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());

    // The log holds the newest events only; the pairs hold all of them.
    let store = playpulse::store::Store::open(&dir.path().join("data"), 16).unwrap();
    let kept = store.events().count();
    assert!(
        kept > 0 && kept < p.valid.len(),
        "{kept} of {} events kept",
        p.valid.len()
    );
    assert!(store.retained().bytes <= 1 << 20);
    assert_pairs_match(&store, &p.valid);
}
