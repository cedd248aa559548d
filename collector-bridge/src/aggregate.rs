//! Per-slot aggregation of counts into event batches, with the offset ranges each batch covers
//! and a watermark per slot and partition so that no slot counts an offset it already applied.
//! Owned by [`crate::pipeline::Pipeline`]; it measures what is pending (the exact JSON size of
//! each slot's body included), and [`crate::delivery::FlushPolicy`] decides when that is
//! enough to deliver.

use std::collections::HashMap;

use bandit::decision::ServedBy;
use bandit::protocol::{AppliedOffset, MAX_BODY_BYTES};
use bandit::{EventBatch, EventTime, Exposure, ItemCount, OffsetRange};

use crate::classify::{Event, Kind};

/// Forget interned ids past this many, so catalog rotation cannot grow the map forever.
const MAX_INTERNED: usize = 100_000;

/// JSON bytes of a batch with an empty source and no ranges or counts:
/// `{"source":"","offsets":[],"counts":[]}`.
pub(crate) const ENVELOPE_BYTES: usize = 38;
/// JSON bytes of one range besides its topic and numbers:
/// `{"topic":,"partition":,"from":,"to":}`.
const RANGE_FIXED_BYTES: usize = 37;
/// JSON bytes of one count entry besides its item and numbers: `{"item":,"impressions":,"clicks":}`.
const ENTRY_FIXED_BYTES: usize = 34;
/// JSON bytes of the exposures list besides its entries and their commas: `,"exposures":[]`.
const EXPOSURES_WRAPPER_BYTES: usize = 15;
/// JSON bytes of one exposure besides its numbers and item:
/// `{"version":,"item":,"impressions":}`.
const EXPOSURE_FIXED_BYTES: usize = 35;
/// JSON bytes of the event times besides their numbers:
/// `,"event_time":{"oldest_ms":,"newest_ms":}`.
const EVENT_TIME_FIXED_BYTES: usize = 41;
/// Most characters of a JSON integer (`-9223372036854775808`, `18446744073709551615`).
const MAX_NUMBER_BYTES: usize = 20;

/// Bytes serde_json writes for `s` as a JSON string, quotes included: `"` and `\` and the
/// controls `\b \f \n \r \t` take two bytes, other controls six (`\u001f`), the rest
/// (UTF-8 included) one byte per byte.
pub(crate) fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Digits of an unsigned JSON integer.
fn u64_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Characters of a signed JSON integer.
fn i64_len(n: i64) -> usize {
    usize::from(n < 0) + u64_len(n.unsigned_abs())
}

/// Who served an entry's decisions, by group index: none, the bandit, the holdout.
const GROUPS: [Option<ServedBy>; 3] = [None, Some(ServedBy::Bandit), Some(ServedBy::Holdout)];

/// The group index of an event's decision.
fn group(served_by: Option<ServedBy>) -> usize {
    match served_by {
        None => 0,
        Some(ServedBy::Bandit) => 1,
        Some(ServedBy::Holdout) => 2,
    }
}

/// JSON bytes `,"served_by":"..."` adds to an entry of group `g` (none for group 0).
fn served_by_len(g: usize) -> usize {
    match GROUPS[g] {
        None => 0,
        Some(ServedBy::Bandit) => 21,
        Some(ServedBy::Holdout) => 22,
    }
}

/// Most bytes `served_by` adds to an entry.
const MAX_SERVED_BY_BYTES: usize = 22;

/// JSON bytes `,"segment":` adds to an entry besides the segment's string.
const SEGMENT_FIXED_BYTES: usize = 11;

/// JSON bytes of one count entry.
fn entry_len(item: &str, c: Counts, g: usize, segment: Option<&str>) -> usize {
    ENTRY_FIXED_BYTES
        + json_str_len(item)
        + u64_len(c.impressions)
        + u64_len(c.clicks)
        + served_by_len(g)
        + segment.map_or(0, |s| SEGMENT_FIXED_BYTES + json_str_len(s))
}

/// An item's pending counts: per group ([`GROUPS`]) without a segment, and per group and
/// segment.
#[derive(Debug, Clone, Default)]
struct ItemCounts {
    groups: [Counts; 3],
    segmented: Vec<(usize, Box<str>, Counts)>,
}

/// A topic-partition known to the aggregator.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopicPartition {
    topic: String,
    partition: i32,
    /// JSON bytes of a range of this partition besides `from` and `to`.
    range_fixed: usize,
}

