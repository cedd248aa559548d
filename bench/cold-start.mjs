// Cold start of worker bundles, the project's against a minimal Rust worker built the same way
// (bench/minimal-worker/): one JSON object on stdout.
//
//   node bench/cold-start.mjs --bundle build/edge --bundle bench-out/minimal-worker [--runs N]
//        [--node PATH] [--assets]
//
// Per bundle (a directory holding index.js + index_bg.wasm):
//  - wasm bytes, raw and gzip -9;
//  - V8: `new WebAssembly.Module(bytes)` (compile) and `new WebAssembly.Instance(module, stubs)`
//    (instantiate), each run in a fresh node child process, so no code cache is reused; once
//    with V8's default flags (lazy compilation: compile validates, functions are compiled on
//    first call) and once with --no-wasm-lazy-compilation (every function compiled up front by
//    Liftoff). The stubs are built from WebAssembly.Module.imports (functions that count their
//    calls, WebAssembly.JSTag for the tag); the module's start section, if any, is reported
//    (instantiate would run it), and how many stubs instantiation called (0: none). --node: the
//    node binary for these children (default: $COLD_START_NODE, else this node): the bundles'
//    code uses the `noexternref` type and exception handling with exnref (`try_table`), which
//    Node 20's V8 11.3 cannot compile (Node 26's V8 14.6 can; workerd's V8 is current). If the
//    chosen node cannot compile a bundle, its figures are left out and the error is reported.
//  - workerd through Miniflare: t0 just before `new Miniflare(...)`, ready when `mf.ready`
//    resolves (workerd up and the script loaded, which instantiates the wasm), t1 when the
//    first response to `GET /` has been fully read; in a fresh node child process (this node)
//    and so a fresh workerd per run. The project's bundles (build/edge/ or build/: a directory
//    whose package.json names top-pick-worker) are configured as tests/lib/worker.mjs does
//    (their configs through unstable_getMiniflareWorkerOptions, the assets, the CompiledWasm
//    rule, the tests' tokens; the edge bundle alone, its Durable Objects in the full worker run
//    warm in this parent process and reached through Miniflare's dev registry, as a deployed
//    edge isolate reaches warm objects) and have no catalog imported: `/` is the homepage from the assets with the slot as a fresh
//    worker has it. Any other bundle runs alone: no bindings, wrangler.toml's compatibility date;
//    with --assets it gets the project's static assets and asset router too (wrangler.toml's
//    [assets]), so both start the same router and asset-server workers in front.
//
// Runs alternate between the bundles (A B A B ...); figures are median, min and max over runs.
// `ratios` divides the first bundle's medians by the second's.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const SELF = fileURLToPath(import.meta.url);

/** wrangler.toml's compatibility_date, without loading wrangler. */
export function compatibilityDate() {
  const m = readFileSync(path.join(ROOT, "wrangler.toml"), "utf8").match(/^compatibility_date\s*=\s*"([^"]+)"/m);
  return m ? m[1] : "2026-04-01";
}

/** Whether a bundle directory holds the project's edge bundle (it has the generated config). */
function isEdgeBundle(dir) {
  return existsSync(path.join(dir, "wrangler.jsonc"));
}

/**
 * Starts the worker holding the Durable Objects in this process, registered in `registry` for
 * the edge bundle's children, and wakes its objects once (a deployed edge reaches warm ones).
 */
async function startObjectsHost(registry) {
  const { Miniflare } = await import("miniflare");
  const { TOKEN, workerOptions } = await import("../tests/lib/worker.mjs");
  const objects = workerOptions({ bindings: { INGEST_TOKEN: TOKEN, OPERATOR_TOKEN: "" } })[1];
  const mf = new Miniflare({ host: "127.0.0.1", port: 0, unsafeDevRegistryPath: registry, workers: [objects] });
  const url = await mf.ready;
  await (await mf.dispatchFetch(new URL("/", url))).arrayBuffer();
  return mf;
}

