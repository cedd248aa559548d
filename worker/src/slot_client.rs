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
    /// The operator's JSON view.
    State,
    /// The operator's dashboard page.
    Dashboard,
    /// The last applied offset per topic-partition.
    Offsets,
    /// An operator's correction of the offset ledger (body: `OffsetEdit`). Writes.
    EditOffsets,
    /// Pins an item (body: `PinRequest` and the item, as [`PinBody`]). Writes.
    Pin,
    /// Removes the pin. Writes.
    Unpin,
    /// Edits the exclude list (body: `ExcludeRequest`). Writes.
    Exclude,
    /// The pin and the exclude list.
    Controls,
    /// The slot's audit log (oldest first).
    Audit,
    /// A catalog import or delete to apply to the set (body: `CatalogChange`). Writes.
    CatalogChanged,
}

impl SlotOp {
    /// Every operation.
    pub const ALL: [SlotOp; 12] = [
        SlotOp::Ingest,
        SlotOp::Prime,
        SlotOp::State,
        SlotOp::Dashboard,
        SlotOp::Offsets,
        SlotOp::EditOffsets,
        SlotOp::Pin,
        SlotOp::Unpin,
        SlotOp::Exclude,
        SlotOp::Controls,
        SlotOp::Audit,
        SlotOp::CatalogChanged,
    ];

    /// Path segment.
    pub fn name(self) -> &'static str {
        match self {
            SlotOp::Ingest => "ingest",
            SlotOp::Prime => "prime",
            SlotOp::State => "state",
            SlotOp::Dashboard => "dashboard",
            SlotOp::Offsets => "offsets",
            SlotOp::EditOffsets => "edit-offsets",
            SlotOp::Pin => "pin",
            SlotOp::Unpin => "unpin",
            SlotOp::Exclude => "exclude",
            SlotOp::Controls => "controls",
            SlotOp::Audit => "audit",
            SlotOp::CatalogChanged => "catalog-changed",
        }
    }

    /// Whether the operation may change the stored state (and so travels as a POST).
    pub fn writes(self) -> bool {
        !matches!(
            self,
            SlotOp::State | SlotOp::Dashboard | SlotOp::Offsets | SlotOp::Controls | SlotOp::Audit
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

/// The body of [`SlotOp::Pin`]: the operator's request and the catalog's copy of the item.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PinBody {
    /// What the operator asked for.
    pub request: bandit::operator::PinRequest,
    /// The item as the catalog has it now.
    pub item: crate::catalog::CatalogItem,
}

#[cfg(target_arch = "wasm32")]
pub use client::SlotClient;

#[cfg(target_arch = "wasm32")]
mod client {
    use bandit::operator::{Actor, ExcludeRequest};
    use worker::{Env, Error, Response, Result, Stub};

    use super::{PinBody, SlotOp, BINDING};
    use crate::controls::CatalogChange;
    use crate::object_call::{body, call, json_or_none};
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

        async fn call(
            &self,
            op: SlotOp,
            body: Option<&[u8]>,
            actor: Option<Actor>,
        ) -> Result<Response> {
            call(&self.stub, op.method(), &op.url(&self.slot), body, actor).await
        }

        async fn call_json<T: serde::de::DeserializeOwned>(
            &self,
            op: SlotOp,
            body: Option<&[u8]>,
        ) -> Result<T> {
            let what = format!("slot object {}, to {}", self.slot, op.name());
            let resp = self.call(op, body, None).await?;
            json_or_none(resp, &what)
                .await?
                .ok_or_else(|| Error::RustError(format!("{what} answered 404")))
        }

        /// Applies a validated batch, forwarded as the bytes it came in; the object's answer
        /// goes back to the sender as it is.
        pub async fn ingest(&self, batch: &[u8]) -> Result<Response> {
            self.call(SlotOp::Ingest, Some(batch), None).await
        }

        /// The snapshot, topping up an under-filled set first.
        pub async fn prime(&self) -> Result<Snapshot> {
            self.call_json(SlotOp::Prime, None).await
        }

        /// Applies a catalog change to the set (and tops it up); the arms that left.
        pub async fn catalog_changed(&self, change: &CatalogChange) -> Result<Vec<String>> {
            self.call_json(SlotOp::CatalogChanged, Some(&body(change)?))
                .await
        }

        /// The operator's JSON view, as the object answers it.
        pub async fn state(&self) -> Result<Response> {
            self.call(SlotOp::State, None, None).await
        }

        /// The dashboard page, as the object answers it.
        pub async fn dashboard(&self) -> Result<Response> {
            self.call(SlotOp::Dashboard, None, None).await
        }

        /// The applied offsets, as the object answers them.
        pub async fn offsets(&self) -> Result<Response> {
            self.call(SlotOp::Offsets, None, None).await
        }

        /// Applies an operator's offset correction (its JSON as received); the object's
        /// answer goes back as it is.
        pub async fn edit_offsets(&self, edit: &[u8], actor: Actor) -> Result<Response> {
            self.call(SlotOp::EditOffsets, Some(edit), Some(actor))
                .await
        }

        /// Pins an item; the object's answer goes back as it is.
        pub async fn pin(&self, pin: &PinBody, actor: Actor) -> Result<Response> {
            self.call(SlotOp::Pin, Some(&body(pin)?), Some(actor)).await
        }

        /// Removes the pin; the object's answer goes back as it is.
        pub async fn unpin(&self, actor: Actor) -> Result<Response> {
            self.call(SlotOp::Unpin, None, Some(actor)).await
        }

        /// Edits the exclude list; the object's answer goes back as it is.
        pub async fn exclude(&self, req: &ExcludeRequest, actor: Actor) -> Result<Response> {
            self.call(SlotOp::Exclude, Some(&body(req)?), Some(actor))
                .await
        }

        /// The pin and the exclude list, as the object answers them.
        pub async fn controls(&self) -> Result<Response> {
            self.call(SlotOp::Controls, None, None).await
        }

        /// The slot's audit entries, oldest first.
        pub async fn audit(&self) -> Result<Vec<bandit::operator::AuditEntry>> {
            self.call_json(SlotOp::Audit, None).await
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
