//! Classification rules: which records are impressions or clicks of which slot and item, and
//! which are dropped (duplicates, corrupt, robots) or invalid (no usable item id).

use bandit::decision::{
    attribute, fragment_param, is_valid_segment, Attribution, DecisionId, DecisionLog,
    DecisionParamError, ServedBy, PARAM_ARMS, PARAM_DECISION, PARAM_HOLDOUT, PARAM_PROBABILITY,
    PARAM_ROUND, PARAM_SEGMENT, PARAM_VERSION,
};
use bandit::protocol::{DEFAULT_SLOT, TOP_PICK_SOURCE};
use serde::Deserialize;

use crate::avro::{DecodePlan, Extracted, Field, SchemaError};

/// Field positions in the decode plan.
const F_EVENT_TYPE: usize = 0;
const F_PAGE_TYPE: usize = 1;
const F_ITEM: usize = 2;
const F_SOURCE: usize = 3;
const F_DUPLICATE: usize = 4;
const F_CORRUPT: usize = 5;
const F_AGENT_TYPE: usize = 6;
const F_LOCATION: usize = 7;
const F_TIMESTAMP: usize = 8;
const F_PARAMETERS: usize = 9;

/// Record field names the rules read (defaults are the Divolte shop's).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldNames {
    /// Event type (`pageView`, `impression`, ...).
    pub event_type: String,
    /// Page type (`home`, `product`, ...).
    pub page_type: String,
    /// Catalog item id.
    pub item: String,
    /// Click or impression source (`top_pick`).
    pub source: String,
    /// Divolte's duplicate flag.
    pub duplicate: String,
    /// Divolte's corruption flag.
    pub corrupt: String,
    /// User agent type (`Robot`, `Browser`, ...).
    pub user_agent_type: String,
    /// The page's URL (a click's fragment carries its decision).
    pub location: String,
    /// Divolte's event time, ms since the Unix epoch.
    pub timestamp: String,
    /// The event's parameters, a map of strings (an impression's decision log).
    pub event_parameters: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        FieldNames {
            event_type: "eventType".into(),
            page_type: "pageType".into(),
            item: "productId".into(),
            source: "source".into(),
            duplicate: "detectedDuplicate".into(),
            corrupt: "detectedCorruption".into(),
            user_agent_type: "userAgentType".into(),
            location: "location".into(),
            timestamp: "timestamp".into(),
            event_parameters: "eventParameters".into(),
        }
    }
}

impl FieldNames {
    /// The names in decode-plan order.
    pub fn as_plan_fields(&self) -> [&str; 10] {
        [
            &self.event_type,
            &self.page_type,
            &self.item,
            &self.source,
            &self.duplicate,
            &self.corrupt,
            &self.user_agent_type,
            &self.location,
            &self.timestamp,
            &self.event_parameters,
        ]
    }
}

/// The classification rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Field names.
    pub fields: FieldNames,
    /// Event types counted as impressions.
    pub impression_event_types: Vec<String>,
    /// Event types counted as clicks.
    pub click_event_types: Vec<String>,
    /// Page types a click must have (empty: any).
    pub click_page_types: Vec<String>,
    /// Source value -> slot name.
    pub sources: Vec<(String, String)>,
    /// Drop records flagged as duplicates.
    pub drop_duplicates: bool,
    /// Drop records flagged as corrupt.
    pub drop_corrupt: bool,
    /// Drop records from robots.
    pub drop_robots: bool,
    /// User agent types that are robots (compared ignoring ASCII case).
    pub robot_agent_types: Vec<String>,
    /// How long after its decision a click still counts, in ms.
    pub attribution_window_ms: u64,
    /// How far the collector's clock may be behind the edge's, in ms.
    pub clock_skew_ms: u64,
    /// Drop impressions and clicks that carry no usable decision (pages rendered before
    /// decisions were logged, or forged events).
    pub require_decision: bool,
    /// What counts as a decision's reward (the bandit's "click").
    pub reward: Reward,
}

/// What counts as a decision's reward.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Reward {
    /// The click on the pick (a click event on the product page its link opened).
    #[default]
    Click,
    /// A later event of that visit instead (e.g. add-to-basket), of this type and, when set,
    /// page type; it must name the decision (in its page's fragment, or as a `decision`
    /// parameter) and carry the item.
    Event {
        /// Event type.
        event_type: String,
        /// Page type it must have.
        page_type: Option<String>,
    },
}

