//! Thompson sampling over a set of posteriors, and the exact probability that each arm is best.

use rand::Rng;

use crate::{special, Posterior};

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

/// Gauss-Legendre 16-point rule on [-1, 1]: the positive nodes with their weights (the rule is
/// symmetric about 0).
const GAUSS_LEGENDRE_16: [(f64, f64); 8] = [
    (0.095_012_509_837_637_44, 0.189_450_610_455_068_47),
    (0.281_603_550_779_258_9, 0.182_603_415_044_923_6),
    (0.458_016_777_657_227_37, 0.169_156_519_395_002_56),
    (0.617_876_244_402_643_8, 0.149_595_988_816_576_82),
    (0.755_404_408_355_003, 0.124_628_971_255_533_95),
    (0.865_631_202_387_831_8, 0.095_158_511_682_492_9),
    (0.944_575_023_073_232_6, 0.062_253_523_938_647_776),
    (0.989_400_934_991_649_9, 0.027_152_459_411_754_058),
];
/// Points per panel.
const NODES: usize = 2 * GAUSS_LEGENDRE_16.len();
/// Panel width in standard deviations of the narrowest arm still in play. On random sets like
/// the tests' the largest error is 5e-11 at 4 sds, 2e-10 at 5 and 4e-9 at 6, while halving it to
/// 2 sds (twice the work) gains nothing visible (3e-11).
const PANEL_SDS: f64 = 4.0;
/// Width of a panel that ends at 0 or 1, in the same standard deviations: the substitution
/// there stretches the panel's far side, so it is kept short for the smooth factor to stay
/// nearly polynomial (1-sd end panels cost errors of 5e-7 next to a Beta(a, 0.5)).
const END_PANEL_SDS: f64 = 0.4;
/// Probability mass an arm may have outside the integration range.
const TAIL: f64 = 1e-14;
/// First guess for the distance from an arm's mean, in its standard deviations, beyond which
/// its tail holds less than [`TAIL`] (right for near-normal posteriors; skewed ones are pushed
/// out by half again until the CDF confirms it).
const TAIL_SDS: f64 = 8.0;
/// Cap on the panels of one sweep, [`MAX_PANELS_BASE`] plus [`MAX_PANELS_PER_ARM`] per arm: a
/// sweep takes a few panels per arm and some dozens graded towards 0 and 1, so the cap only
/// stops posteriors too extreme for the special functions from running on.
const MAX_PANELS_BASE: usize = 1_000;
/// See [`MAX_PANELS_BASE`].
const MAX_PANELS_PER_ARM: usize = 100;
/// The substitution x = u^p on a panel against 0 (or 1 - x = u^p against 1) uses
/// p = ceil(END_POWER / shape), which turns an integrand like x^(shape - 1) into one like
/// u^(END_POWER - 1) or smoother: smooth enough for the Gauss rule, for shapes down to 1/8 (p is
/// capped at 32 so that u^p stays far from underflow).
const END_POWER: f64 = 4.0;

/// The 16-point rule in ascending order with its cumulative-integration matrix.
struct Rule {
    nodes: [f64; NODES],
    weights: [f64; NODES],
    /// `cumulative[m][k]`: the integral from -1 to `nodes[k]` of the Lagrange basis polynomial
    /// of node `m`, so that sum_m cumulative[m][k] g(nodes[m]) integrates the degree-15
    /// interpolant of g from -1 up to node k.
    cumulative: [[f64; NODES]; NODES],
}

const RULE: Rule = Rule::new();

impl Rule {
    const fn new() -> Rule {
        let mut nodes = [0.0; NODES];
        let mut weights = [0.0; NODES];
        let half = NODES / 2;
        let mut i = 0;
        while i < half {
            let (t, w) = GAUSS_LEGENDRE_16[i];
            nodes[half + i] = t;
            weights[half + i] = w;
            nodes[half - 1 - i] = -t;
            weights[half - 1 - i] = w;
            i += 1;
        }
        // The Lagrange polynomial of node m is w_m sum_l (l + 1/2) P_l(t_m) P_l(t) (the rule is
        // exact for the products), and the integral of P_l from -1 to t is
        // (P_{l+1}(t) - P_{l-1}(t)) / (2l + 1) for l >= 1.
        let mut cumulative = [[0.0; NODES]; NODES];
        let mut m = 0;
        while m < NODES {
            let pm = legendre(nodes[m]);
            let mut k = 0;
            while k < NODES {
                let pk = legendre(nodes[k]);
                let mut acc = 0.5 * (nodes[k] + 1.0);
                let mut l = 1;
                while l < NODES {
                    acc += 0.5 * pm[l] * (pk[l + 1] - pk[l - 1]);
                    l += 1;
                }
                cumulative[m][k] = weights[m] * acc;
                k += 1;
            }
            m += 1;
        }
        Rule {
            nodes,
            weights,
            cumulative,
        }
    }
}

