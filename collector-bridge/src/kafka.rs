//! `run`: the Kafka source. One thread reads batches of messages from a [`BatchConsumer`];
//! offsets are managed by the worker (the consumer never commits): on every assignment the
//! bridge asks the worker what each slot has applied and starts each partition just after the
//! lowest of those. Bad messages are optionally copied to a dead-letter topic.
//!
//! Positions are never guessed: when the bridge must re-read (after a 409 or a body refused as
//! too large) it seeks every owned partition back to its resume offset before it reads another
//! message (the rest of the batch in hand is dropped), and a seek, start offset or assignment
//! that keeps failing stops the bridge with an error instead of reading on past events whose
//! counts were discarded. A batch read while a rebalance ran is dropped the same way and read
//! again from the worker's offsets: it may hold messages fetched under the old assignment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::avro::load_schema;
use crate::batch_consumer::{Assignment, BatchConsumer, Rebalance, RebalanceHandler, Record};
use crate::config::{read_token, RunConfig};
use crate::delivery::{deliver_pending, load_watermarks, Delivery, FlushPolicy};
use crate::metrics::Metrics;
use crate::pipeline::{BadMessage, Pipeline};
use crate::worker_client::{Backoff, WorkerClient, WorkerError};

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad schema or rules.
    #[error(transparent)]
    Schema(#[from] crate::avro::SchemaError),
    /// Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The worker refused in a way retrying cannot fix.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A partition could not be positioned where reading must resume.
    #[error("cannot seek {topic}/{partition} to {offset} after {attempts} attempts: {source}; stopping rather than read on past events whose counts were discarded (a restart resumes from the worker's offsets)")]
    Seek {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Target offset.
        offset: String,
        /// Attempts made.
        attempts: u32,
        /// Last error.
        source: Box<KafkaError>,
    },
    /// The assigned partitions could not be started at the worker's offsets.
    #[error("cannot start the assigned partitions at the worker's offsets: {0}; stopping rather than leave partitions unread or read them from the wrong place")]
    Assign(KafkaError),
    /// The metrics listener could not start.
    #[error("metrics listener on {addr}: {source}")]
    Metrics {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Log only the first bad messages in full, then a sample, so garbage cannot flood the log.
const BAD_LOG_FULL: u64 = 50;
const BAD_LOG_EVERY: u64 = 1000;
const LAG_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for the broker's watermarks of a partition nothing was read from yet.
const LAG_QUERY_TIMEOUT: Duration = Duration::from_millis(500);
/// Attempts at a seek or an assignment before the bridge stops.
const POSITION_ATTEMPTS: u32 = 5;
/// Delay after the first failed attempt; it doubles after each.
const POSITION_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Runs `op` up to `attempts` times, sleeping `delay` (doubling) between failures; the last
/// error if none succeeds.
fn retry_kafka<T>(
    attempts: u32,
    delay: Duration,
    mut op: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    let mut wait = delay;
    let mut n = 1;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if n >= attempts => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, attempt = n, retry_in_ms = wait.as_millis() as u64, "kafka operation failed; retrying");
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
                n += 1;
            }
        }
    }
}

struct DeadLetter {
    producer: BaseProducer,
    topic: String,
}

/// Everything the poll loop and the rebalance callback share.
struct ConsumerState {
    pipeline: Pipeline,
    client: WorkerClient,
    metrics: Arc<Metrics>,
    flush: FlushPolicy,
    /// Partitions owned now: (pipeline partition index, topic, partition).
    assigned: Vec<(usize, String, i32)>,
    /// Last offset read per pipeline partition index, for lag.
    last_seen: Vec<Option<i64>>,
    dead_letter: Option<DeadLetter>,
    /// Why the bridge must stop, when a rebalance callback found a reason.
    fatal: Option<RunError>,
    /// Set once the final delivery is done: the revocation on close has nothing to push.
    closing: bool,
    bad_seen: u64,
    last_flush: Instant,
}

struct BridgeContext {
    state: Mutex<ConsumerState>,
}

