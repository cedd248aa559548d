//! The homepage read path: isolate cache, then KV, then the Durable Object, within a time
//! budget; then the Thompson pick and the rewrite.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use worker::*;

use crate::catalog::CatalogItem;
use crate::config::Settings;
use crate::now_ms;
use crate::page_headers::{security_headers, PageKind};
use crate::render::{home_template, origin_fills, pick_fragment, render_home, PickMark, SlotFill};
use crate::rng::with_rng;
use crate::segment::{segment_of, Dimension, Facts};
use crate::slot_client::{SlotClient, KV_BINDING};
use crate::snapshot::{kv_key, sticky_key, Choice, Snapshot};
use crate::template::Template;
use bandit::decision::{DecisionId, DecisionLog, ServedBy};
use bandit::protocol::slot_source;

/// Where a snapshot came from, for Server-Timing and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSource {
    /// This isolate's cache, within its max age.
    Isolate,
    /// Workers KV.
    Kv,
    /// The slot's Durable Object.
    Object,
    /// The isolate's cache past its max age, served while a background refresh replaces it.
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
    /// A background refresh is under way.
    refreshing: bool,
}

thread_local! {
    static SNAPSHOTS: RefCell<HashMap<String, Cached>> = RefCell::new(HashMap::new());
    /// Static assets cannot change within a deployment, so an isolate keeps the homepage.
    static TEMPLATES: RefCell<HashMap<String, Rc<Vec<u8>>>> = RefCell::new(HashMap::new());
    /// The homepage with its slot elements located, for the isolate's life.
    static HOME: RefCell<Option<Rc<Template<String>>>> = const { RefCell::new(None) };
}

async fn fetch_from_store(env: &Env, slot: &str) -> Result<Option<(Snapshot, SnapshotSource)>> {
    let kv = env.kv(KV_BINDING)?;
    if let Some(text) = kv
        .get(&kv_key(slot))
        .text()
        .await
        .map_err(|e| Error::RustError(e.to_string()))?
    {
        match serde_json::from_str::<Snapshot>(&text) {
            Ok(mut s) => {
                s.ensure_p_best();
                return Ok(Some((s, SnapshotSource::Kv)));
            }
            Err(e) => crate::log::warn(
                "snapshot_unreadable",
                &[
                    ("slot", slot),
                    ("error", &e.to_string()),
                    ("then", "asking the object"),
                ],
            ),
        }
    }
    // Nothing in KV yet (a new slot): the object fills the set if it can and answers.
    let snapshot = SlotClient::new(env, slot)?.prime().await?;
    Ok(Some((snapshot, SnapshotSource::Object)))
}

/// Reads the store within `budget_ms`.
async fn fetch_within(
    env: &Env,
    slot: &str,
    budget_ms: u64,
) -> Result<Option<(Snapshot, SnapshotSource)>> {
    let fetch = Box::pin(fetch_from_store(env, slot));
    let budget = Delay::from(Duration::from_millis(budget_ms));
    match select(fetch, budget).await {
        Either::Left((res, _)) => res,
        Either::Right(_) => Err(Error::RustError(format!("no answer within {budget_ms} ms"))),
    }
}

/// Keeps `snapshot` as the slot's copy unless the isolate holds a newer one (KV is eventually
/// consistent, so a read may return an older value than the last one seen); either way the
/// copy counts as fresh again. Returns the copy to use.
fn remember(slot: &str, snapshot: Rc<Snapshot>) -> Rc<Snapshot> {
    SNAPSHOTS.with(|c| {
        let mut c = c.borrow_mut();
        let now = now_ms();
        match c.get_mut(slot) {
            Some(e) => {
                if snapshot.is_newer_than(&e.snapshot) {
                    e.snapshot = snapshot;
                }
                e.fetched_ms = now;
                e.refreshing = false;
                Rc::clone(&e.snapshot)
            }
            None => {
                c.insert(
                    slot.to_string(),
                    Cached {
                        snapshot: Rc::clone(&snapshot),
                        fetched_ms: now,
                        refreshing: false,
                    },
                );
                snapshot
            }
        }
    })
}

