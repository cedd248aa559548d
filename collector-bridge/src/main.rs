//! `collector-bridge`: Divolte events from Kafka (or Avro files, or simulated visitors) into
//! the top-pick worker's counters; also the offline policy evaluator.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod evaluate_cmd;

/// Command line of the bridge.
#[derive(Debug, Parser)]
#[command(name = "collector-bridge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run policies on simulated catalogs and report regret against the best item.
    Evaluate(evaluate_cmd::EvaluateArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Evaluate(args) => evaluate_cmd::run(&args),
    }
}
