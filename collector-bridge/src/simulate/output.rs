//! Where simulated records go: the in-process pipeline through a channel
//! ([`ChannelOutput`]) or a Kafka topic ([`KafkaOutput`]).

use std::sync::{mpsc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use super::SimError;

/// Receives the encoded records of visitors (key = party id).
pub trait RecordOutput: Send + Sync {
    /// Takes one record.
    fn send(&self, key: &str, record: Vec<u8>) -> Result<(), SimError>;
}

/// Records sent through a channel to the in-process pipeline.
pub struct ChannelOutput(pub Mutex<mpsc::SyncSender<Vec<u8>>>);

impl RecordOutput for ChannelOutput {
    fn send(&self, _key: &str, record: Vec<u8>) -> Result<(), SimError> {
        let tx = self
            .0
            .lock()
            .map_err(|_| SimError::Output("channel poisoned".into()))?
            .clone();
        tx.send(record)
            .map_err(|_| SimError::Output("pipeline stopped".into()))
    }
}

/// Sends simulated records to a Kafka topic.
pub struct KafkaOutput {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
}

impl KafkaOutput {
    /// A producer for `topic` on `brokers`.
    pub fn new(
        brokers: &str,
        topic: &str,
        options: &[(String, String)],
    ) -> Result<KafkaOutput, KafkaError> {
        let mut pc = ClientConfig::new();
        pc.set("bootstrap.servers", brokers).set("linger.ms", "5");
        for (k, v) in options {
            pc.set(k, v);
        }
        Ok(KafkaOutput {
            producer: pc.create()?,
            topic: topic.to_string(),
        })
    }

    /// Waits until every record is delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

impl RecordOutput for KafkaOutput {
    fn send(&self, key: &str, record: Vec<u8>) -> Result<(), SimError> {
        let mut rec = BaseRecord::to(&self.topic).key(key).payload(&record);
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(SimError::Output(e.to_string())),
            }
        }
    }
}
