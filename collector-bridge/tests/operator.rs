//! The operator subcommands, run as the real binary against a recording fake worker: what
//! each one sends (method, path, body, token) and what it prints.

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use bandit::operator::{
    Actor, AuditAction, AuditEntry, AuditResponse, CatalogDeleteResponse, ExcludeRequest, Pin,
    PinLearning, PinRequest, SlotControls,
};
use bandit::protocol::ErrorResponse;
use collector_bridge::operator::format_utc;
use serde::Serialize;

/// One request the fake received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    url: String,
    body: String,
    auth: Option<String>,
}

type Answer = Box<dyn Fn(&Seen) -> (u16, String) + Send>;

/// A fake worker that records every request and answers with `answer`.
struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: Arc<tiny_http::Server>,
    handle: Option<JoinHandle<()>>,
}

fn json(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap()
}

fn err(status: u16, message: &str) -> (u16, String) {
    (
        status,
        json(&ErrorResponse {
            error: message.into(),
        }),
    )
}

impl Fake {
    fn start(answer: impl Fn(&Seen) -> (u16, String) + Send + 'static) -> Fake {
        let answer: Answer = Box::new(answer);
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (srv, log) = (server.clone(), seen.clone());
        let handle = std::thread::spawn(move || {
            for mut req in srv.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let s = Seen {
                    method: req.method().as_str().to_string(),
                    url: req.url().to_string(),
                    body,
                    auth: req
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Authorization"))
                        .map(|h| h.value.as_str().to_string()),
                };
                let (status, text) = answer(&s);
                log.lock().unwrap().push(s);
                let header =
                    tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
                        .unwrap();
                let _ = req.respond(
                    tiny_http::Response::from_string(text)
                        .with_status_code(status)
                        .with_header(header),
                );
            }
        });
        Fake {
            url: format!("http://127.0.0.1:{port}"),
            seen,
            server,
            handle: Some(handle),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "expected one request: {seen:#?}");
        seen[0].clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs the bridge against `fake` with only the given token variables set.
fn bridge(fake: &Fake, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_collector-bridge"));
    for var in [
        "OPERATOR_TOKEN",
        "INGEST_TOKEN",
        "BRIDGE_WORKER_URL",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .args(["--worker-url", &fake.url]);
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\nstdout: {}",
        stderr(o),
        stdout(o)
    );
    stdout(o)
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64
}

const TOKENS: &[(&str, &str)] = &[
    ("OPERATOR_TOKEN", "op-secret"),
    ("INGEST_TOKEN", "in-secret"),
];

/// Answers pins with the pin asked for, everything else with `controls`.
fn slot_fake(controls: SlotControls) -> Fake {
    Fake::start(move |s| {
        let slot = s.url.split('/').nth(3).unwrap_or_default().to_string();
        if s.method == "POST" && s.url.ends_with("/pin") {
            let Ok(req) = serde_json::from_str::<PinRequest>(&s.body) else {
                return err(400, "bad pin");
            };
            let c = SlotControls {
                slot,
                pin: Some(Pin {
                    item: req.item,
                    until_ms: req.until_ms,
                    share: req.share,
                    learning: req.learning,
                }),
                ..controls.clone()
            };
            return (200, json(&c));
        }
        (
            200,
            json(&SlotControls {
                slot,
                ..controls.clone()
            }),
        )
    })
}

#[test]
fn pin_for_a_duration_sends_the_pin_and_prints_it() {
    let fake = slot_fake(SlotControls::default());
    let before = now_ms();
    let out = bridge(
        &fake,
        TOKENS,
        &[
            "slot", "pin", "42", "--for", "2h", "--share", "0.5", "--pause",
        ],
    );
    let after = now_ms();
    let text = ok(&out);
    let s = fake.only();
    assert_eq!(
        (s.method.as_str(), s.url.as_str()),
        ("POST", "/api/slots/home-top-pick/pin")
    );
    assert_eq!(s.auth.as_deref(), Some("Bearer op-secret"));
    let req: PinRequest = serde_json::from_str(&s.body).unwrap();
    assert_eq!(req.item, "42");
    assert_eq!(req.share, 0.5);
    assert_eq!(req.learning, PinLearning::Pause);
    let two_hours = 2.0 * 3_600_000.0;
    assert!(
        req.until_ms >= before + two_hours && req.until_ms <= after + two_hours,
        "until_ms {} not two hours from now ({before}..{after})",
        req.until_ms
    );
    assert_eq!(
        text,
        format!(
            "pinned 42 to home-top-pick until {} (share 0.5, learning paused)\n",
            format_utc(req.until_ms)
        )
    );
}

#[test]
fn pin_until_a_time_on_another_slot_prints_json_when_asked() {
    let fake = slot_fake(SlotControls {
        exclude: vec!["x".into()],
        ..SlotControls::default()
    });
    // Far in the future, so the pin is always accepted (2100-01-01T00:00:00Z).
    let until = 4_102_444_800_000u64;
    let out = bridge(
        &fake,
        TOKENS,
        &[
            "slot",
            "pin",
            "item-7",
            "--slot",
            "cars",
            "--until-ms",
            &until.to_string(),
        ],
    );
    let text = ok(&out);
    assert_eq!(
        text,
        "pinned item-7 to cars until 2100-01-01T00:00:00Z (share 1, learning continues)\n"
    );
    let s = fake.only();
    assert_eq!(s.url, "/api/slots/cars/pin");
    let req: PinRequest = serde_json::from_str(&s.body).unwrap();
    assert_eq!(
        req,
        PinRequest {
            item: "item-7".into(),
            until_ms: until as f64,
            share: 1.0,
            learning: PinLearning::Continue,
        }
    );

    let out = bridge(
        &fake,
        TOKENS,
        &[
            "slot",
            "pin",
            "item-7",
            "--slot",
            "cars",
            "--until-ms",
            &until.to_string(),
            "--json",
        ],
    );
    let printed: SlotControls = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(printed.slot, "cars");
    assert_eq!(printed.exclude, ["x"]);
    assert_eq!(printed.pin.unwrap().until_ms, until as f64);
}

#[test]
fn bad_pins_are_refused_before_anything_is_sent() {
    let fake = slot_fake(SlotControls::default());
    let past = "1000";
    for args in [
        &["slot", "pin", "42", "--for", "2x"][..],
        &["slot", "pin", "42", "--for", "0s"],
        &["slot", "pin", "42", "--for", "2"],
        &["slot", "pin", "42"],
        &[
            "slot",
            "pin",
            "42",
            "--for",
            "1h",
            "--until-ms",
            "9999999999999",
        ],
        &["slot", "pin", "42", "--until-ms", past],
        &["slot", "pin", "42", "--for", "1h", "--share", "1.5"],
        &["slot", "pin", "42", "--for", "1h", "--share", "0"],
        &["slot", "pin", "../x", "--for", "1h"],
    ] {
        let out = bridge(&fake, TOKENS, args);
        assert!(!out.status.success(), "{args:?} should fail");
    }
    assert!(fake.seen().is_empty(), "sent: {:#?}", fake.seen());
    let out = bridge(&fake, TOKENS, &["slot", "pin", "42", "--until-ms", past]);
    assert!(
        stderr(&out).contains("not in the future"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unpin_exclude_include_and_show_send_their_requests() {
    let pinned = SlotControls {
        pin: Some(Pin {
            item: "42".into(),
            until_ms: 1_700_000_000_000.0,
            share: 0.25,
            learning: PinLearning::Continue,
        }),
        exclude: vec!["a".into(), "b".into()],
        removed_arms: vec!["a".into()],
        ..SlotControls::default()
    };
    let fake = slot_fake(pinned.clone());

    let text = ok(&bridge(&fake, TOKENS, &["slot", "show", "--slot", "s1"]));
    assert_eq!(
        text,
        "pinned 42 to s1 until 2023-11-14T22:13:20Z (share 0.25, learning continues)\n\
         excluded from s1 (2): a, b\n\
         arms that left the set: a\n"
    );
    let text = ok(&bridge(
        &fake,
        TOKENS,
        &["slot", "exclude", "--slot", "s1", "a", "b"],
    ));
    assert!(
        text.starts_with("excluded a, b from s1\nexcluded from s1 (2): a, b\n"),
        "{text}"
    );
    assert!(text.contains("arms that left the set: a"), "{text}");
    let text = ok(&bridge(&fake, TOKENS, &["slot", "include", "c"]));
    assert!(
        text.starts_with("allowed c again on home-top-pick\n"),
        "{text}"
    );
    let _ = ok(&bridge(&fake, TOKENS, &["slot", "unpin", "--slot", "s1"]));

    let seen = fake.seen();
    let got: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.url.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("GET", "/api/slots/s1/controls"),
            ("POST", "/api/slots/s1/exclude"),
            ("POST", "/api/slots/home-top-pick/exclude"),
            ("DELETE", "/api/slots/s1/pin"),
        ]
    );
    assert!(seen
        .iter()
        .all(|s| s.auth.as_deref() == Some("Bearer op-secret")));
    let ex: ExcludeRequest = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(
        ex,
        ExcludeRequest {
            add: vec!["a".into(), "b".into()],
            remove: vec![],
        }
    );
    let inc: ExcludeRequest = serde_json::from_str(&seen[2].body).unwrap();
    assert_eq!(
        inc,
        ExcludeRequest {
            add: vec![],
            remove: vec!["c".into()],
        }
    );
    assert_eq!(seen[0].body, "");
    assert_eq!(seen[3].body, "");

    // No pin, nothing excluded; and --json prints the worker's answer.
    let empty = slot_fake(SlotControls::default());
    let text = ok(&bridge(&empty, TOKENS, &["slot", "show"]));
    assert_eq!(
        text,
        "no pin on home-top-pick\nnothing excluded from home-top-pick\n"
    );
    let text = ok(&bridge(&empty, TOKENS, &["slot", "unpin"]));
    assert_eq!(text, "unpinned home-top-pick: the bandit picks again\n");
    let text = ok(&bridge(&fake, TOKENS, &["slot", "show", "--json"]));
    let printed: SlotControls = serde_json::from_str(&text).unwrap();
    assert_eq!(
        printed,
        SlotControls {
            slot: "home-top-pick".into(),
            ..pinned
        }
    );
}

#[test]
fn the_operator_token_falls_back_to_the_ingest_token() {
    let fake = slot_fake(SlotControls::default());
    let auth = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["slot", "show"];
        args.extend_from_slice(extra);
        let _ = ok(&bridge(&fake, env, &args));
        fake.seen().last().unwrap().auth.clone()
    };
    assert_eq!(auth(TOKENS, &[]).as_deref(), Some("Bearer op-secret"));
    assert_eq!(
        auth(&[("INGEST_TOKEN", "in-secret")], &[]).as_deref(),
        Some("Bearer in-secret")
    );
    assert_eq!(
        auth(
            &[("OPERATOR_TOKEN", ""), ("INGEST_TOKEN", "in-secret")],
            &[]
        )
        .as_deref(),
        Some("Bearer in-secret"),
        "an empty OPERATOR_TOKEN counts as unset"
    );
    assert_eq!(
        auth(
            &[("MY_INGEST", "mine"), ("INGEST_TOKEN", "in-secret")],
            &["--token-env", "MY_INGEST"]
        )
        .as_deref(),
        Some("Bearer mine"),
        "the fallback is the ingest variable named by --token-env"
    );
    assert_eq!(
        auth(TOKENS, &["--operator-token-env", "OPS"]).as_deref(),
        Some("Bearer in-secret"),
        "OPS is unset, so the ingest token is used"
    );
    assert_eq!(
        auth(&[("OPS", "ops")], &["--operator-token-env", "OPS"]).as_deref(),
        Some("Bearer ops")
    );
    assert_eq!(auth(&[], &[]), None);

    // The ingest variable can also come from the TOML file.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bridge.toml");
    std::fs::write(&cfg, "token_env = \"FILE_TOKEN\"\n").unwrap();
    assert_eq!(
        auth(
            &[("FILE_TOKEN", "from-file")],
            &["--config", cfg.to_str().unwrap()]
        )
        .as_deref(),
        Some("Bearer from-file")
    );
}

#[test]
fn the_worker_url_can_come_from_the_config_file() {
    let fake = slot_fake(SlotControls::default());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bridge.toml");
    std::fs::write(&cfg, format!("worker_url = \"{}/\"\n", fake.url)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_collector-bridge"))
        .env_remove("BRIDGE_WORKER_URL")
        .env("OPERATOR_TOKEN", "op-secret")
        .args(["slot", "show", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = ok(&out);
    assert_eq!(fake.only().url, "/api/slots/home-top-pick/controls");

    let out = Command::new(env!("CARGO_BIN_EXE_collector-bridge"))
        .env_remove("BRIDGE_WORKER_URL")
        .args(["slot", "show"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--worker-url"), "{}", stderr(&out));
}

fn catalog_fake() -> Fake {
    Fake::start(|s| match (s.method.as_str(), s.url.as_str()) {
        ("DELETE", "/api/catalog/items/a") => (
            200,
            json(&CatalogDeleteResponse {
                deleted: "a".into(),
                total: 3,
            }),
        ),
        ("DELETE", "/api/catalog/items/c") => (
            200,
            json(&CatalogDeleteResponse {
                deleted: "c".into(),
                total: 2,
            }),
        ),
        ("DELETE", _) => err(404, "no such item"),
        _ => err(405, "method not allowed"),
    })
}

#[test]
fn catalog_delete_tries_every_item_and_fails_if_any_failed() {
    let fake = catalog_fake();
    let out = bridge(&fake, TOKENS, &["catalog", "delete", "a", "b"]);
    assert!(
        !out.status.success(),
        "a missing item must fail the command"
    );
    assert_eq!(stdout(&out), "deleted a (3 items left in the catalog)\n");
    let err = stderr(&out);
    assert!(
        err.contains("could not delete b: b is not in the catalog"),
        "{err}"
    );
    assert!(err.contains("1 of 2 items could not be deleted"), "{err}");
    let seen = fake.seen();
    let got: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.url.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("DELETE", "/api/catalog/items/a"),
            ("DELETE", "/api/catalog/items/b")
        ]
    );
    assert!(seen
        .iter()
        .all(|s| s.auth.as_deref() == Some("Bearer op-secret")));

    // A failure does not stop the items after it.
    let fake = catalog_fake();
    let out = bridge(&fake, TOKENS, &["catalog", "delete", "b", "c", "--json"]);
    assert!(!out.status.success());
    let printed: CatalogDeleteResponse = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed.deleted, "c");
    assert_eq!(fake.seen().len(), 2);

    let fake = catalog_fake();
    let text = ok(&bridge(&fake, TOKENS, &["catalog", "delete", "a", "c"]));
    assert_eq!(
        text,
        "deleted a (3 items left in the catalog)\ndeleted c (2 items left in the catalog)\n"
    );
}

#[test]
fn audit_prints_one_line_per_entry_newest_first() {
    let entries = vec![
        AuditEntry::new(
            1_700_000_060_000.0,
            Actor::Operator,
            AuditAction::Pin,
            "home-top-pick",
            "pinned 42",
        ),
        AuditEntry::new(
            1_700_000_000_000.0,
            Actor::Ingest,
            AuditAction::CatalogDelete,
            "catalog",
            "deleted 7",
        ),
    ];
    let answer = json(&AuditResponse {
        entries: entries.clone(),
    });
    let fake = Fake::start(move |s| {
        if s.method == "GET" && s.url.starts_with("/api/audit") {
            (200, answer.clone())
        } else {
            err(404, "not found")
        }
    });
    let text = ok(&bridge(&fake, TOKENS, &["audit"]));
    assert_eq!(
        text,
        "2023-11-14T22:14:20Z  operator  pin             home-top-pick  pinned 42\n\
         2023-11-14T22:13:20Z  ingest    catalog_delete  catalog  deleted 7\n"
    );
    let text = ok(&bridge(&fake, TOKENS, &["audit", "--limit", "1"]));
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("pinned 42"), "{text}");
    let text = ok(&bridge(&fake, TOKENS, &["audit", "--json", "--limit", "1"]));
    let printed: AuditResponse = serde_json::from_str(&text).unwrap();
    assert_eq!(printed.entries, entries[..1]);
    let seen = fake.seen();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].url, "/api/audit");
    assert_eq!(seen[1].url, "/api/audit?limit=1");
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer op-secret"));
}

