//! The daemon as a user starts it: embedded broker, built-in producers, steady
//! progress logs, clean SIGTERM; and configuration errors that name the key.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bin, run_ok};

fn field(line: &str, name: &str) -> Option<u64> {
    let i = line.find(&format!("{name}="))? + name.len() + 1;
    line[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn run_on_the_embedded_default_ingests_logs_progress_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(bin())
        .args([
            "run",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
            "--data-dir",
        ])
        .arg(&data)
        .env("PLAYPULSE_HTTP__LISTEN", "127.0.0.1:0")
        .env("PLAYPULSE_INGEST__LOG_INTERVAL_SECONDS", "1")
        .env("RUST_LOG", "info,librdkafka=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx.send(l)))
    });
    std::thread::spawn(move || {
        stderr
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx2.send(l)))
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut broker_line, mut progress_lines, mut log) = (None, Vec::new(), String::new());
    while progress_lines.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("no steady progress within 120 s; output:\n{log}");
            }
        };
        log.push_str(&line);
        log.push('\n');
        if line.starts_with("embedded broker: ") {
            broker_line = Some(line.clone());
        }
        if line.contains("ingest:") && field(&line, "stored").unwrap_or(0) > 0 {
            progress_lines.push(line);
        }
    }
    let addr = broker_line.expect("the embedded broker's address is printed");
    assert!(addr.starts_with("embedded broker: 127.0.0.1:"), "{addr}");
    let stored: Vec<u64> = progress_lines
        .iter()
        .filter_map(|l| field(l, "stored"))
        .collect();
    assert!(stored.windows(2).all(|w| w[0] <= w[1]), "{stored:?}");

    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}; output:\n{log}");

    let out = run_ok(&[
        "stats",
        "--data-dir",
        data.to_str().expect("a UTF-8 temporary path"),
    ]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = *stored.last().unwrap();
    assert!(
        stats["counters"]["stored"].as_u64().unwrap() >= last,
        "{stats}"
    );
    assert!(
        stats["counters"]["stored/video"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(
        stats["counters"]["stored/music_event"]
            .as_u64()
            .unwrap_or(0)
            + stats["counters"]["stored/track"].as_u64().unwrap_or(0)
            > 0
    );
    assert!(
        stats["qoe"]["region"].as_object().unwrap().len() > 1,
        "{stats}"
    );
}

#[test]
fn bad_configuration_stops_the_daemon_with_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[ingest]\nbatch_size = 0\n").unwrap();
    let out = Command::new(bin())
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ingest.batch_size") && err.contains("must be 1..="),
        "{err}"
    );

    let out = Command::new(bin())
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .env("PLAYPULSE_KAFKA__BROKRS", "x:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("brokrs") && err.contains("PLAYPULSE_KAFKA__BROKRS"),
        "{err}"
    );
}

#[test]
fn produce_rejects_unknown_kinds_and_bad_rates() {
    let out = Command::new(bin())
        .args([
            "produce",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--kind",
            "podcast",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kind \"podcast\""));
    let out = Command::new(bin())
        .args([
            "produce",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--start",
            "soon",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--start \"soon\""));
}
