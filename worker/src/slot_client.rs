//! The slot Durable Object's interface: its operations, the URL each travels as, and the typed
//! client the worker reaches a slot through. The object parses requests with the same
//! [`SlotOp`], so the two sides cannot disagree.

use worker::{Method, Url};

/// Binding name of the slot namespace.
pub const BINDING: &str = "SLOT_STORE";
/// KV binding holding the snapshots.
pub const KV_BINDING: &str = "SNAPSHOTS";
/// Origin of the internal URLs (never leaves the runtime).
const ORIGIN: &str = "https://slot.object";

/// An operation of the slot object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOp {
    /// Applies an event batch exactly once (body: the batch as the bridge sent it). Writes.
    Ingest,
    /// Tops up an under-filled set from the catalog (at most every few seconds) and answers
    /// the edge snapshot. Writes: the edge uses it only when KV has no snapshot yet.
    Prime,
    /// Tops up the set from the catalog now (after an import). Writes.
    Refill,
    /// The operator's JSON view.
    State,
    /// The operator's dashboard page.
    Dashboard,
    /// The last applied offset per topic-partition.
    Offsets,
    /// An operator's correction of the offset ledger (body: `OffsetEdit`). Writes.
    EditOffsets,
}

impl SlotOp {
    /// Every operation.
    pub const ALL: [SlotOp; 7] = [
        SlotOp::Ingest,
        SlotOp::Prime,
        SlotOp::Refill,
        SlotOp::State,
        SlotOp::Dashboard,
        SlotOp::Offsets,
        SlotOp::EditOffsets,
    ];

    /// Path segment.
    pub fn name(self) -> &'static str {
        match self {
            SlotOp::Ingest => "ingest",
            SlotOp::Prime => "prime",
            SlotOp::Refill => "refill",
            SlotOp::State => "state",
            SlotOp::Dashboard => "dashboard",
            SlotOp::Offsets => "offsets",
            SlotOp::EditOffsets => "edit-offsets",
        }
    }

    /// Whether the operation may change the stored state (and so travels as a POST).
    pub fn writes(self) -> bool {
        matches!(
            self,
            SlotOp::Ingest | SlotOp::Prime | SlotOp::Refill | SlotOp::EditOffsets
        )
    }

    /// HTTP method.
    pub fn method(self) -> Method {
        if self.writes() {
            Method::Post
        } else {
            Method::Get
        }
    }

    /// The internal URL of this operation on `slot`.
    pub fn url(self, slot: &str) -> String {
        format!("{ORIGIN}/{slot}/{}", self.name())
    }

    /// The slot and operation of a request, if its method and path name one.
    pub fn parse(method: &Method, url: &Url) -> Option<(String, SlotOp)> {
        let mut parts = url.path().trim_start_matches('/').split('/');
        let (Some(slot), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let op = SlotOp::ALL.into_iter().find(|op| op.name() == name)?;
        (!slot.is_empty() && op.method() == *method).then(|| (slot.to_string(), op))
    }
}

/// What a refill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefillResult {
    /// Arms in the set afterwards.
    pub arms: usize,
    /// Whether items joined.
    pub changed: bool,
}

#[cfg(target_arch = "wasm32")]
pub use client::SlotClient;

#[cfg(target_arch = "wasm32")]
mod client {
    use worker::{js_sys, Env, Error, Request, RequestInit, Response, Result, Stub};

    use super::{RefillResult, SlotOp, BINDING};
    use crate::snapshot::Snapshot;

    /// The worker's handle on one slot's Durable Object.
    pub struct SlotClient {
        stub: Stub,
        slot: String,
    }

    impl SlotClient {
        /// The object of `slot`.
        pub fn new(env: &Env, slot: &str) -> Result<SlotClient> {
            let stub = env
                .durable_object(BINDING)?
                .id_from_name(slot)?
                .get_stub()?;
            Ok(SlotClient {
                stub,
                slot: slot.to_string(),
            })
        }

        async fn call(&self, op: SlotOp, body: Option<&[u8]>) -> Result<Response> {
            let mut init = RequestInit::new();
            init.with_method(op.method());
            if let Some(b) = body {
                init.with_body(Some(js_sys::Uint8Array::from(b).into()));
            }
            let req = Request::new_with_init(&op.url(&self.slot), &init)?;
            self.stub.fetch_with_request(req).await
        }

        async fn call_json<T: serde::de::DeserializeOwned>(&self, op: SlotOp) -> Result<T> {
            let mut resp = self.call(op, None).await?;
            if resp.status_code() != 200 {
                return Err(Error::RustError(format!(
                    "slot object {} answered {} to {}",
                    self.slot,
                    resp.status_code(),
                    op.name()
                )));
            }
            resp.json().await
        }

        /// Applies a validated batch, forwarded as the bytes it came in; the object's answer
        /// goes back to the sender as it is.
        pub async fn ingest(&self, batch: &[u8]) -> Result<Response> {
            self.call(SlotOp::Ingest, Some(batch)).await
        }

        /// The snapshot, topping up an under-filled set first.
        pub async fn prime(&self) -> Result<Snapshot> {
            self.call_json(SlotOp::Prime).await
        }

        /// Tops up the set from the catalog now.
        pub async fn refill(&self) -> Result<RefillResult> {
            self.call_json(SlotOp::Refill).await
        }

        /// The operator's JSON view, as the object answers it.
        pub async fn state(&self) -> Result<Response> {
            self.call(SlotOp::State, None).await
        }

        /// The dashboard page, as the object answers it.
        pub async fn dashboard(&self) -> Result<Response> {
            self.call(SlotOp::Dashboard, None).await
        }

        /// The applied offsets, as the object answers them.
        pub async fn offsets(&self) -> Result<Response> {
            self.call(SlotOp::Offsets, None).await
        }

        /// Applies an operator's offset correction (its JSON as received); the object's
        /// answer goes back as it is.
        pub async fn edit_offsets(&self, edit: &[u8]) -> Result<Response> {
            self.call(SlotOp::EditOffsets, Some(edit)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_parses_back_from_its_own_url() {
        for op in SlotOp::ALL {
            let url = Url::parse(&op.url("home-top-pick")).unwrap();
            assert_eq!(
                SlotOp::parse(&op.method(), &url),
                Some(("home-top-pick".to_string(), op))
            );
        }
    }

    #[test]
    fn writes_travel_as_posts_and_reads_never_do() {
        let prime = Url::parse(&SlotOp::Prime.url("s")).unwrap();
        assert_eq!(SlotOp::parse(&Method::Get, &prime), None);
        let state = Url::parse(&SlotOp::State.url("s")).unwrap();
        assert_eq!(SlotOp::parse(&Method::Post, &state), None);
        for bad in [
            "https://slot.object/s",
            "https://slot.object/s/state/x",
            "https://slot.object//state",
            "https://slot.object/s/nope",
        ] {
            assert_eq!(
                SlotOp::parse(&Method::Get, &Url::parse(bad).unwrap()),
                None,
                "{bad}"
            );
        }
    }
}