/// How much the aggregate holds since the last drain: what a flush policy decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Messages accounted (new to at least one slot).
    pub events: u64,
    /// Exact JSON bytes of the largest slot batch as serde_json writes it, with an empty
    /// `source` (the delivery adds the source's few bytes and checks the exact size again).
    pub bytes: usize,
    /// Most bytes one more message can add to a slot's batch: a new range of the longest
    /// partition name plus a new count entry, with numbers of the largest width.
    pub growth: usize,
    /// The largest body the worker takes now: the protocol's limit, lowered after a body was
    /// refused as too large.
    pub limit: usize,
    /// Distinct items of the largest slot batch.
    pub items: usize,
    /// Topic-partitions known, each of which a batch may carry a range of.
    pub partitions: usize,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            events: 0,
            bytes: 0,
            growth: 0,
            limit: MAX_BODY_BYTES,
            items: 0,
            partitions: 0,
        }
    }
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

/// One version's logged impressions in one segment (none without segments), by item.
type SegmentExposures = (Option<Box<str>>, HashMap<Box<str>, u64>);

#[derive(Debug, Clone, Default)]
struct SlotAgg {
    /// Interned item ids with their counts per group ([`GROUPS`]); zeroed rather than
    /// removed after a flush so hot items never allocate again.
    counts: HashMap<Box<str>, ItemCounts>,
    /// Entries (item and group) with a non-zero count in the pending batch.
    live_items: usize,
    /// Logged impressions by version, segment (a handful per version) and item in the
    /// pending batch.
    exposures: HashMap<u64, Vec<SegmentExposures>>,
    /// Entries (version, segment and item) in `exposures`.
    exposure_entries: usize,
    /// JSON bytes of the pending exposures, separators excluded.
    exposure_bytes: usize,
    /// Oldest and newest event time of the pending batch's events.
    event_time: Option<(i64, i64)>,
    /// JSON bytes of the pending count entries, separators excluded.
    entry_bytes: usize,
    /// Ranges of the pending batch.
    ranges: usize,
    /// JSON bytes of the pending ranges, separators excluded.
    range_bytes: usize,
    tps: Vec<SlotTp>,
}

impl SlotAgg {
    /// Exact JSON bytes of this slot's pending batch with an empty source.
    fn body_bytes(&self) -> usize {
        let exposures = match self.exposure_entries {
            0 => 0,
            n => EXPOSURES_WRAPPER_BYTES + self.exposure_bytes + n - 1,
        };
        let event_time = self
            .event_time
            .map_or(0, |(a, b)| EVENT_TIME_FIXED_BYTES + i64_len(a) + i64_len(b));
        ENVELOPE_BYTES
            + self.range_bytes
            + self.ranges.saturating_sub(1)
            + self.entry_bytes
            + self.live_items.saturating_sub(1)
            + exposures
            + event_time
    }

