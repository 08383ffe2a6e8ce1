//! The in-memory indexes over what the store holds: the listening graph
//! (edges from the listening aggregates, tracks from the catalog) and every
//! movie and series (content affinity, titles in lists). Built from the store
//! at start and fed after every committed batch; any thread reads them
//! through [`SharedIndexes`] without waiting on the store's writes.

use std::sync::{Arc, RwLock};

use super::affinity::CatalogIndex;
use super::graph::MusicGraph;
use crate::domain::event::Event;
use crate::domain::record::{Outcome, Processed};
use crate::store::{bounds, Store, StoreError, StoreView};

#[derive(Default)]
pub struct Indexes {
    /// The listening graph's index over the stored edges.
    pub graph: MusicGraph,
    /// Every stored movie and series (latest record).
    pub titles: CatalogIndex,
}

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
    /// Builds both indexes from what the store holds.
    pub fn build(store: &Store) -> Result<Indexes, StoreError> {
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
        Ok(Indexes { graph, titles })
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
                Outcome::Valid(Event::Movie(t)) => self.titles.upsert("movie", t),
                Outcome::Valid(Event::Series(t)) => self.titles.upsert("series", t),
                _ => {}
            }
        }
    }
}
