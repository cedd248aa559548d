//! The TOML configuration file: the shipped example parses, flags override it, typos fail.

use std::path::PathBuf;

use clap::Parser;
use collector_bridge::config::{FileConfig, RunArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bridge.example.toml")
}

/// `run --config <the example> ARGS...`, parsed.
fn with_example(args: &[&str]) -> Cli {
    let path = example();
    let mut argv = vec!["run", "--config", path.to_str().unwrap()];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).unwrap()
}

#[test]
fn the_example_file_resolves_to_its_values() {
    let path = example();
    let cli = with_example(&[]);
    let cfg = cli.run.resolve().unwrap();
    assert_eq!(cfg.brokers, "127.0.0.1:9092");
    assert_eq!(cfg.topics, vec!["divolte"]);
    assert_eq!(cfg.group, "top-pick");
    assert_eq!(cfg.worker_url, "http://127.0.0.1:8787");
    assert_eq!(cfg.token_env, "INGEST_TOKEN");
    assert_eq!(cfg.flush.max_events, 100_000);
    assert_eq!(cfg.flush.max_age.as_millis(), 500);
    assert_eq!(cfg.metrics_addr.as_deref(), Some("127.0.0.1:9898"));
    // The schema path is taken relative to the file.
    assert_eq!(
        cfg.schema,
        Some(path.parent().unwrap().join("schema/TopPickEvent.avsc"))
    );
    assert!(cfg
        .kafka_options
        .contains(&("fetch.min.bytes".into(), "1".into())));
    assert_eq!(cfg.rules.fields.item, "productId");
    assert_eq!(cfg.rules.attribution_window_ms, 1_800_000);
    assert_eq!(cfg.rules.reward, collector_bridge::classify::Reward::Click);
}

#[test]
fn flags_win_over_the_file() {
    let cli = with_example(&[
        "--group",
        "other-group",
        "--flush-events",
        "7",
        "--attribution-window",
        "2h",
        "--reward",
        "event:addToBasket:product",
    ]);
    let cfg = cli.run.resolve().unwrap();
    assert_eq!(cfg.group, "other-group");
    assert_eq!(cfg.flush.max_events, 7);
    assert_eq!(cfg.rules.attribution_window_ms, 7_200_000);
    assert_eq!(
        cfg.rules.reward,
        collector_bridge::classify::Reward::Event {
            event_type: "addToBasket".into(),
            page_type: Some("product".into())
        }
    );
    assert_eq!(
        cfg.brokers, "127.0.0.1:9092",
        "unset flags fall back to the file"
    );
}

#[test]
fn unknown_keys_are_errors_that_name_the_file() {
    let dir = std::env::temp_dir().join(format!("bridge-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "brokers = \"x\"\nflush_event = 5\n").unwrap();
    let err = FileConfig::load(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("flush_event"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_unicode_worker_host_says_to_write_it_in_ascii() {
    let cli = with_example(&["--worker-url", "https://bücher.example"]);
    let err = cli.run.resolve().unwrap_err().to_string();
    assert!(err.contains("punycode"), "{err}");
    let cli = with_example(&["--worker-url", "https://xn--bcher-kva.example"]);
    assert_eq!(
        cli.run.resolve().unwrap().worker_url,
        "https://xn--bcher-kva.example"
    );
}
