//! Validation rules and normalisation: required content, ranges, known sets,
//! sane timestamps; strings trimmed, ids lower-cased. Each rejection names the
//! field, the value and the rule.

use super::config::ValidationConfig;
use crate::domain::event::{Event, MusicEvent, Title, Track, UserProfile, VideoEvent};
use crate::domain::reject::Rejection;
use crate::domain::timefmt::{now_ms, parse_timestamp_ms, TimePolicy};

/// Compiled validation rules.
#[derive(Debug, Clone)]
pub struct Validator {
    resolutions: Vec<String>,
    genres: Vec<String>,
    regions: Vec<String>,
    max_watch: f64,
    max_buffering: i64,
    max_bitrate: i64,
    min_ts_ms: i64,
    max_skew_ms: i64,
    lowercase_ids: bool,
    max_id_bytes: usize,
    max_text_bytes: usize,
    max_list_entries: usize,
}

/// A field's text, trimmed in place: an owned `String` or an event's [`Name`].
trait Text: std::ops::DerefMut<Target = str> + for<'a> From<&'a str> + std::fmt::Debug {}
impl Text for String {}
impl Text for crate::domain::event::Name {}

fn trim_in_place<T: Text>(s: &mut T) {
    // Fast path: nothing to trim when both ends are visible ASCII.
    let b = s.as_bytes();
    if let (Some(&first), Some(&last)) = (b.first(), b.last()) {
        if first.is_ascii_graphic() && last.is_ascii_graphic() {
            return;
        }
    }
    let t = s.trim();
    if t.len() != s.len() {
        *s = T::from(t);
    }
}

impl Validator {
    pub fn new(cfg: &ValidationConfig) -> Validator {
        Validator {
            resolutions: cfg.resolutions.clone(),
            genres: cfg.genres.clone(),
            regions: cfg.regions.clone(),
            max_watch: cfg.max_watch_time_seconds,
            max_buffering: cfg.max_buffering_events,
            max_bitrate: cfg.max_bitrate_kbps,
            // Config::validate checked it; the fallback is the documented default.
            min_ts_ms: parse_timestamp_ms(&cfg.min_timestamp, TimePolicy::Strict)
                .unwrap_or(946_684_800_000),
            max_skew_ms: cfg.max_future_skew_seconds.saturating_mul(1000),
            lowercase_ids: cfg.lowercase_ids,
            max_id_bytes: cfg.max_id_bytes,
            max_text_bytes: cfg.max_text_bytes,
            max_list_entries: cfg.max_list_entries,
        }
    }

    /// Validates and normalises one event, using the wall clock for the future bound.
    pub fn validate(&self, ev: Event) -> Result<Event, Rejection> {
        self.validate_at(ev, now_ms())
    }

    /// As [`Validator::validate`] with an explicit "now" (ms since the epoch).
    pub fn validate_at(&self, mut ev: Event, now_ms: i64) -> Result<Event, Rejection> {
        self.validate_in_place(&mut ev, now_ms)?;
        Ok(ev)
    }

    /// Validates and normalises an event where it lies (no moves of the event).
    pub fn validate_in_place(&self, ev: &mut Event, now_ms: i64) -> Result<(), Rejection> {
        match ev {
            Event::Video(v) => self.video(v, now_ms),
            Event::User(u) => self.user(u, now_ms),
            Event::Movie(t) | Event::Series(t) => self.title(t, now_ms),
            Event::Track(t) => self.track(t),
            Event::Music(m) => self.music(m, now_ms),
        }
    }

