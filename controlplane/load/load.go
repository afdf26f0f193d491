// Package load aggregates per-backend load reports: a control plane's LoadReportingService, which
// every data plane streams its deltas to, and the arithmetic of adding reports, which a data
// plane's supervisor uses on its workers' reports too.
//
// A report is added once per (node, instance, seq): an instance is one supervisor's lifetime (a
// restart or an upgrade starts a new one, whose seq counts from 1), so a report sent twice is
// counted once, and a new supervisor's reports are not mistaken for old ones. Totals are since the
// control plane started; they are not persisted.
//
// What a report can make the aggregator hold is bounded, whoever sends it: NodesMax data planes,
// InstancesPerNodeMax instances of each (the oldest forgotten first), BackendsPerNodeMax backends
// of each and EntriesMax (node, backend) totals in all. What falls outside is dropped and logged, at
// most once per dropLogEvery for each reason, so that a flood of reports cannot flood the log either.
package load

import (
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
)

// Key names a backend: its set and id.
type Key struct{ Set, ID string }

// Add adds the counters of d to tot (in_flight aside, a gauge).
func Add(tot, d *loadv1.BackendLoad) {
	tot.Address = d.GetAddress()
	tot.Requests += d.GetRequests()
	tot.Retries += d.GetRetries()
	if len(tot.Responses) < len(d.GetResponses()) {
		tot.Responses = append(tot.Responses, make([]uint64, len(d.GetResponses())-len(tot.Responses))...)
	}
	for i, n := range d.GetResponses() {
		tot.Responses[i] += n
	}
	tot.LocalOriginErrors += d.GetLocalOriginErrors()
	tot.BadResponses += d.GetBadResponses()
	tot.ConnectionsOpened += d.GetConnectionsOpened()
	tot.ConnectionsReused += d.GetConnectionsReused()
	tot.ConnectionsClosedByBackend += d.GetConnectionsClosedByBackend()
	tot.BytesIn += d.GetBytesIn()
	tot.BytesOut += d.GetBytesOut()
	tot.HeaderLatency = addHistogram(tot.HeaderLatency, d.GetHeaderLatency())
	tot.TotalLatency = addHistogram(tot.TotalLatency, d.GetTotalLatency())
	tot.TlsHandshakesFull += d.GetTlsHandshakesFull()
	tot.TlsHandshakesResumed += d.GetTlsHandshakesResumed()
	tot.TlsHandshakeFailures += d.GetTlsHandshakeFailures()
	tot.TlsHandshakeLatency = addHistogram(tot.TlsHandshakeLatency, d.GetTlsHandshakeLatency())
}

func addHistogram(tot, d *loadv1.Histogram) *loadv1.Histogram {
	if d == nil {
		return tot
	}
	if tot == nil {
		tot = &loadv1.Histogram{BoundsSeconds: d.GetBoundsSeconds(), Counts: make([]uint64, len(d.GetCounts()))}
	}
	for i, n := range d.GetCounts() {
		if i < len(tot.Counts) {
			tot.Counts[i] += n
		}
	}
	tot.SumSeconds += d.GetSumSeconds()
	return tot
}

// Totals are backends' sums, by key.
type Totals map[Key]*loadv1.BackendLoad

// Add adds d to the totals of its backend.
func (t Totals) Add(d *loadv1.BackendLoad) *loadv1.BackendLoad {
	k := Key{d.GetBackendSet(), d.GetBackendId()}
	tot := t[k]
	if tot == nil {
		tot = &loadv1.BackendLoad{BackendSet: k.Set, BackendId: k.ID}
		t[k] = tot
	}
	Add(tot, d)
	return tot
}

