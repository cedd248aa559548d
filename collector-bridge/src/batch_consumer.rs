//! [`BatchConsumer`]: a Kafka group consumer that hands over fetched messages a batch at a time
//! (librdkafka's `rd_kafka_consume_batch_queue`, through rdkafka's bindings), for the Kafka
//! source's hot loop.
//!
//! rdkafka's safe `BaseConsumer` returns one message per poll through librdkafka's event API:
//! a queue pop, an event object, an allocation and a clock read per message, which with the
//! sleeps and wake-ups on a momentarily empty queue was about a quarter of the bridge's CPU at
//! a busy shop's rate. This consumer pops up to a batch per call.
//! Rebalances are served by a [`RebalanceHandler`] on the consuming thread, from inside
//! [`BatchConsumer::consume`] (and on close), as librdkafka's rebalance callback; a batch
//! during which one ran says so ([`Batch::rebalanced`]), because messages fetched under the
//! old assignment may then be in it.

use std::any::Any;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

/// What a rebalance asks of the consumer; the partitions as (topic, partition).
#[derive(Debug)]
pub enum Rebalance<'a> {
    /// These partitions are now this consumer's: assign them (with start offsets).
    Assign(&'a [(String, i32)]),
    /// These partitions are taken away: hand them over and unassign.
    Revoke(&'a [(String, i32)]),
    /// The rebalance failed; drop the assignment.
    Error(RDKafkaErrorCode),
}

/// Receives rebalances, on the consuming thread.
pub trait RebalanceHandler {
    /// Handles one rebalance; it must assign or unassign through `assignment`.
    fn rebalance(&self, assignment: &Assignment<'_>, event: Rebalance<'_>);
}

/// The consumer's assignment, as a rebalance handler changes it.
pub struct Assignment<'a> {
    rk: *mut rd::rd_kafka_t,
    _consumer: PhantomData<&'a ()>,
}

impl Assignment<'_> {
    /// Starts consuming these partitions, at their offsets.
    pub fn assign(&self, partitions: &TopicPartitionList) -> KafkaResult<()> {
        // SAFETY: `rk` is the live client the callback was called for; the list outlives the call.
        code_result(unsafe { rd::rd_kafka_assign(self.rk, partitions.ptr()) })
            .map_err(KafkaError::Global)
    }

    /// Stops consuming every partition.
    pub fn unassign(&self) -> KafkaResult<()> {
        // SAFETY: as in `assign`; a null list means "none".
        code_result(unsafe { rd::rd_kafka_assign(self.rk, ptr::null()) })
            .map_err(KafkaError::Global)
    }
}

/// One fetched message, borrowed from its [`Batch`].
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Value, if any.
    pub payload: Option<&'a [u8]>,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
}

/// What the callbacks share with the consumer; boxed so its address is stable.
struct Shared<H> {
    handler: H,
    /// Set by every rebalance; taken by the next batch.
    rebalanced: AtomicBool,
    /// A handler's panic, raised again on the consuming thread (it cannot unwind through C).
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// A group consumer (subscribe, rebalance, seek) that is read a batch at a time.
pub struct BatchConsumer<H: RebalanceHandler> {
    rk: *mut rd::rd_kafka_t,
    queue: *mut rd::rd_kafka_queue_t,
    closed: bool,
    // Dropped after `rk` is destroyed (see `Drop`): the callbacks point into it.
    shared: Box<Shared<H>>,
}

impl<H: RebalanceHandler> BatchConsumer<H> {
    /// Creates the consumer from `config` (which must name a `group.id`); `handler` serves its
    /// rebalances.
    pub fn new(config: &ClientConfig, handler: H) -> KafkaResult<BatchConsumer<H>> {
        if config.get("group.id").is_none() {
            return Err(KafkaError::ClientCreation(
                "a batch consumer needs a group.id".into(),
            ));
        }
        let native = config.create_native_config()?;
        let shared = Box::new(Shared {
            handler,
            rebalanced: AtomicBool::new(false),
            panic: Mutex::new(None),
        });
        let mut errstr = [0 as c_char; 512];
        // SAFETY: the duplicated configuration is ours until `rd_kafka_new` takes it (on
        // success only); the opaque pointer is the boxed `Shared`, which outlives the client.
        unsafe {
            let conf = rd::rd_kafka_conf_dup(native.ptr());
            rd::rd_kafka_conf_set_rebalance_cb(conf, Some(rebalance_cb::<H>));
            rd::rd_kafka_conf_set_error_cb(conf, Some(error_cb));
            rd::rd_kafka_conf_set_log_cb(conf, Some(log_cb));
            rd::rd_kafka_conf_set_opaque(conf, &*shared as *const Shared<H> as *mut c_void);
            let rk = rd::rd_kafka_new(
                rd::rd_kafka_type_t::RD_KAFKA_CONSUMER,
                conf,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            if rk.is_null() {
                rd::rd_kafka_conf_destroy(conf);
                let reason = CStr::from_ptr(errstr.as_ptr()).to_string_lossy();
                return Err(KafkaError::ClientCreation(reason.into_owned()));
            }
            // Rebalances, errors and logs then arrive on the queue the batches are read from.
            rd::rd_kafka_poll_set_consumer(rk);
            let queue = rd::rd_kafka_queue_get_consumer(rk);
            if queue.is_null() {
                rd::rd_kafka_destroy(rk);
                return Err(KafkaError::ClientCreation(
                    "librdkafka has no consumer queue".into(),
                ));
            }
            Ok(BatchConsumer {
                rk,
                queue,
                closed: false,
                shared,
            })
        }
    }

    /// The rebalance handler.
    pub fn handler(&self) -> &H {
        &self.shared.handler
    }

    /// Joins the group for these topics.
    pub fn subscribe(&self, topics: &[&str]) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        for topic in topics {
            tpl.add_topic_unassigned(topic);
        }
        // SAFETY: live client; librdkafka copies the list.
        code_result(unsafe { rd::rd_kafka_subscribe(self.rk, tpl.ptr()) })
            .map_err(|e| KafkaError::Subscription(e.to_string()))
    }

