//! Command-line flags, environment and TOML configuration, merged with flags (and their
//! environment variables) over the file over built-in defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use bandit::protocol::DEFAULT_SLOT;

use crate::avro::Wire;
use crate::classify::{FieldNames, Reward, Rules};
use crate::delivery::{FlushPolicy, DEFAULT_FLUSH_EVENTS, DEFAULT_FLUSH_INTERVAL_MS};
use crate::worker_client::DEFAULT_SHUTDOWN_GRACE_MS;

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// Path.
        path: String,
        /// Parser message.
        message: String,
    },
    /// A required setting is missing or a value is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// Classification flags shared by `run`, `replay` and `simulate`.
#[derive(Debug, Clone, Default, Args)]
pub struct ClassifyArgs {
    /// Slot fed by the `top_pick` source (shorthand for --source-slot top_pick=SLOT).
    #[arg(long, env = "BRIDGE_SLOT")]
    pub slot: Option<String>,
    /// Map a source value to a slot, SOURCE=SLOT (repeatable; several slots may share a topic).
    #[arg(long = "source-slot", value_name = "SOURCE=SLOT")]
    pub source_slot: Vec<String>,
    /// Field holding the event type.
    #[arg(long)]
    pub event_type_field: Option<String>,
    /// Field holding the page type.
    #[arg(long)]
    pub page_type_field: Option<String>,
    /// Field holding the item id.
    #[arg(long)]
    pub item_field: Option<String>,
    /// Field holding the click or impression source.
    #[arg(long)]
    pub source_field: Option<String>,
    /// Field holding Divolte's duplicate flag.
    #[arg(long)]
    pub duplicate_field: Option<String>,
    /// Field holding Divolte's corruption flag.
    #[arg(long)]
    pub corruption_field: Option<String>,
    /// Field holding the user agent type.
    #[arg(long)]
    pub user_agent_type_field: Option<String>,
    /// Event type counted as an impression (repeatable; default `impression`).
    #[arg(long = "impression-event-type")]
    pub impression_event_types: Vec<String>,
    /// Event type counted as a click (repeatable; default `pageView`).
    #[arg(long = "click-event-type")]
    pub click_event_types: Vec<String>,
    /// Page type a click must have (repeatable; default any).
    #[arg(long = "click-page-type")]
    pub click_page_types: Vec<String>,
    /// User agent type treated as a robot (repeatable; default `Robot`).
    #[arg(long = "robot-user-agent-type")]
    pub robot_agent_types: Vec<String>,
    /// Count events Divolte flagged as duplicates instead of dropping them.
    #[arg(long)]
    pub keep_duplicates: bool,
    /// Count events Divolte flagged as corrupt instead of dropping them.
    #[arg(long)]
    pub keep_corrupt: bool,
    /// Count events from robots instead of dropping them.
    #[arg(long)]
    pub keep_robots: bool,
    /// How long after its decision a click still counts (e.g. 30m, 1h); later clicks are
    /// dropped as `late_click`. Default 30m, Divolte's session timeout.
    #[arg(long, value_name = "DURATION", value_parser = crate::operator::parse_duration)]
    pub attribution_window: Option<std::time::Duration>,
    /// Drop impressions and clicks without a usable decision (`no_decision`) instead of
    /// counting them; for shops whose every page logs its decisions.
    #[arg(long)]
    pub require_decision: bool,
    /// What rewards a decision: `click` (the click on the pick, the default), or
    /// `event:TYPE[:PAGE_TYPE]`, a later event of the visit such as `event:addToBasket`, which
    /// must name the decision (fired on the page the pick's link opened, or with a `decision`
    /// parameter) and carry the item; the click itself then counts for nothing.
    #[arg(long, value_name = "click|event:TYPE[:PAGE]")]
    pub reward: Option<Reward>,
}

