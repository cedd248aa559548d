//! Offline evaluation of policies on simulated catalogs: expected regret against always
//! showing the catalog's best item.
//!
//! A run draws a catalog of hidden click-through rates, starts an [`ArmSet`] on a random set
//! of n items and serves T impressions. Each impression is chosen by the policy from the
//! state as of the last applied feedback batch (`delay` impressions per batch), produces a
//! Bernoulli click that feeds the model, and adds `best CTR - CTR of the shown item` to the
//! regret. Under a screening policy ([`crate::policy::Ranking::Screen`]) every applied
//! batch is followed by [`ArmSet::retire_behind`] and a refill to n, as the worker must do.
//! Using the true rates for the regret (not the sampled clicks) removes the click noise from
//! the measurement; only the policy's own randomness remains.
//!
//! Common random numbers: for one seed every policy sees the same catalog, the same initial
//! set and the same decision stream seed, so differences between policies are paired.

use std::fmt;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, StandardNormal};

use crate::features::Features;
use crate::policy::UnknownPolicy;
use crate::{ArmSet, PriorPolicy, RotationConfig};

/// Where the hidden click-through rates of a simulated catalog come from.
#[derive(Debug, Clone, PartialEq)]
pub enum CtrSource {
    /// Independent draws from Beta(a, b), one per item.
    Beta {
        /// First shape parameter.
        a: f64,
        /// Second shape parameter.
        b: f64,
    },
    /// Exactly these rates (the catalog size must match).
    Fixed(Vec<f64>),
}

/// One simulated workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Items in the catalog.
    pub catalog: usize,
    /// Hidden click-through rates.
    pub ctr: CtrSource,
    /// Arms in the set (n).
    pub arms: usize,
    /// Impressions per round (X).
    pub interval: u64,
    /// Impressions in the whole run (T).
    pub impressions: u64,
    /// Impressions per feedback batch (D); 0 and 1 both mean immediate feedback.
    pub delay: u64,
    /// Rounds a retired item stays out of the set.
    pub cooldown: u64,
    /// Points of the regret-over-time curve (at most T).
    pub checkpoints: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            catalog: 500,
            ctr: CtrSource::Beta { a: 2.0, b: 60.0 },
            arms: 8,
            interval: 2000,
            impressions: 400_000,
            delay: 0,
            cooldown: 5,
            checkpoints: 100,
        }
    }
}

/// Categories of a simulated catalog, for feature priors: each item falls in one of `count`
/// categories uniformly at random, and its rate is its Beta draw times its category's effect
/// exp(N(0, spread^2)), the effects normalised to average 1 over the catalog's items (so the
/// mean rate is unchanged), capped at [`MAX_SIMULATED_CTR`]. Spread 0: categories do not
/// matter (the rates are exactly the workload's). The arms carry the feature
/// `category=cK`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Categories {
    /// Number of categories (at least 1).
    pub count: usize,
    /// Standard deviation of the log category effect (finite, >= 0).
    pub spread: f64,
}

/// Highest click-through rate a category effect may produce.
pub const MAX_SIMULATED_CTR: f64 = 0.95;

/// A policy the evaluator can run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EvalPolicy {
    /// Thompson sampling with this prior policy (rotation ranks with the same posteriors).
    Thompson(PriorPolicy),
    /// Uniform choice within the set; rotation as the shop's (reset, Beta(1, 1)).
    Uniform,
    /// Always the set's truly best item; rotation as the shop's. Isolates the cost of the
    /// rotation itself (the best item may not be in the set).
    OracleInSet,
}

impl EvalPolicy {
    /// The prior policy that drives rotation (and, for Thompson, the picks).
    pub fn prior_policy(&self) -> PriorPolicy {
        match self {
            EvalPolicy::Thompson(p) => *p,
            EvalPolicy::Uniform | EvalPolicy::OracleInSet => PriorPolicy::RESET,
        }
    }
}

impl FromStr for EvalPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "uniform" => Ok(EvalPolicy::Uniform),
            "oracle-in-set" => Ok(EvalPolicy::OracleInSet),
            other => other.parse().map(EvalPolicy::Thompson),
        }
    }
}

