//! `collector-bridge evaluate`: runs policies on simulated catalogs and reports their expected
//! regret against always showing the catalog's best item (see `bandit::evaluate`); with
//! `--logged` or `--logged-topic`, estimates from the edge's decision log the click-through
//! rate candidate policies would have had (off-policy evaluation, see `bandit::ope`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::evaluate_context_cmd::{parse_shares, run_segments};
use anyhow::{bail, Context, Result};
use bandit::evaluate::{self, Categories, CtrSource, EvalPolicy, Report, RunResult, Workload};
use bandit::evaluate_context::Segments;
use bandit::ope::{Candidate, CandidateReport, Estimate, Evaluator};
use collector_bridge::avro::{load_schema, Wire};
use collector_bridge::logged::{
    read_container, read_topic, JoinedLog, LogCollector, LogOptions, PartitionRange, TopicSource,
};
use collector_bridge::operator::parse_duration;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::{json, Map, Value};

/// Flags of `evaluate`.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// Policy to evaluate (repeat for several): post2015, shop, uniform, default (= screen),
    /// race, reset, eb, weakS, carry[:DECAY], carry-eb[:DECAY], carry-weakS[:DECAY],
    /// oracle-in-set; the reset/eb/weak/carry names take a ranking suffix -mean, -qQ,
    /// -raceEPS or -screenEPS before the decay (e.g. carry-eb-race0.01:0.7,
    /// carry-weak60-screen0.85:0.85); default, screen, race and the eb/weak names take a final
    /// +features (priors from the items' categories, e.g. default+features; see --categories).
    /// Simulation mode; not with --logged or --logged-topic.
    #[arg(
        long = "policy",
        value_name = "NAME",
        required_unless_present_any = ["logged", "logged_topic"],
        conflicts_with_all = ["logged", "logged_topic"]
    )]
    pub policies: Vec<String>,
    /// Off-policy evaluation on the decision log in these Avro object container files (as
    /// Divolte's file sink writes them; repeat for several).
    #[arg(long, value_name = "FILE.avro", conflicts_with = "logged_topic")]
    pub logged: Vec<PathBuf>,
    /// Off-policy evaluation on the decision log in this Kafka topic (with --brokers and
    /// --from-offset).
    #[arg(long, value_name = "TOPIC", requires_all = ["brokers", "from_offsets"])]
    pub logged_topic: Option<String>,
    /// Kafka bootstrap servers (with --logged-topic).
    #[arg(long, value_name = "HOST:PORT", requires = "logged_topic")]
    pub brokers: Option<String>,
    /// First offset to read of a partition, as PARTITION:OFFSET (repeat per partition).
    #[arg(
        long = "from-offset",
        value_name = "P:OFFSET",
        requires = "logged_topic"
    )]
    pub from_offsets: Vec<String>,
    /// Offset to stop before in a partition, as PARTITION:OFFSET (default: the partition's
    /// end when reading starts).
    #[arg(long = "to-offset", value_name = "P:OFFSET", requires = "logged_topic")]
    pub to_offsets: Vec<String>,
    /// Framing of Kafka records (with --logged-topic).
    #[arg(long, value_enum, default_value_t = Wire::Naked)]
    pub wire: Wire,
    /// Reader schema of Kafka records (default: the built-in TopPickEvent schema); container
    /// files carry their own.
    #[arg(long, value_name = "FILE.avsc")]
    pub schema: Option<PathBuf>,
    /// Source of the slot's impressions and link fragments (the first slot: top_pick).
    #[arg(long, visible_alias = "slot", value_name = "SOURCE", default_value = bandit::protocol::TOP_PICK_SOURCE)]
    pub source: String,
    /// Attribution window after the decision (e.g. 30m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    pub window: String,
    /// Clock difference allowed between the edge and Divolte (0, 90s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "1m")]
    pub clock_skew: String,
    /// Candidate policy to estimate (repeat): uniform, leader, post2015-last, item:ID,
    /// replay:POLICY (e.g. replay:default); default: uniform, leader, post2015-last and
    /// replay:default.
    #[arg(long = "candidate", value_name = "NAME")]
    pub candidates: Vec<String>,
    /// Seed of the replay estimator's posterior draws.
    #[arg(long, value_name = "SEED", default_value_t = 1)]
    pub replay_seed: u64,
    /// Items in the simulated catalog.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub catalog: usize,
    /// Distribution of the hidden click-through rates, as beta:A,B.
    #[arg(long, value_name = "beta:A,B", default_value = "beta:2,60")]
    pub ctr: String,
    /// Arms in the set (n).
    #[arg(long, value_name = "n", default_value_t = 8)]
    pub arms: usize,
    /// Impressions per round (X).
    #[arg(long, value_name = "X", default_value_t = 2000)]
    pub interval: u64,
    /// Impressions per run (T).
    #[arg(long, value_name = "T", default_value_t = 400_000)]
    pub impressions: u64,
    /// Feedback batch size in impressions (0 or 1: immediate).
    #[arg(long, value_name = "D", default_value_t = 0)]
    pub delay: u64,
    /// Number of seeds (runs per policy); seeds are F..F+K-1 (F from --first-seed), shared by
    /// all policies.
    #[arg(long, value_name = "K", default_value_t = 5)]
    pub seeds: u64,
    /// First seed (so tuning and reporting can use disjoint seeds).
    #[arg(long, value_name = "F", default_value_t = 1)]
    pub first_seed: u32,
    /// Rounds a retired item stays out of the set.
    #[arg(long, value_name = "ROUNDS", default_value_t = 5)]
    pub cooldown: u64,
    /// Puts every simulated item in one of C categories (uniformly at random), carried by the
    /// arms as the feature category=cK for +features policies; 0: no categories.
    #[arg(long, value_name = "C", default_value_t = 0)]
    pub categories: u16,
    /// With --categories: sd of the log category effect; an item's rate is its Beta draw
    /// times exp(N(0, S^2)) of its category, normalised to keep the mean rate, capped at
    /// 0.95 (0: categories do not matter).
    #[arg(long, value_name = "S", default_value_t = 0.5, requires = "categories")]
    pub category_spread: f32,
    /// Visitor segments with these traffic shares (e.g. 0.6,0.3,0.1): each policy runs with one
    /// model for everyone and with pooled segment models (`SEGMENTS`), regret against each
    /// segment's best item.
    #[arg(long, value_name = "SHARES", conflicts_with = "categories")]
    pub segments: Option<String>,
    /// With --segments: sd of the log segment effect; an item's rate in a segment is its rate
    /// times exp(S z - S^2/2), z standard normal (0: segments do not matter).
    #[arg(long, value_name = "S", default_value_t = 0.5, requires = "segments")]
    pub segment_spread: f32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the mean cumulative regret over time of each policy as an SVG plot.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Parses `beta:A,B`.
