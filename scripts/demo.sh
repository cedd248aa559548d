#!/usr/bin/env bash
# The main job, locally: the edge worker and the one holding the Durable Objects under `wrangler
# dev` (embedded Durable Object and KV storage), the demo catalog, and simulated Divolte visitors
# feeding it. KAFKA=1 sends the same
# traffic through the test broker and `collector-bridge run` instead of straight to the worker.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PORT:-8787}"
URL="http://127.0.0.1:$PORT"
RATE="${RATE:-40}"          # simulated visitors per second
HOLDOUT="${HOLDOUT:-0.1}"   # share of decisions served uniformly, to measure the bandit against
KAFKA="${KAFKA:-0}"
BRIDGE=target/release/collector-bridge
export WRANGLER_SEND_METRICS=false
export PATH="$HOME/.cargo/bin:$PWD/node_modules/.bin:$PATH"

# Local tokens, generated once and kept out of git: the bridge's and the operators'.
touch .dev.vars
for name in INGEST_TOKEN OPERATOR_TOKEN; do
  if ! grep -q "^$name=." .dev.vars; then
    printf '%s=%s\n' "$name" "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >> .dev.vars
    echo "demo: wrote a fresh $name to .dev.vars"
  fi
done
INGEST_TOKEN=$(sed -n 's/^INGEST_TOKEN=//p' .dev.vars | head -n1)
OPERATOR_TOKEN=$(sed -n 's/^OPERATOR_TOKEN=//p' .dev.vars | head -n1)
export INGEST_TOKEN

# Each process runs in its own process group (wrangler starts workerd children), so stopping
# one stops all it started. Stop order: traffic first, then the bridge (it flushes to the
# worker, which is still up), then the worker and the broker.
sources=() bridge=() servers=()
logs=$(mktemp -d)
stop_group() { # signal, pids...
  local sig=$1; shift
  for p in "$@"; do kill "-$sig" -- "-$p" 2>/dev/null || true; done
}
wait_gone() { # seconds, pids...
  local deadline=$((SECONDS + $1)); shift
  for p in "$@"; do
    while kill -0 "$p" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  done
}
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping"
  stop_group TERM "${sources[@]}"
  wait_gone 1 "${sources[@]}"
  stop_group TERM "${bridge[@]}"
  wait_gone 3 "${bridge[@]}"
  stop_group TERM "${servers[@]}"
  wait_gone 1 "${servers[@]}"
  stop_group KILL "${sources[@]}" "${bridge[@]}" "${servers[@]}"
  wait 2>/dev/null || true
  echo "demo: stopped; logs are in $logs"
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

echo "demo: starting the workers on $URL (wrangler dev: the edge worker in front of the one holding"
echo "      the Durable Objects, as deployed; logs in $logs/worker.log)"
# The pair's configs come from wrangler.toml with the demo's vars in both (a `--var` would reach
# only the first worker) and link .dev.vars, so both read the tokens above.
node scripts/edge-config.mjs --dev .wrangler/demo --var "HOLDOUT=$HOLDOUT"
setsid wrangler dev -c .wrangler/demo/edge.jsonc -c .wrangler/demo/objects.jsonc --ip 127.0.0.1 \
  --port "$PORT" --persist-to .wrangler/state >"$logs/worker.log" 2>&1 &
servers+=($!)
for _ in $(seq 1 240); do
  curl -fsS "$URL/api/catalog" >/dev/null 2>&1 && break
  if ! kill -0 "${servers[0]}" 2>/dev/null; then
    echo "demo: wrangler dev exited; its log:" >&2
    tail -n 40 "$logs/worker.log" >&2
    exit 1
  fi
  sleep 0.5
done
curl -fsS "$URL/api/catalog" >/dev/null || { echo "demo: the worker did not come up; see $logs/worker.log" >&2; exit 1; }

echo "demo: loading the demo catalog (www/catalog/demo.json)"
"$BRIDGE" catalog import --format json --worker-url "$URL" --token-env INGEST_TOKEN www/catalog/demo.json

