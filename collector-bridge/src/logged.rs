//! The decision log for off-policy evaluation (`evaluate --logged`): impressions with their
//! decision parameters and the clicks that carry a decision id in their link, read from
//! Divolte's Avro container files or a Kafka offset range, joined into
//! [`bandit::ope::LoggedDecision`]s.
//!
//! Every field comes from a browser: records that cannot be used are counted by reason, never
//! trusted and never a panic. An impression counts once per decision id; a decision's reward is
//! whether any click of its item came within the attribution window of the decision time.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use apache_avro::{Reader, Schema};
use bandit::decision::{
    attribute, fragment_param, Attribution, DecisionId, DecisionLog, DecisionParamError, ServedBy,
    PARAM_DECISION, PARAM_HOLDOUT,
};
use bandit::ope::LoggedDecision;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::avro::{reference, Wire};
use crate::classify::FieldNames;

/// How to read the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogOptions {
    /// Source of the slot's impressions and of its links' fragments (`top_pick`).
    pub source: String,
    /// Attribution window after the decision time.
    pub window_ms: u64,
    /// Clock difference allowed between the edge (decision time) and Divolte (click time).
    pub skew_ms: u64,
    /// Event type of impressions.
    pub impression_event_type: String,
    /// Event type of clicks.
    pub click_event_type: String,
    /// Field names (the bridge's configurable names; the Divolte shop's by default).
    pub fields: FieldNames,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            source: bandit::protocol::TOP_PICK_SOURCE.into(),
            window_ms: 30 * 60 * 1000,
            skew_ms: 60 * 1000,
            impression_event_type: "impression".into(),
            click_event_type: "pageView".into(),
            fields: FieldNames::default(),
        }
    }
}

/// Why reading the log failed (unusable records are counted instead).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A container file could not be opened or is not an Avro container.
    #[error("{path}: {message}")]
    File {
        /// Path.
        path: String,
        /// Detail.
        message: String,
    },
    /// Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The requested offset range is not valid or could not be read.
    #[error("{0}")]
    Range(String),
}

#[derive(Debug, Clone)]
struct Impression {
    log: DecisionLog,
    item: String,
}

#[derive(Debug, Clone)]
struct Click {
    id: DecisionId,
    at_ms: i64,
    item: String,
    holdout: bool,
}

/// The joined log and what was not used, by reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinedLog {
    /// Decisions in decision order (time in the id), each with its reward.
    pub decisions: Vec<LoggedDecision>,
    /// Records and joins by reason (`records`, `impression_duplicate`, `click_late`, ...).
    pub counts: BTreeMap<String, u64>,
}

/// Collects impressions and clicks from decoded records, then joins them.
#[derive(Debug, Default)]
pub struct LogCollector {
    opts: LogOptions,
    impressions: HashMap<DecisionId, Impression>,
    clicks: Vec<Click>,
    counts: BTreeMap<String, u64>,
}

/// Looks up a top-level field of a record, through a union.
fn field<'a>(fields: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    let v = fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)?;
    Some(match v {
        Value::Union(_, inner) => inner,
        v => v,
    })
}

fn as_str(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::String(s) | Value::Enum(_, s) => Some(s),
        _ => None,
    }
}

fn as_long(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Long(l) => Some(*l),
        Value::Int(i) => Some(i64::from(*i)),
        Value::TimestampMillis(l) => Some(*l),
        _ => None,
    }
}

fn is_valid_item(item: &str) -> bool {
    bandit::batch::is_valid_item_id(item)
}

impl LogCollector {
    /// A collector with these options.
    pub fn new(opts: LogOptions) -> LogCollector {
        LogCollector {
            opts,
            ..LogCollector::default()
        }
    }

    fn count(&mut self, reason: &str) {
        *self.counts.entry(reason.to_string()).or_insert(0) += 1;
    }

    /// Counts a record that could not be decoded.
    pub fn unreadable(&mut self) {
        self.count("records");
        self.count("unreadable");
    }

