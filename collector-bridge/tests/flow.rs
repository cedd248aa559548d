//! Classification, the push/resync protocol against a fake worker, replay, simulate and
//! catalog import, without Kafka.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bandit::{EventBatch, ItemCount, OffsetRange};
use collector_bridge::avro::{DecodePlan, Wire};
use collector_bridge::classify::{Classifier, DropReason, Kind, Outcome, Rules, Unclassifiable};
use collector_bridge::delivery::{deliver_pending, load_watermarks, Delivery, FlushPolicy};
use collector_bridge::metrics::Metrics;
use collector_bridge::pipeline::Pipeline;
use collector_bridge::simulate::{self, CtrDist, RecordEncoder, SimConfig};
use collector_bridge::worker_client::{Backoff, WorkerClient, WorkerError};
use common::{event, Ev, FakeWorker};

fn client(fake: &FakeWorker, token: Option<&str>) -> WorkerClient {
    let backoff = Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(1),
    };
    WorkerClient::new(
        &fake.url,
        token.map(str::to_string),
        backoff,
        Arc::new(AtomicBool::new(false)),
        Arc::new(Metrics::default()),
    )
}

fn encode(kind: Ev, item: &str, i: u64) -> Vec<u8> {
    let schema = common::project_schema();
    RecordEncoder::new(&schema)
        .expect("encoder")
        .encode(&event(kind, item, i))
        .expect("encode")
}

fn classify_with(rules: Rules, bytes: &[u8]) -> String {
    let schema = common::project_schema();
    let plan = Classifier::plan(&rules, &schema).expect("plan");
    let c = Classifier::new(rules, &plan).expect("classifier");
    let rec = plan.decode(bytes).expect("decode");
    format!("{:?}", c.classify(&rec))
}

#[test]
fn default_rules_classify_each_kind() {
    let schema = common::project_schema();
    let rules = Rules::default();
    let plan = Classifier::plan(&rules, &schema).expect("plan");
    let c = Classifier::new(rules, &plan).expect("classifier");
    let cases = [
        (
            Ev::Impression,
            Outcome::Event(collector_bridge::classify::Event {
                slot: 0,
                item: "it",
                kind: Kind::Impression,
            }),
        ),
        (
            Ev::Click,
            Outcome::Event(collector_bridge::classify::Event {
                slot: 0,
                item: "it",
                kind: Kind::Click,
            }),
        ),
        (Ev::Noise, Outcome::Ignored),
        (Ev::Duplicate, Outcome::Dropped(DropReason::Duplicate)),
        (Ev::Robot, Outcome::Dropped(DropReason::Robot)),
        (
            Ev::MissingItem,
            Outcome::Invalid(Unclassifiable::MissingItem),
        ),
    ];
    for (kind, want) in cases {
        let bytes = encode(kind, "it", 1);
        let rec = plan.decode(&bytes).expect("decode");
        assert_eq!(c.classify(&rec), want, "{kind:?}");
    }
    assert_eq!(c.slots(), ["home-top-pick".to_string()]);
}

#[test]
fn drop_rules_can_be_turned_off_and_corruption_is_dropped() {
    let keep = Rules {
        drop_duplicates: false,
        drop_robots: false,
        ..Rules::default()
    };
    assert!(classify_with(keep.clone(), &encode(Ev::Duplicate, "a", 1)).starts_with("Event"));
    assert!(classify_with(keep, &encode(Ev::Robot, "a", 1)).starts_with("Event"));
    // Corruption flag: encode by hand through the generic value.
    let schema = common::project_schema();
    let enc = RecordEncoder::new(&schema).expect("encoder");
    let mut v = enc.value(&event(Ev::Impression, "a", 1));
    if let apache_avro::types::Value::Record(fields) = &mut v {
        for (n, f) in fields.iter_mut() {
            if n == "detectedCorruption" {
                *f = apache_avro::types::Value::Boolean(true);
            }
        }
    }
    let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .expect("writer")
        .write_value_to_vec(v)
        .expect("encode");
    assert_eq!(classify_with(Rules::default(), &bytes), "Dropped(Corrupt)");
    let long_item = "x".repeat(200);
    assert_eq!(
        classify_with(Rules::default(), &encode(Ev::Click, &long_item, 1)),
        "Invalid(ItemTooLong)"
    );
    // The worker refuses a batch with an id no catalog item can have: dropped here instead.
    for bad in ["a b", "<x>", "..", "é"] {
        assert_eq!(
            classify_with(Rules::default(), &encode(Ev::Click, bad, 1)),
            "Invalid(BadItem)",
            "{bad:?}"
        );
    }
}

