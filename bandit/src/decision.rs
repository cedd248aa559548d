//! A logged decision: what the edge chose for one request and the probability its policy gave
//! that choice, as it travels through Divolte (the impression signal's parameters and the click
//! link's fragment) and back to the bridge and the off-policy evaluator. One definition for the
//! worker that writes it and the readers that parse it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Impression signal parameter: the decision id.
pub const PARAM_DECISION: &str = "decision";
/// Impression signal parameter: the probability that the policy showed this item.
pub const PARAM_PROBABILITY: &str = "probability";
/// Impression signal parameter: the arm set's round.
pub const PARAM_ROUND: &str = "round";
/// Impression signal parameter: the arm set's changes before the decision in its round
/// (screening swaps, operator removals and refills; absent means 0). With the round it names
/// the exact set chosen from.
pub const PARAM_SET: &str = "set";
/// Impression signal parameter: the slot state's version the decision was drawn from.
pub const PARAM_VERSION: &str = "version";
/// Impression signal parameter: how many arms the decision chose among.
pub const PARAM_ARMS: &str = "arms";
/// Impression signal parameter: `true` when the holdout's baseline served the decision.
pub const PARAM_HOLDOUT: &str = "holdout";
/// Impression signal parameter: the visitor's segment, when segments are configured.
pub const PARAM_SEGMENT: &str = "segment";

/// Hex digits of a decision id's time part (milliseconds; enough until the year 2527).
const TIME_DIGITS: usize = 11;
/// Hex digits of a decision id's random part.
const RANDOM_DIGITS: usize = 8;
/// Length of a decision id.
pub const DECISION_ID_LEN: usize = TIME_DIGITS + RANDOM_DIGITS;
/// Longest segment name accepted from an event.
pub const MAX_SEGMENT_LEN: usize = 32;

/// A decision id: when the edge decided (ms since the Unix epoch) and 32 random bits, written
/// as 19 lowercase hex digits. The time in the id lets a reader check a click's attribution
/// window from the click alone, so counting stays a function of the records (exactly once on
/// any re-read) without a join table that a restart would lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecisionId {
    /// Decision time, ms since the Unix epoch.
    pub time_ms: u64,
    /// Random part.
    pub random: u32,
}

impl DecisionId {
    /// Parses the 19-hex-digit form; anything else is `None`.
    pub fn parse(s: &str) -> Option<DecisionId> {
        if s.len() != DECISION_ID_LEN || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let time_ms = u64::from_str_radix(&s[..TIME_DIGITS], 16).ok()?;
        let random = u32::from_str_radix(&s[TIME_DIGITS..], 16).ok()?;
        Some(DecisionId { time_ms, random })
    }
}

impl Serialize for DecisionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DecisionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DecisionId::parse(&s).ok_or_else(|| serde::de::Error::custom("not a decision id"))
    }
}

impl fmt::Display for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:0tw$x}{:0rw$x}",
            self.time_ms & ((1 << (4 * TIME_DIGITS)) - 1),
            self.random,
            tw = TIME_DIGITS,
            rw = RANDOM_DIGITS
        )
    }
}

/// Who served a decision, for the comparison of the bandit with its holdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServedBy {
    /// The bandit (or an operator's pin in its place).
    Bandit,
    /// The holdout's baseline.
    Holdout,
}

/// What the edge logs with each decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionLog {
    /// The decision id.
    pub id: DecisionId,
    /// The exact probability that the serving policy showed this item for this request.
    pub probability: f64,
    /// The arm set's round.
    pub round: u64,
    /// Changes of the arm set before this decision in its round (screening swaps, operator
    /// removals and refills): with the round, the exact set the decision chose from.
    #[serde(default, skip_serializing_if = "crate::is_zero")]
    pub set: u64,
    /// The slot state's version.
    pub version: u64,
    /// How many arms the decision chose among.
    pub arms: u32,
    /// Who served it.
    pub served_by: ServedBy,
    /// The visitor's segment, when segments are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

/// Why an event's decision parameters cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecisionParamError {
    /// No `decision` parameter.
    #[error("no decision id")]
    Missing,
    /// A parameter is present but malformed or out of range.
    #[error("malformed decision parameter {0}")]
    Malformed(&'static str),
}

fn number<T: std::str::FromStr>(
    v: Option<&str>,
    name: &'static str,
) -> Result<T, DecisionParamError> {
    v.ok_or(DecisionParamError::Malformed(name))?
        .parse()
        .map_err(|_| DecisionParamError::Malformed(name))
}

