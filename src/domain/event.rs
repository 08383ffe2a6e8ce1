//! Domain types: the typed events the parser produces and the store keeps.
//!
//! Field names follow the reference notebooks. Catalog records accept both the
//! English canonical names and the Spanish names the catalog producers used
//! (`titulo`, `generos`, ...); they are always stored under the English names.

use serde::{Deserialize, Serialize};

/// An id or a vocabulary value of an event: held inline up to 24 bytes (every
/// id and value the producers send), so parsing an event allocates nothing
/// for them and the store's thread frees nothing another thread allocated.
pub type Name = compact_str::CompactString;

/// The two catalogs recommendations come from: a list, similar items or a
/// popularity ranking holds items of one of them only.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// Movies, series and other videos (viewing events).
    #[default]
    Video,
    /// Tracks (listening events).
    Music,
}

impl Domain {
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Video => "video",
            Domain::Music => "music",
        }
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Domain {
    type Err = String;

    fn from_str(s: &str) -> Result<Domain, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "video" => Ok(Domain::Video),
            "music" => Ok(Domain::Music),
            other => Err(format!("domain {other:?}: must be video or music")),
        }
    }
}

/// What a topic (or a record on a mixed topic) carries.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Video viewing events.
    Video,
    /// User profiles (catalog).
    Users,
    /// Movies (catalog).
    Movies,
    /// Series (catalog).
    Series,
    /// Music: tracks and listening events on one topic, told apart per record.
    Music,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Video,
        Kind::Users,
        Kind::Movies,
        Kind::Series,
        Kind::Music,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Video => "video",
            Kind::Users => "users",
            Kind::Movies => "movies",
            Kind::Series => "series",
            Kind::Music => "music",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One viewing event (the seed schema plus optional QoE fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoEvent {
    pub user_id: Name,
    pub video_id: Name,
    pub watch_time_seconds: f64,
    pub resolution: Name,
    pub bitrate_kbps: i64,
    pub buffering_events: i64,
    pub paused: bool,
    pub skipped: bool,
    pub genre: Name,
    pub region: Name,
    pub recommended: bool,
    /// Milliseconds since the Unix epoch, UTC.
    pub timestamp_ms: i64,
    pub startup_time_ms: Option<f64>,
    pub rebuffer_ms: Option<f64>,
    pub error: Option<String>,
}

impl VideoEvent {
    /// The notebooks' per-event implicit feedback:
    /// `(watch_time_seconds/3600)*0.6 + (1 - buffering_events/10)*0.3 + (1 - skipped)*0.1`.
    pub fn implicit_feedback(&self) -> f64 {
        let skipped = if self.skipped { 1.0 } else { 0.0 };
        (self.watch_time_seconds / 3600.0) * 0.6
            + (1.0 - self.buffering_events as f64 / 10.0) * 0.3
            + (1.0 - skipped) * 0.1
    }
}

/// A user profile from the catalog producers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserProfile {
    pub id: String,
    pub timestamp_ms: i64,
    pub name: String,
    pub subscription_date: String,
    pub genres: Vec<String>,
    pub directors: Vec<String>,
    pub actors: Vec<String>,
    pub classification: String,
    pub favorite_decades: Vec<String>,
}

/// A movie or a series from the catalog producers (series carry seasons and episodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Title {
    pub id: String,
    pub timestamp_ms: i64,
    pub title: String,
    pub genres: Vec<String>,
    pub directors: Vec<String>,
    pub actors: Vec<String>,
    pub classification: String,
    pub release_decade: String,
    pub seasons: Option<i64>,
    pub episodes: Option<i64>,
}

/// A music track (the music seed's tracks.csv).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub track_id: String,
    pub artist: String,
    pub album: String,
    pub duration_ms: i64,
    pub genre: String,
    /// The track's title (empty when the record has none).
    #[serde(default)]
    pub title: String,
}

/// What a listener did with a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MusicAction {
    Play,
    Skip,
    Like,
    Pause,
    Seek,
}

