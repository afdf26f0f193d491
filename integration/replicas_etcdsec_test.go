package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/etcdtest"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// The tests of how `xlb controlplane --store etcd` reaches an etcd that asks for more than plain
// http: TLS (--etcd-cacert), client certificates (--etcd-cert, --etcd-key) and authentication
// (--etcd-username, --etcd-password or XLB_ETCD_PASSWORD), on real etcd clusters embedded in the
// test (etcdtest.StartWith) with certificates made here.

const (
	// etcdDialTimeout is the --etcd-dial-timeout of the replicas that must fail to start.
	etcdDialTimeout = 2 * time.Second
	// etcdTimeoutLong is their --etcd-timeout: longer than the wait for them to exit, so that an
	// exit in time shows that the dial timeout ended the start, not the store's first listing.
	etcdTimeoutLong = 5 * time.Minute
	// authDialTimeout is the --etcd-dial-timeout of the starts with a wrong password, which fail
	// as soon as etcd answers: under readyTimeout.
	authDialTimeout = 15 * time.Second
	// etcdPassword is the password of the user xlb of TestReplicasEtcdAuth.
	etcdPassword = "s3cret-etcd-password"
)

// replicaFails starts `xlb controlplane --store etcd` on c with env and flags, which must fail to
// start: it exits with status 1 within readyTimeout, and its last error line says why. It returns
// that line's error and how long the process ran.
func replicaFails(t *testing.T, c *etcdtest.Cluster, env []string, flags ...string) (string, time.Duration) {
	t.Helper()
	args := append([]string{"controlplane", "--listen", freeAddr(t), "--log-format", "json"},
		replicaFlags(c, "failing", append([]string{"--etcd-dial-timeout", etcdDialTimeout.String(),
			"--etcd-timeout", etcdTimeoutLong.String()}, flags...)...)...)
	start := time.Now()
	p, l := startLoggedProcEnv(t, env, args...)
	if code := p.waitExitCode(readyTimeout); code != 1 {
		t.Fatalf("%v: exit status %d, want 1\n--- stderr:\n%s", p, code, tail(p.stderr.String()))
	}
	took := time.Since(start)
	lines, _ := l.linesFrom(0)
	for i := len(lines) - 1; i >= 0; i-- {
		if lines[i].str("@level") == "error" {
			return lines[i].msg() + ": " + lines[i].str("error"), took
		}
	}
	t.Fatalf("%v: exited 1 without an error line:\n%s", p, tail(p.stderr.String()))
	return "", 0
}

// wantSays fails t unless msg holds every one of says.
func wantSays(t *testing.T, what, msg string, says ...string) {
	t.Helper()
	for _, s := range says {
		if !strings.Contains(msg, s) {
			t.Errorf("%s: %q; want it to say %q", what, msg, s)
		}
	}
}

// inEtcd is the value of key in c (read as root), or "" when it has none.
func inEtcd(t *testing.T, c *etcdtest.Cluster, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Client(t).Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s from etcd: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// TestReplicasEtcdTLS: on an etcd whose client URLs are https, with a certificate of a CA of the
// test, a replica given that CA (--etcd-cacert) starts and takes a put, which is in etcd. One
// given another CA, or none (the system's roots), fails to start within --etcd-dial-timeout with
// an error that names etcd, the dial timeout and the certificate's verification.
func TestReplicasEtcdTLS(t *testing.T) {
	t.Parallel()
	pki := t.TempDir()
	ca, rogue := testutil.NewCA(t, pki, "etcd-ca"), testutil.NewCA(t, pki, "rogue-ca")
	c := etcdtest.StartWith(t, 3, etcdtest.Options{CA: ca, ServerCert: ca.IssueServer(t, pki, "etcd", "127.0.0.1")})
	be := backendAt(t, "a", newCountingBackend(t, "a").addr, 1)

	cp := startReplica(t, c, "a", "--etcd-cacert", ca.File)
	cp.put(t, setJSON{Name: "web", Backends: []backendJSON{be}})
	if inEtcd(t, c, replicaPrefix+"/sets/web") == "" {
		t.Errorf("after a put over TLS: no key %s/sets/web in etcd", replicaPrefix)
	}

	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"another CA", []string{"--etcd-cacert", rogue.File}},
		{"the system's roots", nil},
	} {
		msg, took := replicaFails(t, c, nil, tc.flags...)
		t.Logf("with %s: exited after %v: %s", tc.name, took, msg)
		wantSays(t, "with "+tc.name, msg, "etcd", "--etcd-dial-timeout "+etcdDialTimeout.String(), "x509: certificate signed by unknown authority")
	}
}

