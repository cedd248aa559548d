//! Catalog items: the project's JSON form, the Divolte shop's form, and their validation.

use bandit::decision::{click_fragment, DecisionLog};
use serde::{Deserialize, Serialize};

use crate::escape::is_safe_url;

/// Longest accepted title or photographer name, in bytes.
pub const MAX_TEXT_LEN: usize = 512;
/// Longest accepted URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Most items in one import request (shared with the bridge, which splits imports by it).
pub use bandit::protocol::MAX_ITEMS_PER_IMPORT;

/// What the page needs to show one catalog item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogItem {
    /// Item id: 1 to 128 characters of `A-Z a-z 0-9 . _ ~ -`, not `.` or `..` (it goes into
    /// URLs as is).
    pub id: String,
    /// Title shown under the photo.
    pub title: String,
    /// Image URL (http, https, or a same-origin path).
    #[serde(default)]
    pub image: String,
    /// Photographer shown with the photo.
    #[serde(default)]
    pub photographer: String,
    /// Category, when known.
    #[serde(default)]
    pub category: String,
    /// Where the photo comes from (e.g. its page on the photo site), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    /// Whether the item may be shown (false: sold out or taken down; it leaves every arm set
    /// and is never drawn again until re-imported as available).
    #[serde(default = "available", skip_serializing_if = "is_available")]
    pub available: bool,
}

fn available() -> bool {
    true
}

fn is_available(a: &bool) -> bool {
    *a
}

/// Why an item was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// The id is empty, too long or has characters outside the allowed set.
    #[error("item id {0:?} must be 1-128 characters of A-Z a-z 0-9 . _ ~ -")]
    BadId(String),
    /// A text field is too long.
    #[error("item {id}: {field} is longer than {MAX_TEXT_LEN} bytes")]
    TooLong {
        /// Item id.
        id: String,
        /// Field name.
        field: &'static str,
    },
    /// A URL is not http(s) or a same-origin path.
    #[error("item {id}: {field} must be an http(s) URL or a path starting with / (got {url:?})")]
    BadUrl {
        /// Item id.
        id: String,
        /// Field name.
        field: &'static str,
        /// The URL.
        url: String,
    },
    /// A Divolte shop line is not valid JSON of the expected shape.
    #[error("line {line}: {message}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

use bandit::batch::is_valid_item_id;

/// Whether `name` can be a category page's address: 1-64 characters of `A-Z a-z 0-9 _ -`.
pub fn is_linkable_category(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl CatalogItem {
    /// Checks the id, the lengths and the URLs.
    pub fn validate(&self) -> Result<(), ItemError> {
        if !is_valid_item_id(&self.id) {
            return Err(ItemError::BadId(self.id.clone()));
        }
        for (field, value) in [
            ("title", &self.title),
            ("photographer", &self.photographer),
            ("category", &self.category),
        ] {
            if value.len() > MAX_TEXT_LEN {
                return Err(ItemError::TooLong {
                    id: self.id.clone(),
                    field,
                });
            }
        }
        let urls = [
            ("image", Some(&self.image)),
            ("source_url", self.source_url.as_ref()),
        ];
        for (field, url) in urls {
            let Some(url) = url else { continue };
            if url.is_empty() && field == "image" {
                continue;
            }
            if url.len() > MAX_URL_LEN || !is_safe_url(url) {
                return Err(ItemError::BadUrl {
                    id: self.id.clone(),
                    field,
                    url: url.chars().take(80).collect(),
                });
            }
        }
        Ok(())
    }

    /// The product page of this item, with the fragment that marks a click on the pick of
    /// the slot whose source value is `source`, and the decision it came from.
    pub fn top_pick_href(&self, source: &str, decision: Option<&DecisionLog>) -> String {
        let fragment = match decision {
            Some(d) => d.click_fragment(source),
            None => click_fragment(source, None),
        };
        format!("/product/{}/{fragment}", self.id)
    }
}

/// The project's import body: `{"items": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// Items to add or replace.
    pub items: Vec<CatalogItem>,
}

#[derive(Deserialize)]
struct ShopRecord {
    id: serde_json::Value,
    #[serde(default)]
    title: String,
    #[serde(default)]
    info: ShopInfo,
    #[serde(default)]
    sizes: std::collections::BTreeMap<String, ShopSize>,
    #[serde(default = "available")]
    available: bool,
}

#[derive(Default, Deserialize)]
struct ShopInfo {
    #[serde(default)]
    owner: ShopOwner,
}

