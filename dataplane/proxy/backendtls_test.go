package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// httpsBackend is an HTTPS backend on loopback with a certificate of ca for 127.0.0.1.
func httpsBackend(t *testing.T, ca *testutil.CA, dir string) *httptest.Server {
	t.Helper()
	leaf := ca.IssueServer(t, dir, fmt.Sprint("server", time.Now().UnixNano()), "127.0.0.1", "web.example")
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v", r.TLS != nil)
	}))
	be.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	be.StartTLS()
	t.Cleanup(be.Close)
	return be
}

func get(t *testing.T, addr string) (int, string) {
	t.Helper()
	res, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestTLSPools: a backend with TLS is reached over TLS, on a pool of its own per address and TLS
// setting. A generation that keeps a backend's TLS keeps its pool (and its warm connection: no new
// handshake); one that changes its TLS, or replaces its CA file, makes a new pool; the handshakes
// show in BackendMetrics.
func TestTLSPools(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	be := httpsBackend(t, ca, dir)
	addr := be.Listener.Addr().String()
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "bundle.pem")
	copyFile(t, ca.File, caFile)
	install := func(tl *table.TLS) {
		t.Helper()
		if err := p.SetBackends([]table.Set{{Name: "web", TLS: tl, Backends: []table.Backend{{ID: "a", Address: addr, Weight: 1, TLS: tl}}}}); err != nil {
			t.Fatal(err)
		}
	}
	poolOf := func() any {
		p.poolsMu.Lock()
		defer p.poolsMu.Unlock()
		return p.table.Load().sets["web"].active[0].pool
	}
	install(&table.TLS{CAFile: caFile})
	front := serveWeb(t, p)
	for i := range 5 {
		if code, body := get(t, front); code != 200 || body != "tls=true" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	first := poolOf()
	install(&table.TLS{CAFile: caFile}) // an equal setting, in a new value
	if poolOf() != first {
		t.Fatal("an unchanged TLS setting made a new pool")
	}
	get(t, front)
	m := p.BackendMetrics()[0]
	if m.TLS.FullHandshakes != 1 || m.TLS.ResumedHandshakes != 0 || m.TLS.HandshakeFailures != 0 || m.TLS.HandshakeTime <= 0 {
		t.Fatalf("after 6 keep-alive requests over two generations: %+v, want one full handshake", m.TLS)
	}

	// The CA file replaced (same path, another file): the next generation reads it, in a new pool.
	copyFile(t, ca.File, caFile+".new")
	if err := os.Rename(caFile+".new", caFile); err != nil {
		t.Fatal(err)
	}
	install(&table.TLS{CAFile: caFile})
	if poolOf() == first {
		t.Fatal("a replaced CA file kept the pool made with the old one")
	}
	second := poolOf()
	install(&table.TLS{CAFile: caFile, NoResumption: true})
	if poolOf() == second {
		t.Fatal("a change of TLS kept the pool")
	}
	if code, _ := get(t, front); code != 200 {
		t.Fatalf("after the changes: %d", code)
	}
	install(nil) // plain to an HTTPS backend: its pool is another, and the backend answers 400
	if poolOf() == second {
		t.Fatal("plain and TLS to one address share a pool")
	}
}

// TestTLSVerificationLogged: a backend whose certificate does not verify is answered 502, and the
// failure is logged at WARN naming the set, the backend and what TLS refused.
func TestTLSVerificationLogged(t *testing.T) {
	dir := t.TempDir()
	ca, other := testutil.NewCA(t, dir, "ca"), testutil.NewCA(t, dir, "other")
	be := httpsBackend(t, ca, dir)
	var logs testutil.SyncBuffer
	p, err := New(Config{Logger: hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetBackends([]table.Set{{Name: "web", Backends: []table.Backend{{ID: "a", Address: be.Listener.Addr().String(), TLS: &table.TLS{CAFile: other.File}}}}}); err != nil {
		t.Fatal(err)
	}
	front := serveWeb(t, p)
	if code, _ := get(t, front); code != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", code)
	}
	got := logs.String()
	for _, want := range []string{"[WARN]", "TLS handshake with a backend failed", "backend_set=web", "backend=a", "certificate signed by unknown authority"} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
