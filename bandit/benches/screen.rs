//! CPU per event batch of the default policy's screening in the slot object, against the
//! counting every policy does per batch: recording a batch of n item counts, then finding the
//! arms confidently behind over all (n = 8, 64) and, with 24 visitor segments, fitting the
//! pooling, building each segment's view and judging the arms per segment. And what memory
//! adds to a batch that retires an arm, with the memory full: remembering it and serialising
//! the memory for its storage write (`memory_store`), and ordering a refill's eight
//! candidates (`memory_prefer`).

use std::hint::black_box;

use bandit::context::{pooling_strength, segment_behind, segment_posterior, Cell};
use bandit::memory::{Memory, FRESH_POOL, MEMORY_CAPACITY};
use bandit::protocol::Counted;
use bandit::{ArmSet, Posterior, PriorPolicy};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// A set of `n` arms mid-round: 200 to 500 impressions each at 2% to 8%.
fn set(n: usize, policy: &PriorPolicy) -> ArmSet {
    let items: Vec<String> = (0..n).map(|i| format!("item-{i}")).collect();
    let mut set = ArmSet::new(items, policy);
    for (i, (imps, clicks)) in counts(n).into_iter().enumerate() {
        set.record(&format!("item-{i}"), imps, clicks);
    }
    set
}

fn counts(n: usize) -> Vec<(u64, u64)> {
    (0..n)
        .map(|i| {
            let impressions = 200 + (i as u64 * 37) % 300;
            let ctr = 0.02 + 0.06 * ((i * 5) % n) as f64 / n as f64;
            (impressions, (impressions as f64 * ctr).round() as u64)
        })
        .collect()
}

/// Each arm's counts in each of `segments` segments, rates spread around the arm's.
fn segment_counts(n: usize, segments: usize) -> Vec<Vec<Counted>> {
    counts(n)
        .into_iter()
        .enumerate()
        .map(|(i, (imps, clicks))| {
            (0..segments)
                .map(|s| {
                    let share = imps / segments as u64 + 1;
                    let tilt = 1.0 + 0.5 * (((i + 3 * s) % 7) as f64 / 7.0 - 0.5);
                    let c = ((clicks as f64 / segments as f64) * tilt).round() as u64;
                    Counted {
                        impressions: share,
                        clicks: c.min(share),
                    }
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let policy = PriorPolicy::default_policy();
    let mut g = c.benchmark_group("screen");
    for n in [8usize, 64] {
        let batch: Vec<(String, u64, u64)> = counts(n)
            .into_iter()
            .enumerate()
            .map(|(i, (imps, clicks))| (format!("item-{i}"), imps / 10, clicks / 10))
            .collect();
        let base = set(n, &policy);
        g.bench_with_input(BenchmarkId::new("record", n), &batch, |b, batch| {
            b.iter_batched_ref(
                || base.clone(),
                |s| {
                    for (item, imps, clicks) in batch {
                        s.record(item, *imps, *clicks);
                    }
                },
                criterion::BatchSize::SmallInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("behind", n), &base, |b, s| {
            b.iter(|| black_box(s).behind(&policy, false))
        });
        let cells = segment_counts(n, 24);
        g.bench_with_input(BenchmarkId::new("segments24", n), &cells, |b, cells| {
            b.iter(|| {
                let s = black_box(&base);
                let posteriors = s.posteriors(&policy);
                let k = pooling_strength(posteriors.iter().zip(cells).flat_map(|(p, c)| {
                    let m = p.mean();
                    c.iter().map(move |&counts| Cell {
                        arm_mean: m,
                        counts,
                    })
                }));
                let views: Vec<(f64, Vec<Posterior>)> = (0..24)
                    .map(|seg| {
                        let view = posteriors
                            .iter()
                            .zip(cells)
                            .map(|(p, c)| segment_posterior(p, c[seg], k))
                            .collect();
                        (1.0, view)
                    })
                    .collect();
                segment_behind(
                    s,
                    &policy,
                    false,
                    views.iter().map(|(w, v)| (*w, v.as_slice())),
                )
            })
        });
    }
    let mut memory = Memory::default();
    for i in 0..MEMORY_CAPACITY {
        memory.remember(
            &format!("catalog-item-{i}"),
            None,
            (i % 3) as u64,
            20 + i as u64 % 50,
        );
    }
    g.bench_function(BenchmarkId::new("memory_store", MEMORY_CAPACITY), |b| {
        b.iter_batched_ref(
            || memory.clone(),
            |m| {
                m.remember("catalog-item-new", None, 1, 30);
                serde_json::to_string(m).map(|s| s.len())
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let candidates: Vec<String> = (0..FRESH_POOL)
        .map(|k| format!("catalog-item-{}", k * 500))
        .collect();
    let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
    let prior = Posterior {
        alpha: 2.0,
        beta: 58.0,
    };
    let mut rng = SmallRng::seed_from_u64(1);
    g.bench_function(BenchmarkId::new("memory_prefer", MEMORY_CAPACITY), |b| {
        b.iter(|| black_box(&memory).prefer(&refs, prior, &mut rng))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
