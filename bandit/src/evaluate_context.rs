//! Offline evaluation of contextual picks: simulated visitor segments whose click-through
//! rates differ around each item's global rate, served by the worker's rotating arm set with
//! either one model for everyone or per-segment posteriors partially pooled as the worker
//! pools them ([`crate::context`]). Regret is against the best item of the catalog for the
//! visitor's segment.
//!
//! As in [`crate::evaluate`], one seed gives every policy the same catalog, segment rates,
//! initial set and random streams, so differences between policies are paired.

use rand::seq::index;
use rand::Rng;
use rand_distr::{Beta, Distribution, StandardNormal};

use crate::context::{
    carry_over, pooling_strength, segment_behind, segment_posterior, segment_rotation_plan, Cell,
    SegmentWeight,
};
use crate::evaluate::{catalog_ctrs, checkpoints, stream, EvalError, Workload};
use crate::policy::Ranking;
use crate::protocol::Counted;
use crate::{ArmSet, Posterior, PriorPolicy, RotationConfig};

/// Visitor segments of a simulated shop.
#[derive(Debug, Clone, PartialEq)]
pub struct Segments {
    /// Each segment's share of the traffic (normalised).
    pub shares: Vec<f64>,
    /// Log-normal spread of a segment's rate around the item's global rate: an item's rate
    /// in a segment is its global rate times exp(spread z - spread^2 / 2), z standard normal
    /// (so the mean is kept); 0 means segments do not matter.
    pub spread: f64,
}

/// How picks use the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextMode {
    /// One posterior per arm for everyone (the worker without `SEGMENTS`).
    Global,
    /// Per-segment posteriors pooled toward the arm's evidence from other segments, and a
    /// round end that keeps the arms winning any segment (the worker with `SEGMENTS`:
    /// [`crate::context::segment_rotation_plan`]).
    Pooled,
    /// Pooled posteriors with the all-segment round end, to measure what the contextual round
    /// end adds.
    PooledGlobalRotation,
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextRun {
    /// Expected regret against the best item of each impression's segment.
    pub regret: f64,
    /// Expected regret against the best arm of the set for each impression's segment: what
    /// the pick itself loses, apart from which items the rotation put in the set.
    pub regret_in_set: f64,
    /// The pooling strength at the end of the run (Pooled only).
    pub strength: Option<f64>,
    /// Cumulative regret at each of [`crate::evaluate::checkpoints`].
    pub curve: Vec<f64>,
}

/// Each item's rate in each segment (`rates[segment][item]`) for `seed`.
pub fn segment_rates(
    workload: &Workload,
    segments: &Segments,
    seed: u64,
) -> Result<Vec<Vec<f64>>, EvalError> {
    let global = catalog_ctrs(workload, seed)?;
    let mut rng = stream(seed, 7);
    let s = segments.spread.max(0.0);
    Ok(segments
        .shares
        .iter()
        .map(|_| {
            global
                .iter()
                .map(|&r| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (r * (s * z - s * s / 2.0).exp()).min(0.99)
                })
                .collect()
        })
        .collect())
}