/// Replaces an expired snapshot in the background; on failure the old one stays in use.
async fn refresh(env: Env, slot: String, budget_ms: u64) {
    match fetch_within(&env, &slot, budget_ms).await {
        Ok(Some((snap, _))) => {
            remember(&slot, Rc::new(snap));
        }
        outcome => {
            let why = match outcome {
                Err(e) => e.to_string(),
                _ => "no snapshot".to_string(),
            };
            crate::log::warn(
                "refresh_failed",
                &[
                    ("slot", &slot),
                    ("error", &why),
                    ("then", "serving the last known state"),
                ],
            );
            SNAPSHOTS.with(|c| {
                if let Some(e) = c.borrow_mut().get_mut(&slot) {
                    e.refreshing = false;
                }
            });
        }
    }
}

/// The slot's snapshot. Within its max age the isolate's copy is used as is; past it the copy
/// is still used while one background refresh per isolate and slot replaces it, so requests
/// never wait on the store once an isolate has seen the slot. Without a copy the request waits
/// for KV (then the Durable Object) within the read budget.
pub async fn load_snapshot(
    ctx: &Context,
    env: &Env,
    settings: &Settings,
    slot: &str,
) -> (Option<Rc<Snapshot>>, SnapshotSource) {
    let now = now_ms();
    let max_age = settings.snapshot_max_age_ms as f64;
    let cached = SNAPSHOTS.with(|c| {
        let mut c = c.borrow_mut();
        let e = c.get_mut(slot)?;
        let fresh = now - e.fetched_ms < max_age;
        let start_refresh = !fresh && !e.refreshing;
        if start_refresh {
            e.refreshing = true;
        }
        Some((Rc::clone(&e.snapshot), fresh, start_refresh))
    });
    if let Some((snap, fresh, start_refresh)) = cached {
        if start_refresh {
            // A refresh may take longer than a request may wait: give it ten budgets.
            let budget = settings.read_budget_ms.saturating_mul(10);
            ctx.wait_until(refresh(env.clone(), slot.to_string(), budget));
        }
        let source = if fresh {
            SnapshotSource::Isolate
        } else {
            SnapshotSource::Stale
        };
        return (Some(snap), source);
    }
    match fetch_within(env, slot, settings.read_budget_ms).await {
        Ok(Some((snap, source))) => {
            let snap = remember(slot, Rc::new(snap));
            (Some(snap), source)
        }
        Ok(None) => (None, SnapshotSource::Missing),
        Err(e) => {
            let instead = if settings.fallback.is_some() {
                "the fallback item"
            } else {
                "the slot as the page has it"
            };
            crate::log::warn(
                "fallback",
                &[
                    ("slot", slot),
                    ("error", &e.to_string()),
                    ("rendering", instead),
                ],
            );
            (None, SnapshotSource::Missing)
        }
    }
}

/// What chose the item.
enum Chosen {
    /// The Thompson winner or the holdout's uniform draw: the snapshot and the arm's index
    /// (no copy of the item on the hot path).
    Arm(Rc<Snapshot>, usize),
    /// The snapshot's pin.
    Pinned(Rc<Snapshot>),
    /// The holdout's editorial item (the configured fallback).
    Baseline,
    /// Nothing could be drawn: the configured fallback, if any.
    Fallback,
}

/// The pick for a slot: the Thompson winner, an operator's pin, the holdout's baseline, or
/// the configured fallback; with the decision's log when a policy made it.
pub struct Decision {
    chosen: Chosen,
    /// Round number (0 for the fallback).
    pub epoch: u64,
    /// Snapshot version (0 for the fallback).
    pub version: u64,
    /// Where the state came from.
    pub source: SnapshotSource,
    /// What the page logs about the decision (none for the fallback).
    pub log: Option<DecisionLog>,
}

impl Decision {
    /// Whether this is the fallback rather than a sampled or pinned pick.
    pub fn fallback(&self) -> bool {
        matches!(self.chosen, Chosen::Fallback)
    }

    /// Whether an operator's pin chose the item.
    pub fn pinned(&self) -> bool {
        matches!(self.chosen, Chosen::Pinned(_))
    }

