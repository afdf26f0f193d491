package discovery

import (
	"context"
	"maps"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xlbproxy/xlb/clients/xds"
	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// waitLimit bounds every wait of a test.
const waitLimit = 20 * time.Second

// controlPlane is a discovery Server of a memSource, served by gRPC on a loopback port.
type controlPlane struct {
	src  *memSource
	srv  *Server
	grpc *grpc.Server
	addr string
	logs *testutil.SyncBuffer
}

// startControlPlane serves src until the test ends.
func startControlPlane(tb testing.TB, src *memSource, cfg Config, opts ...grpc.ServerOption) *controlPlane {
	tb.Helper()
	logs := &testutil.SyncBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cp := &controlPlane{src: src, srv: NewServer(src, cfg), addr: ln.Addr().String(), logs: logs}
	cp.grpc = grpc.NewServer(append([]grpc.ServerOption{grpc.WaitForHandlers(true),
		// The fixed windows of the control plane's server (server/rpc.ServerWindowBytes).
		grpc.InitialWindowSize(1 << 20), grpc.InitialConnWindowSize(1 << 20)}, opts...)...)
	discoveryv1.RegisterDiscoveryServiceServer(cp.grpc, cp.srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		cp.grpc.Serve(ln)
	}()
	tb.Cleanup(func() {
		cp.srv.Close()
		cp.grpc.Stop()
		<-served
	})
	return cp
}

// dial returns a connection to the control plane, closed when the test ends.
func (cp *controlPlane) dial(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient("passthrough:///"+cp.addr, append(xds.DialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: waitLimit, Backoff: backoff.Config{
			BaseDelay: 5 * time.Millisecond, Multiplier: 2, MaxDelay: 50 * time.Millisecond,
		}}))...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// stream opens a raw stream to the control plane, ended when the test ends.
func (cp *controlPlane) stream(tb testing.TB) discoveryv1.DiscoveryService_StreamBackendSetsClient {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	st, err := discoveryv1.NewDiscoveryServiceClient(cp.dial(tb)).StreamBackendSets(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// dataPlane returns what the server shows of node id, or nil.
func (cp *controlPlane) dataPlane(id string) *adminv1.DataPlane {
	for _, dp := range cp.srv.DataPlanes() {
		if dp.GetNodeId() == id {
			return dp
		}
	}
	return nil
}

// applied returns the versions node id applied, as DataPlanes shows them.
func (cp *controlPlane) applied(id string) map[string]string {
	out := map[string]string{}
	for _, s := range cp.dataPlane(id).GetSets() {
		if s.GetAppliedVersion() != "" {
			out[s.GetName()] = s.GetAppliedVersion()
		}
	}
	return out
}

// fakeDataPlane is the data plane behind an xds client: it serves what it applied and rejects what
// reject names.
type fakeDataPlane struct {
	// reject returns why the data plane refuses a set, or "" to apply it. Nil applies everything.
	reject func(*discoveryv1.VersionedBackendSet) string
	// responses receives every response applied, in order.
	responses chan *discoveryv1.StreamBackendSetsResponse
	// subscribe is what the data plane subscribes to; nil is every set.
	subscribe []string

	mu         sync.Mutex
	served     map[string]string
	generation uint64
}

func newFakeDataPlane(reject func(*discoveryv1.VersionedBackendSet) string) *fakeDataPlane {
	return &fakeDataPlane{
		reject:    reject,
		responses: make(chan *discoveryv1.StreamBackendSetsResponse, 1000),
		served:    map[string]string{},
	}
}

func (f *fakeDataPlane) initial() (map[string]string, uint64, []*discoveryv1.WorkerStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.served), f.generation, f.workersLocked()
}

func (f *fakeDataPlane) workersLocked() []*discoveryv1.WorkerStatus {
	return []*discoveryv1.WorkerStatus{{Slot: 0, Pid: 100, ObservedGeneration: f.generation}}
}

func (f *fakeDataPlane) apply(_ context.Context, resp *discoveryv1.StreamBackendSetsResponse) (map[string]string, []*discoveryv1.SetError, uint64, []*discoveryv1.WorkerStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var rejected []*discoveryv1.SetError
	for _, vs := range resp.GetSets() {
		name := vs.GetBackendSet().GetName()
		if f.reject != nil {
			if msg := f.reject(vs); msg != "" {
				rejected = append(rejected, &discoveryv1.SetError{Name: name, Version: vs.GetVersion(), Message: msg})
				continue
			}
		}
		f.served[name] = vs.GetVersion()
	}
	for _, name := range resp.GetRemoved() {
		delete(f.served, name)
	}
	f.generation++
	f.responses <- resp
	return maps.Clone(f.served), rejected, f.generation, f.workersLocked()
}

// run runs an xds client of node id for f on conn until the test ends.
func (f *fakeDataPlane) run(tb testing.TB, conn grpc.ClientConnInterface, id string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- xds.Run(ctx, xds.Config{
			ControlPlanes: []xds.ControlPlane{{Conn: conn}},
			Node:          &discoveryv1.Node{Id: id, Build: "test-build"},
			Subscribe:     f.subscribe,
			Initial:       f.initial,
			Apply:         f.apply,
			BackoffMin:    time.Millisecond,
			BackoffMax:    20 * time.Millisecond,
		})
	}()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			tb.Errorf("xds.Run returned %v, want context.Canceled", err)
		}
	})
}

// next returns the next response f applied.
func (f *fakeDataPlane) next(tb testing.TB) *discoveryv1.StreamBackendSetsResponse {
	tb.Helper()
	select {
	case resp := <-f.responses:
		return resp
	case <-time.After(waitLimit):
		tb.Fatalf("no response within %v", waitLimit)
		return nil
	}
}

// waitFor waits until cond holds, for up to waitLimit.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	testutil.WaitFor(tb, waitLimit, what, cond)
}

// summary is a response as "name@version ... -removed ...", for comparisons.
func summary(resp *discoveryv1.StreamBackendSetsResponse) string {
	s := ""
	for _, vs := range resp.GetSets() {
		s += vs.GetBackendSet().GetName() + "@" + vs.GetVersion() + " "
	}
	for _, d := range resp.GetDeltas() {
		s += "Δ" + d.GetBackendSet().GetName() + "@" + d.GetBaseVersion() + "→" + d.GetVersion() + " "
	}
	for _, name := range resp.GetRemoved() {
		s += "-" + name + " "
	}
	return s
}
