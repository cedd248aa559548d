// Operators in control, under workerd: catalog updates, takedowns and deletes that reach the
// arm sets and the page, pins (full, shared, paused), exclusions, the audit log with the
// credential behind each write, and several slots filled on one page without repeats.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startWorker, importItems, makeItems, batch, postBatch, state, auth, operatorAuth, eventually, SLOT } from "../lib/worker.mjs";

const json = { "content-type": "application/json" };
const HOUR = 3_600_000;
const pinBody = (item, extra = {}) => JSON.stringify({ item, until_ms: Date.now() + HOUR, ...extra });

async function call(w, method, path, body, headers = operatorAuth(json)) {
  const r = await w.fetch(path, { method, headers, body });
  const text = await r.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: r.status, body: parsed };
}

const arms = async (w, slot = SLOT) => (await state(w, slot)).arms.map((a) => a.item).sort();

/** Picks from the pick API once its snapshot has caught up with the slot's state. */
async function picksAfter(w, version, n, slot = SLOT) {
  await eventually(async () => (await (await w.fetch(`/api/slots/${slot}/pick`)).json()).version >= version, 8000, `snapshot version ${version}`);
  const out = [];
  for (let i = 0; i < n; i++) out.push(await (await w.fetch(`/api/slots/${slot}/pick`)).json());
  return out;
}

describe("catalog lifecycle", () => {
  let w;
  before(async () => {
    w = await startWorker({ vars: { ARMS: "4", ROUND_IMPRESSIONS: "1000000", SNAPSHOT_MAX_AGE_MS: "0" } });
    await importItems(w, makeItems(6, "cat"));
  });
  after(() => w?.dispose());

  test("a takedown leaves the set at once, is refilled, and never reaches the page again", async () => {
    const before = await arms(w);
    assert.equal(before.length, 4);
    const gone = before[0];
    const item = makeItems(6, "cat").find((i) => i.id === gone);
    await importItems(w, [{ ...item, available: false }]);
    const st = await state(w);
    const now = st.arms.map((a) => a.item);
    assert.ok(!now.includes(gone), `${gone} left the set`);
    assert.equal(now.length, 4, "its place is refilled from the 5 available items");
    for (const p of await picksAfter(w, st.version, 40)) assert.notEqual(p.item, gone);
    assert.equal((await w.fetch(`/product/${gone}/`)).status, 410);
    const category = await (await w.fetch("/category/test/")).text();
    assert.ok(!category.includes(`/product/${gone}/`), "not listed on its category page");
    assert.ok(category.includes(`/product/${now[0]}/`));
    // Available again: it can be shown again.
    await importItems(w, [item]);
    assert.equal((await w.fetch(`/product/${gone}/`)).status, 200);
  });

  test("an updated title is what the next page shows", async () => {
    const [target] = await arms(w);
    assert.equal((await call(w, "POST", `/api/slots/${SLOT}/pin`, pinBody(target))).status, 200);
    const item = makeItems(6, "cat").find((i) => i.id === target);
    await importItems(w, [{ ...item, title: "Retitled <em>" }]);
    assert.equal((await state(w)).arms.length, 4);
    await eventually(async () => (await (await w.fetch("/")).text()).includes("Retitled &lt;em&gt;"), 8000, "the new title on the homepage");
    await call(w, "DELETE", `/api/slots/${SLOT}/pin`);
  });

  test("delete: operator only, dense catalog, gone from the set, the pages and the pin", async () => {
    const [victim] = await arms(w);
    const del = (id, headers) => call(w, "DELETE", `/api/catalog/items/${id}`, undefined, headers);
    assert.equal((await del(victim, json)).status, 401);
    assert.equal((await del("a%20b")).status, 400);
    assert.equal((await call(w, "POST", `/api/slots/${SLOT}/pin`, pinBody(victim))).status, 200);
    const total = (await (await w.fetch("/api/catalog")).json()).total;
    const r = await del(victim);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { deleted: victim, total: total - 1 });
    const st = await state(w);
    assert.ok(!st.arms.some((a) => a.item === victim));
    assert.equal(st.arms.length, 4, "refilled");
    assert.equal(st.pinned, null, "the pin of a deleted item ends");
    assert.equal((await w.fetch(`/product/${victim}/`)).status, 404);
    assert.equal((await del(victim)).status, 404);
    // The remaining items keep dense indices: each is still reachable and drawable.
    const listed = (await (await w.fetch("/category/test/")).text()).match(/href="\/product\/[^/]+\//g);
    assert.equal(listed.length, total - 1);
  });
});

