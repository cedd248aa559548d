// The ingest API under workerd: exactly-once batches, rotation, and every bad-input case.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startWorker, importItems, makeItems, batch, postBatch, state, eventually, auth, operatorAuth, SLOT, TOKEN } from "../lib/worker.mjs";

describe("ingest", () => {
  let w;
  before(async () => {
    w = await startWorker({ vars: { ARMS: "4", ROUND_IMPRESSIONS: "1000000" } });
    await importItems(w, makeItems(12));
  });
  after(() => w?.dispose());

  test("a batch is applied once; the same batch again changes nothing", async () => {
    const s0 = await state(w);
    const [a, b] = s0.arms.map((x) => x.item);
    const body = batch([
      { item: a, impressions: 10, clicks: 2 },
      { item: b, impressions: 5, clicks: 0 },
      { item: "not-in-set", impressions: 7, clicks: 1 },
    ]);
    const first = await postBatch(w, body);
    assert.equal(first.status, 200);
    assert.equal(first.body.status, "applied");
    assert.deepEqual(first.body.counted, { impressions: 15, clicks: 2 });
    assert.deepEqual(first.body.not_in_set, ["not-in-set"]);
    const s1 = await state(w);
    const armA = s1.arms.find((x) => x.item === a);
    assert.equal(armA.impressions, s0.arms.find((x) => x.item === a).impressions + 10);
    assert.equal(armA.clicks, 2);
    assert.equal(s1.totals.outside_impressions, 7);

    const again = await postBatch(w, body);
    assert.equal(again.status, 200);
    assert.equal(again.body.status, "duplicate");
    const s2 = await state(w);
    assert.deepEqual(s2.arms, s1.arms);
    assert.equal(s2.version, s1.version);
    const off = s2.offsets.find((o) => o.topic === "t" && o.partition === 0);
    assert.equal(off.offset, body.offsets[0].to);

    const offsets = await (await w.fetch(`/api/slots/${SLOT}/offsets`, { headers: auth() })).json();
    assert.deepEqual(offsets, { slot: SLOT, offsets: s2.offsets });
  });

  test("a batch straddling the applied offset is refused with the stored offsets", async () => {
    const s0 = await state(w);
    const applied = s0.offsets.find((o) => o.topic === "t").offset;
    const straddle = batch([{ item: s0.arms[0].item, impressions: 1, clicks: 0 }], { from: applied - 5, to: applied + 5 });
    const r = await postBatch(w, straddle);
    assert.equal(r.status, 409);
    assert.deepEqual(r.body.offsets, s0.offsets);
    const s1 = await state(w);
    assert.deepEqual(s1.arms, s0.arms);
  });

  test("bad input gets a clear status and changes nothing", async () => {
    const s0 = await state(w);
    const item = s0.arms[0].item;
    const good = () => batch([{ item, impressions: 1, clicks: 1 }]);
    const cases = [
      ["unknown slot", () => postBatch(w, good(), "no-such-slot"), 404],
      ["missing token", () => postBatch(w, good(), SLOT, { "content-type": "application/json" }), 401],
      ["wrong token", () => postBatch(w, good(), SLOT, auth({ authorization: `Bearer ${TOKEN}x` })), 401],
      ["not bearer", () => postBatch(w, good(), SLOT, auth({ authorization: `Basic ${TOKEN}` })), 401],
      ["wrong content type", () => postBatch(w, good(), SLOT, auth({ "content-type": "text/plain" })), 415],
      ["body over 1 MiB", () => postBatch(w, JSON.stringify({ ...good(), source: "x".repeat(1100 * 1024) })), 413],
      ["malformed JSON", () => postBatch(w, "{\"source\":"), 400],
      ["negative count", () => postBatch(w, { ...good(), counts: [{ item, impressions: -1, clicks: 0 }] }), 400],
      ["empty item", () => postBatch(w, { ...good(), counts: [{ item: "", impressions: 1, clicks: 0 }] }), 400],
      ["huge count", () => postBatch(w, { ...good(), counts: [{ item, impressions: 1e12, clicks: 0 }] }), 400],
      ["from after to", () => postBatch(w, batch([{ item, impressions: 1, clicks: 0 }], { topic: "u", from: 9, to: 3 })), 400],
      ["no offsets", () => postBatch(w, { source: "x", offsets: [], counts: [{ item, impressions: 1, clicks: 0 }] }), 400],
      ["unknown field", () => postBatch(w, { ...good(), extra: 1 }), 400],
      ["offset beyond 2^53 - 1", () => postBatch(w, { source: "x", offsets: [{ topic: "v", partition: 0, from: 1, to: 2 ** 53 }], counts: [] }), 400],
      ["not a catalog id", () => postBatch(w, { ...good(), counts: [{ item: "a\"b", impressions: 1, clicks: 0 }] }), 400],
      ["id ..", () => postBatch(w, { ...good(), counts: [{ item: "..", impressions: 1, clicks: 0 }] }), 400],
    ];
    for (const [name, run, want] of cases) {
      const r = await run();
      assert.equal(r.status, want, `${name}: ${JSON.stringify(r.body)}`);
      assert.equal(typeof r.body.error, "string", `${name} explains itself`);
      assert.ok(r.body.error.length > 5, name);
    }
    const s1 = await state(w);
    assert.deepEqual(s1.arms, s0.arms);
    assert.deepEqual(s1.offsets, s0.offsets);
    assert.equal(s1.version, s0.version);
  });

  test("the offset ledger is bounded; operators set and forget offsets", async () => {
    const s0 = await state(w);
    const item = s0.arms[0].item;
    const ranges = (topic, n) => Array.from({ length: n }, (_, p) => ({ topic, partition: p, from: 0, to: 0 }));
    const room = 1024 - s0.offsets.length;
    const fill = await postBatch(w, { source: "test", offsets: ranges("wide", room), counts: [] });
    assert.equal(fill.status, 200, JSON.stringify(fill.body));
    // One partition more is refused whole, with what to do; the sender keeps retrying it.
    const more = { source: "test", offsets: [{ topic: "late", partition: 0, from: 0, to: 9 }], counts: [{ item, impressions: 3, clicks: 1 }] };
    const full = await postBatch(w, more);
    assert.equal(full.status, 507);
    assert.match(full.body.error, /POST \/api\/slots\/home-top-pick\/offsets/);
    const s1 = await state(w);
    assert.deepEqual(s1.arms, s0.arms);
    const edit = (body, headers = auth()) => w.fetch(`/api/slots/${SLOT}/offsets`, { method: "POST", headers, body: JSON.stringify(body) });
    assert.equal((await edit({ topic: "wide" }, { "content-type": "application/json" })).status, 401);
    assert.equal((await edit({ topic: "wide", offset: 3 })).status, 400, "an offset needs a partition");
    const forgot = await (await edit({ topic: "wide" })).json();
    assert.equal(forgot.changed, room);
    assert.equal((await postBatch(w, more)).status, 200);
    const s2 = await state(w);
    assert.equal(s2.arms.find((a) => a.item === item).impressions, s0.arms[0].impressions + 3);

    // A batch claiming the largest offset makes later ones duplicates until an operator
    // sets the partition back.
    const poison = await postBatch(w, { source: "test", offsets: [{ topic: "p", partition: 0, from: 0, to: 2 ** 53 - 1 }], counts: [] });
    assert.equal(poison.status, 200);
    const next = { source: "test", offsets: [{ topic: "p", partition: 0, from: 10, to: 20 }], counts: [{ item, impressions: 2, clicks: 0 }] };
    assert.equal((await postBatch(w, next)).body.status, "duplicate");
    const reset = await (await edit({ topic: "p", partition: 0, offset: 9 })).json();
    assert.equal(reset.previous, 2 ** 53 - 1);
    assert.equal((await postBatch(w, next)).body.status, "applied");
    const offsets = await (await w.fetch(`/api/slots/${SLOT}/offsets`, { headers: auth() })).json();
    assert.equal(offsets.offsets.find((o) => o.topic === "p").offset, 20);
  });

  test("unknown API routes and slots are 404, naming no configured slot", async () => {
    const slotState = await w.fetch("/api/slots/nope", { headers: operatorAuth() });
    assert.equal(slotState.status, 404);
    const pick = await w.fetch("/api/slots/nope/pick");
    assert.equal(pick.status, 404);
    for (const body of [await slotState.text(), await pick.text()]) assert.ok(!body.includes(SLOT), body);
    assert.equal((await w.fetch("/api/nothing")).status, 404);
  });
});

