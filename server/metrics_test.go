package server

import (
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/proxy"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
)

// TestReporterDeltas: each report carries what changed since the one before; a backend whose
// counters went back to zero (it left and came back) is counted from zero.
func TestReporterDeltas(t *testing.T) {
	cur := []proxy.BackendMetrics{{Set: "web", ID: "a", Address: "h:1", Requests: 5, Responses: [5]uint64{0, 4, 0, 0, 1}}}
	r := &reporter{metrics: func() []proxy.BackendMetrics { return cur }, gen: func() uint64 { return 7 }}
	first := r.report()
	if first.Seq != 1 || first.ObservedGeneration != 7 || first.Backends[0].Requests != 5 || first.Backends[0].Responses[4] != 1 {
		t.Fatalf("first report %v", first)
	}
	cur[0].Requests, cur[0].Responses[1] = 8, 7
	second := r.report()
	if second.Seq != 2 || second.Backends[0].Requests != 3 || second.Backends[0].Responses[1] != 3 || second.Backends[0].Responses[4] != 0 {
		t.Fatalf("second report %v, want deltas 3 and 3", second)
	}
	cur[0].Requests, cur[0].Responses = 2, [5]uint64{0, 2}
	if third := r.report(); third.Backends[0].Requests != 2 {
		t.Fatalf("after a reset: %v, want 2 counted from zero", third)
	}
}

// TestLoadTotalsCountOnce: a report is added once per (pid, seq); in-flight is the sum of the
// live workers' last gauges.
func TestLoadTotalsCountOnce(t *testing.T) {
	lt := newLoadTotals(time.Second, hclog.NewNullLogger())
	rep := func(pid int32, seq uint64, requests uint64, inFlight int64) *loadv1.StreamMetricsRequest {
		return &loadv1.StreamMetricsRequest{Pid: pid, Seq: seq, Backends: []*loadv1.BackendLoad{
			{BackendSet: "web", BackendId: "a", Requests: requests, InFlight: inFlight, Responses: []uint64{0, requests, 0, 0, 0}}}}
	}
	lt.add(rep(10, 1, 5, 1))
	lt.add(rep(10, 1, 5, 1)) // the same report again
	lt.add(rep(11, 1, 3, 2))
	lt.add(rep(10, 2, 1, 0))
	got := lt.snapshot()
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
