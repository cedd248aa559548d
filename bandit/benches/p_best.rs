//! CPU per exact P(best) computation for arm sets of 2, 8 and 24 with realistic posteriors.

use std::hint::black_box;

use bandit::{p_best, Posterior};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// Posteriors like a slot's after some traffic: Beta(2 + c, 60 + n - c), n from 100 to 20,000
/// impressions, click-through rates between 2% and 5%, so the arms differ in width by more
/// than ten times and overlap only partly.
fn arms(n: usize) -> Vec<Posterior> {
    (0..n)
        .map(|i| {
            let impressions = 100 + (i as u64 * 7_919) % 19_900;
            let ctr = 0.02 + 0.03 * ((i * 37) % n) as f64 / n as f64;
            let clicks = (impressions as f64 * ctr).round() as u64;
            Posterior::new(2.0, 60.0)
                .unwrap()
                .observe(clicks, impressions)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("p_best");
    for n in [2usize, 8, 24] {
        let posteriors = arms(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &posteriors, |b, p| {
            b.iter(|| p_best(black_box(p)))
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
