"""Produces N Divolte-shaped records into a Kafka topic as fast as librdkafka allows
(confluent-kafka), round-robin over the partitions, and prints one JSON line: how many of each
kind, the time it took, and the end offset of each partition of the (new) topic."""

import argparse
import json
import time

from confluent_kafka import Producer

import records

ap = argparse.ArgumentParser()
ap.add_argument("--brokers", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--n", type=int, required=True)
ap.add_argument("--partitions", type=int, default=3)
ap.add_argument("--pool", type=int, default=4000)
args = ap.parse_args()

pool = records.pool(args.pool)
p = Producer({
    "bootstrap.servers": args.brokers,
    "linger.ms": 20,
    "batch.num.messages": 10000,
    "batch.size": 4_000_000,
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 2_000_000,
})
counts = {"impression": 0, "click": 0, "noise": 0}
start = time.perf_counter()
for i in range(args.n):
    value, key, k = pool[i % len(pool)]
    counts[k] += 1
    while True:
        try:
            p.produce(args.topic, value, key, partition=i % args.partitions)
            break
        except BufferError:  # local queue full: let librdkafka drain it
            p.poll(0.005)
    if i % 20000 == 0:
        p.poll(0)
left = p.flush(120)
seconds = time.perf_counter() - start
if left:
    raise SystemExit(f"produce: {left} messages not delivered")

# The topic is new (the broker keeps it in memory), so a partition's end offset is the number of
# records sent to it. tansu's ListOffsets answer is not used: it reported about 65,536 for
# partitions holding 66,667 records, all of which a consumer reads back.
ends = {str(p): len(range(p, args.n, args.partitions)) for p in range(args.partitions)}
print(json.dumps({
    "records": args.n, "impressions": counts["impression"], "clicks": counts["click"],
    "noise": counts["noise"], "seconds": seconds, "records_per_s": args.n / seconds,
    "end_offsets": ends,
}))
