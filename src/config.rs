//! The configuration tree. Defaults in code equal `config.toml`; environment
//! variables `PLAYPULSE_SECTION__KEY` (and `PLAYPULSE_DATA_DIR`) override the file;
//! unknown keys and bad values are rejected at load with a message naming them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::Kind;
use crate::generate;
use crate::timefmt::{parse_timestamp_ms, TimePolicy};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; pass an existing file with --config")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config key `{key}` = {value}: {message}")]
    Invalid {
        key: String,
        value: String,
        message: String,
    },
}

fn invalid(key: &str, value: impl std::fmt::Debug, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: format!("{value:?}"),
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store, the admin socket and exports live.
    pub data_dir: PathBuf,
    pub kafka: KafkaConfig,
    pub ingest: IngestConfig,
    pub validation: ValidationConfig,
    pub producers: ProducersConfig,
    pub store: StoreConfig,
    pub models: ModelsConfig,
    pub analytics: crate::analytics::AnalyticsConfig,
    pub admin: AdminConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            kafka: KafkaConfig::default(),
            ingest: IngestConfig::default(),
            validation: ValidationConfig::default(),
            producers: ProducersConfig::default(),
            store: StoreConfig::default(),
            models: ModelsConfig::default(),
            analytics: crate::analytics::AnalyticsConfig::default(),
            admin: AdminConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated. Empty: start the embedded broker.
    pub brokers: String,
    pub group_id: String,
    pub client_id: String,
    /// Partitions of each topic created on the embedded broker.
    pub embedded_partitions: i32,
    /// Topic (or `^regex` pattern) per kind of record; remove a kind to not consume it.
    pub topics: BTreeMap<Kind, String>,
    /// Extra librdkafka properties for the consumer and the producers.
    pub properties: BTreeMap<String, String>,
    /// Largest record produced or consumed, bytes: producers refuse larger
    /// ones with an error; a larger one consumed is dead-lettered.
    pub max_record_bytes: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            group_id: "playpulse".into(),
            client_id: "playpulse".into(),
            embedded_partitions: 16,
            topics: Kind::ALL
                .into_iter()
                .map(|k| (k, format!("playpulse.{k}")))
                .collect(),
            properties: BTreeMap::new(),
            max_record_bytes: 1 << 20,
        }
    }
}

