// A fixed amount of Thompson picks, for instruction counting and for timing the same code
// compiled to wasm:
//
//   pick_loop N_ARMS ITERATIONS
//
// `valgrind --tool=callgrind` counts the whole process, so the benchmark runs this twice
// (ITERATIONS = 0 and ITERATIONS = K) and divides the difference by K. Prints one JSON line
// with the wall time per pick, measured around the loop alone.

use std::hint::black_box;
use std::time::Instant;

use bandit::{pick, Posterior};
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// Posteriors like a live arm set's mid-round: a few hundred impressions, a few clicks each.
fn arms(n: usize) -> Vec<Posterior> {
    (0..n)
        .map(|i| {
            let impressions = 200 + (i as u64 * 37) % 300;
            let clicks = 2 + (i as u64 * 7) % 12;
            Posterior::default().observe(clicks, impressions)
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let iters: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let posteriors = arms(n);
    let mut rng = SmallRng::seed_from_u64(2015);
    let mut checksum = 0usize;
    let start = Instant::now();
    for _ in 0..iters {
        checksum = checksum.wrapping_add(pick(black_box(&posteriors), &mut rng).unwrap_or(0));
    }
    let secs = start.elapsed().as_secs_f64();
    let ns = if iters > 0 {
        secs * 1e9 / iters as f64
    } else {
        0.0
    };
    println!("{{\"arms\": {n}, \"iterations\": {iters}, \"ns_per_pick\": {ns:.1}, \"checksum\": {checksum}}}");
}
