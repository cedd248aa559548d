//! Who may do what: the two secrets (the bridge's ingest token, the operators' token) and how
//! a request presents them (`Authorization: Bearer`, or Basic so a browser can sign in to the
//! dashboard). Pure, so it is tested natively.

use bandit::operator::Actor;

/// What a request wants to do, and so which secrets admit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Push event batches and import catalogs (the bridge): `INGEST_TOKEN`.
    Ingest,
    /// Read applied offsets: the bridge or an operator.
    Offsets,
    /// Import or update catalog items: the bridge or an operator.
    Catalog,
    /// Operator pages and the state API, offset corrections: `OPERATOR_TOKEN` (or
    /// `INGEST_TOKEN` where no operator token is set).
    Operator,
}

/// The configured secrets (empty values count as unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// `INGEST_TOKEN`.
    pub ingest: Option<String>,
    /// `OPERATOR_TOKEN`.
    pub operator: Option<String>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No secret admits this access: the worker is not configured for it.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// No usable `Authorization` header.
    #[error("{0}")]
    Missing(&'static str),
    /// A token was presented and is not the right one.
    #[error("wrong token")]
    Wrong,
}

impl Secrets {
    /// The secrets that admit `access`, each with the actor it stands for.
    fn admitting(&self, access: Access) -> Vec<(&str, Actor)> {
        let ingest = self
            .ingest
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| (t, Actor::Ingest));
        let operator = self
            .operator
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| (t, Actor::Operator));
        let list = match access {
            Access::Ingest => vec![ingest],
            Access::Offsets | Access::Catalog => vec![ingest, operator],
            Access::Operator => vec![operator.or(ingest)],
        };
        list.into_iter().flatten().collect()
    }

    /// Checks the request's `Authorization` header value for `access`; which secret it
    /// presented.
    pub fn check(&self, access: Access, authorization: Option<&str>) -> Result<Actor, Denied> {
        let admitting = self.admitting(access);
        if admitting.is_empty() {
            return Err(Denied::NotConfigured(
                "this is disabled: INGEST_TOKEN is not set on the worker (wrangler secret put INGEST_TOKEN, or .dev.vars locally)",
            ));
        }
        let presented = authorization.and_then(presented_token).ok_or(Denied::Missing(
            "missing credentials: send Authorization: Bearer <token> (or sign in with any user name and the token as password)",
        ))?;
        // Compare with every admitting secret, so timing does not tell which one is set.
        let mut matched = None;
        for (secret, actor) in admitting {
            if constant_time_eq(presented.as_bytes(), secret.as_bytes()) {
                matched = Some(actor);
            }
        }
        matched.ok_or(Denied::Wrong)
    }
}

/// The token in an `Authorization` value: `Bearer <token>`, or `Basic` with the token as the
/// password (any user name).
pub fn presented_token(authorization: &str) -> Option<String> {
    let value = authorization.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(base64_decode(rest)?).ok()?;
        let (_, password) = decoded.split_once(':')?;
        return (!password.is_empty()).then(|| password.to_string());
    }
    None
}

/// Decodes standard base64 (padding optional); `None` on any other character.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.as_bytes().chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn base64_decodes_what_browsers_send() {
        // "operator:s3cret" and the RFC 4648 test vectors.
        assert_eq!(
            base64_decode("b3BlcmF0b3I6czNjcmV0").unwrap(),
            b"operator:s3cret"
        );
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes(), "{enc}");
        }
        assert_eq!(base64_decode("Zm9v!"), None);
        assert_eq!(base64_decode("Z"), None);
        assert_eq!(base64_decode("Zg==="), None);
    }

    #[test]
    fn tokens_come_as_bearer_or_as_a_basic_password() {
        assert_eq!(presented_token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(presented_token("bearer   abc ").as_deref(), Some("abc"));
        assert_eq!(
            presented_token("Basic b3BlcmF0b3I6czNjcmV0").as_deref(),
            Some("s3cret")
        );
        // "s3cret" alone (no colon) and ":" (no password) are not credentials.
        assert_eq!(presented_token("Basic czNjcmV0"), None);
        assert_eq!(presented_token("Basic Og=="), None);
        assert_eq!(presented_token("Bearer"), None);
        assert_eq!(presented_token("Token abc"), None);
    }

    #[test]
    fn each_access_is_admitted_by_its_own_secrets_only() {
        let both = Secrets {
            ingest: Some("ing".into()),
            operator: Some("op".into()),
        };
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(
            both.check(Access::Ingest, Some(&bearer("ing"))),
            Ok(Actor::Ingest)
        );
        assert_eq!(
            both.check(Access::Ingest, Some(&bearer("op"))),
            Err(Denied::Wrong)
        );
        assert_eq!(
            both.check(Access::Operator, Some(&bearer("op"))),
            Ok(Actor::Operator)
        );
        assert_eq!(
            both.check(Access::Operator, Some(&bearer("ing"))),
            Err(Denied::Wrong)
        );
        assert_eq!(
            both.check(Access::Offsets, Some(&bearer("ing"))),
            Ok(Actor::Ingest)
        );
        assert_eq!(
            both.check(Access::Offsets, Some(&bearer("op"))),
            Ok(Actor::Operator)
        );
        assert!(matches!(
            both.check(Access::Operator, None),
            Err(Denied::Missing(_))
        ));
        // Without an operator token the ingest token serves operators too.
        let ingest_only = Secrets {
            ingest: Some("ing".into()),
            operator: Some(String::new()),
        };
        assert_eq!(
            ingest_only.check(Access::Operator, Some(&bearer("ing"))),
            Ok(Actor::Ingest),
            "the audit log says which secret it was"
        );
        let none = Secrets::default();
        assert!(matches!(
            none.check(Access::Operator, Some(&bearer("x"))),
            Err(Denied::NotConfigured(_))
        ));
        assert!(matches!(
            none.check(Access::Ingest, Some(&bearer(""))),
            Err(Denied::NotConfigured(_))
        ));
    }
}
