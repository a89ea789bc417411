//! Repartition mode: re-key events by trace id through internal topics.
//!
//! When producers do not key their records by trace id, the events of one
//! journey are spread over every partition and no instance sees a whole
//! journey. As in Kafka Streams, a first stage reads the source topics and
//! writes each record, unchanged, to an internal topic keyed by its trace id
//! (`<group>-<topic>-repartition`, one per source topic, all with the same
//! partition count so that they are co-partitioned). The correlator then
//! consumes the internal topics exactly like co-partitioned source topics.
//!
//! Each re-keyed record carries a `tacet-origin: <partition>/<offset>` header
//! (its position in the source topic) next to the producer's own headers.
//! The repartitioner commits its source offsets only after the producer has
//! flushed everything before them, so a crash makes it write some records a
//! second time, never lose one. The copies arrive in the same internal
//! partition after the originals (the producer is idempotent, so order per
//! partition holds), which lets the correlator skip every record whose source
//! offset it has already passed: see `Engine::record`. The watermark inputs
//! are the source partitions, named by the same header.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, error::KafkaError, types::RDKafkaErrorCode};
use tacet_core::config::KafkaPlan;
use tacet_core::{Catalog, Config, TraceKey};
use tacet_ingest::Decoder;

use crate::engine::RunError;
use crate::errors::{ErrorKind, RunErrors};
use crate::headers::RecordHeaders;

/// The header naming a re-keyed record's source partition and offset.
pub const ORIGIN_HEADER: &str = "tacet-origin";

/// The internal topic that re-keys `topic` for consumer group `group`.
pub fn internal_topic(group: &str, topic: &str) -> String {
    format!("{group}-{topic}-repartition")
}

/// The headers of a re-keyed record: the producer's own, less any that
/// tacet uses internally (SPEC §1: a producer's `tacet-origin` would
/// otherwise be read as the record's source position, and one spoofed
/// offset would make every later record of its partition look like a
/// duplicate), then tacet's own origin.
fn rekeyed_headers<'a>(producer: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>, origin: &str) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    for (name, value) in producer {
        if name.eq_ignore_ascii_case(ORIGIN_HEADER.as_bytes()) {
            continue;
        }
        // rdkafka writes names as &str: a name that is not UTF-8 is
        // forwarded with its bad bytes replaced. The correlator reads
        // headers by configured (UTF-8) names only, so no decision depends
        // on it.
        out = out.insert(Header {
            key: &String::from_utf8_lossy(name),
            value,
        });
    }
    out.insert(Header {
        key: ORIGIN_HEADER,
        value: Some(origin.as_bytes()),
    })
}

/// `<partition>/<offset>` of an [`ORIGIN_HEADER`] value.
pub fn parse_origin(value: &[u8]) -> Option<(i32, i64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (partition, offset) = text.split_once('/')?;
    Some((partition.parse().ok()?, offset.parse().ok()?))
}

/// The consumer group of the repartitioning stage.
fn repartition_group(group: &str) -> String {
    format!("{group}-repartition")
}

