//! HTML output: the picks written into the homepage's slot elements, and the product and
//! category pages filled from one template (both located once per template by
//! `template.rs`, so a page is concatenation).

use bandit::decision::{DecisionLog, ServedBy};

use crate::catalog::{is_linkable_category, CatalogItem};
use crate::escape::{html, is_safe_url, js_string};
use crate::template::{Fill, Selector, Template};

/// An `<img>` of the item when it has a safe image URL.
fn push_image(out: &mut String, class: &str, item: &CatalogItem, alt: &str) {
    if !item.image.is_empty() && is_safe_url(&item.image) {
        out.push_str("<img class=\"");
        out.push_str(class);
        out.push_str("\" src=\"");
        out.push_str(&html(&item.image));
        out.push_str("\" alt=\"");
        out.push_str(alt);
        out.push_str("\" decoding=\"async\">");
    }
}

/// "Photo by …" in a `tag` element, when the photographer is known.
fn push_byline(out: &mut String, tag: &str, class: &str, item: &CatalogItem) {
    if !item.photographer.is_empty() {
        out.push_str(&format!("<{tag} class=\"{class}\">Photo by "));
        out.push_str(&html(&item.photographer));
        out.push_str(&format!("</{tag}>"));
    }
}

/// How a pick is marked for Divolte: the `source` its impression and click carry (which slot
/// the bridge credits), whether an operator's pin chose it, and the decision's log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PickMark<'a> {
    /// The slot's source value (`top_pick` for the first slot).
    pub source: &'a str,
    /// Whether the item is pinned rather than sampled.
    pub pinned: bool,
    /// The decision (none for the configured fallback).
    pub decision: Option<&'a DecisionLog>,
}

/// The markup that fills the slot: a link to the product page marked as a top-pick click, the
/// photo, title and photographer, and the guarded Divolte impression signal (a script the
/// page's Content-Security-Policy admits by `nonce`).
pub fn pick_fragment(item: &CatalogItem, nonce: &str, mark: &PickMark) -> String {
    let id = html(&item.id);
    let title = html(&item.title);
    let mut out = String::with_capacity(512 + item.title.len() * 2);
    out.push_str("<a class=\"top-pick__link\" href=\"");
    out.push_str(&html(&item.top_pick_href(mark.source, mark.decision)));
    out.push_str("\" data-product-id=\"");
    out.push_str(&id);
    out.push_str("\">");
    push_image(&mut out, "top-pick__image", item, &title);
    out.push_str("<span class=\"top-pick__title\">");
    out.push_str(&title);
    out.push_str("</span>");
    push_byline(&mut out, "span", "top-pick__by", item);
    out.push_str("</a>");
    // Divolte's tag may load after this script (it is usually async), so retry on load; the
    // page must work when it never loads at all.
    out.push_str("<script nonce=\"");
    out.push_str(&html(nonce));
    out.push_str("\">(function(p){function s(){var d=window.divolte;if(d&&typeof d.signal==='function'){d.signal('impression',p);return true}return false}if(!s()){window.addEventListener('load',s)}})({source:");
    out.push_str(&js_string(mark.source));
    out.push_str(",productId:");
    out.push_str(&js_string(&item.id));
    if mark.pinned {
        out.push_str(",pinned:true");
    }
    if let Some(d) = mark.decision {
        for (name, value) in d.params() {
            // Names are the module's own identifiers; values are digits, hex and segment
            // names, quoted anyway.
            out.push(',');
            out.push_str(name);
            out.push(':');
            out.push_str(&js_string(&value));
        }
    }
    out.push_str("});</script>");
    out
}

/// What to do with the slot element.
#[derive(Debug, Clone)]
pub enum SlotFill {
    /// Render this pick.
    Pick {
        /// The fragment from [`pick_fragment`].
        fragment: String,
        /// Item id (also set as `data-top-pick-item` on the slot element).
        item: String,
        /// Round number (set as `data-top-pick-epoch`).
        epoch: u64,
        /// An operator's pin chose it (set as `data-top-pick-pinned`).
        pinned: bool,
        /// The decision (its id set as `data-top-pick-decision`, and
        /// `data-top-pick-holdout` when the holdout served it).
        decision: Option<DecisionLog>,
    },
    /// Leave the slot as the page has it.
    Leave,
}

