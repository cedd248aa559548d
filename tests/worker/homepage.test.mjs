// The homepage and the pick API under workerd: pre-rendered pick, posterior-following picks,
// escaping of catalog text, the fallback when the store fails, and catalog imports.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { startWorker, importItems, makeItems, batch, postBatch, state, eventually, auth, SLOT, ROOT } from "../lib/worker.mjs";

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
    assert.ok(html.includes(`href="/product/${id}/#/?source=top_pick"`));
    assert.ok(html.includes(`<span class="top-pick__title">Item ${n}</span>`));
    assert.ok(html.includes(`src="/images/${id}.svg"`));
    assert.ok(html.includes(`d.signal('impression',p)`));
    assert.ok(html.includes(`({source:'top_pick',productId:"${id}"})`));
    assert.ok(!html.includes("top-pick__empty"), "the placeholder is replaced");
  });

  test("static files are served from www/", async () => {
    const css = await w.fetch("/style.css");
    assert.equal(css.status, 200);
    assert.match(await css.text(), /\.top-pick/);
    const img = await w.fetch("/images/demo-001.svg");
    assert.equal(img.status, 200);
  });

  test("product pages render from the catalog", async () => {
    const r = await w.fetch("/product/it-2/");
    assert.equal(r.status, 200);
    const html = await r.text();
    assert.ok(html.includes('data-product="it-2"'));
    assert.ok(html.includes("<h1 class=\"product__title\">Item 2</h1>"));
    assert.equal((await w.fetch("/product/nope/")).status, 404);
    const redirect = await w.fetch("/product/it-2", { redirect: "manual" });
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.get("location"), "/product/it-2/");
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

describe("catalog import", () => {
  const shop = path.resolve(ROOT, "../shared/divolte-shop/catalog");
  test("the Divolte shop's catalog imports in its own format", { skip: !existsSync(shop) && `${shop} is absent (shop fixtures live outside the repository)` }, async () => {
    const w = await startWorker({ vars: { SNAPSHOT_MAX_AGE_MS: "0" } });
    try {
      const ids = new Set();
      for (const file of readdirSync(shop).filter((f) => f.endsWith(".json"))) {
        const category = path.basename(file, ".json");
        const lines = readFileSync(path.join(shop, file), "utf8").split("\n").filter((l) => l.trim());
        lines.forEach((l) => ids.add(String(JSON.parse(l).id)));
        // Batches under the 1 MiB body limit.
        let chunk = [];
        let size = 0;
        const flush = async () => {
          if (!chunk.length) return;
          const r = await w.fetch(`/api/catalog?format=divolte-shop&category=${category}`, {
            method: "POST",
            headers: auth({ "content-type": "application/x-ndjson" }),
            body: chunk.join("\n"),
          });
          assert.equal(r.status, 200, await r.clone().text());
          chunk = [];
          size = 0;
        };
        for (const l of lines) {
          if (size + l.length > 900 * 1024 || chunk.length >= 2000) await flush();
          chunk.push(l);
          size += l.length + 1;
        }
        await flush();
      }
      const total = (await (await w.fetch("/api/catalog")).json()).total;
      assert.equal(total, ids.size, "one entry per distinct id");
      const s = await state(w);
      assert.equal(s.arms.length, 8);
      for (const a of s.arms) assert.ok(ids.has(a.item), a.item);
      const pick = await (await w.fetch(`/api/slots/${SLOT}/pick`)).json();
      assert.ok(ids.has(pick.item));
      assert.ok(pick.image.startsWith("https://"), "shop images are absolute URLs");
      assert.equal((await w.fetch(`/product/${pick.item}/`)).status, 200);
    } finally {
      await w.dispose();
    }
  });

  test("a catalog of 100,000 items imports and rotates", async () => {
    const w = await startWorker({ vars: { ARMS: "8", ROUND_IMPRESSIONS: "100" } });
    try {
      const n = 100_000;
      for (let start = 0; start < n; start += 2000) {
        const items = Array.from({ length: 2000 }, (_, i) => ({ id: `big-${start + i}`, title: `Big ${start + i}`, image: "/images/demo-002.svg" }));
        await importItems(w, items);
      }
      assert.equal((await (await w.fetch("/api/catalog")).json()).total, n);
      const s0 = await state(w);
      assert.equal(s0.arms.length, 8);
      const r = await postBatch(w, batch(s0.arms.map((a) => ({ item: a.item, impressions: 13, clicks: 1 }))));
      assert.equal(r.body.rotated, true);
      const s1 = await state(w);
      assert.equal(s1.round, 2);
      assert.equal(s1.arms.length, 8);
      assert.equal(s1.arms.filter((a) => !s0.arms.some((b) => b.item === a.item)).length, 4);
    } finally {
      await w.dispose();
    }
  });
});

describe("dashboard", () => {
  test("draws every arm's posterior, P(best) and the round history without scripts", async () => {
    const w = await startWorker({ vars: { ARMS: "4", ROUND_IMPRESSIONS: "40", COOLDOWN_ROUNDS: "0" } });
    try {
      await importItems(w, makeItems(10, "dash"));
      const s0 = await state(w);
      await postBatch(w, batch(s0.arms.map((a, i) => ({ item: a.item, impressions: 10, clicks: i }))));
      const r = await w.fetch("/dashboard");
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
      assert.equal((await w.fetch("/dashboard?slot=nope")).status, 404);
    } finally {
      await w.dispose();
    }
  });
});

describe("origin mode", () => {
  test("ORIGIN_URL: the origin's homepage is streamed through the rewriter", async () => {
    const { createServer } = await import("node:http");
    let seenHeaders;
    const origin = createServer((req, res) => {
      seenHeaders = req.headers;
      if (req.url !== "/") {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      // Small chunks, so the slot element arrives split across several of them.
      const page = `<!doctype html><html><body><h1>Origin shop</h1><div class="hero" data-top-pick="home-top-pick"><p>origin placeholder</p></div>${"<p>filler</p>".repeat(500)}</body></html>`;
      const chunks = page.match(/[\s\S]{1,37}/g);
      let i = 0;
      const next = () => (i < chunks.length ? res.write(chunks[i++], next) : res.end());
      next();
    });
    await new Promise((r) => origin.listen(0, "127.0.0.1", r));
    const w = await startWorker({ vars: { ORIGIN_URL: `http://127.0.0.1:${origin.address().port}`, ARMS: "2" } });
    try {
      await importItems(w, makeItems(2, "org"));
      const r = await w.fetch("/", { headers: { cookie: "session=abc" } });
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("cache-control"), "private, no-store");
      const html = await r.text();
      assert.ok(html.startsWith("<!doctype html><html><body><h1>Origin shop</h1>"));
      assert.match(pickOf(html), /^org-[01]$/);
      assert.ok(!html.includes("origin placeholder"));
      assert.equal((html.match(/<p>filler<\/p>/g) ?? []).length, 500, "the rest of the page streams through intact");
      assert.equal(seenHeaders.cookie, "session=abc", "the visitor's cookies reach the origin");
    } finally {
      await w.dispose();
      origin.close();
    }
  });
});

describe("category pages", () => {
  test("list a category's items, link to their product pages, and 404 otherwise", async () => {
    const w = await startWorker({ vars: { ARMS: "2" } });
    try {
      const items = [
        ...makeItems(3, "fl").map((i) => ({ ...i, category: "flowers" })),
        { ...makeItems(1, "car")[0], category: "cars", title: "<i>Roadster</i>" },
        { ...makeItems(1, "odd")[0], category: "odd name" },
      ];
      await importItems(w, items);
      const r = await w.fetch("/category/flowers/");
      assert.equal(r.status, 200);
      const html = await r.text();
      assert.equal((html.match(/<li class="card">/g) ?? []).length, 3);
      for (const i of items.slice(0, 3)) assert.ok(html.includes(`href="/product/${i.id}/"`), i.id);
      assert.ok(!html.includes("car-0"));
      const cars = await (await w.fetch("/category/cars/")).text();
      assert.ok(cars.includes("&lt;i&gt;Roadster&lt;/i&gt;") && !cars.includes("<i>Roadster"));
      const product = await (await w.fetch("/product/fl-0/")).text();
      assert.ok(product.includes(`<a href="/category/flowers/">flowers</a>`));
      const odd = await (await w.fetch("/product/odd-0/")).text();
      assert.ok(odd.includes("<span>odd name</span>"), "unlinkable categories are shown as text");
      assert.equal((await w.fetch("/category/none/")).status, 404);
      assert.equal((await w.fetch("/category/bad%20name/")).status, 404);
      const redirect = await w.fetch("/category/flowers", { redirect: "manual" });
      assert.equal(redirect.headers.get("location"), "/category/flowers/");
    } finally {
      await w.dispose();
    }
  });
});