/// Finds the partition count of every source topic (in plan order) and
/// creates the internal topics that are missing, all with the largest of
/// those counts. Retries while the broker is unreachable, until `stop`.
pub fn prepare(plan: &KafkaPlan, stop: &AtomicBool) -> Result<Vec<usize>, RunError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &plan.brokers);
    for (k, v) in &plan.properties {
        client.set(k, v);
    }
    let probe: BaseConsumer = client.create().map_err(|e| RunError::Client {
        client: "metadata client",
        reason: e.to_string(),
    })?;
    let partitions_of = |topic: &str| -> Result<Option<usize>, RunError> {
        let mut logged = false;
        loop {
            match probe.fetch_metadata(Some(topic), Duration::from_secs(10)) {
                Ok(metadata) => {
                    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
                        return Ok(None);
                    };
                    if t.error().is_some() || t.partitions().is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(t.partitions().len()));
                }
                Err(e) => {
                    if stop.load(Ordering::Relaxed) {
                        return Err(RunError::BrokerUnreachable(e.to_string()));
                    }
                    if !logged {
                        tracing::warn!(error = %e, topic, "Cannot read topic metadata; retrying until the broker answers.");
                        logged = true;
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
            }
        }
    };
    let mut counts = Vec::new();
    for t in &plan.topics {
        match partitions_of(&t.topic)? {
            Some(n) => counts.push(n),
            None => {
                return Err(RunError::MissingSourceTopic(t.topic.clone()));
            }
        }
    }
    let partitions = counts.iter().copied().max().unwrap_or(1);
    let admin: AdminClient<DefaultClientContext> = client.create().map_err(|e| RunError::Client {
        client: "admin client",
        reason: e.to_string(),
    })?;
    for t in &plan.topics {
        let internal = internal_topic(&plan.group_id, &t.topic);
        match partitions_of(&internal)? {
            Some(n) if n == partitions => {}
            Some(n) => {
                return Err(RunError::InternalTopic {
                    topic: internal,
                    reason: format!(
                        "it has {n} partitions but the repartitioned topics need {partitions} (the most of any \
                         source topic); delete it, or give it {partitions} partitions"
                    ),
                });
            }
            None => {
                // -1: the broker's default replication factor (KIP-464).
                let new = NewTopic::new(&internal, partitions as i32, TopicReplication::Fixed(-1));
                let results =
                    futures::executor::block_on(admin.create_topics([&new], &AdminOptions::new())).map_err(|e| {
                        RunError::InternalTopic {
                            topic: internal.clone(),
                            reason: format!("cannot create it: {e}"),
                        }
                    })?;
                for result in results {
                    match result {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => {
                            return Err(RunError::InternalTopic {
                                topic: name,
                                reason: format!("cannot create it: {code}"),
                            });
                        }
                    }
                }
                tracing::info!(topic = %internal, partitions, "Created the internal repartition topic.");
            }
        }
    }
    Ok(counts)
}

/// Counts delivery failures; a failure means a record may not be in the
/// internal topic, so offsets must not be committed past it.
#[derive(Default)]
struct Delivery {
    failed: AtomicU64,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "A re-keyed record was not written to its internal topic.");
        }
    }
}

type Rekeyer = BaseProducer<Delivery>;

/// The consumer side: next source offsets to commit, and the producer to
/// flush before committing them (also on revoke, so that the next owner of a
/// partition starts after every record this one wrote).
struct Source {
    producer: Arc<Rekeyer>,
    /// Source topic names, in plan order (the index keys `next`).
    topics: Vec<String>,
    /// Next offset per (topic index, partition), kept without allocating per record.
    next: Mutex<BTreeMap<(usize, i32), i64>>,
    failed: Mutex<Option<RunError>>,
    progress: Arc<Progress>,
    errors: Arc<RunErrors>,
}

/// What the run loop needs to tell "idle" from "still re-keying".
#[derive(Debug, Default)]
pub struct Progress {
    /// Source partitions currently assigned to this repartitioner.
    pub owned: AtomicUsize,
    /// Records re-keyed so far.
    pub rekeyed: AtomicU64,
}

impl Source {
    /// Flushes the producer, then commits every source offset consumed so far.
    fn commit(&self, consumer: &BaseConsumer<Source>, mode: CommitMode) -> Result<(), RunError> {
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| RunError::Repartition(format!("flushing the internal topics: {e}")))?;
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(RunError::Repartition(format!(
                "{failed} records were not written to the internal topics; not committing past them (a restart \
                 reads them again)"
            )));
        }
        let next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if next.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next.iter() {
            let _ = tpl.add_partition_offset(&self.topics[*topic], *partition, Offset::Offset(*offset));
        }
        if let Err(e) = consumer.commit(&tpl, mode)
            && self.errors.note(ErrorKind::Commit)
        {
            tracing::warn!(error = %e, "Repartition offset commit failed; the next one commits again.");
        }
        Ok(())
    }
}

