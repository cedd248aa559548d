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
      assert.equal((await w.fetch("/dashboard?slot=nope", { headers: operatorAuth() })).status, 404);
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