impl fmt::Display for EvalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalPolicy::Thompson(p) => p.fmt(f),
            EvalPolicy::Uniform => f.write_str("uniform"),
            EvalPolicy::OracleInSet => f.write_str("oracle-in-set"),
        }
    }
}

/// A workload the evaluator cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The catalog has no items.
    #[error("the catalog must have at least one item")]
    EmptyCatalog,
    /// The set has no arms.
    #[error("the arm set needs at least one arm (n >= 1)")]
    NoArms,
    /// A round of zero impressions never ends.
    #[error("the round interval X must be at least 1 impression")]
    ZeroInterval,
    /// Nothing to serve.
    #[error("the run needs at least 1 impression")]
    NoImpressions,
    /// The CTR distribution is not a proper Beta.
    #[error("invalid CTR distribution Beta({a}, {b}): both parameters must be finite and > 0")]
    BadCtrBeta {
        /// First shape parameter.
        a: f64,
        /// Second shape parameter.
        b: f64,
    },
    /// Fixed rates that do not fit the catalog.
    #[error("fixed CTRs must be {catalog} rates in [0, 1], got {got} values")]
    BadFixedCtrs {
        /// Catalog size.
        catalog: usize,
        /// Values given.
        got: usize,
    },
    /// Summaries need at least one seed.
    #[error("at least one seed is needed")]
    NoSeeds,
    /// Categories that cannot be simulated.
    #[error("invalid categories: {count} categories with spread {spread}; need at least 1 category and a finite spread >= 0")]
    BadCategories {
        /// Number of categories asked for.
        count: usize,
        /// Spread asked for.
        spread: f64,
    },
}

/// The outcome of one policy on one seed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Expected regret over the whole run.
    pub regret: f64,
    /// Cumulative expected regret at each checkpoint of [`checkpoints`].
    pub curve: Vec<f64>,
    /// Rounds completed.
    pub rounds: u64,
    /// Catalog's best click-through rate.
    pub best_ctr: f64,
}

/// Mean and two-sided 95% Student-t interval of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TInterval {
    /// Sample mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1 denominator); 0 for one value.
    pub sd: f64,
    /// mean -+ t(0.975, n - 1) * sd / sqrt(n); `None` with fewer than two values.
    pub ci95: Option<(f64, f64)>,
}

/// One policy's results over all seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyReport {
    /// The name it was asked for by.
    pub name: String,
    /// The policy.
    pub policy: EvalPolicy,
    /// Regret per seed, in seed order.
    pub per_seed: Vec<f64>,
    /// Mean and 95% t-interval over seeds.
    pub summary: TInterval,
    /// Mean cumulative regret over seeds at each checkpoint.
    pub curve: Vec<f64>,
}

/// Results of several policies on one workload with the same seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The workload.
    pub workload: Workload,
    /// Seeds used, in order.
    pub seeds: Vec<u64>,
    /// Impression counts of the curve points.
    pub checkpoints: Vec<u64>,
    /// One entry per policy, in the order asked.
    pub policies: Vec<PolicyReport>,
}

