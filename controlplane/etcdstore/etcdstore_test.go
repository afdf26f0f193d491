package etcdstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/controlplane/store"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/backoff"
	"github.com/xlbproxy/xlb/internal/etcdtest"
	"github.com/xlbproxy/xlb/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

// wait bounds every wait for something that etcd or a watch should do at once.
const wait = 10 * time.Second

func testSet(name string, port uint32) *discoveryv1.BackendSet {
	return &discoveryv1.BackendSet{Name: name, Policy: discoveryv1.Policy_POLICY_ROUND_ROBIN,
		Backends: []*discoveryv1.Backend{{Id: "a", Address: "127.0.0.1", Port: port, Weight: 1}}}
}

func open(t *testing.T, cli *clientv3.Client, prefix string) *Store {
	t.Helper()
	s, err := Open(cli, Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// cluster is a 3-member cluster of t's own.
func cluster(t *testing.T) *etcdtest.Cluster { return etcdtest.Start(t, 3) }

// TestReplicas: a put on one replica reaches another's view and subscribers with the version that
// package store gives the set; an identical put writes nothing; a delete reaches the other too.
func TestReplicas(t *testing.T) {
	c := cluster(t)
	a, b := open(t, c.Client(t), "/t-replicas"), open(t, c.Client(t), "/t-replicas")
	changes, cancel := b.Subscribe()
	defer cancel()
	web := testSet("web", 8080)
	v, err := a.Put(web, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v != resource.Version(web) {
		t.Fatalf("version %q, want resource.Version's %q", v, resource.Version(web))
	}
	if got, err := a.Get("web"); err != nil || got.Version != v {
		t.Fatalf("Get on the replica that put: %v, %v; want version %s at once", got, err, v)
	}
	testutil.Receive(t, changes, wait, "change on the other replica")
	testutil.WaitFor(t, wait, "the put on the other replica", func() bool {
		e, err := b.Get("web")
		return err == nil && e.Version == v && proto.Equal(e.Set, web)
	})
	key := SetsPrefix("/t-replicas") + "web"
	before, err := c.Client(t).Get(context.Background(), key)
	if err != nil || len(before.Kvs) != 1 {
		t.Fatalf("the key in etcd: %v, %v", before, err)
	}
	rev := before.Kvs[0].ModRevision
	if v2, err := a.Put(testSet("web", 8080), nil); err != nil || v2 != v {
		t.Fatalf("identical put: %q, %v; want %q", v2, err, v)
	}
	resp, err := c.Client(t).Get(context.Background(), key)
	if err != nil || resp.Kvs[0].ModRevision > rev {
		t.Fatalf("identical put wrote the key (mod_revision %d > %d), %v", resp.Kvs[0].ModRevision, rev, err)
	}
	if err := b.Delete("web", &v); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, "the delete on the first replica", func() bool {
		_, err := a.Get("web")
		return errors.Is(err, store.ErrNotFound)
	})
	if len(a.List()) != 0 || len(b.Snapshot()) != 0 {
		t.Fatalf("sets left after the delete: %v, %v", a.List(), b.Snapshot())
	}
}

// TestCompareAndSet: expected_version is compared with etcd's entry: a stale one, or "" for a set
// that exists, is a version mismatch that says the current version; a put with the version
// another replica just returned succeeds even before this replica's view has it; a delete of a
// set that does not exist is not found.
func TestCompareAndSet(t *testing.T) {
	c := cluster(t)
	a, b := open(t, c.Client(t), "/t-cas"), open(t, c.Client(t), "/t-cas")
	v1, err := a.Put(testSet("api", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	empty := ""
	if _, err := a.Put(testSet("api", 2), &empty); !errors.Is(err, store.ErrVersionMismatch) || !strings.Contains(err.Error(), v1) {
		t.Fatalf("put expecting no set over an existing one: %v; want a mismatch naming %s", err, v1)
	}
	// Many rounds of: a puts, b at once puts on a's version; b's view may not have a's put yet.
	v := v1
	for i := range 20 {
		va, err := a.Put(testSet("api", uint32(10+2*i)), &v)
		if err != nil {
			t.Fatalf("round %d: put on a with the version b returned: %v", i, err)
		}
		if v, err = b.Put(testSet("api", uint32(11+2*i)), &va); err != nil {
			t.Fatalf("round %d: put on b with the version a returned: %v", i, err)
		}
	}
	stale := v1
	if _, err := a.Put(testSet("api", 3), &stale); !errors.Is(err, store.ErrVersionMismatch) || !strings.Contains(err.Error(), v) {
		t.Fatalf("put with a stale version: %v; want a mismatch naming %s", err, v)
	}
	if err := b.Delete("api", &stale); !errors.Is(err, store.ErrVersionMismatch) {
		t.Fatalf("delete with a stale version: %v; want a mismatch", err)
	}
	if err := b.Delete("nope", nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete of a set that does not exist: %v; want not found", err)
	}
	if _, err := b.Put(testSet("new", 1), &empty); err != nil {
		t.Fatalf("put expecting no set of a new one: %v", err)
	}
}

// TestConcurrentPuts: replicas that put one set at once with the same expected version: exactly
// one wins, the others get a mismatch, and every replica's view ends at the winner's version.
func TestConcurrentPuts(t *testing.T) {
	c := cluster(t)
	stores := []*Store{open(t, c.Client(t), "/t-race"), open(t, c.Client(t), "/t-race"), open(t, c.Client(t), "/t-race")}
	v0, err := stores[0].Put(testSet("s", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stores {
		testutil.WaitFor(t, wait, "the first put everywhere", func() bool { e, err := s.Get("s"); return err == nil && e.Version == v0 })
	}
	const n = 6
	var wg sync.WaitGroup
	wins := make(chan string, n)
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := stores[i%len(stores)].Put(testSet("s", uint32(100+i)), &v0)
			if err != nil {
				errs <- err
				return
			}
			wins <- v
		}()
	}
	wg.Wait()
	close(wins)
	close(errs)
	var won []string
	for v := range wins {
		won = append(won, v)
	}
	if len(won) != 1 {
		t.Fatalf("%d puts won the same compare-and-set, want 1", len(won))
	}
	for err := range errs {
		if !errors.Is(err, store.ErrVersionMismatch) {
			t.Fatalf("a losing put: %v; want a version mismatch", err)
		}
	}
	for _, s := range stores {
		testutil.WaitFor(t, wait, "the winner everywhere", func() bool { e, err := s.Get("s"); return err == nil && e.Version == won[0] })
	}
}

// TestBadKeys: a key under the prefix that holds no valid set is not served, and does not stop
// the others; a put replaces it.
func TestBadKeys(t *testing.T) {
	c := cluster(t)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	p := SetsPrefix("/t-bad")
	bad, _ := proto.Marshal(&discoveryv1.VersionedBackendSet{BackendSet: testSet("other", 1), Version: "x"})
	for key, val := range map[string]string{p + "junk": "not protobuf \xff", p + "misnamed": string(bad),
		p + "invalid": mustMarshal(t, &discoveryv1.VersionedBackendSet{BackendSet: testSet("invalid", 0)})} {
		if _, err := cli.Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, cli, "/t-bad")
	if len(s.List()) != 0 {
		t.Fatalf("bad keys served: %v", s.List())
	}
	if _, err := s.Put(testSet("good", 1), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, p+"junk2", "\x01\x02"); err != nil {
		t.Fatal(err)
	}
	v, err := s.Put(testSet("junk", 5), nil)
	if err != nil {
		t.Fatalf("put over a key that held no set: %v", err)
	}
	testutil.WaitFor(t, wait, "the put over the bad key", func() bool { e, err := s.Get("junk"); return err == nil && e.Version == v })
	if names := len(s.List()); names != 2 {
		t.Fatalf("%d sets, want good and junk: %v", names, s.List())
	}
}

func mustMarshal(t *testing.T, m proto.Message) string {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCompacted: a watch from a revision that etcd compacted reports it (so the store lists
// again), and the store's view follows changes made after the compaction.
func TestCompacted(t *testing.T) {
	c := cluster(t)
	cli := c.Client(t)
	s := open(t, cli, "/t-compact")
	var last int64
	for i := range 5 {
		resp, err := cli.Put(context.Background(), SetsPrefix("/t-compact")+"x", mustMarshal(t, &discoveryv1.VersionedBackendSet{BackendSet: testSet("x", uint32(i+1))}))
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	if _, err := cli.Compact(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	bo := backoff.Backoff{Base: time.Millisecond, Max: time.Millisecond}
	_, compacted, err := s.watchFrom(1, &bo)
	if !compacted {
		t.Fatalf("a watch from revision 2 after a compaction at %d: not compacted (%v)", last, err)
	}
	v, err := s.Put(testSet("x", 99), nil)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := s.Get("x"); err != nil || e.Version != v {
		t.Fatalf("after the compaction: %v, %v; want version %s", e, err, v)
	}
}

// TestBadConfig: a prefix that would not make keys of this store is refused, naming it.
func TestBadConfig(t *testing.T) {
	c := cluster(t)
	for _, p := range []string{"xlb", "/xlb/"} {
		if _, err := Open(c.Client(t), Config{Prefix: p}); err == nil || !strings.Contains(err.Error(), "prefix") {
			t.Errorf("prefix %q: %v; want an error naming the prefix", p, err)
		}
	}
}

// TestQuorum: with one member of three stopped, writes are accepted; with two, a put fails within
// the timeout with an error that wraps store.ErrUnavailable and names etcd, and the view keeps
// every set; when a member is back, puts are accepted again and the view follows.
func TestQuorum(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cli := c.Client(t)
	s, err := Open(cli, Config{Prefix: "/t-quorum", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Put(testSet("web", 1), nil); err != nil {
		t.Fatal(err)
	}
	stop := c.Leader()
	c.Stop(stop)
	v, err := s.Put(testSet("web", 2), nil)
	if err != nil {
		t.Fatalf("put with the leader of 3 members stopped: %v", err)
	}
	c.Stop((stop + 1) % 3)
	start := time.Now()
	_, err = s.Put(testSet("web", 3), nil)
	took := time.Since(start)
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "etcd") {
		t.Fatalf("put without a quorum: %v; want unavailable, naming etcd", err)
	}
	if took > 2*time.Second+time.Second {
		t.Errorf("put without a quorum took %v, past its 2s timeout", took)
	}
	t.Logf("put without a quorum failed after %v: %v", took, err)
	if err := s.Delete("web", nil); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("delete without a quorum: %v; want unavailable", err)
	}
	if e, err := s.Get("web"); err != nil || e.Version != v {
		t.Fatalf("view without a quorum: %v, %v; want web at %s", e, err, v)
	}
	c.Restart(stop)
	testutil.WaitFor(t, 30*time.Second, "a put with the quorum back", func() bool {
		v, err = s.Put(testSet("web", 4), nil)
		return err == nil
	})
	if e, err := s.Get("web"); err != nil || e.Version != v {
		t.Fatalf("view with the quorum back: %v, %v; want web at %s", e, err, v)
	}
}

// TestLeaderKilled: the etcd leader killed with SIGKILL (members are processes), a put made at
// once, with the default timeout, is accepted, and the view has it. etcd answers a proposal that
// a follower forwarded to the dead leader only after its request timeout (5s and two election
// timeouts), past DefaultTimeout: the store must not wait for that answer.
func TestLeaderKilled(t *testing.T) {
	c := etcdtest.StartProcesses(t, 3)
	cli := c.Client(t)
	s := open(t, cli, "/t-leader-killed")
	if _, err := s.Put(testSet("web", 1), nil); err != nil {
		t.Fatal(err)
	}
	lead := c.Leader()
	if lead < 0 {
		t.Fatal("no member says which leads")
	}
	killed := time.Now()
	c.Kill(lead)
	v, err := s.Put(testSet("web", 2), nil)
	if err != nil {
		t.Fatalf("a put at once after the leader m%d was killed: %v", lead, err)
	}
	t.Logf("a put at once after the leader m%d was killed: accepted in %v", lead, time.Since(killed))
	if e, err := s.Get("web"); err != nil || e.Version != v {
		t.Fatalf("the view after the put: %v, %v; want web at %s", e, err, v)
	}
}

// TestPermissionDenied: with etcd's authentication enabled, a store of a user whose role grants
// read alone on the prefix opens and sees the sets, but its put and delete fail at once (no retry
// until the timeout) with an error that wraps store.ErrPermissionDenied, not ErrUnavailable, and
// names etcd and the prefix; the set is unchanged. A user without read on the prefix cannot open
// a store there.
func TestPermissionDenied(t *testing.T) {
	const prefix = "/t-perm"
	c := etcdtest.StartWith(t, 1, etcdtest.Options{RootPassword: "root-secret", Users: []etcdtest.User{
		{Name: "writer", Password: "w", Perms: []etcdtest.Perm{{Prefix: prefix + "/", Write: true}}},
		{Name: "reader", Password: "r", Perms: []etcdtest.Perm{{Prefix: prefix + "/"}}},
		{Name: "other", Password: "o", Perms: []etcdtest.Perm{{Prefix: "/elsewhere/", Write: true}}},
	}})
	as := func(user, password string) *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: wait, Username: user, Password: password, Logger: zap.NewNop()})
		if err != nil {
			t.Fatalf("a client as %s: %v", user, err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	w := open(t, as("writer", "w"), prefix)
	v, err := w.Put(testSet("web", 1), nil)
	if err != nil {
		t.Fatalf("a put as writer: %v", err)
	}
	const timeout = time.Minute
	r, err := Open(as("reader", "r"), Config{Prefix: prefix, Timeout: timeout})
	if err != nil {
		t.Fatalf("open as reader: %v", err)
	}
	defer r.Close()
	if e, err := r.Get("web"); err != nil || e.Version != v {
		t.Fatalf("reader's view: %v, %v; want web at %s", e, err, v)
	}
	start := time.Now()
	_, err = r.Put(testSet("web", 2), nil)
	took := time.Since(start)
	if !errors.Is(err, store.ErrPermissionDenied) || errors.Is(err, store.ErrUnavailable) ||
		!strings.Contains(err.Error(), "etcd") || !strings.Contains(err.Error(), prefix) {
		t.Fatalf("a put as reader: %v; want permission denied (not unavailable), naming etcd and %s", err, prefix)
	}
	if took >= timeout {
		t.Errorf("a put as reader failed after %v: retried until the timeout", took)
	}
	t.Logf("a put as reader failed after %v: %v", took, err)
	if err := r.Delete("web", nil); !errors.Is(err, store.ErrPermissionDenied) {
		t.Errorf("a delete as reader: %v; want permission denied", err)
	}
	if e, err := w.Get("web"); err != nil || e.Version != v {
		t.Errorf("web after the refused writes: %v, %v; want version %s", e, err, v)
	}
	if _, err := Open(as("other", "o"), Config{Prefix: prefix, Timeout: timeout}); !errors.Is(err, store.ErrPermissionDenied) ||
		!strings.Contains(err.Error(), "etcd") {
		t.Errorf("open as a user without read on %s: %v; want permission denied, naming etcd", prefix, err)
	}
}