/// Legendre polynomials P_0..=P_16 at `z`.
const fn legendre(z: f64) -> [f64; NODES + 1] {
    let mut p = [0.0; NODES + 1];
    p[0] = 1.0;
    p[1] = z;
    let mut l = 2;
    while l <= NODES {
        let lf = l as f64;
        p[l] = ((2.0 * lf - 1.0) * z * p[l - 1] - (lf - 1.0) * p[l - 2]) / lf;
        l += 1;
    }
    p
}

/// One posterior with what the quadrature needs of it.
struct Arm {
    alpha: f64,
    beta: f64,
    ln_norm: f64,
    mean: f64,
    sd: f64,
}

impl Arm {
    fn new(p: &Posterior) -> Arm {
        let s = p.alpha + p.beta;
        // alpha/s and beta/s rather than mean and 1 - mean: no cancellation when one is tiny.
        let (m, m1) = (p.alpha / s, p.beta / s);
        Arm {
            alpha: p.alpha,
            beta: p.beta,
            ln_norm: special::ln_beta(p.alpha, p.beta),
            mean: m,
            sd: (m * m1 / (s + 1.0)).sqrt(),
        }
    }

    /// Density at a point given by ln x and ln(1 - x).
    fn pdf(&self, ln_x: f64, ln_1mx: f64) -> f64 {
        ((self.alpha - 1.0) * ln_x + (self.beta - 1.0) * ln_1mx - self.ln_norm).exp()
    }

    /// P(X <= x), from whichever end keeps the precision.
    fn cdf(&self, x: Point) -> f64 {
        if x.x <= 0.5 {
            special::beta_cdf(x.x, self.alpha, self.beta)
        } else {
            1.0 - special::beta_cdf(x.x1, self.beta, self.alpha)
        }
    }

    /// P(X > x), from whichever end keeps the precision.
    fn sf(&self, x: Point) -> f64 {
        if x.x1 <= 0.5 {
            special::beta_cdf(x.x1, self.beta, self.alpha)
        } else {
            1.0 - special::beta_cdf(x.x, self.alpha, self.beta)
        }
    }
}

/// A point of [0, 1] held as x and 1 - x, each exact where it is small, so that nodes packed
/// against 1 keep their distance from it.
#[derive(Clone, Copy, Default)]
struct Point {
    x: f64,
    x1: f64,
}

impl Point {
    fn at(x: f64) -> Point {
        Point { x, x1: 1.0 - x }
    }

    fn from_top(x1: f64) -> Point {
        Point { x: 1.0 - x1, x1 }
    }

    /// (ln x, ln(1 - x)).
    fn logs(self) -> (f64, f64) {
        let ln_x = if self.x <= 0.5 {
            self.x.ln()
        } else {
            (-self.x1).ln_1p()
        };
        let ln_1mx = if self.x1 <= 0.5 {
            self.x1.ln()
        } else {
            (-self.x).ln_1p()
        };
        (ln_x, ln_1mx)
    }
}

/// An arm the sweep has not yet passed: its CDF at the current panel's left edge, and where to
/// next ask the exact CDF whether its upper tail is negligible.
struct Live {
    arm: usize,
    cdf: f64,
    check_at: f64,
}

