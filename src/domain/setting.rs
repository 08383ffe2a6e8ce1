//! The error of a configuration value a type cannot check: it names the key,
//! the value and what the value must be. Each configuration section checks
//! its own values beside its struct and answers this.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
#[error("config key `{key}` = {value}: {message}")]
pub struct Invalid {
    pub key: String,
    pub value: String,
    pub message: String,
}

/// An [`Invalid`] for `key` holding `value`.
pub fn invalid(key: &str, value: impl std::fmt::Debug, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.to_string(),
        value: format!("{value:?}"),
        message: message.into(),
    }
}

/// A `Duration` written in the config file as whole seconds
/// (`#[serde(with = "seconds")]`).
pub mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// A `Duration` written in the config file as whole milliseconds
/// (`#[serde(with = "millis")]`).
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
