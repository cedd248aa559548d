-- wrk script: after the run, print one JSON line with throughput, latency percentiles (ms) and
-- error counts, so the suite reads numbers instead of scraping wrk's text.
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  local non2xx = e.status
  io.write(string.format(
    'WRKJSON {"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "mean_ms": %.3f, "max_ms": %.3f, "errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}, "bytes": %d}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.timeout, non2xx, summary.bytes))
end
