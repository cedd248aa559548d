//! Priors from item features (the 2015 post's "model priors based on features of catalog
//! images, e.g. category, photographer"): a hierarchical empirical-Bayes refinement of the
//! fitted fresh-item prior.
//!
//! The model: an item of group g (one `key=value` feature, e.g. `category=flowers`) has a
//! click-through rate drawn from a Beta with the group's mean m_g and the global fit's
//! strength s, and the group means scatter around the global mean m with a between-group
//! variance tau^2 per key. From the past arms this module estimates each group's mean as a
//! self-consistent average of the arms' posterior means (not biased by the adaptive
//! allocation, see `group_mean`), its sampling variance v_g, and tau^2 per key by the
//! DerSimonian-Laird moment estimator. A group's mean is then shrunk
//! toward the global mean by its reliability tau^2 / (tau^2 + v_g): a group with little
//! evidence, or a key whose groups do not differ, leaves the global prior unchanged. Several
//! features combine as the reliability-weighted average of their shrunk deviations, which
//! stays between them (no double counting when, say, photographers are nested in categories).
//! The fresh prior keeps the global prior's strength.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Posterior;

/// Most features kept per item (further ones are dropped).
pub const MAX_FEATURES: usize = 4;
/// Longest key or value kept, in bytes (longer ones are cut at a character boundary), so the
/// bounded history stays small in storage.
pub const MAX_FEATURE_LEN: usize = 96;
/// A key needs at least this many groups with evidence before its between-group variance is
/// estimated (with fewer the variance estimate is too noisy to act on).
pub const MIN_GROUPS_PER_KEY: usize = 3;
/// Lowest and highest prior mean a feature adjustment may produce (keeps alpha, beta > 0).
const MEAN_BOUNDS: (f64, f64) = (1e-4, 1.0 - 1e-4);

/// A small, normalised list of (key, value) features of one item: empty keys or values
/// skipped, one value per key (the first given), sorted by key, at most [`MAX_FEATURES`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Features(Vec<(String, String)>);

fn cut(s: &str) -> String {
    let s = s.trim();
    let mut end = s.len().min(MAX_FEATURE_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Features {
    /// Normalised features from (key, value) pairs.
    pub fn new<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Features {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            let (k, v) = (cut(k.as_ref()), cut(v.as_ref()));
            if k.is_empty() || v.is_empty() || out.iter().any(|(ok, _)| *ok == k) {
                continue;
            }
            out.push((k, v));
        }
        out.sort();
        out.truncate(MAX_FEATURES);
        Features(out)
    }

    /// Whether the item has no features.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The (key, value) pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// One group's estimate: its mean's deviation from the global mean, already shrunk, and the
/// reliability it was shrunk by (0: no information, 1: fully trusted).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupEstimate {
    /// Shrunk group mean minus the global mean.
    pub deviation: f64,
    /// tau^2 / (tau^2 + v_g), in [0, 1].
    pub reliability: f64,
}

/// The fitted feature model: per-group shrunk deviations from the global mean.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureModel {
    /// Groups with positive reliability, by (key, value).
    pub groups: BTreeMap<(String, String), GroupEstimate>,
}

/// A group's mean estimate from its arms' (clicks, impressions): the mean m at which the
/// arms' average posterior mean under Beta(m s, (1 - m) s) equals m, in closed form
/// sum c_i / (n_i + s) / sum n_i / (n_i + s), and the weight sum w = sum n_i / (n_i + s).
///
/// Why not the pooled rate: Thompson sampling shows good arms far longer, so pooled clicks
/// over impressions overstate the mean. A posterior mean under the right prior has the prior
/// mean as its expectation however adaptively the impressions were allocated (it is a
/// bounded martingale), so this self-consistent average is not biased by the allocation; and
/// the weights n_i / (n_i + s) are the inverse variances of the arms' observed rates, so it is
/// also the most precise such average. (A beta-binomial maximum likelihood at the global
/// strength was biased in tests when the groups' own strength differs.)
fn group_mean(arms: &[(f64, f64)], s: f64) -> (f64, f64) {
    let num: f64 = arms.iter().map(|&(c, n)| c / (n + s)).sum();
    let w: f64 = arms.iter().map(|&(_, n)| n / (n + s)).sum();
    (num / w, w)
}

