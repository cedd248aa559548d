//! The read model the edge samples from: the arms of a slot with their posteriors and display
//! fields, published to KV by the slot's Durable Object.

use bandit::operator::Pin;
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
    /// An operator's pin, with what the page shows of its item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
}

/// A pin with the display fields of its item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pinned {
    /// The pin.
    pub pin: Pin,
    /// Display fields of the pinned item.
    pub item: CatalogItem,
}

/// KV key of a slot's snapshot.
pub fn kv_key(slot: &str) -> String {
    format!("snapshot:{slot}")
}

impl Snapshot {
    /// Whether this snapshot is a later state of the slot than `other` (every change of the
    /// slot raises its version).
    pub fn is_newer_than(&self, other: &Snapshot) -> bool {
        self.version > other.version
    }

    /// The Thompson pick among arms whose item is not in `taken` (items already on the page):
    /// one posterior draw per arm, highest wins; the winner's index.
    pub fn pick_index<R: Rng + ?Sized>(&self, rng: &mut R, taken: &[&str]) -> Option<usize> {
        if taken.is_empty() {
            return bandit::pick(self.arms.iter().map(|a| &a.posterior), rng);
        }
        let open: Vec<usize> = (0..self.arms.len())
            .filter(|&i| !taken.contains(&self.arms[i].item.id.as_str()))
            .collect();
        bandit::pick(open.iter().map(|&i| &self.arms[i].posterior), rng).map(|k| open[k])
    }

    /// The pin in force at `now_ms` for a request whose uniform draw is `u` (in [0, 1)):
    /// active, drawn into its share, and not already on the page.
    pub fn pin_for(&self, now_ms: f64, u: f64, taken: &[&str]) -> Option<&Pinned> {
        self.pinned.as_ref().filter(|p| {
            p.pin.active(now_ms) && u < p.pin.share && !taken.contains(&p.item.id.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(version: u64) -> Snapshot {
        Snapshot {
            slot: "s".into(),
            epoch: 1,
            version,
            produced_at_ms: 0.0,
            arms: Vec::new(),
            pinned: None,
        }
    }

    #[test]
    fn only_a_higher_version_is_newer() {
        assert!(snap(5).is_newer_than(&snap(4)));
        assert!(!snap(5).is_newer_than(&snap(5)));
        assert!(!snap(4).is_newer_than(&snap(5)));
    }
}
