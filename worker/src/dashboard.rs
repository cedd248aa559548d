//! The operators' dashboard: posteriors as density curves, P(best), counts, feedback freshness
//! and round history, drawn server-side as SVG (no scripts, readable without JavaScript).

use std::fmt::Write;

use bandit::armset::RetiredArm;
use bandit::features::{KeySummary, MAX_FEATURES};
use bandit::history::{MIN_ARMS_FOR_FIT, MIN_IMPRESSIONS_FOR_FIT};
use bandit::operator::{format_utc as utc, AuditEntry};
use bandit::policy::{FreshPrior, Ranking};
use bandit::{Posterior, RotationConfig};

use crate::escape::html;
use crate::snapshot::SegmentView;
use crate::state::{OperatorView, SlotState};

/// Distinct colours for the arms' curves, cycled beyond ten arms.
const COLOURS: [&str; 10] = [
    "#c2410c", "#1d4ed8", "#15803d", "#a21caf", "#b45309", "#0e7490", "#be123c", "#4d7c0f",
    "#6d28d9", "#334155",
];
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const MARGIN_LEFT: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 30.0;
const POINTS: usize = 160;

fn colour(i: usize) -> &'static str {
    COLOURS[i % COLOURS.len()]
}

/// Human form of a duration in milliseconds.
fn ago(ms: f64) -> String {
    let s = ms / 1000.0;
    if s < 90.0 {
        format!("{s:.1} s ago")
    } else if s < 5400.0 {
        format!("{:.0} min ago", s / 60.0)
    } else {
        format!("{:.1} h ago", s / 3600.0)
    }
}

/// Audit entries the dashboard lists.
pub const AUDIT_SHOWN: usize = 20;

/// The operator controls: the pin, the exclude list, and what a paused pin set aside.
fn controls_section(out: &mut String, st: &SlotState, now_ms: f64) {
    out.push_str("<h2>Controls</h2><dl class=\"dash__facts\" data-controls>");
    match st.pinned.as_ref().filter(|p| p.pin.active(now_ms)) {
        Some(p) => {
            let _ = write!(
                out,
                "<div><dt>Pinned</dt><dd data-pinned=\"{id}\">{title} <small>{id}</small> until {until}, {share:.0}% of requests, {learning}</dd></div>",
                id = html(&p.item.id),
                title = html(&p.item.title),
                until = utc(p.pin.until_ms),
                share = p.pin.share * 100.0,
                learning = p.pin.learning.describe(),
            );
        }
        None => out.push_str("<div><dt>Pinned</dt><dd>nothing: the bandit picks</dd></div>"),
    }
    let excluded: Vec<String> = st.exclude.iter().map(|id| html(id).into_owned()).collect();
    let _ = write!(
        out,
        "<div><dt>Excluded</dt><dd data-excluded=\"{n}\">{list}</dd></div><div><dt>Set aside while paused</dt><dd>{pi} impressions, {pc} clicks</dd></div></dl>",
        n = excluded.len(),
        list = if excluded.is_empty() {
            "none".to_string()
        } else {
            excluded.join(", ")
        },
        pi = st.totals.paused_impressions,
        pc = st.totals.paused_clicks,
    );
}

/// Percent with two decimals.
fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// The bandit against its holdout, when the slot has one.
fn holdout_section(out: &mut String, st: &SlotState) {
    let Some(c) = st.holdout_comparison() else {
        if st.totals.bandit.impressions > 0 {
            out.push_str("<h2>Bandit against holdout</h2><p data-holdout=\"none\">No holdout decisions yet: set <code>HOLDOUT</code> (e.g. 0.05) to serve that share of the traffic from a baseline and measure the bandit's uplift.</p>");
        }
        return;
    };
    out.push_str("<h2>Bandit against holdout</h2><table class=\"dash__holdout\" data-holdout><thead><tr><th></th><th>Impressions</th><th>Clicks</th><th>CTR</th><th>95% interval</th></tr></thead><tbody>");
    for (name, r) in [("Bandit", c.bandit), ("Holdout", c.holdout)] {
        let _ = write!(
            out,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{} to {}</td></tr>",
            r.impressions,
            r.clicks,
            pct(r.ctr),
            pct(r.low),
            pct(r.high)
        );
    }
    let uplift = c
        .uplift
        .map(|u| format!(" ({:+.1}% relative)", u * 100.0))
        .unwrap_or_default();
    let _ = write!(
        out,
        "</tbody></table><p class=\"dash__note\" data-significant=\"{sig}\">Difference {d:+.2} points{uplift}, 95% interval {lo:+.2} to {hi:+.2}: {verdict}.</p>",
        sig = c.significant,
        d = c.difference * 100.0,
        lo = c.difference_low * 100.0,
        hi = c.difference_high * 100.0,
        verdict = c.verdict(),
    );
}