#[test]
fn custom_field_names_and_sources() {
    let schema = apache_avro::Schema::parse_str(
        r#"{"type":"record","name":"Custom","fields":[
            {"name":"kind","type":{"type":"enum","name":"K","symbols":["view","show"]}},
            {"name":"sku","type":["null","string"]},
            {"name":"from","type":"string"}]}"#,
    )
    .expect("schema");
    let mut rules = Rules::default();
    rules.fields.event_type = "kind".into();
    rules.fields.item = "sku".into();
    rules.fields.source = "from".into();
    rules.impression_event_types = vec!["show".into()];
    rules.click_event_types = vec!["view".into()];
    rules.sources = vec![
        ("hero".into(), "hero-slot".into()),
        ("side".into(), "side-slot".into()),
    ];
    let plan = Classifier::plan(&rules, &schema).expect("plan");
    let c = Classifier::new(rules, &plan).expect("classifier");
    // kind=show(1), sku=union 1 "A1", from="side"
    let bytes = [2u8, 2, 4, b'A', b'1', 8, b's', b'i', b'd', b'e'];
    match c.classify(&plan.decode(&bytes).expect("decode")) {
        Outcome::Event(e) => {
            assert_eq!((e.slot, e.item, e.kind), (1, "A1", Kind::Impression));
            assert_eq!(c.slots()[e.slot], "side-slot");
        }
        other => panic!("{other:?}"),
    }
    // A schema without the configured fields is refused at startup.
    assert!(Classifier::new(
        Rules::default(),
        &DecodePlan::new(&schema, &Rules::default().fields.as_plan_fields()).expect("plan")
    )
    .is_err());
}

fn feed(p: &mut Pipeline, topic: &str, partition: i32, events: &[(i64, Ev, &str)]) {
    let tp = p.partition(topic, partition);
    for (o, kind, item) in events {
        let bytes = encode(*kind, item, *o as u64);
        let _ = p.process(tp, *o, Some(&bytes));
    }
}

#[test]
fn conflict_resynchronises_without_losing_or_double_counting() {
    let fake = FakeWorker::start(&["home-top-pick"]);
    let c = client(&fake, Some(&fake.token));
    // Another process already applied offsets 0..=49 with 50 impressions of "a".
    fake.preload(
        "home-top-pick",
        &EventBatch {
            source: "other".into(),
            offsets: vec![OffsetRange {
                topic: "t".into(),
                partition: 0,
                from: 0,
                to: 49,
            }],
            counts: vec![ItemCount {
                item: "a".into(),
                impressions: 50,
                clicks: 0,
            }],
        },
    );
    let mut p =
        Pipeline::new(&common::project_schema(), Wire::Naked, Rules::default()).expect("pipeline");
    let stream: Vec<(i64, Ev, &str)> = (0..100)
        .map(|o| {
            (
                o,
                if o % 10 == 0 {
                    Ev::Click
                } else {
                    Ev::Impression
                },
                "a",
            )
        })
        .collect();
    // Stale watermarks (as after a lost response): the bridge reads 0..99 again.
    feed(&mut p, "t", 0, &stream);
    assert_eq!(
        deliver_pending(&mut p, &c, "divolte").expect("deliver"),
        Delivery::Resync
    );
    assert_eq!(fake.slot("home-top-pick").conflicts, 1);
    let tp = p.partition("t", 0);
    // The watermarks come from the 409's offsets, not from another request.
    assert_eq!(p.resume_offset(tp), Some(50));
    assert_eq!(fake.slot("home-top-pick").offset_reads, 0);
    // Re-read from the resume offset, as the consumer's seek does.
    feed(&mut p, "t", 0, &stream[50..]);
    assert_eq!(
        deliver_pending(&mut p, &c, "divolte").expect("deliver"),
        Delivery::Done
    );
    let impressions = 50
        + stream[50..]
            .iter()
            .filter(|e| e.1 == Ev::Impression)
            .count() as u64;
    let clicks = stream[50..].iter().filter(|e| e.1 == Ev::Click).count() as u64;
    assert_eq!(fake.totals("home-top-pick"), (impressions, clicks));
    assert_eq!(fake.applied("home-top-pick", "t", 0), Some(99));
    // Redelivery after a crash is a duplicate and changes nothing.
    load_watermarks(&mut p, &c).expect("load");
    feed(&mut p, "t", 0, &stream);
    assert_eq!(p.pending().events, 0);
}

