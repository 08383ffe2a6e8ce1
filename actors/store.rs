//! Store actor: owns the sled store; writes each batch atomically and durably,
//! then acknowledges it so the parser may commit to Kafka.

use std::sync::{Arc, Mutex};

use actix::prelude::*;

use super::messages::{StoreBatch, Stored};
use crate::ingest::pipeline::{Flight, Progress};
use crate::store::Store;
use crate::views::analytics::Analytics;

pub struct StoreActor {
    pub store: Store,
    pub namespace: String,
    pub progress: Arc<Progress>,
    /// Live windows, fed with every durable batch.
    pub analytics: Arc<Mutex<Analytics>>,
    /// Settled batches, for hand-overs of revoked partitions.
    pub flight: Arc<Flight>,
}

impl Actor for StoreActor {
    type Context = Context<Self>;
}

/// Checkpoint and flush before the daemon exits.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseStore;

impl Handler<CloseStore> for StoreActor {
    type Result = ();

    fn handle(&mut self, _: CloseStore, _: &mut Context<Self>) {
        if let Err(e) = self.store.close() {
            tracing::error!(
                "store checkpoint at shutdown failed (the journal still has everything): {e}"
            );
        }
    }
}

impl Handler<StoreBatch> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: StoreBatch, _: &mut Context<Self>) {
        let analytics = &self.analytics;
        let result = self
            .store
            .apply_observed(&self.namespace, msg.prepared, |records, fresh| {
                if let Ok(mut a) = analytics.lock() {
                    a.observe(records, fresh, crate::domain::timefmt::now_ms());
                }
            });
        match &result {
            Ok(r) => {
                let p = &self.progress;
                Progress::add(&p.stored, r.stored);
                Progress::add(&p.rejected, r.rejected);
                Progress::add(&p.duplicates_skipped, r.duplicates_skipped);
                Progress::add(&p.batches, 1);
                Progress::add(&p.store_prepare_ns, r.prepare_ns);
                Progress::add(&p.store_write_ns, r.write_ns);
                Progress::add(&p.store_flush_ns, r.flush_ns);
            }
            Err(e) => tracing::error!("store write failed, batch not acknowledged: {e}"),
        }
        self.flight.settled();
        msg.ack.do_send(Stored {
            result: result.map_err(|e| e.to_string()),
        });
    }
}

/// Runs a closure against the store on the store's thread (reads for status, tests, benches).
pub struct WithStore<F>(pub F);

impl<F, R> Message for WithStore<F>
where
    F: FnOnce(&Store) -> R,
    R: 'static,
{
    type Result = R;
}

impl<F, R> Handler<WithStore<F>> for StoreActor
where
    F: FnOnce(&Store) -> R,
    R: 'static,
{
    type Result = MessageResult<WithStore<F>>;

    fn handle(&mut self, msg: WithStore<F>, _: &mut Context<Self>) -> Self::Result {
        MessageResult((msg.0)(&self.store))
    }
}

/// Like [`WithStore`], with the store mutable (checkpoints, snapshots).
pub struct WithStoreMut<F>(pub F);

impl<F, R> Message for WithStoreMut<F>
where
    F: FnOnce(&mut Store) -> R,
    R: 'static,
{
    type Result = R;
}

impl<F, R> Handler<WithStoreMut<F>> for StoreActor
where
    F: FnOnce(&mut Store) -> R,
    R: 'static,
{
    type Result = MessageResult<WithStoreMut<F>>;

    fn handle(&mut self, msg: WithStoreMut<F>, _: &mut Context<Self>) -> Self::Result {
        MessageResult((msg.0)(&mut self.store))
    }
}