#[derive(Default, Deserialize)]
struct ShopOwner {
    #[serde(default)]
    username: String,
    #[serde(default)]
    realname: String,
}

#[derive(Deserialize)]
struct ShopSize {
    #[serde(default)]
    source: String,
    #[serde(default)]
    url: String,
}

/// Sizes preferred for the featured photo, best first.
const SHOP_SIZES: [&str; 5] = ["Medium", "Medium 640", "Small 320", "Small", "Large"];

/// Converts the Divolte shop's catalog lines (one JSON object per line, as in its
/// `catalog/*.json` files) into items of `category`. Blank lines are skipped.
pub fn parse_shop_lines(body: &str, category: &str) -> Result<Vec<CatalogItem>, ItemError> {
    let mut out = Vec::new();
    for (i, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |message: String| ItemError::BadLine {
            line: i + 1,
            message,
        };
        let rec: ShopRecord = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let id = match rec.id {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(bad("id must be a string or a number".into())),
        };
        let size = SHOP_SIZES
            .iter()
            .find_map(|s| rec.sizes.get(*s))
            .or_else(|| rec.sizes.values().next());
        let photographer = if rec.info.owner.realname.trim().is_empty() {
            rec.info.owner.username
        } else {
            rec.info.owner.realname
        };
        let item = CatalogItem {
            id,
            title: rec.title,
            image: size.map(|s| s.source.clone()).unwrap_or_default(),
            photographer,
            category: category.to_string(),
            source_url: size.map(|s| s.url.clone()).filter(|u| !u.is_empty()),
            available: rec.available,
        };
        item.validate().map_err(|e| bad(e.to_string()))?;
        out.push(item);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> CatalogItem {
        CatalogItem {
            id: id.into(),
            title: "t".into(),
            image: "/images/a.svg".into(),
            photographer: "p".into(),
            category: "c".into(),
            source_url: None,
            available: true,
        }
    }

    #[test]
    fn ids_are_restricted_to_url_safe_characters() {
        assert!(item("15045568809").validate().is_ok());
        assert!(item("a-b_c.d~e").validate().is_ok());
        for bad in ["", "a/b", "a b", "<x>", "a\"b", &"x".repeat(129)] {
            assert!(item(bad).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn unsafe_urls_are_refused() {
        let mut i = item("1");
        i.image = "javascript:alert(1)".into();
        assert!(matches!(i.validate(), Err(ItemError::BadUrl { .. })));
        let mut i = item("1");
        i.image.clear();
        assert!(i.validate().is_ok(), "an item may have no image");
    }

    #[test]
    fn shop_line_converts() {
        let line = r#"{"id":"123","title":"Tulips","favs":3,"info":{"description":"d","tags":["a"],"owner":{"id":"o","username":"user1","realname":""}},"sizes":{"Square":{"width":75,"height":75,"url":"https://www.flickr.com/photos/x/123/sizes/sq/","source":"https://farm.staticflickr.com/sq.jpg"},"Medium":{"width":500,"height":333,"url":"https://www.flickr.com/photos/x/123/sizes/m/","source":"https://farm.staticflickr.com/m.jpg"}}}"#;
        let items = parse_shop_lines(&format!("{line}\n\n"), "flowers").unwrap();
        assert_eq!(items.len(), 1);
        let it = &items[0];
        assert_eq!(it.id, "123");
        assert_eq!(it.photographer, "user1", "falls back to the user name");
        assert_eq!(it.image, "https://farm.staticflickr.com/m.jpg");
        assert_eq!(it.category, "flowers");
        assert!(matches!(
            parse_shop_lines("{not json", "x"),
            Err(ItemError::BadLine { line: 1, .. })
        ));
    }

    #[test]
    fn every_shared_shop_catalog_line_converts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/divolte-shop/catalog");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!(
                "skipping: {} is absent (the Divolte shop fixtures live outside the repository)",
                dir.display()
            );
            return;
        };
        let mut total = 0;
        for e in entries.flatten() {
            let path = e.path();
            let category = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let body = std::fs::read_to_string(&path).unwrap();
            let items = parse_shop_lines(&body, &category).unwrap();
            assert_eq!(
                items.len(),
                body.lines().filter(|l| !l.trim().is_empty()).count()
            );
            total += items.len();
        }
        assert_eq!(total, 2759, "the shop's catalog has 2,759 records");
    }
}
