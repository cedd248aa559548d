//! A slot's operator controls as pure steps on its state: pin and unpin an item, exclude items,
//! and catalog changes (updates, takedowns, deletes) reaching the arm set. Each records itself
//! in the slot's audit log and raises the version, so the next snapshot carries it.

use bandit::operator::{
    Actor, AuditAction, AuditEntry, ExcludeRequest, PinRequest, SlotControls, MAX_EXCLUDED,
};
use serde::{Deserialize, Serialize};

use crate::catalog::CatalogItem;
use crate::snapshot::Pinned;
use crate::state::SlotState;

/// What changed in the catalog, as every slot is told after an import or a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogChange {
    /// Items imported as available: their display fields replace the slot's copies.
    pub updated: Vec<CatalogItem>,
    /// Items deleted or marked unavailable: they leave the set and any pin.
    pub removed: Vec<String>,
}

impl CatalogChange {
    /// The change an import makes.
    pub fn from_import(items: &[CatalogItem]) -> CatalogChange {
        let (updated, gone): (Vec<&CatalogItem>, Vec<&CatalogItem>) =
            items.iter().partition(|i| i.available);
        CatalogChange {
            updated: updated.into_iter().cloned().collect(),
            removed: gone.into_iter().map(|i| i.id.clone()).collect(),
        }
    }

    /// The change a delete makes.
    pub fn deleted(id: &str) -> CatalogChange {
        CatalogChange {
            updated: Vec::new(),
            removed: vec![id.to_string()],
        }
    }
}

impl SlotState {
    /// The operator's view of the controls at `now_ms` (an ended pin shows as none).
    pub fn controls(&self, now_ms: f64, removed_arms: Vec<String>) -> SlotControls {
        SlotControls {
            slot: self.slot.clone(),
            pin: self
                .pinned
                .as_ref()
                .filter(|p| p.pin.active(now_ms))
                .map(|p| p.pin.clone()),
            exclude: self.exclude.iter().cloned().collect(),
            removed_arms,
        }
    }

    fn changed(&mut self, entry: AuditEntry) {
        self.record(entry);
        self.version += 1;
    }

    /// Pins `item` (the catalog's current copy of `req.item`) or says why it cannot be pinned.
    pub fn pin(
        &mut self,
        req: &PinRequest,
        item: CatalogItem,
        now_ms: f64,
        actor: Actor,
    ) -> Result<SlotControls, String> {
        req.validate()?;
        if req.until_ms <= now_ms {
            return Err("until_ms is in the past: a pin must end in the future".into());
        }
        if !item.available {
            return Err(format!(
                "item {} is marked unavailable in the catalog",
                item.id
            ));
        }
        if self.exclude.contains(&item.id) {
            return Err(format!(
                "item {} is excluded from slot {}: include it again first",
                item.id, self.slot
            ));
        }
        let detail = format!(
            "pinned {} until {}, share {}, {}",
            item.id,
            bandit::operator::format_utc(req.until_ms),
            req.share,
            req.learning.describe()
        );
        self.pinned = Some(Pinned {
            pin: bandit::operator::Pin {
                item: item.id.clone(),
                until_ms: req.until_ms,
                share: req.share,
                learning: req.learning,
            },
            item,
        });
        let slot = self.slot.clone();
        self.changed(AuditEntry::new(
            now_ms,
            actor,
            AuditAction::Pin,
            &slot,
            detail,
        ));
        Ok(self.controls(now_ms, Vec::new()))
    }

    /// Removes the pin, if there is one.
    pub fn unpin(&mut self, now_ms: f64, actor: Actor, why: &str) -> SlotControls {
        if let Some(p) = self.pinned.take() {
            let slot = self.slot.clone();
            self.changed(AuditEntry::new(
                now_ms,
                actor,
                AuditAction::Unpin,
                &slot,
                format!("unpinned {} ({why})", p.pin.item),
            ));
        }
        self.controls(now_ms, Vec::new())
    }

