package integration

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// tlsBackend is an HTTPS backend on 127.0.0.1 with a certificate of a test CA, valid for
// 127.0.0.1 and web.example. It answers its name, and counts its handshakes by kind.
type tlsBackend struct {
	addr          string
	full, resumed atomic.Int64
}

// newTLSBackend starts one; edit may change its tls.Config (client certificates) and its handler's
// response (close sends Connection: close, so every request takes a new connection).
func newTLSBackend(t *testing.T, ca *testutil.CA, dir, name string, close bool, edit func(*tls.Config)) *tlsBackend {
	t.Helper()
	leaf := ca.IssueServer(t, dir, name, "127.0.0.1", "web.example")
	b := &tlsBackend{}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if close {
			w.Header().Set("Connection", "close")
		}
		fmt.Fprint(w, name)
	}))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, VerifyConnection: func(cs tls.ConnectionState) error {
		if cs.DidResume {
			b.resumed.Add(1)
		} else {
			b.full.Add(1)
		}
		return nil
	}}
	if edit != nil {
		edit(s.TLS)
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	b.addr = s.Listener.Addr().String()
	return b
}

// tlsConfigYAML is a file with one set, web, of backend a at addr, with tls (YAML flow mapping).
func tlsConfigYAML(listen, addr, tlsMap string) string {
	return fmt.Sprintf(`listeners:
  - address: %s
    backend_set: web
backend_sets:
  - name: web
    backends:
      - {id: a, address: %s}
    tls: %s
`, listen, addr, tlsMap)
}

// getN sends n GETs on one kept-alive client connection and returns the statuses seen.
func getN(t *testing.T, addr string, n int) map[int]int {
	t.Helper()
	c := newClient(t, addr, true)
	statuses := map[int]int{}
	for range n {
		r := c.get("/")
		if r.err != nil {
			t.Fatalf("GET: %v", r.err)
		}
		statuses[r.status]++
	}
	return statuses
}

// workerLine matches a line of any process (workers included) with message msg whose backend is id.
func workerLine(msg, id string) func(logLine) bool {
	return func(l logLine) bool { return l.msg() == msg && l.str("backend") == id }
}

// TestBackendTLS: a set with tls to an HTTPS backend serves 200 over TLS, and keep-alive pools the
// TLS connections: 20 requests on one client connection take one handshake.
func TestBackendTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	be := newTLSBackend(t, ca, dir, "A", false, nil)
	cfg := filepath.Join(t.TempDir(), "xlb.yaml")
	s := startSupervisor(t, cfg, t.TempDir(), func(addr string) string {
		return tlsConfigYAML(addr, be.addr, fmt.Sprintf("{ca_file: %s}", ca.File))
	})
	s.awaitReady(t)
	if st := getN(t, s.addr, 20); st[200] != 20 {
		t.Fatalf("statuses %v, want 20 of 200", st)
	}
	if full, resumed := be.full.Load(), be.resumed.Load(); full+resumed != 1 {
		t.Errorf("20 keep-alive requests took %d full and %d resumed handshakes, want 1 in all", full, resumed)
	}
}

// TestBackendTLSVerification: a backend whose certificate is of an unknown CA, and one whose
// certificate is not valid for the server_name, are answered 502, each logged at WARN naming the
// backend and what TLS refused; insecure_skip_verify then accepts the first, and is WARNed naming
// the set.
func TestBackendTLSVerification(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, other := testutil.NewCA(t, dir, "ca"), testutil.NewCA(t, dir, "other")
	unknown := newTLSBackend(t, other, dir, "U", false, nil)
	wrongName := newTLSBackend(t, ca, dir, "W", false, nil)
	cfg := filepath.Join(t.TempDir(), "xlb.yaml")
	config := func(insecure bool) func(addr string) string {
		return func(addr string) string {
			unknownTLS := fmt.Sprintf("{ca_file: %s}", ca.File)
			if insecure {
				unknownTLS = "{insecure_skip_verify: true}"
			}
			return fmt.Sprintf(`listeners:
  - address: %s
    backend_set: web
backend_sets:
  - name: web
    backends:
      - {id: unknown-ca, address: %s, tls: %s}
      - {id: wrong-name, address: %s, tls: {ca_file: %s, server_name: wrong.example}}
`, addr, unknown.addr, unknownTLS, wrongName.addr, ca.File)
		}
	}
	s := startSupervisor(t, cfg, t.TempDir(), config(false))
	s.awaitReady(t)
	if st := getN(t, s.addr, 4); st[502] != 4 {
		t.Fatalf("statuses %v, want 4 of 502", st)
	}
	const failed = "TLS handshake with a backend failed"
	ln := s.await(t, 0, "the unknown CA logged", workerLine(failed, "unknown-ca"))
	if e := ln.str("error"); !strings.Contains(e, "certificate signed by unknown authority") || ln.str("@level") != "warn" || ln.str("backend_set") != "web" {
		t.Errorf("%s: want a WARN of set web saying the certificate is of an unknown authority", ln)
	}
	ln = s.await(t, 0, "the wrong name logged", workerLine(failed, "wrong-name"))
	if e := ln.str("error"); !strings.Contains(e, "not wrong.example") {
		t.Errorf("%s: want an error saying the certificate is not valid for wrong.example", ln)
	}

	from := logEnd(s.log)
	writeConfig(t, cfg, config(true)(s.addr), true)
	warn := s.await(t, from, "the insecure WARN", says("TLS to these backends skips certificate verification (insecure_skip_verify): encrypted, not authenticated", nil))
	if warn.str("set") != "web" || warn.str("backends") != "unknown-ca" || warn.str("@level") != "warn" {
		t.Errorf("%s: want a WARN naming set web and backend unknown-ca", warn)
	}
	s.awaitApplied(t, warn.end, 0)
	awaitServedBy(t, s.addr, "U", 4) // wrong-name still fails: its requests go to unknown-ca
}