describe("pins and exclusions", () => {
  let w;
  before(async () => {
    w = await startWorker({ vars: { ARMS: "4", ROUND_IMPRESSIONS: "1000000", SNAPSHOT_MAX_AGE_MS: "0" } });
    await importItems(w, makeItems(8, "pin"));
  });
  after(() => w?.dispose());

  test("a pin serves every request until removed, marked as pinned on the page", async () => {
    // An item outside the set: a pin does not need an arm.
    const st0 = await state(w);
    const notArm = makeItems(8, "pin").map((i) => i.id).find((id) => !st0.arms.some((a) => a.item === id));
    assert.ok(notArm);
    const r = await call(w, "POST", `/api/slots/${SLOT}/pin`, pinBody(notArm));
    assert.equal(r.status, 200);
    assert.equal(r.body.pin.item, notArm);
    const st = await state(w);
    for (const p of await picksAfter(w, st.version, 20)) {
      assert.equal(p.item, notArm);
      assert.equal(p.pinned, true);
    }
    const home = await (await w.fetch("/")).text();
    assert.ok(home.includes(`data-top-pick-item="${notArm}"`) && home.includes('data-top-pick-pinned="true"'));
    assert.ok(home.includes(`productId:"${notArm}",pinned:true`), "the impression signal says so");
    const off = await call(w, "DELETE", `/api/slots/${SLOT}/pin`);
    assert.equal(off.body.pin, null);
    const after = await picksAfter(w, (await state(w)).version, 10);
    assert.ok(after.every((p) => !p.pinned));
  });

  test("a pin with a share serves about that share of requests", async () => {
    const [item] = await arms(w);
    await call(w, "POST", `/api/slots/${SLOT}/pin`, pinBody(item, { share: 0.25 }));
    const n = 400;
    const picks = await picksAfter(w, (await state(w)).version, n);
    const pinned = picks.filter((p) => p.pinned).length;
    assert.ok(picks.filter((p) => p.pinned).every((p) => p.item === item));
    // Binomial(400, 0.25): sd 8.7; 5 sd either side.
    assert.ok(Math.abs(pinned - 100) <= 44, `pinned ${pinned} of ${n}`);
    await call(w, "DELETE", `/api/slots/${SLOT}/pin`);
  });

  test("a paused pin acknowledges batches and sets their counts aside", async () => {
    const current = await arms(w);
    await call(w, "POST", `/api/slots/${SLOT}/pin`, pinBody(current[0], { learning: "pause" }));
    const b = batch(current.map((item) => ({ item, impressions: 10, clicks: 1 })), { topic: "paused" });
    const r = await postBatch(w, b);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.counted, { impressions: 0, clicks: 0 });
    const st = await state(w);
    assert.equal(st.totals.paused_impressions, 40);
    assert.equal(st.totals.paused_clicks, 4);
    assert.ok(st.arms.every((a) => a.impressions === 0));
    assert.equal(st.offsets.find((o) => o.topic === "paused").offset, b.offsets[0].to, "offsets advance");
    assert.equal((await postBatch(w, b)).body.status, "duplicate");
    await call(w, "DELETE", `/api/slots/${SLOT}/pin`);
    const counted = await postBatch(w, batch([{ item: current[0], impressions: 5, clicks: 0 }], { topic: "paused" }));
    assert.equal(counted.body.counted.impressions, 5, "counting resumes once unpinned");
  });

  test("pins that cannot be are refused with a reason", async () => {
    const pin = (body, slot = SLOT, headers) => call(w, "POST", `/api/slots/${slot}/pin`, body, headers);
    assert.equal((await pin(pinBody("pin-1"), SLOT, json)).status, 401);
    assert.equal((await pin(JSON.stringify({ item: "pin-1", until_ms: Date.now() - 1 }))).status, 400);
    assert.equal((await pin(pinBody("pin-1", { share: 0 }))).status, 400);
    assert.equal((await pin(pinBody("pin-1", { colour: "red" }))).status, 400);
    assert.equal((await pin(pinBody("nope"))).status, 404);
    assert.equal((await pin(pinBody("pin-1"), "no-such-slot")).status, 404);
    await importItems(w, [{ ...makeItems(8, "pin")[7], available: false }]);
    const unavailable = await pin(pinBody("pin-7"));
    assert.equal(unavailable.status, 409);
    assert.match(unavailable.body.error, /unavailable/);
    await importItems(w, [makeItems(8, "pin")[7]]);
  });

  test("excluded items leave the set at once and are never drawn into it", async () => {
    const current = await arms(w);
    const r = await call(w, "POST", `/api/slots/${SLOT}/exclude`, JSON.stringify({ add: [current[0], "pin-6", "pin-7"] }));
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.removed_arms.sort(), [current[0], "pin-6", "pin-7"].filter((i) => current.includes(i)).sort());
    const st = await state(w);
    assert.deepEqual(st.exclude, [current[0], "pin-6", "pin-7"].sort());
    // 8 items, 3 excluded: the set holds 4 of the other 5.
    assert.equal(st.arms.length, 4);
    assert.ok(st.arms.every((a) => ![current[0], "pin-6", "pin-7"].includes(a.item)));
    // Decisions from the changed set name it, so off-policy evaluation keeps it apart from the
    // round's first set.
    const pick = await eventually(async () => {
      const p = await (await w.fetch(`/api/slots/${SLOT}/pick`)).json();
      return p.decision?.version >= st.version && p;
    }, 8000, "the changed set's snapshot");
    assert.equal(pick.decision.round, st.round);
    assert.ok(pick.decision.set >= 1, JSON.stringify(pick.decision));
    const pinned = await call(w, "POST", `/api/slots/${SLOT}/pin`, pinBody("pin-6"));
    assert.equal(pinned.status, 409);
    assert.match(pinned.body.error, /include it again/);
    const controls = await call(w, "GET", `/api/slots/${SLOT}/controls`);
    assert.deepEqual(controls.body.exclude, st.exclude);
    const incl = await call(w, "POST", `/api/slots/${SLOT}/exclude`, JSON.stringify({ remove: ["pin-6", "pin-7", current[0]] }));
    assert.deepEqual(incl.body.exclude, []);
    assert.equal((await call(w, "POST", `/api/slots/${SLOT}/exclude`, JSON.stringify({}))).status, 400);
    const tooMany = Array.from({ length: 1001 }, (_, i) => `x-${i}`);
    const big = await call(w, "POST", `/api/slots/${SLOT}/exclude`, JSON.stringify({ add: tooMany }));
    assert.equal(big.status, 409);
    assert.match(big.body.error, /limit 1000/);
  });

  test("the dashboard shows the controls", async () => {
    const [item] = await arms(w);
    await call(w, "POST", `/api/slots/${SLOT}/pin`, pinBody(item));
    await call(w, "POST", `/api/slots/${SLOT}/exclude`, JSON.stringify({ add: ["pin-7"] }));
    const page = await (await w.fetch("/dashboard", { headers: operatorAuth() })).text();
    assert.ok(page.includes(`data-pinned="${item}"`));
    assert.ok(page.includes('data-excluded="1">pin-7'));
    assert.ok(page.includes('data-audit-action="exclude"'));
  });
});

