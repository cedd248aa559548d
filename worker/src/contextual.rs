//! A slot's per-segment counts and the segment views the edge samples from: pure steps on the
//! stored counts, with the partial pooling of `bandit::context`.

use std::collections::BTreeMap;

use bandit::context::{
    carry_over, pooling_strength, segment_behind, segment_posterior, segment_rotation_plan, Cell,
    SegmentWeight,
};
use bandit::policy::{Ranking, SurvivorPrior};
use bandit::protocol::Counted;
use bandit::{ArmSet, EventBatch, Posterior, RotationConfig, RotationPlan};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::segment::{is_known, Dimension};
use crate::snapshot::{SegmentView, UNSEEN_SEGMENT};

/// Each arm's counts per visitor segment, this round (item -> segment -> counts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SegmentCounts(BTreeMap<String, BTreeMap<String, Counted>>);

impl SegmentCounts {
    /// Adds a batch's segment entries of the arms `is_arm` accepts; names the configured
    /// dimensions cannot produce are left out (their events still count for the arm), so
    /// forged names cannot grow the state. Returns the impressions left out.
    pub fn add(
        &mut self,
        batch: &EventBatch,
        dims: &[Dimension],
        is_arm: impl Fn(&str) -> bool,
    ) -> u64 {
        let mut left_out = 0u64;
        for c in &batch.counts {
            let Some(segment) = c.segment.as_deref() else {
                continue;
            };
            if !is_known(dims, segment) || !is_arm(&c.item) {
                left_out = left_out.saturating_add(c.impressions);
                continue;
            }
            let cell = self
                .0
                .entry(c.item.clone())
                .or_default()
                .entry(segment.to_string())
                .or_default();
            cell.impressions = cell.impressions.saturating_add(c.impressions);
            cell.clicks = cell.clicks.saturating_add(c.clicks);
        }
        left_out
    }