impl std::str::FromStr for Reward {
    type Err = String;

    fn from_str(s: &str) -> Result<Reward, String> {
        let s = s.trim();
        if s == "click" {
            return Ok(Reward::Click);
        }
        let help = "expected click, or event:TYPE[:PAGE_TYPE] (e.g. event:addToBasket)";
        let rest = s
            .strip_prefix("event:")
            .ok_or_else(|| format!("{s:?}: {help}"))?;
        let (t, page) = match rest.split_once(':') {
            Some((t, p)) => (t, Some(p)),
            None => (rest, None),
        };
        if t.is_empty() || page.is_some_and(str::is_empty) {
            return Err(format!("{s:?}: {help}"));
        }
        Ok(Reward::Event {
            event_type: t.to_string(),
            page_type: page.map(str::to_string),
        })
    }
}

/// The impression signal's decision parameters.
const DECISION_PARAMS: [&str; 7] = [
    PARAM_DECISION,
    PARAM_PROBABILITY,
    PARAM_ROUND,
    PARAM_VERSION,
    PARAM_ARMS,
    PARAM_HOLDOUT,
    PARAM_SEGMENT,
];

/// The decision an impression's parameters log, read in one pass over them (this runs for
/// every impression, so not one pass per name).
fn impression_decision(params: &Field<'_>) -> Result<DecisionLog, DecisionParamError> {
    let found = params.get_many(DECISION_PARAMS);
    DecisionLog::from_params(|k| {
        DECISION_PARAMS
            .iter()
            .position(|n| *n == k)
            .and_then(|i| found[i])
    })
}

/// Default attribution window: Divolte's default session timeout, 30 minutes.
pub const DEFAULT_ATTRIBUTION_WINDOW_MS: u64 = 30 * 60 * 1000;
/// Default allowance for the collector's clock being behind the edge's.
pub const DEFAULT_CLOCK_SKEW_MS: u64 = 60 * 1000;

impl Default for Rules {
    fn default() -> Self {
        Rules {
            fields: FieldNames::default(),
            impression_event_types: vec!["impression".into()],
            click_event_types: vec!["pageView".into()],
            click_page_types: Vec::new(),
            sources: vec![(TOP_PICK_SOURCE.into(), DEFAULT_SLOT.into())],
            drop_duplicates: true,
            drop_corrupt: true,
            drop_robots: true,
            robot_agent_types: vec!["Robot".into()],
            attribution_window_ms: DEFAULT_ATTRIBUTION_WINDOW_MS,
            clock_skew_ms: DEFAULT_CLOCK_SKEW_MS,
            require_decision: false,
            reward: Reward::Click,
        }
    }
}

/// Impression or click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The item was shown in the slot.
    Impression,
    /// The item was clicked in the slot.
    Click,
}

/// One counted event, borrowing the item id from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// Slot index into [`Classifier::slots`].
    pub slot: usize,
    /// Catalog item id.
    pub item: &'a str,
    /// Impression or click.
    pub kind: Kind,
    /// Who served the decision it belongs to; none when it carries no usable decision.
    pub served_by: Option<ServedBy>,
    /// The visitor segment the decision used, when the worker has segments.
    pub segment: Option<&'a str>,
    /// For an impression with a decision: the slot state version it was drawn from.
    pub version: Option<u64>,
    /// The event's time (ms since the Unix epoch, as the collector stamped it), when usable.
    pub at_ms: Option<i64>,
}

/// Why a relevant record is not counted although it is well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Divolte flagged it as a duplicate.
    Duplicate,
    /// Divolte flagged it as corrupt.
    Corrupt,
    /// It came from a robot.
    Robot,
    /// A click later than the attribution window after its decision.
    LateClick,
    /// A click stamped earlier than its decision (beyond the allowed clock skew).
    ClickBeforeDecision,
    /// No usable decision, and the rules require one.
    NoDecision,
}

impl DropReason {
    /// All reasons, for metrics.
    pub const ALL: [DropReason; 6] = [
        DropReason::Duplicate,
        DropReason::Corrupt,
        DropReason::Robot,
        DropReason::LateClick,
        DropReason::ClickBeforeDecision,
        DropReason::NoDecision,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Duplicate => "duplicate",
            DropReason::Corrupt => "corrupt",
            DropReason::Robot => "robot",
            DropReason::LateClick => "late_click",
            DropReason::ClickBeforeDecision => "click_before_decision",
            DropReason::NoDecision => "no_decision",
        }
    }
}

