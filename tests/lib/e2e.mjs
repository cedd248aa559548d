// End-to-end support: a tansu broker, the collector-bridge binary and its development tools
// (examples/produce.rs, examples/hidden_ctr.rs) as child processes, all on loopback ports.
// Every child is tracked and killed by `killAll()` (call it from `after` hooks) and, as a last
// resort, when the Node process exits.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ROOT, TOKEN, SLOT } from "./worker.mjs";

export const TANSU = process.env.TANSU_BIN ?? path.join(ROOT, ".tools/bin/tansu");
const RELEASE = path.join(ROOT, "target/release");
export const BRIDGE = process.env.BRIDGE_BIN ?? path.join(RELEASE, "collector-bridge");
export const PRODUCE = process.env.PRODUCE_BIN ?? path.join(RELEASE, "examples/produce");
export const HIDDEN_CTR = process.env.HIDDEN_CTR_BIN ?? path.join(RELEASE, "examples/hidden_ctr");

/**
 * Whether the tools these tests need are present. Missing tools skip the tests on a
 * developer machine and fail them under CI (`CI` set), where `make test` must install them.
 * @returns {false | string} false when everything is present, else why the tests skip
 */
export function missingTools(tools) {
  const missing = tools.filter(([, p]) => !existsSync(p)).map(([what, p]) => `${what} (${p})`);
  if (missing.length === 0) return false;
  const why = `missing ${missing.join(", ")}: run \`make test-tools build\` and ` +
    "`cargo build --release -p collector-bridge --examples`";
  if (process.env.CI) throw new Error(why);
  return why;
}

export const E2E_TOOLS = [
  ["tansu", TANSU],
  ["the bridge binary", BRIDGE],
  ["the produce example", PRODUCE],
];

const children = new Set();

function track(child) {
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** SIGKILLs every child still running and waits for them to exit (bounded). */
export async function killAll() {
  const waits = [...children].map(
    (c) =>
      new Promise((resolve) => {
        if (c.exitCode !== null || c.signalCode !== null) return resolve();
        const t = setTimeout(resolve, 5000);
        c.once("exit", () => {
          clearTimeout(t);
          resolve();
        });
        c.kill("SIGKILL");
      }),
  );
  await Promise.all(waits);
}

process.on("exit", () => {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
});

export const tmpDir = (prefix) => mkdtempSync(path.join(os.tmpdir(), prefix));

/** A free loopback port (bound then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value; throws after `ms`. */
export async function waitFor(fn, ms, what) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    await sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/**
 * Runs a command to completion (bounded); resolves with its stdout, rejects on failure.
 * @param {string} bin
 * @param {string[]} args
 * @param {{ input?: string, timeoutMs?: number, env?: object }} [opts]
 */
export function run(bin, args, { input, timeoutMs = 60_000, env } = {}) {
  return new Promise((resolve, reject) => {
    const child = track(spawn(bin, args, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, ...env } }));
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${path.basename(bin)} ${args.join(" ")} failed (${code ?? signal}):\n${err.slice(-4000)}`));
    });
    child.stdin.on("error", () => {});
    child.stdin.end(input ?? "");
  });
}

/** A tansu broker with memory storage on a free loopback port. */
export async function startBroker() {
  const port = await freePort();
  const url = `tcp://127.0.0.1:${port}`;
  const child = track(
    spawn(TANSU, ["broker", "--storage-engine", "memory://tansu/", "--listener-url", url, "--advertised-listener-url", url], {
      stdio: ["ignore", "ignore", "ignore"],
    }),
  );
  await waitFor(() => canConnect(port), 15_000, "tansu to listen");
  return {
    addr: `127.0.0.1:${port}`,
    child,
    /** Creates a topic (retried while the broker starts up). */
    async createTopic(name, partitions) {
      await waitFor(
        () => run(TANSU, ["topic", "create", "--broker", url, "--partitions", String(partitions), name], { timeoutMs: 10_000 }).then(() => true),
        20_000,
        `topic ${name}`,
      );
    },
  };
}

/**
 * Produces records with examples/produce.rs. Each entry: `{ partition, key?, event }` or
 * `{ partition, raw: Buffer }`; `wire`: naked (Divolte's default) or confluent framing.
 * Resolves with `{ sent, partitions: { "0": n, ... } }`.
 */
export async function produce(brokers, topic, records, { wire = "naked" } = {}) {
  const input = records
    .map((r) => JSON.stringify(r.raw ? { partition: r.partition, key: r.key, raw_hex: r.raw.toString("hex") } : r))
    .join("\n");
  const out = await run(PRODUCE, ["--brokers", brokers, "--topic", topic, "--wire", wire], { input, timeoutMs: 60_000 });
  return JSON.parse(out);
}

/** The simulator's hidden click-through rates of `items` (examples/hidden_ctr.rs), for the
 * visitors of one device class (`simulate --devices`) when `segment` is given. */
export async function hiddenCtr(seed, ctr, items, segment) {
  const seg = segment ? ["--segment", segment] : [];
  return JSON.parse(await run(HIDDEN_CTR, ["--seed", String(seed), "--ctr", ctr, ...seg, ...items]));
}

/**
 * Starts `collector-bridge run` against the worker at `workerUrl`; stderr goes to a log file.
 * @returns {{ child, log: () => string, metricsAddr: string, kill: (sig?: string) => Promise<void> }}
 */
export async function startBridge({ brokers, topic, group, workerUrl, dir, name = "bridge", extra = [] }) {
  const metricsAddr = `127.0.0.1:${await freePort()}`;
  const logPath = path.join(dir, `${name}.log`);
  const fd = openSync(logPath, "a");
  const child = track(
    spawn(
      BRIDGE,
      [
        "run",
        "--brokers", brokers,
        "--topic", topic,
        "--group", group,
        "--worker-url", workerUrl,
        "--token-env", "INGEST_TOKEN",
        "--session-timeout-ms", "2000",
        "--flush-interval-ms", "200",
        "--metrics-addr", metricsAddr,
        ...extra,
      ],
      { stdio: ["ignore", "ignore", fd], env: { ...process.env, INGEST_TOKEN: TOKEN, RUST_LOG: "info" } },
    ),
  );
  closeSync(fd);
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return {
    child,
    metricsAddr,
    exited,
    log: () => (existsSync(logPath) ? readFileSync(logPath, "utf8") : ""),
    /** Sends `sig` and waits (bounded) for the exit; resolves with `{ code, signal }`. */
    async stop(sig = "SIGKILL", ms = 20_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
      let timer;
      const late = new Promise((resolve) => {
        timer = setTimeout(() => resolve({ code: null, signal: "still running" }), ms);
      });
      const r = await Promise.race([exited, late]);
      clearTimeout(timer);
      return r;
    },
  };
}

/** The bridge's Prometheus metrics as `{ "name{labels}": value }`. */
export async function metrics(addr) {
  const r = await fetch(`http://${addr}/metrics`);
  const text = await r.text();
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

/** The worker's applied offset per partition of `topic`: `{ [partition]: offset }`. */
export function appliedOffsets(st, topic) {
  const out = {};
  for (const o of st.offsets) if (o.topic === topic) out[o.partition] = o.offset;
  return out;
}

/** Whether the worker applied every produced offset (`sent`: messages per partition). */
export function allApplied(st, topic, sent) {
  const applied = appliedOffsets(st, topic);
  return Object.entries(sent).every(([p, n]) => n === 0 || applied[p] === n - 1);
}

export { SLOT };
