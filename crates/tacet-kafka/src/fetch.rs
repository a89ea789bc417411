//! Batch polling: records come off librdkafka many per call.
//!
//! rdkafka's `BaseConsumer::poll` hands out one message per call, and each
//! call costs a clock read in Rust, two more inside librdkafka (its
//! `max.poll.interval.ms` bookkeeping), and a queue lock: measured, the clock
//! alone was a third of the poll thread's time. librdkafka's own batch call,
//! `rd_kafka_consume_batch_queue`, pays those once per batch — but on the
//! consumer queue it would also swallow rebalance events, which must reach
//! [`crate::run::Context`] through rdkafka.
//!
//! So the records take another road. Before a partition is assigned, its
//! fetch queue is forwarded to an application queue, a [`FetchQueue`]: one
//! per correlator thread, the queue of the thread its partition group lives
//! on. The poll thread drains them in batches. The consumer queue keeps
//! everything else (rebalances, errors, statistics, commit results) and is
//! polled without waiting once per round. Forwarding is set before the
//! assign that starts the partition's fetcher, so none of its records can
//! reach the consumer queue first and be read out of order; librdkafka keeps
//! an application's forwarding across later reassignments, and a partition
//! that comes back goes to the same thread, hence the same queue, so records
//! fetched before a revoke are still read before those fetched after it.
//!
//! librdkafka's prefetch bound (`queued.max.messages.kbytes`) still holds:
//! it measures a partition's fetch queue through its forwarding, that is the
//! [`FetchQueue`] it feeds. So it bounds each correlator thread's queue:
//! in-flight memory is up to that many kilobytes per thread (plus a fetch),
//! plus the polled batches waiting in a thread's channel ([`Messages`], at
//! most `QUEUED_BATCHES` of 512 records each). A message keeps the buffer of
//! the fetch response it came in alive, so those batches hold at most the
//! responses their 4,096 records came from; records are consecutive in
//! the queue, so that is a few responses, each capped by
//! `max.partition.fetch.bytes` per partition it carries.

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

use crate::headers::RecordHeaders;

/// Wakes the poll thread when any of several [`FetchQueue`]s gets a record:
/// librdkafka writes a byte to it when a queue goes from empty to not empty
/// (once per poll of that queue), so one thread can wait on many queues.
pub(crate) struct Wakeup {
    rx: UnixDatagram,
    tx: UnixDatagram,
}

impl Wakeup {
    pub(crate) fn new() -> std::io::Result<Self> {
        let (rx, tx) = UnixDatagram::pair()?;
        // librdkafka's fetcher writes here and must never block on it: if
        // the buffer is full, a wakeup is already waiting.
        tx.set_nonblocking(true)?;
        Ok(Self { rx, tx })
    }

    /// Waits until a queue got a record since the last wait, or `timeout`
    /// passed; then clears every wakeup. Poll every queue after it: a record
    /// that arrived before the wait is found there, one that arrives later
    /// wakes the next wait. On a socket error it sleeps `timeout` (the
    /// queues are then polled at that pace, not in a spin) and returns it.
    pub(crate) fn wait(&self, timeout: Duration) -> std::io::Result<()> {
        let mut byte = [0u8; 16];
        let waited = self
            .rx
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .and_then(|()| self.rx.recv(&mut byte));
        let result = match waited {
            Ok(_) => self.clear(),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(()),
            Err(e) => Err(e),
        };
        if result.is_err() {
            std::thread::sleep(timeout);
        }
        result
    }

    /// Reads every wakeup already written, without waiting.
    fn clear(&self) -> std::io::Result<()> {
        let mut byte = [0u8; 16];
        self.rx.set_nonblocking(true)?;
        let drained = loop {
            match self.rx.recv(&mut byte) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.rx.set_nonblocking(false)?;
        drained
    }
}

/// An application queue assigned partitions' records are routed to.
/// Must be dropped before the consumer it was made from, and before the
/// [`Wakeup`] it signals.
pub(crate) struct FetchQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// Records taken per poll.
    batch: usize,
    /// Room for the next poll's pointers, kept when a poll finds nothing
    /// (most polls, once the queues are drained) so that those allocate nothing.
    spare: Vec<*mut rdsys::rd_kafka_message_t>,
}

