//! The in-memory indexes over what the store holds: the listening graph
//! (edges from the listening aggregates, tracks from the catalog) and every
//! movie and series (content affinity, titles in lists). Built from the store
//! at start and fed after every committed batch; any thread reads them
//! through [`SharedIndexes`] without waiting on the store's writes.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};

use super::affinity::CatalogIndex;
use super::graph::MusicGraph;
use super::trending::{Trending, TrendingView};
use crate::domain::event::Event;
use crate::domain::record::{Outcome, Processed};
use crate::store::{bounds, Store, StoreError, StoreView};

pub struct Indexes {
    /// The listening graph's index over the stored edges.
    pub graph: MusicGraph,
    /// Every stored movie and series (latest record).
    pub titles: CatalogIndex,
    /// Time-decayed popularity, fed with every batch by the store's writer
    /// (behind a lock of its own, which only the writer takes: video batches
    /// feed it without the indexes' write lock).
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
            ..Indexes::with_trending(trending)
        })
    }

    /// Empty indexes over the trending scores `scores`, published.
    fn with_trending(scores: Trending) -> Indexes {
        Indexes {
            graph: MusicGraph::default(),
            titles: CatalogIndex::default(),
            trending_view: ArcSwap::from_pointee(scores.view()),
            trending: Mutex::new(scores),
        }
    }

    /// The trending scores as of the last batch.
    pub fn trending(&self) -> Guard<Arc<TrendingView>> {
        self.trending_view.load()
    }

    /// Feeds the trending scores with one committed batch's new events and
    /// publishes them: a request made once the batch is stored sees it.
    pub fn observe_trending(&self, records: &[Processed], fresh: &[bool], now_ms: i64) {
        let Ok(mut t) = self.trending.lock() else {
            return;
        };
        let mut observed = false;
        for (r, _) in records.iter().zip(fresh).filter(|(_, f)| **f) {
            if let Outcome::Valid(e @ (Event::Video(_) | Event::Music(_))) = &r.outcome {
                t.observe(e, now_ms, |track| {
                    self.graph.track_genre(track).map(str::to_string)
                });
                observed = true;
            }
        }
        if observed {
            self.trending_view.store(Arc::new(t.view()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::{FormatHeaders, SourcePos};
    use crate::synth::generate::{VideoGen, World};
    use crate::views::trending::TrendingItem;

    fn batch(video: &str, n: usize) -> Vec<Processed> {
        let mut g = VideoGen::new(World::new(5, 5, 1), 1, 1_735_689_600_000, 50);
        (0..n)
            .map(|i| {
                let mut v = g.next_event();
                v.video_id = video.into();
                Processed {
                    pos: SourcePos {
                        topic: Arc::from("views"),
                        partition: 0,
                        offset: i as i64,
                    },
                    origin: None,
                    headers: FormatHeaders::default(),
                    outcome: Outcome::Valid(Event::Video(v)),
                }
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
}
