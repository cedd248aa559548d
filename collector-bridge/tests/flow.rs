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

use bandit::decision::{click_fragment, DecisionId, DecisionLog, ServedBy};

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
                served_by: None,
                segment: None,
                version: None,
                at_ms: Some(1_700_000_000_001),
            }),
        ),
        (
            Ev::Click,
            Outcome::Event(collector_bridge::classify::Event {
                slot: 0,
                item: "it",
                kind: Kind::Click,
                served_by: None,
                segment: None,
                version: None,
                at_ms: Some(1_700_000_000_001),
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

/// An impression carrying the worker's decision parameters, and the click on its link.
fn decided(served_by: ServedBy, decided_ms: u64, click_at_ms: i64) -> (Vec<u8>, Vec<u8>) {
    let log = DecisionLog {
        id: DecisionId {
            time_ms: decided_ms,
            random: 9,
        },
        probability: 0.4,
        round: 2,
        set: 0,
        version: 30,
        arms: 8,
        served_by,
        segment: None,
    };
    let enc = RecordEncoder::new(&common::project_schema()).expect("encoder");
    let mut imp = event(Ev::Impression, "it", 1);
    imp.parameters = log
        .params()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut click = event(Ev::Click, "it", 2);
    click.timestamp = click_at_ms;
    click.location = format!(
        "https://shop.example/product/it/{}",
        click_fragment("top_pick", Some((&log.id, served_by)))
    );
    (
        enc.encode(&imp).expect("encode"),
        enc.encode(&click).expect("encode"),
    )
}

#[test]
fn decisions_mark_their_events_and_late_clicks_are_dropped() {
    let t = 1_700_000_000_000u64;
    for served_by in [ServedBy::Bandit, ServedBy::Holdout] {
        let (imp, click) = decided(served_by, t, t as i64 + 5_000);
        for bytes in [&imp, &click] {
            let got = classify_with(Rules::default(), bytes);
            assert!(
                got.contains(&format!("served_by: Some({served_by:?})")),
                "{got}"
            );
        }
    }
    let window = Rules::default().attribution_window_ms as i64;
    let skew = Rules::default().clock_skew_ms as i64;
    let (_, late) = decided(ServedBy::Bandit, t, t as i64 + window + skew + 1);
    assert_eq!(classify_with(Rules::default(), &late), "Dropped(LateClick)");
    let (_, early) = decided(ServedBy::Bandit, t, t as i64 - skew - 1);
    assert_eq!(
        classify_with(Rules::default(), &early),
        "Dropped(ClickBeforeDecision)"
    );
    let (_, in_time) = decided(ServedBy::Bandit, t, t as i64 + window);
    assert!(classify_with(Rules::default(), &in_time).starts_with("Event"));
    // A shorter window is a setting.
    let short = Rules {
        attribution_window_ms: 1_000,
        ..Rules::default()
    };
    let (_, click) = decided(ServedBy::Bandit, t, t as i64 + 5_000 + skew);
    assert_eq!(classify_with(short, &click), "Dropped(LateClick)");
    // Events without a decision count as before, unless one is required.
    let plain = encode(Ev::Click, "it", 1);
    assert!(classify_with(Rules::default(), &plain).contains("served_by: None"));
    let strict = Rules {
        require_decision: true,
        ..Rules::default()
    };
    assert_eq!(classify_with(strict.clone(), &plain), "Dropped(NoDecision)");
    // Forged parameters are not a decision: the impression still counts, unlogged.
    let enc = RecordEncoder::new(&common::project_schema()).expect("encoder");
    let mut forged = event(Ev::Impression, "it", 1);
    forged.parameters = vec![
        ("decision".into(), "0000000000100000001".into()),
        ("probability".into(), "7".into()),
    ];
    let bytes = enc.encode(&forged).expect("encode");
    assert!(classify_with(Rules::default(), &bytes).contains("served_by: None"));
    assert_eq!(classify_with(strict, &bytes), "Dropped(NoDecision)");
}

#[test]
fn a_later_event_can_be_the_reward() {
    let t = 1_700_000_000_000u64;
    let rules = Rules {
        reward: "event:addToBasket".parse().expect("reward"),
        ..Rules::default()
    };
    let enc = RecordEncoder::new(&common::project_schema()).expect("encoder");
    let (imp, click) = decided(ServedBy::Holdout, t, t as i64 + 1_000);
    // The impression counts as ever; the click on the pick is no longer the reward.
    assert!(classify_with(rules.clone(), &imp).starts_with("Event"));
    assert_eq!(classify_with(rules.clone(), &click), "Ignored");
    // Add-to-basket on the product page the pick's link opened: its location names the
    // decision, so it is the decision's reward (for the holdout here).
    let basket = |location: String, parameters: Vec<(String, String)>, at: i64| {
        let mut e = event(Ev::Impression, "it", 3);
        e.event_type = "addToBasket";
        e.page_type = "product";
        e.source = None;
        e.location = location;
        e.parameters = parameters;
        e.timestamp = at;
        enc.encode(&e).expect("encode")
    };
    let id = DecisionId {
        time_ms: t,
        random: 9,
    };
    let on_page = format!(
        "https://shop.example/product/it/{}",
        click_fragment("top_pick", Some((&id, ServedBy::Holdout)))
    );
    let got = classify_with(
        rules.clone(),
        &basket(on_page.clone(), vec![], t as i64 + 60_000),
    );
    assert!(
        got.contains("kind: Click") && got.contains("served_by: Some(Holdout)"),
        "{got}"
    );
    // On a later page, with the decision passed on as parameters.
    let passed = vec![
        ("source".to_string(), "top_pick".to_string()),
        ("decision".to_string(), id.to_string()),
    ];
    let got = classify_with(
        rules.clone(),
        &basket(
            "https://shop.example/basket/".into(),
            passed,
            t as i64 + 60_000,
        ),
    );
    assert!(got.contains("served_by: Some(Bandit)"), "{got}");
    // Without a decision it cannot be attributed; outside the window it is late.
    let anonymous = basket(
        "https://shop.example/product/it/#/?source=top_pick".into(),
        vec![],
        t as i64,
    );
    assert_eq!(
        classify_with(rules.clone(), &anonymous),
        "Dropped(NoDecision)"
    );
    let late = basket(on_page, vec![], t as i64 + 2 * 3_600_000);
    assert_eq!(classify_with(rules, &late), "Dropped(LateClick)");
    for bad in ["", "event:", "event:a:", "basket"] {
        assert!(
            bad.parse::<collector_bridge::classify::Reward>().is_err(),
            "{bad}"
        );
    }
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
                served_by: None,
                segment: None,
            }],
            ..Default::default()
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
    assert_eq!(p.resume_offset(tp), Ok(Some(50)));
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
                served_by: None,
                segment: None,
            }],
            ..Default::default()
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
    assert_eq!(p.resume_offset(tp0), Ok(Some(50)));
    assert_eq!(p.resume_offset(tp1), Ok(Some(30)));
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
            ..Default::default()
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
        Ok(None),
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
        devices: Vec::new(),
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
    assert_eq!(a[0].imported, 1);
}

