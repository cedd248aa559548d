//! Thompson sampling over a set of posteriors, and the exact probability that each arm is best.

use rand::Rng;

use crate::Posterior;

/// Index of the arm with the highest single posterior draw (the Thompson pick); `None` when
/// there are no arms. Ties go to the earlier arm.
pub fn pick<'a, R, I>(posteriors: I, rng: &mut R) -> Option<usize>
where
    R: Rng + ?Sized,
    I: IntoIterator<Item = &'a Posterior>,
{
    let mut best: Option<(usize, f64)> = None;
    for (i, p) in posteriors.into_iter().enumerate() {
        let draw = p.sample(rng);
        if best.is_none_or(|(_, b)| draw > b) {
            best = Some((i, draw));
        }
    }
    best.map(|(i, _)| i)
}

/// Points per arm in the quadrature of [`p_best`].
const QUADRATURE_POINTS: usize = 512;
/// Width of each arm's integration window, in standard deviations either side of its mean.
const WINDOW_SDS: f64 = 12.0;

/// Probability that each arm has the highest click-through rate, computed by numerical
/// integration: P(i best) = integral of f_i(x) * prod_{j != i} F_j(x) dx.
///
/// Deterministic (no sampling), so an operator sees the same numbers on every refresh. Each
/// arm is integrated over its own window of +-12 standard deviations, which keeps sharply
/// peaked posteriors (many impressions) resolved. The results are renormalised to sum to one.
pub fn p_best(posteriors: &[Posterior]) -> Vec<f64> {
    let n = posteriors.len();
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![1.0];
    }
    let windows: Vec<(f64, f64)> = posteriors.iter().map(window).collect();
    let mut out = Vec::with_capacity(n);
    for (i, p) in posteriors.iter().enumerate() {
        let (lo, hi) = windows[i];
        let h = (hi - lo) / QUADRATURE_POINTS as f64;
        let mut total = 0.0;
        // Midpoint rule: never evaluates the density at 0 or 1, where it may be infinite.
        for k in 0..QUADRATURE_POINTS {
            let x = lo + (k as f64 + 0.5) * h;
            let mut prod = p.pdf(x);
            for (j, q) in posteriors.iter().enumerate() {
                if j == i || prod == 0.0 {
                    continue;
                }
                let (qlo, qhi) = windows[j];
                if x >= qhi {
                    continue; // F_j(x) is 1 to within 1e-30.
                }
                if x <= qlo {
                    prod = 0.0;
                    break;
                }
                prod *= q.cdf(x);
            }
            total += prod * h;
        }
        out.push(total);
    }
    let sum: f64 = out.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        for v in &mut out {
            *v /= sum;
        }
    }
    out
}

fn window(p: &Posterior) -> (f64, f64) {
    let sd = p.variance().sqrt();
    let m = p.mean();
    (
        (m - WINDOW_SDS * sd).max(0.0),
        (m + WINDOW_SDS * sd).min(1.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::special::ln_beta;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    /// Closed form P(X > Y) for X ~ Beta(a1, b1), Y ~ Beta(a2, b2) with integer a1
    /// (Evan Miller's formula), as an independent reference for two arms.
    fn p_x_beats_y(a1: u32, b1: f64, a2: f64, b2: f64) -> f64 {
        (0..a1)
            .map(|i| {
                let i = i as f64;
                (ln_beta(a2 + i, b1 + b2) - (b1 + i).ln() - ln_beta(1.0 + i, b1) - ln_beta(a2, b2))
                    .exp()
            })
            .sum()
    }

    #[test]
    fn p_best_matches_closed_form_for_two_arms() {
        for &(a1, b1, a2, b2) in &[
            (1u32, 1.0, 1.0, 1.0),
            (3, 10.0, 2.0, 12.0),
            (20, 400.0, 12.0, 380.0),
            (150, 5000.0, 140.0, 5010.0),
        ] {
            let x = Posterior::new(a1 as f64, b1).unwrap();
            let y = Posterior::new(a2, b2).unwrap();
            let got = p_best(&[x, y]);
            let want = p_x_beats_y(a1, b1, a2, b2);
            assert!((got[0] - want).abs() < 1e-6, "{got:?} vs {want}");
            assert!((got[0] + got[1] - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn p_best_is_symmetric_for_identical_arms() {
        let p = Posterior::new(4.0, 40.0).unwrap();
        for v in p_best(&[p; 5]) {
            assert!((v - 0.2).abs() < 1e-6, "{v}");
        }
    }

    #[test]
    fn pick_frequencies_match_exact_p_best() {
        // Seeded. Each frequency is a binomial proportion over N picks; allowing 5 standard
        // errors per arm makes a false failure less likely than 1e-5 for the whole test.
        let arms = [
            Posterior::new(2.0, 30.0).unwrap(),
            Posterior::new(5.0, 60.0).unwrap(),
            Posterior::new(1.0, 1.0).unwrap(),
            Posterior::new(9.0, 200.0).unwrap(),
        ];
        let exact = p_best(&arms);
        let mut rng = SmallRng::seed_from_u64(2015);
        let n = 100_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[pick(&arms, &mut rng).unwrap()] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let freq = c as f64 / n as f64;
            let se = (exact[i] * (1.0 - exact[i]) / n as f64).sqrt();
            assert!(
                (freq - exact[i]).abs() <= 5.0 * se + 1e-9,
                "arm {i}: freq {freq} exact {} (se {se})",
                exact[i]
            );
        }
    }

    #[test]
    fn pick_of_nothing_is_none() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(pick(&[], &mut rng), None);
    }
}
