//! The slot Durable Object: owns one slot's arm set, applies event batches exactly once,
//! rotates rounds, and publishes the edge snapshot to KV.

use std::cell::{Cell, RefCell};

use bandit::{Arm, Disposition, EventBatch, Recorded, RotationConfig};
use futures::lock::Mutex;
use worker::*;

use crate::api::{json_response, ApiError};
use crate::catalog::CatalogItem;
use crate::catalog_do::{self, SampleRequest};
use crate::config::Settings;
use crate::snapshot::kv_key;
use crate::state::SlotState;

/// Binding name of the slot namespace.
pub const BINDING: &str = "SLOT_STORE";
/// KV binding holding the snapshots.
pub const KV_BINDING: &str = "SNAPSHOTS";
/// Items reported by name when a batch counts items outside the set.
const REPORTED_OUTSIDERS: usize = 20;
/// How often an under-filled set asks the catalog again (ms).
const REFILL_INTERVAL_MS: f64 = 10_000.0;

#[durable_object]
pub struct SlotObject {
    state: State,
    env: Env,
    cached: RefCell<Option<SlotState>>,
    /// Serialises every read-modify-write: a rotation awaits the catalog object, and the
    /// runtime may deliver another request meanwhile.
    lock: Mutex<()>,
    last_published_ms: Cell<f64>,
}

fn now_ms() -> f64 {
    Date::now().as_millis() as f64
}

impl SlotObject {
    fn settings(&self) -> std::result::Result<std::rc::Rc<Settings>, ApiError> {
        crate::wasm::settings(&self.env)
    }

