//! The listening graph end to end: files shaped like the music seed's
//! tracks.csv and user_events.csv are imported (`playpulse import`) through a
//! broker into the daemon; every graph query's answer, asked over the control
//! socket (and once over HTTP), equals one computed here from the CSV files
//! alone.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::*;
use playpulse::domain::event::Event;
use playpulse::ingest::wire;
use playpulse::synth::generate::MusicGen;
use serde_json::Value;

const TOPIC: &str = "graph.music";
const ACTIONS: [&str; 5] = ["play", "skip", "like", "pause", "seek"];

/// (user, track) → (count per action, last time as written).
type Edges = BTreeMap<(String, String), ([u64; 5], String)>;

struct Files {
    /// track → (artist, genre)
    tracks: BTreeMap<String, (String, String)>,
    edges: Edges,
    events: usize,
}

/// Writes the two CSV files and reads them back with the csv crate (the
/// expected answers come from these rows, not from the generator).
fn write_files(dir: &Path, n_events: usize) -> Files {
    let mut g = MusicGen::new(160, 250, 11, 1_767_225_600_000);
    let mut tracks_csv = format!("{}\n", wire::TRACKS_CSV_HEADER);
    let mut events_csv = format!("{}\n", wire::MUSIC_EVENTS_CSV_HEADER);
    let mut n = 0;
    while n < n_events {
        match g.next_record() {
            Event::Track(t) => tracks_csv.push_str(&format!("{}\n", wire::track_to_csv(&t))),
            Event::Music(m) => {
                events_csv.push_str(&format!("{}\n", wire::music_to_csv(&m)));
                n += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    std::fs::write(dir.join("tracks.csv"), tracks_csv).unwrap();
    std::fs::write(dir.join("user_events.csv"), events_csv).unwrap();

    let mut tracks = BTreeMap::new();
    for row in csv::Reader::from_path(dir.join("tracks.csv"))
        .unwrap()
        .records()
    {
        let r = row.unwrap();
        tracks.insert(r[0].to_string(), (r[1].to_string(), r[4].to_string()));
    }
    let mut edges: Edges = BTreeMap::new();
    let mut events = 0;
    for row in csv::Reader::from_path(dir.join("user_events.csv"))
        .unwrap()
        .records()
    {
        let r = row.unwrap();
        let a = ACTIONS.iter().position(|x| *x == &r[2]).unwrap();
        let e = edges
            .entry((r[0].to_string(), r[1].to_string()))
            .or_insert(([0; 5], String::new()));
        e.0[a] += 1;
        // "YYYY-MM-DD HH:MM:SS" orders as text.
        if r[3] > *e.1 {
            e.1 = r[3].to_string();
        }
        events += 1;
    }
    Files {
        tracks,
        edges,
        events,
    }
}

fn ms(ts: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S")
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

fn graph(data: &Path, args: &[&str]) -> Value {
    let mut all = vec!["graph"];
    all.extend_from_slice(args);
    let v = ctl_json(data, &all);
    assert_eq!(v["ok"], true, "graph {args:?}: {v}");
    v
}

fn import(bootstrap: &str, file: &Path) {
    run_ok(&[
        "import",
        "--brokers",
        bootstrap,
        "--topic",
        TOPIC,
        "--format",
        "csv",
        file.to_str().expect("a UTF-8 temporary path"),
    ]);
}

/// Scored names, highest first, then by name.
fn ranked(scores: HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = scores.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// The items of a page, each through `f`.
fn items<T>(v: &Value, f: impl Fn(&Value) -> T) -> Vec<T> {
    v["items"].as_array().unwrap().iter().map(f).collect()
}

fn scored(v: &Value) -> Vec<(String, u64)> {
    items(v, |i| {
        (
            i["name"].as_str().unwrap().to_string(),
            i["score"].as_u64().unwrap(),
        )
    })
}

#[test]
fn imported_music_files_become_a_graph_every_query_answers_from() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_files(dir.path(), 12_000);
    let broker = Broker::start(&[(TOPIC, 4)]);
    let daemon = |run| {
        spawn_daemon(
            dir.path(),
            &broker.bootstrap,
            "graph-test",
            &[("music", TOPIC)],
            &[("PLAYPULSE_MODELS__ENABLED", "false")],
            run,
        )
    };
    let mut d = daemon(0);
    import(&broker.bootstrap, &dir.path().join("tracks.csv"));
    import(&broker.bootstrap, &dir.path().join("user_events.csv"));
    let total = (f.tracks.len() + f.events) as u64;
    let status = wait_status(dir.path(), &mut d, Duration::from_secs(120), |s| {
        s["ingest"]["stored"].as_u64() == Some(total)
    });
    assert_eq!(status["ingest"]["rejected"], 0, "{status}");
    let data = dir.path().join("data");

    let users: BTreeSet<&String> = f.edges.keys().map(|(u, _)| u).collect();
    let listeners = |track: &str| f.edges.keys().filter(|(_, t)| t == track).count() as u64;

    // A user's tracks per relation: most often first, then latest, then track id.
    let mut nonempty = 0;
    for user in users.iter().step_by(50) {
        for (a, action) in ACTIONS.iter().enumerate() {
            let mut want: Vec<(String, u64, i64)> = f
                .edges
                .iter()
                .filter(|((u, _), e)| u == *user && e.0[a] > 0)
                .map(|((_, t), e)| (t.clone(), e.0[a], ms(&e.1)))
                .collect();
            want.sort_by(|x, y| {
                y.1.cmp(&x.1)
                    .then(y.2.cmp(&x.2))
                    .then_with(|| x.0.cmp(&y.0))
            });
            let v = graph(
                &data,
                &[
                    "user_tracks",
                    "--user",
                    user,
                    "--action",
                    action,
                    "--limit",
                    "1000",
                ],
            );
            let got: Vec<(String, u64, i64)> = items(&v, |i| {
                (
                    i["track"].as_str().unwrap().to_string(),
                    i["count"].as_u64().unwrap(),
                    i["last_ts_ms"].as_i64().unwrap(),
                )
            });
            assert_eq!(got, want, "{user} {action}");
            nonempty += usize::from(!want.is_empty());
            assert_eq!(v["total"].as_u64(), Some(want.len() as u64));
        }
    }

    assert!(nonempty > 10, "only {nonempty} non-empty answers");

    // Tracks by artist and in a genre, with their listener counts.
    let artists: BTreeSet<&String> = f.tracks.values().map(|(a, _)| a).collect();
    for artist in artists.iter().step_by(7) {
        let want: Vec<(String, u64)> = f
            .tracks
            .iter()
            .filter(|(_, (a, _))| a == *artist)
            .map(|(t, _)| (t.clone(), listeners(t)))
            .collect();
        let v = graph(
            &data,
            &["artist_tracks", "--artist", artist, "--limit", "1000"],
        );
        let got: Vec<(String, u64)> = items(&v, |i| {
            (
                i["track"].as_str().unwrap().to_string(),
                i["listeners"].as_u64().unwrap(),
            )
        });
        assert_eq!(got, want, "artist {artist}");
    }
    let genres: BTreeSet<&String> = f.tracks.values().map(|(_, g)| g).collect();
    let genre = *genres.iter().next().unwrap();
    let want: Vec<String> = f
        .tracks
        .iter()
        .filter(|(_, (_, g))| g == genre)
        .map(|(t, _)| t.clone())
        .collect();
    // Paged 7 at a time.
    let mut got = Vec::new();
    loop {
        let off = got.len().to_string();
        let v = graph(
            &data,
            &[
                "genre_tracks",
                "--genre",
                genre,
                "--offset",
                &off,
                "--limit",
                "7",
            ],
        );
        let items = v["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        got.extend(
            items
                .iter()
                .map(|i| i["track"].as_str().unwrap().to_string()),
        );
    }
    assert_eq!(got, want, "genre {genre}");

    // Who paused what: highest pause counts, then user and track id; paged.
    let mut want: Vec<(String, String, u64)> = f
        .edges
        .iter()
        .filter(|(_, e)| e.0[3] > 0)
        .map(|((u, t), e)| (u.clone(), t.clone(), e.0[3]))
        .collect();
    want.sort_by(|x, y| {
        y.2.cmp(&x.2)
            .then_with(|| x.0.cmp(&y.0))
            .then_with(|| x.1.cmp(&y.1))
    });
    want.truncate(50);
    let mut got = Vec::new();
    for off in ["0", "20", "40"] {
        let v = graph(
            &data,
            &[
                "top", "--action", "PAUSED", "--offset", off, "--limit", "20",
            ],
        );
        got.extend(items(&v, |i| {
            (
                i["user"].as_str().unwrap().to_string(),
                i["track"].as_str().unwrap().to_string(),
                i["count"].as_u64().unwrap(),
            )
        }));
    }
    got.truncate(50);
    assert_eq!(want.len(), 50);
    assert_eq!(got, want, "who paused what");

    // Users like me also liked.
    let liked = |u: &str| -> HashSet<String> {
        f.edges
            .iter()
            .filter(|((uu, _), e)| uu == u && e.0[2] > 0)
            .map(|((_, t), _)| t.clone())
            .collect()
    };
    for user in users.iter().step_by(60) {
        let mine = liked(user);
        let peers: HashSet<&String> = f
            .edges
            .iter()
            .filter(|((u, t), e)| u != *user && e.0[2] > 0 && mine.contains(t))
            .map(|((u, _), _)| u)
            .collect();
        let mut scores: HashMap<String, u64> = HashMap::new();
        for p in peers {
            for t in liked(p) {
                if !mine.contains(&t) {
                    *scores.entry(t).or_default() += 1;
                }
            }
        }
        let v = graph(&data, &["also_liked", "--user", user, "--limit", "1000"]);
        assert!(!scores.is_empty(), "{user} has no peers");
        assert_eq!(
            scored(&v),
            ranked(scores),
            "also liked by users like {user}"
        );
    }

    // Neighbourhoods: artists (genres) sharing listeners.
    let track_key = |t: &str, artist: bool| {
        let (a, g) = &f.tracks[t];
        if artist {
            a.clone()
        } else {
            g.clone()
        }
    };
    for (artist, name) in [(true, *artists.iter().next().unwrap()), (false, genre)] {
        let audience: HashSet<&String> = f
            .edges
            .keys()
            .filter(|(_, t)| track_key(t, artist) == *name)
            .map(|(u, _)| u)
            .collect();
        let mut scores: HashMap<String, u64> = HashMap::new();
        for u in audience {
            let reached: HashSet<String> = f
                .edges
                .keys()
                .filter(|(uu, _)| uu == u)
                .map(|(_, t)| track_key(t, artist))
                .filter(|k| k != name)
                .collect();
            for k in reached {
                *scores.entry(k).or_default() += 1;
            }
        }
        let (q, flag) = if artist {
            ("artist_neighbours", "--artist")
        } else {
            ("genre_neighbours", "--genre")
        };
        let v = graph(&data, &[q, flag, name, "--limit", "1000"]);
        assert!(!scores.is_empty(), "{q} {name}: no neighbours");
        assert_eq!(scored(&v), ranked(scores), "{q} {name}");
    }

    // Errors name what is wrong; the HTTP API answers the same as the socket.
    let bad = ctl_json(&data, &["graph", "user_tracks", "--user", "x"]);
    assert!(
        bad["error"].as_str().unwrap().contains("needs `action`"),
        "{bad}"
    );
    let http = status["http"].as_str().unwrap().to_string();
    let user = *users.iter().next().unwrap();
    let body = get(
        &http,
        &format!("/api/graph?query=also_liked&user={user}&limit=1000"),
    );
    let via_http: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        scored(&via_http),
        scored(&graph(
            &data,
            &["also_liked", "--user", user, "--limit", "1000"]
        ))
    );

    // A restart rebuilds the graph from the store: the same answers.
    let before = graph(&data, &["top", "--limit", "30"]);
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        d.log_text()
    );
    let mut d = daemon(1);
    wait_status(dir.path(), &mut d, Duration::from_secs(60), |s| {
        !s.is_null()
    });
    assert_eq!(
        graph(&data, &["top", "--limit", "30"])["items"],
        before["items"]
    );
}

/// An HTTP/1.0 GET on loopback (no chunked replies): the body.
fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}
