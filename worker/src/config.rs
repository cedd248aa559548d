//! Worker settings from `wrangler.toml` `[vars]`, parsed once per isolate.

use bandit::{PriorPolicy, RotationConfig};

use crate::catalog::CatalogItem;
use crate::segment::Dimension;
use crate::snapshot::Holdout;

use bandit::protocol::DEFAULT_SLOT;
/// Upper bound on the arm set size, which keeps the slot state small and P(best) cheap.
pub const MAX_ARMS: usize = 64;
/// Least time between two KV writes of one key (KV's write rate per key), the default too.
pub const MIN_PUBLISH_INTERVAL_MS: u64 = 1000;

/// Parsed worker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Slots this worker serves (`SLOTS`, comma separated).
    pub slots: Vec<String>,
    /// n, X, policy and cool-down for every slot.
    pub rotation: RotationConfig,
    /// Time budget for reading the slot state on the homepage (`READ_BUDGET_MS`).
    pub read_budget_ms: u64,
    /// How long an isolate trusts its cached snapshot (`SNAPSHOT_MAX_AGE_MS`).
    pub snapshot_max_age_ms: u64,
    /// Minimum time between two KV snapshot writes of one slot (`PUBLISH_INTERVAL_MS`).
    pub publish_interval_ms: u64,
    /// Item rendered when no state can be had (`FALLBACK_ITEM`, JSON of a catalog item).
    pub fallback: Option<CatalogItem>,
    /// Origin whose homepage is rewritten instead of `www/index.html` (`ORIGIN_URL`).
    pub origin_url: Option<String>,
    /// The Divolte collector's origin, admitted by the pages' Content-Security-Policy
    /// (`COLLECTOR_ORIGIN`).
    pub collector_origin: Option<String>,
    /// The share of decisions the holdout's baseline serves (`HOLDOUT`, 0 to 0.5; 0 is off).
    pub holdout: f64,
    /// What the holdout shows (`HOLDOUT_BASELINE`).
    pub holdout_baseline: HoldoutBaseline,
    /// Visitor segments the picks are contextual on (`SEGMENTS`, e.g. `device,continent`;
    /// empty: one model for everyone).
    pub segments: Vec<Dimension>,
    /// The cookie whose value makes picks sticky per visitor and round (`STICKY=session`:
    /// Divolte's session cookie, named by `STICKY_COOKIE`, default `_dvs`); none: a fresh
    /// draw per request.
    pub sticky_cookie: Option<String>,
}

/// What the holdout's decisions show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldoutBaseline {
    /// An item of the arm set, uniformly (`uniform`, the default): an unbiased log for
    /// off-policy evaluation of any policy over the same arms.
    Uniform,
    /// The configured `FALLBACK_ITEM` (`fallback`): the editorial pick the bandit replaces.
    Fallback,
}

/// Largest holdout share: beyond half, the bandit would be the minority of the traffic.
pub const MAX_HOLDOUT: f64 = 0.5;

/// Whether `s` is an origin a Content-Security-Policy can name: `http(s)://host[:port]`.
pub fn is_csp_origin(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && r.len() <= 253
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    })
}

/// A setting that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {name} = {value:?} is invalid: {expected}")]
pub struct SettingError {
    /// Variable name.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What it should be.
    pub expected: String,
}

