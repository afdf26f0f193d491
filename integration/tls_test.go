package integration

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// The tests of client TLS termination (listeners[].tls): certificates made in the test by
// internal/testutil, the real binary with two workers, and clients of crypto/tls that open a new
// connection for each request unless they say otherwise. Every backend here answers with the
// X-Forwarded-Proto it received, so that each request also checks that https reached it.

const (
	// resumeConns is how many new connections TestTLSResumptionAcrossWorkers opens per version.
	resumeConns = 40
	// reloadClients is how many goroutines load TestTLSCertificateReloadUnderLoad.
	reloadClients = 4
	// reloadRounds is how many times it replaces the certificate and key.
	reloadRounds = 3
	// seenConns is how many new connections must all show a reloaded certificate.
	seenConns = 20
)

// protoBackend answers every request with 200 and the X-Forwarded-Proto it got as the body.
func protoBackend(tb testing.TB) string {
	return addrOf(newBackend(tb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-Proto"))
	})))
}

// tlsConfig is a configuration file of one listener whose tls section is the YAML mapping tlsYAML
// (flow style), serving set web of the one backend, with reuse_port, and extra top-level lines.
func tlsConfig(backend, tlsYAML string, extra ...string) func(addr string) string {
	return func(addr string) string {
		return fmt.Sprintf(`listeners:
  - address: %s
    backend_set: web
    tls: %s
backend_sets:
  - name: web
    backends:
      - {id: a, address: %s}
reuse_port: true
`, addr, tlsYAML, backend) + strings.Join(extra, "")
	}
}

// pairYAML is the flow mapping of a certificate pair.
func pairYAML(l testutil.Leaf) string {
	return fmt.Sprintf("{cert_file: %q, key_file: %q}", l.CertFile, l.KeyFile)
}

// tlsExchange is one request on a new TLS connection.
type tlsExchange struct {
	conn   *tls.Conn // open, when the request asked to keep it
	state  tls.ConnectionState
	status int
	body   string
}

// tlsGet opens a new TLS connection to addr with cfg, sends GET path and reads the response. With
// keep the connection is left open (the caller closes it), else it is closed.
func tlsGet(addr string, cfg *tls.Config, path string, keep bool) (tlsExchange, error) {
	var x tlsExchange
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", addr, cfg)
	if err != nil {
		return x, fmt.Errorf("handshake: %w", err)
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	ok := false
	defer func() {
		if !ok || !keep {
			c.Close()
		}
	}()
	host := cfg.ServerName
	if host == "" {
		host = "example.test"
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
		return x, fmt.Errorf("write: %w", err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return x, fmt.Errorf("read the response: %w", err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return x, fmt.Errorf("read the body: %w", err)
	}
	ok = true
	x.state, x.status, x.body = c.ConnectionState(), res.StatusCode, string(body)
	if keep {
		x.conn = c
	}
	return x, nil
}

// mustTLSGet is tlsGet of a request that must be answered 200 with https as the body.
func mustTLSGet(tb testing.TB, addr string, cfg *tls.Config, path string, keep bool) tlsExchange {
	tb.Helper()
	x, err := tlsGet(addr, cfg, path, keep)
	if err != nil {
		tb.Fatalf("GET %s (SNI %q): %v", path, cfg.ServerName, err)
	}
	if x.status != 200 || x.body != "https" {
		tb.Fatalf("GET %s (SNI %q): %d %q, want 200 and X-Forwarded-Proto https", path, cfg.ServerName, x.status, x.body)
	}
	return x
}

// serial is the serial number of the certificate a connection was served.
func serial(st tls.ConnectionState) string {
	if len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].SerialNumber.String()
}

// TestTLSSNI: a listener of two certificates serves each name its own, and a name neither is for
// (and no name at all) the first; X-Forwarded-Proto https reaches the backend; plain HTTP on the
// TLS port is refused.
func TestTLSSNI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	a := ca.IssueServer(t, dir, "a", "a.example.test")
	b := ca.IssueServer(t, dir, "b", "b.example.test", "*.b.example.test")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(),
		tlsConfig(protoBackend(t), "{certificates: ["+pairYAML(a)+", "+pairYAML(b)+"]}"))
	s.awaitReady(t)

	for _, tt := range []struct {
		name string
		want testutil.Leaf
	}{{"a.example.test", a}, {"b.example.test", b}, {"x.b.example.test", b}, {"c.example.test", a}, {"", a}} {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: tt.name, InsecureSkipVerify: true}
		x := mustTLSGet(t, s.addr, cfg, "/sni", false)
		if got, want := serial(x.state), tt.want.TLS.Leaf.SerialNumber.String(); got != want {
			t.Errorf("SNI %q: served %v, want %v", tt.name, x.state.PeerCertificates[0].Subject, tt.want.TLS.Leaf.Subject)
		}
		if tt.name == "" {
			continue
		}
		// A client that verifies: the name it asked for is in the certificate, but for the
		// default served to a name no certificate is for.
		_, err := tlsGet(s.addr, &tls.Config{RootCAs: ca.Pool(), ServerName: tt.name}, "/verify", false)
		if tt.name == "c.example.test" {
			if err == nil {
				t.Errorf("SNI %q: a verifying client accepted the default certificate", tt.name)
			}
		} else if err != nil {
			t.Errorf("SNI %q: a verifying client: %v", tt.name, err)
		}
	}
	if x := mustTLSGet(t, s.addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test"}, "/alpn", false); x.state.NegotiatedProtocol != "" {
		t.Errorf("a client that offers no ALPN negotiated %q", x.state.NegotiatedProtocol)
	}
	h2 := &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test", NextProtos: []string{"h2", "http/1.1"}}
	if x := mustTLSGet(t, s.addr, h2, "/alpn", false); x.state.NegotiatedProtocol != "http/1.1" {
		t.Errorf("a client that offers h2 and http/1.1 negotiated %q, want http/1.1", x.state.NegotiatedProtocol)
	}

	e := dialRaw(t, s.addr)
	if err := e.send("/plain"); err != nil {
		t.Fatal(err)
	}
	if res, body, err := e.receive(ioTimeout); err == nil && res.StatusCode == 200 {
		t.Errorf("plain HTTP on the TLS listener was served: %q", body)
	}
}

