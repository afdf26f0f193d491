-- wrk script of bench/tls/run.sh: plain GETs (no request()/response() callbacks, so wrk keeps its
-- fast path), and one machine-readable line starting with "RESULT" at the end.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d errors=%d p50_us=%d p99_us=%d\n",
      summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
