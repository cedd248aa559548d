//! The pages with hostile catalog strings: `pick_fragment` + `rewrite_page` into the real
//! homepage (`www/index.html`), and `product_page` / `category_page` into the real page
//! template (`www/page.html`).
//!
//! Input: fields separated by 0xFF (never part of UTF-8): control byte, id, title,
//! photographer, category, image, source URL, nonce, slot, second title. Control bits: 0 makes
//! the id valid, 1 makes the URLs pass `is_safe_url` (keeping any quotes or brackets in them),
//! 2-3 pick the page (home, product, category), 4 uses the slot field, 5 sets a source URL.
//!
//! Invariants: nothing panics, whatever the item; for an item that passes `validate()` (and
//! a base64 nonce, a valid slot, a linkable category, as the worker guarantees), the title is
//! escaped, the homepage fill has exactly one `<script` and it is the nonce-d one whose text
//! is the expected call (nothing ends it early), and every page has exactly the elements the
//! template and the item account for, with no event-handler attributes and no `javascript:`
//! links.
#![no_main]

use std::cell::RefCell;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use lol_html::{element, text, RewriteStrSettings};
use top_pick_worker::catalog::{is_linkable_category, CatalogItem};
use top_pick_worker::config::is_valid_slot;
use top_pick_worker::escape::{html, is_safe_url, js_string};
use top_pick_worker::render::{
    category_page, pick_fragment, product_page, rewrite_page, PickMark, SlotFill,
};

const INDEX: &[u8] = include_bytes!("../../www/index.html");
const PAGE: &[u8] = include_bytes!("../../www/page.html");
const HOME_SLOT: &str = "home-top-pick";

/// What a page holds, read back by an HTML parser.
#[derive(Debug, Default, Clone)]
struct Parsed {
    elements: usize,
    scripts: Vec<(Option<String>, String)>,
    handler_attributes: Vec<String>,
    script_links: Vec<String>,
    title: String,
    slot_item: Option<String>,
}

fn parse(page: &[u8]) -> Parsed {
    let text = std::str::from_utf8(page).expect("pages are UTF-8");
    let out = Rc::new(RefCell::new(Parsed::default()));
    let (o1, o2, o3) = (out.clone(), out.clone(), out.clone());
    lol_html::rewrite_str(
        text,
        RewriteStrSettings {
            element_content_handlers: vec![
                element!("*", move |el| {
                    let mut p = o1.borrow_mut();
                    p.elements += 1;
                    for a in el.attributes() {
                        let name = a.name();
                        if name.starts_with("on") {
                            p.handler_attributes.push(name.clone());
                        }
                        let v = a.value().trim().to_ascii_lowercase();
                        if (name == "href" || name == "src") && !v.starts_with("http") {
                            if !v.starts_with('/') && !v.starts_with('#') {
                                p.script_links.push(v);
                            }
                        }
                    }
                    if el.tag_name() == "script" {
                        p.scripts.push((el.get_attribute("nonce"), String::new()));
                    }
                    if el.get_attribute("data-top-pick").as_deref() == Some(HOME_SLOT) {
                        p.slot_item = el.get_attribute("data-top-pick-item");
                    }
                    Ok(())
                }),
                text!("script", move |t| {
                    if let Some(s) = o2.borrow_mut().scripts.last_mut() {
                        s.1.push_str(t.as_str());
                    }
                    Ok(())
                }),
                text!("title", move |t| {
                    o3.borrow_mut().title.push_str(t.as_str());
                    Ok(())
                }),
            ],
            ..RewriteStrSettings::new()
        },
    )
    .expect("the output parses");
    Rc::try_unwrap(out).expect("handlers dropped").into_inner()
}

thread_local! {
    static TEMPLATES: (Parsed, Parsed) = (parse(INDEX), parse(PAGE));
}

fn field(fields: &[&[u8]], i: usize) -> String {
    fields
        .get(i)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .unwrap_or_default()
}

fn make_valid_url(u: String) -> String {
    let u: String = u
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .collect();
    if is_safe_url(&u) {
        u
    } else {
        format!("https://x.test/{u}")
    }
}

fn base64ish(s: &str) -> String {
    let n: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        .take(64)
        .collect();
    if n.is_empty() {
        "n0nce".into()
    } else {
        n
    }
}

fn count_ci(hay: &str, needle: &str) -> usize {
    hay.to_ascii_lowercase().matches(needle).count()
}

fn no_active_content(p: &Parsed) {
    assert!(
        p.handler_attributes.is_empty(),
        "{:?}",
        p.handler_attributes
    );
    assert!(p.script_links.is_empty(), "{:?}", p.script_links);
}

const MARK: PickMark = PickMark {
    source: "top_pick",
    pinned: false,
    decision: None,
};

