//! Deterministic synthetic generators with planted structure, so that what the
//! models learn can be checked against what was planted.
//!
//! Video: every user has 1–3 preferred genres, a region and a latent taste vector
//! (the mean of its genres' centroids plus noise); every video a genre, a latent
//! vector near its genre's centroid, a quality bias, a duration and a Zipf-like
//! popularity. Each event draws candidates by popularity and picks one by
//! affinity (softmax via Gumbel-max); watch time, completion and skips follow
//! affinity; resolution follows the region's network quality, buffering follows
//! resolution and network quality. Same seed and sizes → the same events.

pub use crate::domain::vocab::{GENRES, REGIONS, RESOLUTIONS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal, Poisson};

use crate::domain::event::{Event, MusicAction, MusicEvent, Title, Track, UserProfile, VideoEvent};

const DIM: usize = 8;
const CANDIDATES: usize = 24;
const GENRE_BONUS: f64 = 0.8;
const EPSILON: f64 = 0.15;

const GENRE_W: [f64; 8] = [0.20, 0.17, 0.17, 0.10, 0.08, 0.08, 0.10, 0.10];
const REGION_W: [f64; 8] = [0.30, 0.12, 0.15, 0.08, 0.08, 0.09, 0.10, 0.08];
const REGION_Q: [f64; 8] = [0.85, 0.55, 0.45, 0.85, 0.55, 0.92, 0.85, 0.80];
const RES_KBPS: [f64; 6] = [400.0, 800.0, 1500.0, 3000.0, 6000.0, 16000.0];
const RES_LOAD: [f64; 6] = [0.2, 0.35, 0.6, 1.0, 1.8, 3.5];
const MUSIC_GENRES: [&str; 8] = [
    "pop",
    "rock",
    "hip-hop",
    "jazz",
    "electronic",
    "classical",
    "latin",
    "indie",
];
const DEVICES: [&str; 4] = ["mobile", "desktop", "tablet", "smart_speaker"];
const CLASSIFICATIONS: [&str; 5] = ["G", "PG", "PG-13", "R", "NC-17"];
const DECADES: [&str; 6] = ["1970s", "1980s", "1990s", "2000s", "2010s", "2020s"];
const FIRST: [&str; 12] = [
    "Ana", "Luis", "Mia", "Noah", "Sofia", "Liam", "Emma", "Mateo", "Olivia", "Lucas", "Ava",
    "Diego",
];
const LAST: [&str; 10] = [
    "Garcia", "Smith", "Kim", "Silva", "Müller", "Rossi", "Tanaka", "Martin", "Lopez", "Brown",
];
const ADJ: [&str; 12] = [
    "Silent", "Last", "Hidden", "Broken", "Golden", "Lost", "Wild", "Dark", "Bright", "Final",
    "Secret", "Endless",
];
const NOUN: [&str; 12] = [
    "River", "Empire", "Signal", "Garden", "Horizon", "Promise", "Machine", "Kingdom", "Echo",
    "Storm", "Journey", "Mirror",
];

pub(super) fn seeded(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

fn pick_weighted(rng: &mut ChaCha8Rng, cdf: &[f64]) -> usize {
    let x: f64 = rng.gen::<f64>() * cdf[cdf.len() - 1];
    cdf.partition_point(|&c| c <= x).min(cdf.len() - 1)
}

fn cdf_of(weights: &[f64]) -> Vec<f64> {
    weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w;
            Some(*acc)
        })
        .collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn gumbel(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.gen_range(1e-12..1.0);
    -(-u.ln()).ln()
}

fn normal_vec(rng: &mut ChaCha8Rng, scale: f64) -> [f64; DIM] {
    let n = Normal::new(0.0, scale).unwrap_or_else(|_| Normal::new(0.0, 1.0).expect("unit normal"));
    std::array::from_fn(|_| n.sample(rng))
}

