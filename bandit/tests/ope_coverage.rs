//! Coverage of the off-policy estimators' 95% intervals on simulated logs with known truth.
//!
//! Each of 100 seeded logs has 8 items with known click-through rates and a logging policy
//! like the edge's: a 10% uniform holdout, the rest a fixed distribution that favours the worst
//! items (so the best item is shown with probability 1.7%, a weight near 60 for "always it").
//! The logged probability is the mixture's, as the edge logs it.
//!
//! Threshold: if an interval's true coverage is 95%, the number of the 100 runs it covers is
//! Binomial(100, 0.95) and P(fewer than 90) = 0.011; at 94% it is 0.038. Requiring at least 90
//! of 100 thus fails a correct 95% interval rarely and catches one that covers 85% or less
//! with probability about 0.9 (P(Binomial(100, 0.85) >= 90) = 0.10). The seeds are fixed, so
//! the result is reproducible.

use bandit::ope::{Candidate, CandidateReport, Estimate, Evaluator, LoggedDecision};
use bandit::{pick, ArmSet, PriorPolicy};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const RATES: [f64; 8] = [0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10, 0.12];
const BANDIT_SHARE: [f64; 8] = [0.40, 0.25, 0.15, 0.10, 0.05, 0.03, 0.015, 0.005];
const HOLDOUT: f64 = 0.1;
const DECISIONS: usize = 20_000;
const RUNS: u64 = 100;
/// Online runs averaged for a learning policy's true value; its Monte Carlo error (about
/// 0.0005) is small next to the intervals' half-width (about 0.04).
const TRUTH_RUNS: usize = 1_000;
const MIN_COVERED: usize = 90;

fn item(i: usize) -> String {
    format!("i{i}")
}

fn logging_probability(i: usize) -> f64 {
    HOLDOUT / RATES.len() as f64 + (1.0 - HOLDOUT) * BANDIT_SHARE[i]
}

fn draw(weights: &[f64], rng: &mut SmallRng) -> usize {
    let mut u: f64 = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

fn simulate(seed: u64) -> Vec<LoggedDecision> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..DECISIONS)
        .map(|_| {
            let holdout = rng.random::<f64>() < HOLDOUT;
            let i = if holdout {
                rng.random_range(0..RATES.len())
            } else {
                draw(&BANDIT_SHARE, &mut rng)
            };
            LoggedDecision {
                round: 1,
                set: 0,
                item: item(i),
                probability: logging_probability(i),
                arms: RATES.len() as u32,
                holdout,
                reward: rng.random::<f64>() < RATES[i],
            }
        })
        .collect()
}

/// Expected cumulative reward of `policy` run online for 1..=steps, averaged over runs
/// (the expected rate of each pick, not a sampled click, to cut the Monte Carlo noise).
fn online_curve(policy: &PriorPolicy, steps: usize, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cum = vec![0.0; steps];
    for _ in 0..TRUTH_RUNS {
        let mut set = ArmSet::new((0..RATES.len()).map(item).collect(), policy);
        let mut total = 0.0;
        for c in cum.iter_mut() {
            let k = pick(&set.posteriors(policy), &mut rng).expect("arms");
            let i: usize = set.arms[k].item[1..].parse().expect("item index");
            total += RATES[i];
            let click = rng.random::<f64>() < RATES[i];
            set.record(&item(i), 1, u64::from(click));
            *c += total;
        }
    }
    cum.iter().map(|c| c / TRUTH_RUNS as f64).collect()
}

struct Tally {
    name: String,
    covered: usize,
    runs: usize,
}

#[test]
fn intervals_cover_the_truth() {
    let uniform_truth = RATES.iter().sum::<f64>() / RATES.len() as f64;
    let fixed = [
        (Candidate::Uniform, uniform_truth),
        (Candidate::Item(item(7)), RATES[7]),
        (Candidate::Item(item(2)), RATES[2]),
    ];
    let learners = [PriorPolicy::default_policy(), PriorPolicy::POST2015];
    let mut tallies: Vec<Tally> = Vec::new();
    let mut tally = |name: String, e: &Estimate, truth: f64| {
        let t = match tallies.iter_mut().position(|t| t.name == name) {
            Some(i) => &mut tallies[i],
            None => {
                tallies.push(Tally {
                    name,
                    covered: 0,
                    runs: 0,
                });
                tallies.last_mut().expect("just pushed")
            }
        };
        t.runs += 1;
        t.covered += usize::from(e.covers(truth));
    };
    // Replay's truth depends on how many steps matched; collected first, scored after.
    let mut replays: Vec<(usize, Vec<Estimate>)> = vec![(0, Vec::new()); learners.len()];
    for seed in 1..=RUNS {
        let log = simulate(seed);
        let ev = Evaluator::new(&log);
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
        for (c, truth) in &fixed {
            let Ok(CandidateReport::Fixed { report, .. }) = ev.evaluate(c, &mut rng) else {
                panic!("{c}: fixed report expected")
            };
            tally(format!("{c} ips"), &report.ips, *truth);
            tally(format!("{c} snips"), &report.snips, *truth);
            tally(format!("{c} dr"), &report.dr, *truth);
        }
        for (l, policy) in learners.iter().enumerate() {
            let Ok(CandidateReport::Replay(r)) = ev.evaluate(&Candidate::Replay(*policy), &mut rng)
            else {
                panic!("replay report expected")
            };
            replays[l].0 = replays[l].0.max(r.estimate.matched);
            replays[l].1.push(r.estimate);
        }
    }
    for (l, policy) in learners.iter().enumerate() {
        let (max_steps, estimates) = &replays[l];
        let curve = online_curve(policy, *max_steps, 2011 + l as u64);
        for e in estimates {
            assert!(e.matched > 0);
            let truth = curve[e.matched - 1] / e.matched as f64;
            tally(format!("replay:{policy} replay"), e, truth);
        }
    }
    let mut failed = Vec::new();
    for t in &tallies {
        println!("{:<32} covered {:>3} of {}", t.name, t.covered, t.runs);
        if t.covered < MIN_COVERED {
            failed.push(&t.name);
        }
    }
    assert!(
        failed.is_empty(),
        "coverage below {MIN_COVERED}/100: {failed:?}"
    );
}
