//! Decode -> classify -> aggregate for one message at a time, shared by `run`, `replay` and
//! `simulate`.

use apache_avro::Schema;

use crate::aggregate::Aggregator;
use crate::avro::{DecodeError, DecodePlan, Extracted, SchemaError, Wire};
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
    /// Dropped by reason (duplicate, corrupt, robot).
    pub dropped: [u64; 3],
    /// Undecodable messages.
    pub undecodable: u64,
    /// Decoded but unclassifiable (missing or oversized item id).
    pub unclassifiable: u64,
}

impl Stats {
    /// Adds `other` into `self`.
    pub fn add(&mut self, o: &Stats) {
        self.consumed += o.consumed;
        self.decoded += o.decoded;
        self.ignored += o.ignored;
        self.impressions += o.impressions;
        self.clicks += o.clicks;
        for i in 0..3 {
            self.dropped[i] += o.dropped[i];
        }
        self.undecodable += o.undecodable;
        self.unclassifiable += o.unclassifiable;
    }
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
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            BadMessage::Decode(_) => "undecodable",
            BadMessage::Classify(_) => "unclassifiable",
        }
    }
}

/// The per-message processing chain.
#[derive(Debug)]
pub struct Pipeline {
    wire: Wire,
    plan: DecodePlan,
    classifier: Classifier,
    /// The aggregate being built.
    pub agg: Aggregator,
    /// Counters since the last [`Pipeline::take_stats`].
    pub stats: Stats,
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
        })
    }

    /// Slot names by index.
    pub fn slots(&self) -> &[String] {
        self.classifier.slots()
    }

    /// Processes one message of partition `tp` at `offset`; the offset is accounted even when
    /// the message is bad. Returns whether a flush is due by size, or why the message is bad.
    #[inline]
    pub fn process(
        &mut self,
        tp: usize,
        offset: i64,
        payload: Option<&[u8]>,
    ) -> (bool, Option<BadMessage>) {
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
    ) -> (bool, Option<BadMessage>) {
        Self::account(
            &self.classifier,
            &mut self.agg,
            &mut self.stats,
            tp,
            offset,
            decoded,
        )
    }

    /// The field names the decode plan extracts, in order.
    pub fn field_names(&self) -> Vec<&str> {
        self.plan.field_names().iter().map(String::as_str).collect()
    }

    #[inline]
    fn account(
        classifier: &Classifier,
        agg: &mut Aggregator,
        stats: &mut Stats,
        tp: usize,
        offset: i64,
        decoded: Result<Extracted<'_>, DecodeError>,
    ) -> (bool, Option<BadMessage>) {
        stats.consumed += 1;
        let rec = match decoded {
            Ok(r) => r,
            Err(e) => {
                stats.undecodable += 1;
                return (agg.observe(tp, offset, None), Some(e.into()));
            }
        };
        stats.decoded += 1;
        match classifier.classify(&rec) {
            Outcome::Event(ev) => {
                match ev.kind {
                    Kind::Impression => stats.impressions += 1,
                    Kind::Click => stats.clicks += 1,
                }
                (agg.observe(tp, offset, Some(&ev)), None)
            }
            Outcome::Ignored => {
                stats.ignored += 1;
                (agg.observe(tp, offset, None), None)
            }
            Outcome::Dropped(r) => {
                let i = DropReason::ALL.iter().position(|x| *x == r).unwrap_or(0);
                stats.dropped[i] += 1;
                (agg.observe(tp, offset, None), None)
            }
            Outcome::Invalid(u) => {
                stats.unclassifiable += 1;
                (agg.observe(tp, offset, None), Some(u.into()))
            }
        }
    }

    /// Returns and resets the counters.
    pub fn take_stats(&mut self) -> Stats {
        std::mem::take(&mut self.stats)
    }
}
