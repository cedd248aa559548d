//! A bounded record of past arms' evidence, for fitting the prior of fresh items.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::features::Features;
use crate::special::ln_gamma;
use crate::Posterior;

/// How many finished arms the history keeps (oldest dropped first).
pub const HISTORY_CAPACITY: usize = 256;
/// Fewer arms than this with impressions and the fit falls back to Beta(1, 1).
pub const MIN_ARMS_FOR_FIT: usize = 8;
/// Fewer impressions than this over all arms and the fit falls back to Beta(1, 1).
pub const MIN_IMPRESSIONS_FOR_FIT: u64 = 500;
/// Upper bound on the fitted prior's strength (alpha + beta), so a fresh item can still
/// overtake the field within a few hundred impressions.
pub const MAX_PRIOR_STRENGTH: f64 = 500.0;

/// Clicks and impressions of arms that have left the set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmHistory {
    /// (clicks, impressions) per finished arm, oldest first.
    pub arms: VecDeque<(u64, u64)>,
    /// Arms ever recorded (absent in state stored before it existed: 0), so a cached fit
    /// knows how stale it is.
    #[serde(default)]
    pub pushed: u64,
    /// Features of the most recent arms, aligned with the back of `arms` (it may be shorter:
    /// arms recorded before features existed, or while no arm had any, have none). Empty and
    /// not stored until an arm with features is recorded.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub features: VecDeque<Features>,
}

impl ArmHistory {
    /// Records one finished arm.
    pub fn push(&mut self, clicks: u64, impressions: u64) {
        self.push_with(clicks, impressions, Features::default());
    }

    /// Records one finished arm with its features (for [`crate::features::FeatureModel`]).
    pub fn push_with(&mut self, clicks: u64, impressions: u64, features: Features) {
        if impressions == 0 {
            return;
        }
        self.pushed += 1;
        if self.arms.len() == HISTORY_CAPACITY {
            self.arms.pop_front();
        }
        while self.features.len() > self.arms.len() {
            self.features.pop_front();
        }
        // Shops without features keep the deque empty (nothing extra stored); once one arm
        // has features, pad so the deque lines up with `arms` again.
        if !features.is_empty() || !self.features.is_empty() {
            while self.features.len() < self.arms.len() {
                self.features.push_front(Features::default());
            }
            self.features.push_back(features);
        }
        self.arms.push_back((clicks.min(impressions), impressions));
    }

    /// (features, clicks, impressions) of the recorded arms that have features.
    pub fn with_features(&self) -> impl Iterator<Item = (&Features, u64, u64)> {
        let n = self.arms.len().min(self.features.len());
        let arms = self.arms.iter().skip(self.arms.len() - n);
        let features = self.features.iter().skip(self.features.len() - n);
        features.zip(arms).map(|(f, &(c, i))| (f, c, i))
    }

    /// Beta prior fitted to the history plus `current` arms by maximum marginal likelihood
    /// (beta-binomial), started from a method-of-moments estimate.
    ///
    /// Why likelihood and not moments of the pooled counts: Thompson sampling shows good arms
    /// far more often, so the impression-weighted click rate describes what was shown, not
    /// the catalog (it overstated the mean CTR about fourfold in simulation). The likelihood
    /// of each arm's clicks given its impressions is valid however adaptively the impressions
    /// were allocated, so its maximiser is not biased by the allocation. The result has
    /// alpha, beta >= 1 (a bounded density) and strength at most [`MAX_PRIOR_STRENGTH`]; with
    /// too little data it is Beta(1, 1).
    pub fn fit(&self, current: impl IntoIterator<Item = (u64, u64)>) -> Posterior {
        let samples: Vec<(f64, f64)> = self
            .arms
            .iter()
            .copied()
            .chain(current)
            .filter(|&(_, n)| n > 0)
            .map(|(c, n)| (c.min(n) as f64, n as f64))
            .collect();
        let total_n: f64 = samples.iter().map(|s| s.1).sum();
        let total_c: f64 = samples.iter().map(|s| s.0).sum();
        if samples.len() < MIN_ARMS_FOR_FIT
            || total_n < MIN_IMPRESSIONS_FOR_FIT as f64
            || total_c <= 0.0
            || total_c >= total_n
        {
            return Posterior::UNIFORM;
        }
        let (m0, s0) = moments(&samples);
        let bounds = |m: f64| {
            let min = (1.0 / m).max(1.0 / (1.0 - m)).max(2.0);
            (min, MAX_PRIOR_STRENGTH.max(min))
        };
        // Search over (logit mean, ln strength); the strength bounds depend on the mean.
        let to_prior = |x: [f64; 2]| {
            let m = 1.0 / (1.0 + (-x[0]).exp());
            let (lo, hi) = bounds(m);
            let s = x[1].exp().clamp(lo, hi);
            (m * s, (1.0 - m) * s)
        };
        let neg_ll = |x: [f64; 2]| {
            let (a, b) = to_prior(x);
            -log_likelihood(&samples, a, b)
        };
        let start = [(m0 / (1.0 - m0)).ln(), s0.ln()];
        let best = nelder_mead(neg_ll, start, [0.5, 0.7]);
        let (alpha, beta) = to_prior(best);
        if alpha.is_finite() && beta.is_finite() {
            Posterior { alpha, beta }
        } else {
            Posterior::UNIFORM
        }
    }
}

