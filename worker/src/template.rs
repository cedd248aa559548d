//! The worker's own page templates (`www/`), located once per isolate where the worker writes
//! into them, so serving a page is concatenation: no HTML parser on the request path.
//!
//! The scanner reads the HTML tokenizer's grammar far enough for trusted templates: start and
//! end tags with quoted or bare attributes, comments, doctypes, and raw-text elements (script,
//! style, textarea, title) whose content is not markup. Pages from elsewhere (`ORIGIN_URL`)
//! go through the runtime's own HTML rewriter instead.

use std::ops::Range;

/// Elements that never have content.
const VOID: [&str; 14] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr", "param",
];
/// Elements whose content is text up to their end tag.
const RAW_TEXT: [&str; 4] = ["script", "style", "textarea", "title"];

/// One element of a template: where its start tag can take more attributes and where its
/// content lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Tag name, lower case.
    pub tag: String,
    /// The whole start tag.
    pub start_tag: Range<usize>,
    /// Where attributes can be inserted: before the start tag's `>` (or `/>`).
    pub attributes_end: usize,
    /// The content between the start and the end tag (empty for a void element).
    pub content: Range<usize>,
}

#[derive(Debug)]
enum Token<'a> {
    Start {
        name: String,
        attrs: Vec<(String, &'a str)>,
        range: Range<usize>,
        attributes_end: usize,
    },
    End {
        name: String,
        range: Range<usize>,
    },
}

/// A start tag's attributes, where more could be inserted, and where the tag ends.
type StartTagRest<'a> = (Vec<(String, &'a str)>, usize, usize);

/// The tags of a document, in order.
struct Tokens<'a> {
    html: &'a str,
    pos: usize,
    /// Inside a raw-text element: its name (the next token is its end tag).
    raw: Option<String>,
}

fn find_from(html: &str, from: usize, needle: &str) -> Option<usize> {
    html.get(from..)?.find(needle).map(|i| from + i)
}

/// Position of `</name` (ASCII case-insensitive) at or after `from`.
fn find_end_tag(html: &str, from: usize, name: &str) -> Option<usize> {
    let bytes = html.as_bytes();
    let mut at = from;
    while let Some(lt) = find_from(html, at, "</") {
        let tail = &bytes[lt + 2..];
        if tail.len() >= name.len() && tail[..name.len()].eq_ignore_ascii_case(name.as_bytes()) {
            return Some(lt);
        }
        at = lt + 2;
    }
    None
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

impl<'a> Tokens<'a> {
    fn new(html: &'a str) -> Self {
        Tokens {
            html,
            pos: 0,
            raw: None,
        }
    }

    /// The tag name starting at `at`, lower case, and where it ends.
    fn name(&self, at: usize) -> (String, usize) {
        let bytes = self.html.as_bytes();
        let mut end = at;
        while end < bytes.len() && !is_space(bytes[end]) && bytes[end] != b'>' && bytes[end] != b'/'
        {
            end += 1;
        }
        (self.html[at..end].to_ascii_lowercase(), end)
    }

    /// Parses the attributes from `at` to the start tag's end; `None` when the tag never ends.
    fn attributes(&self, mut at: usize) -> Option<StartTagRest<'a>> {
        let html = self.html;
        let bytes = html.as_bytes();
        let mut attrs = Vec::new();
        loop {
            while at < bytes.len() && (is_space(bytes[at]) || bytes[at] == b'/') {
                if bytes[at] == b'/' && bytes.get(at + 1) == Some(&b'>') {
                    return Some((attrs, at, at + 2));
                }
                at += 1;
            }
            if *bytes.get(at)? == b'>' {
                return Some((attrs, at, at + 1));
            }
            let name_start = at;
            while at < bytes.len()
                && !is_space(bytes[at])
                && !matches!(bytes[at], b'/' | b'>' | b'=')
            {
                at += 1;
            }
            let name = html[name_start..at].to_ascii_lowercase();
            while at < bytes.len() && is_space(bytes[at]) {
                at += 1;
            }
            if bytes.get(at) != Some(&b'=') {
                attrs.push((name, ""));
                continue;
            }
            at += 1;
            while at < bytes.len() && is_space(bytes[at]) {
                at += 1;
            }
            let value = match bytes.get(at)? {
                q @ (b'"' | b'\'') => {
                    let close = find_from(html, at + 1, if *q == b'"' { "\"" } else { "'" })?;
                    let v = &html[at + 1..close];
                    at = close + 1;
                    v
                }
                _ => {
                    let start = at;
                    while at < bytes.len() && !is_space(bytes[at]) && bytes[at] != b'>' {
                        at += 1;
                    }
                    &html[start..at]
                }
            };
            attrs.push((name, value));
        }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let html = self.html;
        if let Some(name) = self.raw.take() {
            self.pos = find_end_tag(html, self.pos, &name)?;
        }
        loop {
            let lt = find_from(html, self.pos, "<")?;
            let rest = &html[lt..];
            if rest.starts_with("<!--") {
                self.pos = find_from(html, lt + 4, "-->")? + 3;
                continue;
            }
            if rest.starts_with("<!") || rest.starts_with("<?") {
                self.pos = find_from(html, lt, ">")? + 1;
                continue;
            }
            if let Some(after) = rest.strip_prefix("</") {
                if !after.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    self.pos = lt + 2;
                    continue;
                }
                let (name, _) = self.name(lt + 2);
                let end = find_from(html, lt, ">")? + 1;
                self.pos = end;
                return Some(Token::End {
                    name,
                    range: lt..end,
                });
            }
            if !rest[1..].starts_with(|c: char| c.is_ascii_alphabetic()) {
                self.pos = lt + 1;
                continue;
            }
            let (name, after_name) = self.name(lt + 1);
            let (attrs, attributes_end, end) = self.attributes(after_name)?;
            self.pos = end;
            if RAW_TEXT.contains(&name.as_str()) {
                self.raw = Some(name.clone());
            }
            return Some(Token::Start {
                name,
                attrs,
                range: lt..end,
                attributes_end,
            });
        }
    }
}

