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
    if let Some(ms) = fast_utc_seconds(b) {
        return Some(ms);
    }
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

/// The common exact forms `YYYY-MM-DDTHH:MM:SSZ` and `YYYY-MM-DDTHH:MM:SS.mmmZ`,
/// without a general parser.
fn fast_utc_seconds(b: &[u8]) -> Option<i64> {
    let digits = |r: &[u8]| -> Option<i64> {
        r.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let millis = match b {
        [head @ .., b'Z'] if head.len() == 19 => 0,
        [_head @ .., b'.', m0, m1, m2, b'Z'] if b.len() == 24 => digits(&[*m0, *m1, *m2])?,
        _ => return None,
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, s) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > days_in_month[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || s > 59
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + s) * 1000 + millis)
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
    fn fast_path_agrees_with_the_general_parser() {
        let mut t = -2_208_988_800i64; // 1900-01-01
        while t < 4_102_444_800 {
            let s = format_timestamp_ms(t * 1000);
            let general = DateTime::parse_from_rfc3339(&s)
                .map(|d| d.timestamp_millis())
                .ok();
            assert_eq!(fast_utc_seconds(s.as_bytes()), general, "{s}");
            let ms = format_timestamp_ms(t * 1000 + 123);
            assert_eq!(
                fast_utc_seconds(ms.as_bytes()),
                Some(t * 1000 + 123),
                "{ms}"
            );
            t += 86_400 * 7 + 3_599;
        }
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-00-10T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-0aT00:00:00Z",
            "2024-01-01T00:00:00.12Z",
            "2024-01-01T00:00:00.1234",
        ] {
            assert_eq!(fast_utc_seconds(bad.as_bytes()), None, "{bad}");
        }
        assert!(fast_utc_seconds(b"2024-02-29T12:00:00Z").is_some());
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
