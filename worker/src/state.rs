//! A slot's persisted state, the pure steps that change it (count a batch, add fresh items,
//! finish a rotation) and its read models (edge snapshot, operator JSON). The Durable Object
//! in `slot_do.rs` only loads, calls these, and saves.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bandit::armset::{RetiredArm, MAX_LISTED_MID_ROUND};
use bandit::batch::{MAX_LEDGER_ENTRIES, MAX_OFFSET, MAX_TOPIC_LEN};
use bandit::decision::ServedBy;
use bandit::features::Features;
use bandit::holdout::Comparison;
use bandit::operator::{AuditLog, PinLearning};
use bandit::protocol::{Applied, Counted, OffsetsResponse};
use bandit::{
    ArmSet, EventBatch, OffsetLedger, Posterior, Recorded, RotationConfig, RotationPlan,
    RoundSummary,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::catalog::CatalogItem;
use crate::contextual::SegmentCounts;
use crate::health::Health;
use crate::segment::Dimension;
use crate::snapshot::{Pinned, SegmentView, Snapshot, SnapshotArm};

/// Rounds kept in the operator history.
const ROUND_HISTORY: usize = 20;
/// Storage key of the one value that holds a slot's whole state.
pub const STATE_KEY: &str = "state";
/// Storage key of the slot's audit log (written with the state, in the same transaction, only
/// when an operator write changed it).
pub const AUDIT_KEY: &str = "audit";
/// Storage key of the slot's memory of retired items ([`bandit::memory`]), stored apart from
/// the state and written with it, in the same transaction, only when it changed: most
/// batches retire nothing, and the memory is the state's largest part.
pub const MEMORY_KEY: &str = "memory";
/// Remembered items the operators' state lists, newest first.
const MEMORY_LISTED: usize = 10;
/// Items reported by name when a batch counts items outside the set.
const REPORTED_OUTSIDERS: usize = 20;
/// How often an under-filled set asks the catalog again (ms), unless forced.
const REFILL_INTERVAL_MS: f64 = 10_000.0;

/// A stored time that may be null (a non-finite value, written by serde_json as null): minus
/// infinity, "never".
fn never_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}

/// A slot's state as written: the state without the memory, and the audit log and the memory
/// when they changed since the last write.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredParts {
    /// The state ([`STATE_KEY`]).
    pub state: String,
    /// The audit log ([`AUDIT_KEY`]), if it changed.
    pub audit: Option<String>,
    /// The memory ([`MEMORY_KEY`]), if it changed.
    pub memory: Option<String>,
}

/// What a fill asks the catalog for: `count` items, none of `exclude`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillWanted {
    /// Items missing from the set.
    pub count: usize,
    /// Items that must not be drawn (sorted).
    pub exclude: Vec<String>,
}

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
    /// Impressions set aside while a pin paused learning.
    #[serde(default)]
    pub paused_impressions: u64,
    /// Clicks set aside while a pin paused learning.
    #[serde(default)]
    pub paused_clicks: u64,
    /// Impressions and clicks of logged decisions the bandit served (any item, in the set
    /// or not, paused or not: the outcomes of its decisions).
    #[serde(default)]
    pub bandit: Counted,
    /// The same for the decisions the holdout served.
    #[serde(default)]
    pub holdout: Counted,
}

/// An operator's correction of the offset ledger (`POST /api/slots/{slot}/offsets`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetEdit {
    /// Topic (or replay / simulation stream name).
    pub topic: String,
    /// Partition; absent: every partition of the topic (only to forget them).
    #[serde(default)]
    pub partition: Option<i32>,
    /// The new last applied offset; absent or null: forget the entry, so the next batch
    /// there is applied whatever its offsets.
    #[serde(default)]
    pub offset: Option<i64>,
}

/// What an offset correction changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetEditResult {
    /// Entries removed or replaced.
    pub changed: usize,
    /// The previous offset of the one partition named, if it had one.
    pub previous: Option<i64>,
    /// The whole ledger afterwards.
    pub offsets: Vec<bandit::AppliedOffset>,
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
    /// When the set last asked the catalog for items (ms); minus infinity before it ever
    /// did, which JSON stores as null.
    #[serde(deserialize_with = "never_if_null")]
    pub last_refill_ms: f64,
    /// An operator's pin (kept after it ends until the next operator write replaces it).
    #[serde(default)]
    pub pinned: Option<Pinned>,
    /// Items an operator excluded from this slot.
    #[serde(default)]
    pub exclude: BTreeSet<String>,
    /// Operator writes to this slot: stored under [`AUDIT_KEY`], apart from the state, so a
    /// batch's write does not carry it.
    #[serde(skip)]
    pub audit: AuditLog,
    /// Whether `audit` changed since it was loaded or saved.
    #[serde(skip)]
    pub audit_changed: bool,
    /// The memory's change count when it was last loaded or saved ([`MEMORY_KEY`]).
    #[serde(skip)]
    pub memory_saved: u64,
    /// The sample-ratio check of the logged impressions and the feedback lag.
    #[serde(default)]
    pub health: Health,
    /// Each arm's counts per visitor segment this round (when the worker has segments).
    #[serde(default, skip_serializing_if = "SegmentCounts::is_empty")]
    pub segments: SegmentCounts,
    /// The round's changes between its ends, for its summary.
    #[serde(default, skip_serializing_if = "MidRound::is_empty")]
    pub mid_round: MidRound,
}

