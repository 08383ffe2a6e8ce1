//! A decoder specialised for the canonical JSON video record — compact, keys in
//! the order producers write them, no escapes. It either returns exactly the
//! values the general decoder would, or `None`, and the general path takes over
//! (and diagnoses anything wrong). Most records take this path.

use crate::domain::event::VideoEvent;
use crate::domain::timefmt::{parse_timestamp_ms, TimePolicy};

struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn lit(&mut self, l: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + l.len())? == l {
            self.i += l.len();
            Some(())
        } else {
            None
        }
    }

    /// `"key":` (the cursor stays put when the key is another).
    fn key(&mut self, k: &str) -> Option<()> {
        let at = self.i;
        let r = self
            .lit(b"\"")
            .and_then(|()| self.lit(k.as_bytes()))
            .and_then(|()| self.lit(b"\":"));
        if r.is_none() {
            self.i = at;
        }
        r
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.lit(b"\"")?;
        let start = self.i;
        let rest = self.b.get(start..)?;
        let len = rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        self.s.get(start..start + len)
    }

    /// A JSON number token; `integer` demands `-?(0|[1-9][0-9]*)`.
    fn number(&mut self, integer: bool) -> Option<&'a str> {
        let b = self.b;
        let start = self.i;
        let mut i = start;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let int_len = i - int_start;
        if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
            return None;
        }
        if !integer {
            if b.get(i) == Some(&b'.') {
                i += 1;
                let f = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                if i == f {
                    return None;
                }
            }
            if matches!(b.get(i), Some(b'e' | b'E')) {
                i += 1;
                if matches!(b.get(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                let e = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                if i == e {
                    return None;
                }
            }
        }
        // The token must end where a value ends.
        if !matches!(b.get(i), Some(b',' | b'}')) {
            return None;
        }
        self.i = i;
        self.s.get(start..i)
    }

    fn f64(&mut self) -> Option<f64> {
        let v: f64 = self.number(false)?.parse().ok()?;
        v.is_finite().then_some(v)
    }

    fn i64(&mut self) -> Option<i64> {
        self.number(true)?.parse().ok()
    }

    fn bool(&mut self) -> Option<bool> {
        if self.lit(b"true").is_some() {
            Some(true)
        } else {
            self.lit(b"false").map(|()| false)
        }
    }

    fn next(&mut self) -> Option<()> {
        self.lit(b",")
    }
}

/// Decodes a canonical video record, or `None` to defer to the general decoder.
pub fn video(text: &str) -> Option<VideoEvent> {
    let mut c = Cursor {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    c.lit(b"{")?;
    c.key("user_id")?;
    let user_id = c.string()?;
    c.next()?;
    c.key("video_id")?;
    let video_id = c.string()?;
    c.next()?;
    c.key("watch_time_seconds")?;
    let watch_time_seconds = c.f64()?;
    c.next()?;
    c.key("resolution")?;
    let resolution = c.string()?;
    c.next()?;
    c.key("bitrate_kbps")?;
    let bitrate_kbps = c.i64()?;
    c.next()?;
    c.key("buffering_events")?;
    let buffering_events = c.i64()?;
    c.next()?;
    c.key("paused")?;
    let paused = c.bool()?;
    c.next()?;
    c.key("skipped")?;
    let skipped = c.bool()?;
    c.next()?;
    c.key("genre")?;
    let genre = c.string()?;
    c.next()?;
    c.key("region")?;
    let region = c.string()?;
    c.next()?;
    c.key("recommended")?;
    let recommended = c.bool()?;
    c.next()?;
    c.key("timestamp")?;
    let timestamp_ms = parse_timestamp_ms(c.string()?, TimePolicy::Strict)?;
    let mut ev = VideoEvent {
        user_id: user_id.into(),
        video_id: video_id.into(),
        watch_time_seconds,
        resolution: resolution.into(),
        bitrate_kbps,
        buffering_events,
        paused,
        skipped,
        genre: genre.into(),
        region: region.into(),
        recommended,
        timestamp_ms,
        startup_time_ms: None,
        rebuffer_ms: None,
        error: None,
    };
    if c.next().is_some() {
        if c.key("startup_time_ms").is_some() {
            ev.startup_time_ms = Some(c.f64()?);
            if c.next().is_none() {
                return c.end(ev);
            }
        }
        if c.key("rebuffer_ms").is_some() {
            ev.rebuffer_ms = Some(c.f64()?);
            if c.next().is_none() {
                return c.end(ev);
            }
        }
        c.key("error")?;
        ev.error = Some(c.string()?.to_string());
    }
    c.end(ev)
}

impl Cursor<'_> {
    fn end(&mut self, ev: VideoEvent) -> Option<VideoEvent> {
        self.lit(b"}")?;
        (self.i == self.b.len()).then_some(ev)
    }
}
