//! What the fuzz targets (`fuzz/`) run, and the corpus replay test runs on
//! stable: arbitrary bytes through the parser and the validator (the admin
//! protocol's target is `admin::fuzz`). Each function panics only when an
//! invariant breaks:
//!
//! - parsing and validation never panic, and every rejection names its reason
//!   and says how to fix the record;
//! - the hand-written fast path for canonical video JSON agrees with the
//!   general serde path on every record it accepts;
//! - every event the validator accepts, written back in each wire form that
//!   can carry it (canonical JSON, the legacy line, CSV), parses and validates
//!   to the same event.

use crate::domain::event::{Event, Kind};
use crate::domain::reject::Rejection;
use crate::ingest::config::ValidationConfig;
use crate::ingest::parse::{parse_payload, Format};
use crate::ingest::validate::Validator;
use crate::ingest::wire;

/// "Now" for the validator's future bound, fixed so a run is reproducible:
/// 2030-01-01T00:00:00Z.
const NOW_MS: i64 = 1_893_456_000_000;

fn kind_of(selector: u8) -> Kind {
    Kind::ALL[usize::from(selector) % Kind::ALL.len()]
}

fn check_rejection(r: &Rejection, input: &[u8]) {
    assert!(
        !r.reason.is_empty() && !r.message.is_empty(),
        "a rejection without reason or message: {r:?} for {:?}",
        String::from_utf8_lossy(input)
    );
}

fn validator() -> Validator {
    Validator::new(&ValidationConfig::default())
}

/// One record in `format` on a topic of `kind`: parse, validate, and check the
/// accepted event round-trips through every wire form. Answers whether the
/// record was accepted.
fn record(kind: Kind, format: &Format, payload: &[u8]) -> bool {
    let ev = match parse_payload(kind, format, payload) {
        Ok(ev) => ev,
        Err(r) => {
            check_rejection(&r, payload);
            return false;
        }
    };
    let v = validator();
    match v.validate_at(ev, NOW_MS) {
        Ok(valid) => {
            round_trips(kind, &v, &valid);
            true
        }
        Err(r) => {
            check_rejection(&r, payload);
            false
        }
    }
}

/// Every wire form of `valid` parses and validates back to `valid`.
pub fn round_trips(kind: Kind, v: &Validator, valid: &Event) {
    let mut forms: Vec<(&str, Format, Vec<u8>)> =
        vec![("json", Format::Json, wire::to_json(valid))];
    match valid {
        Event::Video(e) => {
            forms.push((
                "legacy",
                Format::Legacy,
                wire::video_to_legacy(e).into_bytes(),
            ));
        }
        Event::Track(t) => forms.push((
            "csv",
            Format::Csv(columns(wire::TRACKS_CSV_HEADER)),
            wire::track_to_csv(t).into_bytes(),
        )),
        // The music CSV keeps whole seconds.
        Event::Music(m) if m.event_ts_ms % 1000 == 0 => forms.push((
            "csv",
            Format::Csv(columns(wire::MUSIC_EVENTS_CSV_HEADER)),
            wire::music_to_csv(m).into_bytes(),
        )),
        _ => {}
    }
    for (name, format, bytes) in forms {
        let back = parse_payload(kind, &format, &bytes)
            .and_then(|ev| v.validate_at(ev, NOW_MS))
            .unwrap_or_else(|r| {
                panic!(
                    "an accepted event does not read back from its {name} form: {r:?}\nevent: {valid:?}\nwire: {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            });
        assert_eq!(
            &back,
            valid,
            "{name} round trip changed the event; wire: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

fn columns(header: &str) -> Vec<String> {
    header.split(',').map(str::to_string).collect()
}

/// Target `json`: the first byte picks the topic kind, the rest is a JSON record
/// (also read by format sniffing, as records without a format header are).
pub fn json(data: &[u8]) -> bool {
    let Some((&sel, payload)) = data.split_first() else {
        return false;
    };
    let kind = kind_of(sel);
    if kind == Kind::Video {
        if let Ok(text) = std::str::from_utf8(payload) {
            crate::ingest::parse::check_video_fast_path(text);
        }
    }
    let accepted = record(kind, &Format::Json, payload);
    let sniffed = record(kind, &Format::Sniff, payload);
    // Without a format header a record opening with `{` or `[` is read as JSON
    // (one opening with `"` as a legacy line).
    let looks_json = matches!(
        payload.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    );
    if looks_json {
        assert_eq!(
            sniffed, accepted,
            "format sniffing decides otherwise than the json header"
        );
    }
    accepted
}

/// Target `legacy`: the first byte picks the topic kind, the rest is a legacy
/// `"key": value` line.
pub fn legacy(data: &[u8]) -> bool {
    let Some((&sel, payload)) = data.split_first() else {
        return false;
    };
    record(kind_of(sel), &Format::Legacy, payload)
}

/// Target `csv`: the first byte picks the topic kind; up to the first newline
/// is the `pp-columns` header, the rest one CSV row.
pub fn csv(data: &[u8]) -> bool {
    let Some((&sel, rest)) = data.split_first() else {
        return false;
    };
    let (header, row) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let header = String::from_utf8_lossy(header);
    match Format::from_headers(Some("csv"), Some(&header)) {
        Ok(format) => record(kind_of(sel), &format, row),
        Err(r) => {
            check_rejection(&r, rest);
            false
        }
    }
}
