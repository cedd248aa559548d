// Every decision logged, under workerd: the pick API, the homepage's impression signal, its
// click link and slot element carry the decision with the exact probability the policy gave
// the item (the bandit's P(best) mixed with the holdout's uniform share), the holdout serves
// its share, and logged outcomes reach the bandit-against-holdout comparison.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, importItems, makeItems, batch, postBatch, state, eventually, operatorAuth, SLOT } from "../lib/worker.mjs";

const HOLDOUT = 0.2;
const ARMS = 4;

describe("decision log and holdout", () => {
  let w;
  let st;
  before(async () => {
    w = await startWorker({
      vars: { ARMS: String(ARMS), ROUND_IMPRESSIONS: "1000000", SNAPSHOT_MAX_AGE_MS: "0", HOLDOUT: String(HOLDOUT) },
    });
    await importItems(w, makeItems(6, "dec"));
    const arms = (await state(w)).arms.map((a) => a.item);
    // Unequal evidence, so P(best) is far from uniform.
    const counts = arms.map((item, i) => ({ item, impressions: 400, clicks: 10 + 12 * i }));
    assert.equal((await postBatch(w, batch(counts))).status, 200);
    st = await state(w);
    await eventually(async () => (await (await w.fetch(`/api/slots/${SLOT}/pick`)).json()).version >= st.version, 8000, "snapshot");
  });
  after(() => w?.dispose());

  test("each pick logs the exact probability of its item, and the holdout serves its share", async () => {
    const pBest = Object.fromEntries(st.arms.map((a) => [a.item, a.p_best]));
    const n = 500;
    const ids = new Set();
    let held = 0;
    const before = Date.now();
    for (let i = 0; i < n; i++) {
      const p = await (await w.fetch(`/api/slots/${SLOT}/pick`)).json();
      const d = p.decision;
      assert.ok(d, "a sampled pick carries its decision");
      assert.equal(d.version, st.version);
      assert.equal(d.round, st.round);
      assert.equal(d.arms, ARMS);
      assert.match(d.id, /^[0-9a-f]{19}$/);
      ids.add(d.id);
      // The id's time part is the decision time.
      const t = parseInt(d.id.slice(0, 11), 16);
      assert.ok(t >= before - 1000 && t <= Date.now() + 1000, `decision time ${t}`);
      // Bandit or holdout, the logged probability is the mixture for the item shown.
      const want = HOLDOUT / ARMS + (1 - HOLDOUT) * pBest[p.item];
      assert.ok(Math.abs(d.probability - want) < 1e-6, `${p.item}: ${d.probability} vs ${want}`);
      if (d.served_by === "holdout") held++;
      assert.ok(p.href.includes(`decision=${d.id}`), p.href);
      assert.equal(p.href.includes("holdout=true"), d.served_by === "holdout");
    }
    assert.equal(ids.size, n, "decision ids are unique");
    // Binomial(500, 0.2): sd 8.9; 5 sd either side.
    assert.ok(Math.abs(held - n * HOLDOUT) <= 45, `holdout served ${held} of ${n}`);
  });

  test("the homepage's signal, link and slot element carry one decision", async () => {
    const html = await (await w.fetch("/")).text();
    const id = html.match(/data-top-pick-decision="([0-9a-f]{19})"/)?.[1];
    assert.ok(id, "the slot element names the decision");
    assert.ok(html.includes(`decision=${id}`), "the click link carries it");
    const signal = html.match(/\}\)\((\{source:[^}]*\})\);<\/script>/)?.[1];
    assert.ok(signal, "the impression signal is on the page");
    assert.ok(signal.includes(`decision:"${id}"`), signal);
    for (const name of ["probability", "round", "version", "arms", "holdout"]) {
      assert.ok(signal.includes(`${name}:"`), `${name} in ${signal}`);
    }
    const probability = Number(signal.match(/probability:"([^"]+)"/)[1]);
    assert.ok(probability > 0 && probability <= 1, signal);
  });

  test("logged outcomes reach the comparison, the state API and the dashboard", async () => {
    const arm = st.arms[0].item;
    const r = await postBatch(
      w,
      batch([
        { item: arm, impressions: 800, clicks: 60, served_by: "bandit" },
        { item: arm, impressions: 200, clicks: 4, served_by: "holdout" },
        { item: arm, impressions: 50, clicks: 5 },
      ]),
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const after = await state(w);
    assert.deepEqual(after.totals.bandit, { impressions: 800, clicks: 60 });
    assert.deepEqual(after.totals.holdout, { impressions: 200, clicks: 4 });
    assert.equal(after.holdout.bandit.ctr, 60 / 800);
    assert.equal(after.holdout.significant, after.holdout.difference_low > 0);
    const dash = await (await w.fetch(`/dashboard?slot=${SLOT}`, { headers: operatorAuth() })).text();
    assert.ok(dash.includes("Bandit against holdout"), "the dashboard compares them");
    assert.ok(dash.includes("7.50%") && dash.includes("2.00%"), "with both CTRs");
    // The sample-ratio check: a published version's decisions all showing one item (a page
    // cached with one decision) is flagged for every item, with reasons; the lag is shown.
    const pick = await (await w.fetch(`/api/slots/${SLOT}/pick`)).json();
    const v = pick.decision.version;
    const now = Date.now();
    const withExposures = await postBatch(w, {
      ...batch([{ item: arm, impressions: 2000, served_by: "bandit" }]),
      exposures: [{ version: v, item: arm, impressions: 2000 }],
      event_time: { oldest_ms: now - 4000, newest_ms: now - 1000 },
    });
    assert.equal(withExposures.status, 200, JSON.stringify(withExposures.body));
    const health = (await state(w)).health;
    assert.ok(health.tested >= 2, JSON.stringify(health));
    assert.ok(health.mismatches.some((m) => m.item === arm && /cache/.test(m.reason)), JSON.stringify(health.mismatches));
    assert.ok(health.feedback.oldest_ms >= 4000 && health.feedback.newest_ms >= 1000);
    const dash2 = await (await w.fetch(`/dashboard?slot=${SLOT}`, { headers: operatorAuth() })).text();
    assert.ok(dash2.includes("do not match their logged probabilities"), "the dashboard says so");
    assert.ok(dash2.includes(`data-mismatch="${arm}"`));
    // A repeated (item, served_by) entry is refused whole.
    const dup = await postBatch(w, batch([{ item: arm, impressions: 1, served_by: "bandit" }, { item: arm, impressions: 1, served_by: "bandit" }]));
    assert.equal(dup.status, 400);
    assert.match(dup.body.error, /more than once/);
  });
});

