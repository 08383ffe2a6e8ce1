//! Property tests: every event type, written in each wire form that carries it
//! (canonical JSON; the legacy line for video; CSV for tracks and listening
//! events), parses back to the same event, for arbitrary field values. Events
//! the validator accepts also read back unchanged after validation.

use playpulse::domain::event::{
    Event, Kind, MusicAction, MusicEvent, Title, Track, UserProfile, VideoEvent,
};
use playpulse::ingest::parse::{parse_payload, Format};
use playpulse::ingest::validate::Validator;
use playpulse::ingest::wire;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Any time from 1970 to the end of year 9999, in ms.
fn ts_ms() -> impl Strategy<Value = i64> {
    0i64..=253_402_300_799_999
}

/// Any string, or (half the time) one shaped like the seeds' values.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-zA-Z0-9_ .,:\"\\\\-]{1,24}"]
}

/// A string the CSV form can carry: a field that is empty or blank reads as absent.
fn csv_text() -> impl Strategy<Value = String> {
    text().prop_filter("blank CSV fields read as absent", |s| !s.trim().is_empty())
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
        0.0f64..86_400.0,
        (0u32..86_400).prop_map(f64::from),
    ]
}

fn video() -> impl Strategy<Value = VideoEvent> {
    (
        (text(), text(), finite(), text(), any::<i64>(), any::<i64>()),
        (
            any::<bool>(),
            any::<bool>(),
            text(),
            text(),
            any::<bool>(),
            ts_ms(),
        ),
        (
            proptest::option::of(finite()),
            proptest::option::of(finite()),
            proptest::option::of(text()),
        ),
    )
        .prop_map(
            |(
                (user_id, video_id, watch_time_seconds, resolution, bitrate_kbps, buffering_events),
                (paused, skipped, genre, region, recommended, timestamp_ms),
                (startup_time_ms, rebuffer_ms, error),
            )| VideoEvent {
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
                startup_time_ms,
                rebuffer_ms,
                error,
            },
        )
}

/// A video event the validator accepts (its sets, its ranges).
fn valid_video() -> impl Strategy<Value = VideoEvent> {
    let cfg = playpulse::config::ValidationConfig::default();
    let pick = |xs: Vec<String>| proptest::sample::select(xs);
    (
        video(),
        pick(cfg.resolutions),
        pick(cfg.genres),
        pick(cfg.regions),
        (0.0f64..86_400.0, 0i64..=200_000, 0i64..=10),
        946_684_800_000i64..1_893_456_000_000,
        proptest::option::of(0.0f64..3_600_000.0),
        (csv_text(), csv_text()),
    )
        .prop_map(
            |(mut v, res, genre, region, (w, b, buf), ts, startup, (user, video))| {
                v.user_id = user.into();
                v.video_id = video.into();
                v.resolution = res.into();
                v.genre = genre.into();
                v.region = region.into();
                v.watch_time_seconds = w;
                v.bitrate_kbps = b;
                v.buffering_events = buf;
                v.timestamp_ms = ts;
                v.startup_time_ms = startup;
                v.rebuffer_ms = None;
                v
            },
        )
}

fn list() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(text(), 0..5)
}

fn user() -> impl Strategy<Value = UserProfile> {
    (
        (text(), ts_ms(), text(), text()),
        (list(), list(), list(), text(), list()),
    )
        .prop_map(
            |(
                (id, timestamp_ms, name, subscription_date),
                (genres, directors, actors, classification, favorite_decades),
            )| {
                UserProfile {
                    id,
                    timestamp_ms,
                    name,
                    subscription_date,
                    genres,
                    directors,
                    actors,
                    classification,
                    favorite_decades,
                }
            },
        )
}

fn title(series: bool) -> impl Strategy<Value = Title> {
    let count = move || {
        if series {
            any::<i64>().prop_map(Some).boxed()
        } else {
            Just(None).boxed()
        }
    };
    (
        (text(), ts_ms(), text(), list(), list(), list()),
        (text(), text(), count(), count()),
    )
        .prop_map(
            |(
                (id, timestamp_ms, title, genres, directors, actors),
                (classification, release_decade, seasons, episodes),
            )| {
                Title {
                    id,
                    timestamp_ms,
                    title,
                    genres,
                    directors,
                    actors,
                    classification,
                    release_decade,
                    seasons,
                    episodes,
                }
            },
        )
}