// TestTLSClientCertificates: with client_ca_file, a client without a certificate, or with one of
// another CA, is refused in the handshake and reaches no backend; one with a certificate of the
// CA is served.
func TestTLSClientCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, clients, other := testutil.NewCA(t, dir, "ca"), testutil.NewCA(t, dir, "clients"), testutil.NewCA(t, dir, "other")
	srv := ca.IssueServer(t, dir, "a", "a.example.test")
	var reached atomic.Int64
	backend := addrOf(newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.WriteString(w, r.Header.Get("X-Forwarded-Proto"))
	})))
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(),
		tlsConfig(backend, fmt.Sprintf("{certificates: [%s], client_ca_file: %q}", pairYAML(srv), clients.File)))
	s.awaitReady(t)

	client := func(l *testutil.Leaf, version uint16) *tls.Config {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test", MinVersion: version, MaxVersion: version}
		if l != nil {
			cfg.Certificates = []tls.Certificate{l.TLS}
		}
		return cfg
	}
	good, bad := clients.IssueClient(t, dir, "good"), other.IssueClient(t, dir, "bad")
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		x := mustTLSGet(t, s.addr, client(&good, v), "/mtls", false)
		if len(x.state.PeerCertificates) == 0 {
			t.Errorf("TLS %x: no server certificate", v)
		}
		for name, l := range map[string]*testutil.Leaf{"no client certificate": nil, "a certificate of another CA": &bad} {
			before := reached.Load()
			// In TLS 1.3 the client's handshake ends before the server has checked its
			// certificate: the refusal (an alert) comes on the first read.
			x, err := tlsGet(s.addr, client(l, v), "/refused", false)
			if err == nil {
				t.Errorf("TLS %x, %s: served %d %q", v, name, x.status, x.body)
			} else if !strings.Contains(err.Error(), "remote error: tls: ") {
				t.Errorf("TLS %x, %s: error %v, want the server's alert", v, name, err)
			}
			if n := reached.Load() - before; n != 0 {
				t.Errorf("TLS %x, %s: %d requests reached the backend", v, name, n)
			}
		}
	}
}

