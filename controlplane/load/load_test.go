package load

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
)

// TestAggregator: a report counts once per (node, instance, seq); a new instance of a node (a
// restarted or upgraded supervisor) counting from seq 1 again is counted; the sum is over nodes.
func TestAggregator(t *testing.T) {
	a := NewAggregator(time.Second, nil)
	rep := func(node, instance string, seq, requests uint64, inFlight int64) *loadv1.StreamLoadStatsRequest {
		return &loadv1.StreamLoadStatsRequest{NodeId: node, Instance: instance, Seq: seq, Backends: []*loadv1.BackendLoad{
			{BackendSet: "web", BackendId: "a", Requests: requests, Responses: []uint64{0, requests}, InFlight: inFlight,
				TotalLatency: &loadv1.Histogram{Counts: []uint64{requests, 0}, SumSeconds: 0.5}}}}
	}
	a.add(rep("n1", "i1", 1, 10, 1))
	a.add(rep("n1", "i1", 1, 10, 1)) // sent twice
	a.add(rep("n1", "i2", 1, 5, 0))  // a new supervisor of n1
	a.add(rep("n2", "j1", 1, 7, 2))
	l := a.Load()
	if len(l.Backends) != 1 || l.Backends[0].Requests != 22 || l.Backends[0].Responses[1] != 22 || l.Backends[0].InFlight != 2 ||
		l.Backends[0].TotalLatency.Counts[0] != 22 {
		t.Fatalf("sum %v; want 22 requests, 2 in flight", l.Backends)
	}
	if len(l.DataPlanes) != 2 || l.DataPlanes[0].NodeId != "n1" || l.DataPlanes[0].Backends[0].Requests != 15 || l.DataPlanes[1].Backends[0].Requests != 7 {
		t.Fatalf("per node %v; want n1 15, n2 7", l.DataPlanes)
	}
}

// TestAggregatorHealth: each node's last view of its backends' health is kept apart; a report
// without one leaves it, and a report counted already changes nothing.
func TestAggregatorHealth(t *testing.T) {
	a := NewAggregator(time.Second, nil)
	view := func(state loadv1.HealthState) []*loadv1.BackendHealth {
		return []*loadv1.BackendHealth{{BackendSet: "web", BackendId: "a", State: state}}
	}
	a.add(&loadv1.StreamLoadStatsRequest{NodeId: "n1", Instance: "i", Seq: 1, BackendHealth: view(loadv1.HealthState_HEALTH_STATE_EJECTED)})
	a.add(&loadv1.StreamLoadStatsRequest{NodeId: "n2", Instance: "j", Seq: 1, BackendHealth: view(loadv1.HealthState_HEALTH_STATE_HEALTHY)})
	a.add(&loadv1.StreamLoadStatsRequest{NodeId: "n1", Instance: "i", Seq: 2}) // load only
	a.add(&loadv1.StreamLoadStatsRequest{NodeId: "n1", Instance: "i", Seq: 2, BackendHealth: view(loadv1.HealthState_HEALTH_STATE_HEALTHY)})
	if h, at := a.Health("n1"); len(h) != 1 || h[0].State != loadv1.HealthState_HEALTH_STATE_EJECTED || at.IsZero() {
		t.Fatalf("n1: %v at %v, want its one view, a ejected", h, at)
	}
	if h, _ := a.Health("n2"); len(h) != 1 || h[0].State != loadv1.HealthState_HEALTH_STATE_HEALTHY {
		t.Fatalf("n2: %v, want a healthy", h)
	}
	if h, at := a.Health("n3"); h != nil || !at.IsZero() {
		t.Fatalf("a node never heard of: %v at %v", h, at)
	}
}

// TestAggregatorBounds: whatever a caller reports, the aggregator holds at most NodesMax nodes,
// BackendsPerNodeMax backends of a node and InstancesPerNodeMax instances of a node, and logs a
// drop once per dropLogEvery for each reason, however many reports it drops.
func TestAggregatorBounds(t *testing.T) {
	var logBuf bytes.Buffer
	a := NewAggregator(time.Second, hclog.New(&hclog.LoggerOptions{Output: &logBuf, JSONFormat: true}))
	backends := func(n int) []*loadv1.BackendLoad {
		bs := make([]*loadv1.BackendLoad, n)
		for i := range bs {
			bs[i] = &loadv1.BackendLoad{BackendSet: "web", BackendId: fmt.Sprint("b", i), Requests: 1}
		}
		return bs
	}
	a.add(&loadv1.StreamLoadStatsRequest{NodeId: "big", Instance: "i", Seq: 1, Backends: backends(BackendsPerNodeMax + 5)})
	a.add(&loadv1.StreamLoadStatsRequest{NodeId: "big", Instance: "i", Seq: 2, Backends: backends(BackendsPerNodeMax + 5)})
	if n := len(a.nodes["big"]); n != BackendsPerNodeMax {
		t.Errorf("a node reported %d backends; %d kept, want %d", BackendsPerNodeMax+5, n, BackendsPerNodeMax)
	}
	if got := a.nodes["big"][Key{"web", "b0"}].GetRequests(); got != 2 {
		t.Errorf("a kept backend of the node has %d requests after 2 reports, want 2", got)
	}
	for i := range NodesMax + 10 {
		a.add(&loadv1.StreamLoadStatsRequest{NodeId: fmt.Sprint("n", i), Instance: "i", Seq: 1, Backends: backends(1)})
	}
	if len(a.nodes) != NodesMax {
		t.Errorf("%d nodes kept, want %d", len(a.nodes), NodesMax)
	}
	for i := range InstancesPerNodeMax + 3 {
		a.add(&loadv1.StreamLoadStatsRequest{NodeId: "n1", Instance: fmt.Sprint("restart", i), Seq: 1})
	}
	if n := len(a.lastSeq["n1"]); n != InstancesPerNodeMax {
		t.Errorf("%d instances of a node kept, want %d", n, InstancesPerNodeMax)
	}
	if last := a.lastSeq["n1"][InstancesPerNodeMax-1].instance; last != fmt.Sprint("restart", InstancesPerNodeMax+2) {
		t.Errorf("the newest instance kept is %q, want the last reported", last)
	}
	if n := strings.Count(logBuf.String(), "\n"); n != 2 {
		t.Errorf("%d log lines for the drops, want 2 (one per reason):\n%s", n, logBuf.String())
	}
}
