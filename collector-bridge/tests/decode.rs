//! The schema-specialised decoder against apache-avro's generic decoder, on the Divolte shop
//! schema (when ../shared is present), the project's schema and a schema with every Avro type.

mod common;

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use collector_bridge::avro::{reference, DecodeError, DecodePlan, Field, Wire};
use collector_bridge::classify::{Classifier, Rules};
use collector_bridge::simulate::SplitMix64;
use proptest::prelude::*;
use rand::{Rng, RngCore};

const NAMES: [&str; 7] = [
    "eventType",
    "pageType",
    "productId",
    "source",
    "detectedDuplicate",
    "detectedCorruption",
    "userAgentType",
];

fn random_string(rng: &mut SplitMix64) -> String {
    const ALPHABET: [&str; 8] = ["a", "Z", "0", "_", "é", "漢", "🙂", "/"];
    let n = rng.random_range(0..12);
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

/// A random value of schema `s`; interesting strings for the fields the bridge reads.
fn random_value(s: &Schema, rng: &mut SplitMix64, field: &str, depth: usize) -> Value {
    NAMED.with(|n| random_value_in(s, rng, field, depth, &n.borrow()))
}

thread_local! {
    static NAMED: std::cell::RefCell<HashMap<String, Schema>> = std::cell::RefCell::new(HashMap::new());
}

fn collect_named(s: &Schema, out: &mut HashMap<String, Schema>) {
    match s {
        Schema::Record(r) => {
            out.insert(r.name.fullname(None), s.clone());
            for f in &r.fields {
                collect_named(&f.schema, out);
            }
        }
        Schema::Enum(e) => {
            out.insert(e.name.fullname(None), s.clone());
        }
        Schema::Fixed(f) => {
            out.insert(f.name.fullname(None), s.clone());
        }
        Schema::Array(a) => collect_named(&a.items, out),
        Schema::Map(m) => collect_named(&m.types, out),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_named(v, out)),
        _ => {}
    }
}

fn random_value_in(
    s: &Schema,
    rng: &mut SplitMix64,
    field: &str,
    depth: usize,
    named: &HashMap<String, Schema>,
) -> Value {
    let random_value = |s: &Schema, rng: &mut SplitMix64, field: &str, depth: usize| {
        random_value_in(s, rng, field, depth, named)
    };
    match s {
        Schema::Ref { name } => {
            let target = named
                .get(&name.fullname(None))
                .unwrap_or_else(|| panic!("unknown ref {name:?}"));
            random_value(target, rng, field, depth)
        }
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(rng.random()),
        Schema::Int => Value::Int(rng.next_u32() as i32 >> rng.random_range(0..31)),
        Schema::Long => Value::Long(rng.next_u64() as i64 >> rng.random_range(0..63)),
        Schema::Float => Value::Float(rng.random()),
        Schema::Double => Value::Double(rng.random()),
        Schema::Bytes => Value::Bytes((0..rng.random_range(0..5)).map(|_| rng.random()).collect()),
        Schema::String => Value::String(match field {
            "eventType" => {
                ["impression", "pageView", "custom", ""][rng.random_range(0..4)].to_string()
            }
            "source" => ["top_pick", "other", ""][rng.random_range(0..3)].to_string(),
            "userAgentType" => ["Browser", "Robot", "robot"][rng.random_range(0..3)].to_string(),
            _ => random_string(rng),
        }),
        Schema::Fixed(f) => Value::Fixed(f.size, (0..f.size).map(|_| rng.random()).collect()),
        Schema::Enum(e) => {
            let i = rng.random_range(0..e.symbols.len());
            Value::Enum(i as u32, e.symbols[i].clone())
        }
        Schema::Array(a) => {
            let n = if depth > 3 { 0 } else { rng.random_range(0..4) };
            Value::Array(
                (0..n)
                    .map(|_| random_value(&a.items, rng, "", depth + 1))
                    .collect(),
            )
        }
        Schema::Map(m) => {
            let n = if depth > 3 { 0 } else { rng.random_range(0..4) };
            Value::Map(
                (0..n)
                    .map(|_| {
                        (
                            random_string(rng),
                            random_value(&m.types, rng, "", depth + 1),
                        )
                    })
                    .collect::<HashMap<_, _>>(),
            )
        }
        Schema::Union(u) => {
            let v = u.variants();
            // Deep recursive unions pick their first (null) branch to stay finite.
            let i = if depth > 3 {
                0
            } else {
                rng.random_range(0..v.len())
            };
            Value::Union(
                i as u32,
                Box::new(random_value(&v[i], rng, field, depth + 1)),
            )
        }
        Schema::Record(r) => Value::Record(
            r.fields
                .iter()
                .map(|f| {
                    (
                        f.name.clone(),
                        random_value(&f.schema, rng, &f.name, depth + 1),
                    )
                })
                .collect(),
        ),
        other => panic!("generator does not cover {other:?}"),
    }
}

