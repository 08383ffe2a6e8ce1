//! `playpulse bench serve`: the HTTP API under load while the daemon ingests.
//!
//! The daemon runs on the embedded broker, ingesting a generated stream at
//! `ingest` events/s; once its first champion serves, a load generator on a
//! thread of its own sends `rate` requests/s over keep-alive connections to
//! `/api/recommend` (users the champion knows), `/api/similar` (its items) and
//! `/api/trending`, in turn. With `music`, listening events stream in too
//! (a topic of their own), so the store's writer also feeds the listening
//! graph while requests are answered. The schedule is open-loop: each request has its
//! time, and its latency counts from that time (a request that waits for a
//! busy connection counts its wait), so a stall shows in the quantiles
//! instead of slowing the load.

use std::time::{Duration, Instant, SystemTime};

use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::quantile;
use crate::actors::producer::Feed;
use crate::admin::context::Admin;
use crate::admin::gate::Gate;
use crate::domain::event::Kind;
use crate::synth::produce::{Synth, SynthSpec, VideoStream};

#[derive(Debug, Clone)]
pub struct ServeBenchArgs {
    /// Requests/s over all endpoints.
    pub rate: f64,
    /// Events/s the daemon ingests throughout.
    pub ingest: f64,
    /// Listening events/s ingested besides (a topic of their own, the
    /// tracks' catalog first), from the start; 0: none.
    pub music: f64,
    pub seconds: u64,
    pub connections: usize,
    pub warmup_events: u64,
    pub users: usize,
    pub videos: usize,
    pub partitions: i32,
    /// models.fold_in_threads.
    pub fold_in_threads: usize,
    pub seed: u64,
    /// The champion's family (ease, knn: searched alone for 30 s).
    pub family: crate::ml::family::Family,
}

/// Latency quantiles of one endpoint, ms: from each request's planned time
/// (what a client sees, waits included), from its send to its read by the
/// client's thread (the service), and from its send to the reply's arrival
/// at the client's socket (the wire: the kernel's receive time of the
/// reply's last bytes, so without the load generator's own wait for a core,
/// which a client on another machine would not share with the daemon).
#[derive(Debug, Clone, Serialize)]
pub struct EndpointLatency {
    pub requests: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub service_p50_ms: f64,
    pub service_p99_ms: f64,
    /// `None` when the kernel gave no receive time for any reply.
    pub wire_p50_ms: Option<f64>,
    pub wire_p99_ms: Option<f64>,
    pub wire_max_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServeReport {
    pub bench: &'static str,
    pub rate: f64,
    pub ingest: f64,
    pub music: f64,
    pub seconds: f64,
    pub connections: usize,
    /// Requests answered per second, and events stored per second, meanwhile.
    pub served_per_sec: f64,
    pub ingest_events_per_sec: f64,
    /// The fold-in's solve threads.
    pub fold_in_threads: usize,
    pub model: u64,
    /// The family that ranks its lists.
    pub family: crate::ml::family::Family,
    pub endpoints: std::collections::BTreeMap<&'static str, EndpointLatency>,
}

/// The endpoints asked in turn; `graph` (users like me also liked, from the
/// listening graph) only while listening events stream in.
const ENDPOINTS: [&str; 4] = ["recommend", "similar", "trending", "graph"];

/// One keep-alive HTTP/1.1 connection (blocking: each connection has a
/// thread of its own); answers the status of a GET.
struct Conn {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: std::net::SocketAddr) -> std::io::Result<Conn> {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stamp_arrivals(&stream)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 << 10),
        })
    }

    /// GETs `path`: the reply's status, and when its last bytes arrived
    /// (`None` when the kernel gave no receive time).
    fn get(&mut self, path: &str) -> std::io::Result<(u16, Option<SystemTime>)> {
        use std::io::Write;
        // The kernel's receive time of the last bytes read (`SO_TIMESTAMPNS`).
        let mut arrived = None;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.stream.write_all(req.as_bytes())?;
        self.buf.clear();
        let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
        let mut chunk = [0u8; 8192];
        // Headers, then a body of Content-Length bytes.
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > 64 << 10 {
                return Err(bad("headers past 64 KiB"));
            }
            let (n, at) = read_stamped(&self.stream, &mut chunk)?;
            arrived = at.or(arrived);
            if n == 0 {
                return Err(bad("the server closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| bad("no content-length"))?;
        let mut have = self.buf.len() - end;
        while have < length {
            let (n, at) = read_stamped(&self.stream, &mut chunk)?;
            arrived = at.or(arrived);
            if n == 0 {
                return Err(bad("the server closed the connection mid-body"));
            }
            have += n;
        }
        Ok((status, arrived))
    }
}

/// Asks the kernel to stamp what `stream` receives with its arrival time.
fn stamp_arrivals(stream: &std::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket, and an int option of the size given.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One `recvmsg` on `stream` into `into`: the bytes read, and the kernel's
/// receive time of them when it gave one.
fn read_stamped(
    stream: &std::net::TcpStream,
    into: &mut [u8],
) -> std::io::Result<(usize, Option<SystemTime>)> {
    use std::os::fd::AsRawFd;
    let mut iov = libc::iovec {
        iov_base: into.as_mut_ptr().cast(),
        iov_len: into.len(),
    };
    // Room for a few control messages, aligned as cmsghdr wants.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: the socket is valid; msg names live buffers of the sizes given.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, 0) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut at = None;
    // SAFETY: the kernel filled msg's control buffer; the CMSG macros walk it
    // within msg_controllen, and a timestamp's data is a timespec.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                at = Some(
                    std::time::UNIX_EPOCH
                        + Duration::new(
                            ts.tv_sec.max(0) as u64,
                            ts.tv_nsec.clamp(0, 999_999_999) as u32,
                        ),
                );
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, at))
}