// TestTLSResumptionAcrossWorkers: with two workers (reuse_port, so that the kernel spreads the
// connections over both by their ports), 40 new connections in a row of one client session cache
// each resume but the first, with TLS 1.2 and with 1.3: the workers share their ticket keys, from
// the supervisor's STATE_DIR/ticket-keys (mode 0600). The connections are held open until all
// are made, and each worker's process holds some of them (/proc/PID/net/tcp and fd): both
// resumed sessions that a process other than theirs began.
func TestTLSResumptionAcrossWorkers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	srv := ca.IssueServer(t, dir, "a", "a.example.test")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(),
		tlsConfig(protoBackend(t), "{certificates: ["+pairYAML(srv)+"]}"))
	_, pids := s.awaitReady(t)
	fi, err := os.Stat(filepath.Join(s.stateDir, "ticket-keys"))
	if err != nil {
		t.Fatalf("no ticket key file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("ticket-keys mode %v, want 0600", fi.Mode().Perm())
	}

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test", MinVersion: v, MaxVersion: v,
			ClientSessionCache: tls.NewLRUClientSessionCache(4)}
		var open []*tls.Conn
		resumed := 0
		for i := range resumeConns {
			x := mustTLSGet(t, s.addr, cfg, fmt.Sprintf("/resume/%d", i), true)
			open = append(open, x.conn)
			switch {
			case x.state.Version != v:
				t.Fatalf("TLS %x: connection %d negotiated %x", v, i, x.state.Version)
			case i == 0 && x.state.DidResume:
				t.Errorf("TLS %x: the first connection resumed", v)
			case i > 0 && !x.state.DidResume:
				t.Errorf("TLS %x: connection %d did a full handshake", v, i)
			case i > 0:
				resumed++
			}
		}
		by := map[int]int{}
		held := 0
		for slot, pid := range pids {
			by[slot] = clientConns(pid, s.addr)
			held += by[slot]
		}
		t.Logf("TLS %x: %d of %d connections resumed; connections held by worker slot: %v", v, resumed, resumeConns-1, by)
		if held != resumeConns {
			t.Errorf("TLS %x: the workers hold %d connections (%v), want %d", v, held, by, resumeConns)
		}
		for slot, n := range by {
			if n == 0 {
				t.Errorf("TLS %x: worker slot %d (pid %d) holds none of the %d connections: resumption across workers is not shown", v, slot, pids[slot], resumeConns)
			}
		}
		for _, c := range open {
			c.Close()
		}
	}
}

// TestTLSResumptionAcrossUpgrade: sessions made (TLS 1.2 and 1.3) before a SIGUSR2 upgrade
// resume on the new supervisor's workers, once the old supervisor and its workers are gone: the
// new one goes on with the ticket key file of the state directory.
func TestTLSResumptionAcrossUpgrade(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	srv := ca.IssueServer(t, dir, "a", "a.example.test")
	u := startUpgradableFrom(t, xlbPath, tlsConfig(protoBackend(t), "{certificates: ["+pairYAML(srv)+"]}"))
	u.await(t, 0, `"ready"`, says("ready", nil))

	caches := map[uint16]*tls.Config{}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		caches[v] = &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test", MinVersion: v, MaxVersion: v,
			ClientSessionCache: tls.NewLRUClientSessionCache(4)}
		if x := mustTLSGet(t, u.addr, caches[v], "/before", false); x.state.DidResume {
			t.Errorf("TLS %x: the first connection resumed", v)
		}
	}
	keysBefore, err := os.ReadFile(filepath.Join(u.stateDir, "ticket-keys"))
	if err != nil {
		t.Fatal(err)
	}

	from := logEnd(u.log)
	u.first.signal(syscall.SIGUSR2)
	handed := u.await(t, from, `"upgrade ready; handing over"`, says("upgrade ready; handing over", nil))
	if code := u.first.waitExitCode(stopTimeout); code != 0 {
		t.Fatalf("%v: exit status %d after handing over, want 0", u.first, code)
	}
	// The old supervisor exits once its workers have: whatever accepts now is the new one's.
	if st := u.status(t); st.Pid != handed.int("pid") {
		t.Fatalf("Status after the upgrade: pid %d, want the new supervisor's %d", st.Pid, handed.int("pid"))
	}
	for v, cfg := range caches {
		if x := mustTLSGet(t, u.addr, cfg, "/after", false); !x.state.DidResume {
			t.Errorf("TLS %x: the session made before the upgrade did not resume after it", v)
		}
	}
	if keysAfter, err := os.ReadFile(filepath.Join(u.stateDir, "ticket-keys")); err != nil || string(keysAfter) != string(keysBefore) {
		t.Errorf("the ticket key file changed across the upgrade (%v): no key was due", err)
	}
}

