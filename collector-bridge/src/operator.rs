//! The operator commands: `slot pin|unpin|exclude|include|show`, `catalog delete` and
//! `audit`, speaking [`bandit::operator`] to the worker with the operator token.
//!
//! Each request is sent once through [`WorkerClient::send_once`] (a person is waiting, and a
//! write is not repeated behind their back); every answer other than 2xx becomes an error
//! that says what to do. The token comes from `OPERATOR_TOKEN` (or the variable named by
//! `--operator-token-env`), else from the ingest token variable, as the worker also takes the
//! ingest token where no operator token is set.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;

use bandit::batch::is_valid_item_id;
pub use bandit::operator::format_utc;
use bandit::operator::{
    AuditEntry, AuditResponse, CatalogDeleteResponse, ExcludeRequest, Pin, PinLearning, PinRequest,
    SlotControls,
};
use bandit::protocol::DEFAULT_SLOT;

use crate::config::{read_token, FileConfig, WorkerArgs};
use crate::metrics::Metrics;
use crate::worker_client::{error_message, Backoff, WorkerClient};

/// Default name of the variable holding the operator token.
pub const DEFAULT_OPERATOR_TOKEN_ENV: &str = "OPERATOR_TOKEN";

/// How the operator commands reach the worker.
#[derive(Debug, Clone, Args)]
pub struct OperatorConn {
    #[command(flatten)]
    /// Worker URL and ingest token variable.
    pub worker: WorkerArgs,
    /// TOML file to take worker_url and token_env from (the `run` configuration; flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Name of the environment variable holding the operator token. When that variable is
    /// unset or empty, the ingest token variable is used instead (--token-env, else the
    /// file's token_env, else INGEST_TOKEN).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_OPERATOR_TOKEN_ENV)]
    pub operator_token_env: String,
    /// Print the worker's JSON answer instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `slot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SlotCommand {
    /// Show ITEM instead of the bandit's pick, for a while (--for) or until a time (--until-ms).
    Pin(PinArgs),
    /// Remove the slot's pin: the bandit picks again.
    Unpin(SlotArgs),
    /// Never show these items in the slot, nor draw them into its set.
    Exclude(ItemsArgs),
    /// Allow excluded items again.
    Include(ItemsArgs),
    /// Print the slot's pin and exclude list.
    Show(SlotArgs),
}

/// A slot and the connection.
#[derive(Debug, Clone, Args)]
pub struct SlotArgs {
    /// Slot name.
    #[arg(long, default_value = DEFAULT_SLOT)]
    pub slot: String,
    #[command(flatten)]
    /// Connection.
    pub conn: OperatorConn,
}

/// `slot pin`.
#[derive(Debug, Clone, Args)]
pub struct PinArgs {
    /// Catalog item id to show.
    pub item: String,
    /// Slot name.
    #[arg(long, default_value = DEFAULT_SLOT)]
    pub slot: String,
    /// How long the pin lasts from now: a number and a unit, s, m, h or d (30m, 2h, 1d, 90s,
    /// 1h30m).
    #[arg(
        long = "for",
        value_name = "DURATION",
        value_parser = parse_duration,
        required_unless_present = "until_ms",
        conflicts_with = "until_ms"
    )]
    pub for_: Option<Duration>,
    /// When the pin ends, in milliseconds since the Unix epoch. (There is no RFC 3339
    /// --until: the bridge has no date parser. With GNU date:
    /// --until-ms $(date -d 2026-11-28T14:00:00Z +%s000).)
    #[arg(long, value_name = "MS")]
    pub until_ms: Option<u64>,
    /// Share of the slot's requests that show the item (above 0, at most 1); the rest get
    /// the bandit's pick.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub share: f64,
    /// Stop learning while the pin lasts (counts are set aside); by default learning
    /// continues.
    #[arg(long)]
    pub pause: bool,
    #[command(flatten)]
    /// Connection.
    pub conn: OperatorConn,
}

/// `slot exclude` and `slot include`.
#[derive(Debug, Clone, Args)]
pub struct ItemsArgs {
    /// Slot name.
    #[arg(long, default_value = DEFAULT_SLOT)]
    pub slot: String,
    /// Item ids.
    #[arg(required = true, value_name = "ITEM")]
    pub items: Vec<String>,
    #[command(flatten)]
    /// Connection.
    pub conn: OperatorConn,
}

