// The reliability campaigns, each a function of its size so that `make reliability` runs the
// full version (figures in docs/RELIABILITY.md) and `make test` a short one
// (tests/e2e/reliability.test.mjs):
// - faultLoop: Divolte events through the real broker into the worker while bridges are
//   SIGKILLed, the worker process restarts on its persisted storage, a second bridge joins and
//   leaves, and poison messages and forged ids are mixed in; every arm's counts must come out
//   equal to the events produced for it, to the unit.
// - workerOutage: the bridge keeps its position while the worker is down and catches up.
// - homepageWithoutStore: the homepage answers with the fallback while the store never answers.
// - load: homepage requests at high concurrency while batches are ingested and the dashboard is
//   polled.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { startWorker, importItems, makeItems, state, auth, operatorAuth, SLOT } from "../lib/worker.mjs";
import {
  startBroker, produce, startBridge, metrics, waitFor, allApplied, tmpDir, sleep, freePort,
} from "../lib/e2e.mjs";
import { Stream, rng, assertExact } from "../lib/stream.mjs";

const ARMS = 8;
/** Rounds never end in these campaigns, so every count stays on its arm. */
const NO_ROTATION = { ARMS: String(ARMS), ROUND_IMPRESSIONS: "1000000000" };

/** Percentile `q` (0..1) of a list of numbers. */
export function percentile(values, q) {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/** A worker on a fixed port and storage directory, restartable as a new process. */
async function restartableWorker(vars) {
  const port = await freePort();
  const persistTo = tmpDir("campaign-storage-");
  let w = await startWorker({ port, persistTo, vars });
  return {
    get url() {
      return w.url;
    },
    get current() {
      return w;
    },
    async stop() {
      await w.dispose();
    },
    async start() {
      w = await startWorker({ port, persistTo, vars });
    },
    async dispose() {
      await w.dispose().catch(() => {});
      rmSync(persistTo, { recursive: true, force: true });
    },
  };
}

/**
 * The fault loop. `events` records in `chunks` batches over `partitions` partitions, with
 * `poison` undecodable messages and `forged` forged-id events mixed in; meanwhile `kills`
 * SIGKILLs of the bridge at random moments, `restarts` worker restarts (each `outageMs` long),
 * and a second bridge that joins and leaves.
 */
export async function faultLoop({
  events, kills, restarts, poison, forged, partitions = 3, seed = 7, log = () => {},
  waitMs = 600_000,
}) {
  const started = Date.now();
  const dir = tmpDir("campaign-faults-");
  const broker = await startBroker();
  const topic = "divolte-faults";
  await broker.createTopic(topic, partitions);
  const worker = await restartableWorker(NO_ROTATION);
  const bridges = [];
  try {
    await importItems(worker.current, makeItems(ARMS, "f"));
    const arms = (await state(worker.current)).arms.map((a) => a.item);
    assert.equal(arms.length, ARMS);
    const stream = new Stream(arms, "f-outsider", seed, partitions);
    const random = rng(seed * 31 + 1);
    const opts = { brokers: broker.addr, topic, group: "g-faults", workerUrl: worker.url, dir, extra: ["--flush-events", "2000"] };
    let bridgeNo = 0;
    const start = (name) => {
      bridgeNo += 1;
      return startBridge({ ...opts, name: `${name}-${bridgeNo}` }).then((b) => (bridges.push(b), b));
    };

    // Production, paced over the chaos so that kills and restarts land mid-stream.
    const chunks = Math.max(4, kills * 2);
    const perChunk = Math.ceil(events / chunks);
    let produced = 0;
    let poisonLeft = poison;
    let forgedLeft = forged;
    const production = (async () => {
      for (let c = 0; c < chunks; c++) {
        const n = Math.min(perChunk, events - produced);
        const records = stream.records(n);
        produced += n;
        const p = Math.ceil(poisonLeft / (chunks - c));
        const f = Math.ceil(forgedLeft / (chunks - c));
        for (let i = 0; i < p; i++) records.splice(Math.floor(random() * records.length), 0, stream.poisonMessage(i));
        records.push(...stream.forged(f));
        poisonLeft -= p;
        forgedLeft -= f;
        await produce(broker.addr, topic, records);
        await sleep(300);
      }
    })();

    let a = await start("a");
    let b = null;
    const restartAt = new Set(Array.from({ length: restarts }, (_, i) => Math.floor(((i + 1) * kills) / (restarts + 1))));
    const joinAt = Math.floor(kills / 3);
    const leaveAt = Math.floor((2 * kills) / 3);
    let killed = 0;
    let workerRestarts = 0;
    for (let k = 0; k < kills; k++) {
      await sleep(300 + random() * 2200);
      await a.stop("SIGKILL");
      killed += 1;
      log(`kill ${killed}/${kills}`);
      if (k === joinAt) b = await start("b");
      if (k === leaveAt && b) {
        await b.stop(random() < 0.5 ? "SIGKILL" : "SIGTERM");
        log("bridge b left");
        b = null;
      }
      if (restartAt.has(k)) {
        await worker.stop();
        await sleep(1000 + random() * 2000);
        await worker.start();
        workerRestarts += 1;
        log(`worker restart ${workerRestarts}/${restarts}`);
      }
      a = await start("a");
    }
    await production;
    if (b) await b.stop("SIGTERM");
    const st = await waitFor(async () => {
      const s = await state(worker.current);
      return allApplied(s, topic, stream.sent) && s;
    }, waitMs, "every produced offset to be applied").catch((e) => {
      e.message += `\n--- last bridge log:\n${a.log().slice(-4000)}`;
      throw e;
    });
    assertExact(st, stream);
    const m = await metrics(a.metricsAddr);
    await a.stop("SIGTERM");
    const totals = stream.totals;
    return {
      records: Object.values(stream.sent).reduce((s, n) => s + n, 0),
      events,
      impressions: totals.impressions,
      clicks: totals.clicks,
      outside: stream.outside.impressions + stream.outside.clicks,
      poison,
      forged: stream.forgedSent ?? 0,
      kills: killed,
      workerRestarts,
      rebalance: joinAt < kills ? "joined and left" : "none",
      lastBridgeDropped: Object.fromEntries(Object.entries(m).filter(([k]) => k.startsWith("collector_bridge_dropped_total"))),
      exact: true,
      seconds: Math.round((Date.now() - started) / 1000),
    };
  } finally {
    for (const br of bridges) await br.stop("SIGKILL", 5000);
    await worker.dispose();
    broker.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The worker is down for `outageMs` while events keep arriving; the bridge catches up. */
export async function workerOutage({ events, outageMs, seed = 11, log = () => {} }) {
  const dir = tmpDir("campaign-outage-");
  const broker = await startBroker();
  const topic = "divolte-outage";
  await broker.createTopic(topic, 3);
  const worker = await restartableWorker(NO_ROTATION);
  let bridge;
  try {
    await importItems(worker.current, makeItems(ARMS, "o"));
    const arms = (await state(worker.current)).arms.map((a) => a.item);
    const stream = new Stream(arms, "o-outsider", seed);
    bridge = await startBridge({ brokers: broker.addr, topic, group: "g-outage", workerUrl: worker.url, dir, name: "outage" });
    await produce(broker.addr, topic, stream.records(Math.floor(events / 2)));
    await waitFor(async () => allApplied(await state(worker.current), topic, stream.sent), 120_000, "the first half");
    await worker.stop();
    const down = Date.now();
    log(`worker down for ${outageMs} ms`);
    await produce(broker.addr, topic, stream.records(events - Math.floor(events / 2)));
    await sleep(outageMs);
    assert.equal(bridge.child.exitCode, null, `the bridge stopped during the outage:\n${bridge.log().slice(-3000)}`);
    const retried = (await metrics(bridge.metricsAddr))["collector_bridge_push_retries_total"];
    assert.ok(retried > 0, "the bridge retried while the worker was down");
    await worker.start();
    const back = Date.now();
    const st = await waitFor(async () => {
      const s = await state(worker.current);
      return allApplied(s, topic, stream.sent) && s;
    }, 180_000, "the bridge to catch up");
    assertExact(st, stream);
    return {
      events,
      outageSeconds: Math.round((back - down) / 1000),
      retriesDuringOutage: retried,
      catchUpSeconds: Math.round((Date.now() - back) / 100) / 10,
      exact: true,
    };
  } finally {
    await bridge?.stop("SIGKILL", 5000);
    await worker.dispose();
    broker.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs `requests` calls of `fn` with `concurrency` in flight; returns latencies and errors. */
async function hammer(requests, concurrency, fn) {
  const latencies = [];
  const errors = [];
  let next = 0;
  const lane = async () => {
    while (next < requests) {
      next += 1;
      const t0 = performance.now();
      try {
        await fn();
        latencies.push(performance.now() - t0);
      } catch (e) {
        errors.push(e.message);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return { latencies, errors };
}

const FALLBACK = { id: "fallback-1", title: "Our classic", image: "/images/demo-001.svg", photographer: "House" };
const hangingStore = {
  name: "hanging-store",
  modules: true,
  script: `
    export class HangingSlot {
      constructor(state, env) {}
      async fetch(request) { await new Promise(() => {}); }
    }
    export default { fetch() { return new Response("hanging store") } };
  `,
  durableObjects: { HANGING: "HangingSlot" },
};

/** Homepages while the slot's store never answers: every one 200 with the fallback. */
export async function homepageWithoutStore({ requests, concurrency, budgetMs = 50 }) {
  const w = await startWorker({
    port: await freePort(),
    vars: { FALLBACK_ITEM: JSON.stringify(FALLBACK), READ_BUDGET_MS: String(budgetMs) },
    durableObjects: { SLOT_STORE: { className: "HangingSlot", scriptName: "hanging-store" } },
    extraWorkers: [hangingStore],
  });
  try {
    const { latencies, errors } = await hammer(requests, concurrency, async () => {
      const r = await fetch(w.url + "/");
      const html = await r.text();
      if (r.status !== 200) throw new Error(`status ${r.status}`);
      if (!html.includes('data-top-pick-item="fallback-1"')) throw new Error("no fallback in the page");
    });
    assert.deepEqual(errors.slice(0, 5), [], `${errors.length} failed homepages`);
    return {
      requests,
      concurrency,
      errors: errors.length,
      budgetMs,
      p50Ms: Math.round(percentile(latencies, 0.5)),
      p99Ms: Math.round(percentile(latencies, 0.99)),
      maxMs: Math.round(Math.max(...latencies)),
    };
  } finally {
    await w.dispose();
  }
}

/**
 * `requests` homepages at `concurrency` while a batch is ingested every `ingestEveryMs` and the
 * dashboard is polled every `pollEveryMs`.
 */
export async function load({ requests, concurrency, ingestEveryMs = 50, pollEveryMs = 250 }) {
  const w = await startWorker({ port: await freePort(), vars: { ARMS: "16", SNAPSHOT_MAX_AGE_MS: "1000" } });
  try {
    await importItems(w, makeItems(200, "l"));
    const arms = (await state(w)).arms.map((a) => a.item);
    let done = false;
    const ingest = [];
    const ingestErrors = [];
    let offset = 0;
    const ingestLoop = (async () => {
      while (!done) {
        const counts = arms.map((item, i) => ({ item, impressions: 10 + i, clicks: i % 3 }));
        const body = JSON.stringify({ source: "load", offsets: [{ topic: "load", partition: 0, from: offset, to: offset + 99 }], counts });
        offset += 100;
        const t0 = performance.now();
        const r = await fetch(w.url + `/api/slots/${SLOT}/events`, { method: "POST", headers: auth(), body }).catch((e) => ({ status: e.message }));
        if (r.status === 200) ingest.push(performance.now() - t0);
        else ingestErrors.push(r.status);
        await r.text?.();
        await sleep(ingestEveryMs);
      }
    })();
    let polls = 0;
    const pollErrors = [];
    const pollLoop = (async () => {
      while (!done) {
        const r = await fetch(w.url + "/dashboard", { headers: operatorAuth() }).catch((e) => ({ status: e.message }));
        if (r.status === 200) polls += 1;
        else pollErrors.push(r.status);
        await r.text?.();
        await sleep(pollEveryMs);
      }
    })();
    const t0 = performance.now();
    const { latencies, errors } = await hammer(requests, concurrency, async () => {
      const r = await fetch(w.url + "/");
      const html = await r.text();
      if (r.status !== 200) throw new Error(`status ${r.status}`);
      if (!html.includes("data-top-pick-item=")) throw new Error("no pick in the page");
    });
    const seconds = (performance.now() - t0) / 1000;
    done = true;
    await Promise.all([ingestLoop, pollLoop]);
    assert.deepEqual(errors.slice(0, 5), [], `${errors.length} failed homepages`);
    assert.deepEqual(ingestErrors, [], "failed ingests");
    assert.deepEqual(pollErrors, [], "failed dashboard polls");
    const st = await state(w);
    assert.equal(st.totals.batches, ingest.length, "every acknowledged batch is counted once");
    return {
      requests,
      concurrency,
      errors: errors.length,
      homepagesPerSecond: Math.round(requests / seconds),
      homepageP50Ms: Math.round(percentile(latencies, 0.5)),
      homepageP99Ms: Math.round(percentile(latencies, 0.99)),
      batches: ingest.length,
      ingestErrors: ingestErrors.length,
      ingestP50Ms: Math.round(percentile(ingest, 0.5)),
      ingestP99Ms: Math.round(percentile(ingest, 0.99)),
      dashboardPolls: polls,
      dashboardErrors: pollErrors.length,
    };
  } finally {
    await w.dispose();
  }
}
