use super::*;
use crate::config::ValidationConfig;
use crate::domain::event::{MusicAction, Track};
use crate::ingest::validate::Validator;
use crate::ingest::wire;
use crate::synth::corrupt::corrupt_video;
use crate::synth::generate::{VideoGen, World};

fn video(payload: &[u8]) -> Result<Event, Rejection> {
    parse_payload(Kind::Video, &Format::Sniff, payload)
}

fn checked(kind: Kind, format: &Format, payload: &[u8]) -> Result<Event, Rejection> {
    let v = Validator::new(&ValidationConfig::default());
    parse_payload(kind, format, payload).and_then(|e| v.validate_at(e, 1_900_000_000_000))
}

#[test]
fn generated_video_events_round_trip_through_json_and_legacy() {
    let mut g = VideoGen::new(World::new(50, 20, 7), 7, 1_735_689_600_000, 50);
    for _ in 0..500 {
        let ev = g.next_event();
        let json = wire::to_json(&Event::Video(ev.clone()));
        assert_eq!(
            checked(Kind::Video, &Format::Sniff, &json),
            Ok(Event::Video(ev.clone()))
        );
        let legacy = wire::video_to_legacy(&ev);
        assert_eq!(
            checked(Kind::Video, &Format::Sniff, legacy.as_bytes()),
            Ok(Event::Video(ev))
        );
    }
}

