// `make reliability`: the full campaigns, one after another, and their figures written into the
// "Campaigns" section of docs/RELIABILITY.md. `node tests/reliability/run.mjs faults outage`
// runs some; `--short` runs the sizes `make test` uses.
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import path from "node:path";
import { execSync, spawnSync } from "node:child_process";
import { ROOT } from "../lib/worker.mjs";
import { killAll } from "../lib/e2e.mjs";
import { faultLoop, workerOutage, homepageWithoutStore, load } from "./campaigns.mjs";

const args = process.argv.slice(2);
const short = args.includes("--short");
const wanted = args.filter((a) => !a.startsWith("--"));
const log = (m) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${m}`);

/** The hostile-catalog browser test with `items` items; its summary line. */
function hostile({ items }) {
  const r = spawnSync(process.execPath, ["--test", path.join(ROOT, "tests/browser/hostile.test.mjs")], {
    env: { ...process.env, HOSTILE_ITEMS: String(items) },
    encoding: "utf8",
    timeout: 1_800_000,
  });
  const line = (r.stdout ?? "").split("\n").find((l) => l.includes("hostile catalog:"));
  if (r.status !== 0 || !line) throw new Error(`hostile catalog test failed:\n${(r.stdout ?? "").slice(-3000)}`);
  return { items, outcome: line.replace(/^.*hostile catalog: /, "") };
}

const FULL = {
  faults: { events: 1_000_000, kills: 20, restarts: 3, poison: 10_000, forged: 10_000 },
  outage: { events: 200_000, outageMs: 60_000 },
  homepage: { requests: 10_000, concurrency: 50 },
  homepage1: { requests: 1_000, concurrency: 1 },
  load: { requests: 10_000, concurrency: 100 },
  hostile: { items: 1000 },
};
const SHORT = {
  faults: { events: 30_000, kills: 4, restarts: 1, poison: 300, forged: 300 },
  outage: { events: 10_000, outageMs: 5_000 },
  homepage: { requests: 500, concurrency: 20 },
  homepage1: { requests: 100, concurrency: 1 },
  load: { requests: 1_000, concurrency: 20 },
  hostile: { items: 200 },
};
const sizes = short ? SHORT : FULL;
const RUNS = {
  faults: ["Fault loop", () => faultLoop({ ...sizes.faults, log })],
  outage: ["Worker outage", () => workerOutage({ ...sizes.outage, log })],
  homepage: ["Homepage without its store", () => homepageWithoutStore(sizes.homepage)],
  homepage1: ["Homepage without its store, one request at a time", () => homepageWithoutStore(sizes.homepage1)],
  load: ["Load", () => load(sizes.load)],
  hostile: ["Hostile catalog in Chromium", () => hostile(sizes.hostile)],
};

const results = [];
let failed = false;
for (const key of wanted.length ? wanted : Object.keys(RUNS)) {
  const [title, run] = RUNS[key] ?? [];
  if (!run) throw new Error(`unknown campaign ${key}: use ${Object.keys(RUNS).join(", ")}`);
  log(`${title}: ${JSON.stringify(sizes[key])}`);
  try {
    const r = await run();
    log(`${title}: ${JSON.stringify(r)}`);
    results.push([key, title, r]);
  } catch (e) {
    failed = true;
    log(`${title} FAILED: ${e.stack}`);
    results.push([key, title, { failed: e.message.split("\n")[0] }]);
  }
  await killAll();
}

const cmd = `node tests/reliability/run.mjs${args.length ? " " + args.join(" ") : ""}`;
const load1 = readFileSync("/proc/loadavg", "utf8").split(" ")[0];
let rev = "";
try {
  rev = execSync("git rev-parse --short HEAD", { cwd: ROOT }).toString().trim();
} catch {
  rev = "unknown";
}
const rows = results.map(([, title, r]) => `| ${title} | ${Object.entries(r).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join("; ")} |`);
const section = [
  "<!-- campaigns:start -->",
  `Produced by \`${cmd}\` (part of \`make reliability\`) at commit ${rev}, ${new Date().toISOString().slice(0, 10)}, on 2 cores (load average ${load1} at the end).`,
  "",
  "| campaign | result |",
  "|---|---|",
  ...rows,
  "<!-- campaigns:end -->",
].join("\n");
console.log(section);
if (!short && wanted.length === 0) {
  const file = path.join(ROOT, "docs/RELIABILITY.md");
  const text = existsSync(file) ? readFileSync(file, "utf8") : "# Reliability\n\n## Campaigns\n\n<!-- campaigns:start -->\n<!-- campaigns:end -->\n";
  const next = text.includes("<!-- campaigns:start -->")
    ? text.replace(/<!-- campaigns:start -->[\s\S]*<!-- campaigns:end -->/, section)
    : `${text.trimEnd()}\n\n## Campaigns\n\n${section}\n`;
  writeFileSync(file, next);
  log(`wrote ${file}`);
}
process.exit(failed ? 1 : 0);
