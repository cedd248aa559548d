//! Escaping for every context catalog text is written into.

use std::borrow::Cow;

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn html(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A JavaScript string literal safe inside an inline `<script>`: JSON quoting, plus `<`, `>`,
/// `&` and the JS line separators as \u escapes so the text can never close the script
/// element or start a comment.
pub fn js_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\'' => out.push_str("\\u0027"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether a URL from the catalog may be used as a link or image source: http(s) or a
/// same-origin absolute path. Everything else (javascript:, data:, protocol-relative) is refused.
pub fn is_safe_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    lower.starts_with("https://")
        || lower.starts_with("http://")
        || (lower.starts_with('/') && !lower.starts_with("//") && !lower.starts_with("/\\"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_markup_and_quotes() {
        assert_eq!(html("plain"), "plain");
        assert_eq!(
            html(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn js_string_cannot_break_out() {
        let s = js_string("</script><script>alert('x')</script>\u{2028}\"\\");
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('\''));
        assert!(s.contains("\\u2028"));
        // It is still the same string to a JSON (and so JS) parser.
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "</script><script>alert('x')</script>\u{2028}\"\\");
    }

    #[test]
    fn only_http_and_same_origin_urls_pass() {
        for ok in ["https://x.test/a.jpg", "http://x.test/", "/images/a.svg"] {
            assert!(is_safe_url(ok), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "data:text/html,x",
            "//evil.test/x",
            "/\\evil.test",
            "https://x.test/a b",
            "",
        ] {
            assert!(!is_safe_url(bad), "{bad}");
        }
    }
}