describe("audit log", () => {
  const OPERATOR = "operator-token-abcdef";
  let w;
  const op = (extra = {}) => ({ authorization: `Bearer ${OPERATOR}`, ...json, ...extra });
  before(async () => {
    w = await startWorker({ vars: { OPERATOR_TOKEN: OPERATOR, ARMS: "2", ROUND_IMPRESSIONS: "1000000" } });
  });
  after(() => w?.dispose());

  test("every operator write is recorded with its credential, newest first, bounded by limit", async () => {
    await importItems(w, makeItems(4, "aud")); // the bridge's token
    const opImport = await call(w, "POST", "/api/catalog", JSON.stringify({ items: [{ ...makeItems(4, "aud")[3], available: false }] }), op());
    assert.equal(opImport.status, 200, "operators may import too");
    assert.equal((await call(w, "POST", `/api/slots/${SLOT}/pin`, pinBody("aud-0"), op())).status, 200);
    assert.equal((await call(w, "DELETE", `/api/slots/${SLOT}/pin`, undefined, op())).status, 200);
    assert.equal((await call(w, "POST", `/api/slots/${SLOT}/exclude`, JSON.stringify({ add: ["aud-1"] }), op())).status, 200);
    assert.equal((await call(w, "POST", `/api/slots/${SLOT}/offsets`, JSON.stringify({ topic: "t", partition: 0, offset: 5 }), op())).status, 200);
    assert.equal((await call(w, "DELETE", "/api/catalog/items/aud-2", undefined, op())).status, 200);
    // The ingest token may not delete, pin or read the audit log once an operator token is set.
    assert.equal((await call(w, "DELETE", "/api/catalog/items/aud-0", undefined, auth())).status, 401);
    assert.equal((await call(w, "GET", "/api/audit", undefined, auth())).status, 401);
    const r = await call(w, "GET", "/api/audit", undefined, op());
    assert.equal(r.status, 200);
    const seen = r.body.entries.map((e) => [e.actor, e.action, e.target]);
    assert.deepEqual(seen, [
      ["operator", "catalog_delete", "catalog"],
      ["operator", "offset_edit", SLOT],
      ["operator", "exclude", SLOT],
      ["operator", "unpin", SLOT],
      ["operator", "pin", SLOT],
      ["operator", "catalog_import", "catalog"],
      ["ingest", "catalog_import", "catalog"],
    ]);
    assert.match(r.body.entries[5].detail, /1 marked unavailable: aud-3/);
    assert.match(r.body.entries[2].detail, /excluded aud-1/);
    const times = r.body.entries.map((e) => e.at_ms);
    assert.deepEqual(times, [...times].sort((a, b) => b - a));
    const two = await call(w, "GET", "/api/audit?limit=2", undefined, op());
    assert.deepEqual(two.body.entries, r.body.entries.slice(0, 2));
    assert.equal((await call(w, "GET", "/api/audit?limit=0", undefined, op())).status, 400);
    // The slot's own entries are in its state too.
    const st = await call(w, "GET", `/api/slots/${SLOT}`, undefined, op());
    assert.deepEqual(st.body.audit.map((e) => e.action), ["pin", "unpin", "exclude", "offset_edit"]);
  });
});

