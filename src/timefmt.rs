//! Timestamp parsing and formatting.
//!
//! JSON input must carry RFC 3339 timestamps with an explicit offset
//! (`2024-01-01T00:00:00Z`), as the reference pipeline validated them. Text
//! formats (the legacy `"key": value` lines and CSV files) also accept the forms
//! the notebooks wrote: `MM/DD/YYYY`, `YYYY-MM-DD` and `YYYY-MM-DD HH:MM:SS[.fff]` (UTC).

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// Which timestamp forms a source may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePolicy {
    /// RFC 3339 with an explicit offset only.
    Strict,
    /// RFC 3339, or one of the notebooks' UTC forms.
    Lenient,
}

/// Parses a timestamp into milliseconds since the Unix epoch (UTC).
pub fn parse_timestamp_ms(s: &str, policy: TimePolicy) -> Option<i64> {
    let b = s.as_bytes();
    // RFC 3339: date 'T' time, then 'Z' or an offset.
    if b.len() >= 20 && b[10] == b'T' {
        return DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis());
    }
    if policy == TimePolicy::Strict {
        return None;
    }
    if b.len() == 10 && b[2] == b'/' && b[5] == b'/' {
        return NaiveDate::parse_from_str(s, "%m/%d/%Y")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp_millis());
    }
    if b.len() == 10 {
        return NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp_millis());
    }
    if b.len() >= 19 && b[10] == b' ' {
        return NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(|d| d.and_utc().timestamp_millis());
    }
    None
}

/// Formats milliseconds since the epoch as RFC 3339 UTC (`...Z`), seconds precision
/// when the value has no fractional second.
pub fn format_timestamp_ms(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(d) if ms % 1000 == 0 => d.to_rfc3339_opts(SecondsFormat::Secs, true),
        Some(d) => d.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_accepts_rfc3339_only() {
        assert_eq!(
            parse_timestamp_ms("2024-01-01T00:00:00Z", TimePolicy::Strict),
            Some(1_704_067_200_000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-01T01:00:00+01:00", TimePolicy::Strict),
            Some(1_704_067_200_000)
        );
        for bad in [
            "2024-13-01T00:00:00Z",
            "yesterday",
            "2024-01-01 00:00:00",
            "2024-01-01T25:61:00Z",
            "2024-01-01T00:00:00",
            "05/14/2025",
        ] {
            assert_eq!(parse_timestamp_ms(bad, TimePolicy::Strict), None, "{bad}");
        }
    }

    #[test]
    fn lenient_accepts_notebook_forms() {
        let day = parse_timestamp_ms("05/14/2025", TimePolicy::Lenient);
        assert_eq!(
            day,
            parse_timestamp_ms("2025-05-14T00:00:00Z", TimePolicy::Strict)
        );
        assert_eq!(
            parse_timestamp_ms("2025-10-29 18:30:00", TimePolicy::Lenient),
            parse_timestamp_ms("2025-10-29T18:30:00Z", TimePolicy::Strict)
        );
        assert_eq!(parse_timestamp_ms("13/14/2025", TimePolicy::Lenient), None);
        assert_eq!(parse_timestamp_ms("2025-02-30", TimePolicy::Lenient), None);
    }

    #[test]
    fn format_round_trips() {
        let ms = 1_704_067_200_000;
        assert_eq!(format_timestamp_ms(ms), "2024-01-01T00:00:00Z");
        assert_eq!(
            parse_timestamp_ms(&format_timestamp_ms(ms + 250), TimePolicy::Strict),
            Some(ms + 250)
        );
    }
}
