//! Development tool: produces Divolte-shaped records (or raw bytes) to a Kafka topic, on the
//! partitions you choose, for end-to-end tests of `collector-bridge run`.
//!
//! ```text
//! cargo run --example produce -p collector-bridge -- --brokers 127.0.0.1:9092 --topic divolte \
//!     [--schema S.avsc] [--wire naked|confluent] < records.jsonl
//! ```
//! Each line of standard input is one JSON object, either an event encoded with the schema
//! (fields left out get the simulator's defaults):
//! ```json
//! {"partition": 0, "key": "0:party1", "event": {"eventType": "impression", "pageType": "home",
//!  "productId": "it-1", "source": "top_pick", "location": "/", "detectedDuplicate": false,
//!  "userAgentType": "Browser"}}
//! ```
//! or a message sent as is, e.g. a poison message: `{"partition": 1, "raw_hex": "00ff"}`.
//! After every record is delivered it prints `{"sent": N, "partitions": {"0": n0, ...}}`; it
//! exits with an error if any record was not delivered.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use collector_bridge::avro::{load_schema, Wire};
use collector_bridge::simulate::{RecordEncoder, SimEvent};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use serde_json::Value;

/// Counts records the broker did not acknowledge.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            eprintln!("produce: delivery failed: {e}");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Args {
    brokers: String,
    topic: String,
    schema: Option<PathBuf>,
    wire: Wire,
}

fn args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut brokers, mut topic, mut schema, mut wire) = (None, None, None, Wire::Naked);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--brokers" => brokers = Some(value()?),
            "--topic" => topic = Some(value()?),
            "--schema" => schema = Some(PathBuf::from(value()?)),
            "--wire" => {
                wire = match value()?.as_str() {
                    "naked" => Wire::Naked,
                    "confluent" => Wire::Confluent,
                    w => bail!("--wire must be naked or confluent, not {w}"),
                }
            }
            _ => bail!(
                "usage: produce --brokers B --topic T [--schema S] [--wire W] < records.jsonl"
            ),
        }
    }
    Ok(Args {
        brokers: brokers.context("--brokers is required")?,
        topic: topic.context("--topic is required")?,
        schema,
        wire,
    })
}

/// A `&'static str` for the event's fixed-vocabulary fields (the process is short-lived).
fn text(v: &Value, field: &str, default: &'static str) -> &'static str {
    match v.get(field).and_then(Value::as_str) {
        Some(s) => String::leak(s.to_string()),
        None => default,
    }
}

fn event(v: &Value, n: u64) -> SimEvent {
    let s = |f: &str| v.get(f).and_then(Value::as_str).map(str::to_string);
    SimEvent {
        event_type: text(v, "eventType", "impression"),
        page_type: text(v, "pageType", "home"),
        product_id: s("productId"),
        source: v
            .get("source")
            .and_then(Value::as_str)
            .map(|x| &*String::leak(x.to_string())),
        party_id: s("partyId").unwrap_or_else(|| format!("0:party{n}")),
        session_id: s("sessionId").unwrap_or_else(|| format!("0:session{n}")),
        event_id: s("eventId").unwrap_or_else(|| format!("event{n}")),
        timestamp: v
            .get("timestamp")
            .and_then(Value::as_i64)
            .unwrap_or(1_700_000_000_000 + n as i64),
        location: s("location").unwrap_or_else(|| "/".into()),
        duplicate: v
            .get("detectedDuplicate")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        user_agent_type: text(v, "userAgentType", "Browser"),
        parameters: Vec::new(),
    }
}

fn hex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("raw_hex has an odd number of digits");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("raw_hex is not hexadecimal"))
        .collect()
}

fn main() -> Result<()> {
    let args = args()?;
    let schema = load_schema(args.schema.as_deref())?;
    let encoder = RecordEncoder::new(&schema)?;
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", "5")
        .create_with_context(Deliveries::default())
        .context("creating the producer")?;
    let mut per_partition: BTreeMap<i32, u64> = BTreeMap::new();
    let mut sent = 0u64;
    for (line_no, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("line {}: not JSON", line_no + 1))?;
        let partition = v.get("partition").and_then(Value::as_i64).unwrap_or(0) as i32;
        let payload = match (v.get("raw_hex"), v.get("event")) {
            (Some(h), _) => hex(h.as_str().unwrap_or_default())?,
            (None, Some(e)) => {
                let body = encoder.encode(&event(e, sent))?;
                match args.wire {
                    Wire::Confluent => [vec![0u8, 0, 0, 0, 1], body].concat(),
                    _ => body,
                }
            }
            (None, None) => bail!("line {}: needs `event` or `raw_hex`", line_no + 1),
        };
        let key = v
            .get("key")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("0:party{sent}"));
        let mut rec = BaseRecord::to(&args.topic)
            .partition(partition)
            .key(&key)
            .payload(&payload);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
        *per_partition.entry(partition).or_default() += 1;
        sent += 1;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing to the broker")?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {sent} records were not delivered");
    }
    let partitions: BTreeMap<String, u64> = per_partition
        .into_iter()
        .map(|(p, n)| (p.to_string(), n))
        .collect();
    println!(
        "{}",
        serde_json::json!({ "sent": sent, "partitions": partitions })
    );
    Ok(())
}
