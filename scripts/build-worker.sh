#!/bin/sh
# Builds the worker bundles offline: build/ (index.js + index_bg.wasm: every route and the Durable
# Objects; the worker wrangler.toml deploys) and build/edge/ (the routes, pick and render only,
# without the objects' code; its configuration build/edge/wrangler.jsonc is generated from
# wrangler.toml). wrangler's [build] command runs this, so `wrangler dev` and `wrangler deploy`
# build the same way `make build` does.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
who=build-worker
. "$root/scripts/worker-tools.sh"
# wasm-opt alone takes a minute, so skip the whole build when no input is newer than the bundle
# (wrangler dev and deploy run this again right after make build).
if [ -f build/index_bg.wasm ] && [ -f build/index.js ] && [ -f build/edge/index_bg.wasm ] \
  && [ -f build/edge/index.js ] && [ -z "${FORCE_BUILD:-}" ]; then
  newer=$(find worker/src worker/js worker/Cargo.toml bandit/src bandit/Cargo.toml Cargo.toml Cargo.lock .cargo \
    -newer build/index_bg.wasm -print -quit 2>/dev/null)
  newer_edge=$(find worker/src worker/js worker/Cargo.toml bandit/src bandit/Cargo.toml Cargo.toml Cargo.lock .cargo \
    -newer build/edge/index_bg.wasm -print -quit 2>/dev/null)
  if [ -z "$newer" ] && [ -z "$newer_edge" ]; then
    node scripts/edge-config.mjs
    echo "build-worker: build/ is up to date"
    exit 0
  fi
fi
(cd worker && worker-build --profile worker --out-dir ../build)
(cd worker && worker-build --profile worker --out-dir ../build/edge --no-default-features)
node scripts/edge-config.mjs