/// Whether one broker address is `host:port` (an optional `PLAINTEXT://` or
/// `SSL://` in front, IPv6 hosts in brackets).
fn broker_ok(b: &str) -> bool {
    let b = b
        .strip_prefix("PLAINTEXT://")
        .or_else(|| b.strip_prefix("SSL://"))
        .unwrap_or(b);
    let Some((host, port)) = b.rsplit_once(':') else {
        return false;
    };
    let host_ok = (host.starts_with('[') && host.ends_with(']') && host.len() > 2)
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'));
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The first entry of a broker list that is not `host:port`, if any.
fn bad_broker(list: &str) -> Option<String> {
    if list.trim().is_empty() {
        return None;
    }
    list.split(',')
        .map(str::trim)
        .find(|b| !broker_ok(b))
        .map(str::to_string)
}

impl KafkaConfig {
    pub fn embedded(&self) -> bool {
        self.brokers.trim().is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Most records per batch (one batch = one atomic store write).
    pub batch_size: usize,
    /// Longest wait to fill a batch, in milliseconds.
    pub batch_linger_ms: u64,
    /// Batches parsed but not yet stored, at most.
    pub max_in_flight_batches: usize,
    /// Seconds between progress log lines.
    pub log_interval_seconds: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_size: 5000,
            batch_linger_ms: 50,
            max_in_flight_batches: 4,
            log_interval_seconds: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    pub resolutions: Vec<String>,
    pub genres: Vec<String>,
    pub regions: Vec<String>,
    pub max_watch_time_seconds: f64,
    pub max_buffering_events: i64,
    pub max_bitrate_kbps: i64,
    /// Earliest accepted event time (RFC 3339).
    pub min_timestamp: String,
    /// How far past the wall clock an event time may be, in seconds.
    pub max_future_skew_seconds: i64,
    /// Lower-case ids (user, video, track, ...) as the music pipeline did.
    pub lowercase_ids: bool,
    /// Longest id, bytes (ids may not hold control characters).
    pub max_id_bytes: usize,
    /// Longest free text field or list entry, bytes.
    pub max_text_bytes: usize,
    /// Most entries in a list field.
    pub max_list_entries: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        // The synthetic world's sets are the reference notebooks' sets.
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        ValidationConfig {
            resolutions: v(&generate::RESOLUTIONS),
            genres: v(&generate::GENRES),
            regions: v(&generate::REGIONS),
            max_watch_time_seconds: 86_400.0,
            max_buffering_events: 10,
            max_bitrate_kbps: 200_000,
            min_timestamp: "2000-01-01T00:00:00Z".into(),
            max_future_skew_seconds: 86_400,
            lowercase_ids: true,
            max_id_bytes: 256,
            max_text_bytes: 4096,
            max_list_entries: 256,
        }
    }
}

/// When the built-in synthetic producers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProducerMode {
    /// Only against the embedded broker (a demo that runs with no setup).
    Embedded,
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducersConfig {
    pub mode: ProducerMode,
    pub seed: u64,
    /// Size of the synthetic world.
    pub users: u32,
    pub videos: u32,
    pub tracks: u32,
    /// Events per second per kind; 0 = as fast as the pipeline takes them.
    pub rate: BTreeMap<Kind, f64>,
    /// Produced but not yet stored events, at most (the embedded broker keeps ~5 MiB per partition).
    pub max_lag_events: u64,
}

impl Default for ProducersConfig {
    fn default() -> Self {
        ProducersConfig {
            mode: ProducerMode::Embedded,
            seed: 42,
            users: 5000,
            videos: 1000,
            tracks: 2000,
            rate: [
                (Kind::Video, 2000.0),
                (Kind::Users, 5.0),
                (Kind::Movies, 2.0),
                (Kind::Series, 1.0),
                (Kind::Music, 500.0),
            ]
            .into_iter()
            .collect(),
            max_lag_events: 20_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// sled page cache, MiB.
    pub cache_mb: u64,
    /// A store write that has not finished after this many seconds, with
    /// batches waiting, stops the daemon (a full or failing disk can make sled
    /// wait instead of fail).
    pub write_timeout_seconds: u64,
    /// Most distinct videos whose counters are held; later ones add up
    /// under `(other)` (their events are stored whole).
    pub max_tracked_videos: usize,
    /// Most distinct (user, track) pairs held (the listening graph's edges);
    /// later ones add up under (`(other)`, `(other)`).
    pub max_listening_pairs: usize,
    /// Free space kept on the store's disk, MiB: a write that would leave
    /// less is not begun, and the daemon stops cleanly (0: no check).
    pub min_free_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_mb: 256,
            write_timeout_seconds: 60,
            max_tracked_videos: 500_000,
            max_listening_pairs: 2_000_000,
            min_free_mb: 64,
        }
    }
}

/// Held-out metric that decides promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromoteMetric {
    Ndcg,
    Map,
    Precision,
    Recall,
}

