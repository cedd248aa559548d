//! Contextual (segment) posteriors with partial pooling: an arm's posterior in a visitor
//! segment starts from the arm's all-segment click-through rate with a strength fitted to how
//! much segments really differ, so a thin segment behaves like the global model and a rich one
//! like its own.

use crate::policy::SurvivorPrior;
use crate::protocol::Counted;
use crate::Posterior;

/// Least pooling strength (pseudo-impressions): segments that differ a lot still borrow a
/// little, so a segment's first impressions do not swing its posterior to 0 or 1.
pub const MIN_STRENGTH: f64 = 10.0;
/// Greatest pooling strength, meaning full pooling: without evidence that segments differ, a
/// segment sees the arm's own posterior.
pub const MAX_STRENGTH: f64 = 10_000.0;
/// Least impressions of a cell (arm and segment) for it to inform the fit.
const MIN_CELL_IMPRESSIONS: u64 = 30;

/// One arm in one segment, with the arm's all-segment rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// The arm's click-through rate over all segments (its posterior mean).
    pub arm_mean: f64,
    /// The arm's counts in the segment.
    pub counts: Counted,
}

/// The pooling strength: full pooling unless the cells' rates spread around their arms' rates
/// more than chance allows (a chi-square test at 1%), else a method-of-moments fit of how far
/// they spread. Each cell's squared deviation, less its binomial noise, estimates the
/// between-segment variance tau^2 relative to m(1 - m); the strength is the beta-binomial
/// precision (1 / rho - 1) that spread implies, clipped to
/// [`MIN_STRENGTH`, `MAX_STRENGTH`]. Without cells to fit it is [`MAX_STRENGTH`] (no evidence
/// that segments differ).
pub fn pooling_strength(cells: impl IntoIterator<Item = Cell>) -> f64 {
    let mut weight = 0.0;
    let mut excess = 0.0;
    // Pearson's statistic of the cells against their arms' rates, for the test below.
    let mut chi2 = 0.0_f64;
    let mut df = 0.0_f64;
    for c in cells {
        let n = c.counts.impressions;
        if n < MIN_CELL_IMPRESSIONS {
            continue;
        }
        let m = c.arm_mean.clamp(1e-6, 1.0 - 1e-6);
        let p = c.counts.clicks.min(n) as f64 / n as f64;
        let scale = m * (1.0 - m);
        // E[(p - m)^2] = tau^2 + m(1 - m)/n, so this is an unbiased estimate of tau^2 / m(1 - m).
        let rho = ((p - m).powi(2) - scale / n as f64) / scale;
        // Weight by n: larger cells measure the spread more precisely.
        weight += n as f64;
        excess += n as f64 * rho;
        chi2 += n as f64 * (p - m).powi(2) / scale;
        df += 1.0;
    }
    // Pool fully unless the cells spread more than chance allows (one-sided 1%, normal
    // approximation of chi-square with df degrees of freedom): a noisy fit of no real
    // difference would otherwise make every segment explore on its own.
    if weight == 0.0 || chi2 < df + 2.326 * (2.0 * df).sqrt() {
        return MAX_STRENGTH;
    }
    let rho = excess / weight;
    if rho <= 1.0 / (MAX_STRENGTH + 1.0) {
        return MAX_STRENGTH;
    }
    (1.0 / rho - 1.0).clamp(MIN_STRENGTH, MAX_STRENGTH)
}

/// The arm's posterior in a segment. Its prior is the arm's evidence from the other segments
/// (the arm's posterior less this segment's counts), kept at most `strength` strong:
/// Beta(k m' + clicks, k (1 - m') + misses) with m' that evidence's mean and k the smaller of
/// `strength` and its size. Segments that do not differ (a large strength) give back the arm's
/// own posterior; segments that do (a small one) follow their own counts.
pub fn segment_posterior(arm: &Posterior, counts: Counted, strength: f64) -> Posterior {
    let clicks = counts.clicks.min(counts.impressions) as f64;
    let misses = counts.impressions as f64 - clicks;
    // The arm's counts include this segment's; what is left is the other segments' (never
    // below a sliver, for scoring rules that do not add counts to a prior).
    let alpha = (arm.alpha - clicks).max(1e-3);
    let beta = (arm.beta - misses).max(1e-3);
    let size = alpha + beta;
    // At the greatest strength (no evidence that segments differ) the pooling is full.
    let k = if strength >= MAX_STRENGTH {
        size
    } else {
        strength.min(size)
    };
    Posterior {
        alpha: k * alpha / size + clicks,
        beta: k * beta / size + misses,
    }
}

