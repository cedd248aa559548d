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

const NAMES: [&str; 10] = [
    "eventType",
    "pageType",
    "productId",
    "source",
    "detectedDuplicate",
    "detectedCorruption",
    "userAgentType",
    "location",
    "timestamp",
    "eventParameters",
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
    {"name": "eventParameters", "type": ["null", {"type": "map", "values": "string"}]},
    {"name": "timestamp", "type": "long"},
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
fn negative_block_counts_are_read_item_by_item() {
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

// ---------------------------------------------------------------------------------------------
// Differential: the fast plan rejects everything apache-avro rejects. The tests above show it
// accepts what apache-avro accepts; these show the converse on damaged records (truncations,
// flipped bytes, invalid varints, negative or oversized lengths, invalid UTF-8 inside string
// fields and map keys, negative block counts), so the bridge never counts a record the
// reference decoder would refuse. When both accept, the extracted fields agree.

/// Marks the string the mutations aim at: a control byte no random string contains, then a
/// unique tag, 16 bytes in all (one-byte length varint).
const MARK: &[u8; 16] = b"\x07mark-0123456789";

/// Calls `f` on every string a value holds (values and map keys), in encoding order for
/// records, unions and arrays.
fn strings_mut(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Union(_, inner) => strings_mut(inner, f),
        Value::Array(items) => items.iter_mut().for_each(|i| strings_mut(i, f)),
        Value::Record(fields) => fields.iter_mut().for_each(|(_, v)| strings_mut(v, f)),
        Value::Map(m) => {
            let old = std::mem::take(m);
            for (mut k, mut v) in old {
                f(&mut k);
                strings_mut(&mut v, f);
                m.insert(k, v);
            }
        }
        _ => {}
    }
}

/// A valid record with its `target`-th string (modulo the count) replaced by [`MARK`]; the
/// bytes and where the mark starts, or `None` when the record holds no string.
fn marked_record(schema: &Schema, seed: u64, target: usize) -> (Vec<u8>, Option<usize>) {
    let mut rng = SplitMix64::new(seed);
    let mut value = random_value(&resolve_refs(schema), &mut rng, "", 0);
    let mut count = 0usize;
    strings_mut(&mut value, &mut |_| count += 1);
    if count > 0 {
        let pick = target % count;
        let mut i = 0usize;
        strings_mut(&mut value, &mut |s| {
            if i == pick {
                *s = String::from_utf8(MARK.to_vec()).expect("ascii");
            }
            i += 1;
        });
    }
    let bytes = write(schema, value);
    let at = bytes.windows(MARK.len()).position(|w| w == MARK);
    (bytes, at)
}

/// Byte sequences that are not UTF-8 (lone continuation, truncated sequence, overlong,
/// surrogate, beyond U+10FFFF, 0xFF).
const NOT_UTF8: [&[u8]; 7] = [
    &[0x80],
    &[0xC3, 0x28],
    &[0xE2, 0x82],
    &[0xC0, 0x80],
    &[0xED, 0xA0, 0x80],
    &[0xF4, 0x90, 0x80, 0x80],
    &[0xFF],
];

#[derive(Debug, Clone)]
enum Damage {
    /// Keep the first n bytes.
    Truncate(usize),
    /// XOR one byte with a non-zero mask.
    Flip(usize, u8),
    /// Insert a varint that never ends (11 continuation bytes) at a position.
    EndlessVarint(usize),
    /// Replace the byte at a position with an overlong varint of the same value.
    OverlongVarint(usize),
    /// Put an invalid UTF-8 sequence inside the marked string (its length unchanged).
    BadUtf8 { which: usize, offset: usize },
    /// Make the marked string's length negative (zigzag 1..=63 odd).
    NegativeLength(u8),
    /// Make the marked string's length longer than what follows.
    LongLength(u8),
    /// Replace a byte with a negative block count -n and a byte size (n, size small).
    NegativeBlock { at: usize, n: u8, size: u8 },
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 1u8..=255).prop_map(|(i, m)| Damage::Flip(i, m)),
        any::<usize>().prop_map(Damage::EndlessVarint),
        any::<usize>().prop_map(Damage::OverlongVarint),
        (any::<usize>(), any::<usize>())
            .prop_map(|(which, offset)| Damage::BadUtf8 { which, offset }),
        (1u8..=63).prop_map(Damage::NegativeLength),
        (17u8..=63).prop_map(Damage::LongLength),
        (any::<usize>(), 1u8..=4, 0u8..=8).prop_map(|(at, n, size)| Damage::NegativeBlock {
            at,
            n,
            size
        }),
    ]
}

