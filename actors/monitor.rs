//! Monitor actor: logs pipeline progress at a steady interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::ingest::pipeline::{Fatal, Progress};

pub struct MonitorActor {
    pub progress: Arc<Progress>,
    pub interval: Duration,
    last: (Instant, u64),
    /// Raised when the store stalls (see [`MonitorActor::watch_store`]).
    fatal: Arc<Fatal>,
    write_timeout: Duration,
    /// Batches stored when the store last moved, and when.
    store_moved: (u64, Instant),
}

impl MonitorActor {
    pub fn new(
        progress: Arc<Progress>,
        interval: Duration,
        fatal: Arc<Fatal>,
        write_timeout: Duration,
    ) -> MonitorActor {
        MonitorActor {
            progress,
            interval,
            last: (Instant::now(), 0),
            fatal,
            write_timeout,
            store_moved: (0, Instant::now()),
        }
    }

    /// A store write that takes longer than the timeout while batches wait is
    /// a fault: sled can wait on a full or failing disk instead of failing.
    fn watch_store(&mut self) {
        let p = &self.progress;
        let batches = Progress::get(&p.batches);
        if batches != self.store_moved.0 || Progress::get(&p.in_flight) == 0 {
            self.store_moved = (batches, Instant::now());
            return;
        }
        let waited = self.store_moved.1.elapsed();
        if waited >= self.write_timeout {
            self.fatal.raise(format!(
                "the store has not finished a write for {} s while batches wait (store.write_timeout_seconds); check free disk space and the disk's health",
                waited.as_secs()
            ));
        }
    }

    fn report(&mut self) {
        let p = &self.progress;
        let done = p.done();
        let dt = self.last.0.elapsed().as_secs_f64().max(1e-9);
        let rate = (done - self.last.1) as f64 / dt;
        self.last = (Instant::now(), done);
        tracing::info!(
            events_per_sec = rate.round() as u64,
            stored = Progress::get(&p.stored),
            rejected = Progress::get(&p.rejected),
            duplicates_skipped = Progress::get(&p.duplicates_skipped),
            produced = Progress::get(&p.produced),
            in_flight = Progress::get(&p.in_flight),
            "ingest: {:.0} events/s, {} stored, {} rejected",
            rate,
            Progress::get(&p.stored),
            Progress::get(&p.rejected)
        );
    }
}

impl Actor for MonitorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |a, _| a.report());
        ctx.run_interval(Duration::from_secs(1), |a, _| a.watch_store());
    }
}
