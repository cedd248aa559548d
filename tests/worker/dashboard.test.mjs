// The operator dashboard under workerd: posteriors, P(best), counts and round history as HTML
// and SVG without scripts.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { startWorker, importItems, makeItems, batch, postBatch, state, operatorAuth, TOKEN } from "../lib/worker.mjs";

describe("dashboard", () => {
  test("draws every arm's posterior, P(best) and the round history without scripts", async () => {
    const w = await startWorker({ vars: { ARMS: "4", ROUND_IMPRESSIONS: "40", COOLDOWN_ROUNDS: "0" } });
    try {
      await importItems(w, makeItems(10, "dash"));
      const s0 = await state(w);
      await postBatch(w, batch(s0.arms.map((a, i) => ({ item: a.item, impressions: 10, clicks: i }))));
      const r = await w.fetch("/dashboard", { headers: operatorAuth() });
      assert.equal(r.status, 200);
      assert.match(r.headers.get("content-type"), /text\/html/);
      const html = await r.text();
      assert.ok(!html.includes("<script"), "readable without JavaScript");
      assert.ok(html.includes("<svg"));
      const s1 = await state(w);
      assert.equal(s1.round, 2);
      assert.equal((html.match(/<path /g) ?? []).length, s1.arms.length);
      for (const a of s1.arms) assert.ok(html.includes(`data-item="${a.item}"`), a.item);
      assert.ok(html.includes(`data-round="2"`));
      for (const r of s1.rounds[0].retired) assert.ok(html.includes(r.item), `retired ${r.item} listed`);
      assert.match(html, /data-last-batch>[\d.]+ s ago/);
      // The default policy has no feature priors: one line says how to turn them on.
      assert.ok(html.includes(`data-feature-priors="off"`));
      assert.ok(html.includes("PRIOR_POLICY=default+features"));
      assert.ok(!html.includes("data-feature-group="));
      assert.equal(s1.feature_priors, null);
      assert.ok(!html.includes("data-settings-differ"), "both workers run with the same settings");
      assert.equal((await w.fetch("/dashboard?slot=nope", { headers: operatorAuth() })).status, 404);
    } finally {
      await w.dispose();
    }
  });

  test("says so when the edge worker runs with other settings than the objects' worker", async () => {
    // A deploy of only one of the two workers after a change of vars: the slot object's
    // published odds (HOLDOUT) would no longer be the edge's.
    const w = await startWorker({ vars: { ARMS: "4" }, objectsVars: { HOLDOUT: "0.2" } });
    try {
      await importItems(w, makeItems(6, "diff"));
      const html = await (await w.fetch("/dashboard", { headers: operatorAuth() })).text();
      assert.match(html, /<li data-settings-differ><strong>Settings differ<\/strong>: the edge worker runs with other settings/);
      assert.ok(html.includes("wrangler deploy -c build/edge/wrangler.jsonc"));
      // It still serves: the picks and the state API go on.
      assert.equal((await w.fetch("/")).status, 200);
      assert.equal((await state(w)).arms.length, 4);
    } finally {
      await w.dispose();
    }
  });
});

