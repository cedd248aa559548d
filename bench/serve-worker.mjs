// Serves the built bundles (the edge worker, build/edge/, in front of the objects' worker, build/)
// with Miniflare directly on a loopback port, for load tests.
// Not through `wrangler dev`: its local proxy caps any worker at about 1,200 requests/s here.
//
//   node bench/serve-worker.mjs --port 18787 [--catalog demo|N] [--var KEY=VALUE ...] [--no-assets]
//     [--bundle edge|full]
//
// Configured from wrangler.toml as tests/lib/worker.mjs does. --no-assets leaves out the static
// assets, so requests reach the worker without passing Miniflare's asset router first (the
// homepage then has no template; only the APIs are meaningful). Imports a catalog (the demo
// catalog, or N synthetic items), waits until the pick API answers, prints `ready <url>` on
// stdout and serves until SIGTERM or SIGINT.
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { Miniflare } from "miniflare";
import { ROOT, TOKEN, importItems, makeItems, workerOptions } from "../tests/lib/worker.mjs";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "18787" },
    catalog: { type: "string", default: "demo" },
    var: { type: "string", multiple: true, default: [] },
    "no-assets": { type: "boolean", default: false },
    bundle: { type: "string", default: "edge" },
  },
});

const vars = Object.fromEntries(
  values.var.map((kv) => {
    const i = kv.indexOf("=");
    if (i < 1) throw new Error(`--var wants KEY=VALUE, got ${kv}`);
    return [kv.slice(0, i), kv.slice(i + 1)];
  }),
);

// The edge worker in front of the objects' worker, as deployed (--bundle full: the one worker).
// The harness's token, whatever a developer's .dev.vars holds: an empty OPERATOR_TOKEN lets the
// ingest token serve the operator reads too.
const workers = workerOptions({
  bundle: values.bundle,
  bindings: { INGEST_TOKEN: TOKEN, OPERATOR_TOKEN: "", ...vars },
  assets: !values["no-assets"],
});
const mf = new Miniflare({ host: "127.0.0.1", port: Number(values.port), workers });
const base = (await mf.ready).toString().replace(/\/$/, "");
const w = { fetch: (p, init) => mf.dispatchFetch(new URL(p, base + "/"), init) };

const items =
  values.catalog === "demo"
    ? JSON.parse(readFileSync(path.join(ROOT, "www/catalog/demo.json"), "utf8")).items
    : makeItems(Number(values.catalog), "bench");
// The import API takes bounded batches.
for (let i = 0; i < items.length; i += 200) {
  await importItems(w, items.slice(i, i + 200));
}

// The slot fills its arm set on first use; wait (bounded) until a pick is served.
const deadline = Date.now() + 20_000;
for (;;) {
  const r = await w.fetch("/api/slots/home-top-pick/pick");
  await r.arrayBuffer();
  if (r.status === 200) break;
  if (Date.now() > deadline) throw new Error(`pick API still answers ${r.status}`);
  await new Promise((res) => setTimeout(res, 100));
}

process.stdout.write(`ready ${base}\n`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
