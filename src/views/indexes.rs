//! The in-memory indexes over what the store holds: the listening graph
//! (edges from the listening aggregates, tracks from the catalog) and every
//! movie and series (content affinity, titles in lists). Built from the store
//! at start and fed after every committed batch; any thread reads them
//! through [`SharedIndexes`] without waiting on the store's writes.

use std::sync::{Arc, Mutex, RwLock};

use super::affinity::CatalogIndex;
use super::graph::MusicGraph;
use super::trending::Trending;
use crate::domain::event::Event;
use crate::domain::record::{Outcome, Processed};
use crate::store::{bounds, Store, StoreError, StoreView};

pub struct Indexes {
    /// The listening graph's index over the stored edges.
    pub graph: MusicGraph,
    /// Every stored movie and series (latest record).
    pub titles: CatalogIndex,
    /// Time-decayed popularity, fed with every batch (behind its own lock:
    /// video batches feed it without the indexes' write lock).
    pub trending: Mutex<Trending>,
}

impl Default for Indexes {
    fn default() -> Self {
        Indexes {
            graph: MusicGraph::default(),
            titles: CatalogIndex::default(),
            trending: Mutex::new(Trending::new(std::time::Duration::from_secs(3600))),
        }
    }
}

/// Records a batch adds to the trending scores under one hold of their lock.
const TRENDING_CHUNK: usize = 512;

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
pub type SharedIndexes = Arc<RwLock<Indexes>>;

impl Indexes {
    /// Builds the indexes from what the store holds; the trending scores from
    /// the segments written in the last eight half-lives (later ones count
    /// 1/256 or less).
    pub fn build(store: &Store, half_life: std::time::Duration) -> Result<Indexes, StoreError> {
        let titles = titles_of(store)?;
        let mut graph = MusicGraph::default();
        for (u, t, agg) in store.music_aggregates()? {
            if u != bounds::OTHER {
                graph.set_edge(&u, &t, agg);
            }
        }
        for t in store.tracks()? {
            graph.upsert_track(&t);
        }
        let mut trending = Trending::new(half_life);
        let since = crate::domain::timefmt::now_ms() - 8 * half_life.as_millis() as i64;
        match store.events_written_since(since, TRENDING_SEED_EVENTS) {
            Ok(events) => {
                for (at, e) in events {
                    trending.observe(&e, at, |t| graph.track_genre(t).map(str::to_string));
                }
            }
            Err(e) => {
                tracing::warn!("trending starts empty: the recent segments do not read back ({e})")
            }
        }
        Ok(Indexes {
            graph,
            titles,
            trending: Mutex::new(trending),
        })
    }

    /// Feeds the trending scores with one committed batch's new events.
    pub fn observe_trending(&self, records: &[Processed], fresh: &[bool], now_ms: i64) {
        // A few hundred records at a time: a request that ranks trending items
        // waits for one chunk, not for a whole batch (20k records, ms).
        for (records, fresh) in records
            .chunks(TRENDING_CHUNK)
            .zip(fresh.chunks(TRENDING_CHUNK))
        {
            let Ok(mut t) = self.trending.lock() else {
                return;
            };
            for (r, _) in records.iter().zip(fresh).filter(|(_, f)| **f) {
                if let Outcome::Valid(e @ (Event::Video(_) | Event::Music(_))) = &r.outcome {
                    t.observe(e, now_ms, |track| {
                        self.graph.track_genre(track).map(str::to_string)
                    });
                }
            }
        }
    }

    /// Whether a batch holds a new record these indexes follow (listening
    /// events, tracks, movies, series): a batch without one leaves them as
    /// they are, and its writer need not take their lock.
    pub fn follows_any(records: &[Processed], fresh: &[bool]) -> bool {
        records.iter().zip(fresh).any(|(r, f)| {
            *f && matches!(
                r.outcome,
                Outcome::Valid(
                    Event::Music(_) | Event::Track(_) | Event::Movie(_) | Event::Series(_)
                )
            )
        })
    }

    /// Follows one committed batch (`fresh[i]`: record i was stored, not a
    /// redelivery).
    pub fn observe(&mut self, store: &Store, records: &[Processed], fresh: &[bool]) {
        for (r, _) in records.iter().zip(fresh).filter(|(_, f)| **f) {
            match &r.outcome {
                // Pairs folded under (other) stay out of the graph.
                Outcome::Valid(Event::Music(m))
                    if store.holds_music_pair(&m.user_id, &m.track_id) =>
                {
                    self.graph.observe(m)
                }
                Outcome::Valid(Event::Track(t)) => self.graph.upsert_track(t),
                Outcome::Valid(Event::Movie(t)) => self.titles.upsert(super::affinity::MOVIE, t),
                Outcome::Valid(Event::Series(t)) => self.titles.upsert(super::affinity::SERIES, t),
                _ => {}
            }
        }
    }
}