/// `catalog delete`.
#[derive(Debug, Clone, Args)]
pub struct CatalogDeleteArgs {
    /// Item ids to delete (each is tried; the command fails if any could not be deleted).
    #[arg(required = true, value_name = "ITEM")]
    pub items: Vec<String>,
    #[command(flatten)]
    /// Connection.
    pub conn: OperatorConn,
}

/// `audit`.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Print at most this many entries (the newest).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    #[command(flatten)]
    /// Connection.
    pub conn: OperatorConn,
}

/// Parses a duration such as `30m`, `2h`, `1d`, `90s` or `1h30m` (units s, m, h, d).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const HELP: &str = "use a number and a unit: s, m, h or d (e.g. 90s, 30m, 2h, 1d, 1h30m)";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("empty duration; {HELP}"));
    }
    let mut secs: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{text:?} is not a duration; {HELP}"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is too long"))?;
        rest = &rest[digits..];
        let unit = match rest.bytes().next() {
            Some(b's') => 1,
            Some(b'm') => 60,
            Some(b'h') => 3_600,
            Some(b'd') => 86_400,
            Some(_) => return Err(format!("{text:?} has an unknown unit; {HELP}")),
            None => return Err(format!("{text:?} has no unit; {HELP}")),
        };
        rest = &rest[1..];
        secs = n
            .checked_mul(unit)
            .and_then(|s| secs.checked_add(s))
            .ok_or_else(|| format!("{text:?} is too long"))?;
    }
    if secs == 0 {
        return Err(format!("{text:?} is no time at all"));
    }
    Ok(Duration::from_secs(secs))
}

/// The system clock, in ms since the Unix epoch.
fn now_ms() -> Result<f64> {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    Ok(d.as_millis() as f64)
}

/// The token and the variable it came from: `operator_env`, else `ingest_env` (unset and
/// empty variables count as absent).
pub fn pick_token(
    operator_env: &str,
    ingest_env: &str,
    read: impl Fn(&str) -> Option<String>,
) -> Option<(String, String)> {
    [operator_env, ingest_env]
        .into_iter()
        .find_map(|var| read(var).map(|t| (t, var.to_string())))
}

/// A client with the operator credential.
pub struct Operator {
    client: WorkerClient,
    operator_env: String,
    /// The variable the token came from, or `None` when none was found.
    token_var: Option<String>,
    ingest_env: String,
    json: bool,
}

impl OperatorConn {
    /// Resolves the worker URL and the token, flags over the file over defaults.
    pub fn connect(&self) -> Result<Operator> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let (url, ingest_env) = self.worker.resolve(&file).context(
            "say where the worker is: --worker-url, BRIDGE_WORKER_URL or worker_url in --config",
        )?;
        let picked = pick_token(&self.operator_token_env, &ingest_env, read_token);
        if picked.is_none() {
            tracing::warn!(
                "neither {} nor {ingest_env} is set: sending no token",
                self.operator_token_env
            );
        }
        let (token, token_var) = picked.unzip();
        Ok(Operator {
            client: WorkerClient::new(
                &url,
                token,
                Backoff::default(),
                Arc::new(AtomicBool::new(false)),
                Arc::new(Metrics::default()),
            ),
            operator_env: self.operator_token_env.clone(),
            token_var,
            ingest_env,
            json: self.json,
        })
    }
}

