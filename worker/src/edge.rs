//! The homepage read path: isolate cache, then KV, then the Durable Object, within a time
//! budget; then the Thompson pick and the rewrite.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use worker::*;

use crate::config::Settings;
use crate::render::{pick_fragment, rewrite_page, HomepageRewriter, SlotFill};
use crate::rng::with_rng;
use crate::slot_do;
use crate::snapshot::{kv_key, Snapshot};

/// Where a snapshot came from, for Server-Timing and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSource {
    /// This isolate's cache, within its max age.
    Isolate,
    /// Workers KV.
    Kv,
    /// The slot's Durable Object.
    Object,
    /// The isolate's cache past its max age, because the store did not answer in time.
    Stale,
    /// Nothing could be had.
    Missing,
}

impl SnapshotSource {
    /// Short name.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotSource::Isolate => "isolate",
            SnapshotSource::Kv => "kv",
            SnapshotSource::Object => "object",
            SnapshotSource::Stale => "stale",
            SnapshotSource::Missing => "missing",
        }
    }
}

struct Cached {
    snapshot: Rc<Snapshot>,
    fetched_ms: f64,
}

thread_local! {
    static SNAPSHOTS: RefCell<HashMap<String, Cached>> = RefCell::new(HashMap::new());
    /// Static assets cannot change within a deployment, so an isolate keeps the homepage.
    static TEMPLATES: RefCell<HashMap<String, Rc<Vec<u8>>>> = RefCell::new(HashMap::new());
}

fn now_ms() -> f64 {
    Date::now().as_millis() as f64
}

async fn fetch_from_store(env: &Env, slot: &str) -> Result<Option<(Snapshot, SnapshotSource)>> {
    let kv = env.kv(slot_do::KV_BINDING)?;
    if let Some(text) = kv
        .get(&kv_key(slot))
        .text()
        .await
        .map_err(|e| Error::RustError(e.to_string()))?
    {
        match serde_json::from_str::<Snapshot>(&text) {
            Ok(s) => return Ok(Some((s, SnapshotSource::Kv))),
            Err(e) => {
                console_warn!("snapshot for {slot} in KV is unreadable ({e}); asking the object")
            }
        }
    }
    let stub = env
        .durable_object(slot_do::BINDING)?
        .id_from_name(slot)?
        .get_stub()?;
    let mut resp = stub
        .fetch_with_str(&format!("https://slot/slot/{slot}/snapshot"))
        .await?;
    if resp.status_code() != 200 {
        return Err(Error::RustError(format!(
            "slot object answered {}",
            resp.status_code()
        )));
    }
    Ok(Some((resp.json().await?, SnapshotSource::Object)))
}

/// The slot's snapshot, from the freshest place that answers within the budget.
pub async fn load_snapshot(
    env: &Env,
    settings: &Settings,
    slot: &str,
) -> (Option<Rc<Snapshot>>, SnapshotSource) {
    let now = now_ms();
    let cached = SNAPSHOTS.with(|c| {
        c.borrow()
            .get(slot)
            .map(|e| (Rc::clone(&e.snapshot), e.fetched_ms))
    });
    if let Some((snap, at)) = &cached {
        if now - at < settings.snapshot_max_age_ms as f64 {
            return (Some(Rc::clone(snap)), SnapshotSource::Isolate);
        }
    }
    let fetch = Box::pin(fetch_from_store(env, slot));
    let budget = Delay::from(Duration::from_millis(settings.read_budget_ms));
    let outcome = match select(fetch, budget).await {
        Either::Left((res, _)) => res,
        Either::Right(_) => Err(Error::RustError(format!(
            "no answer within {} ms",
            settings.read_budget_ms
        ))),
    };
    match outcome {
        Ok(Some((snap, source))) => {
            let snap = Rc::new(snap);
            SNAPSHOTS.with(|c| {
                c.borrow_mut().insert(
                    slot.to_string(),
                    Cached {
                        snapshot: Rc::clone(&snap),
                        fetched_ms: now_ms(),
                    },
                )
            });
            (Some(snap), source)
        }
        Ok(None) => (None, SnapshotSource::Missing),
        Err(e) => {
            console_warn!(
                "slot {slot}: state unavailable ({e}); rendering with {}",
                if cached.is_some() {
                    "the last known state"
                } else {
                    "the fallback"
                }
            );
            match cached {
                Some((snap, _)) => (Some(snap), SnapshotSource::Stale),
                None => (None, SnapshotSource::Missing),
            }
        }
    }
}

/// The pick for a slot: the Thompson winner, or the configured fallback.
pub struct Decision {
    /// The item to show, if any.
    pub item: Option<crate::catalog::CatalogItem>,
    /// Round number (0 for the fallback).
    pub epoch: u64,
    /// Snapshot version (0 for the fallback).
    pub version: u64,
    /// Where the state came from.
    pub source: SnapshotSource,
    /// Whether this is the fallback rather than a sampled pick.
    pub fallback: bool,
}

