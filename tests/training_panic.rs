//! A panic inside a training run (injected: `PP_FAULT_PANIC_ONCE`)
//! ends that run with an error the caller hears, instead of leaving the
//! trainer busy forever; the next run trains and promotes as usual.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_panic_in_training_ends_the_run_and_the_next_one_works() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[("tp.video", 2)]);
    let p = produce_video(&broker.bootstrap, "tp.video", 2000, 0.0, 9);
    let mut d = spawn_daemon(
        dir.path(),
        &broker.bootstrap,
        "tp",
        &[("video", "tp.video")],
        &[
            ("PLAYPULSE_MODELS__ENABLED", "true"),
            ("PLAYPULSE_MODELS__MIN_EVENTS", "100"),
            ("PLAYPULSE_MODELS__TRAIN_EVERY_EVENTS", "0"),
            ("PLAYPULSE_MODELS__TRAIN_EVERY_SECONDS", "0"),
            ("PP_FAULT_PANIC_ONCE", "training"),
        ],
        0,
    );
    let data = dir.path().join("data");
    wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        s["ingest"]["stored"].as_u64() == Some(p.valid.len() as u64)
    });
    let first = ctl_json(&data, &["train"]);
    assert_eq!(first["ok"], false, "{first}");
    let e = first["error"].as_str().unwrap();
    assert!(
        e.contains("the training run failed") && e.contains("injected fault"),
        "{e}"
    );
    d.assert_alive();
    let second = ctl_json(&data, &["train"]);
    assert_eq!(second["ok"], true, "the next run works: {second}");
    let models = ctl_json(&data, &["models"]);
    assert!(models["champion"].as_u64().is_some(), "{models}");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    assert!(d.log_text().contains("the training run failed"));
}
