//! `evaluate --logged`: a simulated decision log in a TopPickEvent container file, with planted
//! hostile records, through the built binary.

use std::process::Command;

use apache_avro::types::Value;
use bandit::decision::{click_fragment, DecisionId, DecisionLog, ServedBy};
use collector_bridge::avro::load_schema;
use collector_bridge::simulate::{RecordEncoder, SimEvent};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const RATES: [f64; 6] = [0.03, 0.05, 0.07, 0.09, 0.11, 0.13];
/// The bandit part of the logging policy: mostly the worst items.
const BANDIT_SHARE: [f64; 6] = [0.35, 0.25, 0.15, 0.12, 0.08, 0.05];
const HOLDOUT: f64 = 0.1;
const DECISIONS: u64 = 20_000;
const T0: u64 = 1_764_000_000_000;

fn sim(event_type: &'static str, item: &str, at: u64, location: String) -> SimEvent {
    SimEvent {
        event_type,
        page_type: if event_type == "pageView" {
            "product"
        } else {
            "home"
        },
        product_id: Some(item.to_string()),
        source: (event_type == "impression").then_some("top_pick"),
        party_id: "p".into(),
        session_id: "s".into(),
        event_id: format!("e{at}"),
        timestamp: at as i64,
        location,
        duplicate: false,
        user_agent_type: "Browser",
        parameters: Vec::new(),
    }
}

struct Log {
    enc: RecordEncoder,
    records: Vec<Value>,
}

impl Log {
    fn impression(&mut self, item: &str, at: u64, params: Option<Vec<(&str, String)>>) {
        let mut e = sim("impression", item, at, "/".into());
        e.parameters = params
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        self.records.push(self.enc.value(&e));
    }

    fn click(&mut self, item: &str, at: u64, fragment: &str) {
        let loc = format!("https://shop.example/product/{item}/{fragment}");
        self.records
            .push(self.enc.value(&sim("pageView", item, at, loc)));
    }
}

fn item(i: usize) -> String {
    format!("i{i}")
}

#[test]
fn logged_evaluation_covers_the_uniform_ctr_and_counts_hostile_records() {
    let schema = load_schema(None).expect("schema");
    let mut log = Log {
        enc: RecordEncoder::new(&schema).expect("encoder"),
        records: Vec::new(),
    };
    let mut rng = SmallRng::seed_from_u64(42);
    let mut kept = Vec::new();
    for k in 0..DECISIONS {
        let holdout = rng.random::<f64>() < HOLDOUT;
        let i = if holdout {
            rng.random_range(0..RATES.len())
        } else {
            let mut u = rng.random::<f64>();
            let mut pick = RATES.len() - 1;
            for (j, s) in BANDIT_SHARE.iter().enumerate() {
                if u < *s {
                    pick = j;
                    break;
                }
                u -= s;
            }
            pick
        };
        let at = T0 + k * 1000;
        let served_by = if holdout {
            ServedBy::Holdout
        } else {
            ServedBy::Bandit
        };
        let d = DecisionLog {
            id: DecisionId {
                time_ms: at,
                random: k as u32,
            },
            probability: HOLDOUT / RATES.len() as f64 + (1.0 - HOLDOUT) * BANDIT_SHARE[i],
            round: 1,
            set: 0,
            version: 1,
            arms: RATES.len() as u32,
            served_by,
            segment: None,
        };
        log.impression(&item(i), at, Some(d.params()));
        if rng.random::<f64>() < RATES[i] {
            let f = click_fragment("top_pick", Some((&d.id, served_by)));
            log.click(&item(i), at + 20_000, &f);
        }
        kept.push((d, i));
    }
    // Hostile records, each planted a known number of times.
    let (d0, i0) = kept[0].clone();
    for _ in 0..4 {
        // A retried beacon: the same decision again.
        log.impression(&item(i0), d0.id.time_ms, Some(d0.params()));
    }
    let mut bad = d0.params();
    bad.retain(|(k, _)| *k != "decision");
    bad.push((
        "decision",
        DecisionId {
            time_ms: T0,
            random: u32::MAX,
        }
        .to_string(),
    ));
    for (k, v) in bad.iter_mut() {
        if *k == "probability" {
            *v = "1.5".into();
        }
    }
    for _ in 0..3 {
        log.impression("i1", T0, Some(bad.clone()));
    }
    for _ in 0..2 {
        log.impression("i1", T0, None);
    }
    let unknown = DecisionId {
        time_ms: T0,
        random: u32::MAX - 1,
    };
    for _ in 0..2 {
        log.click(
            "i1",
            T0 + 1,
            &click_fragment("top_pick", Some((&unknown, ServedBy::Bandit))),
        );
    }
    for (d, i) in kept.iter().skip(10).take(3) {
        // Two hours after the decision: outside the 30-minute window.
        let f = click_fragment("top_pick", Some((&d.id, d.served_by)));
        log.click(&item(*i), d.id.time_ms + 7_200_000, &f);
    }
    log.click("i1", T0, "#/?source=top_pick&decision=<script>");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.avro");
    {
        let file = std::fs::File::create(&path).expect("create");
        let mut w = apache_avro::Writer::builder()
            .schema(&schema)
            .writer(file)
            .build()
            .expect("writer");
        for r in log.records {
            w.append_value(r).expect("append");
        }
        w.flush().expect("flush");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_collector-bridge"))
        .args(["evaluate", "--logged"])
        .arg(&path)
        .args([
            "--json",
            "--window",
            "30m",
            "--candidate",
            "uniform",
            "--candidate",
            "item:i5",
            "--candidate",
            "replay:post2015",
            "--candidate",
            "item:nope",
        ])
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let truth = RATES.iter().sum::<f64>() / RATES.len() as f64;
    for est in ["ips", "snips", "dr"] {
        let ci = &v["candidates"]["uniform"][est]["ci95"];
        let (lo, hi) = (ci[0].as_f64().expect("lo"), ci[1].as_f64().expect("hi"));
        assert!(lo <= truth && truth <= hi, "uniform {est}: {ci} vs {truth}");
    }
    let ci = &v["candidates"]["item:i5"]["dr"]["ci95"];
    assert!(ci[0].as_f64().expect("lo") <= RATES[5] && RATES[5] <= ci[1].as_f64().expect("hi"));
    assert!(v["candidates"]["replay:post2015"]["replay"]["matched"]
        .as_u64()
        .is_some_and(|m| m > 100));
    assert!(v["candidates"]["item:nope"]["error"].is_string());
    let counts = &v["counts"];
    for (reason, n) in [
        ("decisions", DECISIONS),
        ("impression_duplicate", 4),
        ("impression_malformed_probability", 3),
        ("impression_no_decision", 2),
        ("click_unknown_decision", 2),
        ("click_late", 3),
        ("click_malformed_decision", 1),
    ] {
        assert_eq!(counts[reason].as_u64(), Some(n), "{reason}: {counts}");
    }
    assert_eq!(v["decisions"].as_u64(), Some(DECISIONS));

    // The table form, with the default candidates.
    let out = Command::new(env!("CARGO_BIN_EXE_collector-bridge"))
        .args(["evaluate", "--logged"])
        .arg(&path)
        .output()
        .expect("run the binary");
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(out.status.success());
    for want in [
        "logged policy",
        "post2015-last",
        "replay:default",
        "click_late 3",
    ] {
        assert!(table.contains(want), "{want}: {table}");
    }
}