impl BridgeContext {
    fn lock(&self) -> MutexGuard<'_, ConsumerState> {
        // A poisoned lock means a panic elsewhere already; keep the data, it is still consistent
        // at message granularity.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RebalanceHandler for BridgeContext {
    fn rebalance(&self, assignment: &Assignment<'_>, event: Rebalance<'_>) {
        let mut state = self.lock();
        match event {
            Rebalance::Assign(partitions) => {
                let Some(tpl) = state.on_assign(partitions) else {
                    // The poll loop stops on the recorded error before reading anything.
                    return;
                };
                if let Err(e) = retry_kafka(POSITION_ATTEMPTS, POSITION_RETRY_DELAY, || {
                    assignment.assign(&tpl)
                }) {
                    tracing::error!(error = %e, "assigning partitions failed");
                    state.fatal.get_or_insert(RunError::Assign(e));
                }
            }
            Rebalance::Revoke(_) => {
                state.on_revoke();
                if let Err(e) = assignment.unassign() {
                    tracing::error!(error = %e, "unassigning partitions failed");
                }
            }
            Rebalance::Error(code) => {
                tracing::error!(error = %code, "rebalance error; dropping the assignment");
                state.on_revoke();
                let _ = assignment.unassign();
            }
        }
    }
}

impl ConsumerState {
    /// Takes the assigned partitions and returns them with their start offsets from the
    /// worker; `None` (with `fatal` set) when they cannot be known.
    fn on_assign(&mut self, partitions: &[(String, i32)]) -> Option<TopicPartitionList> {
        self.assigned.clear();
        for (topic, partition) in partitions {
            let idx = self.pipeline.own(topic, *partition);
            self.assigned.push((idx, topic.clone(), *partition));
        }
        self.last_flush = Instant::now();
        if let Err(e) = load_watermarks(&mut self.pipeline, &self.client) {
            self.fatal.get_or_insert(e.into());
            return None;
        }
        let mut out = TopicPartitionList::new();
        for (idx, topic, partition) in &self.assigned {
            let offset = match self.pipeline.resume_offset(*idx) {
                Ok(o) => start_offset(o),
                Err(e) => {
                    self.fatal.get_or_insert(WorkerError::from(e).into());
                    return None;
                }
            };
            tracing::info!(topic, partition, ?offset, "partition assigned");
            // Adding to a local list fails only for an offset librdkafka cannot represent:
            // retrying cannot help, and leaving the partition out would leave it unread.
            if let Err(e) = out.add_partition_offset(topic, *partition, offset) {
                tracing::error!(error = %e, topic, partition, "cannot set the start offset");
                self.fatal.get_or_insert(RunError::Assign(e));
                return None;
            }
        }
        Some(out)
    }

    fn on_revoke(&mut self) {
        // Hand over cleanly: what was read is pushed before another member starts there.
        if self.fatal.is_none() && !self.closing {
            // A conflict or a refusal as too large discards what is pending: the next owner
            // reads it again from the worker's offsets.
            if let Err(e) = deliver_pending(&mut self.pipeline, &self.client, "divolte") {
                self.fatal.get_or_insert(e.into());
            }
        }
        self.pipeline.discard();
        for (idx, topic, partition) in self.assigned.drain(..) {
            tracing::info!(topic, partition, "partition revoked");
            self.pipeline.release(idx);
        }
        self.metrics.clear_lag();
    }

    #[inline]
    fn on_message(&mut self, m: &Record<'_>) {
        let idx = self.pipeline.partition(m.topic, m.partition);
        if idx >= self.last_seen.len() {
            self.last_seen.resize(idx + 1, None);
        }
        if !self.pipeline.owns(idx) {
            return;
        }
        self.last_seen[idx] = Some(m.offset);
        if let Err(bad) = self.pipeline.process(idx, m.offset, m.payload) {
            self.on_bad(m, &bad);
        }
    }