/// One request's latencies, ms (see [`EndpointLatency`]).
struct Sample {
    endpoint: usize,
    ms: f64,
    service_ms: f64,
    /// `None` when the kernel gave no receive time.
    wire_ms: Option<f64>,
    ok: bool,
}

/// Sends the planned requests (`plan[i]`: endpoint, path) at `rate`/s over
/// `connections` connections, each on a thread of its own that sleeps to
/// each of its requests' times (a timer of the kernel's precision: an async
/// runtime's 1 ms timer wheel would send most requests up to a millisecond
/// late, and that lateness would count as latency); answers each request's
/// [`Sample`].
fn load(
    addr: std::net::SocketAddr,
    plan: Vec<(usize, String)>,
    rate: f64,
    connections: usize,
) -> anyhow::Result<Vec<Sample>> {
    let start = Instant::now() + Duration::from_millis(100);
    let plan = &plan;
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..connections)
            .map(|c| {
                s.spawn(move || {
                    let mut conn = Conn::open(addr)?;
                    let mut out = Vec::new();
                    // Connection c sends requests c, c + connections, ...
                    for i in (c..plan.len()).step_by(connections) {
                        let at = start + Duration::from_secs_f64(i as f64 / rate);
                        if let Some(wait) = at.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let (endpoint, path) = &plan[i];
                        let (sent, sent_wall) = (Instant::now(), SystemTime::now());
                        let (ok, arrived) = match conn.get(path) {
                            Ok((status, arrived)) => (status == 200, arrived),
                            Err(_) => {
                                conn = Conn::open(addr)?;
                                (false, None)
                            }
                        };
                        out.push(Sample {
                            endpoint: *endpoint,
                            ms: at.elapsed().as_secs_f64() * 1000.0,
                            service_ms: sent.elapsed().as_secs_f64() * 1000.0,
                            wire_ms: arrived
                                .and_then(|a| a.duration_since(sent_wall).ok())
                                .map(|d| d.as_secs_f64() * 1000.0),
                            ok,
                        });
                    }
                    Ok::<_, std::io::Error>(out)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(plan.len());
        for t in threads {
            let out = t
                .join()
                .map_err(|_| anyhow::anyhow!("a load connection's thread panicked"))??;
            all.extend(out);
        }
        Ok(all)
    })
}

pub fn serve(args: &ServeBenchArgs, data_dir: &std::path::Path) -> anyhow::Result<ServeReport> {
    let mut cfg = super::one_model_config(data_dir, args.partitions, args.warmup_events);
    cfg.models.fold_in_threads = args.fold_in_threads;
    // The daemon's own bounds on what the flags set.
    cfg.models.validate()?;
    if args.family != crate::ml::family::Family::Als {
        cfg.models.search_families = vec![args.family];
        cfg.models.search_budget_seconds = 30.0;
        cfg.models.search_budget_fits = 0.0;
    }
    let events = args.warmup_events + (args.ingest * (args.seconds as f64 + 120.0)) as u64;
    let stream = VideoStream::new(args.users, args.videos, args.seed, events, 0.0);
    let mut extra: crate::runtime::daemon::ExtraFeeds = Vec::new();
    if args.music > 0.0 {
        cfg.kafka
            .topics
            .insert(Kind::Music, "bench.music".to_string());
        let spec = SynthSpec {
            users: args.users,
            videos: args.videos,
            tracks: cfg.producers.tracks as usize,
            seed: args.seed,
            start_ms: None,
        };
        let music = Synth::new(Kind::Music, &spec);
        extra.push((Kind::Music, Feed::Synth(Box::new(music)), args.music));
    }
    let system = actix::System::new();
    let args = args.clone();
    system.block_on(async move {
        let (daemon, champion) =
            super::warm_champion(&cfg, stream, args.ingest, args.warmup_events, extra).await?;
        let admin = std::sync::Arc::new(Admin::new(daemon.handles(), cfg.clone()).await?);
        let gate = std::sync::Arc::new(Gate::new(cfg.clone()));
        gate.ready(admin);
        // As the daemon serves it (`http.threads`).
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let server = crate::http::spawn(listener, gate, cfg.http.threads)?;
        let addr = server.local_addr();

        // The requests, drawn up front: users and items the champion has.
        let bundle = champion.recommender.bundle();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
        let n = (args.rate * args.seconds as f64).ceil() as usize;
        // `graph` (the last) only while listens stream in.
        let asked = ENDPOINTS.len() - usize::from(args.music == 0.0);
        let plan: Vec<(usize, String)> = (0..n)
            .map(|i| {
                let e = i % asked;
                let path = match ENDPOINTS[e] {
                    "recommend" => {
                        let u = &bundle.users[rng.gen_range(0..bundle.users.len())];
                        format!("/api/recommend?user={u}&k=10&domain=video")
                    }
                    "similar" => {
                        let v = &bundle.items[rng.gen_range(0..bundle.items.len())];
                        format!("/api/similar?item={v}&k=10")
                    }
                    "graph" => {
                        let u = rng.gen_range(0..args.users);
                        format!(
                            "/api/graph?query=also_liked&user={}&limit=10",
                            crate::synth::generate::user_id(u)
                        )
                    }
                    _ => "/api/trending?k=10&domain=video".to_string(),
                };
                (e, path)
            })
            .collect();
        let (model, family) = (champion.id, champion.recommender.family());
        drop(champion);
        let stored0 = daemon.progress.done();
        let t = Instant::now();
        let (rate, connections) = (args.rate, args.connections);
        let results =
            tokio::task::spawn_blocking(move || load(addr, plan, rate, connections)).await??;
        let seconds = t.elapsed().as_secs_f64();
        let stored = daemon.progress.done() - stored0;
        drop(server);
        daemon.shutdown().await;

        let mut endpoints = std::collections::BTreeMap::new();
        for (e, name) in ENDPOINTS.iter().enumerate() {
            let sorted = |f: fn(&Sample) -> Option<f64>| {
                let mut v: Vec<f64> = results
                    .iter()
                    .filter(|r| r.endpoint == e)
                    .filter_map(f)
                    .collect();
                v.sort_by(f64::total_cmp);
                v
            };
            let ms = sorted(|r| Some(r.ms));
            let service = sorted(|r| Some(r.service_ms));
            let wire = sorted(|r| r.wire_ms);
            let errors = results.iter().filter(|r| r.endpoint == e && !r.ok).count();
            if ms.is_empty() {
                continue;
            }
            endpoints.insert(
                *name,
                EndpointLatency {
                    requests: ms.len(),
                    errors,
                    p50_ms: quantile(&ms, 0.5),
                    p99_ms: quantile(&ms, 0.99),
                    max_ms: ms.last().copied().unwrap_or(0.0),
                    service_p50_ms: quantile(&service, 0.5),
                    service_p99_ms: quantile(&service, 0.99),
                    wire_p50_ms: (!wire.is_empty()).then(|| quantile(&wire, 0.5)),
                    wire_p99_ms: (!wire.is_empty()).then(|| quantile(&wire, 0.99)),
                    wire_max_ms: wire.last().copied(),
                },
            );
        }
        Ok(ServeReport {
            bench: "serve",
            rate: args.rate,
            ingest: args.ingest,
            music: args.music,
            seconds,
            connections: args.connections,
            fold_in_threads: cfg.models.fold_in_solvers(),
            served_per_sec: results.len() as f64 / seconds,
            ingest_events_per_sec: stored as f64 / seconds,
            model,
            family,
            endpoints,
        })
    })
}
