//! Special functions needed for exact posterior summaries (no external numerics crate, so the
//! model stays small in the wasm bundle).

/// Natural log of the gamma function (Lanczos approximation, g = 7, n = 9; ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the approximation accurate near zero.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut acc = COEF[0];
    for (i, c) in COEF.iter().enumerate().skip(1) {
        acc += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + acc.ln()
}

/// The complementary error function, with fractional error below 1.2e-7 everywhere (the
/// Chebyshev fit of Numerical Recipes' `erfcc`).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// P(|Z| >= |z|) for a standard normal Z.
pub fn normal_two_sided_p(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2)
}

/// Natural log of the beta function B(a, b).
pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// Density of Beta(a, b) at x.
pub fn beta_pdf(x: f64, a: f64, b: f64) -> f64 {
    if !(0.0..=1.0).contains(&x) {
        return 0.0;
    }
    if x == 0.0 || x == 1.0 {
        let at_zero = x == 0.0;
        let shape = if at_zero { a } else { b };
        return match shape.partial_cmp(&1.0) {
            Some(std::cmp::Ordering::Less) => f64::INFINITY,
            Some(std::cmp::Ordering::Equal) => (-ln_beta(a, b)).exp(),
            _ => 0.0,
        };
    }
    ((a - 1.0) * x.ln() + (b - 1.0) * (-x).ln_1p() - ln_beta(a, b)).exp()
}

/// Regularized incomplete beta function I_x(a, b), the CDF of Beta(a, b) at x.
pub fn beta_cdf(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = a * x.ln() + b * (-x).ln_1p() - ln_beta(a, b);
    // The continued fraction converges fast only on one side of the mean; use the symmetry
    // I_x(a, b) = 1 - I_{1-x}(b, a) on the other.
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(1.0 - x, b, a) / b
    }
}

/// Continued fraction for the incomplete beta function (modified Lentz's method).
fn beta_cf(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-15;
    let qab = a + b;
    let qap = a + 1.0;
    let qam = a - 1.0;
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    // Iterations grow like sqrt(max(a, b)); 10,000 covers counts far beyond any real slot.
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_reference_values() {
        // erfc at 0, 0.5, 1, 2, 3, 5 (Abramowitz and Stegun, table 7.1, to 10 digits).
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_2),
            (1.0, 0.157_299_207_1),
            (2.0, 0.004_677_734_981),
            (3.0, 2.209_049_700e-5),
            (5.0, 1.537_459_794e-12),
        ] {
            let got = erfc(x);
            assert!(
                (got / want - 1.0).abs() < 2e-7,
                "erfc({x}) = {got}, want {want}"
            );
            // erfc(-x) = 2 - erfc(x), to the same fractional error of its own value.
            assert!(((erfc(-x) - 2.0 + want) / (2.0 - want)).abs() < 2e-7);
        }
        assert!((normal_two_sided_p(1.959_963_985) - 0.05).abs() < 1e-8);
        assert!((normal_two_sided_p(-3.290_526_731) - 0.001).abs() < 1e-9);
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut fact = 1.0f64;
        for n in 1..20u32 {
            // Gamma(n) = (n-1)!
            assert!((ln_gamma(n as f64) - fact.ln()).abs() < 1e-12, "n = {n}");
            fact *= n as f64;
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn beta_cdf_matches_binomial_sum_for_integer_shapes() {
        // For integer a, b: I_x(a, b) = P(Binomial(a + b - 1, x) >= a).
        for &(a, b) in &[(1u32, 1u32), (2, 5), (7, 3), (20, 40), (1, 30)] {
            for &x in &[0.01, 0.1, 0.3, 0.5, 0.77, 0.99] {
                let n = a + b - 1;
                let mut sum = 0.0;
                for j in a..=n {
                    let ln_choose = ln_gamma(n as f64 + 1.0)
                        - ln_gamma(j as f64 + 1.0)
                        - ln_gamma((n - j) as f64 + 1.0);
                    sum += (ln_choose + j as f64 * f64::ln(x) + (n - j) as f64 * f64::ln(1.0 - x))
                        .exp();
                }
                let got = beta_cdf(x, a as f64, b as f64);
                assert!(
                    (got - sum).abs() < 1e-10,
                    "a={a} b={b} x={x}: {got} vs {sum}"
                );
            }
        }
    }

    #[test]
    fn beta_pdf_integrates_to_one() {
        for &(a, b) in &[(1.0, 1.0), (2.0, 60.0), (30.5, 900.0)] {
            let n = 20_000;
            let h = 1.0 / n as f64;
            let total: f64 = (0..n)
                .map(|i| beta_pdf((i as f64 + 0.5) * h, a, b) * h)
                .sum();
            assert!((total - 1.0).abs() < 1e-6, "a={a} b={b}: {total}");
        }
    }
}