impl SlotFill {
    /// For a pick: the attributes its slot element gains, in order, and the new content.
    fn marks(&self) -> Option<(Vec<(&'static str, String)>, &str)> {
        let SlotFill::Pick {
            fragment,
            item,
            epoch,
            pinned,
            decision,
        } = self
        else {
            return None;
        };
        let mut attributes = vec![
            ("data-top-pick-item", item.clone()),
            ("data-top-pick-epoch", epoch.to_string()),
        ];
        if *pinned {
            attributes.push(("data-top-pick-pinned", "true".to_string()));
        }
        if let Some(d) = decision {
            attributes.push(("data-top-pick-decision", d.id.to_string()));
            if d.served_by == ServedBy::Holdout {
                attributes.push(("data-top-pick-holdout", "true".to_string()));
            }
        }
        Some((attributes, fragment))
    }
}

/// An error from filling a template.
#[derive(Debug, thiserror::Error)]
#[error("page fill failed: {0}")]
pub struct RewriteError(String);

/// The attribute marking a slot's element.
pub const SLOT_ATTRIBUTE: &str = "data-top-pick";

/// A homepage with its slot elements located: `slots` are the configured slots in order; the
/// ones the page marks are its places.
pub fn home_template(page: &[u8], slots: &[String]) -> Result<Template<String>, RewriteError> {
    let page = String::from_utf8(page.to_vec()).map_err(|e| RewriteError(e.to_string()))?;
    Ok(Template::new(
        page,
        slots
            .iter()
            .map(|s| (s.clone(), Selector::Attr(SLOT_ATTRIBUTE, Some(s.as_str())))),
    ))
}

/// The homepage with each slot of `fills` written into its element (the first element of
/// that slot; `Leave` keeps it as the page has it).
pub fn render_home(template: &Template<String>, fills: &[(String, SlotFill)]) -> Vec<u8> {
    let written: Vec<(String, String, &str)> = fills
        .iter()
        .filter_map(|(slot, fill)| {
            let (attributes, content) = fill.marks()?;
            let attributes = attributes
                .iter()
                .map(|(name, value)| format!(" {name}=\"{}\"", html(value)))
                .collect();
            Some((slot.clone(), attributes, content))
        })
        .collect();
    let fills: Vec<(String, Fill)> = written
        .iter()
        .map(|(slot, attributes, content)| {
            (
                slot.clone(),
                Fill {
                    attributes,
                    content,
                },
            )
        })
        .collect();
    template.render(&fills).into_bytes()
}

/// Rewrites a whole page held in memory (locating its slots on every call: the worker keeps
/// the located template instead, see [`home_template`]).
pub fn rewrite_page(page: &[u8], fills: Vec<(String, SlotFill)>) -> Result<Vec<u8>, RewriteError> {
    let slots: Vec<String> = fills.iter().map(|(s, _)| s.clone()).collect();
    let template = home_template(page, &slots)?;
    Ok(render_home(&template, &fills))
}

/// One slot's fill as the runtime's HTML rewriter applies it to an origin's page
/// (`js/fill_slots.js`): the selector, the attributes and the content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OriginFill {
    /// CSS selector of the slot element.
    pub selector: String,
    /// Attributes to set, in order.
    pub attributes: Vec<(String, String)>,
    /// The new content (HTML).
    pub content: String,
}

/// The fills of an origin's page, for the runtime's rewriter.
pub fn origin_fills(fills: &[(String, SlotFill)]) -> Vec<OriginFill> {
    fills
        .iter()
        .filter_map(|(slot, fill)| {
            let (attributes, content) = fill.marks()?;
            // Slot names are [a-z0-9-] (config::is_valid_slot): safe inside the quotes.
            Some(OriginFill {
                selector: format!("[{SLOT_ATTRIBUTE}=\"{slot}\"]"),
                attributes: attributes
                    .into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect(),
                content: content.to_string(),
            })
        })
        .collect()
}

/// Fills the page template (`www/page.html`): its `data-page` element becomes a `kind` element
/// (class and `data-{kind}` = `key`) holding `body`, and the title names the page.
fn fill_page(
    template: &[u8],
    kind: &str,
    key: &str,
    title: &str,
    body: &str,
) -> Result<Vec<u8>, RewriteError> {
    let template = String::from_utf8(template.to_vec()).map_err(|e| RewriteError(e.to_string()))?;
    let located = Template::new(
        template,
        [
            ("title", Selector::Tag("title")),
            ("page", Selector::Attr("data-page", None)),
        ],
    );
    let title_text = format!("{title} · Photon Prints");
    let page_tag = located
        .place(&"page")
        .map(|e| e.tag.clone())
        .ok_or_else(|| RewriteError("the page template has no [data-page] element".into()))?;
    let start = format!(
        "<{page_tag} class=\"{kind}\" data-{kind}=\"{}\">",
        html(key)
    );
    Ok(located
        .replace(&[("title", "<title>", &title_text), ("page", &start, body)])
        .into_bytes())
}

