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
cd worker
exec worker-build --profile worker --out-dir ../build
