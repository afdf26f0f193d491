package telemetry

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/xlbproxy/xlb/controlplane/load"
	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/dataplane/upstream"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
	"github.com/xlbproxy/xlb/internal/backoff"
	"github.com/xlbproxy/xlb/server/config"
	"github.com/xlbproxy/xlb/server/rpc"
)

// Per-backend metrics travel from each worker to its supervisor on a gRPC stream over a unix
// socket of the state directory (metrics.sock.PID, the supervisor's own). A worker reports, every
// interval the supervisor sets, the deltas of its counters since its previous report, numbered by
// a sequence; the supervisor adds each (pid, seq) once. A worker that stops sends a last report
// first; one that is killed loses at most what it counted since its last report. A restarted
// worker is a new pid whose counters start at zero, so nothing is counted twice.

// Socket, in the state directory, is where a supervisor's workers report.
const Socket = "metrics.sock"

// loadRetry is the backoff of ReportLoad's stream, those of the xDS-lite stream (clients/xds's
// defaults): full jitter, so that the data planes that lost one control plane together do not
// come back to it together.
func loadRetry() backoff.Backoff {
	return backoff.Backoff{Base: 100 * time.Millisecond, Max: 15 * time.Second, Jitter: backoff.Full}
}

// Totals are the sums of the reports of a supervisor's workers, and what of them the control
// plane has not been sent yet.
type Totals struct {
	loadv1.UnimplementedWorkerMetricsServiceServer
	interval time.Duration
	log      hclog.Logger

	mu       sync.Mutex
	totals   load.Totals
	pending  load.Totals                  // added since the last report to the control plane
	inFlight map[int32]map[load.Key]int64 // by worker pid, from its last report
	lastSeq  map[int32]uint64
	// conns are the live workers' client connections, by pid, from their last reports.
	conns map[int32]WorkerConns
	// acceptPaused counts the pauses at limits.connections of every worker since this supervisor
	// started.
	acceptPaused uint64
}

// WorkerConns is what a worker last reported of its client connections.
type WorkerConns struct {
	Slot                      uint32
	Connections, AcceptPaused uint64 // AcceptPaused: the worker's total
}

func NewTotals(interval time.Duration, log hclog.Logger) *Totals {
	return &Totals{interval: interval, log: log, totals: load.Totals{}, pending: load.Totals{},
		inFlight: map[int32]map[load.Key]int64{}, lastSeq: map[int32]uint64{}, conns: map[int32]WorkerConns{}}
}

// StreamMetrics is the supervisor's side of a worker's stream.
func (t *Totals) StreamMetrics(stream grpc.BidiStreamingServer[loadv1.StreamMetricsRequest, loadv1.StreamMetricsResponse]) error {
	if err := stream.Send(&loadv1.StreamMetricsResponse{ReportInterval: durationpb.New(t.interval)}); err != nil {
		return err
	}
	var pid int32
	defer func() {
		t.mu.Lock()
		delete(t.inFlight, pid) // a worker gone has nothing in flight
		delete(t.conns, pid)
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

// add counts one report, once. A backend it leaves out keeps the worker's last gauge.
func (t *Totals) add(req *loadv1.StreamMetricsRequest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pid := req.GetPid()
	if req.GetSeq() <= t.lastSeq[pid] {
		return
	}
	t.lastSeq[pid] = req.GetSeq()
	w := t.conns[pid]
	w.Slot, w.Connections = req.GetWorkerSlot(), req.GetConnections()
	w.AcceptPaused += req.GetAcceptPaused()
	t.conns[pid] = w
	t.acceptPaused += req.GetAcceptPaused()
	gauges := t.inFlight[pid]
	if gauges == nil {
		gauges = map[load.Key]int64{}
		t.inFlight[pid] = gauges
	}
	for _, b := range req.GetBackends() {
		t.totals.Add(b)
		t.pending.Add(b)
		k := load.Key{Set: b.GetBackendSet(), ID: b.GetBackendId()}
		if n := b.GetInFlight(); n != 0 {
			gauges[k] = n
		} else {
			delete(gauges, k)
		}
	}
}

// inFlightOf sums the live workers' last gauges of k; the caller holds mu.
func (t *Totals) inFlightOf(k load.Key) (n int64) {
	for _, g := range t.inFlight {
		n += g[k]
	}
	return n
}

// takePending returns what the control plane has not been sent, and forgets it.
func (t *Totals) takePending() []*loadv1.BackendLoad {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.pending.Sorted()
	for _, b := range out {
		b.InFlight = t.inFlightOf(load.Key{Set: b.BackendSet, ID: b.BackendId})
	}
	t.pending = load.Totals{}
	return out
}

// restore gives back what takePending took and could not be sent.
func (t *Totals) restore(bs []*loadv1.BackendLoad) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range bs {
		t.pending.Add(b)
	}
}

// snapshot is the totals by set and id, with in_flight summed over the live workers.
func (t *Totals) Snapshot() []*loadv1.BackendLoad {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.totals.Sorted()
	for _, b := range out {
		b.InFlight = t.inFlightOf(load.Key{Set: b.BackendSet, ID: b.BackendId})
	}
	return out
}

// connsOf is what the worker pid last reported of its client connections.
func (t *Totals) ConnsOf(pid int32) WorkerConns {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[pid]
}

// connStats are the live workers' client connections (by pid) and every pause at the limit.
func (t *Totals) ConnStats() (map[int32]WorkerConns, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.conns), t.acceptPaused
}

