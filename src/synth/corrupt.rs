//! Malformed records derived from valid ones, each with the rejection the
//! pipeline must give it (the bad-record injector of benchmarks and tests).

use rand::Rng;

use rand_chacha::ChaCha8Rng;

use super::generate::seeded;
use crate::domain::event::{Event, VideoEvent};

/// Kinds of malformed records the bad-record injector writes (as the peers' generator does).
pub const BAD_KINDS: [&str; 10] = [
    "truncated_json",
    "missing_field",
    "wrong_type",
    "negative_watch_time",
    "unknown_resolution",
    "empty_id",
    "out_of_range_buffering",
    "unknown_genre",
    "unknown_region",
    "bad_timestamp",
];

/// A malformed JSON record derived from a valid video event, and the rejection reason
/// the pipeline must give it.
pub fn corrupt_video(ev: &VideoEvent, rng: &mut impl Rng) -> (Vec<u8>, &'static str) {
    let good = crate::ingest::wire::to_json(&Event::Video(ev.clone()));
    let kind = BAD_KINDS[rng.gen_range(0..BAD_KINDS.len())];
    let mut obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&good) {
        Ok(o) => o,
        Err(_) => serde_json::Map::new(),
    };
    use serde_json::json;
    let reason = match kind {
        "truncated_json" => {
            let cut = rng.gen_range(1..good.len() - 1);
            return (good[..cut].to_vec(), "invalid_json");
        }
        "missing_field" => {
            let f = [
                "user_id",
                "video_id",
                "watch_time_seconds",
                "resolution",
                "genre",
                "region",
                "timestamp",
            ][rng.gen_range(0..7)];
            obj.remove(f);
            "missing_field"
        }
        "wrong_type" => {
            match rng.gen_range(0..5) {
                0 => obj.insert(
                    "watch_time_seconds".into(),
                    json!(ev.watch_time_seconds.to_string()),
                ),
                1 => obj.insert(
                    "buffering_events".into(),
                    json!(ev.buffering_events as f64 + 0.5),
                ),
                2 => obj.insert("paused".into(), json!(if ev.paused { "yes" } else { "no" })),
                3 => obj.insert(
                    "bitrate_kbps".into(),
                    json!(format!("{}kbps", ev.bitrate_kbps)),
                ),
                _ => obj.insert("video_id".into(), json!([ev.video_id])),
            };
            "wrong_type"
        }
        "negative_watch_time" => {
            obj.insert(
                "watch_time_seconds".into(),
                json!(-(ev.watch_time_seconds + 1.0)),
            );
            "out_of_range"
        }
        "unknown_resolution" => {
            obj.insert(
                "resolution".into(),
                json!(["144p", "8K", "HD", "720P"][rng.gen_range(0..4)]),
            );
            "unknown_value"
        }
        "empty_id" => {
            obj.insert(
                ["user_id", "video_id"][rng.gen_range(0..2)].into(),
                json!(""),
            );
            "empty_id"
        }
        "out_of_range_buffering" => {
            obj.insert(
                "buffering_events".into(),
                json!([11, 15, 99, -1][rng.gen_range(0..4)]),
            );
            "out_of_range"
        }
        "unknown_genre" => {
            obj.insert(
                "genre".into(),
                json!(["Western", "action", "Musical"][rng.gen_range(0..3)]),
            );
            "unknown_value"
        }
        "unknown_region" => {
            obj.insert(
                "region".into(),
                json!(["XX", "us", "CN"][rng.gen_range(0..3)]),
            );
            "unknown_value"
        }
        _ => {
            obj.insert(
                "timestamp".into(),
                json!(
                    ["2024-13-01T00:00:00Z", "yesterday", "2024-01-01 00:00:00"]
                        [rng.gen_range(0..3)]
                ),
            );
            "bad_timestamp"
        }
    };
    (serde_json::to_vec(&obj).unwrap_or_default(), reason)
}

/// A seeded RNG for callers that inject bad records.
pub fn bad_rng(seed: u64) -> ChaCha8Rng {
    seeded(seed, 0xBAD)
}