    fn on_bad(&mut self, m: &Record<'_>, bad: &BadMessage) {
        self.bad_seen += 1;
        if self.bad_seen <= BAD_LOG_FULL || self.bad_seen.is_multiple_of(BAD_LOG_EVERY) {
            tracing::warn!(topic = m.topic, partition = m.partition, offset = m.offset, error = %bad, total_bad = self.bad_seen, "skipping bad message");
        }
        if let Some(dl) = &self.dead_letter {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "x-error",
                    value: Some(bad.to_string().as_bytes()),
                })
                .insert(Header {
                    key: "x-source-topic",
                    value: Some(m.topic.as_bytes()),
                })
                .insert(Header {
                    key: "x-source-partition",
                    value: Some(m.partition.to_string().as_bytes()),
                })
                .insert(Header {
                    key: "x-source-offset",
                    value: Some(m.offset.to_string().as_bytes()),
                });
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&dl.topic).headers(headers);
            if let Some(p) = m.payload {
                rec = rec.payload(p);
            }
            if let Some(k) = m.key {
                rec = rec.key(k);
            }
            match dl.producer.send(rec) {
                Ok(()) => self.metrics.dead_lettered(),
                Err((e, _)) => tracing::error!(error = %e, "cannot copy to the dead-letter topic"),
            }
        }
    }

    /// Positions every owned partition at its resume offset, through `seek`, before anything
    /// else is read; a seek that keeps failing stops the bridge.
    fn seek_to_watermarks(
        &self,
        mut seek: impl FnMut(&str, i32, Offset) -> Result<(), KafkaError>,
    ) -> Result<(), RunError> {
        for (idx, topic, partition) in &self.assigned {
            let offset = start_offset(
                self.pipeline
                    .resume_offset(*idx)
                    .map_err(|e| RunError::Worker(e.into()))?,
            );
            tracing::info!(topic, partition, ?offset, "seeking after resynchronisation");
            retry_kafka(POSITION_ATTEMPTS, POSITION_RETRY_DELAY, || {
                seek(topic, *partition, offset)
            })
            .map_err(|source| {
                tracing::error!(error = %source, topic, partition, "seek failed");
                RunError::Seek {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: format!("{offset:?}"),
                    attempts: POSITION_ATTEMPTS,
                    source: Box::new(source),
                }
            })?;
        }
        Ok(())
    }

    fn update_lag(&mut self, consumer: &BatchConsumer<BridgeContext>) {
        for (idx, topic, partition) in &self.assigned {
            let seen = self.last_seen.get(*idx).copied().flatten();
            // Once something was read, the high watermark of the last fetch response (which
            // librdkafka keeps) is enough: no request to the broker, which could hold this
            // thread for the query's timeout when the broker is slow.
            let cached = seen.zip(consumer.cached_high_watermark(topic, *partition));
            let (next, high) = match cached {
                Some((last, high)) => (last.saturating_add(1), high),
                None => match consumer.fetch_watermarks(topic, *partition, LAG_QUERY_TIMEOUT) {
                    Ok((low, high)) => (seen.map_or(low, |o| o.saturating_add(1)), high),
                    Err(_) => continue,
                },
            };
            tracing::debug!(
                topic,
                partition,
                high,
                next,
                cached = cached.is_some(),
                "consumer lag"
            );
            self.metrics
                .set_lag(topic, *partition, high.saturating_sub(next).max(0));
        }
    }
}

/// Where a partition starts: just after the watermark, or at the earliest offset.
fn start_offset(resume: Option<i64>) -> Offset {
    match resume {
        Some(o) => Offset::Offset(o),
        None => Offset::Beginning,
    }
}

/// Most messages taken from the consumer at once. A batch of this size is processed in about
/// a millisecond (about 1 µs of bridge CPU per message), so the clock, read once a batch,
/// stays fresh enough for the 500 ms age flush.
const BATCH_MESSAGES: usize = 1024;
/// Longest wait for a batch to fill: how quickly a shutdown or an age flush is noticed when
/// the topic is quiet.
const BATCH_WAIT: Duration = Duration::from_millis(50);

