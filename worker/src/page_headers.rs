//! Security headers of the HTML pages the worker makes: a Content-Security-Policy that runs no
//! inline script but the worker's own (by a per-response nonce), no MIME sniffing, a
//! referrer policy, and no framing of the operators' dashboard.

/// Which kind of page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// The shop's pages: homepage, product and category pages.
    Shop,
    /// The operators' dashboard.
    Dashboard,
}

/// The Content-Security-Policy of a page. `nonce` admits the worker's one inline script (the
/// impression signal); `collector` is the Divolte collector's origin, whose tag and beacons
/// the shop's pages load.
pub fn content_security_policy(
    kind: PageKind,
    nonce: Option<&str>,
    collector: Option<&str>,
) -> String {
    match kind {
        PageKind::Shop => {
            let extra = collector.map(|c| format!(" {c}")).unwrap_or_default();
            let nonce = nonce.map(|n| format!(" 'nonce-{n}'")).unwrap_or_default();
            format!(
                "default-src 'self'; script-src 'self'{nonce}{extra}; img-src 'self' https: data:{extra}; \
                 connect-src 'self'{extra}; style-src 'self'; object-src 'none'; base-uri 'none'; \
                 form-action 'self'; frame-ancestors 'self'"
            )
        }
        // The swatches are inline style attributes; no script at all.
        PageKind::Dashboard => "default-src 'none'; style-src 'self'; style-src-attr 'unsafe-inline'; \
             img-src 'self' https: data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            .to_string(),
    }
}

/// Every security header of a page, as (name, value).
pub fn security_headers(
    kind: PageKind,
    nonce: Option<&str>,
    collector: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        (
            "content-security-policy",
            content_security_policy(kind, nonce, collector),
        ),
        ("x-content-type-options", "nosniff".to_string()),
        (
            "referrer-policy",
            "strict-origin-when-cross-origin".to_string(),
        ),
    ];
    if kind == PageKind::Dashboard {
        h.push(("x-frame-options", "DENY".to_string()));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shop_pages_admit_only_their_own_inline_script_and_the_collector() {
        let csp =
            content_security_policy(PageKind::Shop, Some("abc123"), Some("https://c.example"));
        assert!(
            csp.contains("script-src 'self' 'nonce-abc123' https://c.example;"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("object-src 'none'") && csp.contains("base-uri 'none'"));
        let bare = content_security_policy(PageKind::Shop, None, None);
        assert!(bare.contains("script-src 'self';"), "{bare}");
    }

    #[test]
    fn the_dashboard_runs_no_script_and_is_never_framed() {
        let h = security_headers(PageKind::Dashboard, None, None);
        let csp = &h
            .iter()
            .find(|(n, _)| *n == "content-security-policy")
            .unwrap()
            .1;
        assert!(csp.starts_with("default-src 'none'"));
        assert!(!csp.contains("script-src"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(h.contains(&("x-frame-options", "DENY".to_string())));
        assert!(h.contains(&("x-content-type-options", "nosniff".to_string())));
    }
}
