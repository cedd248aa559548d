"""The 2015 stack's `/item` endpoint, re-implemented minimally: Tornado, the arm set's clicks
and impressions as Redis hashes, one Beta draw per arm with numpy, argmax, JSON.

  item_server.py --port P --redis-port R --arms N

Seeds Redis with N arms from the demo catalog and some counts, then serves until killed."""

import argparse
import json

import numpy as np
import redis
import tornado.ioloop
import tornado.web

import records

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, default=18888)
ap.add_argument("--redis-port", type=int, default=16379)
ap.add_argument("--arms", type=int, default=8)
args = ap.parse_args()

r = redis.Redis(host="127.0.0.1", port=args.redis_port)
items = records.demo_items()[: args.arms]
r.delete("arm:impressions", "arm:clicks")
r.hset("arm:impressions", mapping={it: 100 + 10 * i for i, it in enumerate(items)})
r.hset("arm:clicks", mapping={it: 2 + i for i, it in enumerate(items)})


class ItemHandler(tornado.web.RequestHandler):
    def get(self):
        # One round trip for both hashes, as a careful 2015 implementation would do.
        pipe = r.pipeline(transaction=False)
        pipe.hgetall("arm:clicks")
        pipe.hgetall("arm:impressions")
        clicks, imps = pipe.execute()
        ids = list(imps.keys())
        c = np.array([int(clicks.get(k, 0)) for k in ids], dtype=float)
        n = np.array([int(imps[k]) for k in ids], dtype=float)
        draws = np.random.beta(1.0 + c, 1.0 + n - c)
        best = ids[int(np.argmax(draws))].decode()
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"item": best}))


app = tornado.web.Application([(r"/item", ItemHandler)])
app.listen(args.port, address="127.0.0.1")
print("ready", flush=True)
tornado.ioloop.IOLoop.current().start()
