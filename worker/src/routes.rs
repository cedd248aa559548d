//! URL routing and the API handlers.

use bandit::operator::{AuditResponse, ExcludeRequest, PinRequest};
use bandit::protocol::{slot_source, PickResponse};
use worker::*;

use crate::api::{authorize, json_response, read_body, require_content_type, ApiError};
use crate::catalog::{parse_shop_lines, CatalogItem, ImportBody, MAX_ITEMS_PER_IMPORT};
use crate::catalog_client::CatalogClient;
use crate::config::Settings;
use crate::controls::CatalogChange;
use crate::credentials::Access;
use crate::edge;
use crate::now_ms;
use crate::slot_client::{PinBody, SlotClient};
use crate::state::OffsetEdit;
use crate::wasm::settings;

/// Dispatches a request.
pub async fn route(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let path = req.path();
    let method = req.method();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match (&method, segments.as_slice()) {
        (Method::Get | Method::Head, [""]) => homepage(&req, &ctx, &env).await,
        (Method::Get, ["api", "slots", slot, "pick"]) => pick(&req, &ctx, &env, slot).await,
        (Method::Post, ["api", "slots", slot, "events"]) => events(req, &env, slot).await,
        (Method::Get, ["api", "slots", slot]) => slot_state(&req, &env, slot).await,
        (Method::Get, ["api", "slots", slot, "offsets"]) => slot_offsets(&req, &env, slot).await,
        (Method::Post, ["api", "slots", slot, "offsets"]) => edit_offsets(req, &env, slot).await,
        (Method::Post, ["api", "slots", slot, "pin"]) => pin(req, &env, slot).await,
        (Method::Delete, ["api", "slots", slot, "pin"]) => unpin(&req, &env, slot).await,
        (Method::Post, ["api", "slots", slot, "exclude"]) => exclude(req, &env, slot).await,
        (Method::Get, ["api", "slots", slot, "controls"]) => controls(&req, &env, slot).await,
        (Method::Post, ["api", "catalog"]) => import_catalog(req, &env).await,
        (Method::Delete, ["api", "catalog", "items", id]) => delete_item(&req, &env, id).await,
        (Method::Get, ["api", "audit"]) => audit(&req, &env).await,
        (Method::Get, ["api", "catalog"]) => catalog_count(&env).await,
        (Method::Get, ["dashboard"]) => dashboard(&req, &env).await,
        (Method::Get, ["product", id, ""]) => product(&env, id).await,
        (Method::Get, ["category", name, ""]) => category(&env, name).await,
        (Method::Get, ["category", name]) => redirect(&format!("/category/{name}/")),
        (Method::Get, ["product", id]) => redirect(&format!("/product/{id}/")),
        (_, ["api", ..]) => Err(ApiError::new(
            404,
            format!("no API route {method:?} {path}"),
        )),
        _ => return env.assets("ASSETS")?.fetch_request(req).await,
    };
    match result {
        Ok(resp) => Ok(resp),
        Err(e) => {
            if method != Method::Get && method != Method::Head && e.status < 500 {
                crate::log::warn(
                    "write_rejected",
                    &[
                        ("path", &path),
                        ("status", &e.status.to_string()),
                        ("error", &e.message),
                    ],
                );
            }
            e.into_response()
        }
    }
}

type ApiResult = std::result::Result<Response, ApiError>;

fn known_slot(settings: &Settings, slot: &str) -> std::result::Result<(), ApiError> {
    if settings.has_slot(slot) {
        Ok(())
    } else {
        // The configured names are not listed: they are the operator's business.
        Err(ApiError::new(404, "unknown slot"))
    }
}

/// The client of a slot this worker serves (404 for any other name).
fn slot_client(env: &Env, slot: &str) -> std::result::Result<SlotClient, ApiError> {
    known_slot(&*settings(env)?, slot)?;
    Ok(SlotClient::new(env, slot)?)
}

fn redirect(location: &str) -> ApiResult {
    let resp = Response::empty()?.with_status(301);
    resp.headers().set("location", location)?;
    Ok(resp)
}

async fn homepage(req: &Request, ctx: &Context, env: &Env) -> ApiResult {
    match settings(env) {
        Ok(s) => Ok(edge::homepage(req, ctx, env, &s).await?),
        Err(e) => {
            // The homepage never fails because of the bandit: serve it as it is.
            crate::log::error("misconfigured", &[("error", &e.message)]);
            Ok(env
                .assets("ASSETS")?
                .fetch("https://assets.local/index.html", None)
                .await?)
        }
    }
}

