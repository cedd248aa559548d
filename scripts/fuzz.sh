#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers and the page rewrite (cargo-fuzz, libFuzzer, nightly
# Rust), one target at a time; any panic, failed assertion, timeout or memory error fails.
#
#   scripts/fuzz.sh smoke          30 s per target, with AddressSanitizer (part of `make test`)
#   scripts/fuzz.sh long [RUNS]    RUNS executions per target (default 10,000,000), without a
#                                  sanitizer; writes the summary into docs/RELIABILITY.md
#
# The long campaign builds without AddressSanitizer because it costs executions, not findings:
# the project's crates have no `unsafe`, and ASan's allocator makes the render target (lol_html
# allocates per element) 7.5 times slower. Panics, overflow checks (debug assertions stay on),
# stack overflows and timeouts are caught either way. FUZZ_SANITIZER=address|none overrides.
#
# Environment: FUZZ_TARGET_DIR (default target/fuzz; builds without a sanitizer go to
# FUZZ_TARGET_DIR-nosan), FUZZ_TARGETS (default: all four), FUZZ_SECONDS (smoke, default 30).
# The tools come from `scripts/bootstrap.sh --fuzz`.
# Working corpora live in fuzz/corpus/<target> and crash inputs in fuzz/artifacts/<target>
# (both ignored by git); the committed seeds are fuzz/seeds/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-smoke}
runs=${2:-10000000}
targets=${FUZZ_TARGETS:-avro_decode event_batch catalog render}
seconds=${FUZZ_SECONDS:-30}

log() { printf 'fuzz: %s\n' "$*" >&2; }

case "$mode" in
  smoke) limit=(-max_total_time="$seconds"); sanitizer=${FUZZ_SANITIZER:-address} ;;
  long) limit=(-runs="$runs"); sanitizer=${FUZZ_SANITIZER:-none} ;;
  *) echo "usage: scripts/fuzz.sh smoke|long [RUNS]" >&2; exit 2 ;;
esac
# One build directory per sanitizer: switching flags in one directory rebuilds everything.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target/fuzz}
if [ "$sanitizer" = none ]; then CARGO_TARGET_DIR=$CARGO_TARGET_DIR-nosan; fi
bin_dir=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release

build_start=$SECONDS
log "building the fuzz targets (nightly, sanitizer: $sanitizer) in $CARGO_TARGET_DIR"
cargo +nightly fuzz build -s "$sanitizer"
log "built in $((SECONDS - build_start)) s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
rows=()
for t in $targets; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  if [ "$t" = avro_decode ]; then
    # Valid records of every schema the target knows (the shop's too, when it was present at
    # build time), made by the project's encoder.
    TOP_PICK_FUZZ_SEEDS=$corpus "$bin_dir/avro_decode" >/dev/null 2>&1
  fi
  log "$t: ${limit[*]}"
  start=$SECONDS
  status=0
  cargo +nightly fuzz run -s "$sanitizer" "$t" "$corpus" "fuzz/seeds/$t" -- \
    "${limit[@]}" -timeout=10 -print_final_stats=1 >"$logs/$t.log" 2>&1 || status=$?
  took=$((SECONDS - start))
  execs=$(awk '/^stat::number_of_executed_units/ {print $2}' "$logs/$t.log" | tail -1)
  rate=$(awk '/^stat::average_exec_per_sec/ {print $2}' "$logs/$t.log" | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$logs/$t.log" | tail -1 || true)
  crash=$(grep -Eo 'Test unit written to [^ ]+' "$logs/$t.log" | awk '{print $NF}' | tail -1 || true)
  if [ "$status" -ne 0 ] || [ -n "$crash" ]; then
    failed+=("$t")
    echo "----- $t failed (exit $status); the end of its log:" >&2
    grep -Ev '^(    #[0-9]+ 0x|#[0-9]+\s+(NEW|REDUCE|pulse|INITED))' "$logs/$t.log" | tail -40 >&2
    [ -n "$crash" ] && echo "reproduce: CARGO_TARGET_DIR=$CARGO_TARGET_DIR cargo +nightly fuzz run -s $sanitizer $t $crash" >&2
  fi
  log "$t: ${execs:-?} executions in ${took} s (${rate:-?}/s), ${cov:-no coverage line}, crash: ${crash:-none}"
  rows+=("| \`$t\` | ${execs:-?} | ${rate:-?} | ${took} | ${cov:-?} | ${crash:+1 (}${crash:-0}${crash:+)} |")
done

if [ "$mode" = long ]; then
  doc=docs/RELIABILITY.md
  {
    echo "<!-- fuzz:start (written by scripts/fuzz.sh long) -->"
    echo "Last campaign: $(date -u +%Y-%m-%d), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo none)\`$(git diff --quiet HEAD 2>/dev/null || echo ' plus uncommitted changes'), $(rustc +nightly --version | awk '{print $1, $2, $3}' | tr -d '('), $(cargo fuzz --version), $(nproc) cores."
    echo "Command: \`make fuzz\` (\`scripts/fuzz.sh long $runs\`: per target, one at a time, \`cargo +nightly fuzz run -s $sanitizer TARGET fuzz/corpus/TARGET fuzz/seeds/TARGET -- -runs=$runs -timeout=10 -print_final_stats=1\`)."
    echo
    echo "| target | executions | exec/s | seconds | coverage at the end (edges, features, corpus) | crashes |"
    echo "|---|---:|---:|---:|---|---|"
    printf '%s\n' "${rows[@]}"
    echo "<!-- fuzz:end -->"
  } >"$logs/summary.md"
  if grep -q '<!-- fuzz:start' "$doc"; then
    awk -v f="$logs/summary.md" '
      /<!-- fuzz:start/ { while ((getline l < f) > 0) print l; skip = 1; next }
      /<!-- fuzz:end/ { skip = 0; next }
      !skip { print }' "$doc" >"$logs/doc.md"
    cat "$logs/doc.md" >"$doc"
  else
    printf '\n' >>"$doc"
    cat "$logs/summary.md" >>"$doc"
  fi
  log "summary written to $doc"
fi

if [ ${#failed[@]} -gt 0 ]; then
  log "crashes or failures in: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
log "no crashes"
