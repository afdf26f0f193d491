package cpserver

import (
	"context"
	"maps"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/xlbproxy/xlb/clients/xds"
	"github.com/xlbproxy/xlb/controlplane/etcdstore"
	"github.com/xlbproxy/xlb/controlplane/replicas"
	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
	"github.com/xlbproxy/xlb/internal/etcdtest"
	"github.com/xlbproxy/xlb/internal/testutil"
)

const wait = 15 * time.Second

// replica is a control plane on etcd serving on a loopback port, as `xlb controlplane --store
// etcd` builds it.
type replica struct {
	addr string
	st   *etcdstore.Store
}

func startReplica(t *testing.T, c *etcdtest.Cluster, id string, timeout time.Duration) *replica {
	t.Helper()
	cli := c.Client(t)
	st, err := etcdstore.Open(cli, etcdstore.Config{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	s := New(st, Config{Debounce: time.Millisecond, LoadInterval: 50 * time.Millisecond})
	reg, err := replicas.Start(cli, s.Discovery, s.Load, replicas.Config{ID: id, Interval: 20 * time.Millisecond, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	s.Share(reg, reg)
	srv := grpc.NewServer()
	s.Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		s.Close()
		srv.Stop()
		reg.Close()
		st.Close()
	})
	return &replica{addr: ln.Addr().String(), st: st}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// dataPlane is a data plane's xDS-lite client (clients/xds) on a replica: it serves what it is
// sent.
type dataPlane struct {
	mu      sync.Mutex
	applied map[string]string
}

func (d *dataPlane) has(name, version string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.applied[name] == version
}

func startDataPlane(t *testing.T, addr, node string) *dataPlane {
	t.Helper()
	d := &dataPlane{applied: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		xds.Run(ctx, xds.Config{
			ControlPlanes: []xds.ControlPlane{{Conn: dial(t, addr)}},
			Node:          &discoveryv1.Node{Id: node},
			Initial:       func() (map[string]string, uint64, []*discoveryv1.WorkerStatus) { return nil, 0, nil },
			Apply: func(_ context.Context, resp *discoveryv1.StreamBackendSetsResponse) (map[string]string, []*discoveryv1.SetError, uint64, []*discoveryv1.WorkerStatus) {
				d.mu.Lock()
				defer d.mu.Unlock()
				for _, s := range resp.GetSets() {
					d.applied[s.GetBackendSet().GetName()] = s.GetVersion()
				}
				for _, name := range resp.GetRemoved() {
					delete(d.applied, name)
				}
				return maps.Clone(d.applied), nil, 1, nil
			},
			BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

func webSet(port uint32) *discoveryv1.BackendSet {
	return &discoveryv1.BackendSet{Name: "web", Policy: discoveryv1.Policy_POLICY_ROUND_ROBIN,
		Backends: []*discoveryv1.Backend{{Id: "a", Address: "127.0.0.1", Port: port, Weight: 1}}}
}

// TestReplicasOnEtcd: two replicas on one etcd cluster: a put on replica A reaches a data plane on
// replica B; A's ListDataPlanes shows B's data plane, and A's GetLoad the load it reported to B.
func TestReplicasOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 3)
	a, b := startReplica(t, c, "a", 0), startReplica(t, c, "b", 0)
	dp := startDataPlane(t, b.addr, "dp-on-b")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	adminA := adminv1.NewAdminServiceClient(dial(t, a.addr))
	put, err := adminA.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: webSet(8080)})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, "the put on A on the data plane of B", func() bool { return dp.has("web", put.GetVersion()) })

	testutil.WaitFor(t, wait, "B's data plane in A's ListDataPlanes, with the version it applied", func() bool {
		resp, err := adminA.ListDataPlanes(ctx, &adminv1.ListDataPlanesRequest{})
		if err != nil || len(resp.GetDataPlanes()) != 1 {
			return false
		}
		got := resp.GetDataPlanes()[0]
		return got.GetNodeId() == "dp-on-b" && got.GetConnected() && len(got.GetSets()) == 1 && got.GetSets()[0].GetAppliedVersion() == put.GetVersion()
	})

	lrs, err := loadv1.NewLoadReportingServiceClient(dial(t, b.addr)).StreamLoadStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lrs.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := lrs.Send(&loadv1.StreamLoadStatsRequest{NodeId: "dp-on-b", Instance: "i1", Seq: 1,
		Backends: []*loadv1.BackendLoad{{BackendSet: "web", BackendId: "a", Requests: 42}}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, "the load reported to B in A's GetLoad", func() bool {
		l, err := adminA.GetLoad(ctx, &adminv1.GetLoadRequest{})
		return err == nil && len(l.GetBackends()) == 1 && l.GetBackends()[0].GetRequests() == 42 &&
			len(l.GetDataPlanes()) == 1 && l.GetDataPlanes()[0].GetNodeId() == "dp-on-b"
	})
}

// TestQuorumLostThroughAdmin: with one etcd member of three stopped a put is accepted and reaches
// the data plane; with two, a put fails UNAVAILABLE naming etcd within its timeout, while the
// data plane keeps its sets, its stream stays up, and reads still answer.
func TestQuorumLostThroughAdmin(t *testing.T) {
	c := etcdtest.Start(t, 3)
	a := startReplica(t, c, "a", 2*time.Second)
	dp := startDataPlane(t, a.addr, "dp")
	ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
	defer cancel()
	admin := adminv1.NewAdminServiceClient(dial(t, a.addr))
	if _, err := admin.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: webSet(1)}); err != nil {
		t.Fatal(err)
	}
	down := c.Leader()
	c.Stop(down)
	put, err := admin.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: webSet(2)})
	if err != nil {
		t.Fatalf("put with one etcd member of three stopped (the leader): %v", err)
	}
	testutil.WaitFor(t, wait, "the put with one member down on the data plane", func() bool { return dp.has("web", put.GetVersion()) })

	c.Stop((down + 1) % 3)
	start := time.Now()
	_, err = admin.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: webSet(3)})
	took := time.Since(start)
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "etcd") {
		t.Fatalf("put without an etcd quorum: %v; want UNAVAILABLE naming etcd", err)
	}
	if took > 5*time.Second {
		t.Errorf("put without an etcd quorum took %v; its timeout is 2s", took)
	}
	t.Logf("put without a quorum: %v after %v", err, took)
	got, err := admin.GetBackendSet(ctx, &adminv1.GetBackendSetRequest{Name: "web"})
	if err != nil || got.GetBackendSet().GetVersion() != put.GetVersion() {
		t.Fatalf("get without a quorum: %v, %v; want the last version, %s", got, err, put.GetVersion())
	}
	if !dp.has("web", put.GetVersion()) {
		t.Fatal("the data plane lost its set when etcd lost its quorum")
	}
	dps, err := admin.ListDataPlanes(ctx, &adminv1.ListDataPlanesRequest{})
	if err != nil || len(dps.GetDataPlanes()) != 1 || !dps.GetDataPlanes()[0].GetConnected() {
		t.Fatalf("ListDataPlanes without a quorum: %v, %v; want the data plane, connected", dps, err)
	}
}
