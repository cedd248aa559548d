#!/bin/sh
# Builds the worker bundle (build/index.js + build/index_bg.wasm) offline. wrangler's [build]
# command runs this, so `wrangler dev` and `wrangler deploy` build the same way `make build` does.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen || echo "$HOME/.cargo/bin/wasm-bindgen")}"
WASM_OPT_BIN="${WASM_OPT_BIN:-$root/node_modules/.bin/wasm-opt}"
ESBUILD_BIN="${ESBUILD_BIN:-$root/node_modules/.bin/esbuild}"
export WASM_BINDGEN_BIN WASM_OPT_BIN ESBUILD_BIN
for bin in "$WASM_BINDGEN_BIN" "$WASM_OPT_BIN" "$ESBUILD_BIN"; do
  if [ ! -x "$bin" ]; then
    echo "build-worker: $bin is missing: run scripts/bootstrap.sh (or make build) first" >&2
    exit 1
  fi
done
PATH="$HOME/.cargo/bin:$PATH"
# wasm-opt alone takes a minute, so skip the whole build when no input is newer than the bundle
# (wrangler dev and deploy run this again right after make build).
if [ -f build/index_bg.wasm ] && [ -f build/index.js ] && [ -z "${FORCE_BUILD:-}" ]; then
  newer=$(find worker/src worker/Cargo.toml bandit/src bandit/Cargo.toml Cargo.toml Cargo.lock .cargo \
    -newer build/index_bg.wasm -print -quit 2>/dev/null)
  if [ -z "$newer" ]; then
    echo "build-worker: build/ is up to date"
    exit 0
  fi
fi
cd worker
exec worker-build --profile worker --out-dir ../build