    /// Waits up to `timeout` for up to `max` messages (returning early once `max` are there),
    /// serving rebalances meanwhile. A handler's panic is raised here.
    pub fn consume(&self, timeout: Duration, max: usize) -> Batch<'_> {
        let mut msgs: Vec<*mut rd::rd_kafka_message_t> = Vec::with_capacity(max);
        // SAFETY: the queue is live; librdkafka writes at most `max` pointers into the
        // vector's spare capacity and returns how many (or -1, with none written).
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue,
                timeout_ms(timeout),
                msgs.as_mut_ptr(),
                max,
            )
        };
        if n > 0 {
            // SAFETY: `n` (<= max) pointers were written.
            unsafe { msgs.set_len((n as usize).min(max)) };
        }
        let batch = Batch {
            msgs,
            rebalanced: self.shared.rebalanced.swap(false, Ordering::Relaxed),
            _consumer: PhantomData,
        };
        self.raise_handler_panic();
        batch
    }

    /// Positions a partition at `offset`: what is read next from it starts there.
    pub fn seek(
        &self,
        topic: &str,
        partition: i32,
        offset: Offset,
        timeout: Duration,
    ) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, offset)?;
        // SAFETY: live client; the list is ours and outlives the call.
        let err = unsafe { rd::rd_kafka_seek_partitions(self.rk, tpl.ptr(), timeout_ms(timeout)) };
        if !err.is_null() {
            // SAFETY: a non-null error is ours to read and destroy.
            let reason = unsafe {
                let s = CStr::from_ptr(rd::rd_kafka_error_string(err))
                    .to_string_lossy()
                    .into_owned();
                rd::rd_kafka_error_destroy(err);
                s
            };
            return Err(KafkaError::Seek(reason));
        }
        for e in tpl.elements() {
            e.error().map_err(|e| KafkaError::Seek(e.to_string()))?;
        }
        Ok(())
    }

    /// A partition's low and high watermarks, asked of the broker.
    pub fn fetch_watermarks(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> KafkaResult<(i64, i64)> {
        let ms = timeout_ms(timeout);
        self.watermarks(topic, partition, |rk, t, p, low, high| {
            // SAFETY: as `watermarks` promises.
            unsafe { rd::rd_kafka_query_watermark_offsets(rk, t, p, low, high, ms) }
        })
        .map_err(KafkaError::MetadataFetch)
    }

    /// The partition's high watermark as of the last fetch response, without asking the
    /// broker; `None` before one arrived.
    pub fn cached_high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        let (_, high) = self
            .watermarks(topic, partition, |rk, t, p, low, high| {
                // SAFETY: as `watermarks` promises.
                unsafe { rd::rd_kafka_get_watermark_offsets(rk, t, p, low, high) }
            })
            .ok()?;
        // Unknown offsets are negative (librdkafka's OFFSET_INVALID).
        (high >= 0).then_some(high)
    }

    /// Runs one of librdkafka's watermark calls with the live client, the topic as a C string
    /// and two out-parameters.
    fn watermarks(
        &self,
        topic: &str,
        partition: i32,
        call: impl FnOnce(*mut rd::rd_kafka_t, *const c_char, i32, *mut i64, *mut i64) -> RDKafkaRespErr,
    ) -> Result<(i64, i64), RDKafkaErrorCode> {
        let topic = CString::new(topic).map_err(|_| RDKafkaErrorCode::InvalidArgument)?;
        let (mut low, mut high) = (-1i64, -1i64);
        code_result(call(
            self.rk,
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        ))?;
        Ok((low, high))
    }

    /// Leaves the group (the revocation runs the handler) and stops fetching; a handler's
    /// panic during it is raised here.
    pub fn close(mut self) {
        self.close_group();
        self.raise_handler_panic();
    }

    fn close_group(&mut self) {
        if !self.closed {
            self.closed = true;
            // SAFETY: live client; close serves the final revocation on this thread.
            let err = unsafe { rd::rd_kafka_consumer_close(self.rk) };
            if let Err(e) = code_result(err) {
                tracing::warn!(error = %e, "leaving the consumer group failed");
            }
        }
    }

    fn raise_handler_panic(&self) {
        let panic = self
            .shared
            .panic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(p) = panic {
            resume_unwind(p);
        }
    }
}

