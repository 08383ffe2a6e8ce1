//! Synthetic record streams (one per kind) and the loop that sends them to Kafka.

use std::time::{Duration, Instant};

use crate::domain::event::{Event, Kind};
use crate::domain::timefmt::now_ms;
use crate::ingest::wire;
use crate::kafka::{self, KafkaGlueError};
use crate::synth::generate::{CatalogGen, MusicGen, VideoGen, World};

/// Size and seed of a synthetic world.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub users: usize,
    pub videos: usize,
    pub tracks: usize,
    pub seed: u64,
    /// First event time (ms); `None` stamps records with the wall clock.
    pub start_ms: Option<i64>,
}

enum Inner {
    Video(VideoGen),
    Catalog(CatalogGen),
    Music(MusicGen),
}

/// A deterministic stream of records of one kind.
pub struct Synth {
    kind: Kind,
    inner: Inner,
    live: bool,
    ts_ms: i64,
}

impl Synth {
    pub fn new(kind: Kind, spec: &SynthSpec) -> Synth {
        let live = spec.start_ms.is_none();
        let start = spec.start_ms.unwrap_or_else(now_ms);
        let step = if live { 0 } else { 50 };
        let world = || World::new(spec.users, spec.videos, spec.seed);
        let inner = match kind {
            Kind::Video => Inner::Video(VideoGen::new(world(), spec.seed, start, step)),
            Kind::Users | Kind::Movies | Kind::Series => {
                Inner::Catalog(CatalogGen::new(world(), spec.seed))
            }
            Kind::Music => Inner::Music(MusicGen::new(spec.tracks, spec.users, spec.seed, start)),
        };
        Synth {
            kind,
            inner,
            live,
            ts_ms: start,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Sends the next event to `topic`, keyed by who it is about.
    pub fn send_next(
        &mut self,
        producer: &crate::kafka::Producer,
        topic: &str,
    ) -> Result<(), KafkaGlueError> {
        let ev = self.next_event();
        kafka::send(
            producer,
            topic,
            event_key(&ev).as_bytes(),
            &wire::to_json(&ev),
            None,
        )
    }

    /// The next event.
    pub fn next_event(&mut self) -> Event {
        if self.live {
            self.ts_ms = now_ms();
        } else {
            self.ts_ms += 1000;
        }
        match &mut self.inner {
            Inner::Video(g) => {
                if self.live {
                    g.set_time(self.ts_ms);
                }
                Event::Video(g.next_event())
            }
            Inner::Catalog(g) => match self.kind {
                Kind::Users => Event::User(g.next_user(self.ts_ms)),
                Kind::Movies => Event::Movie(g.next_movie(self.ts_ms)),
                _ => Event::Series(g.next_series(self.ts_ms)),
            },
            Inner::Music(g) => {
                if self.live {
                    g.set_time(self.ts_ms);
                }
                g.next_record()
            }
        }
    }
}

/// The partition key of an event: who it is about.
pub fn event_key(ev: &Event) -> &str {
    match ev {
        Event::Video(v) => &v.user_id,
        Event::User(u) => &u.id,
        Event::Movie(t) | Event::Series(t) => &t.id,
        Event::Track(t) => &t.track_id,
        Event::Music(m) => &m.user_id,
    }
}

/// Paces a producer at `rate` records per second (0 = unpaced).
pub struct Pacer {
    rate: f64,
    start: Instant,
    sent: u64,
}

impl Pacer {
    pub fn new(rate: f64) -> Pacer {
        Pacer {
            rate,
            start: Instant::now(),
            sent: 0,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How many records may go now.
    pub fn allowance(&self) -> u64 {
        if self.rate <= 0.0 {
            return u64::MAX;
        }
        let due = (self.start.elapsed().as_secs_f64() * self.rate) as u64;
        due.saturating_sub(self.sent)
    }

    pub fn sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// Time until the next record is due.
    pub fn wait(&self) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let next_at = (self.sent + 1) as f64 / self.rate;
        Duration::from_secs_f64((next_at - self.start.elapsed().as_secs_f64()).max(0.0))
    }
}

/// Sends `events` records (0 = without end) from `synth` to `topic` at `rate`.
/// `on_progress` is called with the running count after each chunk.
pub fn produce(
    producer: &crate::kafka::Producer,
    topic: &str,
    synth: &mut Synth,
    events: u64,
    rate: f64,
    mut on_progress: impl FnMut(u64),
) -> Result<u64, KafkaGlueError> {
    let mut pacer = Pacer::new(rate);
    let mut sent = 0u64;
    while events == 0 || sent < events {
        let n =
            pacer
                .allowance()
                .min(10_000)
                .min(if events == 0 { u64::MAX } else { events - sent });
        if n == 0 {
            std::thread::sleep(pacer.wait().min(Duration::from_millis(50)));
            producer.poll(Duration::ZERO);
            continue;
        }
        for _ in 0..n {
            synth.send_next(producer, topic)?;
        }
        producer.poll(Duration::ZERO);
        sent += n;
        pacer.sent(n);
        on_progress(sent);
    }
    kafka::flush(producer, Duration::from_secs(60))?;
    Ok(sent)
}

/// A seeded, finite stream of video records, `bad_fraction` of them malformed
/// (as `corrupt::corrupt_video` makes them): the same seed gives the same
/// records, so a run can be checked afterwards by making them again.
pub struct VideoStream {
    gen: crate::synth::generate::VideoGen,
    rng: rand_chacha::ChaCha8Rng,
    bad_fraction: f64,
    left: u64,
}

impl VideoStream {
    pub fn new(users: usize, videos: usize, seed: u64, events: u64, bad_fraction: f64) -> Self {
        Self::with_step(users, videos, seed, events, bad_fraction, 50)
    }

    /// The same, with the events' times `step_ms` apart on average.
    pub fn with_step(
        users: usize,
        videos: usize,
        seed: u64,
        events: u64,
        bad_fraction: f64,
        step_ms: i64,
    ) -> Self {
        VideoStream {
            gen: crate::synth::generate::VideoGen::new(
                crate::synth::generate::World::new(users, videos, seed),
                seed,
                1_735_689_600_000,
                step_ms,
            ),
            rng: crate::synth::corrupt::bad_rng(seed),
            bad_fraction,
            left: events,
        }
    }

    /// The next (key, payload), and whether it is valid; `None` at the end.
    pub fn next_event(
        &mut self,
    ) -> Option<(Vec<u8>, Vec<u8>, Option<crate::domain::event::Event>)> {
        use rand::Rng;
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let ev = self.gen.next_event();
        let key = ev.user_id.as_bytes().to_vec();
        if self.rng.gen::<f64>() < self.bad_fraction {
            let (p, _) = crate::synth::corrupt::corrupt_video(&ev, &mut self.rng);
            Some((key, p, None))
        } else {
            let e = crate::domain::event::Event::Video(ev);
            Some((key, crate::ingest::wire::to_json(&e), Some(e)))
        }
    }

    pub fn next_record(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.next_event().map(|(k, p, _)| (k, p))
    }
}
