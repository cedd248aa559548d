//! HTTP plumbing shared by the routes: JSON errors, bearer authentication, bounded bodies.

use futures::StreamExt;
use serde::Serialize;
use worker::{Env, Request, Response, Result};

use bandit::protocol::MAX_BODY_BYTES;

/// An error answer: status, message and optional extra JSON fields.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// What went wrong and, where possible, what to do.
    pub message: String,
    /// Extra fields merged into the JSON body (e.g. `offsets` on a 409).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            extra: None,
        }
    }

    /// The JSON response `{"error": message, ...extra}`.
    pub fn into_response(self) -> Result<Response> {
        let mut body = serde_json::json!({ "error": self.message });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.extra, body.as_object_mut())
        {
            obj.extend(extra);
        }
        Ok(json_response(&body)?.with_status(self.status))
    }
}

impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        worker::console_error!("internal error: {e}");
        ApiError::new(500, format!("internal error: {e}"))
    }
}

/// A JSON response with `Cache-Control: no-store`.
pub fn json_response<T: Serialize>(value: &T) -> Result<Response> {
    let resp = Response::from_json(value)?;
    resp.headers().set("cache-control", "no-store")?;
    Ok(resp)
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

/// Checks `Authorization: Bearer <INGEST_TOKEN>`.
pub fn authorize(req: &Request, env: &Env) -> std::result::Result<(), ApiError> {
    let expected = env
        .secret("INGEST_TOKEN")
        .map(|s| s.to_string())
        .or_else(|_| env.var("INGEST_TOKEN").map(|v| v.to_string()))
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                401,
                "writes are disabled: INGEST_TOKEN is not set on the worker (wrangler secret put INGEST_TOKEN, or .dev.vars locally)",
            )
        })?;
    let header = req
        .headers()
        .get("authorization")
        .ok()
        .flatten()
        .unwrap_or_default();
    let presented = header.strip_prefix("Bearer ").ok_or_else(|| {
        ApiError::new(
            401,
            "missing bearer token: send Authorization: Bearer <INGEST_TOKEN>",
        )
    })?;
    if constant_time_eq(presented.trim().as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(401, "wrong bearer token"))
    }
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
        let chunk =
            chunk.map_err(|e| ApiError::new(400, format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
