//! The in-memory indexes over what the store holds: the listening graph
//! (edges from the listening aggregates, tracks from the catalog), the
//! catalog's names (every movie and series, for content affinity and titles
//! in lists; every track's title, artist, album and genre) and what trends.
//! Built from the store at start and fed after every committed batch.
//!
//! Each part is shared on its own terms, and the store's writer (at
//! background priority) changes only what a batch changes: the catalog
//! behind a lock, what trends as a published view, the listening graph as
//! two copies a read never waits on (see [`SharedGraph`]).

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use rustc_hash::FxHashMap;

use super::affinity::CatalogIndex;
use super::graph::{GraphOp, MusicGraph, SharedGraph};
use super::trending::{Trending, TrendingView};
use crate::domain::event::{Event, MusicEvent, Track};
use crate::domain::record::{Outcome, Processed};
use crate::store::{bounds, Store, StoreError, StoreView};

/// A track's names, as its latest catalog record gives them.
#[derive(Debug, Clone)]
struct TrackNames {
    artist: Arc<str>,
    album: Arc<str>,
    genre: Arc<str>,
    title: Option<Arc<str>>,
}

/// What lists show beside an item: every movie and series, and every
/// track's names. Changed only by catalog records.
#[derive(Default)]
pub struct Catalog {
    /// Every stored movie and series (latest record).
    pub titles: CatalogIndex,
    tracks: FxHashMap<Arc<str>, TrackNames>,
}

impl Catalog {
    /// A track record (latest wins).
    pub fn upsert_track(&mut self, t: &Track) {
        let names = TrackNames {
            artist: Arc::from(t.artist.as_str()),
            album: Arc::from(t.album.as_str()),
            genre: Arc::from(t.genre.as_str()),
            title: (!t.title.is_empty()).then(|| Arc::from(t.title.as_str())),
        };
        self.tracks.insert(Arc::from(t.track_id.as_str()), names);
    }

    /// A track's artist and album, when its catalog record is stored.
    pub fn track_artist(&self, track: &str) -> Option<(&str, &str)> {
        let n = self.tracks.get(track)?;
        Some((&n.artist, &n.album))
    }

    /// A track's genre, when its catalog record is stored.
    pub fn track_genre(&self, track: &str) -> Option<&str> {
        self.tracks.get(track).map(|n| &*n.genre)
    }

    /// A track's title, when its catalog record has one.
    pub fn track_title(&self, track: &str) -> Option<&str> {
        self.tracks.get(track)?.title.as_deref()
    }
}

/// What a request reads: the catalog (under its read lock) and what trends
/// as of the last batch.
pub struct Lookup<'a> {
    pub catalog: &'a Catalog,
    pub trending: &'a TrendingView,
}

