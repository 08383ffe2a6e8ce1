//! A full disk: the daemon's data dir on a small tmpfs (mounted by the test;
//! root only). When a store write would leave less than `store.min_free_mb`
//! free, it is not begun: the daemon stops ingest, says why and exits non-zero
//! within seconds; a restart while the disk is still full fails
//! cleanly and leaves nothing that blocks a later open; once space returns, a
//! restart stores every record exactly once — nothing of a batch that was not
//! acknowledged shows before it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_full_disk_stops_the_daemon_cleanly_and_space_returning_resumes_exactly_once() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The data dir on the tmpfs; the daemon's logs beside it, on a disk with room.
    let root = dir.path().join("small");
    let mnt = root.join("data");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=160m", "tmpfs"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let _guard = Tmpfs(root.clone());
    let topics = [("df.video", 8)];
    let broker = Broker::start(&topics);
    let produced = produce_video(&broker.bootstrap, "df.video", 60_000, 0.01, 11);
    let total = (produced.valid.len() + produced.bad_reasons.len()) as i64;

    // Leave ~70 MiB: past store.min_free_mb (64) the store refuses to write,
    // part way through the backlog.
    let ballast = root.join("ballast");
    std::fs::write(&ballast, vec![0u8; 90 << 20]).unwrap();
    let env = [
        ("PLAYPULSE_MODELS__ENABLED", "false"),
        ("PLAYPULSE_STORE__CACHE_MB", "16"),
        ("PLAYPULSE_STORE__WRITE_TIMEOUT_SECONDS", "10"),
    ];
    let start = |run| {
        spawn_daemon(
            &root,
            &broker.bootstrap,
            "df",
            &[("video", "df.video")],
            &env,
            run,
        )
    };
    let mut d = start(0);
    let t = Instant::now();
    let status = d.wait_exit(Duration::from_secs(120));
    assert!(!status.success(), "exits non-zero: {status:?}");
    let log = d.log_text();
    assert!(log.contains("the store cannot write"), "{log}");
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());

    // Started again while still full: a clear failure or a clean stop, never a hang.
    let mut d = start(1);
    let st = d.wait_exit(Duration::from_secs(120));
    assert!(!st.success(), "{}", d.log_text());

    // Space returns: everything is stored exactly once.
    std::fs::remove_file(&ballast).unwrap();
    let mut d = start(2);
    wait_status(&root, &mut d, Duration::from_secs(180), |s| {
        stored_below_offsets(s) == total
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    check_exactly_once(&root, &produced);
}
