//! Bytes → typed events. Three wire formats: JSON (canonical), the legacy
//! comma-separated `"key": value` line the notebooks split by hand, and CSV rows
//! (one row per record, the column names in the `pp-columns` record header).
//!
//! A record that cannot be parsed becomes a [`Rejection`]; parsing never panics.

pub(crate) mod canonical;
mod fields;
mod legacy;
mod records;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::event::{Event, Kind, VideoEvent};
use crate::domain::reject::Rejection;
use crate::domain::timefmt::TimePolicy;

pub use fields::{timestamp_ms, Coerce, Fields};
pub use legacy::parse_legacy_line;

/// Kafka record header naming the payload format (`json`, `legacy` or `csv`).
pub const HEADER_FORMAT: &str = "pp-format";
/// Kafka record header with a CSV row's column names, comma separated.
pub const HEADER_COLUMNS: &str = "pp-columns";
/// Kafka record header with the record's origin (`file:line`) for imported data.
pub const HEADER_SOURCE: &str = "pp-source";

/// The payload format of one record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Format {
    /// Decide from the first byte: `{` is JSON, `"` a legacy line.
    #[default]
    Sniff,
    Json,
    Legacy,
    /// A CSV row with these column names.
    Csv(Vec<String>),
}

impl Format {
    /// The format named by a record's headers (`pp-format`, `pp-columns`).
    pub fn from_headers(format: Option<&str>, columns: Option<&str>) -> Result<Format, Rejection> {
        match format.map(str::trim) {
            None | Some("") => Ok(Format::Sniff),
            Some("json") => Ok(Format::Json),
            Some("legacy") => Ok(Format::Legacy),
            Some("csv") => match columns {
                Some(c) if !c.trim().is_empty() => Ok(Format::Csv(c.split(',').map(|s| s.trim().to_string()).collect())),
                _ => Err(Rejection::field(
                    "missing_header",
                    HEADER_COLUMNS,
                    None,
                    "a CSV record needs the `pp-columns` header with the column names; replay CSV files with `playpulse import`",
                )),
            },
            Some(other) => Err(Rejection::field(
                "unknown_format",
                HEADER_FORMAT,
                Some(other.to_string()),
                "the `pp-format` header must be json, legacy or csv",
            )),
        }
    }
}

/// Parses one payload of a topic carrying `kind` into a typed event.
pub fn parse_payload(kind: Kind, format: &Format, payload: &[u8]) -> Result<Event, Rejection> {
    match format {
        Format::Sniff => match payload.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => parse_json(kind, payload),
            Some(b'"') => parse_text_map(kind, legacy_map(payload)?),
            Some(_) => Err(Rejection::new(
                "unrecognised_format",
                "the record is neither a JSON object nor a legacy `\"key\": value` line; \
                 send JSON, or set the `pp-format` header (json, legacy, csv)",
            )),
            None => Err(Rejection::new(
                "empty_record",
                "the record is empty; send one event per record",
            )),
        },
        Format::Json => parse_json(kind, payload),
        Format::Legacy => parse_text_map(kind, legacy_map(payload)?),
        Format::Csv(columns) => parse_text_map(kind, csv_map(columns, payload)?),
    }
}

fn utf8(payload: &[u8]) -> Result<&str, Rejection> {
    std::str::from_utf8(payload).map_err(|e| {
        Rejection::new(
            "invalid_utf8",
            format!(
                "the record is not UTF-8 text (byte {}); encode it as UTF-8",
                e.valid_up_to()
            ),
        )
    })
}

fn legacy_map(payload: &[u8]) -> Result<Map<String, Value>, Rejection> {
    parse_legacy_line(utf8(payload)?)
}

