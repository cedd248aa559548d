# Front door: `make demo` runs the system locally, `make test` runs every test.
# Every target installs what it needs first (scripts/bootstrap.sh), so both work on a bare machine.

SHELL := /bin/bash
export WRANGLER_SEND_METRICS := false
export PATH := $(HOME)/.cargo/bin:$(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: all tools test-tools bench-tools build build-worker build-native demo test test-rust test-worker test-e2e test-browser lint fmt bench dry-run clean reliability fuzz-tools fuzz-smoke fuzz evaluate-long

all: build

tools:
	@bash scripts/bootstrap.sh

test-tools:
	@bash scripts/bootstrap.sh --test

bench-tools:
	@bash scripts/bootstrap.sh --bench

fuzz-tools:
	@bash scripts/bootstrap.sh --fuzz

## build: the worker bundles (build/: the full worker with the Durable Objects; build/edge/: the
## edge worker and its generated config) and the native bridge binary.
build: tools build-worker build-native

build-worker: tools
	sh scripts/build-worker.sh

build-native:
	cargo build --release -p collector-bridge

## demo: the edge and objects workers under `wrangler dev` with simulated Divolte traffic (KAFKA=1: through the broker).
demo: build
	bash scripts/demo.sh

## test: every test suite, from a bare machine.
test: test-tools build lint test-rust fuzz-smoke test-worker test-e2e test-browser dry-run

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --exclude top-pick-worker --all-targets -- -D warnings
	cargo clippy -p top-pick-worker --target wasm32-unknown-unknown -- -D warnings
	cargo clippy -p top-pick-worker --target wasm32-unknown-unknown --no-default-features -- -D warnings

test-rust:
	cargo test --workspace --exclude top-pick-worker
	cargo test -p top-pick-worker --lib

## fuzz-smoke: each fuzz target (fuzz/fuzz_targets) for 30 s under libFuzzer; fails on any crash.
fuzz-smoke: fuzz-tools
	bash scripts/fuzz.sh smoke

## fuzz: the long campaign, 10 million executions per target, one at a time; the figures go to
## docs/RELIABILITY.md ("Fuzzing"). FUZZ_TARGET_DIR (default target/fuzz) holds the builds.
fuzz: fuzz-tools
	bash scripts/fuzz.sh long

test-worker: build-worker
	node --test --test-concurrency=1 tests/worker/

## test-e2e: tansu + the bridge binary + the worker in workerd (the bridge's dev tools too).
test-e2e: build
	cargo build --release -p collector-bridge --examples
	node --test --test-concurrency=1 tests/e2e/

## test-browser: headless Chromium (Debian's) against the worker; screenshots in tests/artifacts/.
test-browser: build-worker
	node --test --test-concurrency=1 tests/browser/

## evaluate-long: the four published learning workloads (catalog 500 and 5,000, delay 0 and 500)
## over 40 paired seeds, the contextual evaluator (segments, spread 0.5 and 0) over 100 and the
## feature priors (category spread 0.5 and 0) over 400, about 10 min; writes
## docs/bench/learning-*.json, contextual-*.json, features-*.json and their plots, which the
## bench report reads.
evaluate-long: build-native
	for catalog in 500 5000; do for delay in 0 500; do \
	  target/release/collector-bridge evaluate --policy post2015 --policy shop --policy default \
	    --policy race --catalog $$catalog --ctr beta:2,60 --arms 8 --interval 2000 \
	    --impressions 400000 --delay $$delay --seeds 40 --first-seed 1 --json \
	    --plot docs/bench/regret-catalog$$catalog-delay$$delay.svg \
	    > docs/bench/learning-c$$catalog-d$$delay.json || exit 1; \
	done; done
	for spread in 0.5 0; do \
	  target/release/collector-bridge evaluate --policy default --segments 0.6,0.3,0.1 \
	    --segment-spread $$spread --catalog 500 --ctr beta:2,60 --arms 8 --interval 2000 \
	    --impressions 400000 --delay 500 --seeds 100 --first-seed 1 --json \
	    --plot docs/bench/regret-segments-spread$$spread.svg \
	    > docs/bench/contextual-spread$$spread.json || exit 1; \
	  target/release/collector-bridge evaluate --policy default --policy default+features \
	    --categories 20 --category-spread $$spread --catalog 500 --ctr beta:2,60 --arms 8 \
	    --interval 2000 --impressions 400000 --delay 500 --seeds 400 --first-seed 1 --json \
	    --plot docs/bench/regret-features-spread$$spread.svg \
	    > docs/bench/features-spread$$spread.json || exit 1; \
	done

## dry-run: what `wrangler deploy` would upload, checked offline, for both workers at the top
## level and in each environment (staging, production) of wrangler.toml.
dry-run: build-worker
	@bash scripts/dry-run.sh

## reliability: the full campaigns (fault loop, worker outage, homepage without its store, load,
## hostile catalog in Chromium); figures in docs/RELIABILITY.md. `make test` runs short versions.
reliability: test-tools build
	cargo build --release -p collector-bridge --examples
	node tests/reliability/run.mjs

bench: bench-tools build
	bash bench/run.sh

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf build
