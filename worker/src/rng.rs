//! The isolate's random number generator (seeded once from the platform's CSPRNG) for picks,
//! and CSPRNG values for nonces and error references.

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

/// `n` bytes from the platform's CSPRNG as lowercase hex (the isolate generator when the
/// platform fails, which Workers never expect).
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    if getrandom::fill(&mut bytes).is_err() {
        with_rng(|r| rand::RngCore::fill_bytes(r, &mut bytes));
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A per-response Content-Security-Policy nonce (128 bits, unguessable).
pub fn nonce() -> String {
    random_hex(16)
}

/// A short reference that ties an error answer to its log line.
pub fn reference() -> String {
    random_hex(6)
}
