//! The slot Durable Object: loads one slot's state, runs the pure steps of `state.rs` on it
//! (apply a batch exactly once, rotate, fill from the catalog), saves it in one write, and
//! publishes the edge snapshot to KV.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bandit::armset::fresh_wanted;
use bandit::batch::MAX_LEDGER_ENTRIES;
use bandit::operator::{AuditAction, AuditEntry, ExcludeRequest};
use bandit::protocol::{ConflictResponse, PushResponse};
use bandit::{Disposition, EventBatch, RotationConfig};
use futures::lock::Mutex;
use worker::*;

use crate::api::{json_response, ApiError};
use crate::catalog::CatalogItem;
use crate::catalog_client::CatalogClient;
use crate::config::Settings;
use crate::controls::CatalogChange;
use crate::health::{PublishedOdds, PublishedVersion, PUBLISHED_KEY};
use crate::now_ms;
use crate::object_call::{actor_of, settings_differ};
use crate::page_headers::{security_headers, PageKind};
use crate::slot_client::{PinBody, SlotOp, KV_BINDING};
use crate::snapshot::kv_key;
use crate::state::{OffsetEdit, OperatorView, SlotState, AUDIT_KEY, MEMORY_KEY, STATE_KEY};

/// What to do when the edge worker's settings are not this worker's.
const SETTINGS_DIFFER: &str = "the edge worker runs with other settings (vars or build) than the worker holding the objects: deploy both from the same wrangler.toml and build (wrangler deploy, then wrangler deploy -c build/edge/wrangler.jsonc)";

#[durable_object]
pub struct SlotObject {
    state: State,
    env: Env,
    cached: RefCell<Option<SlotState>>,
    /// Serialises every read-modify-write: a rotation awaits the catalog object, and the
    /// runtime may deliver another request meanwhile.
    lock: Mutex<()>,
    last_published_ms: Cell<f64>,
    /// The operators' view (P(best) of the arms and of each segment view) at one state
    /// version: computed once per version, not per request.
    operator_view: RefCell<Option<(u64, Rc<OperatorView>)>>,
    /// What the recently published versions serve (stored under [`PUBLISHED_KEY`]), for the
    /// sample-ratio check; kept apart from the state, which a concurrent write replaces whole.
    published: RefCell<Option<PublishedOdds>>,
    /// Whether a caller with other settings than this worker's was seen (logged once).
    settings_differ_seen: Cell<bool>,
}

impl SlotObject {
    fn settings(&self) -> std::result::Result<Rc<Settings>, ApiError> {
        crate::wasm::settings(&self.env)
    }

    /// The state in memory, else the stored one (kept in memory), else `None`.
    async fn load_stored(&self) -> Result<Option<SlotState>> {
        if let Some(s) = self.cached.borrow().as_ref() {
            return Ok(Some(s.clone()));
        }
        let stored: Option<String> = self.state.storage().get(STATE_KEY).await?;
        let Some(json) = stored else {
            return Ok(None);
        };
        let mut st: SlotState = serde_json::from_str(&json)
            .map_err(|e| Error::RustError(format!("stored slot state is unreadable: {e}")))?;
        let audit: Option<String> = self.state.storage().get(AUDIT_KEY).await?;
        if let Some(audit) = audit {
            // An unreadable log must not take the slot down: it starts afresh (and says so).
            st.audit = serde_json::from_str(&audit).unwrap_or_else(|e| {
                crate::log::error("audit_unreadable", &[("error", &e.to_string())]);
                Default::default()
            });
        }
        let memory: Option<String> = self.state.storage().get(MEMORY_KEY).await?;
        if let Some(memory) = memory {
            // Likewise the memory: without it the slot only learns more slowly.
            if let Err(e) = st.restore_memory(&memory) {
                crate::log::error("memory_unreadable", &[("error", &e.to_string())]);
            }
        }
        *self.cached.borrow_mut() = Some(st.clone());
        Ok(Some(st))
    }

    /// The published versions' odds, loaded once (an unreadable copy starts afresh: it only
    /// feeds a health check).
    async fn published(&self) -> Result<PublishedOdds> {
        if let Some(p) = self.published.borrow().as_ref() {
            return Ok(p.clone());
        }
        let stored: Option<String> = self.state.storage().get(PUBLISHED_KEY).await?;
        let odds: PublishedOdds = stored
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        *self.published.borrow_mut() = Some(odds.clone());
        Ok(odds)
    }

    /// The slot's state: the stored one, or a new one when nothing is stored yet.
    async fn load(&self, slot: &str, rotation: &RotationConfig) -> Result<SlotState> {
        Ok(self
            .load_stored()
            .await?
            .unwrap_or_else(|| SlotState::new(slot, rotation)))
    }

