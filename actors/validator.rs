//! Validator actor: parsed batch → validated and prepared batch (events encoded,
//! aggregate deltas summed) → store.

use actix::prelude::*;

use super::messages::{ParsedBatch, StoreBatch};
use std::sync::Arc;

use crate::ingest::pipeline::{validate_batch, Progress};
use crate::ingest::validate::Validator;
use crate::store::{prepare_with, rollup};

pub struct ValidatorActor {
    pub validator: Validator,
    pub progress: Arc<Progress>,
    pub store: Recipient<StoreBatch>,
    /// How the rollups are kept (their deltas are summed here).
    pub rollup: rollup::Tuning,
}

impl Actor for ValidatorActor {
    type Context = Context<Self>;
}

impl Handler<ParsedBatch> for ValidatorActor {
    type Result = ();

    fn handle(&mut self, msg: ParsedBatch, _: &mut Context<Self>) {
        let t = std::time::Instant::now();
        let records = validate_batch(&self.validator, msg.records);
        Progress::time(&self.progress.validate_ns, t);
        let t = std::time::Instant::now();
        let prepared = prepare_with(records, &self.rollup);
        Progress::time(&self.progress.prepare_ns, t);
        self.store.do_send(StoreBatch {
            prepared,
            epoch: msg.epoch,
            ack: msg.ack,
        });
    }
}