impl MusicAction {
    pub const ALL: [MusicAction; 5] = [
        MusicAction::Play,
        MusicAction::Skip,
        MusicAction::Like,
        MusicAction::Pause,
        MusicAction::Seek,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MusicAction::Play => "play",
            MusicAction::Skip => "skip",
            MusicAction::Like => "like",
            MusicAction::Pause => "pause",
            MusicAction::Seek => "seek",
        }
    }

    pub fn parse(s: &str) -> Option<MusicAction> {
        MusicAction::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A listening event (the music seed's user_events.csv).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MusicEvent {
    pub user_id: Name,
    pub track_id: Name,
    pub event_type: MusicAction,
    pub event_ts_ms: i64,
    pub session_id: Name,
    pub device: Name,
}

/// Any typed event. Stored in the compact binary form of [`Event::encode`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Video(VideoEvent),
    User(UserProfile),
    Movie(Title),
    Series(Title),
    Track(Track),
    Music(MusicEvent),
}

/// A stored event that does not read back (damaged bytes, or a newer layout).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unreadable stored event: {0}")]
pub struct DecodeError(pub postcard::Error);

impl Event {
    /// The compact binary form kept in the store's event log.
    pub fn encode(&self) -> Vec<u8> {
        // Plain data with serde derive: encoding into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Appends [`Event::encode`]'s bytes to `out` (a batch's events in one
    /// buffer: no allocation, nor its growth, per event).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        if postcard::serialize_with_flavor(self, Append(out)).is_err() {
            // Cannot happen (plain data into a Vec): leave nothing half written.
            out.truncate(start);
        }
    }

    /// Reads [`Event::encode`]'s form, or the one stores kept before tracks
    /// had a title (those read back with an empty title).
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        match postcard::from_bytes(bytes) {
            Ok(e) => Ok(e),
            Err(e) => match postcard::from_bytes::<untitled::Event>(bytes) {
                Ok(untitled::Event::Track(t)) => Ok(Event::Track(t.into())),
                _ => Err(DecodeError(e)),
            },
        }
    }

    /// Short name of the record type, as counted in statistics.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Video(_) => "video",
            Event::User(_) => "user",
            Event::Movie(_) => "movie",
            Event::Series(_) => "series",
            Event::Track(_) => "track",
            Event::Music(_) => "music_event",
        }
    }
}

/// The encoding stores kept before tracks had a title: the same variants in
/// the same order, tracks without the last field.
mod untitled {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Track {
        track_id: String,
        artist: String,
        album: String,
        duration_ms: i64,
        genre: String,
    }

    impl From<Track> for super::Track {
        fn from(t: Track) -> super::Track {
            super::Track {
                track_id: t.track_id,
                artist: t.artist,
                album: t.album,
                duration_ms: t.duration_ms,
                genre: t.genre,
                title: String::new(),
            }
        }
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    pub enum Event {
        Video(super::VideoEvent),
        User(super::UserProfile),
        Movie(super::Title),
        Series(super::Title),
        Track(Track),
        Music(super::MusicEvent),
    }
}

/// A postcard flavor that appends to a `Vec` it borrows.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    #[test]
    fn a_track_stored_before_titles_reads_back_with_an_empty_title() {
        // The layout stores kept before: the same variants, tracks of five fields.
        #[derive(Serialize)]
        struct OldTrack<'a>(&'a str, &'a str, &'a str, i64, &'a str);
        #[derive(Serialize)]
        #[allow(dead_code)]
        enum Old<'a> {
            Video(()),
            User(()),
            Movie(()),
            Series(()),
            Track(OldTrack<'a>),
        }
        let old =
            postcard::to_stdvec(&Old::Track(OldTrack("trk_9", "A", "B", 1000, "rock"))).unwrap();
        let Event::Track(t) = Event::decode(&old).unwrap() else {
            panic!("not a track");
        };
        assert_eq!(
            (t.track_id.as_str(), t.genre.as_str(), t.title.as_str()),
            ("trk_9", "rock", "")
        );
        // Today's layout keeps the title.
        let now = Event::Track(Track {
            title: "Blue Hour".into(),
            ..t
        });
        assert_eq!(Event::decode(&now.encode()).unwrap(), now);
        assert!(
            Event::decode(&[4, 200]).is_err(),
            "damaged bytes stay an error"
        );
    }
}
