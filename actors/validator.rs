//! Validator actor: parsed batch → validated batch → store.

use actix::prelude::*;

use super::messages::{ParsedBatch, StoreBatch};
use crate::pipeline::validate_batch;
use crate::validate::Validator;

pub struct ValidatorActor {
    pub validator: Validator,
    pub store: Recipient<StoreBatch>,
}

impl Actor for ValidatorActor {
    type Context = Context<Self>;
}

impl Handler<ParsedBatch> for ValidatorActor {
    type Result = ();

    fn handle(&mut self, msg: ParsedBatch, _: &mut Context<Self>) {
        let records = validate_batch(&self.validator, msg.records);
        self.store.do_send(StoreBatch {
            records,
            ack: msg.ack,
        });
    }
}