    /// Takes one decoded record.
    pub fn add(&mut self, value: &Value) {
        self.count("records");
        let Value::Record(fields) = value else {
            self.count("not_a_record");
            return;
        };
        let f = &self.opts.fields;
        let event_type = as_str(field(fields, &f.event_type));
        let is_impression = event_type == Some(self.opts.impression_event_type.as_str());
        let is_click = event_type == Some(self.opts.click_event_type.as_str());
        if !is_impression && !is_click {
            self.count("ignored");
            return;
        }
        let location = as_str(field(fields, &f.location));
        let relevant = if is_impression {
            as_str(field(fields, &f.source)) == Some(self.opts.source.as_str())
        } else {
            location.and_then(|l| fragment_param(l, "source")) == Some(self.opts.source.as_str())
        };
        if !relevant {
            self.count("ignored");
            return;
        }
        if matches!(field(fields, &f.corrupt), Some(Value::Boolean(true))) {
            self.count("corrupt");
            return;
        }
        if as_str(field(fields, &f.user_agent_type))
            .is_some_and(|a| a.eq_ignore_ascii_case("Robot"))
        {
            self.count("robot");
            return;
        }
        let item = as_str(field(fields, &f.item));
        let kind = if is_impression { "impression" } else { "click" };
        let item = match item {
            None | Some("") => {
                self.count(&format!("{kind}_no_item"));
                return;
            }
            Some(i) if !is_valid_item(i) => {
                self.count(&format!("{kind}_bad_item"));
                return;
            }
            Some(i) => i,
        };
        if is_impression {
            self.add_impression(fields, item);
        } else {
            let at = as_long(field(fields, &f.timestamp));
            self.add_click(location.unwrap_or(""), at, item);
        }
    }

    fn add_impression(&mut self, fields: &[(String, Value)], item: &str) {
        let params: Option<&HashMap<String, Value>> =
            match field(fields, &self.opts.fields.event_parameters) {
                Some(Value::Map(m)) => Some(m),
                _ => None,
            };
        let get = |k: &str| match params?.get(k)? {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        };
        let log = match DecisionLog::from_params(get) {
            Ok(l) => l,
            Err(DecisionParamError::Missing) => {
                self.count("impression_no_decision");
                return;
            }
            Err(DecisionParamError::Malformed(p)) => {
                self.count(&format!("impression_malformed_{p}"));
                return;
            }
        };
        if log.arms == 0 {
            self.count("impression_malformed_arms");
            return;
        }
        match self.impressions.get(&log.id) {
            Some(first) => {
                // A retried beacon or a replayed page repeats the same decision: counted once.
                // A different item or probability under the same id is forged or broken.
                let same = first.item == item
                    && first.log.round == log.round
                    && first.log.served_by == log.served_by
                    && first.log.probability == log.probability;
                self.count(if same {
                    "impression_duplicate"
                } else {
                    "impression_conflicting_duplicate"
                });
            }
            None => {
                self.impressions.insert(
                    log.id,
                    Impression {
                        log,
                        item: item.to_string(),
                    },
                );
            }
        }
    }

    fn add_click(&mut self, location: &str, at_ms: Option<i64>, item: &str) {
        let Some(id) = fragment_param(location, PARAM_DECISION) else {
            self.count("click_no_decision");
            return;
        };
        let Some(id) = DecisionId::parse(id) else {
            self.count("click_malformed_decision");
            return;
        };
        let Some(at_ms) = at_ms else {
            self.count("click_no_timestamp");
            return;
        };
        let holdout = fragment_param(location, PARAM_HOLDOUT) == Some("true");
        self.clicks.push(Click {
            id,
            at_ms,
            item: item.to_string(),
            holdout,
        });
    }

