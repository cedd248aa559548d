// Proof on real traffic, through the whole chain: simulated visitors see the worker's picks
// (a 10% holdout among them) while the bridge feeds the worker, so the bandit learns and its
// logged probabilities move away from uniform. Every impression and click reaches the worker
// marked with who served its decision; the holdout serves its share; and an off-policy
// estimate of the uniform policy, read back from the topic, agrees with both the hidden truth
// and the holdout's own measured click-through.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, importItems, state, TOKEN } from "../lib/worker.mjs";
import {
  E2E_TOOLS, BRIDGE, HIDDEN_CTR, missingTools, killAll, startBroker, startBridge, run, hiddenCtr, waitFor, tmpDir, metrics, appliedOffsets,
} from "../lib/e2e.mjs";

const skip = missingTools([...E2E_TOOLS, ["the hidden_ctr example", HIDDEN_CTR]]);

const SEED = 7;
const CTR = "beta:2,8";
const VISITORS = 3000;
const HOLDOUT = 0.1;
const PARTITIONS = 3;

describe("decisions through broker, bridge and evaluator", { skip, timeout: 180_000 }, () => {
  let broker;
  let w;
  let dir;
  before(async () => {
    broker = await startBroker();
    dir = tmpDir("e2e-decisions-");
  });
  after(async () => {
    await killAll();
    await w?.dispose();
  });

  test("the holdout, the served_by counts and the off-policy estimate agree", async (t) => {
    const items = ["dec-a", "dec-b", "dec-c", "dec-d"];
    const rates = await hiddenCtr(SEED, CTR, items);
    const truthUniform = items.reduce((s, i) => s + rates[i], 0) / items.length;
    w = await startWorker({ port: 0, vars: { ARMS: "4", ROUND_IMPRESSIONS: "100000000", HOLDOUT: String(HOLDOUT) } });
    await importItems(w, items.map((id, i) => ({ id, title: `Decision ${i}`, image: `/images/${id}.svg`, category: "test" })));
    await broker.createTopic("divolte", PARTITIONS);
    // The bridge runs while visitors arrive, so picks follow the learning posterior.
    const bridge = await startBridge({ brokers: broker.addr, topic: "divolte", group: "decisions", workerUrl: w.url, dir });
    const report = JSON.parse(
      await run(BRIDGE, [
        "simulate", "--worker-url", w.url, "--token-env", "INGEST_TOKEN",
        "--brokers", broker.addr, "--topic", "divolte",
        "--visitors", String(VISITORS), "--rate", "400", "--concurrency", "4",
        "--seed", String(SEED), "--ctr", CTR, "--noise", "0", "--json",
      ], { env: { INGEST_TOKEN: TOKEN }, timeoutMs: 90_000 }),
    );
    const st = await waitFor(async () => {
      const st = await state(w);
      return st.totals.impressions === report.impressions && st.totals.clicks === report.clicks && st;
    }, 60_000, "every event counted").catch((e) => {
      e.message += `\n${bridge.log().slice(-4000)}`;
      throw e;
    });
    const m = await metrics(bridge.metricsAddr);
    await bridge.stop("SIGTERM");

    // Every event carried its decision, and is totalled by who served it.
    const { bandit, holdout } = st.totals;
    assert.equal(bandit.impressions + holdout.impressions, report.impressions);
    assert.equal(bandit.clicks + holdout.clicks, report.clicks);
    assert.equal(m['collector_bridge_decisions_total{served_by="none"}'], 0);
    assert.equal(m['collector_bridge_dropped_total{reason="late_click"}'], 0);
    // Binomial(3000, 0.1): sd 16.4; 5 sd either side.
    assert.ok(Math.abs(holdout.impressions - VISITORS * HOLDOUT) <= 82, `holdout served ${holdout.impressions}`);
    assert.ok(st.holdout, "the state API compares bandit and holdout");
    t.diagnostic(`health ${JSON.stringify(st.health)}`);
    // Honest traffic passes the sample-ratio check (a false alarm has probability 0.001),
    // and the feedback lag is known to the slot and exported by the bridge.
    assert.ok(st.health.tested >= 2, JSON.stringify(st.health));
    assert.deepEqual(st.health.mismatches, [], JSON.stringify(st.health));
    assert.ok(st.health.feedback && st.health.feedback.oldest_ms >= st.health.feedback.newest_ms);
    assert.ok(m['collector_bridge_feedback_lag_seconds{slot="home-top-pick",event="oldest"}'] >= 0);
    // The bandit learned: its logged probabilities are not uniform any more.
    const pBest = st.arms.map((a) => a.p_best);
    assert.ok(Math.max(...pBest) > 0.5, `P(best) ${JSON.stringify(pBest)}`);

    // Off-policy evaluation from the topic, over exactly the offsets the worker applied.
    const applied = appliedOffsets(st, "divolte");
    const ope = JSON.parse(
      await run(BRIDGE, [
        "evaluate", "--logged-topic", "divolte", "--brokers", broker.addr,
        ...Object.entries(applied).flatMap(([p, o]) => ["--from-offset", `${p}:0`, "--to-offset", `${p}:${o + 1}`]),
        "--candidate", "uniform", "--json",
      ], { timeoutMs: 60_000 }),
    );
    t.diagnostic(`hidden rates ${JSON.stringify(rates)}; uniform truth ${truthUniform.toFixed(4)}`);
    t.diagnostic(`evaluator: ${JSON.stringify(ope.candidates.uniform)}; counts ${JSON.stringify(ope.counts)}`);
    assert.equal(ope.decisions, report.impressions, "one logged decision per impression");
    assert.equal(ope.clicked_decisions, report.clicks, "every click joined to its decision");
    // Within 4 standard errors (the interval's half width is 1.96 of them): a failure chance
    // of about 6e-5 if the estimator is unbiased with the stated error.
    const ips = ope.candidates.uniform.ips;
    const se = (ips.ci95[1] - ips.ci95[0]) / (2 * 1.96);
    assert.ok(Math.abs(ips.estimate - truthUniform) <= 4 * se, `IPS ${ips.estimate} +- ${se} vs truth ${truthUniform}`);
    // The holdout measured the same policy directly: the two agree within their joint error.
    const h = holdout.clicks / holdout.impressions;
    const seH = Math.sqrt((truthUniform * (1 - truthUniform)) / holdout.impressions);
    assert.ok(
      Math.abs(ips.estimate - h) <= 4 * Math.hypot(se, seH),
      `IPS ${ips.estimate} vs holdout ${h} (${holdout.clicks}/${holdout.impressions})`,
    );
  });
});