impl PromoteMetric {
    pub fn name(self) -> &'static str {
        match self {
            PromoteMetric::Ndcg => "ndcg",
            PromoteMetric::Map => "map",
            PromoteMetric::Precision => "precision",
            PromoteMetric::Recall => "recall",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Train the recommender in the daemon.
    pub enabled: bool,
    /// Train after this many newly stored events (0 = never on count).
    pub train_every_events: u64,
    /// Train at least this often while new events arrive (0 = never on time).
    pub train_every_seconds: u64,
    /// Stored events needed before the first training.
    pub min_events: u64,
    /// Model versions kept (the newest; every champion in the history and
    /// the newest of each kind stay as well).
    pub keep_versions: usize,
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f32,
    pub alpha: f32,
    pub cg_steps: usize,
    pub weighted_regularization: bool,
    /// Share of (user, item) pairs held out for evaluation (seeded hash of the names).
    pub test_fraction: f64,
    /// Users with fewer distinct items are not scored.
    pub min_user_items: usize,
    /// Cut-off of the ranking metrics.
    pub k: usize,
    pub promote_metric: PromoteMetric,
    pub seed: u64,
    /// Weight of content affinity (catalog profile vs title) blended into the
    /// ALS scores of users with a profile; the evaluator scores the blend against
    /// pure ALS and serves it only when it ranks better. 0 = never.
    pub affinity_weight: f64,
    /// Also train and evaluate the engagement classifiers (decision tree, SVM).
    pub classifiers: bool,
    /// Most recent video events the classifiers train and test on.
    pub classifier_max_events: usize,
    /// Deepest decision tree.
    pub tree_max_depth: usize,
    /// Rows of the SVM's stratified training subsample (its kernel matrix is n×n).
    pub svm_max_rows: usize,
    /// Weight of each listening action in a (user, track) pair's implicit feedback;
    /// negative = a negative preference. Music pairs train with the video pairs.
    pub event_weights: EventWeights,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventWeights {
    pub play: f64,
    pub like: f64,
    pub pause: f64,
    pub seek: f64,
    pub skip: f64,
}

impl Default for EventWeights {
    fn default() -> Self {
        EventWeights {
            play: 1.0,
            like: 4.0,
            pause: 0.25,
            seek: 0.25,
            skip: -1.0,
        }
    }
}

impl EventWeights {
    /// In the order of [`crate::event::MusicAction`]: play, skip, like, pause, seek.
    pub fn by_action(&self) -> [f64; 5] {
        [self.play, self.skip, self.like, self.pause, self.seek]
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            enabled: true,
            train_every_events: 200_000,
            train_every_seconds: 600,
            min_events: 10_000,
            keep_versions: 30,
            factors: 32,
            iterations: 15,
            regularization: 0.1,
            alpha: 1.0,
            cg_steps: 3,
            weighted_regularization: true,
            test_fraction: 0.2,
            min_user_items: 5,
            k: 10,
            promote_metric: PromoteMetric::Ndcg,
            seed: 42,
            affinity_weight: 0.3,
            classifiers: true,
            classifier_max_events: 100_000,
            tree_max_depth: 20,
            svm_max_rows: 5_000,
            event_weights: EventWeights::default(),
        }
    }
}

impl ModelsConfig {
    pub fn classify(&self) -> crate::ml::classify::ClassifyParams {
        crate::ml::classify::ClassifyParams {
            tree_max_depth: self.tree_max_depth,
            svm_max_rows: self.svm_max_rows,
            ..crate::ml::classify::ClassifyParams::default()
        }
    }

