//! The catalog Durable Object: every item in SQLite, addressed by a dense index so a random
//! sample costs a handful of row reads however large the catalog is.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use worker::*;

use crate::api::json_response;
use crate::catalog::CatalogItem;
use crate::now_ms;
use crate::object_call::actor_of;
use bandit::operator::{Actor, AuditAction, AuditEntry, CatalogDeleteResponse, MAX_AUDIT_ENTRIES};
use bandit::protocol::CatalogImportResponse;

use crate::catalog_client::{CatalogCount, CatalogOp, SampleRequest};

/// Items shown on one category page.
pub const CATEGORY_PAGE_ITEMS: usize = 48;
/// Bound parameters per SQL statement, below SQLite's limits.
const SQL_CHUNK: usize = 90;

#[durable_object]
pub struct CatalogObject {
    state: State,
    ready: Cell<bool>,
}

#[derive(Deserialize)]
struct Row {
    idx: f64,
    id: String,
    title: String,
    image: String,
    photographer: String,
    category: String,
    source_url: Option<String>,
    available: f64,
}

impl From<Row> for CatalogItem {
    fn from(r: Row) -> Self {
        CatalogItem {
            id: r.id,
            title: r.title,
            image: r.image,
            photographer: r.photographer,
            category: r.category,
            source_url: r.source_url.filter(|s| !s.is_empty()),
            available: r.available != 0.0,
        }
    }
}

#[derive(Deserialize)]
struct Count {
    n: f64,
}

#[derive(Deserialize)]
struct AuditRow {
    entry: String,
}

/// The columns every item read selects, in [`Row`]'s order.
const COLUMNS: &str = "idx, id, title, image, photographer, category, source_url, available";

impl CatalogObject {
    fn sql(&self) -> SqlStorage {
        let sql = self.state.storage().sql();
        if !self.ready.get() {
            match Self::create_schema(&sql) {
                Ok(()) => self.ready.set(true),
                Err(e) => crate::log::error("catalog_schema_failed", &[("error", &e.to_string())]),
            }
        }
        sql
    }