/// What a 404 means for a request.
#[derive(Debug, Clone, Copy)]
enum Missing<'a> {
    Slot(&'a str),
    Item(&'a str),
    /// A pin: the slot, or the item it names (the worker's message tells which).
    SlotOrItem(&'a str, &'a str),
    Route,
}

impl Operator {
    /// Sends one request; a 2xx answer parsed as `T` (and its text), anything else an error
    /// saying what to do.
    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
        missing: Missing<'_>,
    ) -> Result<(T, String)> {
        let (status, text) = self
            .client
            .send_once(method, url, body)
            .context("check --worker-url and that the worker is running")?;
        if (200..300).contains(&status) {
            let value = serde_json::from_str(&text).with_context(|| {
                format!(
                    "unexpected answer to {method} {url}: {}",
                    text.chars().take(200).collect::<String>()
                )
            })?;
            return Ok((value, text));
        }
        let message = error_message(&text);
        let what = match status {
            401 => match &self.token_var {
                Some(var) => format!(
                    "the worker refused the token from {var}: set {} to the worker's operator token",
                    self.operator_env
                ),
                None => format!(
                    "the worker wants a token and none was sent ({} and {} are unset): set {} to the worker's operator token",
                    self.operator_env, self.ingest_env, self.operator_env
                ),
            },
            403 => format!(
                "the worker does not allow operator changes with the token from {}: set {} to the worker's operator token",
                self.token_var.as_deref().unwrap_or("nowhere"),
                self.operator_env
            ),
            404 => match missing {
                Missing::SlotOrItem(_, item) if !message.contains("unknown slot") => {
                    format!("{item} is not in the catalog: import it first")
                }
                Missing::Slot(slot) | Missing::SlotOrItem(slot, _) => format!(
                    "the worker has no slot {slot:?} (or no operator API): check --slot and --worker-url"
                ),
                Missing::Item(id) => format!("{id} is not in the catalog"),
                Missing::Route => {
                    "the worker has no operator API here: check --worker-url and that the worker is up to date".to_string()
                }
            },
            400 | 422 => format!("the worker refused the request: {message}"),
            409 => format!("the worker refused the change: {message}"),
            500..=599 => "the worker failed; try again later".to_string(),
            _ => "unexpected answer".to_string(),
        };
        Err(anyhow!(
            "{what} (the worker answered {status} to {method} {url}: {message})"
        ))
    }

    /// Prints the worker's JSON answer, when asked to.
    fn print_json(&self, text: &str) -> bool {
        if self.json {
            println!("{}", text.trim());
        }
        self.json
    }

    /// Pins `req.item` to `slot`.
    pub fn pin(&self, slot: &str, req: &PinRequest) -> Result<(SlotControls, String)> {
        let body = serde_json::to_vec(req)?;
        self.call(
            "POST",
            &self.client.slot_url(slot, "/pin"),
            Some(&body),
            Missing::SlotOrItem(slot, &req.item),
        )
    }

    /// Removes the slot's pin.
    pub fn unpin(&self, slot: &str) -> Result<(SlotControls, String)> {
        self.call(
            "DELETE",
            &self.client.slot_url(slot, "/pin"),
            None,
            Missing::Slot(slot),
        )
    }

    /// Changes the slot's exclude list.
    pub fn exclude(&self, slot: &str, req: &ExcludeRequest) -> Result<(SlotControls, String)> {
        let body = serde_json::to_vec(req)?;
        self.call(
            "POST",
            &self.client.slot_url(slot, "/exclude"),
            Some(&body),
            Missing::Slot(slot),
        )
    }

    /// The slot's controls.
    pub fn controls(&self, slot: &str) -> Result<(SlotControls, String)> {
        self.call(
            "GET",
            &self.client.slot_url(slot, "/controls"),
            None,
            Missing::Slot(slot),
        )
    }

    /// Deletes one catalog item.
    pub fn delete_item(&self, id: &str) -> Result<(CatalogDeleteResponse, String)> {
        if !is_valid_item_id(id) {
            bail!("{id:?} is not a valid item id, so it cannot be in the catalog");
        }
        self.call(
            "DELETE",
            &self.client.catalog_item_url(id),
            None,
            Missing::Item(id),
        )
    }

    /// The audit log, newest first (at most `limit` entries, when given).
    pub fn audit(&self, limit: Option<u64>) -> Result<(AuditResponse, String)> {
        let mut url = self.client.api_url("/api/audit");
        if let Some(n) = limit {
            url.push_str(&format!("?limit={n}"));
        }
        self.call("GET", &url, None, Missing::Route)
    }
}

/// `pinned 42 to home-top-pick until 2026-11-28T14:00:00Z (share 1, learning continues)`.
pub fn pin_line(slot: &str, pin: &Pin) -> String {
    format!(
        "pinned {} to {slot} until {} (share {}, {})",
        pin.item,
        format_utc(pin.until_ms),
        pin.share,
        PinLearning::describe(pin.learning)
    )
}

/// The exclude list in one line.
pub fn exclude_line(c: &SlotControls) -> String {
    if c.exclude.is_empty() {
        format!("nothing excluded from {}", c.slot)
    } else {
        format!(
            "excluded from {} ({}): {}",
            c.slot,
            c.exclude.len(),
            c.exclude.join(", ")
        )
    }
}

