package server

import (
	"context"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/xlbproxy/xlb/dataplane/proxy"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
)

// Per-backend metrics travel from each worker to its supervisor on a gRPC stream over a unix
// socket of the state directory (metrics.sock.PID, the supervisor's own). A worker reports, every
// interval the supervisor sets, the deltas of its counters since its previous report, numbered by
// a sequence; the supervisor adds each (pid, seq) once. A worker that stops sends a last report
// first; one that is killed loses at most what it counted since its last report. A restarted
// worker is a new pid whose counters start at zero, so nothing is counted twice.

// metricsSocket, in the state directory, is where a supervisor's workers report.
const metricsSocket = "metrics.sock"

// defaultMetricsInterval is what a zero Config.MetricsInterval means.
const defaultMetricsInterval = time.Second

// backendKey names a backend across workers and generations.
type backendKey struct{ set, id string }

// loadTotals are the sums of the reports of a supervisor's workers.
type loadTotals struct {
	loadv1.UnimplementedWorkerMetricsServiceServer
	interval time.Duration
	log      hclog.Logger

	mu       sync.Mutex
	totals   map[backendKey]*loadv1.BackendLoad
	inFlight map[int32]map[backendKey]int64 // by worker pid, from its last report
	lastSeq  map[int32]uint64
}

func newLoadTotals(interval time.Duration, log hclog.Logger) *loadTotals {
	return &loadTotals{interval: interval, log: log, totals: map[backendKey]*loadv1.BackendLoad{},
		inFlight: map[int32]map[backendKey]int64{}, lastSeq: map[int32]uint64{}}
}

// StreamMetrics is the supervisor's side of a worker's stream.
func (t *loadTotals) StreamMetrics(stream grpc.BidiStreamingServer[loadv1.StreamMetricsRequest, loadv1.StreamMetricsResponse]) error {
	if err := stream.Send(&loadv1.StreamMetricsResponse{ReportInterval: durationpb.New(t.interval)}); err != nil {
		return err
	}
	var pid int32
	defer func() {
		t.mu.Lock()
		delete(t.inFlight, pid) // a worker gone has nothing in flight
		t.mu.Unlock()
	}()
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		pid = req.GetPid()
		t.add(req)
	}
}

// add counts one report, once.
func (t *loadTotals) add(req *loadv1.StreamMetricsRequest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pid := req.GetPid()
	if req.GetSeq() <= t.lastSeq[pid] {
		return
	}
	t.lastSeq[pid] = req.GetSeq()
	gauges := map[backendKey]int64{}
	for _, b := range req.GetBackends() {
		k := backendKey{b.GetBackendSet(), b.GetBackendId()}
		tot := t.totals[k]
		if tot == nil {
			tot = &loadv1.BackendLoad{BackendSet: k.set, BackendId: k.id, Responses: make([]uint64, 5)}
			t.totals[k] = tot
		}
		tot.Address = b.GetAddress()
		addLoad(tot, b)
		gauges[k] = b.GetInFlight()
	}
	t.inFlight[pid] = gauges
}

