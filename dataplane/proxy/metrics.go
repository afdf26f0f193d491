package proxy

import (
	"cmp"
	"slices"
	"sync/atomic"
	"time"

	"github.com/xlbproxy/xlb/dataplane/upstream"
)

// Per-backend metrics. Each worker counts for itself: every counter is an atomic of its process,
// so the request path takes no lock and allocates nothing, and a backend's counters are padded
// away from another's so that two backends busy on two threads do not share a cache line.
// Counters are cumulative from the moment the proxy first served the backend (by set and id, so
// that they carry across generations, and across its draining or disabling: a counter that
// restarted from zero would read as a reset); a backend that leaves the table has its counters
// dropped at that generation.

// LatencyBuckets are the upper bounds of the latency histograms' buckets; a last bucket holds
// what is slower than all.
var LatencyBuckets = [...]time.Duration{
	500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
	5 * time.Second, 10 * time.Second,
}

// LatencyBucketCount is the number of buckets of a Histogram.
const LatencyBucketCount = len(LatencyBuckets) + 1

type histogram struct {
	counts [LatencyBucketCount]atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for i < len(LatencyBuckets) && d > LatencyBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(uint64(max(d, 0)))
}

func (h *histogram) snapshot() Histogram {
	var out Histogram
	for i := range h.counts {
		out.Counts[i] = h.counts[i].Load()
	}
	out.Sum = time.Duration(h.sum.Load())
	return out
}

type backendMetrics struct {
	set, id, address string
	pool             *upstream.Pool // its pool in the table in force, for its TLS counts; poolsMu guards it

	requests, retries, localErrors, badResponses atomic.Uint64
	classes                                      [5]atomic.Uint64
	inFlight                                     atomic.Int64
	opened, reused, closedByBackend              atomic.Uint64
	bytesIn, bytesOut                            atomic.Uint64
	header, total                                histogram
	_                                            [64]byte
}

// Histogram is a latency distribution: Counts[i] requests took at most LatencyBuckets[i] (and
// more than the bucket before); the last count is of the slower ones.
type Histogram struct {
	Counts [LatencyBucketCount]uint64
	Sum    time.Duration
}

// BackendMetrics is one backend's counters in this proxy.
type BackendMetrics struct {
	Set, ID, Address string
	// Requests counts the attempts sent to it (or tried: a connect that failed counts), Retries
	// those that were not a request's first.
	Requests, Retries uint64
	// Responses counts its responses by class: [0] 1xx (final ones only: 101) to [4] 5xx.
	Responses [5]uint64
	// LocalOriginErrors counts attempts that failed on the way: connect refused or timed out,
	// reset or closed before a response, no response head within the backend timeout.
	LocalOriginErrors uint64
	// BadResponses counts malformed responses (answered 502).
	BadResponses uint64
	// InFlight is the attempts in progress now.
	InFlight int64
	// ConnectionsOpened, ConnectionsReused: connections dialled, and requests sent on a pooled
	// one. ConnectionsClosedByBackend: pooled connections the backend had closed when one was
	// reused.
	ConnectionsOpened, ConnectionsReused, ConnectionsClosedByBackend uint64
	// BytesIn is response body bytes received from it; BytesOut, request bytes sent to it when the
	// request was held whole (a streamed body is not counted).
	BytesIn, BytesOut uint64
	// HeaderLatency is from the attempt's start to the response head; TotalLatency to the end of
	// the response.
	HeaderLatency, TotalLatency Histogram
	// TLS is the backend's TLS handshakes (full, resumed, failed) and their latency, counted by
	// its pool since the pool was made: all zero for a plain backend. A change of the backend's
	// TLS (or of its files) makes a new pool, whose counts start over; two backends of two sets
	// with the same address and TLS share a pool, and so report the same counts.
	TLS upstream.Stats
}

// BackendMetrics returns the counters of every backend of the table in force, by set and id.
func (p *Proxy) BackendMetrics() []BackendMetrics {
	p.poolsMu.Lock()
	ms := make([]*backendMetrics, 0, len(p.metrics))
	pools := make([]*upstream.Pool, 0, len(p.metrics))
	for _, m := range p.metrics {
		ms = append(ms, m)
		pools = append(pools, m.pool)
	}
	p.poolsMu.Unlock()
	out := make([]BackendMetrics, len(ms))
	for i, m := range ms {
		o := &out[i]
		if pools[i] != nil {
			o.TLS = pools[i].Stats()
		}
		o.Set, o.ID, o.Address = m.set, m.id, m.address
		o.Requests, o.Retries = m.requests.Load(), m.retries.Load()
		for j := range m.classes {
			o.Responses[j] = m.classes[j].Load()
		}
		o.LocalOriginErrors, o.BadResponses = m.localErrors.Load(), m.badResponses.Load()
		o.InFlight = m.inFlight.Load()
		o.ConnectionsOpened, o.ConnectionsReused, o.ConnectionsClosedByBackend = m.opened.Load(), m.reused.Load(), m.closedByBackend.Load()
		o.BytesIn, o.BytesOut = m.bytesIn.Load(), m.bytesOut.Load()
		o.HeaderLatency, o.TotalLatency = m.header.snapshot(), m.total.snapshot()
	}
	slices.SortFunc(out, func(a, b BackendMetrics) int { return cmp.Or(cmp.Compare(a.Set, b.Set), cmp.Compare(a.ID, b.ID)) })
	return out
}

// metricsFor returns the counters of backend id of set at address, made on first use; the caller
// holds poolsMu. With metrics off it returns nil, and nothing is counted.
func (p *Proxy) metricsFor(set, id, address string, keep map[string]*backendMetrics) *backendMetrics {
	if p.cfg.NoBackendMetrics {
		return nil
	}
	key := set + "\x00" + id
	m := p.metrics[key]
	if m == nil || m.address != address {
		m = &backendMetrics{set: set, id: id, address: address}
	}
	keep[key] = m
	return m
}

// observeAttempt records one attempt at b that started at start.
func (c *conn) observeAttempt(m *backendMetrics, res attemptResult, start time.Time, bytesIn int64) {
	m.inFlight.Add(-1)
	now := time.Now()
	switch res {
	case attemptOK:
		if s := c.status; s >= 100 && s < 600 {
			m.classes[s/100-1].Add(1)
		}
		if !c.headerAt.IsZero() {
			m.header.observe(c.headerAt.Sub(start))
		}
		m.total.observe(now.Sub(start))
	case attemptNotSent, attemptNoAnswer, attemptTimeout, attemptAbandoned:
		m.localErrors.Add(1)
	case attemptBad:
		m.badResponses.Add(1)
	case attemptFatal:
		if c.status != 0 {
			m.classes[min(max(c.status/100-1, 0), 4)].Add(1)
			m.total.observe(now.Sub(start))
		}
	}
	if bytesIn > 0 {
		m.bytesIn.Add(uint64(bytesIn))
	}
}