/// Whether `s` is a valid slot name: 1-64 characters of a-z 0-9 and `-`.
pub fn is_valid_slot(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Settings {
    /// A short digest of these settings as this build reads them. The edge worker sends it with
    /// every call to a slot object, which compares it with its own: an edge and an objects'
    /// worker deployed with different vars (or from different builds) are noticed, not silent.
    pub fn fingerprint(&self) -> String {
        let text = format!("{}:{self:?}", env!("CARGO_PKG_VERSION"));
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{hash:016x}")
    }

    /// Parses settings from a variable lookup (the worker's `Env`, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingError> {
        let var = |name: &'static str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        fn num<T: std::str::FromStr>(
            name: &'static str,
            value: Option<String>,
            default: T,
            ok: impl Fn(&T) -> bool,
            expected: &str,
        ) -> Result<T, SettingError> {
            match value {
                None => Ok(default),
                Some(v) => match v.parse::<T>() {
                    Ok(n) if ok(&n) => Ok(n),
                    _ => Err(SettingError {
                        name,
                        value: v,
                        expected: expected.into(),
                    }),
                },
            }
        }
        let slots: Vec<String> = match var("SLOTS") {
            None => vec![DEFAULT_SLOT.to_string()],
            Some(v) => v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        if slots.is_empty() || !slots.iter().all(|s| is_valid_slot(s)) {
            return Err(SettingError {
                name: "SLOTS",
                value: slots.join(","),
                expected: "comma-separated names of a-z, 0-9 and -".into(),
            });
        }
        let policy = match var("PRIOR_POLICY") {
            None => PriorPolicy::default(),
            Some(v) => v
                .parse()
                .map_err(|e: bandit::policy::UnknownPolicy| SettingError {
                    name: "PRIOR_POLICY",
                    value: v,
                    expected: e.to_string(),
                })?,
        };
        let rotation = RotationConfig {
            arms: num(
                "ARMS",
                var("ARMS"),
                8,
                |n| (2..=MAX_ARMS).contains(n),
                "an integer from 2 to 64",
            )?,
            round_impressions: num(
                "ROUND_IMPRESSIONS",
                var("ROUND_IMPRESSIONS"),
                2000,
                |n| *n >= 1,
                "a positive integer",
            )?,
            policy,
            cooldown_rounds: num(
                "COOLDOWN_ROUNDS",
                var("COOLDOWN_ROUNDS"),
                5,
                |_| true,
                "a non-negative integer",
            )?,
        };
        let fallback = match var("FALLBACK_ITEM") {
            None => None,
            Some(v) => {
                let item: CatalogItem = serde_json::from_str(&v).map_err(|e| SettingError {
                    name: "FALLBACK_ITEM",
                    value: v.clone(),
                    expected: format!("JSON of a catalog item ({e})"),
                })?;
                item.validate().map_err(|e| SettingError {
                    name: "FALLBACK_ITEM",
                    value: v.clone(),
                    expected: e.to_string(),
                })?;
                Some(item)
            }
        };
        let origin_url = match var("ORIGIN_URL") {
            None => None,
            Some(v) if v.starts_with("https://") || v.starts_with("http://") => {
                Some(v.trim_end_matches('/').to_string())
            }
            Some(v) => {
                return Err(SettingError {
                    name: "ORIGIN_URL",
                    value: v,
                    expected: "an http(s) URL".into(),
                })
            }
        };
        let collector_origin = match var("COLLECTOR_ORIGIN") {
            None => None,
            Some(v) if is_csp_origin(v.trim_end_matches('/')) => {
                Some(v.trim_end_matches('/').to_string())
            }
            Some(v) => {
                return Err(SettingError {
                    name: "COLLECTOR_ORIGIN",
                    value: v,
                    expected: "an origin like https://collector.example.com (no path)".into(),
                })
            }
        };
        let holdout = num(
            "HOLDOUT",
            var("HOLDOUT"),
            0.0,
            |h: &f64| (0.0..=MAX_HOLDOUT).contains(h),
            "a share from 0 (off) to 0.5, e.g. 0.05",
        )?;
        let holdout_baseline = match var("HOLDOUT_BASELINE").as_deref() {
            None | Some("uniform") => HoldoutBaseline::Uniform,
            Some("fallback") if fallback.is_some() => HoldoutBaseline::Fallback,
            Some(v) => {
                return Err(SettingError {
                    name: "HOLDOUT_BASELINE",
                    value: v.to_string(),
                    expected: "uniform, or fallback (which needs FALLBACK_ITEM)".into(),
                })
            }
        };
        let segments = match var("SEGMENTS") {
            None => Vec::new(),
            Some(v) => {
                let mut dims: Vec<Dimension> = Vec::new();
                for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match Dimension::parse(name) {
                        Some(d) if !dims.contains(&d) => dims.push(d),
                        _ => return Err(SettingError {
                            name: "SEGMENTS",
                            value: v.clone(),
                            expected:
                                "a comma-separated list of device, continent, daypart (each once)"
                                    .into(),
                        }),
                    }
                }
                dims
            }
        };
        let sticky_cookie = match var("STICKY").as_deref() {
            None | Some("off") => None,
            Some("session") => {
                let name = var("STICKY_COOKIE").unwrap_or_else(|| "_dvs".to_string());
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                {
                    return Err(SettingError {
                        name: "STICKY_COOKIE",
                        value: name,
                        expected: "a cookie name (letters, digits, _ - .)".into(),
                    });
                }
                Some(name)
            }
            Some(v) => {
                return Err(SettingError {
                    name: "STICKY",
                    value: v.to_string(),
                    expected: "session (one pick per Divolte session and round) or off".into(),
                })
            }
        };
        Ok(Settings {
            slots,
            rotation,
            segments,
            sticky_cookie,
            holdout,
            holdout_baseline,
            read_budget_ms: num(
                "READ_BUDGET_MS",
                var("READ_BUDGET_MS"),
                50,
                |n| (1..=10_000).contains(n),
                "milliseconds from 1 to 10000",
            )?,
            snapshot_max_age_ms: num(
                "SNAPSHOT_MAX_AGE_MS",
                var("SNAPSHOT_MAX_AGE_MS"),
                1000,
                |n| *n <= 3_600_000,
                "milliseconds up to 3600000",
            )?,
            publish_interval_ms: num(
                "PUBLISH_INTERVAL_MS",
                var("PUBLISH_INTERVAL_MS"),
                MIN_PUBLISH_INTERVAL_MS,
                |n| *n >= MIN_PUBLISH_INTERVAL_MS,
                "milliseconds, at least 1000 (KV's write rate per key)",
            )?,
            fallback,
            origin_url,
            collector_origin,
        })
    }

    /// The holdout as a decision sees it.
    pub fn holdout(&self) -> Holdout<'_> {
        match (self.holdout_baseline, &self.fallback) {
            _ if self.holdout <= 0.0 => Holdout::Off,
            (HoldoutBaseline::Fallback, Some(item)) => Holdout::Fallback {
                share: self.holdout,
                item: &item.id,
            },
            _ => Holdout::Uniform {
                share: self.holdout,
            },
        }
    }

    /// Whether this worker serves `slot`.
    pub fn has_slot(&self, slot: &str) -> bool {
        self.slots.iter().any(|s| s == slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<Settings, SettingError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.slots, vec![DEFAULT_SLOT]);
        assert_eq!(s.rotation.arms, 8);
        assert_eq!(s.rotation.round_impressions, 2000);
        assert_eq!(s.read_budget_ms, 50);
        assert_eq!(s.snapshot_max_age_ms, 1000);
        assert!(s.fallback.is_none());
        assert_eq!(s.holdout, 0.0);
        assert_eq!(s.holdout_baseline, HoldoutBaseline::Uniform);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("ARMS", "1"),
            ("ARMS", "65"),
            ("ARMS", "eight"),
            ("ROUND_IMPRESSIONS", "0"),
            ("PRIOR_POLICY", "greedy"),
            ("SLOTS", "Home Page"),
            ("PUBLISH_INTERVAL_MS", "10"),
            ("ORIGIN_URL", "ftp://x"),
            ("FALLBACK_ITEM", "{}"),
            ("COLLECTOR_ORIGIN", "https://c.example/divolte.js"),
            ("COLLECTOR_ORIGIN", "https://c.example; script-src *"),
            ("COLLECTOR_ORIGIN", "c.example"),
            ("HOLDOUT", "0.6"),
            ("HOLDOUT", "-0.1"),
            ("HOLDOUT", "NaN"),
            ("HOLDOUT_BASELINE", "editorial"),
            ("HOLDOUT_BASELINE", "fallback"),
            ("SEGMENTS", "device,browser"),
            ("SEGMENTS", "device,device"),
            ("STICKY", "party"),
        ] {
            let err = parse(&[(k, v)]).unwrap_err();
            assert_eq!(err.name, k);
        }
    }

    #[test]
    fn fingerprint_follows_every_setting() {
        let base = parse(&[("ARMS", "8")]).unwrap();
        assert_eq!(base.fingerprint(), parse(&[]).unwrap().fingerprint());
        assert_eq!(base.fingerprint().len(), 16);
        for (k, v) in [
            ("HOLDOUT", "0.1"),
            ("SEGMENTS", "device"),
            ("ARMS", "9"),
            ("SLOTS", "home-top-pick,side"),
            ("PRIOR_POLICY", "post2015"),
        ] {
            assert_ne!(
                base.fingerprint(),
                parse(&[(k, v)]).unwrap().fingerprint(),
                "{k}"
            );
        }
    }

    #[test]
    fn parses_everything() {
        let s = parse(&[
            ("SLOTS", "home-top-pick, side"),
            ("ARMS", "16"),
            ("PRIOR_POLICY", "carry:0.5"),
            (
                "FALLBACK_ITEM",
                r#"{"id":"x1","title":"Fallback","image":"/images/x.svg"}"#,
            ),
            ("ORIGIN_URL", "https://shop.example/"),
            ("COLLECTOR_ORIGIN", "https://collector.example:8290/"),
            ("HOLDOUT", "0.05"),
            ("HOLDOUT_BASELINE", "fallback"),
            ("SEGMENTS", "device, daypart"),
        ])
        .unwrap();
        assert_eq!(s.segments, [Dimension::Device, Dimension::Daypart]);
        let sticky = parse(&[("STICKY", "session")]).unwrap();
        assert_eq!(sticky.sticky_cookie.as_deref(), Some("_dvs"));
        assert!(parse(&[("STICKY", "session"), ("STICKY_COOKIE", "a;b")]).is_err());
        assert_eq!(s.holdout, 0.05);
        assert_eq!(s.holdout_baseline, HoldoutBaseline::Fallback);
        assert!(s.has_slot("side") && !s.has_slot("other"));
        assert_eq!(s.rotation.arms, 16);
        assert_eq!(s.fallback.unwrap().id, "x1");
        assert_eq!(s.origin_url.as_deref(), Some("https://shop.example"));
        assert_eq!(
            s.collector_origin.as_deref(),
            Some("https://collector.example:8290")
        );
    }
}
