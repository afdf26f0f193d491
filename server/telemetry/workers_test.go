package telemetry

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/dataplane/upstream"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
)

// TestReporterDeltas: each report carries what changed since the one before; a backend whose
// counters went back to zero (it left and came back) is counted from zero.
func TestReporterDeltas(t *testing.T) {
	cur := []proxy.BackendMetrics{{Set: "web", ID: "a", Address: "h:1", Requests: 5, Responses: [5]uint64{0, 4, 0, 0, 1}}}
	r := &Reporter{Metrics: func() []proxy.BackendMetrics { return cur }, Gen: func() uint64 { return 7 }}
	first := r.reports()[0]
	if first.Seq != 1 || first.ObservedGeneration != 7 || first.Backends[0].Requests != 5 || first.Backends[0].Responses[4] != 1 {
		t.Fatalf("first report %v", first)
	}
	cur[0].Requests, cur[0].Responses[1] = 8, 7
	second := r.reports()[0]
	if second.Seq != 2 || second.Backends[0].Requests != 3 || second.Backends[0].Responses[1] != 3 || second.Backends[0].Responses[4] != 0 {
		t.Fatalf("second report %v, want deltas 3 and 3", second)
	}
	cur[0].Requests, cur[0].Responses = 2, [5]uint64{0, 2}
	if third := r.reports()[0]; third.Backends[0].Requests != 2 {
		t.Fatalf("after a reset: %v, want 2 counted from zero", third)
	}
}

// TestReporterTLSDeltas: a backend's TLS handshakes go out as deltas with their latency; when its
// pool is replaced (a change of its TLS) and counts from zero again, the new counts are counted
// from zero, while its request counters go on; a plain backend carries no handshake histogram.
func TestReporterTLSDeltas(t *testing.T) {
	tlsOf := func(full, resumed, failed uint64, took time.Duration) upstream.Stats {
		st := upstream.Stats{FullHandshakes: full, ResumedHandshakes: resumed, HandshakeFailures: failed, HandshakeTime: took}
		st.HandshakeLatency[2] = full + resumed
		return st
	}
	cur := []proxy.BackendMetrics{
		{Set: "web", ID: "a", Address: "h:1", Requests: 10, TLS: tlsOf(1, 4, 1, 5*time.Millisecond)},
		{Set: "web", ID: "plain", Address: "h:2", Requests: 3},
	}
	r := &Reporter{Metrics: func() []proxy.BackendMetrics { return cur }, Gen: func() uint64 { return 1 }}
	byID := func(req *loadv1.StreamMetricsRequest) map[string]*loadv1.BackendLoad {
		out := map[string]*loadv1.BackendLoad{}
		for _, b := range req.Backends {
			out[b.BackendId] = b
		}
		return out
	}
	first := byID(r.reports()[0])
	if a := first["a"]; a.TlsHandshakesFull != 1 || a.TlsHandshakesResumed != 4 || a.TlsHandshakeFailures != 1 ||
		a.TlsHandshakeLatency.GetCounts()[2] != 5 || a.TlsHandshakeLatency.GetSumSeconds() != 0.005 ||
		len(a.TlsHandshakeLatency.GetBoundsSeconds()) != len(upstream.HandshakeBuckets) {
		t.Fatalf("first report of a: %v", a)
	}
	if p := first["plain"]; p.TlsHandshakeLatency != nil || p.TlsHandshakesFull+p.TlsHandshakesResumed+p.TlsHandshakeFailures != 0 {
		t.Fatalf("a plain backend: %v, want no TLS", p)
	}
	cur[0].Requests, cur[0].TLS = 12, tlsOf(1, 9, 1, 8*time.Millisecond)
	if a := byID(r.reports()[0])["a"]; a.Requests != 2 || a.TlsHandshakesResumed != 5 || a.TlsHandshakesFull != 0 || a.TlsHandshakeLatency.GetCounts()[2] != 5 {
		t.Fatalf("second report of a: %v, want 2 requests and 5 resumed", a)
	}
	cur[0].Requests, cur[0].TLS = 14, tlsOf(1, 0, 0, time.Millisecond) // a new pool
	if a := byID(r.reports()[0])["a"]; a.Requests != 2 || a.TlsHandshakesFull != 1 || a.TlsHandshakesResumed != 0 {
		t.Fatalf("after the pool was replaced: %v, want 2 requests and the new pool's 1 full handshake", a)
	}
}

