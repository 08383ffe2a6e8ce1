//! Topics the daemon itself needs (the group's shared topics), created when
//! missing.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::config::KafkaConfig;
use super::*;

/// Creates each of `specs` (name, partitions, compacted) that does not exist:
/// replicated as the brokers' default, else once. A broker that cannot
/// (librdkafka's mock cluster creates topics on first use) is noted in the log.
pub fn ensure_topics(brokers: &str, cfg: &KafkaConfig, specs: &[(String, i32, bool)]) {
    let (brokers, cfg, specs) = (brokers.to_string(), cfg.clone(), specs.to_vec());
    // The admin client answers futures; a thread of its own runs them.
    let run = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return tracing::warn!("cannot create the group's topics: {e}"),
        };
        rt.block_on(create(&brokers, &cfg, &specs));
    });
    if run.join().is_err() {
        tracing::warn!("creating the group's topics panicked; they are created on first use");
    }
}

async fn create(brokers: &str, cfg: &KafkaConfig, specs: &[(String, i32, bool)]) {
    let admin: AdminClient<DefaultClientContext> = match base_config(brokers, cfg).create() {
        Ok(a) => a,
        Err(e) => return tracing::warn!("cannot create the group's topics: {e}"),
    };
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    for (name, partitions, compact) in specs {
        if check_topic(brokers, cfg, name, Duration::from_secs(10)).is_ok() {
            continue;
        }
        let mut done = false;
        for replication in [-1, 1] {
            let mut t = NewTopic::new(name, *partitions, TopicReplication::Fixed(replication));
            if *compact {
                t = t.set("cleanup.policy", "compact");
            }
            match admin.create_topics([&t], &opts).await {
                Ok(results) => match results.into_iter().next() {
                    Some(Ok(_)) => {
                        tracing::info!(
                            "created topic {name} ({partitions} partition(s){})",
                            if *compact { ", compacted" } else { "" }
                        );
                        done = true;
                    }
                    Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => done = true,
                    Some(Err((_, e))) => {
                        tracing::debug!("creating topic {name} with replication {replication}: {e}")
                    }
                    None => {}
                },
                Err(e) => tracing::debug!("creating topic {name}: {e}"),
            }
            if done {
                break;
            }
        }
        if !done {
            tracing::info!(
                "topic {name} was not created here (the brokers create it on first use, or create it: {partitions} partition(s){})",
                if *compact { ", cleanup.policy=compact" } else { "" }
            );
        }
    }
}
