// Contextual picks through the whole chain: simulated mobile and desktop visitors (their
// User-Agents) with different hidden click-through rates see the worker's picks; their Divolte
// records, each credited to the segment its decision used, go through tansu and
// `collector-bridge run` into the worker; each segment's pick then moves to its own best item.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, importItems, state, TOKEN, SLOT } from "../lib/worker.mjs";
import {
  E2E_TOOLS, BRIDGE, HIDDEN_CTR, missingTools, killAll, startBroker, startBridge, run, hiddenCtr, waitFor, tmpDir,
} from "../lib/e2e.mjs";

const skip = missingTools([...E2E_TOOLS, ["the hidden_ctr example", HIDDEN_CTR]]);

// The statistical design, as in learning.test.mjs: the bridge runs only between the phases, so
// within a phase every pick is an independent draw from one set of segment posteriors.
// Items (seed SEED, rates from Beta(1,1) drawn per device class): one item mobile visitors
// click at >= 0.6 and desktop ones at <= 0.1, one the other way round, two at <= 0.1 for both.
// Phase 1, V1 = 1600 visitors, half each class, on the Beta(1,1) prior: picks are uniform, so
// each class's four arms get Bin(~800, 1/4) impressions: at least 150 each except with
// probability < 1e-6 (Chernoff, as in learning.test.mjs). With 150 impressions, a class's best
// item shows a click rate >= 0.45 and the others <= 0.2 except with probability < 1e-4 each.
// Phase 2: the segments differ so much that the pooling strength is at its floor (10
// impressions' worth), so each class's posterior of its best item is Beta(>= 10 m + 67, ...)
// with mean >= 0.43 and sd < 0.04, the others' means <= 0.25 with sd < 0.04: a phase-2 pick is
// another item with probability < 1e-3, and more than 10% of a class's ~300 picks are with
// probability < 1e-20. Failure probability of the test: < 1e-3.
const SEED = 11;
const CTR = "beta:1,1";
const V1 = 1600;
const V2 = 600;

describe("contextual picks through broker and bridge", { skip, timeout: 150_000 }, () => {
  let broker;
  let w;
  let dir;
  before(async () => {
    broker = await startBroker();
    dir = tmpDir("e2e-segments-");
  });
  after(async () => {
    await killAll();
    await w?.dispose();
  });

  test("each device class's pick converges to its own best item", async (t) => {
    const pool = Array.from({ length: 300 }, (_, i) => `seg-${i}`);
    const mobile = await hiddenCtr(SEED, CTR, pool, "mobile");
    const desktop = await hiddenCtr(SEED, CTR, pool, "desktop");
    const pick = (ok) => pool.filter(ok).sort((a, b) => a.localeCompare(b));
    const mobileBest = pick((i) => mobile[i] >= 0.6 && desktop[i] <= 0.1)[0];
    const desktopBest = pick((i) => desktop[i] >= 0.6 && mobile[i] <= 0.1)[0];
    const others = pick((i) => mobile[i] <= 0.1 && desktop[i] <= 0.1).slice(0, 2);
    assert.ok(mobileBest && desktopBest && others.length === 2, "the pool has the items the design needs");
    const arms = [mobileBest, desktopBest, ...others];
    t.diagnostic(`rates mobile ${JSON.stringify(arms.map((a) => +mobile[a].toFixed(3)))}, desktop ${JSON.stringify(arms.map((a) => +desktop[a].toFixed(3)))}`);

    w = await startWorker({ port: 0, vars: { ARMS: "4", ROUND_IMPRESSIONS: "100000000", SEGMENTS: "device" } });
    await importItems(w, arms.map((id, i) => ({ id, title: `Segment ${i}`, image: `/images/${id}.svg`, category: "test" })));
    await broker.createTopic("divolte", 3);
    // The pick API says which segment a decision used.
    const asPhone = await (await w.fetch(`/api/slots/${SLOT}/pick`, { headers: { "user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148" } })).json();
    assert.equal(asPhone.decision.segment, "mobile");
    assert.ok(asPhone.href.includes("segment=mobile"), asPhone.href);

    const simulate = async (visitors) =>
      JSON.parse(
        await run(BRIDGE, [
          "simulate", "--worker-url", w.url, "--token-env", "INGEST_TOKEN",
          "--brokers", broker.addr, "--topic", "divolte", "--devices", "mobile:0.5,desktop:0.5",
          "--visitors", String(visitors), "--seed", String(SEED), "--ctr", CTR, "--noise", "0", "--json",
        ], { env: { INGEST_TOKEN: TOKEN }, timeoutMs: 60_000 }),
      );
    const want = { impressions: 0, clicks: 0 };
    const drain = async (name) => {
      const bridge = await startBridge({ brokers: broker.addr, topic: "divolte", group: "segments", workerUrl: w.url, dir, name });
      const st = await waitFor(async () => {
        const st = await state(w);
        return st.totals.impressions === want.impressions && st.totals.clicks === want.clicks && st;
      }, 60_000, `the worker to count ${JSON.stringify(want)}`).catch((e) => {
        e.message += `\n${bridge.log().slice(-4000)}`;
        throw e;
      });
      assert.equal((await bridge.stop("SIGTERM")).code, 0);
      await waitFor(async () => (await (await w.fetch(`/api/slots/${SLOT}/pick`)).json()).version >= st.version, 10_000, "the published snapshot");
      return st;
    };

    const r1 = await simulate(V1);
    want.impressions += r1.impressions;
    want.clicks += r1.clicks;
    const s1 = await drain("seg-1");
    // Every impression was credited to its decision's segment.
    for (const device of ["mobile", "desktop"]) {
      for (const a of arms) {
        const counted = s1.segments[a]?.[device]?.impressions ?? 0;
        assert.equal(counted, r1.shown_by_device[device]?.[a] ?? 0, `${device} impressions of ${a}`);
      }
      for (const a of arms) assert.ok((r1.shown_by_device[device]?.[a] ?? 0) >= 150, `phase 1 spread the ${device} picks`);
    }
    const r2 = await simulate(V2);
    want.impressions += r2.impressions;
    want.clicks += r2.clicks;
    const s2 = await drain("seg-2");
    t.diagnostic(`phase 2 shown ${JSON.stringify(r2.shown_by_device)}`);
    for (const [device, best] of [["mobile", mobileBest], ["desktop", desktopBest]]) {
      const shown = r2.shown_by_device[device];
      const total = Object.values(shown).reduce((x, y) => x + y, 0);
      assert.ok((shown[best] ?? 0) > 0.9 * total, `${device}: ${best} shown ${shown[best]} of ${total}`);
      const view = s2.segment_views.find((v) => v.segment === device);
      // Views list the arms in the state's order.
      const leader = s2.arms[view.p_best.indexOf(Math.max(...view.p_best))].item;
      assert.equal(leader, best, `${device}'s P(best) leader`);
    }
    // The sample-ratio check covers segments: each segment's logged impressions against the
    // odds of its own view, version by version; honest traffic passes.
    assert.ok(s2.health.tested >= 2, JSON.stringify(s2.health));
    assert.deepEqual(s2.health.mismatches, [], JSON.stringify(s2.health));
    assert.ok(s2.health.unchecked_impressions < 0.05 * want.impressions, JSON.stringify(s2.health));
    const dash = await (await w.fetch(`/dashboard?slot=${SLOT}`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    assert.ok(dash.includes('data-segment="mobile"') && dash.includes('data-segment="desktop"'), "the dashboard shows both segments");
  });
});