/// Method-of-moments start for the fit: the unweighted mean of the arms' rates, and a
/// strength from their spread after subtracting the binomial noise of about m(1-m)/n per arm.
fn moments(samples: &[(f64, f64)]) -> (f64, f64) {
    let k = samples.len() as f64;
    let m = (samples.iter().map(|(c, n)| c / n).sum::<f64>() / k).clamp(1e-4, 1.0 - 1e-4);
    let observed_var = samples
        .iter()
        .map(|(c, n)| (c / n - m).powi(2))
        .sum::<f64>()
        / k;
    let noise = m * (1.0 - m) * samples.iter().map(|s| 1.0 / s.1).sum::<f64>() / k;
    let true_var = observed_var - noise;
    let s = if true_var > 0.0 {
        (m * (1.0 - m) / true_var - 1.0).clamp(2.0, MAX_PRIOR_STRENGTH)
    } else {
        MAX_PRIOR_STRENGTH
    };
    (m, s)
}

/// Beta-binomial log marginal likelihood of (clicks, impressions) pairs, without the
/// binomial coefficients (they do not depend on the prior).
fn log_likelihood(samples: &[(f64, f64)], a: f64, b: f64) -> f64 {
    let base = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b);
    samples
        .iter()
        .map(|&(c, n)| base + ln_gamma(c + a) + ln_gamma(n - c + b) - ln_gamma(n + a + b))
        .sum()
}

