//! The isolate's random number generator, seeded once from the platform's CSPRNG.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::SeedableRng;

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(seeded());
}

fn seeded() -> SmallRng {
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_err() {
        // Never expected in Workers; a fixed seed still gives valid (if predictable) picks.
        seed[0] = 1;
    }
    SmallRng::seed_from_u64(u64::from_le_bytes(seed))
}

/// Runs `f` with the isolate's generator.
pub fn with_rng<T>(f: impl FnOnce(&mut SmallRng) -> T) -> T {
    RNG.with(|r| f(&mut r.borrow_mut()))
}
