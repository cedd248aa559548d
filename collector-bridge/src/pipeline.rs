//! Decode -> classify -> aggregate for one message at a time, shared by `run`, `replay` and
//! `simulate`. [`Pipeline`] owns the aggregate: callers register the partitions they own, ask
//! where to resume, and hand the pending batches to [`crate::delivery`].

use apache_avro::Schema;
use bandit::batch::MAX_OFFSET;
use bandit::protocol::{AppliedOffset, MAX_BODY_BYTES};
use bandit::EventBatch;

use crate::aggregate::Aggregator;
pub use crate::aggregate::{Pending, SlotBatch};
use crate::avro::{DecodeError, DecodePlan, Extracted, SchemaError, Wire};
use bandit::decision::ServedBy;

use crate::classify::{Classifier, DropReason, Kind, Outcome, Rules, Unclassifiable};

/// Counters kept locally on the hot path and published to metrics in bulk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages seen.
    pub consumed: u64,
    /// Records decoded.
    pub decoded: u64,
    /// Records that are neither impression nor click.
    pub ignored: u64,
    /// Impressions counted.
    pub impressions: u64,
    /// Clicks counted.
    pub clicks: u64,
    /// Dropped by reason, in [`DropReason::ALL`] order.
    pub dropped: [u64; DropReason::ALL.len()],
    /// Counted impressions and clicks by their decision: served by the bandit, by the
    /// holdout, or carrying no usable decision.
    pub decisions: [u64; 3],
    /// Undecodable messages.
    pub undecodable: u64,
    /// Decoded but without an item id (metric reason `unclassifiable`).
    pub unclassifiable: u64,
    /// Decoded with an item id no catalog item can have: too long, or characters outside
    /// `A-Z a-z 0-9 . _ ~ -` (metric reason `invalid_item`).
    pub invalid_items: u64,
}

/// Why one message was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadMessage {
    /// It could not be decoded.
    #[error("undecodable: {0}")]
    Decode(#[from] DecodeError),
    /// It decoded but could not be classified.
    #[error("unclassifiable: {0}")]
    Classify(#[from] Unclassifiable),
}

impl BadMessage {
    /// Metric label (the `reason` of `collector_bridge_dropped_total`).
    pub fn label(&self) -> &'static str {
        match self {
            BadMessage::Decode(_) => "undecodable",
            BadMessage::Classify(Unclassifiable::MissingItem) => "unclassifiable",
            BadMessage::Classify(Unclassifiable::ItemTooLong | Unclassifiable::BadItem) => {
                "invalid_item"
            }
        }
    }
}

/// An applied offset the worker reports that no batch can have produced; the bridge stops
/// rather than guess where to read from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "slot {slot}: the worker reports offset {offset} as applied for {topic}/{partition}, outside 0 to {MAX_OFFSET} (2^53 - 1); \
     correct the slot's ledger with POST /api/slots/{slot}/offsets (an operator request, see the README's offset corrections)"
)]
pub struct OffsetError {
    /// Slot name.
    pub slot: String,
    /// Topic (or stream).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The reported offset.
    pub offset: i64,
}

/// Smallest body limit a refusal as too large lowers the limit to. At this size a batch still
/// holds hundreds of items; a worker (or proxy) refusing it is misconfigured, and the bridge
/// keeps retrying (with backoff) rather than skip anything.
pub const MIN_BODY_LIMIT: usize = 16 * 1024;

/// The per-message processing chain and the aggregate it builds.
#[derive(Debug)]
pub struct Pipeline {
    wire: Wire,
    plan: DecodePlan,
    classifier: Classifier,
    agg: Aggregator,
    stats: Stats,
    /// Largest body the worker takes: [`MAX_BODY_BYTES`], lowered after refusals.
    body_limit: usize,
    /// Refusals as too large in a row at [`MIN_BODY_LIMIT`] (for the backoff).
    refusals_at_floor: u32,
}

impl Pipeline {
    /// Compiles a pipeline for a schema and rules.
    pub fn new(schema: &Schema, wire: Wire, rules: Rules) -> Result<Pipeline, SchemaError> {
        let plan = Classifier::plan(&rules, schema)?;
        let classifier = Classifier::new(rules, &plan)?;
        let agg = Aggregator::new(classifier.slots().len());
        Ok(Pipeline {
            wire,
            plan,
            classifier,
            agg,
            stats: Stats::default(),
            body_limit: MAX_BODY_BYTES,
            refusals_at_floor: 0,
        })
    }

    /// Slot names by index.
    pub fn slots(&self) -> &[String] {
        self.classifier.slots()
    }

    /// The field names the decode plan extracts, in order.
    pub fn field_names(&self) -> Vec<&str> {
        self.plan.field_names().iter().map(String::as_str).collect()
    }

    /// Index of a topic-partition, registering it (as owned) when first seen.
    pub fn partition(&mut self, topic: &str, partition: i32) -> usize {
        self.agg.tp(topic, partition)
    }

    /// Takes ownership of a topic-partition (registering it when new); returns its index.
    pub fn own(&mut self, topic: &str, partition: i32) -> usize {
        let tp = self.agg.tp(topic, partition);
        self.agg.set_owned(tp, true);
        tp
    }

    /// Gives a partition up: its messages are ignored until it is owned again.
    pub fn release(&mut self, tp: usize) {
        self.agg.set_owned(tp, false);
    }

    /// Whether a partition is owned.
    pub fn owns(&self, tp: usize) -> bool {
        self.agg.is_owned(tp)
    }

