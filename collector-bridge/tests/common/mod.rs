//! Test support: an in-process fake of the worker's ingest contract (backed by
//! `bandit::OffsetLedger`), and Divolte-shaped records.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bandit::protocol::{
    Applied, CatalogImportResponse, ConflictResponse, Counted, ErrorResponse, OffsetsResponse,
    PickResponse, PushResponse, MAX_BODY_BYTES, MAX_ITEMS_PER_IMPORT,
};
use bandit::{Disposition, EventBatch, OffsetLedger};
use collector_bridge::simulate::SimEvent;
use serde::Serialize;

/// Per-slot state of the fake worker.
#[derive(Debug, Default, Clone)]
pub struct SlotState {
    pub ledger: OffsetLedger,
    pub counts: BTreeMap<String, (u64, u64)>,
    pub applied_batches: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    /// `GET /api/slots/{slot}/offsets` requests answered.
    pub offset_reads: u64,
}

#[derive(Debug, Default)]
pub struct State {
    pub slots: HashMap<String, SlotState>,
    pub catalog: Vec<String>,
    pub catalog_posts: Vec<(String, String, usize)>,
    /// Items of each catalog post taken.
    pub catalog_items: Vec<usize>,
    /// Answer this many event posts with `fail_status` (503 when unset) first.
    pub fail_next: u32,
    pub fail_status: Option<u16>,
    /// A proxy's lower body limit: event posts over it get 413.
    pub max_body: Option<usize>,
    /// Sizes of the event bodies received, refused ones included.
    pub event_bodies: Vec<usize>,
    pub picks: u64,
}

/// The fake worker, listening on a loopback port.
pub struct FakeWorker {
    pub url: String,
    pub token: String,
    pub state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
    handle: Option<JoinHandle<()>>,
}

fn respond(req: tiny_http::Request, status: u16, body: &impl Serialize) {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        .expect("static header");
    let text = serde_json::to_string(body).expect("serialisable answer");
    let _ = req.respond(
        tiny_http::Response::from_string(text)
            .with_status_code(status)
            .with_header(header),
    );
}

fn error(req: tiny_http::Request, status: u16, message: impl Into<String>) {
    respond(
        req,
        status,
        &ErrorResponse {
            error: message.into(),
        },
    )
}

impl FakeWorker {
    /// Starts a fake serving `slots`.
    pub fn start(slots: &[&str]) -> FakeWorker {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind fake worker"));
        let port = server.server_addr().to_ip().expect("ip listener").port();
        let mut st = State::default();
        for s in slots {
            st.slots.insert(s.to_string(), SlotState::default());
        }
        let state = Arc::new(Mutex::new(st));
        let token = "test-token".to_string();
        let (srv, stt, tok) = (server.clone(), state.clone(), token.clone());
        let handle = std::thread::spawn(move || {
            for req in srv.incoming_requests() {
                handle_request(req, &stt, &tok);
            }
        });
        FakeWorker {
            url: format!("http://127.0.0.1:{port}"),
            token,
            state,
            server,
            handle: Some(handle),
        }
    }

