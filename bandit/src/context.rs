//! Contextual (segment) posteriors with partial pooling: an arm's posterior in a visitor
//! segment starts from the arm's all-segment click-through rate with a strength fitted to how
//! much segments really differ, so a thin segment behaves like the global model and a rich one
//! like its own.

use rand::Rng;

use crate::policy::{PriorPolicy, Ranking, SurvivorPrior};
use crate::protocol::Counted;
use crate::{ArmSet, Posterior, RotationConfig, RotationPlan};

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

/// One visitor segment at a round's end: its weight (the round's impressions in it) and each
/// arm's posterior in it, in the arm set's order.
#[derive(Debug, Clone, Copy)]
pub struct SegmentWeight<'a> {
    /// The segment's share of the round's traffic (any scale: weights are normalised).
    pub weight: f64,
    /// Each arm's posterior in the segment ([`segment_posterior`]), in the set's order.
    pub posteriors: &'a [Posterior],
    /// Each arm's probability of being best in the segment ([`crate::p_best`] of
    /// `posteriors`: the caller has usually computed it for the edge already).
    pub p_best: &'a [f64],
}

/// The arms a screening policy finds confidently behind in a slot with segments, given each
/// segment's weight and view of the arms (in the set's order: [`segment_posterior`]). Each
/// segment sets its own bar ([`ArmSet::standing`]); an arm's odds of beating it, now and
/// under its prior, are averaged over the segments by weight, and the arm is behind when
/// that average condemns it ([`ArmSet::condemned`]). A segment's leader is never behind.
/// Screening on the all-segment posterior retires the arms that lead a segment but are
/// middling overall, the ones contextual picks need; requiring an arm to be behind in every
/// segment instead screens no faster than the lightest segment learns. Without a segment
/// with a bar, [`ArmSet::behind`].
pub fn segment_behind<'a>(
    set: &ArmSet,
    policy: &PriorPolicy,
    round_end: bool,
    segments: impl IntoIterator<Item = (f64, &'a [Posterior])>,
) -> Vec<usize> {
    set.behind_in_views(policy, round_end, segments)
        .unwrap_or_else(|| set.behind(policy, round_end))
}

