//! `simulate`: synthetic visitors with hidden click-through rates per item. Each visitor asks
//! the worker for the pick, "sees" it (an impression record) and clicks it with the item's
//! true rate (a click record), in the Divolte shape of the chosen schema. The records go to
//! Kafka or straight into the bridge's pipeline.

mod ctr;
mod output;
mod record;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apache_avro::Schema;
use rand::Rng;

pub use ctr::{segment_seed, true_ctr, CtrDist, SplitMix64};
pub use output::{ChannelOutput, KafkaOutput, RecordOutput};
pub use record::{EncodeError, RecordEncoder, SimEvent};

use crate::avro::Wire;
use crate::classify::Rules;
use crate::delivery::{deliver_pending, load_watermarks, Delivery, FlushPolicy};
use crate::pipeline::Pipeline;
use crate::worker_client::{WorkerClient, WorkerError};

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
    /// Device classes of the visitors with their shares (empty: no User-Agent, one set of
    /// rates); each class has its own hidden rates ([`segment_seed`]).
    pub devices: Vec<(Device, f64)>,
}

/// A simulated visitor's device class, announced by its User-Agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// A phone.
    Mobile,
    /// A tablet.
    Tablet,
    /// A computer.
    Desktop,
}

impl Device {
    /// The class's name (the worker's segment value).
    pub fn name(self) -> &'static str {
        match self {
            Device::Mobile => "mobile",
            Device::Tablet => "tablet",
            Device::Desktop => "desktop",
        }
    }

    /// A User-Agent of the class.
    pub fn user_agent(self) -> &'static str {
        match self {
            Device::Mobile => "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            Device::Tablet => "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            Device::Desktop => "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15",
        }
    }
}

/// Device classes with their shares (summing to one).
#[derive(Debug, Clone, PartialEq)]
pub struct Devices(pub Vec<(Device, f64)>);

/// Parses `mobile:0.6,desktop:0.4` (shares are normalised).
pub fn parse_devices(s: &str) -> Result<Devices, String> {
    let help = "expected CLASS:SHARE,... with classes mobile, tablet, desktop, e.g. mobile:0.6,desktop:0.4";
    let mut out: Vec<(Device, f64)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, share) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?}: {help}"))?;
        let device = match name.trim() {
            "mobile" => Device::Mobile,
            "tablet" => Device::Tablet,
            "desktop" => Device::Desktop,
            _ => return Err(format!("{name:?}: {help}")),
        };
        let share: f64 = share
            .trim()
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite() && *x > 0.0)
            .ok_or_else(|| format!("{part:?}: the share must be a positive number; {help}"))?;
        if out.iter().any(|(d, _)| *d == device) {
            return Err(format!("{name:?} is given twice"));
        }
        out.push((device, share));
    }
    let total: f64 = out.iter().map(|(_, s)| s).sum();
    if out.is_empty() {
        return Err(help.to_string());
    }
    Ok(Devices(
        out.into_iter().map(|(d, s)| (d, s / total)).collect(),
    ))
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
    /// Impressions per device class and item (with `devices`).
    pub shown_by_device: HashMap<String, HashMap<String, u64>>,
}

/// Why a simulation stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The worker failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
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

/// A run id from the clock, for stream names.
pub fn default_run_id(seed: u64) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms:x}-{seed}")
}