fn track(s: impl Fn() -> BoxedStrategy<String>) -> impl Strategy<Value = Track> {
    (s(), s(), s(), any::<i64>(), s(), s()).prop_map(
        |(track_id, artist, album, duration_ms, genre, title)| Track {
            track_id,
            artist,
            album,
            duration_ms,
            genre,
            title,
        },
    )
}

fn music(
    s: impl Fn() -> BoxedStrategy<String>,
    ts: BoxedStrategy<i64>,
) -> impl Strategy<Value = MusicEvent> {
    (
        s(),
        s(),
        proptest::sample::select(MusicAction::ALL.to_vec()),
        ts,
        s(),
        s(),
    )
        .prop_map(
            |(user_id, track_id, event_type, event_ts_ms, session_id, device)| MusicEvent {
                user_id: user_id.into(),
                track_id: track_id.into(),
                event_type,
                event_ts_ms,
                session_id: session_id.into(),
                device: device.into(),
            },
        )
}

fn reads_back(kind: Kind, format: Format, bytes: &[u8], ev: &Event) -> Result<(), TestCaseError> {
    let back = parse_payload(kind, &format, bytes).map_err(|r| {
        TestCaseError::fail(format!(
            "{format:?} form does not parse: {r}\nwire: {:?}",
            String::from_utf8_lossy(bytes)
        ))
    })?;
    prop_assert_eq!(
        &back,
        ev,
        "{:?} wire: {:?}",
        format,
        String::from_utf8_lossy(bytes)
    );
    // What the validator accepts reads back unchanged after validation too.
    let v = Validator::new(&playpulse::config::ValidationConfig::default());
    if let Ok(valid) = v.validate_at(back, 1_893_456_000_000) {
        playpulse::ingest::fuzz::round_trips(kind, &v, &valid);
    }
    Ok(())
}

fn cols(h: &str) -> Format {
    Format::Csv(h.split(',').map(str::to_string).collect())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        // Failures found once are replayed first on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/roundtrip.proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn video_json_and_legacy(v in video()) {
        let ev = Event::Video(v.clone());
        reads_back(Kind::Video, Format::Json, &wire::to_json(&ev), &ev)?;
        reads_back(Kind::Video, Format::Sniff, &wire::to_json(&ev), &ev)?;
        reads_back(Kind::Video, Format::Legacy, wire::video_to_legacy(&v).as_bytes(), &ev)?;
    }

    #[test]
    fn valid_video_survives_validation(v in valid_video()) {
        let validator = Validator::new(&playpulse::config::ValidationConfig::default());
        let valid = validator.validate_at(Event::Video(v), 1_893_456_000_000);
        prop_assert!(valid.is_ok(), "{:?}", valid);
        if let Ok(valid) = valid {
            playpulse::ingest::fuzz::round_trips(Kind::Video, &validator, &valid);
        }
    }

    #[test]
    fn user_json(u in user()) {
        let ev = Event::User(u);
        reads_back(Kind::Users, Format::Json, &wire::to_json(&ev), &ev)?;
    }

    #[test]
    fn movie_json(t in title(false)) {
        let ev = Event::Movie(t);
        reads_back(Kind::Movies, Format::Json, &wire::to_json(&ev), &ev)?;
    }

    #[test]
    fn series_json(t in title(true)) {
        let ev = Event::Series(t);
        reads_back(Kind::Series, Format::Json, &wire::to_json(&ev), &ev)?;
    }

    #[test]
    fn track_json(t in track(|| text().boxed())) {
        let ev = Event::Track(t);
        reads_back(Kind::Music, Format::Json, &wire::to_json(&ev), &ev)?;
    }

    #[test]
    fn track_csv(t in track(|| csv_text().boxed())) {
        let row = wire::track_to_csv(&t);
        let ev = Event::Track(t);
        reads_back(Kind::Music, cols(wire::TRACKS_CSV_HEADER), row.as_bytes(), &ev)?;
    }

    #[test]
    fn music_json(m in music(|| text().boxed(), ts_ms().boxed())) {
        let ev = Event::Music(m);
        reads_back(Kind::Music, Format::Json, &wire::to_json(&ev), &ev)?;
    }

    #[test]
    fn music_csv(m in music(|| csv_text().boxed(), (0i64..=253_402_300_799).prop_map(|s| s * 1000).boxed())) {
        let row = wire::music_to_csv(&m);
        let ev = Event::Music(m);
        reads_back(Kind::Music, cols(wire::MUSIC_EVENTS_CSV_HEADER), row.as_bytes(), &ev)?;
    }
}