    /// Accounts an event's logged version and time.
    fn note(&mut self, ev: &Event<'_>) {
        if let (Kind::Impression, Some(version)) = (ev.kind, ev.version) {
            let len_of = |n: u64| {
                EXPOSURE_FIXED_BYTES
                    + u64_len(version)
                    + json_str_len(ev.item)
                    + u64_len(n)
                    + ev.segment
                        .map_or(0, |s| SEGMENT_FIXED_BYTES + json_str_len(s))
            };
            // Looked up by the borrowed ids: an impression allocates only for a new entry.
            let segments = self.exposures.entry(version).or_default();
            let at = segments
                .iter()
                .position(|(s, _)| s.as_deref() == ev.segment)
                .unwrap_or_else(|| {
                    segments.push((ev.segment.map(Box::from), HashMap::new()));
                    segments.len() - 1
                });
            let items = &mut segments[at].1;
            match items.get_mut(ev.item) {
                Some(n) => {
                    self.exposure_bytes = self.exposure_bytes - len_of(*n) + len_of(*n + 1);
                    *n += 1;
                }
                None => {
                    items.insert(Box::from(ev.item), 1);
                    self.exposure_bytes += len_of(1);
                    self.exposure_entries += 1;
                }
            }
        }
        if let Some(t) = ev.at_ms {
            self.event_time = Some(match self.event_time {
                Some((a, b)) => (a.min(t), b.max(t)),
                None => (t, t),
            });
        }
    }
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
#[derive(Debug, Clone)]
pub struct Aggregator {
    slots: Vec<SlotAgg>,
    tps: Vec<TopicPartition>,
    /// Whether each partition currently belongs to this process.
    owned: Vec<bool>,
    pending_offsets: u64,
    /// Largest `live_items` over the slots since the last drain.
    max_items: usize,
    /// Largest `range_fixed` over the known partitions.
    max_range_fixed: usize,
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
            max_range_fixed: 0,
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
                let range_fixed =
                    RANGE_FIXED_BYTES + json_str_len(topic) + i64_len(partition.into());
                self.max_range_fixed = self.max_range_fixed.max(range_fixed);
                self.tps.push(TopicPartition {
                    topic: topic.to_string(),
                    partition,
                    range_fixed,
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

    /// Topic and partition of a partition index.
    pub fn partition_name(&self, tp: usize) -> Option<(&str, i32)> {
        self.tps.get(tp).map(|t| (t.topic.as_str(), t.partition))
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
    /// partition the list does not name has nothing applied (`None`). The caller checks the
    /// offsets' bounds first.
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
    /// slot has applied nothing there (start from the earliest offset). A watermark with no
    /// next offset (`i64::MAX`) is returned as the error `(slot, watermark)`.
    pub fn resume_offset(&self, tp: usize) -> Result<Option<i64>, (usize, i64)> {
        let mut min: Option<i64> = None;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(applied) = s.tps.get(tp).and_then(|st| st.applied) else {
                return Ok(None);
            };
            let next = applied.checked_add(1).ok_or((i, applied))?;
            min = Some(min.map_or(next, |m: i64| m.min(next)));
        }
        Ok(min)
    }

    /// Accounts one message at `offset`; `event` is what it counts for, if anything.
    #[inline]
    pub fn observe(&mut self, tp: usize, offset: i64, event: Option<&Event<'_>>) {
        if !self.is_owned(tp) {
            return;
        }
        let Some(range_fixed) = self.tps.get(tp).map(|t| t.range_fixed) else {
            return;
        };
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
                Some((_, to)) => {
                    s.range_bytes = s.range_bytes - i64_len(*to) + i64_len(offset);
                    *to = offset;
                }
                None => {
                    st.range = Some((offset, offset));
                    s.ranges += 1;
                    s.range_bytes += range_fixed + 2 * i64_len(offset);
                }
            }
            counted_any = true;
            if let Some(ev) = event.filter(|e| e.slot == i) {
                s.note(ev);
                let g = group(ev.served_by);
                let entries = match s.counts.get_mut(ev.item) {
                    Some(c) => c,
                    None => s.counts.entry(Box::from(ev.item)).or_default(),
                };
                let c = match ev.segment {
                    None => &mut entries.groups[g],
                    Some(seg) => {
                        let at = entries
                            .segmented
                            .iter()
                            .position(|(eg, es, _)| *eg == g && &**es == seg);
                        let at = at.unwrap_or_else(|| {
                            entries
                                .segmented
                                .push((g, Box::from(seg), Counts::default()));
                            entries.segmented.len() - 1
                        });
                        &mut entries.segmented[at].2
                    }
                };
                let before = *c;
                match ev.kind {
                    Kind::Impression => c.impressions = c.impressions.saturating_add(1),
                    Kind::Click => c.clicks = c.clicks.saturating_add(1),
                }
                if before.impressions == 0 && before.clicks == 0 {
                    s.live_items += 1;
                    s.entry_bytes += entry_len(ev.item, *c, g, ev.segment);
                    self.max_items = self.max_items.max(s.live_items);
                } else {
                    // A count gains a digit at each power of ten.
                    s.entry_bytes = s.entry_bytes + (u64_len(c.impressions) + u64_len(c.clicks))
                        - (u64_len(before.impressions) + u64_len(before.clicks));
                }
            }
        }
        if counted_any {
            self.pending_offsets += 1;
        }
    }