/// `collector-bridge simulate` (direct) against the fake worker, stopped by SIGTERM once the
/// worker has applied two batches; `refuse` makes the worker answer 503 to every push from
/// then on. Returns the time from the signal to the exit, whether the exit was clean, and
/// stdout.
fn simulate_until_sigterm(
    fake: &FakeWorker,
    run_id: &str,
    refuse: bool,
) -> (Duration, bool, String) {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    fake.state.lock().expect("state").catalog = (0..8).map(|i| format!("p{i}")).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("simulate.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_collector-bridge"))
        .args([
            "simulate",
            "--worker-url",
            &fake.url,
            "--token-env",
            "INGEST_TOKEN",
            "--visitors",
            "100000000",
            "--rate",
            "40",
            "--concurrency",
            "4",
            "--run-id",
            run_id,
        ])
        .env("INGEST_TOKEN", &fake.token)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start simulate");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        common::wait_until(Duration::from_secs(20), || fake
            .slot("home-top-pick")
            .applied_batches
            >= 2),
        "log:\n{}",
        read_log()
    );
    if refuse {
        fake.state.lock().expect("state").fail_next = u32::MAX;
        // Let the bridge run into the refusals before the signal.
        let posts = fake.state.lock().expect("state").event_bodies.len();
        assert!(common::wait_until(Duration::from_secs(5), || {
            fake.state.lock().expect("state").event_bodies.len() > posts + 1
        }));
    }
    let started = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exited = common::wait_until(Duration::from_secs(90), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    let took = started.elapsed();
    eprintln!("simulate (worker refusing: {refuse}): SIGTERM to exit took {took:?}");
    assert!(exited, "simulate did not exit; log:\n{}", read_log());
    let out = child.wait_with_output().expect("output");
    (
        took,
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[test]
fn simulate_exits_soon_after_sigterm_with_exact_counts() {
    let fake = FakeWorker::start(&["home-top-pick"]);
    let (took, clean, line) = simulate_until_sigterm(&fake, "sigterm", false);
    assert!(clean, "{line}");
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    // visitors=N impressions=I clicks=C noise=X items_shown=K
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    assert_eq!(
        fake.totals("home-top-pick"),
        (field("impressions"), field("clicks")),
        "{line}"
    );
    let records = field("impressions") + field("clicks") + field("noise");
    assert_eq!(
        fake.applied("home-top-pick", "simulate-sigterm", 0),
        Some(records as i64 - 1)
    );
}

#[test]
fn simulate_gives_up_soon_after_sigterm_when_the_worker_refuses_everything() {
    let fake = FakeWorker::start(&["home-top-pick"]);
    let (took, clean, _) = simulate_until_sigterm(&fake, "refused", true);
    // The default grace is 3 s, shared by every request (the pending push and the final one).
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    assert!(!clean, "giving up on the worker is an error exit");
}

fn fast_client(
    fake_url: &str,
    token: &str,
    shutdown: Arc<AtomicBool>,
    grace: Duration,
) -> WorkerClient {
    let backoff = Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(50),
        shutdown_grace: grace,
    };
    WorkerClient::new(
        fake_url,
        Some(token.to_string()),
        backoff,
        shutdown,
        Arc::new(Metrics::default()),
    )
}

#[test]
fn every_refusal_but_misconfiguration_is_retried_and_no_batch_is_skipped() {
    let fake = FakeWorker::start(&["home-top-pick"]);
    let c = client(&fake, Some(&fake.token));
    let mut p =
        Pipeline::new(&common::project_schema(), Wire::Naked, Rules::default()).expect("pipeline");
    let mut want = (0, 0);
    let mut offset = 0i64;
    // A proxy's 400, a timeout, rate limiting, a client that went away, the ledger bound (507),
    // the worker's own failures, and a status nobody expects.
    for status in [400u16, 408, 429, 499, 507, 500, 503, 418] {
        {
            let mut st = fake.state.lock().expect("state");
            st.fail_next = 2;
            st.fail_status = Some(status);
        }
        feed(
            &mut p,
            "t",
            0,
            &[(offset, Ev::Impression, "a"), (offset + 1, Ev::Click, "a")],
        );
        offset += 2;
        want = (want.0 + 1, want.1 + 1);
        assert_eq!(
            deliver_pending(&mut p, &c, "divolte").expect("deliver"),
            Delivery::Done,
            "{status}"
        );
        assert_eq!(fake.totals("home-top-pick"), want, "{status}");
        assert_eq!(fake.state.lock().expect("state").fail_next, 0, "{status}");
    }
    assert_eq!(fake.applied("home-top-pick", "t", 0), Some(offset - 1));
}

#[test]
fn an_invalid_batch_stops_delivery_without_moving_past_it() {
    let fake = FakeWorker::start(&["home-top-pick"]);
    let c = client(&fake, Some(&fake.token));
    let mut p =
        Pipeline::new(&common::project_schema(), Wire::Naked, Rules::default()).expect("pipeline");
    // An offset beyond what the protocol allows makes a batch the worker would refuse.
    let beyond = bandit::batch::MAX_OFFSET + 1;
    feed(&mut p, "t", 0, &[(beyond, Ev::Impression, "a")]);
    match deliver_pending(&mut p, &c, "divolte") {
        Err(e @ WorkerError::InvalidBatch { .. }) => {
            let text = e.to_string();
            assert!(text.contains("bug") && text.contains("t/0"), "{text}");
        }
        other => panic!("expected an invalid batch error, got {other:?}"),
    }
    // Nothing was sent and nothing acknowledged: a restart reads it again.
    assert!(fake.state.lock().expect("state").event_bodies.is_empty());
    let tp = p.partition("t", 0);
    assert_eq!(p.resume_offset(tp), Ok(None));
}

/// Reads `messages` (per partition, in offset order) like a Kafka source: delivers when the
/// policy says so, and on a conflict or a refusal as too large seeks every partition back to
/// its resume offset. Returns the deliveries that made it re-read.
fn run_source(
    p: &mut Pipeline,
    c: &WorkerClient,
    parts: &[(&str, i32, Vec<Vec<u8>>)],
    flush: FlushPolicy,
) -> u32 {
    let tps: Vec<usize> = parts.iter().map(|(t, n, _)| p.own(t, *n)).collect();
    load_watermarks(p, c).expect("load");
    let mut pos: Vec<usize> = vec![0; parts.len()];
    let mut rereads = 0;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 1_000_000, "no progress");
        let mut read_any = false;
        // Round-robin over partitions, one message each.
        for (i, (_, _, msgs)) in parts.iter().enumerate() {
            if pos[i] < msgs.len() {
                let _ = p.process(tps[i], pos[i] as i64, Some(&msgs[pos[i]]));
                pos[i] += 1;
                read_any = true;
            }
            if flush.due(&p.pending(), Duration::ZERO).is_some() {
                break;
            }
        }
        let end = !read_any;
        if end || flush.due(&p.pending(), Duration::ZERO).is_some() {
            let d = deliver_pending(p, c, "divolte").expect("deliver");
            if d.must_reread() {
                rereads += 1;
                for (i, tp) in tps.iter().enumerate() {
                    pos[i] = p.resume_offset(*tp).expect("resume").unwrap_or(0) as usize;
                }
                continue;
            }
            if end {
                return rereads;
            }
        }
    }
}