    /// Joins clicks to their decisions and returns the log in decision order.
    pub fn finish(mut self) -> JoinedLog {
        let mut clicked: HashMap<DecisionId, bool> = HashMap::new();
        for c in std::mem::take(&mut self.clicks) {
            let Some(imp) = self.impressions.get(&c.id) else {
                self.count("click_unknown_decision");
                continue;
            };
            if imp.item != c.item {
                self.count("click_item_mismatch");
                continue;
            }
            if c.holdout != (imp.log.served_by == ServedBy::Holdout) {
                self.count("click_holdout_mismatch");
                continue;
            }
            match attribute(&c.id, c.at_ms, self.opts.window_ms, self.opts.skew_ms) {
                Attribution::Late => self.count("click_late"),
                Attribution::BeforeDecision => self.count("click_before_decision"),
                Attribution::Within => {
                    if clicked.insert(c.id, true).is_some() {
                        // Reward is whether the decision was clicked: once.
                        self.count("click_repeat");
                    } else {
                        self.count("click_attributed");
                    }
                }
            }
        }
        let mut ids: Vec<DecisionId> = self.impressions.keys().copied().collect();
        ids.sort_unstable();
        let decisions: Vec<LoggedDecision> = ids
            .iter()
            .filter_map(|id| self.impressions.get(id).map(|imp| (id, imp)))
            .map(|(id, imp)| LoggedDecision {
                round: imp.log.round,
                set: imp.log.set,
                item: imp.item.clone(),
                probability: imp.log.probability,
                arms: imp.log.arms,
                holdout: imp.log.served_by == ServedBy::Holdout,
                reward: clicked.contains_key(id),
            })
            .collect();
        self.counts
            .insert("decisions".into(), decisions.len() as u64);
        JoinedLog {
            decisions,
            counts: self.counts,
        }
    }
}

/// Reads one Avro object container file (with its own writer schema) into `collector`. A
/// damaged block ends the file: what was read is kept and the error returned as text.
pub fn read_container(
    path: &Path,
    collector: &mut LogCollector,
) -> Result<Option<String>, LogError> {
    let file_err = |message: String| LogError::File {
        path: path.display().to_string(),
        message,
    };
    let f = File::open(path).map_err(|e| file_err(e.to_string()))?;
    let reader = Reader::new(BufReader::new(f)).map_err(|e| file_err(e.to_string()))?;
    for (index, value) in reader.enumerate() {
        match value {
            Ok(v) => collector.add(&v),
            Err(e) => {
                collector.unreadable();
                return Ok(Some(format!("record {index}: {e}")));
            }
        }
    }
    Ok(None)
}

/// An offset range of one partition: `from` inclusive, `to` exclusive (`None`: the high
/// watermark when reading starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    /// Partition.
    pub partition: i32,
    /// First offset read.
    pub from: i64,
    /// Offset reading stops before.
    pub to: Option<i64>,
}

/// Where and how to read a topic range.
#[derive(Debug, Clone)]
pub struct TopicSource {
    /// Bootstrap servers.
    pub brokers: String,
    /// Topic.
    pub topic: String,
    /// Ranges, one per partition.
    pub ranges: Vec<PartitionRange>,
    /// Framing of records.
    pub wire: Wire,
    /// Give up when no message arrives for this long before the ranges are read.
    pub idle_timeout: Duration,
    /// Extra librdkafka properties (security settings).
    pub kafka_options: Vec<(String, String)>,
}