/// Which element to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'s> {
    /// The first with this attribute (of this value, when given).
    Attr(&'s str, Option<&'s str>),
    /// The first with this tag name (lower case).
    Tag(&'s str),
}

impl Selector<'_> {
    fn matches(&self, name: &str, attrs: &[(String, &str)]) -> bool {
        match *self {
            Selector::Attr(attr, value) => attrs
                .iter()
                .any(|(n, v)| n == attr && value.is_none_or(|want| *v == want)),
            Selector::Tag(tag) => name == tag,
        }
    }
}

/// The first element `selector` names, with its content up to its matching end tag; `None`
/// when there is none or it never ends.
pub fn find_element(html: &str, selector: Selector) -> Option<Element> {
    let mut tokens = Tokens::new(html);
    let (tag, start_tag, attributes_end) = tokens.by_ref().find_map(|t| match t {
        Token::Start {
            name,
            attrs,
            range,
            attributes_end,
        } if selector.matches(&name, &attrs) => Some((name, range, attributes_end)),
        _ => None,
    })?;
    if VOID.contains(&tag.as_str()) {
        let at = start_tag.end;
        return Some(Element {
            tag,
            start_tag,
            attributes_end,
            content: at..at,
        });
    }
    let mut depth = 1usize;
    for t in tokens {
        match t {
            Token::Start { name, .. } if name == tag => depth += 1,
            Token::End { name, range } if name == tag => {
                depth -= 1;
                if depth == 0 {
                    return Some(Element {
                        content: start_tag.end..range.start,
                        tag,
                        start_tag,
                        attributes_end,
                    });
                }
            }
            _ => {}
        }
    }
    None
}

/// A template with the places the worker writes into, in document order.
#[derive(Debug, Clone)]
pub struct Template<K> {
    html: String,
    places: Vec<(K, Element)>,
}

/// What goes into one place: attributes for its start tag and its new content (`None`: keep
/// the place as the template has it).
pub struct Fill<'a> {
    /// ` name="value"` pairs, already escaped.
    pub attributes: &'a str,
    /// The new content, already escaped.
    pub content: &'a str,
}