fn resolve_refs(s: &Schema) -> Schema {
    let mut m = HashMap::new();
    collect_named(s, &mut m);
    NAMED.with(|n| *n.borrow_mut() = m);
    s.clone()
}

fn write(schema: &Schema, v: Value) -> Vec<u8> {
    GenericDatumWriter::builder(schema)
        .build()
        .expect("writer")
        .write_value_to_vec(v)
        .expect("valid value")
}

/// Both decoders agree on every extracted field of a valid record, and every strict prefix
/// is an error for both.
fn check_agreement(schema: &Schema, seed: u64) {
    let plan = DecodePlan::new(schema, &NAMES).expect("plan");
    let mut rng = SplitMix64::new(seed);
    let value = random_value(&resolve_refs(schema), &mut rng, "", 0);
    let bytes = write(schema, value);
    let fast = plan.decode(&bytes).expect("fast decode of a valid record");
    let generic = reference::decode(schema, &bytes).expect("reference decode");
    let slow = reference::extract(&generic, &NAMES).expect("extract");
    assert_eq!(fast, slow);
    for cut in 0..bytes.len() {
        assert!(
            plan.decode(&bytes[..cut]).is_err(),
            "prefix of {cut} bytes decoded"
        );
    }
    // Trailing bytes mean another schema wrote the record.
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        plan.decode(&longer),
        Err(DecodeError::Trailing(1))
    ));
}

const EVERY_TYPE: &str = r#"{
  "type": "record", "name": "Every", "namespace": "t",
  "fields": [
    {"name": "n", "type": "null"},
    {"name": "f", "type": "float"},
    {"name": "d", "type": "double"},
    {"name": "b", "type": "bytes"},
    {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
    {"name": "fx2", "type": "Four"},
    {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}},
    {"name": "arr", "type": {"type": "array", "items": {"type": "record", "name": "Inner", "fields": [
        {"name": "x", "type": "long"}, {"name": "tags", "type": {"type": "map", "values": ["null", "string"]}}]}}},
    {"name": "list", "type": {"type": "record", "name": "Node", "fields": [
        {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}]}},
    {"name": "eventType", "type": "Color"},
    {"name": "pageType", "type": ["null", "string", "long"]},
    {"name": "productId", "type": ["null", "string"]},
    {"name": "source", "type": "string"},
    {"name": "nulls", "type": {"type": "array", "items": "null"}},
    {"name": "detectedDuplicate", "type": ["boolean", "null"]},
    {"name": "detectedCorruption", "type": "boolean"},
    {"name": "userAgentType", "type": ["null", "string"]},
    {"name": "tail", "type": ["null", "Inner"]}
  ]}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn project_schema_agrees(seed in any::<u64>()) {
        check_agreement(&common::project_schema(), seed);
    }

    #[test]
    fn every_type_schema_agrees(seed in any::<u64>()) {
        let schema = Schema::parse_str(EVERY_TYPE).expect("schema");
        check_agreement(&schema, seed);
    }

    #[test]
    fn garbage_never_panics_and_agrees_when_valid(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for schema in [common::project_schema(), Schema::parse_str(EVERY_TYPE).expect("schema")] {
            let plan = DecodePlan::new(&schema, &NAMES).expect("plan");
            let fast = plan.decode(&bytes);
            let _ = Wire::Confluent.strip(&bytes).and_then(|b| plan.decode(b));
            if let Ok(v) = reference::decode(&schema, &bytes) {
                prop_assert_eq!(fast.expect("fast accepts what apache-avro accepts"), reference::extract(&v, &NAMES).expect("extract"));
            }
        }
    }
}