/// Reads the state and samples the posteriors.
pub async fn decide(env: &Env, settings: &Settings, slot: &str) -> Decision {
    let (snap, source) = load_snapshot(env, settings, slot).await;
    if let Some(snap) = snap {
        if let Some(arm) = with_rng(|rng| snap.pick(rng)) {
            return Decision {
                item: Some(arm.item.clone()),
                epoch: snap.epoch,
                version: snap.version,
                source,
                fallback: false,
            };
        }
    }
    Decision {
        item: settings.fallback.clone(),
        epoch: 0,
        version: 0,
        source,
        fallback: true,
    }
}

async fn template(env: &Env, path: &str) -> Result<Rc<Vec<u8>>> {
    if let Some(t) = TEMPLATES.with(|t| t.borrow().get(path).cloned()) {
        return Ok(t);
    }
    let mut resp = env
        .assets("ASSETS")?
        .fetch(format!("https://assets.local{path}"), None)
        .await?;
    if resp.status_code() != 200 {
        return Err(Error::RustError(format!(
            "asset {path} answered {}",
            resp.status_code()
        )));
    }
    let bytes = Rc::new(resp.bytes().await?);
    TEMPLATES.with(|t| t.borrow_mut().insert(path.to_string(), Rc::clone(&bytes)));
    Ok(bytes)
}

/// A static template from the assets, cached for the isolate's life.
pub async fn asset_template(env: &Env, path: &str) -> Result<Rc<Vec<u8>>> {
    template(env, path).await
}

fn server_timing(decision: &Decision, read_ms: f64) -> String {
    format!(
        "snapshot;desc=\"{}\";dur={:.1}, pick;desc=\"{}\"",
        decision.source.as_str(),
        read_ms,
        if decision.fallback {
            "fallback"
        } else {
            "thompson"
        }
    )
}

/// `GET /`: the homepage with the slot filled in.
pub async fn homepage(req: &Request, env: &Env, settings: &Settings) -> Result<Response> {
    let slot = settings.slots[0].as_str();
    let start = now_ms();
    let decision = decide(env, settings, slot).await;
    let read_ms = now_ms() - start;
    let fill = match &decision.item {
        Some(item) => SlotFill::Pick {
            fragment: pick_fragment(item),
            item: item.id.clone(),
            epoch: decision.epoch,
        },
        None => SlotFill::Leave,
    };
    let headers = Headers::new();
    headers.set("content-type", "text/html; charset=utf-8")?;
    headers.set("cache-control", "private, no-store")?;
    headers.set("server-timing", &server_timing(&decision, read_ms))?;
    if let Some(origin) = &settings.origin_url {
        return origin_homepage(req, origin, slot, fill, headers).await;
    }
    let page = template(env, "/index.html").await?;
    let body = match rewrite_page(&page, slot, fill) {
        Ok(b) => b,
        Err(e) => {
            console_error!("homepage rewrite failed ({e}); serving it unmodified");
            page.as_ref().clone()
        }
    };
    Ok(Response::from_bytes(body)?.with_headers(headers))
}

/// The origin's homepage, streamed through the rewriter chunk by chunk.
async fn origin_homepage(
    req: &Request,
    origin: &str,
    slot: &str,
    fill: SlotFill,
    headers: Headers,
) -> Result<Response> {
    let url = format!("{origin}/");
    let fwd = Headers::new();
    for name in ["accept", "accept-language", "cookie", "user-agent"] {
        if let Some(v) = req.headers().get(name)? {
            fwd.set(name, &v)?;
        }
    }
    let mut init = RequestInit::new();
    init.with_headers(fwd);
    let mut resp = Fetch::Request(Request::new_with_init(&url, &init)?)
        .send()
        .await?;
    let is_html = resp
        .headers()
        .get("content-type")?
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("text/html"));
    if resp.status_code() != 200 || !is_html {
        return Ok(resp);
    }
    let stream = resp.stream()?;
    let rewriter = Rc::new(RefCell::new(Some(HomepageRewriter::new(slot, fill))));
    let tail_rw = Rc::clone(&rewriter);
    use futures::StreamExt;
    let body = stream
        .map(move |chunk| -> Result<Vec<u8>> {
            let chunk = chunk?;
            match rewriter.borrow_mut().as_mut() {
                Some(rw) => rw
                    .write(&chunk)
                    .map_err(|e| Error::RustError(e.to_string())),
                None => Ok(chunk),
            }
        })
        .chain(futures::stream::once(async move {
            match tail_rw.borrow_mut().take() {
                Some(rw) => rw.end().map_err(|e| Error::RustError(e.to_string())),
                None => Ok(Vec::new()),
            }
        }));
    Ok(Response::from_stream(body)?.with_headers(headers))
}