/// How long fetching pauses once the prefetch queue is full, in milliseconds (librdkafka's
/// `fetch.queue.backoff.ms`; `--kafka-option` overrides it).
const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// Runs the bridge until `shutdown` is set, then flushes and returns.
pub fn run(
    cfg: &RunConfig,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> Result<(), RunError> {
    let schema = load_schema(cfg.schema.as_deref())?;
    let pipeline = Pipeline::new(&schema, cfg.wire, cfg.rules.clone())?;
    tracing::info!(slots = ?pipeline.slots(), topics = ?cfg.topics, group = %cfg.group, wire = ?cfg.wire, "starting");
    if let Some(addr) = &cfg.metrics_addr {
        let bound =
            crate::metrics::serve(addr, metrics.clone()).map_err(|source| RunError::Metrics {
                addr: addr.clone(),
                source,
            })?;
        tracing::info!(%bound, "serving metrics at /metrics");
    }
    let token = read_token(&cfg.token_env);
    if token.is_none() {
        tracing::warn!(var = %cfg.token_env, "no ingest token in the environment; pushes will be unauthenticated");
    }
    let backoff = Backoff {
        shutdown_grace: cfg.shutdown_grace,
        ..Backoff::default()
    };
    let client = WorkerClient::new(
        &cfg.worker_url,
        token,
        backoff,
        shutdown.clone(),
        metrics.clone(),
    );

    let dead_letter = match &cfg.dead_letter_topic {
        Some(topic) => {
            let mut pc = ClientConfig::new();
            pc.set("bootstrap.servers", &cfg.brokers);
            for (k, v) in &cfg.kafka_options {
                if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") {
                    pc.set(k, v);
                }
            }
            Some(DeadLetter {
                producer: pc.create()?,
                topic: topic.clone(),
            })
        }
        None => None,
    };

    let ctx = BridgeContext {
        state: Mutex::new(ConsumerState {
            pipeline,
            client,
            metrics: metrics.clone(),
            flush: cfg.flush,
            assigned: Vec::new(),
            last_seen: Vec::new(),
            dead_letter,
            fatal: None,
            closing: false,
            bad_seen: 0,
            last_flush: Instant::now(),
        }),
    };
    let mut cc = ClientConfig::new();
    let heartbeat = (cfg.session_timeout_ms / 4).max(100);
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", heartbeat.to_string())
        // The rebalance handler assigns whole partition sets (eager protocol).
        .set("partition.assignment.strategy", "range,roundrobin")
        // When the prefetch queue is full librdkafka stops fetching for this long (default
        // 1 s): the bridge drains the queue in a fraction of that and then waited out the rest,
        // a stall every ~200,000 messages that halved its throughput from a busy topic.
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    for (k, v) in &cfg.kafka_options {
        cc.set(k, v);
    }
    let consumer = BatchConsumer::new(&cc, ctx)?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;

    let seek = |topic: &str, partition: i32, offset: Offset| {
        consumer.seek(topic, partition, offset, Duration::from_secs(10))
    };
    let mut last_lag = Instant::now();
    let result = loop {
        if shutdown.load(Ordering::Relaxed) {
            tracing::info!("shutdown requested; flushing");
            break Ok(());
        }
        let batch = consumer.consume(BATCH_WAIT, BATCH_MESSAGES);
        let now = Instant::now();
        let mut state = consumer.handler().lock();
        let state = &mut *state;
        if let Some(e) = state.fatal.take() {
            break Err(e);
        }
        if batch.rebalanced() && !batch.is_empty() {
            drop(batch);
            if let Err(e) = state.seek_to_watermarks(seek) {
                break Err(e);
            }
            continue;
        }
        let mut stop = None;
        for m in batch.iter() {
            match m {
                Ok(m) => state.on_message(&m),
                Err(e) => tracing::warn!(error = %e, "kafka error (the client retries by itself)"),
            }
            match state.flush_if_due(now, seek) {
                Ok(Flushed::Resynced) => break,
                Ok(_) => {}
                Err(e) => {
                    stop = Some(e);
                    break;
                }
            }
        }
        drop(batch);
        if let Some(e) = stop {
            break Err(e);
        }
        if let Err(e) = state.flush_if_due(now, seek) {
            break Err(e);
        }
        if let Some(dl) = &state.dead_letter {
            dl.producer.poll(Duration::ZERO);
        }
        if now.saturating_duration_since(last_lag) >= LAG_EVERY {
            last_lag = now;
            state.update_lag(&consumer);
        }
    };

    // Flush what was read, then leave the group (which revokes and flushes nothing more).
    {
        let mut state = consumer.handler().lock();
        let state = &mut *state;
        if result.is_ok() {
            match deliver_pending(&mut state.pipeline, &state.client, "divolte") {
                Ok(Delivery::Done) => tracing::info!("final flush done"),
                Ok(_) => tracing::warn!("final flush refused (conflict or too large); the unpushed events will be read again on restart"),
                Err(e) => {
                    tracing::error!(error = %e, "final flush failed; the unpushed events will be read again on restart");
                }
            }
        }
        if let Some(dl) = &state.dead_letter {
            let _ = dl.producer.flush(Duration::from_secs(5));
        }
        state.closing = true;
    }
    consumer.close();
    result
}

/// What [`ConsumerState::flush_if_due`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flushed {
    /// Nothing was due.
    Nothing,
    /// The pending batches were delivered (or only the counters published, with nothing
    /// pending).
    Delivered,
    /// The worker refused (conflict, too large): every partition was positioned back at its
    /// resume offset, so messages already in hand must be dropped.
    Resynced,
}