// addLoad adds the counters of d to tot.
func addLoad(tot, d *loadv1.BackendLoad) {
	tot.Requests += d.GetRequests()
	tot.Retries += d.GetRetries()
	for i, n := range d.GetResponses() {
		if i < len(tot.Responses) {
			tot.Responses[i] += n
		}
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

// snapshot is the totals by set and id, with in_flight summed over the live workers.
func (t *loadTotals) snapshot() []*loadv1.BackendLoad {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := slices.SortedFunc(maps.Keys(t.totals), func(a, b backendKey) int {
		if c := strings.Compare(a.set, b.set); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	out := make([]*loadv1.BackendLoad, 0, len(keys))
	for _, k := range keys {
		b := cloneLoad(t.totals[k])
		b.InFlight = 0
		for _, g := range t.inFlight {
			b.InFlight += g[k]
		}
		out = append(out, b)
	}
	return out
}

func cloneLoad(b *loadv1.BackendLoad) *loadv1.BackendLoad {
	return proto.Clone(b).(*loadv1.BackendLoad)
}

// The worker's side.

// reporter streams a worker's metrics to its supervisor.
type reporter struct {
	slot    int
	metrics func() []proxy.BackendMetrics
	gen     func() uint64
	log     hclog.Logger

	seq  uint64
	last map[backendKey]proxy.BackendMetrics
}

// runReporter reports p's metrics to the supervisor at socket until ctx ends, then sends a last
// report (the deltas since the previous one) and returns.
func runReporter(ctx context.Context, socket string, r *reporter) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		r.log.Error("metrics: cannot reach the supervisor", "error", err)
		return
	}
	defer conn.Close()
	// The stream outlives ctx by the last report.
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := loadv1.NewWorkerMetricsServiceClient(conn).StreamMetrics(sctx)
	if err != nil {
		r.log.Error("metrics: cannot open the stream to the supervisor", "error", err)
		return
	}
	first, err := stream.Recv()
	if err != nil {
		r.log.Error("metrics: the supervisor did not answer", "error", err)
		return
	}
	interval := first.GetReportInterval().AsDuration()
	if interval <= 0 {
		interval = defaultMetricsInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := stream.Send(r.report()); err != nil {
				r.log.Warn("metrics: the stream to the supervisor ended", "error", err)
				return
			}
		case <-ctx.Done():
			stream.Send(r.report())
			stream.CloseSend()
			// Wait for the supervisor to close its side, so that the last report is read.
			waited := make(chan struct{})
			go func() {
				for {
					if _, err := stream.Recv(); err != nil {
						close(waited)
						return
					}
				}
			}()
			select {
			case <-waited:
			case <-time.After(time.Second):
			}
			return
		}
	}
}

// report is the deltas since the previous report.
func (r *reporter) report() *loadv1.StreamMetricsRequest {
	r.seq++
	req := &loadv1.StreamMetricsRequest{WorkerSlot: uint32(r.slot), Pid: int32(os.Getpid()), Seq: r.seq, ObservedGeneration: r.gen()}
	now := map[backendKey]proxy.BackendMetrics{}
	for _, m := range r.metrics() {
		k := backendKey{m.Set, m.ID}
		now[k] = m
		prev, ok := r.last[k]
		if !ok || prev.Requests > m.Requests || prev.Address != m.Address {
			prev = proxy.BackendMetrics{} // new, or counting from zero again
		}
		req.Backends = append(req.Backends, deltaLoad(m, prev))
	}
	r.last = now
	return req
}

func deltaLoad(m, prev proxy.BackendMetrics) *loadv1.BackendLoad {
	b := &loadv1.BackendLoad{
		BackendSet: m.Set, BackendId: m.ID, Address: m.Address,
		Requests: m.Requests - prev.Requests, Retries: m.Retries - prev.Retries,
		LocalOriginErrors: m.LocalOriginErrors - prev.LocalOriginErrors, BadResponses: m.BadResponses - prev.BadResponses,
		InFlight:          m.InFlight,
		ConnectionsOpened: m.ConnectionsOpened - prev.ConnectionsOpened, ConnectionsReused: m.ConnectionsReused - prev.ConnectionsReused,
		ConnectionsClosedByBackend: m.ConnectionsClosedByBackend - prev.ConnectionsClosedByBackend,
		BytesIn:                    m.BytesIn - prev.BytesIn, BytesOut: m.BytesOut - prev.BytesOut,
		HeaderLatency: deltaHistogram(m.HeaderLatency, prev.HeaderLatency),
		TotalLatency:  deltaHistogram(m.TotalLatency, prev.TotalLatency),
	}
	for i := range m.Responses {
		b.Responses = append(b.Responses, m.Responses[i]-prev.Responses[i])
	}
	return b
}

func deltaHistogram(h, prev proxy.Histogram) *loadv1.Histogram {
	out := &loadv1.Histogram{SumSeconds: (h.Sum - prev.Sum).Seconds()}
	for _, b := range proxy.LatencyBuckets {
		out.BoundsSeconds = append(out.BoundsSeconds, b.Seconds())
	}
	for i := range h.Counts {
		out.Counts = append(out.Counts, h.Counts[i]-prev.Counts[i])
	}
	return out
}

// serveMetrics serves the WorkerMetricsService on dir's metrics socket, this supervisor's own
// (never published: only its workers use it).
func (s *supervisor) serveMetrics(dir string, log hclog.Logger) (stop func(), err error) {
	s.load = newLoadTotals(s.cfg.metricsInterval(), log)
	ln, err := listenUnix(filepath.Join(dir, metricsSocket))
	if err != nil {
		return nil, err
	}
	s.metricsSocket = ln.own
	srv := grpc.NewServer()
	loadv1.RegisterWorkerMetricsServiceServer(srv, s.load)
	done := make(chan struct{})
	go func() {
		srv.Serve(ln.Listener)
		close(done)
	}()
	return func() {
		srv.Stop()
		<-done
		ln.removeIfOurs()
	}, nil
}
