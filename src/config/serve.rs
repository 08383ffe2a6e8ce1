//! `[admin]`, `[http]` and `[log]`: how operators reach the daemon.

use serde::{Deserialize, Serialize};

use crate::domain::setting::{invalid, Invalid};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The control socket; empty = `<data_dir>/playpulse.sock`.
    pub socket: String,
    /// Longest request line accepted, bytes.
    pub max_request_bytes: usize,
    /// Most clients connected at once (when all are taken, the one that has
    /// waited longest for its next request is let go for a newcomer).
    pub max_clients: usize,
    /// A client that sends no complete request line within this is disconnected.
    #[serde(
        rename = "client_timeout_seconds",
        with = "crate::domain::setting::seconds"
    )]
    pub client_timeout: std::time::Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket: String::new(),
            max_request_bytes: 65_536,
            max_clients: 256,
            client_timeout: std::time::Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    /// Address of the dashboard, JSON API and /metrics (port 0 = any free port).
    pub listen: String,
    /// Host names (besides `localhost` and IP addresses) the server answers
    /// to, as the `Host` header names them; others get 403 (a page on another
    /// site that points its DNS name at this address cannot read the API).
    pub allowed_hosts: Vec<String>,
    /// Threads that answer HTTP requests, on a runtime of their own (at the
    /// requests' priority, above ingest's): two let one request run while
    /// another waits on a core.
    pub threads: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: "127.0.0.1:8787".into(),
            allowed_hosts: Vec::new(),
            threads: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter, e.g. `info` or `playpulse=debug,rdkafka=warn`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

impl HttpConfig {
    /// Checks what a type cannot (ranges, sets, names); errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.enabled && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "http.listen",
                &self.listen,
                "must be an IP address and port, e.g. 127.0.0.1:8787 (0.0.0.0 exposes it to the network)",
            ));
        }
        if !(1..=64).contains(&self.threads) {
            return Err(invalid("http.threads", self.threads, "must be 1..=64"));
        }
        Ok(())
    }
}

impl AdminConfig {
    /// Checks what a type cannot (ranges, sets, names); errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let a = self;
        if !(256..=16 << 20).contains(&a.max_request_bytes) {
            return Err(invalid(
                "admin.max_request_bytes",
                a.max_request_bytes,
                "must be 256..=16777216",
            ));
        }
        if !(1..=65_536).contains(&a.max_clients) {
            return Err(invalid(
                "admin.max_clients",
                a.max_clients,
                "must be 1..=65536",
            ));
        }
        if !(1..=86_400).contains(&a.client_timeout.as_secs()) {
            return Err(invalid(
                "admin.client_timeout_seconds",
                a.client_timeout.as_secs(),
                "must be 1..=86400",
            ));
        }
        Ok(())
    }
}

impl LogConfig {
    /// Checks what a type cannot (ranges, sets, names); errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(invalid(
                "log.level",
                &self.level,
                "must be a tracing filter such as info or playpulse=debug",
            ));
        }
        Ok(())
    }
}
