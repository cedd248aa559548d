# Sourced by the scripts that build a workers-rs bundle (scripts/build-worker.sh,
# bench/minimal-worker/build.sh), so both use the same wasm-bindgen, wasm-opt and esbuild:
# expects `root` (the repository) and `who` (a label for messages) to be set.
WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen || echo "$HOME/.cargo/bin/wasm-bindgen")}"
WASM_OPT_BIN="${WASM_OPT_BIN:-$root/node_modules/.bin/wasm-opt}"
ESBUILD_BIN="${ESBUILD_BIN:-$root/node_modules/.bin/esbuild}"
export WASM_BINDGEN_BIN WASM_OPT_BIN ESBUILD_BIN
for bin in "$WASM_BINDGEN_BIN" "$WASM_OPT_BIN" "$ESBUILD_BIN"; do
  if [ ! -x "$bin" ]; then
    echo "$who: $bin is missing: run scripts/bootstrap.sh (or make build) first" >&2
    exit 1
  fi
done
PATH="$HOME/.cargo/bin:$PATH"
