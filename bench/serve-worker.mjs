// Serves the built bundle (build/) with Miniflare directly on a loopback port, for load tests.
// Not through `wrangler dev`: its local proxy caps any worker at about 1,200 requests/s here.
//
//   node bench/serve-worker.mjs --port 18787 [--catalog demo|N] [--var KEY=VALUE ...]
//
// Imports a catalog (the demo catalog, or N synthetic items), waits until the pick API answers,
// prints `ready <url>` on stdout and serves until SIGTERM or SIGINT.
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { ROOT, startWorker, importItems, makeItems } from "../tests/lib/worker.mjs";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "18787" },
    catalog: { type: "string", default: "demo" },
    var: { type: "string", multiple: true, default: [] },
  },
});

const vars = Object.fromEntries(
  values.var.map((kv) => {
    const i = kv.indexOf("=");
    if (i < 1) throw new Error(`--var wants KEY=VALUE, got ${kv}`);
    return [kv.slice(0, i), kv.slice(i + 1)];
  }),
);

const w = await startWorker({ port: Number(values.port), vars });

let items;
if (values.catalog === "demo") {
  items = JSON.parse(readFileSync(path.join(ROOT, "www/catalog/demo.json"), "utf8")).items;
} else {
  items = makeItems(Number(values.catalog), "bench");
}
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

process.stdout.write(`ready ${w.url}\n`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await w.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
