#!/usr/bin/env bash
# What `wrangler deploy` would upload for the local configuration and for each environment of
# wrangler.toml, checked offline: the build bundles, every binding is declared, wrangler warns
# about nothing, and no two environments share a KV namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

seen_kv=""
for env in "" staging production; do
  out=$(mktemp -d)
  log=$(wrangler deploy --dry-run --outdir "$out" --env="$env" 2>&1) || {
    echo "$log"; echo "dry-run of environment '${env:-top level}' failed" >&2; exit 1; }
  rm -rf "$out"
  name=${env:-top level}
  if grep -q "WARNING" <<<"$log"; then
    echo "$log"; echo "wrangler warns about environment '$name' (above)" >&2; exit 1
  fi
  for binding in "env.SLOT_STORE (SlotObject)" "env.CATALOG_STORE (CatalogObject)" "env.SNAPSHOTS (" "env.ASSETS" "env.SLOTS ("; do
    grep -qF "$binding" <<<"$log" || { echo "$log"; echo "environment '$name' lacks $binding" >&2; exit 1; }
  done
  kv=$(grep -oE 'env\.SNAPSHOTS \([0-9a-f]+\)' <<<"$log")
  if grep -qxF "$kv" <<<"$seen_kv"; then
    echo "environment '$name' shares its KV namespace ($kv) with another" >&2; exit 1
  fi
  seen_kv+="$kv"$'\n'
  echo "dry-run: environment '$name' ok ($kv)"
done
