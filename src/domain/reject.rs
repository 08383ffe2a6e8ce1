//! Why a record was not stored: the reason code, the field, the offending value
//! and what to do about it. Every parse and validation failure is one of these.

use serde::{Deserialize, Serialize};

/// Longest value kept in a rejection (the raw bytes are kept whole in the dead-letter store).
const MAX_VALUE_CHARS: usize = 120;

/// A rejected record's diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Stable machine-readable code: `invalid_json`, `missing_field`, `wrong_type`,
    /// `out_of_range`, `unknown_value`, `empty_id`, `bad_timestamp`, ...
    pub reason: String,
    /// The field at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The offending value as it appeared (truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The rule that was broken and how to fix the record.
    pub message: String,
}

impl Rejection {
    pub fn new(reason: &str, message: impl Into<String>) -> Rejection {
        Rejection {
            reason: reason.to_string(),
            field: None,
            value: None,
            message: message.into(),
        }
    }

    pub fn field(
        reason: &str,
        field: &str,
        value: Option<String>,
        message: impl Into<String>,
    ) -> Rejection {
        Rejection {
            reason: reason.to_string(),
            field: Some(field.to_string()),
            value: value.map(truncate),
            message: message.into(),
        }
    }

    /// `reason` or `reason:field`, the key used to count rejections.
    pub fn key(&self) -> String {
        match &self.field {
            Some(f) => format!("{}:{}", self.reason, f),
            None => self.reason.clone(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        if let Some(v) = &self.value {
            write!(f, " = {v}")?;
        }
        write!(f, ": {}", self.message)
    }
}

fn truncate(mut s: String) -> String {
    if s.chars().count() > MAX_VALUE_CHARS {
        s = s.chars().take(MAX_VALUE_CHARS).collect::<String>() + "…";
    }
    s
}
