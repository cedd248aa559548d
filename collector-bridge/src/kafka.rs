//! `run`: the Kafka source. One thread polls an rdkafka `BaseConsumer`; offsets are managed
//! by the worker (the consumer never commits): on every assignment the bridge asks the worker
//! what each slot has applied and starts each partition just after the lowest of those. Bad
//! messages are optionally copied to a dead-letter topic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use crate::avro::load_schema;
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
    fatal: Option<WorkerError>,
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

impl ClientContext for BridgeContext {}

impl ConsumerContext for BridgeContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut state = self.lock();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let tpl = state.on_assign(tpl);
                if let Err(e) = consumer.assign(&tpl) {
                    tracing::error!(error = %e, "assigning partitions failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                state.on_revoke();
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassigning partitions failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                state.on_revoke();
                let _ = consumer.unassign();
            }
        }
    }
}

impl ConsumerState {
    fn on_assign(&mut self, tpl: &TopicPartitionList) -> TopicPartitionList {
        self.assigned.clear();
        for e in tpl.elements() {
            let idx = self.pipeline.own(e.topic(), e.partition());
            self.assigned
                .push((idx, e.topic().to_string(), e.partition()));
        }
        if let Err(e) = load_watermarks(&mut self.pipeline, &self.client) {
            self.fatal.get_or_insert(e);
        }
        let mut out = TopicPartitionList::new();
        for (idx, topic, partition) in &self.assigned {
            let offset = match self.pipeline.resume_offset(*idx) {
                Some(o) => Offset::Offset(o),
                None => Offset::Beginning,
            };
            tracing::info!(topic, partition, ?offset, "partition assigned");
            if let Err(e) = out.add_partition_offset(topic, *partition, offset) {
                tracing::error!(error = %e, topic, partition, "cannot set the start offset");
            }
        }
        self.last_flush = Instant::now();
        out
    }

    fn on_revoke(&mut self) {
        // Hand over cleanly: what was read is pushed before another member starts there.
        if self.fatal.is_none() && !self.closing {
            match deliver_pending(&mut self.pipeline, &self.client, "divolte") {
                Ok(_) => {}
                Err(e) => {
                    self.fatal.get_or_insert(e);
                }
            }
        }
        self.pipeline.discard();
        for (idx, topic, partition) in self.assigned.drain(..) {
            tracing::info!(topic, partition, "partition revoked");
            self.pipeline.release(idx);
        }
        self.metrics.clear_lag();
    }

    fn on_message<M: Message>(&mut self, m: &M) {
        let idx = self.pipeline.partition(m.topic(), m.partition());
        if idx >= self.last_seen.len() {
            self.last_seen.resize(idx + 1, None);
        }
        if !self.pipeline.owns(idx) {
            return;
        }
        self.last_seen[idx] = Some(m.offset());
        if let Err(bad) = self.pipeline.process(idx, m.offset(), m.payload()) {
            self.on_bad(m, &bad);
        }
    }

    fn on_bad<M: Message>(&mut self, m: &M, bad: &BadMessage) {
        self.bad_seen += 1;
        if self.bad_seen <= BAD_LOG_FULL || self.bad_seen.is_multiple_of(BAD_LOG_EVERY) {
            tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %bad, total_bad = self.bad_seen, "skipping bad message");
        }
        if let Some(dl) = &self.dead_letter {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "x-error",
                    value: Some(bad.to_string().as_bytes()),
                })
                .insert(Header {
                    key: "x-source-topic",
                    value: Some(m.topic().as_bytes()),
                })
                .insert(Header {
                    key: "x-source-partition",
                    value: Some(m.partition().to_string().as_bytes()),
                })
                .insert(Header {
                    key: "x-source-offset",
                    value: Some(m.offset().to_string().as_bytes()),
                });
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&dl.topic).headers(headers);
            if let Some(p) = m.payload() {
                rec = rec.payload(p);
            }
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            match dl.producer.send(rec) {
                Ok(()) => self.metrics.dead_lettered(),
                Err((e, _)) => tracing::error!(error = %e, "cannot copy to the dead-letter topic"),
            }
        }
    }

    fn seek_to_watermarks(&mut self, consumer: &BaseConsumer<BridgeContext>) {
        for (idx, topic, partition) in &self.assigned {
            let offset = match self.pipeline.resume_offset(*idx) {
                Some(o) => Offset::Offset(o),
                None => Offset::Beginning,
            };
            tracing::info!(topic, partition, ?offset, "seeking after resynchronisation");
            if let Err(e) = consumer.seek(topic, *partition, offset, Duration::from_secs(10)) {
                tracing::error!(error = %e, topic, partition, "seek failed");
            }
        }
    }

    fn update_lag(&mut self, consumer: &BaseConsumer<BridgeContext>) {
        for (idx, topic, partition) in &self.assigned {
            if let Ok((low, high)) =
                consumer.fetch_watermarks(topic, *partition, Duration::from_millis(500))
            {
                let next = self
                    .last_seen
                    .get(*idx)
                    .copied()
                    .flatten()
                    .map_or(low, |o| o + 1);
                self.metrics
                    .set_lag(topic, *partition, (high - next).max(0));
            }
        }
    }
}

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
        .set("partition.assignment.strategy", "range,roundrobin");
    for (k, v) in &cfg.kafka_options {
        cc.set(k, v);
    }
    let consumer: BaseConsumer<BridgeContext> = cc.create_with_context(ctx)?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;

    let mut last_lag = Instant::now();
    let result = loop {
        if shutdown.load(Ordering::Relaxed) {
            tracing::info!("shutdown requested; flushing");
            break Ok(());
        }
        let polled = consumer.poll(Duration::from_millis(50));
        let ctx = consumer.context();
        let mut state = ctx.lock();
        if let Some(e) = state.fatal.take() {
            break Err(e.into());
        }
        match polled {
            Some(Ok(m)) => state.on_message(&m),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka error (the client retries by itself)")
            }
            None => {}
        }
        let since_flush = state.last_flush.elapsed();
        if state
            .flush
            .due(&state.pipeline.pending(), since_flush)
            .is_some()
        {
            let state = &mut *state;
            state.last_flush = Instant::now();
            match deliver_pending(&mut state.pipeline, &state.client, "divolte") {
                Ok(Delivery::Done) => {}
                Ok(Delivery::Resync) => state.seek_to_watermarks(&consumer),
                Err(e) => break Err(e.into()),
            }
        } else if since_flush >= state.flush.max_age {
            // Nothing to deliver: still publish the counters at the same pace.
            let stats = state.pipeline.take_stats();
            state.metrics.add_stats(&stats);
            state.last_flush = Instant::now();
        }
        if let Some(dl) = &state.dead_letter {
            dl.producer.poll(Duration::ZERO);
        }
        if last_lag.elapsed() >= LAG_EVERY {
            last_lag = Instant::now();
            state.update_lag(&consumer);
        }
    };

    // Flush what was read, then leave the group (which revokes and flushes nothing more).
    {
        let ctx = consumer.context();
        let mut state = ctx.lock();
        let state = &mut *state;
        if result.is_ok() {
            match deliver_pending(&mut state.pipeline, &state.client, "divolte") {
                Ok(_) => tracing::info!("final flush done"),
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
    consumer.unsubscribe();
    drop(consumer);
    result
}
