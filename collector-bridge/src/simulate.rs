//! `simulate`: synthetic visitors with hidden click-through rates per item. Each visitor asks
//! the worker for the pick, "sees" it (an impression record) and clicks it with the item's
//! true rate (a click record), in the Divolte shape of the chosen schema.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use rand::{Rng, RngCore, SeedableRng};
use rand_distr::{Beta, Distribution};

use crate::avro::Wire;

/// How hidden click-through rates are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CtrDist {
    /// Beta(a, b) per item.
    Beta(f64, f64),
    /// The same rate for every item.
    Fixed(f64),
}

impl std::str::FromStr for CtrDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected beta:A,B or fixed:P, got {s:?}");
        let (kind, args) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "beta" => {
                let (a, b) = args.split_once(',').ok_or_else(bad)?;
                let a: f64 = a.trim().parse().map_err(|_| bad())?;
                let b: f64 = b.trim().parse().map_err(|_| bad())?;
                if !(a > 0.0 && b > 0.0 && a.is_finite() && b.is_finite()) {
                    return Err(format!("beta parameters must be positive, got {s:?}"));
                }
                Ok(CtrDist::Beta(a, b))
            }
            "fixed" => {
                let p: f64 = args.trim().parse().map_err(|_| bad())?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!("fixed rate must be in [0, 1], got {s:?}"));
                }
                Ok(CtrDist::Fixed(p))
            }
            _ => Err(bad()),
        }
    }
}

impl Default for CtrDist {
    fn default() -> Self {
        CtrDist::Beta(2.0, 60.0)
    }
}

/// SplitMix64: tiny, fast, and fully specified, so rates are reproducible across versions of
/// the `rand` crate.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
}

impl RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl SeedableRng for SplitMix64 {
    type Seed = [u8; 8];
    fn from_seed(seed: [u8; 8]) -> Self {
        SplitMix64(u64::from_le_bytes(seed))
    }
}

/// FNV-1a, a stable hash for seeding per item.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hidden click-through rate of `item` under `seed`: a deterministic function, so tests
/// and benchmarks can compute which item is truly best.
pub fn true_ctr(seed: u64, item: &str, dist: CtrDist) -> f64 {
    match dist {
        CtrDist::Fixed(p) => p,
        CtrDist::Beta(a, b) => {
            let mut rng = SplitMix64::new(seed ^ fnv1a(item.as_bytes()).rotate_left(17));
            match Beta::new(a, b) {
                Ok(d) => d.sample(&mut rng),
                Err(_) => 0.0,
            }
        }
    }
}

/// One Divolte-shaped event to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    /// `impression` or `pageView`.
    pub event_type: &'static str,
    /// `home` or `product`.
    pub page_type: &'static str,
    /// Item, if any.
    pub product_id: Option<String>,
    /// `top_pick` or none.
    pub source: Option<&'static str>,
    /// Visitor id.
    pub party_id: String,
    /// Session id.
    pub session_id: String,
    /// Event id.
    pub event_id: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Page URL.
    pub location: String,
    /// Divolte's duplicate flag.
    pub duplicate: bool,
    /// User agent type.
    pub user_agent_type: &'static str,
}

/// Builds records of any Divolte-shaped schema: known fields get the event's values, the rest
/// get null, zero or empty values.
#[derive(Debug, Clone)]
pub struct RecordEncoder {
    schema: Schema,
    fields: Vec<(String, Schema)>,
}

/// Why a record could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode a simulated record: {0}")]
pub struct EncodeError(String);

