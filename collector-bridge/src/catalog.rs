//! `catalog import`: catalog files posted to the worker in bodies under 1 MiB and of at most
//! [`MAX_ITEMS_PER_IMPORT`] items, the worker's two limits.

use std::path::Path;

use bandit::protocol::CatalogImportResponse;
use serde_json::Value;

use bandit::protocol::{MAX_BODY_BYTES, MAX_ITEMS_PER_IMPORT};

use crate::worker_client::{WorkerClient, WorkerError};

/// Leave room for the JSON envelope and be safely under the limit.
const BUDGET: usize = MAX_BODY_BYTES - 16 * 1024;

/// Catalog file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The Divolte shop's catalog: one JSON object per line, category = file name.
    DivolteShop,
    /// The project's form: `{"items":[...]}`, a JSON array, or one item per line.
    Json,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// Path.
        path: String,
        /// Detail.
        message: String,
    },
    /// The worker failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// Splits items into bodies of at most `budget` bytes and `max_items` items each (an item
/// larger than the budget is an error).
pub fn batch_items(
    items: &[Value],
    budget: usize,
    max_items: usize,
) -> Result<Vec<Vec<Value>>, String> {
    let max_items = max_items.max(1);
    let mut out = Vec::new();
    let mut cur: Vec<Value> = Vec::new();
    let mut size = 0usize;
    for (i, it) in items.iter().enumerate() {
        let n = serde_json::to_vec(it).map_err(|e| e.to_string())?.len() + 1;
        if n > budget {
            return Err(format!(
                "item {i} is {n} bytes, over the 1 MiB request limit"
            ));
        }
        if (size + n > budget || cur.len() >= max_items) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += n;
        cur.push(it.clone());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Splits non-empty lines (one item each) into bodies of at most `budget` bytes and
/// `max_items` lines each.
pub fn batch_lines(text: &str, budget: usize, max_items: usize) -> Result<Vec<String>, String> {
    let max_items = max_items.max(1);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut lines = 0usize;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if line.len() + 1 > budget {
            return Err(format!("line {} is over the 1 MiB request limit", i + 1));
        }
        if (cur.len() + line.len() + 1 > budget || lines >= max_items) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            lines = 0;
        }
        cur.push_str(line);
        cur.push('\n');
        lines += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Reads the project's JSON catalog forms into a list of items.
pub fn parse_json_items(text: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut o)) => match o.remove("items") {
            Some(Value::Array(items)) => Ok(items),
            _ => Err("expected an object with an \"items\" array".into()),
        },
        Ok(Value::Array(items)) => Ok(items),
        Ok(_) => Err("expected {\"items\": [...]} or an array".into()),
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
            .collect(),
    }
}

/// Imports files; returns the worker's last answer per request.
pub fn import(
    files: &[impl AsRef<Path>],
    format: Format,
    client: &WorkerClient,
) -> Result<Vec<CatalogImportResponse>, CatalogError> {
    let mut answers = Vec::new();
    for f in files {
        let path = f.as_ref();
        let err = |message: String| CatalogError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        match format {
            Format::DivolteShop => {
                let category = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .ok_or_else(|| err("file name is not UTF-8".into()))?;
                for body in batch_lines(&text, BUDGET, MAX_ITEMS_PER_IMPORT).map_err(err)? {
                    let a = client.post_catalog(
                        &[("format", "divolte-shop"), ("category", category)],
                        "application/x-ndjson",
                        body.as_bytes(),
                    )?;
                    tracing::info!(file = %path.display(), imported = a.imported, total = a.total, "catalog batch imported");
                    answers.push(a);
                }
            }
            Format::Json => {
                let items = parse_json_items(&text).map_err(err)?;
                for chunk in batch_items(&items, BUDGET, MAX_ITEMS_PER_IMPORT).map_err(err)? {
                    let body = serde_json::to_vec(&serde_json::json!({ "items": chunk }))
                        .map_err(|e| err(e.to_string()))?;
                    let a = client.post_catalog(&[], "application/json", &body)?;
                    tracing::info!(file = %path.display(), imported = a.imported, total = a.total, "catalog batch imported");
                    answers.push(a);
                }
            }
        }
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_batched_under_the_budget() {
        let line = "x".repeat(100);
        let text = std::iter::repeat_n(line.as_str(), 50)
            .collect::<Vec<_>>()
            .join("\n");
        let b = batch_lines(&text, 1010, 1000).unwrap();
        assert_eq!(b.len(), 5);
        assert!(b.iter().all(|s| s.len() <= 1010));
        assert_eq!(b.iter().map(|s| s.lines().count()).sum::<usize>(), 50);
        assert!(batch_lines(&"y".repeat(2000), 1010, 1000).is_err());
        // And by count: 50 lines, at most 7 a body.
        let b = batch_lines(&text, 1 << 20, 7).unwrap();
        assert_eq!(b.len(), 8);
        assert!(b.iter().all(|s| s.lines().count() <= 7));
        assert_eq!(b.iter().map(|s| s.lines().count()).sum::<usize>(), 50);
    }

    #[test]
    fn items_are_batched_under_the_budget() {
        let items: Vec<Value> = (0..100)
            .map(|i| serde_json::json!({"id": format!("{i:04}"), "title": "t"}))
            .collect();
        let b = batch_items(&items, 300, 1000).unwrap();
        assert!(b.len() > 1);
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 100);
        for chunk in &b {
            assert!(serde_json::to_vec(chunk).unwrap().len() <= 300);
        }
        let b = batch_items(&items, 1 << 20, 30).unwrap();
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [30, 30, 30, 10]);
    }

    #[test]
    fn json_forms_parse() {
        assert_eq!(
            parse_json_items(r#"{"items":[{"id":"a"}]}"#).unwrap().len(),
            1
        );
        assert_eq!(
            parse_json_items(r#"[{"id":"a"},{"id":"b"}]"#)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse_json_items("{\"id\":\"a\"}\n{\"id\":\"b\"}\n")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_json_items("{\"x\":1}").is_err());
    }
}
