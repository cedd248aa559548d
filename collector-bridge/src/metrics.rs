//! The bridge's Prometheus metrics (kept with `prometheus-client`, exposed in the text format
//! 0.0.4) and the endpoint that serves them: `GET /metrics` on a bounded HTTP/1 server (hyper
//! on a private one-thread runtime) with a header size limit, read timeouts and a connection
//! cap, so no client can stall it for the others.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::classify::DropReason;
use crate::pipeline::Stats;

/// Push latency histogram bounds, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
/// Most bytes of a request line and headers; larger requests get 431 and are closed.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// Time a client has to send its whole request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Time one connection may last, answer included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

/// Outcome of one push, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// Applied by the worker.
    Applied,
    /// Already applied before.
    Duplicate,
    /// Refused with 409.
    Conflict,
    /// Refused as too large (413, or over the protocol's limit): cut smaller and read again.
    TooLarge,
}

impl PushResult {
    const ALL: [PushResult; 4] = [
        PushResult::Applied,
        PushResult::Duplicate,
        PushResult::Conflict,
        PushResult::TooLarge,
    ];

    fn label(self) -> &'static str {
        match self {
            PushResult::Applied => "applied",
            PushResult::Duplicate => "duplicate",
            PushResult::Conflict => "conflict",
            PushResult::TooLarge => "too_large",
        }
    }
}

type Label = [(&'static str, &'static str); 1];
type LagLabels = [(&'static str, String); 2];

/// All bridge metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    consumed: Counter,
    decoded: Counter,
    ignored: Counter,
    resyncs: Counter,
    dead_lettered: Counter,
    push_retries: Counter,
    impressions: Counter,
    clicks: Counter,
    /// By [`DropReason::ALL`], then undecodable, unclassifiable (no item id) and invalid_item.
    dropped: [Counter; DropReason::ALL.len() + 3],
    /// Counted events by their decision: bandit, holdout, none.
    decisions: [Counter; 3],
    /// By [`PushResult::ALL`].
    pushed: [Counter; 4],
    push_seconds: Histogram,
    lag: Family<LagLabels, Gauge>,
    feedback_lag: Family<LagLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let consumed = counter("collector_bridge_consumed", "Messages or records read");
        let decoded = counter("collector_bridge_decoded", "Records decoded");
        let ignored = counter(
            "collector_bridge_ignored",
            "Records that are not impressions or clicks",
        );
        let resyncs = counter(
            "collector_bridge_resyncs",
            "Resynchronisations after a conflict",
        );
        let dead_lettered = counter(
            "collector_bridge_dead_lettered",
            "Bad messages copied to the dead-letter topic",
        );
        let push_retries = counter("collector_bridge_push_retries", "Worker requests retried");
        // Every label value is created up front, so each series reads 0 before its first event.
        let events = Family::<Label, Counter>::default();
        registry.register(
            "collector_bridge_events",
            "Impressions and clicks decoded",
            events.clone(),
        );
        let impressions = events.get_or_create(&[("kind", "impression")]).clone();
        let clicks = events.get_or_create(&[("kind", "click")]).clone();
        let dropped_family = Family::<Label, Counter>::default();
        registry.register(
            "collector_bridge_dropped",
            "Messages not counted, by reason (unclassifiable: no item id; invalid_item: an item id no catalog item can have)",
            dropped_family.clone(),
        );
        let reasons: [&'static str; DropReason::ALL.len() + 3] =
            std::array::from_fn(|i| match DropReason::ALL.get(i) {
                Some(r) => r.label(),
                None => {
                    ["undecodable", "unclassifiable", "invalid_item"][i - DropReason::ALL.len()]
                }
            });
        let dropped = reasons.map(|r| dropped_family.get_or_create(&[("reason", r)]).clone());
        let decisions_family = Family::<Label, Counter>::default();
        registry.register(
            "collector_bridge_decisions",
            "Impressions and clicks counted, by who served their decision (none: no usable decision logged)",
            decisions_family.clone(),
        );
        let decisions = ["bandit", "holdout", "none"]
            .map(|s| decisions_family.get_or_create(&[("served_by", s)]).clone());
        let pushed_family = Family::<Label, Counter>::default();
        registry.register(
            "collector_bridge_pushed",
            "Batches pushed to the worker, by result",
            pushed_family.clone(),
        );
        let pushed = PushResult::ALL.map(|r| {
            pushed_family
                .get_or_create(&[("result", r.label())])
                .clone()
        });
        let push_seconds = Histogram::new(BUCKETS);
        registry.register(
            "collector_bridge_push_seconds",
            "Push latency including retries",
            push_seconds.clone(),
        );
        let lag = Family::<LagLabels, Gauge>::default();
        registry.register(
            "collector_bridge_consumer_lag",
            "Messages behind the partition's end",
            lag.clone(),
        );
        let feedback_lag = Family::<LagLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "collector_bridge_feedback_lag_seconds",
            "From an event's time at the collector to the worker applying it, for the oldest and newest event of the slot's last applied batch",
            feedback_lag.clone(),
        );
        Metrics {
            registry,
            feedback_lag,
            consumed,
            decoded,
            ignored,
            resyncs,
            dead_lettered,
            push_retries,
            impressions,
            clicks,
            dropped,
            decisions,
            pushed,
            push_seconds,
            lag,
        }
    }
}

