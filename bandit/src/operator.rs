//! The operator protocol: pinning and excluding items per slot, deleting catalog items, and the
//! audit log of every operator write. The worker builds and checks these types, the bridge's
//! operator subcommands send and print them: one definition.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::batch::is_valid_item_id;

/// Most items one slot may exclude.
pub const MAX_EXCLUDED: usize = 1_000;
/// Audit entries a slot keeps, and the catalog keeps (oldest dropped first).
pub const MAX_AUDIT_ENTRIES: usize = 200;
/// Longest audit detail kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_AUDIT_DETAIL: usize = 512;

/// What the bandit does while a pin is active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinLearning {
    /// Keep counting: what visitors do with the pinned item and with the bandit's picks on the
    /// rest of the traffic is evidence like any other.
    #[default]
    Continue,
    /// Stop counting while the pin lasts (e.g. a campaign that changes how visitors behave):
    /// batches are acknowledged and their offsets advance, their counts are set aside.
    Pause,
}

/// `POST /api/slots/{slot}/pin`: show `item` instead of the bandit's pick until `until_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    /// Catalog item id (must be in the catalog and available).
    pub item: String,
    /// When the pin ends, in ms since the Unix epoch (must be in the future).
    pub until_ms: f64,
    /// Share of the slot's requests that show the pinned item (0 < share <= 1; default 1);
    /// the rest get the bandit's pick.
    #[serde(default = "full_share")]
    pub share: f64,
    /// Whether the bandit keeps learning meanwhile.
    #[serde(default)]
    pub learning: PinLearning,
}

fn full_share() -> f64 {
    1.0
}

impl PinLearning {
    /// Plain words for what the bandit does meanwhile: `learning continues` or `learning paused`.
    pub fn describe(self) -> &'static str {
        match self {
            PinLearning::Continue => "learning continues",
            PinLearning::Pause => "learning paused",
        }
    }
}

impl PinRequest {
    /// Checks the fields that do not need the catalog or the clock.
    pub fn validate(&self) -> Result<(), String> {
        if !is_valid_item_id(&self.item) {
            return Err(format!("{:?} is not a valid item id", self.item));
        }
        if !self.until_ms.is_finite() || self.until_ms <= 0.0 {
            return Err("until_ms must be a time in ms since the Unix epoch".into());
        }
        if !(self.share > 0.0 && self.share <= 1.0) {
            return Err("share must be above 0 and at most 1".into());
        }
        Ok(())
    }
}

/// An active pin, as the slot keeps it and the edge reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    /// Pinned item id.
    pub item: String,
    /// When it ends (ms since the Unix epoch).
    pub until_ms: f64,
    /// Share of requests that show it.
    pub share: f64,
    /// Whether the bandit keeps learning meanwhile.
    pub learning: PinLearning,
}

impl Pin {
    /// Whether the pin still holds at `now_ms`.
    pub fn active(&self, now_ms: f64) -> bool {
        now_ms < self.until_ms
    }
}

/// `POST /api/slots/{slot}/exclude`: items to add to and remove from the slot's exclude list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludeRequest {
    /// Items never to show or draw into the set (an arm among them leaves at once).
    #[serde(default)]
    pub add: Vec<String>,
    /// Items allowed again.
    #[serde(default)]
    pub remove: Vec<String>,
}

impl ExcludeRequest {
    /// Checks every id.
    pub fn validate(&self) -> Result<(), String> {
        if self.add.is_empty() && self.remove.is_empty() {
            return Err("name items to add or remove".into());
        }
        match self
            .add
            .iter()
            .chain(&self.remove)
            .find(|id| !is_valid_item_id(id))
        {
            Some(bad) => Err(format!("{bad:?} is not a valid item id")),
            None => Ok(()),
        }
    }
}

/// A slot's operator controls: the answer to pin, unpin and exclude requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotControls {
    /// Slot name.
    pub slot: String,
    /// The pin, while one is active.
    pub pin: Option<Pin>,
    /// Excluded items, sorted.
    pub exclude: Vec<String>,
    /// Arms that left the set because of this change.
    #[serde(default)]
    pub removed_arms: Vec<String>,
}

/// `DELETE /api/catalog/items/{id}`: what the delete did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDeleteResponse {
    /// The deleted item id.
    pub deleted: String,
    /// Items left in the catalog.
    pub total: u64,
}

/// Which secret authorised an operator write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// `OPERATOR_TOKEN`.
    Operator,
    /// `INGEST_TOKEN` (the bridge's; also the operators' where no operator token is set).
    Ingest,
    /// The worker itself (e.g. a pin that ended because its item left the catalog).
    Worker,
}

/// What an operator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// Catalog items imported or updated.
    CatalogImport,
    /// A catalog item deleted.
    CatalogDelete,
    /// An item pinned to a slot.
    Pin,
    /// A slot's pin removed.
    Unpin,
    /// A slot's exclude list changed.
    Exclude,
    /// A slot's offset ledger corrected.
    OffsetEdit,
}