/** Whether a bundle directory holds the project's worker (build/ or a copy of it). */
export function isProjectBundle(dir) {
  try {
    return JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")).name === "top-pick-worker";
  } catch {
    return false;
  }
}

/**
 * Miniflare options for a bundle directory: the project's config for its bundle, else a lone
 * worker; with `assets`, the lone worker gets the project's static assets and asset router
 * config from wrangler.toml, so its requests pass the same router as the project's.
 */
export async function miniflareOptions(dir, { port = 0, assets = false, registry = null } = {}) {
  const abs = path.resolve(dir);
  const base = {
    scriptPath: path.join(abs, "index.js"),
    modulesRoot: abs,
    modules: true,
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
  };
  if (isProjectBundle(abs)) {
    // The edge bundle (build/edge/) alone, its objects reached through the dev registry in
    // another (warm) process as a deployed edge isolate reaches them; or the full bundle alone.
    const { TOKEN, workerOptions } = await import("../tests/lib/worker.mjs");
    const bundle = isEdgeBundle(abs) ? "edge" : "full";
    if (bundle === "edge" && !registry) throw new Error("the edge bundle needs --registry DIR");
    const workers = workerOptions({ bundle, bindings: { INGEST_TOKEN: TOKEN, OPERATOR_TOKEN: "" } });
    return {
      host: "127.0.0.1",
      port,
      workers: bundle === "edge" ? [workers[0]] : workers,
      ...(bundle === "edge" ? { unsafeDevRegistryPath: registry } : {}),
    };
  }
  if (assets) {
    const { unstable_getMiniflareWorkerOptions } = await import("wrangler");
    const { workerOptions } = unstable_getMiniflareWorkerOptions(path.join(ROOT, "wrangler.toml"));
    base.assets = workerOptions.assets;
  }
  return { host: "127.0.0.1", port, compatibilityDate: compatibilityDate(), ...base };
}

/** Whether a wasm module has a start section (id 8), which would run code at instantiation. */
function hasStartSection(bytes) {
  let p = 8;
  while (p < bytes.length) {
    const id = bytes[p++];
    let size = 0, shift = 0, b;
    do { b = bytes[p++]; size += (b & 0x7f) * 2 ** shift; shift += 7; } while (b & 0x80);
    if (id === 8) return true;
    p += size;
  }
  return false;
}

// --- children ------------------------------------------------------------------------------
async function childCompile(file) {
  const bytes = readFileSync(file);
  const hasStart = hasStartSection(bytes);
  const t0 = performance.now();
  const module = new WebAssembly.Module(bytes);
  const t1 = performance.now();
  let calls = 0;
  const imports = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    imports[imp.module] ??= {};
    if (imp.kind === "function") imports[imp.module][imp.name] = () => { calls++; };
    else if (imp.kind === "tag") imports[imp.module][imp.name] = WebAssembly.JSTag;
    else throw new Error(`no stub for a ${imp.kind} import (${imp.module}.${imp.name})`);
  }
  let instantiate_ms = null;
  if (!hasStart) {
    const t2 = performance.now();
    new WebAssembly.Instance(module, imports);
    instantiate_ms = performance.now() - t2;
  }
  return { compile_ms: t1 - t0, instantiate_ms, has_start: hasStart, imports_called: calls };
}

async function childMiniflare(dir, assets, registry) {
  const { Miniflare } = await import("miniflare");
  const opts = await miniflareOptions(dir, { assets, registry });
  const t0 = performance.now();
  const mf = new Miniflare(opts);
  const url = await mf.ready;
  const tReady = performance.now();
  const res = await mf.dispatchFetch(new URL("/", url));
  const body = await res.arrayBuffer();
  const t1 = performance.now();
  const out = {
    ready_ms: tReady - t0,
    first_response_ms: t1 - t0,
    status: res.status,
    content_type: res.headers.get("content-type"),
    bytes: body.byteLength,
  };
  await mf.dispose();
  return out;
}

