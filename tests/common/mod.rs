//! Helpers shared by the integration tests: a Kafka-protocol broker owned by the
//! test (so it outlives daemon restarts), the daemon as a child process, and
//! waits on the consumer group's committed offsets (the daemon claims each
//! batch there before it writes it, and its drain at SIGTERM writes every
//! claimed batch), never on sleeps.
#![allow(dead_code)]

pub mod rollups;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use playpulse::config::KafkaConfig;
use playpulse::domain::event::{Event, VideoEvent};
use playpulse::kafka;
use playpulse::synth::corrupt::{bad_rng, corrupt_video};
use playpulse::synth::generate::{VideoGen, World};
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_playpulse")
}

/// A broker for one test; it lives as long as this value (on the test's thread).
pub struct Broker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
}

impl Broker {
    pub fn start(topics: &[(&str, i32)]) -> Broker {
        let cluster = MockCluster::new(1).expect("mock cluster");
        for (t, p) in topics {
            cluster.create_topic(t, *p, 1).expect("create topic");
        }
        let bootstrap = cluster.bootstrap_servers();
        Broker { cluster, bootstrap }
    }

    /// The broker drops its connections and refuses new ones until [`Broker::up`].
    pub fn down(&self) {
        self.cluster.broker_down(1).expect("broker down");
    }

    pub fn up(&self) {
        self.cluster.broker_up(1).expect("broker up");
    }

    /// The next offset commits fail with these errors, one each.
    pub fn fail_commits(&self, errors: &[rdkafka::types::RDKafkaRespErr]) {
        self.cluster
            .request_errors(rdkafka::types::RDKafkaApiKey::OffsetCommit, errors);
    }
}

/// What was produced: the valid events and the reasons of the bad ones.
#[derive(Default)]
pub struct Produced {
    pub valid: Vec<VideoEvent>,
    pub bad_reasons: Vec<&'static str>,
}

pub fn produce_video(
    bootstrap: &str,
    topic: &str,
    n: usize,
    bad_fraction: f64,
    seed: u64,
) -> Produced {
    let producer = kafka::producer(bootstrap, &KafkaConfig::default()).expect("producer");
    let mut g = VideoGen::new(World::new(300, 80, seed), seed, 1_735_689_600_000, 50);
    let mut rng = bad_rng(seed);
    let mut out = Produced::default();
    for _ in 0..n {
        let ev = g.next_event();
        let payload = if rng.gen::<f64>() < bad_fraction {
            let (p, reason) = corrupt_video(&ev, &mut rng);
            out.bad_reasons.push(reason);
            p
        } else {
            let p = playpulse::ingest::wire::to_json(&Event::Video(ev.clone()));
            out.valid.push(ev);
            p
        };
        kafka::send(
            &producer,
            topic,
            out.valid.len().to_string().as_bytes(),
            &payload,
            None,
        )
        .expect("send");
    }
    kafka::flush(&producer, Duration::from_secs(60)).expect("flush");
    out
}

/// Streams video events (1 % malformed) of a world of `users` × `videos` to
/// `topic` at `rate`/s until `stop`; `sent` sees each record once it is handed
/// to the producer: its payload, and the event when it is a valid one.
/// `props` are librdkafka settings of the producer.
pub fn stream_video(
    (bootstrap, props): (&str, &[(&str, &str)]),
    topic: &str,
    rate: f64,
    (users, videos, seed): (usize, usize, u64),
    stop: &std::sync::atomic::AtomicBool,
    mut sent: impl FnMut(Vec<u8>, Option<VideoEvent>),
) {
    let mut cfg = KafkaConfig::default();
    cfg.properties
        .extend(props.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let producer = kafka::producer(bootstrap, &cfg).expect("producer");
    let mut g = VideoGen::new(World::new(users, videos, seed), seed, 1_767_225_600_000, 20);
    let mut rng = bad_rng(seed);
    let t0 = Instant::now();
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let due = (t0.elapsed().as_secs_f64() * rate) as u64;
        while n < due {
            let ev = g.next_event();
            let (payload, valid) = if rng.gen::<f64>() < 0.01 {
                (corrupt_video(&ev, &mut rng).0, None)
            } else {
                (
                    playpulse::ingest::wire::to_json(&Event::Video(ev.clone())),
                    Some(ev),
                )
            };
            kafka::send(&producer, topic, n.to_string().as_bytes(), &payload, None).expect("send");
            sent(payload, valid);
            n += 1;
        }
        producer.poll(Duration::from_millis(2));
    }
    kafka::flush(&producer, Duration::from_secs(60)).expect("flush");
}