/// The controls as `show` prints them: the pin or `no pin`, then the exclude list.
pub fn controls_lines(c: &SlotControls) -> Vec<String> {
    let mut lines = vec![match &c.pin {
        Some(pin) => pin_line(&c.slot, pin),
        None => format!("no pin on {}", c.slot),
    }];
    lines.push(exclude_line(c));
    if !c.removed_arms.is_empty() {
        lines.push(format!(
            "arms that left the set: {}",
            c.removed_arms.join(", ")
        ));
    }
    lines
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_string(),
    }
}

/// One audit line: UTC time, actor, action, target, detail.
pub fn audit_line(e: &AuditEntry) -> String {
    format!(
        "{}  {:<8}  {:<14}  {}  {}",
        format_utc(e.at_ms),
        snake(&e.actor),
        snake(&e.action),
        e.target,
        e.detail
    )
}

/// `slot ...`.
pub fn slot(cmd: &SlotCommand) -> Result<()> {
    match cmd {
        SlotCommand::Pin(a) => pin(a),
        SlotCommand::Unpin(a) => {
            let op = a.conn.connect()?;
            let (c, text) = op
                .unpin(&a.slot)
                .with_context(|| format!("could not unpin {}", a.slot))?;
            if !op.print_json(&text) {
                match &c.pin {
                    None => println!("unpinned {}: the bandit picks again", c.slot),
                    Some(p) => println!("still {}", pin_line(&c.slot, p)),
                }
            }
            Ok(())
        }
        SlotCommand::Exclude(a) => exclude(a, true),
        SlotCommand::Include(a) => exclude(a, false),
        SlotCommand::Show(a) => {
            let op = a.conn.connect()?;
            let (c, text) = op
                .controls(&a.slot)
                .with_context(|| format!("could not read the controls of {}", a.slot))?;
            if !op.print_json(&text) {
                for l in controls_lines(&c) {
                    println!("{l}");
                }
            }
            Ok(())
        }
    }
}

fn pin(a: &PinArgs) -> Result<()> {
    let now = now_ms()?;
    let until_ms = match (a.for_, a.until_ms) {
        (Some(d), _) => now + d.as_millis() as f64,
        (None, Some(ms)) => ms as f64,
        (None, None) => bail!("say how long the pin lasts: --for DURATION or --until-ms MS"),
    };
    if until_ms <= now {
        bail!(
            "--until-ms {until_ms} ({}) is not in the future",
            format_utc(until_ms)
        );
    }
    let req = PinRequest {
        item: a.item.clone(),
        until_ms,
        share: a.share,
        learning: if a.pause {
            PinLearning::Pause
        } else {
            PinLearning::Continue
        },
    };
    req.validate().map_err(|e| anyhow!(e)).context("not sent")?;
    let op = a.conn.connect()?;
    let (c, text) = op
        .pin(&a.slot, &req)
        .with_context(|| format!("could not pin {} to {}", a.item, a.slot))?;
    if op.print_json(&text) {
        return Ok(());
    }
    match &c.pin {
        Some(p) => println!("{}", pin_line(&c.slot, p)),
        None => bail!(
            "the worker took the pin but reports no active pin on {}: check the clock and run `slot show`",
            c.slot
        ),
    }
    if !c.removed_arms.is_empty() {
        println!("arms that left the set: {}", c.removed_arms.join(", "));
    }
    Ok(())
}

fn exclude(a: &ItemsArgs, add: bool) -> Result<()> {
    let req = if add {
        ExcludeRequest {
            add: a.items.clone(),
            remove: vec![],
        }
    } else {
        ExcludeRequest {
            add: vec![],
            remove: a.items.clone(),
        }
    };
    req.validate().map_err(|e| anyhow!(e)).context("not sent")?;
    let op = a.conn.connect()?;
    let verb = if add { "exclude" } else { "include" };
    let (c, text) = op
        .exclude(&a.slot, &req)
        .with_context(|| format!("could not {verb} items on {}", a.slot))?;
    if op.print_json(&text) {
        return Ok(());
    }
    let items = a.items.join(", ");
    if add {
        println!("excluded {items} from {}", c.slot);
    } else {
        println!("allowed {items} again on {}", c.slot);
    }
    println!("{}", exclude_line(&c));
    if !c.removed_arms.is_empty() {
        println!("arms that left the set: {}", c.removed_arms.join(", "));
    }
    Ok(())
}