impl DecisionLog {
    /// The parameters the impression signal carries, in order (the segment only when set).
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (PARAM_DECISION, self.id.to_string()),
            (PARAM_PROBABILITY, format_probability(self.probability)),
            (PARAM_ROUND, self.round.to_string()),
            (PARAM_VERSION, self.version.to_string()),
            (PARAM_ARMS, self.arms.to_string()),
            (
                PARAM_HOLDOUT,
                (self.served_by == ServedBy::Holdout).to_string(),
            ),
        ];
        if self.set > 0 {
            out.push((PARAM_SET, self.set.to_string()));
        }
        if let Some(s) = &self.segment {
            out.push((PARAM_SEGMENT, s.clone()));
        }
        out
    }

    /// The click link's fragment for this decision: [`click_fragment`] and, when set, the
    /// visitor's segment, so the click is credited to the segment the decision used.
    pub fn click_fragment(&self, source: &str) -> String {
        let mut out = click_fragment(source, Some((&self.id, self.served_by)));
        if let Some(s) = &self.segment {
            out.push_str(&format!("&{PARAM_SEGMENT}={s}"));
        }
        out
    }

    /// Reads the parameters back from an event (`get` looks one up by name). Every value is
    /// from a browser: the id must parse, the probability be in (0, 1], the numbers fit.
    pub fn from_params<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<DecisionLog, DecisionParamError> {
        let id = get(PARAM_DECISION).ok_or(DecisionParamError::Missing)?;
        let id = DecisionId::parse(id).ok_or(DecisionParamError::Malformed(PARAM_DECISION))?;
        let probability: f64 = number(get(PARAM_PROBABILITY), PARAM_PROBABILITY)?;
        if !(probability > 0.0 && probability <= 1.0) {
            return Err(DecisionParamError::Malformed(PARAM_PROBABILITY));
        }
        let served_by = match get(PARAM_HOLDOUT) {
            None | Some("false") | Some("0") => ServedBy::Bandit,
            Some("true") | Some("1") => ServedBy::Holdout,
            Some(_) => return Err(DecisionParamError::Malformed(PARAM_HOLDOUT)),
        };
        let segment = match get(PARAM_SEGMENT) {
            None | Some("") => None,
            Some(s) if is_valid_segment(s) => Some(s.to_string()),
            Some(_) => return Err(DecisionParamError::Malformed(PARAM_SEGMENT)),
        };
        Ok(DecisionLog {
            id,
            probability,
            round: number(get(PARAM_ROUND), PARAM_ROUND)?,
            set: match get(PARAM_SET) {
                None | Some("") => 0,
                v => number(v, PARAM_SET)?,
            },
            version: number(get(PARAM_VERSION), PARAM_VERSION)?,
            arms: number(get(PARAM_ARMS), PARAM_ARMS)?,
            served_by,
            segment,
        })
    }
}

/// Whether `s` can be a segment name: 1 to [`MAX_SEGMENT_LEN`] bytes of `a-z 0-9 _ -`.
pub fn is_valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// A probability as the signal writes it: enough digits that a reader recovers it to 1e-9
/// relative, no more.
pub fn format_probability(p: f64) -> String {
    let s = format!("{p:.10e}");
    // `f64::from_str` reads this form back; trim the mantissa's trailing zeros for brevity.
    match s.split_once('e') {
        Some((m, e)) if m.contains('.') => {
            let m = m.trim_end_matches('0').trim_end_matches('.');
            if e == "0" {
                m.to_string()
            } else {
                format!("{m}e{e}")
            }
        }
        _ => s,
    }
}

/// The fragment of a pick's link: `#/?source=SOURCE&decision=ID`, with `&holdout=true` when
/// the holdout served it. The shop's product page reads `source` from it; Divolte keeps the
/// whole location, so the click's record carries the decision.
pub fn click_fragment(source: &str, decision: Option<(&DecisionId, ServedBy)>) -> String {
    let mut out = format!("#/?source={source}");
    if let Some((id, served_by)) = decision {
        out.push_str(&format!("&{PARAM_DECISION}={id}"));
        if served_by == ServedBy::Holdout {
            out.push_str(&format!("&{PARAM_HOLDOUT}=true"));
        }
    }
    out
}