/// Worker connection flags.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Base URL of the worker, e.g. http://127.0.0.1:8787.
    #[arg(long, env = "BRIDGE_WORKER_URL")]
    pub worker_url: Option<String>,
    /// Name of the environment variable holding the ingest token.
    #[arg(long)]
    pub token_env: Option<String>,
}

/// Flags of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// TOML file with the same settings (flags win over it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "BRIDGE_BROKERS")]
    pub brokers: Option<String>,
    /// Topic to consume (comma-separated for several).
    #[arg(long, env = "BRIDGE_TOPIC")]
    pub topic: Option<String>,
    /// Consumer group id.
    #[arg(long, env = "BRIDGE_GROUP")]
    pub group: Option<String>,
    /// Avro schema of the records (default: the built-in TopPickEvent schema).
    #[arg(long, env = "BRIDGE_SCHEMA")]
    pub schema: Option<PathBuf>,
    /// Message framing.
    #[arg(long, value_enum)]
    pub wire: Option<Wire>,
    #[command(flatten)]
    /// Worker connection.
    pub worker: WorkerArgs,
    #[command(flatten)]
    /// Classification.
    pub classify: ClassifyArgs,
    /// Push at least this often, in milliseconds.
    #[arg(long)]
    pub flush_interval_ms: Option<u64>,
    /// Push after this many messages.
    #[arg(long)]
    pub flush_events: Option<u64>,
    /// Kafka consumer session timeout in milliseconds (group joins take about half of it).
    #[arg(long)]
    pub session_timeout_ms: Option<u64>,
    /// Copy undecodable or unclassifiable messages to this topic.
    #[arg(long, env = "BRIDGE_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9898.
    #[arg(long, env = "BRIDGE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Extra librdkafka property, KEY=VALUE (repeatable).
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub kafka_options: Vec<String>,
    /// Keep retrying the worker this long after SIGTERM before giving up, in milliseconds.
    #[arg(long)]
    pub shutdown_grace_ms: Option<u64>,
}

/// The TOML file: every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Kafka bootstrap servers.
    pub brokers: Option<String>,
    /// Topic(s), comma-separated.
    pub topic: Option<String>,
    /// Consumer group.
    pub group: Option<String>,
    /// Schema path (relative to the config file).
    pub schema: Option<PathBuf>,
    /// Framing.
    pub wire: Option<Wire>,
    /// Worker URL.
    pub worker_url: Option<String>,
    /// Token variable name.
    pub token_env: Option<String>,
    /// Slot of `top_pick`.
    pub slot: Option<String>,
    /// Source -> slot.
    pub source_slots: Option<BTreeMap<String, String>>,
    /// Field names.
    pub fields: Option<FieldNames>,
    /// Impression event types.
    pub impression_event_types: Option<Vec<String>>,
    /// Click event types.
    pub click_event_types: Option<Vec<String>>,
    /// Click page types.
    pub click_page_types: Option<Vec<String>>,
    /// Robot user agent types.
    pub robot_user_agent_types: Option<Vec<String>>,
    /// Drop duplicates.
    pub drop_duplicates: Option<bool>,
    /// Drop corrupt events.
    pub drop_corrupt: Option<bool>,
    /// Drop robots.
    pub drop_robots: Option<bool>,
    /// Attribution window of a click, ms.
    pub attribution_window_ms: Option<u64>,
    /// Drop events without a usable decision.
    pub require_decision: Option<bool>,
    /// What rewards a decision.
    pub reward: Option<String>,
    /// Flush interval.
    pub flush_interval_ms: Option<u64>,
    /// Flush size.
    pub flush_events: Option<u64>,
    /// Session timeout.
    pub session_timeout_ms: Option<u64>,
    /// Dead-letter topic.
    pub dead_letter_topic: Option<String>,
    /// Metrics address.
    pub metrics_addr: Option<String>,
    /// Extra librdkafka properties.
    pub kafka: Option<BTreeMap<String, String>>,
    /// Shutdown grace.
    pub shutdown_grace_ms: Option<u64>,
}

