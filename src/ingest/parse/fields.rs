//! Typed field access on a parsed object, with precise rejections.
//!
//! JSON is typed by the sender, so `Coerce::Strict` demands the right JSON type.
//! Text formats (CSV, legacy lines) carry everything as text, so `Coerce::Text`
//! also reads numbers and booleans out of strings.

use serde_json::{Map, Value};

use crate::domain::reject::Rejection;
use crate::domain::timefmt::{parse_timestamp_ms, TimePolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coerce {
    Strict,
    Text,
}

/// An object being read field by field.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    coerce: Coerce,
    time: TimePolicy,
}

fn show(v: &Value) -> String {
    v.to_string()
}

/// How a JSON value's type reads in a message ("a string", "an array", ...).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>, coerce: Coerce, time: TimePolicy) -> Fields<'a> {
        Fields { map, coerce, time }
    }

    /// The value under the first of `names` present (canonical name first, then aliases).
    fn lookup(&self, names: &[&str]) -> Option<&'a Value> {
        names
            .iter()
            .find_map(|n| self.map.get(*n))
            .filter(|v| !v.is_null())
    }

    pub fn has(&self, name: &str) -> bool {
        self.lookup(&[name]).is_some()
    }

    fn missing(names: &[&str]) -> Rejection {
        let also = if names.len() > 1 {
            format!(" (also accepted as {})", names[1..].join(", "))
        } else {
            String::new()
        };
        Rejection::field(
            "missing_field",
            names[0],
            None,
            format!(
                "required field `{}`{} is absent or null; add it to the record",
                names[0], also
            ),
        )
    }

    fn wrong(name: &str, v: &Value, expected: &str) -> Rejection {
        Rejection::field(
            "wrong_type",
            name,
            Some(show(v)),
            format!("expected {expected}, got {}; send {expected}", type_name(v)),
        )
    }

    pub fn req<T>(
        &self,
        names: &[&str],
        get: impl Fn(&Self, &str, &Value) -> Result<T, Rejection>,
    ) -> Result<T, Rejection> {
        match self.lookup(names) {
            Some(v) => get(self, names[0], v),
            None => Err(Self::missing(names)),
        }
    }

    pub fn opt<T>(
        &self,
        names: &[&str],
        get: impl Fn(&Self, &str, &Value) -> Result<T, Rejection>,
    ) -> Result<Option<T>, Rejection> {
        match self.lookup(names) {
            Some(v) => get(self, names[0], v).map(Some),
            None => Ok(None),
        }
    }

    pub fn string(&self, name: &str, v: &Value) -> Result<String, Rejection> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) if self.coerce == Coerce::Text => Ok(n.to_string()),
            _ => Err(Self::wrong(name, v, "a string")),
        }
    }

    pub fn f64(&self, name: &str, v: &Value) -> Result<f64, Rejection> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| Self::wrong(name, v, "a number")),
            Value::String(s) if self.coerce == Coerce::Text => s
                .trim()
                .parse::<f64>()
                .map_err(|_| Self::wrong(name, v, "a number")),
            _ => Err(Self::wrong(name, v, "a number")),
        }
    }

    pub fn i64(&self, name: &str, v: &Value) -> Result<i64, Rejection> {
        match v {
            Value::Number(n) => n.as_i64().ok_or_else(|| Self::wrong(name, v, "an integer")),
            Value::String(s) if self.coerce == Coerce::Text => s
                .trim()
                .parse::<i64>()
                .map_err(|_| Self::wrong(name, v, "an integer")),
            _ => Err(Self::wrong(name, v, "an integer")),
        }
    }

    pub fn bool(&self, name: &str, v: &Value) -> Result<bool, Rejection> {
        match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if self.coerce == Coerce::Text => {
                match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" => Ok(true),
                    "false" | "0" => Ok(false),
                    _ => Err(Self::wrong(name, v, "true or false")),
                }
            }
            _ => Err(Self::wrong(name, v, "true or false")),
        }
    }

    pub fn timestamp(&self, name: &str, v: &Value) -> Result<i64, Rejection> {
        let s = match v {
            Value::String(s) => s,
            _ => return Err(Self::wrong(name, v, "an RFC 3339 timestamp string")),
        };
        timestamp_ms(name, s, self.time)
    }

    pub fn string_list(&self, name: &str, v: &Value) -> Result<Vec<String>, Rejection> {
        match v {
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(Self::wrong(name, v, "an array of strings")),
                })
                .collect(),
            Value::String(s) if self.coerce == Coerce::Text => Ok(s
                .split(['|', ';'])
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()),
            _ => Err(Self::wrong(name, v, "an array of strings")),
        }
    }
}

/// Parses a timestamp field under `policy`, naming the field on failure.
pub fn timestamp_ms(name: &str, s: &str, policy: TimePolicy) -> Result<i64, Rejection> {
    parse_timestamp_ms(s.trim(), policy).ok_or_else(|| {
        let forms = match policy {
            TimePolicy::Strict => "RFC 3339 with an offset, e.g. 2024-01-01T00:00:00Z",
            TimePolicy::Lenient => {
                "RFC 3339 (2024-01-01T00:00:00Z), YYYY-MM-DD HH:MM:SS, YYYY-MM-DD or MM/DD/YYYY"
            }
        };
        Rejection::field(
            "bad_timestamp",
            name,
            Some(format!("{s:?}")),
            format!("not a valid timestamp; write it as {forms}"),
        )
    })
}