/// The `name=value` pairs of a location's fragment query (`...#/?a=1&b=2` or `...#?a=1`),
/// without decoding (the values this module writes need none). Empty when there is none.
pub fn fragment_params(location: &str) -> impl Iterator<Item = (&str, &str)> {
    let query = location
        .split_once('#')
        .map(|(_, f)| f.trim_start_matches('/'))
        .and_then(|f| f.strip_prefix('?'))
        .unwrap_or("");
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
}

/// The value of `name` in a location's fragment query.
pub fn fragment_param<'a>(location: &'a str, name: &str) -> Option<&'a str> {
    fragment_params(location)
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// How a click relates to its decision's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// Within the window: the click is the decision's reward.
    Within,
    /// Later than the window after the decision.
    Late,
    /// Earlier than the decision by more than the allowed clock skew.
    BeforeDecision,
}

/// Whether an event at `event_ms` falls within `window_ms` after decision `id`, allowing the
/// browser's and the edge's clocks to differ by `skew_ms`.
pub fn attribute(id: &DecisionId, event_ms: i64, window_ms: u64, skew_ms: u64) -> Attribution {
    let decided = id.time_ms as i128;
    let at = event_ms as i128;
    if at + (skew_ms as i128) < decided {
        Attribution::BeforeDecision
    } else if at > decided + window_ms as i128 + skew_ms as i128 {
        Attribution::Late
    } else {
        Attribution::Within
    }
}

