// The minimal Rust worker (bench/minimal-worker/: workers-rs, built like the project's bundle,
// a constant JSON answer) under Miniflare: the ceiling of a Rust/wasm worker in this harness on
// this machine, measured next to the project's worker and the trivial JS worker
// (bench/serve-trivial.mjs). Build it first with `sh bench/minimal-worker/build.sh`.
//
//   node bench/serve-minimal.mjs --port PORT [--bundle DIR] [--assets]
//
// DIR defaults to bench-out/minimal-worker. --assets gives it the project's static assets and
// asset router (wrangler.toml's [assets]): `/` is one of the routes run by the worker first, so
// requests to it pass the same router as the project's homepage and pick API before the
// constant answer; without it, requests reach the worker directly, as the trivial JS worker's.
//
// Checks that `/` answers 200, prints `ready <url>` on stdout and serves until SIGTERM or SIGINT.
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Miniflare } from "miniflare";
import { miniflareOptions } from "./cold-start.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({
  options: {
    port: { type: "string", default: "18789" },
    bundle: { type: "string", default: path.join(ROOT, "bench-out/minimal-worker") },
    assets: { type: "boolean", default: false },
  },
});
if (!existsSync(path.join(values.bundle, "index_bg.wasm"))) {
  throw new Error(`${values.bundle} has no index_bg.wasm: run sh bench/minimal-worker/build.sh first`);
}

const mf = new Miniflare(await miniflareOptions(values.bundle, { port: Number(values.port), assets: values.assets }));
const url = await mf.ready;
const r = await mf.dispatchFetch(new URL("/", url));
await r.arrayBuffer();
if (r.status !== 200) throw new Error(`the minimal worker answers ${r.status}`);
console.log(`ready ${url.toString().replace(/\/$/, "")}`);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