impl Workload {
    /// Checks that the workload can run.
    pub fn validate(&self) -> Result<(), EvalError> {
        if self.catalog == 0 {
            return Err(EvalError::EmptyCatalog);
        }
        if self.arms == 0 {
            return Err(EvalError::NoArms);
        }
        if self.interval == 0 {
            return Err(EvalError::ZeroInterval);
        }
        if self.impressions == 0 {
            return Err(EvalError::NoImpressions);
        }
        match &self.ctr {
            CtrSource::Beta { a, b } => {
                if Beta::new(*a, *b).is_err() || !a.is_finite() || !b.is_finite() {
                    return Err(EvalError::BadCtrBeta { a: *a, b: *b });
                }
            }
            CtrSource::Fixed(v) => {
                if v.len() != self.catalog || !v.iter().all(|p| (0.0..=1.0).contains(p)) {
                    return Err(EvalError::BadFixedCtrs {
                        catalog: self.catalog,
                        got: v.len(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Independent random streams derived from one seed (SplitMix64 finaliser), so the catalog,
/// the initial set and the decisions do not share draws.
pub(crate) fn stream(seed: u64, which: u64) -> SmallRng {
    let mut z = seed
        .wrapping_add(which.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    SmallRng::seed_from_u64(z ^ (z >> 31))
}

/// The hidden click-through rates of the catalog for `seed` (the same for every policy).
pub fn catalog_ctrs(workload: &Workload, seed: u64) -> Result<Vec<f64>, EvalError> {
    workload.validate()?;
    Ok(match &workload.ctr {
        CtrSource::Fixed(v) => v.clone(),
        CtrSource::Beta { a, b } => {
            let dist = Beta::new(*a, *b).map_err(|_| EvalError::BadCtrBeta { a: *a, b: *b })?;
            let mut rng = stream(seed, 0);
            (0..workload.catalog)
                .map(|_| dist.sample(&mut rng))
                .collect()
        }
    })
}

/// The catalog's rates and each item's category for `seed`: without `categories` the rates
/// of [`catalog_ctrs`] and no categories; with them, those rates times the category effects
/// (see [`Categories`]). The categories and effects come from their own random streams, so
/// the items' base draws are the same with and without categories.
pub fn categorized_ctrs(
    workload: &Workload,
    categories: Option<Categories>,
    seed: u64,
) -> Result<(Vec<f64>, Vec<usize>), EvalError> {
    let mut ctr = catalog_ctrs(workload, seed)?;
    let Some(cats) = categories else {
        return Ok((ctr, Vec::new()));
    };
    if cats.count == 0 || !cats.spread.is_finite() || cats.spread < 0.0 {
        return Err(EvalError::BadCategories {
            count: cats.count,
            spread: cats.spread,
        });
    }
    let mut rng = stream(seed, 3);
    let of: Vec<usize> = (0..ctr.len())
        .map(|_| rng.random_range(0..cats.count))
        .collect();
    if cats.spread > 0.0 {
        let mut rng = stream(seed, 4);
        let effect: Vec<f64> = (0..cats.count)
            .map(|_| {
                let z: f64 = rng.sample(StandardNormal);
                (cats.spread * z).exp()
            })
            .collect();
        let norm = of.iter().map(|&c| effect[c]).sum::<f64>() / of.len().max(1) as f64;
        for (p, &c) in ctr.iter_mut().zip(&of) {
            *p = (*p * effect[c] / norm).min(MAX_SIMULATED_CTR);
        }
    }
    Ok((ctr, of))
}

/// Impression counts at which the regret curve is sampled: `checkpoints` points spread
/// evenly up to T (fewer if T is smaller), the last one at T.
pub fn checkpoints(workload: &Workload) -> Vec<u64> {
    let t = workload.impressions;
    let c = (workload.checkpoints.max(1) as u64).min(t.max(1));
    (1..=c)
        .map(|k| ((k as u128 * t as u128).div_ceil(c as u128)) as u64)
        .collect()
}

/// A Beta sampler for each arm's current posterior, rebuilt only when its counts change:
/// building a sampler costs about as much as a draw, and counts change at most once per batch.
fn sampler(set: &ArmSet, k: usize, policy: &PriorPolicy) -> Option<Beta<f64>> {
    let a = &set.arms[k];
    let p = policy.posterior(a.prior, a.clicks, a.impressions);
    Beta::new(p.alpha, p.beta).ok()
}

/// Runs one policy on one seed.
pub fn run_one(workload: &Workload, policy: EvalPolicy, seed: u64) -> Result<RunResult, EvalError> {
    run_one_with(workload, None, policy, seed)
}

/// Runs one policy on one seed of a catalog with `categories` (see [`Categories`]); the arms
/// carry their category as a feature, which priors use under
/// [`crate::PriorPolicy::features`].
pub fn run_one_with(
    workload: &Workload,
    categories: Option<Categories>,
    policy: EvalPolicy,
    seed: u64,
) -> Result<RunResult, EvalError> {
    let (ctr, category_of) = categorized_ctrs(workload, categories, seed)?;
    let features: Vec<Features> = category_of
        .iter()
        .map(|c| Features::new([("category", format!("c{c}"))]))
        .collect();
    // Ids are the decimal catalog positions created below.
    let features_of = |id: &str| -> Features {
        id.parse::<usize>()
            .ok()
            .and_then(|i| features.get(i))
            .cloned()
            .unwrap_or_default()
    };
    let best = ctr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ids: Vec<String> = (0..workload.catalog).map(|i| i.to_string()).collect();
    let prior_policy = policy.prior_policy();
    let config = RotationConfig {
        arms: workload.arms,
        round_impressions: workload.interval,
        policy: prior_policy,
        cooldown_rounds: workload.cooldown,
    };

    let initial = index::sample(
        &mut stream(seed, 1),
        workload.catalog,
        workload.arms.min(workload.catalog),
    );
    let mut set = ArmSet::with_features(
        initial
            .iter()
            .map(|i| (ids[i].clone(), features_of(&ids[i])))
            .collect(),
        &prior_policy,
    );
    let mut rng = stream(seed, 2);

    // Per-arm scratch, reused across rounds: catalog index, sampler, pending feedback.
    let mut item_of: Vec<usize> = Vec::with_capacity(workload.arms);
    let mut samplers: Vec<Option<Beta<f64>>> = Vec::with_capacity(workload.arms);
    let mut pending: Vec<(u64, u64)> = Vec::with_capacity(workload.arms);
    let refresh_all = |set: &ArmSet,
                       item_of: &mut Vec<usize>,
                       samplers: &mut Vec<Option<Beta<f64>>>,
                       pending: &mut Vec<(u64, u64)>| {
        item_of.clear();
        samplers.clear();
        pending.clear();
        for (k, arm) in set.arms.iter().enumerate() {
            // Ids are the decimal catalog positions this function created.
            item_of.push(arm.item.parse().unwrap_or(0));
            samplers.push(sampler(set, k, &prior_policy));
            pending.push((0, 0));
        }
    };
    refresh_all(&set, &mut item_of, &mut samplers, &mut pending);

    let marks = checkpoints(workload);
    let mut curve = Vec::with_capacity(marks.len());
    let mut next_mark = 0;
    let batch = workload.delay.max(1);
    let mut in_batch = 0;
    let mut regret = 0.0;
    let mut rounds = 0;

    for t in 1..=workload.impressions {
        let k = match policy {
            EvalPolicy::Uniform => rng.random_range(0..item_of.len()),
            EvalPolicy::OracleInSet => {
                let mut bk = 0;
                for (k, &i) in item_of.iter().enumerate() {
                    if ctr[i] > ctr[item_of[bk]] {
                        bk = k;
                    }
                }
                bk
            }
            EvalPolicy::Thompson(_) => {
                // The Thompson pick of `thompson::pick` with cached samplers: the highest
                // draw wins, ties to the earlier arm.
                let mut bk = 0;
                let mut bd = f64::NEG_INFINITY;
                for (k, s) in samplers.iter().enumerate() {
                    let d = match s {
                        Some(s) => s.sample(&mut rng),
                        None => 0.0,
                    };
                    if d > bd {
                        bk = k;
                        bd = d;
                    }
                }
                bk
            }
        };
        let p = ctr[item_of[k]];
        regret += best - p;
        let click = rng.random::<f64>() < p;
        pending[k].0 += 1;
        pending[k].1 += u64::from(click);
        in_batch += 1;

        if next_mark < marks.len() && t == marks[next_mark] {
            curve.push(regret);
            next_mark += 1;
        }
        if in_batch == batch {
            in_batch = 0;
            for k in 0..pending.len() {
                let (imps, clicks) = std::mem::take(&mut pending[k]);
                if imps > 0 {
                    set.record(&ids[item_of[k]], imps, clicks);
                    samplers[k] = sampler(&set, k, &prior_policy);
                }
            }
            // Continuous screening: retire what a batch shows to be confidently behind and
            // refill at once, as the worker does after applying a batch.
            if !set.retire_behind(&config).is_empty() {
                set.refill_from_features(&config, &ids, features_of, &mut rng);
                refresh_all(&set, &mut item_of, &mut samplers, &mut pending);
            }
            if set.round_complete(&config) {
                set.rotate_from_features(&config, &ids, features_of, &mut rng);
                rounds += 1;
                refresh_all(&set, &mut item_of, &mut samplers, &mut pending);
            }
        }
    }
    Ok(RunResult {
        regret,
        curve,
        rounds,
        best_ctr: best,
    })
}

/// Runs every policy on every seed (single-threaded) and summarises.
pub fn evaluate(
    workload: &Workload,
    policies: &[(String, EvalPolicy)],
    seeds: &[u64],
) -> Result<Report, EvalError> {
    let mut runs = Vec::with_capacity(policies.len());
    for (_, p) in policies {
        let mut per = Vec::with_capacity(seeds.len());
        for &s in seeds {
            per.push(run_one(workload, *p, s)?);
        }
        runs.push(per);
    }
    summarize(workload, policies, seeds, &runs)
}

/// Builds the report from `runs[policy][seed]` (lets callers run seeds in parallel).
pub fn summarize(
    workload: &Workload,
    policies: &[(String, EvalPolicy)],
    seeds: &[u64],
    runs: &[Vec<RunResult>],
) -> Result<Report, EvalError> {
    if seeds.is_empty() {
        return Err(EvalError::NoSeeds);
    }
    let marks = checkpoints(workload);
    let policies = policies
        .iter()
        .zip(runs)
        .map(|((name, policy), per)| {
            let per_seed: Vec<f64> = per.iter().map(|r| r.regret).collect();
            let mut curve = vec![0.0; marks.len()];
            for r in per {
                for (c, v) in curve.iter_mut().zip(&r.curve) {
                    *c += v / per.len() as f64;
                }
            }
            PolicyReport {
                name: name.clone(),
                policy: *policy,
                summary: t_interval(&per_seed),
                per_seed,
                curve,
            }
        })
        .collect();
    Ok(Report {
        workload: workload.clone(),
        seeds: seeds.to_vec(),
        checkpoints: marks,
        policies,
    })
}

/// A policy's mean regret relative to a baseline's on the same seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedRatio {
    /// mean(regret) / mean(baseline regret).
    pub ratio: f64,
    /// 95% interval of the ratio: 1 + (95% t-interval of the per-seed differences) /
    /// mean(baseline). Pairing removes the catalog-to-catalog variation both share; the
    /// baseline mean is treated as known (its error is second order beside the difference's).
    pub ci95: Option<(f64, f64)>,
    /// The per-seed differences (policy - baseline).
    pub diff: TInterval,
}

/// Paired comparison of per-seed regrets `per` against `base` (same seeds, same order).
pub fn paired_ratio(per: &[f64], base: &[f64]) -> PairedRatio {
    let diffs: Vec<f64> = per.iter().zip(base).map(|(a, b)| a - b).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let b = mean(base);
    let diff = t_interval(&diffs);
    PairedRatio {
        ratio: mean(per) / b,
        ci95: diff.ci95.map(|(lo, hi)| (1.0 + lo / b, 1.0 + hi / b)),
        diff,
    }
}

/// Mean, standard deviation and 95% Student-t confidence interval of `xs`.
///
/// The interval treats the values as independent draws (one per seed); for paired
/// comparisons pass the per-seed differences.
pub fn t_interval(xs: &[f64]) -> TInterval {
    let n = xs.len();
    if n == 0 {
        return TInterval {
            mean: f64::NAN,
            sd: f64::NAN,
            ci95: None,
        };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return TInterval {
            mean,
            sd: 0.0,
            ci95: None,
        };
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let half = student_t_quantile(0.975, (n - 1) as f64) * sd / (n as f64).sqrt();
    TInterval {
        mean,
        sd,
        ci95: Some((mean - half, mean + half)),
    }
}

/// CDF of Student's t with `df` degrees of freedom, via the regularized incomplete beta:
/// P(T <= t) = 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * crate::special::beta_cdf(df / (df + t * t), df / 2.0, 0.5);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// Quantile of Student's t for p in (0, 1), by bisection on [`student_t_cdf`].
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -student_t_quantile(1.0 - p, df);
    }
    let mut hi = 1.0;
    while student_t_cdf(hi, df) < p && hi < 1e12 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 * hi.max(1.0) {
            break;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_tables() {
        // Standard two-sided 95% critical values.
        for (df, want) in [(1.0, 12.706), (4.0, 2.776), (9.0, 2.262), (30.0, 2.042)] {
            let got = student_t_quantile(0.975, df);
            assert!((got - want).abs() < 5e-4, "df {df}: {got}");
        }
        assert!((student_t_quantile(0.975, 1e6) - 1.960).abs() < 1e-3);
    }

    #[test]
    fn t_interval_of_known_sample() {
        let s = t_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(s.mean, 3.0);
        assert!((s.sd - 2.5f64.sqrt()).abs() < 1e-12);
        let (lo, hi) = s.ci95.unwrap();
        let half = 2.776_445 * 2.5f64.sqrt() / 5f64.sqrt();
        assert!((lo - (3.0 - half)).abs() < 1e-4 && (hi - (3.0 + half)).abs() < 1e-4);
        assert_eq!(t_interval(&[7.0]).ci95, None);
    }

    #[test]
    fn checkpoints_end_at_t_and_increase() {
        let w = Workload {
            impressions: 1234,
            ..Workload::default()
        };
        let c = checkpoints(&w);
        assert_eq!(c.len(), 100);
        assert_eq!(*c.last().unwrap(), 1234);
        assert!(c.windows(2).all(|p| p[0] < p[1]));
        let w = Workload {
            impressions: 7,
            ..Workload::default()
        };
        assert_eq!(checkpoints(&w), vec![1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn categories_keep_the_base_draws_and_the_mean() {
        let w = Workload::default();
        let base = catalog_ctrs(&w, 3).unwrap();
        let flat = Categories {
            count: 20,
            spread: 0.0,
        };
        let (same, of) = categorized_ctrs(&w, Some(flat), 3).unwrap();
        assert_eq!(same, base);
        assert_eq!(of.len(), 500);
        assert!(of.iter().all(|&c| c < 20));
        let spread = Categories {
            count: 20,
            spread: 0.5,
        };
        let (moved, of2) = categorized_ctrs(&w, Some(spread), 3).unwrap();
        assert_eq!(of, of2);
        assert_ne!(moved, base);
        // The effects average 1 over the items; with independent draws the mean rate moves
        // only by the sampling covariance of rates and effects (sd ~ 0.022 * 0.5 / sqrt(500)
        // ~ 0.0005 around the mean 0.032): allow 4 sd.
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean(&moved) - mean(&base)).abs() < 0.002);
        assert!(moved.iter().all(|&p| p <= MAX_SIMULATED_CTR));
        for bad in [
            Categories {
                count: 0,
                spread: 0.5,
            },
            Categories {
                count: 3,
                spread: f64::NAN,
            },
            Categories {
                count: 3,
                spread: -1.0,
            },
        ] {
            assert!(categorized_ctrs(&w, Some(bad), 1).is_err());
        }
    }

    #[test]
    fn paired_ratio_of_known_samples() {
        let r = paired_ratio(&[9.0, 18.0, 27.0], &[10.0, 20.0, 30.0]);
        assert!((r.ratio - 0.9).abs() < 1e-12);
        let (lo, hi) = r.ci95.unwrap();
        assert!(lo < 0.9 && 0.9 < hi, "{lo} {hi}");
        assert!((r.diff.mean + 2.0).abs() < 1e-12);
    }

    #[test]
    fn policy_names_parse() {
        assert_eq!("uniform".parse(), Ok(EvalPolicy::Uniform));
        assert_eq!("shop".parse(), Ok(EvalPolicy::Thompson(PriorPolicy::RESET)));
        assert!("nope".parse::<EvalPolicy>().is_err());
    }
}