    /// Impressions and clicks summed over items.
    pub fn totals(&self, slot: &str) -> (u64, u64) {
        let st = self.state.lock().expect("state");
        st.slots
            .get(slot)
            .map(|s| {
                s.counts
                    .values()
                    .fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1))
            })
            .unwrap_or_default()
    }

    /// Per-item counts.
    pub fn counts(&self, slot: &str) -> BTreeMap<String, (u64, u64)> {
        self.state
            .lock()
            .expect("state")
            .slots
            .get(slot)
            .map(|s| s.counts.clone())
            .unwrap_or_default()
    }

    /// Last applied offset.
    pub fn applied(&self, slot: &str, topic: &str, partition: i32) -> Option<i64> {
        self.state
            .lock()
            .expect("state")
            .slots
            .get(slot)?
            .ledger
            .get(topic, partition)
    }

    /// A copy of a slot's state.
    pub fn slot(&self, slot: &str) -> SlotState {
        self.state
            .lock()
            .expect("state")
            .slots
            .get(slot)
            .cloned()
            .unwrap_or_default()
    }

    /// Applies a batch directly, as if another process had pushed it.
    pub fn preload(&self, slot: &str, batch: &EventBatch) {
        let mut st = self.state.lock().expect("state");
        let s = st.slots.get_mut(slot).expect("known slot");
        s.ledger.advance(batch);
        for c in &batch.counts {
            let e = s.counts.entry(c.item.clone()).or_default();
            e.0 += c.impressions;
            e.1 += c.clicks;
        }
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn handle_request(mut req: tiny_http::Request, state: &Mutex<State>, token: &str) {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().as_str().to_string();
    let authed = req
        .headers()
        .iter()
        .any(|h| h.field.equiv("Authorization") && h.value.as_str() == format!("Bearer {token}"));
    let mut body = String::new();
    let _ = req.as_reader().read_to_string(&mut body);
    let mut st = state.lock().expect("state");
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["api", "slots", slot, "events"]) => {
            if !authed {
                return error(req, 401, "missing or wrong bearer token");
            }
            st.event_bodies.push(body.len());
            if st.fail_next > 0 {
                st.fail_next -= 1;
                let status = st.fail_status.unwrap_or(503);
                return error(req, status, format!("fake failure {status}: try later"));
            }
            if body.len() > st.max_body.unwrap_or(MAX_BODY_BYTES) {
                return error(req, 413, "request body too large (proxy)");
            }
            if body.len() > MAX_BODY_BYTES {
                return error(req, 413, "too large");
            }
            let Some(s) = st.slots.get_mut(*slot) else {
                return error(req, 404, format!("no slot {slot}"));
            };
            let batch: EventBatch = match serde_json::from_str(&body) {
                Ok(b) => b,
                Err(e) => return error(req, 400, e.to_string()),
            };
            if let Err(e) = batch.validate() {
                return error(req, 400, e.to_string());
            }
            match s.ledger.disposition(&batch) {
                Disposition::Apply => {
                    s.ledger.advance(&batch);
                    let mut counted = Counted::default();
                    for c in &batch.counts {
                        let e = s.counts.entry(c.item.clone()).or_default();
                        e.0 += c.impressions;
                        e.1 += c.clicks;
                        counted.impressions += c.impressions;
                        counted.clicks += c.clicks;
                    }
                    s.applied_batches += 1;
                    // The fake has no arm set: everything counts, nothing rotates.
                    let applied = Applied {
                        counted,
                        ..Applied::default()
                    };
                    respond(req, 200, &PushResponse::Applied(applied))
                }
                Disposition::Duplicate => {
                    s.duplicates += 1;
                    respond(req, 200, &PushResponse::Duplicate)
                }
                Disposition::Conflict => {
                    s.conflicts += 1;
                    let body = ConflictResponse {
                        error: "range straddles applied offsets".into(),
                        offsets: s.ledger.entries(),
                    };
                    respond(req, 409, &body)
                }
            }
        }
        ("GET", ["api", "slots", _, "offsets"]) if !authed => {
            error(req, 401, "missing or wrong bearer token")
        }
        ("GET", ["api", "slots", slot, "offsets"]) => match st.slots.get_mut(*slot) {
            Some(s) => {
                s.offset_reads += 1;
                let body = OffsetsResponse {
                    slot: slot.to_string(),
                    offsets: s.ledger.entries(),
                };
                respond(req, 200, &body)
            }
            None => error(req, 404, "no such slot"),
        },
        ("GET", ["api", "slots", slot, "pick"]) => {
            if st.catalog.is_empty() {
                return error(req, 404, "slot has no arms");
            }
            st.picks += 1;
            // Cycle through the catalog so every item is shown.
            let item = st.catalog[(st.picks as usize) % st.catalog.len()].clone();
            let pick = PickResponse {
                slot: slot.to_string(),
                href: format!("/product/{item}/#/?source=top_pick"),
                item,
                epoch: 1,
                version: st.picks,
                fallback: false,
                pinned: false,
                source: "isolate".into(),
                title: "t".into(),
                image: "/i.jpg".into(),
                photographer: "p".into(),
                category: String::new(),
                signal_source: "top_pick".into(),
                decision: None,
            };
            respond(req, 200, &pick)
        }
        ("POST", ["api", "catalog"]) => {
            if !authed {
                return error(req, 401, "missing or wrong bearer token");
            }
            if body.len() > MAX_BODY_BYTES {
                return error(req, 413, "too large");
            }
            let n = if query.contains("format=divolte-shop") {
                body.lines().filter(|l| !l.trim().is_empty()).count()
            } else {
                serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("items").and_then(|i| i.as_array()).map(Vec::len))
                    .unwrap_or(0)
            };
            if n > MAX_ITEMS_PER_IMPORT {
                return error(
                    req,
                    413,
                    format!("{n} items in one request; send at most {MAX_ITEMS_PER_IMPORT}"),
                );
            }
            st.catalog_items.push(n);
            st.catalog_posts
                .push((query.to_string(), body.clone(), body.len()));
            let total = st.catalog_posts.len();
            respond(
                req,
                200,
                &CatalogImportResponse {
                    imported: n,
                    total: total as u64,
                },
            )
        }
        _ => error(req, 404, "not found"),
    }
}