async fn pick(req: &Request, ctx: &Context, env: &Env, slot: &str) -> ApiResult {
    let s = settings(env)?;
    known_slot(&s, slot)?;
    let d = edge::decide(req, ctx, env, &s, slot).await;
    let Some(item) = d.item(&s) else {
        return Err(ApiError::new(
            404,
            format!("slot {slot:?} has no arms yet: import a catalog (POST /api/catalog)"),
        ));
    };
    Ok(json_response(&PickResponse {
        slot: slot.to_string(),
        item: item.id.clone(),
        epoch: d.epoch,
        version: d.version,
        fallback: d.fallback(),
        pinned: d.pinned(),
        source: d.source.as_str().to_string(),
        title: item.title.clone(),
        image: item.image.clone(),
        photographer: item.photographer.clone(),
        category: item.category.clone(),
        href: item.top_pick_href(slot_source(slot, &s.slots), d.log.as_ref()),
        signal_source: slot_source(slot, &s.slots).to_string(),
        decision: d.log,
    })?)
}

async fn events(mut req: Request, env: &Env, slot: &str) -> ApiResult {
    authorize(&req, env, Access::Ingest)?;
    let client = slot_client(env, slot)?;
    require_content_type(&req, &["application/json"])?;
    let body = read_body(&mut req).await?;
    let batch: bandit::EventBatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(400, format!("malformed event batch: {e}")))?;
    batch
        .validate()
        .map_err(|e| ApiError::new(400, format!("invalid event batch: {e}")))?;
    Ok(client.ingest(&body).await?)
}

async fn import_catalog(mut req: Request, env: &Env) -> ApiResult {
    let s = settings(env)?;
    let actor = authorize(&req, env, Access::Catalog)?;
    let url = req.url()?;
    let format = url
        .query_pairs()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| "json".into());
    let items: Vec<CatalogItem> = match format.as_str() {
        "json" => {
            require_content_type(&req, &["application/json"])?;
            let body = read_body(&mut req).await?;
            let parsed: ImportBody = serde_json::from_slice(&body).map_err(|e| {
                ApiError::new(
                    400,
                    format!("malformed catalog body (expected {{\"items\": [...]}}): {e}"),
                )
            })?;
            parsed.items
        }
        "divolte-shop" => {
            require_content_type(
                &req,
                &["application/x-ndjson", "application/json", "text/plain"],
            )?;
            let category = url
                .query_pairs()
                .find(|(k, _)| k == "category")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let body = read_body(&mut req).await?;
            let text = std::str::from_utf8(&body)
                .map_err(|_| ApiError::new(400, "catalog body is not UTF-8"))?;
            parse_shop_lines(text, &category).map_err(|e| ApiError::new(400, e.to_string()))?
        }
        other => {
            return Err(ApiError::new(
                400,
                format!("unknown catalog format {other:?}: use json or divolte-shop"),
            ))
        }
    };
    if items.len() > MAX_ITEMS_PER_IMPORT {
        return Err(ApiError::new(
            413,
            format!(
                "{} items in one request; send at most {MAX_ITEMS_PER_IMPORT}",
                items.len()
            ),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        item.validate()
            .map_err(|e| ApiError::new(400, format!("items[{i}]: {e}")))?;
    }
    let result = CatalogClient::new(env)?.import(&items, actor).await?;
    tell_slots(env, &s, &CatalogChange::from_import(&items)).await;
    Ok(json_response(&result)?)
}

/// Tells every slot about a catalog change: updated items reach their copies, removed ones
/// leave the sets (which refill), new items may complete under-filled sets. A slot that
/// cannot be told now catches up on its own: a removed item is refused at its next draw, and
/// the import can be repeated (it is idempotent).
async fn tell_slots(env: &Env, s: &Settings, change: &CatalogChange) {
    for slot in &s.slots {
        let told = match SlotClient::new(env, slot) {
            Ok(client) => client.catalog_changed(change).await,
            Err(e) => Err(e),
        };
        if let Err(e) = told {
            crate::log::warn(
                "catalog_change_not_applied",
                &[("slot", slot), ("error", &e.to_string())],
            );
        }
    }
}

async fn delete_item(req: &Request, env: &Env, id: &str) -> ApiResult {
    let actor = authorize(req, env, Access::Operator)?;
    let s = settings(env)?;
    if !bandit::batch::is_valid_item_id(id) {
        return Err(ApiError::new(400, format!("{id:?} is not a valid item id")));
    }
    let Some(done) = CatalogClient::new(env)?.delete(id, actor).await? else {
        return Err(ApiError::new(404, format!("no item {id} in the catalog")));
    };
    tell_slots(env, &s, &CatalogChange::deleted(id)).await;
    Ok(json_response(&done)?)
}

/// Reads an operator's JSON body as `T`.
async fn operator_body<T: serde::de::DeserializeOwned>(
    req: &mut Request,
    what: &str,
) -> std::result::Result<T, ApiError> {
    require_content_type(req, &["application/json"])?;
    let body = read_body(req).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::new(400, format!("malformed {what}: {e}")))
}

