//! The bounds every size, count and id from a request is checked against (for
//! the socket and HTTP alike), and the checks themselves.

use super::error::RequestError;

/// Largest `k` (recommendations, similar items, export rows per user).
pub const MAX_K: usize = 1000;
/// Largest page of dead letters, analytics rows or graph items.
pub const MAX_PAGE: usize = 10_000;
/// Largest number of dead letters one replay or purge handles.
pub const MAX_BULK: usize = 1_000_000;
/// Largest live-analytics window, minutes (a day).
pub const MAX_MINUTES: u32 = 1440;
/// Largest producer rate, events/s.
pub const MAX_RATE: f64 = 10_000_000.0;
/// Longest id or name argument, bytes.
pub const MAX_ARG_BYTES: usize = 1024;
/// Longest path argument, bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Largest graph page offset.
pub const MAX_OFFSET: usize = 100_000_000;

/// `v`, when given, lies in `lo..=hi`.
pub fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &'static str,
    v: Option<T>,
    lo: T,
    hi: T,
) -> Result<(), RequestError> {
    match v {
        Some(x) if !(x >= lo && x <= hi) => Err(RequestError::OutOfRange {
            name,
            value: x.to_string(),
            lo: lo.to_string(),
            hi: hi.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A finite `v`, when given, in `lo..=hi`.
pub fn finite(name: &'static str, v: Option<f64>, lo: f64, hi: f64) -> Result<(), RequestError> {
    match v {
        Some(x) if !x.is_finite() => Err(RequestError::NotFinite {
            name,
            value: x,
            lo,
            hi,
        }),
        _ => in_range(name, v, lo, hi),
    }
}

/// Text of at most `max` bytes without control characters (non-blank when `required`).
pub fn text(
    name: &'static str,
    v: Option<&str>,
    required: bool,
    max: usize,
) -> Result<(), RequestError> {
    let Some(s) = v else { return Ok(()) };
    if required && s.trim().is_empty() {
        return Err(RequestError::Empty { name });
    }
    if s.len() > max {
        return Err(RequestError::TooLong {
            name,
            len: s.len(),
            max,
        });
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(RequestError::ControlCharacter { name, c });
    }
    Ok(())
}

/// A required id or name.
pub fn id(name: &'static str, v: &str) -> Result<(), RequestError> {
    text(name, Some(v), true, MAX_ARG_BYTES)
}

/// An optional id or name.
pub fn opt(name: &'static str, v: &Option<String>) -> Result<(), RequestError> {
    text(name, v.as_deref(), false, MAX_ARG_BYTES)
}

/// A path argument.
pub fn path(name: &'static str, v: &std::path::Path) -> Result<(), RequestError> {
    text(name, Some(&v.to_string_lossy()), true, MAX_PATH_BYTES)
}

/// `k` from a command line (`--k`): 1 to [`MAX_K`].
pub fn parse_k(s: &str) -> Result<usize, RequestError> {
    let k: usize = s.parse().map_err(|_| RequestError::NotACount {
        value: s.to_string(),
        max: MAX_K,
    })?;
    in_range("k", Some(k), 1, MAX_K)?;
    Ok(k)
}
