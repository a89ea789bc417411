//! The `kind = "kafka"` alert sink: each notification one record on a
//! Kafka topic. It lives here, with the other Kafka clients, and reaches
//! the alert crate through [`tacet_alert::sink::SinkKinds`]: the binary
//! registers it with [`register`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tacet_alert::Notification;
use tacet_alert::sink::{AlertSink, SinkError, SinkKinds};
use tacet_core::Config;
use tacet_core::config::{AlertSinkKind, SourceKind};

/// Writes each notification as one record to a Kafka topic: key = incident
/// id (so an incident's notifications stay in order on one partition), the
/// JSON as value, and an `idempotency-key` header for consumers that dedupe.
pub struct KafkaSink {
    producer: BaseProducer<KafkaDelivery>,
    topic: String,
    timeout: Duration,
}

/// The outcome of the last delivery, set by librdkafka's callback.
#[derive(Default)]
pub struct KafkaDelivery {
    error: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for KafkaDelivery {}

impl rdkafka::producer::ProducerContext for KafkaDelivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
    }
}

impl KafkaSink {
    /// A producer for `topic` on `brokers`, with extra librdkafka `properties`.
    pub fn new(
        brokers: &str,
        topic: &str,
        properties: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<Self, SinkError> {
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            // A notification is delivered when every in-sync replica has it.
            .set("acks", "all")
            .set("message.timeout.ms", timeout.as_millis().max(1).to_string());
        for (k, v) in properties {
            config.set(k, v);
        }
        let producer = config
            .create_with_context(KafkaDelivery::default())
            .map_err(|e| SinkError::Transport(format!("kafka producer: {e}")))?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            timeout,
        })
    }
}

impl AlertSink for KafkaSink {
    fn deliver(&mut self, n: &Notification, body: &[u8]) -> Result<(), SinkError> {
        let headers = OwnedHeaders::new().insert(Header {
            key: "idempotency-key",
            value: Some(n.idempotency_key.as_bytes()),
        });
        let record = BaseRecord::to(&self.topic)
            .key(n.incident_id.as_bytes())
            .payload(body)
            .headers(headers);
        self.producer
            .send(record)
            .map_err(|(e, _)| SinkError::Transport(format!("kafka: {e}")))?;
        // One notification at a time: wait for its acknowledgement, so a
        // failure is retried by the sink loop like a webhook's.
        self.producer
            .flush(self.timeout)
            .map_err(|e| SinkError::Transport(format!("kafka: {e}")))?;
        let failed = self
            .producer
            .context()
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match failed {
            Some(e) => Err(SinkError::Transport(format!("kafka: {e}"))),
            None => Ok(()),
        }
    }
}

/// `kinds` with Kafka alert sinks: a sink that names no `brokers` uses
/// those of the config's Kafka source.
pub fn register(kinds: SinkKinds, config: &Config) -> SinkKinds {
    let source_brokers = config
        .sources
        .iter()
        .find(|s| s.kind == Some(SourceKind::Kafka))
        .and_then(|s| s.brokers.clone());
    kinds.with(
        AlertSinkKind::Kafka,
        Arc::new(move |c| {
            let brokers = c.brokers.as_deref().or(source_brokers.as_deref()).unwrap_or_default();
            let sink = KafkaSink::new(
                brokers,
                c.topic.as_deref().unwrap_or_default(),
                &c.properties,
                c.timeout,
            )?;
            Ok(Box::new(sink) as Box<dyn AlertSink>)
        }),
    )
}