#[test]
fn a_conflict_takes_that_slots_watermarks_from_the_409_body() {
    let fake = FakeWorker::start(&["s1", "s2"]);
    let c = client(&fake, Some(&fake.token));
    // Another process already applied s1's t/0 up to 49 and t/1 up to 29.
    fake.preload(
        "s1",
        &EventBatch {
            source: "other".into(),
            offsets: vec![
                OffsetRange {
                    topic: "t".into(),
                    partition: 0,
                    from: 0,
                    to: 49,
                },
                OffsetRange {
                    topic: "t".into(),
                    partition: 1,
                    from: 0,
                    to: 29,
                },
            ],
            counts: vec![ItemCount {
                item: "a".into(),
                impressions: 25,
                clicks: 0,
            }],
        },
    );
    // Slot 0 is s2 (pushed first), slot 1 is s1.
    let rules = Rules {
        sources: vec![
            ("other_pick".into(), "s2".into()),
            ("top_pick".into(), "s1".into()),
        ],
        ..Rules::default()
    };
    let mut p = Pipeline::new(&common::project_schema(), Wire::Naked, rules).expect("pipeline");
    let tp0 = p.own("t", 0);
    let tp1 = p.own("t", 1);
    let schema = common::project_schema();
    let enc = RecordEncoder::new(&schema).expect("encoder");
    // t/0: even offsets are s1 impressions of "a", odd ones s2 impressions of "b";
    // t/1: s1 clicks of "c".
    let feed_from = |p: &mut Pipeline, from0: i64, from1: i64| {
        for o in from0..100 {
            let mut e = event(Ev::Impression, if o % 2 == 0 { "a" } else { "b" }, o as u64);
            if o % 2 == 1 {
                e.source = Some("other_pick");
            }
            let _ = p.process(tp0, o, Some(&enc.encode(&e).expect("encode")));
        }
        for o in from1..40 {
            let e = event(Ev::Click, "c", o as u64);
            let _ = p.process(tp1, o, Some(&enc.encode(&e).expect("encode")));
        }
    };
    // Stale watermarks (nothing loaded): everything is read from offset 0.
    feed_from(&mut p, 0, 0);
    assert_eq!(
        deliver_pending(&mut p, &c, "divolte").expect("deliver"),
        Delivery::Resync
    );
    assert_eq!(fake.slot("s2").applied_batches, 1);
    assert_eq!(fake.slot("s1").conflicts, 1);
    // s1's watermarks are the 409's offsets (49 and 29), s2 keeps its acknowledged 99 and 39,
    // and no slot's offsets were read again.
    assert_eq!(p.resume_offset(tp0), Some(50));
    assert_eq!(p.resume_offset(tp1), Some(30));
    assert_eq!(
        fake.slot("s1").offset_reads + fake.slot("s2").offset_reads,
        0
    );
    feed_from(&mut p, 50, 30);
    assert_eq!(
        deliver_pending(&mut p, &c, "divolte").expect("deliver"),
        Delivery::Done
    );
    // Exactly once: s1 = preloaded 25 + even offsets 50..=98, clicks 30..=39; s2 = odd 1..=99.
    assert_eq!(fake.totals("s1"), (25 + 25, 10));
    assert_eq!(fake.totals("s2"), (50, 0));
    assert_eq!(fake.applied("s1", "t", 0), Some(99));
    assert_eq!(fake.applied("s1", "t", 1), Some(39));
    // s2 had nothing new in the re-read: no duplicate, no conflict, no second batch.
    let s2 = fake.slot("s2");
    assert_eq!((s2.applied_batches, s2.duplicates, s2.conflicts), (1, 0, 0));
    assert_eq!(fake.slot("s1").offset_reads + s2.offset_reads, 0);
}

#[test]
fn several_slots_share_a_topic_with_separate_watermarks() {
    let fake = FakeWorker::start(&["s1", "s2"]);
    let c = client(&fake, Some(&fake.token));
    fake.preload(
        "s1",
        &EventBatch {
            source: "x".into(),
            offsets: vec![OffsetRange {
                topic: "t".into(),
                partition: 0,
                from: 0,
                to: 9,
            }],
            counts: vec![],
        },
    );
    let rules = Rules {
        sources: vec![
            ("top_pick".into(), "s1".into()),
            ("other_pick".into(), "s2".into()),
        ],
        ..Rules::default()
    };
    let mut p = Pipeline::new(&common::project_schema(), Wire::Naked, rules).expect("pipeline");
    let tp = p.own("t", 0);
    load_watermarks(&mut p, &c).expect("load");
    assert_eq!(
        p.resume_offset(tp),
        None,
        "s2 has applied nothing: start from the earliest"
    );
    let schema = common::project_schema();
    let enc = RecordEncoder::new(&schema).expect("encoder");
    for o in 0..20i64 {
        let mut e = event(Ev::Impression, "a", o as u64);
        if o % 2 == 1 {
            e.source = Some("other_pick");
        }
        let _ = p.process(tp, o, Some(&enc.encode(&e).expect("encode")));
    }
    assert_eq!(
        deliver_pending(&mut p, &c, "divolte").expect("deliver"),
        Delivery::Done
    );
    // s1 counts only even offsets above 9; s2 every odd offset.
    assert_eq!(fake.totals("s1"), (5, 0));
    assert_eq!(fake.totals("s2"), (10, 0));
    assert_eq!(fake.applied("s1", "t", 0), Some(19));
    assert_eq!(fake.applied("s2", "t", 0), Some(19));
}

