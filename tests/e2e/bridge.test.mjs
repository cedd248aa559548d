// The real ingest chain: Divolte-shaped Avro records on a tansu broker -> the collector-bridge
// binary (a Kafka consumer group) -> the built worker in workerd (Miniflare, on a loopback
// port) -> the slot's Durable Object. Counts must come out exact through noise, poison
// messages, a SIGKILL and restart, and a rebalance between two bridges.
import { test, describe, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startWorker, importItems, makeItems, state } from "../lib/worker.mjs";
import {
  E2E_TOOLS, missingTools, killAll, startBroker, produce, startBridge, metrics, waitFor,
  allApplied, appliedOffsets, tmpDir, sleep,
} from "../lib/e2e.mjs";
import { Stream, PARTITIONS, impression, assertExact } from "../lib/stream.mjs";

const skip = missingTools(E2E_TOOLS);
const WAIT_MS = 60_000;

describe("bridge -> worker through tansu", { skip, timeout: 240_000 }, () => {
  let broker;
  let dir;
  const workers = [];
  let topicNo = 0;

  before(async () => {
    broker = await startBroker();
    dir = tmpDir("e2e-bridge-");
  });
  after(async () => {
    await killAll();
    await Promise.all(workers.map((w) => w.dispose()));
  });

  /** A fresh worker (4 arms that do not rotate), a fresh topic, and the stream's items. */
  async function setup(seed) {
    const w = await startWorker({ port: 0, vars: { ARMS: "4", ROUND_IMPRESSIONS: "100000000" } });
    workers.push(w);
    await importItems(w, makeItems(4, `s${seed}`));
    const arms = (await state(w)).arms.map((a) => a.item);
    assert.equal(arms.length, 4);
    const topic = `divolte-${++topicNo}`;
    await broker.createTopic(topic, PARTITIONS);
    return { w, topic, stream: new Stream(arms, `s${seed}-outsider`, seed) };
  }

  const bridgeLogs = (bridges) => bridges.map((b) => `--- bridge log:\n${b.log().slice(-6000)}`).join("\n");

  async function waitApplied(w, topic, stream, bridges) {
    try {
      return await waitFor(async () => {
        const st = await state(w);
        return allApplied(st, topic, stream.sent) && st;
      }, WAIT_MS, "every produced offset to be applied");
    } catch (e) {
      e.message += `\n${bridgeLogs(bridges)}`;
      throw e;
    }
  }

  test("exact counts; noise, duplicates and robots are not counted", async () => {
    const { w, topic, stream } = await setup(1);
    const sent = await produce(broker.addr, topic, stream.records(3000));
    assert.equal(sent.sent, 3000);
    const bridge = await startBridge({ brokers: broker.addr, topic, group: "g-exact", workerUrl: w.url, dir, name: "exact" });
    const st = await waitApplied(w, topic, stream, [bridge]);
    assert.ok(stream.totals.impressions > 1000 && stream.totals.clicks > 100, "the stream has events to count");
    assertExact(st, stream);
    const m = await metrics(bridge.metricsAddr);
    assert.equal(m['collector_bridge_dropped_total{reason="duplicate"}'], stream.duplicates);
    assert.equal(m['collector_bridge_dropped_total{reason="robot"}'], stream.robots);
    assert.equal(m["collector_bridge_ignored_total"], stream.ignored);
    // Consumer lag per partition (from the last fetch's high watermark, every 5 s): none once
    // everything is read.
    const lagKey = (p) => `collector_bridge_consumer_lag{topic="${topic}",partition="${p}"}`;
    await waitFor(async () => {
      const now = await metrics(bridge.metricsAddr);
      return [...Array(PARTITIONS).keys()].every((p) => now[lagKey(p)] === 0);
    }, 20_000, "consumer lag 0 on every partition");
    // A clean stop leaves nothing behind: the same counts after it.
    const exit = await bridge.stop("SIGTERM");
    assert.equal(exit.code, 0, `SIGTERM exit ${JSON.stringify(exit)}\n${bridge.log()}`);
    assertExact(await state(w), stream);
  });

  test("records in Confluent wire format are counted exactly", async () => {
    const { w, topic, stream } = await setup(5);
    await produce(broker.addr, topic, stream.records(1500), { wire: "confluent" });
    const bridge = await startBridge({
      brokers: broker.addr, topic, group: "g-confluent", workerUrl: w.url, dir, name: "confluent", extra: ["--wire", "confluent"],
    });
    assertExact(await waitApplied(w, topic, stream, [bridge]), stream);
    const m = await metrics(bridge.metricsAddr);
    assert.equal(m['collector_bridge_dropped_total{reason="undecodable"}'], 0);
  });

  test("poison messages are skipped and counted, never as impressions or clicks", async () => {
    const { w, topic, stream } = await setup(2);
    await broker.createTopic(`${topic}-dead`, 1);
    const records = [...stream.records(500), ...stream.poison(), ...stream.records(500)];
    // An impression without an item decodes but cannot be classified.
    records.push(stream.record({ event: { ...impression("x"), productId: null } }));
    records.push(...stream.records(300));
    await produce(broker.addr, topic, records);
    const bridge = await startBridge({
      brokers: broker.addr, topic, group: "g-poison", workerUrl: w.url, dir, name: "poison",
      extra: ["--dead-letter-topic", `${topic}-dead`],
    });
    const st = await waitApplied(w, topic, stream, [bridge]);
    assertExact(st, stream);
    const m = await waitFor(async () => {
      const m = await metrics(bridge.metricsAddr);
      return m["collector_bridge_dead_lettered_total"] === 5 && m;
    }, 10_000, "five dead letters");
    assert.equal(m['collector_bridge_dropped_total{reason="undecodable"}'], 4, "undecodable messages");
    assert.equal(m['collector_bridge_dropped_total{reason="unclassifiable"}'], 1, "the record without an item");
    assert.equal(m['collector_bridge_events_total{kind="impression"}'], stream.totals.impressions + stream.outside.impressions);
    assert.equal(m['collector_bridge_events_total{kind="click"}'], stream.totals.clicks + stream.outside.clicks);
  });

  test("kill -9 mid-stream and a restart neither lose nor double-count", async () => {
    const { w, topic, stream } = await setup(3);
    const first = await startBridge({
      brokers: broker.addr, topic, group: "g-kill", workerUrl: w.url, dir, name: "kill-first",
      extra: ["--flush-events", "300"],
    });
    await produce(broker.addr, topic, stream.records(2000));
    await waitApplied(w, topic, stream, [first]);
    const before = { ...stream.sent };
    await produce(broker.addr, topic, stream.records(40_000));
    // Kill as soon as part of the second half is applied, before all of it is.
    const seen = await waitFor(async () => {
      const applied = appliedOffsets(await state(w), topic);
      return Object.entries(before).some(([p, n]) => applied[p] > n - 1) && applied;
    }, WAIT_MS, "the bridge to apply part of the second half");
    const killed = await first.stop("SIGKILL");
    assert.equal(killed.signal, "SIGKILL");
    const atKill = await state(w);
    assert.ok(!allApplied(atKill, topic, stream.sent), `killed mid-stream (applied ${JSON.stringify(seen)}, sent ${JSON.stringify(stream.sent)})`);
    assert.ok(atKill.totals.impressions < stream.totals.impressions);
    const second = await startBridge({
      brokers: broker.addr, topic, group: "g-kill", workerUrl: w.url, dir, name: "kill-second",
      extra: ["--flush-events", "300"],
    });
    const st = await waitApplied(w, topic, stream, [first, second]);
    assertExact(st, stream);
    // And a third run of the same group finds nothing left to count.
    await second.stop("SIGTERM");
    await produce(broker.addr, topic, stream.records(30));
    const third = await startBridge({ brokers: broker.addr, topic, group: "g-kill", workerUrl: w.url, dir, name: "kill-third" });
    assertExact(await waitApplied(w, topic, stream, [third]), stream);
  });

  test("two bridges in one consumer group, with rebalances mid-stream, give exact counts", async () => {
    const { w, topic, stream } = await setup(4);
    const opts = { brokers: broker.addr, topic, group: "g-pair", workerUrl: w.url, dir, extra: ["--flush-events", "300"] };
    const a = await startBridge({ ...opts, name: "pair-a" });
    await produce(broker.addr, topic, stream.records(5000));
    await waitFor(async () => (await state(w)).totals.impressions > 0, WAIT_MS, "bridge A to push");
    // B joins: the group rebalances while records are still arriving. They keep arriving, in
    // small bursts, until B has consumed some: one burst produced up front may be read to its
    // end by A before the group has given B its partitions.
    const b = await startBridge({ ...opts, name: "pair-b" });
    await waitFor(async () => {
      await produce(broker.addr, topic, stream.records(1000));
      const m = await metrics(b.metricsAddr);
      return (m["collector_bridge_consumed_total"] ?? 0) > 0;
    }, WAIT_MS, "bridge B to be assigned partitions and consume").catch((e) => {
      e.message += `\n${bridgeLogs([a, b])}`;
      throw e;
    });
    // A leaves abruptly: B takes over A's partitions after the session times out.
    await a.stop("SIGKILL");
    await produce(broker.addr, topic, stream.records(5000));
    const st = await waitApplied(w, topic, stream, [a, b]);
    assertExact(st, stream);
    const mb = await metrics(b.metricsAddr);
    assert.ok(mb["collector_bridge_consumed_total"] > 0);
  });
});
