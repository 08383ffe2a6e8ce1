//! What the control socket and HTTP serve from the moment their ports are
//! bound: while the daemon is starting (waiting for its brokers), `status`
//! says what it waits for and other commands wait up to [`START_WAIT`] for the
//! start, then say to try again; once it runs, every request goes to the
//! [`Admin`].

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::cmd::status::StartingStatus;
use super::context::Admin;
use super::error::CommandError;
use super::protocol::{error_wire, ok_wire, parse_request, Request};
use crate::config::Config;

/// How long a request that needs the running daemon waits for the start.
pub const START_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Gate {
    pub cfg: Config,
    admin: OnceLock<Arc<Admin>>,
    became_ready: tokio::sync::Notify,
    waiting_for: Mutex<String>,
    started: Instant,
}

impl Gate {
    pub fn new(cfg: Config) -> Gate {
        Gate {
            cfg,
            admin: OnceLock::new(),
            became_ready: tokio::sync::Notify::new(),
            waiting_for: Mutex::new("the store to open".into()),
            started: Instant::now(),
        }
    }

    /// Says what the start waits for now (shown by `status`).
    pub fn waiting_for(&self, what: String) {
        *self.waiting_for.lock().unwrap_or_else(|p| p.into_inner()) = what;
    }

    /// The daemon runs: requests go to `admin` from now on.
    pub fn ready(&self, admin: Arc<Admin>) {
        let _ = self.admin.set(admin);
        self.became_ready.notify_waiters();
    }

    pub fn admin(&self) -> Option<&Arc<Admin>> {
        self.admin.get()
    }

    /// The running daemon, waiting up to [`START_WAIT`] for the start to end.
    pub async fn admin_soon(&self) -> Option<&Arc<Admin>> {
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            let notified = self.became_ready.notified();
            if let Some(a) = self.admin.get() {
                return Some(a);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.admin.get();
            }
        }
    }

    fn what(&self) -> String {
        self.waiting_for
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why a request cannot be served yet.
    pub fn starting_error(&self) -> CommandError {
        CommandError::Starting(self.what())
    }

    /// `status` while starting.
    pub fn starting_status(&self) -> StartingStatus {
        StartingStatus {
            state: "starting".into(),
            waiting_for: self.what(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            version: env!("CARGO_PKG_VERSION").into(),
            data_dir: self.cfg.data_dir.clone(),
            brokers: self.cfg.kafka.brokers.clone(),
        }
    }

    /// One request line in, one reply object out.
    pub async fn handle(&self, line: &[u8]) -> serde_json::Value {
        if let Some(a) = self.admin.get() {
            return a.handle(line).await;
        }
        match parse_request(line) {
            Ok(Request::Status(_)) => ok_wire(&self.starting_status()),
            // A start that ends within moments is waited for.
            Ok(_) => match self.admin_soon().await {
                Some(a) => a.handle(line).await,
                None => error_wire(&self.starting_error().to_string()),
            },
            Err(e) => error_wire(&e.to_string()),
        }
    }
}