/// Each visitor segment's traffic and what it prefers, next to the global view.
fn segments_section(
    out: &mut String,
    st: &SlotState,
    rotation: &RotationConfig,
    views: &[SegmentView],
) {
    if st.segments.is_empty() {
        return;
    }
    let posteriors = st.arms.posteriors(&rotation.policy);
    let arms: Vec<(&str, Posterior)> = st
        .arms
        .arms
        .iter()
        .zip(posteriors)
        .map(|(a, p)| (a.item.as_str(), p))
        .collect();
    let total: u64 = views
        .iter()
        .map(|v| {
            arms.iter()
                .map(|(item, _)| st.segments.get(item, &v.segment).impressions)
                .sum::<u64>()
        })
        .sum();
    let _ = write!(
        out,
        "<h2>Segments</h2><p class=\"dash__note\">Each segment's posteriors borrow from the arm's overall evidence with a strength fitted to how much segments differ (now {k:.0} impressions' worth); this round's counts.</p><table class=\"dash__segments\" data-segments><thead><tr><th>Segment</th><th>Impressions</th><th>Clicks</th><th>Leader</th><th>P(best) per arm</th></tr></thead><tbody>",
        k = st.segments.strength(&arms),
    );
    for v in views {
        let (imps, clicks) = arms.iter().fold((0, 0), |(i, c), (item, _)| {
            let n = st.segments.get(item, &v.segment);
            (i + n.impressions, c + n.clicks)
        });
        let leader = v
            .p_best
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, p)| format!("{} ({:.1}%)", html(arms[i].0), p * 100.0))
            .unwrap_or_default();
        let bars: Vec<String> = v
            .p_best
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "<span class=\"swatch\" style=\"background:{}\"></span>{:.0}%",
                    colour(i),
                    p * 100.0
                )
            })
            .collect();
        let name = if v.segment == crate::snapshot::UNSEEN_SEGMENT {
            "others (no counts yet)".to_string()
        } else {
            html(&v.segment).into_owned()
        };
        let _ = write!(
            out,
            "<tr data-segment=\"{seg}\"><td>{name}</td><td>{imps} ({share:.0}%)</td><td>{clicks}</td><td>{leader}</td><td>{bars}</td></tr>",
            seg = html(&v.segment),
            share = if total > 0 { imps as f64 * 100.0 / total as f64 } else { 0.0 },
            bars = bars.join(" "),
        );
    }
    out.push_str("</tbody></table>");
}

/// Groups listed per key in the feature priors (the ones with the most impressions).
pub const FEATURE_GROUPS_SHOWN: usize = 10;
/// Longest feature key or value shown, in characters (longer ones end in an ellipsis).
const FEATURE_TEXT_SHOWN: usize = 40;

/// `s` cut to at most `max` characters, an ellipsis marking a cut.
fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// What the feature priors (`+features`) learned: per key, whether its groups differ and
/// the prior mean a fresh item of each group starts from; or how to turn them on.
fn feature_priors_section(out: &mut String, st: &SlotState, rotation: &RotationConfig) {
    out.push_str("<h2>Feature priors</h2>");
    let policy = &rotation.policy;
    if !policy.features || policy.fresh == FreshPrior::Uniform {
        out.push_str("<p class=\"dash__note\" data-feature-priors=\"off\">Feature priors are off: every fresh item starts from the same prior. Set <code>PRIOR_POLICY=default+features</code> (or add <code>+features</code> to an eb or weak policy) to start fresh items from what past items of their category and photographer did.</p>");
        return;
    }
    // The fit the fresh priors use (cached between refits under a weak policy).
    let arms = &st.arms;
    let global = arms.global_fit();
    if global == Posterior::UNIFORM {
        let _ = write!(
            out,
            "<p class=\"dash__note\" data-feature-priors=\"waiting\">Feature priors are on, but there is too little history to fit a prior yet (at least {MIN_ARMS_FOR_FIT} arms and {MIN_IMPRESSIONS_FOR_FIT} impressions): fresh items start from Beta(1, 1).</p>"
        );
        return;
    }
    let _ = write!(
        out,
        "<p class=\"dash__note\" data-feature-priors=\"on\">A fresh item starts from the global prior mean <strong data-global-mean>{g}</strong>, moved toward what past items of its groups did: each group's difference from the rest is shrunk by its weight (more evidence, more weight), and a key counts only when its groups differ beyond chance.</p>",
        g = pct(global.mean()),
    );
    let keys = arms.feature_summary();
    if keys.is_empty() {
        out.push_str("<p data-feature-keys=\"0\">No arm with features yet: items need a category or a photographer.</p>");
        return;
    }
    for k in keys.iter().take(MAX_FEATURES) {
        feature_key(out, k, global.mean());
    }
    if keys.len() > MAX_FEATURES {
        let _ = write!(
            out,
            "<p class=\"dash__note\" data-feature-more-keys=\"{n}\">and {n} more keys.</p>",
            n = keys.len() - MAX_FEATURES
        );
    }
}

