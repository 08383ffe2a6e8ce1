//! `playpulse run`: the daemon, until a signal, `ctl shutdown` or a fatal fault.

use std::path::PathBuf;

use anyhow::Context as _;
use std::time::Duration;

use playpulse::admin::{Admin, Gate, Socket};
use playpulse::config::Config;
use playpulse::kafka;
use playpulse::runtime::daemon::{Daemon, ShutdownSignal};

use super::{init_logging, say};

/// How long a clean shutdown may take before the process exits anyway.
const SHUTDOWN_SECONDS: u64 = 30;
/// How long the way out after a fatal fault may take.
const FATAL_EXIT_SECONDS: u64 = 10;

pub fn run(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut cfg = Config::load(config.as_deref())?;
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    init_logging(&cfg.log.level);
    // The data dir and everything the daemon writes is its owner's alone.
    // SAFETY: umask(2) only sets the process's file mode mask.
    unsafe { libc::umask(0o077) };
    std::fs::create_dir_all(&cfg.data_dir)
            .and_then(|()| {
                std::fs::set_permissions(
                    &cfg.data_dir,
                    std::os::unix::fs::PermissionsExt::from_mode(0o700),
                )
            })
            .with_context(|| {
                format!(
                    "data_dir = {:?}: cannot create it as a private directory (choose a directory you own)",
                    cfg.data_dir.display().to_string()
                )
            })?;
    let system = actix::System::new();
    system.block_on(async move {
            // Signals from the first moment: one sent while the daemon starts
            // stops it cleanly once it has started.
            let mut signals = ShutdownSignal::listen();
            // Ports first: nothing starts if the dashboard cannot listen.
            let http = if cfg.http.enabled {
                Some(
                    std::net::TcpListener::bind(&cfg.http.listen)
                        .with_context(|| {
                            format!(
                                "http.listen = {:?}: cannot listen there (in use? set another port, or 0 for any)",
                                cfg.http.listen
                            )
                        })?,
                )
            } else {
                None
            };
            // The control socket and the dashboard answer from here on; until
            // the daemon runs, `status` says what the start waits for.
            let gate = std::sync::Arc::new(Gate::new(cfg.clone()));
            let limits = playpulse::admin::server::Limits {
                max_clients: cfg.admin.max_clients,
                max_request: cfg.admin.max_request_bytes,
                idle: cfg.admin.client_timeout,
            };
            let mut first = Socket::bind(&cfg.socket_path())?;
            actix_rt::spawn(first.serve(gate.clone(), limits));
            let socket = std::sync::Arc::new(std::sync::Mutex::new(Some(first)));
            // A socket file removed from under the daemon is made again.
            let (watched, watch_gate, path) = (socket.clone(), gate.clone(), cfg.socket_path());
            actix_rt::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let mut slot = watched.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(current) = slot.as_ref() else { return };
                    if current.is_in_place() {
                        continue;
                    }
                    tracing::warn!("the control socket {} went missing; making it again", path.display());
                    match Socket::bind(&path) {
                        Ok(mut s) => {
                            actix_rt::spawn(s.serve(watch_gate.clone(), limits));
                            *slot = Some(s);
                        }
                        Err(e) => tracing::error!("cannot make the control socket again: {e}"),
                    }
                }
            });
            // Requests are answered on threads of their own (`http.threads`).
            let (http, http_addr) = match http {
                Some(listener) => {
                    let server = playpulse::http::spawn(listener, gate.clone(), cfg.http.threads)
                        .context("cannot start the HTTP server's threads")?;
                    let addr = server.local_addr().to_string();
                    tracing::info!("dashboard at http://{addr}/ (JSON API /api/..., metrics /metrics)");
                    (Some(server), Some(addr))
                }
                None => (None, None),
            };
            let cluster = if cfg.kafka.embedded() {
                None
            } else {
                gate.waiting_for(format!("the brokers at {}", cfg.kafka.brokers));
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (b, k, st, g) = (cfg.kafka.brokers.clone(), cfg.kafka.clone(), stop.clone(), gate.clone());
                let wait = tokio::task::spawn_blocking(move || {
                    kafka::wait_for_cluster(&b, &k, &st, |why| g.waiting_for(why))
                });
                tokio::select! {
                    r = wait => match r.map_err(anyhow::Error::msg)?? {
                        Some(c) => Some(c),
                        None => return Ok(None),
                    },
                    _ = signals.recv() => {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!("stopped while waiting for the brokers");
                        drop(socket.lock().unwrap_or_else(|p| p.into_inner()).take());
                        return Ok(None);
                    }
                }
            };
            gate.waiting_for("the pipeline to start".into());
            let daemon = Daemon::start_on(&cfg, Vec::new(), cluster)?;
            if cfg.kafka.embedded() {
                println!("embedded broker: {}", daemon.bootstrap);
            }
            let admin = std::sync::Arc::new(
                Admin::new(daemon.handles(), cfg.clone())
                    .await
                    .map_err(anyhow::Error::msg)?,
            );
            if let Some(addr) = http_addr {
                let _ = admin.http.set(addr);
            }
            gate.ready(admin.clone());
            tracing::info!("playpulse running; data dir {}", cfg.data_dir.display());
            let fatal = daemon.fatal.clone();
            let failed = tokio::select! {
                _ = signals.recv() => None,
                _ = admin.shutdown.notified() => {
                    tracing::info!("shutdown requested on the control socket");
                    None
                }
                m = fatal.wait() => Some(m),
            };
            // Whatever hangs on the way out (a full disk under sled's flush, a
            // broker that does not answer the consumer's close), the process ends.
            let (limit, code) = match &failed {
                Some(_) => (FATAL_EXIT_SECONDS, 2),
                None => (SHUTDOWN_SECONDS, 1),
            };
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(limit));
                say(&format!("error: shutdown did not finish within {limit} s; exiting"));
                std::process::exit(code);
            });
            if let Some(m) = &failed {
                tracing::error!("stopping: {m}; exiting with status 2 (a restart reads again from the stored offsets)");
            }
            daemon.shutdown().await;
            drop(socket.lock().unwrap_or_else(|p| p.into_inner()).take());
            drop(http);
            Ok::<_, anyhow::Error>(failed)
        })?
        .map_or(Ok(()), |m| {
            say(&format!("error: {m}"));
            std::process::exit(2)
        })
}