/// Minimises `f` over two variables with the Nelder-Mead simplex (no derivatives needed;
/// the objective is smooth and has one interior optimum or sits on a strength bound).
fn nelder_mead(f: impl Fn([f64; 2]) -> f64, start: [f64; 2], step: [f64; 2]) -> [f64; 2] {
    let mut pts = [
        start,
        [start[0] + step[0], start[1]],
        [start[0], start[1] + step[1]],
    ];
    let mut vals = pts.map(&f);
    for _ in 0..200 {
        // Order best to worst.
        let mut idx = [0, 1, 2];
        idx.sort_by(|&i, &j| vals[i].total_cmp(&vals[j]));
        pts = idx.map(|i| pts[i]);
        vals = idx.map(|i| vals[i]);
        if (vals[2] - vals[0]).abs() < 1e-7 * (1.0 + vals[0].abs()) {
            break;
        }
        let c = [(pts[0][0] + pts[1][0]) / 2.0, (pts[0][1] + pts[1][1]) / 2.0];
        let along = |t: f64| [c[0] + t * (pts[2][0] - c[0]), c[1] + t * (pts[2][1] - c[1])];
        let r = along(-1.0);
        let fr = f(r);
        if fr < vals[0] {
            let e = along(-2.0);
            let fe = f(e);
            (pts[2], vals[2]) = if fe < fr { (e, fe) } else { (r, fr) };
        } else if fr < vals[1] {
            (pts[2], vals[2]) = (r, fr);
        } else {
            let k = if fr < vals[2] {
                along(-0.5)
            } else {
                along(0.5)
            };
            let fk = f(k);
            if fk < vals[2].min(fr) {
                (pts[2], vals[2]) = (k, fk);
            } else {
                // Shrink toward the best point.
                for i in 1..3 {
                    pts[i] = [(pts[0][0] + pts[i][0]) / 2.0, (pts[0][1] + pts[i][1]) / 2.0];
                    vals[i] = f(pts[i]);
                }
            }
        }
    }
    let best = (0..3)
        .min_by(|&i, &j| vals[i].total_cmp(&vals[j]))
        .unwrap_or(0);
    pts[best]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use rand_distr::{Beta, Binomial, Distribution};

    #[test]
    fn too_little_data_gives_uniform() {
        let mut h = ArmHistory::default();
        for _ in 0..3 {
            h.push(5, 100);
        }
        assert_eq!(h.fit([]), Posterior::UNIFORM);
    }

    #[test]
    fn capacity_is_bounded() {
        let mut h = ArmHistory::default();
        for i in 0..1000 {
            h.push(1, 10 + i);
        }
        assert_eq!(h.arms.len(), HISTORY_CAPACITY);
        assert_eq!(h.arms.back(), Some(&(1, 1009)));
        assert!(h.features.is_empty());
        // With features: both stay bounded and aligned.
        for i in 0..1000u64 {
            let f = if i % 2 == 0 {
                Features::new([("category", format!("c{}", i % 7))])
            } else {
                Features::default()
            };
            h.push_with(1, 10 + i, f);
        }
        assert_eq!(h.arms.len(), HISTORY_CAPACITY);
        assert_eq!(h.features.len(), HISTORY_CAPACITY);
        let with: Vec<_> = h.with_features().collect();
        assert_eq!(with.len(), HISTORY_CAPACITY);
        let last = with.last().unwrap();
        assert_eq!((last.1, last.2), (1, 1009));
        assert!(last.0.is_empty());
        let before = &with[with.len() - 2];
        assert_eq!(before.2, 1008);
        assert_eq!(before.0, &Features::new([("category", "c4")]));
    }

    #[test]
    fn history_stored_before_features_loads_and_lines_up() {
        let old = r#"{"arms":[[1,10],[2,20]],"pushed":2}"#;
        let mut h: ArmHistory = serde_json::from_str(old).unwrap();
        assert!(h.features.is_empty());
        assert_eq!(h.with_features().count(), 0);
        h.push_with(3, 30, Features::new([("category", "a")]));
        assert_eq!(h.features.len(), 3);
        let with: Vec<_> = h
            .with_features()
            .map(|(f, c, n)| (f.is_empty(), c, n))
            .collect();
        assert_eq!(with, vec![(true, 1, 10), (true, 2, 20), (false, 3, 30)]);
        // Without features nothing new is stored.
        let mut plain = ArmHistory::default();
        plain.push(1, 10);
        assert!(!serde_json::to_string(&plain).unwrap().contains("features"));
    }

    #[test]
    fn recovers_the_generating_beta() {
        // 256 arms with rates from Beta(2, 60), 2,000 impressions each. The mean of the fit
        // has standard error ~ sd(rates)/sqrt(256) ~ 0.0014; allow 4 of them.
        let truth = Beta::new(2.0, 60.0).unwrap();
        let mut rng = SmallRng::seed_from_u64(42);
        let mut h = ArmHistory::default();
        for _ in 0..HISTORY_CAPACITY {
            let p = truth.sample(&mut rng);
            let clicks = Binomial::new(2000, p).unwrap().sample(&mut rng);
            h.push(clicks, 2000);
        }
        let fit = h.fit([]);
        let true_mean = 2.0 / 62.0;
        assert!((fit.mean() - true_mean).abs() < 4.0 * 0.0014, "{fit:?}");
        // The strength estimate is noisier; it must land in the right order of magnitude.
        let strength = fit.alpha + fit.beta;
        assert!((30.0..130.0).contains(&strength), "{fit:?}");
        assert!(fit.alpha >= 1.0 && fit.beta >= 1.0);
    }

    #[test]
    fn adaptive_allocation_does_not_bias_the_fit() {
        // As under Thompson sampling, arms that start well get far more impressions: 20
        // first, then 2,000 more only if they had a click. The pooled click rate is then
        // well above the catalog's mean CTR; the likelihood fit must not be. Same tolerance
        // as above: 4 standard errors (~0.0014 each) of the mean of 256 rates.
        let truth = Beta::new(2.0, 60.0).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut h = ArmHistory::default();
        let (mut clicks, mut imps) = (0, 0);
        for _ in 0..HISTORY_CAPACITY {
            let p = truth.sample(&mut rng);
            let mut c = Binomial::new(20, p).unwrap().sample(&mut rng);
            let mut n = 20;
            if c > 0 {
                c += Binomial::new(2000, p).unwrap().sample(&mut rng);
                n += 2000;
            }
            clicks += c;
            imps += n;
            h.push(c, n);
        }
        let true_mean = 2.0 / 62.0;
        let pooled = clicks as f64 / imps as f64;
        assert!(pooled - true_mean > 4.0 * 0.0014, "pooled {pooled}");
        let fit = h.fit([]);
        assert!((fit.mean() - true_mean).abs() < 4.0 * 0.0014, "{fit:?}");
    }
}
