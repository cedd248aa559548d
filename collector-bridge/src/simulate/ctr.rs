//! The simulated visitors' hidden click-through rates: their distribution, and a small
//! fully specified generator and hash so a seed gives the same rates on every version.

use rand::{RngCore, SeedableRng};
use rand_distr::{Beta, Distribution};

/// How hidden click-through rates are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CtrDist {
    /// Beta(a, b) per item.
    Beta(f64, f64),
    /// The same rate for every item.
    Fixed(f64),
}

impl std::str::FromStr for CtrDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected beta:A,B or fixed:P, got {s:?}");
        let (kind, args) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "beta" => {
                let (a, b) = args.split_once(',').ok_or_else(bad)?;
                let a: f64 = a.trim().parse().map_err(|_| bad())?;
                let b: f64 = b.trim().parse().map_err(|_| bad())?;
                if !(a > 0.0 && b > 0.0 && a.is_finite() && b.is_finite()) {
                    return Err(format!("beta parameters must be positive, got {s:?}"));
                }
                Ok(CtrDist::Beta(a, b))
            }
            "fixed" => {
                let p: f64 = args.trim().parse().map_err(|_| bad())?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!("fixed rate must be in [0, 1], got {s:?}"));
                }
                Ok(CtrDist::Fixed(p))
            }
            _ => Err(bad()),
        }
    }
}

impl Default for CtrDist {
    fn default() -> Self {
        CtrDist::Beta(2.0, 60.0)
    }
}

/// SplitMix64: tiny, fast, and fully specified, so rates are reproducible across versions of
/// the `rand` crate.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
}

impl RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl SeedableRng for SplitMix64 {
    type Seed = [u8; 8];
    fn from_seed(seed: [u8; 8]) -> Self {
        SplitMix64(u64::from_le_bytes(seed))
    }
}

/// FNV-1a, a stable hash for seeding per item.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hidden click-through rate of `item` under `seed`: a deterministic function, so tests
/// and benchmarks can compute which item is truly best.
/// The seed of a visitor segment's hidden rates: each segment draws its own rates from the
/// same distribution (the strongest context effect), reproducibly.
pub fn segment_seed(seed: u64, segment: &str) -> u64 {
    seed ^ fnv1a(segment.as_bytes()).rotate_left(29)
}

/// The hidden click-through rate of `item` for visitors whose rates come from `seed`.
pub fn true_ctr(seed: u64, item: &str, dist: CtrDist) -> f64 {
    match dist {
        CtrDist::Fixed(p) => p,
        CtrDist::Beta(a, b) => {
            let mut rng = SplitMix64::new(seed ^ fnv1a(item.as_bytes()).rotate_left(17));
            match Beta::new(a, b) {
                Ok(d) => d.sample(&mut rng),
                Err(_) => 0.0,
            }
        }
    }
}