impl<H: RebalanceHandler> Drop for BatchConsumer<H> {
    fn drop(&mut self) {
        self.close_group();
        // SAFETY: both handles are live and not used again; the client goes last.
        unsafe {
            rd::rd_kafka_queue_destroy(self.queue);
            rd::rd_kafka_destroy(self.rk);
        }
    }
}

/// Messages from one [`BatchConsumer::consume`], released when it is dropped.
pub struct Batch<'c> {
    msgs: Vec<*mut rd::rd_kafka_message_t>,
    rebalanced: bool,
    _consumer: PhantomData<&'c ()>,
}

impl Batch<'_> {
    /// Number of messages (errors included).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Whether a rebalance ran while it was read: messages fetched under the assignment before
    /// may be in it, so its positions cannot be trusted.
    pub fn rebalanced(&self) -> bool {
        self.rebalanced
    }

    /// The messages in order, or the error librdkafka reported in a message's place.
    pub fn iter(&self) -> impl Iterator<Item = Result<Record<'_>, KafkaError>> + '_ {
        self.msgs.iter().map(|&m| {
            // SAFETY: every pointer came from librdkafka and lives until the batch is dropped.
            let m = unsafe { &*m };
            if m.err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(KafkaError::MessageConsumption(m.err.into()));
            }
            Ok(Record {
                // SAFETY: a consumed message's topic handle lives as long as the message.
                topic: unsafe { topic_name(m.rkt) },
                partition: m.partition,
                offset: m.offset,
                // SAFETY: librdkafka's buffers of `len` bytes, alive with the message.
                payload: unsafe { bytes(m.payload, m.len) },
                key: unsafe { bytes(m.key, m.key_len) },
            })
        })
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for &m in &self.msgs {
            // SAFETY: each message is released once, here.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
    }
}

unsafe fn topic_name<'a>(rkt: *const rd::rd_kafka_topic_t) -> &'a str {
    if rkt.is_null() {
        return "";
    }
    // Topic names are ASCII in Kafka; anything else is no topic we subscribed to.
    CStr::from_ptr(rd::rd_kafka_topic_name(rkt))
        .to_str()
        .unwrap_or("")
}

unsafe fn bytes<'a>(p: *const c_void, len: usize) -> Option<&'a [u8]> {
    if p.is_null() {
        None
    } else {
        Some(std::slice::from_raw_parts(p.cast::<u8>(), len))
    }
}

fn code_result(err: RDKafkaRespErr) -> Result<(), RDKafkaErrorCode> {
    if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(err.into())
    }
}

fn timeout_ms(timeout: Duration) -> c_int {
    c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX)
}

unsafe fn partitions(list: *const rd::rd_kafka_topic_partition_list_t) -> Vec<(String, i32)> {
    if list.is_null() {
        return Vec::new();
    }
    let list = &*list;
    let n = usize::try_from(list.cnt).unwrap_or(0);
    if n == 0 || list.elems.is_null() {
        return Vec::new();
    }
    std::slice::from_raw_parts(list.elems, n)
        .iter()
        .map(|e| {
            let topic = if e.topic.is_null() {
                String::new()
            } else {
                CStr::from_ptr(e.topic).to_string_lossy().into_owned()
            };
            (topic, e.partition)
        })
        .collect()
}