// TestReplicasEtcdMTLS: on an etcd that requires a client certificate of a CA of the test, a
// replica with one (--etcd-cert, --etcd-key) starts and takes a put, which is in etcd. One
// without a certificate, or with a certificate of another CA, fails to start within
// --etcd-dial-timeout with an error that names etcd and says what TLS refused.
func TestReplicasEtcdMTLS(t *testing.T) {
	t.Parallel()
	pki := t.TempDir()
	ca, clientCA, rogue := testutil.NewCA(t, pki, "etcd-ca"), testutil.NewCA(t, pki, "client-ca"), testutil.NewCA(t, pki, "rogue-ca")
	c := etcdtest.StartWith(t, 1, etcdtest.Options{CA: ca, ServerCert: ca.IssueServer(t, pki, "etcd", "127.0.0.1"), ClientCA: clientCA})
	cert, rogueCert := clientCA.IssueClient(t, pki, "xlb"), rogue.IssueClient(t, pki, "rogue")
	be := backendAt(t, "a", newCountingBackend(t, "a").addr, 1)

	cp := startReplica(t, c, "a", "--etcd-cacert", ca.File, "--etcd-cert", cert.CertFile, "--etcd-key", cert.KeyFile)
	cp.put(t, setJSON{Name: "web", Backends: []backendJSON{be}})
	if inEtcd(t, c, replicaPrefix+"/sets/web") == "" {
		t.Errorf("after a put with a client certificate: no key %s/sets/web in etcd", replicaPrefix)
	}

	for _, tc := range []struct {
		name  string
		flags []string
		says  string
	}{
		{"no client certificate", []string{"--etcd-cacert", ca.File}, "certificate required"},
		{"a client certificate of another CA", []string{"--etcd-cacert", ca.File, "--etcd-cert", rogueCert.CertFile, "--etcd-key", rogueCert.KeyFile}, "certificate required"},
	} {
		msg, took := replicaFails(t, c, nil, tc.flags...)
		t.Logf("with %s: exited after %v: %s", tc.name, took, msg)
		wantSays(t, "with "+tc.name, msg, "etcd", "--etcd-dial-timeout "+etcdDialTimeout.String(), tc.says)
	}
}

// TestReplicasEtcdAuth: on an etcd with authentication enabled, a replica of the user xlb (its
// role: read and write on the prefix) with --etcd-password starts and takes a put; another, its
// password in XLB_ETCD_PASSWORD, sees that put and takes one too; neither logs the password. A
// wrong password fails the start with an error that names etcd, the user and the
// authentication. A replica of a user whose role may read the sets but not write them (and may
// write its own keys under <prefix>/replicas/) starts and serves the sets, but its put is refused
// PERMISSION_DENIED with a message that names etcd, and the set is unchanged.
func TestReplicasEtcdAuth(t *testing.T) {
	t.Parallel()
	c := etcdtest.StartWith(t, 3, etcdtest.Options{RootPassword: "root-password", Users: []etcdtest.User{
		{Name: "xlb", Password: etcdPassword, Perms: []etcdtest.Perm{{Prefix: replicaPrefix + "/", Write: true}}},
		{Name: "reader", Password: "reader-password", Perms: []etcdtest.Perm{
			{Prefix: replicaPrefix + "/sets/"}, {Prefix: replicaPrefix + "/replicas/", Write: true}}},
	}})
	ba, bb := newCountingBackend(t, "a"), newCountingBackend(t, "b")

	cpA := startReplica(t, c, "a", "--etcd-username", "xlb", "--etcd-password", etcdPassword)
	web := cpA.put(t, setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "a", ba.addr, 1)}})
	cpB := startControlPlaneEnv(t, []string{"XLB_ETCD_PASSWORD=" + etcdPassword}, "", nil,
		replicaFlags(c, "b", "--etcd-username", "xlb")...)
	testutil.WaitFor(t, applyTimeout, "replica B (password from XLB_ETCD_PASSWORD) to list web at "+web, func() bool {
		return cpB.sets(t)["web"].Version == web
	})
	api := cpB.put(t, setJSON{Name: "api", Backends: []backendJSON{backendAt(t, "b", bb.addr, 1)}})
	if inEtcd(t, c, replicaPrefix+"/sets/api") == "" {
		t.Errorf("after a put on B: no key %s/sets/api in etcd", replicaPrefix)
	}
	for _, cp := range []*controlPlane{cpA, cpB} {
		if strings.Contains(cp.stderr.String(), etcdPassword) {
			t.Errorf("%v logs the etcd password", cp)
		}
	}

	// etcd answers a wrong password as soon as its members agree on it (an authentication goes
	// through raft): on a loaded machine that can take more than the dial timeout of the starts
	// that must time out, so these wait longer (the later flag wins).
	msg, took := replicaFails(t, c, nil, "--etcd-username", "xlb", "--etcd-password", "wrong", "--etcd-dial-timeout", authDialTimeout.String())
	t.Logf("with a wrong password: exited after %v: %s", took, msg)
	wantSays(t, "with a wrong password", msg, "etcd", `"xlb"`, "authentication failed")
	msg, took = replicaFails(t, c, []string{"XLB_ETCD_PASSWORD=wrong"}, "--etcd-username", "xlb", "--etcd-dial-timeout", authDialTimeout.String())
	t.Logf("with a wrong XLB_ETCD_PASSWORD: exited after %v: %s", took, msg)
	wantSays(t, "with a wrong XLB_ETCD_PASSWORD", msg, "etcd", `"xlb"`, "authentication failed")

	cpR := startReplica(t, c, "reader", "--etcd-username", "reader", "--etcd-password", "reader-password")
	if sets := cpR.sets(t); sets["web"].Version != web || sets["api"].Version != api {
		t.Errorf("the reader's sets: %+v; want web at %s, api at %s", sets, web, api)
	}
	r := cpR.call(t, "PutBackendSet", mustJSON(t, map[string]any{"backend_set": setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "b", bb.addr, 1)}}}))
	t.Logf("a put by the reader: %s: %s", r.code(), r.message())
	if r.code() != "PermissionDenied" {
		t.Errorf("a put by a user without write on the sets: %v; want PermissionDenied", r)
	}
	wantSays(t, "a put by a user without write on the sets", r.message(), "etcd", replicaPrefix+"/sets/", "permission denied")
	if got := cpA.sets(t)["web"].Version; got != web {
		t.Errorf("web after the reader's refused put: %s, want %s", got, web)
	}
}
