package admin

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	adminserver "github.com/xlbproxy/xlb/controlplane/admin"
	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/controlplane/store"
	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// dataPlanesFunc is an adminserver.DataPlanes made of a func.
type dataPlanesFunc func() []*adminv1.DataPlane

func (f dataPlanesFunc) DataPlanes() []*adminv1.DataPlane { return f() }

// server is the AdminService of part of the control plane, on a loopback port, that a test can
// stop and start again on the same port.
type server struct {
	t     *testing.T
	addr  string
	st    *store.Store
	dps   adminserver.DataPlanes
	inter grpc.UnaryServerInterceptor // nil: none
	mu    sync.Mutex
	gs    *grpc.Server // nil when stopped
}

func newServer(t *testing.T, dps adminserver.DataPlanes, inter grpc.UnaryServerInterceptor) *server {
	st, err := store.Open("", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, addr: "127.0.0.1:0", st: st, dps: dps, inter: inter}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// start serves on s.addr (the port the kernel chose the first time).
func (s *server) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Errorf("listen on %s: %v", s.addr, err)
		return
	}
	s.addr = lis.Addr().String()
	var opts []grpc.ServerOption
	if s.inter != nil {
		opts = append(opts, grpc.UnaryInterceptor(s.inter))
	}
	s.gs = grpc.NewServer(opts...)
	adminv1.RegisterAdminServiceServer(s.gs, adminserver.NewServer(s.st, s.dps, nil))
	go s.gs.Serve(lis)
}

func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gs != nil {
		s.gs.Stop()
		s.gs = nil
	}
}

// client returns a Client of s with opts, on a connection that reconnects within 50ms.
func (s *server) client(opts ...Option) *Client {
	conn, err := grpc.NewClient("passthrough:///"+s.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 50 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { conn.Close() })
	return New(conn, opts...)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testSet(name string, port uint32) *discoveryv1.BackendSet {
	return &discoveryv1.BackendSet{
		Name:     name,
		Backends: []*discoveryv1.Backend{{Id: "a", Address: "10.0.0.1", Port: port}},
	}
}

func ptr(s string) *string { return &s }

func TestCalls(t *testing.T) {
	dp := &adminv1.DataPlane{NodeId: "node-1", Connected: true}
	s := newServer(t, dataPlanesFunc(func() []*adminv1.DataPlane { return []*adminv1.DataPlane{dp} }), nil)
	c := s.client()
	ctx := ctxT(t)
	web := testSet("web", 80)
	v, err := c.Put(ctx, web, ptr(""))
	if err != nil || v != resource.Version(web) {
		t.Fatalf("put: %q, %v", v, err)
	}
	if _, err := c.Put(ctx, testSet("api", 81), nil); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, "web")
	if err != nil || got.Version != v || !proto.Equal(got.BackendSet, web) {
		t.Fatalf("get: %v, %v", got, err)
	}
	list, err := c.List(ctx)
	if err != nil || len(list) != 2 || list[0].BackendSet.Name != "api" || list[1].Version != v {
		t.Fatalf("list: %v, %v", list, err)
	}
	dps, err := c.DataPlanes(ctx)
	if err != nil || len(dps) != 1 || !proto.Equal(dps[0], dp) {
		t.Fatalf("data planes: %v, %v", dps, err)
	}
	if err := c.Delete(ctx, "web", ptr(v)); err != nil {
		t.Fatal(err)
	}

	// Errors keep their codes through the wrapping, and are not retried.
	var retries atomic.Int32
	c.onRetry = func(int, error) { retries.Add(1) }
	for _, tc := range []struct {
		what string
		err  error
		code codes.Code
		says string
	}{
		{"get a missing set", second(c.Get(ctx, "web")), codes.NotFound, `admin: get backend set "web": `},
		{"delete a missing set", c.Delete(ctx, "web", nil), codes.NotFound, `"web" does not exist`},
		{"put an invalid set", second(c.Put(ctx, testSet("web", 0), nil)), codes.InvalidArgument, "backend_set.backends[0].port"},
		{"put with a stale version", second(c.Put(ctx, testSet("api", 82), ptr(v))), codes.FailedPrecondition, "the current version is"},
		{"get an invalid name", second(c.Get(ctx, "")), codes.InvalidArgument, "name: required"},
	} {
		if status.Code(tc.err) != tc.code || !strings.Contains(tc.err.Error(), tc.says) {
			t.Errorf("%s: %v, want %v saying %q", tc.what, tc.err, tc.code, tc.says)
		}
	}
	if n := retries.Load(); n != 0 {
		t.Fatalf("%d retries of calls that did not fail with UNAVAILABLE", n)
	}
}

func second[T any](_ T, err error) error { return err }