    /// Adds and removes exclusions; arms among the added leave the set at once (the caller
    /// refills it), and a pin of an excluded item ends.
    pub fn edit_exclude(
        &mut self,
        req: &ExcludeRequest,
        now_ms: f64,
        actor: Actor,
    ) -> Result<SlotControls, String> {
        req.validate()?;
        let mut next = self.exclude.clone();
        for id in &req.remove {
            next.remove(id);
        }
        next.extend(req.add.iter().cloned());
        if next.len() > MAX_EXCLUDED {
            return Err(format!(
                "slot {} would exclude {} items (limit {MAX_EXCLUDED}): remove some first, or delete them from the catalog",
                self.slot,
                next.len()
            ));
        }
        if next == self.exclude {
            // Nothing to change (already excluded, or never excluded): nothing to record.
            return Ok(self.controls(now_ms, Vec::new()));
        }
        self.exclude = next;
        let removed = self.remove_arms(&req.add);
        if self
            .pinned
            .as_ref()
            .is_some_and(|p| self.exclude.contains(&p.pin.item))
        {
            self.unpin(now_ms, actor, "item excluded");
        }
        let slot = self.slot.clone();
        let mut detail = String::new();
        if !req.add.is_empty() {
            detail.push_str(&format!("excluded {}", req.add.join(" ")));
        }
        if !req.remove.is_empty() {
            if !detail.is_empty() {
                detail.push_str("; ");
            }
            detail.push_str(&format!("included {}", req.remove.join(" ")));
        }
        self.changed(AuditEntry::new(
            now_ms,
            actor,
            AuditAction::Exclude,
            &slot,
            detail,
        ));
        Ok(self.controls(now_ms, removed))
    }

    /// Applies a catalog change: new display fields for arms and the pin, removed items out
    /// of the set (their evidence kept in the history) and out of the pin. Returns the arms
    /// that left.
    pub fn catalog_changed(&mut self, change: &CatalogChange, now_ms: f64) -> Vec<String> {
        let mut touched = false;
        for item in &change.updated {
            if let Some(copy) = self.items.get_mut(&item.id) {
                if copy != item {
                    *copy = item.clone();
                    touched = true;
                }
            }
            if let Some(p) = self.pinned.as_mut().filter(|p| p.item.id == item.id) {
                if &p.item != item {
                    p.item = item.clone();
                    touched = true;
                }
            }
        }
        let removed = self.remove_arms(&change.removed);
        if self
            .pinned
            .as_ref()
            .is_some_and(|p| change.removed.contains(&p.pin.item))
        {
            self.unpin(now_ms, Actor::Worker, "item left the catalog");
        }
        if touched || !removed.is_empty() {
            self.version += 1;
        }
        removed
    }

