//! The ingest protocol between the bridge and the worker: the answers to a pushed
//! [`EventBatch`](crate::EventBatch), the applied offsets, and the limits and defaults both
//! sides share. The worker builds these types, the bridge parses them: one definition.

use serde::{Deserialize, Serialize};

use crate::batch::OffsetLedger;

/// Largest request body the worker accepts, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Most catalog items the worker accepts in one import request (`POST /api/catalog`); the
/// bridge's `catalog import` splits files by this count as well as by [`MAX_BODY_BYTES`].
pub const MAX_ITEMS_PER_IMPORT: usize = 2_000;

/// The slot a worker serves and a bridge feeds when none is configured.
pub const DEFAULT_SLOT: &str = "home-top-pick";

/// The `source` value that marks impressions and clicks of a worker's first slot; any other
/// slot's are marked with the slot's own name (see [`slot_source`]).
pub const TOP_PICK_SOURCE: &str = "top_pick";

/// The `source` value of `slot`'s impressions and clicks, given the worker's slots in order:
/// [`TOP_PICK_SOURCE`] for the first, the slot name for the others. A bridge maps each value
/// back to its slot (`--source-slot SOURCE=SLOT`).
pub fn slot_source<'a>(slot: &'a str, slots: &[String]) -> &'a str {
    if slots.first().is_some_and(|first| first == slot) {
        TOP_PICK_SOURCE
    } else {
        slot
    }
}

/// The worker's 200 answer to a pushed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PushResponse {
    /// The batch was new and is now counted.
    Applied(Applied),
    /// Every range was at or below the applied offsets: acknowledged, nothing changed.
    Duplicate,
}

/// What an applied batch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Impressions and clicks counted into arms of the set.
    pub counted: Counted,
    /// Some items of the batch that are not in the set (their counts are not kept).
    pub not_in_set: Vec<String>,
    /// The set's round after the batch.
    pub round: u64,
    /// Whether the batch ended a round.
    pub rotated: bool,
}

/// Impressions and clicks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// Impressions.
    pub impressions: u64,
    /// Clicks.
    pub clicks: u64,
}

/// The last applied offset of one topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedOffset {
    /// Topic (or replay / simulation stream name).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Last applied offset (inclusive).
    pub offset: i64,
}

/// `GET /api/slots/{slot}/offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetsResponse {
    /// Slot name.
    pub slot: String,
    /// Last applied offset per topic-partition.
    pub offsets: Vec<AppliedOffset>,
}

/// The 409 answer to a batch that straddles what was applied: the slot's applied offsets, from
/// which the sender re-reads its input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictResponse {
    /// What happened and what to do.
    pub error: String,
    /// Last applied offset per topic-partition, read under the same lock as the refusal.
    pub offsets: Vec<AppliedOffset>,
}

/// `GET /api/slots/{slot}/pick`: the item to feature now, with what a page needs to show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PickResponse {
    /// Slot name.
    pub slot: String,
    /// The chosen item's id.
    pub item: String,
    /// The set's round (0 for the fallback).
    pub epoch: u64,
    /// The slot state's version the pick was drawn from (0 for the fallback).
    pub version: u64,
    /// Whether this is the configured fallback rather than a sampled pick.
    pub fallback: bool,
    /// Whether an operator's pin chose the item rather than the bandit.
    #[serde(default)]
    pub pinned: bool,
    /// Where the state came from (`isolate`, `kv`, `object`, `stale`, `missing`).
    pub source: String,
    /// Title.
    pub title: String,
    /// Image URL.
    pub image: String,
    /// Photographer.
    pub photographer: String,
    /// Category.
    pub category: String,
    /// The product page, marked as a click on this slot's pick.
    pub href: String,
    /// The `source` value the page's impression signal must carry for this slot.
    #[serde(default)]
    pub signal_source: String,
    /// The decision's log (absent for the fallback): what the impression signal carries as
    /// parameters (see [`crate::decision::DecisionLog::params`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<crate::decision::DecisionLog>,
}

/// `POST /api/catalog`: what an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogImportResponse {
    /// Items added or replaced.
    pub imported: usize,
    /// Catalog size afterwards.
    pub total: u64,
}

/// Every error answer: `{"error": "..."}` (some carry more fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong and, where possible, what to do.
    pub error: String,
}

impl OffsetLedger {
    /// The ledger as a flat list, topics and partitions in order.
    pub fn entries(&self) -> Vec<AppliedOffset> {
        self.applied
            .iter()
            .flat_map(|(topic, parts)| {
                parts
                    .iter()
                    .map(move |(&partition, &offset)| AppliedOffset {
                        topic: topic.clone(),
                        partition,
                        offset,
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{EventBatch, OffsetRange};

    #[test]
    fn push_responses_carry_their_status_tag() {
        let dup = serde_json::to_value(PushResponse::Duplicate).unwrap();
        assert_eq!(dup, serde_json::json!({"status": "duplicate"}));
        let applied = PushResponse::Applied(Applied {
            counted: Counted {
                impressions: 3,
                clicks: 1,
            },
            not_in_set: vec!["x".into()],
            round: 2,
            rotated: true,
        });
        let v = serde_json::to_value(&applied).unwrap();
        assert_eq!(v["status"], "applied");
        assert_eq!(v["counted"]["impressions"], 3);
        assert_eq!(v["not_in_set"][0], "x");
        let back: PushResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, applied);
        assert!(serde_json::from_str::<PushResponse>(r#"{"status":"maybe"}"#).is_err());
    }

    #[test]
    fn ledger_entries_list_every_partition_in_order() {
        let mut l = OffsetLedger::default();
        for (topic, partition, to) in [("b", 1, 9), ("a", 2, 5), ("a", 0, 7)] {
            l.advance(&EventBatch {
                source: "t".into(),
                offsets: vec![OffsetRange {
                    topic: topic.into(),
                    partition,
                    from: 0,
                    to,
                }],
                counts: vec![],
                ..Default::default()
            });
        }
        let e = l.entries();
        let flat: Vec<(&str, i32, i64)> = e
            .iter()
            .map(|o| (o.topic.as_str(), o.partition, o.offset))
            .collect();
        assert_eq!(flat, vec![("a", 0, 7), ("a", 2, 5), ("b", 1, 9)]);
    }
}
