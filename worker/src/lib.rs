//! The top-pick edge worker: renders the homepage with a Thompson-sampled pick, serves the
//! pick and state APIs, and ingests event batches into per-slot Durable Objects.
//!
//! With the `objects` feature (the default) the bundle also defines the Durable Object classes;
//! without it (the edge bundle, build/edge/) it reaches them in the worker that does, through
//! the same bindings, and every cold isolate on the request path compiles only routes, snapshot,
//! pick and render.

pub mod catalog;
pub mod catalog_client;
pub mod config;
pub mod contextual;
pub mod controls;
pub mod credentials;
pub mod dashboard;
pub mod escape;
pub mod health;
pub mod log;
pub mod page_headers;
pub mod render;
pub mod segment;
pub mod slot_client;
pub mod snapshot;
pub mod state;
pub mod template;

#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(all(target_arch = "wasm32", feature = "objects"))]
mod catalog_do;
#[cfg(target_arch = "wasm32")]
mod edge;
#[cfg(target_arch = "wasm32")]
mod object_call;
#[cfg(target_arch = "wasm32")]
mod rng;
#[cfg(target_arch = "wasm32")]
mod routes;
#[cfg(all(target_arch = "wasm32", feature = "objects"))]
mod slot_do;

#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::now_ms;
#[cfg(all(target_arch = "wasm32", feature = "objects"))]
pub use wasm::{CatalogObject, SlotObject};

#[cfg(target_arch = "wasm32")]
mod wasm {
    use std::cell::RefCell;
    use std::rc::Rc;

    use worker::{event, Context, Env, Request, Response, Result};

    use crate::api::ApiError;
    use crate::config::Settings;

    #[cfg(feature = "objects")]
    pub use crate::catalog_do::CatalogObject;
    #[cfg(feature = "objects")]
    pub use crate::slot_do::SlotObject;

    /// Milliseconds since the Unix epoch, from the runtime's clock.
    pub(crate) fn now_ms() -> f64 {
        worker::Date::now().as_millis() as f64
    }

    thread_local! {
        /// The isolate's settings with their fingerprint (computed once, sent with every
        /// object call).
        static SETTINGS: RefCell<Option<(Rc<Settings>, Rc<str>)>> = const { RefCell::new(None) };
    }

    /// The fingerprint of this isolate's settings, once they have been read.
    pub(crate) fn settings_fingerprint() -> Option<Rc<str>> {
        SETTINGS.with(|s| s.borrow().as_ref().map(|(_, f)| Rc::clone(f)))
    }

    /// The worker's settings, parsed once per isolate (vars cannot change within one).
    pub(crate) fn settings(env: &Env) -> std::result::Result<Rc<Settings>, ApiError> {
        if let Some(s) = SETTINGS.with(|s| s.borrow().as_ref().map(|(s, _)| Rc::clone(s))) {
            return Ok(s);
        }
        let parsed = Settings::from_lookup(|name| env.var(name).ok().map(|v| v.to_string()))
            .map_err(|e| ApiError::internal(format!("worker misconfigured: {e}")))?;
        let parsed = Rc::new(parsed);
        let fingerprint = Rc::from(parsed.fingerprint());
        SETTINGS.with(|s| *s.borrow_mut() = Some((Rc::clone(&parsed), fingerprint)));
        Ok(parsed)
    }

    #[event(fetch)]
    async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
        crate::routes::route(req, env, ctx).await
    }
}