#[test]
fn transient_failures_are_retried_and_config_errors_are_fatal() {
    let fake = FakeWorker::start(&["home-top-pick"]);
    fake.state.lock().expect("state").fail_next = 3;
    let c = client(&fake, Some(&fake.token));
    let mut p =
        Pipeline::new(&common::project_schema(), Wire::Naked, Rules::default()).expect("pipeline");
    feed(
        &mut p,
        "t",
        0,
        &[(0, Ev::Impression, "a"), (1, Ev::Click, "a")],
    );
    assert_eq!(
        deliver_pending(&mut p, &c, "divolte").expect("deliver"),
        Delivery::Done
    );
    assert_eq!(fake.totals("home-top-pick"), (1, 1));

    let bad_token = client(&fake, Some("wrong"));
    feed(&mut p, "t", 0, &[(2, Ev::Impression, "a")]);
    match deliver_pending(&mut p, &bad_token, "divolte") {
        Err(e @ WorkerError::Fatal { status: 401, .. }) => assert!(e.to_string().contains("token")),
        other => panic!("expected a fatal 401, got {other:?}"),
    }
    let rules = Rules {
        sources: vec![("top_pick".into(), "no-such-slot".into())],
        ..Rules::default()
    };
    let mut p = Pipeline::new(&common::project_schema(), Wire::Naked, rules).expect("pipeline");
    feed(&mut p, "t", 0, &[(0, Ev::Impression, "a")]);
    match deliver_pending(&mut p, &c, "divolte") {
        Err(e @ WorkerError::Fatal { status: 404, .. }) => assert!(e.to_string().contains("slot")),
        other => panic!("expected a fatal 404, got {other:?}"),
    }
}

