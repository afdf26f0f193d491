package integration

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/etcdtest"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// The tests of control-plane replicas on etcd (`xlb controlplane --store etcd`): a real 3-member
// etcd cluster embedded in the test process on loopback ports (internal/etcdtest), and real xlb
// processes on it.

// startReplica starts `xlb controlplane --store etcd` on c as replica id.
func startReplica(tb testing.TB, c *etcdtest.Cluster, id string, flags ...string) *controlPlane {
	tb.Helper()
	return startControlPlane(tb, "", nil, append([]string{"--store", "etcd", "--etcd-endpoints", strings.Join(c.Endpoints(), ","),
		"--replica-id", id, "--load-interval", "200ms", "--etcd-timeout", "3s"}, flags...)...)
}

// TestReplicasKill9: two replicas on one etcd cluster. A put on replica A reaches a data plane on
// replica B, and each replica lists the other's data plane. Under load through the data plane of
// A, puts acknowledged by A, then A killed with SIGKILL: no request fails, every put A
// acknowledged is on B at its version, B takes puts and pushes them to its data plane, and A's
// data plane vanishes from B's ListDataPlanes when A's lease expires. With one etcd member
// stopped puts are still accepted; without a quorum they fail UNAVAILABLE, naming etcd, and
// traffic through the data plane is unaffected.
//
// Not here yet: a data plane given both replicas' addresses moving from A to B (that is the
// data plane's client's failover).
func TestReplicasKill9(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, 3)
	ba, bb := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	be := func(cb *countingBackend, w int) backendJSON { return backendAt(t, cb.name, cb.addr, w) }
	cpA, cpB := startReplica(t, c, "a"), startReplica(t, c, "b")
	dpA := startDataPlane(t, cpA, "on-a", "web")
	dpB := startDataPlane(t, cpB, "on-b", "web")

	last := map[string]string{"web": cpA.put(t, setJSON{Name: "web", Backends: []backendJSON{be(ba, 1)}})}
	cpB.awaitApplied(t, "on-b", last) // put on A, applied by B's data plane, seen on B
	cpA.awaitApplied(t, "on-b", last) // and on A: the registry
	cpB.awaitApplied(t, "on-a", last)

	g := startLoad(t, dpA.addr, "/replicas", killLoadClients)
	g.awaitOK(t, 100)
	var acked []string
	for i, bs := range [][]backendJSON{{be(ba, 1), be(bb, 1)}, {be(bb, 1)}, {be(ba, 2), be(bb, 1)}} {
		v := cpA.put(t, setJSON{Name: "web", Backends: bs})
		if slices.Contains(acked, v) {
			t.Fatalf("put %d: version %s acknowledged before", i, v)
		}
		acked = append(acked, v)
	}
	last["web"] = acked[len(acked)-1]
	last["api"] = cpA.put(t, setJSON{Name: "api", Backends: []backendJSON{be(bb, 1)}})
	cpA.awaitApplied(t, "on-a", map[string]string{"web": last["web"]})
	g.awaitOK(t, g.okN.Load()+100)

	killedAt := time.Now()
	cpA.signal(syscall.SIGKILL)
	if cpA.wait(stopTimeout) == nil {
		t.Fatalf("%v did not exit within %v of SIGKILL", cpA, stopTimeout)
	}
	okAtKill := g.okN.Load()
	sets := cpB.sets(t)
	for name, v := range last {
		if got := sets[name].Version; got != v {
			t.Errorf("on B after A's kill, set %s: version %q; want %s, the last A acknowledged", name, got, v)
		}
	}
	// B takes a put, and its data plane applies it.
	last["web"] = cpB.put(t, setJSON{Name: "web", Backends: []backendJSON{be(bb, 2)}})
	cpB.awaitApplied(t, "on-b", map[string]string{"web": last["web"]})
	// A's keys vanish with its lease.
	testutil.WaitFor(t, 30*time.Second, "A's data plane gone from B's ListDataPlanes", func() bool {
		_, listed := cpB.dataPlanes(t)["on-a"]
		return !listed
	})
	t.Logf("A's data plane left B's ListDataPlanes %v after the kill", time.Since(killedAt))

	// etcd: one member stopped, puts accepted; two, refused naming etcd.
	first := c.Leader()
	c.Stop(first)
	last["web"] = cpB.put(t, setJSON{Name: "web", Backends: []backendJSON{be(ba, 1), be(bb, 1)}})
	cpB.awaitApplied(t, "on-b", map[string]string{"web": last["web"]})
	c.Stop((first + 1) % 3) // one member of three left: no quorum
	r := cpB.call(t, "PutBackendSet", mustJSON(t, map[string]any{"backend_set": setJSON{Name: "web", Backends: []backendJSON{be(ba, 3)}}}))
	if r.code() != "Unavailable" || !strings.Contains(r.message(), "etcd") {
		t.Errorf("put without an etcd quorum: %v; want Unavailable naming etcd", r)
	}
	if got := cpB.sets(t)["web"].Version; got != last["web"] {
		t.Errorf("ListBackendSets without a quorum: web at %q, want %s", got, last["web"])
	}
	g.awaitOK(t, okAtKill+outageRequests+killLoadClients)
	recs := g.halt()
	var total, failed int
	for i, rs := range recs {
		for _, r := range rs {
			total++
			if !r.ok() {
				failed++
				if failed <= violationsShown {
					t.Errorf("client %d: a failed request, sent %v after A's kill: status %d, body %q, error %v",
						i, r.sent.Sub(killedAt), r.status, r.backend, r.err)
				}
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed, want none", failed, total)
	}
	t.Logf("%d requests through A's data plane, %d after A's kill, %d failed", total, int64(total)-okAtKill, failed)
	if dpA.hasExited() || dpB.hasExited() {
		t.Fatalf("a data plane exited: %v, %v", dpA.cmd.ProcessState, dpB.cmd.ProcessState)
	}
}