fn parse_ctr(s: &str) -> Result<CtrSource> {
    let help = "expected --ctr beta:A,B with finite A, B > 0, e.g. --ctr beta:2,60";
    let rest = s
        .trim()
        .strip_prefix("beta:")
        .with_context(|| format!("malformed --ctr {s:?}: {help}"))?;
    let (a, b) = rest
        .split_once(',')
        .with_context(|| format!("malformed --ctr {s:?}: {help}"))?;
    let a: f64 = a
        .trim()
        .parse()
        .with_context(|| format!("malformed --ctr {s:?}: A is not a number; {help}"))?;
    let b: f64 = b
        .trim()
        .parse()
        .with_context(|| format!("malformed --ctr {s:?}: B is not a number; {help}"))?;
    if !(a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0) {
        bail!("malformed --ctr {s:?}: {help}");
    }
    Ok(CtrSource::Beta { a, b })
}

/// Parses the policy names, keeping their order and dropping repeats.
fn parse_policies(names: &[String]) -> Result<Vec<(String, EvalPolicy)>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in names {
        let name = name.trim();
        if !seen.insert(name.to_string()) {
            continue;
        }
        // The policy names are listed once, in the parser's error.
        let policy: EvalPolicy = name.parse().map_err(|e| {
            anyhow::anyhow!("{e}; the evaluator also takes uniform and oracle-in-set")
        })?;
        out.push((name.to_string(), policy));
    }
    Ok(out)
}