/// The product page of an item.
pub fn product_page(template: &[u8], item: &CatalogItem) -> Result<Vec<u8>, RewriteError> {
    let title = html(&item.title).into_owned();
    let mut body = String::with_capacity(1024);
    push_image(&mut body, "product__image", item, &title);
    body.push_str("<h1 class=\"product__title\">");
    body.push_str(&title);
    body.push_str("</h1>");
    push_byline(&mut body, "p", "product__by", item);
    if is_linkable_category(&item.category) {
        body.push_str("<p class=\"product__category\">In <a href=\"/category/");
        body.push_str(&item.category);
        body.push_str("/\">");
        body.push_str(&item.category);
        body.push_str("</a></p>");
    } else if !item.category.is_empty() {
        body.push_str("<p class=\"product__category\">In <span>");
        body.push_str(&html(&item.category));
        body.push_str("</span></p>");
    }
    if let Some(src) = item.source_url.as_deref().filter(|u| is_safe_url(u)) {
        body.push_str("<p class=\"product__source\"><a rel=\"noopener\" href=\"");
        body.push_str(&html(src));
        body.push_str("\">Original photo</a></p>");
    }
    fill_page(template, "product", &item.id, &title, &body)
}

/// A category page: a grid of the items, each linking to its product page.
pub fn category_page(
    template: &[u8],
    name: &str,
    items: &[CatalogItem],
) -> Result<Vec<u8>, RewriteError> {
    let heading = html(name).into_owned();
    let mut body = format!("<h1 class=\"category__title\">{heading}</h1><ul class=\"grid\">");
    for item in items {
        let title = html(&item.title).into_owned();
        body.push_str("<li class=\"card\"><a href=\"/product/");
        body.push_str(&item.id);
        body.push_str("/\">");
        push_image(&mut body, "card__image", item, &title);
        body.push_str("<span class=\"card__title\">");
        body.push_str(&title);
        body.push_str("</span></a></li>");
    }
    body.push_str("</ul>");
    fill_page(template, "category", name, &heading, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(title: &str) -> CatalogItem {
        CatalogItem {
            id: "42".into(),
            title: title.into(),
            image: "/images/42.svg".into(),
            photographer: "Ann \"A\" <B>".into(),
            category: "flowers".into(),
            source_url: None,
            available: true,
        }
    }

    const PAGE: &str = r#"<html><body><h1>Shop</h1><section data-top-pick="home-top-pick"><p>placeholder</p></section><div data-top-pick="other">x</div></body></html>"#;

    const FIRST: PickMark = PickMark {
        source: "top_pick",
        pinned: false,
        decision: None,
    };

    fn pick(it: &CatalogItem, mark: &PickMark, epoch: u64) -> SlotFill {
        SlotFill::Pick {
            fragment: pick_fragment(it, "n0nce", mark),
            item: it.id.clone(),
            epoch,
            pinned: mark.pinned,
            decision: mark.decision.cloned(),
        }
    }

    #[test]
    fn a_decision_reaches_the_signal_the_link_and_the_slot_element() {
        use bandit::decision::{DecisionId, ServedBy};
        let it = item("Tulips");
        let log = DecisionLog {
            id: DecisionId {
                time_ms: 1_764_300_000_000,
                random: 0xabc,
            },
            probability: 0.25,
            round: 3,
            set: 0,
            version: 17,
            arms: 8,
            served_by: ServedBy::Holdout,
            segment: None,
        };
        let id = log.id.to_string();
        let mark = PickMark {
            decision: Some(&log),
            ..FIRST
        };
        let out = rewrite_page(PAGE.as_bytes(), one("home-top-pick", pick(&it, &mark, 3)));
        let out = String::from_utf8(out.unwrap()).unwrap();
        assert!(out.contains(&format!(
            r#"href="/product/42/#/?source=top_pick&amp;decision={id}&amp;holdout=true""#
        )));
        assert!(out.contains(&format!(
            "{{source:\"top_pick\",productId:\"42\",decision:\"{id}\",probability:\"2.5e-1\",round:\"3\",version:\"17\",arms:\"8\",holdout:\"true\"}}"
        )), "{out}");
        assert!(out.contains(&format!(
            r#"data-top-pick-decision="{id}" data-top-pick-holdout="true""#
        )));
    }

    fn one(slot: &str, fill: SlotFill) -> Vec<(String, SlotFill)> {
        vec![(slot.to_string(), fill)]
    }

    #[test]
    fn fills_only_the_named_slot() {
        let it = item("Tulips");
        let out = rewrite_page(PAGE.as_bytes(), one("home-top-pick", pick(&it, &FIRST, 3)));
        let out = String::from_utf8(out.unwrap()).unwrap();
        assert!(out.contains(r#"data-top-pick-item="42""#));
        assert!(out.contains(r#"data-top-pick-epoch="3""#));
        assert!(out.contains(r#"href="/product/42/#/?source=top_pick""#));
        assert!(out.contains("{source:\"top_pick\",productId:\"42\"}"));
        assert!(!out.contains("pinned"));
        assert!(!out.contains("placeholder"));
        assert!(out.contains(r#"<div data-top-pick="other">x</div>"#));
    }

    #[test]
    fn fills_several_slots_each_with_its_own_source_and_marks_pins() {
        let a = item("Tulips");
        let b = CatalogItem {
            id: "43".into(),
            ..item("Roses")
        };
        let side = PickMark {
            source: "other",
            pinned: true,
            decision: None,
        };
        let fills = vec![
            ("home-top-pick".to_string(), pick(&a, &FIRST, 3)),
            ("other".to_string(), pick(&b, &side, 7)),
        ];
        let out = String::from_utf8(rewrite_page(PAGE.as_bytes(), fills).unwrap()).unwrap();
        assert!(out.contains(r#"href="/product/42/#/?source=top_pick""#));
        assert!(out.contains(r#"<div data-top-pick="other" data-top-pick-item="43" data-top-pick-epoch="7" data-top-pick-pinned="true">"#));
        assert!(out.contains(r#"href="/product/43/#/?source=other""#));
        assert!(out.contains("{source:\"other\",productId:\"43\",pinned:true}"));
        assert!(!out.contains(">x</div>"));
    }

    #[test]
    fn leave_keeps_the_page() {
        let out = rewrite_page(PAGE.as_bytes(), one("home-top-pick", SlotFill::Leave)).unwrap();
        assert_eq!(out, PAGE.as_bytes());
    }

    #[test]
    fn hostile_titles_are_escaped() {
        let it = item("</script><script>alert('x')</script>\" onerror=\"x");
        let frag = pick_fragment(&it, "n0nce", &FIRST);
        assert!(!frag.contains("<script>alert"));
        assert!(!frag.contains("\" onerror"));
        assert!(frag.contains("&lt;/script&gt;"));
        assert!(frag.contains("Ann &quot;A&quot; &lt;B&gt;"));
    }

    #[test]
    fn a_located_template_renders_like_a_fresh_rewrite_and_origin_fills_match() {
        let it = item("Tulips");
        let fills = one("home-top-pick", pick(&it, &FIRST, 1));
        let slots = vec!["home-top-pick".to_string(), "other".to_string()];
        let t = home_template(PAGE.as_bytes(), &slots).unwrap();
        assert_eq!(t.keys().count(), 2);
        let whole = rewrite_page(PAGE.as_bytes(), fills.clone()).unwrap();
        assert_eq!(render_home(&t, &fills), whole);
        let origin = origin_fills(&fills);
        assert_eq!(origin.len(), 1);
        assert_eq!(origin[0].selector, r#"[data-top-pick="home-top-pick"]"#);
        assert_eq!(
            origin[0].attributes,
            [
                ("data-top-pick-item".to_string(), "42".to_string()),
                ("data-top-pick-epoch".to_string(), "1".to_string())
            ]
        );
        assert!(origin_fills(&one("home-top-pick", SlotFill::Leave)).is_empty());
    }

    #[test]
    fn category_page_lists_items_escaped() {
        let tpl =
            br#"<html><head><title>x</title></head><body><main data-page></main></body></html>"#;
        let items = [
            item("Tulips <b>"),
            CatalogItem {
                id: "43".into(),
                ..item("Roses")
            },
        ];
        let out = String::from_utf8(category_page(tpl, "flowers", &items).unwrap()).unwrap();
        assert!(out.contains(r#"data-category="flowers""#));
        assert_eq!(out.matches("<li class=\"card\">").count(), 2);
        assert!(out.contains(r#"href="/product/43/""#));
        assert!(out.contains("Tulips &lt;b&gt;"));
        assert!(out.contains("<title>flowers · Photon Prints</title>"));
    }

    #[test]
    fn product_page_fills_the_template() {
        let tpl =
            br#"<html><head><title>x</title></head><body><main data-page></main></body></html>"#;
        let out = String::from_utf8(product_page(tpl, &item("Tulips <b>")).unwrap()).unwrap();
        assert!(out.contains(r#"data-product="42""#));
        assert!(out.contains("Tulips &lt;b&gt;"));
        assert!(out.contains("<title>Tulips &lt;b&gt; · Photon Prints</title>"));
    }
}
