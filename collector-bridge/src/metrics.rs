//! Prometheus text metrics served over a plain TCP listener (GET /metrics).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::classify::DropReason;
use crate::pipeline::Stats;

/// Push latency histogram bounds, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Outcome of one push, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// Applied by the worker.
    Applied,
    /// Already applied before.
    Duplicate,
    /// Refused with 409.
    Conflict,
    /// Refused as invalid (4xx).
    Rejected,
}

/// All bridge metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    consumed: AtomicU64,
    decoded: AtomicU64,
    ignored: AtomicU64,
    impressions: AtomicU64,
    clicks: AtomicU64,
    dropped: [AtomicU64; 3],
    undecodable: AtomicU64,
    unclassifiable: AtomicU64,
    dead_lettered: AtomicU64,
    pushed: [AtomicU64; 4],
    push_retries: AtomicU64,
    resyncs: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
}

impl Metrics {
    /// Adds pipeline counters.
    pub fn add_stats(&self, s: &Stats) {
        self.consumed.fetch_add(s.consumed, Relaxed);
        self.decoded.fetch_add(s.decoded, Relaxed);
        self.ignored.fetch_add(s.ignored, Relaxed);
        self.impressions.fetch_add(s.impressions, Relaxed);
        self.clicks.fetch_add(s.clicks, Relaxed);
        for (d, v) in self.dropped.iter().zip(s.dropped) {
            d.fetch_add(v, Relaxed);
        }
        self.undecodable.fetch_add(s.undecodable, Relaxed);
        self.unclassifiable.fetch_add(s.unclassifiable, Relaxed);
    }

    /// Counts a message copied to the dead-letter topic.
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Relaxed);
    }

    /// Records one push and its latency (including retries).
    pub fn pushed(&self, r: PushResult, latency: Duration) {
        let i = match r {
            PushResult::Applied => 0,
            PushResult::Duplicate => 1,
            PushResult::Conflict => 2,
            PushResult::Rejected => 3,
        };
        self.pushed[i].fetch_add(1, Relaxed);
        let secs = latency.as_secs_f64();
        for (b, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                b.fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(latency.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Counts a retried request to the worker.
    pub fn retry(&self) {
        self.push_retries.fetch_add(1, Relaxed);
    }

    /// Counts a resynchronisation after a conflict.
    pub fn resync(&self) {
        self.resyncs.fetch_add(1, Relaxed);
    }

    /// Sets the consumer lag of a partition.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        if let Ok(mut m) = self.lag.lock() {
            m.insert((topic.to_string(), partition), lag);
        }
    }

    /// Forgets partitions no longer owned.
    pub fn clear_lag(&self) {
        if let Ok(mut m) = self.lag.lock() {
            m.clear();
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "collector_bridge_consumed_total",
            "Messages or records read.",
            self.consumed.load(Relaxed),
        );
        counter(
            "collector_bridge_decoded_total",
            "Records decoded.",
            self.decoded.load(Relaxed),
        );
        counter(
            "collector_bridge_ignored_total",
            "Records that are not impressions or clicks.",
            self.ignored.load(Relaxed),
        );
        counter(
            "collector_bridge_resyncs_total",
            "Resynchronisations after a conflict.",
            self.resyncs.load(Relaxed),
        );
        counter(
            "collector_bridge_dead_lettered_total",
            "Bad messages copied to the dead-letter topic.",
            self.dead_lettered.load(Relaxed),
        );
        counter(
            "collector_bridge_push_retries_total",
            "Worker requests retried.",
            self.push_retries.load(Relaxed),
        );
        let _ = writeln!(o, "# HELP collector_bridge_events_total Impressions and clicks decoded.\n# TYPE collector_bridge_events_total counter");
        let _ = writeln!(
            o,
            "collector_bridge_events_total{{kind=\"impression\"}} {}",
            self.impressions.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "collector_bridge_events_total{{kind=\"click\"}} {}",
            self.clicks.load(Relaxed)
        );
        let _ = writeln!(o, "# HELP collector_bridge_dropped_total Messages not counted, by reason.\n# TYPE collector_bridge_dropped_total counter");
        for (r, v) in DropReason::ALL.iter().zip(&self.dropped) {
            let _ = writeln!(
                o,
                "collector_bridge_dropped_total{{reason=\"{}\"}} {}",
                r.label(),
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "collector_bridge_dropped_total{{reason=\"undecodable\"}} {}",
            self.undecodable.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "collector_bridge_dropped_total{{reason=\"unclassifiable\"}} {}",
            self.unclassifiable.load(Relaxed)
        );
        let _ = writeln!(o, "# HELP collector_bridge_pushed_total Batches pushed to the worker, by result.\n# TYPE collector_bridge_pushed_total counter");
        for (label, v) in ["applied", "duplicate", "conflict", "rejected"]
            .iter()
            .zip(&self.pushed)
        {
            let _ = writeln!(
                o,
                "collector_bridge_pushed_total{{result=\"{label}\"}} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(o, "# HELP collector_bridge_push_seconds Push latency including retries.\n# TYPE collector_bridge_push_seconds histogram");
        for (b, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                o,
                "collector_bridge_push_seconds_bucket{{le=\"{bound}\"}} {}",
                b.load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            o,
            "collector_bridge_push_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "collector_bridge_push_seconds_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "collector_bridge_push_seconds_count {count}");
        let _ = writeln!(o, "# HELP collector_bridge_consumer_lag Messages behind the partition's end.\n# TYPE collector_bridge_consumer_lag gauge");
        if let Ok(m) = self.lag.lock() {
            for ((t, p), v) in m.iter() {
                let _ = writeln!(
                    o,
                    "collector_bridge_consumer_lag{{topic=\"{}\",partition=\"{p}\"}} {v}",
                    t.replace(['"', '\\', '\n'], "_")
                );
            }
        }
        o
    }
}

/// Serves `GET /metrics` on `addr` from a background thread; returns the bound address.
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &metrics);
            }
        })?;
    Ok(local)
}

fn answer(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain headers so the client sees a clean response.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut stream = stream;
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = if request_line.starts_with("GET ") && path == "/metrics" {
        ("200 OK", "text/plain; version=0.0.4", metrics.render())
    } else {
        (
            "404 Not Found",
            "text/plain",
            "not found; try GET /metrics\n".to_string(),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