    /// The state for a read-only view. The in-memory copy is only ever replaced whole after a
    /// successful write, so reading it needs no lock and never waits behind an ingest; only a
    /// cold object takes the lock to load.
    async fn read(&self, slot: &str, rotation: &RotationConfig) -> Result<SlotState> {
        if let Some(s) = self.cached.borrow().as_ref() {
            return Ok(s.clone());
        }
        let _guard = self.lock.lock().await;
        self.load(slot, rotation).await
    }

    /// The operators' view of `st` (P(best), segment views), computed once per version.
    fn operator_view(&self, st: &SlotState, rotation: &RotationConfig) -> Rc<OperatorView> {
        if let Some((v, p)) = self.operator_view.borrow().as_ref() {
            if *v == st.version {
                return Rc::clone(p);
            }
        }
        let p = Rc::new(st.operator_view(rotation));
        *self.operator_view.borrow_mut() = Some((st.version, Rc::clone(&p)));
        p
    }

    async fn save(&self, mut st: SlotState) -> Result<()> {
        let parts = st
            .stored_parts()
            .map_err(|e| Error::RustError(e.to_string()))?;
        let storage = self.state.storage();
        let written = if parts.audit.is_none() && parts.memory.is_none() {
            storage.put(STATE_KEY, parts.state).await
        } else {
            // One call, one transaction: the change, its audit entry and the memory it moved
            // are stored together.
            let all = js_sys::Object::new();
            js_sys::Reflect::set(&all, &STATE_KEY.into(), &parts.state.into())?;
            if let Some(audit) = parts.audit {
                js_sys::Reflect::set(&all, &AUDIT_KEY.into(), &audit.into())?;
            }
            if let Some(memory) = parts.memory {
                js_sys::Reflect::set(&all, &MEMORY_KEY.into(), &memory.into())?;
            }
            storage.put_multiple_raw(all).await
        };
        match written {
            Ok(()) => {
                st.mark_saved();
                *self.cached.borrow_mut() = Some(st);
                Ok(())
            }
            Err(e) => {
                // Forget the in-memory copy so the next request reloads what is really stored.
                *self.cached.borrow_mut() = None;
                Err(e)
            }
        }
    }

    /// Tops the set up to n arms from the catalog when due (a new slot, a grown n, a catalog
    /// import); whether items joined.
    async fn fill(
        &self,
        st: &mut SlotState,
        rotation: &RotationConfig,
        force: bool,
    ) -> Result<bool> {
        let Some(wanted) = st.begin_fill(rotation, now_ms(), force) else {
            return Ok(false);
        };
        let fresh = self
            .draw_fresh(st, rotation, wanted.count, wanted.exclude)
            .await?;
        Ok(st.add_fresh(fresh, rotation))
    }

    /// Catalog items for `needed` free places, none of `exclude`: more than needed under a
    /// memory ([`fresh_wanted`]), in the order the slot should take them ([`SlotState::prefer`]).
    async fn draw_fresh(
        &self,
        st: &SlotState,
        rotation: &RotationConfig,
        needed: usize,
        exclude: Vec<String>,
    ) -> Result<Vec<CatalogItem>> {
        let fresh = CatalogClient::new(&self.env)?
            .sample(fresh_wanted(&rotation.policy, needed), exclude)
            .await?;
        Ok(crate::rng::with_rng(|rng| st.prefer(fresh, rotation, rng)))
    }

    async fn rotate(&self, st: &mut SlotState, rotation: &RotationConfig) -> Result<()> {
        let plan = crate::rng::with_rng(|rng| st.segments.plan_rotation(&st.arms, rotation, rng));
        let exclude = st.fill_exclude(rotation);
        let fresh = self
            .draw_fresh(st, rotation, plan.fresh_needed, exclude)
            .await?;
        st.finish_rotation(rotation, &plan, fresh);
        Ok(())
    }