describe("holdout settings", () => {
  test("an editorial holdout shows the fallback item with its probability", async () => {
    const fallback = { id: "editorial", title: "Editor's choice", image: "/images/editorial.svg" };
    const w = await startWorker({
      vars: { ARMS: "2", SNAPSHOT_MAX_AGE_MS: "0", HOLDOUT: "0.5", HOLDOUT_BASELINE: "fallback", FALLBACK_ITEM: JSON.stringify(fallback) },
    });
    try {
      await importItems(w, makeItems(3, "ed"));
      const picks = [];
      for (let i = 0; i < 200; i++) picks.push(await (await w.fetch(`/api/slots/${SLOT}/pick`)).json());
      const held = picks.filter((p) => p.decision?.served_by === "holdout");
      assert.ok(held.length > 0 && held.every((p) => p.item === "editorial" && p.decision.probability === 0.5));
      // Binomial(200, 0.5): sd 7.1; 5 sd either side.
      assert.ok(Math.abs(held.length - 100) <= 36, `${held.length} of 200`);
      assert.ok(picks.filter((p) => p.decision?.served_by === "bandit").every((p) => p.item !== "editorial"));
    } finally {
      await w.dispose();
    }
  });

  test("a holdout beyond half the traffic is refused (the log names the setting)", async () => {
    const w = await startWorker({ vars: { HOLDOUT: "0.9" } });
    try {
      const r = await w.fetch(`/api/slots/${SLOT}/pick`);
      assert.equal(r.status, 500);
      assert.match(await r.text(), /internal error \(reference/);
    } finally {
      await w.dispose();
    }
  });
});

describe("segments", () => {
  test("a decision names the visitor's segment from the User-Agent and the platform's continent", async () => {
    const w = await startWorker({ vars: { ARMS: "2", SNAPSHOT_MAX_AGE_MS: "0", SEGMENTS: "device,continent" } });
    try {
      await importItems(w, makeItems(3, "sg"));
      const phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
      const p = await (await w.fetch(`/api/slots/${SLOT}/pick`, { headers: { "user-agent": phone }, cf: { continent: "EU" } })).json();
      assert.equal(p.decision.segment, "mobile_eu");
      assert.ok(p.href.endsWith("&segment=mobile_eu"), p.href);
      const html = await (await w.fetch("/", { headers: { "user-agent": "Mozilla/5.0 (Macintosh)" }, cf: { continent: "NA" } })).text();
      assert.ok(html.includes('segment:"desktop_na"'), "the impression signal carries the segment");
      // Segment counts reach the slot; names the dimensions cannot produce are left out.
      const arm = (await state(w)).arms[0].item;
      const r = await postBatch(
        w,
        batch([
          { item: arm, impressions: 40, clicks: 4, segment: "mobile_eu" },
          { item: arm, impressions: 9, segment: "phone_mars" },
        ]),
      );
      assert.equal(r.status, 200);
      const st = await state(w);
      assert.deepEqual(st.segments[arm], { mobile_eu: { impressions: 40, clicks: 4 } });
      assert.ok(st.segment_views.some((v) => v.segment === "mobile_eu"));
      assert.equal(st.totals.impressions, 49, "every impression still counts for the arm");
    } finally {
      await w.dispose();
    }
  });
});

describe("sticky picks", () => {
  test("a session sees one pick per round; other sessions and cookieless visitors draw afresh", async () => {
    const w = await startWorker({ vars: { ARMS: "4", SNAPSHOT_MAX_AGE_MS: "0", STICKY: "session" } });
    try {
      await importItems(w, makeItems(4, "st"));
      const pick = async (headers = {}) => (await (await w.fetch(`/api/slots/${SLOT}/pick`, { headers })).json()).item;
      const mine = { cookie: "_dvp=0:party; _dvs=0:my-session" };
      const first = await pick(mine);
      for (let i = 0; i < 20; i++) assert.equal(await pick(mine), first, "the same session keeps its pick");
      // Four equal arms: 30 sessions all drawing the same item has probability 4^-29.
      const others = new Set();
      for (let i = 0; i < 30; i++) others.add(await pick({ cookie: `_dvs=0:session-${i}` }));
      assert.ok(others.size > 1, "sessions draw independently");
      const cookieless = new Set();
      for (let i = 0; i < 30; i++) cookieless.add(await pick());
      assert.ok(cookieless.size > 1, "without the cookie every request draws");
      const home = await w.fetch("/", { headers: mine });
      assert.equal(home.headers.get("cache-control"), "private, no-store");
      assert.ok((await home.text()).includes(`data-top-pick-item="${first}"`), "the homepage shows the session's pick");
    } finally {
      await w.dispose();
    }
  });
});
