//! Correlator threads: each owns some partition groups and applies the
//! records the poll thread hands it, in batches, in the order they were
//! polled.
//!
//! The poll thread hands each batch it polled from a thread's fetch queue to
//! that thread as librdkafka's own messages ([`Messages`]), read in place;
//! records that come another way (the consumer queue, tests) are copied into
//! a [`Batch`]. Both travel over a bounded channel. Control
//! commands (checkpoint, revoke, tick, finish) travel on the same channel,
//! after the records polled before them, so a checkpoint covers exactly what
//! was polled before it was asked for. When a thread falls behind, the
//! channel fills, the poll thread blocks, librdkafka's bounded prefetch fills
//! and fetching pauses: backpressure all the way to the broker, with at most
//! `QUEUED_BATCHES` batches in flight per thread.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tacet_core::EventTime;
use tacet_correlate::InFlight;

use crate::engine::RunError;
use crate::errors::ErrorKind;
use crate::fetch::{FetchedMessage, Messages};
use crate::group::{CommitOffset, Group, GroupSet, Prepared, Record, RunCounters, Shared};

/// Records per batch before it is sent.
pub(crate) const BATCH_RECORDS: usize = 512;
/// How much of a payload is prefetched before it is decoded.
const PREFETCH_PAYLOAD_BYTES: usize = 1024;
/// Batches queued per thread before the poll thread waits.
const QUEUED_BATCHES: usize = 8;

/// A record's place in a [`Batch`].
struct Slot {
    topic: usize,
    partition: i32,
    offset: i64,
    payload: Option<Range<usize>>,
    /// Its headers, in `Batch::headers`.
    headers: Range<usize>,
}

/// Records copied out of librdkafka's buffers, one allocation per batch.
pub(crate) struct Batch {
    bytes: Vec<u8>,
    slots: Vec<Slot>,
    /// (name, value) ranges in `bytes`.
    headers: Vec<(Range<usize>, Option<Range<usize>>)>,
    /// When the first record was polled: partition activity and the
    /// watermark clock of every record in the batch.
    polled_at: Option<Instant>,
}

impl Batch {
    fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(BATCH_RECORDS * 256),
            slots: Vec::with_capacity(BATCH_RECORDS),
            headers: Vec::new(),
            polled_at: None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    fn copy(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    /// Appends one record.
    pub(crate) fn push<'h>(
        &mut self,
        record: Record<'_>,
        headers: impl Iterator<Item = (&'h [u8], Option<&'h [u8]>)>,
        now: Instant,
    ) {
        self.polled_at.get_or_insert(now);
        let payload = record.payload.map(|p| self.copy(p));
        let first = self.headers.len();
        for (name, value) in headers {
            let name = self.copy(name);
            let value = value.map(|v| self.copy(v));
            self.headers.push((name, value));
        }
        self.slots.push(Slot {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            payload,
            headers: first..self.headers.len(),
        });
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.slots.clear();
        self.headers.clear();
        self.polled_at = None;
    }

    /// Applies every record to `set`, stopping at the first error.
    fn apply(&self, set: &mut GroupSet) -> Result<(), RunError> {
        let prefetch = |i: usize| {
            // The poll thread wrote the batch on another core: start moving
            // what is read soon into this core's cache, the slot (where the
            // payload is) well ahead, the payload decoded next.
            if let Some(slot) = self.slots.get(i + 2 * PIPELINE_DEPTH) {
                tacet_core::hint::prefetch_line(std::ptr::from_ref(slot).cast());
            }
            if let Some(range) = self.slots.get(i + PIPELINE_DEPTH).and_then(|s| s.payload.clone()) {
                prefetch_payload(&self.bytes[range]);
            }
        };
        let now = self.polled_at.unwrap_or_else(Instant::now);
        apply_records(set, self.slots.len(), |i| self.view(&self.slots[i]), prefetch, now)
    }

    /// The record in `slot` and a lookup of its headers.
    fn view<'b>(&'b self, slot: &Slot) -> (Record<'b>, impl Fn(&str) -> Option<&'b [u8]> + use<'b>) {
        let headers = &self.headers[slot.headers.clone()];
        let header = move |name: &str| {
            headers
                .iter()
                .find(|(k, _)| &self.bytes[k.clone()] == name.as_bytes())
                .and_then(|(_, v)| v.clone().map(|v| &self.bytes[v]))
        };
        let record = Record {
            topic: slot.topic,
            partition: slot.partition,
            offset: slot.offset,
            payload: slot.payload.clone().map(|r| &self.bytes[r]),
        };
        (record, header)
    }
}

