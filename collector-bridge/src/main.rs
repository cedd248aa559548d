//! `collector-bridge`: Divolte events from Kafka (or Avro files, or simulated visitors) into
//! the top-pick worker's counters; also the offline policy evaluator.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use bandit::protocol::DEFAULT_SLOT;
use collector_bridge::avro::{load_schema, Wire};
use collector_bridge::catalog;
use collector_bridge::config::{read_token, ClassifyArgs, FileConfig, RunArgs, WorkerArgs};
use collector_bridge::delivery::{FlushPolicy, DEFAULT_FLUSH_EVENTS, DEFAULT_FLUSH_INTERVAL_MS};
use collector_bridge::metrics::Metrics;
use collector_bridge::operator;
use collector_bridge::pipeline::Pipeline;
use collector_bridge::replay::{replay_files, ReplayOptions};
use collector_bridge::simulate::{self, CtrDist, KafkaOutput, RecordEncoder, SimConfig};
use collector_bridge::worker_client::{Backoff, WorkerClient};

mod evaluate_cmd;
mod evaluate_context_cmd;

/// Command line of the bridge.
#[derive(Debug, Parser)]
#[command(name = "collector-bridge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume Divolte events from Kafka and push counts to the worker, exactly once.
    Run(Box<RunArgs>),
    /// Push Avro object container files (Divolte's file/HDFS sink output), idempotently.
    Replay(Box<ReplayArgs>),
    /// Simulate visitors with hidden click-through rates against the worker.
    Simulate(Box<SimulateArgs>),
    /// Catalog operations.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Operator controls of a slot: pin, unpin, exclude, include, show (operator token:
    /// OPERATOR_TOKEN, else the ingest token).
    #[command(subcommand)]
    Slot(operator::SlotCommand),
    /// Print the worker's audit log of operator writes, newest first.
    Audit(operator::AuditArgs),
    /// Run policies on simulated catalogs and report regret against the best item.
    Evaluate(Box<evaluate_cmd::EvaluateArgs>),
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// Reader schema (default: the built-in TopPickEvent schema).
    #[arg(long)]
    schema: Option<PathBuf>,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    classify: ClassifyArgs,
    /// Push after this many records.
    #[arg(long, default_value_t = DEFAULT_FLUSH_EVENTS)]
    flush_events: u64,
    /// Push at least this often, in milliseconds.
    #[arg(long, default_value_t = DEFAULT_FLUSH_INTERVAL_MS)]
    flush_interval_ms: u64,
    /// Hide the progress indicator.
    #[arg(long)]
    no_progress: bool,
    /// Avro object container files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct SimulateArgs {
    #[command(flatten)]
    worker: WorkerArgs,
    /// Slot to ask for picks and to feed.
    #[arg(long, default_value = DEFAULT_SLOT)]
    slot: String,
    /// Number of visitors.
    #[arg(long, default_value_t = 10_000)]
    visitors: u64,
    /// Visitors per second (0: as fast as the worker answers).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Concurrent visitors.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seed of the hidden click-through rates and of the visitors' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Hidden click-through rate distribution: beta:A,B or fixed:P.
    #[arg(long, default_value = "beta:2,60")]
    ctr: CtrDist,
    /// Fraction of visitors who also view an unrelated page.
    #[arg(long, default_value_t = 0.3)]
    noise: f64,
    /// Visitors' device classes with their shares, e.g. mobile:0.6,desktop:0.4: each sends
    /// its class's User-Agent (for a worker with SEGMENTS=device) and has its own hidden
    /// click-through rates.
    #[arg(long, value_name = "CLASS:SHARE,...", value_parser = simulate::parse_devices)]
    devices: Option<simulate::Devices>,
    /// Record schema (default: the built-in TopPickEvent schema).
    #[arg(long)]
    schema: Option<PathBuf>,
    /// Kafka bootstrap servers: produce records to Kafka instead of pushing directly.
    #[arg(long, requires = "topic")]
    brokers: Option<String>,
    /// Kafka topic (with --brokers).
    #[arg(long, requires = "brokers")]
    topic: Option<String>,
    /// Framing of Kafka records.
    #[arg(long, value_enum, default_value_t = Wire::Naked)]
    wire: Wire,
    /// Run id for the direct stream name `simulate-<run id>` (default: clock and seed).
    #[arg(long)]
    run_id: Option<String>,
    /// Push after this many records (direct mode).
    #[arg(long, default_value_t = DEFAULT_FLUSH_EVENTS)]
    flush_events: u64,
    /// Push at least this often, in milliseconds (direct mode).
    #[arg(long, default_value_t = DEFAULT_FLUSH_INTERVAL_MS)]
    flush_interval_ms: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// Post catalog files to the worker in batches under 1 MiB.
    Import(CatalogImportArgs),
    /// Delete catalog items, one request each (operator token: OPERATOR_TOKEN, else the
    /// ingest token).
    Delete(operator::CatalogDeleteArgs),
}

#[derive(Debug, Args)]
struct CatalogImportArgs {
    /// File format.
    #[arg(long, value_enum)]
    format: catalog::Format,
    #[command(flatten)]
    worker: WorkerArgs,
    /// Catalog files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// The flag SIGTERM and SIGINT set: the commands then stop reading, flush what they hold and
/// exit. A second signal exits at once (status 128 + signal); nothing is lost either way, as
/// the worker holds the offsets of what it applied.
fn shutdown_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // Registered first, so it sees the flag as the earlier signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, flag.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handlers")?;
    }
    Ok(flag)
}