/// Probability that each arm has the highest click-through rate:
/// P(i best) = integral over x of f_i(x) * prod_{j != i} F_j(x).
///
/// Deterministic (no sampling), so an operator sees the same numbers on every refresh, and the
/// results are renormalised to sum to one. Invalid posteriors (see [`Posterior::new`]) are
/// never best; if none is valid every arm gets an equal share.
///
/// # Method
///
/// One left-to-right sweep over a single grid of 16-point Gauss-Legendre panels serves every
/// arm at once. At each node the density of each arm still in play is one `exp` (the logs of x
/// and 1 - x are shared), and P(i best) gathers f_i times the product of the other CDFs from
/// prefix and suffix products, so the cost is O(arms x nodes) instead of the O(arms^2 x
/// nodes) of integrating each arm on its own window. The CDFs are not evaluated at the nodes:
/// each arm's CDF is carried from panel to panel by integrating its density (the Gauss rule's
/// sum) and inside a panel by integrating the degree-15 interpolant of the density up to each
/// node. The incomplete beta function (the slow part: a continued fraction) is only called a
/// few times per arm, to place the ends of the sweep, plus at the nodes of a panel touching 0
/// or 1.
///
/// # Why it is accurate
///
/// * Resolution: a panel is at most `PANEL_SDS` (4) standard deviations of the narrowest arm
///   still in play, so sharply peaked posteriors (many impressions) get their own fine panels
///   however wide the others are, and a narrow arm's CDF, which steps from 0 to 1 within a few
///   of its sds, is never straddled by a wide panel. Inside every arm's bulk all factors are
///   smooth on that scale, where the 16-point rule is exact to degree 31 and its interpolant to
///   degree 15. The error scales with the density on the panel, so tails need no finer panels.
/// * Range: the sweep starts where some arm's CDF is below `TAIL` (1e-14) (below that the maximum
///   is almost surely not, so at most `TAIL` of mass is dropped), and an arm leaves once
///   the exact CDF confirms its upper tail holds less than `TAIL`. Both are checked with the
///   incomplete beta rather than assumed from a count of sds, because posteriors with few
///   clicks have heavy right tails (Beta(0.5, b) still has ~2e-5 beyond 12 sds). An arm whose
///   mass lies below the start almost surely is not best and gets 0.
/// * Ends of [0, 1]: with alpha or beta below 1 the density is infinite at 0 or 1, and with
///   any fractional shape it is not polynomial-like near there, which no Gauss rule resolves.
///   The panels against 0 and 1 are short (`END_PANEL_SDS`), use a substitution that makes
///   the integrand smooth (see `END_POWER`), and take their CDFs from the incomplete beta at
///   each node. Other panels are never wider than their distance to 0 or to 1, so that the
///   singularity stays far enough outside for their interpolants to converge.
///
/// Checked in the tests against an independent quadrature with exact CDFs everywhere on random
/// arm sets with alpha and beta from 0.5 to 1e5 (largest difference 3e-11), against the closed
/// form for two arms and against Thompson draws.
pub fn p_best(posteriors: &[Posterior]) -> Vec<f64> {
    let n = posteriors.len();
    let valid: Vec<usize> = (0..n).filter(|&i| posteriors[i].is_valid()).collect();
    let mut out = vec![0.0; n];
    match valid.len() {
        0 => out.iter_mut().for_each(|v| *v = 1.0 / n as f64),
        1 => out[valid[0]] = 1.0,
        _ => {
            let arms: Vec<Arm> = valid.iter().map(|&i| Arm::new(&posteriors[i])).collect();
            for (&i, p) in valid.iter().zip(sweep(&arms)) {
                out[i] = p;
            }
        }
    }
    out
}