/// Records applied ahead of the one being applied (see [`apply_records`]).
const PIPELINE_DEPTH: usize = 4;

/// Starts loading the start of a payload: the decoder reads it in order,
/// and a record of up to `max_line_bytes` must not flush the cache.
fn prefetch_payload(payload: &[u8]) {
    tacet_core::hint::prefetch_slice(&payload[..payload.len().min(PREFETCH_PAYLOAD_BYTES)]);
}

/// Applies records `0..n` to `set` in order, stopping at the first error;
/// `view(i)` is record `i` and a lookup of its headers, `prefetch(i)` starts
/// loading what the records after `i` need. Records go through four steps,
/// each a record ahead of the next, so that each step's cache misses are
/// over by the time the next step needs the memory: decode and touch the
/// index ([`GroupSet::prepare`]), touch the open journey
/// ([`GroupSet::prefetch`]), touch its attributes
/// ([`GroupSet::prefetch_attrs`]), apply. Decoded records sit in slots used
/// in turn: one is ~450 bytes, and moving it from step to step was a
/// measurable share of the thread.
fn apply_records<'b, H>(
    set: &mut GroupSet,
    n: usize,
    view: impl Fn(usize) -> (Record<'b>, H),
    prefetch: impl Fn(usize),
    now: Instant,
) -> Result<(), RunError>
where
    H: Fn(&str) -> Option<&'b [u8]>,
{
    const DEPTH: usize = PIPELINE_DEPTH;
    let mut views: [Option<(Record<'b>, H)>; DEPTH] = [None, None, None, None];
    let mut prepared: [Prepared<'b>; DEPTH] = Default::default();
    for i in 0..n.min(DEPTH - 1) {
        let (record, header) = views[i].insert(view(i));
        set.prepare(record, &*header, &mut prepared[i]);
    }
    for i in 0..n {
        prefetch(i);
        if i + DEPTH - 1 < n {
            let k = (i + DEPTH - 1) % DEPTH;
            let (record, header) = views[k].insert(view(i + DEPTH - 1));
            set.prepare(record, &*header, &mut prepared[k]);
        }
        if let Some((record, _)) = &views[(i + 2) % DEPTH] {
            set.prefetch(record, &mut prepared[(i + 2) % DEPTH]);
        }
        if let Some((record, _)) = &views[(i + 1) % DEPTH] {
            set.prefetch_attrs(record, &prepared[(i + 1) % DEPTH]);
        }
        let (record, header) = views[i % DEPTH].take().expect("prepared ahead");
        set.record(record, &prepared[i % DEPTH], &header, now)?;
    }
    set.batch_end(now)
}

/// Applies records straight from librdkafka's buffers. Per-partition errors
/// librdkafka puts in the stream are counted, logged (throttled) and
/// skipped, as are records of topics not consumed (none should come: only
/// partitions of subscribed topics are routed here; one that did would be
/// counted, not lost silently).
fn apply_fetched(
    set: &mut GroupSet,
    messages: &Messages,
    now: Instant,
    topics: &mut TopicCache,
) -> Result<(), RunError> {
    // Everything a record needs is read here, in one tight pass: librdkafka
    // wrote each message on another core, so each is a cache miss, and
    // misses taken back to back overlap. Reading the message's payload,
    // partition and offset again where it is applied, thousands of
    // instructions later, missed again (perf: ~45 % of the samples in the
    // loop's own code were those two loads).
    let records: Vec<(Record<'_>, FetchedMessage<'_>)> = messages
        .iter()
        .filter_map(|m| {
            if let Some(e) = m.error() {
                if e != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF
                    && set.shared().errors.note(ErrorKind::Poll)
                {
                    tracing::warn!(error = %m.error_text(), "Kafka fetch error; retrying.");
                }
                return None;
            }
            let topic = topics.index(&m, set);
            if topic.is_none() && set.shared().errors.note(ErrorKind::Poll) {
                tracing::warn!(
                    topic = m.topic(),
                    "A record of a topic tacet does not consume reached a fetch queue; skipped."
                );
            }
            let record = Record {
                topic: topic?,
                partition: m.partition(),
                offset: m.offset(),
                payload: m.payload(),
            };
            Some((record, m))
        })
        .collect();
    let view = |i: usize| {
        let (record, m) = records[i];
        // Headers are parsed only when the decoder asks for one.
        (record, move |name: &str| m.headers().get(name.as_bytes()))
    };
    // The payloads, written by librdkafka's fetcher on another core, were
    // not read in the pass above.
    let prefetch = |i: usize| {
        if let Some(payload) = records.get(i + PIPELINE_DEPTH).and_then(|(r, _)| r.payload) {
            prefetch_payload(payload);
        }
    };
    apply_records(set, records.len(), view, prefetch, now)
}

/// Topic index by librdkafka topic handle: a name comparison only the first
/// time a topic is seen.
#[derive(Default)]
pub(crate) struct TopicCache {
    known: Vec<(usize, Option<usize>)>,
}

impl TopicCache {
    fn index(&mut self, msg: &FetchedMessage<'_>, set: &GroupSet) -> Option<usize> {
        let handle = msg.topic_handle();
        if let Some(&(_, t)) = self.known.iter().find(|(h, _)| *h == handle) {
            return t;
        }
        let t = msg.topic().and_then(|name| set.shared().topic_index(name));
        self.known.push((handle, t));
        t
    }
}

/// What the poll thread asks of a correlator thread. Records of a partition
/// the thread no longer owns are dropped when applied (see
/// [`GroupSet::record`]), so a batch polled before a revoke is harmless.
pub(crate) enum Command {
    Records(Batch),
    /// Records as librdkafka fetched them, and when they were polled.
    Fetched(Messages, Instant),
    Adopt(i32, Box<Group>),
    Release(i32, Sender<Result<Vec<CommitOffset>, RunError>>),
    /// Checkpoint every group; the reply carries the offsets to commit and
    /// the thread's counts as of the checkpoint (for `/metrics`).
    Checkpoint(Sender<Result<(Vec<CommitOffset>, RunCounters), RunError>>),
    Tick(Instant),
    /// The process now owns this many groups: each one's share of the caps.
    Limits(usize),
    /// Partitions' offsets at the broker (lag: a lagging input is never idle).
    BrokerOffsets(Vec<crate::group::BrokerOffsets>),
    MaxSeen(Sender<Option<EventTime>>),
    Finish(EventTime, Sender<Result<Vec<InFlight>, RunError>>),
    Counters(Sender<RunCounters>),
}

/// The poll thread's handle on one correlator thread.
pub(crate) struct Worker {
    commands: Option<Sender<Command>>,
    /// Emptied batches coming back for reuse.
    spare: Receiver<Batch>,
    /// The batch being filled.
    pub(crate) pending: Batch,
    /// Open journeys of its groups, after its last batch or tick.
    open: Arc<AtomicUsize>,
    /// When it finished applying its last batch of records.
    applied_at: Arc<Mutex<Option<Instant>>>,
    /// Groups it owns (kept by the engine, for placement).
    pub(crate) groups: usize,
    thread: Option<JoinHandle<RunCounters>>,
}

impl Worker {
    /// Starts correlator thread `index`. Its first failure is written to
    /// `failed` (the run stops on it); it applies nothing after that.
    pub(crate) fn spawn(
        index: usize,
        shared: Arc<Shared>,
        failed: Arc<Mutex<Option<RunError>>>,
    ) -> std::io::Result<Self> {
        let (commands, inbox) = crossbeam_channel::bounded(QUEUED_BATCHES);
        let (give_back, spare) = crossbeam_channel::bounded(QUEUED_BATCHES + 2);
        let open = Arc::new(AtomicUsize::new(0));
        let open_here = open.clone();
        let applied_at = Arc::new(Mutex::new(None));
        let applied_here = applied_at.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tacet-correlate-{index}"))
            .spawn(move || {
                let mut set = GroupSet::new(shared);
                let progress = Progress {
                    open: &open_here,
                    applied_at: &applied_here,
                };
                serve(&mut set, &inbox, &give_back, progress, &failed);
                set.counters()
            })?;
        Ok(Self {
            commands: Some(commands),
            spare,
            pending: Batch::new(),
            open,
            applied_at,
            groups: 0,
            thread: Some(thread),
        })
    }

    fn send(&self, command: Command) -> Result<(), RunError> {
        self.commands
            .as_ref()
            .and_then(|c| c.send(command).ok())
            .ok_or(RunError::CorrelatorStopped)
    }

    /// Sends the batch being filled, if it has records.
    pub(crate) fn flush(&mut self) -> Result<(), RunError> {
        if self.pending.len() == 0 {
            return Ok(());
        }
        let mut next = self.spare.try_recv().unwrap_or_else(|_| Batch::new());
        next.clear();
        let full = std::mem::replace(&mut self.pending, next);
        self.send(Command::Records(full))
    }

    /// Sends `command` after the pending records.
    pub(crate) fn command(&mut self, command: Command) -> Result<(), RunError> {
        self.flush()?;
        self.send(command)
    }

    /// Sends a command that answers, and waits for the answer.
    pub(crate) fn ask<T>(&mut self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T, RunError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.command(make(tx))?;
        rx.recv().map_err(|_| RunError::CorrelatorStopped)
    }

    pub(crate) fn open_journeys(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Commands (mostly batches) queued and not yet taken by the thread.
    pub(crate) fn backlog(&self) -> usize {
        self.commands.as_ref().map_or(0, Sender::len)
    }

    /// Whether a send would not wait.
    pub(crate) fn has_room(&self) -> bool {
        self.commands.as_ref().is_some_and(|c| !c.is_full())
    }

    /// When it finished applying the last batch it was sent, if any.
    pub(crate) fn applied_at(&self) -> Option<Instant> {
        *self.applied_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the thread after what was sent; returns its counters.
    pub(crate) fn stop(&mut self) -> Result<RunCounters, RunError> {
        self.flush()?;
        self.commands = None;
        match self.thread.take() {
            None => Ok(RunCounters::default()),
            Some(t) => t.join().map_err(|_| RunError::Panicked("correlator")),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.commands = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a correlator thread publishes for the poll thread.
struct Progress<'a> {
    open: &'a AtomicUsize,
    applied_at: &'a Mutex<Option<Instant>>,
}

/// The correlator thread's loop: commands in order until the channel closes.
fn serve(
    set: &mut GroupSet,
    inbox: &Receiver<Command>,
    give_back: &Sender<Batch>,
    progress: Progress<'_>,
    failed: &Mutex<Option<RunError>>,
) {
    let Progress { open, applied_at } = progress;
    let mut broken = false;
    let mut topics = TopicCache::default();
    // After each batch of records: what the poll thread reads of this one.
    let applied = |set: &mut GroupSet| {
        set.publish_events();
        open.store(set.open_journeys(), Ordering::Relaxed);
        *applied_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    };
    let fail = |e: RunError, broken: &mut bool| {
        tracing::error!(error = %e, "Stopping: cannot continue safely.");
        failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        *broken = true;
    };
    for command in inbox {
        match command {
            Command::Records(batch) => {
                if !broken && let Err(e) = batch.apply(set) {
                    fail(e, &mut broken);
                }
                let _ = give_back.try_send(batch);
                applied(set);
            }
            Command::Fetched(messages, polled_at) => {
                if !broken && let Err(e) = apply_fetched(set, &messages, polled_at, &mut topics) {
                    fail(e, &mut broken);
                }
                // librdkafka's buffers go back before the bookkeeping.
                drop(messages);
                applied(set);
            }
            Command::Adopt(p, group) => set.adopt(p, *group),
            // After a failure nothing may be made durable or final: the
            // state no longer matches the offsets. The next run replays
            // from the last snapshot.
            Command::Release(p, reply) => {
                let _ = reply.send(unless_broken(broken, || set.release(p)));
            }
            Command::Checkpoint(reply) => {
                let done = unless_broken(broken, || set.checkpoint()).map(|offsets| (offsets, set.counters()));
                let _ = reply.send(done);
            }
            Command::Tick(now) => {
                if !broken && let Err(e) = set.tick(now) {
                    fail(e, &mut broken);
                }
                open.store(set.open_journeys(), Ordering::Relaxed);
            }
            Command::BrokerOffsets(offsets) => set.broker_offsets(&offsets),
            Command::Limits(groups) => {
                if !broken && let Err(e) = set.set_limits(groups) {
                    fail(e, &mut broken);
                }
                open.store(set.open_journeys(), Ordering::Relaxed);
            }
            Command::MaxSeen(reply) => {
                let _ = reply.send(set.max_seen());
            }
            Command::Finish(max, reply) => {
                let _ = reply.send(unless_broken(broken, || set.finish(max)));
            }
            Command::Counters(reply) => {
                let _ = reply.send(set.counters());
            }
        }
    }
}

/// `work()`, unless this thread has failed before.
fn unless_broken<T>(broken: bool, work: impl FnOnce() -> Result<T, RunError>) -> Result<T, RunError> {
    if broken {
        Err(RunError::CorrelatorFailed)
    } else {
        work()
    }
}
