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

// TestReconnect: when its control plane goes away and another takes its port, the client
// reconnects, reports what it applied, and is sent nothing it has: Apply is not called again
// until something changes, and then with that change alone.
func TestReconnect(t *testing.T) {
	src := testutil.NewMemSource[resource.Versioned]()
	put(src, "api", "a1")
	put(src, "web", "w1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_, stop := serve(t, src, ln)

	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: waitLimit, Backoff: grpcbackoff.Config{
			BaseDelay: 5 * time.Millisecond, Multiplier: 2, MaxDelay: 50 * time.Millisecond,
		}}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	logs := &testutil.SyncBuffer{}
	var (
		calls     atomic.Int64
		mu        sync.Mutex
		served    = map[string]string{}
		responses = make(chan *discoveryv1.StreamBackendSetsResponse, 100)
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, conn, Config{
			Node: &discoveryv1.Node{Id: "dp-1"},
			Initial: func() (map[string]string, uint64, []*discoveryv1.WorkerStatus) {
				return nil, 0, nil
			},
			Apply: func(_ context.Context, resp *discoveryv1.StreamBackendSetsResponse) (map[string]string, []*discoveryv1.SetError, uint64, []*discoveryv1.WorkerStatus) {
				mu.Lock()
				defer mu.Unlock()
				calls.Add(1)
				for _, vs := range resp.GetSets() {
					served[vs.GetBackendSet().GetName()] = vs.GetVersion()
				}
				for _, name := range resp.GetRemoved() {
					delete(served, name)
				}
				responses <- resp
				return maps.Clone(served), nil, uint64(calls.Load()), nil
			},
			BackoffMin: time.Millisecond,
			BackoffMax: 20 * time.Millisecond,
			Logger:     hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}),
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	}()
	next := func() *discoveryv1.StreamBackendSetsResponse {
		t.Helper()
		select {
		case resp := <-responses:
			return resp
		case <-time.After(waitLimit):
			t.Fatalf("no response within %v", waitLimit)
			return nil
		}
	}

	if got := len(next().GetSets()); got != 2 {
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
	if resp := next(); len(resp.GetSets()) != 1 || resp.GetSets()[0].GetVersion() != "w2" || len(resp.GetRemoved()) != 0 {
		t.Fatalf("after reconnecting and a change of web: response %v, want web@w2 alone", resp)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("Apply called %d times, want 2", n)
	}
	for _, want := range []string{"control plane stream open", "control plane stream ended"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestConfig: Run refuses a config without what it needs, at once.
func TestConfig(t *testing.T) {
	initial := func() (map[string]string, uint64, []*discoveryv1.WorkerStatus) { return nil, 0, nil }
	apply := func(context.Context, *discoveryv1.StreamBackendSetsResponse) (map[string]string, []*discoveryv1.SetError, uint64, []*discoveryv1.WorkerStatus) {
		return nil, nil, 0, nil
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Initial: initial, Apply: apply}, "Node.Id"},
		{Config{Node: &discoveryv1.Node{}, Initial: initial, Apply: apply}, "Node.Id"},
		{Config{Node: &discoveryv1.Node{Id: "n"}, Apply: apply}, "Initial"},
		{Config{Node: &discoveryv1.Node{Id: "n"}, Initial: initial}, "Apply"},
		{Config{Node: &discoveryv1.Node{Id: "n"}, Initial: initial, Apply: apply, BackoffMin: time.Second, BackoffMax: time.Millisecond}, "BackoffMax"},
	} {
		err := Run(context.Background(), nil, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}
