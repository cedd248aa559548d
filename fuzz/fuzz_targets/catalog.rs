//! The worker's catalog parsers on arbitrary bytes: the Divolte shop's line format
//! (`parse_shop_lines`) and the project's JSON import body (`ImportBody`), with
//! `CatalogItem::validate`.
//!
//! Input: the category name, a 0xFF byte (never part of UTF-8), then the body; without 0xFF
//! the whole input is the body and the category is `flowers`.
//!
//! Invariants: nothing panics; every item the shop parser returns validates, has the asked-for
//! category and comes from a distinct non-blank line; a valid item's id and URLs are safe where
//! the pages put them; valid items round-trip through JSON unchanged.
#![no_main]

use bandit::batch::is_valid_item_id;
use libfuzzer_sys::fuzz_target;
use top_pick_worker::catalog::{
    is_linkable_category, parse_shop_lines, CatalogItem, ImportBody, ItemError, MAX_TEXT_LEN,
    MAX_URL_LEN,
};
use top_pick_worker::escape::is_safe_url;

fn check_valid(item: &CatalogItem) {
    assert!(is_valid_item_id(&item.id));
    assert!(item.title.len() <= MAX_TEXT_LEN);
    assert!(item.photographer.len() <= MAX_TEXT_LEN);
    assert!(item.category.len() <= MAX_TEXT_LEN);
    assert!(item.image.is_empty() || (is_safe_url(&item.image) && item.image.len() <= MAX_URL_LEN));
    if let Some(u) = &item.source_url {
        assert!(is_safe_url(u) && u.len() <= MAX_URL_LEN);
    }
    // The click link is the id in a path: nothing in it may end the path or the attribute.
    let href = item.top_pick_href("top_pick", None);
    assert!(href.starts_with("/product/") && href.ends_with("/#/?source=top_pick"));
    assert!(!href[9..href.len() - 19].contains(['/', '?', '#', '"', '<', '>', '&', '\'', ' ']));
    let json = serde_json::to_vec(item).expect("serialise");
    let back: CatalogItem = serde_json::from_slice(&json).expect("reparse");
    assert_eq!(&back, item);
}

fuzz_target!(|data: &[u8]| {
    let (category, body) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("flowers".to_string(), data),
    };
    let _ = is_linkable_category(&category);

    if let Ok(text) = std::str::from_utf8(body) {
        match parse_shop_lines(text, &category) {
            Ok(items) => {
                let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
                assert_eq!(items.len(), lines, "one item per non-blank line");
                for item in &items {
                    assert_eq!(item.category, category);
                    item.validate().expect("parsed items validate");
                    check_valid(item);
                }
            }
            Err(ItemError::BadLine { line, .. }) => {
                assert!(line >= 1 && line <= text.lines().count());
            }
            Err(e) => panic!("the shop parser answers BadLine, not {e:?}"),
        }
    }

    if let Ok(import) = serde_json::from_slice::<ImportBody>(body) {
        for item in &import.items {
            if item.validate().is_ok() {
                check_valid(item);
            }
        }
    }
    if let Ok(item) = serde_json::from_slice::<CatalogItem>(body) {
        if item.validate().is_ok() {
            check_valid(&item);
        }
    }
});