/// One key of the feature priors: its test and its groups with the most evidence.
fn feature_key(out: &mut String, k: &KeySummary, global_mean: f64) {
    let key = short(&k.key, FEATURE_TEXT_SHOWN);
    let verdict = match k.q_test {
        None => format!(
            "{} groups: at least {} are needed to test whether they differ, so this key is not used",
            k.groups.len(),
            bandit::features::MIN_GROUPS_PER_KEY
        ),
        Some((q, needed)) if k.differ => format!(
            "{} groups that differ (Q = {q:.1} above {needed:.1}; between-group variance τ² = {t:.2e}, sd {sd:.2} points): a fresh item starts from its group's prior mean",
            k.groups.len(),
            t = k.tau2,
            sd = k.tau2.sqrt() * 100.0,
        ),
        Some((q, needed)) => format!(
            "{} groups that do not differ beyond chance (Q = {q:.1}, not above {needed:.1}): every fresh item gets the global prior mean",
            k.groups.len()
        ),
    };
    let _ = write!(
        out,
        "<h3>{key}</h3><p data-feature-key=\"{key}\" data-differ=\"{differ}\">{verdict}.</p><table class=\"dash__features\"><thead><tr><th>Group</th><th>Arms</th><th>Impressions</th><th>Clicks</th><th>Estimated CTR</th><th>Fresh prior mean</th><th>Against global</th><th>Weight</th></tr></thead><tbody>",
        key = html(&key),
        differ = k.differ,
    );
    let mut groups: Vec<_> = k.groups.iter().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.impressions));
    for g in groups.iter().take(FEATURE_GROUPS_SHOWN) {
        let value = short(&g.value, FEATURE_TEXT_SHOWN);
        let _ = write!(
            out,
            "<tr data-feature-group=\"{key}={value}\"><td>{value}</td><td>{arms}</td><td>{imps}</td><td>{clicks}</td><td>{rate}</td><td>{prior}</td><td>{diff:+.2} points</td><td>{w:.2}</td></tr>",
            key = html(&key),
            value = html(&value),
            arms = g.arms,
            imps = g.impressions,
            clicks = g.clicks,
            rate = pct(g.rate),
            prior = pct(g.prior_mean),
            diff = (g.prior_mean - global_mean) * 100.0,
            w = g.reliability,
        );
    }
    out.push_str("</tbody></table>");
    if groups.len() > FEATURE_GROUPS_SHOWN {
        let _ = write!(
            out,
            "<p class=\"dash__note\" data-feature-more=\"{n}\">and {n} more groups with less evidence.</p>",
            n = groups.len() - FEATURE_GROUPS_SHOWN
        );
    }
}

/// The sample-ratio check and the feedback lag.
fn health_section(out: &mut String, st: &SlotState) {
    let r = st.health.report();
    out.push_str("<h2>Health</h2><dl class=\"dash__facts\" data-health>");
    let check = if r.tested == 0 {
        "not enough logged impressions yet to check".to_string()
    } else if r.mismatches.is_empty() {
        format!(
            "every tested item ({}, {}) gets the impressions its logged probabilities promise",
            r.tested, r.window
        )
    } else {
        format!(
            "{} of {} items ({}) do not match their logged probabilities",
            r.mismatches.len(),
            r.tested,
            r.window
        )
    };
    let _ = write!(
        out,
        "<div><dt>Impressions against probabilities</dt><dd data-mismatches=\"{n}\">{check}</dd></div>",
        n = r.mismatches.len(),
    );
    let lag = match r.feedback {
        Some(f) => format!(
            "{} (newest event) to {} (oldest) in the last batch",
            ago(f.newest_ms).trim_end_matches(" ago"),
            ago(f.oldest_ms).trim_end_matches(" ago")
        ),
        None => "no event times yet".to_string(),
    };
    let _ = write!(
        out,
        "<div><dt>Feedback lag</dt><dd data-feedback-lag>{lag}</dd></div><div><dt>Unchecked</dt><dd>{u} logged impressions of versions no longer kept</dd></div></dl>",
        u = r.unchecked_impressions,
    );
    if !r.mismatches.is_empty() {
        out.push_str("<ul class=\"dash__alerts\">");
        for m in &r.mismatches {
            let _ = write!(
                out,
                "<li data-mismatch=\"{id}\"><strong>{id}</strong>: {o} impressions, {e:.0} expected (p = {p:.1e}): {reason}.</li>",
                id = html(&m.item),
                o = m.observed,
                e = m.expected,
                p = m.p_value,
                reason = html(&m.reason),
            );
        }
        out.push_str("</ul>");
    }
}