impl Metrics {
    /// Adds pipeline counters.
    pub fn add_stats(&self, s: &Stats) {
        self.consumed.inc_by(s.consumed);
        self.decoded.inc_by(s.decoded);
        self.ignored.inc_by(s.ignored);
        self.impressions.inc_by(s.impressions);
        self.clicks.inc_by(s.clicks);
        let n = DropReason::ALL.len();
        for (c, v) in self.dropped.iter().zip(s.dropped) {
            c.inc_by(v);
        }
        self.dropped[n].inc_by(s.undecodable);
        self.dropped[n + 1].inc_by(s.unclassifiable);
        self.dropped[n + 2].inc_by(s.invalid_items);
        for (c, v) in self.decisions.iter().zip(s.decisions) {
            c.inc_by(v);
        }
    }

    /// Counts a message copied to the dead-letter topic.
    pub fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }

    /// Records one push and its latency (including retries).
    pub fn pushed(&self, r: PushResult, latency: Duration) {
        let i = PushResult::ALL.iter().position(|x| *x == r).unwrap_or(0);
        self.pushed[i].inc();
        self.push_seconds.observe(latency.as_secs_f64());
    }

    /// Counts a retried request to the worker.
    pub fn retry(&self) {
        self.push_retries.inc();
    }

    /// Counts a resynchronisation after a conflict.
    pub fn resync(&self) {
        self.resyncs.inc();
    }

    /// Sets the consumer lag of a partition.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .get_or_create(&[
                ("topic", topic.to_string()),
                ("partition", partition.to_string()),
            ])
            .set(lag);
    }

    /// Sets a slot's feedback lag from its last applied batch's event times and `now_ms`.
    pub fn set_feedback_lag(&self, slot: &str, event_time: &bandit::EventTime, now_ms: i64) {
        for (edge, at) in [
            ("oldest", event_time.oldest_ms),
            ("newest", event_time.newest_ms),
        ] {
            self.feedback_lag
                .get_or_create(&[("slot", slot.to_string()), ("event", edge.to_string())])
                .set(((now_ms - at).max(0)) as f64 / 1000.0);
        }
    }

    /// Forgets partitions no longer owned.
    pub fn clear_lag(&self) {
        self.lag.clear();
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut o, &self.registry);
        o
    }
}

/// Serves `GET /metrics` on `addr` from a background thread; returns the bound address.
/// Anything else gets 404 with a hint.
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let listener = {
        let _ctx = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(accept(listener, metrics)))?;
    Ok(local)
}

/// Accepts connections forever, each served by its own task within the limits.
async fn accept(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .keep_alive(false);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "metrics listener cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let res = answer(&req, &metrics);
                async move { Ok::<_, Infallible>(res) }
            }),
        );
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

