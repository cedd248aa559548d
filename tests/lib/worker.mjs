// Starts the built worker bundles in workerd through Miniflare, configured from wrangler.toml
// (and the edge worker's generated config) exactly as `wrangler dev` would be, with in-memory
// storage per instance.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions, unstable_readConfig } from "wrangler";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const TOKEN = "test-token-0123456789";
export const SLOT = "home-top-pick";

/**
 * Miniflare options for the built bundles, configured as `wrangler dev` would configure them:
 * with `bundle: "edge"` (the default, the production shape) the edge worker (build/edge/, its
 * generated build/edge/wrangler.jsonc) first, then the worker of wrangler.toml (build/) holding
 * the Durable Objects; with `bundle: "full"` only the latter, serving everything itself. The first
 * worker is the entry. `bindings` are added to every worker (the settings must agree).
 * @param {object} [opts]
 * @param {"edge"|"full"} [opts.bundle]
 * @param {Record<string,string>} [opts.bindings]
 * @param {Record<string,string>} [opts.objectsBindings] added to the objects' worker only (last)
 * @param {object} [opts.durableObjects] overrides of the entry worker's Durable Object bindings
 * @param {boolean} [opts.assets] false leaves out the static assets (requests skip the router)
 */
export function workerOptions(opts = {}) {
  const bundle = opts.bundle ?? "edge";
  if (bundle !== "edge" && bundle !== "full") throw new Error(`bundle is edge or full, not ${bundle}`);
  const dirs = bundle === "edge" ? [["build/edge", "build/edge/wrangler.jsonc"], ["build", "wrangler.toml"]] : [["build", "wrangler.toml"]];
  return dirs.map(([dir, config], i) => {
    const script = path.join(ROOT, dir, "index.js");
    if (!existsSync(script) || !existsSync(path.join(ROOT, config))) {
      throw new Error(`${script} (or ${config}) is missing: run \`make build\` first`);
    }
    const file = path.join(ROOT, config);
    const { workerOptions: wo } = unstable_getMiniflareWorkerOptions(file);
    const worker = {
      ...wo,
      // The configs' own names: the edge's bindings name the objects' worker as deployed.
      name: unstable_readConfig({ config: file }).name,
      scriptPath: script,
      modulesRoot: path.join(ROOT, dir),
      modules: true,
      modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
      bindings: {
        ...wo.bindings,
        ...(opts.bindings ?? {}),
        ...(dir === "build" ? (opts.objectsBindings ?? {}) : {}),
      },
      durableObjects: { ...wo.durableObjects, ...(i === 0 ? (opts.durableObjects ?? {}) : {}) },
    };
    if (opts.assets === false || i > 0) delete worker.assets;
    return worker;
  });
}

/**
 * @param {object} [opts]
 * @param {Record<string,string>} [opts.vars] overrides of wrangler.toml [vars]
 * @param {Record<string,string>} [opts.objectsVars] more, for the objects' worker only (to test
 *   two workers deployed with different settings)
 * @param {"edge"|"full"} [opts.bundle] the edge worker in front of the objects' (default), or
 *   the full worker alone
 * @param {object[]} [opts.extraWorkers] more workers in the same Miniflare (e.g. a failing store)
 * @param {object} [opts.durableObjects] overrides of the Durable Object bindings
 * @param {number} [opts.port] listen on this port (0: none needed; dispatchFetch works without)
 * @param {string} [opts.persistTo] keep Durable Object and KV storage in this directory, so a
 *   worker started again on it finds what the last one stored (a restart)
 */
export async function startWorker(opts = {}) {
  const workers = workerOptions({
    bundle: opts.bundle,
    // The tests' own tokens, whatever a developer's .dev.vars (read by wrangler) holds: an empty
    // OPERATOR_TOKEN lets the ingest token serve operators too.
    bindings: { INGEST_TOKEN: TOKEN, OPERATOR_TOKEN: "", ...(opts.vars ?? {}) },
    objectsBindings: opts.objectsVars,
    durableObjects: opts.durableObjects,
  });
  const mf = new Miniflare({
    host: "127.0.0.1",
    port: opts.port ?? 0,
    ...(opts.persistTo ? { defaultPersistRoot: opts.persistTo } : {}),
    workers: [...workers, ...(opts.extraWorkers ?? [])],
  });
  const url = await mf.ready;
  const base = url.toString().replace(/\/$/, "");
  return {
    mf,
    url: base,
    /** fetch a path of the worker */
    fetch: (p, init) => mf.dispatchFetch(new URL(p, base + "/"), init),
    dispose: () => mf.dispose(),
  };
}

export function auth(extra = {}) {
  return { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", ...extra };
}

/** Operator credentials: the tests set no OPERATOR_TOKEN, so the ingest token serves. */
export function operatorAuth(extra = {}) {
  return { authorization: `Bearer ${TOKEN}`, ...extra };
}

/** Imports items in the project's JSON form. */
export async function importItems(w, items) {
  const r = await w.fetch("/api/catalog", { method: "POST", headers: auth(), body: JSON.stringify({ items }) });
  if (r.status !== 200) throw new Error(`import: ${r.status} ${await r.text()}`);
  return r.json();
}

/** n synthetic catalog items. */
export function makeItems(n, prefix = "it") {
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}-${i}`,
    title: `Item ${i}`,
    image: `/images/${prefix}-${i}.svg`,
    photographer: `Photographer ${i % 7}`,
    category: "test",
  }));
}

let nextOffset = 0;
/** An event batch on a fresh offset range of topic `t`. */
export function batch(counts, { topic = "t", partition = 0, from, to } = {}) {
  const f = from ?? nextOffset;
  const t = to ?? f + 99;
  nextOffset = Math.max(nextOffset, t + 1);
  return { source: "test", offsets: [{ topic, partition, from: f, to: t }], counts };
}

export async function postBatch(w, body, slot = SLOT, headers = auth()) {
  const r = await w.fetch(`/api/slots/${slot}/events`, {
    method: "POST",
    headers,
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

export async function state(w, slot = SLOT) {
  const r = await w.fetch(`/api/slots/${slot}`, { headers: operatorAuth() });
  if (r.status !== 200) throw new Error(`state: ${r.status} ${await r.text()}`);
  return r.json();
}

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function eventually(fn, ms = 5000, what = "condition") {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}
