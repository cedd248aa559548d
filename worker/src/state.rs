//! A slot's persisted state and its read models (edge snapshot, operator JSON). Pure: the
//! Durable Object in `slot_do.rs` does the I/O.

use std::collections::{BTreeMap, VecDeque};

use bandit::{ArmSet, OffsetLedger, RotationConfig, RoundSummary};
use serde::{Deserialize, Serialize};

use crate::catalog::CatalogItem;
use crate::snapshot::{Snapshot, SnapshotArm};

/// Rounds kept in the operator history.
pub const ROUND_HISTORY: usize = 20;

/// Running totals for operators.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Batches applied.
    pub batches: u64,
    /// Batches acknowledged as already applied.
    pub duplicates: u64,
    /// Batches refused as straddling the applied offsets.
    pub conflicts: u64,
    /// Impressions counted.
    pub impressions: u64,
    /// Clicks counted.
    pub clicks: u64,
    /// Impressions of items outside the set (not counted).
    pub outside_impressions: u64,
    /// Clicks of items outside the set (not counted).
    pub outside_clicks: u64,
}

/// Everything the slot persists, written as one value so counts and offsets change together.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotState {
    /// Slot name.
    pub slot: String,
    /// The arm set.
    pub arms: ArmSet,
    /// Display fields of the current arms.
    pub items: BTreeMap<String, CatalogItem>,
    /// Last applied offset per topic-partition.
    pub ledger: OffsetLedger,
    /// Recent rounds, newest last.
    pub rounds: VecDeque<RoundSummary>,
    /// Changes applied so far.
    pub version: u64,
    /// Totals.
    pub totals: Totals,
    /// When the last batch was applied (ms since the Unix epoch).
    pub last_batch_ms: Option<f64>,
    /// When the set last asked the catalog for items (ms).
    pub last_refill_ms: f64,
}

impl SlotState {
    /// A slot with no arms yet.
    pub fn new(slot: &str, rotation: &RotationConfig) -> SlotState {
        SlotState {
            slot: slot.to_string(),
            arms: ArmSet::new(Vec::new(), &rotation.policy),
            items: BTreeMap::new(),
            ledger: OffsetLedger::default(),
            rounds: VecDeque::new(),
            version: 0,
            totals: Totals::default(),
            last_batch_ms: None,
            last_refill_ms: f64::NEG_INFINITY,
        }
    }

    /// The edge's view.
    pub fn snapshot(&self, rotation: &RotationConfig, now_ms: f64) -> Snapshot {
        let posteriors = self.arms.posteriors(&rotation.policy);
        Snapshot {
            slot: self.slot.clone(),
            epoch: self.arms.round,
            version: self.version,
            produced_at_ms: now_ms,
            arms: self
                .arms
                .arms
                .iter()
                .zip(posteriors)
                .filter_map(|(a, posterior)| {
                    self.items.get(&a.item).map(|item| SnapshotArm {
                        item: item.clone(),
                        posterior,
                    })
                })
                .collect(),
        }
    }

    /// Offsets as the bridge reads them.
    pub fn offsets_json(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .ledger
            .applied
            .iter()
            .flat_map(|(topic, parts)| {
                parts.iter().map(
                    move |(p, o)| serde_json::json!({"topic": topic, "partition": p, "offset": o}),
                )
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// The operator's view, with P(best).
    pub fn state_json(&self, rotation: &RotationConfig) -> serde_json::Value {
        let posteriors = self.arms.posteriors(&rotation.policy);
        let p_best = bandit::p_best(&posteriors);
        let arms: Vec<serde_json::Value> = self
            .arms
            .arms
            .iter()
            .zip(posteriors.iter().zip(p_best))
            .map(|(a, (post, pb))| {
                let item = self.items.get(&a.item);
                serde_json::json!({
                    "item": a.item,
                    "title": item.map(|i| i.title.as_str()).unwrap_or_default(),
                    "image": item.map(|i| i.image.as_str()).unwrap_or_default(),
                    "clicks": a.clicks,
                    "impressions": a.impressions,
                    "total_clicks": a.total_clicks,
                    "total_impressions": a.total_impressions,
                    "since_round": a.since_round,
                    "prior": a.prior,
                    "alpha": post.alpha,
                    "beta": post.beta,
                    "mean": post.mean(),
                    "p_best": pb,
                })
            })
            .collect();
        serde_json::json!({
            "slot": self.slot,
            "round": self.arms.round,
            "epoch": self.arms.round,
            "version": self.version,
            "policy": rotation.policy.to_string(),
            "config": {
                "arms": rotation.arms,
                "round_impressions": rotation.round_impressions,
                "cooldown_rounds": rotation.cooldown_rounds,
            },
            "round_impressions": self.arms.round_impressions,
            "fresh_prior": self.arms.fresh_prior(&rotation.policy),
            "arms": arms,
            "offsets": self.offsets_json(),
            "rounds": self.rounds,
            "totals": self.totals,
            "last_batch_ms": self.last_batch_ms,
        })
    }

    /// Appends a finished round to the bounded history.
    pub fn push_round(&mut self, summary: RoundSummary) {
        self.rounds.push_back(summary);
        while self.rounds.len() > ROUND_HISTORY {
            self.rounds.pop_front();
        }
    }
}