    /// Where to re-read a partition from: the lowest next offset over the slots' watermarks,
    /// `None` when some slot has applied nothing there (start from the earliest offset).
    pub fn resume_offset(&self, tp: usize) -> Result<Option<i64>, OffsetError> {
        self.agg.resume_offset(tp).map_err(|(slot, offset)| {
            let (topic, partition) = self.agg.partition_name(tp).unwrap_or(("", 0));
            OffsetError {
                slot: self.slots().get(slot).cloned().unwrap_or_default(),
                topic: topic.to_string(),
                partition,
                offset,
            }
        })
    }

    /// Processes one message of partition `tp` at `offset`; the offset is accounted even when
    /// the message is bad, which is then returned.
    #[inline]
    pub fn process(
        &mut self,
        tp: usize,
        offset: i64,
        payload: Option<&[u8]>,
    ) -> Result<(), BadMessage> {
        let decoded = payload
            .ok_or(DecodeError::Empty)
            .and_then(|p| self.wire.strip(p))
            .and_then(|body| self.plan.decode(body));
        Self::account(
            &self.classifier,
            &mut self.agg,
            &mut self.stats,
            tp,
            offset,
            decoded,
        )
    }

    /// Like [`Pipeline::process`] for a record decoded elsewhere (e.g. by apache-avro).
    pub fn process_extracted(
        &mut self,
        tp: usize,
        offset: i64,
        decoded: Result<Extracted<'_>, DecodeError>,
    ) -> Result<(), BadMessage> {
        Self::account(
            &self.classifier,
            &mut self.agg,
            &mut self.stats,
            tp,
            offset,
            decoded,
        )
    }

    #[inline]
    fn account(
        classifier: &Classifier,
        agg: &mut Aggregator,
        stats: &mut Stats,
        tp: usize,
        offset: i64,
        decoded: Result<Extracted<'_>, DecodeError>,
    ) -> Result<(), BadMessage> {
        stats.consumed += 1;
        let rec = match decoded {
            Ok(r) => r,
            Err(e) => {
                stats.undecodable += 1;
                agg.observe(tp, offset, None);
                return Err(e.into());
            }
        };
        stats.decoded += 1;
        match classifier.classify(&rec) {
            Outcome::Event(ev) => {
                match ev.kind {
                    Kind::Impression => stats.impressions += 1,
                    Kind::Click => stats.clicks += 1,
                }
                stats.decisions[match ev.served_by {
                    Some(ServedBy::Bandit) => 0,
                    Some(ServedBy::Holdout) => 1,
                    None => 2,
                }] += 1;
                agg.observe(tp, offset, Some(&ev));
            }
            Outcome::Ignored => {
                stats.ignored += 1;
                agg.observe(tp, offset, None);
            }
            Outcome::Dropped(r) => {
                let i = DropReason::ALL.iter().position(|x| *x == r).unwrap_or(0);
                stats.dropped[i] += 1;
                agg.observe(tp, offset, None);
            }
            Outcome::Invalid(u) => {
                match u {
                    Unclassifiable::MissingItem => stats.unclassifiable += 1,
                    Unclassifiable::ItemTooLong | Unclassifiable::BadItem => {
                        stats.invalid_items += 1
                    }
                }
                agg.observe(tp, offset, None);
                return Err(u.into());
            }
        }
        Ok(())
    }

    /// What the aggregate holds since the last drain, and the body limit it must fit.
    pub fn pending(&self) -> Pending {
        Pending {
            limit: self.body_limit,
            ..self.agg.pending()
        }
    }

    /// The largest body the worker takes, as far as the bridge knows.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// Records that a body of `refused` bytes was refused as too large: the limit becomes half
    /// of the smaller of the two, but not below [`MIN_BODY_LIMIT`]. Returns how many refusals
    /// in a row there have been at that floor (0 while the limit still shrinks): the caller
    /// waits longer each time before it tries again.
    pub fn refused_as_too_large(&mut self, refused: usize) -> u32 {
        if self.body_limit > MIN_BODY_LIMIT {
            self.body_limit = (self.body_limit.min(refused) / 2).max(MIN_BODY_LIMIT);
            self.refusals_at_floor = 0;
        } else {
            self.refusals_at_floor = self.refusals_at_floor.saturating_add(1);
        }
        self.refusals_at_floor
    }

    /// Records that the worker took a body: refusals at the floor start over.
    pub fn accepted(&mut self) {
        self.refusals_at_floor = 0;
    }

    /// Takes the pending batches, one per slot with any range; watermarks move only on
    /// [`Pipeline::ack`].
    pub fn drain(&mut self, source: &str) -> Vec<SlotBatch> {
        self.agg.drain(source)
    }

    /// Records that the worker holds a slot's batch (applied now or before).
    pub fn ack(&mut self, slot: usize, batch: &EventBatch) {
        self.agg.ack(slot, batch);
    }

    /// Discards everything pending (the input will be re-read from the resume offsets).
    pub fn discard(&mut self) {
        self.agg.discard();
    }

    /// Sets a slot's watermarks from the worker's applied offsets; a partition the list does
    /// not name has nothing applied. An offset outside 0 to [`MAX_OFFSET`] cannot come from a
    /// batch: it is refused, and nothing changes.
    pub fn set_watermarks(
        &mut self,
        slot: usize,
        applied: &[AppliedOffset],
    ) -> Result<(), OffsetError> {
        if let Some(bad) = applied
            .iter()
            .find(|o| !(0..=MAX_OFFSET).contains(&o.offset))
        {
            return Err(OffsetError {
                slot: self.slots().get(slot).cloned().unwrap_or_default(),
                topic: bad.topic.clone(),
                partition: bad.partition,
                offset: bad.offset,
            });
        }
        self.agg.set_watermarks(slot, applied);
        Ok(())
    }

    /// Returns and resets the counters.
    pub fn take_stats(&mut self) -> Stats {
        std::mem::take(&mut self.stats)
    }
}