describe("after a restart", () => {
  test("controls and the audit log are stored with the state they describe", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "top-pick-operator-"));
    const vars = { ARMS: "2", ROUND_IMPRESSIONS: "1000000" };
    try {
      let w = await startWorker({ vars, persistTo: dir });
      await importItems(w, makeItems(4, "rst"));
      assert.equal((await call(w, "POST", `/api/slots/${SLOT}/pin`, pinBody("rst-3"))).status, 200);
      assert.equal((await call(w, "POST", `/api/slots/${SLOT}/exclude`, JSON.stringify({ add: ["rst-2"] }))).status, 200);
      // Batches after the operator writes rewrite the state, not the log.
      const current = await arms(w);
      assert.equal((await postBatch(w, batch(current.map((item) => ({ item, impressions: 3, clicks: 1 }))))).status, 200);
      const before = await call(w, "GET", "/api/audit");
      await w.dispose();
      w = await startWorker({ vars, persistTo: dir });
      try {
        const after = await call(w, "GET", "/api/audit");
        assert.deepEqual(after.body, before.body);
        assert.deepEqual(after.body.entries.map((e) => e.action), ["exclude", "pin", "catalog_import"]);
        const st = await state(w);
        assert.equal(st.pinned.pin.item, "rst-3");
        assert.deepEqual(st.exclude, ["rst-2"]);
        assert.equal(st.totals.impressions, 3 * current.length);
      } finally {
        await w.dispose();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("several slots on one page", () => {
  test("each slot element is filled from its own slot, and no item appears twice", async () => {
    const { createServer } = await import("node:http");
    const origin = createServer((req, res) => {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(`<!doctype html><html><body><div data-top-pick="home-top-pick">hero</div><aside data-top-pick="side-pick">side</aside></body></html>`);
    });
    await new Promise((r) => origin.listen(0, "127.0.0.1", r));
    // Three items, two arms per slot: the sets overlap, so only the rule keeps pages unique.
    const w = await startWorker({
      vars: { ORIGIN_URL: `http://127.0.0.1:${origin.address().port}`, SLOTS: "home-top-pick,side-pick", ARMS: "2", SNAPSHOT_MAX_AGE_MS: "0" },
    });
    try {
      await importItems(w, makeItems(3, "multi"));
      const hero = await arms(w, "home-top-pick");
      const side = await arms(w, "side-pick");
      assert.equal(hero.length, 2);
      assert.equal(side.length, 2);
      await eventually(async () => (await (await w.fetch("/")).text()).match(/data-top-pick-item=/g)?.length === 2, 8000, "both slots filled");
      const combos = new Set();
      for (let i = 0; i < 60; i++) {
        const r = await w.fetch("/");
        const html = await r.text();
        const h = html.match(/data-top-pick="home-top-pick" data-top-pick-item="([^"]+)"/)?.[1];
        const s = html.match(/data-top-pick="side-pick" data-top-pick-item="([^"]+)"/)?.[1];
        assert.ok(h && s, html);
        assert.notEqual(h, s, "no item twice on one page");
        assert.ok(hero.includes(h), `${h} is a hero arm`);
        assert.ok(side.includes(s), `${s} is a side arm`);
        assert.ok(html.includes(`/product/${s}/#/?source=side-pick`), "the side slot's clicks carry its own source");
        assert.ok(html.includes(`{source:"side-pick",productId:"${s}",decision:"`));
        assert.ok(html.includes(`/product/${h}/#/?source=top_pick`));
        assert.match(r.headers.get("server-timing"), /pick;desc="thompson", pick-2;desc="thompson"/);
        combos.add(`${h}|${s}`);
      }
      assert.ok(combos.size >= 2, "both slots are sampled, not fixed");
      const pick = await (await w.fetch("/api/slots/side-pick/pick")).json();
      assert.equal(pick.signal_source, "side-pick");
    } finally {
      await w.dispose();
      origin.close();
    }
  });

  test("the worker's own page fills only the slots its template holds", async () => {
    const w = await startWorker({ vars: { SLOTS: "home-top-pick,side-pick", ARMS: "2" } });
    try {
      await importItems(w, makeItems(3, "own"));
      const r = await w.fetch("/");
      assert.match(await r.text(), /data-top-pick="home-top-pick" data-top-pick-item="own-\d"/);
      assert.doesNotMatch(r.headers.get("server-timing"), /pick-2/);
    } finally {
      await w.dispose();
    }
  });
});
