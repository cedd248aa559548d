//! CPU per Thompson pick (one Beta draw per arm, argmax) for arm sets of 4, 16 and 64.

use std::hint::black_box;

use bandit::{pick, Posterior};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// Posteriors like a live arm set's mid-round (the same as examples/pick_loop.rs).
fn arms(n: usize) -> Vec<Posterior> {
    (0..n)
        .map(|i| {
            let impressions = 200 + (i as u64 * 37) % 300;
            let clicks = 2 + (i as u64 * 7) % 12;
            Posterior::default().observe(clicks, impressions)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [4usize, 16, 64] {
        let posteriors = arms(n);
        let mut rng = SmallRng::seed_from_u64(2015);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(n), &posteriors, |b, p| {
            b.iter(|| pick(black_box(p), &mut rng))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