/// (clicks, impressions) of the arms of each value of one key.
type Groups<'a> = BTreeMap<&'a str, Vec<(f64, f64)>>;

/// Upper normal quantile of the heterogeneity test a key's groups must pass before they
/// move any prior (1.645: a 5% chance of acting on groups that do not differ per refit;
/// 2.326 gave up part of the gain with categories in tuning, without less harm without).
pub const HETEROGENEITY_Z: f64 = 1.645;

/// The chi-square quantile with `df` degrees of freedom at the normal quantile `z`
/// (Wilson-Hilferty; within about 1% for df >= 2 in the upper tail).
fn chi_square_quantile(df: f64, z: f64) -> f64 {
    let c = 2.0 / (9.0 * df);
    df * (1.0 - c + z * c.sqrt()).powi(3)
}

/// One key's groups fitted at one strength.
struct KeyFit {
    /// Cochran's Q of the group deviations.
    q: f64,
    /// DerSimonian-Laird between-group variance (>= 0).
    tau2: f64,
    /// (mean estimate, deviation from the key's center, sampling variance) per group, in
    /// input order.
    groups: Vec<(f64, f64, f64)>,
}

/// Group deviations, their variances, Q and tau^2 for one key at strength `s`.
fn dersimonian_laird(
    every: &[(f64, f64)],
    arms: &[(&str, Vec<(f64, f64)>)],
    m: f64,
    s: f64,
) -> KeyFit {
    let (center, _) = group_mean(every, s);
    // Each arm's observed rate has variance m(1-m)(n+s)/(n(s+1)) under Beta(m s, (1-m) s),
    // so the weighted group mean has variance m(1-m) / ((s+1) w).
    let groups: Vec<(f64, f64, f64)> = arms
        .iter()
        .map(|(_, a)| {
            let (mg, w) = group_mean(a, s);
            (mg, mg - center, m * (1.0 - m) / ((s + 1.0) * w))
        })
        .collect();
    // tau^2 = (Q - (G - 1)) / (sum w - sum w^2 / sum w), w = 1 / v.
    let w: Vec<f64> = groups.iter().map(|g| 1.0 / g.2).collect();
    let sw: f64 = w.iter().sum();
    let sw2: f64 = w.iter().map(|x| x * x).sum();
    let mid = groups.iter().zip(&w).map(|(g, w)| w * g.1).sum::<f64>() / sw;
    let q: f64 = groups
        .iter()
        .zip(&w)
        .map(|(g, w)| w * (g.1 - mid).powi(2))
        .sum();
    let df = groups.len() as f64 - 1.0;
    let tau2 = ((q - df) / (sw - sw2 / sw)).max(0.0);
    let ok = q.is_finite() && tau2.is_finite();
    KeyFit {
        q: if ok { q } else { 0.0 },
        tau2: if ok { tau2 } else { 0.0 },
        groups,
    }
}

/// Arms by key, then by value: (clicks, impressions), arms without impressions skipped.
fn by_key<'a>(
    arms: impl IntoIterator<Item = (&'a Features, u64, u64)>,
) -> BTreeMap<&'a str, Groups<'a>> {
    let mut by_key: BTreeMap<&str, Groups> = BTreeMap::new();
    for (features, c, n) in arms {
        if n == 0 {
            continue;
        }
        for (k, v) in features.iter() {
            by_key
                .entry(k)
                .or_default()
                .entry(v)
                .or_default()
                .push((c.min(n) as f64, n as f64));
        }
    }
    by_key
}

/// What the fit of one key found.
struct KeyOutcome {
    /// (Q, its critical value), or None when the key has too few groups to test.
    q_test: Option<(f64, f64)>,
    /// Whether the groups differ (only then do they move priors).
    differ: bool,
    /// Between-group variance: the final fit's when the groups differ, the first pass's
    /// otherwise, 0 untested.
    tau2: f64,
    /// (mean estimate, shrunk estimate) per group, in input order; the reliability is 0
    /// unless the groups differ.
    groups: Vec<(f64, GroupEstimate)>,
}