#[test]
fn replaying_a_container_file_twice_changes_nothing() {
    let schema = common::project_schema();
    let enc = RecordEncoder::new(&schema).expect("encoder");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.avro");
    let kinds = [
        Ev::Impression,
        Ev::Impression,
        Ev::Click,
        Ev::Noise,
        Ev::Robot,
        Ev::MissingItem,
    ];
    let mut want = (0u64, 0u64);
    {
        let file = std::fs::File::create(&path).expect("create");
        let mut w = apache_avro::Writer::builder()
            .schema(&schema)
            .writer(file)
            .block_size(512)
            .build()
            .expect("writer");
        for i in 0..3000u64 {
            let k = kinds[(i as usize * 7) % kinds.len()];
            match k {
                Ev::Impression => want.0 += 1,
                Ev::Click => want.1 += 1,
                _ => {}
            }
            w.append_value(enc.value(&event(k, &format!("item{}", i % 13), i)))
                .expect("append");
        }
        w.flush().expect("flush");
    }
    let marker = collector_bridge::replay::sync_marker(&path).expect("marker");
    let fake = FakeWorker::start(&["home-top-pick"]);
    let c = client(&fake, Some(&fake.token));
    let opts = collector_bridge::replay::ReplayOptions {
        flush: FlushPolicy::new(500, Duration::from_secs(5)),
        progress: false,
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut p = Pipeline::new(&schema, Wire::Naked, Rules::default()).expect("pipeline");
    let r = collector_bridge::replay::replay_files(
        std::slice::from_ref(&path),
        &schema,
        &mut p,
        &c,
        &opts,
        &shutdown,
    )
    .expect("replay");
    assert_eq!(r[0].records, 3000);
    assert_eq!(r[0].stream, collector_bridge::replay::stream_name(&marker));
    assert_eq!(fake.totals("home-top-pick"), want);
    assert_eq!(fake.applied("home-top-pick", &r[0].stream, 0), Some(2999));
    let mut p2 = Pipeline::new(&schema, Wire::Naked, Rules::default()).expect("pipeline");
    let r2 =
        collector_bridge::replay::replay_files(&[path], &schema, &mut p2, &c, &opts, &shutdown)
            .expect("replay");
    assert_eq!(r2[0].already_applied, 3000);
    assert_eq!(fake.totals("home-top-pick"), want);
}

#[test]
fn true_rates_are_deterministic_and_beta_shaped() {
    let d = CtrDist::Beta(2.0, 60.0);
    assert_eq!(simulate::true_ctr(3, "a", d), simulate::true_ctr(3, "a", d));
    assert_ne!(simulate::true_ctr(3, "a", d), simulate::true_ctr(4, "a", d));
    let n = 2000;
    let mean: f64 = (0..n)
        .map(|i| simulate::true_ctr(9, &format!("item{i}"), d))
        .sum::<f64>()
        / n as f64;
    // Beta(2, 60) has mean 2/62 = 0.032.
    assert!((mean - 2.0 / 62.0).abs() < 0.004, "mean {mean}");
    assert_eq!("beta:2,60".parse::<CtrDist>(), Ok(d));
    assert_eq!("fixed:0.5".parse::<CtrDist>(), Ok(CtrDist::Fixed(0.5)));
    assert!("beta:0,1".parse::<CtrDist>().is_err());
    assert!("gauss:1".parse::<CtrDist>().is_err());
}

#[test]
fn direct_simulation_pushes_exactly_what_it_produced() {
    let fake = FakeWorker::start(&["home-top-pick"]);
    fake.state.lock().expect("state").catalog = (0..8).map(|i| format!("p{i}")).collect();
    let c = client(&fake, Some(&fake.token));
    let cfg = SimConfig {
        visitors: 1500,
        rate: 0.0,
        concurrency: 3,
        seed: 5,
        ctr: CtrDist::Fixed(0.2),
        slot: "home-top-pick".into(),
        noise: 0.3,
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let flush = FlushPolicy::new(400, Duration::from_millis(100));
    let r = simulate::simulate_direct(
        &cfg,
        &c,
        &common::project_schema(),
        Rules::default(),
        "test",
        flush,
        &shutdown,
    )
    .expect("simulate");
    assert_eq!(r.visitors, 1500);
    assert!(r.clicks > 0 && r.noise > 0);
    assert_eq!(fake.totals("home-top-pick"), (r.impressions, r.clicks));
    let total_records = r.impressions + r.clicks + r.noise;
    assert_eq!(
        fake.applied("home-top-pick", "simulate-test", 0),
        Some(total_records as i64 - 1)
    );
}

#[test]
fn catalog_import_batches_under_the_limit() {
    let fake = FakeWorker::start(&["home-top-pick"]);
    let c = client(&fake, Some(&fake.token));
    let dir = tempfile::tempdir().expect("tempdir");
    let shop = dir.path().join("animals.json");
    let line = format!("{{\"id\":\"1\",\"title\":\"{}\"}}", "t".repeat(5000));
    std::fs::write(
        &shop,
        std::iter::repeat_n(line.as_str(), 400)
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .expect("write");
    let answers = collector_bridge::catalog::import(
        &[&shop],
        collector_bridge::catalog::Format::DivolteShop,
        &c,
    )
    .expect("import");
    assert!(answers.len() >= 2);
    let posts = fake.state.lock().expect("state").catalog_posts.clone();
    assert!(posts
        .iter()
        .all(|(q, _, n)| *n <= 1024 * 1024 && q.contains("category=animals")));
    assert_eq!(
        posts
            .iter()
            .map(|(_, b, _)| b.lines().count())
            .sum::<usize>(),
        400
    );

    if let Some(d) = common::shop_dir() {
        let files: Vec<_> = std::fs::read_dir(d.join("catalog"))
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        let before = fake.state.lock().expect("state").catalog_posts.len();
        collector_bridge::catalog::import(
            &files,
            collector_bridge::catalog::Format::DivolteShop,
            &c,
        )
        .expect("import shop");
        let posts = fake.state.lock().expect("state").catalog_posts.clone();
        let lines: usize = posts[before..]
            .iter()
            .map(|(_, b, _)| b.lines().count())
            .sum();
        assert_eq!(lines, 2759);
    }

    let json = dir.path().join("items.json");
    std::fs::write(
        &json,
        r#"{"items":[{"id":"a","title":"A","image":"/a.jpg","photographer":"x","category":"c"}]}"#,
    )
    .expect("write");
    let a =
        collector_bridge::catalog::import(&[&json], collector_bridge::catalog::Format::Json, &c)
            .expect("import json");
    assert_eq!(a[0]["imported"], 1);
}
