//! The bridge's schema-specialised Avro decoder on arbitrary messages, for the built-in schema
//! and (when present at build time) the Divolte shop schema, naked and Confluent-framed, alone
//! and through the whole pipeline (decode -> classify -> aggregate -> batch).
//!
//! Invariants: nothing panics; a decoded record's strings lie inside the message and fields the
//! schema lacks stay `Missing`; apache-avro's reader accepts every record the plan accepts and
//! extracts the same fields; the pipeline counts at most one event per message and every batch
//! it drains passes `EventBatch::validate`.
//!
//! `TOP_PICK_FUZZ_SEEDS=DIR` makes the binary write valid records (the project's encoder) to
//! DIR and exit, which is how `fuzz/seeds/avro_decode` and the shop records are made.
#![no_main]

use std::sync::{Mutex, OnceLock};

use apache_avro::Schema;
use collector_bridge::avro::{reference, DecodeError, DecodePlan, Extracted, Field, StrMap, Wire};
use collector_bridge::classify::{Classifier, Outcome, Rules};
use collector_bridge::pipeline::{BadMessage, Pipeline};
use collector_bridge::simulate::{RecordEncoder, SimEvent};
use libfuzzer_sys::fuzz_target;

include!(concat!(env!("OUT_DIR"), "/shop_schema.rs"));

const WIRES: [Wire; 2] = [Wire::Naked, Wire::Confluent];

struct Case {
    label: &'static str,
    schema: Schema,
    plan: DecodePlan,
    names: Vec<String>,
    classifier: Classifier,
    /// One pipeline per wire, drained after every message.
    pipelines: Vec<(Pipeline, usize)>,
}

impl Case {
    fn new(label: &'static str, schema: Schema) -> Case {
        let rules = Rules::default();
        let plan = Classifier::plan(&rules, &schema).expect("plan");
        let classifier = Classifier::new(rules.clone(), &plan).expect("classifier");
        let names = plan.field_names().to_vec();
        let pipelines = WIRES
            .iter()
            .map(|&w| {
                let mut p = Pipeline::new(&schema, w, rules.clone()).expect("pipeline");
                let tp = p.own("fuzz", 0);
                (p, tp)
            })
            .collect();
        Case {
            label,
            schema,
            plan,
            names,
            classifier,
            pipelines,
        }
    }
}

/// The schemas under test: the built-in one, and the shop's when it was present at build time.
fn schemas() -> Vec<(&'static str, Schema)> {
    let mut v = vec![(
        "project",
        collector_bridge::avro::load_schema(None).expect("built-in schema"),
    )];
    if let Some(text) = SHOP_SCHEMA {
        v.push(("shop", Schema::parse_str(text).expect("shop schema")));
    }
    v
}

/// Built once and never dropped: a plan leaks its field names on purpose (once per plan, at
/// startup), and a static keeps them reachable so LeakSanitizer does not report them at exit.
static CASES: OnceLock<Mutex<Vec<Case>>> = OnceLock::new();

/// Whether `s` lies inside `buf` (borrowed from the message, not invented).
fn inside(s: &str, buf: &[u8]) -> bool {
    let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
    let p = s.as_ptr() as usize;
    s.is_empty() || (p >= start && p + s.len() <= end)
}

fn check_decoded(case: &Case, body: &[u8], rec: &Extracted<'_>) {
    for (slot, f) in rec.fields.iter().enumerate() {
        if slot >= case.names.len() || !case.plan.has_field(slot) {
            assert_eq!(
                *f,
                Field::Missing,
                "{}: slot {slot} has no field",
                case.label
            );
        }
        if let Field::Str(s) = f {
            // Neither schema extracts an enum, so every string is a slice of the message.
            assert!(
                inside(s, body),
                "{}: {s:?} is not from the message",
                case.label
            );
            assert!(s.len() <= body.len());
        }
        if let Field::Long(_) = f {
            // Only the event time is a number.
            assert_eq!(
                case.names.get(slot).map(String::as_str),
                Some("timestamp"),
                "{}: slot {slot} is a number",
                case.label
            );
        }
        if let Field::StrMap(StrMap::Encoded(raw)) = f {
            // A map is a validated slice of the message, and its entries are too.
            let (start, end) = (body.as_ptr() as usize, body.as_ptr() as usize + body.len());
            let p = raw.as_ptr() as usize;
            assert!(
                p >= start && p + raw.len() <= end,
                "{}: a map is not from the message",
                case.label
            );
            for (k, v) in StrMap::Encoded(raw).entries() {
                assert!(
                    inside(k, body) && inside(v, body),
                    "{}: map entry not from the message",
                    case.label
                );
            }
        }
    }
    // The differential oracle: what the plan accepts, apache-avro accepts, with equal fields.
    let names: Vec<&str> = case.names.iter().map(String::as_str).collect();
    let value = reference::decode(&case.schema, body).unwrap_or_else(|e| {
        panic!(
            "{}: the plan accepts a record apache-avro refuses ({e}): {body:02x?}",
            case.label
        )
    });
    let slow = reference::extract(&value, &names).expect("extract");
    assert_eq!(*rec, slow, "{}: plan and apache-avro disagree", case.label);
}