/// The round end of a slot with segments: a ranking by the all-segment posterior retires
/// exactly the arms contextual picks need (one that wins a segment but is middling overall).
/// Arms leading a segment (by its posterior mean) come first, heavier segments' leaders
/// before lighter ones'; then the rest by the share of the traffic Thompson sampling would
/// give them (the sum over segments of weight times P(best) there), ties by the all-segment
/// mean. At most floor(n/2) stay; under `-raceEPS` an arm also leaves when in every segment
/// its chance of beating that segment's leading mean is below eps. Under `-screenEPS` every
/// arm not [`segment_behind`] stays, in that order, up to n. The plan's `draws` are the
/// traffic shares. Other rankings (the 2015 draw, quantiles), and a round without segment
/// weights, keep the all-segment plan.
pub fn segment_rotation_plan<R: Rng + ?Sized>(
    set: &ArmSet,
    config: &RotationConfig,
    segments: &[SegmentWeight<'_>],
    rng: &mut R,
) -> RotationPlan {
    let n = set.arms.len();
    let eps = match config.policy.ranking {
        Ranking::Race { eps } => Some(eps),
        Ranking::Mean | Ranking::Screen { .. } => None,
        _ => return set.plan_rotation(config, rng),
    };
    let total: f64 = segments.iter().map(|s| s.weight.max(0.0)).sum();
    if n == 0
        || total <= 0.0
        || segments
            .iter()
            .any(|s| s.posteriors.len() != n || s.p_best.len() != n)
    {
        return set.plan_rotation(config, rng);
    }
    let global: Vec<f64> = set
        .posteriors(&config.policy)
        .iter()
        .map(Posterior::mean)
        .collect();
    let mut share = vec![0.0; n];
    let mut contending = vec![false; n];
    // The weight of the segments each arm leads (by posterior mean).
    let mut leads = vec![0.0; n];
    for seg in segments {
        let w = seg.weight.max(0.0) / total;
        if w == 0.0 {
            continue;
        }
        for (s, p) in share.iter_mut().zip(seg.p_best) {
            *s += w * p;
        }
        let means: Vec<f64> = seg.posteriors.iter().map(Posterior::mean).collect();
        let lead = (0..n)
            .max_by(|&a, &b| means[a].total_cmp(&means[b]))
            .unwrap_or(0);
        contending[lead] = true;
        leads[lead] += w;
        if let Some(eps) = eps {
            for (i, p) in seg.posteriors.iter().enumerate() {
                if 1.0 - p.cdf(means[lead]) >= eps {
                    contending[i] = true;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        leads[b]
            .total_cmp(&leads[a])
            .then(share[b].total_cmp(&share[a]))
            .then(global[b].total_cmp(&global[a]))
    });
    if let Ranking::Screen { .. } = config.policy.ranking {
        let weighted = segments.iter().map(|s| (s.weight, s.posteriors));
        let behind = segment_behind(set, &config.policy, true, weighted);
        return crate::armset::screen_plan(&order, &behind, config.arms, share);
    }
    let mut retire = order.split_off((config.arms / 2).min(n));
    if eps.is_some() {
        let (keep, out): (Vec<usize>, Vec<usize>) = order.iter().partition(|&&i| contending[i]);
        order = keep;
        // Retired on evidence first: they ranked above the rest.
        retire.splice(0..0, out);
    }
    RotationPlan {
        fresh_needed: config.arms.saturating_sub(order.len()),
        keep: order,
        retire,
        draws: share,
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

    #[test]
    fn the_contextual_round_end_keeps_segment_leaders_and_retires_arms_behind_everywhere() {
        use crate::{ArmSet, PriorPolicy, RotationConfig};
        let policy = PriorPolicy::CARRY_EB_RACE;
        // Room for 8 arms, so floor(8/2) = 4 may stay: the race decides how many do.
        let config = RotationConfig {
            arms: 8,
            round_impressions: 1,
            policy,
            cooldown_rounds: 0,
        };
        let items: Vec<String> = (0..6).map(|i| i.to_string()).collect();
        let mut set = ArmSet::new(items, &policy);
        for i in 0..6 {
            set.record(&i.to_string(), 10_000, 400);
        }
        // Segment x (weight 3) is led by arm 0, y (weight 1) by arm 5; arm 1 is close behind 0
        // in x; arms 2-4 are far behind everywhere (5 sd under each leader).
        let rates = |lead: usize, second: usize| -> Vec<Posterior> {
            (0..6)
                .map(|i| {
                    let clicks = if i == lead {
                        600
                    } else if i == second {
                        590
                    } else {
                        450
                    };
                    Posterior::UNIFORM.observe(clicks, 10_000)
                })
                .collect()
        };
        let (x, y) = (rates(0, 1), rates(5, 5));
        let (px, py) = (crate::p_best(&x), crate::p_best(&y));
        let weights = [
            SegmentWeight {
                weight: 3.0,
                posteriors: &x,
                p_best: &px,
            },
            SegmentWeight {
                weight: 1.0,
                posteriors: &y,
                p_best: &py,
            },
        ];
        let mut rng = SmallRng::seed_from_u64(1);
        let plan = segment_rotation_plan(&set, &config, &weights, &mut rng);
        // Leaders by segment weight, then arm 1 by its traffic share; arms 2-4 are behind in
        // both segments, so the race retires them though a fourth arm may stay.
        assert_eq!(plan.keep, [0, 5, 1]);
        assert_eq!(plan.fresh_needed, 5);
        let share: f64 = plan.draws.iter().sum();
        assert!((share - 1.0).abs() < 1e-9, "{:?}", plan.draws);
        // The 2015 draw ranking ignores segments (its plan is the all-segment one).
        let post2015 = RotationConfig {
            policy: PriorPolicy::POST2015,
            ..config
        };
        let mut a = SmallRng::seed_from_u64(2);
        let mut b = SmallRng::seed_from_u64(2);
        assert_eq!(
            segment_rotation_plan(&set, &post2015, &weights, &mut a),
            set.plan_rotation(&post2015, &mut b)
        );
    }

    #[test]
    fn screening_with_segments_keeps_segment_leaders_and_weighs_the_rest_by_traffic() {
        use crate::{ArmSet, PriorPolicy, RotationConfig};
        // The odds below are set against eps 0.3.
        let policy = PriorPolicy::CARRY_WEAK40_SCREEN;
        let config = RotationConfig {
            arms: 8,
            round_impressions: 1,
            policy,
            cooldown_rounds: 0,
        };
        let items: Vec<String> = (0..4).map(|i| i.to_string()).collect();
        let mut set = ArmSet::new(items, &policy);
        // Overall arm 0 leads and 1-3 are 5 sd behind it: all-segment screening retires 1-3.
        for i in 0..4 {
            set.record(&i.to_string(), 10_000, if i == 0 { 600 } else { 450 });
        }
        assert_eq!(set.behind(&policy, false), [1, 2, 3]);
        let at = |clicks: [u64; 4]| -> Vec<Posterior> {
            clicks
                .iter()
                .map(|&c| Posterior::UNIFORM.observe(c, 10_000))
                .collect()
        };
        // Segment x is led by arm 0, y by arm 1 with arm 2 close behind (about 0.6 odds of
        // beating y's bar of 0.06 - 1 sd); arm 3 is far behind in both.
        let x = at([600, 450, 450, 450]);
        let y = at([450, 600, 590, 450]);
        // Arm 2's mean odds: about 0.06 when y has a tenth of the traffic, under eps (0.3)
        // times its prior odds (near 1); about 0.5 when y has nine tenths.
        let light_y = [(0.9, x.as_slice()), (0.1, y.as_slice())];
        let heavy_y = [(0.1, x.as_slice()), (0.9, y.as_slice())];
        assert_eq!(segment_behind(&set, &policy, false, light_y), [2, 3]);
        assert_eq!(segment_behind(&set, &policy, false, heavy_y), [3]);
        // Without segments (or without weight), the arms' own posteriors decide.
        let none: [(f64, &[Posterior]); 0] = [];
        assert_eq!(segment_behind(&set, &policy, false, none), [1, 2, 3]);
        assert_eq!(
            segment_behind(&set, &policy, false, [(0.0, y.as_slice())]),
            [1, 2, 3]
        );
        // The round end keeps every arm not behind, segment leaders first, by weight.
        let (px, py) = (crate::p_best(&x), crate::p_best(&y));
        let weights = [
            SegmentWeight {
                weight: 0.9,
                posteriors: &x,
                p_best: &px,
            },
            SegmentWeight {
                weight: 0.1,
                posteriors: &y,
                p_best: &py,
            },
        ];
        let mut rng = SmallRng::seed_from_u64(3);
        let plan = segment_rotation_plan(&set, &config, &weights, &mut rng);
        assert_eq!(plan.keep, [0, 1]);
        assert_eq!(plan.retire.len(), 2);
        assert_eq!(plan.fresh_needed, 6);
    }
}