/// Reads the offset ranges of a topic into `collector`, decoding each record with `schema`.
/// The consumer is assigned the partitions directly and never commits.
pub fn read_topic(
    src: &TopicSource,
    schema: &Schema,
    collector: &mut LogCollector,
) -> Result<(), LogError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &src.brokers)
        // librdkafka wants a group id for a consumer; nothing is committed under it.
        .set("group.id", "collector-bridge-evaluate")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in &src.kafka_options {
        cc.set(k, v);
    }
    let consumer: BaseConsumer = cc.create()?;
    let mut end: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for r in &src.ranges {
        let to = match r.to {
            Some(t) => t,
            None => {
                consumer
                    .fetch_watermarks(&src.topic, r.partition, Duration::from_secs(30))?
                    .1
            }
        };
        if r.from < 0 || to < r.from {
            return Err(LogError::Range(format!(
                "partition {}: offsets {}..{} are not a range (from must be >= 0 and <= to)",
                r.partition, r.from, to
            )));
        }
        if end.insert(r.partition, to).is_some() {
            return Err(LogError::Range(format!(
                "partition {} is given twice",
                r.partition
            )));
        }
        if to > r.from {
            tpl.add_partition_offset(&src.topic, r.partition, Offset::Offset(r.from))?;
        }
    }
    // Partitions whose range is empty are done before reading starts.
    end.retain(|p, to| src.ranges.iter().any(|r| r.partition == *p && r.from < *to));
    if end.is_empty() {
        return Ok(());
    }
    consumer.assign(&tpl)?;
    let mut last = Instant::now();
    while !end.is_empty() {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            if last.elapsed() > src.idle_timeout {
                return Err(LogError::Range(format!(
                    "no message for {:?} with partitions {:?} unfinished (is the range beyond the topic's end, or were the records deleted?)",
                    src.idle_timeout,
                    end.keys().collect::<Vec<_>>()
                )));
            }
            continue;
        };
        let m = m?;
        last = Instant::now();
        let Some(&to) = end.get(&m.partition()) else {
            continue;
        };
        if m.offset() >= to {
            end.remove(&m.partition());
            continue;
        }
        let decoded = m
            .payload()
            .ok_or(crate::avro::DecodeError::Empty)
            .and_then(|p| src.wire.strip(p))
            .and_then(|b| reference::decode(schema, b));
        match decoded {
            Ok(v) => collector.add(&v),
            Err(_) => collector.unreadable(),
        }
        if m.offset() + 1 >= to {
            end.remove(&m.partition());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fields: Vec<(&str, Value)>) -> Value {
        Value::Record(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    fn s(v: &str) -> Value {
        Value::Union(1, Box::new(Value::String(v.into())))
    }

    fn impression(id: &str, item: &str, holdout: bool) -> Value {
        let params: HashMap<String, Value> = [
            ("decision", id),
            ("probability", "0.25"),
            ("round", "1"),
            ("version", "3"),
            ("arms", "4"),
            ("holdout", if holdout { "true" } else { "false" }),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.into())))
        .collect();
        rec(vec![
            ("eventType", Value::String("impression".into())),
            ("source", s("top_pick")),
            ("productId", s(item)),
            ("timestamp", Value::Long(0)),
            (
                "eventParameters",
                Value::Union(1, Box::new(Value::Map(params))),
            ),
        ])
    }

    fn click(loc: &str, item: &str, at: i64) -> Value {
        rec(vec![
            ("eventType", Value::String("pageView".into())),
            ("productId", s(item)),
            ("location", s(loc)),
            ("timestamp", Value::Long(at)),
        ])
    }

    #[test]
    fn joins_and_counts_by_reason() {
        let id = DecisionId {
            time_ms: 1_000_000,
            random: 1,
        };
        let id2 = DecisionId {
            time_ms: 2_000_000,
            random: 2,
        };
        let mut c = LogCollector::new(LogOptions {
            window_ms: 1000,
            skew_ms: 0,
            ..LogOptions::default()
        });
        c.add(&impression(&id.to_string(), "a", false));
        c.add(&impression(&id.to_string(), "a", false));
        c.add(&impression(&id.to_string(), "b", false));
        c.add(&impression(&id2.to_string(), "b", true));
        c.add(&impression("zz", "b", true));
        c.add(&Value::Null);
        let loc = |id: &DecisionId, h: bool| {
            format!(
                "https://shop/p/a/#/?source=top_pick&decision={id}{}",
                if h { "&holdout=true" } else { "" }
            )
        };
        c.add(&click(&loc(&id, false), "a", 1_000_500));
        c.add(&click(&loc(&id, false), "a", 1_000_600));
        c.add(&click(&loc(&id, false), "b", 1_000_600));
        c.add(&click(&loc(&id2, true), "b", 9_000_000));
        c.add(&click(&loc(&id2, false), "b", 2_000_001));
        c.add(&click(
            "https://shop/p/a/#/?source=top_pick&decision=nope",
            "a",
            0,
        ));
        c.add(&click("https://shop/p/a/#/?source=other", "a", 0));
        let j = c.finish();
        assert_eq!(j.decisions.len(), 2);
        assert!(j.decisions[0].reward && !j.decisions[1].reward);
        assert!(j.decisions[1].holdout);
        let n = |k: &str| j.counts.get(k).copied().unwrap_or(0);
        assert_eq!(n("records"), 13);
        assert_eq!(n("impression_duplicate"), 1);
        assert_eq!(n("impression_conflicting_duplicate"), 1);
        assert_eq!(n("impression_malformed_decision"), 1);
        assert_eq!(n("not_a_record"), 1);
        assert_eq!(n("click_attributed"), 1);
        assert_eq!(n("click_repeat"), 1);
        assert_eq!(n("click_item_mismatch"), 1);
        assert_eq!(n("click_late"), 1);
        assert_eq!(n("click_holdout_mismatch"), 1);
        assert_eq!(n("click_malformed_decision"), 1);
        assert_eq!(n("ignored"), 1);
    }
}
