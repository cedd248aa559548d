//! The event batch the bridge sends to the worker, and the exactly-once offset ledger.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// Longest accepted item id, in bytes.
pub const MAX_ITEM_ID_LEN: usize = 128;
/// Longest accepted topic (Kafka's own limit is 249).
pub const MAX_TOPIC_LEN: usize = 255;
/// Most distinct items in one batch.
pub const MAX_ITEMS_PER_BATCH: usize = 10_000;
/// Most topic-partition ranges in one batch.
pub const MAX_RANGES_PER_BATCH: usize = 1_024;
/// Largest impressions or clicks count for one item in one batch.
pub const MAX_COUNT: u64 = 1_000_000_000;
/// Largest offset a batch may claim: 2^53 - 1, the largest integer every JSON reader keeps
/// exactly (a partition taking a million events a second reaches it in 285 years). A claim of
/// `i64::MAX` would otherwise make every later batch of the partition a silent duplicate.
pub const MAX_OFFSET: i64 = (1 << 53) - 1;
/// Most topic-partitions one slot's ledger keeps; the ledger lives in the slot's one stored
/// value, so it is bounded (operators drop entries no longer in use).
pub const MAX_LEDGER_ENTRIES: usize = 1_024;

/// Whether `id` can be a catalog item id: 1 to [`MAX_ITEM_ID_LEN`] bytes of
/// `A-Z a-z 0-9 . _ ~ -`, and not `.` or `..` (ids go into URLs as they are). The worker's
/// catalog and every event batch hold to it, so the bridge can drop anything else at once.
pub fn is_valid_item_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ITEM_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// Aggregated feedback for one slot, with the stream positions it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// Who produced the counts (e.g. `divolte`, `replay`, `simulate`).
    pub source: String,
    /// The stream ranges whose events are summed in `counts`.
    pub offsets: Vec<OffsetRange>,
    /// Per-item sums.
    pub counts: Vec<ItemCount>,
    /// Impressions of logged decisions by the slot state version they were drawn from and
    /// item, for the sample-ratio check (the same impressions are in `counts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposures: Vec<Exposure>,
    /// The oldest and newest event time of the counted events, for the feedback lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTime>,
}

/// Logged impressions of one item drawn from one version of the slot state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exposure {
    /// The slot state's version the decisions were drawn from.
    pub version: u64,
    /// Catalog item id.
    pub item: String,
    /// Impressions.
    pub impressions: u64,
    /// The visitor segment the decisions used, when the worker has segments (each segment
    /// has its own serving probabilities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

/// The span of event times (ms since the Unix epoch, as the collector stamped them) of a
/// batch's counted events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTime {
    /// The oldest event's time.
    pub oldest_ms: i64,
    /// The newest event's time.
    pub newest_ms: i64,
}

/// An inclusive range of offsets of one topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetRange {
    /// Kafka topic (or a replay / simulation stream name).
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// First offset covered.
    pub from: i64,
    /// Last offset covered.
    pub to: i64,
}

/// Impressions and clicks of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemCount {
    /// Catalog item id.
    pub item: String,
    /// Impressions.
    #[serde(default)]
    pub impressions: u64,
    /// Clicks.
    #[serde(default)]
    pub clicks: u64,
    /// Who served the decisions these events belong to; absent for events that logged no
    /// decision (pages rendered before decisions were logged). An item may have one entry
    /// per value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<crate::decision::ServedBy>,
    /// The visitor segment the decisions used, when the worker has segments (one entry per
    /// item, server and segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