#[test]
fn a_body_a_proxy_refuses_is_cut_smaller_and_read_again_exactly_once() {
    // A proxy before the worker takes 20,000-byte bodies at most.
    let fake = FakeWorker::start(&["s1", "s2"]);
    fake.state.lock().expect("state").max_body = Some(20_000);
    let c = client(&fake, Some(&fake.token));
    // s2 (index 0) gets few items and is pushed first; s1 (index 1) gets a new item per
    // message, far more than 20,000 bytes of them.
    let rules = Rules {
        sources: vec![
            ("other_pick".into(), "s2".into()),
            ("top_pick".into(), "s1".into()),
        ],
        ..Rules::default()
    };
    let mut p = Pipeline::new(&common::project_schema(), Wire::Naked, rules).expect("pipeline");
    let schema = common::project_schema();
    let enc = RecordEncoder::new(&schema).expect("encoder");
    let mut want: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    let mut parts = Vec::new();
    for partition in 0..2 {
        let mut msgs = Vec::new();
        for o in 0..1500u64 {
            let kind = if o % 7 == 0 {
                Ev::Click
            } else {
                Ev::Impression
            };
            let (slot, item) = if o % 5 == 0 {
                ("s2", format!("few-{}", o % 3))
            } else {
                (
                    "s1",
                    format!("item-{partition}-{o:05}-with-a-longer-catalog-id"),
                )
            };
            let mut e = event(kind, &item, o);
            if slot == "s2" {
                e.source = Some("other_pick");
            }
            let w = want.entry(slot).or_default();
            match kind {
                Ev::Click => w.1 += 1,
                _ => w.0 += 1,
            }
            msgs.push(enc.encode(&e).expect("encode"));
        }
        parts.push(("t", partition, msgs));
    }
    let rereads = run_source(
        &mut p,
        &c,
        &parts,
        FlushPolicy::new(2_000, Duration::from_secs(60)),
    );
    assert!(rereads > 0, "the proxy never refused a body");
    assert!(p.body_limit() <= 20_000, "{}", p.body_limit());
    // Every event counted once: nothing lost with the refused bodies, nothing twice on the
    // re-reads (s2's batches were applied before s1's were refused).
    assert_eq!(fake.totals("s1"), want["s1"]);
    assert_eq!(fake.totals("s2"), want["s2"]);
    for slot in ["s1", "s2"] {
        for partition in 0..2 {
            assert_eq!(fake.applied(slot, "t", partition), Some(1499), "{slot}");
        }
        assert_eq!(fake.slot(slot).conflicts, 0, "{slot}");
    }
}