    /// How the item was chosen, for Server-Timing.
    pub fn kind(&self) -> &'static str {
        match (&self.chosen, &self.log) {
            (_, Some(log)) if log.served_by == ServedBy::Holdout => "holdout",
            (Chosen::Arm(..), _) => "thompson",
            (Chosen::Pinned(_), _) => "pinned",
            (Chosen::Baseline, _) => "holdout",
            (Chosen::Fallback, _) => "fallback",
        }
    }

    /// The item to show: the winner, the pin or the baseline, else the configured fallback,
    /// else nothing.
    pub fn item<'a>(&'a self, settings: &'a Settings) -> Option<&'a CatalogItem> {
        match &self.chosen {
            Chosen::Arm(snap, i) => snap.arms.get(*i).map(|a| &a.item),
            Chosen::Pinned(snap) => snap.pinned.as_ref().map(|p| &p.item),
            Chosen::Baseline | Chosen::Fallback => settings.fallback.as_ref(),
        }
    }
}

/// Draws from a slot's snapshot, skipping items already `taken` on the page (see
/// [`Snapshot::decide`]), and names the decision.
fn draw(
    settings: &Settings,
    snap: Option<Rc<Snapshot>>,
    source: SnapshotSource,
    taken: &[&str],
    visitor: &Visitor,
) -> Decision {
    let segment = visitor.segment.as_deref();
    let drawn = snap.and_then(|snap| {
        with_rng(|rng| {
            let sticky = visitor
                .session
                .as_deref()
                .map(|s| sticky_key(s, &snap.slot));
            let d = snap.decide(rng, now_ms(), taken, settings.holdout(), segment, sticky)?;
            let id = DecisionId {
                time_ms: now_ms().max(0.0) as u64,
                random: rand::Rng::random(rng),
            };
            Some((d, id, snap))
        })
    });
    let Some((d, id, snap)) = drawn else {
        return Decision {
            chosen: Chosen::Fallback,
            epoch: 0,
            version: 0,
            source,
            log: None,
        };
    };
    let chosen = match d.choice {
        Choice::Arm(i) => Chosen::Arm(Rc::clone(&snap), i),
        Choice::Pinned => Chosen::Pinned(Rc::clone(&snap)),
        Choice::Baseline => Chosen::Baseline,
    };
    Decision {
        chosen,
        epoch: snap.epoch,
        version: snap.version,
        source,
        log: Some(DecisionLog {
            id,
            probability: d.probability,
            round: snap.epoch,
            set: snap.set,
            version: snap.version,
            arms: d.arms,
            served_by: d.served_by,
            segment: segment.map(str::to_string),
        }),
    }
}

/// Reads the state and draws the slot's pick.
pub async fn decide(
    req: &Request,
    ctx: &Context,
    env: &Env,
    settings: &Settings,
    slot: &str,
) -> Decision {
    let (snap, source) = load_snapshot(ctx, env, settings, slot).await;
    draw(settings, snap, source, &[], &Visitor::of(req, settings))
}

/// What a decision knows of the visitor: the segment and, for sticky picks, the session.
pub struct Visitor {
    /// The visitor's segment, when the worker has segments.
    pub segment: Option<String>,
    /// The session cookie's value, when picks are sticky and the request carries it.
    pub session: Option<String>,
}

impl Visitor {
    /// The visitor of a request.
    pub fn of(req: &Request, settings: &Settings) -> Visitor {
        Visitor {
            segment: visitor_segment(req, settings),
            session: settings.sticky_cookie.as_deref().and_then(|name| {
                let header = req.headers().get("cookie").ok().flatten()?;
                cookie_value(&header, name).map(str::to_string)
            }),
        }
    }
}

/// The value of cookie `name` in a `Cookie` header (at most 256 bytes, else ignored).
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// The visitor's segment when the worker has segments (`SEGMENTS`): from the request's
/// headers and the platform's metadata (`request.cf`), never a cookie.
pub fn visitor_segment(req: &Request, settings: &Settings) -> Option<String> {
    if settings.segments.is_empty() {
        return None;
    }
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let ua = header("user-agent");
    let hint = header("sec-ch-ua-mobile");
    let raw: &web_sys::Request = req.inner();
    let cf = js_sys::Reflect::get(raw, &"cf".into()).ok();
    let cf_str = |name: &str| {
        cf.as_ref()
            .filter(|c| c.is_object())
            .and_then(|c| js_sys::Reflect::get(c, &name.into()).ok())
            .and_then(|v| v.as_string())
    };
    // Only what the configured dimensions read: a time-zone formatter per request costs
    // more than the rest of the pick.
    let wants = |d: Dimension| settings.segments.contains(&d);
    let continent = wants(Dimension::Continent)
        .then(|| cf_str("continent"))
        .flatten();
    let local_hour = wants(Dimension::Daypart)
        .then(|| local_hour(cf_str("timezone").as_deref()))
        .flatten();
    Some(segment_of(
        &settings.segments,
        &Facts {
            user_agent: ua.as_deref(),
            mobile_hint: hint.as_deref(),
            continent: continent.as_deref(),
            local_hour,
        },
    ))
}