/// The zigzag varint of `n`.
fn varint(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut b = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            b.push(byte);
            return b;
        }
        b.push(byte | 0x80);
    }
}

/// Applies the damage; `None` when it does not apply (no marked string).
fn damaged(bytes: &[u8], mark: Option<usize>, d: &Damage) -> Option<Vec<u8>> {
    let mut b = bytes.to_vec();
    let len = b.len().max(1);
    match *d {
        Damage::Truncate(n) => b.truncate(n % len),
        Damage::Flip(i, m) => {
            if b.is_empty() {
                return None;
            }
            b[i % len] ^= m
        }
        Damage::EndlessVarint(i) => {
            let at = i % (b.len() + 1);
            b.splice(at..at, [0xffu8; 11]);
        }
        Damage::OverlongVarint(i) => {
            if b.is_empty() {
                return None;
            }
            // The same small value with trailing zero groups: apache-avro and the plan both
            // read it (it is not an error), which checks that they stay aligned.
            let at = i % len;
            let v = b[at] & 0x7f;
            b.splice(at..=at, [v | 0x80, 0x80, 0x00]);
        }
        Damage::BadUtf8 { which, offset } => {
            let start = mark? + 1; // keep the control byte, damage the tag
            let seq = NOT_UTF8[which % NOT_UTF8.len()];
            let room = MARK.len() - 1 - seq.len();
            let at = start + offset % (room + 1);
            b[at..at + seq.len()].copy_from_slice(seq);
        }
        Damage::NegativeLength(k) => {
            let at = mark?.checked_sub(1)?;
            b[at] = 2 * k - 1;
        }
        Damage::LongLength(k) => {
            let at = mark?.checked_sub(1)?;
            let rest = (b.len() - at - 1) as i64;
            b.splice(at..=at, varint(rest + i64::from(k)));
        }
        Damage::NegativeBlock { at, n, size } => {
            if b.is_empty() {
                return None;
            }
            let at = at % len;
            b.splice(at..=at, [2 * n - 1, 2 * size]);
        }
    }
    Some(b)
}

/// The property for one damaged record under one schema.
fn check_rejects_what_reference_rejects(schema: &Schema, plan: &DecodePlan, bytes: &[u8]) {
    let fast = plan.decode(bytes);
    match reference::decode(schema, bytes) {
        Err(e) => assert!(
            fast.is_err(),
            "apache-avro refuses ({e}) but the plan accepts {fast:?}: {bytes:02x?}"
        ),
        Ok(v) => {
            if let Ok(fast) = fast {
                let slow = reference::extract(&v, &NAMES).expect("extract");
                assert_eq!(fast, slow, "both accept but disagree: {bytes:02x?}");
            }
        }
    }
}

fn schemas_under_test() -> Vec<Schema> {
    let mut v = vec![
        common::project_schema(),
        Schema::parse_str(EVERY_TYPE).expect("schema"),
    ];
    v.extend(common::shop_schema());
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn fast_plan_rejects_what_apache_avro_rejects(
        seed in any::<u64>(),
        target in any::<usize>(),
        damage in proptest::collection::vec(damage_strategy(), 1..3),
    ) {
        for schema in schemas_under_test() {
            let plan = DecodePlan::new(&schema, &NAMES).expect("plan");
            let (mut b, _) = marked_record(&schema, seed, target);
            for d in &damage {
                // Earlier damage may have moved or cut the mark: find it again.
                let mark = b.windows(MARK.len()).position(|w| w == MARK);
                match damaged(&b, mark, d) {
                    Some(x) => b = x,
                    None => continue,
                }
            }
            check_rejects_what_reference_rejects(&schema, &plan, &b);
        }
    }
}

