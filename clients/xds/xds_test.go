package xds

import (
	"context"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xlbproxy/xlb/controlplane/discovery"
	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// TestMain fails the package when a test leaves a goroutine behind: Run's, or a client or server
// of a test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitLimit = 20 * time.Second

// source is a discovery.Source in memory.
type source = testutil.MemSource[resource.Versioned]

// put makes set name, of one backend, the source's at version.
func put(src *source, name, version string) {
	src.Put(name, resource.Versioned{Version: version, Set: &discoveryv1.BackendSet{
		Name:     name,
		Backends: []*discoveryv1.Backend{{Id: "b0", Address: "127.0.0.1", Port: 8080}},
	}})
}

// serve serves src on ln until the returned func stops it.
func serve(t *testing.T, src *source, ln net.Listener) (*discovery.Server, func()) {
	srv := discovery.NewServer(src, discovery.Config{Debounce: time.Millisecond})
	g := grpc.NewServer(grpc.WaitForHandlers(true))
	discoveryv1.RegisterDiscoveryServiceServer(g, srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		g.Serve(ln)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			g.Stop()
			srv.Close()
			<-served
		})
	}
	t.Cleanup(stop)
	return srv, stop
}

// applied returns the versions node id applied, as srv shows them.
func applied(srv *discovery.Server, id string) (map[string]string, bool) {
	for _, dp := range srv.DataPlanes() {
		if dp.GetNodeId() == id {
			out := map[string]string{}
			for _, s := range dp.GetSets() {
				out[s.GetName()] = s.GetAppliedVersion()
			}
			return out, dp.GetConnected()
		}
	}
	return nil, false
}

// dialOptions make a client connection that redials fast.
func dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: waitLimit, Backoff: grpcbackoff.Config{
			BaseDelay: 5 * time.Millisecond, Multiplier: 2, MaxDelay: 50 * time.Millisecond,
		}}),
	}
}

// dial returns a client connection to addr that redials fast, closed at the test's end.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, dialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// listen listens on a loopback port the kernel chooses.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// dataPlane is a data plane in memory, run by Run against cps: Apply records every response
// and serves what they say.
type dataPlane struct {
	logs      *testutil.SyncBuffer
	calls     atomic.Int64 // of Apply
	responses chan *discoveryv1.StreamBackendSetsResponse

	mu     sync.Mutex
	served map[string]string
}

// runDataPlane runs node "dp-1" against cps until the test ends, then checks that Run returned
// context.Canceled.
func runDataPlane(t *testing.T, cps ...ControlPlane) *dataPlane {
	dp := &dataPlane{logs: &testutil.SyncBuffer{}, responses: make(chan *discoveryv1.StreamBackendSetsResponse, 100), served: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			ControlPlanes: cps,
			Node:          &discoveryv1.Node{Id: "dp-1"},
			Initial: func() (map[string]string, uint64, []*discoveryv1.WorkerStatus) {
				return nil, 0, nil
			},
			Apply: func(_ context.Context, resp *discoveryv1.StreamBackendSetsResponse) (map[string]string, []*discoveryv1.SetError, uint64, []*discoveryv1.WorkerStatus) {
				dp.mu.Lock()
				defer dp.mu.Unlock()
				n := dp.calls.Add(1)
				for _, vs := range resp.GetSets() {
					dp.served[vs.GetBackendSet().GetName()] = vs.GetVersion()
				}
				for _, name := range resp.GetRemoved() {
					delete(dp.served, name)
				}
				dp.responses <- resp
				return maps.Clone(dp.served), nil, uint64(n), nil
			},
			BackoffMin: time.Millisecond,
			BackoffMax: 20 * time.Millisecond,
			Logger:     hclog.New(&hclog.LoggerOptions{Output: dp.logs, Level: hclog.Debug}),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return dp
}

// next returns the next response Apply was called with.
func (dp *dataPlane) next(t *testing.T) *discoveryv1.StreamBackendSetsResponse {
	t.Helper()
	return testutil.Receive(t, dp.responses, waitLimit, "a response")
}

// TestReconnect: when its control plane goes away and another takes its port, the client
// reconnects, reports what it applied, and is sent nothing it has: Apply is not called again
// until something changes, and then with that change alone.
func TestReconnect(t *testing.T) {
	src := testutil.NewMemSource[resource.Versioned]()
	put(src, "api", "a1")
	put(src, "web", "w1")
	ln := listen(t)
	addr := ln.Addr().String()
	_, stop := serve(t, src, ln)
	dp := runDataPlane(t, ControlPlane{Address: addr, Conn: dial(t, addr)})

	if got := len(dp.next(t).GetSets()); got != 2 {
		t.Fatalf("first response has %d sets, want 2", got)
	}
	stop()

	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv2, _ := serve(t, src, ln2)
	testutil.WaitFor(t, waitLimit, "the client to report api@a1 and web@w1 to the new control plane", func() bool {
		got, connected := applied(srv2, "dp-1")
		return connected && maps.Equal(got, map[string]string{"api": "a1", "web": "w1"})
	})
	// Responses are in order: had the new server sent anything on connect, it would come first.
	put(src, "web", "w2")
	if resp := dp.next(t); len(resp.GetSets()) != 1 || resp.GetSets()[0].GetVersion() != "w2" || len(resp.GetRemoved()) != 0 {
		t.Fatalf("after reconnecting and a change of web: response %v, want web@w2 alone", resp)
	}
	if n := dp.calls.Load(); n != 2 {
		t.Errorf("Apply called %d times, want 2", n)
	}
	for _, want := range []string{"control plane stream open", "control plane stream ended"} {
		if !strings.Contains(dp.logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, dp.logs.String())
		}
	}
}

