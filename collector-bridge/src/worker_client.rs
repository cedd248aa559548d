//! The worker's HTTP client: push batches, read applied offsets, ask for picks, import
//! catalogs; transient failures are retried with capped exponential backoff. The answers are
//! parsed as the shared ingest protocol ([`bandit::protocol`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bandit::protocol::{
    Applied, AppliedOffset, ConflictResponse, ErrorResponse, OffsetsResponse, PushResponse,
    MAX_BODY_BYTES,
};
use bandit::EventBatch;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::metrics::{Metrics, PushResult};

/// First delay before retrying the worker.
const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Largest delay between retries.
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long to keep retrying the worker once shutdown is requested, in milliseconds.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;

/// The worker's answer to `GET /api/slots/{slot}/pick`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pick {
    /// Slot.
    #[serde(default)]
    pub slot: String,
    /// Chosen item.
    pub item: String,
    /// Round number.
    #[serde(default)]
    pub epoch: u64,
}

/// What the worker did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Applied now; what it changed.
    Applied(Applied),
    /// Applied before; nothing changed.
    Duplicate,
    /// Straddles what was applied: refused with 409, carrying the slot's applied offsets.
    Conflict(Vec<AppliedOffset>),
}

/// A failure of a worker request that retrying will not fix.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Misconfiguration: stop and tell the operator what to fix.
    #[error("worker answered {status} for {url}: {message}. {hint}")]
    Fatal {
        /// HTTP status.
        status: u16,
        /// URL.
        url: String,
        /// The worker's message.
        message: String,
        /// What to fix.
        hint: &'static str,
    },
    /// The request was refused as invalid (a bug on one side or the other).
    #[error("worker rejected the request to {url} with {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// URL.
        url: String,
        /// The worker's message.
        message: String,
    },
    /// Shutdown was requested while the worker was unreachable.
    #[error("gave up on {url} during shutdown: {last}")]
    GaveUp {
        /// URL.
        url: String,
        /// Last error seen.
        last: String,
    },
    /// The worker's answer could not be understood.
    #[error("unexpected answer from {url}: {message}")]
    Protocol {
        /// URL.
        url: String,
        /// Detail.
        message: String,
    },
    /// The body is too large to send.
    #[error("request body of {0} bytes exceeds the worker's 1 MiB limit")]
    TooLarge(usize),
}

/// Backoff settings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// How long to keep retrying once shutdown is requested.
    pub shutdown_grace: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: DEFAULT_BACKOFF_INITIAL,
            max: DEFAULT_BACKOFF_MAX,
            shutdown_grace: Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS),
        }
    }
}

/// Client of one worker.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    backoff: Backoff,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

enum Attempt<T> {
    Done(T),
    Retry(String),
}

fn percent_encode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn error_message(body: &str) -> String {
    serde_json::from_str::<ErrorResponse>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| body.chars().take(300).collect())
}

/// Parses a worker answer, or says what was wrong with it.
fn parse<T: DeserializeOwned>(url: &str, text: &str) -> Result<T, WorkerError> {
    serde_json::from_str(text).map_err(|e| WorkerError::Protocol {
        url: url.to_string(),
        message: format!("{e}: {}", text.chars().take(200).collect::<String>()),
    })
}

