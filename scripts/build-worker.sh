#!/bin/sh
# Builds the worker bundle (build/index.js + build/index_bg.wasm) offline. wrangler's [build]
# command runs this, so `wrangler dev` and `wrangler deploy` build the same way `make build` does.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
who=build-worker
. "$root/scripts/worker-tools.sh"
# wasm-opt alone takes a minute, so skip the whole build when no input is newer than the bundle
# (wrangler dev and deploy run this again right after make build).
if [ -f build/index_bg.wasm ] && [ -f build/index.js ] && [ -z "${FORCE_BUILD:-}" ]; then
  newer=$(find worker/src worker/js worker/Cargo.toml bandit/src bandit/Cargo.toml Cargo.toml Cargo.lock .cargo \
    -newer build/index_bg.wasm -print -quit 2>/dev/null)
  if [ -z "$newer" ]; then
    echo "build-worker: build/ is up to date"
    exit 0
  fi
fi
cd worker
exec worker-build --profile worker --out-dir ../build