/// Why a batch is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// An item id is empty.
    #[error("counts[{0}].item is empty")]
    EmptyItem(usize),
    /// An item id is too long.
    #[error("counts[{index}].item is {len} bytes; the limit is {MAX_ITEM_ID_LEN}")]
    ItemTooLong {
        /// Position in `counts`.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// An item id has characters no catalog id has.
    #[error("counts[{0}].item is not a catalog id (A-Z a-z 0-9 . _ ~ -, not . or ..)")]
    BadItem(usize),
    /// An item occurs twice.
    #[error("counts[{0}].item {1:?} occurs more than once with the same served_by and segment; sum it into one entry")]
    DuplicateItem(usize, String),
    /// A count is over the limit.
    #[error("counts[{0}] has a count over {MAX_COUNT}")]
    CountTooLarge(usize),
    /// Too many items.
    #[error("{0} items in one batch; the limit is {MAX_ITEMS_PER_BATCH}")]
    TooManyItems(usize),
    /// Too many ranges.
    #[error("{0} offset ranges in one batch; the limit is {MAX_RANGES_PER_BATCH}")]
    TooManyRanges(usize),
    /// A range is malformed.
    #[error("offsets[{0}]: {1}")]
    BadRange(usize, &'static str),
    /// A topic-partition occurs twice.
    #[error("offsets[{0}] repeats topic-partition {1}/{2}")]
    DuplicateRange(usize, String, i32),
    /// A segment name is not one.
    #[error("counts[{0}].segment is not a segment name (1-32 of a-z 0-9 _ -)")]
    BadSegment(usize),
    /// An exposure entry is malformed.
    #[error("exposures[{0}]: {1}")]
    BadExposure(usize, &'static str),
    /// The event times are not a span of times.
    #[error("event_time: oldest_ms and newest_ms must be from 0 to 2^53 - 1, oldest first")]
    BadEventTime,
    /// A batch with no ranges cannot be applied exactly once.
    #[error("offsets is empty: every batch must say which stream positions it covers")]
    NoOffsets,
}

impl EventBatch {
    /// Checks every bound; a batch that passes is safe to apply.
    pub fn validate(&self) -> Result<(), BatchError> {
        if self.offsets.is_empty() {
            return Err(BatchError::NoOffsets);
        }
        if self.counts.len() > MAX_ITEMS_PER_BATCH {
            return Err(BatchError::TooManyItems(self.counts.len()));
        }
        if self.offsets.len() > MAX_RANGES_PER_BATCH {
            return Err(BatchError::TooManyRanges(self.offsets.len()));
        }
        let mut seen_ranges = HashSet::new();
        for (i, r) in self.offsets.iter().enumerate() {
            if r.topic.is_empty() {
                return Err(BatchError::BadRange(i, "topic is empty"));
            }
            if r.topic.len() > MAX_TOPIC_LEN {
                return Err(BatchError::BadRange(i, "topic is longer than 255 bytes"));
            }
            if r.partition < 0 {
                return Err(BatchError::BadRange(i, "partition is negative"));
            }
            if r.from < 0 {
                return Err(BatchError::BadRange(i, "from is negative"));
            }
            if r.from > r.to {
                return Err(BatchError::BadRange(i, "from is greater than to"));
            }
            if r.to > MAX_OFFSET {
                return Err(BatchError::BadRange(
                    i,
                    "to is beyond 2^53 - 1, the largest offset accepted",
                ));
            }
            if !seen_ranges.insert((r.topic.as_str(), r.partition)) {
                return Err(BatchError::DuplicateRange(i, r.topic.clone(), r.partition));
            }
        }
        let mut seen_items = HashSet::new();
        for (i, c) in self.counts.iter().enumerate() {
            if c.item.is_empty() {
                return Err(BatchError::EmptyItem(i));
            }
            if c.item.len() > MAX_ITEM_ID_LEN {
                return Err(BatchError::ItemTooLong {
                    index: i,
                    len: c.item.len(),
                });
            }
            if !is_valid_item_id(&c.item) {
                return Err(BatchError::BadItem(i));
            }
            if c.impressions > MAX_COUNT || c.clicks > MAX_COUNT {
                return Err(BatchError::CountTooLarge(i));
            }
            if c.segment
                .as_deref()
                .is_some_and(|s| !crate::decision::is_valid_segment(s))
            {
                return Err(BatchError::BadSegment(i));
            }
            if !seen_items.insert((c.item.as_str(), c.served_by, c.segment.as_deref())) {
                return Err(BatchError::DuplicateItem(i, c.item.clone()));
            }
        }
        if self.exposures.len() > MAX_ITEMS_PER_BATCH {
            return Err(BatchError::TooManyItems(self.exposures.len()));
        }
        let mut seen_exposures = HashSet::new();
        for (i, e) in self.exposures.iter().enumerate() {
            if !is_valid_item_id(&e.item) {
                return Err(BatchError::BadExposure(i, "item is not a catalog id"));
            }
            if e.impressions > MAX_COUNT || e.version > MAX_OFFSET as u64 {
                return Err(BatchError::BadExposure(i, "a number is over the limit"));
            }
            if e.segment
                .as_deref()
                .is_some_and(|s| !crate::decision::is_valid_segment(s))
            {
                return Err(BatchError::BadExposure(
                    i,
                    "segment is not a segment name (1-32 of a-z 0-9 _ -)",
                ));
            }
            if !seen_exposures.insert((e.version, e.item.as_str(), e.segment.as_deref())) {
                return Err(BatchError::BadExposure(
                    i,
                    "version, item and segment occur more than once",
                ));
            }
        }
        if let Some(t) = self.event_time {
            let ok = |v: i64| (0..=MAX_OFFSET).contains(&v);
            if !(ok(t.oldest_ms) && ok(t.newest_ms) && t.oldest_ms <= t.newest_ms) {
                return Err(BatchError::BadEventTime);
            }
        }
        Ok(())
    }
}

/// The last applied offset per topic-partition, stored with the counts it produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetLedger {
    /// topic -> partition -> last applied offset.
    pub applied: BTreeMap<String, BTreeMap<i32, i64>>,
}

/// What to do with a batch given the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Every range is beyond what was applied: apply it, then advance the ledger.
    Apply,
    /// Every range is at or below what was applied: acknowledge, change nothing.
    Duplicate,
    /// Some range straddles the applied offset, or the batch mixes new and old ranges:
    /// refuse it so the sender can resynchronise.
    Conflict,
}

