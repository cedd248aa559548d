// The shop in headless Chromium (Debian's /usr/bin/chromium driven by playwright-core) against
// the built worker in workerd: the pre-rendered pick without JavaScript, the Divolte impression
// signal with it, the click through to the product page, the dashboard, and screenshots at
// desktop and phone widths in tests/artifacts/.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { startWorker, importItems, state, ROOT, TOKEN } from "../lib/worker.mjs";
import { missingTools, tmpDir } from "../lib/e2e.mjs";

const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const skip = missingTools([["Chromium", CHROMIUM]]);
const ARTIFACTS = path.join(ROOT, "tests/artifacts");
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const SLOT_SEL = '[data-top-pick="home-top-pick"]';

describe("the shop in Chromium", { skip, timeout: 180_000 }, () => {
  let w;
  const catalog = JSON.parse(readFileSync(path.join(ROOT, "www/catalog/demo.json"), "utf8")).items;
  const byId = new Map(catalog.map((i) => [i.id, i]));
  const contexts = [];
  const dirs = [];

  /** A browser with a fresh profile (its own --user-data-dir); closed in `after`. */
  async function browser(options = {}) {
    const dir = tmpDir("chromium-profile-");
    dirs.push(dir);
    const ctx = await chromium.launchPersistentContext(dir, {
      executablePath: CHROMIUM,
      headless: true,
      args: FLAGS,
      viewport: DESKTOP,
      timeout: 30_000,
      // Answers the dashboard's sign-in prompt (the tests' ingest token serves operators).
      httpCredentials: { username: "operator", password: TOKEN },
      ...options,
    });
    contexts.push(ctx);
    ctx.setDefaultTimeout(15_000);
    return ctx;
  }

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    w = await startWorker({ port: 0, vars: { SNAPSHOT_MAX_AGE_MS: "0" } });
    await importItems(w, catalog);
  });
  after(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await w?.dispose();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** The pick the page shows, checked against the catalog. */
  async function pickOn(page) {
    const slot = page.locator(SLOT_SEL);
    const id = await slot.getAttribute("data-top-pick-item");
    assert.ok(byId.has(id), `the pick ${id} is a catalog item`);
    assert.match(await slot.getAttribute("data-top-pick-epoch"), /^\d+$/);
    return byId.get(id);
  }

  test("without JavaScript the homepage shows the pick: title, photo, photographer, link", async () => {
    const ctx = await browser({ javaScriptEnabled: false });
    const page = await ctx.newPage();
    const images = new Map();
    page.on("response", (r) => images.set(new URL(r.url()).pathname, r.status()));
    const r = await page.goto(w.url + "/", { waitUntil: "load" });
    assert.equal(r.status(), 200);
    const item = await pickOn(page);
    const slot = page.locator(SLOT_SEL);
    const link = slot.locator("a");
    assert.equal(await link.count(), 1);
    // The click carries the decision the slot element names.
    const decision = await slot.getAttribute("data-top-pick-decision");
    assert.match(decision ?? "", /^[0-9a-f]{19}$/);
    assert.equal(await link.getAttribute("href"), `/product/${item.id}/#/?source=top_pick&decision=${decision}`);
    assert.ok(await link.isVisible(), "the link is visible");
    const title = slot.getByText(item.title, { exact: true });
    assert.ok(await title.isVisible(), `title "${item.title}" visible`);
    assert.ok(await slot.getByText(`Photo by ${item.photographer}`).isVisible(), "photographer credit visible");
    const img = slot.locator("img");
    assert.equal(await img.getAttribute("src"), item.image);
    assert.equal(await img.getAttribute("alt"), item.title);
    assert.ok(await img.isVisible(), "the photo is visible");
    const box = await img.boundingBox();
    assert.ok(box.width >= 200 && box.height >= 100, `photo box ${JSON.stringify(box)}`);
    assert.equal(images.get(item.image), 200, "the photo was served");
    assert.equal(await page.locator(".top-pick__empty").count(), 0, "the placeholder is gone");
    await page.close();
  });

  test("with JavaScript the impression is signalled once, with the pick's id", async () => {
    const ctx = await browser();
    const page = await ctx.newPage();
    // Divolte's tag present before the pick renders.
    await page.addInitScript(() => {
      window.__signals = [];
      window.divolte = { signal: (...args) => window.__signals.push(JSON.parse(JSON.stringify(args))) };
    });
    await page.goto(w.url + "/", { waitUntil: "load" });
    const item = await pickOn(page);
    const signals = await page.evaluate(() => window.__signals);
    /** One impression signal of `id` with its decision: the id, a probability in (0, 1], the state's round and version. */
    const oneImpression = (got, id) => {
      assert.equal(got.length, 1, JSON.stringify(got));
      const [name, params] = got[0];
      assert.equal(name, "impression");
      assert.equal(params.source, "top_pick");
      assert.equal(params.productId, id);
      assert.match(params.decision, /^[0-9a-f]{19}$/);
      const p = Number(params.probability);
      assert.ok(p > 0 && p <= 1, params.probability);
      assert.match(params.version, /^\d+$/);
      assert.equal(params.holdout, "false");
    };
    oneImpression(signals, item.id);

    // Divolte's tag arriving after the pick (async script): the signal waits for `load`.
    const late = await ctx.newPage();
    await late.addInitScript(() => {
      window.__signals = [];
      document.addEventListener("DOMContentLoaded", () => {
        window.divolte = { signal: (...args) => window.__signals.push(JSON.parse(JSON.stringify(args))) };
      });
    });
    await late.goto(w.url + "/", { waitUntil: "load" });
    const lateItem = await pickOn(late);
    const lateSignals = await late.waitForFunction(() => window.__signals.length > 0 && window.__signals).then((h) => h.jsonValue());
    oneImpression(lateSignals, lateItem.id);

    // No tag at all: the page still works and nothing throws.
    const bare = await ctx.newPage();
    const errors = [];
    bare.on("pageerror", (e) => errors.push(e.message));
    await bare.goto(w.url + "/", { waitUntil: "load" });
    await pickOn(bare);
    assert.deepEqual(errors, []);
    for (const p of [page, late, bare]) await p.close();
  });

  test("clicking the pick opens its product page with the top-pick source in the fragment", async () => {
    const ctx = await browser();
    const page = await ctx.newPage();
    await page.goto(w.url + "/", { waitUntil: "load" });
    const item = await pickOn(page);
    await Promise.all([page.waitForURL(`**/product/${item.id}/**`), page.locator(SLOT_SEL).locator("a").click()]);
    const url = new URL(page.url());
    assert.equal(url.pathname, `/product/${item.id}/`);
    assert.match(url.hash, /^#\/\?source=top_pick&decision=[0-9a-f]{19}$/);
    await page.waitForLoadState("load");
    assert.equal(await page.locator("[data-product]").getAttribute("data-product"), item.id);
    assert.ok(await page.getByRole("heading", { level: 1, name: item.title }).isVisible(), "the product's title");
    const img = page.locator(`img[src="${item.image}"]`).first();
    assert.ok(await img.isVisible(), "the product's photo");
    assert.ok(await img.evaluate((i) => i.complete && i.naturalWidth > 0), "the photo loaded");
    await page.close();
  });

  // The dashboard (GET /dashboard): server-side SVG of each arm's posterior.
  test("the dashboard renders the posteriors of the arm set", async () => {
    const arms = (await state(w)).arms.map((a) => a.item);
    // Without credentials the sign-in is refused (headless Chromium cancels the prompt).
    const anonymous = await (await browser({ httpCredentials: undefined })).newPage();
    const denied = await anonymous.goto(w.url + "/dashboard").then((r) => r.status(), (e) => e.message);
    assert.ok(denied === 401 || /ERR_INVALID_AUTH_CREDENTIALS/.test(denied), `operators only: ${denied}`);
    await anonymous.close();
    const ctx = await browser();
    const page = await ctx.newPage();
    const r = await page.goto(w.url + "/dashboard", { waitUntil: "load" });
    assert.equal(r.status(), 200);
    assert.match(r.headers()["content-type"], /text\/html/);
    assert.ok((await page.locator("svg").count()) >= 1, "an SVG chart");
    const svg = page.locator("svg").first();
    assert.ok(await svg.isVisible());
    const box = await svg.boundingBox();
    assert.ok(box.width > 100 && box.height > 50, `chart box ${JSON.stringify(box)}`);
    const html = await page.content();
    for (const item of arms) assert.ok(html.includes(item), `the dashboard names arm ${item}`);
    await page.close();
  });

  test("screenshots at desktop and phone widths; the shop's pages fit them", async () => {
    const item = byId.get((await (await w.fetch("/api/slots/home-top-pick/pick")).json()).item);
    for (const [name, viewport, extra] of [
      ["desktop", DESKTOP, {}],
      ["phone", PHONE, { isMobile: true, hasTouch: true, deviceScaleFactor: 2 }],
    ]) {
      const ctx = await browser({ viewport, ...extra });
      const page = await ctx.newPage();
      for (const [what, p] of [["home", "/"], ["product", `/product/${item.id}/`], ["dashboard", "/dashboard"]]) {
        await page.goto(w.url + p, { waitUntil: "load" });
        const file = path.join(ARTIFACTS, `${what}-${name}.png`);
        await page.screenshot({ path: file, fullPage: true });
        assert.ok(existsSync(file), file);
        // Content wider than the viewport scrolls sideways (on a phone the layout viewport
        // grows to the content, so compare with the device width, not innerWidth).
        const overflow = (await page.evaluate(() => document.documentElement.scrollWidth)) - viewport.width;
        assert.ok(overflow <= 0, `${what} at ${name} width scrolls sideways by ${overflow}px`);
      }
      await page.close();
    }
  });

  test("a takedown disappears from the homepage within seconds", async () => {
    // Pin an item so every page shows it, then mark it unavailable the way a shop would (a
    // re-import with "available": false): the pin ends and the item leaves the set.
    const target = catalog[catalog.length - 1];
    const op = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
    const pinned = await w.fetch("/api/slots/home-top-pick/pin", {
      method: "POST",
      headers: op,
      body: JSON.stringify({ item: target.id, until_ms: Date.now() + 3_600_000 }),
    });
    assert.equal(pinned.status, 200);
    const ctx = await browser({ javaScriptEnabled: false });
    const page = await ctx.newPage();
    const shown = async () => {
      await page.goto(w.url + "/", { waitUntil: "load" });
      return page.locator(SLOT_SEL).getAttribute("data-top-pick-item");
    };
    const deadline = Date.now() + 10_000;
    while ((await shown()) !== target.id) {
      assert.ok(Date.now() < deadline, "the pinned item never reached the homepage");
      await new Promise((r) => setTimeout(r, 200));
    }
    await importItems(w, [{ ...target, available: false }]);
    const start = Date.now();
    while ((await shown()) === target.id) {
      assert.ok(Date.now() - start < 5_000, "the taken-down item was still served after 5 s");
      await new Promise((r) => setTimeout(r, 200));
    }
    const gone = Date.now() - start;
    for (let i = 0; i < 10; i++) assert.notEqual(await shown(), target.id, "and it never comes back");
    assert.ok(!(await page.content()).includes(target.title), "nothing of it on the page");
    const product = await page.goto(w.url + `/product/${target.id}/`);
    assert.equal(product.status(), 410);
    console.log(`# takedown off the homepage after ${gone} ms`);
    await page.close();
  });
});
