//! The pure model behind the top pick: Beta posteriors, Thompson sampling, the rotating arm
//! set with its prior policies, the event-batch wire format and an offline evaluator.
//!
//! No I/O and no clock: callers pass the random number generator in, so every decision is
//! reproducible from a seed.

pub mod armset;
pub mod batch;
pub mod context;
pub mod decision;
pub mod evaluate;
pub mod evaluate_context;
pub mod features;
pub mod health;
pub mod history;
pub mod holdout;
pub mod memory;
pub mod ope;
pub mod operator;
pub mod policy;
pub mod posterior;
pub mod protocol;
pub mod special;
pub mod thompson;

pub use armset::{Arm, ArmSet, Recorded, RotationConfig, RotationPlan, RoundSummary};
pub use batch::{
    Disposition, EventBatch, EventTime, Exposure, ItemCount, OffsetLedger, OffsetRange,
};
pub use policy::PriorPolicy;
pub use posterior::Posterior;
pub use protocol::{AppliedOffset, PushResponse};
pub use thompson::{p_best, pick};

/// Whether a count is zero: serde's `skip_serializing_if` for counts that stored and sent
/// JSON leave out when zero (read back as 0 through `#[serde(default)]`).
pub fn is_zero(n: &u64) -> bool {
    *n == 0
}