/// The newest operator writes (this slot's and the catalog's), newest first.
fn audit_section(out: &mut String, audit: &[AuditEntry]) {
    out.push_str("<h2>Audit log</h2>");
    if audit.is_empty() {
        out.push_str("<p>No operator writes yet.</p>");
        return;
    }
    out.push_str("<table class=\"dash__audit\"><thead><tr><th>When</th><th>Credential</th><th>Action</th><th>Target</th><th>Detail</th></tr></thead><tbody>");
    for e in audit.iter().take(AUDIT_SHOWN) {
        let _ = write!(
            out,
            "<tr data-audit-action=\"{action}\"><td>{when}</td><td>{actor}</td><td>{action}</td><td>{target}</td><td>{detail}</td></tr>",
            when = utc(e.at_ms),
            actor = label(&e.actor),
            action = label(&e.action),
            target = html(&e.target),
            detail = html(&e.detail),
        );
    }
    out.push_str("</tbody></table>");
}

/// The wire name of an audit enum value, for display.
fn label<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The density chart of every arm's posterior, sharing one x axis (click-through rate).
fn density_svg(posteriors: &[Posterior]) -> String {
    let x_max = posteriors
        .iter()
        .map(|p| (p.mean() + 5.0 * p.variance().sqrt()).min(1.0))
        .fold(0.02f64, f64::max);
    let xs: Vec<f64> = (0..=POINTS)
        .map(|i| x_max * i as f64 / POINTS as f64)
        .collect();
    let curves: Vec<Vec<f64>> = posteriors
        .iter()
        .map(|p| xs.iter().map(|&x| p.pdf(x).min(1e6)).collect())
        .collect();
    let y_max = curves
        .iter()
        .flatten()
        .copied()
        .filter(|y| y.is_finite())
        .fold(1e-9f64, f64::max);
    let plot_w = WIDTH - MARGIN_LEFT - 10.0;
    let plot_h = HEIGHT - MARGIN_BOTTOM - 10.0;
    let sx = |x: f64| MARGIN_LEFT + x / x_max * plot_w;
    let sy = |y: f64| 10.0 + plot_h - (y / y_max).min(1.0) * plot_h;
    let mut out = String::with_capacity(4096 + posteriors.len() * POINTS * 16);
    let _ = write!(
        out,
        "<svg class=\"density\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"Posterior densities of the click-through rate\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let _ = write!(
        out,
        "<line x1=\"{MARGIN_LEFT}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#94a3b8\"/>",
        y0 = 10.0 + plot_h,
        x1 = WIDTH - 10.0
    );
    for t in 0..=5 {
        let x = x_max * t as f64 / 5.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"{}\" fill=\"#475569\">{:.1}%</text>",
            sx(x),
            HEIGHT - 10.0,
            match t {
                0 => "start",
                5 => "end",
                _ => "middle",
            },
            x * 100.0
        );
    }
    for (i, ys) in curves.iter().enumerate() {
        let mut d = String::with_capacity(POINTS * 14);
        for (k, (&x, &y)) in xs.iter().zip(ys).enumerate() {
            let y = if y.is_finite() { y } else { y_max };
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if k == 0 { "M" } else { " L" },
                sx(x),
                sy(y)
            );
        }
        let _ = write!(
            out,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
            colour(i)
        );
    }
    out.push_str("</svg>");
    out
}

/// How the policy's rotation works, in the operators' words, under the round history.
fn rotation_note(ranking: &Ranking) -> String {
    match *ranking {
        Ranking::Draw => "At the end of a round every arm gets one posterior draw; the top half by draw is kept (the score shown), the rest retire and fresh catalog items take their places.".into(),
        Ranking::Mean => "At the end of a round the top half by posterior mean is kept (the score shown); the rest retire and fresh catalog items take their places.".into(),
        Ranking::Quantile { q } => format!("At the end of a round the top half by the posterior's {q} quantile is kept (the score shown); the rest retire and fresh catalog items take their places."),
        Ranking::Race { eps } => format!("At the end of a round the top half by posterior mean is kept (the score shown), less any arm with under a {eps} chance of beating the leader's mean; fresh catalog items take the free places."),
        Ranking::Screen { eps } => format!("After every batch an arm whose chance of beating the best lower bound in the set (mean - sd) has fallen under {eps} of its start-of-round value (with segments, that chance averaged over the segments by traffic, and a segment's leader stays) retires, and a fresh catalog item takes its place at once (mid-round, only when the catalog has one); at the end of a round an arm from an earlier round also leaves when that chance itself is under {eps}, and the rest stay (the score shown is its posterior mean)."),
    }
}

