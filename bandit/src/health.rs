//! Health of the decision log: does each item get the impressions its logged probabilities
//! promise? A sample-ratio check per item, from the impressions of each published version of
//! the slot state and that version's serving probabilities.

use serde::{Deserialize, Serialize};

use crate::special::normal_two_sided_p;

/// Significance level of the check, before the correction for the number of items.
pub const ALPHA: f64 = 0.001;
/// Least expected impressions before an item is tested (the normal approximation needs some).
pub const MIN_EXPECTED: f64 = 20.0;

/// One item's impressions against what the logged probabilities promise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ExposureTally {
    /// Logged impressions of the item.
    pub observed: u64,
    /// Their expected number: the sum over versions of that version's logged impressions
    /// times the item's serving probability in it.
    pub expected: f64,
    /// The variance of `observed` under the logged probabilities (a sum of binomials).
    pub variance: f64,
}

impl ExposureTally {
    /// Adds `decisions` logged impressions of one version, of which `observed` showed this
    /// item, whose serving probability in that version was `q`.
    pub fn add(&mut self, decisions: u64, q: f64, observed: u64) {
        let n = decisions as f64;
        let q = q.clamp(0.0, 1.0);
        self.observed = self.observed.saturating_add(observed);
        self.expected += n * q;
        self.variance += n * q * (1.0 - q);
    }
}

/// An item whose impressions do not match its logged probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mismatch {
    /// Catalog item id.
    pub item: String,
    /// Logged impressions.
    pub observed: u64,
    /// Expected impressions.
    pub expected: f64,
    /// Two-sided p-value of the difference (normal approximation).
    pub p_value: f64,
    /// What commonly causes a difference in this direction.
    pub reason: String,
}

/// The items whose observed impressions differ from the expected ones at `ALPHA`, corrected
/// for the number of items tested (Bonferroni), each with a plain-language reason.
pub fn mismatches<'a>(
    tallies: impl IntoIterator<Item = (&'a str, &'a ExposureTally)>,
) -> Vec<Mismatch> {
    let tested: Vec<(&str, &ExposureTally)> = tallies
        .into_iter()
        .filter(|(_, t)| t.expected >= MIN_EXPECTED)
        .collect();
    let level = ALPHA / tested.len().max(1) as f64;
    tested
        .into_iter()
        .filter_map(|(item, t)| {
            // A quarter impression of continuity keeps the variance positive for items a
            // version all but never shows.
            let z = (t.observed as f64 - t.expected) / (t.variance + 0.25).sqrt();
            let p = normal_two_sided_p(z);
            (p < level).then(|| Mismatch {
                item: item.to_string(),
                observed: t.observed,
                expected: t.expected,
                p_value: p,
                reason: if z > 0.0 {
                    "more impressions than its logged probabilities promise: a cache may be \
                     serving one rendered page (one decision) to many visitors, or pages send \
                     the impression signal twice"
                        .to_string()
                } else {
                    "fewer impressions than its logged probabilities promise: impression \
                     signals are being lost for it (a blocked or late Divolte tag, pages left \
                     before it loaded), or the page replaces the pick after the decision"
                        .to_string()
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use rand_distr::{Binomial, Distribution};

    /// Logged impressions drawn from the promised probabilities over a few versions.
    fn honest(rng: &mut SmallRng, versions: &[(u64, [f64; 4])]) -> [ExposureTally; 4] {
        let mut t = [ExposureTally::default(); 4];
        for (n, q) in versions {
            // A multinomial draw as a chain of binomials.
            let (mut left, mut mass) = (*n, 1.0);
            for i in 0..4 {
                let c = if i == 3 {
                    left
                } else {
                    Binomial::new(left, (q[i] / mass).min(1.0))
                        .unwrap()
                        .sample(rng)
                };
                left -= c;
                mass -= q[i];
                t[i].add(*n, q[i], c);
            }
        }
        t
    }

    const VERSIONS: [(u64, [f64; 4]); 3] = [
        (2_000, [0.25, 0.25, 0.25, 0.25]),
        (3_000, [0.55, 0.25, 0.15, 0.05]),
        (5_000, [0.85, 0.1, 0.04, 0.01]),
    ];

    fn named(t: &[ExposureTally; 4]) -> Vec<(&'static str, &ExposureTally)> {
        ["a", "b", "c", "d"].into_iter().zip(t.iter()).collect()
    }

    /// With honest logs a false alarm has probability at most ALPHA per run (Bonferroni), so
    /// over 500 seeded runs the count is at most Binomial(500, 0.001): 5 or more has
    /// probability below 3e-6.
    #[test]
    fn honest_logs_rarely_alarm() {
        let mut rng = SmallRng::seed_from_u64(5);
        let alarms: usize = (0..500)
            .map(|_| mismatches(named(&honest(&mut rng, &VERSIONS))).len())
            .sum();
        assert!(alarms < 5, "{alarms} false alarms");
    }

    #[test]
    fn a_cached_pick_and_lost_signals_are_caught_with_their_reasons() {
        let mut rng = SmallRng::seed_from_u64(6);
        // A cache served the page of one decision (item "c") 400 more times.
        let mut t = honest(&mut rng, &VERSIONS);
        t[2].observed += 400;
        let m = mismatches(named(&t));
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].item, "c");
        assert!(m[0].reason.contains("cache"));
        // Item "b"'s impression signals are lost one time in three.
        let mut t = honest(&mut rng, &VERSIONS);
        t[1].observed -= t[1].observed / 3;
        let m = mismatches(named(&t));
        assert!(
            m.iter().any(|m| m.item == "b" && m.reason.contains("lost")),
            "{m:?}"
        );
        // Too little evidence is not tested at all.
        let mut small = ExposureTally::default();
        small.add(10, 0.5, 10);
        assert!(mismatches([("x", &small)]).is_empty());
    }
}
