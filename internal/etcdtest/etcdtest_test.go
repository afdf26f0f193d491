package etcdtest

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// TestCluster: three members take writes, still do with one stopped, and refuse them without a
// quorum; the quorum back, they take writes again.
func TestCluster(t *testing.T) {
	c := Start(t, 3)
	cli := c.Client(t)
	if err := Ping(cli, 5*time.Second); err != nil {
		t.Fatalf("a put to the cluster: %v", err)
	}
	c.Stop(0)
	if err := Ping(cli, 10*time.Second); err != nil {
		t.Fatalf("a put with 2 of 3 members: %v", err)
	}
	c.Stop(1)
	if err := Ping(cli, 2*time.Second); err == nil {
		t.Fatal("a put with 1 of 3 members succeeded")
	}
	c.Restart(1)
	if err := Ping(cli, 10*time.Second); err != nil {
		t.Fatalf("a put after the quorum came back: %v", err)
	}
}

// TestProcesses: three member processes take writes; with the leader killed by SIGKILL another
// is elected and they still do; with a second killed they refuse them; the last one killed
// started again on its data directory, the quorum is back and a write made before the kills is
// still there.
func TestProcesses(t *testing.T) {
	c := StartProcesses(t, 3)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/etcdtest/before", "kept"); err != nil {
		t.Fatalf("a put to the cluster: %v", err)
	}
	lead := c.Leader()
	if lead < 0 {
		t.Fatal("no member says which leads")
	}
	pid := c.PID(lead)
	c.Kill(lead)
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("member %d (pid %d) after Kill: kill -0 says %v, want ESRCH", lead, pid, err)
	}
	if c.PID(lead) != 0 {
		t.Errorf("PID(%d) of a killed member: %d, want 0", lead, c.PID(lead))
	}
	// A put sent before the others noticed the leader's death is lost with it, and etcd answers
	// it "request timed out" only after its request timeout (5s and two election timeouts): wait
	// for the election first.
	next := -1
	testutil.WaitFor(t, 30*time.Second, "another leader", func() bool {
		next = c.Leader()
		return next >= 0 && next != lead
	})
	if err := Ping(cli, 10*time.Second); err != nil {
		t.Fatalf("a put with the leader killed: %v", err)
	}
	c.Kill(next)
	if err := Ping(cli, 2*time.Second); err == nil {
		t.Fatal("a put with 1 of 3 members succeeded")
	}
	c.Restart(next)
	if err := Ping(cli, 10*time.Second); err != nil {
		t.Fatalf("a put after the quorum came back: %v", err)
	}
	resp, err := cli.Get(ctx, "/etcdtest/before")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "kept" {
		t.Fatalf("the key put before the kills: %v, %v; want kept", resp, err)
	}
}

// TestTLSAuth: a cluster of StartWith with TLS, client certificates and authentication takes
// Client's writes; it refuses a client without a certificate, a wrong password, and a put of a
// user whose role grants read alone.
func TestTLSAuth(t *testing.T) {
	dir := t.TempDir()
	ca, clientCA := testutil.NewCA(t, dir, "ca"), testutil.NewCA(t, dir, "client-ca")
	c := StartWith(t, 1, Options{
		CA: ca, ServerCert: ca.IssueServer(t, dir, "etcd", "127.0.0.1"), ClientCA: clientCA,
		RootPassword: "root-secret",
		Users:        []User{{Name: "reader", Password: "reader-secret", Perms: []Perm{{Prefix: "/etcdtest/"}}}},
	})
	for _, e := range c.Endpoints() {
		if !strings.HasPrefix(e, "https://") {
			t.Errorf("endpoint %s: want https", e)
		}
	}
	if err := Ping(c.Client(t), 5*time.Second); err != nil {
		t.Fatalf("a put as root: %v", err)
	}
	cert := clientCA.IssueClient(t, dir, "reader")
	tc := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert.TLS}}
	// A dial that must work has time for etcd's bcrypt check of the password, slow under -race on a
	// loaded machine; one that must fail gives up sooner.
	dial := func(user, password string, tc *tls.Config, timeout time.Duration) (*clientv3.Client, error) {
		cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: timeout, Logger: zap.NewNop(),
			TLS: tc, Username: user, Password: password})
		if err == nil {
			t.Cleanup(func() { cli.Close() })
		}
		return cli, err
	}
	if _, err := dial("reader", "wrong", tc, 10*time.Second); !errors.Is(err, rpctypes.ErrAuthFailed) {
		t.Errorf("a wrong password: %v, want %v", err, rpctypes.ErrAuthFailed)
	}
	if _, err := dial("reader", "reader-secret", &tls.Config{RootCAs: ca.Pool()}, 2*time.Second); err == nil {
		t.Error("a client without a certificate authenticated")
	}
	reader, err := dial("reader", "reader-secret", tc, 10*time.Second)
	if err != nil {
		t.Fatalf("reader: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := reader.Get(ctx, "/etcdtest/ping"); err != nil {
		t.Errorf("a get by reader: %v", err)
	}
	if _, err := reader.Put(ctx, "/etcdtest/ping", "2"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("a put by reader: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
}