/// The whole dashboard page for one slot; `slots` are every slot of the worker (linked),
/// `audit` the newest operator writes.
pub fn page(
    st: &SlotState,
    rotation: &RotationConfig,
    view: &OperatorView,
    now_ms: f64,
    slots: &[String],
    audit: &[AuditEntry],
    settings_differ: Option<&str>,
) -> String {
    let posteriors = st.arms.posteriors(&rotation.policy);
    let mut out = String::with_capacity(32 * 1024);
    out.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta http-equiv=\"refresh\" content=\"5\">");
    let _ = write!(out, "<title>Dashboard · {}</title>", html(&st.slot));
    out.push_str("<link rel=\"stylesheet\" href=\"/style.css\"></head><body>");
    out.push_str("<header class=\"masthead\"><a class=\"brand\" href=\"/\">Photon<span>Prints</span></a><nav class=\"nav\"><a href=\"/dashboard\">Dashboard</a><a href=\"/\">Shop</a></nav></header><main class=\"dash\">");
    let _ = write!(out, "<h1>Slot <code>{}</code></h1>", html(&st.slot));
    if let Some(fix) = settings_differ {
        let _ = write!(
            out,
            "<ul class=\"dash__alerts\"><li data-settings-differ><strong>Settings differ</strong>: {}.</li></ul>",
            html(fix)
        );
    }
    if slots.len() > 1 {
        out.push_str("<nav class=\"dash__slots\">Slots: ");
        for slot in slots {
            let _ = write!(
                out,
                "<a href=\"/dashboard?slot={s}\">{s}</a> ",
                s = html(slot)
            );
        }
        out.push_str("</nav>");
    }
    let progress = (st.arms.round_impressions as f64 / rotation.round_impressions as f64).min(1.0);
    let freshness = match st.last_batch_ms {
        Some(t) => ago((now_ms - t).max(0.0)),
        None => "no feedback yet".to_string(),
    };
    let _ = write!(
        out,
        "<dl class=\"dash__facts\"><div><dt>Round</dt><dd data-round=\"{round}\">{round}</dd></div><div><dt>Policy</dt><dd>{policy}</dd></div><div><dt>This round</dt><dd>{imp} of {x} impressions <meter min=\"0\" max=\"1\" value=\"{progress:.3}\"></meter></dd></div><div><dt>Last feedback</dt><dd data-last-batch>{freshness}</dd></div><div><dt>Counted</dt><dd>{ti} impressions, {tc} clicks in {tb} batches</dd></div><div><dt>Outside the set</dt><dd>{oi} impressions, {oc} clicks</dd></div></dl>",
        round = st.arms.round,
        policy = html(&rotation.policy.to_string()),
        imp = st.arms.round_impressions,
        x = rotation.round_impressions,
        ti = st.totals.impressions,
        tc = st.totals.clicks,
        tb = st.totals.batches,
        oi = st.totals.outside_impressions,
        oc = st.totals.outside_clicks,
    );
    if st.arms.arms.is_empty() {
        out.push_str(
            "<p class=\"dash__empty\">No arms yet: import a catalog (POST /api/catalog).</p>",
        );
    } else {
        out.push_str("<h2>Posteriors</h2><figure class=\"dash__chart\">");
        out.push_str(&density_svg(&posteriors));
        out.push_str("<figcaption>Density of each arm's click-through rate; the taller and further right, the more certain and the better.</figcaption></figure>");
        out.push_str("<table class=\"dash__arms\"><thead><tr><th>Arm</th><th>Clicks</th><th>Impressions</th><th>Since entering</th><th>Mean CTR</th><th>P(best)</th></tr></thead><tbody>");
        for (i, (arm, (post, pb))) in st
            .arms
            .arms
            .iter()
            .zip(posteriors.iter().zip(&view.p_best))
            .enumerate()
        {
            let title = st
                .items
                .get(&arm.item)
                .map(|it| it.title.as_str())
                .unwrap_or("");
            let _ = write!(
                out,
                "<tr data-item=\"{id}\"><td><span class=\"swatch\" style=\"background:{c}\"></span><a href=\"/product/{id}/\">{t}</a> <small>{id}</small></td><td>{cl}</td><td>{im}</td><td>{tcl} / {tim} since round {since}</td><td>{mean:.2}%</td><td><meter min=\"0\" max=\"1\" value=\"{pb:.4}\"></meter> {pbp:.1}%</td></tr>",
                id = html(&arm.item),
                c = colour(i),
                t = html(title),
                cl = arm.clicks,
                im = arm.impressions,
                tcl = arm.total_clicks,
                tim = arm.total_impressions,
                since = arm.since_round,
                mean = post.mean() * 100.0,
                pbp = pb * 100.0,
            );
        }
        out.push_str("</tbody></table>");
    }
    segments_section(&mut out, st, rotation, &view.segment_views);
    feature_priors_section(&mut out, st, rotation);
    holdout_section(&mut out, st);
    health_section(&mut out, st);
    controls_section(&mut out, st, now_ms);
    out.push_str("<h2>Round history</h2>");
    if st.rounds.is_empty() {
        out.push_str("<p>No round has ended yet.</p>");
    } else {
        out.push_str("<table class=\"dash__rounds\"><thead><tr><th>Round</th><th>Impressions</th><th>Kept (ranking score)</th><th>Retired (clicks/impressions, score)</th><th>Added</th></tr></thead><tbody>");
        for r in st.rounds.iter().rev() {
            let kept: Vec<String> = r
                .survivors
                .iter()
                .map(|(id, d)| format!("{} ({:.2}%)", html(id), d * 100.0))
                .collect();
            let arm = |a: &RetiredArm| {
                format!(
                    "{} ({}/{}, {:.2}%)",
                    html(&a.item),
                    a.clicks,
                    a.impressions,
                    a.draw * 100.0
                )
            };
            let mut retired: Vec<String> = r.retired.iter().map(arm).collect();
            let mut added: Vec<String> = r.added.iter().map(|id| html(id).into_owned()).collect();
            if !r.screened.is_empty() {
                let screened: Vec<String> = r.screened.iter().map(arm).collect();
                retired.push(format!(
                    "<span data-screened>mid-round: {}</span>",
                    screened.join(", ")
                ));
            }
            if !r.refilled.is_empty() {
                let refilled: Vec<String> =
                    r.refilled.iter().map(|id| html(id).into_owned()).collect();
                added.push(format!(
                    "<span data-refilled>mid-round: {}</span>",
                    refilled.join(", ")
                ));
            }
            if r.unlisted > 0 {
                added.push(format!("and {} more mid-round changes", r.unlisted));
            }
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.round,
                r.impressions,
                kept.join(", "),
                retired.join(", "),
                added.join(", ")
            );
        }
        let _ = write!(
            out,
            "</tbody></table><p class=\"dash__note\">{}</p>",
            rotation_note(&rotation.policy.ranking)
        );
    }
    if bandit::armset::remembers(&rotation.policy) {
        let _ = write!(
            out,
            "<p class=\"dash__note\">The slot remembers <span data-memory>{}</span> items that left the set (at most {}): drawn again, an item comes back with its evidence and must lose more of its chance to leave again, and a refill takes candidates by a posterior draw, so clear losers rarely come back.</p>",
            st.arms.memory.len(),
            bandit::memory::MEMORY_CAPACITY
        );
    }
    audit_section(&mut out, audit);
    out.push_str("</main></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogItem;

    fn state_with_arms() -> (SlotState, RotationConfig) {
        let rotation = RotationConfig {
            arms: 2,
            round_impressions: 10,
            policy: bandit::PriorPolicy::RESET,
            cooldown_rounds: 0,
        };
        let mut st = SlotState::new("home-top-pick", &rotation);
        for id in ["a", "b<"] {
            st.arms.arms.push(bandit::Arm {
                item: id.into(),
                prior: Posterior::UNIFORM,
                clicks: 3,
                impressions: 40,
                total_clicks: 3,
                total_impressions: 40,
                since_round: 1,
                recalled: None,
            });
            st.items.insert(
                id.into(),
                CatalogItem {
                    id: id.into(),
                    title: "<script>x</script>".into(),
                    image: String::new(),
                    photographer: String::new(),
                    category: String::new(),
                    source_url: None,
                    available: true,
                },
            );
        }
        st.last_batch_ms = Some(1_000.0);
        (st, rotation)
    }

    /// The page at time 0, one slot, no audit, settings that agree.
    fn plain_page(st: &SlotState, rotation: &RotationConfig) -> String {
        page(
            st,
            rotation,
            &st.operator_view(rotation),
            0.0,
            &[],
            &[],
            None,
        )
    }

    #[test]
    fn renders_every_arm_escaped_with_its_curve() {
        let (st, rotation) = state_with_arms();
        let page = page(
            &st,
            &rotation,
            &st.operator_view(&rotation),
            4_500.0,
            &[],
            &[],
            None,
        );
        assert_eq!(page.matches("<path ").count(), 2);
        assert!(page.contains("data-item=\"a\""));
        assert!(page.contains("data-item=\"b&lt;\""));
        assert!(!page.contains("<script>"));
        assert!(page.contains("3.5 s ago"));
        assert!(
            page.contains("50.0%"),
            "two identical arms have P(best) 1/2"
        );
    }

    #[test]
    fn the_holdout_comparison_is_shown_with_its_verdict() {
        let (mut st, rotation) = state_with_arms();
        let shown = |st: &SlotState| plain_page(st, &rotation);
        assert!(!shown(&st).contains("Bandit against holdout"));
        st.totals.bandit = bandit::protocol::Counted {
            impressions: 9_000,
            clicks: 450,
        };
        assert!(shown(&st).contains("data-holdout=\"none\""));
        st.totals.holdout = bandit::protocol::Counted {
            impressions: 1_000,
            clicks: 45,
        };
        let p = shown(&st);
        assert!(p.contains("data-significant=\"false\""), "{p}");
        assert!(p.contains("5.00%") && p.contains("4.50%"));
        assert!(p.contains("not yet significant"));
        st.totals.holdout.clicks = 20;
        let p = shown(&st);
        assert!(p.contains("data-significant=\"true\""));
        assert!(p.contains("+150.0% relative"), "{p}");
    }

    #[test]
    fn health_shows_mismatches_with_reasons_and_the_lag() {
        let (mut st, rotation) = state_with_arms();
        let shown = |st: &SlotState| plain_page(st, &rotation);
        assert!(shown(&st).contains("not enough logged impressions"));
        let mut odds = crate::health::PublishedOdds::default();
        odds.push(crate::health::PublishedVersion {
            version: 1,
            odds: vec![("a".into(), 0.5), ("b<".into(), 0.5)],
            segments: Vec::new(),
        });
        let batch = bandit::EventBatch {
            exposures: vec![
                bandit::Exposure {
                    version: 1,
                    item: "a".into(),
                    impressions: 900,
                    segment: None,
                },
                bandit::Exposure {
                    version: 1,
                    item: "b<".into(),
                    impressions: 100,
                    segment: None,
                },
            ],
            event_time: Some(bandit::EventTime {
                oldest_ms: 1_000,
                newest_ms: 2_500,
            }),
            ..Default::default()
        };
        st.health.record(&batch, &odds, 4_000.0);
        let p = shown(&st);
        assert!(p.contains("data-mismatches=\"2\""), "{p}");
        assert!(p.contains("data-mismatch=\"b&lt;\""));
        assert!(p.contains("cache") && p.contains("lost"));
        assert!(p.contains("1.5 s (newest event) to 3.0 s (oldest)"), "{p}");
    }

    #[test]
    fn empty_slot_says_what_to_do() {
        let rotation = RotationConfig::default();
        let st = SlotState::new("home-top-pick", &rotation);
        let page = plain_page(&st, &rotation);
        assert!(page.contains("import a catalog"));
        assert!(page.contains("no feedback yet"));
    }

    #[test]
    fn peaked_posteriors_stay_on_the_chart() {
        let svg = density_svg(&[
            Posterior {
                alpha: 3000.0,
                beta: 97000.0,
            },
            Posterior::UNIFORM,
        ]);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn controls_and_the_audit_log_are_shown_escaped() {
        use bandit::operator::{Actor, AuditAction, PinLearning, PinRequest};
        let (mut st, rotation) = state_with_arms();
        let item = CatalogItem {
            id: "p1".into(),
            title: "<Pinned>".into(),
            image: String::new(),
            photographer: String::new(),
            category: String::new(),
            source_url: None,
            available: true,
        };
        let req = PinRequest {
            item: "p1".into(),
            until_ms: 10_000.0,
            share: 0.5,
            learning: PinLearning::Pause,
        };
        st.pin(&req, item, 1_000.0, Actor::Operator).unwrap();
        let audit = vec![AuditEntry::new(
            1_000.0,
            Actor::Ingest,
            AuditAction::CatalogDelete,
            "catalog",
            "deleted <x>",
        )];
        let slots = vec!["home-top-pick".to_string(), "side".to_string()];
        let html = page(
            &st,
            &rotation,
            &st.operator_view(&rotation),
            2_000.0,
            &slots,
            &audit,
            None,
        );
        assert!(
            html.contains(r#"data-pinned="p1">&lt;Pinned&gt;"#),
            "{html}"
        );
        assert!(html.contains("50% of requests, learning paused"));
        assert!(html.contains("<td>ingest</td><td>catalog_delete</td>"));
        assert!(html.contains("deleted &lt;x&gt;"));
        assert!(html.contains(r#"href="/dashboard?slot=side""#));
        // Once the pin has ended the page says the bandit picks.
        let later = page(
            &st,
            &rotation,
            &st.operator_view(&rotation),
            10_000.0,
            &slots,
            &[],
            Some("deploy both <from> the same wrangler.toml"),
        );
        assert!(later.contains("nothing: the bandit picks"));
        assert!(later.contains("No operator writes yet."));
        assert!(!html.contains("data-settings-differ"));
        assert!(later.contains(
            "<li data-settings-differ><strong>Settings differ</strong>: deploy both &lt;from&gt; the same wrangler.toml.</li>"
        ));
    }

    #[test]
    fn feature_priors_say_how_to_turn_them_on() {
        let (st, rotation) = state_with_arms();
        let p = plain_page(&st, &rotation);
        assert!(p.contains("<h2>Feature priors</h2>"));
        assert!(p.contains("data-feature-priors=\"off\""), "{p}");
        assert!(p.contains("<code>PRIOR_POLICY=default+features</code>"));
        assert!(!p.contains("data-feature-group"));
    }

    #[test]
    fn feature_priors_show_each_groups_prior_escaped_and_bounded() {
        use bandit::features::Features;
        let (mut st, mut rotation) = state_with_arms();
        rotation.policy = "default+features".parse().unwrap();
        // Nothing fitted yet: the section says so.
        let shown = |st: &SlotState| plain_page(st, &rotation);
        assert!(shown(&st).contains("data-feature-priors=\"waiting\""));
        // 96 past arms: three categories with clearly different rates (one named with markup
        // and one very long), crossed with 12 photographers (each with every category in
        // the same proportions) that do not differ.
        let long = "x".repeat(90);
        let cats = [("hi", 90u64), ("<b>lo</b>", 10), (long.as_str(), 40)];
        for k in 0..96u64 {
            let (cat, clicks) = cats[(k % 3) as usize];
            let f = Features::new([
                ("category", cat.to_string()),
                ("photographer", format!("p{}", (k / 3) % 12)),
            ]);
            // More arms for "hi": it has the most evidence and is listed first.
            let n = if k % 3 == 0 { 2000 } else { 1000 };
            st.arms.history.push_with(clicks * n / 1000 + k % 5, n, f);
        }
        let p = shown(&st);
        assert!(p.contains("data-feature-priors=\"on\""), "{p}");
        assert!(!p.contains("<b>lo"));
        assert!(p.contains("data-feature-group=\"category=&lt;b&gt;lo&lt;/b&gt;\""));
        // The long value is cut to 40 characters with an ellipsis.
        let cut = format!("{}…", "x".repeat(39));
        assert!(
            p.contains(&format!("data-feature-group=\"category={cut}\"")),
            "{p}"
        );
        assert!(!p.contains(&"x".repeat(41)));
        // Categories differ: "hi" comes first with the prior a fresh "hi" item gets.
        assert!(
            p.contains("data-feature-key=\"category\" data-differ=\"true\""),
            "{p}"
        );
        let hi = st
            .arms
            .fresh_prior_for(&rotation.policy, &Features::new([("category", "hi")]));
        let row = "<tr data-feature-group=\"category=hi\"><td>hi</td><td>32</td><td>64000</td>";
        let at = p.find(row).expect("the hi row");
        assert!(at < p.find("data-feature-group=\"category=&lt;b&gt;").unwrap());
        let rest = &p[at..p[at..].find("</tr>").unwrap() + at];
        assert!(rest.contains(&pct(hi.mean())), "{rest} vs {hi:?}");
        let global = st.arms.fresh_prior(&rotation.policy);
        assert!(hi.mean() > global.mean() + 0.01);
        assert!(
            p.contains(&format!("data-global-mean>{}<", pct(global.mean()))),
            "{p}"
        );
        // Photographers do not differ: 10 of the 12 are listed, the rest counted.
        assert!(
            p.contains("data-feature-key=\"photographer\" data-differ=\"false\""),
            "{p}"
        );
        assert_eq!(p.matches("data-feature-group=\"photographer=").count(), 10);
        assert!(p.contains("data-feature-more=\"2\""));
        assert!(p.contains("every fresh item gets the global prior mean"));
    }
}
