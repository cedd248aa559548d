//! HTTP plumbing shared by the routes: JSON errors (internals only in the log), credentials,
//! bounded bodies.

use futures::StreamExt;
use serde::Serialize;
use worker::{Env, Request, Response, Result};

use bandit::protocol::{ErrorResponse, MAX_BODY_BYTES};

use crate::credentials::{Access, Secrets};

/// An error answer: status and message.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// What went wrong and, where possible, what to do.
    pub message: String,
    /// The `WWW-Authenticate` challenge of a 401.
    pub challenge: Option<&'static str>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            challenge: None,
        }
    }

    /// A 500 whose details go to the log under a reference, and only the reference to the
    /// client.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        let reference = crate::rng::reference();
        crate::log::error(
            "internal_error",
            &[("reference", &reference), ("detail", &detail.to_string())],
        );
        ApiError::new(
            500,
            format!("internal error (reference {reference}); the worker's log has the details"),
        )
    }

    /// The JSON response `{"error": message}`.
    pub fn into_response(self) -> Result<Response> {
        let body = ErrorResponse {
            error: self.message,
        };
        let resp = json_response(&body)?.with_status(self.status);
        if let Some(c) = self.challenge {
            resp.headers().set("www-authenticate", c)?;
        }
        Ok(resp)
    }
}

impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        ApiError::internal(e)
    }
}

/// A JSON response with `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`.
pub fn json_response<T: Serialize>(value: &T) -> Result<Response> {
    let resp = Response::from_json(value)?;
    resp.headers().set("cache-control", "no-store")?;
    resp.headers().set("x-content-type-options", "nosniff")?;
    Ok(resp)
}

fn secret(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()
}

/// Checks the request's credentials for `access` (see [`crate::credentials`]).
pub fn authorize(
    req: &Request,
    env: &Env,
    access: Access,
) -> std::result::Result<bandit::operator::Actor, ApiError> {
    let secrets = Secrets {
        ingest: secret(env, "INGEST_TOKEN"),
        operator: secret(env, "OPERATOR_TOKEN"),
    };
    let header = req.headers().get("authorization").ok().flatten();
    secrets.check(access, header.as_deref()).map_err(|denied| {
        let mut e = ApiError::new(401, denied.to_string());
        e.challenge = Some(match access {
            Access::Ingest => "Bearer",
            Access::Offsets | Access::Catalog | Access::Operator => {
                "Basic realm=\"top-pick operators\", charset=\"UTF-8\""
            }
        });
        e
    })
}

/// Checks the request's media type against the accepted ones.
pub fn require_content_type(
    req: &Request,
    accepted: &[&str],
) -> std::result::Result<String, ApiError> {
    let ct = req
        .headers()
        .get("content-type")
        .ok()
        .flatten()
        .unwrap_or_default();
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if accepted.contains(&media.as_str()) {
        Ok(media)
    } else {
        Err(ApiError::new(
            415,
            format!(
                "Content-Type must be {} (got {:?})",
                accepted.join(" or "),
                ct
            ),
        ))
    }
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] without reading past the limit.
pub async fn read_body(req: &mut Request) -> std::result::Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            format!("body over {MAX_BODY_BYTES} bytes: send smaller batches"),
        )
    };
    if let Some(len) = req.headers().get("content-length").ok().flatten() {
        if len
            .trim()
            .parse::<usize>()
            .map_or(true, |n| n > MAX_BODY_BYTES)
        {
            return Err(too_large());
        }
    }
    let mut body = Vec::new();
    let mut stream = match req.stream() {
        Ok(s) => s,
        // No body at all.
        Err(_) => return Ok(body),
    };
    while let Some(chunk) = stream.next().await {
        // A body that breaks off is the connection's fault, not the sender's: retry, not fix.
        let chunk = chunk.map_err(|e| {
            crate::log::warn("body_broke_off", &[("error", &e.to_string())]);
            ApiError::new(
                503,
                "the request body could not be read to its end; send it again",
            )
        })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