// The worker's side.

// Reporter streams a worker's metrics to its supervisor.
type Reporter struct {
	// Slot is the worker's slot in the region; Metrics and Gen are its proxy's per-backend counters
	// and the region generation it serves.
	Slot    int
	Metrics func() []proxy.BackendMetrics
	Gen     func() uint64
	// Stats are the proxy's counters, for its client connections; nil reports none.
	Stats func() proxy.Stats
	Log   hclog.Logger

	paused uint64 // Stats.AcceptPaused at the previous report

	seq  uint64
	last map[load.Key]proxy.BackendMetrics
}

// RunReporter reports p's metrics to the supervisor at socket until ctx ends, then sends a last
// report (the deltas since the previous one) and returns.
func RunReporter(ctx context.Context, socket string, r *Reporter) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		r.Log.Error("metrics: cannot reach the supervisor", "error", err)
		return
	}
	defer conn.Close()
	// The stream outlives ctx by the last report.
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := loadv1.NewWorkerMetricsServiceClient(conn).StreamMetrics(sctx)
	if err != nil {
		r.Log.Error("metrics: cannot open the stream to the supervisor", "error", err)
		return
	}
	first, err := stream.Recv()
	if err != nil {
		r.Log.Error("metrics: the supervisor did not answer", "error", err)
		return
	}
	interval := first.GetReportInterval().AsDuration()
	if interval <= 0 {
		interval = config.DefaultMetricsInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			for _, req := range r.reports() {
				if err := stream.Send(req); err != nil {
					r.Log.Warn("metrics: the stream to the supervisor ended", "error", err)
					return
				}
			}
		case <-ctx.Done():
			for _, req := range r.reports() {
				stream.Send(req)
			}
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

// reportBackendsMax bounds the backends of one report message, worker to supervisor and
// supervisor to control plane: a report of more goes in several messages, each its own seq, so
// that no report meets a gRPC message limit however many backends there are (about 350 bytes
// each).
const reportBackendsMax = 2000

// reports are the deltas since the previous report, in messages of at most reportBackendsMax
// backends (at least one message). A backend is in it when it is new, when a counter moved, or
// when its in-flight gauge changed: one left out has nothing to add and its gauge is as last
// reported.
func (r *Reporter) reports() []*loadv1.StreamMetricsRequest {
	var backends []*loadv1.BackendLoad
	now := map[load.Key]proxy.BackendMetrics{}
	for _, m := range r.Metrics() {
		k := load.Key{Set: m.Set, ID: m.ID}
		now[k] = m
		prev, ok := r.last[k]
		if ok && prev == m {
			continue
		}
		if !ok || prev.Requests > m.Requests || prev.Address != m.Address {
			prev = proxy.BackendMetrics{} // new, or counting from zero again
		}
		backends = append(backends, deltaLoad(m, prev))
	}
	r.last = now
	var st proxy.Stats
	if r.Stats != nil {
		st = r.Stats()
	}
	var out []*loadv1.StreamMetricsRequest
	for len(out) == 0 || len(backends) > 0 {
		n := min(len(backends), reportBackendsMax)
		r.seq++
		out = append(out, &loadv1.StreamMetricsRequest{WorkerSlot: uint32(r.Slot), Pid: int32(os.Getpid()), Seq: r.seq,
			ObservedGeneration: r.Gen(), Backends: backends[:n:n], Connections: st.Connections})
		backends = backends[n:]
	}
	out[0].AcceptPaused, r.paused = st.AcceptPaused-r.paused, st.AcceptPaused
	return out
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
	deltaTLS(b, m.TLS, prev.TLS)
	return b
}

// deltaTLS puts into b the TLS handshakes of t since prev. The counts are its pool's, which a
// change of the backend's TLS replaces by a new one counting from zero: counts that went back
// are counted from zero too.
func deltaTLS(b *loadv1.BackendLoad, t, prev upstream.Stats) {
	if t.FullHandshakes < prev.FullHandshakes || t.ResumedHandshakes < prev.ResumedHandshakes || t.HandshakeFailures < prev.HandshakeFailures {
		prev = upstream.Stats{}
	}
	b.TlsHandshakesFull = t.FullHandshakes - prev.FullHandshakes
	b.TlsHandshakesResumed = t.ResumedHandshakes - prev.ResumedHandshakes
	b.TlsHandshakeFailures = t.HandshakeFailures - prev.HandshakeFailures
	if b.TlsHandshakesFull+b.TlsHandshakesResumed == 0 {
		return // no histogram of nothing: plain backends carry none
	}
	h := &loadv1.Histogram{SumSeconds: (t.HandshakeTime - prev.HandshakeTime).Seconds()}
	for _, bound := range upstream.HandshakeBuckets {
		h.BoundsSeconds = append(h.BoundsSeconds, bound.Seconds())
	}
	for i := range t.HandshakeLatency {
		h.Counts = append(h.Counts, t.HandshakeLatency[i]-prev.HandshakeLatency[i])
	}
	b.TlsHandshakeLatency = h
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

// Serve serves the WorkerMetricsService on dir's metrics socket, this supervisor's own (never
// published: only its workers use it), telling them to report every interval. It returns the totals
// of their reports, the socket's path, and the func that stops serving.
func Serve(dir string, interval time.Duration, log hclog.Logger) (t *Totals, socket string, stop func(), err error) {
	t = NewTotals(interval, log)
	srv := grpc.NewServer()
	loadv1.RegisterWorkerMetricsServiceServer(srv, t)
	ln, stop, err := rpc.ServeUnix(srv, filepath.Join(dir, Socket))
	if err != nil {
		return nil, "", nil, err
	}
	return t, ln.Own, stop, nil
}

// ReportLoad streams the supervisor's load to one of its control planes: every interval the
// control plane asks for, what the workers reported since the previous report. It starts on the
// first of conns; a stream that breaks keeps what it could not send for the next one, which is
// opened on the next of conns (round and round, as clients/xds does) after a wait of loadRetry,
// which starts over once a control plane answered. It returns when ctx ends, after a last report.
//
// Each report also carries the data plane's view of its backends' health when it differs from the
// one this stream last sent (health, which may be nil).
func ReportLoad(ctx context.Context, conns []grpc.ClientConnInterface, node string, t *Totals, health func() []*loadv1.BackendHealth, log hclog.Logger) {
	instance := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	var seq uint64
	retry := loadRetry()
	for i := 0; ctx.Err() == nil; i = (i + 1) % len(conns) {
		conn := conns[i]
		sctx, cancel := context.WithCancel(context.Background())
		err := func() error {
			stream, err := loadv1.NewLoadReportingServiceClient(conn).StreamLoadStats(sctx)
			if err != nil {
				return err
			}
			first, err := stream.Recv()
			if err != nil {
				return err
			}
			retry.Reset()
			interval := first.GetReportInterval().AsDuration()
			if interval <= 0 {
				interval = config.DefaultMetricsInterval
			}
			tick := time.NewTicker(interval)
			defer tick.Stop()
			var sent []*loadv1.BackendHealth // the health view last sent on this stream
			send := func() error {
				bs := t.takePending()
				var now, h []*loadv1.BackendHealth
				if health != nil {
					if now = health(); !slices.EqualFunc(now, sent, func(a, b *loadv1.BackendHealth) bool { return proto.Equal(a, b) }) {
						h = now[:min(len(now), load.HealthBackendsMax)] // the control plane keeps no more
					}
				}
				// In messages of at most reportBackendsMax backends, the health view in the first.
				for first := true; first && h != nil || len(bs) > 0; first = false {
					n := min(len(bs), reportBackendsMax)
					seq++
					req := &loadv1.StreamLoadStatsRequest{NodeId: node, Instance: instance, Seq: seq, Backends: bs[:n:n]}
					if first {
						req.BackendHealth = h
					}
					if err := stream.Send(req); err != nil {
						t.restore(bs)
						return err
					}
					if first && h != nil {
						sent = now
					}
					bs = bs[n:]
				}
				return nil
			}
			for {
				select {
				case <-tick.C:
					if err := send(); err != nil {
						return err
					}
				case <-ctx.Done():
					send()
					stream.CloseSend()
					return nil
				}
			}
		}()
		cancel()
		if err != nil && ctx.Err() == nil {
			wait := retry.Next()
			log.Debug("load reports: the stream to the control plane ended", "control_plane", i, "error", err, "retry_in", wait)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
	}
}
