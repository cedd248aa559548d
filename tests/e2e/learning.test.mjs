// Learning through the whole chain: simulated visitors (`collector-bridge simulate`, seeded)
// see the worker's picks and click with hidden rates; their Divolte records go through tansu
// and `collector-bridge run` into the worker, and the worker's picks move to the item with the
// highest hidden click-through rate of the arm set.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, importItems, state, SLOT, TOKEN } from "../lib/worker.mjs";
import {
  E2E_TOOLS, BRIDGE, HIDDEN_CTR, missingTools, killAll, startBroker, startBridge, run, hiddenCtr, waitFor, tmpDir,
} from "../lib/e2e.mjs";

const skip = missingTools([...E2E_TOOLS, ["the hidden_ctr example", HIDDEN_CTR]]);

// The statistical design. The posterior is frozen while visitors arrive: the bridge runs only
// between the two phases, so within a phase the worker's picks are independent draws from one
// Thompson distribution, and the bound below needs no assumption about timing.
//
// Hidden rates (seed SEED, rates drawn from Beta(1,1)): the best arm has p* >= 0.7, the other
// three p <= 0.05 (chosen from a pool of ids and checked below).
// Phase 1, V1 = 1000 visitors on the Beta(1,1) prior: picks are uniform, n_i ~ Bin(1000, 1/4).
//  (a) P(n_i < 180) <= exp(-1000 KL(0.18 || 0.25)) = exp(-14.0) < 1e-6 per arm (Chernoff).
//  Given n_i, the clicks are independent Bernoulli(p_i) draws (the pick does not depend on the
//  visitor's draw), so with n_i >= 180, by Chernoff:
//  (b) P(best's click rate < 0.5)     <= exp(-180 KL(0.5 || 0.7))   = exp(-15.7) < 2e-7;
//  (c) P(an other's click rate > 0.15) <= exp(-180 KL(0.15 || 0.05)) = exp(-12.6) < 4e-6 per arm.
// Phase 2, V2 = 600 visitors, each pick one draw from the posteriors Beta(1 + c, 1 + n - c).
//  With (a)-(c) and P(Beta(c+1, n-c+1) < x) = P(Bin(n+1, x) >= c+1):
//  P(theta_best < 1/3) <= exp(-181 KL(0.5 || 1/3)) = exp(-10.7) < 3e-5 and
//  P(theta_other > 1/3) <= exp(-181 KL(0.15 || 1/3)) = exp(-15.7) < 2e-7, so a phase-2 pick is
//  another arm with probability q < 1e-4, and P(10 or more such picks) <= C(600,10) q^10 < 1e-18.
// So the best arm gets more than 590 of the 600 phase-2 picks and >= 180 + 591 impressions in
// all, while any other arm has <= 1000 - 3 * 180 + 9 = 469: the best is the most shown.
// Failure probability of the test: < 4e-6 + 2e-7 + 1.2e-5 + 1e-18 < 2e-5.
const SEED = 42;
const CTR = "beta:1,1";
const V1 = 1000;
const V2 = 600;
const PARTITIONS = 3;