/// P(best) of each of at least two valid arms.
fn sweep(arms: &[Arm]) -> Vec<f64> {
    let n = arms.len();
    let mut p = vec![0.0; n];
    let start = sweep_start(arms);
    let mut live: Vec<Live> = Vec::with_capacity(n);
    for (j, q) in arms.iter().enumerate() {
        let sf = if start > 0.0 {
            q.sf(Point::at(start))
        } else {
            1.0
        };
        if sf > TAIL {
            live.push(Live {
                arm: j,
                cdf: 1.0 - sf,
                check_at: q.mean + TAIL_SDS * q.sd,
            });
        }
    }
    // Per live arm (in `live` order), density and CDF at each node of the current panel.
    let mut pdf = vec![[0.0; NODES]; n];
    let mut cdf = vec![[0.0; NODES]; n];
    let mut prefix = vec![0.0; n + 1];
    let mut a = start;
    for _ in 0..MAX_PANELS_BASE + MAX_PANELS_PER_ARM * n {
        if live.len() == 1 {
            // Every other arm is (but for TAIL) below a, so this one is best exactly when it is
            // above a.
            p[live[0].arm] += 1.0 - live[0].cdf;
            break;
        }
        if live.is_empty() || a >= 1.0 || a.is_nan() {
            break;
        }
        let sd = live
            .iter()
            .map(|l| arms[l.arm].sd)
            .fold(f64::INFINITY, f64::min);
        let end_width = END_PANEL_SDS * sd;
        let mut nodes = [Point::default(); NODES];
        let mut weights = [0.0; NODES];
        let b;
        let at_end = a == 0.0 || 1.0 - a <= 1.5 * end_width;
        if at_end {
            // x = a + (b - a) u^p from 0, 1 - x = (1 - a) u^p towards 1. Near 0 every live arm
            // contributes a power x^alpha_j (its CDF, or its density for itself), so the
            // integrand starts as x^(sum alpha - 1); near 1 only the own density is singular.
            let from_zero = a == 0.0;
            let lead = if from_zero {
                live.iter().map(|l| arms[l.arm].alpha).sum::<f64>()
            } else {
                live.iter()
                    .map(|l| arms[l.arm].beta)
                    .fold(f64::INFINITY, f64::min)
            };
            let power = (END_POWER / lead).ceil().clamp(1.0, 32.0);
            let len = if from_zero {
                end_width.min(0.5)
            } else {
                1.0 - a
            };
            for k in 0..NODES {
                let u = if from_zero {
                    0.5 * (1.0 + RULE.nodes[k])
                } else {
                    0.5 * (1.0 - RULE.nodes[k])
                };
                let d = len * u.powf(power);
                nodes[k] = if from_zero {
                    Point::at(d)
                } else {
                    Point::from_top(d)
                };
                weights[k] = 0.5 * RULE.weights[k] * len * power * u.powf(power - 1.0);
            }
            b = if from_zero { len } else { 1.0 };
        } else {
            // Never wider than the distance to either end (see the doc), and leave either a
            // full end panel or nothing before 1.
            let mut w = (PANEL_SDS * sd).min(a).min(0.5 * (1.0 - a));
            if 1.0 - a - w < end_width {
                w = 1.0 - a - end_width;
            }
            for k in 0..NODES {
                nodes[k] = Point::at(a + 0.5 * w * (1.0 + RULE.nodes[k]));
                weights[k] = 0.5 * w * RULE.weights[k];
            }
            b = a + w;
        }
        if b <= a || b.is_nan() {
            break; // No progress is possible in floating point; the rest holds no mass.
        }
        let logs = nodes.map(Point::logs);
        for (t, l) in live.iter_mut().enumerate() {
            let q = &arms[l.arm];
            for k in 0..NODES {
                pdf[t][k] = q.pdf(logs[k].0, logs[k].1);
            }
            if at_end {
                for k in 0..NODES {
                    cdf[t][k] = q.cdf(nodes[k]);
                }
                l.cdf = if b < 1.0 { q.cdf(Point::at(b)) } else { 1.0 };
            } else {
                let half = 0.5 * (b - a);
                let mut acc = [0.0; NODES];
                let mut total = 0.0;
                for (m, &f) in pdf[t].iter().enumerate() {
                    total += RULE.weights[m] * f;
                    for (sum, c) in acc.iter_mut().zip(&RULE.cumulative[m]) {
                        *sum += c * f;
                    }
                }
                for k in 0..NODES {
                    cdf[t][k] = (l.cdf + half * acc[k]).clamp(0.0, 1.0);
                }
                l.cdf = (l.cdf + half * total).clamp(0.0, 1.0);
            }
        }
        let m = live.len();
        for k in 0..NODES {
            prefix[0] = 1.0;
            for t in 0..m {
                prefix[t + 1] = prefix[t] * cdf[t][k];
            }
            let mut suffix = 1.0;
            for t in (0..m).rev() {
                p[live[t].arm] += weights[k] * pdf[t][k] * prefix[t] * suffix;
                suffix *= cdf[t][k];
            }
        }
        // Retire arms whose upper tail beyond b the exact CDF shows to be negligible; the
        // others get their carried CDF refreshed from it.
        live.retain_mut(|l| {
            if b >= 1.0 {
                return false;
            }
            if b < l.check_at {
                return true;
            }
            let q = &arms[l.arm];
            let sf = q.sf(Point::at(b));
            l.cdf = 1.0 - sf;
            l.check_at = q.mean + 1.5 * (l.check_at - q.mean);
            sf > TAIL
        });
        a = b;
    }
    let sum: f64 = p.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        p.iter_mut().for_each(|v| *v /= sum);
    } else {
        // Only for posteriors too extreme for the special functions (e.g. alpha + beta
        // overflowing): their limit, point masses at the means.
        let top = arms
            .iter()
            .map(|q| q.mean)
            .fold(f64::NEG_INFINITY, f64::max);
        let ties = arms.iter().filter(|q| q.mean == top).count() as f64;
        for (v, q) in p.iter_mut().zip(arms) {
            *v = if q.mean == top { 1.0 / ties } else { 0.0 };
        }
    }
    p
}