/// One operator write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (ms since the Unix epoch).
    pub at_ms: f64,
    /// Which credential did it.
    pub actor: Actor,
    /// What was done.
    pub action: AuditAction,
    /// What it was done to: a slot name, or `catalog`.
    pub target: String,
    /// Details in plain words (bounded by [`MAX_AUDIT_DETAIL`]).
    pub detail: String,
}

impl AuditEntry {
    /// An entry, its detail cut to [`MAX_AUDIT_DETAIL`] bytes.
    pub fn new(
        at_ms: f64,
        actor: Actor,
        action: AuditAction,
        target: &str,
        detail: impl Into<String>,
    ) -> AuditEntry {
        let mut detail = detail.into();
        if detail.len() > MAX_AUDIT_DETAIL {
            let mut cut = MAX_AUDIT_DETAIL;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        AuditEntry {
            at_ms,
            actor,
            action,
            target: target.to_string(),
            detail,
        }
    }
}

/// A bounded audit log, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AuditLog(VecDeque<AuditEntry>);

impl AuditLog {
    /// Records `entry`, dropping the oldest beyond [`MAX_AUDIT_ENTRIES`].
    pub fn push(&mut self, entry: AuditEntry) {
        self.0.push_back(entry);
        while self.0.len() > MAX_AUDIT_ENTRIES {
            self.0.pop_front();
        }
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &AuditEntry> {
        self.0.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A time in ms since the Unix epoch as RFC 3339 UTC to the second, e.g.
/// `2026-11-28T14:00:00Z` (times outside years 0-9999 as `<ms> ms`).
pub fn format_utc(ms: f64) -> String {
    // Years 0 and 9999, in ms.
    if !(-62_167_219_200_000.0..253_402_300_800_000.0).contains(&ms) {
        return format!("{ms} ms");
    }
    let secs = (ms / 1000.0).floor() as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3_600,
        s / 60 % 60,
        s % 60
    )
}

/// `GET /api/audit`: the catalog's and every slot's entries, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditResponse {
    /// Entries, newest first.
    pub entries: Vec<AuditEntry>,
}

impl AuditResponse {
    /// Merges logs newest first, keeping at most `limit` entries.
    pub fn merged<'a>(logs: impl IntoIterator<Item = &'a AuditEntry>, limit: usize) -> Self {
        let mut entries: Vec<AuditEntry> = logs.into_iter().cloned().collect();
        entries.sort_by(|a, b| b.at_ms.total_cmp(&a.at_ms));
        entries.truncate(limit);
        AuditResponse { entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: f64, detail: &str) -> AuditEntry {
        AuditEntry::new(at, Actor::Operator, AuditAction::Pin, "s", detail)
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(format_utc(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000_000.0), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(951_782_400_999.0), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_874_400_000.0), "2026-11-28T14:00:00Z");
        assert_eq!(format_utc(-1.0), "1969-12-31T23:59:59Z");
        assert_eq!(format_utc(f64::NAN), "NaN ms");
        assert_eq!(format_utc(1e20), "100000000000000000000 ms");
    }

    #[test]
    fn the_log_keeps_the_newest_entries() {
        let mut log = AuditLog::default();
        for i in 0..(MAX_AUDIT_ENTRIES + 5) {
            log.push(entry(i as f64, "x"));
        }
        assert_eq!(log.len(), MAX_AUDIT_ENTRIES);
        assert_eq!(log.entries().next().map(|e| e.at_ms), Some(5.0));
    }

    #[test]
    fn details_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_AUDIT_DETAIL);
        let e = entry(0.0, &long);
        assert!(e.detail.len() <= MAX_AUDIT_DETAIL && e.detail.len() >= MAX_AUDIT_DETAIL - 1);
        assert!(e.detail.chars().all(|c| c == 'é'));
    }

    #[test]
    fn merged_logs_are_newest_first_and_bounded() {
        let a = [entry(1.0, "a"), entry(5.0, "b")];
        let b = [entry(3.0, "c")];
        let m = AuditResponse::merged(a.iter().chain(&b), 2);
        let details: Vec<&str> = m.entries.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(details, ["b", "c"]);
    }

    #[test]
    fn requests_are_checked() {
        let pin = |share: f64, until: f64| PinRequest {
            item: "a".into(),
            until_ms: until,
            share,
            learning: PinLearning::Continue,
        };
        assert!(pin(1.0, 1.0).validate().is_ok());
        assert!(pin(0.0, 1.0).validate().is_err());
        assert!(pin(1.5, 1.0).validate().is_err());
        assert!(pin(f64::NAN, 1.0).validate().is_err());
        assert!(pin(0.5, f64::INFINITY).validate().is_err());
        let defaults: PinRequest = serde_json::from_str(r#"{"item":"a","until_ms":5}"#).unwrap();
        assert_eq!(
            (defaults.share, defaults.learning),
            (1.0, PinLearning::Continue)
        );
        assert!(serde_json::from_str::<PinRequest>(r#"{"item":"a","until_ms":5,"x":1}"#).is_err());
        assert!(ExcludeRequest::default().validate().is_err());
        let bad = ExcludeRequest {
            add: vec!["../x".into()],
            remove: vec![],
        };
        assert!(bad.validate().is_err());
    }
}