    pub fn als(&self) -> crate::ml::als::AlsParams {
        crate::ml::als::AlsParams {
            factors: self.factors,
            iterations: self.iterations,
            regularization: self.regularization,
            alpha: self.alpha,
            cg_steps: self.cg_steps,
            seed: self.seed,
            nonnegative: false,
            weighted_regularization: self.weighted_regularization,
            exact: false,
        }
    }
}

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
    pub client_timeout_seconds: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket: String::new(),
            max_request_bytes: 65_536,
            max_clients: 256,
            client_timeout_seconds: 30,
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
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: "127.0.0.1:8787".into(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl Config {
    /// Where the admin socket lives.
    pub fn socket_path(&self) -> PathBuf {
        if self.admin.socket.is_empty() {
            self.data_dir.join("playpulse.sock")
        } else {
            PathBuf::from(&self.admin.socket)
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

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "PLAYPULSE_";

impl Config {
    /// Loads `path` (if given) over the defaults, then the environment overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                let t: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    origin: p.display().to_string(),
                    message: e.to_string(),
                })?;
                (t, p.display().to_string())
            }
            None => (toml::Table::new(), "defaults".to_string()),
        };
        let mut overridden = Vec::new();
        for (k, v) in env {
            let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if path.iter().any(|p| p.is_empty()) {
                continue;
            }
            set_path(&mut table, &path, env_value(&v));
            overridden.push(k);
        }
        let origin = if overridden.is_empty() {
            origin
        } else {
            format!("{origin} + environment ({})", overridden.join(", "))
        };
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin,
                message: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value a type cannot (ranges, sets, names).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", &self.data_dir, "must name a directory"));
        }
        let k = &self.kafka;
        if let Some(bad) = bad_broker(&k.brokers) {
            return Err(invalid(
                "kafka.brokers",
                &k.brokers,
                format!("{bad:?} is not host:port (e.g. localhost:9092, several comma separated; empty = the embedded broker; env PLAYPULSE_KAFKA__BROKERS)"),
            ));
        }
        let max_record = if k.embedded() { 4 << 20 } else { 100 << 20 };
        if !(1000..=max_record).contains(&k.max_record_bytes) {
            return Err(invalid(
                "kafka.max_record_bytes",
                k.max_record_bytes,
                format!(
                    "must be 1000..={max_record} (the embedded broker loses records over ~5 MiB)"
                ),
            ));
        }
        let an = &self.analytics;
        if !(1..=10_080).contains(&an.retention_minutes) {
            return Err(invalid(
                "analytics.retention_minutes",
                an.retention_minutes,
                "must be 1..=10080 (a week)",
            ));
        }
        if !(1..=1_000_000).contains(&an.max_keys) {
            return Err(invalid(
                "analytics.max_keys",
                an.max_keys,
                "must be 1..=1000000",
            ));
        }
        if self.http.enabled && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "http.listen",
                &self.http.listen,
                "must be an IP address and port, e.g. 127.0.0.1:8787 (0.0.0.0 exposes it to the network)",
            ));
        }
        let a = &self.admin;
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
        if !(1..=86_400).contains(&a.client_timeout_seconds) {
            return Err(invalid(
                "admin.client_timeout_seconds",
                a.client_timeout_seconds,
                "must be 1..=86400",
            ));
        }
        // sockaddr_un holds 108 bytes with the final NUL.
        let sock = self.socket_path();
        if sock.as_os_str().len() > 107 {
            return Err(invalid(
                "admin.socket",
                sock.display().to_string(),
                "a Unix socket path is limited to 107 bytes: set admin.socket to a shorter path",
            ));
        }
        let k = &self.kafka;
        if k.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", &k.group_id, "must not be empty"));
        }
        if !(1..=1024).contains(&k.embedded_partitions) {
            return Err(invalid(
                "kafka.embedded_partitions",
                k.embedded_partitions,
                "must be 1..=1024",
            ));
        }
        if k.topics.is_empty() {
            return Err(invalid(
                "kafka.topics",
                "{}",
                "name at least one topic to consume",
            ));
        }
        for (kind, t) in &k.topics {
            if t.trim().is_empty() {
                return Err(invalid(
                    &format!("kafka.topics.{kind}"),
                    t,
                    "must name a topic or a ^pattern",
                ));
            }
            if let Some(p) = t.strip_prefix('^') {
                regex::Regex::new(&format!("^{p}")).map_err(|e| {
                    invalid(
                        &format!("kafka.topics.{kind}"),
                        t,
                        format!("bad pattern: {e}"),
                    )
                })?;
            }
        }
        let i = &self.ingest;
        if !(1..=1_000_000).contains(&i.batch_size) {
            return Err(invalid(
                "ingest.batch_size",
                i.batch_size,
                "must be 1..=1000000",
            ));
        }
        if i.max_in_flight_batches == 0 {
            return Err(invalid(
                "ingest.max_in_flight_batches",
                i.max_in_flight_batches,
                "must be at least 1",
            ));
        }
        if i.log_interval_seconds == 0 {
            return Err(invalid(
                "ingest.log_interval_seconds",
                0,
                "must be at least 1",
            ));
        }
        let v = &self.validation;
        for (key, set) in [
            ("resolutions", &v.resolutions),
            ("genres", &v.genres),
            ("regions", &v.regions),
        ] {
            if set.is_empty() || set.iter().any(|s| s.trim().is_empty()) {
                return Err(invalid(
                    &format!("validation.{key}"),
                    set,
                    "must list at least one non-empty value",
                ));
            }
        }
        if !(v.max_watch_time_seconds > 0.0 && v.max_watch_time_seconds.is_finite()) {
            return Err(invalid(
                "validation.max_watch_time_seconds",
                v.max_watch_time_seconds,
                "must be a positive number",
            ));
        }
        if v.max_buffering_events < 0 {
            return Err(invalid(
                "validation.max_buffering_events",
                v.max_buffering_events,
                "must be ≥ 0",
            ));
        }
        if v.max_bitrate_kbps <= 0 {
            return Err(invalid(
                "validation.max_bitrate_kbps",
                v.max_bitrate_kbps,
                "must be > 0",
            ));
        }
        if parse_timestamp_ms(&v.min_timestamp, TimePolicy::Strict).is_none() {
            return Err(invalid(
                "validation.min_timestamp",
                &v.min_timestamp,
                "must be RFC 3339, e.g. 2000-01-01T00:00:00Z",
            ));
        }
        if v.max_future_skew_seconds < 0 {
            return Err(invalid(
                "validation.max_future_skew_seconds",
                v.max_future_skew_seconds,
                "must be ≥ 0",
            ));
        }
        for (key, value, max) in [
            ("validation.max_id_bytes", v.max_id_bytes, 65_536),
            ("validation.max_text_bytes", v.max_text_bytes, 1 << 20),
            ("validation.max_list_entries", v.max_list_entries, 100_000),
        ] {
            if value == 0 || value > max {
                return Err(invalid(key, value, format!("must be 1 to {max}")));
            }
        }
        let p = &self.producers;
        if p.users == 0 || p.videos == 0 || p.tracks == 0 {
            return Err(invalid(
                "producers.users/videos/tracks",
                (p.users, p.videos, p.tracks),
                "must each be ≥ 1",
            ));
        }
        for (kind, r) in &p.rate {
            if !(r.is_finite() && *r >= 0.0) {
                return Err(invalid(
                    &format!("producers.rate.{kind}"),
                    r,
                    "must be ≥ 0 (0 = as fast as possible)",
                ));
            }
        }
        if p.max_lag_events == 0 {
            return Err(invalid("producers.max_lag_events", 0, "must be at least 1"));
        }
        let m = &self.models;
        if let Err(e) = m.als().check() {
            return Err(invalid("models", "", e.to_string()));
        }
        if !(0.0..=1.0).contains(&m.affinity_weight) {
            return Err(invalid(
                "models.affinity_weight",
                m.affinity_weight,
                "must be in [0, 1] (0 turns the blend off)",
            ));
        }
        if !(m.test_fraction > 0.0 && m.test_fraction < 1.0) {
            return Err(invalid(
                "models.test_fraction",
                m.test_fraction,
                "must be in (0, 1)",
            ));
        }
        if let Err(e) = m.classify().check() {
            return Err(invalid("models", "", e.to_string()));
        }
        if m.event_weights.by_action().iter().any(|w| !w.is_finite()) {
            return Err(invalid(
                "models.event_weights",
                &m.event_weights,
                "every weight must be a finite number",
            ));
        }
        if !(1..=1000).contains(&m.k) {
            return Err(invalid("models.k", m.k, "must be 1..=1000"));
        }
        if !(1..=100_000).contains(&m.keep_versions) {
            return Err(invalid(
                "models.keep_versions",
                m.keep_versions,
                "must be 1..=100000",
            ));
        }
        if self.store.cache_mb == 0 {
            return Err(invalid("store.cache_mb", 0, "must be at least 1"));
        }
        for (key, v) in [
            ("store.max_tracked_videos", self.store.max_tracked_videos),
            ("store.max_listening_pairs", self.store.max_listening_pairs),
        ] {
            if !(1..=1_000_000_000).contains(&v) {
                return Err(invalid(key, v, "must be 1..=1000000000"));
            }
        }
        if self.store.min_free_mb > 1_000_000 {
            return Err(invalid(
                "store.min_free_mb",
                self.store.min_free_mb,
                "must be 0..=1000000",
            ));
        }
        if !(5..=86_400).contains(&self.store.write_timeout_seconds) {
            return Err(invalid(
                "store.write_timeout_seconds",
                self.store.write_timeout_seconds,
                "must be 5..=86400",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                &self.log.level,
                "must be a tracing filter such as info or playpulse=debug",
            ));
        }
        Ok(())
    }
}