/// Fits one key's groups (`arms`, by value) given the global mean `m` and strength `s`.
fn fit_key(arms: &[(&str, Vec<(f64, f64)>)], m: f64, s: f64) -> KeyOutcome {
    let unused = |groups: Vec<(f64, f64, f64)>, q_test, tau2| KeyOutcome {
        q_test,
        differ: false,
        tau2,
        groups: groups
            .into_iter()
            .map(|(mg, _, _)| {
                let none = GroupEstimate {
                    deviation: 0.0,
                    reliability: 0.0,
                };
                (mg, none)
            })
            .collect(),
    };
    if arms.len() < MIN_GROUPS_PER_KEY {
        let means = arms
            .iter()
            .map(|(_, a)| (group_mean(a, s).0, 0.0, 0.0))
            .collect();
        return unused(means, None, 0.0);
    }
    // Deviations are taken from the same estimator over all of the key's arms, so that
    // groups that do not differ deviate by noise only.
    let every: Vec<(f64, f64)> = arms.iter().flat_map(|(_, a)| a).copied().collect();
    // First pass at the global strength: the rates' whole spread counts as noise around
    // each group mean, so the test below is conservative.
    let first = dersimonian_laird(&every, arms, m, s);
    let df = arms.len() as f64 - 1.0;
    let critical = chi_square_quantile(df, HETEROGENEITY_Z);
    // Act only when the groups differ beyond chance (Cochran's Q test at HETEROGENEITY_Z):
    // a tau^2 fitted to noise moves every fresh prior by noise.
    if !(first.q > critical && first.tau2 > 0.0) {
        return unused(first.groups, Some((first.q, critical)), first.tau2);
    }
    // Then the variance the groups explain is no longer noise within a group: refit with
    // the within-group strength from var = m(1-m)/(s+1) = within + tau^2.
    let total = m * (1.0 - m) / (s + 1.0);
    let within = (total - first.tau2).max(total / 4.0);
    let s_within = (m * (1.0 - m) / within - 1.0).max(s);
    let fit = dersimonian_laird(&every, arms, m, s_within);
    let tau2 = fit.tau2.max(first.tau2);
    let groups = fit
        .groups
        .into_iter()
        .map(|(mg, d, v)| {
            let r = tau2 / (tau2 + v);
            let estimate = GroupEstimate {
                deviation: r * d,
                reliability: r,
            };
            (mg, estimate)
        })
        .collect();
    KeyOutcome {
        q_test: Some((first.q, critical)),
        differ: true,
        tau2,
        groups,
    }
}

/// One key of a fit, for display: whether its groups differ, and each group's evidence,
/// estimate and the prior mean a fresh item of the group gets (see [`FeatureModel::summary`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeySummary {
    /// The feature key, e.g. `category`.
    pub key: String,
    /// Cochran's Q of the groups and the value it must exceed (the chi-square quantile at
    /// [`HETEROGENEITY_Z`]); `None` with fewer than [`MIN_GROUPS_PER_KEY`] groups (not
    /// tested, the key is not used).
    pub q_test: Option<(f64, f64)>,
    /// Whether the groups differ beyond chance (Q above its critical value and a positive
    /// tau^2): only then do the key's groups move any prior.
    pub differ: bool,
    /// The between-group variance tau^2 of the group means (of the refit when the groups
    /// differ, of the test's pass otherwise; 0 when not tested).
    pub tau2: f64,
    /// The groups with evidence, by value.
    pub groups: Vec<GroupSummary>,
}