impl ConsumerState {
    /// Delivers what is pending when the flush policy says so (by size at every message, by age
    /// at `now`), seeking back through `seek` when the worker asks for a re-read.
    #[inline]
    fn flush_if_due(
        &mut self,
        now: Instant,
        seek: impl FnMut(&str, i32, Offset) -> Result<(), KafkaError>,
    ) -> Result<Flushed, RunError> {
        let since_flush = now.saturating_duration_since(self.last_flush);
        if self
            .flush
            .due(&self.pipeline.pending(), since_flush)
            .is_some()
        {
            self.last_flush = Instant::now();
            match deliver_pending(&mut self.pipeline, &self.client, "divolte")? {
                Delivery::Done => Ok(Flushed::Delivered),
                Delivery::Resync | Delivery::TooLarge => {
                    self.seek_to_watermarks(seek)?;
                    Ok(Flushed::Resynced)
                }
            }
        } else if since_flush >= self.flush.max_age {
            // Nothing to deliver: still publish the counters at the same pace.
            let stats = self.pipeline.take_stats();
            self.metrics.add_stats(&stats);
            self.last_flush = now;
            Ok(Flushed::Delivered)
        } else {
            Ok(Flushed::Nothing)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::classify::Rules;

    fn state() -> ConsumerState {
        let schema = load_schema(None).expect("schema");
        let metrics = Arc::new(Metrics::default());
        let client = WorkerClient::new(
            "http://127.0.0.1:9",
            None,
            Backoff::default(),
            Arc::new(AtomicBool::new(false)),
            metrics.clone(),
        );
        ConsumerState {
            pipeline: Pipeline::new(&schema, crate::avro::Wire::Naked, Rules::default())
                .expect("pipeline"),
            client,
            metrics,
            flush: FlushPolicy::default(),
            assigned: Vec::new(),
            last_seen: Vec::new(),
            dead_letter: None,
            fatal: None,
            closing: false,
            bad_seen: 0,
            last_flush: Instant::now(),
        }
    }

    fn failure() -> KafkaError {
        KafkaError::Seek("Local: Erroneous state".into())
    }

    #[test]
    fn a_failing_operation_is_retried_a_few_times() {
        let calls = Cell::new(0);
        let r = retry_kafka(5, Duration::from_millis(1), || {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(failure())
            } else {
                Ok(calls.get())
            }
        });
        assert_eq!(r.expect("third attempt"), 3);
        calls.set(0);
        let r: Result<(), _> = retry_kafka(4, Duration::from_millis(1), || {
            calls.set(calls.get() + 1);
            Err(failure())
        });
        assert!(r.is_err());
        assert_eq!(calls.get(), 4);
    }

    #[test]
    fn a_seek_that_keeps_failing_stops_the_bridge() {
        let mut st = state();
        for p in 0..2 {
            let idx = st.pipeline.own("divolte", p);
            st.assigned.push((idx, "divolte".into(), p));
        }
        st.pipeline
            .set_watermarks(
                0,
                &[
                    bandit::protocol::AppliedOffset {
                        topic: "divolte".into(),
                        partition: 0,
                        offset: 41,
                    },
                    bandit::protocol::AppliedOffset {
                        topic: "divolte".into(),
                        partition: 1,
                        offset: 9,
                    },
                ],
            )
            .expect("watermarks");
        // Partition 0 seeks on the second attempt; partition 1 never does.
        let mut seeks: Vec<(i32, Offset, bool)> = Vec::new();
        let r = st.seek_to_watermarks(|_, partition, offset| {
            let ok = partition == 0 && seeks.iter().any(|s| s.0 == 0);
            seeks.push((partition, offset, ok));
            if ok {
                Ok(())
            } else {
                Err(failure())
            }
        });
        match r {
            Err(e @ RunError::Seek { partition: 1, .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("divolte/1") && text.contains("stopping"),
                    "{text}"
                );
            }
            other => panic!("expected a seek error, got {other:?}"),
        }
        assert_eq!(seeks.iter().filter(|s| s.0 == 0).count(), 2);
        assert_eq!(
            seeks.iter().filter(|s| s.0 == 1).count(),
            POSITION_ATTEMPTS as usize
        );
        assert!(seeks
            .iter()
            .all(|s| s.1 == Offset::Offset(if s.0 == 0 { 42 } else { 10 })));
    }
}