    /// Keeps only the counts of items `keep` accepts (arms that left lose theirs).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.0.retain(|item, _| keep(item));
    }

    /// A round ended: survivors (`keep`) carry their segment evidence as the policy carries
    /// theirs (`bandit::context::carry_over`), the others lose it.
    pub fn end_round(&mut self, survivors: &SurvivorPrior, keep: impl Fn(&str) -> bool) {
        self.0.retain(|item, _| keep(item));
        for segments in self.0.values_mut() {
            for counts in segments.values_mut() {
                *counts = carry_over(*counts, survivors);
            }
            segments.retain(|_, c| c.impressions > 0);
        }
        self.0.retain(|_, segments| !segments.is_empty());
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The counts of `item` in `segment`.
    pub fn get(&self, item: &str, segment: &str) -> Counted {
        self.0
            .get(item)
            .and_then(|s| s.get(segment))
            .copied()
            .unwrap_or_default()
    }

    /// The impressions counted in `segment` over every arm.
    pub fn traffic(&self, segment: &str) -> u64 {
        self.0
            .values()
            .filter_map(|s| s.get(segment))
            .fold(0u64, |t, c| t.saturating_add(c.impressions))
    }

    /// The round end's plan for the arms `(item, posterior)` (the set's arms, in order): with
    /// counts, the contextual ranking of `bandit::context::segment_rotation_plan`, each
    /// segment weighted by its impressions here; without, the policy's own.
    pub fn plan_rotation<R: Rng + ?Sized>(
        &self,
        set: &ArmSet,
        rotation: &RotationConfig,
        rng: &mut R,
    ) -> RotationPlan {
        let posteriors = set.posteriors(&rotation.policy);
        let arms = named(set, posteriors);
        let views = self.views(&arms);
        let weights: Vec<SegmentWeight<'_>> = views
            .iter()
            .filter(|v| v.segment != UNSEEN_SEGMENT)
            .map(|v| SegmentWeight {
                weight: self.traffic(&v.segment) as f64,
                posteriors: &v.posteriors,
                p_best: &v.p_best,
            })
            .collect();
        segment_rotation_plan(set, rotation, &weights, rng)
    }

    /// The arms a screening policy retires mid-round: behind on average over the segments
    /// with counts, each weighted by its impressions here (`bandit::context::segment_behind`);
    /// without counts, the policy's own [`ArmSet::behind`].
    pub fn behind(&self, set: &ArmSet, rotation: &RotationConfig) -> Vec<usize> {
        let policy = &rotation.policy;
        if self.is_empty() || !matches!(policy.ranking, Ranking::Screen { .. }) {
            return set.behind(policy, false);
        }
        let arms = named(set, set.posteriors(policy));
        let k = self.strength(&arms);
        let views: Vec<(f64, Vec<Posterior>)> = self
            .segments()
            .into_iter()
            .map(|name| {
                let weight = self.traffic(name) as f64;
                (weight, self.posteriors_in(name, &arms, k))
            })
            .collect();
        segment_behind(
            set,
            policy,
            false,
            views.iter().map(|(w, v)| (*w, v.as_slice())),
        )
    }

    /// Each arm's posterior in `segment`, pooled with strength `k`.
    fn posteriors_in(&self, segment: &str, arms: &[(&str, Posterior)], k: f64) -> Vec<Posterior> {
        arms.iter()
            .map(|(item, p)| segment_posterior(p, self.get(item, segment), k))
            .collect()
    }

    /// Every segment with counts, sorted.
    pub fn segments(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .0
            .values()
            .flat_map(|s| s.keys().map(String::as_str))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The pooling strength these counts imply for arms `(item, posterior)`.
    pub fn strength(&self, arms: &[(&str, Posterior)]) -> f64 {
        pooling_strength(arms.iter().flat_map(|(item, p)| {
            let m = p.mean();
            self.0.get(*item).into_iter().flat_map(move |segs| {
                segs.values().map(move |&counts| Cell {
                    arm_mean: m,
                    counts,
                })
            })
        }))
    }

    /// The views of `arms` (in order) for every segment with counts, plus the view of
    /// segments without counts when it differs from the arms' own posteriors; each with its
    /// P(best), computed here once per published version.
    pub fn views(&self, arms: &[(&str, Posterior)]) -> Vec<SegmentView> {
        if self.is_empty() {
            return Vec::new();
        }
        let k = self.strength(arms);
        let view = |name: &str| {
            let posteriors = self.posteriors_in(name, arms, k);
            SegmentView {
                segment: name.to_string(),
                p_best: bandit::p_best(&posteriors),
                posteriors,
            }
        };
        let mut out: Vec<SegmentView> = self.segments().into_iter().map(view).collect();
        // Unseen segments get the pooled prior alone: the arms' own posteriors unless the fit
        // says segments differ enough to weaken it.
        if arms.iter().any(|(_, p)| k < p.alpha + p.beta) {
            out.push(view(UNSEEN_SEGMENT));
        }
        out
    }
}

/// The set's arms by item id, each with its posterior (`posteriors` in the set's order).
fn named(set: &ArmSet, posteriors: Vec<Posterior>) -> Vec<(&str, Posterior)> {
    set.arms
        .iter()
        .map(|a| a.item.as_str())
        .zip(posteriors)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bandit::ItemCount;
    use rand::SeedableRng;

    fn entry(item: &str, segment: &str, impressions: u64, clicks: u64) -> ItemCount {
        ItemCount {
            item: item.into(),
            impressions,
            clicks,
            served_by: None,
            segment: Some(segment.into()),
        }
    }

    #[test]
    fn known_segments_of_arms_are_counted_and_the_rest_left_out() {
        let dims = [Dimension::Device];
        let mut c = SegmentCounts::default();
        let batch = EventBatch {
            counts: vec![
                entry("a", "mobile", 10, 2),
                entry("a", "desktop", 5, 0),
                entry("a", "phone", 7, 1),
                entry("z", "mobile", 3, 0),
            ],
            ..Default::default()
        };
        let left = c.add(&batch, &dims, |i| i == "a");
        assert_eq!(left, 10);
        assert_eq!(c.get("a", "mobile").clicks, 2);
        assert_eq!(c.segments(), ["desktop", "mobile"]);
        c.end_round(&SurvivorPrior::Carry { decay: 0.5 }, |i| i == "a");
        assert_eq!(c.get("a", "mobile").impressions, 5);
        c.end_round(&SurvivorPrior::Reset, |_| true);
        assert!(c.is_empty());
    }

    #[test]
    fn segments_that_prefer_different_arms_get_views_that_say_so() {
        let dims = [Dimension::Device];
        let mut c = SegmentCounts::default();
        // Mobile visitors click "a" (10%) over "b" (2%); desktop ones the other way round.
        let batch = EventBatch {
            counts: vec![
                entry("a", "mobile", 5_000, 500),
                entry("b", "mobile", 5_000, 100),
                entry("a", "desktop", 5_000, 100),
                entry("b", "desktop", 5_000, 500),
            ],
            ..Default::default()
        };
        c.add(&batch, &dims, |_| true);
        let arms = [
            ("a", Posterior::UNIFORM.observe(600, 10_000)),
            ("b", Posterior::UNIFORM.observe(600, 10_000)),
        ];
        let views = c.views(&arms);
        let get = |name: &str| views.iter().find(|v| v.segment == name).unwrap();
        assert!(get("mobile").p_best[0] > 0.99, "{:?}", get("mobile"));
        assert!(get("desktop").p_best[1] > 0.99, "{:?}", get("desktop"));
        // The fit saw segments differ, so an unseen segment gets a weakened prior, not the
        // arms' own posteriors.
        let unseen = get(UNSEEN_SEGMENT);
        assert!(unseen.posteriors[0].alpha + unseen.posteriors[0].beta < 10_002.0);
        assert!(SegmentCounts::default().views(&arms).is_empty());
    }

    #[test]
    fn the_round_end_keeps_the_arm_a_segment_prefers() {
        let policy = bandit::PriorPolicy::CARRY_EB_RACE;
        let rotation = RotationConfig {
            arms: 4,
            round_impressions: 40_000,
            policy,
            cooldown_rounds: 0,
        };
        let mut set = ArmSet::new(["a", "b", "c", "d"].map(String::from).to_vec(), &policy);
        // Desktop (80% of the traffic) ranks a > b > c > d; mobile visitors click d at 8%
        // against 4.5-5% for the rest, which leaves d fourth over all.
        let desktop = [("a", 400), ("b", 384), ("c", 360), ("d", 280)];
        let mobile = [("a", 100), ("b", 96), ("c", 90), ("d", 160)];
        let mut batch = EventBatch::default();
        for ((item, dc), (_, mc)) in desktop.iter().zip(&mobile) {
            set.record(item, 10_000, dc + mc);
            batch.counts.push(entry(item, "desktop", 8_000, *dc));
            batch.counts.push(entry(item, "mobile", 2_000, *mc));
        }
        let mut c = SegmentCounts::default();
        c.add(&batch, &[Dimension::Device], |_| true);
        assert_eq!(c.traffic("mobile"), 8_000);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let global = set.plan_rotation(&rotation, &mut rng);
        assert_eq!(global.keep, [0, 1], "the all-segment ranking keeps a and b");
        let plan = c.plan_rotation(&set, &rotation, &mut rng);
        assert_eq!(plan.keep, [0, 3], "each segment's leader stays: {plan:?}");
        assert_eq!(plan.fresh_needed, 2);
        // Without segment counts the round end is the policy's own.
        let plain = SegmentCounts::default().plan_rotation(&set, &rotation, &mut rng);
        assert_eq!(plain.keep, global.keep);
        // The default screens: over all d is confidently behind and would leave, but it leads
        // mobile, so with segment counts it stays (screening judged per segment).
        let screen = RotationConfig {
            policy: bandit::PriorPolicy::default_policy(),
            ..rotation
        };
        assert!(set.behind(&screen.policy, true).contains(&3));
        assert!(!set.plan_rotation(&screen, &mut rng).keep.contains(&3));
        assert!(!c.behind(&set, &screen).contains(&3));
        assert!(c.plan_rotation(&set, &screen, &mut rng).keep.contains(&3));
    }
}
