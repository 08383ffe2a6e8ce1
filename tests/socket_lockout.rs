//! The control socket cannot be locked out: idle clients and clients that
//! send one byte a second are let go after `admin.client_timeout_seconds`, and
//! while they hold every slot a newcomer still gets in (the client that has
//! waited longest for its next request makes room).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;

fn status_over(sock: &std::path::Path) -> serde_json::Value {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn idle_and_slow_clients_never_lock_an_operator_out() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&[("q.video", 1), ("q.music", 1)]);
    let (mut d, _) = quiet_daemon(
        dir.path(),
        &broker,
        &[
            ("PLAYPULSE_ADMIN__MAX_CLIENTS", "8"),
            ("PLAYPULSE_ADMIN__CLIENT_TIMEOUT_SECONDS", "4"),
        ],
    );
    let sock = dir.path().join("data").join("playpulse.sock");
    // 8 idle clients, then 8 that trickle one byte at a time: every slot held.
    let idle: Vec<UnixStream> = (0..8)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let mut slow: Vec<UnixStream> = (0..8)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let t0 = Instant::now();
    for round in 0..3 {
        for s in &mut slow {
            let _ = s.write_all(&[b"{\"c"[round % 3]]);
        }
        // An operator gets in every time, each within a few seconds.
        let t = Instant::now();
        let r = status_over(&sock);
        assert_eq!(r["ok"], true, "round {round}: {r}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        d.assert_alive();
    }
    // Every idle client is told why and disconnected, by the timeout or to
    // make room; none stays past the timeout.
    for s in idle {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut line = String::new();
        let mut r = BufReader::new(s);
        r.read_line(&mut line).unwrap();
        assert!(
            line.contains("client_timeout_seconds") || line.contains("waited longest"),
            "{line}"
        );
        let mut rest = String::new();
        assert_eq!(r.read_line(&mut rest).unwrap(), 0, "closed after the reply");
    }
    assert!(t0.elapsed() < Duration::from_secs(20));
    // A client that holds a free slot without a request is let go after the timeout.
    drop(slow);
    let lone = UnixStream::connect(&sock).unwrap();
    lone.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t = Instant::now();
    let mut line = String::new();
    BufReader::new(lone).read_line(&mut line).unwrap();
    assert!(line.contains("no complete request within 4 s"), "{line}");
    assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
    // With the slots free again, the socket serves as usual.
    assert_eq!(ctl_status(dir.path())["ingest"]["paused"], false);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}
