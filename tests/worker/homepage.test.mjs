// The homepage and the pick API under workerd: pre-rendered pick, posterior-following picks,
// escaping of catalog text, and the fallback when the store fails.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, importItems, makeItems, batch, postBatch, state, eventually, SLOT, TOKEN } from "../lib/worker.mjs";

const pickOf = (html) => html.match(/data-top-pick-item="([^"]+)"/)?.[1];

describe("homepage", () => {
  let w;
  before(async () => {
    w = await startWorker({ vars: { ARMS: "4", ROUND_IMPRESSIONS: "1000000", SNAPSHOT_MAX_AGE_MS: "0" } });
    await importItems(w, makeItems(4));
  });
  after(() => w?.dispose());

  test("holds the pick, its link and the impression signal", async () => {
    const r = await w.fetch("/");
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type"), /text\/html/);
    assert.equal(r.headers.get("cache-control"), "private, no-store");
    assert.match(r.headers.get("server-timing"), /snapshot;desc="(kv|object|isolate|stale)";dur=[\d.]+, pick;desc="thompson"/);
    const html = await r.text();
    const id = pickOf(html);
    assert.ok(makeItems(4).some((i) => i.id === id), `picked ${id}`);
    const n = id.split("-")[1];
    const decision = html.match(/data-top-pick-decision="([0-9a-f]{19})"/)?.[1];
    assert.ok(decision, "the slot element names its decision");
    assert.ok(html.includes(`href="/product/${id}/#/?source=top_pick&amp;decision=${decision}"`));
    assert.ok(html.includes(`<span class="top-pick__title">Item ${n}</span>`));
    assert.ok(html.includes(`src="/images/${id}.svg"`));
    assert.ok(html.includes(`d.signal('impression',p)`));
    assert.ok(html.includes(`({source:"top_pick",productId:"${id}",decision:"${decision}",probability:"`));
    assert.ok(!html.includes("top-pick__empty"), "the placeholder is replaced");
    // The one inline script runs by the response's own nonce; no other inline script may.
    const csp = r.headers.get("content-security-policy");
    const nonce = csp.match(/script-src 'self' 'nonce-([0-9a-f]{32})'/)?.[1];
    assert.ok(nonce, csp);
    assert.doesNotMatch(csp, /unsafe-inline/);
    const markup = html.replace(/<!--[\s\S]*?-->/g, "");
    assert.equal((markup.match(/<script\b/g) ?? []).length, 1);
    assert.ok(html.includes(`<script nonce="${nonce}">`));
    assert.equal(r.headers.get("x-content-type-options"), "nosniff");
    assert.equal(r.headers.get("referrer-policy"), "strict-origin-when-cross-origin");
    const again = (await w.fetch("/")).headers.get("content-security-policy");
    assert.notEqual(again, csp, "a fresh nonce per response");
  });

  test("static files are served from www/", async () => {
    const css = await w.fetch("/style.css");
    assert.equal(css.status, 200);
    assert.match(await css.text(), /\.top-pick/);
    const img = await w.fetch("/images/demo-001.svg");
    assert.equal(img.status, 200);
  });

  test("the pick follows the posterior", async () => {
    const s0 = await state(w);
    const best = s0.arms[2].item;
    const counts = s0.arms.map((a) => ({ item: a.item, impressions: 1000, clicks: a.item === best ? 300 : 0 }));
    const r = await postBatch(w, batch(counts));
    assert.equal(r.status, 200);
    const s1 = await state(w);
    // Wait for the published snapshot (at most one KV write per second per slot).
    await eventually(async () => (await (await w.fetch(`/api/slots/${SLOT}/pick`)).json()).version >= s1.version, 5000, "the new snapshot");
    // P(best) of the good arm is 1 - 1e-100 or so; 95% of 500 picks is a loose bound on purpose.
    let wins = 0;
    for (let i = 0; i < 500; i++) {
      const p = await (await w.fetch(`/api/slots/${SLOT}/pick`)).json();
      if (p.item === best) wins++;
    }
    assert.ok(wins >= 475, `best arm won ${wins} of 500`);
    let homeWins = 0;
    for (let i = 0; i < 50; i++) {
      if (pickOf(await (await w.fetch("/")).text()) === best) homeWins++;
    }
    assert.ok(homeWins >= 45, `best arm won ${homeWins} of 50 homepages`);
    const pb = s1.arms.find((a) => a.item === best).p_best;
    assert.ok(pb > 0.999, `P(best) ${pb}`);
  });

  test("a pick with an even posterior spreads over the arms", async () => {
    const w2 = await startWorker({ vars: { ARMS: "4", SNAPSHOT_MAX_AGE_MS: "0" } });
    try {
      await importItems(w2, makeItems(4, "even"));
      const seen = new Map();
      for (let i = 0; i < 400; i++) {
        const p = await (await w2.fetch(`/api/slots/${SLOT}/pick`)).json();
        seen.set(p.item, (seen.get(p.item) ?? 0) + 1);
      }
      // Four Beta(1,1) arms: each wins with p = 1/4; 400 picks give sd ~8.7; 5 sd either side.
      assert.equal(seen.size, 4);
      for (const [item, c] of seen) assert.ok(c > 100 - 44 && c < 100 + 44, `${item}: ${c}`);
    } finally {
      await w2.dispose();
    }
  });
});

