//! The configuration tree. Defaults in code equal `config.toml`; environment
//! variables `PLAYPULSE_SECTION__KEY` (and `PLAYPULSE_DATA_DIR`) override the file;
//! unknown keys and bad values are rejected at load with a message naming them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

mod cluster;
mod producers;
mod serve;

pub use crate::domain::setting::{invalid, Invalid};
pub use crate::ingest::config::{IngestConfig, ValidationConfig};
pub use crate::kafka::config::KafkaConfig;
pub use crate::ml::config::{EventWeights, ModelsConfig, PromoteMetric};
pub use crate::store::config::StoreConfig;
pub use crate::views::config::AnalyticsConfig;
pub use cluster::{ClusterConfig, ClusterTopics};
pub use producers::{ProducerMode, ProducersConfig};
pub use serve::{AdminConfig, HttpConfig, LogConfig};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; pass an existing file with --config")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error(transparent)]
    Invalid(#[from] Invalid),
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
    pub analytics: AnalyticsConfig,
    /// Alert rules over the rollups, and the webhook they notify.
    pub alerts: crate::views::alerts::AlertsConfig,
    pub admin: AdminConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    /// Daemons of one consumer group acting as one.
    pub cluster: ClusterConfig,
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
            analytics: AnalyticsConfig::default(),
            alerts: Default::default(),
            admin: AdminConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            cluster: ClusterConfig::default(),
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

    /// Checks every value a type cannot (ranges, sets, names), section by section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", &self.data_dir, "must name a directory").into());
        }
        self.kafka.validate()?;
        self.cluster.validate(self.kafka.max_record_bytes)?;
        self.analytics.validate()?;
        self.alerts.validate()?;
        self.http.validate()?;
        self.admin.validate()?;
        // sockaddr_un holds 108 bytes with the final NUL.
        let sock = self.socket_path();
        if sock.as_os_str().len() > 107 {
            return Err(invalid(
                "admin.socket",
                sock.display().to_string(),
                "a Unix socket path is limited to 107 bytes: set admin.socket to a shorter path",
            )
            .into());
        }
        self.ingest.validate()?;
        self.validation.validate()?;
        self.producers.validate()?;
        self.models.validate()?;
        self.store.validate()?;
        self.log.validate()?;
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
mod tests;