    /// What is pending since the last drain.
    pub fn pending(&self) -> Pending {
        // One message adds at most one range (or widens one) to every slot and one entry (or
        // widens one) to one slot. Item ids are catalog ids (checked by the classifier), which
        // JSON writes as they are; the bound assumes the longest.
        let entry = ENTRY_FIXED_BYTES
            + bandit::batch::MAX_ITEM_ID_LEN
            + 2
            + 2 * MAX_NUMBER_BYTES
            + MAX_SERVED_BY_BYTES
            + SEGMENT_FIXED_BYTES
            + bandit::decision::MAX_SEGMENT_LEN
            + 2
            + 1;
        let range = self.max_range_fixed + 2 * MAX_NUMBER_BYTES + 1;
        // A new exposure (with the list's brackets) and the event times appearing or widening.
        let exposure = EXPOSURES_WRAPPER_BYTES
            + EXPOSURE_FIXED_BYTES
            + 2 * MAX_NUMBER_BYTES
            + bandit::batch::MAX_ITEM_ID_LEN
            + 2
            + SEGMENT_FIXED_BYTES
            + bandit::decision::MAX_SEGMENT_LEN
            + 2
            + 1;
        let event_time = EVENT_TIME_FIXED_BYTES + 2 * MAX_NUMBER_BYTES;
        Pending {
            events: self.pending_offsets,
            // Not a running maximum: an older event moves the oldest time to fewer digits.
            bytes: self
                .slots
                .iter()
                .filter(|s| s.ranges > 0)
                .map(SlotAgg::body_bytes)
                .max()
                .unwrap_or(0),
            growth: range + entry + exposure + event_time,
            limit: MAX_BODY_BYTES,
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
            for (item, entries) in s.counts.iter_mut() {
                for (c, served_by) in entries.groups.iter_mut().zip(GROUPS) {
                    if c.impressions > 0 || c.clicks > 0 {
                        counts.push(ItemCount {
                            item: item.to_string(),
                            impressions: c.impressions,
                            clicks: c.clicks,
                            served_by,
                            segment: None,
                        });
                        *c = Counts::default();
                    }
                }
                // Segments are not interned: any name a record carries would stay forever.
                for (g, segment, c) in entries.segmented.drain(..) {
                    counts.push(ItemCount {
                        item: item.to_string(),
                        impressions: c.impressions,
                        clicks: c.clicks,
                        served_by: GROUPS[g],
                        segment: Some(segment.into()),
                    });
                }
            }
            if s.counts.len() > MAX_INTERNED {
                s.counts.clear();
            }
            s.live_items = 0;
            s.entry_bytes = 0;
            s.ranges = 0;
            s.range_bytes = 0;
            let mut exposures: Vec<Exposure> = s
                .exposures
                .drain()
                .flat_map(|(version, segments)| {
                    segments.into_iter().flat_map(move |(segment, items)| {
                        items.into_iter().map(move |(item, impressions)| Exposure {
                            version,
                            item: item.into(),
                            impressions,
                            segment: segment.as_deref().map(String::from),
                        })
                    })
                })
                .collect();
            s.exposure_bytes = 0;
            s.exposure_entries = 0;
            let event_time = s.event_time.take().map(|(oldest_ms, newest_ms)| EventTime {
                oldest_ms,
                newest_ms,
            });
            if !offsets.is_empty() {
                counts.sort_by(|a, b| {
                    (&a.item, a.served_by, &a.segment).cmp(&(&b.item, b.served_by, &b.segment))
                });
                exposures.sort_by(|a, b| {
                    (a.version, &a.item, &a.segment).cmp(&(b.version, &b.item, &b.segment))
                });
                out.push(SlotBatch {
                    slot: i,
                    batch: EventBatch {
                        source: source.to_string(),
                        offsets,
                        counts,
                        exposures,
                        event_time,
                    },
                });
            }
        }
        self.pending_offsets = 0;
        self.max_items = 0;
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
        Event {
            slot,
            item,
            kind,
            served_by: None,
            segment: None,
            version: None,
            at_ms: None,
        }
    }

    #[test]
    fn each_server_of_an_items_decisions_gets_its_own_entry() {
        let mut a = Aggregator::new(1);
        let p = a.tp("t", 0);
        for (offset, served_by) in [
            None,
            Some(ServedBy::Holdout),
            Some(ServedBy::Bandit),
            Some(ServedBy::Holdout),
        ]
        .into_iter()
        .enumerate()
        {
            let e = Event {
                served_by,
                ..ev(0, "x", Kind::Impression)
            };
            a.observe(p, offset as i64, Some(&e));
        }
        let b = a.drain("s");
        let got: Vec<(Option<ServedBy>, u64)> = b[0]
            .batch
            .counts
            .iter()
            .map(|c| (c.served_by, c.impressions))
            .collect();
        assert_eq!(
            got,
            [
                (None, 1),
                (Some(ServedBy::Bandit), 1),
                (Some(ServedBy::Holdout), 2)
            ]
        );
        assert_eq!(b[0].batch.validate(), Ok(()));
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
                    clicks: 1,
                    served_by: None,
                    segment: None,
                },
                ItemCount {
                    item: "y".into(),
                    impressions: 1,
                    clicks: 0,
                    served_by: None,
                    segment: None,
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
        assert_eq!(a.resume_offset(p), Ok(Some(51)));
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
        assert_eq!(a.resume_offset(p), Ok(Some(111)));
    }