/// An environment value as TOML when it parses as one (numbers, booleans, arrays), else a string.
fn env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn shipped_config_toml_equals_code_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let cfg = Config::load_with_env(Some(&path), no_env()).expect("config.toml loads");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn env_overrides_nested_and_top_level_keys() {
        let env = vec![
            (
                "PLAYPULSE_KAFKA__BROKERS".to_string(),
                "127.0.0.1:9092".to_string(),
            ),
            ("PLAYPULSE_INGEST__BATCH_SIZE".to_string(), "77".to_string()),
            ("PLAYPULSE_DATA_DIR".to_string(), "/tmp/pp".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let cfg = Config::load_with_env(None, env).unwrap();
        assert_eq!(cfg.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(cfg.ingest.batch_size, 77);
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/pp"));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[ingest]\nbatch_sise = 10\n").unwrap();
        let err = Config::load_with_env(Some(&p), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_sise"), "{err}");
        let env = vec![("PLAYPULSE_KAFKA__BROKER".to_string(), "x".to_string())];
        let err = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(
            err.contains("broker") && err.contains("PLAYPULSE_KAFKA__BROKER"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_rejected_with_key_value_and_fix() {
        let env = vec![("PLAYPULSE_INGEST__BATCH_SIZE".to_string(), "0".to_string())];
        let err = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(
            err.contains("ingest.batch_size") && err.contains("1..="),
            "{err}"
        );
        let env = vec![(
            "PLAYPULSE_VALIDATION__MIN_TIMESTAMP".to_string(),
            "yesterday".to_string(),
        )];
        let err = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(
            err.contains("validation.min_timestamp") && err.contains("yesterday"),
            "{err}"
        );
        let env = vec![(
            "PLAYPULSE_INGEST__BATCH_SIZE".to_string(),
            "many".to_string(),
        )];
        let err = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(err.contains("batch_size"), "{err}");
        for bad in [
            "garbage",
            "host:notaport",
            "localhost:0",
            ":9092",
            "a:1,b",
            "h:99999",
        ] {
            let env = vec![("PLAYPULSE_KAFKA__BROKERS".to_string(), bad.to_string())];
            let err = Config::load_with_env(None, env).unwrap_err().to_string();
            assert!(
                err.contains("kafka.brokers") && err.contains("PLAYPULSE_KAFKA__BROKERS"),
                "{bad}: {err}"
            );
        }
        for good in [
            "localhost:9092",
            "10.0.0.1:9092, b-2.kafka:19092",
            "[::1]:9092",
            "SSL://k:9093",
        ] {
            let env = vec![("PLAYPULSE_KAFKA__BROKERS".to_string(), good.to_string())];
            assert!(Config::load_with_env(None, env).is_ok(), "{good}");
        }
        let env = vec![(
            "PLAYPULSE_KAFKA__MAX_RECORD_BYTES".to_string(),
            "8388608".to_string(),
        )];
        let err = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(
            err.contains("kafka.max_record_bytes") && err.contains("5 MiB"),
            "{err}"
        );
    }
}
