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