// TestReportsBounded: a worker of 30,000 backends reports all of them once (the first report:
// each is new), in messages of at most reportBackendsMax, numbered in turn; then only those with
// something to say: a counter that moved, or an in-flight gauge that changed, back to 0 too. The
// supervisor's in-flight sum follows the gauges a report leaves out.
func TestReportsBounded(t *testing.T) {
	cur := make([]proxy.BackendMetrics, 30_000)
	for i := range cur {
		cur[i] = proxy.BackendMetrics{Set: "web", ID: fmt.Sprint("b", i), Address: "h:1"}
	}
	r := &Reporter{Metrics: func() []proxy.BackendMetrics { return cur }, Gen: func() uint64 { return 1 }}
	lt := NewTotals(time.Second, hclog.NewNullLogger())
	first := r.reports()
	if len(first) != 15 {
		t.Fatalf("first report in %d messages, want 15 of 2000 backends", len(first))
	}
	for i, req := range first {
		if len(req.Backends) != reportBackendsMax || req.Seq != uint64(i+1) {
			t.Fatalf("message %d: %d backends, seq %d", i, len(req.Backends), req.Seq)
		}
		if size := proto.Size(req); size > 1<<20 {
			t.Errorf("message %d: %d bytes", i, size)
		}
		lt.add(req)
	}
	if got := len(lt.Snapshot()); got != 30_000 {
		t.Fatalf("the supervisor knows %d backends, want 30000", got)
	}

	cur[7].Requests, cur[7].Responses[1] = 1, 1
	cur[9].InFlight = 3
	quiet := r.reports()
	if len(quiet) != 1 || len(quiet[0].Backends) != 2 || quiet[0].Seq != 16 {
		t.Fatalf("second report %v, want one message of b7 and b9", quiet)
	}
	lt.add(quiet[0])
	empty := r.reports()
	if len(empty) != 1 || len(empty[0].Backends) != 0 {
		t.Fatalf("nothing changed: %v, want one message of no backend", empty)
	}
	cur[9].InFlight = 0
	third := r.reports()
	if len(third) != 1 || len(third[0].Backends) != 1 || third[0].Backends[0].BackendId != "b9" {
		t.Fatalf("third report %v, want b9 alone (its gauge back to 0)", third)
	}
	inFlight := func() int64 {
		for _, b := range lt.Snapshot() {
			if b.BackendId == "b9" {
				return b.InFlight
			}
		}
		return -1
	}
	if n := inFlight(); n != 3 {
		t.Fatalf("b9 in flight %d after the second report, want 3", n)
	}
	lt.add(empty[0]) // leaves b9 out: it keeps 3
	if n := inFlight(); n != 3 {
		t.Fatalf("b9 in flight %d after a report without it, want 3 still", n)
	}
	lt.add(third[0])
	if n := inFlight(); n != 0 {
		t.Fatalf("b9 in flight %d after its gauge went to 0", n)
	}
}