/// A daemon child process with its log in `dir/daemon-N.log`.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

pub fn spawn_daemon(
    dir: &Path,
    brokers: &str,
    group: &str,
    topics: &[(&str, &str)],
    env: &[(&str, &str)],
    run: usize,
) -> Daemon {
    let log = dir.join(format!("daemon-{run}.log"));
    let f = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(bin());
    cmd.arg("run")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PLAYPULSE_KAFKA__BROKERS", brokers)
        .env("PLAYPULSE_KAFKA__GROUP_ID", group)
        .env("PLAYPULSE_PRODUCERS__MODE", "never")
        .env("PLAYPULSE_HTTP__LISTEN", "127.0.0.1:0")
        .env("PLAYPULSE_INGEST__LOG_INTERVAL_SECONDS", "1")
        // The fixtures hold a few thousand events, where popularity often ranks
        // the held-out views better than a model: tests of what a model does
        // promote it whatever popularity scores (tests/admin.rs checks the
        // default rule, which keeps popularity serving).
        .env("PLAYPULSE_MODELS__PROMOTE_OVER_POPULARITY", "false")
        // Retrains start where a test says (tests/freshness.rs checks the
        // retrain on new pairs).
        .env("PLAYPULSE_MODELS__RETRAIN_NEW_PAIRS_SHARE", "0")
        .env("RUST_LOG", "info,librdkafka=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(f));
    let table: Vec<String> = topics
        .iter()
        .map(|(k, t)| format!("{k} = \"{t}\""))
        .collect();
    cmd.env(
        "PLAYPULSE_KAFKA__TOPICS",
        format!("{{ {} }}", table.join(", ")),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    Daemon {
        child: cmd.spawn().expect("spawn daemon"),
        log,
    }
}

impl Daemon {
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill failed");
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "daemon did not exit within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test with the log if the daemon died.
    pub fn assert_alive(&mut self) {
        if let Some(s) = self.child.try_wait().expect("wait") {
            panic!("daemon exited early ({s}); log:\n{}", self.log_text());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a group's committed offsets and the high watermarks of `topics`.
pub struct GroupWatch {
    consumer: BaseConsumer,
    parts: Vec<(String, i32)>,
}

impl GroupWatch {
    pub fn new(bootstrap: &str, group: &str, topics: &[(&str, i32)]) -> GroupWatch {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("watch consumer");
        let parts = topics
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| (t.to_string(), p)))
            .collect();
        GroupWatch { consumer, parts }
    }

    /// Sum over partitions of (committed, high watermark).
    pub fn progress(&self) -> (i64, i64) {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &self.parts {
            tpl.add_partition(t, *p);
        }
        let committed = match self.consumer.committed_offsets(tpl, Duration::from_secs(5)) {
            Ok(c) => c
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum(),
            Err(_) => 0,
        };
        let high = self
            .parts
            .iter()
            .map(|(t, p)| {
                self.consumer
                    .fetch_watermarks(t, *p, Duration::from_secs(5))
                    .map(|(_, h)| h)
                    .unwrap_or(0)
            })
            .sum();
        (committed, high)
    }

    /// The high watermark of one partition.
    pub fn high(&self, topic: &str, partition: i32) -> i64 {
        self.consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
            .expect("watermarks")
            .1
    }

    /// Waits until `pred(committed, high)` holds, failing after `limit` with the daemon's log.
    pub fn wait_until(
        &self,
        daemon: &mut Daemon,
        limit: Duration,
        pred: impl Fn(i64, i64) -> bool,
    ) -> (i64, i64) {
        let deadline = Instant::now() + limit;
        loop {
            let (c, h) = self.progress();
            if h > 0 && pred(c, h) {
                return (c, h);
            }
            daemon.assert_alive();
            if Instant::now() > deadline {
                panic!(
                    "committed {c} of {h} after {limit:?}; log:\n{}",
                    daemon.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reference per-(user, video) (weight, events) from produced events, as the notebooks define it.
pub fn reference_pairs(valid: &[VideoEvent]) -> HashMap<(String, String), (f64, u64)> {
    let mut m: HashMap<(String, String), (f64, u64)> = HashMap::new();
    for e in valid {
        let x = m
            .entry((e.user_id.to_string(), e.video_id.to_string()))
            .or_default();
        x.0 += e.implicit_feedback();
        x.1 += 1;
    }
    m
}

/// Asserts the store's pair aggregates equal the reference.
pub fn assert_pairs_match(store: &playpulse::store::Store, valid: &[VideoEvent]) {
    let expect = reference_pairs(valid);
    let mut n = 0;
    for item in store.pair_aggregates() {
        let (u, i, a) = item.expect("pair");
        let (w, c) = expect
            .get(&(u.clone(), i.clone()))
            .unwrap_or_else(|| panic!("unexpected pair {u}/{i}"));
        assert_eq!(a.events, *c, "events of {u}/{i}");
        assert!(
            (a.weight - w).abs() <= 1e-9 * w.abs().max(1.0),
            "weight of {u}/{i}: {} vs {w}",
            a.weight
        );
        n += 1;
    }
    assert_eq!(n, expect.len(), "pair count");
}

/// After a run: every produced valid event stored once (positions unique, the
/// aggregates equal the reference), every bad record dead-lettered once with its reason.
pub fn check_exactly_once(dir: &std::path::Path, produced: &Produced) {
    let store = playpulse::store::Store::open(&dir.join("data"), 16).unwrap();
    let mut positions = std::collections::HashSet::new();
    let mut n = 0;
    for item in store.events() {
        let (pos, _) = item.unwrap();
        assert!(positions.insert(pos), "a position stored twice");
        n += 1;
    }
    assert_eq!(n, produced.valid.len(), "stored events");
    assert_pairs_match(&store, &produced.valid);
    let dead = store.dead_letters().unwrap();
    assert_eq!(dead.len(), produced.bad_reasons.len(), "dead letters");
    let mut want: Vec<&str> = produced.bad_reasons.clone();
    let mut got: Vec<&str> = dead.iter().map(|d| d.rejection.reason.as_str()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let c = store.counters().unwrap();
    assert_eq!(c["stored"] as usize, produced.valid.len());
    assert_eq!(c["rejected"] as usize, produced.bad_reasons.len());
}

/// A tansu broker (an independent implementation of the Kafka protocol, with
/// SQLite storage) on a free port, for one test; it stops when dropped.
pub struct Tansu {
    child: Child,
    pub bootstrap: String,
    pub dir: PathBuf,
    port: u16,
    cluster: String,
}

fn tansu_bin() -> PathBuf {
    let path = std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/playpulse/tansu/bin/tansu")
        });
    assert!(
        path.exists(),
        "no tansu broker at {}: run `bash tests/run.sh` (it installs tansu) or set TANSU_BIN",
        path.display()
    );
    path
}

impl Tansu {
    /// Starts a broker storing in `dir` (kept across restarts) with `topics` created.
    pub fn start(dir: &Path, cluster: &str, topics: &[(&str, i32)]) -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut t = Tansu::run(dir, cluster, port);
        for (topic, partitions) in topics {
            let out = Command::new(tansu_bin())
                .args([
                    "topic",
                    "create",
                    topic,
                    "--partitions",
                    &partitions.to_string(),
                    "--broker",
                ])
                .arg(format!("tcp://{}", t.bootstrap))
                .output()
                .expect("tansu topic create");
            assert!(
                out.status.success(),
                "topic create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        t.port = port;
        t
    }

    fn run(dir: &Path, cluster: &str, port: u16) -> Tansu {
        std::fs::create_dir_all(dir).expect("tansu dir");
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("tansu.log")).expect("tansu log");
        let child = Command::new(tansu_bin())
            .current_dir(dir)
            .args([
                "broker",
                "--cluster-id",
                cluster,
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        let bootstrap = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&bootstrap).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {bootstrap}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Tansu {
            child,
            bootstrap,
            dir: dir.to_path_buf(),
            port,
            cluster: cluster.to_string(),
        }
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port and storage.
    pub fn restart_after(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        let again = Tansu::run(&self.dir, &self.cluster, self.port);
        *self = again;
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `playpulse ctl --json status` of the daemon with data dir `dir/data`.
pub fn ctl_status(dir: &Path) -> serde_json::Value {
    ctl_json(&dir.join("data"), &["status"])
}

/// `playpulse ctl --json ARGS` against the daemon with data dir `data`: its
/// reply (null when there is none, e.g. no daemon yet).
/// Runs the binary with `args`; fails with its stderr unless it succeeds.
pub fn run_ok(args: &[&str]) -> std::process::Output {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run playpulse");
    assert!(
        out.status.success(),
        "playpulse {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The offline `playpulse recommend --data-dir DATA --user USER --k K` and
/// `more` arguments: its JSON reply (fails unless it succeeds).
pub fn recommend_offline(data: &Path, user: &str, k: usize, more: &[&str]) -> serde_json::Value {
    let k = k.to_string();
    let mut args = vec![
        "recommend",
        "--data-dir",
        data.to_str().unwrap(),
        "--user",
        user,
        "--k",
        &k,
    ];
    args.extend_from_slice(more);
    serde_json::from_slice(&run_ok(&args).stdout).unwrap()
}

pub fn ctl_json(data: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["ctl", "--json", "--data-dir"])
        .arg(data)
        .args(args)
        .output()
        .expect("ctl");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Records below the stored offsets (stored or dead-lettered), from `status`.
pub fn stored_below_offsets(status: &serde_json::Value) -> i64 {
    status["partitions"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p["next_offset"].as_i64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Polls the daemon's status over its control socket until `pred` holds
/// (the store's offsets are the truth; Kafka's committed offsets are only a
/// courtesy and may lag behind a rebalance).
pub fn wait_status(
    dir: &Path,
    daemon: &mut Daemon,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_reply(daemon, limit, "status", || ctl_status(dir), pred)
}

/// Asks `fetch` every 50 ms until `pred` holds of its reply; fails with the
/// last reply and the daemon's log after `limit`, or as soon as the daemon dies.
pub fn wait_reply(
    daemon: &mut Daemon,
    limit: Duration,
    what: &str,
    mut fetch: impl FnMut() -> serde_json::Value,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let r = fetch();
        if pred(&r) {
            return r;
        }
        daemon.assert_alive();
        if Instant::now() > deadline {
            panic!("{what} after {limit:?}: {r}\nlog:\n{}", daemon.log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A GET on loopback with the given `Host` header: (status code, body).
/// Bodies are read to the end (the request says `Connection: close`).
pub fn http_get_host(addr: &str, path: &str, host: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read http reply");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, body)
}

/// A GET on loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_get_host(addr, path, addr)
}

/// The body of a chunked HTTP reply.
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A daemon on a broker of its own with no producers, for tests that talk to
/// its control socket and HTTP: waits until both answer; answers the daemon
/// and its HTTP address.
pub fn quiet_daemon_with(
    dir: &Path,
    broker: &Broker,
    topics: &[(&str, &str)],
    env: &[(&str, &str)],
) -> (Daemon, String) {
    let mut d = spawn_daemon(dir, &broker.bootstrap, "quiet", topics, env, 0);
    let s = wait_status(dir, &mut d, Duration::from_secs(60), |s| {
        s["http"].is_string()
    });
    let addr = s["http"].as_str().unwrap().to_string();
    (d, addr)
}

/// [`quiet_daemon_with`] on the topics `q.video` and `q.music`.
pub fn quiet_daemon(dir: &Path, broker: &Broker, env: &[(&str, &str)]) -> (Daemon, String) {
    quiet_daemon_with(
        dir,
        broker,
        &[("video", "q.video"), ("music", "q.music")],
        env,
    )
}

/// A TCP forwarder from `127.0.0.1:port` to `to`, for as long as it lives: a
/// broker "appears" at an address a daemon already dials (Kafka clients only
/// bootstrap through it; the broker's metadata names its own address).
pub struct Forward {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Forward {
    pub fn start(port: u16, to: &str) -> Forward {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind forward port");
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (st, to) = (stop.clone(), to.to_string());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((a, _)) => {
                        let Ok(b) = std::net::TcpStream::connect(&to) else {
                            continue;
                        };
                        a.set_nonblocking(false).unwrap();
                        for (mut r, mut w) in
                            [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)]
                        {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut r, &mut w);
                                let _ = w.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Forward { stop }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
