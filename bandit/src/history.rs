//! A bounded record of past arms' evidence, for fitting the prior of fresh items.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

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
}

impl ArmHistory {
    /// Records one finished arm.
    pub fn push(&mut self, clicks: u64, impressions: u64) {
        if impressions == 0 {
            return;
        }
        if self.arms.len() == HISTORY_CAPACITY {
            self.arms.pop_front();
        }
        self.arms.push_back((clicks.min(impressions), impressions));
    }

    /// Method-of-moments Beta fit to the history plus `current` arms.
    ///
    /// The spread of observed rates includes binomial noise of about m(1-m)/n per arm; that
    /// part is subtracted so the prior describes the spread of true click-through rates. The
    /// result has alpha, beta >= 1 (a bounded density) and strength at most
    /// [`MAX_PRIOR_STRENGTH`]; with too little data it is Beta(1, 1).
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
        if samples.len() < MIN_ARMS_FOR_FIT || total_n < MIN_IMPRESSIONS_FOR_FIT as f64 {
            return Posterior::UNIFORM;
        }
        let k = samples.len() as f64;
        let m = samples.iter().map(|s| s.0).sum::<f64>() / total_n;
        if m <= 0.0 || m >= 1.0 {
            return Posterior::UNIFORM;
        }
        let observed_var = samples
            .iter()
            .map(|(c, n)| (c / n - m).powi(2))
            .sum::<f64>()
            / k;
        let noise = m * (1.0 - m) * samples.iter().map(|s| 1.0 / s.1).sum::<f64>() / k;
        let true_var = observed_var - noise;
        let min_strength = (1.0 / m).max(1.0 / (1.0 - m)).max(2.0);
        let strength = if true_var > 0.0 {
            (m * (1.0 - m) / true_var - 1.0)
                .clamp(min_strength, MAX_PRIOR_STRENGTH.max(min_strength))
        } else {
            MAX_PRIOR_STRENGTH.max(min_strength)
        };
        Posterior {
            alpha: m * strength,
            beta: (1.0 - m) * strength,
        }
    }
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
}
