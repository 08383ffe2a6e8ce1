//! Typed events → wire records: canonical JSON (what producers send), the legacy
//! line form and CSV rows (what replayed files hold).

use serde::Serialize;

use crate::domain::event::{Event, MusicEvent, Title, Track, UserProfile, VideoEvent};
use crate::domain::timefmt::format_timestamp_ms;

#[derive(Serialize)]
struct VideoOut<'a> {
    user_id: &'a str,
    video_id: &'a str,
    watch_time_seconds: f64,
    resolution: &'a str,
    bitrate_kbps: i64,
    buffering_events: i64,
    paused: bool,
    skipped: bool,
    genre: &'a str,
    region: &'a str,
    recommended: bool,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    startup_time_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rebuffer_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct UserOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    name: &'a str,
    subscription_date: &'a str,
    genres: &'a [String],
    directors: &'a [String],
    actors: &'a [String],
    classification: &'a str,
    favorite_decades: &'a [String],
}

#[derive(Serialize)]
struct TitleOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    title: &'a str,
    genres: &'a [String],
    directors: &'a [String],
    actors: &'a [String],
    classification: &'a str,
    release_decade: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seasons: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    episodes: Option<i64>,
}

#[derive(Serialize)]
struct MusicOut<'a> {
    user_id: &'a str,
    track_id: &'a str,
    event_type: &'static str,
    event_ts: String,
    session_id: &'a str,
    device: &'a str,
}

fn video_out(v: &VideoEvent) -> VideoOut<'_> {
    VideoOut {
        user_id: &v.user_id,
        video_id: &v.video_id,
        watch_time_seconds: v.watch_time_seconds,
        resolution: &v.resolution,
        bitrate_kbps: v.bitrate_kbps,
        buffering_events: v.buffering_events,
        paused: v.paused,
        skipped: v.skipped,
        genre: &v.genre,
        region: &v.region,
        recommended: v.recommended,
        timestamp: format_timestamp_ms(v.timestamp_ms),
        startup_time_ms: v.startup_time_ms,
        rebuffer_ms: v.rebuffer_ms,
        error: v.error.as_deref(),
    }
}

fn title_out<'a>(t: &'a Title, kind: &'static str) -> TitleOut<'a> {
    TitleOut {
        id: &t.id,
        kind,
        timestamp: format_timestamp_ms(t.timestamp_ms),
        title: &t.title,
        genres: &t.genres,
        directors: &t.directors,
        actors: &t.actors,
        classification: &t.classification,
        release_decade: &t.release_decade,
        seasons: t.seasons,
        episodes: t.episodes,
    }
}

fn user_out(u: &UserProfile) -> UserOut<'_> {
    UserOut {
        id: &u.id,
        kind: "user",
        timestamp: format_timestamp_ms(u.timestamp_ms),
        name: &u.name,
        subscription_date: &u.subscription_date,
        genres: &u.genres,
        directors: &u.directors,
        actors: &u.actors,
        classification: &u.classification,
        favorite_decades: &u.favorite_decades,
    }
}

fn music_out(m: &MusicEvent) -> MusicOut<'_> {
    MusicOut {
        user_id: &m.user_id,
        track_id: &m.track_id,
        event_type: m.event_type.as_str(),
        event_ts: format_timestamp_ms(m.event_ts_ms),
        session_id: &m.session_id,
        device: &m.device,
    }
}

/// The canonical JSON record of an event, as producers send it.
pub fn to_json(ev: &Event) -> Vec<u8> {
    // Serializing these plain structs cannot fail (string keys, finite or null floats).
    let r = match ev {
        Event::Video(v) => serde_json::to_vec(&video_out(v)),
        Event::User(u) => serde_json::to_vec(&user_out(u)),
        Event::Movie(t) => serde_json::to_vec(&title_out(t, "movie")),
        Event::Series(t) => serde_json::to_vec(&title_out(t, "series")),
        Event::Track(t) => serde_json::to_vec::<Track>(t),
        Event::Music(m) => serde_json::to_vec(&music_out(m)),
    };
    r.unwrap_or_default()
}

/// A string as a quoted legacy token: `\` and `"` escaped with a backslash,
/// line breaks and tabs as `\n`, `\r`, `\t` (a record stays one line).
fn legacy_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The legacy comma-separated `"key": value` line of a video event (no braces).
pub fn video_to_legacy(v: &VideoEvent) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(320);
    let key = |s: &mut String, k: &str| {
        if !s.is_empty() {
            s.push_str(", ");
        }
        s.push('"');
        s.push_str(k);
        s.push_str("\": ");
    };
    // Writing into a String cannot fail.
    for (k, val) in [("user_id", &v.user_id), ("video_id", &v.video_id)] {
        key(&mut s, k);
        legacy_str(&mut s, val);
    }
    key(&mut s, "watch_time_seconds");
    let _ = write!(s, "{}", v.watch_time_seconds);
    key(&mut s, "resolution");
    legacy_str(&mut s, &v.resolution);
    key(&mut s, "bitrate_kbps");
    let _ = write!(s, "{}", v.bitrate_kbps);
    key(&mut s, "buffering_events");
    let _ = write!(s, "{}", v.buffering_events);
    key(&mut s, "paused");
    let _ = write!(s, "{}", v.paused);
    key(&mut s, "skipped");
    let _ = write!(s, "{}", v.skipped);
    key(&mut s, "genre");
    legacy_str(&mut s, &v.genre);
    key(&mut s, "region");
    legacy_str(&mut s, &v.region);
    key(&mut s, "recommended");
    let _ = write!(s, "{}", v.recommended);
    key(&mut s, "timestamp");
    legacy_str(&mut s, &format_timestamp_ms(v.timestamp_ms));
    if let Some(x) = v.startup_time_ms {
        key(&mut s, "startup_time_ms");
        let _ = write!(s, "{x}");
    }
    if let Some(x) = v.rebuffer_ms {
        key(&mut s, "rebuffer_ms");
        let _ = write!(s, "{x}");
    }
    if let Some(e) = &v.error {
        key(&mut s, "error");
        legacy_str(&mut s, e);
    }
    s
}

/// Header and rows of the music seed's CSV files.
pub const TRACKS_CSV_HEADER: &str = "track_id,artist,album,duration_ms,genre,title";
pub const MUSIC_EVENTS_CSV_HEADER: &str = "user_id,track_id,event_type,event_ts,session_id,device";

fn csv_line(fields: &[&str]) -> String {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = w.write_record(fields);
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('\n')
        .to_string()
}

pub fn track_to_csv(t: &Track) -> String {
    csv_line(&[
        &t.track_id,
        &t.artist,
        &t.album,
        &t.duration_ms.to_string(),
        &t.genre,
        &t.title,
    ])
}

pub fn music_to_csv(m: &MusicEvent) -> String {
    let ts = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(m.event_ts_ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    csv_line(&[
        &m.user_id,
        &m.track_id,
        m.event_type.as_str(),
        &ts,
        &m.session_id,
        &m.device,
    ])
}