// failFirst is an interceptor that fails the first n calls of method with UNAVAILABLE, having
// run the handler first when after is true (an answer lost on the way back), and then runs then.
func failFirst(method string, n int32, after bool, then func()) (grpc.UnaryServerInterceptor, *atomic.Int32) {
	var calls atomic.Int32
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !strings.HasSuffix(info.FullMethod, "/"+method) {
			return handler(ctx, req)
		}
		if calls.Add(1) > n {
			return handler(ctx, req)
		}
		if after {
			if _, err := handler(ctx, req); err != nil {
				return nil, err
			}
		}
		if then != nil {
			then()
		}
		return nil, status.Error(codes.Unavailable, "injected")
	}, &calls
}

func TestRetriesOnUnavailable(t *testing.T) {
	inter, calls := failFirst("GetBackendSet", 2, false, nil)
	s := newServer(t, nil, inter)
	c := s.client(WithBackoff(time.Millisecond, 4*time.Millisecond))
	ctx := ctxT(t)
	if _, err := c.Put(ctx, testSet("web", 80), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "web"); err != nil {
		t.Fatalf("get after two UNAVAILABLE: %v", err)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d calls, want 3", n)
	}
}

func TestAttemptsBounded(t *testing.T) {
	inter, calls := failFirst("ListBackendSets", 1000, false, nil)
	s := newServer(t, nil, inter)
	c := s.client(WithAttempts(3), WithBackoff(time.Millisecond, time.Millisecond))
	_, err := c.List(ctxT(t))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("list: %v, want UNAVAILABLE", err)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d calls, want 3 attempts", n)
	}

	// The context ends the delay before a retry.
	calls.Store(0)
	c = s.client(WithBackoff(time.Hour, time.Hour))
	ctx, cancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
	defer cancel()
	_, err = c.List(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || status.Code(err) != codes.Unavailable {
		t.Fatalf("list with a context that ends in the backoff: %v, want the deadline and UNAVAILABLE", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d calls, want 1", n)
	}
}

// TestLostAnswers makes a write succeed on the server and its answer fail with UNAVAILABLE, and
// checks that the retry reports what happened.
func TestLostAnswers(t *testing.T) {
	ctx := ctxT(t)
	t.Run("compare-and-set put", func(t *testing.T) {
		inter, calls := failFirst("PutBackendSet", 1, true, nil)
		s := newServer(t, nil, inter)
		c := s.client(WithBackoff(time.Millisecond, time.Millisecond))
		web := testSet("web", 80)
		v, err := c.Put(ctx, web, ptr(""))
		if err != nil || v != resource.Version(web) {
			t.Fatalf("put: %q, %v; want success at %s", v, err, resource.Version(web))
		}
		if calls.Load() != 2 {
			t.Fatalf("%d calls, want 2", calls.Load())
		}
		// Without a retry, a FAILED_PRECONDITION is the caller's.
		if _, err := c.Put(ctx, web, ptr("")); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("a compare-and-set put that was not retried: %v, want FAILED_PRECONDITION", err)
		}
	})
	t.Run("compare-and-set put, then another writer", func(t *testing.T) {
		var s *server
		inter, _ := failFirst("PutBackendSet", 1, true, func() { s.st.Put(testSet("web", 99), nil) })
		s = newServer(t, nil, inter)
		c := s.client(WithBackoff(time.Millisecond, time.Millisecond))
		_, err := c.Put(ctx, testSet("web", 80), ptr(""))
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("put: %v, want FAILED_PRECONDITION: the set is not what was put", err)
		}
	})
	t.Run("put", func(t *testing.T) {
		inter, _ := failFirst("PutBackendSet", 1, true, nil)
		s := newServer(t, nil, inter)
		c := s.client(WithBackoff(time.Millisecond, time.Millisecond))
		web := testSet("web", 80)
		if v, err := c.Put(ctx, web, nil); err != nil || v != resource.Version(web) {
			t.Fatalf("put: %q, %v", v, err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		inter, calls := failFirst("DeleteBackendSet", 1, true, nil)
		s := newServer(t, nil, inter)
		c := s.client(WithBackoff(time.Millisecond, time.Millisecond))
		v, _ := c.Put(ctx, testSet("web", 80), nil)
		if err := c.Delete(ctx, "web", ptr(v)); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if calls.Load() != 2 {
			t.Fatalf("%d calls, want 2", calls.Load())
		}
		if _, err := s.st.Get("web"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the set is still there: %v", err)
		}
	})
}

// TestRetryAcrossRestart stops the server, and starts it again on the same port once the client
// has seen UNAVAILABLE: the put that was under way succeeds.
func TestRetryAcrossRestart(t *testing.T) {
	s := newServer(t, nil, nil)
	var retries atomic.Int32
	c := s.client(WithAttempts(20), WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	c.onRetry = func(attempt int, err error) {
		if retries.Add(1) == 1 {
			t.Logf("attempt %d: %v; restarting the server", attempt, err)
			s.start()
		}
	}
	ctx := ctxT(t)
	if _, err := c.Put(ctx, testSet("web", 80), nil); err != nil {
		t.Fatal(err)
	}
	if retries.Load() != 0 {
		t.Fatal("a retry while the server was up")
	}
	addr := s.addr
	s.stop()
	web := testSet("web", 81)
	v, err := c.Put(ctx, web, nil)
	if err != nil {
		t.Fatalf("put across a restart: %v", err)
	}
	if retries.Load() == 0 || s.addr != addr {
		t.Fatalf("%d retries, on %s (was %s): the restart was not exercised", retries.Load(), s.addr, addr)
	}
	if e, err := s.st.Get("web"); err != nil || e.Version != v || v != resource.Version(web) {
		t.Fatalf("after the restart web is %v, %v; want version %s", e, err, resource.Version(web))
	}
}

func TestWaitApplied(t *testing.T) {
	const v1, v2 = "aaaa", "bbbb"
	dp := func(id string, connected bool, sets ...*adminv1.SetStatus) *adminv1.DataPlane {
		return &adminv1.DataPlane{NodeId: id, Connected: connected, Sets: sets}
	}
	applied := func(v string) *adminv1.SetStatus { return &adminv1.SetStatus{Name: "web", AppliedVersion: v} }
	nacked := func(v, msg string) *adminv1.SetStatus {
		return &adminv1.SetStatus{Name: "web", AppliedVersion: v1, LastNack: &adminv1.Nack{Version: v, Message: msg}}
	}
	cases := []struct {
		name    string
		polls   [][]*adminv1.DataPlane // what each poll sees; the last one repeats
		nodeIDs []string
		want    string // "" for success, else what the error says
	}{
		{"no data planes", [][]*adminv1.DataPlane{nil}, nil, ""},
		{"applied everywhere connected", [][]*adminv1.DataPlane{{
			dp("n1", true, applied(v2)), dp("n2", true, &adminv1.SetStatus{Name: "api"}, applied(v2)), dp("gone", false),
		}}, nil, ""},
		{"applied after some polls", [][]*adminv1.DataPlane{
			{dp("n1", true, applied(v1)), dp("n2", true)},
			{dp("n1", true, applied(v2)), dp("n2", true)},
			{dp("n1", true, applied(v2)), dp("n2", true, applied(v2))},
		}, nil, ""},
		{"rejected", [][]*adminv1.DataPlane{
			{dp("n1", true, applied(v1)), dp("n2", true, applied(v1))},
			{dp("n1", true, applied(v2)), dp("n2", true, nacked(v2, "backend_set.backends[0].tls: no TLS here"))},
		}, nil, `data plane "n2" rejected backend set "web" version bbbb: backend_set.backends[0].tls: no TLS here`},
		{"an older rejection does not count", [][]*adminv1.DataPlane{
			{dp("n1", true, nacked("cccc", "old"))},
			{dp("n1", true, applied(v2))},
		}, nil, ""},
		{"the nodes named", [][]*adminv1.DataPlane{{dp("n1", true, applied(v2)), dp("n2", true, applied(v1))}}, []string{"n1"}, ""},
		{"a node named that never connected", [][]*adminv1.DataPlane{{dp("n1", true, applied(v2))}}, []string{"n1", "n9"},
			`not yet applied by "n9" (never connected)`},
		{"a node named that is disconnected", [][]*adminv1.DataPlane{{dp("n1", false, applied(v1)), dp("n2", true)}}, []string{"n1"},
			`not yet applied by "n1" (disconnected)`},
		{"still waiting", [][]*adminv1.DataPlane{{dp("n1", true, applied(v2)), dp("n2", true, applied(v1))}}, nil,
			`; not yet applied by "n2"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var polls atomic.Int32
			s := newServer(t, dataPlanesFunc(func() []*adminv1.DataPlane {
				n := int(polls.Add(1))
				return tc.polls[min(n, len(tc.polls))-1]
			}), nil)
			c := s.client(WithPollInterval(time.Millisecond))
			ctx, cancel := context.WithTimeout(ctxT(t), 200*time.Millisecond)
			defer cancel()
			err := c.WaitApplied(ctx, "web", v2, tc.nodeIDs...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("wait: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("wait: %v, want an error saying %q", err, tc.want)
			}
			if tc.want == "" && int(polls.Load()) != len(tc.polls) {
				t.Fatalf("done after %d polls, want %d", polls.Load(), len(tc.polls))
			}
			var nack *NackError
			if errors.As(err, &nack) != strings.Contains(tc.want, "rejected") {
				t.Fatalf("wait: %v: a *NackError only for a rejection", err)
			}
		})
	}
	t.Run("arguments", func(t *testing.T) {
		c := newServer(t, nil, nil).client()
		if err := c.WaitApplied(ctxT(t), "web", ""); err == nil {
			t.Fatal("a wait for no version")
		}
	})
}
