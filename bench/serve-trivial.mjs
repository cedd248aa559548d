// A trivial JS worker (a constant JSON answer) under Miniflare: the ceiling of what any worker
// can do in this harness on this machine, measured next to the project's worker.
//
//   node bench/serve-trivial.mjs --port PORT
import { parseArgs } from "node:util";
import { Miniflare } from "miniflare";

const { values } = parseArgs({ options: { port: { type: "string", default: "18788" } } });
const body = JSON.stringify({ slot: "home-top-pick", item: "demo-001", epoch: 1, title: "Tiled dome" });
const mf = new Miniflare({
  host: "127.0.0.1",
  port: Number(values.port),
  modules: true,
  script: `export default { fetch() { return new Response(${JSON.stringify(body)}, { headers: { "content-type": "application/json" } }); } };`,
});
console.log(`ready ${(await mf.ready).toString()}`);
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