/// The hour now in `timezone` (an IANA name from `request.cf`), else in UTC.
fn local_hour(timezone: Option<&str>) -> Option<u32> {
    let now = js_sys::Date::new_0();
    if let Some(tz) = timezone {
        let options = js_sys::Object::new();
        let set = |k: &str, v: &str| js_sys::Reflect::set(&options, &k.into(), &v.into()).is_ok();
        if set("timeZone", tz) && set("hour", "numeric") && set("hourCycle", "h23") {
            let format =
                js_sys::Intl::DateTimeFormat::new(&js_sys::Array::of1(&"en-US".into()), &options);
            let text: Option<String> = format
                .format()
                .call1(&format, &now)
                .ok()
                .and_then(|v| v.as_string());
            if let Some(h) = text.and_then(|t| t.trim().parse::<u32>().ok()) {
                return Some(h % 24);
            }
        }
    }
    Some(now.get_utc_hours())
}

/// A static template from the assets, cached for the isolate's life.
pub async fn template(env: &Env, path: &str) -> Result<Rc<Vec<u8>>> {
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

/// Server-Timing of a homepage: the slowest snapshot read, then each slot's pick (the first
/// as `pick`, the others as `pick-2`, `pick-3`, ...).
fn server_timing(decisions: &[(String, Decision)], read_ms: f64) -> String {
    let source = decisions
        .first()
        .map_or("missing", |(_, d)| d.source.as_str());
    let mut out = format!("snapshot;desc=\"{source}\";dur={read_ms:.1}");
    for (i, (_, d)) in decisions.iter().enumerate() {
        let name = if i == 0 {
            "pick".to_string()
        } else {
            format!("pick-{}", i + 1)
        };
        out.push_str(&format!(", {name};desc=\"{}\"", d.kind()));
    }
    out
}

/// An HTML page of the shop with its security headers; `nonce` admits the page's one inline
/// script.
pub fn shop_page(body: Vec<u8>, settings: &Settings, nonce: Option<&str>) -> Result<Response> {
    let resp = Response::from_bytes(body)?;
    let h = resp.headers();
    h.set("content-type", "text/html; charset=utf-8")?;
    for (name, value) in
        security_headers(PageKind::Shop, nonce, settings.collector_origin.as_deref())
    {
        h.set(name, &value)?;
    }
    Ok(resp)
}

/// The worker's own homepage (`www/index.html`) with the configured slots it marks located,
/// once per isolate.
async fn home(env: &Env, settings: &Settings) -> Result<Rc<Template<String>>> {
    if let Some(t) = HOME.with(|h| h.borrow().clone()) {
        return Ok(t);
    }
    let page = template(env, "/index.html").await?;
    let located = Rc::new(
        home_template(&page, &settings.slots).map_err(|e| Error::RustError(e.to_string()))?,
    );
    HOME.with(|h| *h.borrow_mut() = Some(Rc::clone(&located)));
    Ok(located)
}

/// Each slot's decision for one page, in configured order, no item twice: a later slot draws
/// among the items earlier slots left.
async fn decide_page(
    ctx: &Context,
    env: &Env,
    settings: &Settings,
    slots: &[&str],
    visitor: &Visitor,
) -> Vec<(String, Decision)> {
    let loads = slots
        .iter()
        .map(|slot| load_snapshot(ctx, env, settings, slot));
    let snapshots = futures::future::join_all(loads).await;
    let mut taken: Vec<String> = Vec::with_capacity(slots.len());
    let mut out = Vec::with_capacity(slots.len());
    for (slot, (snap, source)) in slots.iter().zip(snapshots) {
        let taken_ids: Vec<&str> = taken.iter().map(String::as_str).collect();
        let d = draw(settings, snap, source, &taken_ids, visitor);
        if let Some(item) = d.item(settings) {
            taken.push(item.id.clone());
        }
        out.push((slot.to_string(), d));
    }
    out
}

/// What each slot element of the page becomes (a fallback already shown elsewhere on the
/// page leaves its slot as the page has it).
fn page_fills(
    settings: &Settings,
    decisions: &[(String, Decision)],
    nonce: &str,
) -> Vec<(String, SlotFill)> {
    let mut shown: Vec<&str> = Vec::with_capacity(decisions.len());
    decisions
        .iter()
        .map(|(slot, d)| {
            let fill = match d.item(settings) {
                Some(item) if !shown.contains(&item.id.as_str()) => {
                    shown.push(&item.id);
                    let mark = PickMark {
                        source: slot_source(slot, &settings.slots),
                        pinned: d.pinned(),
                        decision: d.log.as_ref(),
                    };
                    SlotFill::Pick {
                        fragment: pick_fragment(item, nonce, &mark),
                        item: item.id.clone(),
                        epoch: d.epoch,
                        pinned: d.pinned(),
                        decision: d.log.clone(),
                    }
                }
                _ => SlotFill::Leave,
            };
            (slot.clone(), fill)
        })
        .collect()
}

/// `GET /`: the homepage with every slot it holds filled in.
pub async fn homepage(
    req: &Request,
    ctx: &Context,
    env: &Env,
    settings: &Settings,
) -> Result<Response> {
    let page = match &settings.origin_url {
        Some(_) => None,
        None => Some(home(env, settings).await?),
    };
    // An origin's page is unknown until streamed: every configured slot is decided.
    let slots: Vec<&str> = match &page {
        Some(t) => t.keys().map(String::as_str).collect(),
        None => settings.slots.iter().map(String::as_str).collect(),
    };
    let start = now_ms();
    let visitor = Visitor::of(req, settings);
    let decisions = decide_page(ctx, env, settings, &slots, &visitor).await;
    let read_ms = now_ms() - start;
    let nonce = crate::rng::nonce();
    let fills = page_fills(settings, &decisions, &nonce);
    let timing = server_timing(&decisions, read_ms);
    let Some(page) = page else {
        let origin = settings.origin_url.as_deref().unwrap_or_default();
        return origin_homepage(req, origin, &fills, &timing).await;
    };
    let body = render_home(&page, &fills);
    let resp = shop_page(body, settings, Some(&nonce))?;
    resp.headers().set("cache-control", "private, no-store")?;
    resp.headers().set("server-timing", &timing)?;
    Ok(resp)
}

/// Origin headers the rewrite makes wrong: the body's length, encoding and validators change,
/// and the page now differs per request.
const REWRITTEN_HEADERS: [&str; 7] = [
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "etag",
    "last-modified",
    "cache-control",
    "expires",
];

/// The origin's homepage, streamed through the runtime's HTML rewriter, with every origin
/// header except those the rewrite changes.
async fn origin_homepage(
    req: &Request,
    origin: &str,
    fills: &[(String, SlotFill)],
    timing: &str,
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
    let resp = Fetch::Request(Request::new_with_init(&url, &init)?)
        .send()
        .await?;
    let is_html = resp
        .headers()
        .get("content-type")?
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("text/html"));
    if resp.status_code() != 200 || !is_html {
        return Ok(resp);
    }
    let headers = Headers::new();
    // Iteration yields each Set-Cookie on its own, so appending keeps them all.
    for (name, value) in resp.headers().entries() {
        if !REWRITTEN_HEADERS.contains(&name.as_str()) {
            headers.append(&name, &value)?;
        }
    }
    headers.set("cache-control", "private, no-store")?;
    headers.set("server-timing", timing)?;
    let fills =
        serde_json::to_string(&origin_fills(fills)).map_err(|e| Error::RustError(e.to_string()))?;
    let page: web_sys::Response = resp.with_headers(headers).into();
    Ok(Response::from(fill_slots(page, &fills)))
}

#[wasm_bindgen::prelude::wasm_bindgen(module = "/js/fill_slots.js")]
extern "C" {
    /// Streams `response` through the runtime's HTMLRewriter with the slot fills (JSON of
    /// [`crate::render::OriginFill`]s).
    #[wasm_bindgen(js_name = fillSlots)]
    fn fill_slots(response: web_sys::Response, fills: &str) -> web_sys::Response;
}