/// Runs one mode on one seed. The arm set rotates on the all-segment counts, as the worker's
/// does; a survivor's segment counts carry over as the policy carries its evidence.
pub fn run_context(
    workload: &Workload,
    segments: &Segments,
    policy: PriorPolicy,
    mode: ContextMode,
    seed: u64,
) -> Result<ContextRun, EvalError> {
    let rates = segment_rates(workload, segments, seed)?;
    let best: Vec<f64> = rates
        .iter()
        .map(|r| r.iter().copied().fold(f64::NEG_INFINITY, f64::max))
        .collect();
    let total: f64 = segments.shares.iter().sum();
    let shares: Vec<f64> = segments.shares.iter().map(|s| s / total).collect();
    let ids: Vec<String> = (0..workload.catalog).map(|i| i.to_string()).collect();
    let config = RotationConfig {
        arms: workload.arms,
        round_impressions: workload.interval,
        policy,
        cooldown_rounds: workload.cooldown,
    };
    let initial = index::sample(
        &mut stream(seed, 1),
        workload.catalog,
        workload.arms.min(workload.catalog),
    );
    let mut set = ArmSet::new(initial.iter().map(|i| ids[i].clone()).collect(), &policy);
    let mut rng = stream(seed, 2);
    let n_seg = shares.len();
    // Per arm (by position): catalog index, segment counts this round, pending feedback.
    let item_of = |set: &ArmSet| -> Vec<usize> {
        set.arms
            .iter()
            .map(|a| a.item.parse().unwrap_or(0))
            .collect()
    };
    let mut items = item_of(&set);
    let mut seg_counts: Vec<Vec<Counted>> = vec![vec![Counted::default(); n_seg]; items.len()];
    let mut pending: Vec<Vec<Counted>> = vec![vec![Counted::default(); n_seg]; items.len()];
    // Each arm's posterior in each segment (`views[segment][arm]`) and its sampler.
    let mut views: Vec<Vec<Posterior>> = Vec::new();
    let mut samplers: Vec<Vec<Option<Beta<f64>>>> = Vec::new();
    let mut strength = None;
    let rebuild = |set: &ArmSet,
                   seg_counts: &[Vec<Counted>],
                   views: &mut Vec<Vec<Posterior>>,
                   samplers: &mut Vec<Vec<Option<Beta<f64>>>>,
                   strength: &mut Option<f64>| {
        let posteriors = set.posteriors(&policy);
        *views = match mode {
            ContextMode::Global => vec![posteriors.clone(); n_seg],
            ContextMode::Pooled | ContextMode::PooledGlobalRotation => {
                let k = pooling_strength(posteriors.iter().zip(seg_counts).flat_map(|(p, c)| {
                    let m = p.mean();
                    c.iter().map(move |&counts| Cell {
                        arm_mean: m,
                        counts,
                    })
                }));
                *strength = Some(k);
                (0..n_seg)
                    .map(|s| {
                        posteriors
                            .iter()
                            .zip(seg_counts)
                            .map(|(p, c)| segment_posterior(p, c[s], k))
                            .collect()
                    })
                    .collect()
            }
        };
        *samplers = (0..posteriors.len())
            .map(|k| {
                views
                    .iter()
                    .map(|v| Beta::new(v[k].alpha, v[k].beta).ok())
                    .collect()
            })
            .collect();
    };
    rebuild(&set, &seg_counts, &mut views, &mut samplers, &mut strength);
    // The round's impressions per segment: the weights of the contextual round end.
    let mut round_traffic = vec![0u64; n_seg];
    let batch = workload.delay.max(1);
    let mut in_batch = 0;
    let mut regret = 0.0;
    let mut regret_in_set = 0.0;
    let marks = checkpoints(workload);
    let mut curve = Vec::with_capacity(marks.len());
    for t in 1..=workload.impressions {
        // The visitor's segment.
        let u: f64 = rng.random();
        let mut s = n_seg - 1;
        let mut acc = 0.0;
        for (i, share) in shares.iter().enumerate() {
            acc += share;
            if u < acc {
                s = i;
                break;
            }
        }
        let mut bk = 0;
        let mut bd = f64::NEG_INFINITY;
        for (k, per) in samplers.iter().enumerate() {
            let d = per[s].as_ref().map_or(0.0, |b| b.sample(&mut rng));
            if d > bd {
                bk = k;
                bd = d;
            }
        }
        let p = rates[s][items[bk]];
        regret += best[s] - p;
        let best_in_set = items.iter().map(|&i| rates[s][i]).fold(0.0, f64::max);
        regret_in_set += best_in_set - p;
        if marks.get(curve.len()) == Some(&t) {
            curve.push(regret);
        }
        let click = rng.random::<f64>() < p;
        pending[bk][s].impressions += 1;
        round_traffic[s] += 1;
        pending[bk][s].clicks += u64::from(click);
        in_batch += 1;
        if in_batch < batch {
            continue;
        }
        in_batch = 0;
        for (k, per) in pending.iter_mut().enumerate() {
            let (mut imps, mut clicks) = (0, 0);
            for (s, c) in per.iter_mut().enumerate() {
                imps += c.impressions;
                clicks += c.clicks;
                seg_counts[k][s].impressions += c.impressions;
                seg_counts[k][s].clicks += c.clicks;
                *c = Counted::default();
            }
            if imps > 0 {
                set.record(&ids[items[k]], imps, clicks);
            }
        }
        let before: Vec<String> = set.arms.iter().map(|a| a.item.clone()).collect();
        // Whether `views` already hold this batch's counts for the current arms.
        let mut views_fresh = false;
        let screened =
            if mode == ContextMode::Pooled && matches!(policy.ranking, Ranking::Screen { .. }) {
                // Screen on the segment views with this batch's counts, as the worker does
                // (weighted by the round's traffic per segment; the worker's weights also hold
                // the counts its survivors carried over).
                rebuild(&set, &seg_counts, &mut views, &mut samplers, &mut strength);
                let weighted = views
                    .iter()
                    .zip(&round_traffic)
                    .map(|(v, &t)| (t as f64, v.as_slice()));
                let which = segment_behind(&set, &policy, false, weighted);
                views_fresh = which.is_empty();
                set.retire_now(&config, &which)
            } else {
                set.retire_behind(&config)
            };
        if !screened.is_empty() {
            set.refill_from(&config, &ids, &mut rng);
        }
        let rotated = set.round_complete(&config);
        if rotated {
            if mode == ContextMode::Pooled {
                // The round end sees this batch's counts too.
                if !views_fresh {
                    rebuild(&set, &seg_counts, &mut views, &mut samplers, &mut strength);
                }
                let p_best: Vec<Vec<f64>> = views.iter().map(|v| crate::p_best(v)).collect();
                let weights: Vec<SegmentWeight<'_>> = views
                    .iter()
                    .zip(&p_best)
                    .zip(&round_traffic)
                    .map(|((v, p), &t)| SegmentWeight {
                        weight: t as f64,
                        posteriors: v,
                        p_best: p,
                    })
                    .collect();
                let plan = segment_rotation_plan(&set, &config, &weights, &mut rng);
                set.rotate_from_plan(&config, &plan, &ids, &mut rng);
            } else {
                set.rotate_from(&config, &ids, &mut rng);
            }
            round_traffic.iter_mut().for_each(|t| *t = 0);
        }
        let after: Vec<String> = set.arms.iter().map(|a| a.item.clone()).collect();
        if rotated || before != after {
            // Arms that stay keep their segment evidence (across a round's end as the policy
            // keeps theirs, as the worker does); fresh arms start without.
            let old: Vec<(String, Vec<Counted>)> =
                before.into_iter().zip(seg_counts.drain(..)).collect();
            items = item_of(&set);
            seg_counts = after
                .iter()
                .map(|id| {
                    old.iter()
                        .find(|(o, _)| o == id)
                        .map(|(_, c)| {
                            if rotated {
                                c.iter()
                                    .map(|&x| carry_over(x, &policy.survivors))
                                    .collect()
                            } else {
                                c.clone()
                            }
                        })
                        .unwrap_or_else(|| vec![Counted::default(); n_seg])
                })
                .collect();
            pending = vec![vec![Counted::default(); n_seg]; items.len()];
        }
        if rotated || !views_fresh {
            rebuild(&set, &seg_counts, &mut views, &mut samplers, &mut strength);
        }
    }
    Ok(ContextRun {
        regret,
        regret_in_set,
        strength,
        curve,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Workload {
        Workload {
            catalog: 60,
            arms: 4,
            interval: 500,
            impressions: 20_000,
            delay: 50,
            ..Workload::default()
        }
    }

    #[test]
    fn without_spread_every_segment_has_the_global_rates() {
        let segs = Segments {
            shares: vec![0.5, 0.5],
            spread: 0.0,
        };
        let r = segment_rates(&small(), &segs, 3).unwrap();
        assert_eq!(r[0], r[1]);
        assert_eq!(r[0], catalog_ctrs(&small(), 3).unwrap());
    }

    #[test]
    fn runs_are_reproducible_and_pooling_helps_when_segments_differ() {
        let w = small();
        let segs = Segments {
            shares: vec![0.5, 0.5],
            spread: 1.0,
        };
        let p = PriorPolicy::default_policy();
        let a = run_context(&w, &segs, p, ContextMode::Pooled, 1).unwrap();
        assert_eq!(
            a,
            run_context(&w, &segs, p, ContextMode::Pooled, 1).unwrap()
        );
        // Over 6 paired seeds the pooled model's mean regret is lower when each segment's
        // best items differ strongly (spread 1).
        let (mut pooled, mut global) = (0.0, 0.0);
        for seed in 1..=6 {
            pooled += run_context(&w, &segs, p, ContextMode::Pooled, seed)
                .unwrap()
                .regret;
            global += run_context(&w, &segs, p, ContextMode::Global, seed)
                .unwrap()
                .regret;
        }
        assert!(pooled < global, "pooled {pooled} vs global {global}");
    }
}