fn dot(a: &[f64; DIM], b: &[f64; DIM]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The planted structure of the video world.
#[derive(Debug, Clone)]
pub struct World {
    pub users: usize,
    pub videos: usize,
    /// Preferred genre indexes per user.
    pub user_genres: Vec<Vec<usize>>,
    pub user_region: Vec<usize>,
    user_vec: Vec<[f64; DIM]>,
    user_cdf: Vec<f64>,
    pub video_genre: Vec<usize>,
    video_vec: Vec<[f64; DIM]>,
    video_bias: Vec<f64>,
    video_duration: Vec<f64>,
    video_cdf: Vec<f64>,
}

pub fn user_id(u: usize) -> String {
    format!("user_{u:05}")
}

pub fn video_id(v: usize) -> String {
    format!("vid_{v:04}")
}

impl World {
    pub fn new(users: usize, videos: usize, seed: u64) -> World {
        let users = users.max(1);
        let videos = videos.max(1);
        let mut rng = seeded(seed, 1);
        let centroids: Vec<[f64; DIM]> = (0..GENRES.len())
            .map(|_| {
                let v = normal_vec(&mut rng, 1.0);
                let n = dot(&v, &v).sqrt().max(1e-9);
                v.map(|x| x / n)
            })
            .collect();
        let genre_cdf = cdf_of(&GENRE_W);
        let noise = 0.5 / (DIM as f64).sqrt();
        let video_genre: Vec<usize> = (0..videos)
            .map(|_| pick_weighted(&mut rng, &genre_cdf))
            .collect();
        let video_vec = video_genre
            .iter()
            .map(|&g| {
                let n = normal_vec(&mut rng, noise);
                std::array::from_fn(|i| centroids[g][i] + n[i])
            })
            .collect();
        let bias_n = Normal::new(0.0, 0.3).expect("valid normal");
        let video_bias = (0..videos).map(|_| bias_n.sample(&mut rng)).collect();
        let dur_n = LogNormal::new(2400f64.ln(), 0.5).expect("valid lognormal");
        let video_duration = (0..videos)
            .map(|_| dur_n.sample(&mut rng).clamp(300.0, 10_800.0))
            .collect();
        let mut ranks: Vec<usize> = (1..=videos).collect();
        for i in (1..ranks.len()).rev() {
            ranks.swap(i, rng.gen_range(0..=i));
        }
        let pop: Vec<f64> = ranks.iter().map(|&r| 1.0 / (r as f64 + 2.0)).collect();
        let video_cdf = cdf_of(&pop);

        let region_cdf = cdf_of(&REGION_W);
        let mut user_genres = Vec::with_capacity(users);
        let mut user_vec = Vec::with_capacity(users);
        let mut user_region = Vec::with_capacity(users);
        let act_n = LogNormal::new(0.0, 1.0).expect("valid lognormal");
        let mut act = Vec::with_capacity(users);
        for _ in 0..users {
            let n_pref = match rng.gen::<f64>() {
                x if x < 0.30 => 1,
                x if x < 0.75 => 2,
                _ => 3,
            };
            let mut prefs = Vec::with_capacity(n_pref);
            while prefs.len() < n_pref {
                let g = pick_weighted(&mut rng, &genre_cdf);
                if !prefs.contains(&g) {
                    prefs.push(g);
                }
            }
            let n = normal_vec(&mut rng, 0.6 / (DIM as f64).sqrt());
            let v: [f64; DIM] = std::array::from_fn(|i| {
                prefs.iter().map(|&g| centroids[g][i]).sum::<f64>() / n_pref as f64 * 1.5 + n[i]
            });
            user_genres.push(prefs);
            user_vec.push(v);
            user_region.push(pick_weighted(&mut rng, &region_cdf));
            act.push(act_n.sample(&mut rng));
        }
        World {
            users,
            videos,
            user_genres,
            user_region,
            user_vec,
            user_cdf: cdf_of(&act),
            video_genre,
            video_vec,
            video_bias,
            video_duration,
            video_cdf,
        }
    }

    fn affinity(&self, u: usize, v: usize) -> f64 {
        let bonus = if self.user_genres[u].contains(&self.video_genre[v]) {
            GENRE_BONUS
        } else {
            0.0
        };
        dot(&self.user_vec[u], &self.video_vec[v]) + bonus + self.video_bias[v]
    }
}

/// Video events from a [`World`].
pub struct VideoGen {
    world: World,
    rng: ChaCha8Rng,
    ts_ms: i64,
    step_ms: i64,
}

impl VideoGen {
    /// `start_ms`: the first event's time; `step_ms`: mean spacing between events.
    pub fn new(world: World, seed: u64, start_ms: i64, step_ms: i64) -> VideoGen {
        VideoGen {
            world,
            rng: seeded(seed, 2),
            ts_ms: start_ms,
            step_ms: step_ms.max(0),
        }
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// Moves the clock (live producers stamp events with the wall clock).
    pub fn set_time(&mut self, ts_ms: i64) {
        self.ts_ms = ts_ms;
    }

    pub fn next_event(&mut self) -> VideoEvent {
        let w = &self.world;
        let rng = &mut self.rng;
        let u = pick_weighted(rng, &w.user_cdf);
        let recommended = rng.gen::<f64>() < 0.30;
        let tau = if recommended { 0.25 } else { 0.35 };
        let explore = !recommended && rng.gen::<f64>() < EPSILON;
        let mut best = (f64::NEG_INFINITY, 0usize, 0.0f64);
        let explore_pick = rng.gen_range(0..CANDIDATES);
        for c in 0..CANDIDATES {
            let v = pick_weighted(rng, &w.video_cdf);
            let a = w.affinity(u, v);
            let key = if explore {
                if c == explore_pick {
                    1.0
                } else {
                    0.0
                }
            } else {
                a / tau + gumbel(rng)
            };
            if key > best.0 {
                best = (key, v, a);
            }
        }
        let (_, v, a) = best;
        let region = w.user_region[u];
        let q = REGION_Q[region];
        let res_noise: f64 = Normal::new(0.0, 1.0).expect("unit normal").sample(rng);
        let res = (q * 5.2 - 0.6 + res_noise).round().clamp(0.0, 5.0) as usize;
        let bitrate = (RES_KBPS[res] * rng.gen_range(0.75..1.25)) as i64;
        let lam = 0.05 + (0.15 + 3.0 * (1.0 - q).powf(1.5)) * RES_LOAD[res];
        let buffering = (Poisson::new(lam).map(|p| p.sample(rng)).unwrap_or(0.0) as i64).min(10);
        let failed = rng.gen::<f64>() < 0.002 + 0.01 * (1.0 - q);
        let p_skip = sigmoid(-2.0 * (a - 1.2) - 1.2 + 0.3 * buffering as f64);
        let skipped = !failed && rng.gen::<f64>() < p_skip;
        let frac_noise: f64 = Normal::new(0.0, 1.0).expect("unit normal").sample(rng);
        let frac = if skipped {
            rng.gen_range(0.0..0.08)
        } else {
            sigmoid(1.5 * (a - 1.6) + frac_noise - 0.1 * buffering as f64)
        };
        let watch = if failed {
            0.0
        } else {
            (w.video_duration[v] * frac * 10.0).round() / 10.0
        };
        let paused = !failed
            && rng.gen::<f64>()
                < sigmoid(watch / 1800.0 - 1.0 - 2.0 * f64::from(u8::from(skipped)));
        let startup = LogNormal::new((400.0 + 1600.0 * (1.0 - q)).ln(), 0.4)
            .expect("valid lognormal")
            .sample(rng);
        let rebuffer = (0..buffering)
            .map(|_| rng.gen_range(200.0..4000.0))
            .sum::<f64>();
        self.ts_ms += if self.step_ms > 0 {
            rng.gen_range(0..=2 * self.step_ms)
        } else {
            0
        };
        VideoEvent {
            user_id: user_id(u).into(),
            video_id: video_id(v).into(),
            watch_time_seconds: watch,
            resolution: RESOLUTIONS[res].into(),
            bitrate_kbps: bitrate,
            buffering_events: buffering,
            paused,
            skipped,
            genre: GENRES[w.video_genre[v]].into(),
            region: REGIONS[region].into(),
            recommended,
            timestamp_ms: self.ts_ms,
            startup_time_ms: if failed { None } else { Some(startup.round()) },
            rebuffer_ms: Some(rebuffer.round()),
            error: if failed {
                Some("playback_failed: manifest request timed out".into())
            } else {
                None
            },
        }
    }
}

/// Catalog records: user profiles, movies (one per video id) and series.
pub struct CatalogGen {
    world: World,
    rng: ChaCha8Rng,
    next: usize,
    series: usize,
}

fn person(rng: &mut ChaCha8Rng, pool: usize, prefix: &str) -> String {
    let i = rng.gen_range(0..pool);
    format!(
        "{prefix} {} {}",
        FIRST[i % FIRST.len()],
        LAST[(i / FIRST.len()) % LAST.len()]
    )
}

impl CatalogGen {
    pub fn new(world: World, seed: u64) -> CatalogGen {
        let series = (world.videos / 5).max(1);
        CatalogGen {
            world,
            rng: seeded(seed, 3),
            next: 0,
            series,
        }
    }

    fn title_name(&mut self) -> String {
        format!(
            "The {} {}",
            ADJ[self.rng.gen_range(0..ADJ.len())],
            NOUN[self.rng.gen_range(0..NOUN.len())]
        )
    }

    /// The next profile, cycling through the world's users (later versions upsert earlier ones).
    pub fn next_user(&mut self, ts_ms: i64) -> UserProfile {
        let u = self.next % self.world.users;
        self.next += 1;
        let genres = self.world.user_genres[u]
            .iter()
            .map(|&g| GENRES[g].to_string())
            .collect::<Vec<_>>();
        let first = self.world.user_genres[u][0];
        UserProfile {
            id: user_id(u),
            timestamp_ms: ts_ms,
            name: format!(
                "{} {}",
                FIRST[u % FIRST.len()],
                LAST[(u / FIRST.len()) % LAST.len()]
            ),
            subscription_date: format!("20{:02}-{:02}-{:02}", 15 + u % 10, 1 + u % 12, 1 + u % 28),
            genres,
            directors: vec![person(&mut self.rng, 8, &format!("Dir{first}"))],
            actors: vec![
                person(&mut self.rng, 20, &format!("Act{first}")),
                person(&mut self.rng, 20, &format!("Act{first}")),
            ],
            classification: CLASSIFICATIONS[u % CLASSIFICATIONS.len()].to_string(),
            favorite_decades: vec![DECADES[(u + first) % DECADES.len()].to_string()],
        }
    }

    /// The next movie, cycling through the world's videos (a movie's id is its video id).
    pub fn next_movie(&mut self, ts_ms: i64) -> Title {
        let v = self.next % self.world.videos;
        self.next += 1;
        let g = self.world.video_genre[v];
        Title {
            id: video_id(v),
            timestamp_ms: ts_ms,
            title: self.title_name(),
            genres: vec![GENRES[g].to_string()],
            directors: vec![person(&mut self.rng, 8, &format!("Dir{g}"))],
            actors: vec![
                person(&mut self.rng, 20, &format!("Act{g}")),
                person(&mut self.rng, 20, &format!("Act{g}")),
            ],
            classification: CLASSIFICATIONS[v % CLASSIFICATIONS.len()].to_string(),
            release_decade: DECADES[v % DECADES.len()].to_string(),
            seasons: None,
            episodes: None,
        }
    }

    pub fn next_series(&mut self, ts_ms: i64) -> Title {
        let s = self.next % self.series;
        self.next += 1;
        let g = s % GENRES.len();
        let seasons = 1 + (s % 7) as i64;
        Title {
            id: format!("ser_{s:04}"),
            timestamp_ms: ts_ms,
            title: self.title_name(),
            genres: vec![GENRES[g].to_string()],
            directors: vec![person(&mut self.rng, 8, &format!("Dir{g}"))],
            actors: vec![person(&mut self.rng, 20, &format!("Act{g}"))],
            classification: CLASSIFICATIONS[s % CLASSIFICATIONS.len()].to_string(),
            release_decade: DECADES[s % DECADES.len()].to_string(),
            seasons: Some(seasons),
            episodes: Some(seasons * self.rng.gen_range(6..14)),
        }
    }
}

/// Music: the tracks first, then listening events whose actions follow each
/// listener's genre taste (liked genres are played and liked, others skipped).
pub struct MusicGen {
    rng: ChaCha8Rng,
    tracks: usize,
    users: usize,
    track_genre: Vec<usize>,
    track_cdf: Vec<f64>,
    user_genre: Vec<usize>,
    emitted_tracks: usize,
    ts_ms: i64,
}

pub fn track_id(t: usize) -> String {
    format!("trk_{t:05}")
}

impl MusicGen {
    pub fn new(tracks: usize, users: usize, seed: u64, start_ms: i64) -> MusicGen {
        let tracks = tracks.max(1);
        let users = users.max(1);
        let mut rng = seeded(seed, 4);
        let track_genre = (0..tracks)
            .map(|_| rng.gen_range(0..MUSIC_GENRES.len()))
            .collect();
        let pop: Vec<f64> = (0..tracks).map(|t| 1.0 / ((t % 97) as f64 + 3.0)).collect();
        let user_genre = (0..users)
            .map(|_| rng.gen_range(0..MUSIC_GENRES.len()))
            .collect();
        MusicGen {
            rng,
            tracks,
            users,
            track_genre,
            track_cdf: cdf_of(&pop),
            user_genre,
            emitted_tracks: 0,
            ts_ms: start_ms,
        }
    }

    pub fn track(&self, t: usize) -> Track {
        Track {
            track_id: track_id(t),
            artist: format!("artist_{:03}", t % (self.tracks / 8).max(1)),
            album: format!("album_{:04}", t / 10),
            duration_ms: 120_000 + ((t * 7919) % 240_000) as i64,
            genre: MUSIC_GENRES[self.track_genre[t]].to_string(),
            title: format!("Track {t}"),
        }
    }

    pub fn set_time(&mut self, ts_ms: i64) {
        self.ts_ms = ts_ms;
    }

    /// The next record: a track until all are out, then a listening event.
    pub fn next_record(&mut self) -> Event {
        if self.emitted_tracks < self.tracks {
            self.emitted_tracks += 1;
            return Event::Track(self.track(self.emitted_tracks - 1));
        }
        let rng = &mut self.rng;
        let u = rng.gen_range(0..self.users);
        let t = pick_weighted(rng, &self.track_cdf);
        let liked_genre = self.user_genre[u] == self.track_genre[t];
        let x: f64 = rng.gen();
        let action = match (liked_genre, x) {
            (true, x) if x < 0.55 => MusicAction::Play,
            (true, x) if x < 0.85 => MusicAction::Like,
            (true, x) if x < 0.93 => MusicAction::Pause,
            (true, x) if x < 0.98 => MusicAction::Seek,
            (true, _) => MusicAction::Skip,
            (false, x) if x < 0.35 => MusicAction::Play,
            (false, x) if x < 0.40 => MusicAction::Like,
            (false, x) if x < 0.45 => MusicAction::Pause,
            (false, x) if x < 0.50 => MusicAction::Seek,
            (false, _) => MusicAction::Skip,
        };
        self.ts_ms += rng.gen_range(0..2000);
        Event::Music(MusicEvent {
            user_id: user_id(u).into(),
            track_id: track_id(t).into(),
            event_type: action,
            event_ts_ms: self.ts_ms,
            session_id: compact_str::format_compact!("s_{u:05}_{}", self.ts_ms / 1_800_000),
            device: DEVICES[u % DEVICES.len()].into(),
        })
    }
}
