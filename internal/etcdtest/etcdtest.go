// Package etcdtest runs a real etcd cluster inside a test: n members of the etcd server embedded
// in the test's process (go.etcd.io/etcd/server/v3/embed), on loopback ports the kernel chose, in
// temporary directories, stopped by the test's Cleanup. Members can be stopped and started again
// one by one, so that tests can take a member away, or the quorum.
//
// Only tests import it: the xlb binary talks to etcd as a client and never embeds a server.
//
// The members skip fsync (embed.Config.UnsafeNoFsync): a test stops a member, it never cuts its
// power, and fsyncs would only make the tests slow on a shared machine.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

// readyTimeout bounds how long a cluster, or a member started again, takes to be ready.
const readyTimeout = 30 * time.Second

// Cluster is a running etcd cluster of a test.
type Cluster struct {
	tb      testing.TB
	token   string
	initial string // the initial-cluster flag: name=peer URL, ...

	mu      sync.Mutex
	members []*member
}

type member struct {
	name      string
	dir       string
	peerURL   url.URL
	clientURL url.URL
	e         *embed.Etcd // nil while stopped
}

// Start starts a cluster of n members and waits until it has a leader and every member is ready.
func Start(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, token: fmt.Sprintf("xlb-test-%d", time.Now().UnixNano())}
	var initial []string
	for i := range n {
		m := &member{name: fmt.Sprintf("m%d", i), dir: tb.TempDir(), peerURL: freeURL(tb), clientURL: freeURL(tb)}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL.String())
	}
	c.initial = strings.Join(initial, ",")
	tb.Cleanup(c.stopAll)
	errs := make(chan error, n)
	for _, m := range c.members {
		go func() { errs <- c.start(m, "new") }()
	}
	for range n {
		if err := <-errs; err != nil {
			tb.Fatalf("etcdtest: %v", err)
		}
	}
	return c
}

// freeURL is an http URL on a loopback port that was free a moment ago.
func freeURL(tb testing.TB) url.URL {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("etcdtest: %v", err)
	}
	defer ln.Close()
	return url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// start starts m, a member of a new cluster or an existing one, and waits until it is ready.
func (c *Cluster) start(m *member, state string) error {
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	cfg.InitialCluster = c.initial
	cfg.InitialClusterToken = c.token
	cfg.ClusterState = state
	cfg.TickMs = 50
	cfg.ElectionMs = 500
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start member %s: %w", m.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("member %s: %w", m.name, err)
	case <-time.After(readyTimeout):
		e.Close()
		return fmt.Errorf("member %s not ready within %v", m.name, readyTimeout)
	}
	c.mu.Lock()
	m.e = e
	c.mu.Unlock()
	return nil
}

// Endpoints are the client URLs of every member, running or not.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.clientURL.String()
	}
	return out
}

// Stop stops member i (a graceful stop: it closes its listeners and its data directory).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	e := c.members[i].e
	c.members[i].e = nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts the stopped member i again on its data directory and waits until it is ready,
// which takes a quorum of the members.
func (c *Cluster) Restart(i int) {
	c.tb.Helper()
	if err := c.start(c.members[i], "existing"); err != nil {
		c.tb.Fatalf("etcdtest: %v", err)
	}
}

func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Stop(i)
	}
}

// Client returns a client of every member, closed by the test's Cleanup.
func (c *Cluster) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatalf("etcdtest: client: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// Leader returns the index of the member that leads, as a running member sees it, or -1.
func (c *Cluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.e == nil {
			continue
		}
		lead := m.e.Server.Leader()
		for j, o := range c.members {
			if o.e != nil && uint64(o.e.Server.MemberID()) == uint64(lead) {
				return j
			}
		}
	}
	return -1
}

// Ping puts and deletes a key through cli within limit, to tell whether the cluster takes writes.
func Ping(cli *clientv3.Client, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	_, err := cli.Put(ctx, "/etcdtest/ping", "1")
	return err
}

// LeakOptions are the goleak options of a package whose tests run clusters: a stopped member's
// HTTP connections to its peers (keep-alive loops, and the server side's last read) can outlive
// its Close by a while.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
		goleak.IgnoreAnyFunction("net/http.(*connReader).backgroundRead"),
	}
}