impl FileConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// Everything `run` needs, resolved.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Topics.
    pub topics: Vec<String>,
    /// Group id.
    pub group: String,
    /// Schema path; `None` is the built-in schema.
    pub schema: Option<PathBuf>,
    /// Framing.
    pub wire: Wire,
    /// Worker URL.
    pub worker_url: String,
    /// Token variable name.
    pub token_env: String,
    /// Rules.
    pub rules: Rules,
    /// When to push.
    pub flush: FlushPolicy,
    /// Session timeout.
    pub session_timeout_ms: u64,
    /// Dead-letter topic.
    pub dead_letter_topic: Option<String>,
    /// Metrics address.
    pub metrics_addr: Option<String>,
    /// Extra librdkafka properties.
    pub kafka_options: Vec<(String, String)>,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
}

/// Default Kafka consumer session timeout, in milliseconds.
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;
/// Default token variable.
pub const DEFAULT_TOKEN_ENV: &str = "INGEST_TOKEN";

fn split_pair(s: &str, what: &str) -> Result<(String, String), ConfigError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(ConfigError::Invalid(format!(
            "{what} must look like KEY=VALUE, got {s:?}"
        ))),
    }
}

fn pick_list(flag: &[String], file: Option<&Vec<String>>, default: Vec<String>) -> Vec<String> {
    if !flag.is_empty() {
        flag.to_vec()
    } else {
        file.cloned().unwrap_or(default)
    }
}

impl ClassifyArgs {
    /// The rules from flags over the file over defaults.
    pub fn rules(&self, file: &FileConfig) -> Result<Rules, ConfigError> {
        let d = Rules::default();
        let mut fields = file.fields.clone().unwrap_or_default();
        let set = |dst: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                *dst = v.clone();
            }
        };
        set(&mut fields.event_type, &self.event_type_field);
        set(&mut fields.page_type, &self.page_type_field);
        set(&mut fields.item, &self.item_field);
        set(&mut fields.source, &self.source_field);
        set(&mut fields.duplicate, &self.duplicate_field);
        set(&mut fields.corrupt, &self.corruption_field);
        set(&mut fields.user_agent_type, &self.user_agent_type_field);
        let mut sources: Vec<(String, String)> = Vec::new();
        if !self.source_slot.is_empty() {
            for s in &self.source_slot {
                sources.push(split_pair(s, "--source-slot")?);
            }
        } else if let Some(m) = &file.source_slots {
            sources = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        if sources.is_empty() {
            let slot = self
                .slot
                .clone()
                .or_else(|| file.slot.clone())
                .unwrap_or_else(|| DEFAULT_SLOT.to_string());
            sources.push((bandit::protocol::TOP_PICK_SOURCE.to_string(), slot));
        }
        Ok(Rules {
            fields,
            impression_event_types: pick_list(
                &self.impression_event_types,
                file.impression_event_types.as_ref(),
                d.impression_event_types,
            ),
            click_event_types: pick_list(
                &self.click_event_types,
                file.click_event_types.as_ref(),
                d.click_event_types,
            ),
            click_page_types: pick_list(
                &self.click_page_types,
                file.click_page_types.as_ref(),
                d.click_page_types,
            ),
            sources,
            drop_duplicates: !self.keep_duplicates && file.drop_duplicates.unwrap_or(true),
            drop_corrupt: !self.keep_corrupt && file.drop_corrupt.unwrap_or(true),
            drop_robots: !self.keep_robots && file.drop_robots.unwrap_or(true),
            robot_agent_types: pick_list(
                &self.robot_agent_types,
                file.robot_user_agent_types.as_ref(),
                d.robot_agent_types,
            ),
            attribution_window_ms: self
                .attribution_window
                .map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX))
                .or(file.attribution_window_ms)
                .unwrap_or(d.attribution_window_ms),
            clock_skew_ms: d.clock_skew_ms,
            require_decision: self.require_decision || file.require_decision.unwrap_or(false),
            reward: match (&self.reward, &file.reward) {
                (Some(r), _) => r.clone(),
                (None, Some(text)) => text
                    .parse()
                    .map_err(|e: String| ConfigError::Invalid(format!("reward = {e}")))?,
                (None, None) => Reward::Click,
            },
        })
    }
}

