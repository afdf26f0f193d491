package discovery

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/xlbproxy/xlb/clients/xds"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// BenchmarkPushLatency measures a push: from a change of one set in the Source to the ACK of its
// new version, as the server receives it, from every one of N streams. Each stream is an xds.Run
// of its own, on a connection of its own, in this process, whose Apply accepts everything. The
// Source holds benchSets sets of M backends; each iteration changes one of them. Debounce is 1ns,
// so the figures are the engine's alone: a deployment adds its Config.Debounce (50ms by default).
//
// It reports the median and the 99th percentile of the iterations (p50-ms, p99-ms).
func BenchmarkPushLatency(b *testing.B) {
	for _, streams := range []int{1, 100, 1000} {
		for _, backends := range []int{10, 1000} {
			b.Run(fmt.Sprintf("streams=%d/backends=%d", streams, backends), func(b *testing.B) {
				benchPushLatency(b, streams, backends)
			})
		}
	}
}

// benchSets is how many sets the Source of BenchmarkPushLatency holds.
const benchSets = 4

// ackWatch counts, at the server's gRPC boundary, the ACKs that carry one version of one set.
type ackWatch struct {
	mu      sync.Mutex
	name    string
	version string
	want    int
	got     int
	done    chan struct{}
}

// expect makes w count ACKs of version of name, and returns a channel closed once want came.
func (w *ackWatch) expect(name, version string, want int) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.name, w.version, w.want, w.got = name, version, want, 0
	w.done = make(chan struct{})
	return w.done
}

func (w *ackWatch) saw(req *discoveryv1.StreamBackendSetsRequest) {
	if req.GetResponseNonce() == "" || len(req.GetErrors()) > 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done == nil || req.GetApplied()[w.name] != w.version {
		return
	}
	w.got++
	if w.got == w.want {
		close(w.done)
	}
}

// interceptor shows w every request the server receives.
func (w *ackWatch) interceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, watchedStream{ss, w})
}

type watchedStream struct {
	grpc.ServerStream
	w *ackWatch
}

func (s watchedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		if req, ok := m.(*discoveryv1.StreamBackendSetsRequest); ok {
			s.w.saw(req)
		}
	}
	return err
}

func benchPushLatency(b *testing.B, streams, backends int) {
	src := newMemSource()
	for i := range benchSets {
		src.put(fmt.Sprintf("set-%d", i), "v0", backends)
	}
	watch := &ackWatch{}
	cp := startControlPlane(b, src, Config{Debounce: time.Nanosecond, Logger: hclog.NewNullLogger()},
		grpc.StreamInterceptor(watch.interceptor))

	synced := watch.expect("set-0", "v0", streams)
	for i := range streams {
		runAcceptingClient(b, cp.dial(b), fmt.Sprintf("dp-%04d", i))
	}
	select {
	case <-synced:
	case <-time.After(5 * time.Minute):
		b.Fatal("the streams did not all sync within 5 minutes")
	}

	latencies := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		name, version := fmt.Sprintf("set-%d", i%benchSets), fmt.Sprintf("v%d", i+1)
		set := backendSet(name, backends) // the store's work, not the push's
		acked := watch.expect(name, version, streams)
		start := time.Now()
		src.putSet(version, set)
		<-acked
		latencies = append(latencies, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(latencies)
	ms := func(q float64) float64 {
		return float64(latencies[int(q*float64(len(latencies)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}

// runAcceptingClient runs, until the benchmark ends, an xds client of node id that applies
// everything it is sent.
func runAcceptingClient(b *testing.B, conn grpc.ClientConnInterface, id string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	served := map[string]string{}
	var generation atomic.Uint64
	go func() {
		done <- xds.Run(ctx, xds.Config{
			ControlPlanes: []xds.ControlPlane{{Conn: conn}},
			Node:          &discoveryv1.Node{Id: id},
			Initial: func() (map[string]string, uint64, []*discoveryv1.WorkerStatus) {
				return nil, 0, nil
			},
			Apply: func(_ context.Context, resp *discoveryv1.StreamBackendSetsResponse) (map[string]string, []*discoveryv1.SetError, uint64, []*discoveryv1.WorkerStatus) {
				for _, vs := range resp.GetSets() {
					served[vs.GetBackendSet().GetName()] = vs.GetVersion()
				}
				for _, name := range resp.GetRemoved() {
					delete(served, name)
				}
				return maps.Clone(served), nil, generation.Add(1), nil
			},
			BackoffMin: time.Millisecond,
			BackoffMax: 100 * time.Millisecond,
			Logger:     hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Warn}),
		})
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
}
