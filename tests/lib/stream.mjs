// Divolte-shaped event streams for end-to-end tests and the reliability campaigns: a seeded
// mix of impressions, clicks, noise, poison and forged ids spread over partitions, with the
// exact counts the worker must end up with.
import assert from "node:assert/strict";

/** Partitions of the test topics. */
export const PARTITIONS = 3;

/** Deterministic pseudo-random numbers (mulberry32), so a failing stream can be replayed. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const impression = (item) => ({ eventType: "impression", pageType: "home", productId: item, source: "top_pick", location: "/" });
export const click = (item) => ({
  eventType: "pageView",
  pageType: "product",
  productId: item,
  source: "top_pick",
  location: `/product/${item}/#/?source=top_pick`,
});
/** Events the bridge must not count, with why. */
export const IGNORED = [
  ["product view without the top-pick source", (item) => ({ ...click(item), source: null, location: `/product/${item}/` })],
  ["another event type from the slot", (item) => ({ ...impression(item), eventType: "addToBasket" })],
  ["impression from another source", (item) => ({ ...impression(item), source: "search" })],
  ["impression Divolte flagged as a duplicate", (item) => ({ ...impression(item), detectedDuplicate: true })],
  ["click by a robot", (item) => ({ ...click(item), userAgentType: "Robot" })],
];

/**
 * A stream of `n` records over `items` (the arm set) and `outsider` (an item not in it), spread
 * round-robin over the partitions, and what the worker must end up with.
 */
export class Stream {
  constructor(items, outsider, seed, partitions = PARTITIONS) {
    this.items = items;
    this.partitions = partitions;
    this.outsider = outsider;
    this.next = rng(seed);
    this.n = 0;
    this.sent = Object.fromEntries(Array.from({ length: partitions }, (_, p) => [p, 0]));
    this.want = Object.fromEntries(items.map((i) => [i, { impressions: 0, clicks: 0 }]));
    this.outside = { impressions: 0, clicks: 0 };
    this.ignored = 0;
    this.duplicates = 0;
    this.robots = 0;
  }

  record(body) {
    const partition = this.n % this.partitions;
    this.sent[partition] += 1;
    this.n += 1;
    return { partition, key: `0:party${this.n % 101}`, ...body };
  }

  /** `n` records: about 45% impressions, 10% clicks, 5% outside the set, 40% ignored. */
  records(n) {
    const out = [];
    for (let i = 0; i < n; i++) {
      const r = this.next();
      const item = this.items[Math.floor(this.next() * this.items.length)];
      if (r < 0.45) {
        this.want[item].impressions += 1;
        out.push(this.record({ event: impression(item) }));
      } else if (r < 0.55) {
        this.want[item].clicks += 1;
        out.push(this.record({ event: click(item) }));
      } else if (r < 0.6) {
        this.outside.impressions += 1;
        out.push(this.record({ event: impression(this.outsider) }));
      } else {
        const k = Math.floor(this.next() * IGNORED.length);
        if (k === 3) this.duplicates += 1;
        else if (k === 4) this.robots += 1;
        else this.ignored += 1;
        out.push(this.record({ event: IGNORED[k][1](item) }));
      }
    }
    return out;
  }

  /** Poison message `k` (of four kinds): bytes that are no record, a truncated record, an
   * empty message, a record with absurd lengths. */
  poisonMessage(k) {
    const kinds = [
      Buffer.from("not avro at all"),
      Buffer.from([0, 0, 0]),
      Buffer.alloc(0),
      Buffer.from([1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
    ];
    return this.record({ raw: kinds[k % kinds.length] });
  }

  /** One poison message of each kind. */
  poison() {
    return [0, 1, 2, 3].map((k) => this.poisonMessage(k));
  }

  /**
   * Impressions and clicks whose item id a browser forged into something no catalog id is:
   * the bridge drops them; they are never counted.
   */
  forged(n) {
    const ids = ["a b", "..", ".", "<script>x</script>", "x\"y", "é", "/etc/passwd", "x".repeat(200), "\\u0000", "a\nb"];
    const out = [];
    for (let i = 0; i < n; i++) {
      const id = ids[Math.floor(this.next() * ids.length)];
      out.push(this.record({ event: this.next() < 0.8 ? impression(id) : click(id) }));
    }
    this.forgedSent = (this.forgedSent ?? 0) + n;
    return out;
  }

  get totals() {
    const v = Object.values(this.want);
    return {
      impressions: v.reduce((s, c) => s + c.impressions, 0),
      clicks: v.reduce((s, c) => s + c.clicks, 0),
    };
  }
}

/** Asserts the worker's state holds exactly what the stream says, item by item. */
export function assertExact(st, stream) {
  const got = Object.fromEntries(st.arms.map((a) => [a.item, { impressions: a.impressions, clicks: a.clicks }]));
  assert.deepEqual(got, stream.want, "per-arm impressions and clicks");
  assert.deepEqual({ impressions: st.totals.impressions, clicks: st.totals.clicks }, stream.totals, "totals");
  assert.equal(st.totals.outside_impressions, stream.outside.impressions, "impressions outside the set");
  assert.equal(st.totals.outside_clicks, stream.outside.clicks, "clicks outside the set");
}