fn client(
    worker: &WorkerArgs,
    shutdown: &Arc<AtomicBool>,
    metrics: &Arc<Metrics>,
) -> Result<WorkerClient> {
    let (url, token_env) = worker.resolve(&FileConfig::default())?;
    let token = read_token(&token_env);
    if token.is_none() {
        tracing::warn!(var = %token_env, "no ingest token in the environment");
    }
    Ok(WorkerClient::new(
        &url,
        token,
        Backoff::default(),
        shutdown.clone(),
        metrics.clone(),
    ))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::Replay(args) => replay(&args),
        Command::Simulate(args) => simulate(&args),
        Command::Catalog(CatalogCommand::Import(args)) => catalog_import(&args),
        Command::Catalog(CatalogCommand::Delete(args)) => operator::catalog_delete(&args),
        Command::Slot(cmd) => operator::slot(&cmd),
        Command::Audit(args) => operator::audit(&args),
        Command::Evaluate(args) => evaluate_cmd::run(&args),
    }
}

/// `run`: consume Kafka until SIGTERM or SIGINT.
fn run(args: &RunArgs) -> Result<()> {
    let cfg = args.resolve()?;
    let shutdown = shutdown_flag()?;
    collector_bridge::kafka::run(&cfg, shutdown, Arc::new(Metrics::default()))
        .context("collector-bridge run stopped")?;
    Ok(())
}

/// `replay`: push container files; prints one line per file.
fn replay(args: &ReplayArgs) -> Result<()> {
    let shutdown = shutdown_flag()?;
    let metrics = Arc::new(Metrics::default());
    let schema = load_schema(args.schema.as_deref())?;
    let rules = args.classify.rules(&FileConfig::default())?;
    let mut pipeline = Pipeline::new(&schema, Wire::Naked, rules)?;
    let client = client(&args.worker, &shutdown, &metrics)?;
    let opts = ReplayOptions {
        flush: FlushPolicy::new(
            args.flush_events,
            Duration::from_millis(args.flush_interval_ms),
        ),
        progress: !args.no_progress,
    };
    let reports = replay_files(
        &args.files,
        &schema,
        &mut pipeline,
        &client,
        &opts,
        &shutdown,
    )?;
    let mut failed = false;
    for r in &reports {
        println!(
            "{} records={} already_applied={} bad={}{}",
            r.stream,
            r.records,
            r.already_applied,
            r.bad,
            r.error
                .as_deref()
                .map(|e| format!(" error={e}"))
                .unwrap_or_default()
        );
        failed |= r.error.is_some();
    }
    if failed {
        bail!("some files could not be read to the end");
    }
    Ok(())
}

/// `simulate`: visitors into Kafka (with --brokers) or straight into the pipeline; prints the
/// report.
fn simulate(args: &SimulateArgs) -> Result<()> {
    let shutdown = shutdown_flag()?;
    let metrics = Arc::new(Metrics::default());
    let schema = load_schema(args.schema.as_deref())?;
    let client = client(&args.worker, &shutdown, &metrics)?;
    let cfg = SimConfig {
        visitors: args.visitors,
        rate: args.rate,
        concurrency: args.concurrency,
        seed: args.seed,
        ctr: args.ctr,
        slot: args.slot.clone(),
        noise: args.noise.clamp(0.0, 1.0),
        devices: args.devices.clone().map(|d| d.0).unwrap_or_default(),
    };
    let report = match (&args.brokers, &args.topic) {
        (Some(brokers), Some(topic)) => {
            let output = KafkaOutput::new(brokers, topic, &[])?;
            let encoder = RecordEncoder::new(&schema)?;
            let r = simulate::run_visitors(&cfg, &client, &encoder, args.wire, &output, &shutdown)?;
            // After a signal, a broker that does not take the records soon is not waited for.
            let wait = if shutdown.load(std::sync::atomic::Ordering::Relaxed) {
                Duration::from_secs(3)
            } else {
                Duration::from_secs(30)
            };
            output.flush(wait).context("flushing records to Kafka")?;
            r
        }
        _ => {
            let run_id = args
                .run_id
                .clone()
                .unwrap_or_else(|| simulate::default_run_id(args.seed));
            let rules = ClassifyArgs {
                slot: Some(args.slot.clone()),
                ..ClassifyArgs::default()
            }
            .rules(&FileConfig::default())?;
            let flush = FlushPolicy::new(
                args.flush_events,
                Duration::from_millis(args.flush_interval_ms),
            );
            simulate::simulate_direct(&cfg, &client, &schema, rules, &run_id, flush, &shutdown)?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "visitors={} impressions={} clicks={} noise={} items_shown={}",
            report.visitors,
            report.impressions,
            report.clicks,
            report.noise,
            report.shown.len()
        );
    }
    Ok(())
}

/// `catalog import`: post catalog files; prints the worker's answer to each body.
fn catalog_import(args: &CatalogImportArgs) -> Result<()> {
    let shutdown = shutdown_flag()?;
    let metrics = Arc::new(Metrics::default());
    let client = client(&args.worker, &shutdown, &metrics)?;
    let answers = catalog::import(&args.files, args.format, &client)?;
    for a in answers {
        println!("{}", serde_json::to_string(&a)?);
    }
    Ok(())
}
