//! The read model the edge samples from: the arms of a slot with their posteriors and display
//! fields, published to KV by the slot's Durable Object.

use bandit::Posterior;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::catalog::CatalogItem;

/// One arm as the edge sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotArm {
    /// Display fields of the item.
    pub item: CatalogItem,
    /// Its current posterior.
    pub posterior: Posterior,
}

/// Everything needed to pick and render a slot without touching the Durable Object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Slot name.
    pub slot: String,
    /// Round number of the arm set.
    pub epoch: u64,
    /// Applied-batch counter of the slot; grows with every change.
    pub version: u64,
    /// When the Durable Object produced it (ms since the Unix epoch).
    pub produced_at_ms: f64,
    /// The arms.
    pub arms: Vec<SnapshotArm>,
}

/// KV key of a slot's snapshot.
pub fn kv_key(slot: &str) -> String {
    format!("snapshot:{slot}")
}

impl Snapshot {
    /// The Thompson pick: one posterior draw per arm, highest wins; the winner's index.
    pub fn pick_index<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<usize> {
        bandit::pick(self.arms.iter().map(|a| &a.posterior), rng)
    }
}
