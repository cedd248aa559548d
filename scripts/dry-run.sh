#!/usr/bin/env bash
# What `wrangler deploy` would upload for the local configuration and for each environment of
# wrangler.toml, checked offline, for both workers: the worker of wrangler.toml (the full bundle,
# holding the Durable Objects) and the edge worker (build/edge/wrangler.jsonc, generated from it).
# Each builds, declares every binding, draws no warning from wrangler; no two environments share
# a KV namespace; the edge worker's objects are the same environment's worker.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run() { # dry_run ENV [wrangler args...]: wrangler's log, or exit with it
  local env=$1 out log
  shift
  out=$(mktemp -d)
  log=$(wrangler deploy --dry-run --outdir "$out" --env="$env" "$@" 2>&1) || {
    echo "$log"; echo "dry-run of environment '${env:-top level}' ($*) failed" >&2; exit 1; }
  rm -rf "$out"
  if grep -q "WARNING" <<<"$log"; then
    echo "$log"; echo "wrangler warns about environment '${env:-top level}' ($*) (above)" >&2; exit 1
  fi
  echo "$log"
}

seen_kv=""
for env in "" staging production; do
  name=${env:-top level}
  script=top-pick${env:+-$env}
  objects=$(dry_run "$env")
  edge=$(dry_run "$env" -c build/edge/wrangler.jsonc)
  for binding in "env.SLOT_STORE (SlotObject)" "env.CATALOG_STORE (CatalogObject)" "env.SNAPSHOTS (" "env.ASSETS" "env.SLOTS ("; do
    grep -qF "$binding" <<<"$objects" || { echo "$objects"; echo "environment '$name' lacks $binding" >&2; exit 1; }
  done
  for binding in "env.SLOT_STORE (SlotObject, defined in $script)" "env.CATALOG_STORE (CatalogObject, defined in $script)" "env.SNAPSHOTS (" "env.ASSETS" "env.SLOTS ("; do
    grep -qF "$binding" <<<"$edge" || { echo "$edge"; echo "the edge worker of environment '$name' lacks $binding" >&2; exit 1; }
  done
  kv=$(grep -oE 'env\.SNAPSHOTS \([0-9a-f]+\)' <<<"$objects")
  [ "$(grep -oE 'env\.SNAPSHOTS \([0-9a-f]+\)' <<<"$edge")" = "$kv" ] || {
    echo "the edge worker of environment '$name' reads another KV namespace than $kv" >&2; exit 1; }
  if grep -qxF "$kv" <<<"$seen_kv"; then
    echo "environment '$name' shares its KV namespace ($kv) with another" >&2; exit 1
  fi
  seen_kv+="$kv"$'\n'
  echo "dry-run: environment '$name' ok ($script and its edge worker, $kv)"
done