#[test]
fn a_body_over_the_limit_is_never_built() {
    // Many long ids, all different: only the body size can make a delivery due.
    let fake = FakeWorker::start(&["home-top-pick"]);
    let c = client(&fake, Some(&fake.token));
    let mut p =
        Pipeline::new(&common::project_schema(), Wire::Naked, Rules::default()).expect("pipeline");
    let schema = common::project_schema();
    let enc = RecordEncoder::new(&schema).expect("encoder");
    let msgs: Vec<Vec<u8>> = (0..9_000u64)
        .map(|o| {
            let item = format!("{o:0>128}");
            enc.encode(&event(Ev::Click, &item, o)).expect("encode")
        })
        .collect();
    let flush = FlushPolicy {
        max_items: usize::MAX,
        ..FlushPolicy::new(u64::MAX, Duration::from_secs(60))
    };
    let rereads = run_source(&mut p, &c, &[("t", 0, msgs)], flush);
    assert_eq!(rereads, 0);
    let bodies = fake.state.lock().expect("state").event_bodies.clone();
    assert!(bodies.len() > 1, "{bodies:?}");
    let limit = bandit::protocol::MAX_BODY_BYTES;
    assert!(bodies.iter().all(|&b| b <= limit), "{bodies:?}");
    // Cut close to the limit, not far below it.
    assert!(bodies[0] > limit - 1024, "{bodies:?}");
    assert_eq!(fake.totals("home-top-pick"), (0, 9_000));
}