/// `catalog delete`: one request per item, each reported; fails if any failed.
pub fn catalog_delete(a: &CatalogDeleteArgs) -> Result<()> {
    let op = a.conn.connect()?;
    let mut failed = 0usize;
    for id in &a.items {
        match op.delete_item(id) {
            Ok((d, text)) => {
                if !op.print_json(&text) {
                    println!(
                        "deleted {} ({} items left in the catalog)",
                        d.deleted, d.total
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("could not delete {id}: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} items could not be deleted (see above)",
            a.items.len()
        );
    }
    Ok(())
}

/// `audit`: the operator writes, newest first.
pub fn audit(a: &AuditArgs) -> Result<()> {
    let op = a.conn.connect()?;
    let (mut r, text) = op.audit(a.limit).context("could not read the audit log")?;
    let limit = a.limit.map_or(usize::MAX, |n| n as usize);
    if op.json {
        // The worker's answer, cut to --limit should it send more.
        let mut v: serde_json::Value = serde_json::from_str(&text)?;
        if let Some(entries) = v.get_mut("entries").and_then(|e| e.as_array_mut()) {
            entries.truncate(limit);
        }
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    r.entries.sort_by(|x, y| y.at_ms.total_cmp(&x.at_ms));
    r.entries.truncate(limit);
    if r.entries.is_empty() {
        println!("no audit entries");
    }
    for e in &r.entries {
        println!("{}", audit_line(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bandit::operator::{Actor, AuditAction};

    use super::*;

    #[test]
    fn durations_parse() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("30m"), Ok(1_800));
        assert_eq!(secs("2h"), Ok(7_200));
        assert_eq!(secs("1d"), Ok(86_400));
        assert_eq!(secs("1h30m"), Ok(5_400));
        assert_eq!(secs(" 1d2h3m4s "), Ok(93_784));
        for bad in [
            "", "2", "h", "2x", "2 h", "-1h", "1.5h", "0s", "0h0m", "1hh", "2H", "1ms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("300000000000000000d").is_err());
    }

    #[test]
    fn the_operator_token_falls_back_to_the_ingest_token() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
                    .filter(|v| !v.is_empty())
            }
        };
        let both = env(&[("OPERATOR_TOKEN", "op"), ("INGEST_TOKEN", "in")]);
        assert_eq!(
            pick_token("OPERATOR_TOKEN", "INGEST_TOKEN", both),
            Some(("op".into(), "OPERATOR_TOKEN".into()))
        );
        let empty = env(&[("OPERATOR_TOKEN", ""), ("INGEST_TOKEN", "in")]);
        assert_eq!(
            pick_token("OPERATOR_TOKEN", "INGEST_TOKEN", empty),
            Some(("in".into(), "INGEST_TOKEN".into()))
        );
        assert_eq!(pick_token("OPERATOR_TOKEN", "INGEST_TOKEN", env(&[])), None);
    }

    #[test]
    fn controls_and_audit_read_plainly() {
        let mut c = SlotControls {
            slot: "home-top-pick".into(),
            pin: Some(Pin {
                item: "42".into(),
                until_ms: 1_795_874_400_000.0,
                share: 1.0,
                learning: PinLearning::Continue,
            }),
            exclude: vec!["a".into(), "b".into()],
            removed_arms: vec![],
        };
        assert_eq!(
            controls_lines(&c),
            [
                "pinned 42 to home-top-pick until 2026-11-28T14:00:00Z (share 1, learning continues)",
                "excluded from home-top-pick (2): a, b",
            ]
        );
        c.pin = None;
        c.exclude.clear();
        assert_eq!(
            controls_lines(&c),
            [
                "no pin on home-top-pick",
                "nothing excluded from home-top-pick"
            ]
        );
        let e = AuditEntry::new(
            1_700_000_000_000.0,
            Actor::Ingest,
            AuditAction::CatalogDelete,
            "catalog",
            "deleted 7",
        );
        assert_eq!(
            audit_line(&e),
            "2023-11-14T22:13:20Z  ingest    catalog_delete  catalog  deleted 7"
        );
    }
}
