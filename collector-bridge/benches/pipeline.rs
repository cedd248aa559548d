//! Decode + classify + aggregate of realistic Divolte shop records, with the schema-specialised
//! decoder and with apache-avro's generic decoder.

use std::hint::black_box;
use std::path::PathBuf;

use apache_avro::Schema;
use collector_bridge::avro::{reference, Wire};
use collector_bridge::classify::Rules;
use collector_bridge::pipeline::Pipeline;
use collector_bridge::simulate::{RecordEncoder, SimEvent};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn schema() -> (Schema, &'static str) {
    let shop = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/divolte-shop/ShopEventRecord.avsc");
    match std::fs::read_to_string(&shop) {
        Ok(text) => (Schema::parse_str(&text).expect("shop schema"), "shop"),
        Err(_) => {
            eprintln!("../shared/divolte-shop is absent: benchmarking the project's schema");
            (
                collector_bridge::avro::load_schema(None).expect("schema"),
                "project",
            )
        }
    }
}

/// A realistic mix: mostly page views, some impressions and top-pick clicks, a few robots.
fn records(schema: &Schema, n: usize) -> Vec<Vec<u8>> {
    let enc = RecordEncoder::new(schema).expect("encoder");
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    (0..n)
        .map(|i| {
            let item = format!("{}", 15045568809u64 + (i as u64 * 7919) % 400);
            let (event_type, page_type, source) = match i % 10 {
                0..=3 => ("impression", "home", Some("top_pick")),
                4 => ("pageView", "product", Some("top_pick")),
                5..=7 => ("pageView", "category", None),
                _ => ("pageView", "home", None),
            };
            let e = SimEvent {
                event_type,
                page_type,
                product_id: Some(item.clone()),
                source,
                party_id: format!("0:is8tbhq5:{i:08x}kZmgRSPzDIQIdgKY8f3W"),
                session_id: format!("0:is8tbhq5:{i:08x}8dZjuBVCLjBBjjFLZIVkxM"),
                event_id: format!("0:{i:x}:CGbUYqt4YE5b0hwaEvCFGsIE4fPhk7Lg"),
                timestamp: 1_470_000_000_000 + i as i64,
                location: format!("http://localhost:9011/product/{item}/#/?source=top_pick"),
                duplicate: i % 97 == 0,
                user_agent_type: if i % 50 == 0 { "Robot" } else { "Browser" },
                parameters: Vec::new(),
            };
            let mut v = enc.value(&e);
            if let apache_avro::types::Value::Record(fields) = &mut v {
                for (name, value) in fields.iter_mut() {
                    if name == "userAgentString" || name == "referer" {
                        *value = apache_avro::types::Value::Union(
                            1,
                            Box::new(apache_avro::types::Value::String(ua.into())),
                        );
                    }
                }
            }
            apache_avro::writer::datum::GenericDatumWriter::builder(schema)
                .build()
                .expect("writer")
                .write_value_to_vec(v)
                .expect("encode")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (schema, label) = schema();
    let recs = records(&schema, 10_000);
    let bytes: usize = recs.iter().map(Vec::len).sum();
    eprintln!(
        "{label} schema: {} records, mean {} bytes",
        recs.len(),
        bytes / recs.len()
    );
    let mut g = c.benchmark_group(format!("pipeline_{label}"));
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("specialised", |b| {
        let mut p = Pipeline::new(&schema, Wire::Naked, Rules::default()).expect("pipeline");
        let tp = p.own("divolte", 0);
        let mut offset = 0i64;
        b.iter(|| {
            for r in &recs {
                let _ = black_box(p.process(tp, offset, Some(r)));
                offset += 1;
            }
            // Keep the aggregate bounded like the 500 ms flush does.
            black_box(p.drain("divolte"));
        })
    });
    g.bench_function("apache_avro_generic", |b| {
        let mut p = Pipeline::new(&schema, Wire::Naked, Rules::default()).expect("pipeline");
        let names: Vec<String> = p.field_names().iter().map(|s| s.to_string()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let tp = p.own("divolte", 0);
        let mut offset = 0i64;
        b.iter(|| {
            for r in &recs {
                let v = reference::decode(&schema, r);
                let res = match &v {
                    Ok(v) => reference::extract(v, &names),
                    Err(e) => Err(e.clone()),
                };
                let _ = black_box(p.process_extracted(tp, offset, res));
                offset += 1;
            }
            black_box(p.drain("divolte"));
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