fn answer(req: &Request<Incoming>, metrics: &Metrics) -> Response<String> {
    let (status, ctype, body) = if req.method() == Method::GET && req.uri().path() == "/metrics" {
        (
            StatusCode::OK,
            prometheus_text::CONTENT_TYPE,
            metrics.render(),
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try GET /metrics\n".to_string(),
        )
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_keeps_its_name_labels_and_type() {
        let m = Metrics::default();
        m.add_stats(&Stats {
            consumed: 7,
            decoded: 6,
            ignored: 1,
            impressions: 3,
            clicks: 2,
            dropped: [1, 0, 2, 3, 0, 6],
            decisions: [4, 1, 0],
            undecodable: 1,
            unclassifiable: 4,
            invalid_items: 5,
        });
        m.pushed(PushResult::Conflict, Duration::from_millis(3));
        m.retry();
        m.resync();
        m.dead_lettered();
        m.set_lag("divolte", 2, 17);
        m.set_feedback_lag(
            "home-top-pick",
            &bandit::EventTime {
                oldest_ms: 1_000,
                newest_ms: 2_500,
            },
            4_000,
        );
        let text = m.render();
        for line in [
            "# HELP collector_bridge_consumed_total Messages or records read.",
            "# TYPE collector_bridge_consumed_total counter",
            "collector_bridge_consumed_total 7",
            "collector_bridge_decoded_total 6",
            "collector_bridge_ignored_total 1",
            "collector_bridge_resyncs_total 1",
            "collector_bridge_dead_lettered_total 1",
            "collector_bridge_push_retries_total 1",
            "# TYPE collector_bridge_events_total counter",
            "collector_bridge_events_total{kind=\"impression\"} 3",
            "collector_bridge_events_total{kind=\"click\"} 2",
            "# TYPE collector_bridge_dropped_total counter",
            "collector_bridge_dropped_total{reason=\"duplicate\"} 1",
            "collector_bridge_dropped_total{reason=\"corrupt\"} 0",
            "collector_bridge_dropped_total{reason=\"robot\"} 2",
            "collector_bridge_dropped_total{reason=\"late_click\"} 3",
            "collector_bridge_dropped_total{reason=\"click_before_decision\"} 0",
            "collector_bridge_dropped_total{reason=\"no_decision\"} 6",
            "collector_bridge_decisions_total{served_by=\"bandit\"} 4",
            "collector_bridge_decisions_total{served_by=\"holdout\"} 1",
            "collector_bridge_decisions_total{served_by=\"none\"} 0",
            "collector_bridge_dropped_total{reason=\"undecodable\"} 1",
            "collector_bridge_dropped_total{reason=\"unclassifiable\"} 4",
            "collector_bridge_dropped_total{reason=\"invalid_item\"} 5",
            "# TYPE collector_bridge_pushed_total counter",
            "collector_bridge_pushed_total{result=\"applied\"} 0",
            "collector_bridge_pushed_total{result=\"duplicate\"} 0",
            "collector_bridge_pushed_total{result=\"conflict\"} 1",
            "collector_bridge_pushed_total{result=\"too_large\"} 0",
            "# HELP collector_bridge_push_seconds Push latency including retries.",
            "# TYPE collector_bridge_push_seconds histogram",
            "collector_bridge_feedback_lag_seconds{slot=\"home-top-pick\",event=\"oldest\"} 3.0",
            "collector_bridge_feedback_lag_seconds{slot=\"home-top-pick\",event=\"newest\"} 1.5",
            "collector_bridge_push_seconds_bucket{le=\"0.001\"} 0",
            "collector_bridge_push_seconds_bucket{le=\"0.0025\"} 0",
            "collector_bridge_push_seconds_bucket{le=\"0.005\"} 1",
            "collector_bridge_push_seconds_bucket{le=\"1\"} 1",
            "collector_bridge_push_seconds_bucket{le=\"+Inf\"} 1",
            "collector_bridge_push_seconds_count 1",
            "# TYPE collector_bridge_consumer_lag gauge",
            "collector_bridge_consumer_lag{topic=\"divolte\",partition=\"2\"} 17",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        m.clear_lag();
        assert!(!m.render().contains("collector_bridge_consumer_lag{"));
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read to the end");
        text
    }

    #[test]
    fn serves_metrics_and_a_hint_elsewhere() {
        let addr = serve("127.0.0.1:0", Arc::new(Metrics::default())).expect("serve");
        let ok = get(addr, "/metrics");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("\ncollector_bridge_consumed_total 0\n"), "{ok}");
        let other = get(addr, "/");
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        assert!(other.ends_with("not found; try GET /metrics\n"), "{other}");
    }

    #[test]
    fn a_slow_or_oversized_request_cannot_stall_the_endpoint() {
        use std::io::{Read, Write};
        use std::time::Instant;
        let addr = serve("127.0.0.1:0", Arc::new(Metrics::default())).expect("serve");
        // One client sends an endless header line, a byte at a time.
        let slow = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Endless: ")
                .expect("write");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(15) {
                if s.write_all(b"a").is_err() {
                    return Some(started.elapsed());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        });
        std::thread::sleep(Duration::from_millis(200));
        // Another sends a request head far over the limit in one go: refused, not buffered.
        let mut big = std::net::TcpStream::connect(addr).expect("connect");
        big.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let started = Instant::now();
        let mut head = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        head.resize(256 * 1024, b'a');
        let _ = big.write_all(&head);
        let mut answer = Vec::new();
        let _ = big.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // Meanwhile everyone else is answered at once.
        for _ in 0..3 {
            let started = Instant::now();
            let text = get(addr, "/metrics");
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "took {:?}",
                started.elapsed()
            );
        }
        // The endless header is cut off by the header timeout.
        let cut = slow.join().expect("slow client");
        assert!(
            cut.is_some_and(|t| t < HEADER_READ_TIMEOUT + Duration::from_secs(3)),
            "{cut:?}"
        );
    }
}