/// Builds the workload from the flags, with errors that name the flag to fix.
fn workload(args: &EvaluateArgs) -> Result<Workload> {
    if args.arms == 0 {
        bail!(
            "--arms must be at least 1 (the number of photos in the rotating set), e.g. --arms 8"
        );
    }
    if args.catalog == 0 {
        bail!("--catalog must be at least 1 item, e.g. --catalog 500");
    }
    if args.interval == 0 {
        bail!("--interval must be at least 1 impression per round, e.g. --interval 2000");
    }
    if args.impressions == 0 {
        bail!("--impressions must be at least 1, e.g. --impressions 400000");
    }
    if args.seeds == 0 {
        bail!("--seeds must be at least 1 (2 or more for a confidence interval), e.g. --seeds 5");
    }
    let w = Workload {
        catalog: args.catalog,
        ctr: parse_ctr(&args.ctr)?,
        arms: args.arms,
        interval: args.interval,
        impressions: args.impressions,
        delay: args.delay,
        cooldown: args.cooldown,
        checkpoints: 100,
    };
    w.validate().context("invalid workload")?;
    Ok(w)
}

/// The simulated categories from the flags (`None` without --categories).
fn categories(args: &EvaluateArgs) -> Result<Option<Categories>> {
    if args.categories == 0 {
        return Ok(None);
    }
    if !(args.category_spread.is_finite() && args.category_spread >= 0.0) {
        bail!(
            "--category-spread must be a finite number >= 0 (0: categories do not matter), e.g. --category-spread 0.5"
        );
    }
    Ok(Some(Categories {
        count: usize::from(args.categories),
        spread: f64::from(args.category_spread),
    }))
}