fn check_home(item: &CatalogItem, nonce: &str, slot: &str, checked: bool) {
    let fragment = pick_fragment(item, nonce, &MARK);
    let fill = SlotFill::Pick {
        fragment: fragment.clone(),
        item: item.id.clone(),
        epoch: 7,
        pinned: false,
        decision: None,
    };
    let out = rewrite_page(INDEX, vec![(slot.to_string(), fill)]).expect("rewrite");
    if !checked {
        return;
    }
    if slot != HOME_SLOT {
        assert_eq!(
            out, INDEX,
            "no element of slot {slot}: the page is unchanged"
        );
        return;
    }
    // The title as it is written: no markup or quote survives.
    assert!(!html(&item.title).contains(['<', '>', '"', '\'']));
    // One script in the fill, the nonce-d one, ended only by its own end tag.
    assert_eq!(count_ci(&fragment, "<script"), 1, "{fragment}");
    let open = format!("<script nonce=\"{nonce}\">");
    let start = fragment.find(&open).expect("the nonce-d script") + open.len();
    assert_eq!(count_ci(&fragment[start..], "</script"), 1);
    assert!(fragment.ends_with("</script>"));
    assert_eq!(count_ci(&fragment[start..], "<!--"), 0);

    let home = TEMPLATES.with(|t| t.0.clone());
    let p = parse(&out);
    no_active_content(&p);
    let expected_script = format!(
        "(function(p){{function s(){{var d=window.divolte;if(d&&typeof d.signal==='function'){{d.signal('impression',p);return true}}return false}}if(!s()){{window.addEventListener('load',s)}}}})({{source:\"top_pick\",productId:{}}});",
        js_string(&item.id)
    );
    assert_eq!(p.scripts.len(), home.scripts.len() + 1);
    let (n, body) = p.scripts.last().expect("one script");
    assert_eq!(n.as_deref(), Some(nonce));
    assert_eq!(body, &expected_script);
    assert_eq!(p.slot_item.as_deref(), Some(item.id.as_str()));
    // Link, title span, script, the photo and the byline when present, in place of the
    // template's placeholder paragraph.
    let has_img = !item.image.is_empty() && is_safe_url(&item.image);
    let has_by = !item.photographer.is_empty();
    let fill_elements = 3 + usize::from(has_img) + usize::from(has_by);
    assert_eq!(p.elements, home.elements - 1 + fill_elements, "{fragment}");
}

fn check_product(item: &CatalogItem, checked: bool) {
    let out = product_page(PAGE, item).expect("product page");
    if !checked {
        return;
    }
    let page = TEMPLATES.with(|t| t.1.clone());
    let p = parse(&out);
    no_active_content(&p);
    assert!(p.scripts.is_empty());
    assert_eq!(p.title, format!("{} · Photon Prints", html(&item.title)));
    let has_img = !item.image.is_empty() && is_safe_url(&item.image);
    let has_by = !item.photographer.is_empty();
    let category = if item.category.is_empty() { 0 } else { 2 };
    let source = match &item.source_url {
        Some(u) if is_safe_url(u) => 2,
        _ => 0,
    };
    let body = 1 + usize::from(has_img) + usize::from(has_by) + category + source;
    // The template's placeholder paragraph gives way to the body.
    assert_eq!(p.elements, page.elements - 1 + body);
}

fn check_category(name: &str, items: &[CatalogItem], checked: bool) {
    let out = category_page(PAGE, name, items).expect("category page");
    if !checked {
        return;
    }
    let page = TEMPLATES.with(|t| t.1.clone());
    let p = parse(&out);
    no_active_content(&p);
    assert!(p.scripts.is_empty());
    assert_eq!(p.title, format!("{} · Photon Prints", html(name)));
    let cards: usize = items
        .iter()
        .map(|i| 3 + usize::from(!i.image.is_empty() && is_safe_url(&i.image)))
        .sum();
    assert_eq!(p.elements, page.elements - 1 + 2 + cards);
}

fuzz_target!(|data: &[u8]| {
    let fields: Vec<&[u8]> = data.split(|&b| b == 0xff).collect();
    let ctl = fields.first().and_then(|f| f.first()).copied().unwrap_or(0);
    let mut id = field(&fields, 1);
    if ctl & 1 != 0 {
        id = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'))
            .take(128)
            .collect();
        if id.is_empty() || id == "." || id == ".." {
            id = "42".into();
        }
    }
    let (mut image, mut source) = (field(&fields, 5), field(&fields, 6));
    if ctl & 2 != 0 {
        image = make_valid_url(image);
        source = make_valid_url(source);
    }
    let item = CatalogItem {
        id,
        title: field(&fields, 2),
        image,
        photographer: field(&fields, 3),
        category: field(&fields, 4),
        source_url: (ctl & 32 != 0).then_some(source),
        available: ctl & 64 == 0,
    };
    let raw_nonce = field(&fields, 7);
    let nonce = base64ish(&raw_nonce);
    let raw_slot = field(&fields, 8);
    let slot = if ctl & 16 != 0 && is_valid_slot(&raw_slot) {
        raw_slot
    } else {
        HOME_SLOT.to_string()
    };
    let valid = item.validate().is_ok();
    match (ctl >> 2) & 3 {
        0 => {
            check_home(&item, &nonce, &slot, valid);
            // Whatever the nonce, the fragment is built without panicking.
            let _ = pick_fragment(&item, &raw_nonce, &MARK);
        }
        1 => check_product(&item, valid),
        _ => {
            let second = CatalogItem {
                id: format!("{}-2", item.id),
                title: field(&fields, 9),
                ..item.clone()
            };
            let items = [item, second];
            let name = items[0].category.clone();
            let checked = items.iter().all(|i| i.validate().is_ok()) && is_linkable_category(&name);
            check_category(&name, &items, checked);
        }
    }
});
