//! Object → typed event for every record type, field by field.

use crate::domain::event::{
    Event, Kind, MusicAction, MusicEvent, Title, Track, UserProfile, VideoEvent,
};
use crate::domain::reject::Rejection;

use super::fields::Fields;

pub(super) fn from_map(kind: Kind, f: &Fields) -> Result<Event, Rejection> {
    match kind {
        Kind::Video => video(f).map(Event::Video),
        Kind::Users | Kind::Movies | Kind::Series => catalog(kind, f),
        Kind::Music if f.has("event_type") => music_event(f).map(Event::Music),
        Kind::Music => track(f).map(Event::Track),
    }
}

fn video(f: &Fields) -> Result<VideoEvent, Rejection> {
    Ok(VideoEvent {
        user_id: f.req(&["user_id"], Fields::string)?.into(),
        video_id: f.req(&["video_id"], Fields::string)?.into(),
        watch_time_seconds: f.req(&["watch_time_seconds"], Fields::f64)?,
        resolution: f.req(&["resolution"], Fields::string)?.into(),
        bitrate_kbps: f.req(&["bitrate_kbps"], Fields::i64)?,
        buffering_events: f.req(&["buffering_events"], Fields::i64)?,
        paused: f.req(&["paused"], Fields::bool)?,
        skipped: f.req(&["skipped"], Fields::bool)?,
        genre: f.req(&["genre"], Fields::string)?.into(),
        region: f.req(&["region"], Fields::string)?.into(),
        recommended: f.req(&["recommended"], Fields::bool)?,
        timestamp_ms: f.req(&["timestamp"], Fields::timestamp)?,
        startup_time_ms: f.opt(&["startup_time_ms"], Fields::f64)?,
        rebuffer_ms: f.opt(&["rebuffer_ms"], Fields::f64)?,
        error: f.opt(&["error"], Fields::string)?,
    })
}

/// Catalog topics: the record's `type` (user, movie, series) decides when present,
/// else the topic's kind.
fn catalog(kind: Kind, f: &Fields) -> Result<Event, Rejection> {
    let declared = f.opt(&["type"], Fields::string)?;
    let record_type = match declared.as_deref().map(|t| t.trim().to_ascii_lowercase()) {
        Some(t) => t,
        None => match kind {
            Kind::Users => "user".to_string(),
            Kind::Movies => "movie".to_string(),
            _ => "series".to_string(),
        },
    };
    match record_type.as_str() {
        "user" => user(f).map(Event::User),
        "movie" => title(f, false).map(Event::Movie),
        "series" => title(f, true).map(Event::Series),
        other => Err(Rejection::field(
            "unknown_value",
            "type",
            Some(format!("{other:?}")),
            "a catalog record's type must be user, movie or series",
        )),
    }
}

fn user(f: &Fields) -> Result<UserProfile, Rejection> {
    Ok(UserProfile {
        id: f.req(&["id", "user_id"], Fields::string)?,
        timestamp_ms: f.req(&["timestamp"], Fields::timestamp)?,
        name: f.req(&["name", "nombre_usuario"], Fields::string)?,
        subscription_date: f.req(&["subscription_date", "fecha_suscripcion"], Fields::string)?,
        genres: f.req(&["genres", "generos"], Fields::string_list)?,
        directors: f
            .opt(&["directors", "directores"], Fields::string_list)?
            .unwrap_or_default(),
        actors: f
            .opt(&["actors", "actores"], Fields::string_list)?
            .unwrap_or_default(),
        classification: f
            .opt(&["classification", "clasificacion"], Fields::string)?
            .unwrap_or_default(),
        favorite_decades: f
            .opt(
                &["favorite_decades", "decadas_favoritas"],
                Fields::string_list,
            )?
            .unwrap_or_default(),
    })
}

fn title(f: &Fields, series: bool) -> Result<Title, Rejection> {
    let (seasons, episodes) = if series {
        (
            Some(f.req(&["seasons", "numero_temporadas"], Fields::i64)?),
            Some(f.req(&["episodes", "numero_episodios"], Fields::i64)?),
        )
    } else {
        (None, None)
    };
    Ok(Title {
        id: f.req(&["id"], Fields::string)?,
        timestamp_ms: f.req(&["timestamp"], Fields::timestamp)?,
        title: f.req(&["title", "titulo"], Fields::string)?,
        genres: f.req(&["genres", "generos"], Fields::string_list)?,
        directors: f
            .opt(&["directors", "directores"], Fields::string_list)?
            .unwrap_or_default(),
        actors: f
            .opt(&["actors", "actores"], Fields::string_list)?
            .unwrap_or_default(),
        classification: f
            .opt(&["classification", "clasificacion"], Fields::string)?
            .unwrap_or_default(),
        release_decade: f
            .opt(&["release_decade", "decada_lanzamiento"], Fields::string)?
            .unwrap_or_default(),
        seasons,
        episodes,
    })
}

fn track(f: &Fields) -> Result<Track, Rejection> {
    Ok(Track {
        track_id: f.req(&["track_id"], Fields::string)?,
        artist: f.req(&["artist"], Fields::string)?,
        album: f.opt(&["album"], Fields::string)?.unwrap_or_default(),
        duration_ms: f.req(&["duration_ms"], Fields::i64)?,
        genre: f.req(&["genre"], Fields::string)?,
        title: f
            .opt(&["title", "track_title", "name"], Fields::string)?
            .unwrap_or_default(),
    })
}

fn music_event(f: &Fields) -> Result<MusicEvent, Rejection> {
    let raw = f.req(&["event_type"], Fields::string)?;
    let event_type = MusicAction::parse(&raw.trim().to_ascii_lowercase()).ok_or_else(|| {
        Rejection::field(
            "unknown_value",
            "event_type",
            Some(format!("{raw:?}")),
            "event_type must be one of play, skip, like, pause, seek",
        )
    })?;
    Ok(MusicEvent {
        user_id: f.req(&["user_id"], Fields::string)?.into(),
        track_id: f.req(&["track_id"], Fields::string)?.into(),
        event_type,
        event_ts_ms: f.req(&["event_ts", "timestamp"], Fields::timestamp)?,
        session_id: f
            .opt(&["session_id"], Fields::string)?
            .unwrap_or_default()
            .into(),
        device: f
            .opt(&["device"], Fields::string)?
            .unwrap_or_default()
            .into(),
    })
}