/// A round's changes between its ends (arms a screening policy retired and the items that
/// took their places), listed in the round's summary when it ends; bounded by
/// [`bandit::armset::MAX_LISTED_MID_ROUND`] each, the rest counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MidRound {
    screened: Vec<RetiredArm>,
    refilled: Vec<String>,
    unlisted: u64,
    /// Changes of the arm set so far this round (screening swaps, operator removals, refills
    /// of a set that was not empty): the snapshot's (and each decision's) `set`, so the
    /// off-policy evaluator knows which arms each decision chose from.
    /// (Stored as `swaps` before operator removals counted too.)
    #[serde(default, alias = "swaps")]
    changes: u64,
}

impl MidRound {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.screened.is_empty()
            && self.refilled.is_empty()
            && self.unlisted == 0
            && self.changes == 0
    }

    fn list<T>(list: &mut Vec<T>, unlisted: &mut u64, items: impl IntoIterator<Item = T>) {
        for item in items {
            if list.len() < MAX_LISTED_MID_ROUND {
                list.push(item);
            } else {
                *unlisted = unlisted.saturating_add(1);
            }
        }
    }

    /// Counts one change of the arm set within the round.
    pub fn set_changed(&mut self) {
        self.changes = self.changes.saturating_add(1);
    }

    /// Moves the round's changes into its summary.
    fn finish(&mut self, summary: &mut RoundSummary) {
        let done = std::mem::take(self);
        summary.screened = done.screened;
        summary.refilled = done.refilled;
        summary.unlisted = done.unlisted;
    }
}