impl ClientContext for Source {}

impl ConsumerContext for Source {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let owned = match rebalance {
            Rebalance::Assign(tpl) => tpl.count(),
            _ => 0,
        };
        self.progress.owned.store(owned, Ordering::Relaxed);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            match self.commit(consumer, CommitMode::Sync) {
                Ok(()) => {
                    let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                    for e in tpl.elements() {
                        if let Some(t) = self.topics.iter().position(|t| t == e.topic()) {
                            next.remove(&(t, e.partition()));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "Stopping the repartitioner.");
                    self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                }
            }
        }
    }
}

/// The running repartition stage.
pub struct Repartitioner {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<u64, RunError>>,
    progress: Arc<Progress>,
}

impl Repartitioner {
    /// Partitions owned and records re-keyed, for idleness.
    pub fn progress(&self) -> (usize, u64) {
        (
            self.progress.owned.load(Ordering::Relaxed),
            self.progress.rekeyed.load(Ordering::Relaxed),
        )
    }

    /// Whether the stage has ended (only by an error, unless stopped).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Stops the stage after a final flush and commit; returns the records
    /// it re-keyed.
    pub fn stop(self) -> Result<u64, RunError> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .unwrap_or_else(|_| Err(RunError::Panicked("repartitioner")))
    }
}

/// Starts re-keying the plan's topics into their internal topics (which
/// [`prepare`] created), committing every `interval`.
pub fn spawn(
    config: &Config,
    plan: &KafkaPlan,
    interval: Duration,
    errors: Arc<RunErrors>,
) -> Result<Repartitioner, RunError> {
    let catalog = Arc::new(Catalog::new(config)?);
    let decoders: Vec<(String, String, Decoder)> = plan
        .topics
        .iter()
        .map(|t| {
            (
                t.topic.clone(),
                internal_topic(&plan.group_id, &t.topic),
                Decoder::new(catalog.clone(), &t.mapping).with_source(&t.source),
            )
        })
        .collect();
    let mut producer_config = ClientConfig::new();
    producer_config
        .set("bootstrap.servers", &plan.brokers)
        // Order per partition even across retries: the correlator's
        // duplicate check relies on it.
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    let mut consumer_config = crate::run::consumer_settings(plan, &repartition_group(&plan.group_id));
    for (k, v) in &plan.properties {
        // Security and connection settings apply to both clients; librdkafka
        // ignores (with a warning) what is meant for the other side.
        producer_config.set(k, v);
        consumer_config.set(k, v);
    }
    let producer: Arc<Rekeyer> =
        Arc::new(
            producer_config
                .create_with_context(Delivery::default())
                .map_err(|e| RunError::Client {
                    client: "repartition producer",
                    reason: e.to_string(),
                })?,
        );
    let progress = Arc::new(Progress::default());
    let source = Source {
        topics: plan.topics.iter().map(|t| t.topic.clone()).collect(),
        errors: errors.clone(),
        producer: producer.clone(),
        next: Mutex::new(BTreeMap::new()),
        failed: Mutex::new(None),
        progress: progress.clone(),
    };
    let consumer: BaseConsumer<Source> = consumer_config
        .create_with_context(source)
        .map_err(|e| RunError::Client {
            client: "repartition consumer",
            reason: e.to_string(),
        })?;
    let topics: Vec<&str> = plan.topics.iter().map(|t| t.topic.as_str()).collect();
    consumer.subscribe(&topics).map_err(|e| RunError::Subscribe {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        reason: e.to_string(),
    })?;
    tracing::info!(?topics, group = %repartition_group(&plan.group_id), "Repartitioning by trace id.");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = std::thread::Builder::new()
        .name("repartition".into())
        .spawn(move || rekey(&consumer, &producer, &decoders, interval, &stopped, &errors))
        .map_err(|source| RunError::Start {
            what: "repartitioner",
            source,
        })?;
    Ok(Repartitioner { stop, handle, progress })
}

