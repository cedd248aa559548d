"""Divolte-shaped Avro records in the project's schema (collector-bridge/schema/TopPickEvent.avsc),
shared by the producer and the 2015-style consumer so both sides see the same bytes."""

import io
import json
import os

import avro.io
import avro.schema

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCHEMA_PATH = os.path.join(ROOT, "collector-bridge", "schema", "TopPickEvent.avsc")
UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/120.0 Safari/537.36")


def schema():
    with open(SCHEMA_PATH) as f:
        return avro.schema.parse(f.read())


def demo_items():
    with open(os.path.join(ROOT, "www", "catalog", "demo.json")) as f:
        return [i["id"] for i in json.load(f)["items"]]


def kind(i):
    """The traffic mix, per ten records: 6 impressions, 1 top-pick click, 3 unrelated views."""
    r = i % 10
    if r < 6:
        return "impression"
    if r == 6:
        return "click"
    return "noise"


def event(i, item, k, ts):
    party = "0:bench%08x:kZmgRSPzDIQIdgKY8f3W" % i
    e = {
        "detectedDuplicate": False,
        "detectedCorruption": False,
        "firstInSession": i % 20 == 0,
        "timestamp": ts,
        "clientTimestamp": ts,
        "remoteHost": "127.0.0.1",
        "referer": None,
        "location": "http://127.0.0.1/",
        "viewportPixelWidth": 1280,
        "viewportPixelHeight": 800,
        "partyId": party,
        "sessionId": "0:s%08x" % i,
        "pageViewId": "0:p%08x" % i,
        "eventId": "0:e%08x" % i,
        "eventType": "impression",
        "userAgentString": UA,
        "userAgentType": "Browser",
        "userAgentDeviceCategory": "Personal computer",
        "pageType": "home",
        "productId": item,
        "category": None,
        "source": "top_pick",
        "slot": "home-top-pick",
        "epoch": 1,
        "eventParameters": {"source": "top_pick", "productId": item},
    }
    if k == "click":
        e.update(eventType="pageView", pageType="product", eventParameters=None,
                 location="http://127.0.0.1/product/%s/#/?source=top_pick" % item)
    elif k == "noise":
        e.update(eventType="pageView", pageType="category", source=None, productId=None,
                 slot=None, epoch=None, eventParameters=None,
                 location="http://127.0.0.1/category/animals/")
    return e, party


def encode(writer, datum):
    buf = io.BytesIO()
    writer.write(datum, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def pool(n, ts=1_470_000_000_000):
    """n encoded records (bytes, key, kind). Encoding with the pure-Python library is slow, so
    callers cycle over a pool; the bridge drops duplicates by Divolte's flag, not by content."""
    s = schema()
    w = avro.io.DatumWriter(s)
    items = demo_items()
    out = []
    for i in range(n):
        k = kind(i)
        e, party = event(i, items[(i * 7) % len(items)], k, ts + i)
        out.append((encode(w, e), party.encode(), k))
    return out
