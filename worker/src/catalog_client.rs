//! The catalog Durable Object's interface: its operations, the URL each travels as, the
//! request and answer types, and the typed client the worker and the slot objects use.

use serde::{Deserialize, Serialize};
use worker::{Method, Url};

/// Binding name of the catalog namespace.
pub const BINDING: &str = "CATALOG_STORE";
/// The one catalog object's name.
pub const NAME: &str = "catalog";
/// Origin of the internal URLs (never leaves the runtime).
const ORIGIN: &str = "https://catalog.object";

/// An operation of the catalog object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogOp {
    /// Adds or replaces items (body: a JSON array of validated items).
    Import,
    /// Draws fresh items at random (body: [`SampleRequest`]).
    Sample,
    /// The catalog size.
    Count,
    /// The first items of a category, in index order.
    Category(String),
    /// One item by id.
    Item(String),
    /// Deletes one item by id.
    Delete(String),
    /// The catalog's audit log.
    Audit,
}

impl CatalogOp {
    /// HTTP method.
    pub fn method(&self) -> Method {
        match self {
            CatalogOp::Import | CatalogOp::Sample | CatalogOp::Delete(_) => Method::Post,
            _ => Method::Get,
        }
    }

    /// The internal URL of this operation (names and ids travel in the query, encoded).
    pub fn url(&self) -> String {
        let mut url = match Url::parse(ORIGIN) {
            Ok(u) => u,
            Err(_) => unreachable!("the origin constant is a valid URL"),
        };
        let (path, query) = match self {
            CatalogOp::Import => ("import", None),
            CatalogOp::Sample => ("sample", None),
            CatalogOp::Count => ("count", None),
            CatalogOp::Category(name) => ("category", Some(("name", name))),
            CatalogOp::Item(id) => ("item", Some(("id", id))),
            CatalogOp::Delete(id) => ("delete", Some(("id", id))),
            CatalogOp::Audit => ("audit", None),
        };
        url.set_path(path);
        if let Some((k, v)) = query {
            url.query_pairs_mut().append_pair(k, v);
        }
        url.into()
    }

    /// The operation a request names, if its method and URL name one.
    pub fn parse(method: &Method, url: &Url) -> Option<CatalogOp> {
        let arg = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let op = match url.path() {
            "/import" => CatalogOp::Import,
            "/sample" => CatalogOp::Sample,
            "/count" => CatalogOp::Count,
            "/category" => CatalogOp::Category(arg("name")?),
            "/item" => CatalogOp::Item(arg("id")?),
            "/delete" => CatalogOp::Delete(arg("id")?),
            "/audit" => CatalogOp::Audit,
            _ => return None,
        };
        (op.method() == *method).then_some(op)
    }
}

/// Request to draw fresh items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleRequest {
    /// How many items are wanted.
    pub count: usize,
    /// Items that must not be drawn.
    pub exclude: Vec<String>,
}

/// Answer to a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogCount {
    /// Items in the catalog.
    pub total: u64,
}

#[cfg(target_arch = "wasm32")]
pub use client::CatalogClient;

#[cfg(target_arch = "wasm32")]
mod client {
    use bandit::operator::{Actor, AuditEntry, CatalogDeleteResponse};
    use bandit::protocol::CatalogImportResponse;
    use serde::de::DeserializeOwned;
    use worker::{Env, Error, Result, Stub};

    use super::{CatalogCount, CatalogOp, SampleRequest, BINDING, NAME};
    use crate::catalog::CatalogItem;
    use crate::object_call::{body, call, json_or_none};

    /// The handle on the catalog's Durable Object.
    pub struct CatalogClient {
        stub: Stub,
    }

    impl CatalogClient {
        /// The one catalog object.
        pub fn new(env: &Env) -> Result<CatalogClient> {
            let stub = env
                .durable_object(BINDING)?
                .id_from_name(NAME)?
                .get_stub()?;
            Ok(CatalogClient { stub })
        }

        async fn call_json<T: DeserializeOwned>(
            &self,
            op: CatalogOp,
            body: Option<&[u8]>,
            actor: Option<Actor>,
        ) -> Result<Option<T>> {
            let url = op.url();
            let resp = call(&self.stub, op.method(), &url, body, actor).await?;
            json_or_none(resp, &format!("catalog object, to {url}")).await
        }

        fn missing(what: &str) -> Error {
            Error::RustError(format!("catalog object has no {what} operation"))
        }

        /// Adds or replaces validated items, recording `actor` in the audit log.
        pub async fn import(
            &self,
            items: &[CatalogItem],
            actor: Actor,
        ) -> Result<CatalogImportResponse> {
            self.call_json(CatalogOp::Import, Some(&body(&items)?), Some(actor))
                .await?
                .ok_or_else(|| Self::missing("import"))
        }

        /// Deletes one item, recording `actor`; `None` when there is no such item.
        pub async fn delete(
            &self,
            id: &str,
            actor: Actor,
        ) -> Result<Option<CatalogDeleteResponse>> {
            self.call_json(CatalogOp::Delete(id.to_string()), None, Some(actor))
                .await
        }

        /// Up to `count` random available items, none of `exclude`.
        pub async fn sample(&self, count: usize, exclude: Vec<String>) -> Result<Vec<CatalogItem>> {
            if count == 0 {
                return Ok(Vec::new());
            }
            let req = SampleRequest { count, exclude };
            self.call_json(CatalogOp::Sample, Some(&body(&req)?), None)
                .await?
                .ok_or_else(|| Self::missing("sample"))
        }

        /// The catalog size.
        pub async fn count(&self) -> Result<CatalogCount> {
            self.call_json(CatalogOp::Count, None, None)
                .await?
                .ok_or_else(|| Self::missing("count"))
        }

        /// The first available items of a category (empty when there are none).
        pub async fn category(&self, name: &str) -> Result<Vec<CatalogItem>> {
            Ok(self
                .call_json(CatalogOp::Category(name.to_string()), None, None)
                .await?
                .unwrap_or_default())
        }

        /// One item, or `None` when the catalog has no such id.
        pub async fn item(&self, id: &str) -> Result<Option<CatalogItem>> {
            self.call_json(CatalogOp::Item(id.to_string()), None, None)
                .await
        }

        /// The catalog's audit entries, oldest first.
        pub async fn audit(&self) -> Result<Vec<AuditEntry>> {
            Ok(self
                .call_json(CatalogOp::Audit, None, None)
                .await?
                .unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_parses_back_from_its_own_url() {
        for op in [
            CatalogOp::Import,
            CatalogOp::Sample,
            CatalogOp::Count,
            CatalogOp::Category("black & white/è?".into()),
            CatalogOp::Item("a.b~c_d-1".into()),
            CatalogOp::Delete("x".into()),
            CatalogOp::Audit,
        ] {
            let url = Url::parse(&op.url()).unwrap();
            assert_eq!(CatalogOp::parse(&op.method(), &url), Some(op.clone()));
        }
    }

    #[test]
    fn wrong_method_or_unknown_path_is_no_operation() {
        let count = Url::parse(&CatalogOp::Count.url()).unwrap();
        assert_eq!(CatalogOp::parse(&Method::Post, &count), None);
        let import = Url::parse(&CatalogOp::Import.url()).unwrap();
        assert_eq!(CatalogOp::parse(&Method::Get, &import), None);
        let no_id = Url::parse("https://catalog.object/item").unwrap();
        assert_eq!(CatalogOp::parse(&Method::Get, &no_id), None);
        let other = Url::parse("https://catalog.object/drop").unwrap();
        assert_eq!(CatalogOp::parse(&Method::Get, &other), None);
    }
}
