//! Invariants of the rotating arm set (property tests) and statistical checks of the offline
//! evaluator against analytic expectations.

use std::collections::{HashMap, HashSet};

use bandit::evaluate::{self, CtrSource, EvalPolicy, Workload};
use bandit::policy::Ranking;
use bandit::{Arm, ArmSet, Posterior, PriorPolicy, Recorded, RotationConfig};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn catalog(len: usize) -> Vec<String> {
    (0..len).map(|i| format!("item-{i}")).collect()
}

fn policies() -> impl Strategy<Value = PriorPolicy> {
    prop_oneof![
        Just(PriorPolicy::POST2015),
        Just(PriorPolicy::RESET),
        Just(PriorPolicy::CARRY_EB),
        Just("carry".parse().unwrap()),
        Just("carry:0.5".parse().unwrap()),
        Just("eb".parse().unwrap()),
        Just("carry-eb-mean:0.7".parse().unwrap()),
        Just("reset-mean".parse().unwrap()),
        Just("carry-q0.1:0.5".parse().unwrap()),
        Just("eb-q0.9".parse().unwrap()),
        Just("carry-eb-race0.01:0.7".parse().unwrap()),
        Just("carry-eb-race0.2".parse().unwrap()),
    ]
}

/// Random feedback for every arm of the round, enough to complete it.
fn feed(set: &mut ArmSet, rng: &mut SmallRng) {
    let items: Vec<String> = set.arms.iter().map(|a| a.item.clone()).collect();
    for item in items {
        let imps = rng.random_range(1..400u64);
        let clicks = rng.random_range(0..=imps);
        assert_eq!(set.record(&item, imps, clicks), Recorded::Counted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn rotation_invariants(
        n in 1usize..=12,
        cooldown in 0u64..=4,
        extra in 0usize..40,
        rounds in 1usize..=15,
        policy in policies(),
        seed in any::<u64>(),
    ) {
        // Large enough that a full set of fresh items always exists: the current set plus
        // every item retired within the cool-down is at most n + n * cooldown.
        let cat = catalog(n * (cooldown as usize + 2) + extra);
        let config = RotationConfig { arms: n, round_impressions: 1, policy, cooldown_rounds: cooldown };
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut set = ArmSet::new(cat[..n].to_vec(), &policy);
        // Round in which each retired item left.
        let mut retired_in: HashMap<String, u64> = HashMap::new();

        for _ in 0..rounds {
            feed(&mut set, &mut rng);
            prop_assert!(set.round_complete(&config));
            let before = set.clone();
            let old: HashMap<&str, &bandit::Arm> =
                before.arms.iter().map(|a| (a.item.as_str(), a)).collect();
            let summary = set.rotate_from(&config, &cat, &mut rng);

            // Rounds are numbered consecutively.
            prop_assert_eq!(summary.round, before.round);
            prop_assert_eq!(set.round, before.round + 1);
            prop_assert_eq!(set.round_impressions, 0);

            // Size n, no duplicates.
            prop_assert_eq!(set.arms.len(), n);
            let items: HashSet<&str> = set.arms.iter().map(|a| a.item.as_str()).collect();
            prop_assert_eq!(items.len(), n);

            // Exactly floor(n/2) survivors (race: between 1 and floor(n/2), the leader by
            // posterior mean among them), all from the previous set; the rest are new.
            let survivors: Vec<&bandit::Arm> =
                set.arms.iter().filter(|a| old.contains_key(a.item.as_str())).collect();
            let kept = survivors.len();
            if let Ranking::Race { .. } = policy.ranking {
                prop_assert!(kept <= n / 2 && kept >= (n / 2).min(1));
                let means: Vec<f64> =
                    before.posteriors(&policy).iter().map(|p| p.mean()).collect();
                let top = means.iter().copied().fold(f64::MIN, f64::max);
                if let Some(first) = summary.survivors.first() {
                    prop_assert_eq!(first.1, top);
                }
            } else {
                prop_assert_eq!(kept, n / 2);
            }
            prop_assert_eq!(summary.survivors.len(), kept);
            prop_assert_eq!(summary.retired.len(), n - kept);
            prop_assert_eq!(summary.added.len(), n - kept);
            // Under a deterministic ranking every survivor scores at least every retiree
            // (race retires some of the top half early, on evidence).
            if matches!(policy.ranking, Ranking::Mean | Ranking::Quantile { .. }) {
                let low = summary.survivors.iter().map(|s| s.1).fold(f64::MAX, f64::min);
                for r in &summary.retired {
                    prop_assert!(r.draw <= low);
                }
            }
            for a in &set.arms {
                if old.contains_key(a.item.as_str()) {
                    prop_assert!(a.since_round < set.round);
                } else {
                    prop_assert_eq!(a.since_round, set.round);
                    prop_assert_eq!((a.clicks, a.impressions, a.total_impressions), (0, 0, 0));
                    // Not drawn again within the cool-down: it was out for at least
                    // `cooldown` whole rounds (rounds r + 1 ..= set.round - 1).
                    if let Some(&r) = retired_in.get(&a.item) {
                        prop_assert!(set.round - r > cooldown,
                            "{} retired in round {r}, back in round {}", a.item, set.round);
                    }
                }
            }

            // Survivors: this round's counts start at zero, totals are kept, and the prior
            // follows the policy.
            for s in &survivors {
                let o = old[s.item.as_str()];
                prop_assert_eq!((s.clicks, s.impressions), (0, 0));
                prop_assert_eq!((s.total_clicks, s.total_impressions), (o.total_clicks, o.total_impressions));
                let before_post = policy.posterior(o.prior, o.clicks, o.impressions);
                let after_post = policy.posterior(s.prior, 0, 0);
                match policy.survivors {
                    bandit::policy::SurvivorPrior::Carry { decay: 1.0 } => {
                        // decay 1 keeps the evidence exactly.
                        prop_assert_eq!(after_post, before_post);
                    }
                    bandit::policy::SurvivorPrior::Carry { decay } => {
                        // Shrunk toward the fresh prior (the one this round's fresh items
                        // got): decay * posterior + (1 - decay) * fresh prior.
                        let fresh = set.arms.iter()
                            .find(|a| !old.contains_key(a.item.as_str()))
                            .map(|a| a.prior);
                        if let Some(f) = fresh {
                            let want_a = decay * before_post.alpha + (1.0 - decay) * f.alpha;
                            let want_b = decay * before_post.beta + (1.0 - decay) * f.beta;
                            prop_assert!((s.prior.alpha - want_a).abs() <= 1e-9 * want_a.max(1.0));
                            prop_assert!((s.prior.beta - want_b).abs() <= 1e-9 * want_b.max(1.0));
                        }
                    }
                    bandit::policy::SurvivorPrior::Reset => {
                        if policy.fresh == bandit::policy::FreshPrior::Uniform {
                            prop_assert_eq!(s.prior, Posterior::UNIFORM);
                        } else {
                            // Reset to the same prior a fresh item gets.
                            let fresh: Vec<_> = set.arms.iter()
                                .filter(|a| !old.contains_key(a.item.as_str())).collect();
                            if let Some(f) = fresh.first() {
                                prop_assert_eq!(s.prior, f.prior);
                            }
                        }
                    }
                }
            }

            for r in &summary.retired {
                prop_assert!(!items.contains(r.item.as_str()));
                retired_in.insert(r.item.clone(), summary.round);
            }
        }
    }

    #[test]
    fn items_outside_the_set_are_not_counted(
        n in 1usize..=10,
        imps in 0u64..1000,
        clicks in 0u64..1000,
        seed in any::<u64>(),
    ) {
        let cat = catalog(3 * n);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut set = ArmSet::new(cat[..n].to_vec(), &PriorPolicy::RESET);
        feed(&mut set, &mut rng);
        let before = set.clone();
        for outside in &cat[n..] {
            prop_assert_eq!(set.record(outside, imps, clicks), Recorded::NotInSet);
        }
        prop_assert_eq!(set.record("not-in-catalog", imps, clicks), Recorded::NotInSet);
        prop_assert_eq!(&set, &before);
    }

    #[test]
    fn reset_clears_survivors(n in 2usize..=12, seed in any::<u64>()) {
        let cat = catalog(4 * n);
        let config = RotationConfig { arms: n, round_impressions: 1, policy: PriorPolicy::RESET, cooldown_rounds: 1 };
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut set = ArmSet::new(cat[..n].to_vec(), &PriorPolicy::RESET);
        feed(&mut set, &mut rng);
        set.rotate_from(&config, &cat, &mut rng);
        for a in &set.arms {
            prop_assert_eq!(a.prior, Posterior::UNIFORM);
            prop_assert_eq!((a.clicks, a.impressions), (0, 0));
            prop_assert_eq!(PriorPolicy::RESET.posterior(a.prior, a.clicks, a.impressions), Posterior::UNIFORM);
        }
    }
}

/// A set of four tight arms with posterior mean about 0.1 ("sure-*") and four uncertain arms
/// with a lower mean, 1/13 ("long-*"), each of which draws above 0.1 with probability ~0.28.
fn separated(policy: &PriorPolicy) -> ArmSet {
    let mut set = ArmSet::new(Vec::new(), policy);
    for k in 0..4 {
        set.arms.push(Arm {
            item: format!("sure-{k}"),
            prior: Posterior::UNIFORM,
            clicks: 100 + k,
            impressions: 1000,
            total_clicks: 100 + k,
            total_impressions: 1000,
            since_round: 1,
            recalled: None,
        });
        set.arms.push(Arm {
            item: format!("long-{k}"),
            prior: Posterior {
                alpha: 1.0,
                beta: 12.0,
            },
            clicks: 0,
            impressions: 0,
            total_clicks: 0,
            total_impressions: 0,
            since_round: 1,
            recalled: None,
        });
    }
    set.round_impressions = 4000;
    set
}

fn survivors(set: &ArmSet, policy: &str, seed: u64) -> Vec<String> {
    let policy: PriorPolicy = policy.parse().unwrap();
    let config = RotationConfig {
        arms: 8,
        round_impressions: 1,
        policy,
        cooldown_rounds: 0,
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let plan = set.plan_rotation(&config, &mut rng);
    let mut kept: Vec<String> = plan
        .keep
        .iter()
        .map(|&i| set.arms[i].item.clone())
        .collect();
    kept.sort();
    kept
}

#[test]
fn mean_ranking_keeps_the_higher_means() {
    // One draw each keeps all four sure arms only with probability ~0.72^4 ~ 0.27 per seed,
    // so over 40 seeds the draw rule (almost surely) drops one; the mean rule never does.
    let sure: Vec<String> = (0..4).map(|k| format!("sure-{k}")).collect();
    let set = separated(&"carry-eb-mean:0.7".parse().unwrap());
    let mut draw_dropped_one = false;
    for seed in 0..40 {
        assert_eq!(
            survivors(&set, "carry-eb-mean:0.7", seed),
            sure,
            "seed {seed}"
        );
        assert_eq!(survivors(&set, "carry-q0.1", seed), sure, "seed {seed}");
        draw_dropped_one |= survivors(&set, "carry-eb:0.7", seed) != sure;
    }
    assert!(draw_dropped_one);
    // The upper quantile favours the uncertain arms instead.
    let long: Vec<String> = (0..4).map(|k| format!("long-{k}")).collect();
    assert_eq!(survivors(&set, "carry-q0.9", 0), long);
}

#[test]
fn race_retires_arms_confidently_behind_the_leader() {
    let policy: PriorPolicy = "carry-eb-race0.01:0.7".parse().unwrap();
    let mut set = separated(&policy);
    // A leader far ahead of the sure arms (0.2 against 0.1 on 1,000 impressions each).
    set.arms[0].clicks = 200;
    set.arms[0].total_clicks = 200;
    let config = RotationConfig {
        arms: 8,
        round_impressions: 1,
        policy,
        cooldown_rounds: 0,
    };
    let mut rng = SmallRng::seed_from_u64(1);
    let plan = set.plan_rotation(&config, &mut rng);
    assert_eq!(plan.keep, vec![0]);
    assert_eq!(plan.fresh_needed, 7);
    assert_eq!(plan.retire.len(), 7);
    // Without a clear leader it keeps the top half by mean, like the mean rule.
    let set = separated(&policy);
    assert_eq!(
        survivors(&set, "carry-eb-race0.01:0.7", 1),
        survivors(&set, "carry-eb-mean:0.7", 1)
    );
    let cat = catalog(40);
    let mut set2 = separated(&policy);
    set2.arms[0].clicks = 200;
    set2.arms[0].total_clicks = 200;
    let summary = set2.rotate_from(&config, &cat, &mut rng);
    assert_eq!(set2.arms.len(), 8);
    assert_eq!(summary.survivors.len(), 1);
    assert_eq!(summary.added.len(), 7);
}

/// A workload on fixed rates with one set that never rotates.
fn fixed(ctrs: &[f64], impressions: u64, delay: u64) -> Workload {
    Workload {
        catalog: ctrs.len(),
        ctr: CtrSource::Fixed(ctrs.to_vec()),
        arms: ctrs.len(),
        interval: impressions + 1,
        impressions,
        delay,
        cooldown: 0,
        checkpoints: 50,
    }
}

/// Expected regret of uniform choice over `ctrs` for T impressions, and the standard error of
/// its realised value: T i.i.d. gaps with the population variance of the gaps.
fn uniform_expectation(ctrs: &[f64], t: u64) -> (f64, f64) {
    let best = ctrs.iter().copied().fold(f64::MIN, f64::max);
    let gaps: Vec<f64> = ctrs.iter().map(|p| best - p).collect();
    let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let var = gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / gaps.len() as f64;
    (t as f64 * m, (t as f64 * var).sqrt())
}

const CTRS: [f64; 4] = [0.02, 0.05, 0.11, 0.30];

#[test]
fn uniform_regret_matches_its_expectation() {
    // Seeded; 4 standard errors per seed (false failure < 1e-4 per seed).
    let t = 50_000;
    let (want, se) = uniform_expectation(&CTRS, t);
    for seed in 1..=5 {
        let r = evaluate::run_one(&fixed(&CTRS, t, 0), EvalPolicy::Uniform, seed).unwrap();
        assert!(
            (r.regret - want).abs() < 4.0 * se,
            "seed {seed}: {} vs {want} (se {se})",
            r.regret
        );
        assert_eq!(r.rounds, 0);
    }
}

#[test]
fn thompson_without_feedback_is_uniform() {
    // With the first batch arriving after the run, every decision uses Beta(1, 1) for every
    // arm, so Thompson picks uniformly: same expectation and standard error as uniform.
    let t = 50_000;
    let (want, se) = uniform_expectation(&CTRS, t);
    for name in ["shop", "post2015", "carry"] {
        let policy: EvalPolicy = name.parse().unwrap();
        let r = evaluate::run_one(&fixed(&CTRS, t, t + 1), policy, 3).unwrap();
        assert!(
            (r.regret - want).abs() < 4.0 * se,
            "{name}: {} vs {want} (se {se})",
            r.regret
        );
    }
}

#[test]
fn regret_is_zero_when_the_best_item_is_always_shown() {
    let w = fixed(&CTRS, 20_000, 0);
    let r = evaluate::run_one(&w, EvalPolicy::OracleInSet, 1).unwrap();
    assert_eq!(r.regret, 0.0);
    // A one-item catalog: every policy always shows the best item.
    let one = fixed(&[0.07], 5_000, 0);
    for name in ["shop", "post2015", "uniform", "carry-eb:0.9"] {
        let r = evaluate::run_one(&one, name.parse().unwrap(), 2).unwrap();
        assert_eq!(r.regret, 0.0, "{name}");
    }
}

#[test]
fn learning_beats_uniform_on_a_clear_catalog() {
    // Thompson sampling's regret grows like log T; uniform's like T. With gaps of 0.19 and
    // more the learner must be far below uniform's expectation (here under a fifth).
    let t = 50_000;
    let (uniform, _) = uniform_expectation(&CTRS, t);
    for name in ["shop", "post2015", "default"] {
        let r = evaluate::run_one(&fixed(&CTRS, t, 0), name.parse().unwrap(), 4).unwrap();
        assert!(
            r.regret < uniform / 5.0,
            "{name}: {} vs {uniform}",
            r.regret
        );
    }
}

#[test]
fn catalog_rates_follow_the_beta_and_are_shared_by_policies() {
    let w = Workload {
        catalog: 20_000,
        ctr: CtrSource::Beta { a: 2.0, b: 60.0 },
        impressions: 10,
        ..Workload::default()
    };
    let ctr = evaluate::catalog_ctrs(&w, 9).unwrap();
    let (a, b) = (2.0, 60.0);
    let mean = a / (a + b);
    let var = a * b / ((a + b) * (a + b) * (a + b + 1.0));
    let got = ctr.iter().sum::<f64>() / ctr.len() as f64;
    // 4 standard errors of a sample mean of 20,000 draws.
    assert!(
        (got - mean).abs() < 4.0 * (var / ctr.len() as f64).sqrt(),
        "{got}"
    );
    assert_eq!(evaluate::catalog_ctrs(&w, 9).unwrap(), ctr);
    assert_ne!(evaluate::catalog_ctrs(&w, 10).unwrap(), ctr);
    let best = ctr.iter().copied().fold(f64::MIN, f64::max);
    for name in ["shop", "uniform", "carry-eb"] {
        let r = evaluate::run_one(&w, name.parse().unwrap(), 9).unwrap();
        assert_eq!(r.best_ctr, best);
    }
}

#[test]
fn runs_are_reproducible_and_curves_consistent() {
    let w = Workload {
        catalog: 300,
        impressions: 30_000,
        interval: 1_000,
        delay: 250,
        ..Workload::default()
    };
    let a = evaluate::run_one(&w, EvalPolicy::Thompson(PriorPolicy::CARRY_EB), 5).unwrap();
    let b = evaluate::run_one(&w, EvalPolicy::Thompson(PriorPolicy::CARRY_EB), 5).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.rounds, 30);
    assert_eq!(a.curve.len(), 100);
    assert_eq!(*a.curve.last().unwrap(), a.regret);
    assert!(a.curve.windows(2).all(|c| c[0] <= c[1]));
    // Regret per impression is at most the catalog's best rate.
    assert!(a.regret >= 0.0 && a.regret <= a.best_ctr * w.impressions as f64);
}

#[test]
fn bad_workloads_are_rejected() {
    let ok = Workload::default();
    for (w, want) in [
        (
            Workload {
                arms: 0,
                ..ok.clone()
            },
            evaluate::EvalError::NoArms,
        ),
        (
            Workload {
                catalog: 0,
                ..ok.clone()
            },
            evaluate::EvalError::EmptyCatalog,
        ),
        (
            Workload {
                interval: 0,
                ..ok.clone()
            },
            evaluate::EvalError::ZeroInterval,
        ),
    ] {
        assert_eq!(evaluate::run_one(&w, EvalPolicy::Uniform, 1), Err(want));
    }
    let bad = Workload {
        ctr: CtrSource::Beta { a: 0.0, b: 1.0 },
        ..ok
    };
    assert!(evaluate::run_one(&bad, EvalPolicy::Uniform, 1).is_err());
}

#[test]
fn fresh_arms_join_the_current_round_once_with_the_fresh_prior() {
    let policy = PriorPolicy::CARRY_EB;
    let config = RotationConfig {
        arms: 4,
        policy,
        ..RotationConfig::default()
    };
    let mut set = ArmSet::new(catalog(2), &policy);
    let mut rng = SmallRng::seed_from_u64(5);
    feed(&mut set, &mut rng);
    let plan = set.plan_rotation(&config, &mut rng);
    set.rotate(&config, &plan, vec!["item-7".into()]);
    let prior = set.fresh_prior(&policy);
    let added = set.add_fresh(
        ["item-7".to_string(), "item-8".into(), "item-9".into()],
        &policy,
    );
    // item-7 is already an arm: only the two new ones join, in round 2, with the fitted prior.
    assert_eq!(added, 2);
    assert_eq!(set.arms.iter().filter(|a| a.item == "item-7").count(), 1);
    for item in ["item-8", "item-9"] {
        let a = &set.arms[set.position(item).unwrap()];
        assert_eq!((a.since_round, a.prior), (set.round, prior));
        assert_eq!((a.impressions, a.total_impressions, a.clicks), (0, 0, 0));
    }
}

#[test]
fn exclude_list_is_sorted_and_covers_arms_and_cooling_retirees() {
    let policy = PriorPolicy::RESET;
    let config = RotationConfig {
        arms: 4,
        policy,
        cooldown_rounds: 2,
        ..RotationConfig::default()
    };
    let mut set = ArmSet::new(
        vec!["d".into(), "b".into(), "c".into(), "a".into()],
        &policy,
    );
    let mut rng = SmallRng::seed_from_u64(9);
    feed(&mut set, &mut rng);
    let plan = set.plan_rotation(&config, &mut rng);
    let retired: Vec<String> = plan
        .retire
        .iter()
        .map(|&i| set.arms[i].item.clone())
        .collect();
    assert_eq!(retired.len(), 2);
    set.rotate(&config, &plan, vec!["z".into(), "y".into()]);
    let list = set.exclude_list(&config);
    let mut expected: Vec<String> = set.arms.iter().map(|a| a.item.clone()).collect();
    expected.extend(retired);
    expected.sort();
    // The four arms and the two items retired one round ago (cool-down 2), in order.
    assert_eq!(list, expected);
}

#[test]
fn screening_beats_the_2015_rule_on_a_rotating_catalog() {
    // Paired seeds (same catalog, same decision stream seed) on a catalog the set must rotate
    // through. The claim is only the direction: the whole 95% interval of the paired ratio of
    // mean regrets lies below 1 (a t interval: false failure about 2.5% if screening were no
    // better; on these seeds it is 0.58 with the interval up to 0.86).
    let w = Workload {
        catalog: 300,
        ctr: CtrSource::Beta { a: 2.0, b: 60.0 },
        arms: 8,
        interval: 1_000,
        impressions: 40_000,
        delay: 0,
        cooldown: 5,
        checkpoints: 10,
    };
    let regrets = |name: &str| -> Vec<f64> {
        let policy: EvalPolicy = name.parse().unwrap();
        (1..=12)
            .map(|seed| evaluate::run_one(&w, policy, seed).unwrap().regret)
            .collect()
    };
    let base = regrets("post2015");
    let screen = regrets("screen");
    let r = evaluate::paired_ratio(&screen, &base);
    let (_, hi) = r.ci95.unwrap();
    assert!(hi < 1.0, "screen / post2015 = {} {:?}", r.ratio, r.ci95);
}