/// Waits for `cond`, up to `timeout`; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Whether the tests run under CI (`CI` set, and not empty, `0` or `false`): there a missing
/// dependency fails the test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Reports a test that cannot run because `what` is missing: loudly on stderr with `how` to
/// get it, and as a failure under CI.
pub fn missing(test: &str, what: &str, how: &str) {
    let message = format!("{test}: {what} is missing; {how}");
    if in_ci() {
        panic!("{message} (CI is set, so this fails instead of skipping)");
    }
    eprintln!("\n======== SKIPPED ========\n{message}\n(set CI=true to make this a failure)\n=========================\n");
}

/// The shared Divolte shop fixtures, when present beside the workspace.
pub fn shop_dir() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/divolte-shop");
    if d.join("ShopEventRecord.avsc").is_file() {
        Some(d)
    } else {
        missing(
            "the Divolte shop fixture tests",
            &format!("{} (ShopEventRecord.avsc, catalog/)", d.display()),
            "check out the shared fixtures beside the workspace (../shared/divolte-shop); only the project's schema is tested without them",
        );
        None
    }
}

/// The shop schema, if present.
pub fn shop_schema() -> Option<apache_avro::Schema> {
    let d = shop_dir()?;
    let text = std::fs::read_to_string(d.join("ShopEventRecord.avsc")).expect("read shop schema");
    Some(apache_avro::Schema::parse_str(&text).expect("parse shop schema"))
}

/// The project's schema.
pub fn project_schema() -> apache_avro::Schema {
    collector_bridge::avro::load_schema(None).expect("built-in schema")
}

/// What a test event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ev {
    Impression,
    Click,
    Noise,
    Duplicate,
    Robot,
    MissingItem,
}

/// A Divolte-shaped event of the given kind.
pub fn event(kind: Ev, item: &str, i: u64) -> SimEvent {
    let mut e = SimEvent {
        event_type: "impression",
        page_type: "home",
        product_id: Some(item.to_string()),
        source: Some("top_pick"),
        party_id: format!("0:party{i}"),
        session_id: format!("0:s{i}"),
        event_id: format!("e{i}"),
        timestamp: 1_700_000_000_000 + i as i64,
        location: "/".into(),
        duplicate: false,
        user_agent_type: "Browser",
        parameters: Vec::new(),
    };
    match kind {
        Ev::Impression => {}
        Ev::Click => {
            e.event_type = "pageView";
            e.page_type = "product";
            e.location = format!("/product/{item}/#/?source=top_pick");
        }
        Ev::Noise => {
            e.event_type = "pageView";
            e.source = None;
        }
        Ev::Duplicate => e.duplicate = true,
        Ev::Robot => e.user_agent_type = "Robot",
        Ev::MissingItem => e.product_id = None,
    }
    e
}