/// Where the sweep starts: a point below which some arm has less than [`TAIL`] of its mass (so
/// the maximum of all arms is below it with at most that probability), or 0.
fn sweep_start(arms: &[Arm]) -> f64 {
    // Only the highest candidate matters, so only it is checked against the exact CDF.
    let mut candidates: Vec<f64> = arms.iter().map(|q| q.mean - TAIL_SDS * q.sd).collect();
    for _ in 0..16 * arms.len() {
        let (k, c) =
            candidates
                .iter()
                .copied()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |best, (k, c)| {
                    if c > best.1 {
                        (k, c)
                    } else {
                        best
                    }
                });
        if c <= 0.0 {
            return 0.0;
        }
        let q = &arms[k];
        if q.cdf(Point::at(c)) <= TAIL {
            // A start closer to 0 than an end panel's width would only add panels graded
            // towards 0 (see the loop in `sweep`); starting at 0 costs one end panel.
            let sd = arms
                .iter()
                .filter(|q| q.mean + TAIL_SDS * q.sd > c)
                .map(|q| q.sd)
                .fold(f64::INFINITY, f64::min);
            return if c < END_PANEL_SDS * sd { 0.0 } else { c };
        }
        candidates[k] = q.mean - 1.5 * (q.mean - c);
    }
    0.0
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::special::ln_beta;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

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

    /// The implementation `p_best` replaced, kept as a reference: each arm integrated on its own
    /// window of +-12 sds by the midpoint rule with 512 points, evaluating every other arm's
    /// CDF at each point. Its own error stays below ~4e-8 when every shape is at least 2 and
    /// the arms' widths differ by at most ~15 times; outside that it grows (12 sds leave ~2e-5
    /// of a Beta(0.5, b) tail out, the midpoint rule cannot integrate a density that is
    /// infinite at 1, and 512 points across a wide arm's window straddle a much narrower arm),
    /// up to 0.12 on the sets of `p_best_matches_direct_quadrature_over_the_whole_range`.
    fn previous_p_best(posteriors: &[Posterior]) -> Vec<f64> {
        const QUADRATURE_POINTS: usize = 512;
        const WINDOW_SDS: f64 = 12.0;
        let window = |p: &Posterior| {
            let sd = p.variance().sqrt();
            let m = p.mean();
            (
                (m - WINDOW_SDS * sd).max(0.0),
                (m + WINDOW_SDS * sd).min(1.0),
            )
        };
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
            for k in 0..QUADRATURE_POINTS {
                let x = lo + (k as f64 + 0.5) * h;
                let mut prod = p.pdf(x);
                for (j, q) in posteriors.iter().enumerate() {
                    if j == i || prod == 0.0 {
                        continue;
                    }
                    let (qlo, qhi) = windows[j];
                    if x >= qhi {
                        continue;
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

    /// An independent and slow quadrature of the same integral: the incomplete beta at every
    /// node, 16-point panels of 2 sds of every arm out to 40 sds (beyond which even a
    /// Beta(0.5, b) tail holds < 1e-13), and panels halving towards 0 and 1 down to 2^-100
    /// (held as distances from the end) so that infinite densities there are integrated too.
    fn direct_quadrature(posteriors: &[Posterior]) -> Vec<f64> {
        const SDS: f64 = 40.0;
        let arms: Vec<Arm> = posteriors.iter().map(Arm::new).collect();
        let n = arms.len();
        // Breakpoints as distances from 0 (lower half) and from 1 (upper half).
        let mut from_zero = vec![0.0, 0.5];
        let mut from_one = vec![0.0, 0.5];
        for k in 1..=100 {
            from_zero.push(0.5f64.powi(k));
            from_one.push(0.5f64.powi(k));
        }
        for q in &arms {
            for s in -20..=20 {
                let x = q.mean + 2.0 * s as f64 * q.sd;
                if x > 0.0 && x < 0.5 {
                    from_zero.push(x);
                }
                if 1.0 - x > 0.0 && 1.0 - x < 0.5 {
                    from_one.push(1.0 - x);
                }
            }
        }
        let mut p = vec![0.0; n];
        let mut cdf = vec![0.0; n];
        for (points, top) in [(from_zero, false), (from_one, true)] {
            let mut points = points;
            points.sort_by(f64::total_cmp);
            points.dedup();
            for pair in points.windows(2) {
                let (lo, hi) = (pair[0], pair[1]);
                for k in 0..NODES {
                    let d = lo + 0.5 * (hi - lo) * (1.0 + RULE.nodes[k]);
                    let weight = 0.5 * (hi - lo) * RULE.weights[k];
                    let x = if top {
                        Point::from_top(d)
                    } else {
                        Point::at(d)
                    };
                    let mut zeros = 0;
                    for (j, q) in arms.iter().enumerate() {
                        cdf[j] = if x.x >= q.mean + SDS * q.sd {
                            1.0
                        } else if x.x <= q.mean - SDS * q.sd {
                            0.0
                        } else {
                            q.cdf(x)
                        };
                        zeros += usize::from(cdf[j] == 0.0);
                    }
                    if zeros > 1 {
                        continue; // Every product has a zero factor.
                    }
                    let (ln_x, ln_1mx) = x.logs();
                    for (i, q) in arms.iter().enumerate() {
                        let others: f64 = (0..n).filter(|&j| j != i).map(|j| cdf[j]).product();
                        if others > 0.0 {
                            p[i] += weight * q.pdf(ln_x, ln_1mx) * others;
                        }
                    }
                }
            }
        }
        let sum: f64 = p.iter().sum();
        p.iter_mut().for_each(|v| *v /= sum);
        p
    }

    fn log_uniform(rng: &mut SmallRng, lo: f64, hi: f64) -> f64 {
        (lo.ln() + rng.random::<f64>() * (hi / lo).ln()).exp()
    }

    /// Arm sets across the whole range p_best must handle: 2 to 24 arms around a common
    /// centre (near 0, mid-range, or near 1), each either very narrow (alpha + beta up to 2e5),
    /// wide (up to 100), with alpha in [0.5, 1) (density infinite at 0), or a repeat of an
    /// earlier arm; shapes clamped to [0.5, 1e5], so beta < 1 occurs near 1.
    fn wide_range_set(rng: &mut SmallRng) -> Vec<Posterior> {
        let n = rng.random_range(2..=24usize);
        let mut centre = log_uniform(rng, 1e-3, 0.5);
        if rng.random::<f64>() < 0.15 {
            centre = 1.0 - centre;
        }
        let spread = log_uniform(rng, 0.01, 0.5);
        let mut arms: Vec<Posterior> = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = rng.random::<f64>();
            if kind < 0.15 && !arms.is_empty() {
                let k = rng.random_range(0..arms.len());
                arms.push(arms[k]);
                continue;
            }
            if kind < 0.3 {
                let alpha = rng.random_range(0.5..1.0);
                arms.push(Posterior::new(alpha, log_uniform(rng, 1.0, 1e5)).unwrap());
                continue;
            }
            let strength = if kind < 0.7 {
                log_uniform(rng, 1e2, 2e5)
            } else {
                log_uniform(rng, 1.0, 1e2)
            };
            let z: f64 = StandardNormal.sample(rng);
            let mean = (centre * (spread * z).exp()).min(1.0 - 1e-6);
            arms.push(
                Posterior::new(
                    (mean * strength).clamp(0.5, 1e5),
                    ((1.0 - mean) * strength).clamp(0.5, 1e5),
                )
                .unwrap(),
            );
        }
        arms
    }

    /// Arm sets like a slot's, in the regime where the previous implementation was itself
    /// accurate: Beta(2 + clicks, 2 + misses) (every shape at least 2), impressions spread
    /// up to 225 times within a set (widths up to 15 times), from 20 to 1.1e5 impressions,
    /// click-through rates around a common centre from 0.5% to 50%, with repeats.
    fn realistic_set(rng: &mut SmallRng) -> Vec<Posterior> {
        let n = rng.random_range(2..=24usize);
        let centre = log_uniform(rng, 0.005, 0.5);
        let spread = log_uniform(rng, 0.02, 0.5);
        let fewest = log_uniform(rng, 20.0, 500.0);
        let mut arms: Vec<Posterior> = Vec::with_capacity(n);
        for _ in 0..n {
            if rng.random::<f64>() < 0.15 && !arms.is_empty() {
                let k = rng.random_range(0..arms.len());
                arms.push(arms[k]);
                continue;
            }
            let impressions = log_uniform(rng, fewest, 225.0 * fewest).round();
            let z: f64 = StandardNormal.sample(rng);
            let clicks = (impressions * (centre * (spread * z).exp()).min(0.9)).round();
            arms.push(Posterior::new(2.0 + clicks, 2.0 + impressions - clicks).unwrap());
        }
        arms
    }

    /// Arm sets of a young slot, where every arm still reaches 0 and the sweep starts with the
    /// substituted panel there: 2 to 24 arms of Beta(prior + clicks, prior + misses) with a
    /// shared prior (Jeffreys, uniform, or fitted ones), up to 2,000 impressions each.
    fn young_set(rng: &mut SmallRng) -> Vec<Posterior> {
        let n = rng.random_range(2..=24usize);
        let priors = [(0.5, 0.5), (1.0, 1.0), (2.0, 60.0), (0.7, 3.3)];
        let (alpha, beta) = priors[rng.random_range(0..priors.len())];
        let ctr = log_uniform(rng, 0.005, 0.6);
        let most = log_uniform(rng, 1.0, 2_000.0) as u64;
        (0..n)
            .map(|_| {
                let impressions = rng.random_range(0..=most);
                let clicks = (0..impressions)
                    .filter(|_| rng.random::<f64>() < ctr)
                    .count() as u64;
                Posterior::new(alpha, beta)
                    .unwrap()
                    .observe(clicks, impressions)
            })
            .collect()
    }

    fn max_difference(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    /// Case counts for the random comparisons: a few hundred in release builds, a tenth in
    /// unoptimised ones, where the reference quadratures take seconds per set.
    fn cases(release: usize) -> usize {
        if cfg!(debug_assertions) {
            release / 10
        } else {
            release
        }
    }

    #[test]
    fn quadrature_rule_is_exact_for_polynomials() {
        // The Gauss rule integrates degree 31 exactly, the cumulative matrix the degree-15
        // interpolant, so both are exact for t^d up to those degrees.
        for d in 0..32 {
            let got: f64 = (0..NODES)
                .map(|k| RULE.weights[k] * RULE.nodes[k].powi(d))
                .sum();
            let want = if d % 2 == 0 {
                2.0 / (d + 1) as f64
            } else {
                0.0
            };
            assert!((got - want).abs() < 1e-14, "degree {d}: {got} vs {want}");
        }
        for d in 0..16 {
            for k in 0..NODES {
                let got: f64 = (0..NODES)
                    .map(|m| RULE.cumulative[m][k] * RULE.nodes[m].powi(d))
                    .sum();
                let t = RULE.nodes[k];
                let want = (t.powi(d + 1) - (-1.0f64).powi(d + 1)) / (d + 1) as f64;
                assert!(
                    (got - want).abs() < 1e-13,
                    "degree {d} node {k}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn p_best_matches_closed_form_for_two_arms() {
        for &(a1, b1, a2, b2) in &[
            (1u32, 1.0, 1.0, 1.0),
            (3, 10.0, 2.0, 12.0),
            (20, 400.0, 12.0, 380.0),
            (150, 5000.0, 140.0, 5010.0),
            (1, 0.5, 0.5, 0.5),
            (2, 30_000.0, 0.5, 9_000.0),
            (400, 2.0, 300.0, 0.5),
        ] {
            let x = Posterior::new(a1 as f64, b1).unwrap();
            let y = Posterior::new(a2, b2).unwrap();
            let got = p_best(&[x, y]);
            let want = p_x_beats_y(a1, b1, a2, b2);
            assert!((got[0] - want).abs() < 1e-9, "{got:?} vs {want}");
            assert!((got[0] + got[1] - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn p_best_is_symmetric_for_identical_arms() {
        for (p, n) in [
            (Posterior::new(4.0, 40.0).unwrap(), 5),
            (Posterior::new(0.5, 0.5).unwrap(), 24),
            (Posterior::new(1e5, 1e5).unwrap(), 24),
            (Posterior::new(3.0, 0.5).unwrap(), 3),
        ] {
            for v in p_best(&vec![p; n]) {
                assert!((v - 1.0 / n as f64).abs() < 1e-12, "{p:?} x {n}: {v}");
            }
        }
    }

    #[test]
    fn p_best_of_trivial_and_invalid_sets() {
        assert!(p_best(&[]).is_empty());
        assert_eq!(p_best(&[Posterior::new(3.0, 7.0).unwrap()]), vec![1.0]);
        let nan = Posterior {
            alpha: f64::NAN,
            beta: 1.0,
        };
        let zero = Posterior {
            alpha: 0.0,
            beta: 1.0,
        };
        // Invalid arms are never best; the valid ones share as if alone.
        let got = p_best(&[
            nan,
            Posterior::new(2.0, 3.0).unwrap(),
            zero,
            Posterior::new(3.0, 2.0).unwrap(),
        ]);
        let want = p_x_beats_y(3, 2.0, 2.0, 3.0);
        assert_eq!((got[0], got[2]), (0.0, 0.0));
        assert!((got[3] - want).abs() < 1e-9 && (got[1] + got[3] - 1.0).abs() < 1e-12);
        assert_eq!(p_best(&[nan, zero]), vec![0.5, 0.5]);
        // Shapes far beyond what the special functions resolve still give probabilities
        // summing to one, in the limit of point masses at the means.
        let huge = p_best(&[
            Posterior::new(1e300, 1e300).unwrap(),
            Posterior::new(1e300, 2e300).unwrap(),
            Posterior::new(1e20, 1.0).unwrap(),
        ]);
        assert!(huge
            .iter()
            .all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
        assert!((huge.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{huge:?}");
    }

    #[test]
    fn p_best_matches_the_previous_implementation() {
        // Where the replaced implementation was accurate (see `previous_p_best`), the two
        // agree to within its own error: ~3e-8 at most over these sets.
        let mut rng = SmallRng::seed_from_u64(2015);
        let mut worst = 0.0f64;
        for case in 0..cases(300) {
            let arms = realistic_set(&mut rng);
            let got = p_best(&arms);
            let diff = max_difference(&got, &previous_p_best(&arms));
            assert!(diff <= 1e-6, "case {case}: {diff:e} for {arms:?}");
            assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            worst = worst.max(diff);
        }
        println!("largest difference from the previous implementation: {worst:e}");
    }

    #[test]
    fn p_best_matches_direct_quadrature_over_the_whole_range() {
        // Shapes from 0.5 to 1e5, infinite densities at 0 and 1, arms thousands of times
        // narrower than others: here the previous implementation is off by up to 0.12 (beta
        // < 1 near 1), the sweep by 3e-11 at most.
        let mut rng = SmallRng::seed_from_u64(7);
        let mut worst = 0.0f64;
        for case in 0..cases(300) {
            let arms = if case % 4 == 3 {
                young_set(&mut rng)
            } else {
                wide_range_set(&mut rng)
            };
            let got = p_best(&arms);
            let diff = max_difference(&got, &direct_quadrature(&arms));
            assert!(diff <= 1e-9, "case {case}: {diff:e} for {arms:?}");
            assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            worst = worst.max(diff);
        }
        println!("largest difference from direct quadrature: {worst:e}");
    }

    #[test]
    fn pick_frequencies_match_exact_p_best() {
        // Seeded. Each frequency is a binomial proportion over N picks and must lie within 5
        // binomial standard errors of p_best (p floored at 1/N in the standard error, so
        // that a single pick of a ~1e-7 arm is not taken for a discrepancy).
        let b = |alpha: f64, beta: f64| Posterior::new(alpha, beta).unwrap();
        let slot: Vec<Posterior> = (0..8u64)
            .map(|i| {
                let impressions = 100 + (i * 7_919) % 19_900;
                let clicks = (impressions as f64 * (0.02 + 0.03 * ((i * 37) % 8) as f64 / 8.0))
                    .round() as u64;
                b(2.0, 60.0).observe(clicks, impressions)
            })
            .collect();
        let young: Vec<Posterior> = (0..6u64)
            .map(|i| b(0.5, 0.5).observe(i % 3, 2 * i % 7))
            .collect();
        let cases = [
            vec![b(2.0, 30.0), b(5.0, 60.0), b(1.0, 1.0), b(9.0, 200.0)],
            slot,
            young,
            // Near-ties between narrow arms next to a wide one.
            vec![
                b(3_000.0, 97_000.0),
                b(3_020.0, 96_980.0),
                b(2_990.0, 97_010.0),
                b(310.0, 9_690.0),
                b(2.0, 60.0),
            ],
            // Densities infinite at 1, and at 0.
            vec![b(60.0, 0.5), b(40.0, 0.7), b(3.0, 0.5), b(200.0, 2.0)],
            vec![
                b(0.5, 5.0),
                b(0.7, 3.0),
                b(1.0, 10.0),
                b(0.5, 1e4),
                b(0.6, 0.6),
            ],
        ];
        let mut rng = SmallRng::seed_from_u64(2015);
        let n = 200_000;
        for arms in &cases {
            let exact = p_best(arms);
            let mut counts = vec![0usize; arms.len()];
            for _ in 0..n {
                counts[pick(arms, &mut rng).unwrap()] += 1;
            }
            for (i, &c) in counts.iter().enumerate() {
                let freq = c as f64 / n as f64;
                let p = exact[i].max(1.0 / n as f64);
                let se = (p * (1.0 - p) / n as f64).sqrt();
                assert!(
                    (freq - exact[i]).abs() <= 5.0 * se,
                    "{arms:?} arm {i}: freq {freq} exact {} (se {se})",
                    exact[i]
                );
            }
        }
    }

    #[test]
    fn pick_of_nothing_is_none() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(pick(&[], &mut rng), None);
    }
}