    async fn load(&self, slot: &str, rotation: &RotationConfig) -> Result<SlotState> {
        if let Some(s) = self.cached.borrow().as_ref() {
            return Ok(s.clone());
        }
        let stored: Option<String> = self.state.storage().get("state").await?;
        let st = match stored {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| Error::RustError(format!("stored slot state is unreadable: {e}")))?,
            None => SlotState::new(slot, rotation),
        };
        *self.cached.borrow_mut() = Some(st.clone());
        Ok(st)
    }

    async fn save(&self, st: SlotState) -> Result<()> {
        let json = serde_json::to_string(&st).map_err(|e| Error::RustError(e.to_string()))?;
        match self.state.storage().put("state", json).await {
            Ok(()) => {
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

    async fn catalog_sample(&self, count: usize, exclude: Vec<String>) -> Result<Vec<CatalogItem>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let stub = self
            .env
            .durable_object(catalog_do::BINDING)?
            .id_from_name(catalog_do::NAME)?
            .get_stub()?;
        let body = serde_json::to_string(&SampleRequest { count, exclude })
            .map_err(|e| Error::RustError(e.to_string()))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let req = Request::new_with_init("https://catalog/sample", &init)?;
        let mut resp = stub.fetch_with_request(req).await?;
        if resp.status_code() != 200 {
            return Err(Error::RustError(format!(
                "catalog sample answered {}",
                resp.status_code()
            )));
        }
        resp.json().await
    }

    /// Tops the set up to n arms from the catalog (a new slot, a grown n, a catalog import).
    async fn fill(
        &self,
        st: &mut SlotState,
        rotation: &RotationConfig,
        force: bool,
    ) -> Result<bool> {
        let missing = rotation.arms.saturating_sub(st.arms.arms.len());
        let now = now_ms();
        if missing == 0 || (!force && now - st.last_refill_ms < REFILL_INTERVAL_MS) {
            return Ok(false);
        }
        st.last_refill_ms = now;
        let exclude: Vec<String> = st
            .arms
            .excluded(rotation)
            .into_iter()
            .map(String::from)
            .collect();
        let fresh = self.catalog_sample(missing, exclude).await?;
        if fresh.is_empty() {
            return Ok(false);
        }
        let prior = st.arms.fresh_prior(&rotation.policy);
        for item in fresh {
            st.arms.arms.push(Arm {
                item: item.id.clone(),
                prior,
                clicks: 0,
                impressions: 0,
                total_clicks: 0,
                total_impressions: 0,
                since_round: st.arms.round,
            });
            st.items.insert(item.id.clone(), item);
        }
        st.version += 1;
        Ok(true)
    }

    async fn rotate(&self, st: &mut SlotState, rotation: &RotationConfig) -> Result<()> {
        let plan = crate::rng::with_rng(|rng| st.arms.plan_rotation(rotation, rng));
        let mut exclude: Vec<String> = st
            .arms
            .excluded(rotation)
            .into_iter()
            .map(String::from)
            .collect();
        exclude.sort();
        let fresh = self.catalog_sample(plan.fresh_needed, exclude).await?;
        let ids: Vec<String> = fresh.iter().map(|i| i.id.clone()).collect();
        for item in fresh {
            st.items.insert(item.id.clone(), item);
        }
        let summary = st.arms.rotate(rotation, &plan, ids);
        st.items.retain(|id, _| st.arms.position(id).is_some());
        st.push_round(summary);
        Ok(())
    }

    async fn apply(
        &self,
        slot: &str,
        batch: EventBatch,
    ) -> std::result::Result<Response, ApiError> {
        let settings = self.settings()?;
        let rotation = settings.rotation;
        let mut st = self.load(slot, &rotation).await?;
        match st.ledger.disposition(&batch) {
            Disposition::Duplicate => {
                st.totals.duplicates += 1;
                self.save(st).await?;
                return Ok(json_response(&serde_json::json!({"status": "duplicate"}))?);
            }
            Disposition::Conflict => {
                st.totals.conflicts += 1;
                let offsets = st.offsets_json();
                self.save(st).await?;
                let mut err = ApiError::new(409, "the batch straddles offsets already applied: resynchronise from the returned offsets");
                err.extra = Some(serde_json::json!({ "offsets": offsets }));
                return Err(err);
            }
            Disposition::Apply => {}
        }
        let (mut impressions, mut clicks) = (0u64, 0u64);
        let mut outside = Vec::new();
        for c in &batch.counts {
            match st.arms.record(&c.item, c.impressions, c.clicks) {
                Recorded::Counted => {
                    impressions += c.impressions;
                    clicks += c.clicks;
                }
                Recorded::NotInSet => {
                    st.totals.outside_impressions += c.impressions;
                    st.totals.outside_clicks += c.clicks;
                    if outside.len() < REPORTED_OUTSIDERS {
                        outside.push(c.item.clone());
                    }
                }
            }
        }
        st.totals.impressions += impressions;
        st.totals.clicks += clicks;
        st.totals.batches += 1;
        let rotated = st.arms.round_complete(&rotation);
        if rotated {
            self.rotate(&mut st, &rotation).await?;
        }
        self.fill(&mut st, &rotation, false).await?;
        st.ledger.advance(&batch);
        st.version += 1;
        st.last_batch_ms = Some(now_ms());
        let round = st.arms.round;
        self.save(st).await?;
        self.schedule_publish(&rotation).await;
        Ok(json_response(&serde_json::json!({
            "status": "applied",
            "counted": {"impressions": impressions, "clicks": clicks},
            "not_in_set": outside,
            "round": round,
            "rotated": rotated,
        }))?)
    }

    async fn publish(&self, rotation: &RotationConfig) -> Result<()> {
        let Some(st) = self.cached.borrow().clone() else {
            return Ok(());
        };
        let now = now_ms();
        let json = serde_json::to_string(&st.snapshot(rotation, now))
            .map_err(|e| Error::RustError(e.to_string()))?;
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
            .unwrap_or(1000) as f64;
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
            console_error!("snapshot publish failed: {e}");
        }
    }

    async fn handle(&self, mut req: Request) -> std::result::Result<Response, ApiError> {
        // Path: /slot/{name}/{action}
        let path = req.path();
        let mut parts = path.trim_start_matches('/').splitn(3, '/');
        let (Some("slot"), Some(slot), action) =
            (parts.next(), parts.next(), parts.next().unwrap_or(""))
        else {
            return Err(ApiError::new(404, "not found"));
        };
        let slot = slot.to_string();
        let _guard = self.lock.lock().await;
        let settings = self.settings()?;
        let rotation = settings.rotation;
        match (req.method(), action) {
            (Method::Post, "events") => {
                let batch: EventBatch = req
                    .json()
                    .await
                    .map_err(|e| ApiError::new(400, e.to_string()))?;
                batch
                    .validate()
                    .map_err(|e| ApiError::new(400, e.to_string()))?;
                self.apply(&slot, batch).await
            }
            (Method::Get, "snapshot") => {
                let mut st = self.load(&slot, &rotation).await?;
                if self.fill(&mut st, &rotation, false).await? {
                    self.save(st.clone()).await?;
                    self.schedule_publish(&rotation).await;
                }
                Ok(json_response(&st.snapshot(&rotation, now_ms()))?)
            }
            (Method::Post, "refill") => {
                let mut st = self.load(&slot, &rotation).await?;
                let changed = self.fill(&mut st, &rotation, true).await?;
                if changed {
                    self.save(st.clone()).await?;
                    self.schedule_publish(&rotation).await;
                }
                Ok(json_response(
                    &serde_json::json!({"arms": st.arms.arms.len(), "changed": changed}),
                )?)
            }
            (Method::Get, "state") => {
                let st = self.load(&slot, &rotation).await?;
                Ok(json_response(&st.state_json(&rotation))?)
            }
            (Method::Get, "dashboard") => {
                let st = self.load(&slot, &rotation).await?;
                let resp = Response::from_html(crate::dashboard::page(&st, &rotation, now_ms()))?;
                resp.headers().set("cache-control", "no-store")?;
                Ok(resp)
            }
            (Method::Get, "offsets") => {
                let st = self.load(&slot, &rotation).await?;
                Ok(json_response(
                    &serde_json::json!({"slot": slot, "offsets": st.offsets_json()}),
                )?)
            }
            _ => Err(ApiError::new(404, "not found")),
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
                console_error!("snapshot publish skipped: {}", e.message);
                return Response::ok("skipped");
            }
        };
        if self.cached.borrow().is_none() {
            // Woken after an eviction: publish what is stored.
            let stored: Option<String> = self.state.storage().get("state").await?;
            if let Some(st) = stored.and_then(|json| serde_json::from_str::<SlotState>(&json).ok())
            {
                *self.cached.borrow_mut() = Some(st);
            }
        }
        if let Err(e) = self.publish(&settings.rotation).await {
            console_error!("snapshot publish from alarm failed: {e}");
        }
        Response::ok("published")
    }
}
