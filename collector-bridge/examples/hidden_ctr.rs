//! Development tool: prints the hidden click-through rates `collector-bridge simulate` uses,
//! so tests can tell which item is truly best.
//!
//! ```text
//! cargo run --example hidden_ctr -p collector-bridge -- --seed 7 --ctr beta:2,60 ITEM...
//! ```
//! prints one JSON object `{"ITEM": rate, ...}`; `--segment mobile` gives the rates of that
//! device class's visitors (`simulate --devices`).

use anyhow::{bail, Context, Result};
use collector_bridge::simulate::segment_seed;
use collector_bridge::{true_ctr, CtrDist};

fn main() -> Result<()> {
    let mut it = std::env::args().skip(1);
    let (mut seed, mut dist, mut items) = (1u64, CtrDist::default(), Vec::new());
    let mut segment: Option<String> = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seed" => {
                seed = it
                    .next()
                    .context("--seed needs a value")?
                    .parse()
                    .context("--seed must be an integer")?
            }
            "--ctr" => {
                dist = it
                    .next()
                    .context("--ctr needs a value")?
                    .parse()
                    .map_err(anyhow::Error::msg)?
            }
            "--segment" => segment = Some(it.next().context("--segment needs a value")?),
            s if s.starts_with("--") => {
                bail!("usage: hidden_ctr [--seed S] [--ctr beta:A,B|fixed:P] [--segment DEVICE] ITEM...")
            }
            _ => items.push(a),
        }
    }
    // A device class's visitors have their own rates (`simulate --devices`).
    let seed = match &segment {
        Some(s) => segment_seed(seed, s),
        None => seed,
    };
    let rates: serde_json::Map<String, serde_json::Value> = items
        .into_iter()
        .map(|i| {
            let r = true_ctr(seed, &i, dist);
            (i, r.into())
        })
        .collect();
    println!("{}", serde_json::Value::Object(rates));
    Ok(())
}