impl WorkerArgs {
    /// Worker URL and token variable name, flags over file.
    pub fn resolve(&self, file: &FileConfig) -> Result<(String, String), ConfigError> {
        let url = self
            .worker_url
            .clone()
            .or_else(|| file.worker_url.clone())
            .ok_or_else(|| ConfigError::Invalid("--worker-url is required".into()))?;
        if !url.is_ascii() {
            // The bridge parses URLs without Unicode tables (idna's ASCII-only adapter, which
            // keeps the worker's bundle small; one lock file serves both).
            return Err(ConfigError::Invalid(format!(
                "--worker-url {url:?}: write the host in its ASCII form (punycode, e.g. \
                 https://xn--bcher-kva.example for bücher.example) and escape the path"
            )));
        }
        let token_env = self
            .token_env
            .clone()
            .or_else(|| file.token_env.clone())
            .unwrap_or_else(|| DEFAULT_TOKEN_ENV.to_string());
        Ok((url, token_env))
    }
}

impl RunArgs {
    /// Merges flags, environment, the config file and defaults.
    pub fn resolve(&self) -> Result<RunConfig, ConfigError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let base = self
            .config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let need = |v: Option<String>, name: &str| {
            v.ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "--{name} is required (flag, environment or config file)"
                ))
            })
        };
        let brokers = need(
            self.brokers.clone().or_else(|| file.brokers.clone()),
            "brokers",
        )?;
        let topic = need(self.topic.clone().or_else(|| file.topic.clone()), "topic")?;
        let topics: Vec<String> = topic
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if topics.is_empty() {
            return Err(ConfigError::Invalid("--topic is empty".into()));
        }
        let group = need(self.group.clone().or_else(|| file.group.clone()), "group")?;
        let schema = self
            .schema
            .clone()
            .or_else(|| file.schema.as_ref().map(|p| base.join(p)));
        let (worker_url, token_env) = self.worker.resolve(&file)?;
        let mut kafka_options: Vec<(String, String)> =
            file.kafka.clone().unwrap_or_default().into_iter().collect();
        for o in &self.kafka_options {
            kafka_options.push(split_pair(o, "--kafka-option")?);
        }
        let flush_events = self
            .flush_events
            .or(file.flush_events)
            .unwrap_or(DEFAULT_FLUSH_EVENTS);
        if flush_events == 0 {
            return Err(ConfigError::Invalid(
                "--flush-events must be at least 1".into(),
            ));
        }
        Ok(RunConfig {
            brokers,
            topics,
            group,
            schema,
            wire: self.wire.or(file.wire).unwrap_or_default(),
            worker_url,
            token_env,
            rules: self.classify.rules(&file)?,
            flush: FlushPolicy::new(
                flush_events,
                Duration::from_millis(
                    self.flush_interval_ms
                        .or(file.flush_interval_ms)
                        .unwrap_or(DEFAULT_FLUSH_INTERVAL_MS),
                ),
            ),
            session_timeout_ms: self
                .session_timeout_ms
                .or(file.session_timeout_ms)
                .unwrap_or(DEFAULT_SESSION_TIMEOUT_MS),
            dead_letter_topic: self.dead_letter_topic.clone().or(file.dead_letter_topic),
            metrics_addr: self.metrics_addr.clone().or(file.metrics_addr),
            kafka_options,
            shutdown_grace: Duration::from_millis(
                self.shutdown_grace_ms
                    .or(file.shutdown_grace_ms)
                    .unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS),
            ),
        })
    }
}

/// Reads the ingest token from the environment variable `name` (absent: no auth header).
pub fn read_token(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|t| !t.is_empty())
}