/// The costly part of the operators' views of one state version.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorView {
    /// Each arm's probability of being the best, in arm order.
    pub p_best: Vec<f64>,
    /// Each segment's view of the arms (with its P(best)), as the snapshot carries them.
    pub segment_views: Vec<SegmentView>,
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
            pinned: None,
            exclude: BTreeSet::new(),
            audit: AuditLog::default(),
            audit_changed: false,
            memory_saved: 0,
            health: Health::default(),
            segments: SegmentCounts::default(),
            mid_round: MidRound::default(),
        }
    }

    /// Records an operator write in the slot's audit log.
    pub fn record(&mut self, entry: bandit::operator::AuditEntry) {
        self.audit.push(entry);
        self.audit_changed = true;
    }

    /// The edge's view.
    pub fn snapshot(&self, rotation: &RotationConfig, now_ms: f64) -> Snapshot {
        let posteriors = self.arms.posteriors(&rotation.policy);
        // P(best) once per published version, so no request computes it.
        let mut snapshot = Snapshot::new(
            self.slot.clone(),
            self.arms.round,
            self.version,
            now_ms,
            self.arms
                .arms
                .iter()
                .zip(posteriors)
                .filter_map(|(a, posterior)| {
                    self.items.get(&a.item).map(|item| SnapshotArm {
                        item: item.clone(),
                        posterior,
                        p_best: 0.0,
                    })
                })
                .collect(),
            self.pinned.clone().filter(|p| p.pin.active(now_ms)),
        );
        // Each segment's view of the same arms, in the same order.
        let arms: Vec<(&str, Posterior)> = snapshot
            .arms
            .iter()
            .map(|a| (a.item.id.as_str(), a.posterior))
            .collect();
        let views = self.segments.views(&arms);
        snapshot.segments = views;
        snapshot.set = self.mid_round.changes;
        snapshot
    }

    /// Counts a batch's segment entries (after [`SlotState::apply_batch`], unless learning is
    /// paused); returns the impressions of segments `dims` cannot produce or of items outside
    /// the set.
    pub fn apply_segments(&mut self, batch: &EventBatch, dims: &[Dimension], now_ms: f64) -> u64 {
        if dims.is_empty() || self.learning_paused(now_ms) {
            return 0;
        }
        let arms = &self.arms;
        self.segments
            .add(batch, dims, |item| arms.position(item).is_some())
    }

    /// The arms a screening policy (`-screenEPS`) finds confidently behind (with segment
    /// counts, judged per segment), worst posterior mean first; none under other policies.
    pub fn behind(&self, rotation: &RotationConfig) -> Vec<usize> {
        let mut behind = self.segments.behind(&self.arms, rotation);
        let posteriors = self.arms.posteriors(&rotation.policy);
        behind.sort_by(|&a, &b| posteriors[a].mean().total_cmp(&posteriors[b].mean()));
        behind
    }

    /// Swaps arms screened out mid-round ([`SlotState::behind`], worst first) for the usable
    /// items of `fresh`, one for one, so screening never shrinks the set: with a catalog no
    /// larger than the set, nothing leaves. Returns the ids that left.
    pub fn screen(
        &mut self,
        rotation: &RotationConfig,
        behind: &[usize],
        fresh: Vec<CatalogItem>,
    ) -> Vec<String> {
        let fresh = self.usable(fresh, behind.len());
        let Some(behind) = behind.get(..fresh.len()).filter(|b| !b.is_empty()) else {
            return Vec::new();
        };
        let retired = self.arms.retire_now(rotation, behind);
        let out: Vec<String> = retired.iter().map(|a| a.item.clone()).collect();
        let mid = &mut self.mid_round;
        mid.set_changed();
        MidRound::list(&mut mid.screened, &mut mid.unlisted, retired);
        MidRound::list(
            &mut mid.refilled,
            &mut mid.unlisted,
            fresh.iter().map(|i| i.id.clone()),
        );
        for item in &out {
            self.items.remove(item);
        }
        let arms = &self.arms;
        self.segments.retain(|item| arms.position(item).is_some());
        self.version += 1;
        self.admit(fresh, rotation);
        out
    }

    /// What to write for this state ([`StoredParts`]); [`SlotState::mark_saved`] once written.
    pub fn stored_parts(&mut self) -> serde_json::Result<StoredParts> {
        let memory = std::mem::take(&mut self.arms.memory);
        let state = serde_json::to_string(self);
        self.arms.memory = memory;
        let audit = match self.audit_changed {
            true => Some(serde_json::to_string(&self.audit)?),
            false => None,
        };
        let memory = match self.arms.memory.changes() != self.memory_saved {
            true => Some(serde_json::to_string(&self.arms.memory)?),
            false => None,
        };
        Ok(StoredParts {
            state: state?,
            audit,
            memory,
        })
    }

    /// Records that [`SlotState::stored_parts`] were written.
    pub fn mark_saved(&mut self) {
        self.audit_changed = false;
        self.memory_saved = self.arms.memory.changes();
    }

    /// Puts back the memory stored under [`MEMORY_KEY`] after a load. An unreadable one is
    /// dropped (the error returned for the log): the memory only speeds up learning.
    pub fn restore_memory(&mut self, stored: &str) -> Result<(), serde_json::Error> {
        let read = serde_json::from_str::<bandit::memory::Memory>(stored);
        let (memory, result) = match read {
            Ok(m) => (m, Ok(())),
            Err(e) => (Default::default(), Err(e)),
        };
        self.arms.memory = memory;
        self.memory_saved = self.arms.memory.changes();
        result
    }

    /// Whether an active pin has paused learning at `now_ms`.
    pub fn learning_paused(&self, now_ms: f64) -> bool {
        self.pinned
            .as_ref()
            .is_some_and(|p| p.pin.active(now_ms) && p.pin.learning == PinLearning::Pause)
    }

    /// Items a catalog draw must skip, sorted: the arms, the cooling-down retirees and the
    /// operator's exclusions.
    pub fn fill_exclude(&self, rotation: &RotationConfig) -> Vec<String> {
        let mut out = self.arms.exclude_list(rotation);
        out.extend(self.exclude.iter().cloned());
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Counts a batch the ledger says to apply into the arms and totals, advances the ledger
    /// and the version. Items outside the set are totalled apart (the first few by name), and
    /// so is everything while a pin pauses learning.
    pub fn apply_batch(&mut self, batch: &EventBatch, now_ms: f64) -> Applied {
        let mut counted = Counted::default();
        let mut not_in_set = Vec::new();
        let paused = self.learning_paused(now_ms);
        for c in batch.counts.iter().filter(|_| !paused) {
            match self.arms.record(&c.item, c.impressions, c.clicks) {
                Recorded::Counted => {
                    counted.impressions += c.impressions;
                    counted.clicks += c.clicks;
                }
                Recorded::NotInSet => {
                    self.totals.outside_impressions += c.impressions;
                    self.totals.outside_clicks += c.clicks;
                    if not_in_set.len() < REPORTED_OUTSIDERS {
                        not_in_set.push(c.item.clone());
                    }
                }
            }
        }
        for c in &batch.counts {
            let side = match c.served_by {
                Some(ServedBy::Bandit) => &mut self.totals.bandit,
                Some(ServedBy::Holdout) => &mut self.totals.holdout,
                None => continue,
            };
            side.impressions = side.impressions.saturating_add(c.impressions);
            side.clicks = side.clicks.saturating_add(c.clicks);
        }
        if paused {
            for c in &batch.counts {
                self.totals.paused_impressions += c.impressions;
                self.totals.paused_clicks += c.clicks;
            }
        }
        self.totals.impressions += counted.impressions;
        self.totals.clicks += counted.clicks;
        self.totals.batches += 1;
        self.ledger.advance(batch);
        self.version += 1;
        self.last_batch_ms = Some(now_ms);
        Applied {
            counted,
            not_in_set,
            round: self.arms.round,
            rotated: false,
        }
    }

    /// Whether the set should ask the catalog for items now, and for which; records the
    /// attempt so an under-filled set asks at most every [`REFILL_INTERVAL_MS`] unless
    /// `force` (a catalog import).
    pub fn begin_fill(
        &mut self,
        rotation: &RotationConfig,
        now_ms: f64,
        force: bool,
    ) -> Option<FillWanted> {
        let count = rotation.arms.saturating_sub(self.arms.arms.len());
        if count == 0 || (!force && now_ms - self.last_refill_ms < REFILL_INTERVAL_MS) {
            return None;
        }
        self.last_refill_ms = now_ms;
        Some(FillWanted {
            count,
            exclude: self.fill_exclude(rotation),
        })
    }

    /// Adds catalog items as fresh arms with the policy's fresh prior (refined by their
    /// features under a `+features` policy); whether any joined. Joining a set that already
    /// had arms changes the set mid-round (the decisions' `set` moves on).
    pub fn add_fresh(&mut self, fresh: Vec<CatalogItem>, rotation: &RotationConfig) -> bool {
        let had_arms = !self.arms.arms.is_empty();
        let added = self.admit(fresh, rotation);
        if added && had_arms {
            self.mid_round.set_changed();
        }
        added
    }

    /// [`SlotState::add_fresh`] without counting the change (the caller counts it).
    fn admit(&mut self, fresh: Vec<CatalogItem>, rotation: &RotationConfig) -> bool {
        let room = rotation.arms.saturating_sub(self.arms.arms.len());
        let fresh = self.usable(fresh, room);
        let added = self.arms.add_fresh_with_features(
            fresh.iter().map(|i| (i.id.clone(), item_features(i))),
            &rotation.policy,
        );
        for item in fresh {
            self.items.insert(item.id.clone(), item);
        }
        if added > 0 {
            self.version += 1;
        }
        added > 0
    }

    /// The first `max` items of `fresh` that may join: available, not excluded, not an arm
    /// already, each once.
    fn usable(&self, fresh: Vec<CatalogItem>, max: usize) -> Vec<CatalogItem> {
        let mut seen = BTreeSet::new();
        fresh
            .into_iter()
            .filter(|i| {
                self.arms.position(&i.id).is_none()
                    && i.available
                    && !self.exclude.contains(&i.id)
                    && seen.insert(i.id.clone())
            })
            .take(max)
            .collect()
    }

    /// A catalog draw in the order a refill should take it: under a screening policy, items
    /// by one posterior draw each, a remembered one's including its evidence
    /// ([`bandit::ArmSet::prefer_fresh`]); the draw asks for more than it needs
    /// ([`bandit::armset::fresh_wanted`]) so there is a choice.
    pub fn prefer<R: Rng + ?Sized>(
        &self,
        fresh: Vec<CatalogItem>,
        rotation: &RotationConfig,
        rng: &mut R,
    ) -> Vec<CatalogItem> {
        let ids: Vec<&str> = fresh.iter().map(|i| i.id.as_str()).collect();
        let order = self.arms.prefer_fresh(&rotation.policy, &ids, rng);
        let mut slots: Vec<Option<CatalogItem>> = fresh.into_iter().map(Some).collect();
        order.into_iter().filter_map(|k| slots[k].take()).collect()
    }

    /// Ends the round with `plan`, admitting `fresh` catalog items; keeps display fields of
    /// the current arms only and the bounded round history.
    pub fn finish_rotation(
        &mut self,
        rotation: &RotationConfig,
        plan: &RotationPlan,
        fresh: Vec<CatalogItem>,
    ) {
        let fresh: Vec<CatalogItem> = fresh
            .into_iter()
            .filter(|i| i.available && !self.exclude.contains(&i.id))
            .collect();
        let ids: Vec<(String, Features)> = fresh
            .iter()
            .map(|i| (i.id.clone(), item_features(i)))
            .collect();
        for item in fresh {
            self.items.insert(item.id.clone(), item);
        }
        let mut summary = self.arms.rotate_with_features(rotation, plan, ids);
        self.mid_round.finish(&mut summary);
        let arms = &self.arms;
        self.items.retain(|id, _| arms.position(id).is_some());
        self.push_round(summary);
        self.health.end_round();
        let arms = &self.arms;
        self.segments.end_round(&rotation.policy.survivors, |item| {
            arms.position(item).is_some()
        });
    }

    /// Applies an operator's offset correction, or says why it cannot be applied.
    pub fn edit_offsets(&mut self, edit: &OffsetEdit) -> Result<OffsetEditResult, String> {
        if edit.topic.is_empty() || edit.topic.len() > MAX_TOPIC_LEN {
            return Err(format!("topic must be 1 to {MAX_TOPIC_LEN} bytes"));
        }
        let (changed, previous) = match (edit.partition, edit.offset) {
            (Some(p), _) if p < 0 => return Err("partition is negative".into()),
            (_, Some(o)) if !(0..=MAX_OFFSET).contains(&o) => {
                return Err(format!("offset must be from 0 to {MAX_OFFSET}"))
            }
            (None, Some(_)) => return Err("setting an offset needs a partition".into()),
            (None, None) => (self.ledger.forget_topic(&edit.topic), None),
            (Some(p), offset) => {
                if offset.is_some()
                    && self.ledger.get(&edit.topic, p).is_none()
                    && self.ledger.len() >= MAX_LEDGER_ENTRIES
                {
                    return Err(format!(
                        "the ledger holds {MAX_LEDGER_ENTRIES} topic-partitions already: forget unused ones first"
                    ));
                }
                let previous = self.ledger.set(&edit.topic, p, offset);
                (
                    usize::from(previous.is_some() || offset.is_some()),
                    previous,
                )
            }
        };
        if changed > 0 {
            self.version += 1;
        }
        Ok(OffsetEditResult {
            changed,
            previous,
            offsets: self.ledger.entries(),
        })
    }

    /// Offsets as the bridge reads them.
    pub fn offsets(&self) -> OffsetsResponse {
        OffsetsResponse {
            slot: self.slot.clone(),
            offsets: self.ledger.entries(),
        }
    }

    /// The bandit against its holdout, once both have served impressions.
    pub fn holdout_comparison(&self) -> Option<Comparison> {
        let (b, h) = (&self.totals.bandit, &self.totals.holdout);
        Comparison::new((b.clicks, b.impressions), (h.clicks, h.impressions))
    }

    /// What the operators' views show that is costly to compute (P(best) by quadrature, per
    /// arm and per segment view): callers compute it once per version.
    pub fn operator_view(&self, rotation: &RotationConfig) -> OperatorView {
        let posteriors = self.arms.posteriors(&rotation.policy);
        let arms: Vec<(&str, Posterior)> = self
            .arms
            .arms
            .iter()
            .map(|a| a.item.as_str())
            .zip(posteriors.iter().copied())
            .collect();
        OperatorView {
            p_best: bandit::p_best(&posteriors),
            segment_views: self.segments.views(&arms),
        }
    }

    /// The operator's view, with `view` from [`SlotState::operator_view`] of this same state.
    pub fn state_json(&self, rotation: &RotationConfig, view: &OperatorView) -> serde_json::Value {
        let p_best = &view.p_best;
        let posteriors = self.arms.posteriors(&rotation.policy);
        let arms: Vec<serde_json::Value> = self
            .arms
            .arms
            .iter()
            .zip(posteriors.iter().zip(p_best.iter().copied()))
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
                    "recalled": a.recalled,
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
            "memory": self.memory_json(),
            "arms": arms,
            "offsets": self.ledger.entries(),
            "rounds": self.rounds,
            "totals": self.totals,
            "holdout": self.holdout_comparison(),
            "health": self.health.report(),
            "segments": self.segments,
            "segment_views": view.segment_views,
            // What the feature priors learned (under a `+features` policy).
            "feature_priors": rotation.policy.features.then(|| self.arms.feature_summary()),
            "last_batch_ms": self.last_batch_ms,
            "pinned": self.pinned,
            "exclude": self.exclude,
            "audit": self.audit,
        })
    }

    /// The operators' view of the memory: its size and bound and the newest entries.
    fn memory_json(&self) -> serde_json::Value {
        let memory = &self.arms.memory;
        let newest: Vec<serde_json::Value> = memory
            .newest()
            .take(MEMORY_LISTED)
            .map(|(item, r)| serde_json::json!([item, r.clicks, r.impressions, r.stays]))
            .collect();
        serde_json::json!({
            "items": memory.len(),
            "capacity": bandit::memory::MEMORY_CAPACITY,
            "newest": newest,
        })
    }

    /// Appends a finished round to the bounded history.
    fn push_round(&mut self, summary: RoundSummary) {
        self.rounds.push_back(summary);
        while self.rounds.len() > ROUND_HISTORY {
            self.rounds.pop_front();
        }
    }
}