async fn pin(mut req: Request, env: &Env, slot: &str) -> ApiResult {
    let actor = authorize(&req, env, Access::Operator)?;
    let client = slot_client(env, slot)?;
    let request: PinRequest = operator_body(&mut req, "pin request").await?;
    request.validate().map_err(|e| ApiError::new(400, e))?;
    if request.until_ms <= now_ms() {
        return Err(ApiError::new(
            400,
            "until_ms is in the past: a pin must end in the future",
        ));
    }
    let Some(item) = CatalogClient::new(env)?.item(&request.item).await? else {
        return Err(ApiError::new(
            404,
            format!("no item {} in the catalog: import it first", request.item),
        ));
    };
    Ok(client.pin(&PinBody { request, item }, actor).await?)
}

async fn unpin(req: &Request, env: &Env, slot: &str) -> ApiResult {
    let actor = authorize(req, env, Access::Operator)?;
    Ok(slot_client(env, slot)?.unpin(actor).await?)
}

async fn exclude(mut req: Request, env: &Env, slot: &str) -> ApiResult {
    let actor = authorize(&req, env, Access::Operator)?;
    let client = slot_client(env, slot)?;
    let request: ExcludeRequest = operator_body(&mut req, "exclude request").await?;
    request.validate().map_err(|e| ApiError::new(400, e))?;
    Ok(client.exclude(&request, actor).await?)
}

async fn controls(req: &Request, env: &Env, slot: &str) -> ApiResult {
    authorize(req, env, Access::Operator)?;
    Ok(slot_client(env, slot)?.controls().await?)
}

/// Entries `GET /api/audit` answers at most (and by default).
const AUDIT_LIMIT: usize = 500;

async fn audit(req: &Request, env: &Env) -> ApiResult {
    authorize(req, env, Access::Operator)?;
    let s = settings(env)?;
    let limit = match req.url()?.query_pairs().find(|(k, _)| k == "limit") {
        None => AUDIT_LIMIT,
        Some((_, v)) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(AUDIT_LIMIT),
            _ => {
                return Err(ApiError::new(
                    400,
                    format!("limit must be a whole number from 1 (at most {AUDIT_LIMIT} are kept)"),
                ))
            }
        },
    };
    let mut entries = CatalogClient::new(env)?.audit().await?;
    for slot in &s.slots {
        entries.extend(SlotClient::new(env, slot)?.audit().await?);
    }
    Ok(json_response(&AuditResponse::merged(&entries, limit))?)
}

async fn dashboard(req: &Request, env: &Env) -> ApiResult {
    authorize(req, env, Access::Operator)?;
    let s = settings(env)?;
    let url = req.url()?;
    let slot = url
        .query_pairs()
        .find(|(k, _)| k == "slot")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.slots[0].clone());
    Ok(slot_client(env, &slot)?.dashboard().await?)
}

async fn slot_state(req: &Request, env: &Env, slot: &str) -> ApiResult {
    authorize(req, env, Access::Operator)?;
    Ok(slot_client(env, slot)?.state().await?)
}

async fn slot_offsets(req: &Request, env: &Env, slot: &str) -> ApiResult {
    authorize(req, env, Access::Offsets)?;
    Ok(slot_client(env, slot)?.offsets().await?)
}

async fn edit_offsets(mut req: Request, env: &Env, slot: &str) -> ApiResult {
    let actor = authorize(&req, env, Access::Operator)?;
    let client = slot_client(env, slot)?;
    require_content_type(&req, &["application/json"])?;
    let body = read_body(&mut req).await?;
    serde_json::from_slice::<OffsetEdit>(&body)
        .map_err(|e| ApiError::new(400, format!("malformed offset edit: {e}")))?;
    Ok(client.edit_offsets(&body, actor).await?)
}

async fn catalog_count(env: &Env) -> ApiResult {
    Ok(json_response(&CatalogClient::new(env)?.count().await?)?)
}

async fn category(env: &Env, name: &str) -> ApiResult {
    if !crate::catalog::is_linkable_category(name) {
        return Err(ApiError::new(404, "no such category"));
    }
    let items = CatalogClient::new(env)?.category(name).await?;
    if items.is_empty() {
        return Err(ApiError::new(404, format!("no prints in category {name}")));
    }
    let template = edge::template(env, "/page.html").await?;
    let body = crate::render::category_page(&template, name, &items).map_err(ApiError::internal)?;
    Ok(edge::shop_page(body, &*settings(env)?, None)?)
}

async fn product(env: &Env, id: &str) -> ApiResult {
    if !bandit::batch::is_valid_item_id(id) {
        return Err(ApiError::new(404, "no such product"));
    }
    let Some(item) = CatalogClient::new(env)?.item(id).await? else {
        return Err(ApiError::new(
            404,
            format!("no product {id} in the catalog"),
        ));
    };
    if !item.available {
        return Err(ApiError::new(
            410,
            format!("product {id} is no longer available"),
        ));
    }
    let template = edge::template(env, "/page.html").await?;
    let body = crate::render::product_page(&template, &item).map_err(ApiError::internal)?;
    Ok(edge::shop_page(body, &*settings(env)?, None)?)
}
