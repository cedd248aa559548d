// The operator commands of the real collector-bridge binary (`slot pin|unpin|exclude|include|
// show`, `catalog delete`, `audit`) against the built worker in workerd (Miniflare, on a loopback
// port): what each command prints and how it exits, then what the worker itself serves and
// reports over HTTP afterwards (the public pick, the slot's state, the product pages, the audit
// log), which token the binary sends, and what it tells the user when the worker refuses it.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { startWorker, importItems, makeItems, TOKEN, SLOT } from "../lib/worker.mjs";
import { BRIDGE, missingTools, waitFor } from "../lib/e2e.mjs";

const skip = missingTools([["the bridge binary", BRIDGE]]);
const OP_TOKEN = "op-token-9876543210";
const VARS = { ARMS: "4", ROUND_IMPRESSIONS: "1000000", SNAPSHOT_MAX_AGE_MS: "0" };
const HOUR_MS = 3_600_000;

/**
 * Runs the bridge binary to completion with exactly the token variables in `tokens` (none of
 * the developer's own). Resolves with `{ code, signal, stdout, stderr }` whatever the exit.
 */
function cli(args, tokens = {}) {
  const env = { ...process.env };
  for (const k of ["OPERATOR_TOKEN", "INGEST_TOKEN", "BRIDGE_WORKER_URL", "RUST_LOG"]) delete env[k];
  return new Promise((resolve, reject) => {
    const child = spawn(BRIDGE, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...env, ...tokens } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

const show = (r) => `exit ${r.code ?? r.signal}\n--- stdout:\n${r.stdout}--- stderr:\n${r.stderr}`;

/** A worker, the binary pointed at it, and the worker's own answers over HTTP. */
function harness(w, { cliTokens, apiToken }) {
  const h = {
    /** The binary with the operator's token variables. */
    op: (...args) => cli([...args, "--worker-url", w.url], cliTokens),
    /** The binary with the given token variables instead. */
    as: (tokens, ...args) => cli([...args, "--worker-url", w.url], tokens),
    /** Runs `args`, asserts exit 0, resolves with its stdout. */
    async ok(...args) {
      const r = await h.op(...args);
      assert.equal(r.code, 0, `${args.join(" ")}: ${show(r)}`);
      return r.stdout;
    },
    async api(p, init = {}) {
      const r = await w.fetch(p, { ...init, headers: { authorization: `Bearer ${apiToken}`, ...(init.headers ?? {}) } });
      const text = await r.text();
      if (r.status !== 200) throw new Error(`${init.method ?? "GET"} ${p}: ${r.status} ${text}`);
      return JSON.parse(text);
    },
    state: () => h.api(`/api/slots/${SLOT}`),
    controls: () => h.api(`/api/slots/${SLOT}/controls`),
    arms: async () => (await h.state()).arms.map((a) => a.item),
    /** The public pick, as a visitor's page asks for it (no credentials). */
    async pick() {
      const r = await w.fetch(`/api/slots/${SLOT}/pick`);
      assert.equal(r.status, 200, `pick: ${r.status}`);
      return r.json();
    },
    /** Waits until the public pick reflects the slot's state at `version` or later. */
    async pickAtLeast(version) {
      return waitFor(async () => {
        const p = await h.pick();
        return p.version >= version && p;
      }, 10_000, `the published pick to reach version ${version}`);
    },
  };
  return h;
}

/** The time an output line gives (`... until 2026-11-28T14:00:00Z ...`), in ms. */
function untilIn(line) {
  const m = /until (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)/.exec(line);
  assert.ok(m, `a time in ${JSON.stringify(line)}`);
  return Date.parse(m[1]);
}

describe("operator commands of the bridge -> worker", { skip, timeout: 90_000 }, () => {
  let w;
  let h;
  const items = makeItems(12, "op");
  // One item is in the catalog but marked unavailable: it may be neither pinned nor drawn.
  items[11].available = false;
  const UNAVAILABLE = items[11].id;
  // Filled in as the tests go, for the audit at the end.
  const done = {};

  before(async () => {
    w = await startWorker({ port: 0, vars: { ...VARS, OPERATOR_TOKEN: OP_TOKEN } });
    h = harness(w, { cliTokens: { OPERATOR_TOKEN: OP_TOKEN, INGEST_TOKEN: TOKEN }, apiToken: OP_TOKEN });
    // The bridge's token may import the catalog; it is not an operator's here.
    await importItems(w, items);
    const st = await h.state();
    assert.equal(st.arms.length, 4);
    assert.ok(!st.arms.some((a) => a.item === UNAVAILABLE), "an unavailable item is never drawn");
  });
  after(async () => {
    await w?.dispose();
  });

  test("slot pin shows the item on every request until slot unpin", async () => {
    const arms = await h.arms();
    // An item outside the set: only the pin can make the slot show it.
    const x = items.find((i) => i.available !== false && !arms.includes(i.id)).id;
    done.pinned = x;
    const before = Date.now();
    const out = await h.ok("slot", "pin", x, "--for", "1h");
    const line = out.split("\n").find((l) => l.includes(x));
    assert.ok(line, `a line naming ${x}: ${out}`);
    assert.match(line, new RegExp(`^pinned ${x} to ${SLOT} until \\S+ \\(share 1, learning continues\\)$`));
    const until = untilIn(line);
    assert.ok(until >= before + HOUR_MS - 1000 && until <= Date.now() + HOUR_MS, `until ${line}`);

    // The worker's own record of it.
    const c = await h.controls();
    assert.equal(c.pin?.item, x, JSON.stringify(c));
    assert.equal(c.pin.share, 1);
    assert.equal(c.pin.learning, "continue");
    assert.ok(Math.abs(c.pin.until_ms - (before + HOUR_MS)) < 60_000, `until_ms ${c.pin.until_ms}`);
    const st = await h.state();
    assert.equal(st.pinned?.pin?.item, x, JSON.stringify(st.pinned));
    assert.deepEqual(st.arms.map((a) => a.item), arms, "a pin leaves the set alone");

    // Every visitor gets the pinned item, once the published snapshot has the pin.
    await h.pickAtLeast(st.version);
    for (let i = 0; i < 8; i++) {
      const p = await h.pick();
      assert.equal(p.item, x, `request ${i}: ${JSON.stringify(p)}`);
      assert.equal(p.pinned, true, `request ${i}: ${JSON.stringify(p)}`);
      assert.equal(p.fallback, false);
    }

    const shown = await h.ok("slot", "show");
    assert.match(shown, new RegExp(`^pinned ${x} to ${SLOT} until `, "m"));
    assert.equal(untilIn(shown), until);
    assert.match(shown, new RegExp(`^nothing excluded from ${SLOT}$`, "m"));
    const json = JSON.parse(await h.ok("slot", "show", "--json"));
    assert.equal(json.pin?.item, x);

    const unpinned = await h.ok("slot", "unpin");
    assert.match(unpinned, new RegExp(`^unpinned ${SLOT}: the bandit picks again$`, "m"));
    assert.equal((await h.controls()).pin, null);
    const after = await h.state();
    assert.equal(after.pinned, null);
    await h.pickAtLeast(after.version);
    for (let i = 0; i < 8; i++) {
      const p = await h.pick();
      assert.equal(p.pinned, false, `request ${i}: ${JSON.stringify(p)}`);
      assert.ok(arms.includes(p.item), `request ${i} picks an arm: ${JSON.stringify(p)} (arms ${arms})`);
    }
    assert.match(await h.ok("slot", "show"), new RegExp(`^no pin on ${SLOT}$`, "m"));
  });

  test("slot pin of an unavailable or unknown item is refused and changes nothing", async () => {
    const version = (await h.state()).version;
    const r = await h.op("slot", "pin", UNAVAILABLE, "--for", "30m");
    assert.notEqual(r.code, 0, show(r));
    assert.match(r.stderr, /refused the change/, show(r));
    assert.match(r.stderr, new RegExp(`item ${UNAVAILABLE} is marked unavailable`), show(r));
    assert.equal(r.stdout, "");

    const missing = await h.op("slot", "pin", "op-not-there", "--for", "30m");
    assert.notEqual(missing.code, 0, show(missing));
    assert.match(missing.stderr, /no item op-not-there in the catalog/, show(missing));

    const st = await h.state();
    assert.equal(st.pinned, null);
    assert.equal(st.version, version, "a refused pin writes nothing");
    assert.equal((await h.controls()).pin, null);
  });

  test("slot pin of an item not in the catalog says so, not that the slot is missing", async () => {
    const r = await h.op("slot", "pin", "op-not-there", "--for", "30m");
    assert.notEqual(r.code, 0, show(r));
    assert.doesNotMatch(r.stderr, /has no slot/, show(r));
    assert.match(r.stderr, /op-not-there is not in the catalog: import it first/, show(r));
  });

  test("slot exclude takes an arm out of the set at once; slot include allows it again", async () => {
    const arms = await h.arms();
    const a = arms[1];
    done.excluded = a;
    const out = await h.ok("slot", "exclude", a);
    assert.match(out, new RegExp(`^excluded ${a} from ${SLOT}$`, "m"));
    assert.match(out, new RegExp(`^excluded from ${SLOT} \\(1\\): ${a}$`, "m"));
    assert.match(out, new RegExp(`^arms that left the set: ${a}$`, "m"));

    // The very next read of the slot: A is gone and the set is full again from the catalog.
    const st = await h.state();
    const now = st.arms.map((x) => x.item);
    assert.ok(!now.includes(a), `${a} left the arms: ${now}`);
    assert.equal(now.length, 4, `the set refilled: ${now}`);
    assert.deepEqual(new Set(now).size, 4);
    assert.ok(!now.includes(UNAVAILABLE));
    for (const kept of arms.filter((x) => x !== a)) assert.ok(now.includes(kept), `${kept} stays`);
    assert.deepEqual(st.exclude, [a]);
    assert.deepEqual((await h.controls()).exclude, [a]);
    assert.match(await h.ok("slot", "show"), new RegExp(`^excluded from ${SLOT} \\(1\\): ${a}$`, "m"));

    // No visitor is shown it.
    await h.pickAtLeast(st.version);
    for (let i = 0; i < 20; i++) {
      const p = await h.pick();
      assert.notEqual(p.item, a, `request ${i}`);
      assert.ok(now.includes(p.item), `request ${i} picks an arm: ${p.item}`);
    }

    // An excluded item cannot be pinned.
    const refused = await h.op("slot", "pin", a, "--for", "1h");
    assert.notEqual(refused.code, 0, show(refused));
    assert.match(refused.stderr, new RegExp(`item ${a} is excluded from slot ${SLOT}`), show(refused));

    const back = await h.ok("slot", "include", a);
    assert.match(back, new RegExp(`^allowed ${a} again on ${SLOT}$`, "m"));
    assert.match(back, new RegExp(`^nothing excluded from ${SLOT}$`, "m"));
    assert.deepEqual((await h.state()).exclude, []);
    assert.deepEqual((await h.controls()).exclude, []);
    assert.match(await h.ok("slot", "show"), new RegExp(`^nothing excluded from ${SLOT}$`, "m"));
  });

  test("catalog delete removes an item everywhere and reports the ones it could not delete", async () => {
    const arms = await h.arms();
    const y = arms[0];
    done.deleted = y;
    assert.equal((await w.fetch(`/product/${y}/`)).status, 200);
    const r = await h.op("catalog", "delete", y, "op-missing");
    assert.notEqual(r.code, 0, show(r));
    assert.match(r.stdout, new RegExp(`^deleted ${y} \\(11 items left in the catalog\\)$`, "m"), show(r));
    assert.ok(!r.stdout.includes("op-missing"), show(r));
    assert.match(r.stderr, /could not delete op-missing: op-missing is not in the catalog/, show(r));
    assert.match(r.stderr, /1 of 2 items could not be deleted/, show(r));

    const page = await w.fetch(`/product/${y}/`);
    assert.equal(page.status, 404);
    await page.arrayBuffer();
    const now = await h.arms();
    assert.ok(!now.includes(y), `${y} left the arms: ${now}`);
    assert.equal(now.length, 4, `the set refilled: ${now}`);
    const again = await h.op("catalog", "delete", y);
    assert.notEqual(again.code, 0, show(again));
    assert.match(again.stderr, new RegExp(`could not delete ${y}: ${y} is not in the catalog`), show(again));
  });

  test("audit lists the operator's writes, with the operator as actor", async () => {
    const { entries } = JSON.parse(await h.ok("audit", "--json"));
    const by = (action) => entries.filter((e) => e.action === action);
    for (let i = 1; i < entries.length; i++) {
      assert.ok(entries[i - 1].at_ms >= entries[i].at_ms, "newest first");
    }
    const imports = by("catalog_import");
    assert.equal(imports.length, 1, JSON.stringify(entries));
    assert.equal(imports[0].actor, "ingest", "the import was made with the bridge's token");

    const pins = by("pin");
    assert.equal(pins.length, 1, `one pin (refused ones are not written): ${JSON.stringify(pins)}`);
    assert.equal(pins[0].target, SLOT);
    assert.match(pins[0].detail, new RegExp(`pinned ${done.pinned} `));
    const unpins = by("unpin");
    assert.equal(unpins.length, 1, JSON.stringify(unpins));
    assert.match(unpins[0].detail, new RegExp(`unpinned ${done.pinned}`));
    const excludes = by("exclude");
    assert.deepEqual(excludes.map((e) => e.detail).reverse(), [`excluded ${done.excluded}`, `included ${done.excluded}`]);
    const deletes = by("catalog_delete");
    assert.equal(deletes.length, 1, JSON.stringify(deletes));
    assert.equal(deletes[0].target, "catalog");
    assert.match(deletes[0].detail, new RegExp(done.deleted));
    for (const e of [...pins, ...unpins, ...excludes, ...deletes]) {
      assert.equal(e.actor, "operator", JSON.stringify(e));
    }
    // In the order they were made.
    const order = ["pin", "unpin", "exclude", "exclude", "catalog_delete"];
    assert.deepEqual(entries.filter((e) => order.includes(e.action)).map((e) => e.action).reverse(), order);

    // The text form: one line per entry, newest first, cut by --limit.
    const text = (await h.ok("audit")).trimEnd().split("\n");
    assert.equal(text.length, entries.length, text.join("\n"));
    assert.match(text[0], new RegExp(`^\\S+Z  operator  catalog_delete  catalog  .*${done.deleted}`));
    assert.ok(text.some((l) => new RegExp(`  operator  pin  +${SLOT}  pinned ${done.pinned} `).test(l)), text.join("\n"));
    assert.ok(text.some((l) => /  ingest    catalog_import  catalog  /.test(l)), text.join("\n"));
    const two = (await h.ok("audit", "--limit", "2")).trimEnd().split("\n");
    assert.deepEqual(two, text.slice(0, 2));
    const one = JSON.parse(await h.ok("audit", "--limit", "1", "--json")).entries;
    assert.deepEqual(one, entries.slice(0, 1));
  });

  test("a refused token fails and tells the user to set OPERATOR_TOKEN", async () => {
    const before = await h.state();
    const audited = JSON.parse(await h.ok("audit", "--json")).entries.length;
    const x = before.arms[0].item;

    const wrong = await h.as({ OPERATOR_TOKEN: "not-the-token", INGEST_TOKEN: TOKEN }, "slot", "pin", x, "--for", "1h");
    assert.notEqual(wrong.code, 0, show(wrong));
    assert.equal(wrong.stdout, "");
    assert.match(wrong.stderr, /refused the token from OPERATOR_TOKEN: set OPERATOR_TOKEN to the worker's operator token/, show(wrong));
    assert.match(wrong.stderr, /answered 401/, show(wrong));

    // Without OPERATOR_TOKEN the binary falls back to the ingest token, which this worker
    // does not take from operators.
    const ingest = await h.as({ INGEST_TOKEN: TOKEN }, "slot", "exclude", x);
    assert.notEqual(ingest.code, 0, show(ingest));
    assert.match(ingest.stderr, /refused the token from INGEST_TOKEN: set OPERATOR_TOKEN/, show(ingest));

    const none = await h.as({}, "audit");
    assert.notEqual(none.code, 0, show(none));
    assert.match(none.stderr, /none was sent .*set OPERATOR_TOKEN/, show(none));

    const del = await h.as({ OPERATOR_TOKEN: "not-the-token" }, "catalog", "delete", x);
    assert.notEqual(del.code, 0, show(del));
    assert.match(del.stderr, /set OPERATOR_TOKEN/, show(del));

    // Nothing was written.
    const st = await h.state();
    assert.equal(st.version, before.version);
    assert.equal(st.pinned, null);
    assert.deepEqual(st.exclude, []);
    assert.equal((await w.fetch(`/product/${x}/`)).status, 200);
    assert.equal(JSON.parse(await h.ok("audit", "--json")).entries.length, audited);
  });
});

describe("operator commands where the worker has no operator token", { skip, timeout: 60_000 }, () => {
  let w;
  let h;

  before(async () => {
    w = await startWorker({ port: 0, vars: VARS });
    // Only INGEST_TOKEN: the binary falls back to it, as the worker does.
    h = harness(w, { cliTokens: { INGEST_TOKEN: TOKEN }, apiToken: TOKEN });
    await importItems(w, makeItems(6, "fb"));
  });
  after(async () => {
    await w?.dispose();
  });

  test("the ingest token serves, and the audit names it", async () => {
    const x = (await h.arms())[2];
    const out = await h.ok("slot", "pin", x, "--for", "90s", "--share", "0.5", "--pause");
    assert.match(out, new RegExp(`^pinned ${x} to ${SLOT} until \\S+ \\(share 0.5, learning paused\\)$`, "m"));
    const c = await h.controls();
    assert.equal(c.pin?.item, x);
    assert.equal(c.pin.share, 0.5);
    assert.equal(c.pin.learning, "pause");
    const { entries } = JSON.parse(await h.ok("audit", "--json"));
    assert.deepEqual(entries.map((e) => [e.action, e.actor]), [["pin", "ingest"], ["catalog_import", "ingest"]]);
  });
});
