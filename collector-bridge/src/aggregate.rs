//! Per-slot aggregation of counts into event batches, with the offset ranges each batch covers
//! and a watermark per slot and partition so that no slot counts an offset it already applied.
//! Owned by [`crate::pipeline::Pipeline`]; it measures what is pending, and
//! [`crate::delivery::FlushPolicy`] decides when that is enough to deliver.

use std::collections::HashMap;

use bandit::protocol::AppliedOffset;
use bandit::{EventBatch, ItemCount, OffsetRange};

use crate::classify::{Event, Kind};

/// JSON bytes of one count entry besides the item id (`{"item":"","impressions":N,"clicks":N},`).
const ENTRY_OVERHEAD: usize = 64;
/// Forget interned ids past this many, so catalog rotation cannot grow the map forever.
const MAX_INTERNED: usize = 100_000;

/// A topic-partition known to the aggregator.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopicPartition {
    topic: String,
    partition: i32,
}

/// How much the aggregate holds since the last drain: what a flush policy decides on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// Messages accounted (new to at least one slot).
    pub events: u64,
    /// Estimated JSON bytes of the largest slot batch.
    pub bytes: usize,
    /// Distinct items of the largest slot batch.
    pub items: usize,
    /// Topic-partitions known, each of which a batch may carry a range of.
    pub partitions: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    impressions: u64,
    clicks: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct SlotTp {
    /// Last offset the worker has applied for this slot (inclusive).
    applied: Option<i64>,
    /// Offsets covered by the pending batch.
    range: Option<(i64, i64)>,
}

#[derive(Debug, Default)]
struct SlotAgg {
    /// Interned item ids; zeroed rather than removed after a flush so hot items never
    /// allocate again.
    counts: HashMap<Box<str>, Counts>,
    /// Items with a non-zero count in the pending batch.
    live_items: usize,
    json_bytes: usize,
    tps: Vec<SlotTp>,
}

/// A batch ready to push for one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotBatch {
    /// Slot index.
    pub slot: usize,
    /// The batch.
    pub batch: EventBatch,
}

/// Aggregates events of all slots.
#[derive(Debug)]
pub struct Aggregator {
    slots: Vec<SlotAgg>,
    tps: Vec<TopicPartition>,
    /// Whether each partition currently belongs to this process.
    owned: Vec<bool>,
    pending_offsets: u64,
    /// Largest `live_items` and `json_bytes` over the slots since the last drain.
    max_items: usize,
    max_bytes: usize,
    last_tp: usize,
}

impl Aggregator {
    /// An aggregator for `slots` slots.
    pub fn new(slots: usize) -> Aggregator {
        Aggregator {
            slots: (0..slots).map(|_| SlotAgg::default()).collect(),
            tps: Vec::new(),
            owned: Vec::new(),
            pending_offsets: 0,
            max_items: 0,
            max_bytes: 0,
            last_tp: 0,
        }
    }

    /// Index of a topic-partition, registering it (as owned) when new.
    pub fn tp(&mut self, topic: &str, partition: i32) -> usize {
        if let Some(tp) = self.tps.get(self.last_tp) {
            if tp.partition == partition && tp.topic == topic {
                return self.last_tp;
            }
        }
        let idx = match self
            .tps
            .iter()
            .position(|t| t.partition == partition && t.topic == topic)
        {
            Some(i) => i,
            None => {
                self.tps.push(TopicPartition {
                    topic: topic.to_string(),
                    partition,
                });
                self.owned.push(true);
                for s in &mut self.slots {
                    s.tps.push(SlotTp::default());
                }
                self.tps.len() - 1
            }
        };
        self.last_tp = idx;
        idx
    }

    /// Marks which partitions this process owns; messages of others are ignored.
    pub fn set_owned(&mut self, tp: usize, owned: bool) {
        if let Some(a) = self.owned.get_mut(tp) {
            *a = owned;
        }
    }

    /// Whether a partition is owned.
    pub fn is_owned(&self, tp: usize) -> bool {
        self.owned.get(tp).copied().unwrap_or(false)
    }

    /// Sets what the worker has applied for a slot on a partition.
    #[cfg(test)]
    fn set_applied(&mut self, slot: usize, tp: usize, applied: Option<i64>) {
        if let Some(s) = self.slots.get_mut(slot).and_then(|s| s.tps.get_mut(tp)) {
            s.applied = applied;
        }
    }

