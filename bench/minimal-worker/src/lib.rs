//! A constant JSON answer for every request: the same body as bench/serve-trivial.mjs's JS
//! worker, so the two ceilings differ only in the language and the workers-rs glue.
use worker::{event, Context, Env, Request, Response, Result};

const BODY: &str = r#"{"slot":"home-top-pick","item":"demo-001","epoch":1,"title":"Tiled dome"}"#;

#[event(fetch)]
async fn fetch(_req: Request, _env: Env, _ctx: Context) -> Result<Response> {
    let mut res = Response::ok(BODY)?;
    res.headers_mut().set("content-type", "application/json")?;
    Ok(res)
}
