package replicas

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
	"github.com/xlbproxy/xlb/internal/etcdtest"
	"github.com/xlbproxy/xlb/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, etcdtest.LeakOptions()...) }

const wait = 15 * time.Second

// static is a replica's own state, as its discovery server and load aggregator would give it.
type static struct {
	mu     sync.Mutex
	dps    []*adminv1.DataPlane
	loads  []*adminv1.DataPlaneLoad
	health map[string][]*loadv1.BackendHealth
}

func (s *static) set(dps []*adminv1.DataPlane, loads []*adminv1.DataPlaneLoad) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dps, s.loads = dps, loads
}

func (s *static) DataPlanes() []*adminv1.DataPlane {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*adminv1.DataPlane, len(s.dps))
	for i, dp := range s.dps {
		out[i] = proto.Clone(dp).(*adminv1.DataPlane)
	}
	return out
}

func (s *static) Load() *adminv1.GetLoadResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &adminv1.GetLoadResponse{DataPlanes: s.loads}
}

func (s *static) Health(node string) ([]*loadv1.BackendHealth, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health[node], time.Unix(100, 0)
}

func connected(node string, since int64) *adminv1.DataPlane {
	return &adminv1.DataPlane{NodeId: node, Connected: true, ConnectedSince: timestamppb.New(time.Unix(since, 0))}
}

func left(node string, at time.Time) *adminv1.DataPlane {
	return &adminv1.DataPlane{NodeId: node, DisconnectedAt: timestamppb.New(at)}
}

func loadOf(node string, requests uint64, inFlight int64) *adminv1.DataPlaneLoad {
	return &adminv1.DataPlaneLoad{NodeId: node, Backends: []*loadv1.BackendLoad{{BackendSet: "web", BackendId: "a", Requests: requests, InFlight: inFlight}}}
}

func nodes(dps []*adminv1.DataPlane) []string {
	var out []string
	for _, dp := range dps {
		out = append(out, dp.GetNodeId())
	}
	return out
}

func start(t *testing.T, cli *clientv3.Client, id string, local *static) *Registry {
	t.Helper()
	r, err := Start(cli, local, local, Config{ID: id, Prefix: "/t", TTL: 2 * time.Second, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// TestShared: two replicas each see both's data planes (another's with the health it reported
// there) and the sums of both's load; a node that moved shows the replica it is connected to, and
// its totals add up over both; when one replica's client dies, its data planes vanish from the
// other once its lease expires; one that stops makes its vanish at once.
func TestShared(t *testing.T) {
	c := etcdtest.Start(t, 3)
	la, lb := &static{}, &static{health: map[string][]*loadv1.BackendHealth{"dp2": {{BackendSet: "web", BackendId: "a", Routed: true}}}}
	la.set([]*adminv1.DataPlane{connected("dp1", 10), left("moved", time.Now())}, []*adminv1.DataPlaneLoad{loadOf("dp1", 5, 1), loadOf("moved", 7, 3)})
	lb.set([]*adminv1.DataPlane{connected("dp2", 20), connected("moved", 30)}, []*adminv1.DataPlaneLoad{loadOf("dp2", 11, 2), loadOf("moved", 1, 4)})
	cliB, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cliB.Close()
	a := start(t, c.Client(t), "a", la)
	b, err := Start(cliB, lb, lb, Config{ID: "b", Prefix: "/t", TTL: 2 * time.Second, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Registry{a, b} {
		testutil.WaitFor(t, wait, "every data plane on replica "+r.ID(), func() bool {
			return slices.Equal(nodes(r.DataPlanes()), []string{"dp1", "dp2", "moved"})
		})
	}
	dps := a.DataPlanes()
	if !dps[2].GetConnected() || dps[2].GetConnectedSince().GetSeconds() != 30 {
		t.Errorf("the node that moved to b shows %v; want b's status, connected", dps[2])
	}
	if h := dps[1].GetBackendHealth(); len(h) != 1 || !h[0].GetRouted() {
		t.Errorf("dp2's health on a: %v; want what it reported to b", h)
	}
	l := a.Load()
	want := map[string][2]int64{"dp1": {5, 1}, "dp2": {11, 2}, "moved": {8, 4}}
	for _, dl := range l.GetDataPlanes() {
		b := dl.GetBackends()[0]
		if w := want[dl.GetNodeId()]; int64(b.GetRequests()) != w[0] || b.GetInFlight() != w[1] {
			t.Errorf("load of %s: %d requests, %d in flight; want %v", dl.GetNodeId(), b.GetRequests(), b.GetInFlight(), w)
		}
	}
	if sum := l.GetBackends(); len(sum) != 1 || sum[0].GetRequests() != 24 || sum[0].GetInFlight() != 7 {
		t.Errorf("sums %v; want 24 requests and 7 in flight", sum)
	}

	// b's process dies: no revoke; its lease expires.
	b.cancel()
	<-b.done
	cliB.Close()
	testutil.WaitFor(t, wait, "b's data planes to vanish after its lease", func() bool {
		return slices.Equal(nodes(a.DataPlanes()), []string{"dp1", "moved"})
	})

	// A replica that stops revokes its lease.
	lc := &static{}
	lc.set([]*adminv1.DataPlane{connected("dp3", 1)}, nil)
	cr := start(t, c.Client(t), "c", lc)
	testutil.WaitFor(t, wait, "c's data plane on a", func() bool { return slices.Contains(nodes(a.DataPlanes()), "dp3") })
	cr.Close()
	resp, err := c.Client(t).Get(context.Background(), "/t/replicas/c/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("c's keys after its Close: %d, %v; want none at once", resp.Count, err)
	}
}

// TestChanges: a replica writes what changed (a node that left is deleted, one that came is
// added) and nothing when nothing did.
func TestChanges(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cli := c.Client(t)
	la := &static{}
	la.set([]*adminv1.DataPlane{connected("x", 1), connected("y", 1)}, nil)
	a := start(t, cli, "a", la)
	other := start(t, cli, "o", &static{})
	testutil.WaitFor(t, wait, "x and y", func() bool { return slices.Equal(nodes(other.DataPlanes()), []string{"x", "y"}) })
	rev := func() int64 {
		resp, err := cli.Get(context.Background(), "/t/replicas/a/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		var m int64
		for _, kv := range resp.Kvs {
			m = max(m, kv.ModRevision)
		}
		return m
	}
	before, runs := rev(), a.publishes.Load()
	testutil.WaitFor(t, wait, "five publishes with nothing changed", func() bool { return a.publishes.Load() >= runs+5 })
	if after := rev(); after != before {
		t.Errorf("keys rewritten with nothing changed: mod_revision %d -> %d", before, after)
	}
	la.set([]*adminv1.DataPlane{connected("y", 1), left("z", time.Now().Add(-time.Hour)), connected("w", 2)}, nil)
	testutil.WaitFor(t, wait, "x gone, w come, z too old to share", func() bool {
		return slices.Equal(nodes(other.DataPlanes()), []string{"w", "y"})
	})
}

// TestBadConfig: a config without an id, or with an id that would not make keys, is refused.
func TestBadConfig(t *testing.T) {
	for _, id := range []string{"", "a/b"} {
		if _, err := Start(nil, &static{}, nil, Config{ID: id}); err == nil {
			t.Errorf("id %q accepted", id)
		}
	}
}