/// The loop of the repartition thread.
fn rekey(
    consumer: &BaseConsumer<Source>,
    producer: &Rekeyer,
    decoders: &[(String, String, Decoder)],
    interval: Duration,
    stop: &AtomicBool,
    errors: &RunErrors,
) -> Result<u64, RunError> {
    let source = consumer.context();
    let mut rekeyed = 0u64;
    let mut origin = String::new();
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(e) = source.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                let Some(topic) = decoders.iter().position(|(t, _, _)| t == msg.topic()) else {
                    continue;
                };
                let (_, internal, decoder) = &decoders[topic];
                let payload = msg.payload().unwrap_or(&[]);
                let headers = RecordHeaders::of(&msg);
                let header = |name: &str| headers.get(name.as_bytes());
                // The trace id as the correlator will see it; a record that
                // does not decode goes to any partition, where the correlator
                // dead-letters it with its source position.
                let key = decoder.decode(payload, &header).ok().map(|d| {
                    let (k, _) = TraceKey::from_text(&d.trace_id);
                    let mut bytes = [0u8; 16];
                    bytes[..8].copy_from_slice(&k.hi.to_be_bytes());
                    bytes[8..].copy_from_slice(&k.lo.to_be_bytes());
                    bytes
                });
                origin.clear();
                let _ = write!(origin, "{}/{}", msg.partition(), msg.offset());
                let out_headers = rekeyed_headers(headers, &origin);
                let mut record: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(internal).payload(payload).headers(out_headers);
                if let Some(k) = &key {
                    record = record.key(&k[..]);
                }
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            producer.poll(Duration::from_millis(10));
                            record = back;
                        }
                        Err((e, _)) => return Err(RunError::Repartition(format!("producing: {e}"))),
                    }
                }
                source
                    .next
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((topic, msg.partition()), msg.offset() + 1);
                rekeyed += 1;
                source.progress.rekeyed.store(rekeyed, Ordering::Relaxed);
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => {
                if errors.note(ErrorKind::RepartitionPoll) {
                    tracing::warn!(error = %e, "Repartition poll error; retrying.");
                }
            }
        }
        producer.poll(Duration::ZERO);
        if last_commit.elapsed() >= interval {
            last_commit = Instant::now();
            source.commit(consumer, CommitMode::Async)?;
        }
    }
    source.commit(consumer, CommitMode::Sync)?;
    consumer.unsubscribe();
    let _ = consumer.poll(Duration::from_millis(100));
    Ok(rekeyed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producers_origin_header_is_never_forwarded() {
        use rdkafka::message::Headers;
        let spoofed: [(&[u8], Option<&[u8]>); 4] = [
            (
                b"traceparent",
                Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ),
            (b"tacet-origin", Some(b"0/9223372036854775807")),
            (b"TACET-ORIGIN", Some(b"0/9223372036854775807")),
            (b"x-empty", None),
        ];
        let out = rekeyed_headers(spoofed, "2/41");
        let names: Vec<(String, Option<Vec<u8>>)> = out
            .iter()
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            names,
            [
                ("traceparent".to_owned(), Some(spoofed[0].1.unwrap().to_vec())),
                ("x-empty".to_owned(), None),
                (ORIGIN_HEADER.to_owned(), Some(b"2/41".to_vec())),
            ]
        );
    }

    #[test]
    fn origin_header_round_trips() {
        assert_eq!(parse_origin(b"3/1200"), Some((3, 1200)));
        assert_eq!(parse_origin(b"3-1200"), None);
        assert_eq!(parse_origin(b"x/1"), None);
        assert_eq!(parse_origin(&[0xff, b'/', b'1']), None);
        assert_eq!(internal_topic("tacet", "payments"), "tacet-payments-repartition");
    }
}