    fn id<T: Text>(&self, field: &str, s: &mut T) -> Result<(), Rejection> {
        trim_in_place(s);
        if s.is_empty() {
            return Err(Rejection::field(
                "empty_id",
                field,
                Some("\"\"".into()),
                "ids must not be empty; send the entity's id",
            ));
        }
        if s.len() > self.max_id_bytes {
            return Err(Rejection::field(
                "id_too_long",
                field,
                Some(format!("{} bytes", s.len())),
                format!(
                    "ids are at most {} bytes (validation.max_id_bytes); send the entity's short id",
                    self.max_id_bytes
                ),
            ));
        }
        // Control characters are C0, DEL and C1 (U+0080..U+009F, led by 0xC2 in UTF-8).
        let suspect = s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2);
        if let Some(c) = suspect
            .then(|| s.chars().find(|c| c.is_control()))
            .flatten()
        {
            return Err(Rejection::field(
                "control_character",
                field,
                Some(format!("{s:?}")),
                format!("ids may not hold control characters (found {c:?}); send printable ids"),
            ));
        }
        if self.lowercase_ids {
            if s.is_ascii() {
                if s.bytes().any(|b| b.is_ascii_uppercase()) {
                    s.make_ascii_lowercase();
                }
            } else {
                *s = T::from(s.to_lowercase().as_str());
            }
        }
        Ok(())
    }

    fn non_empty(&self, field: &str, s: &mut String) -> Result<(), Rejection> {
        trim_in_place(s);
        if s.is_empty() {
            return Err(Rejection::field(
                "empty_value",
                field,
                Some("\"\"".into()),
                "must not be empty",
            ));
        }
        self.text(field, s)
    }

    /// Free text: trimmed, at most `max_text_bytes`.
    fn text<T: Text>(&self, field: &str, s: &mut T) -> Result<(), Rejection> {
        trim_in_place(s);
        if s.len() > self.max_text_bytes {
            return Err(Rejection::field(
                "text_too_long",
                field,
                Some(format!("{} bytes", s.len())),
                format!(
                    "at most {} bytes (validation.max_text_bytes)",
                    self.max_text_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A list of free text: entries trimmed, empty ones dropped, bounded.
    fn list(&self, field: &str, list: &mut Vec<String>) -> Result<(), Rejection> {
        if list.len() > self.max_list_entries {
            return Err(Rejection::field(
                "too_many_entries",
                field,
                Some(format!("{} entries", list.len())),
                format!(
                    "at most {} entries (validation.max_list_entries)",
                    self.max_list_entries
                ),
            ));
        }
        for e in list.iter_mut() {
            self.text(field, e)?;
        }
        list.retain(|s| !s.is_empty());
        Ok(())
    }

    fn one_of<T: Text>(field: &str, s: &mut T, set: &[String]) -> Result<(), Rejection> {
        trim_in_place(s);
        if set.iter().any(|x| **x == **s) {
            return Ok(());
        }
        Err(Rejection::field(
            "unknown_value",
            field,
            Some(format!("{s:?}")),
            format!(
                "must be one of {} (configure validation.{field}s to accept more)",
                set.join(", ")
            ),
        ))
    }

    fn timestamp(&self, field: &str, ms: i64, now_ms: i64) -> Result<(), Rejection> {
        if ms < self.min_ts_ms {
            return Err(Rejection::field(
                "bad_timestamp",
                field,
                Some(crate::domain::timefmt::format_timestamp_ms(ms)),
                "earlier than validation.min_timestamp; send the event's real time",
            ));
        }
        if ms > now_ms.saturating_add(self.max_skew_ms) {
            return Err(Rejection::field(
                "bad_timestamp",
                field,
                Some(crate::domain::timefmt::format_timestamp_ms(ms)),
                "in the future beyond validation.max_future_skew_seconds; check the sender's clock",
            ));
        }
        Ok(())
    }

    fn range_f64(field: &str, v: f64, lo: f64, hi: f64) -> Result<(), Rejection> {
        if v.is_finite() && v >= lo && v <= hi {
            return Ok(());
        }
        Err(Rejection::field(
            "out_of_range",
            field,
            Some(v.to_string()),
            format!("must be between {lo} and {hi}"),
        ))
    }

    fn range_i64(field: &str, v: i64, lo: i64, hi: i64) -> Result<(), Rejection> {
        if (lo..=hi).contains(&v) {
            return Ok(());
        }
        Err(Rejection::field(
            "out_of_range",
            field,
            Some(v.to_string()),
            format!("must be between {lo} and {hi}"),
        ))
    }

    fn video(&self, v: &mut VideoEvent, now_ms: i64) -> Result<(), Rejection> {
        self.id("user_id", &mut v.user_id)?;
        self.id("video_id", &mut v.video_id)?;
        Self::range_f64(
            "watch_time_seconds",
            v.watch_time_seconds,
            0.0,
            self.max_watch,
        )?;
        Self::one_of("resolution", &mut v.resolution, &self.resolutions)?;
        Self::range_i64("bitrate_kbps", v.bitrate_kbps, 0, self.max_bitrate)?;
        Self::range_i64(
            "buffering_events",
            v.buffering_events,
            0,
            self.max_buffering,
        )?;
        Self::one_of("genre", &mut v.genre, &self.genres)?;
        Self::one_of("region", &mut v.region, &self.regions)?;
        self.timestamp("timestamp", v.timestamp_ms, now_ms)?;
        if let Some(s) = v.startup_time_ms {
            Self::range_f64("startup_time_ms", s, 0.0, 3_600_000.0)?;
        }
        if let Some(r) = v.rebuffer_ms {
            Self::range_f64("rebuffer_ms", r, 0.0, self.max_watch * 1000.0)?;
        }
        if let Some(e) = &mut v.error {
            self.text("error", e)?;
            if e.is_empty() {
                v.error = None;
            }
        }
        Ok(())
    }

    fn user(&self, u: &mut UserProfile, now_ms: i64) -> Result<(), Rejection> {
        self.id("id", &mut u.id)?;
        self.timestamp("timestamp", u.timestamp_ms, now_ms)?;
        self.non_empty("name", &mut u.name)?;
        self.list("genres", &mut u.genres)?;
        self.list("directors", &mut u.directors)?;
        self.list("actors", &mut u.actors)?;
        self.list("favorite_decades", &mut u.favorite_decades)?;
        self.text("classification", &mut u.classification)?;
        self.text("subscription_date", &mut u.subscription_date)?;
        Ok(())
    }

    fn title(&self, t: &mut Title, now_ms: i64) -> Result<(), Rejection> {
        self.id("id", &mut t.id)?;
        self.timestamp("timestamp", t.timestamp_ms, now_ms)?;
        self.non_empty("title", &mut t.title)?;
        self.list("genres", &mut t.genres)?;
        self.list("directors", &mut t.directors)?;
        self.list("actors", &mut t.actors)?;
        self.text("classification", &mut t.classification)?;
        self.text("release_decade", &mut t.release_decade)?;
        if let Some(s) = t.seasons {
            Self::range_i64("seasons", s, 1, 1000)?;
        }
        if let Some(e) = t.episodes {
            Self::range_i64("episodes", e, 1, 100_000)?;
        }
        Ok(())
    }

    fn track(&self, t: &mut Track) -> Result<(), Rejection> {
        self.id("track_id", &mut t.track_id)?;
        self.non_empty("artist", &mut t.artist)?;
        self.text("album", &mut t.album)?;
        self.text("title", &mut t.title)?;
        self.non_empty("genre", &mut t.genre)?;
        Self::range_i64("duration_ms", t.duration_ms, 1, 24 * 3_600_000)?;
        Ok(())
    }

    fn music(&self, m: &mut MusicEvent, now_ms: i64) -> Result<(), Rejection> {
        self.id("user_id", &mut m.user_id)?;
        self.id("track_id", &mut m.track_id)?;
        self.timestamp("event_ts", m.event_ts_ms, now_ms)?;
        self.text("session_id", &mut m.session_id)?;
        self.text("device", &mut m.device)?;
        Ok(())
    }
}
