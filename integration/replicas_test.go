package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/xlbproxy/xlb/internal/etcdtest"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// The tests of control-plane replicas on etcd (`xlb controlplane --store etcd`): a real 3-member
// etcd cluster on loopback ports (internal/etcdtest: embedded in the test process, or members as
// processes of their own where a member is killed), and real xlb processes on it.

const (
	// replicaPrefix is the etcd prefix of the replicas (--etcd-prefix's default).
	replicaPrefix = "/xlb"
	// replicaTTL bounds how long the keys of a replica killed outlive it: its lease's TTL
	// (replicas.Config.TTL, 5s), with room for a loaded machine.
	replicaTTL = 30 * time.Second
	// churnPutsMax bounds the puts of a putter.
	churnPutsMax = 200
	// etcdTimeoutDefault is `xlb controlplane`'s default --etcd-timeout, which
	// TestReplicasEtcdKill9's replicas run with (startReplica's 3s is shorter).
	etcdTimeoutDefault = 5 * time.Second
)

// startReplica starts `xlb controlplane --store etcd` on c as replica id.
func startReplica(tb testing.TB, c *etcdtest.Cluster, id string, flags ...string) *controlPlane {
	tb.Helper()
	return startControlPlane(tb, "", nil, replicaFlags(c, id, flags...)...)
}

// replicaFlags are the flags of startReplica: the store on c, replica id, then flags.
func replicaFlags(c *etcdtest.Cluster, id string, flags ...string) []string {
	return append([]string{"--store", "etcd", "--etcd-endpoints", strings.Join(c.Endpoints(), ","),
		"--replica-id", id, "--load-interval", "200ms", "--etcd-timeout", "3s"}, flags...)
}

// putter puts one set over and over on a control plane, the i-th put (from 0) with one backend
// of weight i+1, so that the set a store holds says which put it is: until halted, a put fails,
// or churnPutsMax puts.
type putter struct {
	stop chan struct{}
	done chan struct{}

	mu sync.Mutex
	// acked are the versions acknowledged, of put 0, 1, ...
	acked []string
	// begun is how many puts were sent, acknowledged or not.
	begun int
	// failure is the put that ended the putter, if one did.
	failure *rpcResult
}

// startPutter starts a putter of set name, its backend at addr, on cp. It is halted in cleanup at
// the latest.
func startPutter(tb testing.TB, cp *controlPlane, name, addr string) *putter {
	tb.Helper()
	if _, err := grpcurlPath(); err != nil {
		tb.Fatal(err) // before the goroutine, which must not fail tb
	}
	p := &putter{stop: make(chan struct{}), done: make(chan struct{})}
	be := backendAt(tb, "churn", addr, 1)
	go func() {
		defer close(p.done)
		for i := range churnPutsMax {
			select {
			case <-p.stop:
				return
			default:
			}
			be.Weight = i + 1
			p.mu.Lock()
			p.begun++
			p.mu.Unlock()
			r := cp.call(tb, "PutBackendSet", mustJSON(tb, map[string]any{"backend_set": setJSON{Name: name, Backends: []backendJSON{be}}}))
			var resp struct {
				Version string `json:"version"`
			}
			if r.err == nil {
				r.err = json.Unmarshal([]byte(r.stdout), &resp)
			}
			p.mu.Lock()
			if r.err != nil || resp.Version == "" {
				p.failure = &r
				p.mu.Unlock()
				return
			}
			p.acked = append(p.acked, resp.Version)
			p.mu.Unlock()
		}
	}()
	tb.Cleanup(func() { p.halt(tb) })
	return p
}

// awaitAcked waits until n puts were acknowledged.
func (p *putter) awaitAcked(tb testing.TB, n int) {
	tb.Helper()
	testutil.WaitFor(tb, applyTimeout, fmt.Sprintf("%d puts acknowledged", n), func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.acked) >= n || p.failure != nil
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failure != nil {
		tb.Fatalf("put %d failed: %v", len(p.acked), *p.failure)
	}
}

// halt stops the putter and, unless tb is nil, waits for it (a put in progress ends within
// grpcurlTimeout) and returns what it did.
func (p *putter) halt(tb testing.TB) (acked []string, begun int) {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	if tb == nil {
		return nil, 0
	}
	tb.Helper()
	testutil.Receive(tb, p.done, grpcurlTimeout+stopTimeout, "end of the putter")
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.acked), p.begun
}

