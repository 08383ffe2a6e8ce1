//! The listening graph shared between its one writer (the store's, after each
//! committed batch) and any number of readers (graph queries, recommendations,
//! the fold-in), as two copies (`left-right`): readers read one while the
//! writer changes the other, then the two swap. A read never waits for the
//! writer, however long a batch of listens takes to apply or however long the
//! writer (at background priority) is preempted while applying it; the writer
//! waits only for reads already under way on the copy it takes back. The cost
//! is the graph held twice and every change applied twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use left_right::{Absorb, ReadHandle, ReadHandleFactory, WriteHandle};

use super::MusicGraph;
use crate::domain::event::{MusicEvent, Track};

/// One change to the graph, applied to each copy in turn.
pub enum GraphOp {
    Track(Track),
    Listen(MusicEvent),
    /// The whole graph (the one built at start), before anyone reads.
    Whole(Box<MusicGraph>),
}

impl MusicGraph {
    fn apply(&mut self, op: &GraphOp) {
        match op {
            GraphOp::Track(t) => self.upsert_track(t),
            GraphOp::Listen(m) => self.observe(m),
            GraphOp::Whole(g) => *self = MusicGraph::clone(g),
        }
    }
}

// Applying an op depends only on the graph and the op (ids are numbered in
// order of first appearance, counts are sums), so two equal copies stay equal.
impl Absorb<GraphOp> for MusicGraph {
    fn absorb_first(&mut self, op: &mut GraphOp, _: &Self) {
        self.apply(op)
    }

    fn absorb_second(&mut self, op: GraphOp, _: &Self) {
        match op {
            GraphOp::Whole(g) => *self = *g,
            op => self.apply(&op),
        }
    }

    fn sync_with(&mut self, first: &Self) {
        *self = first.clone()
    }
}

/// Read handles made at the start and kept for reuse. A handle is made (and
/// dropped) under the lock the writer holds while it waits for the reads
/// under way on its copy to end, so a read takes a kept one: only beyond this
/// many reads at once does a read make one, and then it may wait for the
/// longest read under way.
const KEPT_HANDLES: usize = 64;

/// The graph, read without waiting and written by one writer at a time.
pub struct SharedGraph {
    writer: Mutex<WriteHandle<MusicGraph, GraphOp>>,
    factory: ReadHandleFactory<MusicGraph>,
    kept: Mutex<Vec<ReadHandle<MusicGraph>>>,
    /// A change panicked half applied: the copies can no longer be trusted.
    poisoned: AtomicBool,
}

impl Default for SharedGraph {
    fn default() -> Self {
        SharedGraph::new(MusicGraph::default())
    }
}

impl SharedGraph {
    /// `graph` shared (it is copied once, for the second side).
    pub fn new(graph: MusicGraph) -> SharedGraph {
        let (mut w, r) = left_right::new_from_empty::<MusicGraph, GraphOp>(MusicGraph::default());
        // Before the first publication a change goes to the writer's side
        // alone: the graph moves in. The first publication hands it to the
        // readers; the second copies it to the writer's side (no reader can
        // be waited for yet), so no batch pays for that copy.
        w.append(GraphOp::Whole(Box::new(graph)));
        w.publish();
        w.publish();
        SharedGraph {
            writer: Mutex::new(w),
            factory: r.factory(),
            kept: Mutex::new(
                std::iter::repeat_with(|| r.clone())
                    .take(KEPT_HANDLES)
                    .collect(),
            ),
            poisoned: AtomicBool::new(false),
        }
    }

    /// `f` over the graph as of the last applied batch; none once a change
    /// panicked (the copies may differ and hold half a batch).
    pub fn read<R>(&self, f: impl FnOnce(&MusicGraph) -> R) -> Option<R> {
        if self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let handle = kept.unwrap_or_else(|| self.factory.handle());
        let out = handle.enter().map(|g| f(&g));
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < KEPT_HANDLES {
            kept.push(handle);
        }
        out
    }

