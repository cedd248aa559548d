//! HTML output: the top pick rewritten into the homepage's slot element (lol_html), and the
//! product and category pages filled from one template.

use std::cell::RefCell;
use std::rc::Rc;

use lol_html::html_content::ContentType;
use lol_html::{element, HtmlRewriter, Settings};

use crate::catalog::{is_linkable_category, CatalogItem};
use crate::escape::{html, is_safe_url, js_string};

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
/// the bridge credits), and whether an operator's pin chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickMark<'a> {
    /// The slot's source value (`top_pick` for the first slot).
    pub source: &'a str,
    /// Whether the item is pinned rather than sampled.
    pub pinned: bool,
}

/// The markup that fills the slot: a link to the product page marked as a top-pick click, the
/// photo, title and photographer, and the guarded Divolte impression signal (a script the
/// page's Content-Security-Policy admits by `nonce`).
pub fn pick_fragment(item: &CatalogItem, nonce: &str, mark: &PickMark) -> String {
    let id = html(&item.id);
    let title = html(&item.title);
    let mut out = String::with_capacity(512 + item.title.len() * 2);
    out.push_str("<a class=\"top-pick__link\" href=\"");
    out.push_str(&html(&item.top_pick_href(mark.source)));
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
    },
    /// Leave the slot as the page has it.
    Leave,
}

/// An error from the HTML rewriter.
#[derive(Debug, thiserror::Error)]
#[error("HTML rewrite failed: {0}")]
pub struct RewriteError(String);

/// The function the rewriter hands its output to.
type OutputFn = Box<dyn FnMut(&[u8])>;

/// A streaming homepage rewriter: feed chunks, collect output.
pub struct HomepageRewriter {
    rewriter: HtmlRewriter<'static, OutputFn>,
    output: Rc<RefCell<Vec<u8>>>,
}

impl HomepageRewriter {
    /// A rewriter that fills, for each `(slot, fill)`, the first element marked
    /// `data-top-pick="{slot}"`.
    pub fn new(fills: Vec<(String, SlotFill)>) -> HomepageRewriter {
        let output = Rc::new(RefCell::new(Vec::with_capacity(16 * 1024)));
        let buf = Rc::clone(&output);
        let collect: OutputFn = Box::new(move |c: &[u8]| buf.borrow_mut().extend_from_slice(c));
        let handlers = fills
            .into_iter()
            .map(|(slot, fill)| {
                // Slot names are restricted to [a-z0-9-] (config::is_valid_slot), so they are
                // safe inside the selector's quotes.
                let selector = format!("[data-top-pick=\"{slot}\"]");
                let mut done = false;
                element!(selector, move |el| {
                    if done {
                        return Ok(());
                    }
                    done = true;
                    if let SlotFill::Pick {
                        fragment,
                        item,
                        epoch,
                        pinned,
                    } = &fill
                    {
                        el.set_attribute("data-top-pick-item", item)?;
                        el.set_attribute("data-top-pick-epoch", &epoch.to_string())?;
                        if *pinned {
                            el.set_attribute("data-top-pick-pinned", "true")?;
                        }
                        el.set_inner_content(fragment, ContentType::Html);
                    }
                    Ok(())
                })
            })
            .collect();
        let rewriter = HtmlRewriter::new(
            Settings {
                element_content_handlers: handlers,
                ..Settings::new()
            },
            collect,
        );
        HomepageRewriter { rewriter, output }
    }

    /// Rewrites one chunk; returns the output produced so far.
    pub fn write(&mut self, chunk: &[u8]) -> Result<Vec<u8>, RewriteError> {
        self.rewriter
            .write(chunk)
            .map_err(|e| RewriteError(e.to_string()))?;
        Ok(std::mem::take(&mut *self.output.borrow_mut()))
    }

    /// Finishes the document; returns the remaining output.
    pub fn end(self) -> Result<Vec<u8>, RewriteError> {
        let output = Rc::clone(&self.output);
        self.rewriter
            .end()
            .map_err(|e| RewriteError(e.to_string()))?;
        let rest = std::mem::take(&mut *output.borrow_mut());
        Ok(rest)
    }
}

/// Rewrites a whole page held in memory.
pub fn rewrite_page(page: &[u8], fills: Vec<(String, SlotFill)>) -> Result<Vec<u8>, RewriteError> {
    let mut rw = HomepageRewriter::new(fills);
    let mut out = rw.write(page)?;
    out.extend(rw.end()?);
    Ok(out)
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
    let template = std::str::from_utf8(template).map_err(|e| RewriteError(e.to_string()))?;
    let title_text = format!("{title} · Photon Prints");
    let page = lol_html::rewrite_str(
        template,
        lol_html::RewriteStrSettings {
            element_content_handlers: vec![
                element!("[data-page]", |el| {
                    el.remove_attribute("data-page");
                    el.set_attribute("class", kind)?;
                    el.set_attribute(&format!("data-{kind}"), key)?;
                    el.set_inner_content(body, ContentType::Html);
                    Ok(())
                }),
                element!("title", |el| {
                    el.set_inner_content(&title_text, ContentType::Html);
                    Ok(())
                }),
            ],
            ..lol_html::RewriteStrSettings::new()
        },
    )
    .map_err(|e| RewriteError(e.to_string()))?;
    Ok(page.into_bytes())
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
    };

    fn pick(it: &CatalogItem, mark: &PickMark, epoch: u64) -> SlotFill {
        SlotFill::Pick {
            fragment: pick_fragment(it, "n0nce", mark),
            item: it.id.clone(),
            epoch,
            pinned: mark.pinned,
        }
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
    fn streaming_in_small_chunks_gives_the_same_page() {
        let it = item("Tulips");
        let fill = pick(&it, &FIRST, 1);
        let whole = rewrite_page(PAGE.as_bytes(), one("home-top-pick", fill.clone())).unwrap();
        let mut rw = HomepageRewriter::new(one("home-top-pick", fill));
        let mut out = Vec::new();
        for chunk in PAGE.as_bytes().chunks(7) {
            out.extend(rw.write(chunk).unwrap());
        }
        out.extend(rw.end().unwrap());
        assert_eq!(out, whole);
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
