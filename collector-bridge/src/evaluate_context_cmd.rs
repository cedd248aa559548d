//! `collector-bridge evaluate --segments ...`: each prior policy with one model for everyone
//! against per-segment pooled models, on simulated visitor segments (see
//! `bandit::evaluate_context`), with paired ratios over seeds.

use std::path::Path;

use anyhow::{bail, Context, Result};
use bandit::evaluate::{checkpoints, t_interval, Workload};
use bandit::evaluate_context::{run_context, ContextMode, Segments};
use bandit::PriorPolicy;
use serde_json::{json, Value};

use crate::evaluate_cmd::{plot_curves, workload_label};

/// Parses `0.6,0.3,0.1` into traffic shares.
pub fn parse_shares(text: &str) -> Result<Vec<f64>> {
    let help =
        "expected --segments SHARE,SHARE,... (at least two positive shares, e.g. 0.6,0.3,0.1)";
    let shares: Vec<f64> = text
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("malformed --segments {text:?}: {help}"))?;
    if shares.len() < 2 || !shares.iter().all(|s| s.is_finite() && *s > 0.0) {
        bail!("malformed --segments {text:?}: {help}");
    }
    Ok(shares)
}

/// The mean of `b` over the mean of `a` (paired by seed) with a 95% interval: a t interval on
/// the residuals b_i - R a_i, divided by the mean of `a` (the delta method).
pub fn paired_ratio(a: &[f64], b: &[f64]) -> (f64, Option<(f64, f64)>) {
    let n = a.len().min(b.len()) as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let r = mb / ma;
    let resid: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - r * x).collect();
    let ci = t_interval(&resid)
        .ci95
        .map(|(lo, hi)| (r + lo / ma, r + hi / ma));
    (r, ci)
}

/// Runs every policy in both modes on every seed and prints the comparison.
pub fn run_segments(
    w: &Workload,
    segments: &Segments,
    policies: &[(String, PriorPolicy)],
    seeds: &[u64],
    json_out: bool,
    plot: Option<&Path>,
) -> Result<()> {
    let mut out = Vec::new();
    let marks = checkpoints(w);
    // Per policy and mode, the summed regret curve over seeds.
    let mut curves: Vec<(String, Vec<f64>)> = Vec::new();
    for (name, policy) in policies {
        let mut runs = [Vec::new(), Vec::new(), Vec::new()];
        let mut in_set = [Vec::new(), Vec::new(), Vec::new()];
        let mut sums = [
            vec![0.0; marks.len()],
            vec![0.0; marks.len()],
            vec![0.0; marks.len()],
        ];
        for &seed in seeds {
            for (k, mode) in [
                ContextMode::Global,
                ContextMode::Pooled,
                ContextMode::PooledGlobalRotation,
            ]
            .into_iter()
            .enumerate()
            {
                let r = run_context(w, segments, *policy, mode, seed)
                    .with_context(|| format!("policy {name}, seed {seed}"))?;
                runs[k].push(r.regret);
                in_set[k].push(r.regret_in_set);
                for (s, v) in sums[k].iter_mut().zip(&r.curve) {
                    *s += v;
                }
            }
        }
        for (label, sum) in ["one model", "pooled", "pooled, all-segment round end"]
            .iter()
            .zip(sums)
        {
            let n = seeds.len().max(1) as f64;
            curves.push((
                format!("{name}: {label}"),
                sum.iter().map(|v| v / n).collect(),
            ));
        }
        let summary = |xs: &[f64]| {
            let t = t_interval(xs);
            json!({ "regret_mean": t.mean, "regret_ci95": t.ci95 })
        };
        let (ratio, ci) = paired_ratio(&runs[0], &runs[1]);
        let (ratio_in_set, ci_in_set) = paired_ratio(&in_set[0], &in_set[1]);
        let (ratio_plain, ci_plain) = paired_ratio(&runs[0], &runs[2]);
        out.push(json!({
            "policy": name,
            "global": summary(&runs[0]),
            "pooled": summary(&runs[1]),
            "pooled_over_global": ratio,
            "pooled_over_global_ci95": ci,
            "in_set_global": summary(&in_set[0]),
            "in_set_pooled": summary(&in_set[1]),
            "in_set_pooled_over_global": ratio_in_set,
            "in_set_pooled_over_global_ci95": ci_in_set,
            "pooled_global_rotation": summary(&runs[2]),
            "pooled_global_rotation_over_global": ratio_plain,
            "pooled_global_rotation_over_global_ci95": ci_plain,
        }));
    }
    let report = json!({
        "segments": segments.shares,
        "segment_spread": segments.spread,
        "catalog": w.catalog,
        "arms": w.arms,
        "interval": w.interval,
        "impressions": w.impressions,
        "delay": w.delay,
        "seeds": seeds,
        "policies": out,
    });
    if let Some(path) = plot {
        let series: Vec<(&str, &[f64])> = curves
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_slice()))
            .collect();
        let caption = format!(
            "Regret vs each segment's best: {}, segments {:?}, spread {}, {} seeds",
            workload_label(w),
            segments.shares,
            segments.spread,
            seeds.len()
        );
        plot_curves(path, &caption, &marks, &series)
            .with_context(|| format!("writing the plot {}", path.display()))?;
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "segments {:?}, spread {}, {} seeds; regret against each segment's best item (and the set's)",
        segments.shares,
        segments.spread,
        seeds.len()
    );
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.0}"));
    let ci = |v: &Value| match v.as_array() {
        Some(a) if a.len() == 2 => format!(
            "[{:.3}, {:.3}]",
            a[0].as_f64().unwrap_or(f64::NAN),
            a[1].as_f64().unwrap_or(f64::NAN)
        ),
        _ => "-".to_string(),
    };
    println!(
        "{:<28} {:>10} {:>10} {:>8} {:>18} {:>8} {:>14}",
        "policy", "global", "pooled", "ratio", "95% CI", "in set", "plain rotation"
    );
    for p in &out {
        println!(
            "{:<28} {:>10} {:>10} {:>8.3} {:>18} {:>8.3} {:>14.3}",
            p["policy"].as_str().unwrap_or(""),
            f(&p["global"]["regret_mean"]),
            f(&p["pooled"]["regret_mean"]),
            p["pooled_over_global"].as_f64().unwrap_or(f64::NAN),
            ci(&p["pooled_over_global_ci95"]),
            p["in_set_pooled_over_global"].as_f64().unwrap_or(f64::NAN),
            p["pooled_global_rotation_over_global"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_shares("0.6, 0.3,0.1").unwrap(), [0.6, 0.3, 0.1]);
        for bad in ["", "1", "0.5,x", "0.5,-0.5", "0.5,0"] {
            assert!(parse_shares(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_paired_ratio_is_exact_when_every_pair_has_it() {
        let (r, ci) = paired_ratio(&[10.0, 20.0, 30.0], &[5.0, 10.0, 15.0]);
        assert!((r - 0.5).abs() < 1e-12);
        let (lo, hi) = ci.unwrap();
        assert!((lo - 0.5).abs() < 1e-9 && (hi - 0.5).abs() < 1e-9);
    }
}