// failedRequests counts the requests of recs that failed, and reports the first violationsShown
// of them, with the time they were sent since since.
func failedRequests(t *testing.T, recs [][]loadRecord, since time.Time) (total, failed int) {
	t.Helper()
	for i, rs := range recs {
		for _, r := range rs {
			total++
			if !r.ok() {
				failed++
				if failed <= violationsShown {
					t.Errorf("client %d: a failed request, sent %v after the kill: status %d, body %q, error %v",
						i, r.sent.Sub(since), r.status, r.backend, r.err)
				}
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed, want none", failed, total)
	}
	return total, failed
}

// connectedSince is when d's stream opened, as ListDataPlanes says; the zero time if it says none.
func connectedSince(tb testing.TB, d dataPlaneJSON) time.Time {
	tb.Helper()
	if d.ConnectedSince == "" {
		return time.Time{}
	}
	at, err := time.Parse(time.RFC3339Nano, d.ConnectedSince)
	if err != nil {
		tb.Fatalf("data plane %s: connectedSince %q: %v", d.NodeID, d.ConnectedSince, err)
	}
	return at
}

// TestReplicasKill9: two replicas A and B on one etcd cluster (embedded). A put on replica A
// reaches a data plane on replica B, and each replica lists the other's data plane. The data
// plane of A is given both replicas (`--control-plane A --control-plane B`, A first). Under load
// through it, puts of web acknowledged by A; then, while a putter puts set churn on A over and
// over, A is killed with SIGKILL. Then:
//   - the data plane moves to B: B's ListDataPlanes shows it connected since after the kill,
//     serving the version it served, at the same generation (the time this took is logged);
//   - A's keys in etcd vanish with its lease, and B still lists the data plane, connected;
//   - every put A acknowledged is on B: web and api at their last versions, churn at the last
//     acknowledged put or a later one (the put in flight at the kill may have been committed);
//   - a put on B reaches both data planes, and A's data plane sends its traffic to the new set;
//   - no request through A's data plane fails, over the whole test.
//
// An etcd member killed, and the quorum lost, are TestReplicasEtcdKill9's.
func TestReplicasKill9(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, 3)
	cli := c.Client(t)
	ba, bb := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	be := func(cb *countingBackend, w int) backendJSON { return backendAt(t, cb.name, cb.addr, w) }
	cpA, cpB := startReplica(t, c, "a"), startReplica(t, c, "b")
	dpA := startDataPlane(t, cpA, "on-a", "web", "--control-plane", cpB.addr)
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
	before := cpA.awaitApplied(t, "on-a", map[string]string{"web": last["web"]})
	g.awaitOK(t, g.okN.Load()+100)

	// The kill, puts in flight.
	churn := startPutter(t, cpA, "churn", bb.addr)
	churn.awaitAcked(t, 3)
	killedAt := time.Now()
	cpA.signal(syscall.SIGKILL)
	if cpA.wait(stopTimeout) == nil {
		t.Fatalf("%v did not exit within %v of SIGKILL", cpA, stopTimeout)
	}
	okAtKill := g.okN.Load()
	churn.halt(nil) // stop it putting: its put in flight at the kill, if any, waits out grpcurl's connect timeout

	// A's data plane moves to B, serving what it served.
	served := map[string]string{"web": last["web"]} // it subscribes to web alone
	moved := cpB.awaitDataPlane(t, "on-a", reconnectTimeout, fmt.Sprintf("connected to B since after A's kill, serving %v", served),
		func(d dataPlaneJSON) bool { return d.applies(served) && connectedSince(t, d).After(killedAt) })
	t.Logf("A's data plane connected to B %v after the kill (seen %v after it): generation %s, as before: %s",
		connectedSince(t, moved).Sub(killedAt), time.Since(killedAt), moved.Generation, before.Generation)
	if moved.Generation != before.Generation {
		t.Errorf("A's data plane on B at generation %s, want %s, its generation before the kill", moved.Generation, before.Generation)
	}

	// A's keys vanish with its lease; B still lists the data plane, as its own.
	aKeys := replicaPrefix + "/replicas/a/"
	aKeysLeft := func() (int64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, aKeys, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return -1, err
		}
		return resp.Count, nil
	}
	keysDeadline := time.Now().Add(replicaTTL)
	keysTick := time.NewTicker(rpcPollInterval)
	defer keysTick.Stop()
	for n, err := aKeysLeft(); n != 0; n, err = aKeysLeft() {
		if time.Now().After(keysDeadline) {
			t.Fatalf("%d keys under %s in etcd %v after A's kill (%v); want none once its lease expired", n, aKeys, replicaTTL, err)
		}
		<-keysTick.C
	}
	t.Logf("A's keys left etcd %v after the kill", time.Since(killedAt))
	if d, ok := cpB.dataPlanes(t)["on-a"]; !ok || !d.applies(served) || !connectedSince(t, d).After(killedAt) {
		t.Errorf("B's ListDataPlanes once A's keys are gone: on-a %+v (listed: %v); want it connected since the kill, serving %v", d, ok, served)
	}

	churnAcked, churnBegun := churn.halt(t)

	// No acknowledged put lost: B has each set at the last version A acknowledged, or (churn) at
	// a later put's. B's view follows etcd's watch, which may lag the kill by moments.
	var sets map[string]versionedSetJSON
	lostPut := func() string {
		sets = cpB.sets(t)
		for name, v := range last {
			if got := sets[name].Version; got != v {
				return fmt.Sprintf("set %s at version %q; want %s, the last A acknowledged", name, got, v)
			}
		}
		ch, ok := sets["churn"]
		if !ok || len(ch.BackendSet.Backends) != 1 {
			return fmt.Sprintf("set churn: %+v; want one backend", ch)
		}
		switch i := ch.BackendSet.Backends[0].Weight - 1; {
		case i < len(churnAcked)-1 || i >= churnBegun:
			return fmt.Sprintf("set churn at put %d (%s); want put %d, the last of the %d A acknowledged, or a later one of the %d begun",
				i, ch.Version, len(churnAcked)-1, len(churnAcked), churnBegun)
		case i == len(churnAcked)-1 && ch.Version != churnAcked[i]:
			return fmt.Sprintf("set churn at put %d, version %s; A acknowledged %s", i, ch.Version, churnAcked[i])
		}
		return ""
	}
	deadline := time.Now().Add(applyTimeout)
	tick := time.NewTicker(rpcPollInterval)
	defer tick.Stop()
	for lost := lostPut(); lost != ""; lost = lostPut() {
		if time.Now().After(deadline) {
			t.Fatalf("on B after A's kill, within %v: %s", applyTimeout, lost)
		}
		<-tick.C
	}
	t.Logf("after A's kill, B has every put A acknowledged: web %s, api %s, churn at put %d of %d acknowledged (%d begun)",
		last["web"], last["api"], sets["churn"].BackendSet.Backends[0].Weight-1, len(churnAcked), churnBegun)

	// B takes a put, and both data planes apply it.
	last["web"] = cpB.put(t, setJSON{Name: "web", Backends: []backendJSON{be(bb, 2)}})
	cpB.awaitApplied(t, "on-b", map[string]string{"web": last["web"]})
	cpB.awaitApplied(t, "on-a", map[string]string{"web": last["web"]})
	if by := traffic(t, dpA.addr, "/moved", checkRequests); !maps.Equal(by, map[string]int{"b": checkRequests}) {
		t.Errorf("A's data plane after a put on B: requests by backend %v, want all %d to b", by, checkRequests)
	}

	g.awaitOK(t, okAtKill+outageRequests+killLoadClients)
	total, failed := failedRequests(t, g.halt(), killedAt)
	t.Logf("%d requests through A's data plane, %d after A's kill, %d failed", total, int64(total)-okAtKill, failed)
	if dpA.hasExited() || dpB.hasExited() {
		t.Fatalf("a data plane exited: %v, %v", dpA.cmd.ProcessState, dpB.cmd.ProcessState)
	}
}