describe("learning through broker and bridge", { skip, timeout: 120_000 }, () => {
  let broker;
  let w;
  let dir;
  before(async () => {
    broker = await startBroker();
    dir = tmpDir("e2e-learning-");
  });
  after(async () => {
    await killAll();
    await w?.dispose();
  });

  test("the item with the highest hidden click-through rate becomes the most shown pick", async (t) => {
    // Four items: the one closest to a 0.8 rate and the three lowest rates of a pool of ids.
    const pool = Array.from({ length: 200 }, (_, i) => `learn-${i}`);
    const rates = await hiddenCtr(SEED, CTR, pool);
    const byRate = [...pool].sort((a, b) => rates[a] - rates[b]);
    const best = [...pool].sort((a, b) => Math.abs(rates[a] - 0.8) - Math.abs(rates[b] - 0.8))[0];
    const others = byRate.slice(0, 3);
    assert.ok(rates[best] >= 0.7, `best rate ${rates[best]}`);
    for (const o of others) assert.ok(rates[o] <= 0.05, `${o} rate ${rates[o]}`);
    const arms = [best, ...others];
    const hiddenBest = arms.reduce((a, b) => (rates[b] > rates[a] ? b : a));
    assert.equal(hiddenBest, best);

    w = await startWorker({ port: 0, vars: { ARMS: "4", ROUND_IMPRESSIONS: "100000000" } });
    await importItems(
      w,
      arms.map((id, i) => ({ id, title: `Learning ${i}`, image: `/images/${id}.svg`, photographer: "Sim", category: "test" })),
    );
    const s0 = await state(w);
    assert.deepEqual(s0.arms.map((a) => a.item).sort(), [...arms].sort(), "the arm set is the four items");
    for (const a of s0.arms) assert.deepEqual([a.alpha, a.beta], [1, 1], "every arm starts at Beta(1,1)");
    await broker.createTopic("divolte", PARTITIONS);

    const simulate = async (visitors) =>
      JSON.parse(
        await run(BRIDGE, [
          "simulate", "--worker-url", w.url, "--token-env", "INGEST_TOKEN",
          "--brokers", broker.addr, "--topic", "divolte",
          "--visitors", String(visitors), "--seed", String(SEED), "--ctr", CTR, "--noise", "0.2", "--json",
        ], { env: { INGEST_TOKEN: TOKEN }, timeoutMs: 60_000 }),
      );
    const shown = {};
    const want = { impressions: 0, clicks: 0 };
    const account = (report) => {
      for (const [item, n] of Object.entries(report.shown)) shown[item] = (shown[item] ?? 0) + n;
      want.impressions += report.impressions;
      want.clicks += report.clicks;
    };
    /** Runs the bridge until the worker has every produced event, then stops it cleanly. */
    const drain = async (name) => {
      const bridge = await startBridge({ brokers: broker.addr, topic: "divolte", group: "learn", workerUrl: w.url, dir, name });
      const st = await waitFor(async () => {
        const st = await state(w);
        return st.totals.impressions === want.impressions && st.totals.clicks === want.clicks && st;
      }, 60_000, `the worker to count ${JSON.stringify(want)}`).catch((e) => {
        e.message += `\n${bridge.log().slice(-4000)}`;
        throw e;
      });
      const exit = await bridge.stop("SIGTERM");
      assert.equal(exit.code, 0, `bridge exit ${JSON.stringify(exit)}`);
      // The edge must serve the new posterior before the next phase.
      await waitFor(async () => {
        const p = await (await w.fetch(`/api/slots/${SLOT}/pick`)).json();
        return p.version >= st.version;
      }, 10_000, "the published snapshot");
      return st;
    };

    const r1 = await simulate(V1);
    assert.equal(r1.impressions, V1);
    account(r1);
    const s1 = await drain("learn-1");
    const r2 = await simulate(V2);
    assert.equal(r2.impressions, V2);
    account(r2);
    const s2 = await drain("learn-2");

    t.diagnostic(`hidden rates ${JSON.stringify(Object.fromEntries(arms.map((a) => [a, +rates[a].toFixed(3)])))}`);
    t.diagnostic(`shown in phase 1 ${JSON.stringify(r1.shown)}, phase 2 ${JSON.stringify(r2.shown)}`);
    // The chain is exact: the worker counted what the visitors saw.
    for (const a of s2.arms) assert.equal(a.impressions, shown[a.item] ?? 0, `impressions of ${a.item}`);
    assert.equal(s2.totals.outside_impressions, 0);
    // Learning: the best arm dominates phase 2 and is the most shown overall.
    const phase2Best = r2.shown[best] ?? 0;
    assert.ok(phase2Best > V2 - 10, `best shown ${phase2Best} of ${V2} after learning (${JSON.stringify(r2.shown)})`);
    const most = s2.arms.reduce((a, b) => (b.impressions > a.impressions ? b : a));
    assert.equal(most.item, best, `most shown: ${JSON.stringify(s2.arms.map((a) => [a.item, a.impressions]))}`);
    const pBest = Object.fromEntries(s2.arms.map((a) => [a.item, a.p_best]));
    assert.ok(pBest[best] > 0.99, `P(best) after learning ${JSON.stringify(pBest)}`);
    assert.ok(s1.arms.every((a) => a.impressions >= 180), "phase 1 spread the picks");
  });
});