// TestLoadTotalsCountOnce: a report is added once per (pid, seq); in-flight is the sum of the
// live workers' last gauges.
func TestLoadTotalsCountOnce(t *testing.T) {
	lt := NewTotals(time.Second, hclog.NewNullLogger())
	rep := func(pid int32, seq uint64, requests uint64, inFlight int64) *loadv1.StreamMetricsRequest {
		return &loadv1.StreamMetricsRequest{Pid: pid, Seq: seq, Backends: []*loadv1.BackendLoad{
			{BackendSet: "web", BackendId: "a", Requests: requests, InFlight: inFlight, Responses: []uint64{0, requests, 0, 0, 0}}}}
	}
	lt.add(rep(10, 1, 5, 1))
	lt.add(rep(10, 1, 5, 1)) // the same report again
	lt.add(rep(11, 1, 3, 2))
	lt.add(rep(10, 2, 1, 0))
	got := lt.Snapshot()
	if len(got) != 1 || got[0].Requests != 9 || got[0].Responses[1] != 9 || got[0].InFlight != 2 {
		t.Fatalf("totals %v, want 9 requests and 2 in flight", got)
	}
}

// TestCapBackends: past the cap, the rest of the backends are one "_overflow" series whose counts
// are their sums.
func TestCapBackends(t *testing.T) {
	var bs []*loadv1.BackendLoad
	for i := range 5 {
		bs = append(bs, &loadv1.BackendLoad{BackendSet: "web", BackendId: string(rune('a' + i)), Requests: uint64(i + 1), Responses: []uint64{0, uint64(i + 1)}})
	}
	if got := capBackends(bs, 5); len(got) != 5 {
		t.Fatalf("under the cap: %d series", len(got))
	}
	got := capBackends(bs, 3)
	if len(got) != 4 || got[3].BackendId != "_overflow" || got[3].Requests != 4+5 || got[3].Responses[1] != 9 || got[2].BackendId != "c" {
		t.Fatalf("capped: %v", got)
	}
}

// TestReporterConnections: a worker's open client connections travel as a gauge in every message
// and its pauses at the limit as a delta in the first; the supervisor keeps both per worker and
// the pauses in a total that outlives the worker.
func TestReporterConnections(t *testing.T) {
	st := proxy.Stats{Connections: 5, AcceptPaused: 3}
	r := &Reporter{Slot: 1, Metrics: func() []proxy.BackendMetrics { return nil }, Gen: func() uint64 { return 1 },
		Stats: func() proxy.Stats { return st }}
	lt := NewTotals(time.Second, hclog.NewNullLogger())
	first := r.reports()
	st = proxy.Stats{Connections: 4, AcceptPaused: 7}
	second := r.reports()
	if first[0].Connections != 5 || first[0].AcceptPaused != 3 || second[0].Connections != 4 || second[0].AcceptPaused != 4 {
		t.Fatalf("reports %v then %v: want gauges 5, 4 and deltas 3, 4", first, second)
	}
	for _, req := range append(first, append(second, second...)...) { // the repeat is counted once
		lt.add(req)
	}
	pid := first[0].Pid
	if c := lt.ConnsOf(pid); c != (WorkerConns{Slot: 1, Connections: 4, AcceptPaused: 7}) {
		t.Fatalf("the supervisor keeps %+v of worker %d", c, pid)
	}
	if _, total := lt.ConnStats(); total != 7 {
		t.Fatalf("total pauses %d, want 7", total)
	}
}

// TestLoadRetry: the load-report stream is retried as the xDS-lite stream is, 100ms doubling to
// 15s, and each wait is drawn anywhere below its bound, so data planes that lost the control
// plane together do not retry in lockstep (they did: the waits were the bounds).
func TestLoadRetry(t *testing.T) {
	b := loadRetry()
	b.Rand = func(n int64) int64 { return n - 1 }
	var got []time.Duration
	for range 10 {
		got = append(got, b.Next()+1)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 12800 * time.Millisecond, 15 * time.Second, 15 * time.Second}
	if !slices.Equal(got, want) {
		t.Fatalf("bounds of the waits %v, want %v", got, want)
	}
	b.Reset()
	b.Rand = func(int64) int64 { return 0 }
	if w := b.Next(); w != 0 {
		t.Fatalf("the shortest first wait is %v, want 0 (full jitter)", w)
	}
}