if [ "$KAFKA" = "1" ]; then
  TANSU="${TANSU_BIN:-.tools/bin/tansu}"
  [ -x "$TANSU" ] || bash scripts/install-tansu.sh
  KPORT="${KAFKA_PORT:-9092}"
  echo "demo: starting the broker on 127.0.0.1:$KPORT"
  setsid "$TANSU" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$KPORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KPORT" >"$logs/broker.log" 2>&1 &
  servers+=($!)
  for _ in $(seq 1 60); do
    "$TANSU" topic create --broker "tcp://127.0.0.1:$KPORT" --partitions 3 divolte >>"$logs/broker.log" 2>&1 && break
    sleep 0.5
  done
  echo "demo: starting collector-bridge run (logs in $logs/bridge.log, metrics on 127.0.0.1:9898)"
  setsid "$BRIDGE" run --brokers "127.0.0.1:$KPORT" --topic divolte --group top-pick \
    --worker-url "$URL" --token-env INGEST_TOKEN --metrics-addr 127.0.0.1:9898 \
    --session-timeout-ms 6000 >"$logs/bridge.log" 2>&1 &
  bridge+=($!)
  sim_target=(--brokers "127.0.0.1:$KPORT" --topic divolte)
else
  sim_target=(--token-env INGEST_TOKEN)
fi

echo "demo: simulated visitors ($RATE per second) with hidden click-through rates (logs in $logs/simulate.log)"
setsid "$BRIDGE" simulate --worker-url "$URL" "${sim_target[@]}" --visitors 100000000 --rate "$RATE" \
  --concurrency 4 --seed "${SEED:-1}" >"$logs/simulate.log" 2>&1 &
sources+=($!)

# The addresses are worth opening once the homepage serves a pick.
for _ in $(seq 1 120); do
  curl -fsS "$URL/" 2>/dev/null | grep -q 'data-top-pick-item=' && break
  sleep 0.5
done
curl -fsS "$URL/" | grep -q 'data-top-pick-item=' || { echo "demo: the homepage shows no pick yet; see $logs/worker.log" >&2; exit 1; }

host=${URL#http://}
cat <<MSG

  Shop (the top pick, pre-rendered):  $URL/
  Dashboard (what the bandit learns): http://operator:$OPERATOR_TOKEN@$host/dashboard
      (or $URL/dashboard, signing in with any user name and OPERATOR_TOKEN from .dev.vars)
  Slot state as JSON:                 curl -H "Authorization: Bearer \$OPERATOR_TOKEN" $URL/api/slots/home-top-pick
  The pick as JSON:                   $URL/api/slots/home-top-pick/pick

  Rounds end every 2,000 impressions (ROUND_IMPRESSIONS in wrangler.toml); in between, the
  default policy swaps an arm out for a fresh item as soon as it falls confidently behind
  (the dashboard's round history lists these mid-round swaps). Ctrl-C stops.
  A holdout of $HOLDOUT of the decisions is served uniformly (HOLDOUT=0 make demo turns it off):
  the dashboard's "Bandit against holdout" shows the uplift and whether it is significant yet.
  Every pick logs its decision and probability; see docs/IS-IT-WORKING.md.

  Operate it (OPERATOR_TOKEN from .dev.vars; the dashboard shows the controls and the audit log):
    export OPERATOR_TOKEN=\$(sed -n 's/^OPERATOR_TOKEN=//p' .dev.vars)
    $BRIDGE slot pin demo-001 --for 10m --worker-url $URL
    $BRIDGE slot exclude demo-002 --worker-url $URL
    $BRIDGE slot unpin --worker-url $URL
    $BRIDGE audit --worker-url $URL

MSG
wait -n "${sources[@]}" "${bridge[@]}" "${servers[@]}" || true
echo "demo: a process exited early; the last lines of the logs:" >&2
tail -n 20 "$logs"/*.log >&2