    /// Takes the named items out of the arm set (a change of the set within the round); the
    /// ones that were arms.
    fn remove_arms(&mut self, ids: &[String]) -> Vec<String> {
        let mut removed = Vec::new();
        for id in ids {
            if self.arms.remove(id) {
                self.items.remove(id);
                removed.push(id.clone());
            }
        }
        if !removed.is_empty() {
            self.mid_round.set_changed();
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bandit::operator::PinLearning;
    use bandit::{EventBatch, PriorPolicy, RotationConfig};

    fn rotation() -> RotationConfig {
        RotationConfig {
            arms: 3,
            round_impressions: 1_000,
            policy: PriorPolicy::RESET,
            cooldown_rounds: 2,
        }
    }

    fn item(id: &str, title: &str) -> CatalogItem {
        CatalogItem {
            id: id.into(),
            title: title.into(),
            image: String::new(),
            photographer: String::new(),
            category: String::new(),
            source_url: None,
            available: true,
        }
    }

    fn slot() -> SlotState {
        let rot = rotation();
        let mut st = SlotState::new("s", &rot);
        st.add_fresh(vec![item("a", "A"), item("b", "B"), item("c", "C")], &rot);
        st
    }

    fn pin_req(id: &str, until_ms: f64, learning: PinLearning) -> PinRequest {
        PinRequest {
            item: id.into(),
            until_ms,
            share: 1.0,
            learning,
        }
    }

    fn batch(from: i64, counts: &[(&str, u64, u64)]) -> EventBatch {
        crate::state::tests::batch(from, from, counts)
    }

    #[test]
    fn a_pin_is_in_the_snapshot_until_it_ends_and_is_audited() {
        let mut st = slot();
        let v = st.version;
        let c = st
            .pin(
                &pin_req("z", 2_000.0, PinLearning::Continue),
                item("z", "Z"),
                1_000.0,
                Actor::Operator,
            )
            .unwrap();
        assert_eq!(c.pin.map(|p| p.item), Some("z".to_string()));
        assert_eq!(st.version, v + 1);
        let snap = st.snapshot(&rotation(), 1_500.0);
        assert_eq!(snap.pinned.map(|p| p.item.title), Some("Z".to_string()));
        assert!(st.snapshot(&rotation(), 2_000.0).pinned.is_none(), "ended");
        assert!(st.controls(2_000.0, vec![]).pin.is_none());
        let e = st.audit.entries().last().unwrap();
        assert_eq!((e.action, e.actor), (AuditAction::Pin, Actor::Operator));
        // The log is stored apart from the state a batch rewrites, and marked for that write.
        assert!(st.audit_changed);
        let stored = serde_json::to_string(&st).unwrap();
        assert!(!stored.contains("\"audit\"") && stored.contains("\"pinned\""));
        st.unpin(1_600.0, Actor::Ingest, "asked");
        assert!(st.pinned.is_none());
        assert_eq!(st.audit.len(), 2);
        // Nothing to unpin: no entry, no new version.
        let v = st.version;
        st.unpin(1_700.0, Actor::Operator, "asked");
        assert_eq!((st.audit.len(), st.version), (2, v));
    }

    #[test]
    fn pins_are_refused_in_the_past_unavailable_or_excluded() {
        let mut st = slot();
        let now = 1_000.0;
        let req = pin_req("z", now, PinLearning::Continue);
        assert!(st.pin(&req, item("z", "Z"), now, Actor::Operator).is_err());
        let mut gone = item("z", "Z");
        gone.available = false;
        let req = pin_req("z", now + 1.0, PinLearning::Continue);
        assert!(st.pin(&req, gone, now, Actor::Operator).is_err());
        st.edit_exclude(
            &ExcludeRequest {
                add: vec!["z".into()],
                remove: vec![],
            },
            now,
            Actor::Operator,
        )
        .unwrap();
        let err = st
            .pin(&req, item("z", "Z"), now, Actor::Operator)
            .unwrap_err();
        assert!(err.contains("include it again"), "{err}");
    }

    #[test]
    fn a_paused_pin_acknowledges_batches_without_counting_them() {
        let mut st = slot();
        st.pin(
            &pin_req("a", 2_000.0, PinLearning::Pause),
            item("a", "A"),
            1_000.0,
            Actor::Operator,
        )
        .unwrap();
        let applied = st.apply_batch(&batch(0, &[("a", 10, 3), ("b", 5, 1)]), 1_500.0);
        assert_eq!(applied.counted.impressions, 0);
        assert_eq!(st.arms.arms[0].impressions, 0);
        assert_eq!(
            (st.totals.paused_impressions, st.totals.paused_clicks),
            (15, 4)
        );
        assert_eq!(st.ledger.get("t", 0), Some(0), "the offsets advance");
        // Once the pin ends, counting resumes.
        let applied = st.apply_batch(&batch(1, &[("a", 10, 3)]), 2_000.0);
        assert_eq!(applied.counted.impressions, 10);
        // A continuing pin counts as usual.
        let mut st = slot();
        st.pin(
            &pin_req("a", 2_000.0, PinLearning::Continue),
            item("a", "A"),
            1_000.0,
            Actor::Operator,
        )
        .unwrap();
        let applied = st.apply_batch(&batch(0, &[("a", 10, 3)]), 1_500.0);
        assert_eq!(applied.counted.impressions, 10);
    }

    #[test]
    fn excluding_an_arm_takes_it_out_keeps_its_evidence_and_keeps_it_out() {
        let rot = rotation();
        let mut st = slot();
        st.apply_batch(&batch(0, &[("b", 100, 7)]), 1.0);
        let history = st.arms.history.arms.len();
        let c = st
            .edit_exclude(
                &ExcludeRequest {
                    add: vec!["b".into(), "q".into()],
                    remove: vec![],
                },
                5.0,
                Actor::Operator,
            )
            .unwrap();
        assert_eq!(c.removed_arms, vec!["b".to_string()]);
        assert_eq!(c.exclude, vec!["b".to_string(), "q".to_string()]);
        assert!(st.arms.position("b").is_none() && !st.items.contains_key("b"));
        assert_eq!(st.arms.history.arms.len(), history + 1);
        // Decisions from now on chose from another set than the round's first.
        assert_eq!(st.snapshot(&rot, 5.0).set, 1);
        let want = st.begin_fill(&rot, 1e9, true).unwrap();
        assert_eq!(want.count, 1);
        assert!(want.exclude.contains(&"q".to_string()) && want.exclude.contains(&"b".to_string()));
        // A draw that still returns an excluded item (a race with the exclusion) is refused.
        assert!(!st.add_fresh(vec![item("q", "Q")], &rot));
        assert_eq!(st.snapshot(&rot, 5.0).set, 1);
        assert!(st.add_fresh(vec![item("d", "D")], &rot));
        assert_eq!(st.snapshot(&rot, 5.0).set, 2);
        // Included again: drawable again.
        st.edit_exclude(
            &ExcludeRequest {
                add: vec![],
                remove: vec!["q".into()],
            },
            6.0,
            Actor::Operator,
        )
        .unwrap();
        assert!(!st.fill_exclude(&rot).contains(&"q".to_string()));
        assert_eq!(st.audit.len(), 2);
        // Including what is not excluded changes nothing and records nothing.
        let v = st.version;
        st.edit_exclude(
            &ExcludeRequest {
                add: vec![],
                remove: vec!["never".into()],
            },
            7.0,
            Actor::Operator,
        )
        .unwrap();
        assert_eq!((st.audit.len(), st.version), (2, v));
    }

    #[test]
    fn the_exclude_list_is_bounded() {
        let mut st = slot();
        let add: Vec<String> = (0..=MAX_EXCLUDED).map(|i| format!("x{i}")).collect();
        let err = st
            .edit_exclude(
                &ExcludeRequest {
                    add,
                    remove: vec![],
                },
                1.0,
                Actor::Operator,
            )
            .unwrap_err();
        assert!(err.contains("limit"), "{err}");
        assert!(st.exclude.is_empty() && st.audit.is_empty());
    }

    #[test]
    fn catalog_changes_reach_the_arms_and_the_pin() {
        let mut st = slot();
        st.pin(
            &pin_req("c", 9e12, PinLearning::Continue),
            item("c", "C"),
            1.0,
            Actor::Operator,
        )
        .unwrap();
        let v = st.version;
        // Filling the empty slot was its first set, not a change of it.
        assert_eq!(st.snapshot(&rotation(), 1.0).set, 0);
        let mut gone = item("a", "A");
        gone.available = false;
        let change =
            CatalogChange::from_import(&[item("b", "B, retitled"), gone, item("zz", "not an arm")]);
        assert_eq!(change.removed, vec!["a".to_string()]);
        let removed = st.catalog_changed(&change, 2.0);
        assert_eq!(removed, vec!["a".to_string()]);
        assert_eq!(st.items["b"].title, "B, retitled");
        assert!(!st.items.contains_key("zz"));
        assert_eq!(st.version, v + 1);
        assert_eq!(st.snapshot(&rotation(), 2.0).set, 1);
        // The same change again changes nothing.
        assert!(st.catalog_changed(&change, 3.0).is_empty());
        assert_eq!(st.version, v + 1);
        assert_eq!(st.snapshot(&rotation(), 3.0).set, 1);
        // The pinned item retitled, then deleted: the pin follows, then ends.
        st.catalog_changed(&CatalogChange::from_import(&[item("c", "C2")]), 4.0);
        assert_eq!(
            st.pinned.as_ref().map(|p| p.item.title.as_str()),
            Some("C2")
        );
        st.catalog_changed(&CatalogChange::deleted("c"), 5.0);
        assert!(st.pinned.is_none());
        let e = st.audit.entries().last().unwrap();
        assert_eq!((e.action, e.actor), (AuditAction::Unpin, Actor::Worker));
        assert!(st
            .snapshot(&rotation(), 6.0)
            .arms
            .iter()
            .all(|a| a.item.id == "b"));
    }
}