impl FetchQueue {
    /// A new queue on `consumer`'s client, taking up to `batch` records per
    /// poll, signalling `wakeup` when it gets records.
    pub(crate) fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>, batch: usize, wakeup: &Wakeup) -> Self {
        const PAYLOAD: &[u8] = b"w";
        // SAFETY: a live client; the queue is destroyed in `Drop`. The
        // socket outlives the queue (see the type's doc), and the
        // forwarding is switched off in `Drop` before either goes.
        let queue = unsafe {
            let queue = rdsys::rd_kafka_queue_new(consumer.client().native_ptr());
            rdsys::rd_kafka_queue_io_event_enable(queue, wakeup.tx.as_raw_fd(), PAYLOAD.as_ptr().cast(), PAYLOAD.len());
            queue
        };
        Self {
            queue,
            batch: batch.max(1),
            spare: Vec::new(),
        }
    }

    /// The raw queue, for [`route`] from the rebalance callback.
    pub(crate) fn raw(&self) -> RawQueue {
        RawQueue(self.queue)
    }

    /// Waits up to `timeout` for records and returns those available, up to
    /// the batch size.
    pub(crate) fn poll(&mut self, timeout: Duration) -> Messages {
        let mut messages = std::mem::take(&mut self.spare);
        messages.reserve_exact(self.batch);
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `messages` has room for `batch` pointers; librdkafka
        // writes at most that many and returns how many (or -1).
        let n =
            unsafe { rdsys::rd_kafka_consume_batch_queue(self.queue, timeout_ms, messages.as_mut_ptr(), self.batch) };
        // SAFETY: the first `n` slots were written by librdkafka.
        unsafe { messages.set_len(n.max(0) as usize) };
        if messages.is_empty() {
            self.spare = messages;
            return Messages { messages: Vec::new() };
        }
        Messages { messages }
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: made in `new`, destroyed once, before the client (see the
        // type's doc); its wakeups stop first.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(self.queue, -1, std::ptr::null(), 0);
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// Records (or per-partition errors) of one poll, still in librdkafka's
/// buffers: they go to a correlator thread as they are, and are released
/// when it drops them. Reading them there instead of copying them on the
/// poll thread took a quarter of the poll thread's time off every record.
///
/// Every `Messages` must be dropped before the consumer is destroyed
/// (librdkafka's rule for messages): `tacet run` stops the correlator
/// threads, which own them, first.
pub(crate) struct Messages {
    messages: Vec<*mut rdsys::rd_kafka_message_t>,
}

// SAFETY: librdkafka messages may be read and destroyed on any thread; each
// is owned by this batch alone.
unsafe impl Send for Messages {}

impl Messages {
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = FetchedMessage<'_>> + '_ {
        self.messages.iter().map(|&ptr| FetchedMessage {
            ptr,
            _batch: PhantomData,
        })
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        for &m in &self.messages {
            // SAFETY: each was returned by librdkafka and is destroyed once.
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
    }
}

/// A queue pointer for the rebalance callback, which runs inside the
/// consumer's poll while the [`FetchQueue`] is alive.
#[derive(Clone, Copy)]
pub(crate) struct RawQueue(*mut rdsys::rd_kafka_queue_t);

// SAFETY: only used from the poll thread, while the queue lives.
unsafe impl Send for RawQueue {}
unsafe impl Sync for RawQueue {}

/// Routes `topic`/`partition`'s records to `queue`. Call before assigning it.
///
/// # Safety
/// `queue` comes from a [`FetchQueue`] of this consumer that is still alive.
pub(crate) unsafe fn route<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    queue: RawQueue,
    topic: &str,
    partition: i32,
) -> Result<(), String> {
    let name = CString::new(topic).map_err(|_| format!("topic name {topic:?} contains NUL"))?;
    // SAFETY: a live client and a NUL-terminated name; librdkafka creates
    // the partition if it does not know it yet. Our handle on the
    // partition's queue is released right away: the forwarding stays.
    unsafe {
        let partition_queue =
            rdsys::rd_kafka_queue_get_partition(consumer.client().native_ptr(), name.as_ptr(), partition);
        if partition_queue.is_null() {
            return Err(format!("librdkafka has no queue for {topic}/{partition}"));
        }
        rdsys::rd_kafka_queue_forward(partition_queue, queue.0);
        rdsys::rd_kafka_queue_destroy(partition_queue);
    }
    Ok(())
}

/// A record (or a per-partition error) of a batch.
#[derive(Clone, Copy)]
pub(crate) struct FetchedMessage<'q> {
    ptr: *mut rdsys::rd_kafka_message_t,
    _batch: PhantomData<&'q ()>,
}

impl<'q> FetchedMessage<'q> {
    fn raw(&self) -> &'q rdsys::rd_kafka_message_t {
        // SAFETY: alive until its `Messages` is dropped, which outlives 'q.
        unsafe { &*self.ptr }
    }

    /// The error librdkafka put in place of a record, if any.
    pub(crate) fn error(&self) -> Option<rdsys::rd_kafka_resp_err_t> {
        let err = self.raw().err;
        (err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then_some(err)
    }

    /// The topic handle, stable for the consumer's life: a cheap cache key.
    pub(crate) fn topic_handle(&self) -> usize {
        self.raw().rkt as usize
    }

    /// The topic's name (`None` if it is not UTF-8, which no subscribed topic is).
    pub(crate) fn topic(&self) -> Option<&'q str> {
        let rkt = self.raw().rkt;
        if rkt.is_null() {
            return None;
        }
        // SAFETY: a live topic handle; librdkafka's names are NUL-terminated.
        unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(rkt)) }.to_str().ok()
    }

    pub(crate) fn partition(&self) -> i32 {
        self.raw().partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.raw().offset
    }

    pub(crate) fn payload(&self) -> Option<&'q [u8]> {
        let m = self.raw();
        // SAFETY: `len` bytes at `payload`, alive with the message.
        (!m.payload.is_null()).then(|| unsafe { std::slice::from_raw_parts(m.payload as *const u8, m.len) })
    }

    pub(crate) fn headers(&self) -> RecordHeaders<'q> {
        // SAFETY: the message lives for 'q.
        unsafe { RecordHeaders::of_raw_message(self.ptr) }
    }

    /// The error text for a log line.
    pub(crate) fn error_text(&self) -> String {
        self.error().map_or_else(String::new, |e| {
            // SAFETY: librdkafka returns a static string for any code.
            unsafe { CStr::from_ptr(rdsys::rd_kafka_err2str(e)) }
                .to_string_lossy()
                .into_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_clears_every_wakeup_written_before_it() {
        let wakeup = Wakeup::new().unwrap();
        for _ in 0..3 {
            wakeup.tx.send(b"w").unwrap();
        }
        wakeup.wait(Duration::from_secs(10)).unwrap();
        // Nothing is left to wake the next wait early.
        wakeup.rx.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let left = wakeup.rx.recv(&mut byte).unwrap_err();
        assert_eq!(left.kind(), std::io::ErrorKind::WouldBlock);
        // And a wait with nothing written ends at its timeout, not in error.
        wakeup.rx.set_nonblocking(false).unwrap();
        wakeup.wait(Duration::from_millis(1)).unwrap();
    }

    #[test]
    fn a_full_wakeup_socket_never_blocks_the_writer() {
        let wakeup = Wakeup::new().unwrap();
        // librdkafka's fetcher writes without reading back: the socket fills.
        let full = (0..1_000_000)
            .find_map(|_| wakeup.tx.send(b"w").err())
            .expect("the buffer fills");
        assert_eq!(full.kind(), std::io::ErrorKind::WouldBlock);
        wakeup.wait(Duration::from_secs(10)).unwrap();
        wakeup.tx.send(b"w").expect("room again after a wait");
    }
}