#[test]
fn notebook_legacy_line_parses_with_its_date_form() {
    let line = r#"{"user_id": "user_2242", "video_id": "vid_013", "watch_time_seconds": 221, "resolution": "720p", "bitrate_kbps": 5883, "buffering_events": 5, "paused": false, "skipped": false, "genre": "Sci-Fi", "region": "IN", "recommended": false, "timestamp": "05/14/2025"}"#;
    let ev = match checked(Kind::Video, &Format::Legacy, line.as_bytes()) {
        Ok(Event::Video(v)) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(ev.user_id, "user_2242");
    assert_eq!(ev.watch_time_seconds, 221.0);
    assert_eq!(ev.timestamp_ms, 1_747_180_800_000);
    // The same line sent as JSON is held to RFC 3339.
    let err = video(line.as_bytes()).unwrap_err();
    assert_eq!(
        (err.reason.as_str(), err.field.as_deref()),
        ("bad_timestamp", Some("timestamp"))
    );
}

#[test]
fn every_injected_bad_kind_is_rejected_with_its_reason() {
    let mut g = VideoGen::new(World::new(50, 20, 3), 3, 1_735_689_600_000, 50);
    let mut rng = crate::synth::corrupt::bad_rng(3);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2000 {
        let (bytes, reason) = corrupt_video(&g.next_event(), &mut rng);
        let err = checked(Kind::Video, &Format::Sniff, &bytes).unwrap_err();
        assert_eq!(
            err.reason,
            reason,
            "{} -> {err}",
            String::from_utf8_lossy(&bytes)
        );
        seen.insert(reason);
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
}

#[test]
fn rejections_name_field_value_and_fix() {
    let ok = wire::to_json(&Event::Video(
        VideoGen::new(World::new(5, 5, 1), 1, 1_735_689_600_000, 0).next_event(),
    ));
    let mut obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&ok).unwrap();
    obj.insert("watch_time_seconds".into(), serde_json::json!("221s"));
    let err = video(&serde_json::to_vec(&obj).unwrap()).unwrap_err();
    assert_eq!(err.reason, "wrong_type");
    assert_eq!(err.field.as_deref(), Some("watch_time_seconds"));
    assert_eq!(err.value.as_deref(), Some("\"221s\""));
    assert!(err.to_string().contains("expected a number"), "{err}");

    obj.insert("watch_time_seconds".into(), serde_json::json!(10));
    obj.insert("genre".into(), serde_json::json!("Western"));
    let err = checked(
        Kind::Video,
        &Format::Json,
        &serde_json::to_vec(&obj).unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        (err.reason.as_str(), err.field.as_deref()),
        ("unknown_value", Some("genre"))
    );
    assert!(err.message.contains("validation.genres"), "{err}");

    obj.remove("region");
    let err = video(&serde_json::to_vec(&obj).unwrap()).unwrap_err();
    assert_eq!(
        (err.reason.as_str(), err.field.as_deref()),
        ("missing_field", Some("region"))
    );
}

#[test]
fn malformed_bytes_never_panic() {
    for p in [
        &b""[..],
        b"   ",
        b"{",
        b"[1,2]",
        b"\"a\"",
        b"\xff\xfe",
        b"hello",
        b"\"k\" 1",
        b"{\"a\":1",
        b"\"a\": \"b\", c",
    ] {
        for f in [
            Format::Sniff,
            Format::Json,
            Format::Legacy,
            Format::Csv(vec!["a".into()]),
        ] {
            for k in Kind::ALL {
                assert!(parse_payload(k, &f, p).is_err(), "{k} {f:?} {p:?}");
            }
        }
    }
    assert_eq!(video(b"[1]").unwrap_err().reason, "not_an_object");
    assert_eq!(video(b"\"user_id\" 3").unwrap_err().reason, "legacy_syntax");
    assert_eq!(video(b"hello").unwrap_err().reason, "unrecognised_format");
}

#[test]
fn csv_rows_of_the_music_seed_files() {
    let tracks = Format::Csv(
        wire::TRACKS_CSV_HEADER
            .split(',')
            .map(String::from)
            .collect(),
    );
    let t = checked(
        Kind::Music,
        &tracks,
        b"TRK_001 , Artist A,\"Album, One\",215000,rock, Blue Hour ",
    )
    .unwrap();
    assert_eq!(
        t,
        Event::Track(Track {
            track_id: "trk_001".into(),
            artist: "Artist A".into(),
            album: "Album, One".into(),
            duration_ms: 215000,
            genre: "rock".into(),
            title: "Blue Hour".into(),
        })
    );
    // The seeds' tracks.csv has no title column: the title is empty.
    let seed = Format::Csv(
        "track_id,artist,album,duration_ms,genre"
            .split(',')
            .map(String::from)
            .collect(),
    );
    let Event::Track(t) = checked(Kind::Music, &seed, b"trk_002,B,,1000,pop").unwrap() else {
        panic!("not a track");
    };
    assert_eq!((t.track_id.as_str(), t.title.as_str()), ("trk_002", ""));
    let events = Format::Csv(
        wire::MUSIC_EVENTS_CSV_HEADER
            .split(',')
            .map(String::from)
            .collect(),
    );
    match checked(
        Kind::Music,
        &events,
        b"User_7,trk_001,LIKE,2025-10-29 18:30:00,s1,mobile",
    )
    .unwrap()
    {
        Event::Music(m) => {
            assert_eq!(
                (m.user_id.as_str(), m.event_type),
                ("user_7", MusicAction::Like)
            );
            assert_eq!(m.event_ts_ms, 1_761_762_600_000);
        }
        other => panic!("{other:?}"),
    }
    let err = checked(Kind::Music, &events, b"user_7,trk_001,like").unwrap_err();
    assert_eq!(err.reason, "csv_columns");
    let err = checked(
        Kind::Music,
        &events,
        b"user_7,trk_001,dance,2025-10-29 18:30:00,s1,mobile",
    )
    .unwrap_err();
    assert_eq!(
        (err.reason.as_str(), err.field.as_deref()),
        ("unknown_value", Some("event_type"))
    );
    let err = checked(Kind::Music, &tracks, b"trk_2,Artist,Album,long,rock,T").unwrap_err();
    assert_eq!(
        (err.reason.as_str(), err.field.as_deref()),
        ("wrong_type", Some("duration_ms"))
    );
}

#[test]
fn catalog_records_accept_the_seed_field_names() {
    let movie = br#"{"id":"vid_0001","type":"movie","timestamp":"2025-01-01T00:00:00Z","titulo":"The Lost River","generos":["Drama"],"directores":["A B"],"actores":["C D"],"clasificacion":"PG","decada_lanzamiento":"1990s"}"#;
    match checked(Kind::Movies, &Format::Sniff, movie).unwrap() {
        Event::Movie(t) => {
            assert_eq!(t.title, "The Lost River");
            assert_eq!(t.genres, vec!["Drama"]);
            assert_eq!(t.release_decade, "1990s");
        }
        other => panic!("{other:?}"),
    }
    let series = br#"{"id":"ser_1","type":"series","timestamp":"2025-01-01T00:00:00Z","title":"X","genres":["Comedy"],"seasons":2}"#;
    let err = checked(Kind::Series, &Format::Sniff, series).unwrap_err();
    assert_eq!(
        (err.reason.as_str(), err.field.as_deref()),
        ("missing_field", Some("episodes"))
    );
    let odd = br#"{"id":"x","type":"podcast","timestamp":"2025-01-01T00:00:00Z"}"#;
    assert_eq!(
        checked(Kind::Users, &Format::Sniff, odd)
            .unwrap_err()
            .field
            .as_deref(),
        Some("type")
    );
}

/// The general decoder's answer for a video record (the reference for the canonical one).
fn general_video(bytes: &[u8]) -> Option<crate::domain::event::VideoEvent> {
    serde_json::from_slice::<VideoWire>(bytes)
        .ok()?
        .into_event()
        .ok()
}

#[test]
fn canonical_decoder_agrees_with_the_general_one_or_defers() {
    use rand::{Rng, SeedableRng};
    let mut g = VideoGen::new(World::new(200, 50, 13), 13, 1_735_689_600_000, 50);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    let (mut fast, mut mutated_fast) = (0, 0);
    for i in 0..20_000 {
        let mut ev = g.next_event();
        match i % 4 {
            0 => ev.startup_time_ms = None,
            1 => ev.rebuffer_ms = None,
            2 => ev.error = Some("net".into()),
            _ => {}
        }
        let json = wire::to_json(&Event::Video(ev.clone()));
        let text = std::str::from_utf8(&json).unwrap();
        let c = canonical::video(text);
        assert_eq!(c.as_ref(), Some(&ev), "{text}");
        fast += 1;
        // Mutations: the canonical decoder must agree with the general one or defer.
        let mut m = json.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..m.len());
            match rng.gen_range(0..3) {
                0 => {
                    let alphabet = b"0123456789.-+eE\"\\,:{}[] tfnul";
                    m[at] = alphabet[rng.gen_range(0..alphabet.len())];
                }
                1 => {
                    m.remove(at);
                }
                _ => m.insert(at, b"0.e-\" ,"[rng.gen_range(0..7)]),
            }
        }
        if let Ok(text) = std::str::from_utf8(&m) {
            if let Some(got) = canonical::video(text) {
                mutated_fast += 1;
                assert_eq!(Some(got), general_video(&m), "{text}");
            }
        }
    }
    assert_eq!(fast, 20_000);
    assert!(mutated_fast > 100, "{mutated_fast}");
}
