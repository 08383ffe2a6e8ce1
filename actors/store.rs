//! Store actor: owns the sled store; writes each batch atomically and durably,
//! feeds the views (indexes, analytics) after the commit, then acknowledges the
//! batch so the parser may commit to Kafka. Reads that must see a state
//! between two batch writes (snapshots, status, stats, backups) are typed
//! messages answered here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix::prelude::*;

use super::messages::{
    Backup, CloseStore, GetCounters, GetStats, GetStoreStatus, StoreBatch, Stored, TakeSnapshot,
};
use crate::ingest::pipeline::{Ownership, Progress};
use crate::ml::train::{snapshot, Snapshot};
use crate::ml::TrainError;
use crate::store::{Stats, Store, StoreError};
use crate::views::analytics::Analytics;
use crate::views::indexes::SharedIndexes;

pub struct StoreActor {
    pub store: Store,
    pub namespace: String,
    pub progress: Arc<Progress>,
    /// The graph and titles indexes, fed with every durable batch.
    pub indexes: SharedIndexes,
    /// Live windows, fed with every durable batch.
    pub analytics: Arc<Mutex<Analytics>>,
    /// The partitions revoked since a batch was read (their records are
    /// left to their next owner).
    pub ownership: Arc<Ownership>,
    /// The fold-in, told which users each durable batch touched (none: off).
    pub fold: Option<super::fold::FoldSender>,
    /// The group's publisher, told each durable batch's pair changes (none: no group).
    pub share: Option<crate::cluster::PairFeed>,
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Retention also runs between batches: an idle log ages out, and the
        // segments the rollups held back at the last batch go once compacted.
        ctx.run_interval(std::time::Duration::from_secs(2), |a, _| {
            if let Err(e) = a.store.retain(crate::domain::timefmt::now_ms()) {
                tracing::error!("event retention failed (the log keeps them for now): {e}");
            }
            a.rewrite_when_due();
        });
    }
}

impl StoreActor {
    /// Starts a rewrite of the store's files when they have grown past
    /// `store.rewrite_ratio`, or takes in one that finished (see `store::rewrite`).
    fn rewrite_when_due(&mut self) {
        self.store.maybe_rewrite();
    }
}

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
        let result =
            self.ownership
                .write(&mut self.store, &self.namespace, msg.epoch, msg.prepared);
        let result = match result {
            Ok(w) => {
                if w.dropped > 0 {
                    tracing::info!(
                        "left {} records of revoked partitions to their next owner",
                        w.dropped
                    );
                    Progress::add(&self.progress.left_to_next_owner, w.dropped);
                }
                let c = w.committed;
                // Each part of the indexes is locked only when the batch
                // changes it: video-only batches (most of them) take none.
                self.indexes.observe(&self.store, &c.records, &c.fresh);
                let now = crate::domain::timefmt::now_ms();
                self.indexes.observe_trending(&c.records, &c.fresh, now);
                if let Ok(mut a) = self.analytics.lock() {
                    a.observe(&c.records, &c.fresh, now);
                }
                let mut changes = c.pairs;
                changes.retain(|p| p.user != crate::store::bounds::OTHER);
                if let (Some(tx), false) = (&self.share, changes.is_empty()) {
                    if tx.send(changes.clone()).is_err() {
                        tracing::error!(
                            "the group's publisher stopped: this member's pairs reach the group's trainer at its next start"
                        );
                        self.share = None;
                    }
                }
                if let (Some(tx), false) = (&self.fold, changes.is_empty()) {
                    let touched = super::fold::Touched {
                        changes,
                        committed: std::time::Instant::now(),
                    };
                    if tx.send(touched).is_err() {
                        tracing::warn!(
                            "the fold-in stopped: lists follow events at the next retrain only"
                        );
                        self.fold = None;
                    }
                }
                // Past the retention: the oldest segments go (a few hundred a batch).
                if let Err(e) = self.store.retain(crate::domain::timefmt::now_ms()) {
                    tracing::error!("event retention failed (the log keeps them for now): {e}");
                }
                let (p, r) = (&self.progress, &c.report);
                Progress::add(&p.stored, r.stored);
                Progress::add(&p.rejected, r.rejected);
                Progress::add(&p.duplicates_skipped, r.duplicates_skipped);
                Progress::add(&p.batches, 1);
                Progress::add(&p.store_prepare_ns, r.prepare_ns);
                Progress::add(&p.store_write_ns, r.write_ns);
                Progress::add(&p.store_flush_ns, r.flush_ns);
                Ok(c.report)
            }
            Err(e) => {
                tracing::error!("store write failed, batch not acknowledged: {e}");
                Err(e)
            }
        };
        msg.ack.do_send(Stored { result });
        // After the acknowledgement: the batch is not held up by a rewrite.
        self.rewrite_when_due();
    }
}

impl Handler<TakeSnapshot> for StoreActor {
    type Result = Result<Snapshot, TrainError>;

    fn handle(&mut self, msg: TakeSnapshot, _: &mut Context<Self>) -> Self::Result {
        let catalog = self
            .indexes
            .catalog()
            .map_err(|e| TrainError::Failed(e.to_string()))?;
        snapshot(&self.store, &catalog.titles, &msg.0)
    }
}

impl Handler<GetStoreStatus> for StoreActor {
    type Result = MessageResult<GetStoreStatus>;

    fn handle(&mut self, msg: GetStoreStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.store.status(&msg.namespace))
    }
}

impl Handler<GetStats> for StoreActor {
    type Result = Result<Stats, StoreError>;

    fn handle(&mut self, msg: GetStats, _: &mut Context<Self>) -> Self::Result {
        self.store.stats(msg.0)
    }
}

impl Handler<GetCounters> for StoreActor {
    type Result = Result<BTreeMap<String, u64>, StoreError>;

    fn handle(&mut self, _: GetCounters, _: &mut Context<Self>) -> Self::Result {
        self.store.counters()
    }
}

impl Handler<Backup> for StoreActor {
    type Result = Result<(u64, u64), StoreError>;

    fn handle(&mut self, msg: Backup, _: &mut Context<Self>) -> Self::Result {
        self.store.backup(&msg.dest)
    }
}
