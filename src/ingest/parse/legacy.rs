//! The legacy line form: comma-separated `"key": value` pairs, optionally wrapped
//! in braces, as the reference notebooks split Kafka values by hand:
//! `"user_id": "user_2242", "video_id": "vid_013", "watch_time_seconds": 221, ...`.
//! Values may be quoted strings, numbers, true/false, null, or bare words.

use serde_json::{Map, Number, Value};

use crate::domain::reject::Rejection;

/// Splits `s` on `sep` outside double quotes (a backslash escapes a quote).
fn split_unquoted(s: &str, sep: char, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut in_quotes, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes && parts.len() + 1 < max {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// The text of a quoted token: `\"`, `\\`, `\n`, `\r` and `\t` are escapes (as
/// [`crate::ingest::wire::video_to_legacy`] writes them); a backslash before any other
/// character keeps that character.
fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(inner.to_string());
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Some(out)
}

fn token_value(tok: &str) -> Value {
    if let Some(s) = unquote(tok) {
        return Value::String(s);
    }
    match tok {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = tok.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Some(n) = tok.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(tok.to_string())
}

/// Parses one legacy line into an object.
pub fn parse_legacy_line(line: &str) -> Result<Map<String, Value>, Rejection> {
    let mut body = line.trim();
    if let Some(b) = body.strip_prefix('{') {
        body = b.strip_suffix('}').ok_or_else(|| {
            Rejection::new(
                "legacy_syntax",
                "the line opens with `{` but does not close with `}`; the record looks truncated",
            )
        })?;
    }
    let mut map = Map::new();
    for (i, pair) in split_unquoted(body, ',', usize::MAX)
        .into_iter()
        .enumerate()
    {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let kv = split_unquoted(pair, ':', 2);
        if kv.len() != 2 {
            return Err(Rejection::new(
                "legacy_syntax",
                format!(
                    "pair {} ({pair:?}) has no `:`; write each pair as \"key\": value",
                    i + 1
                ),
            ));
        }
        let key_tok = kv[0].trim();
        let key = unquote(key_tok).unwrap_or_else(|| key_tok.to_string());
        if key.is_empty() {
            return Err(Rejection::new(
                "legacy_syntax",
                format!("pair {} has an empty key; name every value", i + 1),
            ));
        }
        map.insert(key, token_value(kv[1].trim()));
    }
    if map.is_empty() {
        return Err(Rejection::new(
            "empty_record",
            "the legacy line holds no `\"key\": value` pairs",
        ));
    }
    Ok(map)
}