/// The features an arm carries for feature priors: the item's category and photographer,
/// empty ones skipped. Recorded whatever the policy, so the history is ready when a shop
/// turns `+features` on.
pub fn item_features(item: &CatalogItem) -> Features {
    Features::new([
        ("category", item.category.as_str()),
        ("photographer", item.photographer.as_str()),
    ])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bandit::{ItemCount, OffsetRange, PriorPolicy};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn rotation(arms: usize) -> RotationConfig {
        RotationConfig {
            arms,
            round_impressions: 100,
            policy: PriorPolicy::RESET,
            cooldown_rounds: 2,
        }
    }

    fn items(ids: &[&str]) -> Vec<CatalogItem> {
        ids.iter()
            .map(|id| CatalogItem {
                id: id.to_string(),
                title: format!("Title {id}"),
                image: String::new(),
                photographer: String::new(),
                category: String::new(),
                source_url: None,
                available: true,
            })
            .collect()
    }

    /// A batch of `counts` (item, impressions, clicks) over offsets `from..=to` of `t`/0.
    pub(crate) fn batch(from: i64, to: i64, counts: &[(&str, u64, u64)]) -> EventBatch {
        EventBatch {
            source: "test".into(),
            offsets: vec![OffsetRange {
                topic: "t".into(),
                partition: 0,
                from,
                to,
            }],
            counts: counts
                .iter()
                .map(|&(item, impressions, clicks)| ItemCount {
                    item: item.into(),
                    impressions,
                    clicks,
                    served_by: None,
                    segment: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn mid_round_changes_stored_under_their_old_name_read_back() {
        let old: MidRound =
            serde_json::from_str(r#"{"screened":[],"refilled":[],"unlisted":0,"swaps":2}"#)
                .unwrap();
        assert_eq!(old.changes, 2);
        let now = serde_json::to_string(&old).unwrap();
        assert!(now.contains(r#""changes":2"#), "{now}");
    }

    #[test]
    fn a_screening_policy_swaps_arms_far_behind_for_fresh_items_mid_round() {
        let mut rot = rotation(4);
        rot.policy = "screen".parse().unwrap();
        let mut st = SlotState::new("s", &rot);
        st.add_fresh(items(&["a", "b", "c", "d"]), &rot);
        // "a" and "b" click at 10%; "c" (2%) and "d" (never) are well behind the bar after
        // 400 impressions, "d" the worse.
        st.apply_batch(
            &batch(
                0,
                9,
                &[("a", 400, 40), ("b", 400, 40), ("c", 400, 8), ("d", 400, 0)],
            ),
            0.0,
        );
        let behind = st.behind(&rot);
        let ids = |idx: &[usize]| -> Vec<String> {
            idx.iter().map(|&i| st.arms.arms[i].item.clone()).collect()
        };
        assert_eq!(ids(&behind), ["d", "c"], "worst first");
        // Without a replacement nothing leaves: screening never shrinks the set.
        assert!(st.screen(&rot, &behind, Vec::new()).is_empty());
        assert_eq!(st.arms.arms.len(), 4);
        // One usable item (an arm and an unavailable one do not count): only the worst leaves.
        let before = st.version;
        let mut fresh = items(&["a", "x", "y"]);
        fresh[1].available = false;
        assert_eq!(st.screen(&rot, &behind, fresh), ["d"]);
        assert!(st.arms.position("d").is_none() && !st.items.contains_key("d"));
        assert!(st.arms.position("y").is_some() && st.items.contains_key("y"));
        assert_eq!(st.arms.arms.len(), 4);
        assert!(st.version > before);
        // The round's summary lists the swap.
        assert_eq!(st.mid_round.screened[0].item, "d");
        assert_eq!(
            st.mid_round.refilled,
            ["y"],
            "the initial fill is not a swap"
        );
        // The swap names a new set of the round: decisions drawn from it say so.
        assert_eq!(st.snapshot(&rot, 0.0).set, 1);
        assert_eq!(st.snapshot(&rot, 0.0).epoch, 1);
        // Under a policy that does not screen nothing is behind.
        let mut plain = SlotState::new("s", &rotation(3));
        plain.add_fresh(items(&["a", "b", "c"]), &rotation(3));
        plain.apply_batch(&batch(0, 9, &[("a", 400, 40), ("c", 400, 0)]), 0.0);
        assert!(plain.behind(&rotation(3)).is_empty());
    }

    #[test]
    fn the_memory_is_stored_apart_from_the_state_and_only_when_it_changed() {
        let mut rot = rotation(4);
        rot.policy = "screen".parse().unwrap();
        let mut st = SlotState::new("s", &rot);
        st.add_fresh(items(&["a", "b", "c", "d"]), &rot);
        let first = st.stored_parts().expect("serialises");
        assert_eq!(
            (first.audit.is_none(), first.memory.is_none()),
            (true, true)
        );
        st.mark_saved();
        st.apply_batch(
            &batch(0, 9, &[("a", 400, 40), ("b", 400, 40), ("d", 400, 0)]),
            0.0,
        );
        let behind = st.behind(&rot);
        assert_eq!(st.screen(&rot, &behind, items(&["x"])), ["d"]);
        let parts = st.stored_parts().expect("serialises");
        assert!(!parts.state.contains("\"memory\""), "{}", parts.state);
        let memory = parts.memory.expect("the screening changed the memory");
        assert_eq!(memory, r#"[["d",0,400,1]]"#);
        st.mark_saved();
        assert_eq!(st.stored_parts().expect("serialises").memory, None);

        // Loaded back: the state, then its memory.
        let mut back: SlotState = serde_json::from_str(&parts.state).expect("reads back");
        assert!(back.arms.memory.is_empty());
        back.restore_memory(&memory).expect("readable");
        assert_eq!(back.arms.memory, st.arms.memory);
        assert_eq!(back.stored_parts().expect("serialises").memory, None);
        // An unreadable memory is dropped, not fatal.
        assert!(back.restore_memory("{").is_err());
        assert!(back.arms.memory.is_empty());

        // A refill takes the remembered dud (0 of 400) before an item never seen all but
        // never: its draw beats the fresh prior's about once in 400 (these seeds: never).
        for seed in 0..20 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let order = st.prefer(items(&["d", "z"]), &rot, &mut rng);
            assert_eq!(order[0].id, "z");
        }
    }

    #[test]
    fn logged_outcomes_are_totalled_by_who_served_them() {
        let rot = rotation(2);
        let mut st = SlotState::new("s", &rot);
        st.add_fresh(items(&["a", "b"]), &rot);
        let mut b = batch(0, 9, &[("a", 5, 1), ("a", 3, 1), ("b", 2, 0), ("z", 4, 2)]);
        b.counts[1].served_by = Some(ServedBy::Holdout);
        b.counts[2].served_by = Some(ServedBy::Bandit);
        b.counts[3].served_by = Some(ServedBy::Bandit);
        let applied = st.apply_batch(&b, 0.0);
        // Learning takes every event of an arm, logged or not.
        assert_eq!(applied.counted.impressions, 10);
        assert_eq!(st.arms.arms[0].impressions, 8);
        // The comparison takes every logged outcome, arms or not.
        assert_eq!(
            (st.totals.bandit.impressions, st.totals.bandit.clicks),
            (6, 2)
        );
        assert_eq!(
            (st.totals.holdout.impressions, st.totals.holdout.clicks),
            (3, 1)
        );
        let c = st
            .holdout_comparison()
            .expect("both sides have impressions");
        assert!((c.bandit.ctr - 2.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn fill_asks_for_the_missing_arms_at_most_every_interval_unless_forced() {
        let rot = rotation(3);
        let mut st = SlotState::new("s", &rot);
        let want = st
            .begin_fill(&rot, 1_000.0, false)
            .expect("an empty set asks");
        assert_eq!(want.count, 3);
        assert!(want.exclude.is_empty());
        assert!(st.add_fresh(items(&["b", "a"]), &rot));
        assert_eq!(st.version, 1);
        // Still one short, but it just asked.
        assert_eq!(
            st.begin_fill(&rot, 1_000.0 + REFILL_INTERVAL_MS - 1.0, false),
            None
        );
        let forced = st.begin_fill(&rot, 1_001.0, true).expect("forced");
        assert_eq!(
            forced,
            FillWanted {
                count: 1,
                exclude: vec!["a".into(), "b".into()]
            }
        );
        let later = st.begin_fill(&rot, 1_001.0 + REFILL_INTERVAL_MS, false);
        assert_eq!(later.map(|w| w.count), Some(1));
        // More items than room, one of them already an arm: only one joins.
        assert!(st.add_fresh(items(&["a", "c", "d"]), &rot));
        let ids: Vec<&str> = st.arms.arms.iter().map(|a| a.item.as_str()).collect();
        assert_eq!(ids, vec!["b", "a", "c"]);
        assert_eq!(st.items.len(), 3);
        assert!(!st.add_fresh(items(&["e"]), &rot));
        assert_eq!(st.begin_fill(&rot, 1e12, true), None);
        assert_eq!(st.version, 2);
    }

    #[test]
    fn a_batch_counts_arms_totals_outsiders_and_advances_the_ledger() {
        let rot = rotation(2);
        let mut st = SlotState::new("s", &rot);
        st.add_fresh(items(&["a", "b"]), &rot);
        let outsiders: Vec<(String, u64, u64)> = (0..REPORTED_OUTSIDERS + 5)
            .map(|i| (format!("x{i:02}"), 2, 1))
            .collect();
        let mut counts: Vec<(&str, u64, u64)> = vec![("a", 10, 2), ("b", 5, 0)];
        counts.extend(outsiders.iter().map(|(i, m, c)| (i.as_str(), *m, *c)));
        let b = batch(0, 99, &counts);
        let applied = st.apply_batch(&b, 42.0);
        assert_eq!(
            applied.counted,
            Counted {
                impressions: 15,
                clicks: 2
            }
        );
        assert_eq!(applied.not_in_set.len(), REPORTED_OUTSIDERS);
        assert_eq!(applied.not_in_set[0], "x00");
        assert!(!applied.rotated);
        let t = &st.totals;
        assert_eq!((t.impressions, t.clicks, t.batches), (15, 2, 1));
        let outside = (REPORTED_OUTSIDERS as u64 + 5) * 2;
        assert_eq!(
            (t.outside_impressions, t.outside_clicks),
            (outside, outside / 2)
        );
        assert_eq!(st.arms.arms[0].impressions, 10);
        assert_eq!(st.arms.round_impressions, 15);
        assert_eq!(st.ledger.get("t", 0), Some(99));
        assert_eq!(st.last_batch_ms, Some(42.0));
        assert_eq!(st.version, 2);
        assert_eq!(st.offsets().offsets[0].offset, 99);
    }

    #[test]
    fn a_rotation_keeps_display_fields_of_current_arms_only() {
        let rot = rotation(4);
        let mut st = SlotState::new("s", &rot);
        st.add_fresh(items(&["a", "b", "c", "d"]), &rot);
        st.apply_batch(
            &batch(
                0,
                9,
                &[("a", 40, 9), ("b", 30, 0), ("c", 20, 5), ("d", 10, 0)],
            ),
            1.0,
        );
        assert!(st.arms.round_complete(&rot));
        let mut rng = SmallRng::seed_from_u64(3);
        let plan = st.arms.plan_rotation(&rot, &mut rng);
        let retired: Vec<String> = plan
            .retire
            .iter()
            .map(|&i| st.arms.arms[i].item.clone())
            .collect();
        let exclude = st.arms.exclude_list(&rot);
        assert_eq!(exclude, vec!["a", "b", "c", "d"]);
        st.finish_rotation(&rot, &plan, items(&["e", "f"]));
        assert_eq!(st.arms.round, 2);
        assert_eq!(st.arms.arms.len(), 4);
        let mut shown: Vec<&String> = st.items.keys().collect();
        let mut arms: Vec<&String> = st.arms.arms.iter().map(|a| &a.item).collect();
        shown.sort();
        arms.sort();
        assert_eq!(shown, arms);
        assert!(retired.iter().all(|r| !st.items.contains_key(r)));
        assert_eq!(st.rounds.len(), 1);
        // The retirees cool down: a fill after the rotation must not draw them again.
        let exclude = st.arms.exclude_list(&rot);
        assert!(retired.iter().all(|r| exclude.contains(r)));
    }

    #[test]
    fn feature_priors_follow_the_category_and_retirements_record_features() {
        let rot = RotationConfig {
            policy: "eb+features".parse().unwrap(),
            ..rotation(2)
        };
        let mut st = SlotState::new("s", &rot);
        // Past arms of three categories with clearly different rates (20 each, 1,000
        // impressions, the clicks varying a little within a category).
        for k in 0..60u64 {
            let (cat, base) = [("hi", 100), ("mid", 40), ("lo", 10)][(k % 3) as usize];
            let f = Features::new([("category", cat)]);
            st.arms.history.push_with(base + k % 7, 1000, f);
        }
        let with = |id: &str, category: &str, photographer: &str| CatalogItem {
            category: category.into(),
            photographer: photographer.into(),
            ..items(&[id]).remove(0)
        };
        assert!(st.add_fresh(vec![with("a", "hi", "ann"), with("b", "lo", "")], &rot));
        let global = st.arms.fresh_prior(&rot.policy);
        let (a, b) = (st.arms.arms[0].prior, st.arms.arms[1].prior);
        assert!(a.mean() > 0.08 && b.mean() < 0.02, "{a:?} {b:?}");
        assert!(a.mean() > global.mean() && global.mean() > b.mean());
        // An unknown category, or none, gets the global prior.
        let none = st
            .arms
            .fresh_prior_for(&rot.policy, &item_features(&with("c", "", "")));
        assert_eq!(none, global);
        let unseen = item_features(&with("c", "new", "zed"));
        assert_eq!(st.arms.fresh_prior_for(&rot.policy, &unseen), global);
        // Without +features the same history gives every item the global prior.
        let plain = RotationConfig {
            policy: "eb".parse().unwrap(),
            ..rotation(2)
        };
        assert_eq!(
            st.arms
                .fresh_prior_for(&plain.policy, &item_features(&with("c", "hi", ""))),
            st.arms.fresh_prior(&plain.policy)
        );
        // A rotation records the retirees' features with their evidence.
        st.apply_batch(&batch(0, 9, &[("a", 60, 9), ("b", 60, 0)]), 1.0);
        let mut rng = SmallRng::seed_from_u64(3);
        let plan = st.arms.plan_rotation(&rot, &mut rng);
        st.finish_rotation(&rot, &plan, vec![with("d", "mid", "ann")]);
        let last = st.arms.history.with_features().last().unwrap();
        assert_eq!(last.2, 60);
        let cat = last.0.iter().find(|(k, _)| *k == "category").unwrap().1;
        assert!(cat == "hi" || cat == "lo", "{cat}");
        assert!(st.arms.features.contains_key("d"));
        assert_eq!(st.arms.features.len(), st.arms.arms.len());
    }

    #[test]
    fn operators_set_and_forget_offsets_within_bounds() {
        let rot = rotation(2);
        let mut st = SlotState::new("s", &rot);
        st.apply_batch(&batch(0, 99, &[]), 1.0);
        let v = st.version;
        let edit = |topic: &str, partition: Option<i32>, offset: Option<i64>| OffsetEdit {
            topic: topic.into(),
            partition,
            offset,
        };
        let r = st.edit_offsets(&edit("t", Some(0), Some(10))).unwrap();
        assert_eq!((r.changed, r.previous), (1, Some(99)));
        assert_eq!(st.ledger.get("t", 0), Some(10));
        assert_eq!(st.version, v + 1);
        st.edit_offsets(&edit("t", Some(3), Some(5))).unwrap();
        let r = st.edit_offsets(&edit("t", Some(0), None)).unwrap();
        assert_eq!((r.changed, r.previous), (1, Some(10)));
        assert_eq!(r.offsets.len(), 1);
        let r = st.edit_offsets(&edit("t", None, None)).unwrap();
        assert_eq!(r.changed, 1);
        assert!(st.ledger.is_empty());
        // Nothing to forget: no change, no new version.
        let v = st.version;
        assert_eq!(
            st.edit_offsets(&edit("t", Some(1), None)).unwrap().changed,
            0
        );
        assert_eq!(st.version, v);
        for bad in [
            edit("", Some(0), Some(1)),
            edit("t", Some(-1), Some(1)),
            edit("t", Some(0), Some(-1)),
            edit("t", Some(0), Some(MAX_OFFSET + 1)),
            edit("t", None, Some(1)),
        ] {
            assert!(st.edit_offsets(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(st.version, v);
    }
}