fn csv_map(columns: &[String], payload: &[u8]) -> Result<Map<String, Value>, Rejection> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(payload);
    let mut row = csv::StringRecord::new();
    match reader.read_record(&mut row) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Rejection::new(
                "empty_record",
                "the CSV row is empty; send one row per record",
            ))
        }
        Err(e) => {
            return Err(Rejection::new(
                "csv_syntax",
                format!("{e}; fix the row's quoting"),
            ))
        }
    }
    if row.len() != columns.len() {
        return Err(Rejection::new(
            "csv_columns",
            format!(
                "the row has {} fields but the header names {} columns ({}); give every row all the columns",
                row.len(),
                columns.len(),
                columns.join(",")
            ),
        ));
    }
    let mut map = Map::new();
    for (name, value) in columns.iter().zip(row.iter()) {
        // An empty CSV field is an absent value.
        if !value.trim().is_empty() {
            map.insert(name.clone(), Value::String(value.to_string()));
        }
    }
    Ok(map)
}

/// The wire shape of a JSON video event, for the fast path: borrowed strings,
/// exact JSON types, optional QoE fields.
#[derive(Deserialize)]
struct VideoWire<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    video_id: Cow<'a, str>,
    watch_time_seconds: f64,
    #[serde(borrow)]
    resolution: Cow<'a, str>,
    bitrate_kbps: i64,
    buffering_events: i64,
    paused: bool,
    skipped: bool,
    #[serde(borrow)]
    genre: Cow<'a, str>,
    #[serde(borrow)]
    region: Cow<'a, str>,
    recommended: bool,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(default)]
    startup_time_ms: Option<f64>,
    #[serde(default)]
    rebuffer_ms: Option<f64>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
}

impl VideoWire<'_> {
    fn into_event(self) -> Result<VideoEvent, Rejection> {
        Ok(VideoEvent {
            timestamp_ms: timestamp_ms("timestamp", &self.timestamp, TimePolicy::Strict)?,
            user_id: self.user_id.as_ref().into(),
            video_id: self.video_id.as_ref().into(),
            watch_time_seconds: self.watch_time_seconds,
            resolution: self.resolution.as_ref().into(),
            bitrate_kbps: self.bitrate_kbps,
            buffering_events: self.buffering_events,
            paused: self.paused,
            skipped: self.skipped,
            genre: self.genre.as_ref().into(),
            region: self.region.as_ref().into(),
            recommended: self.recommended,
            startup_time_ms: self.startup_time_ms,
            rebuffer_ms: self.rebuffer_ms,
            error: self.error.map(Cow::into_owned),
        })
    }
}

fn parse_json(kind: Kind, payload: &[u8]) -> Result<Event, Rejection> {
    if kind == Kind::Video {
        // One UTF-8 check of the whole record is cheaper than serde_json's per string.
        let text = std::str::from_utf8(payload).ok();
        // Fastest: the canonical record; then one serde pass into the typed shape.
        if let Some(ev) = text.and_then(canonical::video) {
            return Ok(Event::Video(ev));
        }
        if let Some(w) = text.and_then(|t| serde_json::from_str::<VideoWire>(t).ok()) {
            return w.into_event().map(Event::Video);
        }
    }
    // Slow path (other kinds, and the diagnosis of a video record the fast path refused).
    let value: Value = serde_json::from_slice(payload).map_err(|e| {
        Rejection::new(
            "invalid_json",
            format!("{e}; send one complete JSON object per record"),
        )
    })?;
    match value {
        Value::Object(map) => {
            records::from_map(kind, &Fields::new(&map, Coerce::Strict, TimePolicy::Strict))
        }
        other => Err(Rejection::new(
            "not_an_object",
            format!(
                "the record is JSON {} but must be a JSON object",
                fields::type_name(&other)
            ),
        )),
    }
}

/// The fast path for canonical video JSON agrees with the serde path on every
/// record it accepts (a fuzzing invariant; panics when it does not).
pub fn check_video_fast_path(text: &str) {
    if let Some(fast) = canonical::video(text) {
        let slow = serde_json::from_str::<VideoWire>(text)
            .map_err(|e| e.to_string())
            .and_then(|w| w.into_event().map_err(|r| r.to_string()));
        assert_eq!(
            slow.as_ref(),
            Ok(&fast),
            "the fast path accepted a record the serde path reads otherwise: {text:?}"
        );
    }
}

fn parse_text_map(kind: Kind, map: Map<String, Value>) -> Result<Event, Rejection> {
    records::from_map(kind, &Fields::new(&map, Coerce::Text, TimePolicy::Lenient))
}

#[cfg(test)]
mod tests;
