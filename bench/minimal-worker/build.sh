#!/bin/sh
# Builds the minimal Rust worker (bench/minimal-worker/) into OUT_DIR (index.js + index_bg.wasm),
# offline, the way scripts/build-worker.sh builds the project's bundle: worker-build with
# --profile worker and the same wasm-bindgen, wasm-opt and esbuild.
#
#   sh bench/minimal-worker/build.sh [OUT_DIR]    (default: bench-out/minimal-worker)
#
# CARGO_TARGET_DIR defaults to target/minimal-worker, beside the project's own target/.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/bench-out/minimal-worker}
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
who=minimal-worker
. "$root/scripts/worker-tools.sh"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/minimal-worker}"
export CARGO_TARGET_DIR
# Cargo.lock is pinned to the root lock's versions; nothing is fetched.
CARGO_NET_OFFLINE=${CARGO_NET_OFFLINE:-true}
export CARGO_NET_OFFLINE
mkdir -p "$out"
cd "$here"
exec worker-build --profile worker --out-dir "$out"