// Sorted returns copies of the totals by set and id.
func (t Totals) Sorted() []*loadv1.BackendLoad {
	keys := slices.SortedFunc(maps.Keys(t), func(a, b Key) int {
		if c := strings.Compare(a.Set, b.Set); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	out := make([]*loadv1.BackendLoad, len(keys))
	for i, k := range keys {
		out[i] = proto.Clone(t[k]).(*loadv1.BackendLoad)
	}
	return out
}

// Aggregator is the control plane's LoadReportingService.
type Aggregator struct {
	loadv1.UnimplementedLoadReportingServiceServer
	interval time.Duration
	log      hclog.Logger

	mu      sync.Mutex
	lastSeq map[string][]instanceSeq // by node: its latest instances, the newest last
	nodes   map[string]Totals
	entries int // of every node's totals
	all     Totals
	health  map[string]nodeHealth // by node: its last view of its backends' health
	logged  map[string]time.Time  // when a drop of each reason was last logged
}

// instanceSeq is the last seq counted of one instance of a node.
type instanceSeq struct {
	instance string
	seq      uint64
}

// nodeHealth is a data plane's view of its backends' health, as its last report that had one said.
type nodeHealth struct {
	backends []*loadv1.BackendHealth
	at       time.Time
}

// The bounds of what reports can make an Aggregator hold.
const (
	// HealthBackendsMax bounds the backends of a data plane's health view that are kept; past it
	// the rest of a report's view is dropped (and the view says so by its length).
	HealthBackendsMax = 20_000
	// NodesMax bounds the data planes whose load is kept: a report of another is dropped.
	NodesMax = 1024
	// InstancesPerNodeMax bounds the instances (supervisor lifetimes) of a node whose last seq is
	// kept; a new one makes the oldest forgotten.
	InstancesPerNodeMax = 4
	// BackendsPerNodeMax bounds the backends a node has totals for; a report's others are dropped.
	BackendsPerNodeMax = 20_000
	// EntriesMax bounds the (node, backend) totals of all nodes together.
	EntriesMax = 200_000
)

// dropLogEvery is the least time between two log lines about dropped reports of one reason.
const dropLogEvery = time.Minute

// NewAggregator asks data planes to report every interval.
func NewAggregator(interval time.Duration, log hclog.Logger) *Aggregator {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Aggregator{interval: interval, log: log, lastSeq: map[string][]instanceSeq{}, nodes: map[string]Totals{}, all: Totals{},
		health: map[string]nodeHealth{}, logged: map[string]time.Time{}}
}

// StreamLoadStats receives one data plane's reports.
func (a *Aggregator) StreamLoadStats(stream grpc.BidiStreamingServer[loadv1.StreamLoadStatsRequest, loadv1.StreamLoadStatsResponse]) error {
	if err := stream.Send(&loadv1.StreamLoadStatsResponse{ReportInterval: durationpb.New(a.interval)}); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		a.add(req)
	}
}

func (a *Aggregator) add(req *loadv1.StreamLoadStatsRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := req.GetNodeId()
	node := a.nodes[id]
	if node == nil {
		if len(a.nodes) >= NodesMax {
			a.dropped("nodes", "dropped a load report: the control plane keeps the load of NodesMax data planes", "node", id, "nodes_max", NodesMax)
			return
		}
		node = Totals{}
		a.nodes[id] = node
	}
	if !a.newSeq(id, req.GetInstance(), req.GetSeq()) {
		return
	}
	if h := req.GetBackendHealth(); len(h) > 0 {
		a.health[id] = nodeHealth{backends: h[:min(len(h), HealthBackendsMax)], at: time.Now()}
	}
	dropped := 0
	for _, b := range req.GetBackends() {
		k := Key{b.GetBackendSet(), b.GetBackendId()}
		var was int64 // the node's last in-flight gauge of the backend
		if prev := node[k]; prev != nil {
			was = prev.InFlight
		} else if len(node) >= BackendsPerNodeMax || a.entries >= EntriesMax {
			dropped++
			continue
		} else {
			a.entries++
		}
		node.Add(b).InFlight = b.GetInFlight()
		// The sum's in-flight is the sum of the nodes' last gauges.
		a.all.Add(b).InFlight += b.GetInFlight() - was
	}
	if dropped > 0 {
		a.dropped("backends", "dropped backends of a load report: past BackendsPerNodeMax of the node or EntriesMax in all",
			"node", id, "dropped", dropped, "backends_per_node_max", BackendsPerNodeMax, "entries_max", EntriesMax)
	}
}

// newSeq tells whether seq of node's instance is one not counted yet, and records it; a node keeps
// the seqs of its InstancesPerNodeMax latest instances.
func (a *Aggregator) newSeq(node, instance string, seq uint64) bool {
	is := a.lastSeq[node]
	i := slices.IndexFunc(is, func(x instanceSeq) bool { return x.instance == instance })
	if i >= 0 {
		if seq <= is[i].seq {
			return false
		}
		is[i].seq = seq
		return true
	}
	if len(is) >= InstancesPerNodeMax {
		is = slices.Delete(is, 0, 1)
	}
	a.lastSeq[node] = append(is, instanceSeq{instance, seq})
	return true
}

// dropped logs a drop of reason, unless one of that reason was logged within dropLogEvery.
func (a *Aggregator) dropped(reason, msg string, args ...any) {
	now := time.Now()
	if now.Sub(a.logged[reason]) < dropLogEvery {
		return
	}
	a.logged[reason] = now
	a.log.Warn(msg, append(args, "next_log_after", dropLogEvery.String())...)
}

// Health is node's last view of its backends' health, and when it came; nothing before its first.
// The caller must not modify what it returns.
func (a *Aggregator) Health(node string) ([]*loadv1.BackendHealth, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.health[node]
	return h.backends, h.at
}

// Load is what the admin service's GetLoad returns.
func (a *Aggregator) Load() *adminv1.GetLoadResponse {
	a.mu.Lock()
	defer a.mu.Unlock()
	res := &adminv1.GetLoadResponse{Backends: a.all.Sorted()}
	for _, id := range slices.Sorted(maps.Keys(a.nodes)) {
		res.DataPlanes = append(res.DataPlanes, &adminv1.DataPlaneLoad{NodeId: id, Backends: a.nodes[id].Sorted()})
	}
	return res
}