unsafe extern "C" fn rebalance_cb<H: RebalanceHandler>(
    rk: *mut rd::rd_kafka_t,
    err: RDKafkaRespErr,
    list: *mut rd::rd_kafka_topic_partition_list_t,
    opaque: *mut c_void,
) {
    // SAFETY: the opaque pointer is the consumer's boxed `Shared`, alive while `rk` is.
    let shared = &*(opaque as *const Shared<H>);
    shared.rebalanced.store(true, Ordering::Relaxed);
    let parts = partitions(list);
    let assignment = Assignment {
        rk,
        _consumer: PhantomData,
    };
    let event = match err {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(&parts),
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(&parts),
        other => Rebalance::Error(other.into()),
    };
    let served = catch_unwind(AssertUnwindSafe(|| {
        shared.handler.rebalance(&assignment, event)
    }));
    if let Err(p) = served {
        // Nothing stays assigned after a handler that failed midway.
        let _ = assignment.unassign();
        *shared.panic.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
    }
}

unsafe extern "C" fn error_cb(
    _rk: *mut rd::rd_kafka_t,
    err: c_int,
    reason: *const c_char,
    _opaque: *mut c_void,
) {
    let reason = if reason.is_null() {
        "".into()
    } else {
        CStr::from_ptr(reason).to_string_lossy()
    };
    tracing::warn!(code = err, error = %reason, "kafka error (the client retries by itself)");
}

unsafe extern "C" fn log_cb(
    _rk: *const rd::rd_kafka_t,
    level: c_int,
    facility: *const c_char,
    message: *const c_char,
) {
    let text = |p: *const c_char| {
        if p.is_null() {
            "".into()
        } else {
            CStr::from_ptr(p).to_string_lossy()
        }
    };
    let (facility, message) = (text(facility), text(message));
    // Syslog levels, as librdkafka uses them.
    match level {
        i32::MIN..=3 => tracing::error!(target: "librdkafka", %facility, "{message}"),
        4 => tracing::warn!(target: "librdkafka", %facility, "{message}"),
        5 | 6 => tracing::info!(target: "librdkafka", %facility, "{message}"),
        _ => tracing::debug!(target: "librdkafka", %facility, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts rebalances; a broker-less consumer never sees one.
    #[derive(Default)]
    struct Counting {
        calls: std::sync::atomic::AtomicU32,
    }

    impl RebalanceHandler for Counting {
        fn rebalance(&self, assignment: &Assignment<'_>, _event: Rebalance<'_>) {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let _ = assignment.unassign();
        }
    }

    fn config(group: Option<&str>) -> ClientConfig {
        let mut cc = ClientConfig::new();
        // Nothing listens on port 9: the client keeps retrying in the background.
        cc.set("bootstrap.servers", "127.0.0.1:9")
            .set("enable.auto.commit", "false")
            .set("log_level", "0");
        if let Some(g) = group {
            cc.set("group.id", g);
        }
        cc
    }

    #[test]
    fn a_consumer_needs_a_group_and_a_valid_configuration() {
        match BatchConsumer::new(&config(None), Counting::default()) {
            Err(KafkaError::ClientCreation(reason)) => assert!(reason.contains("group.id")),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("created without a group"),
        }
        let mut bad = config(Some("g"));
        bad.set("fetch.wait.max.ms", "not a number");
        assert!(BatchConsumer::new(&bad, Counting::default()).is_err());
    }

    #[test]
    fn without_a_broker_batches_are_empty_and_close_returns() {
        let consumer = BatchConsumer::new(&config(Some("g")), Counting::default())
            .expect("a consumer needs no broker to be created");
        consumer.subscribe(&["divolte"]).expect("subscribe");
        for _ in 0..3 {
            let batch = consumer.consume(Duration::from_millis(20), 16);
            assert!(batch.is_empty() && !batch.rebalanced());
            assert_eq!(batch.iter().count(), 0);
        }
        assert!(consumer
            .fetch_watermarks("divolte\0x", 0, Duration::ZERO)
            .is_err());
        // Nothing was fetched: no high watermark is known, and none is made up.
        assert_eq!(consumer.cached_high_watermark("divolte", 0), None);
        assert_eq!(consumer.handler().calls.load(Ordering::Relaxed), 0);
        consumer.close();
    }
}