describe("errors", () => {
  test("a misconfigured worker answers 500 with a reference, not the details; the homepage still serves", async () => {
    const w = await startWorker({ vars: { ARMS: "1" } });
    try {
      const r = await w.fetch(`/api/slots/${SLOT}/pick`);
      assert.equal(r.status, 500);
      const body = await r.json();
      assert.match(body.error, /reference [0-9a-f]{12}/);
      assert.ok(!body.error.includes("ARMS"), body.error);
      assert.equal((await w.fetch("/")).status, 200);
    } finally {
      await w.dispose();
    }
  });
});

describe("escaping", () => {
  test("hostile catalog text comes out escaped in every context", async () => {
    const w = await startWorker({ vars: { ARMS: "2", SNAPSHOT_MAX_AGE_MS: "0" } });
    try {
      const evil = {
        id: "evil-1",
        title: `</script><script>alert("t")</script>`,
        photographer: `"><img src=x onerror=alert(1)>`,
        image: `/images/a.svg?q="'<>`,
        category: `<b>cat</b>`,
      };
      await importItems(w, [evil, { ...evil, id: "evil-2" }]);
      const html = await (await w.fetch("/")).text();
      assert.ok(/data-top-pick-item="evil-[12]"/.test(html));
      assert.ok(!html.includes(`<script>alert`), "no injected script");
      assert.ok(!html.includes(`<img src=x`), "no injected element");
      assert.ok(html.includes("&lt;/script&gt;&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;"), "title as text");
      assert.ok(html.includes(`alt="&lt;/script&gt;`), "title as attribute");
      assert.ok(html.includes(`src="/images/a.svg?q=&quot;&#39;&lt;&gt;"`), "URL in attribute");
      assert.ok(html.includes("Photo by &quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
      const product = await (await w.fetch("/product/evil-1/")).text();
      assert.ok(!product.includes(`<script>alert`));
      assert.ok(!product.includes(`<b>cat</b>`));
      assert.ok(product.includes("&lt;b&gt;cat&lt;/b&gt;"));
      const api = await (await w.fetch(`/api/slots/${SLOT}/pick`)).json();
      assert.equal(api.title, evil.title, "JSON carries the text verbatim");
    } finally {
      await w.dispose();
    }
  });
});

describe("fallback", () => {
  const FALLBACK = JSON.stringify({ id: "fallback-1", title: "Our classic", image: "/images/demo-001.svg", photographer: "House" });
  const brokenStore = (behaviour) => ({
    name: "broken-store",
    modules: true,
    script: `
      export class BrokenSlot {
        constructor(state, env) {}
        async fetch(request) {
          ${behaviour}
        }
      }
      export default { fetch() { return new Response("broken store") } };
    `,
    durableObjects: { BROKEN: "BrokenSlot" },
  });
  for (const [name, behaviour] of [
    ["fails", `throw new Error("storage exploded");`],
    ["is slow", `await new Promise((r) => setTimeout(r, 3000)); return new Response("{}");`],
  ]) {
    test(`the page renders with the fallback when the Durable Object ${name}`, async () => {
      const w = await startWorker({
        vars: { FALLBACK_ITEM: FALLBACK, READ_BUDGET_MS: "50" },
        durableObjects: { SLOT_STORE: { className: "BrokenSlot", scriptName: "broken-store" } },
        extraWorkers: [brokenStore(behaviour)],
      });
      try {
        const r = await w.fetch("/");
        assert.equal(r.status, 200);
        assert.match(r.headers.get("server-timing"), /snapshot;desc="missing".*pick;desc="fallback"/);
        const html = await r.text();
        assert.equal(pickOf(html), "fallback-1");
        assert.ok(html.includes("Our classic"));
        const api = await (await w.fetch(`/api/slots/${SLOT}/pick`)).json();
        assert.equal(api.item, "fallback-1");
        assert.equal(api.fallback, true);
      } finally {
        await w.dispose();
      }
    });
  }

  test("without a fallback the slot is left as the page has it", async () => {
    const w = await startWorker({
      vars: { READ_BUDGET_MS: "50" },
      durableObjects: { SLOT_STORE: { className: "BrokenSlot", scriptName: "broken-store" } },
      extraWorkers: [brokenStore(`throw new Error("down");`)],
    });
    try {
      const r = await w.fetch("/");
      assert.equal(r.status, 200);
      const html = await r.text();
      assert.ok(html.includes("top-pick__empty"));
      assert.equal(pickOf(html), undefined);
    } finally {
      await w.dispose();
    }
  });
});

describe("deployed as one worker", () => {
  // wrangler.toml's worker alone (build/, with the objects) serves everything the edge worker
  // does: a shop may deploy just that one.
  let w;
  before(async () => {
    w = await startWorker({ bundle: "full", vars: { ARMS: "4", ROUND_IMPRESSIONS: "1000000", SNAPSHOT_MAX_AGE_MS: "0" } });
    await importItems(w, makeItems(4));
  });
  after(() => w?.dispose());

  test("renders the pick, learns from a batch and shows the dashboard", async () => {
    const html = await (await w.fetch("/")).text();
    assert.ok(makeItems(4).some((i) => i.id === pickOf(html)), `picked ${pickOf(html)}`);
    const s0 = await state(w);
    const best = s0.arms[1].item;
    const counts = s0.arms.map((a) => ({ item: a.item, impressions: 500, clicks: a.item === best ? 200 : 0 }));
    assert.equal((await postBatch(w, batch(counts))).status, 200);
    await eventually(async () => {
      const picks = await Promise.all(Array.from({ length: 20 }, () => w.fetch("/").then((r) => r.text())));
      return picks.filter((h) => pickOf(h) === best).length >= 18;
    }, 5000, "the pick to follow the batch");
    const dash = await w.fetch("/dashboard", { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(dash.status, 200);
    assert.match(await dash.text(), new RegExp(best));
  });
});