/// Why a relevant record cannot be classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unclassifiable {
    /// The item id is null, absent or empty.
    #[error("impression or click without an item id")]
    MissingItem,
    /// The item id is longer than the worker accepts.
    #[error("item id longer than {} bytes", bandit::batch::MAX_ITEM_ID_LEN)]
    ItemTooLong,
    /// The item id has characters no catalog id has (the worker refuses such a batch whole).
    #[error("item id is not a catalog id (A-Z a-z 0-9 . _ ~ -, not . or ..)")]
    BadItem,
}

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// An impression or click to count.
    Event(Event<'a>),
    /// Not an impression or click of any configured slot.
    Ignored,
    /// Relevant but dropped by a rule.
    Dropped(DropReason),
    /// Relevant but unusable.
    Invalid(Unclassifiable),
}

/// Rules compiled against a schema.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Rules,
    slots: Vec<String>,
    /// Source value -> slot index.
    source_slot: Vec<(String, usize)>,
}

impl Classifier {
    /// Compiles the rules; `plan` must have been built from [`FieldNames::as_plan_fields`].
    pub fn new(rules: Rules, plan: &DecodePlan) -> Result<Classifier, SchemaError> {
        for (slot, what) in [
            (F_EVENT_TYPE, "event type"),
            (F_SOURCE, "source"),
            (F_ITEM, "item"),
        ] {
            if !plan.has_field(slot) {
                return Err(SchemaError::Unsupported(format!(
                    "the schema has no field {:?} (the {what} field); set it with the field-name options",
                    plan.field_names().get(slot).map(String::as_str).unwrap_or("")
                )));
            }
        }
        if !rules.click_page_types.is_empty() && !plan.has_field(F_PAGE_TYPE) {
            return Err(SchemaError::Unsupported(format!(
                "click page types are set but the schema has no field {:?}",
                rules.fields.page_type
            )));
        }
        let mut slots: Vec<String> = Vec::new();
        let mut source_slot = Vec::new();
        for (source, slot) in &rules.sources {
            let idx = match slots.iter().position(|s| s == slot) {
                Some(i) => i,
                None => {
                    slots.push(slot.clone());
                    slots.len() - 1
                }
            };
            source_slot.push((source.clone(), idx));
        }
        if slots.is_empty() {
            return Err(SchemaError::Unsupported(
                "no source is mapped to a slot".into(),
            ));
        }
        Ok(Classifier {
            rules,
            slots,
            source_slot,
        })
    }

    /// Builds the decode plan these rules need.
    pub fn plan(rules: &Rules, schema: &apache_avro::Schema) -> Result<DecodePlan, SchemaError> {
        DecodePlan::new(schema, &rules.fields.as_plan_fields())
    }

