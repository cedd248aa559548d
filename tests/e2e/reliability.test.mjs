// Short versions of the reliability campaigns (tests/reliability/campaigns.mjs; the full ones
// run with `make reliability`, figures in docs/RELIABILITY.md): exact counts through SIGKILLs,
// a worker restart, a rebalance, poison and forged ids; a worker outage; the homepage without
// its store; load while ingesting.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { E2E_TOOLS, missingTools, killAll } from "../lib/e2e.mjs";
import { faultLoop, workerOutage, homepageWithoutStore, load } from "../reliability/campaigns.mjs";

const skip = missingTools(E2E_TOOLS);

describe("reliability, short runs", { skip, timeout: 600_000 }, () => {
  after(() => killAll());

  test("fault loop: kills, a worker restart, a rebalance, poison and forged ids; counts exact", async () => {
    const r = await faultLoop({ events: 30_000, kills: 4, restarts: 1, poison: 300, forged: 300 });
    assert.equal(r.exact, true);
    assert.equal(r.kills, 4);
    assert.equal(r.workerRestarts, 1);
    assert.equal(r.forged, 300);
    assert.ok(r.impressions > 10_000 && r.clicks > 1_000, JSON.stringify(r));
  });

  test("worker outage: the bridge keeps its position and catches up", async () => {
    const r = await workerOutage({ events: 10_000, outageMs: 5_000 });
    assert.ok(r.retriesDuringOutage > 0);
  });

  test("homepage without its store: every answer is 200 with the fallback", async () => {
    const r = await homepageWithoutStore({ requests: 500, concurrency: 20 });
    assert.equal(r.errors, 0);
  });

  test("load: homepages while batches are ingested and the dashboard is polled", async () => {
    const r = await load({ requests: 1_000, concurrency: 20 });
    assert.equal(r.errors, 0);
    assert.ok(r.batches > 0 && r.dashboardPolls > 0, JSON.stringify(r));
  });
});