// TestTLSCertificateReloadUnderLoad: while four clients open new connections and send a request
// on each, the certificate and key are replaced by rename three times, the key first (so that a
// reload in between finds them not matching, and the old pair serves on): no request fails, and
// after each replacement both workers log the reload at INFO and every new connection gets the
// new certificate. Then a certificate file that is not PEM is logged at ERROR by both workers,
// naming the file, and the last good certificate serves on.
func TestTLSCertificateReloadUnderLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	srv := ca.IssueServer(t, dir, "a", "a.example.test")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(),
		tlsConfig(protoBackend(t), "{certificates: ["+pairYAML(srv)+"]}"))
	s.awaitReady(t)
	cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test"}

	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		ok       atomic.Int64
		mu       sync.Mutex
		failures []string
	)
	for range reloadClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				x, err := tlsGet(s.addr, cfg, "/load", false)
				if err == nil && (x.status != 200 || x.body != "https") {
					err = fmt.Errorf("%d %q", x.status, x.body)
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	halt := sync.OnceFunc(func() { stop.Store(true); wg.Wait() })
	t.Cleanup(halt)
	testutil.WaitFor(t, readyTimeout, "the load's first requests", func() bool { return ok.Load() >= 50 })

	// awaitWorkers waits for a line of each worker, after from, that match accepts.
	awaitWorkers := func(from int, what string, match func(logLine) bool) []logLine {
		t.Helper()
		seen := map[int]logLine{}
		for len(seen) < workersN {
			l := s.await(t, from, what, func(l logLine) bool { return l.fromWorker() && match(l) && seen[l.int("pid")].raw == "" })
			seen[l.int("pid")] = l
			from = l.end
		}
		var out []logLine
		for _, l := range seen {
			out = append(out, l)
		}
		return out
	}
	allServe := func(want string) {
		t.Helper()
		for i := range seenConns {
			if got := serial(mustTLSGet(t, s.addr, cfg, "/seen", false).state); got != want {
				t.Fatalf("new connection %d after the reload: served serial %s, want %s", i, got, want)
			}
		}
	}
	current := srv
	for round := range reloadRounds {
		next := ca.IssueServer(t, t.TempDir(), fmt.Sprintf("a%d", round), "a.example.test")
		from := logEnd(s.log)
		replaceByRename(t, next.KeyFile, srv.KeyFile)
		replaceByRename(t, next.CertFile, srv.CertFile)
		awaitWorkers(from, fmt.Sprintf("round %d: each worker's \"certificates reloaded\"", round),
			func(l logLine) bool { return l.msg() == "certificates reloaded" && l.str("@level") == "info" })
		allServe(next.TLS.Leaf.SerialNumber.String())
		current = next
	}

	from := logEnd(s.log)
	broken := srv.CertFile + ".broken"
	if err := os.WriteFile(broken, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	replaceByRename(t, broken, srv.CertFile)
	for _, l := range awaitWorkers(from, `each worker's "certificates reloaded, with errors"`,
		func(l logLine) bool { return l.msg() == "certificates reloaded, with errors" }) {
		if l.str("@level") != "error" || !strings.Contains(l.str("error"), srv.CertFile) {
			t.Errorf("the broken file's line is not an error naming %s: %s", srv.CertFile, l)
		}
	}
	allServe(current.TLS.Leaf.SerialNumber.String())

	halt()
	t.Logf("%d requests on new TLS connections through %d certificate replacements and a broken file", ok.Load(), reloadRounds)
	if len(failures) > 0 {
		t.Errorf("%d requests failed, the first: %v", len(failures), failures[:min(len(failures), 5)])
	}
}

// replaceByRename moves src over dst.
func replaceByRename(tb testing.TB, src, dst string) {
	tb.Helper()
	if err := os.Rename(src, dst); err != nil {
		tb.Fatal(err)
	}
}

// TestTLSBadCertificateRefusesStart: a certificate file that is not PEM fails the start, and the
// error names the file.
func TestTLSBadCertificateRefusesStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := testutil.NewCA(t, dir, "ca").IssueServer(t, dir, "a", "a.example.test")
	if err := os.WriteFile(srv.CertFile, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "xlb.yaml")
	if err := os.WriteFile(cfgPath, []byte(tlsConfig("127.0.0.1:9", "{certificates: ["+pairYAML(srv)+"]}")(freeAddr(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _ := startLoggedProc(t, "run", "--config", cfgPath, "--state-dir", t.TempDir(), "--log-format", "json")
	if code := p.waitExitCode(stopTimeout); code == 0 {
		t.Fatalf("xlb started with a broken certificate file")
	}
	if e := p.stderr.String(); !strings.Contains(e, srv.CertFile) || !strings.Contains(e, "cannot terminate TLS") {
		t.Errorf("the error does not name %s:\n%s", srv.CertFile, tail(e))
	}
}

// TestTLSSilentClientClosed: a client that connects to a TLS listener and never sends its
// ClientHello is closed by the worker after timeouts.client (1s here; the idle timeout is an
// hour), and the worker serves the next client.
func TestTLSSilentClientClosed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	srv := ca.IssueServer(t, dir, "a", "a.example.test")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(),
		tlsConfig(protoBackend(t), "{certificates: ["+pairYAML(srv)+"]}", "timeouts: {client: 1s, idle: 1h}\n"))
	s.awaitReady(t)
	c, err := net.DialTimeout("tcp", s.addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	began := time.Now()
	c.SetReadDeadline(began.Add(ioTimeout))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("a client that never sends a ClientHello: read %d bytes, %v after %v; want the connection closed", n, err, time.Since(began))
	}
	if waited := time.Since(began); waited < time.Second {
		t.Errorf("closed after %v, before timeouts.client (1s)", waited)
	}
	mustTLSGet(t, s.addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test"}, "/after", false)
}