impl WorkerClient {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8787`).
    pub fn new(
        base_url: &str,
        token: Option<String>,
        backoff: Backoff,
        shutdown: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> WorkerClient {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build();
        WorkerClient {
            agent,
            base: base_url.trim_end_matches('/').to_string(),
            token,
            backoff,
            shutdown,
            metrics,
        }
    }

    /// The metrics this client records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn slot_url(&self, slot: &str, tail: &str) -> String {
        format!("{}/api/slots/{}{tail}", self.base, percent_encode(slot))
    }

    /// Runs `attempt` until it is done, sleeping with capped exponential backoff between
    /// retries; stops retrying only during shutdown, after the grace period.
    fn with_retry<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut() -> Result<Attempt<T>, WorkerError>,
    ) -> Result<T, WorkerError> {
        let mut delay = self.backoff.initial;
        let mut shutdown_seen: Option<Instant> = None;
        loop {
            let last = match attempt()? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Retry(why) => why,
            };
            self.metrics.retry();
            if self.shutdown.load(Ordering::Relaxed) {
                let since = *shutdown_seen.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.backoff.shutdown_grace {
                    return Err(WorkerError::GaveUp {
                        url: url.to_string(),
                        last,
                    });
                }
            }
            tracing::warn!(url, error = %last, retry_in_ms = delay.as_millis() as u64, "worker unavailable; retrying");
            // Jitter keeps several bridges from retrying in lockstep.
            let jitter = rand::random::<f64>() * 0.25 + 0.875;
            std::thread::sleep(delay.mul_f64(jitter));
            delay = (delay * 2).min(self.backoff.max);
        }
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let mut r = self.agent.request(method, url);
        if let Some(t) = &self.token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        r
    }

    fn classify_status(
        &self,
        url: &str,
        status: u16,
        body: String,
    ) -> Result<Attempt<(u16, String)>, WorkerError> {
        match status {
            200..=299 | 409 => Ok(Attempt::Done((status, body))),
            401 | 403 => Err(WorkerError::Fatal {
                status,
                url: url.to_string(),
                message: error_message(&body),
                hint: "Check the ingest token: the variable named by --token-env must hold the worker's INGEST_TOKEN.",
            }),
            404 => Err(WorkerError::Fatal {
                status,
                url: url.to_string(),
                message: error_message(&body),
                hint: "Check --worker-url and the slot name (--slot / --source-slot) against the worker's slots.",
            }),
            408 | 429 | 500..=599 => Ok(Attempt::Retry(format!("{status}: {}", error_message(&body)))),
            _ => Err(WorkerError::Rejected {
                status,
                url: url.to_string(),
                message: error_message(&body),
            }),
        }
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        ctype: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Attempt<(u16, String)>, WorkerError> {
        let mut req = self.request(method, url);
        if let Some(c) = ctype {
            req = req.set("Content-Type", c);
        }
        let res = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        match res {
            Ok(r) => {
                let status = r.status();
                let text = r.into_string().unwrap_or_default();
                self.classify_status(url, status, text)
            }
            Err(ureq::Error::Status(status, r)) => {
                let text = r.into_string().unwrap_or_default();
                self.classify_status(url, status, text)
            }
            Err(ureq::Error::Transport(t)) => Ok(Attempt::Retry(t.to_string())),
        }
    }

    /// Pushes one batch; retries transient failures until the worker answers.
    pub fn push(&self, slot: &str, batch: &EventBatch) -> Result<PushOutcome, WorkerError> {
        let url = self.slot_url(slot, "/events");
        let body = serde_json::to_vec(batch).map_err(|e| WorkerError::Protocol {
            url: url.clone(),
            message: e.to_string(),
        })?;
        if body.len() > MAX_BODY_BYTES {
            return Err(WorkerError::TooLarge(body.len()));
        }
        let started = Instant::now();
        let res = self.with_retry(&url, || {
            self.send("POST", &url, Some("application/json"), Some(&body))
        });
        let (status, text) = match res {
            Ok(v) => v,
            Err(e) => {
                if matches!(e, WorkerError::Rejected { .. }) {
                    self.metrics.pushed(PushResult::Rejected, started.elapsed());
                }
                return Err(e);
            }
        };
        if status == 409 {
            self.metrics.pushed(PushResult::Conflict, started.elapsed());
            let conflict: ConflictResponse = parse(&url, &text)?;
            return Ok(PushOutcome::Conflict(conflict.offsets));
        }
        match parse::<PushResponse>(&url, &text)? {
            PushResponse::Applied(applied) => {
                self.metrics.pushed(PushResult::Applied, started.elapsed());
                Ok(PushOutcome::Applied(applied))
            }
            PushResponse::Duplicate => {
                self.metrics
                    .pushed(PushResult::Duplicate, started.elapsed());
                Ok(PushOutcome::Duplicate)
            }
        }
    }

    /// The worker's last applied offset per topic-partition for a slot.
    pub fn offsets(&self, slot: &str) -> Result<Vec<AppliedOffset>, WorkerError> {
        let url = self.slot_url(slot, "/offsets");
        let (_, text) = self.with_retry(&url, || self.send("GET", &url, None, None))?;
        Ok(parse::<OffsetsResponse>(&url, &text)?.offsets)
    }

    /// Asks for the slot's current pick; `None` while the slot has no arms.
    pub fn pick(&self, slot: &str) -> Result<Option<Pick>, WorkerError> {
        let url = self.slot_url(slot, "/pick");
        let res = self.with_retry(&url, || self.send("GET", &url, None, None));
        let (_, text) = match res {
            Ok(v) => v,
            Err(WorkerError::Fatal { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        parse::<Pick>(&url, &text).map(Some)
    }

    /// Posts one catalog body (`query` like `?format=divolte-shop&category=cars`), returns
    /// the worker's JSON answer.
    pub fn post_catalog(
        &self,
        query: &[(&str, &str)],
        ctype: &str,
        body: &[u8],
    ) -> Result<serde_json::Value, WorkerError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(WorkerError::TooLarge(body.len()));
        }
        let mut url = format!("{}/api/catalog", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("{}={}", percent_encode(k), percent_encode(v)));
        }
        let (_, text) =
            self.with_retry(&url, || self.send("POST", &url, Some(ctype), Some(body)))?;
        parse(&url, &text)
    }
}