// TestBackendMTLS: a backend that requires a client certificate refuses the data plane without
// client_cert_file (502, logged naming the backend) and serves it with one.
func TestBackendMTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	client := ca.IssueClient(t, dir, "xlb-client")
	be := newTLSBackend(t, ca, dir, "M", false, func(c *tls.Config) {
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, ca.Pool()
	})
	cfg := filepath.Join(t.TempDir(), "xlb.yaml")
	s := startSupervisor(t, cfg, t.TempDir(), func(addr string) string {
		return tlsConfigYAML(addr, be.addr, fmt.Sprintf("{ca_file: %s}", ca.File))
	})
	s.awaitReady(t)
	if st := getN(t, s.addr, 3); st[502] != 3 {
		t.Fatalf("without a client certificate: statuses %v, want 3 of 502", st)
	}
	ln := s.await(t, 0, "the refusal logged", func(l logLine) bool {
		return strings.Contains(l.msg(), "refused the TLS connection") && l.str("backend") == "a"
	})
	if !strings.Contains(ln.str("error"), "certificate required") {
		t.Errorf("%s: want the backend's alert, certificate required", ln)
	}
	from := logEnd(s.log)
	writeConfig(t, cfg, tlsConfigYAML(s.addr, be.addr, fmt.Sprintf("{ca_file: %s, client_cert_file: %s, client_key_file: %s}",
		ca.File, client.CertFile, client.KeyFile)), true)
	s.awaitApplied(t, from, 0)
	awaitServedBy(t, s.addr, "M", 4)
}

// TestBackendTLSResumption: a backend that closes every connection after its response makes each
// request a new connection: after the first, they resume (counted by the backend: DidResume); with
// session_resumption false, every one is a full handshake.
func TestBackendTLSResumption(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	be := newTLSBackend(t, ca, dir, "R", true, nil)
	cfg := filepath.Join(t.TempDir(), "xlb.yaml")
	s := startSupervisor(t, cfg, t.TempDir(), func(addr string) string {
		return tlsConfigYAML(addr, be.addr, fmt.Sprintf("{ca_file: %s}", ca.File)) + "metrics_interval: 100ms\n"
	})
	s.awaitReady(t)
	const n = 10
	if st := getN(t, s.addr, n); st[200] != n {
		t.Fatalf("statuses %v, want %d of 200", st, n)
	}
	// One client connection is one worker: its first handshake is full, the rest resume.
	if full, resumed := be.full.Load(), be.resumed.Load(); full != 1 || resumed != n-1 {
		t.Errorf("%d connections: %d full and %d resumed handshakes, want 1 and %d", n, full, resumed, n-1)
	}
	// The workers count them too, and report them to the supervisor: its Status shows them (and
	// so do GetLoad, OpenTelemetry and Prometheus, from the same totals).
	var got [2]string
	testutil.WaitFor(t, applyTimeout, "the handshakes in the supervisor's Status", func() bool {
		for _, b := range status(t, s.stateDir).Backends {
			if b.BackendID == "a" {
				got = [2]string{b.TLSFull, b.TLSResumed}
			}
		}
		return got == [2]string{"1", strconv.Itoa(n - 1)}
	})

	from := logEnd(s.log)
	writeConfig(t, cfg, tlsConfigYAML(s.addr, be.addr, fmt.Sprintf("{ca_file: %s, session_resumption: false}", ca.File))+"metrics_interval: 100ms\n", true)
	s.awaitApplied(t, from, 0)
	full0, resumed0 := be.full.Load(), be.resumed.Load()
	if st := getN(t, s.addr, n); st[200] != n {
		t.Fatalf("without resumption: statuses %v, want %d of 200", st, n)
	}
	if full, resumed := be.full.Load()-full0, be.resumed.Load()-resumed0; full != n || resumed != 0 {
		t.Errorf("without resumption, %d connections: %d full and %d resumed handshakes, want %d and 0", n, full, resumed, n)
	}
}
