//! The bridge binary against a real Kafka-protocol broker (tansu) and the fake worker:
//! exact counts, SIGKILL and restart, poison messages, and a rebalance between two bridges.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use collector_bridge::simulate::RecordEncoder;
use common::{event, wait_until, Ev, FakeWorker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

const SLOT: &str = "home-top-pick";
const PARTITIONS: i32 = 3;
const WAIT: Duration = Duration::from_secs(40);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn tansu_bin() -> Option<PathBuf> {
    let p = std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/tansu"));
    if p.is_file() {
        return Some(p);
    }
    common::missing(
        "the Kafka tests (tests/kafka.rs)",
        &format!("the tansu broker at {}", p.display()),
        "run scripts/install-tansu.sh (or make test-tools), or set TANSU_BIN",
    );
    None
}

/// A tansu broker on a free loopback port with memory storage; killed on drop.
struct Broker {
    child: Child,
    bin: PathBuf,
    addr: String,
}

impl Broker {
    fn start() -> Option<Broker> {
        let bin = tansu_bin()?;
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let b = Broker {
            child,
            bin,
            addr: format!("127.0.0.1:{port}"),
        };
        assert!(
            wait_until(Duration::from_secs(15), || std::net::TcpStream::connect(
                &b.addr
            )
            .is_ok()),
            "tansu did not listen"
        );
        Some(b)
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let ok = wait_until(Duration::from_secs(15), || {
            Command::new(&self.bin)
                .args([
                    "topic",
                    "create",
                    "--broker",
                    &format!("tcp://{}", self.addr),
                    "--partitions",
                    &partitions.to_string(),
                    name,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        });
        assert!(ok, "cannot create topic {name}");
    }

    fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("linger.ms", "1")
            .create()
            .expect("producer")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces events round-robin over partitions; returns the last offset per partition.
struct Stream {
    counts: (u64, u64),
    sent: [u64; PARTITIONS as usize],
    n: u64,
    /// A new long item id for every event instead of 17 ids in turn.
    distinct_items: bool,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            counts: (0, 0),
            sent: [0; PARTITIONS as usize],
            n: 0,
            distinct_items: false,
        }
    }

    fn produce(
        &mut self,
        p: &ThreadedProducer<DefaultProducerContext>,
        topic: &str,
        kinds: &[Ev],
        poison: &[Vec<u8>],
    ) {
        let schema = common::project_schema();
        let enc = RecordEncoder::new(&schema).expect("encoder");
        let send = |payload: Vec<u8>, s: &mut Stream| {
            let part = (s.n % PARTITIONS as u64) as i32;
            let key = format!("party{}", s.n);
            p.send(
                BaseRecord::to(topic)
                    .partition(part)
                    .key(&key)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .expect("send");
            s.sent[part as usize] += 1;
            s.n += 1;
        };
        for (i, k) in kinds.iter().enumerate() {
            match k {
                Ev::Impression => self.counts.0 += 1,
                Ev::Click => self.counts.1 += 1,
                _ => {}
            }
            let item = if self.distinct_items {
                format!("item-{:08}-{}", self.n, "x".repeat(80))
            } else {
                format!("item{}", i % 17)
            };
            send(enc.encode(&event(*k, &item, self.n)).expect("encode"), self);
        }
        for bad in poison {
            send(bad.clone(), self);
        }
        p.flush(Duration::from_secs(20)).expect("flush producer");
    }

    /// Whether the worker has applied every produced offset.
    fn all_applied(&self, fake: &FakeWorker, topic: &str) -> bool {
        (0..PARTITIONS).all(|p| {
            let n = self.sent[p as usize] as i64;
            n == 0 || fake.applied(SLOT, topic, p) == Some(n - 1)
        })
    }
}

fn mix(n: usize, seed: usize) -> Vec<Ev> {
    const CYCLE: [Ev; 10] = [
        Ev::Impression,
        Ev::Impression,
        Ev::Noise,
        Ev::Impression,
        Ev::Click,
        Ev::Duplicate,
        Ev::Impression,
        Ev::Robot,
        Ev::Impression,
        Ev::Noise,
    ];
    (0..n)
        .map(|i| CYCLE[(i * 7 + seed) % CYCLE.len()])
        .collect()
}

struct Bridge {
    child: Child,
    log: PathBuf,
}

fn start_bridge(
    broker: &Broker,
    fake: &FakeWorker,
    topic: &str,
    group: &str,
    extra: &[&str],
    dir: &std::path::Path,
    name: &str,
) -> Bridge {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    // Test defaults, unless `extra` sets the same flag.
    let defaults = [
        ("--session-timeout-ms", "2000"),
        ("--flush-interval-ms", "200"),
        ("--flush-events", "2000"),
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_collector-bridge"));
    cmd.args([
        "run",
        "--brokers",
        &broker.addr,
        "--topic",
        topic,
        "--group",
        group,
        "--worker-url",
        &fake.url,
    ]);
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    let child = cmd
        .args(extra)
        .env("INGEST_TOKEN", &fake.token)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("start bridge");
    Bridge { child, log }
}

impl Bridge {
    fn term(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let ok = wait_until(Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        ok && self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(addr: &str, line_prefix: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// What every test here starts from: a broker with the topic `divolte`, a fake worker serving
/// the slot, a producer, an empty stream and a directory for logs.
struct Scene {
    broker: Broker,
    fake: FakeWorker,
    producer: ThreadedProducer<DefaultProducerContext>,
    stream: Stream,
    dir: tempfile::TempDir,
}

impl Scene {
    /// `None` when tansu is missing outside CI (it says so; under CI it fails instead).
    fn start() -> Option<Scene> {
        let broker = Broker::start()?;
        broker.create_topic("divolte", PARTITIONS);
        Some(Scene {
            fake: FakeWorker::start(&[SLOT]),
            producer: broker.producer(),
            stream: Stream::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            broker,
        })
    }
}

#[test]
fn exact_counts_with_poison_messages_and_dead_letters() {
    let Some(mut s) = Scene::start() else {
        return;
    };
    s.broker.create_topic("dead", 1);
    let valid = RecordEncoder::new(&common::project_schema())
        .expect("encoder")
        .encode(&event(Ev::Click, "x", 0))
        .expect("encode");
    let poison = vec![
        b"not avro at all".to_vec(),
        valid[..valid.len() / 2].to_vec(),
        RecordEncoder::new(&common::project_schema())
            .expect("encoder")
            .encode(&event(Ev::MissingItem, "x", 0))
            .expect("encode"),
        // A visitor's id no catalog item can have.
        RecordEncoder::new(&common::project_schema())
            .expect("encoder")
            .encode(&event(Ev::Click, "<img src=x>", 0))
            .expect("encode"),
        Vec::new(),
    ];
    s.stream
        .produce(&s.producer, "divolte", &mix(900, 0), &poison);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut bridge = start_bridge(
        &s.broker,
        &s.fake,
        "divolte",
        "g1",
        &[
            "--metrics-addr",
            &metrics_addr,
            "--dead-letter-topic",
            "dead",
        ],
        s.dir.path(),
        "b",
    );
    assert!(
        wait_until(WAIT, || s.stream.all_applied(&s.fake, "divolte")),
        "not all offsets applied; log:\n{}",
        bridge.log()
    );
    assert_eq!(s.fake.totals(SLOT), s.stream.counts);
    let bad = |reason: &str| {
        metric(
            &metrics_addr,
            &format!("collector_bridge_dropped_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || bad("undecodable")
            + bad("unclassifiable")
            + bad("invalid_item")
            == poison.len() as f64),
        "log:\n{}",
        bridge.log()
    );
    assert_eq!(bad("unclassifiable"), 1.0);
    assert_eq!(bad("invalid_item"), 1.0);
    assert_eq!(bad("duplicate"), 90.0);
    assert_eq!(bad("robot"), 90.0);
    // The bad messages were copied to the dead-letter topic.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.broker.addr)
        .set("group.id", "dlq-check")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("dead", 0, rdkafka::Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut dead = 0;
    wait_until(Duration::from_secs(15), || {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            assert!(m.headers().is_some());
            dead += 1;
        }
        dead >= poison.len()
    });
    assert_eq!(dead, poison.len());
    assert!(
        bridge.term(),
        "bridge did not exit cleanly on SIGTERM; log:\n{}",
        bridge.log()
    );
}

#[test]
fn sigkill_and_restart_neither_lose_nor_double_count() {
    let Some(mut s) = Scene::start() else {
        return;
    };
    s.stream.produce(&s.producer, "divolte", &mix(3000, 1), &[]);
    let mut bridge = start_bridge(
        &s.broker,
        &s.fake,
        "divolte",
        "g2",
        &[],
        s.dir.path(),
        "first",
    );
    assert!(
        wait_until(WAIT, || s.stream.all_applied(&s.fake, "divolte")),
        "log:\n{}",
        bridge.log()
    );
    let batches_before = s.fake.slot(SLOT).applied_batches;
    s.stream
        .produce(&s.producer, "divolte", &mix(30_000, 2), &[]);
    // Kill as soon as the bridge has pushed part of the new events.
    assert!(
        wait_until(WAIT, || s.fake.slot(SLOT).applied_batches > batches_before),
        "log:\n{}",
        bridge.log()
    );
    bridge.child.kill().expect("SIGKILL");
    let _ = bridge.child.wait();
    s.stream.produce(&s.producer, "divolte", &mix(2000, 3), &[]);
    let second = start_bridge(
        &s.broker,
        &s.fake,
        "divolte",
        "g2",
        &[],
        s.dir.path(),
        "second",
    );
    assert!(
        wait_until(WAIT, || s.stream.all_applied(&s.fake, "divolte")),
        "log:\n{}",
        second.log()
    );
    assert_eq!(s.fake.totals(SLOT), s.stream.counts);
}

#[test]
fn two_bridges_in_one_group_give_exact_counts() {
    let Some(mut s) = Scene::start() else {
        return;
    };
    s.stream.produce(&s.producer, "divolte", &mix(6000, 4), &[]);
    let mut a = start_bridge(&s.broker, &s.fake, "divolte", "g3", &[], s.dir.path(), "a");
    assert!(
        wait_until(WAIT, || s.fake.slot(SLOT).applied_batches > 0),
        "log:\n{}",
        a.log()
    );
    let mut b = start_bridge(&s.broker, &s.fake, "divolte", "g3", &[], s.dir.path(), "b");
    s.stream.produce(&s.producer, "divolte", &mix(6000, 5), &[]);
    // Both members must end up owning partitions (the rebalance happened).
    assert!(
        wait_until(WAIT, || a.log().contains("partition revoked")
            && b.log().contains("partition assigned")),
        "no rebalance; a:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );
    s.stream.produce(&s.producer, "divolte", &mix(3000, 6), &[]);
    assert!(
        wait_until(WAIT, || s.stream.all_applied(&s.fake, "divolte")),
        "a:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );
    assert_eq!(s.fake.totals(SLOT), s.stream.counts);
    assert!(a.term() && b.term(), "a:\n{}\nb:\n{}", a.log(), b.log());
}

#[test]
fn sigterm_flushes_what_was_read_and_exits_quickly() {
    let Some(mut s) = Scene::start() else {
        return;
    };
    // 3 x 500 messages are pushed by size; the last 100 stay pending (the age limit is ten
    // minutes), so only the shutdown flush can deliver them.
    s.stream.produce(&s.producer, "divolte", &mix(1600, 7), &[]);
    let mut bridge = start_bridge(
        &s.broker,
        &s.fake,
        "divolte",
        "g4",
        &[
            "--flush-interval-ms",
            "600000",
            "--flush-events",
            "500",
            // The default session timeout: leaving the group must not wait for it.
            "--session-timeout-ms",
            "10000",
        ],
        s.dir.path(),
        "b",
    );
    assert!(
        wait_until(WAIT, || s.fake.slot(SLOT).applied_batches >= 3),
        "log:\n{}",
        bridge.log()
    );
    // The remaining 100 messages are read in far less than this.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !s.stream.all_applied(&s.fake, "divolte"),
        "pushed before the signal"
    );
    let started = std::time::Instant::now();
    let clean = bridge.term();
    let took = started.elapsed();
    eprintln!("run: SIGTERM to exit took {took:?}");
    assert!(clean, "no clean exit; log:\n{}", bridge.log());
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}; log:\n{}",
        bridge.log()
    );
    assert!(
        s.stream.all_applied(&s.fake, "divolte"),
        "log:\n{}",
        bridge.log()
    );
    assert_eq!(s.fake.totals(SLOT), s.stream.counts);
}

#[test]
fn sigterm_while_the_worker_refuses_exits_soon_and_a_restart_counts_exactly() {
    let Some(mut s) = Scene::start() else {
        return;
    };
    s.stream.produce(&s.producer, "divolte", &mix(1500, 8), &[]);
    let mut bridge = start_bridge(
        &s.broker,
        &s.fake,
        "divolte",
        "g5",
        &[],
        s.dir.path(),
        "first",
    );
    assert!(
        wait_until(WAIT, || s.stream.all_applied(&s.fake, "divolte")),
        "log:\n{}",
        bridge.log()
    );
    // The worker now answers 503 to every batch (as while it is being deployed).
    s.fake.state.lock().expect("state").fail_next = u32::MAX;
    let posts = s.fake.state.lock().expect("state").event_bodies.len();
    s.stream.produce(&s.producer, "divolte", &mix(1500, 9), &[]);
    assert!(
        wait_until(WAIT, || s
            .fake
            .state
            .lock()
            .expect("state")
            .event_bodies
            .len()
            > posts + 2),
        "log:\n{}",
        bridge.log()
    );
    let started = std::time::Instant::now();
    let clean = bridge.term();
    let took = started.elapsed();
    eprintln!("run (worker refusing): SIGTERM to exit took {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}; log:\n{}",
        bridge.log()
    );
    let _ = clean;
    // Nothing was skipped: a second bridge delivers the rest, each event once.
    s.fake.state.lock().expect("state").fail_next = 0;
    s.stream.produce(&s.producer, "divolte", &mix(500, 10), &[]);
    let second = start_bridge(
        &s.broker,
        &s.fake,
        "divolte",
        "g5",
        &[],
        s.dir.path(),
        "second",
    );
    assert!(
        wait_until(WAIT, || s.stream.all_applied(&s.fake, "divolte")),
        "log:\n{}",
        second.log()
    );
    assert_eq!(s.fake.totals(SLOT), s.stream.counts);
}

#[test]
fn a_proxy_with_a_lower_body_limit_gets_smaller_batches_and_exact_counts() {
    let Some(mut s) = Scene::start() else {
        return;
    };
    s.fake.state.lock().expect("state").max_body = Some(40_000);
    s.stream.distinct_items = true;
    s.stream
        .produce(&s.producer, "divolte", &mix(4000, 11), &[]);
    let bridge = start_bridge(&s.broker, &s.fake, "divolte", "g6", &[], s.dir.path(), "b");
    assert!(
        wait_until(WAIT, || s.stream.all_applied(&s.fake, "divolte")),
        "log:\n{}",
        bridge.log()
    );
    assert_eq!(s.fake.totals(SLOT), s.stream.counts);
    let bodies = s.fake.state.lock().expect("state").event_bodies.clone();
    assert!(
        bodies.iter().any(|&b| b > 40_000),
        "no body was refused: {bodies:?}"
    );
    assert!(bridge.log().contains("re-reading with smaller batches"));
    assert_eq!(s.fake.slot(SLOT).conflicts, 0);
}

#[test]
fn an_impossible_offset_from_the_worker_stops_the_bridge_with_what_to_do() {
    let Some(mut s) = Scene::start() else {
        return;
    };
    // A ledger entry no batch can have produced (beyond 2^53 - 1), read at assignment.
    s.fake.preload(
        SLOT,
        &bandit::EventBatch {
            source: "other".into(),
            offsets: vec![bandit::OffsetRange {
                topic: "divolte".into(),
                partition: 1,
                from: 0,
                to: i64::MAX,
            }],
            counts: vec![],
            ..Default::default()
        },
    );
    s.stream.produce(&s.producer, "divolte", &mix(300, 12), &[]);
    let mut bridge = start_bridge(&s.broker, &s.fake, "divolte", "g7", &[], s.dir.path(), "b");
    assert!(
        wait_until(WAIT, || matches!(bridge.child.try_wait(), Ok(Some(_)))),
        "the bridge kept running; log:\n{}",
        bridge.log()
    );
    let status = bridge.child.wait().expect("status");
    let log = bridge.log();
    assert_eq!(
        status.code(),
        Some(1),
        "an error exit, not a crash; log:\n{log}"
    );
    assert!(
        log.contains("POST /api/slots/home-top-pick/offsets") && log.contains("divolte/1"),
        "log:\n{log}"
    );
    // Nothing was pushed from positions nobody knows.
    assert_eq!(s.fake.slot(SLOT).applied_batches, 0);
}
