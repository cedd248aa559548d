"""End to end through the broker, against the worker under Miniflare.

1. Throughput: the topic already holds N records (bench/py/produce.py wrote them and its JSON
   is --produced). Start `collector-bridge run`, and time until the worker's applied offsets
   reach the topic's end on every partition; then check the worker's totals count every event.
2. Feedback latency: with that bridge still running on default flush settings, produce one
   impression at a time and time until `GET /api/slots/{slot}` counts it, and until the pick
   API serves a snapshot at least that new (the edge read path: isolate cache -> KV).

Every wait is bounded. Prints one JSON object."""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import time
import urllib.request

from confluent_kafka import Producer

import records

ap = argparse.ArgumentParser()
ap.add_argument("--worker", required=True)
ap.add_argument("--brokers", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--produced", required=True, help="JSON line printed by produce.py")
ap.add_argument("--bridge", required=True, help="path of the collector-bridge binary")
ap.add_argument("--bridge-log", required=True)
ap.add_argument("--slot", default="home-top-pick")
ap.add_argument("--trials", type=int, default=50)
ap.add_argument("--timeout", type=float, default=180.0)
args = ap.parse_args()

produced = json.loads(open(args.produced).read().strip().splitlines()[-1])


def get(path):
    # Operator reads: the worker's token (the harness sets no separate operator token).
    req = urllib.request.Request(args.worker + path, headers={
        "Authorization": "Bearer " + os.environ.get("INGEST_TOKEN", "")})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def applied():
    """Last applied offset per partition of our topic."""
    out = {}
    for o in get(f"/api/slots/{args.slot}/offsets").get("offsets", []):
        if o["topic"] == args.topic:
            out[str(o["partition"])] = o["offset"]
    return out


def cpu_seconds(pid):
    """User + system CPU seconds a process has used (Linux /proc), or None."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine_busy():
    """(busy, total) CPU jiffies of the whole machine so far (Linux /proc/stat), or None."""
    try:
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v) - idle, sum(v)
    except (OSError, ValueError, IndexError):
        return None


def steady_window(timeline, total, lo=0.1, hi=0.9):
    """(records, seconds, first index, last index) between the first moments `lo` and `hi`
    of `total` records were applied: the backlog's steady middle, without the group join
    before it or the last partial batch after it (which waits for the flush timer, as no
    continuous stream does)."""
    def first_at(share):
        return next((i for i, (_, n) in enumerate(timeline) if n >= share * total), None)
    a, b = first_at(lo), first_at(hi)
    if a is None or b is None or timeline[b][0] <= timeline[a][0]:
        return None
    return timeline[b][1] - timeline[a][1], timeline[b][0] - timeline[a][0], a, b


def counted(state):
    t = state["totals"]
    return (t["impressions"] + t.get("outside_impressions", 0),
            t["clicks"] + t.get("outside_clicks", 0))


before = counted(get(f"/api/slots/{args.slot}"))
target = {p: end - 1 for p, end in produced["end_offsets"].items() if end > 0}
cmd = [args.bridge, "run", "--brokers", args.brokers, "--topic", args.topic,
       "--group", "bench-e2e", "--worker-url", args.worker, "--token-env", "INGEST_TOKEN",
       "--slot", args.slot, "--session-timeout-ms", "2000"]
log = open(args.bridge_log, "w")
t0 = time.perf_counter()
bridge = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                          env={**os.environ, "RUST_LOG": "warn"})
first = None
at_first = None
done_at = None
bridge_cpu = None
# The machine's CPU counters at each point of the timeline.
busy = []
# (seconds since start, records applied): each change of the worker's applied offsets.
timeline = []
try:
    while time.perf_counter() - t0 < args.timeout:
        a = applied()
        n = sum(o + 1 for o in a.values())
        if not timeline or timeline[-1][1] != n:
            timeline.append((round(time.perf_counter() - t0, 4), n))
            busy.append(machine_busy())
        if a and first is None:
            first = time.perf_counter()
            # What the first batches already counted is not part of the sustained rate.
            at_first = counted(get(f"/api/slots/{args.slot}"))
        if all(a.get(p, -1) >= off for p, off in target.items()):
            done_at = time.perf_counter()
            bridge_cpu = cpu_seconds(bridge.pid)
            break
        if bridge.poll() is not None:
            raise SystemExit(f"bridge exited with {bridge.returncode}; see {args.bridge_log}")
        time.sleep(0.02)
    if done_at is None:
        raise SystemExit(f"the worker did not apply all offsets within {args.timeout} s")
    after = counted(get(f"/api/slots/{args.slot}"))
    events = produced["impressions"] + produced["clicks"]
    got = (after[0] - before[0]) + (after[1] - before[1])
    throughput = {
        "command": " ".join(cmd),
        "records": produced["records"],
        "events": events,
        "events_counted_by_worker": got,
        "exact": got == events,
        "seconds_from_start": done_at - t0,
        "seconds_from_first_batch": done_at - (first or t0),
        "records_per_s": produced["records"] / (done_at - t0),
        "events_per_s": events / (done_at - t0),
        # Sustained: the events counted after the first applied batch was seen, over the time
        # from then (process start and the group join, a broker-side delay, left out).
        "seconds_to_first_batch": (first or t0) - t0,
        "events_per_s_after_group_join":
            (got - ((at_first[0] - before[0]) + (at_first[1] - before[1]) if at_first else 0))
            / (done_at - (first or t0)),
        "timeline": timeline,
    }
    steady = steady_window(timeline, produced["records"])
    if steady:
        n, seconds, a, b = steady
        # Records carry events at the produced ratio (impressions and clicks among pageviews).
        throughput["steady_records"] = n
        throughput["steady_seconds"] = seconds
        throughput["events_per_s_steady"] = n / seconds * events / produced["records"]
        if busy[a] and busy[b] and busy[b][1] > busy[a][1]:
            # Whether the machine had CPU to spare: the broker, the worker and the bridge share it.
            throughput["machine_busy_steady"] = (busy[b][0] - busy[a][0]) / (busy[b][1] - busy[a][1])
    if bridge_cpu:
        # The bridge's own CPU (its threads and librdkafka's) from its start to the last batch:
        # what one core must supply per event, whatever the broker and the worker beside it use.
        throughput["bridge_cpu_seconds"] = bridge_cpu
        throughput["events_per_bridge_cpu_s"] = events / bridge_cpu

    # Feedback latency. A random pause between trials puts each event at a random phase of
    # the bridge's 500 ms flush timer and of the 1 s publish interval.
    s = records.schema()
    import avro.io
    writer = avro.io.DatumWriter(s)
    items = records.demo_items()
    producer = Producer({"bootstrap.servers": args.brokers, "linger.ms": 0})
    to_state, to_pick, misses = [], [], 0
    for trial in range(args.trials):
        time.sleep(random.uniform(0.05, 0.6))
        base = counted(get(f"/api/slots/{args.slot}"))[0]
        now_ms = int(time.time() * 1000)
        datum, party = records.event(10_000_000 + trial, items[trial % len(items)],
                                     "impression", now_ms)
        start = time.perf_counter()
        producer.produce(args.topic, records.encode(writer, datum), party.encode())
        producer.poll(0)
        deadline = start + 10.0
        version = None
        while time.perf_counter() < deadline:
            st = get(f"/api/slots/{args.slot}")
            if counted(st)[0] > base:
                to_state.append(time.perf_counter() - start)
                version = st["version"]
                break
            time.sleep(0.005)
        if version is None:
            misses += 1
            continue
        while time.perf_counter() < deadline:
            if get(f"/api/slots/{args.slot}/pick").get("version", -1) >= version:
                to_pick.append(time.perf_counter() - start)
                break
            time.sleep(0.005)
        else:
            misses += 1
        producer.flush(5)

    def pct(xs, q):
        if not xs:
            return None
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

    latency = {
        "trials": args.trials,
        "misses": misses,
        "state_p50_s": pct(to_state, 0.5), "state_p95_s": pct(to_state, 0.95),
        "state_max_s": max(to_state) if to_state else None,
        "pick_p50_s": pct(to_pick, 0.5), "pick_p95_s": pct(to_pick, 0.95),
        "pick_max_s": max(to_pick) if to_pick else None,
        "state_mean_s": statistics.mean(to_state) if to_state else None,
        "pick_mean_s": statistics.mean(to_pick) if to_pick else None,
    }
finally:
    bridge.send_signal(signal.SIGTERM)
    try:
        bridge.wait(30)
    except subprocess.TimeoutExpired:
        bridge.kill()
        bridge.wait()

print(json.dumps({"throughput": throughput, "latency": latency}))