#[test]
fn shop_schema_agrees() {
    let Some(schema) = common::shop_schema() else {
        return;
    };
    let mut seeds = SplitMix64::new(7);
    for _ in 0..500 {
        check_agreement(&schema, seeds.next_u64());
    }
}

#[test]
fn negative_block_counts_are_skipped_by_size() {
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":{"type":"array","items":"long"}},
            {"name":"eventType","type":"string"}]}"#,
    )
    .expect("schema");
    // Block of -2 items (zigzag 3) and 2 bytes: longs 1 and 2; then an end block; then "hi".
    let bytes = [3u8, 4, 2, 4, 0, 4, b'h', b'i'];
    let plan = DecodePlan::new(&schema, &["eventType"]).expect("plan");
    let fast = plan.decode(&bytes).expect("fast");
    assert_eq!(fast.fields[0], Field::Str("hi"));
    let v = reference::decode(&schema, &bytes).expect("reference");
    assert_eq!(
        reference::extract(&v, &["eventType"]).expect("extract"),
        fast
    );
}

#[test]
fn huge_counts_of_zero_width_items_do_not_hang() {
    let schema = Schema::parse_str(EVERY_TYPE).expect("schema");
    let plan = DecodePlan::new(&schema, &NAMES).expect("plan");
    // A valid record, then the same with the array-of-null count replaced by a huge value
    // is still bounded (it simply decodes or errors).
    let mut rng = SplitMix64::new(1);
    let bytes = write(
        &schema,
        random_value(&resolve_refs(&schema), &mut rng, "", 0),
    );
    plan.decode(&bytes).expect("valid");
    let mut garbage = vec![0xffu8; 9];
    garbage.push(0x7f);
    let _ = plan.decode(&garbage);
}

fn shop_like_record(schema: &Schema, kind: common::Ev) -> Vec<u8> {
    let enc = collector_bridge::simulate::RecordEncoder::new(schema).expect("encoder");
    enc.encode(&common::event(kind, "15045568809", 1))
        .expect("encode")
}

#[test]
fn confluent_framing_is_checked_and_stripped() {
    let schema = common::project_schema();
    let plan = DecodePlan::new(&schema, &NAMES).expect("plan");
    let naked = shop_like_record(&schema, common::Ev::Click);
    let mut framed = vec![0u8, 0, 0, 0, 42];
    framed.extend_from_slice(&naked);
    let a = plan
        .decode(Wire::Confluent.strip(&framed).expect("strip"))
        .expect("decode");
    assert_eq!(a, plan.decode(&naked).expect("decode"));
    assert_eq!(a.fields[0], Field::Str("pageView"));
    assert_eq!(a.fields[2], Field::Str("15045568809"));
    let mut bad = framed.clone();
    bad[0] = 7;
    assert_eq!(Wire::Confluent.strip(&bad), Err(DecodeError::BadMagic(7)));
    assert!(Wire::Confluent.strip(&[0, 0, 1]).is_err());
    // A naked record read as Confluent: magic is the first field (a boolean 0 passes) but the
    // rest is misaligned and fails.
    assert!(Wire::Confluent
        .strip(&naked)
        .and_then(|b| plan.decode(b))
        .is_err());
}

#[test]
fn shop_records_decode_naked_and_confluent() {
    let Some(schema) = common::shop_schema() else {
        return;
    };
    let plan = DecodePlan::new(&schema, &NAMES).expect("plan");
    let classifier = Classifier::new(Rules::default(), &plan).expect("rules fit the shop schema");
    let naked = shop_like_record(&schema, common::Ev::Impression);
    let rec = plan.decode(&naked).expect("decode");
    let ev = match classifier.classify(&rec) {
        collector_bridge::classify::Outcome::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    };
    assert_eq!(ev.item, "15045568809");
    let mut framed = vec![0u8, 0, 0, 0, 1];
    framed.extend_from_slice(&naked);
    assert_eq!(
        plan.decode(Wire::Confluent.strip(&framed).expect("strip"))
            .expect("decode"),
        rec
    );
}

#[test]
fn unusable_field_types_are_refused_at_startup() {
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"R","fields":[{"name":"productId","type":{"type":"array","items":"string"}}]}"#,
    )
    .expect("schema");
    assert!(DecodePlan::new(&schema, &["productId"]).is_err());
    assert!(DecodePlan::new(&Schema::String, &["x"]).is_err());
}
