//! The worker's HTTP client: push batches, read applied offsets, ask for picks, import
//! catalogs. The answers are parsed as the shared ingest protocol ([`bandit::protocol`]).
//!
//! What each answer means: 2xx (and 409 to a batch) is an answer; 401, 403 and 404 are
//! misconfiguration and stop the bridge with what to fix; a batch refused as too large (413)
//! goes back to the delivery, which cuts smaller batches; everything else (400 from a proxy,
//! 408, 429, 499, 503, 507, other 5xx, transport errors, anything unknown) is retried with
//! capped exponential backoff and the worker's message in the log, because skipping a batch
//! would lose its counts. Only a catalog import, which carries no counts, stops on a refused
//! body. Once shutdown is requested, retries end after one grace period shared by every
//! request, and no request waits longer than what is left of it. Operator requests
//! ([`WorkerClient::send_once`]) are sent once, and their caller judges the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bandit::protocol::{
    Applied, AppliedOffset, CatalogImportResponse, ConflictResponse, ErrorResponse,
    OffsetsResponse, PickResponse, PushResponse, MAX_BODY_BYTES,
};
use bandit::EventBatch;
use serde::de::DeserializeOwned;

use crate::metrics::{Metrics, PushResult};
use crate::pipeline::OffsetError;

/// First delay before retrying the worker.
const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Largest delay between retries.
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long to keep retrying the worker once shutdown is requested, in milliseconds: what is
/// not pushed by then is read again on restart (the worker holds the offsets), so a short
/// grace loses nothing and keeps a stop quick when the worker is away.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 3_000;
/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a request started after shutdown gets at least, even when the grace is spent.
const MIN_SHUTDOWN_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// What the worker did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Applied now; what it changed.
    Applied(Applied),
    /// Applied before; nothing changed.
    Duplicate,
    /// Straddles what was applied: refused with 409, carrying the slot's applied offsets.
    Conflict(Vec<AppliedOffset>),
    /// Refused as too large (413 from the worker or a proxy before it, or over the protocol's
    /// limit before sending): nothing applied; the message says who refused it.
    TooLarge(String),
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
    /// A catalog body was refused (it carries no counts, so the import stops and says why).
    #[error("worker refused the catalog body sent to {url} with {status}: {message}")]
    CatalogRefused {
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
    /// The worker reports an applied offset no batch can have produced.
    #[error(transparent)]
    Offset(#[from] OffsetError),
    /// The bridge built a batch the protocol does not allow: a bug. It is neither sent nor
    /// skipped; the bridge stops without moving past it.
    #[error("built an invalid batch for slot {slot}: {message}; this is a bug in the bridge: stopping without moving past these offsets ({offsets})")]
    InvalidBatch {
        /// Slot.
        slot: String,
        /// What is wrong.
        message: String,
        /// The batch's ranges.
        offsets: String,
    },
    /// No answer came (refused connection, DNS, timeout) to a request sent once.
    #[error("no answer from {url}: {message}")]
    Unreachable {
        /// URL.
        url: String,
        /// The transport error.
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

impl Backoff {
    /// The delay before retry number `attempt` (0 for the first): doubling from `initial`,
    /// capped at `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.initial
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max)
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
    /// When this client (or a clone) first saw the shutdown flag: the grace runs from there.
    shutdown_seen: Arc<OnceLock<Instant>>,
    metrics: Arc<Metrics>,
}

/// What one request's answer means for the caller.
enum Attempt<T> {
    Done(T),
    Retry {
        /// Status, when the worker answered.
        status: Option<u16>,
        /// The worker's message or the transport error.
        message: String,
    },
}

/// Which answers a request takes as final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// An event batch: 2xx and 409 are answers, 413 goes back to the delivery.
    Batch,
    /// A read (offsets, pick): 2xx.
    Read,
    /// A catalog body: 2xx; a body refused as invalid or too large ends the import.
    Catalog,
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

/// The worker's message in an error answer (`{"error": ...}`), or the start of the body.
pub fn error_message(body: &str) -> String {
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
            .timeout(REQUEST_TIMEOUT)
            .build();
        WorkerClient {
            agent,
            base: base_url.trim_end_matches('/').to_string(),
            token,
            backoff,
            shutdown,
            shutdown_seen: Arc::new(OnceLock::new()),
            metrics,
        }
    }

    /// The metrics this client records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The URL of a slot's events.
    pub fn events_url(&self, slot: &str) -> String {
        self.slot_url(slot, "/events")
    }

    /// The URL of `tail` (e.g. `/pin`, or empty) under a slot.
    pub fn slot_url(&self, slot: &str, tail: &str) -> String {
        format!("{}/api/slots/{}{tail}", self.base, percent_encode(slot))
    }

    /// The URL of one catalog item.
    pub fn catalog_item_url(&self, id: &str) -> String {
        format!("{}/api/catalog/items/{}", self.base, percent_encode(id))
    }

    /// The URL of `path` (starting with `/`) on the worker.
    pub fn api_url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// When retrying must end: the grace period after shutdown was first seen; `None` while
    /// no shutdown is requested.
    fn shutdown_deadline(&self) -> Option<Instant> {
        if !self.shutdown.load(Ordering::Relaxed) {
            return None;
        }
        let seen = *self.shutdown_seen.get_or_init(Instant::now);
        Some(seen + self.backoff.shutdown_grace)
    }

    /// Sleeps before retry number `attempt` of `url` (capped exponential backoff with
    /// jitter), or gives up once shutdown is requested and its grace period is over. `last`
    /// says what failed.
    pub fn wait_to_retry(&self, url: &str, attempt: u32, last: &str) -> Result<(), WorkerError> {
        self.metrics.retry();
        // Jitter keeps several bridges from retrying in lockstep.
        let jitter = rand::random::<f64>() * 0.25 + 0.875;
        let mut delay = self.backoff.delay(attempt).mul_f64(jitter);
        if let Some(deadline) = self.shutdown_deadline() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WorkerError::GaveUp {
                    url: url.to_string(),
                    last: last.to_string(),
                });
            }
            delay = delay.min(left);
        }
        // Sleep in slices so a shutdown request shortens the wait to the grace period.
        let end = Instant::now() + delay;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            let mut slice = (end - now).min(Duration::from_millis(100));
            if let Some(deadline) = self.shutdown_deadline() {
                let left = deadline.saturating_duration_since(now);
                if left.is_zero() {
                    return Ok(());
                }
                slice = slice.min(left);
            }
            std::thread::sleep(slice);
        }
    }

    /// Runs `attempt` until it is done, sleeping with capped exponential backoff between
    /// retries and logging why; stops retrying only during shutdown, after the grace period.
    fn with_retry<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut() -> Result<Attempt<T>, WorkerError>,
    ) -> Result<T, WorkerError> {
        let mut n: u32 = 0;
        loop {
            let (status, message) = match attempt()? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Retry { status, message } => (status, message),
            };
            let retry_in_ms = self.backoff.delay(n).as_millis() as u64;
            match status {
                Some(507) => {
                    tracing::error!(url, status = 507, error = %message, retry_in_ms, "the worker cannot store more (an operator must act, see the message); retrying, nothing is skipped")
                }
                Some(s @ 400..=499) => {
                    tracing::error!(url, status = s, error = %message, retry_in_ms, "the worker (or a proxy before it) refused the request; retrying, nothing is skipped")
                }
                Some(s) => {
                    tracing::warn!(url, status = s, error = %message, retry_in_ms, "worker unavailable; retrying")
                }
                None => {
                    tracing::warn!(url, error = %message, retry_in_ms, "worker unavailable; retrying")
                }
            }
            let last = match status {
                Some(s) => format!("{s}: {message}"),
                None => message,
            };
            self.wait_to_retry(url, n, &last)?;
            n = n.saturating_add(1);
        }
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let mut r = self.agent.request(method, url);
        if let Some(deadline) = self.shutdown_deadline() {
            // After shutdown, no request outlives the grace period by much.
            let left = deadline.saturating_duration_since(Instant::now());
            r = r.timeout(left.clamp(MIN_SHUTDOWN_REQUEST_TIMEOUT, REQUEST_TIMEOUT));
        }
        if let Some(t) = &self.token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        r
    }

    fn classify_status(
        &self,
        expect: Expect,
        url: &str,
        status: u16,
        body: String,
    ) -> Result<Attempt<(u16, String)>, WorkerError> {
        match (expect, status) {
            (_, 200..=299) | (Expect::Batch, 409 | 413) => Ok(Attempt::Done((status, body))),
            (_, 401 | 403) => Err(WorkerError::Fatal {
                status,
                url: url.to_string(),
                message: error_message(&body),
                hint: "Check the ingest token: the variable named by --token-env must hold the worker's INGEST_TOKEN.",
            }),
            (_, 404) => Err(WorkerError::Fatal {
                status,
                url: url.to_string(),
                message: error_message(&body),
                hint: "Check --worker-url and the slot name (--slot / --source-slot) against the worker's slots.",
            }),
            (Expect::Catalog, 400 | 413 | 415 | 422) => Err(WorkerError::CatalogRefused {
                status,
                url: url.to_string(),
                message: error_message(&body),
            }),
            _ => Ok(Attempt::Retry {
                status: Some(status),
                message: error_message(&body),
            }),
        }
    }

    fn send(
        &self,
        expect: Expect,
        method: &str,
        url: &str,
        ctype: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Attempt<(u16, String)>, WorkerError> {
        match self.exchange(method, url, ctype, body) {
            Ok((status, text)) => self.classify_status(expect, url, status, text),
            Err(message) => Ok(Attempt::Retry {
                status: None,
                message,
            }),
        }
    }

    /// Sends one request and reads its answer, whatever its status: `(status, body)`, or the
    /// transport error when no answer came.
    fn exchange(
        &self,
        method: &str,
        url: &str,
        ctype: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<(u16, String), String> {
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
                Ok((status, r.into_string().unwrap_or_default()))
            }
            Err(ureq::Error::Status(status, r)) => {
                Ok((status, r.into_string().unwrap_or_default()))
            }
            Err(ureq::Error::Transport(t)) => Err(t.to_string()),
        }
    }

    /// Sends one request once, with the token, and returns the answer's status and body as
    /// they are, whatever the status: for callers that judge answers themselves (the operator
    /// commands, where a person waits and a write is not retried behind their back). `json`
    /// is sent as `application/json`. Only a request that got no answer is an error.
    pub fn send_once(
        &self,
        method: &str,
        url: &str,
        json: Option<&[u8]>,
    ) -> Result<(u16, String), WorkerError> {
        if let Some(b) = json {
            if b.len() > MAX_BODY_BYTES {
                return Err(WorkerError::TooLarge(b.len()));
            }
        }
        let ctype = json.map(|_| "application/json");
        self.exchange(method, url, ctype, json)
            .map_err(|message| WorkerError::Unreachable {
                url: url.to_string(),
                message,
            })
    }

    /// Pushes one batch; retries until the worker answers it (see the module's rules).
    pub fn push(&self, slot: &str, batch: &EventBatch) -> Result<PushOutcome, WorkerError> {
        let url = self.events_url(slot);
        let body = serde_json::to_vec(batch).map_err(|e| WorkerError::Protocol {
            url: url.clone(),
            message: e.to_string(),
        })?;
        self.push_json(slot, &body)
    }

    /// Pushes one batch already serialised as JSON.
    pub fn push_json(&self, slot: &str, body: &[u8]) -> Result<PushOutcome, WorkerError> {
        let url = self.events_url(slot);
        let started = Instant::now();
        if body.len() > MAX_BODY_BYTES {
            self.metrics.pushed(PushResult::TooLarge, started.elapsed());
            return Ok(PushOutcome::TooLarge(format!(
                "the body is {} bytes, over the protocol's {MAX_BODY_BYTES}",
                body.len()
            )));
        }
        let (status, text) = self.with_retry(&url, || {
            self.send(
                Expect::Batch,
                "POST",
                &url,
                Some("application/json"),
                Some(body),
            )
        })?;
        match status {
            409 => {
                self.metrics.pushed(PushResult::Conflict, started.elapsed());
                let conflict: ConflictResponse = parse(&url, &text)?;
                return Ok(PushOutcome::Conflict(conflict.offsets));
            }
            413 => {
                self.metrics.pushed(PushResult::TooLarge, started.elapsed());
                return Ok(PushOutcome::TooLarge(error_message(&text)));
            }
            _ => {}
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
        let (_, text) =
            self.with_retry(&url, || self.send(Expect::Read, "GET", &url, None, None))?;
        Ok(parse::<OffsetsResponse>(&url, &text)?.offsets)
    }

    /// Asks for the slot's current pick; `None` while the slot has no arms.
    pub fn pick(&self, slot: &str) -> Result<Option<PickResponse>, WorkerError> {
        self.pick_as(slot, None)
    }

    /// The pick for a visitor announcing `user_agent` (the worker's segments read it).
    pub fn pick_as(
        &self,
        slot: &str,
        user_agent: Option<&str>,
    ) -> Result<Option<PickResponse>, WorkerError> {
        let url = self.slot_url(slot, "/pick");
        let res = self.with_retry(&url, || {
            let mut req = self.request("GET", &url);
            if let Some(ua) = user_agent {
                req = req.set("User-Agent", ua);
            }
            match req.call() {
                Ok(r) => {
                    let status = r.status();
                    self.classify_status(
                        Expect::Read,
                        &url,
                        status,
                        r.into_string().unwrap_or_default(),
                    )
                }
                Err(ureq::Error::Status(status, r)) => self.classify_status(
                    Expect::Read,
                    &url,
                    status,
                    r.into_string().unwrap_or_default(),
                ),
                Err(e) => Ok(Attempt::Retry {
                    status: None,
                    message: e.to_string(),
                }),
            }
        });
        let (_, text) = match res {
            Ok(v) => v,
            Err(WorkerError::Fatal { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        parse::<PickResponse>(&url, &text).map(Some)
    }

    /// Posts one catalog body (`query` like `?format=divolte-shop&category=cars`), returns
    /// the worker's answer.
    pub fn post_catalog(
        &self,
        query: &[(&str, &str)],
        ctype: &str,
        body: &[u8],
    ) -> Result<CatalogImportResponse, WorkerError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(WorkerError::TooLarge(body.len()));
        }
        let mut url = format!("{}/api/catalog", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("{}={}", percent_encode(k), percent_encode(v)));
        }
        let (_, text) = self.with_retry(&url, || {
            self.send(Expect::Catalog, "POST", &url, Some(ctype), Some(body))
        })?;
        parse(&url, &text)
    }
}