/// Runs the visitors; each asks the worker for the pick and emits records into `output`.
pub fn run_visitors(
    cfg: &SimConfig,
    client: &WorkerClient,
    encoder: &RecordEncoder,
    wire: Wire,
    output: &dyn RecordOutput,
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
                        // In slices, so a slow rate does not hold up a shutdown.
                        loop {
                            let now = Instant::now();
                            if due <= now || shutdown.load(Ordering::Relaxed) {
                                break;
                            }
                            std::thread::sleep((due - now).min(Duration::from_millis(50)));
                        }
                        if shutdown.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    let r = visit(cfg, i, client, encoder, &frame, output, &mut local);
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
                    for (d, items) in local.shown_by_device {
                        let into = rep.shown_by_device.entry(d).or_default();
                        for (k, v) in items {
                            *into.entry(k).or_default() += v;
                        }
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
    client: &WorkerClient,
    encoder: &RecordEncoder,
    frame: &dyn Fn(Vec<u8>) -> Vec<u8>,
    output: &dyn RecordOutput,
    rep: &mut SimReport,
) -> Result<(), SimError> {
    let mut rng = SplitMix64::new(cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i);
    // The visitor's device, drawn by share; it decides the User-Agent and the hidden rates.
    let device = if cfg.devices.is_empty() {
        None
    } else {
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut chosen = cfg.devices[cfg.devices.len() - 1].0;
        for (d, share) in &cfg.devices {
            acc += share;
            if u < acc {
                chosen = *d;
                break;
            }
        }
        Some(chosen)
    };
    let Some(pick) = client.pick_as(&cfg.slot, device.map(Device::user_agent))? else {
        return Ok(());
    };
    let rates_seed = match device {
        Some(d) => segment_seed(cfg.seed, d.name()),
        None => cfg.seed,
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
        // What the worker's impression signal carries.
        parameters: pick
            .decision
            .as_ref()
            .map(|d| {
                d.params()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect()
            })
            .unwrap_or_default(),
    };
    output.send(&party, frame(encoder.encode(&ev)?))?;
    rep.visitors += 1;
    rep.impressions += 1;
    *rep.shown.entry(pick.item.clone()).or_default() += 1;
    if let Some(d) = device {
        *rep.shown_by_device
            .entry(d.name().to_string())
            .or_default()
            .entry(pick.item.clone())
            .or_default() += 1;
    }
    if rng.random::<f64>() < true_ctr(rates_seed, &pick.item, cfg.ctr) {
        ev.event_type = "pageView";
        ev.page_type = "product";
        ev.event_id = format!("{i:x}-1");
        // The pick's link, with the decision in its fragment, as a browser follows it.
        ev.location = pick.href.clone();
        ev.parameters.clear();
        output.send(&party, frame(encoder.encode(&ev)?))?;
        rep.clicks += 1;
    }
    if rng.random::<f64>() < cfg.noise {
        ev.event_type = "pageView";
        ev.page_type = "category";
        ev.source = None;
        ev.product_id = None;
        ev.event_id = format!("{i:x}-2");
        ev.location = "/category/animals/".into();
        ev.parameters.clear();
        output.send(&party, frame(encoder.encode(&ev)?))?;
        rep.noise += 1;
    }
    Ok(())
}

/// Runs the visitors straight into the bridge's pipeline (no Kafka): records are decoded,
/// classified, aggregated and pushed as stream `simulate-<run id>`, partition 0. The records
/// the worker has not acknowledged yet are kept, so that a body refused as too large can be
/// cut smaller and read again like any other source.
pub fn simulate_direct(
    cfg: &SimConfig,
    client: &WorkerClient,
    schema: &Schema,
    rules: Rules,
    run_id: &str,
    flush: FlushPolicy,
    shutdown: &Arc<AtomicBool>,
) -> Result<SimReport, SimError> {
    let mut pipeline =
        Pipeline::new(schema, Wire::Naked, rules).map_err(|e| SimError::Output(e.to_string()))?;
    let encoder = RecordEncoder::new(schema)?;
    let stream = format!("simulate-{run_id}");
    let tp = pipeline.own(&stream, 0);
    load_watermarks(&mut pipeline, client)?;
    let first = pipeline
        .resume_offset(tp)
        .map_err(WorkerError::from)?
        .unwrap_or(0);
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(16_384);
    let output = ChannelOutput(Mutex::new(tx));
    std::thread::scope(|scope| {
        let visitors = scope.spawn(|| {
            let r = run_visitors(cfg, client, &encoder, Wire::Naked, &output, shutdown);
            // Closing the channel tells the pipeline loop the visitors are done.
            drop(output);
            r
        });
        // Records from offset `kept_from` on, not yet acknowledged by the worker; `next` is
        // the offset of the next record to process (below the end of `kept` after a re-read).
        let mut kept: VecDeque<Vec<u8>> = VecDeque::new();
        let mut kept_from = first;
        let mut next = first;
        let mut closed = false;
        let mut last_flush = Instant::now();
        let pushed: Result<(), SimError> = loop {
            let kept_end = kept_from + kept.len() as i64;
            if next < kept_end {
                let rec = &kept[(next - kept_from) as usize];
                if let Err(bad) = pipeline.process(tp, next, Some(rec)) {
                    tracing::warn!(stream = %stream, offset = next, error = %bad, "simulated record is bad");
                }
                next += 1;
            } else if !closed {
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(rec) => {
                        if let Err(bad) = pipeline.process(tp, next, Some(&rec)) {
                            tracing::warn!(stream = %stream, offset = next, error = %bad, "simulated record is bad");
                        }
                        kept.push_back(rec);
                        next += 1;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => closed = true,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
            }
            let done = closed && next >= kept_from + kept.len() as i64;
            if !(done
                || flush
                    .due(&pipeline.pending(), last_flush.elapsed())
                    .is_some())
            {
                continue;
            }
            last_flush = Instant::now();
            match deliver_pending(&mut pipeline, client, "simulate") {
                Ok(Delivery::Done) => {}
                Ok(Delivery::Resync) => {
                    break Err(SimError::Output(format!(
                        "the worker refused stream {stream}; is another simulation using run id {run_id}?"
                    )))
                }
                Ok(Delivery::TooLarge) => {}
                Err(e) => break Err(e.into()),
            }
            // Forget what the worker holds; go back to where it stops.
            let resume = match pipeline.resume_offset(tp) {
                Ok(r) => r.unwrap_or(first),
                Err(e) => break Err(WorkerError::from(e).into()),
            };
            while kept_from < resume && !kept.is_empty() {
                kept.pop_front();
                kept_from += 1;
            }
            next = resume.max(kept_from);
            if closed && next >= kept_from + kept.len() as i64 && pipeline.pending().events == 0 {
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