/// One group (`key=value`) of a fit, for display.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupSummary {
    /// The feature value, e.g. `flowers`.
    pub value: String,
    /// Arms with impressions behind the estimate.
    pub arms: usize,
    /// Their impressions.
    pub impressions: u64,
    /// Their clicks.
    pub clicks: u64,
    /// The group's estimated rate before shrinkage (the allocation-robust average of
    /// `group_mean`, not clicks / impressions).
    pub rate: f64,
    /// The prior mean a fresh item of this group gets when its other features carry no
    /// information: the global mean moved by the group's shrunk deviation (the global mean
    /// itself unless the key's groups differ).
    pub prior_mean: f64,
    /// The reliability the deviation was shrunk by, tau^2 / (tau^2 + v), in [0, 1] (0 unless
    /// the key's groups differ; more evidence, more weight).
    pub reliability: f64,
}

impl FeatureModel {
    /// Fits the model to `arms` ((features, clicks, impressions) of past and current arms)
    /// given the global prior `global` (the full fit, not a weakened one). Empty when the
    /// global prior is the no-data fallback Beta(1, 1) or no key has enough groups.
    pub fn fit<'a>(
        global: Posterior,
        arms: impl IntoIterator<Item = (&'a Features, u64, u64)>,
    ) -> FeatureModel {
        let mut model = FeatureModel::default();
        if global == Posterior::UNIFORM {
            return model;
        }
        let m = global.mean();
        let s = global.alpha + global.beta;
        for (key, groups) in by_key(arms) {
            let arms: Vec<(&str, Vec<(f64, f64)>)> = groups.into_iter().collect();
            let outcome = fit_key(&arms, m, s);
            if !outcome.differ {
                continue;
            }
            for ((value, _), (_, estimate)) in arms.iter().zip(outcome.groups) {
                model
                    .groups
                    .insert((key.to_string(), value.to_string()), estimate);
            }
        }
        model
    }

    /// What [`FeatureModel::fit`] finds in `arms` given `global`, key by key (sorted), for
    /// display: the heterogeneity test, tau^2 and every group with evidence. Empty when
    /// `global` is Beta(1, 1) (too little data: the fit is empty too). A group's
    /// [`GroupSummary::prior_mean`] is the mean of [`FeatureModel::prior`] at `global` for an
    /// item with that feature alone.
    pub fn summary<'a>(
        global: Posterior,
        arms: impl IntoIterator<Item = (&'a Features, u64, u64)>,
    ) -> Vec<KeySummary> {
        if global == Posterior::UNIFORM {
            return Vec::new();
        }
        let m = global.mean();
        let s = global.alpha + global.beta;
        by_key(arms)
            .into_iter()
            .map(|(key, groups)| {
                let arms: Vec<(&str, Vec<(f64, f64)>)> = groups.into_iter().collect();
                let outcome = fit_key(&arms, m, s);
                let groups = arms
                    .iter()
                    .zip(outcome.groups)
                    .map(|((value, a), (rate, g))| GroupSummary {
                        value: value.to_string(),
                        arms: a.len(),
                        impressions: a.iter().map(|&(_, n)| n as u64).sum(),
                        clicks: a.iter().map(|&(c, _)| c as u64).sum(),
                        rate,
                        prior_mean: if g.reliability > 0.0 {
                            (m + g.deviation).clamp(MEAN_BOUNDS.0, MEAN_BOUNDS.1)
                        } else {
                            m
                        },
                        reliability: g.reliability,
                    })
                    .collect();
                KeySummary {
                    key: key.to_string(),
                    q_test: outcome.q_test,
                    differ: outcome.differ,
                    tau2: outcome.tau2,
                    groups,
                }
            })
            .collect()
    }