// TestReplicasEtcdKill9: two replicas A and B on an etcd cluster of three member processes, and
// a data plane of B under load. The etcd leader is killed with SIGKILL: a put on A made at once
// is accepted, within the default --etcd-timeout, and reaches B's data plane. A second member is
// killed: no quorum, and a put is refused UNAVAILABLE with a message naming etcd, while both
// replicas still list the last set and the data plane serves it. The second member started
// again (the quorum back), a put is accepted and applied. No request through the data plane
// fails over the whole test. The times to accept and to refuse are logged.
func TestReplicasEtcdKill9(t *testing.T) {
	t.Parallel()
	c := etcdtest.StartProcesses(t, 3)
	ba, bb := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	be := func(cb *countingBackend, w int) backendJSON { return backendAt(t, cb.name, cb.addr, w) }
	timeout := "--etcd-timeout=" + etcdTimeoutDefault.String()
	cpA, cpB := startReplica(t, c, "a", timeout), startReplica(t, c, "b", timeout)
	dp := startDataPlane(t, cpB, "on-b", "web")

	web := cpA.put(t, setJSON{Name: "web", Backends: []backendJSON{be(ba, 1)}})
	cpB.awaitApplied(t, "on-b", map[string]string{"web": web})
	g := startLoad(t, dp.addr, "/etcd-kill9", killLoadClients)
	g.awaitOK(t, 100)

	// The leader killed: a put at once is accepted.
	lead := c.Leader()
	if lead < 0 {
		t.Fatal("no etcd member says which leads")
	}
	leadPID := c.PID(lead)
	killedAt := time.Now()
	c.Kill(lead)
	web = cpA.put(t, setJSON{Name: "web", Backends: []backendJSON{be(bb, 1)}})
	t.Logf("etcd leader m%d (pid %d) killed: a put on A accepted %v later", lead, leadPID, time.Since(killedAt))
	cpB.awaitApplied(t, "on-b", map[string]string{"web": web})
	if by := traffic(t, dp.addr, "/leader-killed", checkRequests); !maps.Equal(by, map[string]int{"b": checkRequests}) {
		t.Errorf("with the etcd leader killed, after a put: requests by backend %v, want all %d to b", by, checkRequests)
	}

	// A second member killed: no quorum.
	second := (lead + 1) % 3
	secondPID := c.PID(second)
	quorumLostAt := time.Now()
	c.Kill(second)
	okAtQuorumLoss := g.okN.Load()
	r := cpA.call(t, "PutBackendSet", mustJSON(t, map[string]any{"backend_set": setJSON{Name: "web", Backends: []backendJSON{be(ba, 3)}}}))
	refusedIn := time.Since(quorumLostAt)
	if r.code() != "Unavailable" || !strings.Contains(r.message(), "etcd") {
		t.Errorf("put without an etcd quorum: %v; want Unavailable naming etcd", r)
	}
	t.Logf("member m%d (pid %d) killed too: a put on A refused %v later: %s: %s", second, secondPID, refusedIn, r.code(), r.message())
	for _, cp := range []*controlPlane{cpA, cpB} {
		if got := cp.sets(t)["web"].Version; got != web {
			t.Errorf("%v: ListBackendSets without a quorum: web at %q, want %s", cp, got, web)
		}
	}
	g.awaitOK(t, okAtQuorumLoss+outageRequests+killLoadClients)
	if by := traffic(t, dp.addr, "/no-quorum", checkRequests); !maps.Equal(by, map[string]int{"b": checkRequests}) {
		t.Errorf("without an etcd quorum: requests by backend %v, want all %d to b", by, checkRequests)
	}

	// The quorum back: puts accepted again.
	c.Restart(second)
	web = cpA.put(t, setJSON{Name: "web", Backends: []backendJSON{be(ba, 1), be(bb, 1)}})
	cpB.awaitApplied(t, "on-b", map[string]string{"web": web})
	t.Logf("member m%d started again: a put accepted and applied %v after the quorum was lost", second, time.Since(quorumLostAt))

	total, failed := failedRequests(t, g.halt(), killedAt)
	t.Logf("%d requests through B's data plane, %d of them since etcd lost its quorum, %d failed", total, g.okN.Load()-okAtQuorumLoss, failed)
	if dp.hasExited() || cpA.hasExited() || cpB.hasExited() {
		t.Fatalf("an xlb process exited: data plane %v, A %v, B %v", dp.cmd.ProcessState, cpA.cmd.ProcessState, cpB.cmd.ProcessState)
	}
}