/// Runs every (policy, seed) pair, spread over the available cores; each run is
/// single-threaded and deterministic, so the result does not depend on the thread count.
fn run_all(
    w: &Workload,
    cats: Option<Categories>,
    policies: &[(String, EvalPolicy)],
    seeds: &[u64],
) -> Result<Report> {
    let jobs: Vec<(usize, usize)> = (0..policies.len())
        .flat_map(|p| (0..seeds.len()).map(move |s| (p, s)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(jobs.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<RunResult, evaluate::EvalError>>>> =
        Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(p, s)) = jobs.get(j) else { break };
                let r = evaluate::run_one_with(w, cats, policies[p].1, seeds[s]);
                if let Ok(mut guard) = results.lock() {
                    guard[j] = Some(r);
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("an evaluation thread panicked"))?;
    let mut runs: Vec<Vec<RunResult>> = vec![Vec::with_capacity(seeds.len()); policies.len()];
    for ((p, _), r) in jobs.iter().zip(results) {
        let r = r.context("an evaluation run did not finish")?;
        runs[*p].push(r.context("evaluation run failed")?);
    }
    evaluate::summarize(w, policies, seeds, &runs).context("summarising the runs")
}

/// Ratio of means, its paired 95% interval and the per-seed difference (t-interval)
/// against a baseline.
fn paired(per: &[f64], base: &[f64]) -> evaluate::PairedRatio {
    evaluate::paired_ratio(per, base)
}

fn categories_label(c: Option<Categories>) -> String {
    c.map_or("none".to_string(), |c| {
        format!("{} (spread {})", c.count, c.spread)
    })
}

fn ctr_label(c: &CtrSource) -> String {
    match c {
        CtrSource::Beta { a, b } => format!("beta:{a},{b}"),
        CtrSource::Fixed(v) => format!("fixed({} rates)", v.len()),
    }
}

fn ci_json(ci: Option<(f64, f64)>) -> Value {
    ci.map_or(Value::Null, |(lo, hi)| json!([lo, hi]))
}

fn to_json(r: &Report, cats: Option<Categories>) -> Value {
    let w = &r.workload;
    let base = r.policies.first();
    let mut policies = Map::new();
    for p in &r.policies {
        let mut v = json!({
            "regret_mean": p.summary.mean,
            "regret_ci95": ci_json(p.summary.ci95),
            "seeds": p.per_seed.len(),
            "policy": p.policy.to_string(),
            "regret_sd": p.summary.sd,
            "regret_per_seed": p.per_seed,
            "curve": p.curve,
        });
        // Paired against every other policy too, so any two can be compared with an interval.
        let mut vs = Map::new();
        for b in r.policies.iter().filter(|b| b.name != p.name) {
            let pr = paired(&p.per_seed, &b.per_seed);
            vs.insert(
                b.name.clone(),
                json!({"ratio_of_means": pr.ratio, "ratio_ci95": ci_json(pr.ci95)}),
            );
        }
        v["vs"] = Value::Object(vs);
        if let Some(b) = base.filter(|b| b.name != p.name) {
            let pr = paired(&p.per_seed, &b.per_seed);
            v["vs_first"] = json!({
                "baseline": b.name,
                "ratio_of_means": pr.ratio,
                "ratio_ci95": ci_json(pr.ci95),
                "paired_diff_mean": pr.diff.mean,
                "paired_diff_ci95": ci_json(pr.diff.ci95),
            });
        }
        policies.insert(p.name.clone(), v);
    }
    json!({
        "policies": policies,
        "workload": {
            "catalog": w.catalog,
            "ctr": ctr_label(&w.ctr),
            "arms": w.arms,
            "interval": w.interval,
            "impressions": w.impressions,
            "delay": w.delay,
            "cooldown": w.cooldown,
            "seeds": r.seeds,
            "categories": cats.map(|c| c.count),
            "category_spread": cats.map(|c| c.spread),
        },
        "ci95": "two-sided Student t interval over seeds: mean +- t(0.975, K-1) * sd / sqrt(K); ratio_ci95 = 1 + paired_diff_ci95 / baseline mean",
        "regret": "expected regret: sum over impressions of (best CTR in the catalog - CTR shown)",
        "checkpoints": r.checkpoints,
    })
}

fn print_table(r: &Report, cats: Option<Categories>) {
    let w = &r.workload;
    if cats.is_some() {
        println!("categories {}", categories_label(cats));
    }
    println!(
        "catalog {} ctr {} arms {} interval {} impressions {} delay {} cooldown {} seeds {}",
        w.catalog,
        ctr_label(&w.ctr),
        w.arms,
        w.interval,
        w.impressions,
        w.delay,
        w.cooldown,
        r.seeds.len()
    );
    println!("regret = sum of (best CTR in catalog - CTR shown); CI = 95% Student t over seeds");
    let base = r.policies.first();
    let base_name = base.map_or("", |b| b.name.as_str());
    println!(
        "{:<16} {:>10} {:>23} {:>9} {:>10} {:>23} {:>17}",
        "policy",
        "regret",
        "95% CI",
        "sd",
        format!("/{}", truncate(base_name, 9)),
        "paired diff 95% CI",
        "ratio 95% CI"
    );
    for p in &r.policies {
        let ci = p
            .summary
            .ci95
            .map_or("-".to_string(), |(lo, hi)| format!("[{lo:.1}, {hi:.1}]"));
        let (ratio, diff, ratio_ci) = match base.filter(|b| b.name != p.name) {
            Some(b) => {
                let pr = paired(&p.per_seed, &b.per_seed);
                (
                    format!("{:.3}", pr.ratio),
                    pr.diff
                        .ci95
                        .map_or("-".to_string(), |(lo, hi)| format!("[{lo:.1}, {hi:.1}]")),
                    pr.ci95
                        .map_or("-".to_string(), |(lo, hi)| format!("[{lo:.3}, {hi:.3}]")),
                )
            }
            None => ("1".to_string(), "-".to_string(), "-".to_string()),
        };
        println!(
            "{:<16} {:>10.1} {:>23} {:>9.1} {:>10} {:>23} {:>17}",
            p.name, p.summary.mean, ci, p.summary.sd, ratio, diff, ratio_ci
        );
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Draws the mean cumulative regret curve of each policy.
fn plot(r: &Report, path: &Path) -> Result<()> {
    let series: Vec<(&str, &[f64])> = r
        .policies
        .iter()
        .map(|p| (p.name.as_str(), p.curve.as_slice()))
        .collect();
    plot_curves(
        path,
        &format!(
            "Regret vs best item: {}, {} seeds",
            workload_label(&r.workload),
            r.seeds.len()
        ),
        &r.checkpoints,
        &series,
    )
}

/// The workload in a plot's caption.
pub fn workload_label(w: &Workload) -> String {
    format!(
        "catalog {}, CTR {}, n {}, X {}, delay {}",
        w.catalog,
        ctr_label(&w.ctr),
        w.arms,
        w.interval,
        w.delay
    )
}

/// Draws cumulative regret curves (`series`: a name and its value at each checkpoint) as an
/// SVG at `path`.
pub fn plot_curves(
    path: &Path,
    caption: &str,
    checkpoints: &[u64],
    series: &[(&str, &[f64])],
) -> Result<()> {
    use plotters::prelude::*;

    let x_max = checkpoints.last().copied().unwrap_or(1) as f64;
    let y_max = series
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.05;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let draw_err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("{e:?}");
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("impressions")
        .y_desc("cumulative expected regret (mean over seeds)")
        .draw()
        .map_err(draw_err)?;
    for (i, (name, curve)) in series.iter().enumerate() {
        // Dark, distinct colours: the default palette's yellows vanish on white.
        const COLORS: [RGBColor; 10] = [
            RGBColor(214, 39, 40),
            RGBColor(31, 119, 180),
            RGBColor(44, 160, 44),
            RGBColor(0, 0, 0),
            RGBColor(148, 103, 189),
            RGBColor(255, 127, 14),
            RGBColor(140, 86, 75),
            RGBColor(227, 119, 194),
            RGBColor(23, 190, 207),
            RGBColor(127, 127, 127),
        ];
        let color = COLORS[i % COLORS.len()].to_rgba();
        let points = std::iter::once((0.0, 0.0)).chain(
            checkpoints
                .iter()
                .zip(curve.iter())
                .map(|(&t, &v)| (t as f64, v)),
        );
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(draw_err)?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

/// Runs the evaluation.
pub fn run(args: &EvaluateArgs) -> Result<()> {
    if !args.logged.is_empty() || args.logged_topic.is_some() {
        return run_logged(args);
    }
    let policies = parse_policies(&args.policies)?;
    if policies.is_empty() {
        bail!("give at least one --policy, e.g. --policy post2015 --policy default");
    }
    let w = workload(args)?;
    let first = u64::from(args.first_seed);
    let seeds: Vec<u64> = (first..first.saturating_add(args.seeds)).collect();
    if let Some(shares) = &args.segments {
        let segments = Segments {
            shares: parse_shares(shares)?,
            spread: f64::from(args.segment_spread).max(0.0),
        };
        let mut priors = Vec::with_capacity(policies.len());
        for (name, p) in &policies {
            let EvalPolicy::Thompson(prior) = p else {
                bail!(
                    "--segments compares prior policies (e.g. --policy default); {name} is not one"
                );
            };
            priors.push((name.clone(), *prior));
        }
        return run_segments(
            &w,
            &segments,
            &priors,
            &seeds,
            args.json,
            args.plot.as_deref(),
        );
    }
    let cats = categories(args)?;
    let report = run_all(&w, cats, &policies, &seeds)?;
    if let Some(path) = &args.plot {
        plot(&report, path).with_context(|| format!("writing the plot {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&report, cats))?);
    } else {
        print_table(&report, cats);
    }
    Ok(())
}

/// Candidates when none is given.
const DEFAULT_CANDIDATES: [&str; 4] = ["uniform", "leader", "post2015-last", "replay:default"];
/// How long the topic reader waits for a message before it gives up on the range.
const TOPIC_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses a duration flag; `0` is allowed (no skew).
fn duration_ms(flag: &str, text: &str) -> Result<u64> {
    if text.trim() == "0" {
        return Ok(0);
    }
    let d = parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?;
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Parses `PARTITION:OFFSET`.
fn partition_offset(flag: &str, s: &str) -> Result<(i32, i64)> {
    let help =
        || format!("malformed --{flag} {s:?}: expected PARTITION:OFFSET, e.g. --{flag} 0:1500");
    let (p, o) = s.split_once(':').with_context(help)?;
    let p: i32 = p
        .trim()
        .parse()
        .ok()
        .filter(|p| *p >= 0)
        .with_context(help)?;
    let o: i64 = o
        .trim()
        .parse()
        .ok()
        .filter(|o| *o >= 0)
        .with_context(help)?;
    Ok((p, o))
}

/// The partition ranges of `--from-offset` and `--to-offset`.
fn ranges(args: &EvaluateArgs) -> Result<Vec<PartitionRange>> {
    let mut out: Vec<PartitionRange> = Vec::new();
    for s in &args.from_offsets {
        let (partition, from) = partition_offset("from-offset", s)?;
        if out.iter().any(|r| r.partition == partition) {
            bail!("--from-offset gives partition {partition} twice");
        }
        out.push(PartitionRange {
            partition,
            from,
            to: None,
        });
    }
    for s in &args.to_offsets {
        let (partition, to) = partition_offset("to-offset", s)?;
        let Some(r) = out.iter_mut().find(|r| r.partition == partition) else {
            bail!("--to-offset {s}: partition {partition} has no --from-offset");
        };
        if to < r.from {
            bail!(
                "--to-offset {s} is before --from-offset {partition}:{}",
                r.from
            );
        }
        r.to = Some(to);
    }
    if out.is_empty() {
        bail!("--logged-topic needs --from-offset PARTITION:OFFSET for each partition to read, e.g. --from-offset 0:0");
    }
    Ok(out)
}

/// Parses the candidate names, keeping their order and dropping repeats.
fn parse_candidates(names: &[String]) -> Result<Vec<(String, Candidate)>> {
    let names: Vec<String> = if names.is_empty() {
        DEFAULT_CANDIDATES.iter().map(|s| s.to_string()).collect()
    } else {
        names.to_vec()
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in names {
        let name = name.trim().to_string();
        if !seen.insert(name.clone()) {
            continue;
        }
        let c: Candidate = name
            .parse()
            .map_err(|e| anyhow::anyhow!("--candidate: {e}"))?;
        out.push((name, c));
    }
    Ok(out)
}

/// Reads the decision log from the files or the topic range.
fn read_log(args: &EvaluateArgs, opts: LogOptions) -> Result<(JoinedLog, Vec<String>)> {
    let mut collector = LogCollector::new(opts);
    let mut damaged = Vec::new();
    for path in &args.logged {
        if let Some(e) = read_container(path, &mut collector)
            .with_context(|| format!("reading the decision log {}", path.display()))?
        {
            tracing::warn!(file = %path.display(), error = %e, "damaged container; kept what was read before");
            damaged.push(format!("{}: {e}", path.display()));
        }
    }
    if let Some(topic) = &args.logged_topic {
        let brokers = args
            .brokers
            .clone()
            .context("--logged-topic needs --brokers HOST:PORT")?;
        let schema = load_schema(args.schema.as_deref()).context("loading the reader schema")?;
        let src = TopicSource {
            brokers,
            topic: topic.clone(),
            ranges: ranges(args)?,
            wire: args.wire,
            idle_timeout: TOPIC_IDLE_TIMEOUT,
            kafka_options: Vec::new(),
        };
        read_topic(&src, &schema, &mut collector)
            .with_context(|| format!("reading topic {topic}"))?;
    }
    Ok((collector.finish(), damaged))
}

fn estimate_json(e: &Estimate) -> Value {
    json!({
        "estimate": e.value,
        "ci95": [e.ci95.0, e.ci95.1],
        "n": e.n,
        "matched": e.matched,
        "effective_n": e.effective_n,
    })
}

type Evaluated = Vec<(
    String,
    std::result::Result<CandidateReport, bandit::ope::OpeError>,
)>;

fn logged_json(
    args: &EvaluateArgs,
    log: &JoinedLog,
    damaged: &[String],
    results: &Evaluated,
) -> Value {
    let mut candidates = Map::new();
    for (name, r) in results {
        let v = match r {
            Ok(CandidateReport::Fixed { resolved, report }) => json!({
                "kind": "fixed",
                "resolved": resolved,
                "ips": estimate_json(&report.ips),
                "snips": estimate_json(&report.snips),
                "dr": estimate_json(&report.dr),
            }),
            Ok(CandidateReport::Replay(r)) => json!({
                "kind": "replay",
                "replay": estimate_json(&r.estimate),
                "holdout_decisions": r.holdout,
                "skipped_incomplete_round": r.skipped_incomplete_round,
            }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        candidates.insert(name.clone(), v);
    }
    let holdout = log.decisions.iter().filter(|d| d.holdout).count();
    json!({
        "source": args.source,
        "window": args.window,
        "clock_skew": args.clock_skew,
        "decisions": log.decisions.len(),
        "holdout_decisions": holdout,
        "clicked_decisions": log.decisions.iter().filter(|d| d.reward).count(),
        "logged": estimate_json(&bandit::ope::observed(&log.decisions)),
        "candidates": candidates,
        "counts": log.counts,
        "damaged_files": damaged,
        "ci95": {
            "ips": "normal: mean +- 1.96 * sd / sqrt(n) of w * r, w = pi(item) / logged probability",
            "snips": "normal, delta method: sum w r / sum w +- 1.96 * sqrt(sum (w (r - v))^2) / sum w",
            "dr": "normal over the per-decision doubly robust terms; reward model: per-item mean click rate, 2-fold cross-fitted",
            "replay": "Wilson score interval over the matched holdout decisions (Li et al. 2011)",
            "logged": "Wilson score interval of the observed click-through rate",
        },
    })
}

fn ci_text(e: &Estimate) -> String {
    format!("[{:.4}, {:.4}]", e.ci95.0, e.ci95.1)
}

fn print_logged(args: &EvaluateArgs, log: &JoinedLog, damaged: &[String], results: &Evaluated) {
    let holdout = log.decisions.iter().filter(|d| d.holdout).count();
    let clicked = log.decisions.iter().filter(|d| d.reward).count();
    println!(
        "source {} window {} skew {}: {} decisions ({} holdout), {} clicked",
        args.source,
        args.window,
        args.clock_skew,
        log.decisions.len(),
        holdout,
        clicked
    );
    println!("CI: IPS, DR normal; SNIPS delta method; replay and logged Wilson. n = decisions read, matched = with weight, eff. n = Kish");
    println!(
        "{:<22} {:<9} {:>9} {:>20} {:>8} {:>8} {:>9}",
        "candidate", "estimator", "estimate", "95% CI", "n", "matched", "eff. n"
    );
    let row = |name: &str, est: &str, e: &Estimate| {
        println!(
            "{:<22} {:<9} {:>9.4} {:>20} {:>8} {:>8} {:>9.1}",
            truncate(name, 22),
            est,
            e.value,
            ci_text(e),
            e.n,
            e.matched,
            e.effective_n
        );
    };
    row(
        "logged policy",
        "observed",
        &bandit::ope::observed(&log.decisions),
    );
    for (name, r) in results {
        match r {
            Ok(CandidateReport::Fixed { report, .. }) => {
                row(name, "ips", &report.ips);
                row(name, "snips", &report.snips);
                row(name, "dr", &report.dr);
            }
            Ok(CandidateReport::Replay(r)) => row(name, "replay", &r.estimate),
            Err(e) => println!("{:<22} {e}", truncate(name, 22)),
        }
    }
    for (name, r) in results {
        if let Ok(CandidateReport::Fixed { resolved, .. }) = r {
            println!("{name}: {resolved}");
        }
        if let Ok(CandidateReport::Replay(r)) = r {
            if r.skipped_incomplete_round > 0 {
                println!(
                    "{name}: {} of {} holdout decisions skipped (round's arm set not fully seen)",
                    r.skipped_incomplete_round, r.holdout
                );
            }
        }
    }
    let counts: Vec<String> = log.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("records: {}", counts.join(", "));
    for d in damaged {
        println!("damaged: {d}");
    }
}

/// Off-policy evaluation on the decision log.
fn run_logged(args: &EvaluateArgs) -> Result<()> {
    let candidates = parse_candidates(&args.candidates)?;
    let opts = LogOptions {
        source: args.source.clone(),
        window_ms: duration_ms("window", &args.window)?,
        skew_ms: duration_ms("clock-skew", &args.clock_skew)?,
        ..LogOptions::default()
    };
    if opts.window_ms == 0 {
        bail!("--window must be longer than 0, e.g. --window 30m");
    }
    let (log, damaged) = read_log(args, opts)?;
    let ev = Evaluator::new(&log.decisions);
    let mut rng = SmallRng::seed_from_u64(args.replay_seed);
    let results: Evaluated = candidates
        .into_iter()
        .map(|(name, c)| {
            let r = ev.evaluate(&c, &mut rng);
            (name, r)
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&logged_json(args, &log, &damaged, &results))?
        );
    } else {
        print_logged(args, &log, &damaged, &results);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctr_flag_parses_and_rejects() {
        assert_eq!(
            parse_ctr("beta:2,60").unwrap(),
            CtrSource::Beta { a: 2.0, b: 60.0 }
        );
        for bad in [
            "beta:2",
            "2,60",
            "beta:x,1",
            "beta:0,1",
            "beta:1,-1",
            "beta:nan,1",
        ] {
            let e = parse_ctr(bad).unwrap_err().to_string();
            assert!(e.contains("--ctr beta:2,60"), "{bad}: {e}");
        }
    }

    #[test]
    fn json_pairs_every_policy_with_every_other() {
        let w = Workload {
            catalog: 50,
            impressions: 2_000,
            interval: 500,
            ..Workload::default()
        };
        let policies =
            parse_policies(&["post2015".into(), "shop".into(), "screen".into()]).unwrap();
        let report = run_all(&w, None, &policies, &[1, 2, 3]).unwrap();
        let v = to_json(&report, None);
        let pol = &v["policies"];
        let mean = |n: &str| pol[n]["regret_mean"].as_f64().unwrap();
        let screen = &pol["screen"];
        for base in ["post2015", "shop"] {
            let ratio = screen["vs"][base]["ratio_of_means"].as_f64().unwrap();
            assert!(
                (ratio - mean("screen") / mean(base)).abs() < 1e-12,
                "{base}"
            );
            let ci = screen["vs"][base]["ratio_ci95"].as_array().unwrap();
            let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
            assert!(lo <= ratio && ratio <= hi, "{base}: {lo} {ratio} {hi}");
        }
        assert!(screen["vs"].get("screen").is_none());
        assert_eq!(pol["shop"]["vs"].as_object().unwrap().len(), 2);
        // The first policy stays the baseline of vs_first.
        assert_eq!(screen["vs_first"]["baseline"], "post2015");
        assert!(pol["post2015"].get("vs_first").is_none());
    }

    #[test]
    fn unknown_policy_says_what_to_use() {
        let e = parse_policies(&["thompson".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown prior policy \"thompson\"")
                && e.contains("screen")
                && e.contains("oracle-in-set"),
            "{e}"
        );
        let p = parse_policies(&["shop".into(), "shop".into(), "uniform".into()]).unwrap();
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn category_flags_parse_and_reject() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: EvaluateArgs,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec!["evaluate", "--policy", "default+features"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|c| c.args)
        };
        let a = parse(&["--categories", "20", "--category-spread", "0.5"]).unwrap();
        assert_eq!(
            categories(&a).unwrap(),
            Some(Categories {
                count: 20,
                spread: 0.5
            })
        );
        assert_eq!(categories(&parse(&[]).unwrap()).unwrap(), None);
        assert!(parse(&["--category-spread", "0.5"]).is_err());
        let bad = parse(&["--categories", "3", "--category-spread", "NaN"]).unwrap();
        assert!(categories(&bad)
            .unwrap_err()
            .to_string()
            .contains("--category-spread 0.5"));
        let p = parse_policies(&["default+features".into()]).unwrap();
        assert_eq!(p[0].1.to_string(), "carry-weak60-screen0.85:0.85+features");
    }

    #[test]
    fn logged_flags_parse_and_reject() {
        assert_eq!(partition_offset("from-offset", "3:150").unwrap(), (3, 150));
        for bad in ["3", "x:1", "1:-5", "-1:0", "1:y"] {
            let e = partition_offset("from-offset", bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--from-offset 0:1500"), "{bad}: {e}");
        }
        let c = parse_candidates(&[]).unwrap();
        assert_eq!(c.len(), DEFAULT_CANDIDATES.len());
        let c = parse_candidates(&["uniform".into(), "uniform".into(), "item:x".into()]).unwrap();
        assert_eq!(c.len(), 2);
        assert!(parse_candidates(&["always".into()]).is_err());
        assert_eq!(duration_ms("window", "30m").unwrap(), 1_800_000);
        assert_eq!(duration_ms("clock-skew", "0").unwrap(), 0);
        assert!(duration_ms("window", "soon").is_err());
    }
}
