//! `collector-bridge evaluate` (placeholder until the evaluator lands).

/// Flags of `evaluate`.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {}

/// Runs the evaluation.
pub fn run(_args: &EvaluateArgs) -> anyhow::Result<()> {
    anyhow::bail!("evaluate is not implemented yet")
}