fn check_wire(wire: Wire, data: &[u8], body: &Result<&[u8], DecodeError>) {
    match wire {
        Wire::Naked => assert_eq!(*body, Ok(data)),
        Wire::Confluent => match data {
            [] => assert_eq!(*body, Err(DecodeError::Empty)),
            [m, ..] if *m != 0 => assert_eq!(*body, Err(DecodeError::BadMagic(*m))),
            d if d.len() < 5 => assert!(matches!(body, Err(DecodeError::Truncated(_)))),
            d => assert_eq!(*body, Ok(&d[5..])),
        },
    }
}

fn one(case: &mut Case, data: &[u8]) {
    for (w, &wire) in WIRES.iter().enumerate() {
        let body = wire.strip(data);
        check_wire(wire, data, &body);
        let decoded = body.clone().and_then(|b| case.plan.decode(b));
        let expected_event = match (&body, &decoded) {
            (Ok(b), Ok(rec)) => {
                check_decoded(case, b, rec);
                match case.classifier.classify(rec) {
                    Outcome::Event(ev) => {
                        assert!(bandit::batch::is_valid_item_id(ev.item));
                        assert!(ev.slot < case.classifier.slots().len());
                        Some(ev.item.to_string())
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        // The same message through the pipeline, then drained.
        let (pipeline, tp) = &mut case.pipelines[w];
        let res = pipeline.process(*tp, 0, Some(data));
        assert_eq!(
            matches!(res, Err(BadMessage::Decode(_))),
            decoded.is_err(),
            "{}: the pipeline and the plan disagree on {data:02x?}",
            case.label
        );
        let batches = pipeline.drain("fuzz");
        assert_eq!(batches.len(), 1, "every message is accounted");
        let batch = &batches[0].batch;
        batch.validate().expect("a drained batch is valid");
        assert_eq!(batch.offsets.len(), 1);
        assert_eq!((batch.offsets[0].from, batch.offsets[0].to), (0, 0));
        let events: u64 = batch.counts.iter().map(|c| c.impressions + c.clicks).sum();
        match &expected_event {
            Some(item) => {
                assert_eq!(events, 1);
                assert_eq!(&batch.counts[0].item, item);
            }
            None => assert_eq!(events, 0),
        }
    }
}

/// Writes valid records of every schema, naked and framed, and a few near misses.
fn write_seeds(dir: &str) {
    std::fs::create_dir_all(dir).expect("seed dir");
    for (label, schema) in schemas() {
        let enc = RecordEncoder::new(&schema).expect("encoder");
        let events = [
            ("impression", "home", Some("top_pick"), false, "Browser"),
            ("pageView", "product", Some("top_pick"), false, "Browser"),
            ("pageView", "category", None, false, "Browser"),
            ("impression", "home", Some("top_pick"), true, "Browser"),
            ("impression", "home", Some("top_pick"), false, "Robot"),
        ];
        for (i, (event_type, page_type, source, duplicate, agent)) in events.iter().enumerate() {
            let e = SimEvent {
                event_type,
                page_type,
                product_id: Some(format!("1504556880{i}")),
                source: *source,
                party_id: format!("0:is8tbhq5:{i:08x}kZmgRSPzDIQIdgKY8f3W"),
                session_id: format!("0:is8tbhq5:{i:08x}8dZjuBVCLjBBjjFLZIVkxM"),
                event_id: format!("0:{i:x}:CGbUYqt4YE5b0hwaEvCFGsIE4fPhk7Lg"),
                timestamp: 1_470_000_000_000 + i as i64,
                location: format!("http://localhost:9011/product/1504556880{i}/#/?source=top_pick"),
                duplicate: *duplicate,
                user_agent_type: agent,
                parameters: Vec::new(),
            };
            let naked = enc.encode(&e).expect("encode");
            let mut framed = vec![0u8, 0, 0, 0, 1];
            framed.extend_from_slice(&naked);
            for (kind, bytes) in [("naked", &naked), ("confluent", &framed)] {
                let path = format!("{dir}/{label}-{i}-{kind}.avro");
                std::fs::write(path, bytes).expect("write seed");
            }
        }
    }
}

fuzz_target!(
    init: {
        if let Ok(dir) = std::env::var("TOP_PICK_FUZZ_SEEDS") {
            write_seeds(&dir);
            std::process::exit(0);
        }
    },
    |data: &[u8]| {
        let cases = CASES.get_or_init(|| {
            Mutex::new(schemas().into_iter().map(|(l, s)| Case::new(l, s)).collect())
        });
        for case in cases.lock().expect("one fuzzing thread").iter_mut() {
            one(case, data);
        }
    }
);