/// Each damage kind aimed at each string of each schema, deterministically: a skipped field,
/// an extracted one and a map key all get invalid UTF-8 and bad lengths.
#[test]
fn every_string_position_is_checked() {
    for schema in schemas_under_test() {
        let plan = DecodePlan::new(&schema, &NAMES).expect("plan");
        for seed in 0..40u64 {
            for target in 0..64usize {
                let (bytes, mark) = marked_record(&schema, seed, target);
                if mark.is_none() {
                    continue;
                }
                for (which, _) in NOT_UTF8.iter().enumerate() {
                    let d = Damage::BadUtf8 {
                        which,
                        offset: seed as usize,
                    };
                    let b = damaged(&bytes, mark, &d).expect("marked");
                    assert!(
                        reference::decode(&schema, &b).is_err(),
                        "apache-avro accepts {d:?}"
                    );
                    check_rejects_what_reference_rejects(&schema, &plan, &b);
                }
                for d in [
                    Damage::NegativeLength(1 + (seed % 63) as u8),
                    Damage::LongLength(40),
                ] {
                    let b = damaged(&bytes, mark, &d).expect("marked");
                    check_rejects_what_reference_rejects(&schema, &plan, &b);
                }
            }
        }
    }
}

/// A negative block count is followed by the block's byte size; apache-avro ignores the size
/// and reads the items, so a block whose items are invalid is refused whatever its size says.
#[test]
fn negative_block_items_are_validated() {
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":{"type":"array","items":"boolean"}},
            {"name":"m","type":{"type":"map","values":"string"}},
            {"name":"eventType","type":"string"}]}"#,
    )
    .expect("schema");
    let plan = DecodePlan::new(&schema, &["eventType"]).expect("plan");
    // -2 items (zigzag 3), size 2, booleans 1 and 7 (invalid); end; empty map; "hi".
    let bad_bool = [3u8, 4, 1, 7, 0, 0, 4, b'h', b'i'];
    // Empty array; map block of -1 entry (zigzag 1), size 4, key "\xff" (invalid), value "";
    // end; "hi".
    let bad_key = [0u8, 1, 8, 2, 0xff, 0, 0, 4, b'h', b'i'];
    // The size of a negative block says too little: the items decide, as in apache-avro.
    let good = [3u8, 0, 1, 0, 0, 0, 4, b'h', b'i'];
    // i64::MIN as a count cannot be negated.
    let mut min_count = vec![0xffu8; 9];
    min_count.push(0x01);
    min_count.extend([0, 0, 0, 4, b'h', b'i']);
    for b in [&bad_bool[..], &bad_key[..], &good[..], &min_count[..]] {
        check_rejects_what_reference_rejects(&schema, &plan, b);
    }
    assert!(plan.decode(&good).is_ok());
    assert!(plan.decode(&bad_bool).is_err());
    assert!(plan.decode(&bad_key).is_err());
}

/// apache-avro refuses a collection whose values would take more than its allocation limit
/// (512 MiB), even of zero-width items; so does the plan.
#[test]
fn huge_zero_width_collections_are_refused_like_apache_avro() {
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"R","fields":[
            {"name":"nulls","type":{"type":"array","items":"null"}},
            {"name":"eventType","type":"string"}]}"#,
    )
    .expect("schema");
    let plan = DecodePlan::new(&schema, &["eventType"]).expect("plan");
    let record = |count: i64| {
        let mut b = varint(count);
        b.extend([0, 4, b'h', b'i']);
        b
    };
    for count in [1i64, 1000, 1 << 20, 1 << 40, i64::MAX] {
        check_rejects_what_reference_rejects(&schema, &plan, &record(count));
    }
    assert!(plan.decode(&record(1000)).is_ok());
    assert!(plan.decode(&record(1 << 40)).is_err());
}