describe("rotation", () => {
  for (const policy of ["reset", "carry"]) {
    test(`after X impressions the round ends with policy ${policy}`, async () => {
      const w = await startWorker({ vars: { ARMS: "4", ROUND_IMPRESSIONS: "100", PRIOR_POLICY: policy, COOLDOWN_ROUNDS: "2" } });
      try {
        await importItems(w, makeItems(30));
        const s0 = await state(w);
        assert.equal(s0.round, 1);
        assert.equal(s0.arms.length, 4);
        const ids0 = s0.arms.map((a) => a.item);
        // 96 impressions: not yet a full round.
        const r1 = await postBatch(w, batch(ids0.map((item, i) => ({ item, impressions: 24, clicks: i }))));
        assert.equal(r1.body.rotated, false, JSON.stringify(r1));
        assert.equal((await state(w)).round, 1);
        const before = await state(w);
        const r2 = await postBatch(w, batch([{ item: ids0[3], impressions: 4, clicks: 1 }]));
        assert.equal(r2.body.rotated, true);
        const s1 = await state(w);
        assert.equal(s1.round, 2);
        assert.equal(s1.arms.length, 4);
        assert.equal(new Set(s1.arms.map((a) => a.item)).size, 4, "no duplicates");
        const survivors = s1.arms.filter((a) => ids0.includes(a.item));
        assert.equal(survivors.length, 2, "floor(n/2) survive");
        assert.equal(s1.rounds.length, 1);
        assert.equal(s1.rounds[0].retired.length, 2);
        assert.equal(s1.rounds[0].impressions, 100);
        for (const a of s1.arms) {
          assert.equal(a.impressions, 0);
          assert.equal(a.clicks, 0);
        }
        for (const s of survivors) {
          const old = before.arms.find((a) => a.item === s.item);
          const clicks = old.clicks + (s.item === ids0[3] ? 1 : 0);
          const imps = old.impressions + (s.item === ids0[3] ? 4 : 0);
          if (policy === "reset") {
            assert.deepEqual(s.prior, { alpha: 1, beta: 1 });
          } else {
            // Survivors keep exactly their evidence.
            assert.deepEqual(s.prior, { alpha: 1 + clicks, beta: 1 + imps - clicks });
          }
        }
        // Retired items cannot come straight back.
        const retired = s1.rounds[0].retired.map((r) => r.item);
        assert.ok(s1.arms.every((a) => !retired.includes(a.item)));
      } finally {
        await w.dispose();
      }
    });
  }

  test("policy screen retires an arm far behind after its batch and keeps every other arm at the round's end", async () => {
    const w = await startWorker({ vars: { ARMS: "4", ROUND_IMPRESSIONS: "1000", PRIOR_POLICY: "screen", COOLDOWN_ROUNDS: "2" } });
    try {
      await importItems(w, makeItems(30));
      const ids0 = (await state(w)).arms.map((a) => a.item);
      assert.equal(ids0.length, 4);
      // Three arms at 20%, one never clicked in 100 impressions: far behind the bar.
      const dud = ids0[3];
      const r1 = await postBatch(w, batch(ids0.map((item) => ({ item, impressions: 100, clicks: item === dud ? 0 : 20 }))));
      assert.equal(r1.body.rotated, false, JSON.stringify(r1));
      const s1 = await state(w);
      assert.equal(s1.round, 1, "mid-round");
      assert.equal(s1.arms.length, 4, "the slot is refilled at once");
      assert.ok(!s1.arms.some((a) => a.item === dud), "the dud left");
      const fresh = s1.arms.find((a) => !ids0.includes(a.item));
      assert.ok(fresh, "a fresh item took its place");
      assert.equal(fresh.impressions, 0);
      // Decisions drawn from the new set name it: round 1, one swap in.
      const pick = await eventually(async () => {
        const p = await (await w.fetch(`/api/slots/${SLOT}/pick`)).json();
        return p.decision?.version >= s1.version && p;
      }, 8000, "the swapped set's snapshot");
      assert.equal(pick.decision.round, 1);
      assert.equal(pick.decision.set, 1, JSON.stringify(pick.decision));
      // The round ends with every arm doing well: none is behind, so all four stay.
      const r2 = await postBatch(w, batch(s1.arms.map((a) => ({ item: a.item, impressions: 200, clicks: 40 }))));
      assert.equal(r2.body.rotated, true, JSON.stringify(r2));
      const s2 = await state(w);
      assert.equal(s2.round, 2);
      assert.deepEqual(s2.arms.map((a) => a.item).sort(), s1.arms.map((a) => a.item).sort());
      assert.equal(s2.rounds[0].retired.length, 0);
      assert.equal(s2.rounds[0].added.length, 0);
      // The round's summary lists what changed between its ends, and so does the dashboard.
      assert.deepEqual(s2.rounds[0].screened.map((a) => [a.item, a.clicks, a.impressions]), [[dud, 0, 100]]);
      assert.ok(s2.rounds[0].refilled.includes(fresh.item), JSON.stringify(s2.rounds[0]));
      const dash = await (await w.fetch("/dashboard", { headers: operatorAuth() })).text();
      assert.match(dash, new RegExp(`<span data-screened>mid-round: ${dud} \\(0/100, `));
      assert.match(dash, new RegExp(`<span data-refilled>mid-round: [^<]*${fresh.item}`));
      assert.ok(dash.includes("After every batch an arm whose chance"), "the note says how screening rotates");
      // Survivors carry about 85% of their 300 impressions' evidence into the next round's prior.
      const a0 = s2.arms.find((a) => a.item === ids0[0]);
      assert.equal(a0.impressions, 0);
      assert.ok(a0.prior.alpha + a0.prior.beta > 0.8 * 300 && a0.prior.alpha + a0.prior.beta < 300 + 2, JSON.stringify(a0.prior));
    } finally {
      await w.dispose();
    }
  });

  test("screening remembers what it retires: drawn again, an item comes back with its evidence and leaves after one batch; the memory survives a restart", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "top-pick-memory-"));
    // Five items for four arms and no cool-down: a retired item is the only one left to draw.
    const vars = { ARMS: "4", ROUND_IMPRESSIONS: "100000", PRIOR_POLICY: "screen", COOLDOWN_ROUNDS: "0" };
    let w = await startWorker({ vars, persistTo: dir });
    try {
      await importItems(w, makeItems(5, "mem"));
      const ids0 = (await state(w)).arms.map((a) => a.item);
      assert.equal(ids0.length, 4);
      const spare = makeItems(5, "mem").map((i) => i.id).find((id) => !ids0.includes(id));
      const dud = ids0[3];
      const r1 = await postBatch(w, batch(ids0.map((item) => ({ item, impressions: 100, clicks: item === dud ? 0 : 20 }))));
      assert.equal(r1.status, 200, JSON.stringify(r1));
      const s1 = await state(w);
      assert.ok(s1.arms.some((a) => a.item === spare) && !s1.arms.some((a) => a.item === dud), JSON.stringify(s1.arms));
      assert.equal(s1.memory.items, 1);
      assert.deepEqual(s1.memory.newest, [[dud, 0, 100, 1]]);
      const dash = await (await w.fetch("/dashboard", { headers: operatorAuth() })).text();
      assert.ok(dash.includes("The slot remembers <span data-memory>1</span> items"), "the dashboard says how much is remembered");

      await w.dispose();
      w = await startWorker({ vars, persistTo: dir });
      assert.deepEqual((await state(w)).memory.newest, [[dud, 0, 100, 1]], "the memory is stored");

      // The spare flops too; the dud, the only item the catalog can offer, comes back with
      // its 100 impressions in its prior.
      const r2 = await postBatch(w, batch(s1.arms.map((a) => ({ item: a.item, impressions: 100, clicks: a.item === spare ? 0 : 20 }))));
      assert.equal(r2.status, 200, JSON.stringify(r2));
      const s2 = await state(w);
      const back = s2.arms.find((a) => a.item === dud);
      assert.ok(back, JSON.stringify(s2.arms));
      assert.deepEqual(back.recalled, { clicks: 0, impressions: 100, stays: 1 });
      assert.equal(back.impressions, 0);
      assert.ok(back.prior.beta >= 100, JSON.stringify(back.prior));
      assert.deepEqual(s2.memory.newest, [[spare, 0, 100, 1]], "the dud left the memory for the set");

      // Its evidence condemns it after the next batch, though that batch showed it nowhere;
      // the spare takes its place, and the dud is remembered as before (a stay without
      // impressions is not counted).
      const r3 = await postBatch(w, batch(s2.arms.filter((a) => a.item !== dud).map((a) => ({ item: a.item, impressions: 100, clicks: 20 }))));
      assert.equal(r3.status, 200, JSON.stringify(r3));
      const s3 = await state(w);
      assert.ok(!s3.arms.some((a) => a.item === dud), JSON.stringify(s3.arms));
      assert.deepEqual(s3.arms.find((a) => a.item === spare)?.recalled, { clicks: 0, impressions: 100, stays: 1 });
      assert.deepEqual(s3.memory.newest, [[dud, 0, 100, 1]]);
    } finally {
      await w.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("with segments, screening keeps an arm that leads a segment though it is far behind over all", async () => {
    // The default policy screens; SEGMENTS gives each device its own view of the arms.
    const w = await startWorker({ vars: { ARMS: "4", ROUND_IMPRESSIONS: "100000", SEGMENTS: "device", COOLDOWN_ROUNDS: "2" } });
    try {
      await importItems(w, makeItems(30));
      const [lead, niche, close, dud] = (await state(w)).arms.map((a) => a.item);
      // Desktop (90% of the traffic) clicks lead and close at about 19%; mobile clicks niche
      // at 30%, which leaves niche at 3.9% over all, far under the all-segment bar (about
      // 17%): screening on the arms' own posteriors would retire it with the dud. Close, a
      // point behind lead on desktop and far behind niche on mobile, has about half the
      // chance of beating the bars it had under its uniform first-round prior: the default
      // swaps an arm at a 15% drop, so it leaves too.
      const rows = [
        [lead, 180, 5],
        [niche, 9, 30],
        [close, 170, 5],
        [dud, 9, 1],
      ].flatMap(([item, desktop, mobile]) => [
        { item, impressions: 900, clicks: desktop, segment: "desktop" },
        { item, impressions: 100, clicks: mobile, segment: "mobile" },
      ]);
      const r = await postBatch(w, batch(rows));
      assert.equal(r.status, 200, JSON.stringify(r));
      assert.equal(r.body.rotated, false);
      const ids = (await state(w)).arms.map((a) => a.item);
      assert.equal(ids.length, 4, "the slot is refilled at once");
      assert.ok(!ids.includes(dud), "the dud, behind in both segments, left");
      assert.ok(!ids.includes(close), `close, not leading either segment, left: ${ids}`);
      for (const kept of [lead, niche]) assert.ok(ids.includes(kept), `${kept} stays: ${ids}`);
    } finally {
      await w.dispose();
    }
  });
});