    #[test]
    fn unknown_slot_watermark_resumes_from_earliest() {
        let mut a = Aggregator::new(2);
        let p = a.tp("t", 0);
        a.set_applied(0, p, Some(10));
        assert_eq!(a.resume_offset(p), Ok(None));
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
                growth: a.pending().growth,
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
        assert_eq!(a.resume_offset(p0), Ok(Some(4)));
        assert_eq!(a.resume_offset(p1), Ok(None));
        a.set_applied(0, p1, Some(9));
        assert_eq!(a.resume_offset(p1), Ok(Some(5)));
    }

    #[test]
    fn json_lengths_match_serde() {
        for s in [
            "",
            "a",
            "\"",
            "\\",
            "\n\r\t\u{8}\u{c}",
            "\u{1}\u{1f}\u{7f}",
            "é€😀",
            "a\"b\\c",
        ] {
            assert_eq!(
                json_str_len(s),
                serde_json::to_string(s).unwrap().len(),
                "{s:?}"
            );
        }
        for n in [0u64, 9, 10, 99, 100, 1_000_000_000, u64::MAX] {
            assert_eq!(u64_len(n), n.to_string().len());
        }
        for n in [0i64, -1, 9, -10, i64::MAX, i64::MIN] {
            assert_eq!(i64_len(n), n.to_string().len());
        }
        assert_eq!(
            ENVELOPE_BYTES,
            serde_json::to_vec(&EventBatch::default()).unwrap().len()
        );
    }

    #[test]
    fn an_applied_offset_without_a_next_one_is_an_error_not_a_panic() {
        let mut a = Aggregator::new(2);
        let p = a.tp("t", 0);
        a.set_applied(0, p, Some(5));
        a.set_applied(1, p, Some(i64::MAX));
        assert_eq!(a.resume_offset(p), Err((1, i64::MAX)));
    }

    proptest::proptest! {
        /// What the aggregate measures is exactly what serde_json writes, at every step, and
        /// one message never adds more than the announced growth.
        #[test]
        fn pending_bytes_are_the_exact_json_size(
            ops in proptest::collection::vec(
                (0usize..4, 0i64..3, 0usize..3, 0usize..6, proptest::bool::ANY, 0u8..20),
                1..300,
            )
        ) {
            let topics = [
                "divolte".to_string(),
                "replay-\"quoted\"\\".to_string(),
                "s\u{1}\n\té".to_string(),
                "x".repeat(255),
            ];
            let items = [
                "a".to_string(),
                "15045568809".to_string(),
                "A-z_0.9~".to_string(),
                "i".repeat(128),
                "b".to_string(),
                "c".to_string(),
            ];
            // Offsets just below digit boundaries, so ranges widen as they grow.
            let starts = [0i64, 7, 99_998, bandit::batch::MAX_OFFSET - 1_000];
            let mut next = starts;
            let mut a = Aggregator::new(3);
            for (t, topic) in topics.iter().enumerate() {
                a.tp(topic, t as i32 * 1000);
            }
            for (t, step, slot, item, click, what) in ops {
                if what == 0 {
                    let _ = a.drain("");
                    continue;
                }
                let before = a.pending();
                next[t] += step;
                let ev = Event {
                    slot,
                    item: &items[item],
                    kind: if click { Kind::Click } else { Kind::Impression },
                    served_by: GROUPS[usize::from(what) % 3],
                    segment: [None, Some("mobile_eu"), Some("a")][usize::from(what) % 3],
                    // Logged versions and event times whose digits grow and shrink.
                    version: (what % 4 != 0).then_some([0u64, 9, 10, 123_456][usize::from(what) % 4]),
                    at_ms: (what % 5 != 0).then_some([0i64, 9, 1_700_000_000_000, 99][usize::from(what) % 4]),
                };
                // Mostly events, some messages that count for nothing.
                a.observe(t, next[t], (what > 3).then_some(&ev));
                let after = a.pending();
                let exact = a
                    .clone()
                    .drain("")
                    .iter()
                    .map(|b| serde_json::to_vec(&b.batch).unwrap().len())
                    .max()
                    .unwrap_or(0);
                proptest::prop_assert_eq!(after.bytes, exact);
                proptest::prop_assert!(after.bytes <= before.bytes.max(ENVELOPE_BYTES) + before.growth);
            }
        }
    }
}
