//! Parser actor: consumes Kafka in batches (claimed in the group before they go
//! on, see `claims`), parses them, hands them to the validator; where the
//! brokers drop commit metadata, commits when the store acknowledges a batch. At most
//! `max_in_flight` batches are between here and the store (backpressure).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rdkafka::consumer::CommitMode;
use tokio::sync::oneshot;

use super::messages::{Drain, ParsedBatch, PauseError, Pull, SetPaused, Stored};
use crate::ingest::pipeline::{parse_batch, Progress};
use crate::kafka::{Source, TopicKinds};

pub struct ParserActor {
    source: Option<Source>,
    kinds: TopicKinds,
    validator: Recipient<ParsedBatch>,
    batch_size: usize,
    linger: Duration,
    max_in_flight: usize,
    in_flight: usize,
    /// Waiting for an acknowledgement before pulling again.
    blocked: bool,
    draining: bool,
    drained: Vec<oneshot::Sender<()>>,
    /// Latest acknowledged next offset per partition, committed synchronously on drain.
    acked: HashMap<(String, i32), i64>,
    progress: Arc<Progress>,
    fatal: Arc<crate::ingest::pipeline::Fatal>,
    /// A batch could not be stored: nothing more is read.
    failed: bool,
}

impl ParserActor {
    pub fn new(
        source: Source,
        kinds: TopicKinds,
        validator: Recipient<ParsedBatch>,
        ingest: &crate::config::IngestConfig,
        progress: Arc<Progress>,
        fatal: Arc<crate::ingest::pipeline::Fatal>,
    ) -> ParserActor {
        ParserActor {
            source: Some(source),
            kinds,
            validator,
            batch_size: ingest.batch_size,
            linger: ingest.batch_linger,
            max_in_flight: ingest.max_in_flight_batches,
            in_flight: 0,
            blocked: false,
            draining: false,
            drained: Vec::new(),
            acked: HashMap::new(),
            progress,
            fatal,
            failed: false,
        }
    }

    fn finish_drain(&mut self) {
        if let Some(source) = self.source.take() {
            let offsets: Vec<(String, i32, i64)> =
                self.acked.drain().map(|((t, p), o)| (t, p, o)).collect();
            source.commit(&offsets, CommitMode::Sync);
            source.close();
        }
        for tx in self.drained.drain(..) {
            let _ = tx.send(());
        }
    }
}

impl Actor for ParserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Pull);
    }
}

impl Handler<Pull> for ParserActor {
    type Result = ();

    fn handle(&mut self, _: Pull, ctx: &mut Context<Self>) {
        if self.draining || self.failed {
            return;
        }
        if self.in_flight >= self.max_in_flight {
            self.blocked = true;
            return;
        }
        let Some(source) = &mut self.source else {
            return;
        };
        let t = std::time::Instant::now();
        let raws = source.next_batch(self.batch_size, self.linger);
        // Revocations happen inside the consumer's polls, on this thread:
        // every record of the batch was read in this epoch.
        let epoch = source.epoch();
        if !raws.is_empty() {
            Progress::time(&self.progress.poll_ns, t);
        }
        if !raws.is_empty() {
            let bytes: usize = raws.iter().map(|r| r.payload.len()).sum();
            Progress::add(&self.progress.consumed, raws.len() as u64);
            Progress::add(&self.progress.bytes, bytes as u64);
            let t = std::time::Instant::now();
            let records = parse_batch(&self.kinds, raws);
            Progress::time(&self.progress.parse_ns, t);
            self.in_flight += 1;
            Progress::add(&self.progress.in_flight, 1);
            self.validator.do_send(ParsedBatch {
                records,
                epoch,
                ack: ctx.address().recipient(),
            });
        }
        ctx.notify(Pull);
    }
}

impl Handler<Stored> for ParserActor {
    type Result = ();

    fn handle(&mut self, msg: Stored, ctx: &mut Context<Self>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.progress
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        match msg.result {
            Ok(report) => {
                if let Some(source) = &self.source {
                    source.commit(&report.offsets, CommitMode::Async);
                }
                for (t, p, o) in report.offsets {
                    self.acked.insert((t, p), o);
                }
            }
            Err(e) => {
                // Nothing of the batch was stored, and it cannot be retried in order:
                // stop the daemon; a restart replays from the stored offsets.
                tracing::error!("stopping: the store cannot write ({e})");
                self.failed = true;
                self.fatal
                    .raise(format!("the store cannot write ({e}); nothing after the last stored batch was acknowledged"));
                if self.draining && self.in_flight == 0 {
                    self.finish_drain();
                }
                return;
            }
        }
        if self.draining {
            if self.in_flight == 0 {
                self.finish_drain();
            }
        } else if self.blocked {
            self.blocked = false;
            ctx.notify(Pull);
        }
    }
}

impl Handler<Drain> for ParserActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        let (tx, rx) = oneshot::channel();
        self.drained.push(tx);
        if self.in_flight == 0 {
            self.finish_drain();
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<SetPaused> for ParserActor {
    type Result = Result<(), PauseError>;

    fn handle(&mut self, msg: SetPaused, _: &mut Context<Self>) -> Self::Result {
        let source = self.source.as_ref().ok_or(PauseError::ShuttingDown)?;
        source.set_paused(msg.0)?;
        tracing::info!("ingest {}", if msg.0 { "paused" } else { "resumed" });
        Ok(())
    }
}

impl Drop for ParserActor {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            source.close();
        }
    }
}