/// A surviving arm's segment counts for the next round, treated as the policy treats its
/// all-segment evidence: kept (shrunk by the decay) by `carry`, cleared by `reset`; so the
/// segment's counts never exceed what the arm's posterior holds.
pub fn carry_over(counts: Counted, survivors: &SurvivorPrior) -> Counted {
    match *survivors {
        SurvivorPrior::Reset => Counted::default(),
        SurvivorPrior::Carry { decay } => {
            let keep = |n: u64| (n as f64 * decay.clamp(0.0, 1.0)).floor() as u64;
            let impressions = keep(counts.impressions);
            Counted {
                impressions,
                clicks: keep(counts.clicks).min(impressions),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use rand_distr::{Beta, Binomial, Distribution};

    /// Cells of 8 arms in 3 segments with `n` impressions each, segment rates drawn around
    /// the arm rate with precision `kappa` (None: no spread).
    fn cells(rng: &mut SmallRng, kappa: Option<f64>, n: u64) -> Vec<Cell> {
        let mut out = Vec::new();
        for a in 0..8 {
            let m = 0.02 + 0.01 * a as f64;
            for _ in 0..3 {
                let p = match kappa {
                    Some(k) => Beta::new(k * m, k * (1.0 - m)).unwrap().sample(rng),
                    None => m,
                };
                let clicks = Binomial::new(n, p).unwrap().sample(rng);
                out.push(Cell {
                    arm_mean: m,
                    counts: Counted {
                        impressions: n,
                        clicks,
                    },
                });
            }
        }
        out
    }

    #[test]
    fn the_fit_recovers_the_spread_and_pools_fully_without_one() {
        let mut rng = SmallRng::seed_from_u64(4);
        // True precision 50 over 24 cells of 20,000 impressions: the estimate of rho = 1/51
        // has a relative error of about sqrt(2/24) = 0.29; 4 of those either side.
        let mut fits: Vec<f64> = (0..20)
            .map(|_| pooling_strength(cells(&mut rng, Some(50.0), 20_000)))
            .collect();
        fits.sort_by(f64::total_cmp);
        let median = fits[10];
        assert!((20.0..150.0).contains(&median), "{fits:?}");
        // No spread: the noise-corrected excess is about zero, so pooling is strong.
        let none: Vec<f64> = (0..20)
            .map(|_| pooling_strength(cells(&mut rng, None, 20_000)))
            .collect();
        let strong = none.iter().filter(|&&k| k > 1_000.0).count();
        assert!(strong >= 12, "{none:?}");
        assert_eq!(pooling_strength([]), MAX_STRENGTH);
    }

    #[test]
    fn survivors_keep_segment_evidence_as_the_policy_keeps_theirs() {
        let c = Counted {
            impressions: 1_000,
            clicks: 41,
        };
        assert_eq!(carry_over(c, &SurvivorPrior::Reset), Counted::default());
        assert_eq!(
            carry_over(c, &SurvivorPrior::Carry { decay: 0.7 }),
            Counted {
                impressions: 700,
                clicks: 28
            }
        );
        assert_eq!(carry_over(c, &SurvivorPrior::Carry { decay: 1.0 }), c);
    }

    #[test]
    fn without_spread_a_segment_gets_the_arms_own_posterior() {
        let arm = Posterior::UNIFORM.observe(300, 10_000);
        let seg = Counted {
            impressions: 4_000,
            clicks: 100,
        };
        let p = segment_posterior(&arm, seg, MAX_STRENGTH * 10.0);
        assert!((p.alpha - arm.alpha).abs() < 1e-9 && (p.beta - arm.beta).abs() < 1e-9);
    }

    #[test]
    fn a_thin_segment_follows_the_arm_and_a_rich_one_its_own_rate() {
        // 3% over 10,000 impressions elsewhere; one rich segment at 8% over 50,000.
        let arm = Posterior::UNIFORM.observe(4_300, 60_000);
        let elsewhere = Posterior::UNIFORM.observe(300, 10_000);
        let thin = segment_posterior(
            &elsewhere,
            Counted {
                impressions: 5,
                clicks: 2,
            },
            200.0,
        );
        assert!((thin.mean() - 0.03).abs() < 0.01, "{}", thin.mean());
        let rich = segment_posterior(
            &arm,
            Counted {
                impressions: 50_000,
                clicks: 4_000,
            },
            200.0,
        );
        assert!((rich.mean() - 0.08).abs() < 0.001, "{}", rich.mean());
        // Forged counts (more clicks than impressions) are capped.
        let odd = segment_posterior(
            &arm,
            Counted {
                impressions: 1,
                clicks: 9,
            },
            10.0,
        );
        assert!(odd.is_valid());
    }
}
