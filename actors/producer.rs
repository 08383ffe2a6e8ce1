//! Producer actor: sends a synthetic (or prepared) record stream to a topic at a
//! rate, and — against the embedded broker, which silently drops data past ~5 MiB
//! per partition — never more than `max_lag` records ahead of the store.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::messages::{ProducerControl, ProducerState, StopProducing};
use crate::ingest::pipeline::Progress;
use crate::kafka;
use crate::synth::produce::{Pacer, Synth};

/// What a producer sends.
pub enum Feed {
    Synth(Box<Synth>),
    /// Prepared (key, payload) records, sent once in order.
    Prepared {
        records: Vec<(Vec<u8>, Vec<u8>)>,
        next: usize,
    },
    /// `left` more video records made as they are sent (a share of them
    /// malformed), for runs too long to prepare in memory.
    Generated(Box<crate::synth::produce::VideoStream>),
}

impl Feed {
    fn send_next(
        &mut self,
        producer: &crate::kafka::Producer,
        topic: &str,
    ) -> Result<bool, kafka::KafkaGlueError> {
        match self {
            Feed::Synth(s) => s.send_next(producer, topic).map(|()| true),
            Feed::Prepared { records, next } => match records.get(*next) {
                Some((k, p)) => {
                    kafka::send(producer, topic, k, p, None)?;
                    *next += 1;
                    Ok(true)
                }
                None => Ok(false),
            },
            Feed::Generated(g) => match g.next_record() {
                Some((k, p)) => kafka::send(producer, topic, &k, &p, None).map(|()| true),
                None => Ok(false),
            },
        }
    }
}

pub struct ProducerActor {
    producer: crate::kafka::Producer,
    topic: String,
    feed: Feed,
    pacer: Pacer,
    max_lag: Option<u64>,
    progress: Arc<Progress>,
    sent: u64,
    running: bool,
    exhausted: bool,
}

/// Records sent per tick at most (ticks are 5 ms apart).
const MAX_PER_TICK: u64 = 20_000;

impl ProducerActor {
    pub fn new(
        producer: crate::kafka::Producer,
        topic: String,
        feed: Feed,
        rate: f64,
        max_lag: Option<u64>,
        progress: Arc<Progress>,
    ) -> ProducerActor {
        ProducerActor {
            producer,
            topic,
            feed,
            pacer: Pacer::new(rate),
            max_lag,
            progress,
            sent: 0,
            running: true,
            exhausted: false,
        }
    }

    /// A producer created stopped (started later by an operator).
    pub fn stopped(mut self) -> ProducerActor {
        self.running = false;
        self
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if !self.running {
            return;
        }
        let mut n = self.pacer.allowance().min(MAX_PER_TICK);
        if let Some(max_lag) = self.max_lag {
            let ahead = Progress::get(&self.progress.produced).saturating_sub(self.progress.done());
            n = n.min(max_lag.saturating_sub(ahead));
        }
        let mut sent = 0;
        for _ in 0..n {
            match self.feed.send_next(&self.producer, &self.topic) {
                Ok(true) => sent += 1,
                Ok(false) => {
                    self.running = false;
                    self.exhausted = true;
                    break;
                }
                Err(e) => {
                    tracing::error!("producer for {} stopped: {e}", self.topic);
                    self.running = false;
                    ctx.stop();
                    break;
                }
            }
        }
        self.pacer.sent(sent);
        self.sent += sent;
        Progress::add(&self.progress.produced, sent);
        self.producer.poll(Duration::ZERO);
    }
}

impl Actor for ProducerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(5), |a, ctx| a.tick(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Err(e) = kafka::flush(&self.producer, Duration::from_secs(10)) {
            tracing::warn!(
                "producer for {}: records left unsent at stop: {e}",
                self.topic
            );
        }
    }
}

impl Handler<ProducerControl> for ProducerActor {
    type Result = MessageResult<ProducerControl>;

    fn handle(&mut self, msg: ProducerControl, _: &mut Context<Self>) -> Self::Result {
        match msg {
            ProducerControl::Start if !self.exhausted => {
                if !self.running {
                    // Pace from now on, not from when it stopped.
                    self.pacer = Pacer::new(self.pacer.rate());
                }
                self.running = true;
            }
            ProducerControl::Start | ProducerControl::Status => {}
            ProducerControl::Stop => self.running = false,
            ProducerControl::Rate(r) => self.pacer = Pacer::new(r),
        }
        MessageResult(ProducerState {
            topic: self.topic.clone(),
            running: self.running,
            rate: self.pacer.rate(),
            sent: self.sent,
            exhausted: self.exhausted,
        })
    }
}

impl Handler<StopProducing> for ProducerActor {
    type Result = u64;

    fn handle(&mut self, _: StopProducing, ctx: &mut Context<Self>) -> u64 {
        self.running = false;
        ctx.stop();
        self.sent
    }
}