    /// The prior of a fresh item with `features`: `base` (the global prior, possibly
    /// weakened) with its mean moved by the reliability-weighted average of the item's group
    /// deviations, at the same strength. Exactly `base` when no group of the item has
    /// evidence.
    pub fn prior(&self, base: Posterior, features: &Features) -> Posterior {
        let (mut num, mut den) = (0.0, 0.0);
        for (k, v) in features.iter() {
            if let Some(g) = self.groups.get(&(k.to_string(), v.to_string())) {
                num += g.reliability * g.deviation;
                den += g.reliability;
            }
        }
        if den <= 0.0 {
            return base;
        }
        let s = base.alpha + base.beta;
        let mean = (base.mean() + num / den).clamp(MEAN_BOUNDS.0, MEAN_BOUNDS.1);
        Posterior {
            alpha: mean * s,
            beta: (1.0 - mean) * s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ArmHistory;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use rand_distr::{Beta, Binomial, Distribution, Normal};

    fn cat(c: usize) -> Features {
        Features::new([("category", format!("c{c}"))])
    }

    /// 256 arms over `groups` categories; category c's items have rates from Beta with mean
    /// `means[c]` and strength 60; each arm shown `n` times. Returns the history.
    fn history(means: &[f64], n: u64, seed: u64) -> ArmHistory {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut h = ArmHistory::default();
        for i in 0..crate::history::HISTORY_CAPACITY {
            let c = i % means.len();
            let p = Beta::new(means[c] * 60.0, (1.0 - means[c]) * 60.0)
                .unwrap()
                .sample(&mut rng);
            let clicks = Binomial::new(n, p).unwrap().sample(&mut rng);
            h.push_with(clicks, n, cat(c));
        }
        h
    }

    fn model(h: &ArmHistory) -> (Posterior, FeatureModel) {
        let global = h.fit([]);
        let fm = FeatureModel::fit(global, h.with_features());
        (global, fm)
    }

    #[test]
    fn chi_square_quantiles_match_tables() {
        // 95% points of chi-square with 2, 9, 19 and 50 degrees of freedom.
        for (df, want) in [(2.0, 5.991), (9.0, 16.919), (19.0, 30.144), (50.0, 67.505)] {
            let got = chi_square_quantile(df, 1.645);
            assert!((got - want).abs() < 0.02 * want, "df {df}: {got}");
        }
    }

    #[test]
    fn features_are_normalised_and_bounded() {
        let f = Features::new([
            ("photographer", "ann"),
            ("category", ""),
            ("category", "flowers"),
            ("category", "trees"),
            ("", "x"),
        ]);
        let pairs: Vec<(&str, &str)> = f.iter().collect();
        assert_eq!(
            pairs,
            vec![("category", "flowers"), ("photographer", "ann")]
        );
        let long = "é".repeat(100);
        let f = Features::new((0..10).map(|i| (format!("k{i}"), long.clone())));
        assert_eq!(f.iter().count(), MAX_FEATURES);
        assert!(f.iter().all(|(_, v)| v.len() <= MAX_FEATURE_LEN));
        assert!(Features::new(Vec::<(String, String)>::new()).is_empty());
    }

    #[test]
    fn differing_categories_pull_the_prior_to_the_category_rate() {
        // 8 categories with means spread over 0.01..0.08; 32 arms each with 2,000
        // impressions. A category's mean estimate has sd about
        // sqrt(var(rate) / 32) <= sqrt(0.08 * 0.92 / 61 / 32) ~ 0.006 (the binomial noise
        // is small beside it); shrinkage adds a bias of (1 - r) * deviation, small because
        // the spread of the means is large against that sd. Allow 3.5 sd.
        let means = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08];
        for seed in 1..=5 {
            let h = history(&means, 2000, seed);
            let (global, fm) = model(&h);
            for (c, &mu) in means.iter().enumerate() {
                let p = fm.prior(global, &cat(c));
                let sd = (mu * (1.0 - mu) / 61.0 / 32.0).sqrt();
                assert!(
                    (p.mean() - mu).abs() < 3.5 * sd + 0.002,
                    "seed {seed} c{c}: {} vs {mu}",
                    p.mean()
                );
                // The strength is the global fit's.
                let s = global.alpha + global.beta;
                assert!((p.alpha + p.beta - s).abs() < 1e-9 * s);
            }
        }
    }

    #[test]
    fn equal_categories_leave_the_global_mean() {
        // All 8 categories share the mean 0.032: the shrunk means must stay within the noise
        // of a category's mean estimate (sd ~ sqrt(0.032 * 0.968 / 61 / 32) ~ 0.004) of the
        // global mean; shrinkage makes them much closer on average, so allow 2 sd for every
        // category on every seed.
        let means = [0.032; 8];
        let sd = (0.032f64 * 0.968 / 61.0 / 32.0).sqrt();
        let mut total = 0.0;
        let mut count = 0.0;
        for seed in 1..=10 {
            let h = history(&means, 2000, 100 + seed);
            let (global, fm) = model(&h);
            for c in 0..8 {
                let d = fm.prior(global, &cat(c)).mean() - global.mean();
                assert!(d.abs() < 2.0 * sd, "seed {seed} c{c}: {d}");
                total += d.abs();
                count += 1.0;
            }
        }
        // Unshrunk, the mean |deviation| would be about 0.8 sd; shrinkage must cut it.
        assert!(total / count < 0.5 * sd, "{}", total / count);
    }

    #[test]
    fn an_unseen_group_or_no_features_gets_the_global_prior_exactly() {
        let means = [0.01, 0.03, 0.06, 0.09];
        let h = history(&means, 1000, 3);
        let (global, fm) = model(&h);
        assert!(!fm.groups.is_empty());
        assert_eq!(fm.prior(global, &cat(99)), global);
        assert_eq!(fm.prior(global, &Features::default()), global);
        assert_eq!(
            fm.prior(global, &Features::new([("photographer", "nobody")])),
            global
        );
        // Too little data for a global fit: no feature model at all.
        let mut tiny = ArmHistory::default();
        tiny.push_with(1, 10, cat(0));
        assert!(FeatureModel::fit(tiny.fit([]), tiny.with_features())
            .groups
            .is_empty());
    }

    #[test]
    fn several_features_combine_between_their_groups() {
        // Categories differ; photographers (crossed with them) do not.
        let mut rng = SmallRng::seed_from_u64(11);
        let mut h = ArmHistory::default();
        let means: [f64; 3] = [0.015, 0.03, 0.06];
        let noise = Normal::new(0.0f64, 1.0).unwrap();
        for i in 0..crate::history::HISTORY_CAPACITY {
            let c = i % 3;
            let p = (means[c] * (0.2 * noise.sample(&mut rng)).exp()).min(0.5);
            let clicks = Binomial::new(2000, p).unwrap().sample(&mut rng);
            let f = Features::new([
                ("category", format!("c{c}")),
                ("photographer", format!("p{}", (i / 3) % 5)),
            ]);
            h.push_with(clicks, 2000, f);
        }
        let (global, fm) = model(&h);
        for (c, &mu) in means.iter().enumerate() {
            let both = Features::new([
                ("category", format!("c{c}")),
                ("photographer", "p1".to_string()),
            ]);
            let only = fm.prior(global, &cat(c)).mean();
            let m = fm.prior(global, &both).mean();
            // The photographer carries (almost) no reliability, so the category decides.
            assert!((m - only).abs() < 0.25 * (only - global.mean()).abs() + 1e-3);
            assert!((only - mu).abs() < 0.15 * mu, "c{c}: {only} vs {mu}");
        }
    }

    /// The summary of `h`'s fit, with the global prior.
    fn summary(h: &ArmHistory) -> (Posterior, Vec<KeySummary>) {
        let global = h.fit([]);
        (global, FeatureModel::summary(global, h.with_features()))
    }

    #[test]
    fn the_summary_agrees_with_the_fit_and_counts_the_evidence() {
        let means = [0.01, 0.02, 0.04, 0.08];
        let h = history(&means, 1000, 21);
        let (global, fm) = model(&h);
        let (_, keys) = summary(&h);
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(k.key, "category");
        let (q, critical) = k.q_test.unwrap();
        assert!(k.differ && q > critical && k.tau2 > 0.0, "{k:?}");
        assert_eq!(k.groups.len(), 4);
        for (c, g) in k.groups.iter().enumerate() {
            assert_eq!(g.value, format!("c{c}"));
            // 256 arms over 4 categories, 1,000 impressions each.
            assert_eq!(g.arms, 64);
            assert_eq!(g.impressions, 64_000);
            let clicks: u64 = h
                .with_features()
                .filter(|(f, _, _)| *f == &cat(c))
                .map(|(_, c, _)| c)
                .sum();
            assert_eq!(g.clicks, clicks);
            // What a fresh item of the group gets, and the weight it was shrunk by.
            let prior = fm.prior(global, &cat(c)).mean();
            assert!(
                (g.prior_mean - prior).abs() < 1e-12,
                "c{c}: {g:?} vs {prior}"
            );
            let fitted = fm.groups[&("category".to_string(), format!("c{c}"))];
            assert_eq!(g.reliability, fitted.reliability);
            assert!(g.reliability > 0.0 && g.reliability < 1.0);
            // The raw estimate is near the category's mean (sd ~ sqrt(0.08 / 61 / 64) ~
            // 0.0045 at most), and the shrunk one lies between it and the global mean.
            assert!((g.rate - means[c]).abs() < 0.015, "c{c}: {}", g.rate);
            assert!((g.prior_mean - global.mean()) * (g.rate - global.mean()) >= 0.0);
        }
        // Too little data for a global fit: nothing to show, as nothing is fitted.
        let mut tiny = ArmHistory::default();
        tiny.push_with(1, 10, cat(0));
        assert!(FeatureModel::summary(tiny.fit([]), tiny.with_features()).is_empty());
    }

    #[test]
    fn a_group_with_more_evidence_is_shrunk_less() {
        // Four categories with different means; c0 has 4 times the impressions per arm.
        let mut rng = SmallRng::seed_from_u64(5);
        let means = [0.02, 0.03, 0.05, 0.07];
        let mut h = ArmHistory::default();
        for i in 0..crate::history::HISTORY_CAPACITY {
            let c = i % means.len();
            let n = if c == 0 { 2000 } else { 500 };
            let p = Beta::new(means[c] * 200.0, (1.0 - means[c]) * 200.0)
                .unwrap()
                .sample(&mut rng);
            h.push_with(Binomial::new(n, p).unwrap().sample(&mut rng), n, cat(c));
        }
        let (_, keys) = summary(&h);
        let k = &keys[0];
        assert!(k.differ, "{k:?}");
        // Its reliability (the fraction of its deviation kept) is the highest.
        let r: Vec<f64> = k.groups.iter().map(|g| g.reliability).collect();
        assert!(r[1..].iter().all(|&x| x < r[0]), "{r:?}");
        assert!(r.iter().all(|&x| x > 0.0 && x < 1.0), "{r:?}");
        // With the same data but c0's arms cut to the others' impressions, c0 is shrunk more.
        let mut less = ArmHistory::default();
        for (f, c, n) in h.with_features() {
            let (c, n) = if n == 2000 { (c / 4, 500) } else { (c, n) };
            less.push_with(c, n, f.clone());
        }
        let (_, fewer) = summary(&less);
        assert!(fewer[0].groups[0].reliability < r[0], "{fewer:?}");
    }

    #[test]
    fn without_heterogeneity_every_group_gets_the_global_mean() {
        let means = [0.032; 6];
        let h = history(&means, 2000, 7);
        let (global, keys) = summary(&h);
        let k = &keys[0];
        let (q, critical) = k.q_test.unwrap();
        assert!(!k.differ && q <= critical, "{k:?}");
        for g in &k.groups {
            assert_eq!(g.prior_mean, global.mean());
            assert_eq!(g.reliability, 0.0);
            assert!(g.rate > 0.0 && g.rate != global.mean());
        }
        // Two groups are too few to test: shown, untested, unused.
        let h = history(&[0.01, 0.09], 2000, 8);
        let (global, keys) = summary(&h);
        let k = &keys[0];
        assert_eq!((k.q_test, k.differ, k.tau2), (None, false, 0.0));
        assert_eq!(k.groups.len(), 2);
        assert!(k.groups[0].rate < 0.03 && k.groups[1].rate > 0.06, "{k:?}");
        assert!(k.groups.iter().all(|g| g.prior_mean == global.mean()));
        assert!(model(&h).1.groups.is_empty());
    }
}
