"""The 2015 consumer loop, re-implemented minimally: for every Kafka message, decode the Avro
record with the avro library, classify it, and make one Redis call per counted event
(HINCRBY on the `impressions` or `clicks` hash), as the original Python consumer did.

  consumer2015.py memory --n N            records decoded from an in-memory list
  consumer2015.py kafka --brokers B --topic T --n N   records read with kafka-python

Bounded by --max-seconds. Prints one JSON line with the events/s."""

import argparse
import io
import json
import time

import avro.io
import redis

import records

ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["memory", "kafka"])
ap.add_argument("--n", type=int, default=50000)
ap.add_argument("--redis-port", type=int, default=16379)
ap.add_argument("--brokers")
ap.add_argument("--topic")
ap.add_argument("--partitions", type=int, default=3)
ap.add_argument("--max-seconds", type=float, default=30.0)
# fastavro (C-accelerated) is the generous choice for the baseline; `avro` is the reference
# library the 2015 code used, several times slower.
ap.add_argument("--decoder", choices=["fastavro", "avro"], default="fastavro")
args = ap.parse_args()

r = redis.Redis(host="127.0.0.1", port=args.redis_port)
r.delete("impressions", "clicks")
if args.decoder == "avro":
    reader = avro.io.DatumReader(records.schema())

    def decode(value):
        return reader.read(avro.io.BinaryDecoder(io.BytesIO(value)))
else:
    import fastavro

    with open(records.SCHEMA_PATH) as f:
        parsed = fastavro.parse_schema(json.load(f))

    def decode(value):
        return fastavro.schemaless_reader(io.BytesIO(value), parsed)


def handle(value):
    rec = decode(value)
    if rec["detectedDuplicate"] or rec["detectedCorruption"] or rec["userAgentType"] == "Robot":
        return 0
    item = rec["productId"]
    if item is None or rec["source"] != "top_pick":
        return 0
    if rec["eventType"] == "impression":
        r.hincrby("impressions", item, 1)
        return 1
    if rec["eventType"] == "pageView" and rec["pageType"] == "product":
        r.hincrby("clicks", item, 1)
        return 1
    return 0


# Encoded before the clock starts: only the consumer side is timed.
pool = [v for v, _, _ in records.pool(min(args.n, 4000))] if args.mode == "memory" else None


def messages():
    if args.mode == "memory":
        for i in range(args.n):
            yield pool[i % len(pool)]
        return
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=args.brokers, enable_auto_commit=False,
                      consumer_timeout_ms=5000)
    tps = [TopicPartition(args.topic, p) for p in range(args.partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    for m in c:
        yield m.value


# The clock starts at the first message, so connecting and the first fetch are not counted.
start = None
n = counted = 0
for value in messages():
    if start is None:
        start = time.perf_counter()
    counted += handle(value)
    n += 1
    if n >= args.n or time.perf_counter() - start > args.max_seconds:
        break
seconds = time.perf_counter() - start
print(json.dumps({
    "mode": args.mode, "decoder": args.decoder, "records": n, "events": counted, "seconds": seconds,
    "records_per_s": n / seconds, "events_per_s": counted / seconds,
    "redis_impressions": sum(int(v) for v in r.hvals("impressions")),
}))