    /// The slot names, by index.
    pub fn slots(&self) -> &[String] {
        &self.slots
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The decision a click's location names, checked against the attribution window: who
    /// served it, none when the click names no usable decision.
    fn click_decision(&self, rec: &Extracted<'_>) -> Result<Option<ServedBy>, DropReason> {
        let f = &rec.fields;
        // The page's fragment names it (the click, and any event on the page it opened); a
        // shop may also pass it on to a later page's event as a parameter.
        let from_fragment = |name: &str| {
            f[F_LOCATION]
                .as_str()
                .and_then(|loc| fragment_param(loc, name))
        };
        let param = |name: &str| from_fragment(name).or_else(|| f[F_PARAMETERS].get(name));
        let Some(id) = param(PARAM_DECISION).and_then(DecisionId::parse) else {
            return Ok(None);
        };
        // Without an event time there is nothing to check the window against.
        if let Some(at) = f[F_TIMESTAMP].as_i64() {
            match attribute(
                &id,
                at,
                self.rules.attribution_window_ms,
                self.rules.clock_skew_ms,
            ) {
                Attribution::Within => {}
                Attribution::Late => return Err(DropReason::LateClick),
                Attribution::BeforeDecision => return Err(DropReason::ClickBeforeDecision),
            }
        }
        let holdout = param(PARAM_HOLDOUT) == Some("true");
        Ok(Some(if holdout {
            ServedBy::Holdout
        } else {
            ServedBy::Bandit
        }))
    }

    /// Classifies one decoded record.
    #[inline]
    pub fn classify<'a>(&self, rec: &Extracted<'a>) -> Outcome<'a> {
        let f = &rec.fields;
        // The source field, else the `source` of the page's fragment (a reward event fired on
        // the product page the pick's link opened), else of the event's parameters (a later
        // page's event the shop passed the decision on to).
        let Some(source) = f[F_SOURCE]
            .as_str()
            .or_else(|| {
                f[F_LOCATION]
                    .as_str()
                    .and_then(|loc| fragment_param(loc, "source"))
            })
            .or_else(|| f[F_PARAMETERS].get("source"))
        else {
            return Outcome::Ignored;
        };
        let Some(slot) = self
            .source_slot
            .iter()
            .find(|(s, _)| s == source)
            .map(|(_, i)| *i)
        else {
            return Outcome::Ignored;
        };
        let Some(event_type) = f[F_EVENT_TYPE].as_str() else {
            return Outcome::Ignored;
        };
        let page = f[F_PAGE_TYPE].as_str().unwrap_or("");
        let kind = if self
            .rules
            .impression_event_types
            .iter()
            .any(|t| t == event_type)
        {
            Kind::Impression
        } else {
            match &self.rules.reward {
                Reward::Click if self.rules.click_event_types.iter().any(|t| t == event_type) => {
                    if !self.rules.click_page_types.is_empty()
                        && !self.rules.click_page_types.iter().any(|t| t == page)
                    {
                        return Outcome::Ignored;
                    }
                    Kind::Click
                }
                Reward::Event {
                    event_type: t,
                    page_type,
                } if t == event_type && page_type.as_ref().is_none_or(|p| p == page) => Kind::Click,
                // With a later event as the reward, the click itself is not counted.
                _ => return Outcome::Ignored,
            }
        };
        if self.rules.drop_duplicates && f[F_DUPLICATE].is_true() {
            return Outcome::Dropped(DropReason::Duplicate);
        }
        if self.rules.drop_corrupt && f[F_CORRUPT].is_true() {
            return Outcome::Dropped(DropReason::Corrupt);
        }
        if self.rules.drop_robots {
            if let Some(agent) = f[F_AGENT_TYPE].as_str() {
                if self
                    .rules
                    .robot_agent_types
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(agent))
                {
                    return Outcome::Dropped(DropReason::Robot);
                }
            }
        }
        let item = match f[F_ITEM].as_str() {
            None | Some("") => return Outcome::Invalid(Unclassifiable::MissingItem),
            Some(item) if item.len() > bandit::batch::MAX_ITEM_ID_LEN => {
                return Outcome::Invalid(Unclassifiable::ItemTooLong)
            }
            Some(item) if !bandit::batch::is_valid_item_id(item) => {
                return Outcome::Invalid(Unclassifiable::BadItem)
            }
            Some(item) => item,
        };
        let params = &f[F_PARAMETERS];
        let (served_by, version, segment) = match kind {
            Kind::Impression => match impression_decision(params) {
                // The parsed log checked the segment's form; borrow it from the record.
                Ok(d) => (
                    Some(d.served_by),
                    Some(d.version),
                    d.segment.and(params.get(PARAM_SEGMENT)),
                ),
                Err(_) => (None, None, None),
            },
            Kind::Click => match self.click_decision(rec) {
                // A later event is the reward only through the decision it names.
                Ok(None) if self.rules.reward != Reward::Click => {
                    return Outcome::Dropped(DropReason::NoDecision)
                }
                Ok(None) => (None, None, None),
                Ok(Some(served_by)) => {
                    let segment = f[F_LOCATION]
                        .as_str()
                        .and_then(|loc| fragment_param(loc, PARAM_SEGMENT))
                        .or_else(|| params.get(PARAM_SEGMENT))
                        .filter(|s| is_valid_segment(s));
                    (Some(served_by), None, segment)
                }
                Err(reason) => return Outcome::Dropped(reason),
            },
        };
        if served_by.is_none() && self.rules.require_decision {
            return Outcome::Dropped(DropReason::NoDecision);
        }
        Outcome::Event(Event {
            slot,
            item,
            kind,
            served_by,
            segment,
            version: version.filter(|v| *v <= bandit::batch::MAX_OFFSET as u64),
            at_ms: f[F_TIMESTAMP]
                .as_i64()
                .filter(|t| (0..=bandit::batch::MAX_OFFSET).contains(t)),
        })
    }
}