// --- parent --------------------------------------------------------------------------------
function run(cmd, args, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const line = out.split("\n").reverse().find((l) => l.startsWith("{"));
      if (code === 0 && line) resolve(JSON.parse(line));
      else resolve({ error: (err.trim().split("\n").find((l) => /Error/.test(l)) ?? err.trim().slice(-300)) || `exit ${code ?? signal}` });
    });
  });
}

const r2 = (x) => Math.round(x * 100) / 100;
function stats(xs) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { median: r2(median), min: r2(s[0]), max: r2(s[s.length - 1]), n: s.length, samples: xs.map(r2) };
}

async function main() {
  const { values } = parseArgs({
    options: {
      bundle: { type: "string", multiple: true, default: [] },
      runs: { type: "string", default: "15" },
      node: { type: "string", default: process.env.COLD_START_NODE || process.execPath },
      child: { type: "string" },
      assets: { type: "boolean", default: false },
      registry: { type: "string" },
    },
    allowPositionals: true,
  });
  if (values.child) {
    const target = process.argv[process.argv.length - 1];
    const r = values.child === "compile" ? await childCompile(target) : await childMiniflare(target, values.assets, values.registry);
    process.stdout.write(JSON.stringify(r) + "\n");
    process.exit(0);
  }
  if (values.bundle.length < 1) throw new Error("give --bundle DIR (twice to compare)");
  const runs = Number(values.runs);
  const nodeBin = values.node;
  const started = Date.now();
  const load0 = loadavg().map((x) => x.toFixed(2)).join(" ");
  const nodeInfo = await new Promise((resolve) => {
    const c = spawn(nodeBin, ["-p", "JSON.stringify({node: process.version, v8: process.versions.v8})"]);
    let o = "";
    c.stdout.on("data", (d) => (o += d));
    c.on("close", () => resolve(JSON.parse(o)));
  });

  const modes = { lazy: [], eager: ["--no-wasm-lazy-compilation"] };
  const bundles = values.bundle.map((dir) => {
    const wasm = path.join(dir, "index_bg.wasm");
    if (!existsSync(wasm) || !existsSync(path.join(dir, "index.js"))) throw new Error(`${dir}: no index.js + index_bg.wasm`);
    const bytes = readFileSync(wasm);
    return {
      dir, wasm, raw: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length,
      project: isProjectBundle(dir),
      sha256: createHash("sha256").update(bytes).digest("hex").slice(0, 16),
      v8: Object.fromEntries(Object.keys(modes).map((m) => [m, { compile: [], instantiate: [], errors: [] }])),
      mf: { ready: [], first: [], status: null, content_type: null, bytes: null, errors: [] },
      has_start: hasStartSection(bytes), imports_called: null,
    };
  });

  // (a) V8 compile and instantiate, a fresh child per measurement, alternating bundles.
  for (let i = 0; i < runs; i++) {
    for (const [mode, flags] of Object.entries(modes)) {
      for (const b of bundles) {
        const v = b.v8[mode];
        if (v.errors.length) continue; // a V8 that cannot compile it will not next time either
        const r = await run(nodeBin, [...flags, SELF, "--child", "compile", b.wasm], 60_000);
        if (r.error) { v.errors.push(r.error); continue; }
        v.compile.push(r.compile_ms);
        if (r.instantiate_ms !== null) v.instantiate.push(r.instantiate_ms);
        if (r.instantiate_ms !== null) b.imports_called = Math.max(b.imports_called ?? 0, r.imports_called);
      }
    }
  }
  // (b) workerd through Miniflare, fresh child and workerd per run, alternating bundles; the
  // edge bundle's objects run warm in this process meanwhile.
  const registry = mkdtempSync(path.join(tmpdir(), "cold-start-registry-"));
  const host = bundles.some((b) => b.project && isEdgeBundle(b.dir)) ? await startObjectsHost(registry) : null;
  for (let i = 0; i < runs; i++) {
    for (const b of bundles) {
      const flags = [...(values.assets ? ["--assets"] : []), "--registry", registry];
      const r = await run(process.execPath, [SELF, "--child", "miniflare", ...flags, b.dir], 120_000);
      if (r.error) { b.mf.errors.push(r.error); continue; }
      b.mf.ready.push(r.ready_ms);
      b.mf.first.push(r.first_response_ms);
      Object.assign(b.mf, { status: r.status, content_type: r.content_type, bytes: r.bytes });
    }
  }

  await host?.dispose();
  rmSync(registry, { recursive: true, force: true });

  const report = bundles.map((b) => {
    const v8 = {};
    for (const mode of Object.keys(modes)) {
      const v = b.v8[mode];
      const sum = v.compile.length && v.instantiate.length === v.compile.length
        ? v.compile.map((c, i) => c + v.instantiate[i]) : [];
      v8[mode] = {
        compile_ms: stats(v.compile),
        instantiate_ms: stats(v.instantiate),
        compile_plus_instantiate_ms: stats(sum),
        ...(v.errors.length ? { error: v.errors[0] } : {}),
      };
    }
    return {
      bundle: b.dir,
      config: b.project
        ? (isEdgeBundle(b.dir)
          ? "project's edge worker (its generated config, assets, no catalog; the objects warm in another process)"
          : "project (wrangler.toml, assets, no catalog)")
        : values.assets ? "lone worker with the project's assets and asset router" : "lone worker",
      wasm: { file: b.wasm, raw: b.raw, gzip: b.gzip, sha256_16: b.sha256 },
      v8: { ...v8, has_start_section: b.has_start, imports_called_during_instantiate: b.imports_called },
      miniflare: {
        ready_ms: stats(b.mf.ready),
        first_response_ms: stats(b.mf.first),
        first_response: { path: "/", status: b.mf.status, content_type: b.mf.content_type, bytes: b.mf.bytes },
        ...(b.mf.errors.length ? { errors: b.mf.errors } : {}),
      },
    };
  });

  let ratios = null;
  if (report.length >= 2) {
    const [a, b] = report;
    const q = (x, y) => (x != null && y ? Math.round((x / y) * 100) / 100 : null);
    const med = (s) => s?.median;
    ratios = { of: `${a.bundle} / ${b.bundle}`, wasm_raw: q(a.wasm.raw, b.wasm.raw), wasm_gzip: q(a.wasm.gzip, b.wasm.gzip) };
    for (const mode of Object.keys(modes)) {
      for (const k of ["compile_ms", "instantiate_ms", "compile_plus_instantiate_ms"]) {
        ratios[`v8_${mode}_${k}`] = q(med(a.v8[mode][k]), med(b.v8[mode][k]));
      }
    }
    ratios.miniflare_ready_ms = q(med(a.miniflare.ready_ms), med(b.miniflare.ready_ms));
    ratios.miniflare_first_response_ms = q(med(a.miniflare.first_response_ms), med(b.miniflare.first_response_ms));
  }

  process.stdout.write(JSON.stringify({
    runs,
    v8_node: { path: nodeBin, ...nodeInfo, modes: Object.fromEntries(Object.entries(modes).map(([k, f]) => [k, f.join(" ") || "(V8 defaults)"])) },
    miniflare_node: { path: process.execPath, node: process.version, v8: process.versions.v8 },
    loadavg: { start: load0, end: loadavg().map((x) => x.toFixed(2)).join(" ") },
    seconds: Math.round((Date.now() - started) / 100) / 10,
    bundles: report,
    ratios,
  }) + "\n");
}

// Run as a script (not when serve-minimal.mjs imports miniflareOptions).
if (process.argv[1] && path.resolve(process.argv[1]) === SELF) {
  await main();
}