    fn create_schema(sql: &SqlStorage) -> Result<()> {
        sql.exec(
            "CREATE TABLE IF NOT EXISTS items (idx INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, title TEXT NOT NULL, image TEXT NOT NULL, photographer TEXT NOT NULL, category TEXT NOT NULL, source_url TEXT, available INTEGER NOT NULL DEFAULT 1)",
            None,
        )?;
        // Catalogs stored before availability existed get the column, every item available.
        if sql
            .exec("SELECT available FROM items LIMIT 0", None)
            .is_err()
        {
            sql.exec(
                "ALTER TABLE items ADD COLUMN available INTEGER NOT NULL DEFAULT 1",
                None,
            )?;
        }
        // Category pages read one category in index order without scanning the table.
        sql.exec(
            "CREATE INDEX IF NOT EXISTS items_by_category ON items (category, idx)",
            None,
        )?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, entry TEXT NOT NULL)",
            None,
        )?;
        Ok(())
    }

    /// Records an operator write in the same storage transaction as the write itself (no
    /// await between them), keeping the newest [`MAX_AUDIT_ENTRIES`].
    fn record(&self, entry: AuditEntry) -> Result<()> {
        let json = serde_json::to_string(&entry).map_err(|e| Error::RustError(e.to_string()))?;
        let sql = self.sql();
        sql.exec("INSERT INTO audit (entry) VALUES (?)", vec![json.into()])?;
        sql.exec(
            "DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?",
            vec![(MAX_AUDIT_ENTRIES as i64).into()],
        )?;
        Ok(())
    }

    fn audit(&self) -> Result<Vec<AuditEntry>> {
        let rows: Vec<AuditRow> = self
            .sql()
            .exec("SELECT entry FROM audit ORDER BY seq", None)?
            .to_array()?;
        Ok(rows
            .into_iter()
            .filter_map(|r| serde_json::from_str(&r.entry).ok())
            .collect())
    }

    fn count(&self) -> Result<u64> {
        // MAX(idx) is an index lookup; COUNT(*) would scan the table.
        let c: Count = self
            .sql()
            .exec("SELECT COALESCE(MAX(idx) + 1, 0) AS n FROM items", None)?
            .one()?;
        Ok(c.n as u64)
    }

    fn import(&self, items: Vec<CatalogItem>, actor: Actor) -> Result<CatalogImportResponse> {
        let sql = self.sql();
        let mut next = self.count()?;
        for it in &items {
            // An existing id keeps its index, so indices stay dense.
            let existing: Vec<Count> = sql
                .exec(
                    "SELECT idx AS n FROM items WHERE id = ?",
                    vec![it.id.as_str().into()],
                )?
                .to_array()?;
            let idx = match existing.first() {
                Some(c) => c.n as i64,
                None => {
                    next += 1;
                    (next - 1) as i64
                }
            };
            sql.exec(
                "INSERT OR REPLACE INTO items (idx, id, title, image, photographer, category, source_url, available) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                vec![
                    idx.into(),
                    it.id.as_str().into(),
                    it.title.as_str().into(),
                    it.image.as_str().into(),
                    it.photographer.as_str().into(),
                    it.category.as_str().into(),
                    it.source_url.clone().into(),
                    i64::from(it.available).into(),
                ],
            )?;
        }
        let unavailable: Vec<&str> = items
            .iter()
            .filter(|i| !i.available)
            .map(|i| i.id.as_str())
            .collect();
        let mut detail = format!("{} items imported or updated", items.len());
        if !unavailable.is_empty() {
            detail.push_str(&format!(
                ", {} marked unavailable: {}",
                unavailable.len(),
                unavailable.join(" ")
            ));
        }
        self.record(AuditEntry::new(
            now_ms(),
            actor,
            AuditAction::CatalogImport,
            "catalog",
            detail,
        ))?;
        Ok(CatalogImportResponse {
            imported: items.len(),
            total: next,
        })
    }

    fn rows_by_index(&self, indices: &[usize]) -> Result<HashMap<usize, CatalogItem>> {
        let sql = self.sql();
        let mut out = HashMap::with_capacity(indices.len());
        for chunk in indices.chunks(SQL_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(",");
            let q = format!("SELECT {COLUMNS} FROM items WHERE idx IN ({marks})");
            let binds = chunk
                .iter()
                .map(|&i| SqlStorageValue::from(i as i64))
                .collect::<Vec<_>>();
            for row in sql.exec(&q, binds)?.to_array::<Row>()? {
                out.insert(row.idx as usize, row.into());
            }
        }
        Ok(out)
    }

    fn sample(&self, req: SampleRequest) -> Result<Vec<CatalogItem>> {
        let len = self.count()? as usize;
        let excluded: HashSet<&str> = req.exclude.iter().map(String::as_str).collect();
        let mut chosen: Vec<CatalogItem> = Vec::with_capacity(req.count);
        // Rejection sampling; each attempt reads only the sampled rows.
        for _ in 0..4 {
            if chosen.len() >= req.count || len == 0 {
                break;
            }
            let need = req.count - chosen.len();
            let indices =
                crate::rng::with_rng(|rng| bandit::armset::candidate_indices(len, need, rng));
            let rows = self.rows_by_index(&indices)?;
            for i in indices {
                if chosen.len() >= req.count {
                    break;
                }
                if let Some(item) = rows.get(&i) {
                    if item.available
                        && !excluded.contains(item.id.as_str())
                        && !chosen.iter().any(|c| c.id == item.id)
                    {
                        chosen.push(item.clone());
                    }
                }
            }
            if indices_cover_all(len, need) {
                break;
            }
        }
        Ok(chosen)
    }

    fn category(&self, name: &str) -> Result<Vec<CatalogItem>> {
        let rows: Vec<Row> = self
            .sql()
            .exec(
                &format!("SELECT {COLUMNS} FROM items WHERE category = ? AND available = 1 ORDER BY idx LIMIT ?"),
                vec![name.into(), (CATEGORY_PAGE_ITEMS as i64).into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().map(CatalogItem::from).collect())
    }

    fn item(&self, id: &str) -> Result<Option<CatalogItem>> {
        let rows: Vec<Row> = self
            .sql()
            .exec(
                &format!("SELECT {COLUMNS} FROM items WHERE id = ?"),
                vec![id.into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().next().map(CatalogItem::from))
    }
}

impl CatalogObject {
    /// Deletes `id`, moving the last row into its index so indices stay dense; `None` when
    /// there is no such item.
    fn delete(&self, id: &str, actor: Actor) -> Result<Option<CatalogDeleteResponse>> {
        let sql = self.sql();
        let found: Vec<Count> = sql
            .exec("SELECT idx AS n FROM items WHERE id = ?", vec![id.into()])?
            .to_array()?;
        let Some(idx) = found.first().map(|c| c.n as i64) else {
            return Ok(None);
        };
        let last = self.count()? as i64 - 1;
        sql.exec("DELETE FROM items WHERE idx = ?", vec![idx.into()])?;
        if idx != last {
            sql.exec(
                "UPDATE items SET idx = ? WHERE idx = ?",
                vec![idx.into(), last.into()],
            )?;
        }
        self.record(AuditEntry::new(
            now_ms(),
            actor,
            AuditAction::CatalogDelete,
            "catalog",
            format!("deleted {id}"),
        ))?;
        Ok(Some(CatalogDeleteResponse {
            deleted: id.to_string(),
            total: self.count()?,
        }))
    }
}

/// Whether one candidate draw already covers the whole catalog (so retrying is pointless).
fn indices_cover_all(len: usize, need: usize) -> bool {
    need * bandit::armset::CANDIDATE_FACTOR + 8 >= len
}

impl DurableObject for CatalogObject {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            ready: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Some(op) = CatalogOp::parse(&req.method(), &req.url()?) else {
            return Response::error("no such catalog operation", 404);
        };
        match op {
            CatalogOp::Import => {
                let actor = actor_of(&req);
                let items: Vec<CatalogItem> = req.json().await?;
                json_response(&self.import(items, actor)?)
            }
            CatalogOp::Delete(id) => match self.delete(&id, actor_of(&req))? {
                Some(done) => json_response(&done),
                None => Response::error("no such item", 404),
            },
            CatalogOp::Audit => json_response(&self.audit()?),
            CatalogOp::Sample => {
                let sample: SampleRequest = req.json().await?;
                json_response(&self.sample(sample)?)
            }
            CatalogOp::Count => json_response(&CatalogCount {
                total: self.count()?,
            }),
            CatalogOp::Category(name) => json_response(&self.category(&name)?),
            CatalogOp::Item(id) => match self.item(&id)? {
                Some(item) => json_response(&item),
                None => Response::error("no such item", 404),
            },
        }
    }
}