// TestFailover: of two control planes with the same content, each with its own store, the client
// streams from the first only; when the first stops, it moves to the second, reports what it
// applied, and is sent nothing it has (Apply is not called again); a put on the second reaches
// it alone. When the second stops too, the client goes round to the first again, at its address.
func TestFailover(t *testing.T) {
	srcA, srcB := testutil.NewMemSource[resource.Versioned](), testutil.NewMemSource[resource.Versioned]()
	for _, src := range []*source{srcA, srcB} {
		put(src, "api", "a1")
		put(src, "web", "w1")
	}
	lnA, lnB := listen(t), listen(t)
	addrA, addrB := lnA.Addr().String(), lnB.Addr().String()
	srvA, stopA := serve(t, srcA, lnA)
	srvB, stopB := serve(t, srcB, lnB)
	dp := runDataPlane(t, ControlPlane{Address: addrA, Conn: dial(t, addrA)}, ControlPlane{Address: addrB, Conn: dial(t, addrB)})

	if got := len(dp.next(t).GetSets()); got != 2 {
		t.Fatalf("first response has %d sets, want 2", got)
	}
	testutil.WaitFor(t, waitLimit, "the first control plane to list dp-1 with api@a1 and web@w1", func() bool {
		got, connected := applied(srvA, "dp-1")
		return connected && maps.Equal(got, map[string]string{"api": "a1", "web": "w1"})
	})
	if _, connected := applied(srvB, "dp-1"); connected {
		t.Fatal("dp-1 is connected to the second control plane too, while the first serves")
	}

	stopA()
	testutil.WaitFor(t, waitLimit, "the client to report api@a1 and web@w1 to the second control plane", func() bool {
		got, connected := applied(srvB, "dp-1")
		return connected && maps.Equal(got, map[string]string{"api": "a1", "web": "w1"})
	})
	// Responses are in order: had the second sent anything on connect, it would come first.
	put(srcB, "web", "w2")
	if resp := dp.next(t); len(resp.GetSets()) != 1 || resp.GetSets()[0].GetVersion() != "w2" || len(resp.GetRemoved()) != 0 {
		t.Fatalf("after failing over and a put of web on the second: response %v, want web@w2 alone", resp)
	}
	if n := dp.calls.Load(); n != 2 {
		t.Errorf("Apply called %d times, want 2 (the first sets, then web@w2)", n)
	}
	testutil.WaitFor(t, waitLimit, "the second control plane to list web@w2 applied", func() bool {
		got, _ := applied(srvB, "dp-1")
		return got["web"] == "w2"
	})

	// Round to the first again: a new control plane on its address, whose store has web@w2 too.
	put(srcA, "web", "w2")
	lnA2, err := net.Listen("tcp", addrA)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addrA, err)
	}
	srvA2, _ := serve(t, srcA, lnA2)
	stopB()
	testutil.WaitFor(t, waitLimit, "the client to report api@a1 and web@w2 to the first address again", func() bool {
		got, connected := applied(srvA2, "dp-1")
		return connected && maps.Equal(got, map[string]string{"api": "a1", "web": "w2"})
	})
	put(srcA, "api", "a2")
	if resp := dp.next(t); len(resp.GetSets()) != 1 || resp.GetSets()[0].GetVersion() != "a2" {
		t.Fatalf("back on the first address, after a put of api: response %v, want api@a2 alone", resp)
	}
	if n := dp.calls.Load(); n != 3 {
		t.Errorf("Apply called %d times, want 3", n)
	}
	for _, want := range []string{"control_plane=" + addrA, "control_plane=" + addrB} {
		if !strings.Contains(dp.logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, dp.logs.String())
		}
	}
}