impl<K: Clone + PartialEq> Template<K> {
    /// Locates each `(key, selector)` in `html`; places not found, or inside an earlier
    /// place, are left out.
    pub fn new<'v>(html: String, wanted: impl IntoIterator<Item = (K, Selector<'v>)>) -> Self {
        let mut places: Vec<(K, Element)> = wanted
            .into_iter()
            .filter_map(|(k, selector)| find_element(&html, selector).map(|e| (k, e)))
            .collect();
        places.sort_by_key(|(_, e)| e.start_tag.start);
        let mut kept: Vec<(K, Element)> = Vec::with_capacity(places.len());
        for (k, e) in places {
            if kept
                .last()
                .is_none_or(|(_, prev)| e.start_tag.start >= prev.content.end)
            {
                kept.push((k, e));
            }
        }
        Template { html, places: kept }
    }

    /// The keys found, in document order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.places.iter().map(|(k, _)| k)
    }

    /// The element located for `key`.
    pub fn place(&self, key: &K) -> Option<&Element> {
        self.places.iter().find(|(k, _)| k == key).map(|(_, e)| e)
    }

    /// The page with each place of `fills` written (places without a fill stay as they are).
    pub fn render<'f>(&self, fills: &[(K, Fill<'f>)]) -> String {
        let extra: usize = fills
            .iter()
            .map(|(_, f)| f.attributes.len() + f.content.len())
            .sum();
        let mut out = String::with_capacity(self.html.len() + extra);
        let mut at = 0;
        for (key, e) in &self.places {
            let Some((_, fill)) = fills.iter().find(|(k, _)| k == key) else {
                continue;
            };
            out.push_str(&self.html[at..e.attributes_end]);
            out.push_str(fill.attributes);
            out.push_str(&self.html[e.attributes_end..e.content.start]);
            out.push_str(fill.content);
            at = e.content.end;
        }
        out.push_str(&self.html[at..]);
        out
    }

    /// The page with each place's whole start tag replaced by `start_tags` and its content by
    /// `contents` (for pages whose element changes its identity, like the page template's
    /// `data-page` element).
    pub fn replace(&self, fills: &[(K, &str, &str)]) -> String {
        let mut out = String::with_capacity(self.html.len() + 1024);
        let mut at = 0;
        for (key, e) in &self.places {
            let Some((_, start_tag, content)) = fills.iter().find(|(k, _, _)| k == key) else {
                continue;
            };
            out.push_str(&self.html[at..e.start_tag.start]);
            out.push_str(start_tag);
            out.push_str(content);
            at = e.content.end;
        }
        out.push_str(&self.html[at..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_element_with_its_content_across_nesting_comments_and_raw_text() {
        let html = r#"<!doctype html><html><head><title>T <div></title><script>if (a<b) document.write("<div data-x='1'>")</script></head><body><!-- <div data-x="1"> --><div class=a data-x = "1"><div>inner</div><br><p>x</p></div><div data-x="1">second</div></body></html>"#;
        let e = find_element(html, Selector::Attr("data-x", Some("1"))).unwrap();
        assert_eq!(e.tag, "div");
        assert_eq!(&html[e.start_tag.clone()], r#"<div class=a data-x = "1">"#);
        assert_eq!(&html[e.content.clone()], "<div>inner</div><br><p>x</p>");
        assert_eq!(&html[e.attributes_end..e.attributes_end + 1], ">");
        let title = find_element(html, Selector::Tag("title")).unwrap();
        assert_eq!(&html[title.content.clone()], "T <div>");
    }

    #[test]
    fn values_and_case_are_matched_exactly_as_html_reads_them() {
        let html = "<DIV Data-Top-Pick='home'>a</DIV><div data-top-pick=side>b</div>";
        let e = find_element(html, Selector::Attr("data-top-pick", Some("home"))).unwrap();
        assert_eq!(&html[e.content.clone()], "a");
        let e = find_element(html, Selector::Attr("data-top-pick", Some("side"))).unwrap();
        assert_eq!(&html[e.content.clone()], "b");
        assert!(find_element(html, Selector::Attr("data-top-pick", Some("hom"))).is_none());
        assert!(find_element(
            "<div data-x='1'>never closed",
            Selector::Attr("data-x", None)
        )
        .is_none());
        let void =
            find_element("<img data-x src=a.png><p>", Selector::Attr("data-x", None)).unwrap();
        assert!(void.content.is_empty());
    }

    #[test]
    fn renders_fills_in_document_order_and_leaves_the_rest() {
        let html = r#"<main><section data-slot="b"/>old b</section><div data-slot="a">old a</div><div data-slot="c">c</div></main>"#;
        let t = Template::new(
            html.to_string(),
            ["a", "b", "c", "z"].map(|k| (k, Selector::Attr("data-slot", Some(k)))),
        );
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), ["b", "a", "c"]);
        let out = t.render(&[
            (
                "a",
                Fill {
                    attributes: r#" x="1""#,
                    content: "new a",
                },
            ),
            (
                "b",
                Fill {
                    attributes: r#" y="2""#,
                    content: "new b",
                },
            ),
        ]);
        assert_eq!(
            out,
            r#"<main><section data-slot="b" y="2"/>new b</section><div data-slot="a" x="1">new a</div><div data-slot="c">c</div></main>"#
        );
        let replaced = t.replace(&[("c", "<p class=k>", "k")]);
        assert!(replaced.ends_with("<p class=k>k</div></main>"));
    }

    #[test]
    fn a_place_inside_another_is_left_out() {
        let html = r#"<div data-s="outer"><div data-s="inner">i</div></div>"#;
        let t = Template::new(
            html.to_string(),
            ["outer", "inner"].map(|k| (k, Selector::Attr("data-s", Some(k)))),
        );
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), ["outer"]);
    }

    #[test]
    fn the_shops_own_templates_have_their_places() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../www");
        let index = std::fs::read_to_string(root.join("index.html")).unwrap();
        let e = find_element(
            &index,
            Selector::Attr("data-top-pick", Some("home-top-pick")),
        )
        .unwrap();
        assert!(
            index[e.content.clone()].contains("top-pick"),
            "the placeholder"
        );
        let page = std::fs::read_to_string(root.join("page.html")).unwrap();
        let main = find_element(&page, Selector::Attr("data-page", None)).unwrap();
        assert_eq!(main.tag, "main");
        let title = find_element(&page, Selector::Tag("title")).unwrap();
        assert_eq!(&page[title.content.clone()], "Photon Prints");
    }
}