#[test]
fn refusals_say_what_to_do() {
    let fake = Fake::start(|_| err(401, "missing or wrong bearer token"));
    let out = bridge(&fake, TOKENS, &["slot", "show"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("the worker refused the token from OPERATOR_TOKEN: set OPERATOR_TOKEN to the worker's operator token"),
        "{e}"
    );
    assert!(e.contains("missing or wrong bearer token"), "{e}");
    let out = bridge(&fake, &[("INGEST_TOKEN", "x")], &["slot", "unpin"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refused the token from INGEST_TOKEN: set OPERATOR_TOKEN"),
        "{}",
        stderr(&out)
    );
    let out = bridge(&fake, &[], &["audit"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("none was sent (OPERATOR_TOKEN and INGEST_TOKEN are unset)"),
        "{}",
        stderr(&out)
    );

    let fake = Fake::start(|_| err(409, "item 42 is not available"));
    let out = bridge(&fake, TOKENS, &["slot", "pin", "42", "--for", "30m"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("could not pin 42 to home-top-pick"), "{e}");
    assert!(e.contains("item 42 is not available"), "{e}");

    let fake = Fake::start(|_| err(404, "no such slot"));
    let out = bridge(&fake, TOKENS, &["slot", "show", "--slot", "nope"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("check --slot"), "{}", stderr(&out));

    // Nobody listening.
    let url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = Command::new(env!("CARGO_BIN_EXE_collector-bridge"))
        .args(["slot", "show", "--worker-url", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("check --worker-url"),
        "{}",
        stderr(&out)
    );
}