// TestFailoverFirstDown: when the first control plane is not there at all (its port refuses),
// the first stream the client gets is the second's.
func TestFailoverFirstDown(t *testing.T) {
	src := testutil.NewMemSource[resource.Versioned]()
	put(src, "api", "a1")
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there now: a connect is refused
	ln := listen(t)
	addr := ln.Addr().String()
	srv, _ := serve(t, src, ln)
	dp := runDataPlane(t, ControlPlane{Address: deadAddr, Conn: dial(t, deadAddr)}, ControlPlane{Address: addr, Conn: dial(t, addr)})

	if resp := dp.next(t); len(resp.GetSets()) != 1 || resp.GetSets()[0].GetVersion() != "a1" {
		t.Fatalf("first response %v, want api@a1", resp)
	}
	testutil.WaitFor(t, waitLimit, "the second control plane to list dp-1 with api@a1", func() bool {
		got, connected := applied(srv, "dp-1")
		return connected && got["api"] == "a1"
	})
	if !strings.Contains(dp.logs.String(), "control_plane="+deadAddr) {
		t.Errorf("log does not say the first control plane failed:\n%s", dp.logs.String())
	}
}

// TestConfig: Run refuses a config without what it needs, at once.
func TestConfig(t *testing.T) {
	initial := func() (map[string]string, uint64, []*discoveryv1.WorkerStatus) { return nil, 0, nil }
	apply := func(context.Context, *discoveryv1.StreamBackendSetsResponse) (map[string]string, []*discoveryv1.SetError, uint64, []*discoveryv1.WorkerStatus) {
		return nil, nil, 0, nil
	}
	conn := dial(t, "127.0.0.1:1") // never used: Run refuses first
	cps := []ControlPlane{{Address: "a", Conn: conn}}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Node: &discoveryv1.Node{Id: "n"}, Initial: initial, Apply: apply}, "ControlPlanes"},
		{Config{ControlPlanes: []ControlPlane{{Address: "a", Conn: conn}, {Address: "b"}}, Node: &discoveryv1.Node{Id: "n"}, Initial: initial, Apply: apply}, `ControlPlanes[1] ("b")`},
		{Config{ControlPlanes: cps, Initial: initial, Apply: apply}, "Node.Id"},
		{Config{ControlPlanes: cps, Node: &discoveryv1.Node{}, Initial: initial, Apply: apply}, "Node.Id"},
		{Config{ControlPlanes: cps, Node: &discoveryv1.Node{Id: "n"}, Apply: apply}, "Initial"},
		{Config{ControlPlanes: cps, Node: &discoveryv1.Node{Id: "n"}, Initial: initial}, "Apply"},
		{Config{ControlPlanes: cps, Node: &discoveryv1.Node{Id: "n"}, Initial: initial, Apply: apply, BackoffMin: time.Second, BackoffMax: time.Millisecond}, "BackoffMax"},
	} {
		err := Run(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}