impl OffsetLedger {
    /// The last applied offset of a topic-partition.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.applied.get(topic)?.get(&partition).copied()
    }

    /// How a batch relates to what was already applied.
    pub fn disposition(&self, batch: &EventBatch) -> Disposition {
        let (mut new, mut old) = (0usize, 0usize);
        for r in &batch.offsets {
            match self.get(&r.topic, r.partition) {
                None => new += 1,
                Some(last) if r.from > last => new += 1,
                Some(last) if r.to <= last => old += 1,
                Some(_) => return Disposition::Conflict,
            }
        }
        match (new, old) {
            (_, 0) => Disposition::Apply,
            (0, _) => Disposition::Duplicate,
            _ => Disposition::Conflict,
        }
    }

    /// Topic-partitions the ledger would hold after applying `batch`.
    pub fn len_after(&self, batch: &EventBatch) -> usize {
        self.len()
            + batch
                .offsets
                .iter()
                .filter(|r| self.get(&r.topic, r.partition).is_none())
                .count()
    }

    /// Topic-partitions in the ledger.
    pub fn len(&self) -> usize {
        self.applied.values().map(BTreeMap::len).sum()
    }

    /// Whether the ledger is empty.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }

    /// Sets a partition's applied offset (an operator's correction); `None` forgets it, so
    /// the next batch there is applied whatever its offsets. Returns the previous offset.
    pub fn set(&mut self, topic: &str, partition: i32, offset: Option<i64>) -> Option<i64> {
        match offset {
            Some(o) => self
                .applied
                .entry(topic.to_string())
                .or_default()
                .insert(partition, o),
            None => {
                let parts = self.applied.get_mut(topic)?;
                let old = parts.remove(&partition);
                if parts.is_empty() {
                    self.applied.remove(topic);
                }
                old
            }
        }
    }

    /// Forgets every partition of a topic; how many there were.
    pub fn forget_topic(&mut self, topic: &str) -> usize {
        self.applied.remove(topic).map_or(0, |p| p.len())
    }

    /// Records the batch's ranges as applied.
    pub fn advance(&mut self, batch: &EventBatch) {
        for r in &batch.offsets {
            let slot = self
                .applied
                .entry(r.topic.clone())
                .or_default()
                .entry(r.partition)
                .or_insert(r.to);
            *slot = (*slot).max(r.to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::ServedBy;

    fn batch(ranges: &[(&str, i32, i64, i64)]) -> EventBatch {
        EventBatch {
            source: "test".into(),
            offsets: ranges
                .iter()
                .map(|&(t, p, f, to)| OffsetRange {
                    topic: t.into(),
                    partition: p,
                    from: f,
                    to,
                })
                .collect(),
            counts: vec![ItemCount {
                item: "a".into(),
                impressions: 3,
                clicks: 1,
                served_by: None,
                segment: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn parses_the_design_example() {
        let json = r#"{ "source": "divolte",
          "offsets": [ { "topic": "divolte", "partition": 0, "from": 1200, "to": 1399 } ],
          "counts":  [ { "item": "15045568809", "impressions": 12, "clicks": 1 } ] }"#;
        let b: EventBatch = serde_json::from_str(json).unwrap();
        assert_eq!(b.offsets[0].to, 1399);
        assert_eq!(b.counts[0].impressions, 12);
        b.validate().unwrap();
    }

    #[test]
    fn validation_rejects_each_bad_field() {
        let good = batch(&[("t", 0, 0, 5)]);
        good.validate().unwrap();
        let mut b = good.clone();
        b.counts[0].item.clear();
        assert_eq!(b.validate(), Err(BatchError::EmptyItem(0)));
        let mut b = good.clone();
        b.counts[0].item = "x".repeat(MAX_ITEM_ID_LEN + 1);
        assert!(matches!(b.validate(), Err(BatchError::ItemTooLong { .. })));
        for bad in [".", "..", "a b", "a\"b", "<x>", "é", "a/b"] {
            let mut b = good.clone();
            b.counts[0].item = bad.into();
            assert_eq!(b.validate(), Err(BatchError::BadItem(0)), "{bad:?}");
        }
        let mut b = good.clone();
        b.counts[0].item = "A.b_c~d-9".into();
        b.validate().unwrap();
        let mut b = good.clone();
        b.counts[0].clicks = MAX_COUNT + 1;
        assert_eq!(b.validate(), Err(BatchError::CountTooLarge(0)));
        let mut b = good.clone();
        b.counts.push(b.counts[0].clone());
        assert!(matches!(b.validate(), Err(BatchError::DuplicateItem(1, _))));
        // One entry per item and server of its decisions.
        let mut b = good.clone();
        for served_by in [ServedBy::Bandit, ServedBy::Holdout] {
            b.counts.push(ItemCount {
                served_by: Some(served_by),
                ..b.counts[0].clone()
            });
        }
        assert_eq!(b.validate(), Ok(()));
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains(r#""served_by":"holdout""#), "{json}");
        assert_eq!(serde_json::from_str::<EventBatch>(&json).unwrap(), b);
        // Exposures and event times are bounded and checked.
        let mut e = b.clone();
        e.exposures = vec![
            Exposure {
                version: 3,
                item: "a".into(),
                impressions: 2,
                segment: None,
            };
            2
        ];
        assert!(matches!(e.validate(), Err(BatchError::BadExposure(1, _))));
        // The same version and item in another segment is another entry.
        e.exposures[1].segment = Some("mobile".into());
        assert_eq!(e.validate(), Ok(()));
        e.exposures[1].segment = Some("Mobile!".into());
        assert!(matches!(e.validate(), Err(BatchError::BadExposure(1, _))));
        e.exposures[1].segment = None;
        e.exposures[1].version = 4;
        assert_eq!(e.validate(), Ok(()));
        e.exposures[1].item = "<x>".into();
        assert!(matches!(e.validate(), Err(BatchError::BadExposure(1, _))));
        e.exposures.pop();
        e.event_time = Some(EventTime {
            oldest_ms: 5,
            newest_ms: 4,
        });
        assert_eq!(e.validate(), Err(BatchError::BadEventTime));
        e.event_time = Some(EventTime {
            oldest_ms: 4,
            newest_ms: 5,
        });
        assert_eq!(e.validate(), Ok(()));
        // Batches without them (every bridge before decisions were logged) stay valid.
        let old = r#"{"source":"s","offsets":[{"topic":"t","partition":0,"from":0,"to":1}],"counts":[{"item":"a","impressions":1,"clicks":0}]}"#;
        assert_eq!(
            serde_json::from_str::<EventBatch>(old).unwrap().counts[0].served_by,
            None
        );
        assert!(matches!(
            batch(&[("t", 0, 6, 5)]).validate(),
            Err(BatchError::BadRange(0, _))
        ));
        assert!(matches!(
            batch(&[("t", -1, 0, 5)]).validate(),
            Err(BatchError::BadRange(0, _))
        ));
        assert!(matches!(
            batch(&[("t", 0, 0, 5), ("t", 0, 6, 9)]).validate(),
            Err(BatchError::DuplicateRange(1, _, 0))
        ));
        assert_eq!(batch(&[]).validate(), Err(BatchError::NoOffsets));
        batch(&[("t", 0, 0, MAX_OFFSET)]).validate().unwrap();
        assert!(matches!(
            batch(&[("t", 0, 0, i64::MAX)]).validate(),
            Err(BatchError::BadRange(0, _))
        ));
        assert!(serde_json::from_str::<EventBatch>(
            r#"{"source":"x","offsets":[],"counts":[],"extra":1}"#
        )
        .is_err());
    }

    #[test]
    fn ledger_applies_once_and_refuses_straddles() {
        let mut l = OffsetLedger::default();
        let b1 = batch(&[("t", 0, 0, 99)]);
        assert_eq!(l.disposition(&b1), Disposition::Apply);
        l.advance(&b1);
        assert_eq!(l.disposition(&b1), Disposition::Duplicate);
        assert_eq!(
            l.disposition(&batch(&[("t", 0, 50, 99)])),
            Disposition::Duplicate
        );
        assert_eq!(
            l.disposition(&batch(&[("t", 0, 50, 150)])),
            Disposition::Conflict
        );
        assert_eq!(
            l.disposition(&batch(&[("t", 0, 100, 150)])),
            Disposition::Apply
        );
        // Gaps are allowed: Kafka offsets are not always contiguous.
        assert_eq!(
            l.disposition(&batch(&[("t", 0, 120, 150)])),
            Disposition::Apply
        );
        // Old and new ranges in one batch cannot be applied partly.
        assert_eq!(
            l.disposition(&batch(&[("t", 0, 0, 10), ("t", 1, 0, 10)])),
            Disposition::Conflict
        );
        assert_eq!(l.get("t", 0), Some(99));
        assert_eq!(l.get("t", 1), None);
    }

    #[test]
    fn the_ledger_is_bounded_and_operators_can_correct_it() {
        let mut l = OffsetLedger::default();
        let wide: Vec<(String, i32)> = (0..MAX_LEDGER_ENTRIES as i32)
            .map(|p| ("t".to_string(), p))
            .collect();
        let ranges: Vec<(&str, i32, i64, i64)> =
            wide.iter().map(|(t, p)| (t.as_str(), *p, 0, 0)).collect();
        let full = batch(&ranges);
        assert_eq!(l.len_after(&full), MAX_LEDGER_ENTRIES);
        l.advance(&full);
        assert_eq!(l.len(), MAX_LEDGER_ENTRIES);
        // Known partitions add nothing; a new one would pass the bound.
        assert_eq!(l.len_after(&batch(&[("t", 5, 1, 9)])), MAX_LEDGER_ENTRIES);
        assert_eq!(
            l.len_after(&batch(&[("t", 5, 1, 9), ("u", 0, 0, 0)])),
            MAX_LEDGER_ENTRIES + 1
        );
        // Dropping a partition that is no longer read makes room.
        assert_eq!(l.set("t", 7, None), Some(0));
        assert_eq!(l.len_after(&batch(&[("u", 0, 0, 0)])), MAX_LEDGER_ENTRIES);
        assert_eq!(l.forget_topic("t"), MAX_LEDGER_ENTRIES - 1);
        assert!(l.is_empty());
        // A poisoned offset is corrected by setting it back.
        l.advance(&batch(&[("v", 0, 0, MAX_OFFSET)]));
        assert_eq!(
            l.disposition(&batch(&[("v", 0, 10, 20)])),
            Disposition::Duplicate
        );
        assert_eq!(l.set("v", 0, Some(9)), Some(MAX_OFFSET));
        assert_eq!(
            l.disposition(&batch(&[("v", 0, 10, 20)])),
            Disposition::Apply
        );
    }
}