    /// Sets a slot's watermark on every known partition from the worker's applied offsets; a
    /// partition the list does not name has nothing applied (`None`).
    pub fn set_watermarks(&mut self, slot: usize, applied: &[AppliedOffset]) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        for (st, tp) in s.tps.iter_mut().zip(&self.tps) {
            st.applied = applied
                .iter()
                .find(|o| o.partition == tp.partition && o.topic == tp.topic)
                .map(|o| o.offset);
        }
    }

    /// Where to resume a partition: the lowest next offset over all slots, `None` when some
    /// slot has applied nothing there (start from the earliest offset).
    pub fn resume_offset(&self, tp: usize) -> Option<i64> {
        let mut min: Option<i64> = None;
        for s in &self.slots {
            let next = s.tps.get(tp)?.applied? + 1;
            min = Some(min.map_or(next, |m: i64| m.min(next)));
        }
        min
    }

    /// Accounts one message at `offset`; `event` is what it counts for, if anything.
    #[inline]
    pub fn observe(&mut self, tp: usize, offset: i64, event: Option<&Event<'_>>) {
        if !self.is_owned(tp) {
            return;
        }
        let mut counted_any = false;
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(st) = s.tps.get_mut(tp) else {
                continue;
            };
            if st.applied.is_some_and(|a| offset <= a) {
                continue;
            }
            match &mut st.range {
                // A redelivered offset is already in the pending counts.
                Some((_, to)) if offset <= *to => continue,
                Some((_, to)) => *to = offset,
                None => st.range = Some((offset, offset)),
            }
            counted_any = true;
            if let Some(ev) = event.filter(|e| e.slot == i) {
                let c = match s.counts.get_mut(ev.item) {
                    Some(c) => c,
                    None => s.counts.entry(Box::from(ev.item)).or_default(),
                };
                if c.impressions == 0 && c.clicks == 0 {
                    s.live_items += 1;
                    s.json_bytes += ev.item.len() + ENTRY_OVERHEAD;
                    self.max_items = self.max_items.max(s.live_items);
                    self.max_bytes = self.max_bytes.max(s.json_bytes);
                }
                match ev.kind {
                    Kind::Impression => c.impressions += 1,
                    Kind::Click => c.clicks += 1,
                }
            }
        }
        if counted_any {
            self.pending_offsets += 1;
        }
    }

    /// What is pending since the last drain.
    pub fn pending(&self) -> Pending {
        Pending {
            events: self.pending_offsets,
            bytes: self.max_bytes,
            items: self.max_items,
            partitions: self.tps.len(),
        }
    }

    /// Takes the pending batches (one per slot with any range); watermarks move only on
    /// [`Aggregator::ack`].
    pub fn drain(&mut self, source: &str) -> Vec<SlotBatch> {
        let mut out = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            let mut offsets = Vec::new();
            for (t, st) in s.tps.iter_mut().enumerate() {
                if let Some((from, to)) = st.range.take() {
                    offsets.push(OffsetRange {
                        topic: self.tps[t].topic.clone(),
                        partition: self.tps[t].partition,
                        from,
                        to,
                    });
                }
            }
            let mut counts = Vec::with_capacity(s.live_items);
            for (item, c) in s.counts.iter_mut() {
                if c.impressions > 0 || c.clicks > 0 {
                    counts.push(ItemCount {
                        item: item.to_string(),
                        impressions: c.impressions,
                        clicks: c.clicks,
                    });
                    *c = Counts::default();
                }
            }
            if s.counts.len() > MAX_INTERNED {
                s.counts.clear();
            }
            s.live_items = 0;
            s.json_bytes = 0;
            if !offsets.is_empty() {
                counts.sort_by(|a, b| a.item.cmp(&b.item));
                out.push(SlotBatch {
                    slot: i,
                    batch: EventBatch {
                        source: source.to_string(),
                        offsets,
                        counts,
                    },
                });
            }
        }
        self.pending_offsets = 0;
        self.max_items = 0;
        self.max_bytes = 0;
        out
    }

    /// Records that the worker holds a batch (applied now or before).
    pub fn ack(&mut self, slot: usize, batch: &EventBatch) {
        for r in &batch.offsets {
            if let Some(tp) = self
                .tps
                .iter()
                .position(|t| t.partition == r.partition && t.topic == r.topic)
            {
                if let Some(st) = self.slots.get_mut(slot).and_then(|s| s.tps.get_mut(tp)) {
                    st.applied = Some(st.applied.map_or(r.to, |a| a.max(r.to)));
                }
            }
        }
    }

    /// Discards everything pending (the stream will be re-read from the watermarks).
    pub fn discard(&mut self) {
        let _ = self.drain("");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ev(slot: usize, item: &str, kind: Kind) -> Event<'_> {
        Event { slot, item, kind }
    }

    #[test]
    fn counts_and_ranges_per_slot() {
        let mut a = Aggregator::new(1);
        let p0 = a.tp("t", 0);
        let p1 = a.tp("t", 1);
        a.observe(p0, 10, Some(&ev(0, "x", Kind::Impression)));
        a.observe(p0, 11, Some(&ev(0, "x", Kind::Click)));
        a.observe(p1, 5, None);
        a.observe(p0, 12, Some(&ev(0, "y", Kind::Impression)));
        assert_eq!(a.pending().events, 4);
        assert_eq!(a.pending().items, 2);
        let b = a.drain("divolte");
        assert_eq!(b.len(), 1);
        let batch = &b[0].batch;
        batch.validate().unwrap();
        assert_eq!(batch.offsets.len(), 2);
        assert_eq!((batch.offsets[0].from, batch.offsets[0].to), (10, 12));
        assert_eq!((batch.offsets[1].from, batch.offsets[1].to), (5, 5));
        assert_eq!(
            batch.counts,
            vec![
                ItemCount {
                    item: "x".into(),
                    impressions: 1,
                    clicks: 1
                },
                ItemCount {
                    item: "y".into(),
                    impressions: 1,
                    clicks: 0
                },
            ]
        );
        assert!(a.drain("divolte").is_empty());
        // Interned keys survive with zero counts and do not reappear in later batches.
        a.observe(p1, 6, Some(&ev(0, "y", Kind::Click)));
        let b = a.drain("divolte");
        assert_eq!(b[0].batch.counts.len(), 1);
        assert_eq!(b[0].batch.counts[0].clicks, 1);
    }

    #[test]
    fn offsets_only_batches_are_produced() {
        let mut a = Aggregator::new(1);
        let p = a.tp("t", 0);
        a.observe(p, 3, None);
        let b = a.drain("s");
        assert_eq!(b.len(), 1);
        assert!(b[0].batch.counts.is_empty());
        b[0].batch.validate().unwrap();
    }

    #[test]
    fn watermarks_skip_applied_offsets_per_slot() {
        let mut a = Aggregator::new(2);
        let p = a.tp("t", 0);
        a.set_applied(0, p, Some(100));
        a.set_applied(1, p, Some(50));
        assert_eq!(a.resume_offset(p), Some(51));
        for o in 51..=110 {
            a.observe(p, o, Some(&ev((o % 2) as usize, "i", Kind::Impression)));
        }
        let b = a.drain("s");
        let s0 = b.iter().find(|b| b.slot == 0).unwrap();
        let s1 = b.iter().find(|b| b.slot == 1).unwrap();
        assert_eq!(
            (s0.batch.offsets[0].from, s0.batch.offsets[0].to),
            (101, 110)
        );
        assert_eq!(
            (s1.batch.offsets[0].from, s1.batch.offsets[0].to),
            (51, 110)
        );
        // Slot 0 counts only even offsets above 100; slot 1 odd offsets above 50.
        assert_eq!(s0.batch.counts[0].impressions, 5);
        assert_eq!(s1.batch.counts[0].impressions, 30);
        a.ack(0, &s0.batch);
        a.ack(1, &s1.batch);
        assert_eq!(a.resume_offset(p), Some(111));
    }

    #[test]
    fn unknown_slot_watermark_resumes_from_earliest() {
        let mut a = Aggregator::new(2);
        let p = a.tp("t", 0);
        a.set_applied(0, p, Some(10));
        assert_eq!(a.resume_offset(p), None);
    }

    #[test]
    fn redelivered_and_inactive_offsets_are_not_counted_twice() {
        let mut a = Aggregator::new(1);
        let p = a.tp("t", 0);
        a.observe(p, 1, Some(&ev(0, "x", Kind::Impression)));
        a.observe(p, 1, Some(&ev(0, "x", Kind::Impression)));
        a.set_owned(p, false);
        a.observe(p, 2, Some(&ev(0, "x", Kind::Impression)));
        let b = a.drain("s");
        assert_eq!(b[0].batch.counts[0].impressions, 1);
        assert_eq!(b[0].batch.offsets[0].to, 1);
    }

    #[test]
    fn item_limit_asks_for_a_flush() {
        let policy = crate::delivery::FlushPolicy::default();
        let mut a = Aggregator::new(1);
        let p = a.tp("t", 0);
        let ids: Vec<String> = (0..bandit::batch::MAX_ITEMS_PER_BATCH)
            .map(|i| format!("item-{i}"))
            .collect();
        let mut full_at = None;
        for (o, id) in ids.iter().enumerate() {
            a.observe(p, o as i64, Some(&ev(0, id, Kind::Impression)));
            if policy.due(&a.pending(), Duration::ZERO).is_some() {
                full_at = Some(o);
                break;
            }
        }
        assert_eq!(full_at, Some(bandit::batch::MAX_ITEMS_PER_BATCH - 1));
        let b = a.drain("s");
        b[0].batch.validate().unwrap();
        assert!(serde_json::to_vec(&b[0].batch).unwrap().len() < 1024 * 1024);
        assert_eq!(
            a.pending(),
            Pending {
                partitions: 1,
                ..Pending::default()
            }
        );
    }

    #[test]
    fn watermarks_come_from_applied_offsets_and_absent_partitions_are_unapplied() {
        let mut a = Aggregator::new(2);
        let p0 = a.tp("t", 0);
        let p1 = a.tp("t", 1);
        a.set_applied(0, p1, Some(7));
        a.set_applied(1, p0, Some(3));
        a.set_applied(1, p1, Some(4));
        a.set_watermarks(
            0,
            &[AppliedOffset {
                topic: "t".into(),
                partition: 0,
                offset: 20,
            }],
        );
        // Slot 0: t/0 from the list, t/1 absent from it (nothing applied); slot 1 untouched.
        assert_eq!(a.resume_offset(p0), Some(4));
        assert_eq!(a.resume_offset(p1), None);
        a.set_applied(0, p1, Some(9));
        assert_eq!(a.resume_offset(p1), Some(5));
    }
}
