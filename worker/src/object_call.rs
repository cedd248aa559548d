//! How the worker calls its Durable Objects: one request shape (method, internal URL, body,
//! and who asked, for the audit log) and one reading of the answer, shared by the typed
//! clients in `slot_client.rs` and `catalog_client.rs`.

use bandit::operator::Actor;
use serde::de::DeserializeOwned;
use worker::{js_sys, Error, Headers, Method, Request, RequestInit, Response, Result, Stub};

/// Internal header naming the credential behind an operator write (set by the clients only:
/// the objects are not reachable from outside the worker).
const ACTOR_HEADER: &str = "x-top-pick-actor";
/// Internal header carrying the caller's settings fingerprint (`Settings::fingerprint`).
const SETTINGS_HEADER: &str = "x-top-pick-settings";

/// Sends one operation to an object.
pub async fn call(
    stub: &Stub,
    method: Method,
    url: &str,
    body: Option<&[u8]>,
    actor: Option<Actor>,
) -> Result<Response> {
    let mut init = RequestInit::new();
    init.with_method(method);
    if let Some(b) = body {
        init.with_body(Some(js_sys::Uint8Array::from(b).into()));
    }
    let headers = Headers::new();
    if let Some(actor) = actor {
        headers.set(ACTOR_HEADER, actor_name(actor))?;
    }
    if let Some(fingerprint) = crate::wasm::settings_fingerprint() {
        headers.set(SETTINGS_HEADER, &fingerprint)?;
    }
    init.with_headers(headers);
    stub.fetch_with_request(Request::new_with_init(url, &init)?)
        .await
}

/// The answer's JSON on 200, `None` on 404, an error naming `what` otherwise.
pub async fn json_or_none<T: DeserializeOwned>(
    mut resp: Response,
    what: &str,
) -> Result<Option<T>> {
    match resp.status_code() {
        200 => Ok(Some(resp.json().await?)),
        404 => Ok(None),
        s => Err(Error::RustError(format!("{what} answered {s}"))),
    }
}

/// The JSON body of an operation.
pub fn body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::RustError(e.to_string()))
}

fn actor_name(actor: Actor) -> &'static str {
    match actor {
        Actor::Operator => "operator",
        Actor::Ingest => "ingest",
        Actor::Worker => "worker",
    }
}

/// Whether the caller of `req` named settings other than `own` (a fingerprint): the edge worker
/// and the objects' worker were deployed with different vars or builds.
#[cfg(feature = "objects")]
pub fn settings_differ(req: &Request, own: &str) -> bool {
    req.headers()
        .get(SETTINGS_HEADER)
        .ok()
        .flatten()
        .is_some_and(|theirs| theirs != own)
}

/// Who asked for the operation `req` carries (the worker itself when no client said).
#[cfg(feature = "objects")]
pub fn actor_of(req: &Request) -> Actor {
    match req.headers().get(ACTOR_HEADER).ok().flatten().as_deref() {
        Some("operator") => Actor::Operator,
        Some("ingest") => Actor::Ingest,
        _ => Actor::Worker,
    }
}
