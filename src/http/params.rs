//! Query parameters as a request's arguments: `?user=u1&k=5` deserializes into
//! the same argument types the control socket reads (`admin::cmd`). Numbers
//! are parsed from their text; an empty value is no value; parameters the
//! command does not take are ignored (a browser adds its own).

use std::collections::HashMap;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use crate::admin::RequestError;

/// Why query parameters do not make a request.
#[derive(Debug)]
pub struct ParamError(pub RequestError);

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ParamError {}

impl de::Error for ParamError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        // Named by its parameter where one is being read (`Value::named`).
        ParamError(RequestError::Params(msg.to_string()))
    }

    fn missing_field(field: &'static str) -> Self {
        ParamError(RequestError::ParamMissing { key: field.into() })
    }
}

/// Builds `T` from query parameters.
pub fn from_params<T: DeserializeOwned>(p: &HashMap<String, String>) -> Result<T, RequestError> {
    T::deserialize(Params(p)).map_err(|e| e.0)
}

struct Params<'a>(&'a HashMap<String, String>);

impl<'de> de::Deserializer<'de> for Params<'_> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ParamError> {
        Err(de::Error::custom("query parameters make a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        let entries: Vec<(&str, &str)> = self
            .0
            .iter()
            .filter(|(k, _)| fields.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        visitor.visit_map(Entries {
            entries: entries.into_iter(),
            next: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The parameters a struct takes, one at a time; an error while a value is
/// read (its type's own check included) names the parameter.
struct Entries<'a, I> {
    entries: I,
    next: Option<(&'a str, &'a str)>,
}

impl<'de, 'a, I: Iterator<Item = (&'a str, &'a str)>> de::MapAccess<'de> for Entries<'a, I> {
    type Error = ParamError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ParamError> {
        let Some((key, text)) = self.entries.next() else {
            return Ok(None);
        };
        self.next = Some((key, text));
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ParamError> {
        let (key, text) = self
            .next
            .take()
            .ok_or_else(|| de::Error::custom("a value without its parameter"))?;
        let value = Value { key, text };
        seed.deserialize(Value { key, text })
            .map_err(|e| value.named(e))
    }
}

/// One parameter's text, read as the field's type asks.
struct Value<'a> {
    key: &'a str,
    text: &'a str,
}

impl Value<'_> {
    fn number<T: std::str::FromStr>(&self) -> Result<T, ParamError> {
        self.text.trim().parse().map_err(|_| {
            ParamError(RequestError::ParamNotANumber {
                key: self.key.into(),
                value: self.text.into(),
            })
        })
    }

    /// An error while this parameter was read, naming it.
    fn named(&self, e: ParamError) -> ParamError {
        match e.0 {
            RequestError::Params(message) => ParamError(RequestError::Param {
                key: self.key.into(),
                value: self.text.into(),
                message,
            }),
            other => ParamError(other),
        }
    }
}

macro_rules! numbers {
    ($($method:ident => $visit:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
                visitor.$visit(self.number()?)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Value<'_> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_string(self.text.to_string())
    }

    numbers! {
        deserialize_u8 => visit_u8, deserialize_u16 => visit_u16, deserialize_u32 => visit_u32,
        deserialize_u64 => visit_u64, deserialize_i8 => visit_i8, deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32, deserialize_i64 => visit_i64, deserialize_f32 => visit_f32,
        deserialize_f64 => visit_f64,
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.text {
            "true" | "1" => visitor.visit_bool(true),
            "false" | "0" => visitor.visit_bool(false),
            _ => Err(ParamError(RequestError::Param {
                key: self.key.into(),
                value: self.text.into(),
                message: "give true or false".into(),
            })),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        if self.text.is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        visitor.visit_enum(self.text.into_deserializer())
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::cmd::{dlq::Dlq, recommend::Recommend, stats::Analytics};

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_parameters_make_the_socket_s_argument_types() {
        let r: Recommend = from_params(&params(&[
            ("user", "u1"),
            ("k", "5"),
            ("genre", ""),
            ("_", "1"),
        ]))
        .unwrap();
        assert_eq!(
            (r.user.as_str(), r.k, r.genre, r.region),
            ("u1", Some(5), None, None)
        );
        let r: Recommend = from_params(&params(&[("user", "u1"), ("domain", "music")])).unwrap();
        assert_eq!(r.domain, Some(crate::domain::event::Domain::Music));
        let e = from_params::<Recommend>(&params(&[("user", "u"), ("domain", "films")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("domain=\"films\"") && e.contains("video") && e.contains("music"),
            "{e}"
        );
        let e = from_params::<Recommend>(&params(&[("user", "u"), ("k", "-1")])).unwrap_err();
        assert_eq!(e.to_string(), "query parameter k=\"-1\" is not a number");
        let e = from_params::<Recommend>(&params(&[("k", "3")])).unwrap_err();
        assert_eq!(e.to_string(), "query parameter `user` is missing");
        let a: Analytics = from_params(&params(&[
            ("view", "qoe"),
            ("dim", "region"),
            ("minutes", "60"),
        ]))
        .unwrap();
        assert_eq!(a.minutes, Some(60));
        let a: Analytics = from_params(&params(&[
            ("view", "series"),
            ("last", "7d"),
            ("step", "hour"),
            ("genre", "Drama"),
            ("region", "US"),
        ]))
        .unwrap();
        let q = a.query();
        assert_eq!(
            (
                q.step,
                q.filter.genre.as_deref(),
                q.filter.region.as_deref()
            ),
            (
                Some(crate::store::rollup::Grain::Hour),
                Some("Drama"),
                Some("US")
            )
        );
        assert!(q.is_range());
        let e = from_params::<Analytics>(&params(&[("view", "nope")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "query parameter view=\"nope\": view \"nope\": use qoe, series, top, engagement, pipeline or listening"
        );
        let e =
            from_params::<Analytics>(&params(&[("view", "qoe"), ("minutes", "many")])).unwrap_err();
        assert!(
            e.to_string().contains("minutes=\"many\" is not a number"),
            "{e}"
        );
        let d: Dlq = from_params(&params(&[("action", "show"), ("id", "0:t/0/1")])).unwrap();
        assert_eq!(d.id.as_deref(), Some("0:t/0/1"));
        assert!(from_params::<Dlq>(&params(&[("action", "explode")])).is_err());
    }
}
