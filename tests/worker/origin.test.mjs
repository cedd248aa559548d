// Origin mode under workerd: another site's homepage streamed through the rewriter.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { startWorker, importItems, makeItems } from "../lib/worker.mjs";

const pickOf = (html) => html.match(/data-top-pick-item="([^"]+)"/)?.[1];

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
      res.writeHead(200, [
        ["content-type", "text/html; charset=utf-8"],
        ["set-cookie", "a=1; Path=/; HttpOnly"],
        ["set-cookie", "b=2; Path=/; Secure"],
        ["content-security-policy", "default-src 'self'"],
        ["strict-transport-security", "max-age=63072000"],
        ["x-frame-options", "SAMEORIGIN"],
        ["vary", "Accept-Language"],
        ["etag", '"v1"'],
        ["cache-control", "public, max-age=600"],
      ]);
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
      // The origin's headers pass through, except what the rewrite makes wrong.
      assert.deepEqual(r.headers.getSetCookie(), ["a=1; Path=/; HttpOnly", "b=2; Path=/; Secure"]);
      assert.equal(r.headers.get("content-security-policy"), "default-src 'self'");
      assert.equal(r.headers.get("strict-transport-security"), "max-age=63072000");
      assert.equal(r.headers.get("x-frame-options"), "SAMEORIGIN");
      assert.equal(r.headers.get("vary"), "Accept-Language");
      assert.equal(r.headers.get("etag"), null, "the body changed");
      assert.match(r.headers.get("server-timing"), /pick;desc="thompson"/);
    } finally {
      await w.dispose();
      origin.close();
    }
  });
});