/// A part of the indexes whose lock a panicking writer left poisoned.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the {0} index is poisoned (a writer panicked): restart the daemon to rebuild it from the store")]
pub struct Poisoned(pub &'static str);

pub struct Indexes {
    /// The listening graph's index over the stored edges: graph queries,
    /// recommendations and the fold-in read it without waiting; the writer
    /// changes it for batches with listening events or tracks.
    graph: SharedGraph,
    /// Movies, series and tracks' names: requests read it; the writer takes
    /// it for batches with catalog records only.
    catalog: RwLock<Catalog>,
    /// Time-decayed popularity, fed with every batch by the store's writer
    /// (behind a lock of its own, which only the writer takes).
    trending: Mutex<Trending>,
    /// What requests read ([`Indexes::trending`]): the scores as of the last
    /// batch, published by the writer. A request never waits on the writer,
    /// which runs at background priority and holds its lock for a whole batch.
    trending_view: ArcSwap<TrendingView>,
}

impl Default for Indexes {
    fn default() -> Self {
        Indexes::with_trending(Trending::new(Duration::from_secs(3600)))
    }
}

/// Events read back at start to seed the trending scores (the newest).
const TRENDING_SEED_EVENTS: usize = 500_000;

/// Every stored movie and series, indexed.
pub fn titles_of(store: &StoreView) -> Result<CatalogIndex, StoreError> {
    let mut titles = CatalogIndex::default();
    for (kind, t) in store.titles()? {
        titles.upsert(kind, &t);
    }
    Ok(titles)
}

/// The indexes, shared between the store's writer (after each commit) and
/// readers (queries, recommendations, training snapshots).
pub type SharedIndexes = Arc<Indexes>;

impl Indexes {
    /// Builds the indexes from what the store holds; the trending scores from
    /// the segments written in the last eight half-lives (later ones count
    /// 1/256 or less).
    pub fn build(store: &Store, half_life: std::time::Duration) -> Result<Indexes, StoreError> {
        let mut catalog = Catalog {
            titles: titles_of(store)?,
            ..Catalog::default()
        };
        let mut graph = MusicGraph::default();
        for (u, t, agg) in store.music_aggregates()? {
            if u != bounds::OTHER {
                graph.set_edge(&u, &t, agg);
            }
        }
        for t in store.tracks()? {
            graph.upsert_track(&t);
            catalog.upsert_track(&t);
        }
        let mut trending = Trending::new(half_life);
        let since = crate::domain::timefmt::now_ms() - 8 * half_life.as_millis() as i64;
        match store.events_written_since(since, TRENDING_SEED_EVENTS) {
            Ok(events) => {
                for (at, e) in events {
                    trending.observe(&e, at, |t| catalog.track_genre(t).map(str::to_string));
                }
            }
            Err(e) => {
                tracing::warn!("trending starts empty: the recent segments do not read back ({e})")
            }
        }
        Ok(Indexes {
            graph: SharedGraph::new(graph),
            catalog: RwLock::new(catalog),
            ..Indexes::with_trending(trending)
        })
    }

    /// Empty indexes over the trending scores `scores`, published.
    fn with_trending(scores: Trending) -> Indexes {
        Indexes {
            graph: SharedGraph::default(),
            catalog: RwLock::default(),
            trending_view: ArcSwap::from_pointee(scores.view()),
            trending: Mutex::new(scores),
        }
    }

    /// The trending scores as of the last batch.
    pub fn trending(&self) -> Guard<Arc<TrendingView>> {
        self.trending_view.load()
    }

    /// The catalog, read.
    pub fn catalog(&self) -> Result<RwLockReadGuard<'_, Catalog>, Poisoned> {
        self.catalog.read().map_err(|_| Poisoned("catalog"))
    }

    /// `f` over the listening graph as of the last applied batch.
    pub fn with_graph<R>(&self, f: impl FnOnce(&MusicGraph) -> R) -> Result<R, Poisoned> {
        self.graph.read(f).ok_or(Poisoned("listening graph"))
    }

    /// `f` over what a request reads: the catalog and what trends.
    pub fn lookup<R>(&self, f: impl FnOnce(&Lookup<'_>) -> R) -> Result<R, Poisoned> {
        let catalog = self.catalog()?;
        let trending = self.trending();
        Ok(f(&Lookup {
            catalog: &catalog,
            trending: &trending,
        }))
    }

    /// A movie or series a group's peer published (latest wins).
    pub fn upsert_title(&self, kind: &'static str, t: &crate::domain::event::Title) {
        if let Ok(mut c) = self.catalog.write() {
            c.titles.upsert(kind, t);
        }
    }

    /// Feeds the trending scores with one committed batch's new events and
    /// publishes them: a request made once the batch is stored sees it.
    pub fn observe_trending(&self, records: &[Processed], fresh: &[bool], now_ms: i64) {
        let Ok(mut t) = self.trending.lock() else {
            return;
        };
        // Only this writer changes the catalog: its read lock waits on no one.
        let Ok(catalog) = self.catalog.read() else {
            return;
        };
        let mut observed = false;
        for (r, _) in records.iter().zip(fresh).filter(|(_, f)| **f) {
            if let Outcome::Valid(e @ (Event::Video(_) | Event::Music(_))) = &r.outcome {
                t.observe(e, now_ms, |track| {
                    catalog.track_genre(track).map(str::to_string)
                });
                observed = true;
            }
        }
        drop(catalog);
        if observed {
            self.trending_view.store(Arc::new(t.view()));
        }
    }

    /// Follows one committed batch (`fresh[i]`: record i was stored, not a
    /// redelivery). Each part's write lock is taken only when the batch
    /// changes that part, and only for the changes themselves: what decides
    /// them (the store's reads) comes first.
    pub fn observe(&self, store: &Store, records: &[Processed], fresh: &[bool]) {
        let mut listens: Vec<&MusicEvent> = Vec::new();
        let mut tracks: Vec<&Track> = Vec::new();
        let mut titles: Vec<(&'static str, &crate::domain::event::Title)> = Vec::new();
        for (r, _) in records.iter().zip(fresh).filter(|(_, f)| **f) {
            match &r.outcome {
                // Pairs folded under (other) stay out of the graph.
                Outcome::Valid(Event::Music(m))
                    if store.holds_music_pair(&m.user_id, &m.track_id) =>
                {
                    listens.push(m)
                }
                Outcome::Valid(Event::Track(t)) => tracks.push(t),
                Outcome::Valid(Event::Movie(t)) => titles.push((super::affinity::MOVIE, t)),
                Outcome::Valid(Event::Series(t)) => titles.push((super::affinity::SERIES, t)),
                _ => {}
            }
        }
        if !(tracks.is_empty() && titles.is_empty()) {
            if let Ok(mut c) = self.catalog.write() {
                for t in &tracks {
                    c.upsert_track(t);
                }
                for (kind, t) in &titles {
                    c.titles.upsert(kind, t);
                }
            }
        }
        // Tracks first: a listener joins a track's artist and genre whether
        // the track's record came before or after the listen. The batch
        // counts stored once the graph has it.
        if !(tracks.is_empty() && listens.is_empty()) {
            let tracks = tracks.into_iter().cloned().map(GraphOp::Track);
            self.graph
                .apply(tracks.chain(listens.into_iter().cloned().map(GraphOp::Listen)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::SourcePos;
    use crate::synth::generate::{VideoGen, World};
    use crate::views::trending::TrendingItem;

    fn batch(video: &str, n: usize) -> Vec<Processed> {
        let mut g = VideoGen::new(World::new(5, 5, 1), 1, 1_735_689_600_000, 50);
        (0..n)
            .map(|i| {
                let mut v = g.next_event();
                v.video_id = video.into();
                Processed::at(
                    SourcePos::new("views", 0, i as i64),
                    Outcome::Valid(Event::Video(v)),
                )
            })
            .collect()
    }

    fn top(ix: &Indexes, now: i64) -> Vec<(String, f64)> {
        ix.trending()
            .top(crate::domain::event::Domain::Video, None, None, 10, now)
            .into_iter()
            .map(|i| (i.item, i.score))
            .collect()
    }

    #[test]
    fn each_batch_is_published_and_a_loaded_view_stays_as_it_was() {
        let now = 1_800_000_000_000i64;
        let ix = Indexes::default();
        let held = ix.trending();
        ix.observe_trending(&batch("first", 3), &[true; 3], now);
        assert_eq!(top(&ix, now), [("first".to_string(), 3.0)]);
        // A reader holding the view it loaded keeps it whole.
        assert!(held
            .top(crate::domain::event::Domain::Video, None, None, 10, now)
            .is_empty());
        let first = ix.trending();
        // A redelivered record (not fresh) counts nowhere.
        ix.observe_trending(&batch("second", 5), &[true, true, true, true, false], now);
        assert_eq!(
            top(&ix, now),
            [("second".to_string(), 4.0), ("first".to_string(), 3.0)]
        );
        assert_eq!(
            first.top(crate::domain::event::Domain::Video, None, None, 10, now),
            [TrendingItem {
                item: "first".into(),
                score: 3.0
            }]
        );
        // A batch with nothing to rank publishes nothing new.
        let before = Arc::as_ptr(&ix.trending_view.load_full());
        ix.observe_trending(&batch("third", 2), &[false; 2], now);
        assert_eq!(before, Arc::as_ptr(&ix.trending_view.load_full()));
    }

    fn at(offset: usize, e: Event) -> Processed {
        Processed::at(SourcePos::new("music", 0, offset as i64), Outcome::Valid(e))
    }

    #[test]
    fn listens_change_the_graph_alone_and_requests_read_while_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 16).unwrap();
        let mut music = crate::synth::generate::MusicGen::new(3, 4, 7, 1_735_689_600_000);
        let mut catalog = crate::synth::generate::CatalogGen::new(World::new(4, 4, 7), 7);
        // Three tracks, then listens, a movie among them.
        let mut events: Vec<Event> = (0..40).map(|_| music.next_record()).collect();
        events.insert(10, Event::Movie(catalog.next_movie(1_735_689_600_000)));
        let movie = match &events[10] {
            Event::Movie(t) => t.id.clone(),
            _ => unreachable!(),
        };
        let pairs: std::collections::HashSet<(String, String)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Music(m) => Some((m.user_id.to_string(), m.track_id.to_string())),
                _ => None,
            })
            .collect();
        let records = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| at(i, e))
            .collect();
        let c = store
            .apply("t", crate::store::prepare::prepare(records))
            .unwrap();
        let track = music.track(1);
        // The batch is in the graph once `observe` returns.
        let ix = Indexes::default();
        ix.observe(&store, &c.records, &c.fresh);
        let cat = ix.catalog().unwrap();
        assert_eq!(cat.track_title(&track.track_id), Some(track.title.as_str()));
        assert_eq!(cat.track_genre(&track.track_id), Some(track.genre.as_str()));
        assert_eq!(
            cat.track_artist(&track.track_id),
            Some((track.artist.as_str(), track.album.as_str()))
        );
        assert!(cat.titles.get(&movie).is_some());
        drop(cat);
        assert_eq!(
            ix.with_graph(|g| (g.edges(), g.tracks())).unwrap(),
            (pairs.len(), 3)
        );

        // While the writer is in a batch (waiting for a long graph read to
        // leave the copy it takes back), a request reads the catalog and the
        // graph as of the last batch: it does not wait for the writer.
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let ix = &ix;
            let long = s.spawn(move || {
                ix.with_graph(|_| {
                    entered_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                })
            });
            entered.recv().unwrap();
            // The first batch after the read began goes to the other copy;
            // the second waits for the read.
            ix.observe(&store, &c.records, &c.fresh);
            let writer = s.spawn(|| ix.observe(&store, &c.records, &c.fresh));
            s.spawn(move || {
                let genre =
                    ix.lookup(|l| l.catalog.track_genre(&track.track_id).map(str::to_string));
                tx.send((genre.unwrap(), ix.with_graph(|g| g.edges()).unwrap()))
                    .unwrap();
            });
            // A deadlock detector, not a timing: the answer waits for
            // nothing the writer holds, so it comes at once or never.
            let got = rx.recv_timeout(Duration::from_secs(60));
            let writer_waited = !writer.is_finished();
            release.send(()).unwrap();
            assert_eq!(
                got,
                Ok((Some(track.genre.clone()), pairs.len())),
                "a request waited on the graph's writer"
            );
            assert!(writer_waited, "the writer did not wait for the long read");
            long.join().unwrap().unwrap();
            writer.join().unwrap();
        });
    }
}
