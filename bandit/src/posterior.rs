//! The Beta posterior of one arm's click-through rate.

use rand::Rng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use crate::special;

/// A Beta(alpha, beta) distribution over an item's click-through rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Posterior {
    /// First shape parameter: prior pseudo-clicks plus observed clicks.
    pub alpha: f64,
    /// Second shape parameter: prior pseudo-misses plus observed misses.
    pub beta: f64,
}

/// A Beta distribution needs finite, strictly positive shape parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid Beta parameters alpha = {alpha}, beta = {beta}: both must be finite and > 0")]
pub struct InvalidPosterior {
    /// The rejected alpha.
    pub alpha: f64,
    /// The rejected beta.
    pub beta: f64,
}

impl Posterior {
    /// The uniform prior Beta(1, 1) the 2015 system reset every arm to.
    pub const UNIFORM: Posterior = Posterior {
        alpha: 1.0,
        beta: 1.0,
    };

    /// A validated Beta(alpha, beta).
    pub fn new(alpha: f64, beta: f64) -> Result<Self, InvalidPosterior> {
        if alpha.is_finite() && beta.is_finite() && alpha > 0.0 && beta > 0.0 {
            Ok(Posterior { alpha, beta })
        } else {
            Err(InvalidPosterior { alpha, beta })
        }
    }

    /// This distribution updated with `clicks` successes out of `impressions` trials.
    ///
    /// Clicks beyond impressions (feedback arriving out of order) count as clicks with no
    /// misses rather than as negative evidence.
    pub fn observe(self, clicks: u64, impressions: u64) -> Posterior {
        Posterior {
            alpha: self.alpha + clicks as f64,
            beta: self.beta + impressions.saturating_sub(clicks) as f64,
        }
    }

    /// Expected click-through rate.
    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// Variance of the click-through rate.
    pub fn variance(&self) -> f64 {
        let s = self.alpha + self.beta;
        self.alpha * self.beta / (s * s * (s + 1.0))
    }

    /// One draw of the click-through rate.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match Beta::new(self.alpha, self.beta) {
            Ok(dist) => dist.sample(rng),
            // Only reachable for parameters that bypassed `new` (e.g. hand-edited state):
            // fall back to the mean instead of panicking on the serving path.
            Err(_) => self.mean(),
        }
    }

    /// Probability density at `x`.
    pub fn pdf(&self, x: f64) -> f64 {
        special::beta_pdf(x, self.alpha, self.beta)
    }

    /// Cumulative distribution at `x`.
    pub fn cdf(&self, x: f64) -> f64 {
        special::beta_cdf(x, self.alpha, self.beta)
    }

    /// The `q`-quantile (inverse CDF) for q in [0, 1], by bisection to about 1e-12.
    pub fn quantile(&self, q: f64) -> f64 {
        if !self.is_valid() || q.is_nan() {
            return self.mean();
        }
        let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
        if q <= 0.0 {
            return lo;
        }
        if q >= 1.0 {
            return hi;
        }
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if self.cdf(mid) < q {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    /// Whether the parameters describe a proper Beta distribution.
    pub fn is_valid(&self) -> bool {
        Posterior::new(self.alpha, self.beta).is_ok()
    }
}

impl Default for Posterior {
    fn default() -> Self {
        Posterior::UNIFORM
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn rejects_bad_parameters() {
        assert!(Posterior::new(0.0, 1.0).is_err());
        assert!(Posterior::new(1.0, -2.0).is_err());
        assert!(Posterior::new(f64::NAN, 1.0).is_err());
        assert!(Posterior::new(f64::INFINITY, 1.0).is_err());
        assert!(Posterior::new(0.5, 3.0).is_ok());
    }

    #[test]
    fn observe_adds_clicks_and_misses() {
        let p = Posterior::UNIFORM.observe(3, 10);
        assert_eq!(
            p,
            Posterior {
                alpha: 4.0,
                beta: 8.0
            }
        );
        // Late clicks never make beta shrink.
        assert_eq!(Posterior::UNIFORM.observe(5, 2).beta, 1.0);
    }

    #[test]
    fn quantile_inverts_the_cdf() {
        // Beta(1, b) has the closed form F^-1(q) = 1 - (1 - q)^(1/b).
        let p = Posterior::new(1.0, 12.0).unwrap();
        for q in [0.01_f64, 0.1, 0.5, 0.9, 0.99] {
            let want = 1.0 - (1.0 - q).powf(1.0 / 12.0);
            assert!((p.quantile(q) - want).abs() < 1e-10, "{q}");
        }
        let p = Posterior::new(5.0, 95.0).unwrap();
        assert!((p.cdf(p.quantile(0.3)) - 0.3).abs() < 1e-10);
        assert_eq!(p.quantile(0.0), 0.0);
        assert_eq!(p.quantile(1.0), 1.0);
    }

    #[test]
    fn sample_mean_and_variance_match_the_distribution() {
        // Seeded; the tolerance is 5 standard errors of the sample mean and variance.
        let p = Posterior::new(3.0, 9.0).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let n = 200_000;
        let draws: Vec<f64> = (0..n).map(|_| p.sample(&mut rng)).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let se_mean = (p.variance() / n as f64).sqrt();
        assert!((mean - p.mean()).abs() < 5.0 * se_mean, "mean {mean}");
        // Var of the sample variance ~ (mu4 - sigma^4) / n; bound mu4 by E[(X-m)^4] <= E[(X-m)^2]
        // since |X - m| < 1, which gives a conservative standard error.
        let se_var = ((p.variance() - p.variance().powi(2)) / n as f64).sqrt();
        assert!((var - p.variance()).abs() < 5.0 * se_var, "var {var}");
        assert!(draws.iter().all(|x| (0.0..=1.0).contains(x)));
    }
}
