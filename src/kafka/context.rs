//! The consumer's context: the client library's callbacks, forwarded — logs
//! to tracing, rebalances to the group membership ([`super::group`]).

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};

use super::group::Membership;

/// The consumer's context: it holds the group membership and forwards the
/// client's rebalances to it; logs go to tracing.
pub struct StoreSeekContext {
    pub(super) membership: Membership,
}

impl ClientContext for StoreSeekContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "{fac}: {log_message}")
            }
            // The broker dropped records before this consumer read them (retention;
            // the embedded broker keeps ~5 MiB a partition): they cannot be stored.
            RDKafkaLogLevel::Warning if log_message.contains("Offset out of range") => {
                tracing::error!(
                    target: "librdkafka",
                    "records lost before they were read (broker retention; slow the producers or raise retention): {fac}: {log_message}"
                )
            }
            // Async commits refused while the group rebalances: the hand-over
            // commits synchronously once the partitions are revoked.
            RDKafkaLogLevel::Warning
                if fac == "COMMITFAIL" && log_message.contains("rebalance in progress") =>
            {
                tracing::debug!(target: "librdkafka", "{fac}: {log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "{fac}: {log_message}")
            }
            _ => tracing::debug!(target: "librdkafka", "{fac}: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "kafka client error: {error}: {reason}");
    }
}

impl ConsumerContext for StoreSeekContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.membership.rebalance(consumer, err, tpl)
    }
}