    /// Applies `ops` and publishes them: a read that starts once this returns
    /// sees them all, one under way sees none of them.
    pub fn apply(&self, ops: impl IntoIterator<Item = GraphOp>) {
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.poisoned.load(Ordering::Acquire) {
            return;
        }
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.extend(ops);
            w.publish();
        }));
        if let Err(p) = done {
            self.poisoned.store(true, Ordering::Release);
            tracing::error!(
                "applying a batch to the listening graph panicked ({}): graph queries answer with an error until a restart rebuilds it",
                crate::domain::worker::panic_message(p.as_ref())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::domain::event::{Event, MusicAction};
    use crate::synth::generate::{user_id, MusicGen};

    /// What the queries answer, for comparing two graphs.
    fn answers(g: &MusicGraph, users: &[String], names: &[(String, String)]) -> String {
        let mut out = format!("{} {} {}\n", g.users(), g.tracks(), g.edges());
        for a in MusicAction::ALL {
            out += &format!("{:?}\n", g.top_edges(a, 0, 50));
        }
        for u in users {
            out += &format!("{:?}\n{:?}\n", g.also_liked(u, 0, 50), g.edges_of(u).len());
        }
        for (artist, genre) in names {
            out += &format!("{:?}\n", g.artist_neighbours(artist, 0, 50));
            out += &format!("{:?}\n", g.genre_neighbours(genre, 0, 50));
            out += &format!("{:?}\n", g.artist_tracks(artist, 0, 50));
        }
        out
    }

    #[test]
    fn both_copies_follow_every_batch_as_one_graph_would() {
        let mut gen = MusicGen::new(40, 30, 7, 1_767_225_600_000);
        let users: Vec<String> = (0..30).map(user_id).collect();
        let names: Vec<(String, String)> = (0..40)
            .map(|t| gen.track(t))
            .map(|t| (t.artist, t.genre))
            .collect();
        let mut one = MusicGraph::default();
        // Started from a graph built before it is shared, as the daemon does.
        for _ in 0..200 {
            if let Event::Music(m) = gen.next_record() {
                one.observe(&m);
            }
        }
        let shared = SharedGraph::new(one.clone());
        assert_eq!(
            shared.read(|g| answers(g, &users, &names)),
            Some(answers(&one, &users, &names))
        );
        // Batches of listens and track records (which move listeners between
        // artists and genres); reads alternate between the two copies.
        let mut tracks_moved = 0;
        for batch in 0..30 {
            let mut ops = Vec::new();
            for i in 0..25 {
                match gen.next_record() {
                    Event::Music(m) => {
                        one.observe(&m);
                        ops.push(GraphOp::Listen(m));
                    }
                    Event::Track(t) => {
                        one.upsert_track(&t);
                        ops.push(GraphOp::Track(t));
                    }
                    _ => {}
                }
                if i == 0 && batch % 3 == 0 {
                    let mut t = gen.track(batch % 40);
                    t.artist = format!("moved-{batch}");
                    one.upsert_track(&t);
                    ops.push(GraphOp::Track(t));
                    tracks_moved += 1;
                }
            }
            shared.apply(ops);
            assert_eq!(
                shared.read(|g| answers(g, &users, &names)),
                Some(answers(&one, &users, &names)),
                "batch {batch}"
            );
        }
        assert_eq!(tracks_moved, 10);
        assert!(one.edges() > 100, "{}", one.edges());
    }

    #[test]
    fn a_read_does_not_wait_for_a_writer_waiting_on_an_older_read() {
        let mut gen = MusicGen::new(10, 10, 3, 1_767_225_600_000);
        let mut listens = std::iter::from_fn(|| loop {
            if let Event::Music(m) = gen.next_record() {
                return Some(m);
            }
        });
        let shared = SharedGraph::default();
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let (first, mut second) = (listens.next().unwrap(), listens.next().unwrap());
        second.user_id = format!("not {}", first.user_id).into();
        std::thread::scope(|s| {
            // A long read holds the copy readers had before the first batch.
            let shared = &shared;
            let long = s.spawn(move || {
                shared.read(|g| {
                    entered_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    g.edges()
                })
            });
            entered.recv().unwrap();
            // The first batch goes to the other copy and is published.
            shared.apply([GraphOp::Listen(first)]);
            // The second must wait for the long read to leave its copy.
            let writer = s.spawn(move || shared.apply([GraphOp::Listen(second)]));
            // Meanwhile a read answers, with the first batch in: a deadlock
            // detector, not a timing (it waits for nothing, so it comes at
            // once or never).
            let (tx, rx) = mpsc::channel();
            s.spawn(move || tx.send(shared.read(|g| g.edges())).unwrap());
            let got = rx.recv_timeout(Duration::from_secs(60));
            let writer_waited = !writer.is_finished();
            // Released before any assertion, so a failure ends the test
            // instead of leaving its threads waiting on each other.
            release.send(()).unwrap();
            assert_eq!(got, Ok(Some(1)), "a read waited for the writer");
            assert!(writer_waited, "the writer did not wait for the long read");
            assert_eq!(long.join().unwrap(), Some(0));
            writer.join().unwrap();
        });
        assert_eq!(shared.read(|g| g.edges()), Some(2));
    }
}