#[test]
fn direct_simulation_cuts_smaller_batches_when_a_proxy_refuses_the_body() {
    let fake = FakeWorker::start(&["home-top-pick"]);
    {
        let mut st = fake.state.lock().expect("state");
        st.catalog = (0..400).map(|i| format!("{i:0>100}")).collect();
        st.max_body = Some(20_000);
    }
    let c = client(&fake, Some(&fake.token));
    let cfg = SimConfig {
        visitors: 3000,
        rate: 0.0,
        concurrency: 3,
        seed: 7,
        ctr: CtrDist::Fixed(0.3),
        slot: "home-top-pick".into(),
        noise: 0.2,
        devices: Vec::new(),
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let flush = FlushPolicy::new(100_000, Duration::from_secs(30));
    let r = simulate::simulate_direct(
        &cfg,
        &c,
        &common::project_schema(),
        Rules::default(),
        "proxy",
        flush,
        &shutdown,
    )
    .expect("simulate");
    let st = fake.state.lock().expect("state").event_bodies.clone();
    assert!(st.iter().any(|&b| b > 20_000), "no body was refused");
    assert_eq!(fake.totals("home-top-pick"), (r.impressions, r.clicks));
    assert_eq!(
        fake.applied("home-top-pick", "simulate-proxy", 0),
        Some((r.impressions + r.clicks + r.noise) as i64 - 1)
    );
}

#[test]
fn offsets_the_worker_reports_beyond_the_protocol_are_an_error_not_a_panic() {
    let fake = FakeWorker::start(&["home-top-pick"]);
    let c = client(&fake, Some(&fake.token));
    let ledger_at = |offset: i64| EventBatch {
        source: "other".into(),
        offsets: vec![OffsetRange {
            topic: "t".into(),
            partition: 0,
            from: 0,
            to: offset,
        }],
        counts: vec![],
        ..Default::default()
    };
    // As read at assignment.
    fake.preload("home-top-pick", &ledger_at(i64::MAX));
    let mut p =
        Pipeline::new(&common::project_schema(), Wire::Naked, Rules::default()).expect("pipeline");
    let tp = p.own("t", 0);
    match load_watermarks(&mut p, &c) {
        Err(e @ WorkerError::Offset(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("POST /api/slots/home-top-pick/offsets") && text.contains("t/0"),
                "{text}"
            );
        }
        other => panic!("expected an offset error, got {other:?}"),
    }
    assert_eq!(p.resume_offset(tp), Ok(None));
    // As carried by a 409.
    let fake = FakeWorker::start(&["home-top-pick"]);
    let c = client(&fake, Some(&fake.token));
    fake.preload("home-top-pick", &ledger_at(0));
    {
        // A conflict whose offsets include one no batch can have produced.
        let mut st = fake.state.lock().expect("state");
        let s = st.slots.get_mut("home-top-pick").expect("slot");
        s.ledger.set("u", 3, Some(-5));
    }
    let mut p =
        Pipeline::new(&common::project_schema(), Wire::Naked, Rules::default()).expect("pipeline");
    feed(
        &mut p,
        "t",
        0,
        &[(0, Ev::Impression, "a"), (1, Ev::Impression, "a")],
    );
    match deliver_pending(&mut p, &c, "divolte") {
        Err(e @ WorkerError::Offset(_)) => {
            assert!(e.to_string().contains("u/3"), "{e}");
        }
        other => panic!("expected an offset error, got {other:?}"),
    }
}

#[test]
fn after_shutdown_retries_end_after_one_grace_period_shared_by_all_requests() {
    use std::time::Instant;
    let fake = FakeWorker::start(&["home-top-pick"]);
    {
        let mut st = fake.state.lock().expect("state");
        st.fail_next = u32::MAX;
    }
    let shutdown = Arc::new(AtomicBool::new(true));
    let c = fast_client(&fake.url, &fake.token, shutdown, Duration::from_millis(800));
    let batch = EventBatch {
        source: "t".into(),
        offsets: vec![OffsetRange {
            topic: "t".into(),
            partition: 0,
            from: 0,
            to: 0,
        }],
        counts: vec![],
        ..Default::default()
    };
    let started = Instant::now();
    assert!(matches!(
        c.push("home-top-pick", &batch),
        Err(WorkerError::GaveUp { .. })
    ));
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(700) && first < Duration::from_secs(3),
        "{first:?}"
    );
    // The grace is spent: the next request (of any clone) gives up after one attempt.
    let started = Instant::now();
    assert!(matches!(
        c.clone().push("home-top-pick", &batch),
        Err(WorkerError::GaveUp { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );

    // A worker that takes the connection and never answers: no request outlives the grace by
    // much, instead of waiting for the 30 s request timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("addr"));
    let shutdown = Arc::new(AtomicBool::new(true));
    let c = fast_client(&url, "x", shutdown, Duration::from_millis(800));
    let started = Instant::now();
    assert!(matches!(
        c.push("home-top-pick", &batch),
        Err(WorkerError::GaveUp { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

#[test]
fn catalog_import_splits_by_item_count_as_well_as_bytes() {
    let fake = FakeWorker::start(&["home-top-pick"]);
    let c = client(&fake, Some(&fake.token));
    let dir = tempfile::tempdir().expect("tempdir");
    // Small items: 5,000 fit in one body by bytes, but the worker takes 2,000 a request.
    let json = dir.path().join("many.json");
    let items: Vec<serde_json::Value> = (0..5000)
        .map(|i| serde_json::json!({"id": format!("m{i}"), "title": "t"}))
        .collect();
    std::fs::write(&json, serde_json::json!({ "items": items }).to_string()).expect("write");
    let shop = dir.path().join("cars.json");
    let lines: Vec<String> = (0..4500)
        .map(|i| format!("{{\"id\":\"c{i}\",\"title\":\"t\"}}"))
        .collect();
    std::fs::write(&shop, lines.join("\n")).expect("write");
    collector_bridge::catalog::import(&[&json], collector_bridge::catalog::Format::Json, &c)
        .expect("import json");
    collector_bridge::catalog::import(&[&shop], collector_bridge::catalog::Format::DivolteShop, &c)
        .expect("import shop");
    let per_post = fake.state.lock().expect("state").catalog_items.clone();
    assert_eq!(per_post, [2000, 2000, 1000, 2000, 2000, 500]);
}

#[test]
fn bad_item_ids_are_counted_apart_from_missing_ones() {
    let mut p =
        Pipeline::new(&common::project_schema(), Wire::Naked, Rules::default()).expect("pipeline");
    let long = "x".repeat(200);
    feed(
        &mut p,
        "t",
        0,
        &[
            (0, Ev::Impression, "a b"),
            (1, Ev::Click, "<script>"),
            (2, Ev::Click, &long),
            (3, Ev::MissingItem, "ignored"),
            (4, Ev::Impression, "ok"),
        ],
    );
    let s = p.take_stats();
    assert_eq!(
        (s.invalid_items, s.unclassifiable, s.impressions),
        (3, 1, 1)
    );
    let m = Metrics::default();
    m.add_stats(&s);
    let text = m.render();
    assert!(
        text.contains("collector_bridge_dropped_total{reason=\"invalid_item\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("collector_bridge_dropped_total{reason=\"unclassifiable\"} 1\n"),
        "{text}"
    );
}

#[test]
fn replay_cuts_smaller_batches_when_a_proxy_refuses_the_body() {
    let schema = common::project_schema();
    let enc = RecordEncoder::new(&schema).expect("encoder");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.avro");
    {
        let file = std::fs::File::create(&path).expect("create");
        let mut w = apache_avro::Writer::builder()
            .schema(&schema)
            .writer(file)
            .build()
            .expect("writer");
        for i in 0..2000u64 {
            let item = format!("replayed-{i:06}-{}", "y".repeat(60));
            w.append_value(enc.value(&event(Ev::Impression, &item, i)))
                .expect("append");
        }
        w.flush().expect("flush");
    }
    let fake = FakeWorker::start(&["home-top-pick"]);
    fake.state.lock().expect("state").max_body = Some(30_000);
    let c = client(&fake, Some(&fake.token));
    let opts = collector_bridge::replay::ReplayOptions {
        flush: FlushPolicy::new(100_000, Duration::from_secs(60)),
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
    assert!(p.body_limit() <= 30_000);
    assert_eq!(fake.totals("home-top-pick"), (2000, 0));
    assert_eq!(fake.applied("home-top-pick", &r[0].stream, 0), Some(1999));
}