    async fn ingest(
        &self,
        slot: &str,
        mut req: Request,
        rotation: &RotationConfig,
    ) -> std::result::Result<Response, ApiError> {
        // The worker's edge parsed and validated these bytes before forwarding them.
        let bytes = req.bytes().await?;
        let batch: EventBatch = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(400, format!("malformed event batch: {e}")))?;
        let mut st = self.load(slot, rotation).await?;
        match st.ledger.disposition(&batch) {
            Disposition::Duplicate => {
                st.totals.duplicates += 1;
                self.save(st).await?;
                return Ok(json_response(&PushResponse::Duplicate)?);
            }
            Disposition::Conflict => {
                st.totals.conflicts += 1;
                let offsets = st.ledger.entries();
                self.save(st).await?;
                let body = ConflictResponse {
                    error: "the batch straddles offsets already applied: resynchronise from the returned offsets".into(),
                    offsets,
                };
                return Ok(json_response(&body)?.with_status(409));
            }
            Disposition::Apply => {}
        }
        let would_hold = st.ledger.len_after(&batch);
        if would_hold > MAX_LEDGER_ENTRIES {
            // Nothing is skipped: the sender retries until an operator makes room.
            crate::log::warn(
                "ledger_full",
                &[("slot", slot), ("would_hold", &would_hold.to_string())],
            );
            return Err(ApiError::new(
                507,
                format!(
                    "the slot's offset ledger would hold {would_hold} topic-partitions (limit {MAX_LEDGER_ENTRIES}): forget the ones no longer read with POST /api/slots/{slot}/offsets {{\"topic\": ...}}"
                ),
            ));
        }
        let mut applied = st.apply_batch(&batch, now_ms());
        st.health.record(&batch, &self.published().await?, now_ms());
        let dims = self
            .settings()
            .map(|s| s.segments.clone())
            .unwrap_or_default();
        let left_out = st.apply_segments(&batch, &dims, now_ms());
        if left_out > 0 {
            crate::log::info(
                "segments_left_out",
                &[
                    ("slot", slot),
                    ("impressions", &left_out.to_string()),
                    ("why", "not a configured segment, or not an arm"),
                ],
            );
        }
        // A screening policy swaps arms that fell confidently behind for fresh catalog items
        // at once, rather than at the round's end; never more than the catalog can replace.
        let behind = st.behind(rotation);
        let screened = if behind.is_empty() {
            Vec::new()
        } else {
            let exclude = st.fill_exclude(rotation);
            let fresh = self
                .draw_fresh(&st, rotation, behind.len(), exclude)
                .await?;
            st.screen(rotation, &behind, fresh)
        };
        if !screened.is_empty() {
            crate::log::info(
                "screened_out",
                &[("slot", slot), ("items", &screened.join(","))],
            );
        }
        if st.arms.round_complete(rotation) {
            self.rotate(&mut st, rotation).await?;
            applied.rotated = true;
            applied.round = st.arms.round;
            crate::log::info(
                "rotated",
                &[("slot", slot), ("round", &st.arms.round.to_string())],
            );
        }
        self.fill(&mut st, rotation, false).await?;
        self.save(st).await?;
        self.schedule_publish(rotation).await;
        Ok(json_response(&PushResponse::Applied(applied))?)
    }

    async fn publish(&self, rotation: &RotationConfig) -> Result<()> {
        let Some(st) = self.cached.borrow().clone() else {
            return Ok(());
        };
        let now = now_ms();
        let snapshot = st.snapshot(rotation, now);
        let json = serde_json::to_string(&snapshot).map_err(|e| Error::RustError(e.to_string()))?;
        // What this version serves, for checking the impressions it will log: to everyone,
        // and in each segment view.
        let settings = self.settings().map_err(|e| Error::RustError(e.message))?;
        let holdout = settings.holdout();
        let mut published = self.published().await?;
        published.push(PublishedVersion {
            version: snapshot.version,
            odds: snapshot.serving_probabilities(now, holdout, None),
            segments: snapshot
                .segments
                .iter()
                .map(|v| {
                    let odds = snapshot.serving_probabilities(now, holdout, Some(&v.segment));
                    (v.segment.clone(), odds)
                })
                .collect(),
        });
        let odds =
            serde_json::to_string(&published).map_err(|e| Error::RustError(e.to_string()))?;
        self.state.storage().put(PUBLISHED_KEY, odds).await?;
        *self.published.borrow_mut() = Some(published);
        self.env
            .kv(KV_BINDING)?
            .put(&kv_key(&st.slot), json)
            .map_err(|e| Error::RustError(e.to_string()))?
            .execute()
            .await
            .map_err(|e| Error::RustError(e.to_string()))?;
        self.last_published_ms.set(now);
        Ok(())
    }

    /// Publishes now when the interval allows, otherwise leaves it to the alarm.
    async fn schedule_publish(&self, rotation: &RotationConfig) {
        let interval = self
            .settings()
            .map(|s| s.publish_interval_ms)
            .unwrap_or(crate::config::MIN_PUBLISH_INTERVAL_MS) as f64;
        let since = now_ms() - self.last_published_ms.get();
        let result = if since >= interval {
            self.publish(rotation).await
        } else {
            let storage = self.state.storage();
            match storage.get_alarm().await {
                Ok(Some(_)) => Ok(()),
                _ => storage.set_alarm((interval - since).ceil() as i64).await,
            }
        };
        if let Err(e) = result {
            crate::log::error("publish_failed", &[("error", &e.to_string())]);
        }
    }

    /// Tops the set up (now when `force`, else when due), then saves and publishes when that
    /// or the caller (`version_before` is the version it loaded) changed the state.
    async fn fill_and_save(
        &self,
        st: &mut SlotState,
        rotation: &RotationConfig,
        force: bool,
        version_before: u64,
    ) -> Result<()> {
        let filled = self.fill(st, rotation, force).await?;
        if filled || st.version != version_before {
            self.save(st.clone()).await?;
            self.schedule_publish(rotation).await;
        }
        Ok(())
    }

    async fn edit_offsets(
        &self,
        slot: &str,
        mut req: Request,
        rotation: &RotationConfig,
    ) -> std::result::Result<Response, ApiError> {
        let actor = actor_of(&req);
        let edit: OffsetEdit = serde_json::from_slice(&req.bytes().await?)
            .map_err(|e| ApiError::new(400, format!("malformed offset edit: {e}")))?;
        let mut st = self.load(slot, rotation).await?;
        let result = st.edit_offsets(&edit).map_err(|e| ApiError::new(400, e))?;
        if result.changed > 0 {
            let detail = format!(
                "{} partition {} set to {} (was {})",
                edit.topic,
                edit.partition
                    .map_or_else(|| "all".to_string(), |p| p.to_string()),
                edit.offset
                    .map_or_else(|| "forgotten".to_string(), |o| o.to_string()),
                result
                    .previous
                    .map_or_else(|| "none".to_string(), |o| o.to_string()),
            );
            crate::log::info("offsets_edited", &[("slot", slot), ("detail", &detail)]);
            st.record(AuditEntry::new(
                now_ms(),
                actor,
                AuditAction::OffsetEdit,
                slot,
                detail,
            ));
            self.save(st).await?;
        }
        Ok(json_response(&result)?)
    }

    /// Runs one operator control on the loaded state and answers the controls afterwards.
    async fn control(
        &self,
        slot: &str,
        mut req: Request,
        op: SlotOp,
        rotation: &RotationConfig,
    ) -> std::result::Result<Response, ApiError> {
        let actor = actor_of(&req);
        let bytes = req.bytes().await?;
        let mut st = self.load(slot, rotation).await?;
        let version = st.version;
        let now = now_ms();
        let controls = match op {
            SlotOp::Pin => {
                let body: PinBody = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::new(400, format!("malformed pin: {e}")))?;
                st.pin(&body.request, body.item, now, actor)
                    .map_err(|e| ApiError::new(409, e))?
            }
            SlotOp::Unpin => st.unpin(now, actor, "operator"),
            SlotOp::Exclude => {
                let body: ExcludeRequest = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::new(400, format!("malformed exclude request: {e}")))?;
                st.edit_exclude(&body, now, actor)
                    .map_err(|e| ApiError::new(409, e))?
            }
            _ => return Err(ApiError::new(404, "not a control operation")),
        };
        crate::log::info(
            "slot_control",
            &[
                ("slot", slot),
                ("op", op.name()),
                ("removed", &controls.removed_arms.join(" ")),
            ],
        );
        // Arms that left are replaced at once.
        self.fill_and_save(&mut st, rotation, true, version).await?;
        Ok(json_response(&st.controls(now, controls.removed_arms))?)
    }

    /// Applies a catalog change; answers the arms that left.
    async fn catalog_changed(
        &self,
        slot: &str,
        mut req: Request,
        rotation: &RotationConfig,
    ) -> std::result::Result<Response, ApiError> {
        let change: CatalogChange = serde_json::from_slice(&req.bytes().await?)
            .map_err(|e| ApiError::new(400, format!("malformed catalog change: {e}")))?;
        let mut st = self.load(slot, rotation).await?;
        let version = st.version;
        let removed = st.catalog_changed(&change, now_ms());
        if !removed.is_empty() {
            crate::log::info(
                "arms_removed",
                &[
                    ("slot", slot),
                    ("items", &removed.join(" ")),
                    ("why", "catalog change"),
                ],
            );
        }
        // A forced fill also completes a set an import can now fill.
        self.fill_and_save(&mut st, rotation, true, version).await?;
        Ok(json_response(&removed)?)
    }

    async fn handle(&self, req: Request) -> std::result::Result<Response, ApiError> {
        let Some((slot, op)) = SlotOp::parse(&req.method(), &req.url()?) else {
            return Err(ApiError::new(404, "no such slot operation"));
        };
        let settings = self.settings()?;
        let rotation = &settings.rotation;
        // The edge worker's settings should be this worker's: the published serving odds (and
        // so the sample-ratio check) use HOLDOUT and SEGMENTS on both sides.
        let differ =
            crate::wasm::settings_fingerprint().is_some_and(|own| settings_differ(&req, &own));
        if differ && !self.settings_differ_seen.replace(true) {
            crate::log::error(
                "settings_mismatch",
                &[("slot", &slot), ("fix", SETTINGS_DIFFER)],
            );
        }
        // Reads never take the lock; every write does.
        match op {
            SlotOp::State => {
                let st = self.read(&slot, rotation).await?;
                let view = self.operator_view(&st, rotation);
                Ok(json_response(&st.state_json(rotation, &view))?)
            }
            SlotOp::Dashboard => {
                let st = self.read(&slot, rotation).await?;
                let view = self.operator_view(&st, rotation);
                // The catalog's entries join the slot's; without them the page still serves.
                let mut audit: Vec<AuditEntry> = st.audit.entries().cloned().collect();
                match CatalogClient::new(&self.env)?.audit().await {
                    Ok(entries) => audit.extend(entries),
                    Err(e) => crate::log::warn(
                        "catalog_audit_unavailable",
                        &[("slot", &slot), ("error", &e.to_string())],
                    ),
                }
                let audit =
                    bandit::operator::AuditResponse::merged(&audit, crate::dashboard::AUDIT_SHOWN)
                        .entries;
                let resp = Response::from_html(crate::dashboard::page(
                    &st,
                    rotation,
                    &view,
                    now_ms(),
                    &settings.slots,
                    &audit,
                    differ.then_some(SETTINGS_DIFFER),
                ))?;
                resp.headers().set("cache-control", "no-store")?;
                for (name, value) in security_headers(PageKind::Dashboard, None, None) {
                    resp.headers().set(name, &value)?;
                }
                Ok(resp)
            }
            SlotOp::Offsets => {
                let st = self.read(&slot, rotation).await?;
                Ok(json_response(&st.offsets())?)
            }
            SlotOp::Controls => {
                let st = self.read(&slot, rotation).await?;
                Ok(json_response(&st.controls(now_ms(), Vec::new()))?)
            }
            SlotOp::Audit => {
                let st = self.read(&slot, rotation).await?;
                let entries: Vec<&AuditEntry> = st.audit.entries().collect();
                Ok(json_response(&entries)?)
            }
            SlotOp::Pin | SlotOp::Unpin | SlotOp::Exclude => {
                let _guard = self.lock.lock().await;
                self.control(&slot, req, op, rotation).await
            }
            SlotOp::CatalogChanged => {
                let _guard = self.lock.lock().await;
                self.catalog_changed(&slot, req, rotation).await
            }
            SlotOp::Ingest => {
                let _guard = self.lock.lock().await;
                self.ingest(&slot, req, rotation).await
            }
            SlotOp::EditOffsets => {
                let _guard = self.lock.lock().await;
                self.edit_offsets(&slot, req, rotation).await
            }
            SlotOp::Prime => {
                let _guard = self.lock.lock().await;
                let mut st = self.load(&slot, rotation).await?;
                let version = st.version;
                self.fill_and_save(&mut st, rotation, false, version)
                    .await?;
                Ok(json_response(&st.snapshot(rotation, now_ms()))?)
            }
        }
    }
}

impl DurableObject for SlotObject {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            cached: RefCell::new(None),
            lock: Mutex::new(()),
            last_published_ms: Cell::new(f64::NEG_INFINITY),
            operator_view: RefCell::new(None),
            published: RefCell::new(None),
            settings_differ_seen: Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match self.handle(req).await {
            Ok(r) => Ok(r),
            Err(e) => e.into_response(),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let _guard = self.lock.lock().await;
        let settings = match self.settings() {
            Ok(s) => s,
            Err(e) => {
                crate::log::error("publish_skipped", &[("error", &e.message)]);
                return Response::ok("skipped");
            }
        };
        // Woken after an eviction the memory is empty: publish what is stored (a slot that never
        // stored anything has nothing to publish).
        if let Err(e) = self.load_stored().await {
            crate::log::error(
                "publish_skipped",
                &[("error", &e.to_string()), ("from", "alarm")],
            );
            return Response::ok("skipped");
        }
        if let Err(e) = self.publish(&settings.rotation).await {
            crate::log::error(
                "publish_failed",
                &[("error", &e.to_string()), ("from", "alarm")],
            );
        }
        Response::ok("published")
    }
}