fn zero(s: &Schema) -> Value {
    match s {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(false),
        Schema::Int | Schema::Date | Schema::TimeMillis => Value::Int(0),
        Schema::Long | Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimeMicros => {
            Value::Long(0)
        }
        Schema::Float => Value::Float(0.0),
        Schema::Double => Value::Double(0.0),
        Schema::String => Value::String(String::new()),
        Schema::Bytes => Value::Bytes(Vec::new()),
        Schema::Fixed(f) => Value::Fixed(f.size, vec![0; f.size]),
        Schema::Enum(e) => Value::Enum(0, e.symbols.first().cloned().unwrap_or_default()),
        Schema::Array(_) => Value::Array(Vec::new()),
        Schema::Map(_) => Value::Map(HashMap::new()),
        Schema::Union(u) => {
            let i = u
                .variants()
                .iter()
                .position(|v| matches!(v, Schema::Null))
                .unwrap_or(0);
            match u.variants().get(i) {
                Some(v) => Value::Union(i as u32, Box::new(zero(v))),
                None => Value::Null,
            }
        }
        Schema::Record(r) => Value::Record(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), zero(&f.schema)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// Wraps a primitive value for a field's schema (picking the union branch).
fn fit(s: &Schema, v: Value) -> Option<Value> {
    match (s, &v) {
        (Schema::String, Value::String(_))
        | (Schema::Boolean, Value::Boolean(_))
        | (Schema::Long, Value::Long(_)) => Some(v),
        (Schema::Int, Value::Long(l)) => i32::try_from(*l).ok().map(Value::Int),
        (Schema::Enum(e), Value::String(sym)) => e
            .symbols
            .iter()
            .position(|x| x == sym)
            .map(|i| Value::Enum(i as u32, sym.clone())),
        (Schema::Union(u), _) => u
            .variants()
            .iter()
            .enumerate()
            .find_map(|(i, b)| fit(b, v.clone()).map(|x| Value::Union(i as u32, Box::new(x)))),
        _ => None,
    }
}

impl RecordEncoder {
    /// An encoder for a record schema.
    pub fn new(schema: &Schema) -> Result<RecordEncoder, EncodeError> {
        let Schema::Record(r) = schema else {
            return Err(EncodeError("the schema is not a record".into()));
        };
        Ok(RecordEncoder {
            schema: schema.clone(),
            fields: r
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.schema.clone()))
                .collect(),
        })
    }

    /// The record as an apache-avro value.
    pub fn value(&self, e: &SimEvent) -> Value {
        let mut out = Vec::with_capacity(self.fields.len());
        for (name, s) in &self.fields {
            let v = match name.as_str() {
                "eventType" => Some(Value::String(e.event_type.into())),
                "pageType" => Some(Value::String(e.page_type.into())),
                "productId" => e.product_id.clone().map(Value::String),
                "source" => e.source.map(|s| Value::String(s.into())),
                "partyId" => Some(Value::String(e.party_id.clone())),
                "sessionId" => Some(Value::String(e.session_id.clone())),
                "eventId" | "pageViewId" => Some(Value::String(e.event_id.clone())),
                "timestamp" | "clientTimestamp" => Some(Value::Long(e.timestamp)),
                "location" => Some(Value::String(e.location.clone())),
                "detectedDuplicate" => Some(Value::Boolean(e.duplicate)),
                "detectedCorruption" | "firstInSession" => Some(Value::Boolean(false)),
                "userAgentType" => Some(Value::String(e.user_agent_type.into())),
                "remoteHost" => Some(Value::String("127.0.0.1".into())),
                _ => None,
            };
            let v = v.and_then(|v| fit(s, v)).unwrap_or_else(|| zero(s));
            out.push((name.clone(), v));
        }
        Value::Record(out)
    }

    /// The record's naked Avro binary encoding.
    pub fn encode(&self, e: &SimEvent) -> Result<Vec<u8>, EncodeError> {
        let w = GenericDatumWriter::builder(&self.schema)
            .build()
            .map_err(|e| EncodeError(e.to_string()))?;
        w.write_value_to_vec(self.value(e))
            .map_err(|e| EncodeError(e.to_string()))
    }
}

/// Settings of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Visitors to simulate.
    pub visitors: u64,
    /// Visitors per second (0: as fast as possible).
    pub rate: f64,
    /// Concurrent visitors.
    pub concurrency: usize,
    /// Seed of the hidden rates and of each visitor's choices.
    pub seed: u64,
    /// Hidden rate distribution.
    pub ctr: CtrDist,
    /// Slot to ask for picks.
    pub slot: String,
    /// Fraction of visitors who also view an unrelated page (noise records).
    pub noise: f64,
}

