//! The trainer role: this member's consumer in `<kafka.group_id>.trainer`,
//! subscribed to the one-partition topic `coord`. Kafka assigns that
//! partition to one member of the group at a time: that member trains. The
//! assignment is cooperative-sticky, so the role moves only when its holder
//! leaves (or misses the session timeout).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

use super::{Cluster, Deps};

struct RoleContext {
    cluster: Cluster,
}

impl ClientContext for RoleContext {}

impl ConsumerContext for RoleContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            let coord = &self.cluster.inner.topics.coord;
            if tpl.elements().iter().any(|e| e.topic() == coord) {
                self.set(false);
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            // Incremental: an assignment names what is added (the role stays
            // where it is unless revoked).
            Rebalance::Assign(tpl) => {
                let coord = &self.cluster.inner.topics.coord;
                if tpl
                    .elements()
                    .iter()
                    .any(|e| e.topic() == coord && e.partition() == 0)
                {
                    self.set(true);
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(
                    "the trainer role's group: {e}; this member does not train until it rejoins"
                );
                self.set(false);
            }
        }
    }
}

impl RoleContext {
    fn set(&self, trainer: bool) {
        let was = self.cluster.inner.trainer.swap(trainer, Ordering::SeqCst);
        if was != trainer {
            if trainer {
                tracing::info!(
                    "this member ({}) now trains for the group",
                    self.cluster.member()
                );
            } else {
                tracing::info!(
                    "this member ({}) no longer trains for the group",
                    self.cluster.member()
                );
            }
        }
    }
}

pub fn spawn(
    cluster: &Cluster,
    deps: &Deps,
) -> Result<std::thread::JoinHandle<()>, super::ClusterError> {
    let group = format!("{}.trainer", deps.kafka.group_id);
    let consumer: BaseConsumer<RoleContext> = crate::kafka::base_config(&deps.brokers, &deps.kafka)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        // Sticky: a member joining or leaving does not move the role from a
        // member that stays.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create_with_context(RoleContext {
            cluster: cluster.clone(),
        })
        .map_err(crate::kafka::KafkaGlueError::from)?;
    consumer
        .subscribe(&[cluster.inner.topics.coord.as_str()])
        .map_err(crate::kafka::KafkaGlueError::from)?;
    let cluster = cluster.clone();
    Ok(std::thread::Builder::new()
        .name("group-role".into())
        .spawn(move || {
            cluster.supervise("trainer role", |_| {
                while !cluster.stopping() {
                    // Nothing is produced to `coord`: polling serves the
                    // group's heartbeats and rebalances.
                    if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
                        tracing::debug!("trainer role consumer: {e}");
                    }
                }
            });
            // Leaving at once hands the role over without the session timeout.
            consumer.unsubscribe();
            let _ = consumer.poll(Duration::from_millis(100));
            cluster.inner.trainer.store(false, Ordering::SeqCst);
        })?)
}
