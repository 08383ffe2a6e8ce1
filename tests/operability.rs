//! What an operator meets around the daemon: a dashboard port in use stops it
//! before anything starts, with the key to change; the data dir is private;
//! requests naming another host are refused (DNS rebinding); a removed
//! control socket comes back; CLI output into a closed pipe ends quietly;
//! requests are answered on threads above the background work's class.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use playpulse::domain::record::{Outcome, Processed, SourcePos};
use playpulse::domain::reject::Rejection;

#[test]
fn a_dashboard_port_in_use_stops_the_start_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let t = Instant::now();
    let out = Command::new(bin())
        .args(["run", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("PLAYPULSE_HTTP__LISTEN", &addr)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.listen") && err.contains(&addr), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn private_files_host_checks_and_a_socket_that_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[("q.video", 1), ("q.music", 1)]);
    let (mut d, addr) = quiet_daemon(dir.path(), &broker, &[]);
    let data = dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for e in std::fs::read_dir(data.join("store")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    assert_eq!(mode(&data.join("playpulse.sock")), 0o600);

    let port = addr.rsplit_once(':').unwrap().1;
    assert_eq!(http_get(&addr, "/api/status").0, 200);
    assert_eq!(
        http_get_host(&addr, "/api/status", &format!("localhost:{port}")).0,
        200
    );
    let (code, body) = http_get_host(
        &addr,
        "/api/status",
        &format!("rebind.attacker.test:{port}"),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("http.allowed_hosts"), "{body}");
    assert_eq!(http_get_host(&addr, "/", "evil.test").0, 403);

    std::fs::remove_file(data.join("playpulse.sock")).unwrap();
    let s = wait_status(dir.path(), &mut d, Duration::from_secs(20), |s| {
        s["state"] == "running"
    });
    assert_eq!(s["ok"], true);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}

/// (name, scheduling policy) of each thread of process `pid`, from
/// `/proc/PID/task/TID/stat` (the policy is its 41st field; the name, in
/// parentheses, may hold spaces).
#[cfg(target_os = "linux")]
fn thread_classes(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(e.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        let name = stat[open + 1..close].to_string();
        // Fields from the 3rd on follow the name: the policy is the 41st.
        let policy: i64 = stat[close + 1..]
            .split_whitespace()
            .nth(41 - 3)
            .unwrap()
            .parse()
            .unwrap();
        out.push((name, policy));
    }
    out
}

/// The scheduler slice (ns) of each thread named `name` of process `pid`,
/// from `/proc/PID/task/TID/sched` (none where the kernel shows none).
#[cfg(target_os = "linux")]
fn thread_slices(pid: u32, name: &str) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(sched) = std::fs::read_to_string(e.unwrap().path().join("sched")) else {
            continue;
        };
        // The first line is "NAME (TID, #threads: N)".
        if !sched.starts_with(&format!("{name} (")) {
            continue;
        }
        out.push(
            sched
                .lines()
                .find(|l| l.starts_with("se.slice"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse().ok()),
        );
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn requests_are_answered_above_the_background_work() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[("q.video", 1), ("q.music", 1)]);
    let (mut d, addr) = quiet_daemon(dir.path(), &broker, &[("PLAYPULSE_HTTP__THREADS", "3")]);
    wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        s["state"] == "running"
    });
    assert_eq!(http_get(&addr, "/api/status").0, 200);
    let threads = thread_classes(d.child.id());
    let class = |name: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .collect()
    };
    // The HTTP runtime's 3 workers (and any blocking threads) at the
    // requests' class, SCHED_OTHER (0).
    let http = class("http");
    assert!(http.len() >= 3, "{threads:?}");
    assert!(
        http.iter().all(|p| *p == libc::SCHED_OTHER as i64),
        "{threads:?}"
    );
    // With a short slice of their own where the kernel shows slices (a
    // request preempts a normal-class thread's longer slice).
    let slices = thread_slices(d.child.id(), "http");
    assert_eq!(slices.len(), http.len(), "{slices:?}");
    if slices.iter().any(Option::is_some) {
        assert!(
            slices.iter().all(|s| *s == Some(100_000)),
            "http threads' slices: {slices:?}"
        );
    }
    // Throughput work in the idle class (SCHED_IDLE, 5): the fold-in's
    // solves and the compactors.
    for name in ["fold-in-0", "pair-compactor", "rollup-compacto"] {
        assert_eq!(
            class(name),
            vec![libc::SCHED_IDLE as i64],
            "{name}: {threads:?}"
        );
    }
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = playpulse::store::Store::open(dir.path(), 16).unwrap();
        let records: Vec<Processed> = (0..5000)
            .map(|i| Processed {
                pos: SourcePos {
                    topic: Arc::from("t"),
                    partition: 0,
                    offset: i,
                },
                origin: None,
                headers: Default::default(),
                outcome: Outcome::Rejected {
                    rejection: Rejection::new("invalid_json", "not JSON"),
                    raw: format!("garbage {i} {}", "x".repeat(200)).into_bytes(),
                },
            })
            .collect();
        store
            .apply("ns", playpulse::store::prepare(records))
            .unwrap();
        store.close().unwrap();
    }
    let mut child = Command::new(bin())
        .args(["dlq", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe: the rest of the output has nowhere to go.
    {
        use std::io::BufRead;
        let mut line = String::new();
        let mut r = std::io::BufReader::new(child.stdout.take().unwrap());
        r.read_line(&mut line).unwrap();
        assert!(line.contains("invalid_json"), "{line}");
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
}
