//! The embedded Kafka-protocol broker (librdkafka's mock cluster).

use super::*;

/// The embedded Kafka-protocol broker (librdkafka's mock cluster). It lives on
/// its own thread (it is not `Send`) until this handle is dropped.
pub struct Embedded {
    pub bootstrap: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Embedded {
    /// Starts the broker with these topics: (name, partitions).
    pub fn start(topics: &[(String, i32)]) -> Result<Embedded, KafkaGlueError> {
        let (tx, rx) = std::sync::mpsc::channel::<Result<String, KafkaGlueError>>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let topics = topics.to_vec();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                // The broker's threads carry ingest: throughput work.
                crate::domain::worker::background_priority();
                let cluster = match rdkafka::mocking::MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(KafkaGlueError::Client(e)));
                        return;
                    }
                };
                for (t, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(t, *partitions, 1) {
                        let _ = tx.send(Err(KafkaGlueError::Topic {
                            topic: t.clone(),
                            message: format!("the embedded broker cannot create it: {e}"),
                        }));
                        return;
                    }
                }
                let _ = tx.send(Ok(cluster.bootstrap_servers()));
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|e| KafkaGlueError::Embedded(e.to_string()))?;
        // A start that panicked drops `tx`: the receive fails and says so.
        let bootstrap = rx.recv().map_err(|_| {
            KafkaGlueError::Embedded(
                "its thread ended before the broker started (see the log)".into(),
            )
        })??;
        Ok(Embedded {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
