//! Monitor actor: logs pipeline progress at a steady interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::pipeline::Progress;

pub struct MonitorActor {
    pub progress: Arc<Progress>,
    pub interval: Duration,
    last: (Instant, u64),
}

impl MonitorActor {
    pub fn new(progress: Arc<Progress>, interval: Duration) -> MonitorActor {
        MonitorActor {
            progress,
            interval,
            last: (Instant::now(), 0),
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
    }
}