/// The probability that a request is served `item`, given the share of requests an operator's
/// pin takes (`pin_share`, 0 without one, and whether `item` is the pinned one), the holdout's
/// share and its baseline probability for `item`, and the bandit's P(best) for it: the
/// mixture in the order the edge decides (pin, then holdout, then the bandit).
pub fn serve_probability(
    pin_share: f64,
    is_pinned: bool,
    holdout: f64,
    baseline: f64,
    p_best: f64,
) -> f64 {
    let rest = 1.0 - pin_share;
    let pinned = if is_pinned { pin_share } else { 0.0 };
    pinned + rest * (holdout * baseline + (1.0 - holdout) * p_best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn ids_round_trip_and_refuse_other_forms() {
        let id = DecisionId {
            time_ms: 1_764_300_000_123,
            random: 0xdead_beef,
        };
        let s = id.to_string();
        assert_eq!(s.len(), DECISION_ID_LEN);
        assert_eq!(DecisionId::parse(&s), Some(id));
        let zero = DecisionId {
            time_ms: 0,
            random: 0,
        };
        assert_eq!(zero.to_string(), "0".repeat(DECISION_ID_LEN));
        for bad in [
            "",
            "xyz",
            &s[1..],
            &format!("{s}0"),
            &s.to_uppercase(),
            "0000000000-00000000",
        ] {
            assert_eq!(DecisionId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn params_round_trip() {
        let log = DecisionLog {
            id: DecisionId {
                time_ms: 5,
                random: 7,
            },
            probability: 0.123_456_789_012_3,
            round: 4,
            set: 2,
            version: 99,
            arms: 8,
            served_by: ServedBy::Holdout,
            segment: Some("mobile".into()),
        };
        let map: HashMap<&str, String> = log.params().into_iter().collect();
        let back = DecisionLog::from_params(|k| map.get(k).map(String::as_str)).unwrap();
        assert_eq!(back.id, log.id);
        assert!((back.probability / log.probability - 1.0).abs() < 1e-9);
        assert_eq!(
            (
                back.round,
                back.set,
                back.version,
                back.arms,
                back.served_by,
                &back.segment
            ),
            (4, 2, 99, 8, ServedBy::Holdout, &log.segment)
        );
        // Without swaps the parameter is left out, and its absence reads as 0.
        let first = DecisionLog { set: 0, ..log };
        assert!(first.params().iter().all(|(k, _)| *k != PARAM_SET));
        let map: HashMap<&str, String> = first.params().into_iter().collect();
        let back = DecisionLog::from_params(|k| map.get(k).map(String::as_str)).unwrap();
        assert_eq!(back.set, 0);
    }

    #[test]
    fn hostile_params_are_refused() {
        let good: HashMap<&str, &str> = [
            (PARAM_DECISION, "0000000000500000007"),
            (PARAM_PROBABILITY, "0.5"),
            (PARAM_ROUND, "1"),
            (PARAM_VERSION, "2"),
            (PARAM_ARMS, "8"),
        ]
        .into_iter()
        .collect();
        assert!(DecisionLog::from_params(|k| good.get(k).copied()).is_ok());
        for (k, v) in [
            (PARAM_DECISION, "nope"),
            (PARAM_PROBABILITY, "0"),
            (PARAM_PROBABILITY, "1.5"),
            (PARAM_PROBABILITY, "NaN"),
            (PARAM_PROBABILITY, "-0.1"),
            (PARAM_ROUND, "-1"),
            (PARAM_SET, "-2"),
            (PARAM_SET, "x"),
            (PARAM_VERSION, "1e3"),
            (PARAM_ARMS, "99999999999"),
            (PARAM_HOLDOUT, "yes"),
            (PARAM_SEGMENT, "<script>"),
        ] {
            let mut m = good.clone();
            m.insert(k, v);
            assert_eq!(
                DecisionLog::from_params(|x| m.get(x).copied()),
                Err(DecisionParamError::Malformed(k)),
                "{k}={v}"
            );
        }
        let mut m = good.clone();
        m.remove(PARAM_DECISION);
        assert_eq!(
            DecisionLog::from_params(|x| m.get(x).copied()),
            Err(DecisionParamError::Missing)
        );
    }

    #[test]
    fn probabilities_are_written_compactly_and_read_back() {
        for p in [1.0, 0.5, 0.125, 1e-7, 0.333_333_333_333, 0.999_999_999_9] {
            let s = format_probability(p);
            let back: f64 = s.parse().unwrap();
            assert!((back / p - 1.0).abs() < 1e-9, "{p} -> {s}");
            assert!(s.len() <= 16, "{s}");
        }
        assert_eq!(format_probability(0.5), "5e-1");
        assert_eq!(format_probability(1.0), "1");
    }

    #[test]
    fn fragments_carry_the_decision() {
        let id = DecisionId {
            time_ms: 1,
            random: 2,
        };
        let f = click_fragment("top_pick", Some((&id, ServedBy::Holdout)));
        let loc = format!("https://shop.example/product/x/{f}");
        assert_eq!(fragment_param(&loc, "source"), Some("top_pick"));
        assert_eq!(
            fragment_param(&loc, PARAM_DECISION),
            Some(id.to_string().as_str())
        );
        assert_eq!(fragment_param(&loc, PARAM_HOLDOUT), Some("true"));
        assert_eq!(click_fragment("side", None), "#/?source=side");
        let log = DecisionLog {
            id,
            probability: 0.5,
            round: 1,
            set: 0,
            version: 1,
            arms: 2,
            served_by: ServedBy::Bandit,
            segment: Some("mobile_eu".into()),
        };
        let f = log.click_fragment("top_pick");
        assert_eq!(fragment_param(&f, PARAM_SEGMENT), Some("mobile_eu"));
        assert_eq!(fragment_param(&f, PARAM_HOLDOUT), None);
        assert_eq!(fragment_param("/product/x/#?source=a", "source"), Some("a"));
        assert_eq!(fragment_param("/product/x/?source=a", "source"), None);
        assert_eq!(fragment_param("/p/#/?a&b=", "b"), Some(""));
    }

    #[test]
    fn attribution_window() {
        let id = DecisionId {
            time_ms: 10_000,
            random: 0,
        };
        assert_eq!(attribute(&id, 10_000, 1_000, 0), Attribution::Within);
        assert_eq!(attribute(&id, 11_000, 1_000, 0), Attribution::Within);
        assert_eq!(attribute(&id, 11_001, 1_000, 0), Attribution::Late);
        assert_eq!(attribute(&id, 9_999, 1_000, 0), Attribution::BeforeDecision);
        assert_eq!(attribute(&id, 9_000, 1_000, 1_000), Attribution::Within);
        assert_eq!(
            attribute(&id, i64::MIN, u64::MAX, 0),
            Attribution::BeforeDecision
        );
        assert_eq!(attribute(&id, i64::MAX, 0, 0), Attribution::Late);
    }

    #[test]
    fn serve_probability_sums_to_one_over_the_items() {
        // Three arms, the pinned item is not an arm: pin 0.3, holdout 0.1 uniform.
        let p_best = [0.6, 0.3, 0.1];
        let total: f64 = p_best
            .iter()
            .map(|&p| serve_probability(0.3, false, 0.1, 1.0 / 3.0, p))
            .sum::<f64>()
            + serve_probability(0.3, true, 0.1, 0.0, 0.0);
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        assert_eq!(serve_probability(0.0, false, 0.0, 0.0, 0.25), 0.25);
    }
}