/// What a simulation produced.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SimReport {
    /// Visitors simulated.
    pub visitors: u64,
    /// Impression records.
    pub impressions: u64,
    /// Click records.
    pub clicks: u64,
    /// Noise records.
    pub noise: u64,
    /// Impressions per item.
    pub shown: HashMap<String, u64>,
}

/// Why a simulation stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The worker failed.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// A record could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The worker has no arms.
    #[error("slot {0} has no arms after waiting; import a catalog first (collector-bridge catalog import)")]
    NoArms(String),
    /// Where records go failed.
    #[error("output: {0}")]
    Output(String),
}

/// Receives the encoded records of visitors (key = party id).
pub trait RecordSink: Send + Sync {
    /// Takes one record.
    fn send(&self, key: &str, record: Vec<u8>) -> Result<(), SimError>;
}

/// Records sent through a channel to the in-process pipeline.
pub struct ChannelSink(pub Mutex<mpsc::SyncSender<Vec<u8>>>);

impl RecordSink for ChannelSink {
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

/// A run id from the clock, for stream names.
pub fn default_run_id(seed: u64) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms:x}-{seed}")
}

/// Runs the visitors; each asks the worker for the pick and emits records into `sink`.
pub fn run_visitors(
    cfg: &SimConfig,
    client: &crate::sink::WorkerClient,
    encoder: &RecordEncoder,
    wire: Wire,
    sink: &dyn RecordSink,
    shutdown: &Arc<AtomicBool>,
) -> Result<SimReport, SimError> {
    // Wait (bounded) for a catalog.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.pick(&cfg.slot)?.is_none() {
        if Instant::now() > deadline || shutdown.load(Ordering::Relaxed) {
            return Err(SimError::NoArms(cfg.slot.clone()));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let next = AtomicU64::new(0);
    let report = Mutex::new(SimReport::default());
    let start = Instant::now();
    let first_error: Mutex<Option<SimError>> = Mutex::new(None);
    let frame = |mut body: Vec<u8>| -> Vec<u8> {
        if wire == Wire::Confluent {
            let mut v = vec![0u8, 0, 0, 0, 1];
            v.append(&mut body);
            v
        } else {
            body
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..cfg.concurrency.max(1) {
            scope.spawn(|| {
                let mut local = SimReport::default();
                loop {
                    if shutdown.load(Ordering::Relaxed)
                        || first_error.lock().map(|e| e.is_some()).unwrap_or(true)
                    {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cfg.visitors {
                        break;
                    }
                    if cfg.rate > 0.0 {
                        let due = start + Duration::from_secs_f64(i as f64 / cfg.rate);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    let r = visit(cfg, i, client, encoder, &frame, sink, &mut local);
                    if let Err(e) = r {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        break;
                    }
                }
                if let Ok(mut rep) = report.lock() {
                    rep.visitors += local.visitors;
                    rep.impressions += local.impressions;
                    rep.clicks += local.clicks;
                    rep.noise += local.noise;
                    for (k, v) in local.shown {
                        *rep.shown.entry(k).or_default() += v;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    report
        .into_inner()
        .map_err(|_| SimError::Output("report poisoned".into()))
}

fn visit(
    cfg: &SimConfig,
    i: u64,
    client: &crate::sink::WorkerClient,
    encoder: &RecordEncoder,
    frame: &dyn Fn(Vec<u8>) -> Vec<u8>,
    sink: &dyn RecordSink,
    rep: &mut SimReport,
) -> Result<(), SimError> {
    let mut rng = SplitMix64::new(cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i);
    let Some(pick) = client.pick(&cfg.slot)? else {
        return Ok(());
    };
    let party = format!("0:sim{:x}:{i:x}", cfg.seed);
    let session = format!("0:s{i:x}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut ev = SimEvent {
        event_type: "impression",
        page_type: "home",
        product_id: Some(pick.item.clone()),
        source: Some("top_pick"),
        party_id: party.clone(),
        session_id: session,
        event_id: format!("{i:x}-0"),
        timestamp: now,
        location: "/".into(),
        duplicate: false,
        user_agent_type: "Browser",
    };
    sink.send(&party, frame(encoder.encode(&ev)?))?;
    rep.visitors += 1;
    rep.impressions += 1;
    *rep.shown.entry(pick.item.clone()).or_default() += 1;
    if rng.random::<f64>() < true_ctr(cfg.seed, &pick.item, cfg.ctr) {
        ev.event_type = "pageView";
        ev.page_type = "product";
        ev.event_id = format!("{i:x}-1");
        ev.location = format!("/product/{}/#/?source=top_pick", pick.item);
        sink.send(&party, frame(encoder.encode(&ev)?))?;
        rep.clicks += 1;
    }
    if rng.random::<f64>() < cfg.noise {
        ev.event_type = "pageView";
        ev.page_type = "category";
        ev.source = None;
        ev.product_id = None;
        ev.event_id = format!("{i:x}-2");
        ev.location = "/category/animals/".into();
        sink.send(&party, frame(encoder.encode(&ev)?))?;
        rep.noise += 1;
    }
    Ok(())
}

/// Flush settings for the in-process pipeline.
#[derive(Debug, Clone, Copy)]
pub struct FlushOptions {
    /// Push at least this often.
    pub interval: Duration,
    /// Push after this many records.
    pub events: u64,
}

/// Runs the visitors straight into the bridge's pipeline (no Kafka): records are decoded,
/// classified, aggregated and pushed as stream `simulate-<run id>`, partition 0.
pub fn simulate_direct(
    cfg: &SimConfig,
    client: &crate::sink::WorkerClient,
    schema: &Schema,
    rules: crate::classify::Rules,
    run_id: &str,
    flush_opts: FlushOptions,
    shutdown: &Arc<AtomicBool>,
) -> Result<SimReport, SimError> {
    let mut pipeline = crate::pipeline::Pipeline::new(schema, Wire::Naked, rules)
        .map_err(|e| SimError::Output(e.to_string()))?;
    let encoder = RecordEncoder::new(schema)?;
    let stream = format!("simulate-{run_id}");
    let tp = pipeline.agg.tp(&stream, 0);
    crate::engine::reload_watermarks(&mut pipeline, client)?;
    let mut offset = pipeline.agg.resume_offset(tp).unwrap_or(0);
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(16_384);
    let sink = ChannelSink(Mutex::new(tx));
    std::thread::scope(|scope| {
        let visitors = scope.spawn(|| {
            let r = run_visitors(cfg, client, &encoder, Wire::Naked, &sink, shutdown);
            // Closing the channel tells the pipeline loop the visitors are done.
            drop(sink);
            r
        });
        let mut last_flush = Instant::now();
        let pushed: Result<(), SimError> = loop {
            let msg = rx.recv_timeout(Duration::from_millis(20));
            let done = matches!(msg, Err(mpsc::RecvTimeoutError::Disconnected));
            let mut full = false;
            if let Ok(rec) = msg {
                let (f, bad) = pipeline.process(tp, offset, Some(&rec));
                if let Some(bad) = bad {
                    tracing::warn!(stream = %stream, offset, error = %bad, "simulated record is bad");
                }
                full = f;
                offset += 1;
            }
            if done
                || full
                || pipeline.agg.pending() >= flush_opts.events
                || last_flush.elapsed() >= flush_opts.interval
            {
                last_flush = Instant::now();
                match crate::engine::flush(&mut pipeline, client, "simulate") {
                    Ok(crate::engine::Flushed::Done) => {}
                    Ok(crate::engine::Flushed::Resync) => {
                        break Err(SimError::Output(format!(
                            "the worker refused stream {stream}; is another simulation using run id {run_id}?"
                        )))
                    }
                    Err(e) => break Err(e.into()),
                }
            }
            if done {
                break Ok(());
            }
        };
        // Unblock visitors if the pipeline stopped early.
        drop(rx);
        let report = visitors
            .join()
            .map_err(|_| SimError::Output("visitor thread panicked".into()))?;
        pushed?;
        report
    })
}