describe("feature priors", () => {
  test("under +features the dashboard shows what each category's fresh items start from", async () => {
    const w = await startWorker({
      // `race` retires half the arms at every round's end, so every category reaches the
      // history (the default would keep the good arms and retire only the poor ones).
      vars: { ARMS: "4", ROUND_IMPRESSIONS: "400", COOLDOWN_ROUNDS: "0", PRIOR_POLICY: "race+features" },
    });
    try {
      // Four categories (one with markup in its name), each with its own click-through rate.
      const rates = { flowers: 0.2, trees: 0.05, sea: 0.02, "<city>": 0.1 };
      const cats = Object.keys(rates);
      const items = makeItems(32, "feat").map((it, i) => ({ ...it, category: cats[i % 4], photographer: `Ann ${i % 3}` }));
      const category = Object.fromEntries(items.map((it) => [it.id, it.category]));
      await importItems(w, items);
      // Every batch is a full round (4 arms x 100 impressions): the retirees' evidence, with
      // their category and photographer, goes to the history the feature prior is fitted to.
      let rounds = 0;
      for (let b = 0; b < 10; b++) {
        const s = await state(w);
        const counts = s.arms.map((a) => ({ item: a.item, impressions: 100, clicks: Math.round(100 * rates[category[a.item]]) }));
        const r = await postBatch(w, batch(counts));
        assert.equal(r.status, 200, JSON.stringify(r.body));
        if (r.body.rotated) rounds++;
      }
      assert.equal(rounds, 10);
      const r = await w.fetch("/dashboard", { headers: operatorAuth() });
      assert.equal(r.status, 200);
      const html = await r.text();
      assert.ok(html.includes("<h2>Feature priors</h2>"));
      assert.ok(html.includes(`data-feature-priors="on"`), html);
      assert.match(html, /data-global-mean>\d+\.\d\d%</);
      assert.ok(html.includes(`data-feature-key="category"`), html);
      assert.ok(html.includes(`data-feature-key="photographer"`), html);
      // At least three categories have retired arms, listed escaped.
      const shown = cats.filter((c) => html.includes(`data-feature-group="category=${c.replace("<", "&lt;").replace(">", "&gt;")}"`));
      assert.ok(shown.length >= 3, `categories shown: ${shown}`);
      assert.ok(!html.includes("<city>"), "catalog text is escaped");
      assert.ok(html.includes(`data-feature-group="category=flowers"`), html);
      // The state API carries the same fit: the best category's fresh items start higher.
      const fit = (await state(w)).feature_priors.find((k) => k.key === "category");
      const group = (v) => fit.groups.find((g) => g.value === v);
      assert.ok(fit.differ, JSON.stringify(fit));
      assert.ok(group("flowers").prior_mean > group("sea").prior_mean, JSON.stringify(fit));
    } finally {
      await w.dispose();
    }
  });
});

describe("operator access", () => {
  test("operator pages and the state API need the operator's credential; the pick does not", async () => {
    const w = await startWorker({ vars: { ARMS: "2", OPERATOR_TOKEN: "op-secret-42" } });
    try {
      await importItems(w, makeItems(2, "op"));
      for (const p of ["/dashboard", "/api/slots/home-top-pick"]) {
        const anon = await w.fetch(p);
        assert.equal(anon.status, 401, p);
        assert.match(anon.headers.get("www-authenticate"), /^Basic realm="top-pick operators"/, p);
        assert.equal((await w.fetch(p, { headers: { authorization: "Bearer wrong" } })).status, 401, p);
        // The ingest token is for the bridge, not for operators, once an operator token is set.
        assert.equal((await w.fetch(p, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 401, p);
        assert.equal((await w.fetch(p, { headers: { authorization: "Bearer op-secret-42" } })).status, 200, p);
        // A browser signs in with any user name and the token as password.
        const basic = "Basic " + Buffer.from("operator:op-secret-42").toString("base64");
        assert.equal((await w.fetch(p, { headers: { authorization: basic } })).status, 200, p);
      }
      // The bridge reads offsets with its own token; operators may too.
      assert.equal((await w.fetch("/api/slots/home-top-pick/offsets")).status, 401);
      assert.equal((await w.fetch("/api/slots/home-top-pick/offsets", { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200);
      assert.equal((await w.fetch("/api/slots/home-top-pick/offsets", { headers: { authorization: "Bearer op-secret-42" } })).status, 200);
      assert.equal((await w.fetch("/api/slots/home-top-pick/pick")).status, 200);
    } finally {
      await w.dispose();
    }
  });

  test("the dashboard runs no script and cannot be framed", async () => {
    const w = await startWorker({ vars: { ARMS: "2" } });
    try {
      await importItems(w, makeItems(2, "fr"));
      const r = await w.fetch("/dashboard", { headers: operatorAuth() });
      assert.equal(r.status, 200);
      const csp = r.headers.get("content-security-policy");
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /frame-ancestors 'none'/);
      assert.doesNotMatch(csp, /script-src/);
      assert.equal(r.headers.get("x-frame-options"), "DENY");
      assert.equal(r.headers.get("x-content-type-options"), "nosniff");
    } finally {
      await w.dispose();
    }
  });
});
