package tlsterm

import (
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// certServer serves a store over real TLS, with the server config of this package.
func certServer(t testing.TB, s *Store) *server {
	return startServer(t, ServerConfig(s))
}

func pairOf(l testutil.Leaf) Pair { return Pair{CertFile: l.CertFile, KeyFile: l.KeyFile} }

func mustStore(t testing.TB, cfg StoreConfig) *Store {
	t.Helper()
	s, err := NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// served is the certificate s hands a client that asks for name.
func served(s *Store, name string) *x509.Certificate {
	c, _ := s.GetCertificate(&tls.ClientHelloInfo{ServerName: name})
	return c.Leaf
}

func TestSNISelection(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	def := ca.IssueServer(t, dir, "default", "default.example.test", "127.0.0.1")
	wild := ca.IssueServer(t, dir, "wild", "*.example.test")
	a := ca.IssueServer(t, dir, "a", "a.example.test")
	a2 := ca.IssueServer(t, dir, "a2", "a.example.test", "a2.example.test") // a.example.test: a wins, it comes first
	s := mustStore(t, StoreConfig{Pairs: []Pair{pairOf(def), pairOf(wild), pairOf(a), pairOf(a2)}})
	srv := certServer(t, s)

	tests := []struct {
		name, sni string
		want      string // the CN served
		verifies  bool   // the client's verification passes: the certificate is for the name
	}{
		{"exact beats a wildcard listed before it", "a.example.test", "a", true},
		{"exact, capitals", "A.Example.TEST", "a", true},
		{"the first pair for a name wins", "a2.example.test", "a2", true},
		{"wildcard", "c.example.test", "wild", true},
		{"a wildcard covers one label only", "x.c.example.test", "default", false},
		{"a wildcard does not cover its parent", "example.test", "default", false},
		{"unknown name gets the default", "unknown.test", "default", false},
		{"no SNI (a client dialing an IP) gets the default", "", "default", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Observe what is served, whatever it is.
			st := mustHandshake(t, srv.addr, &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true})
			if got := st.PeerCertificates[0].Subject.CommonName; got != tt.want {
				t.Errorf("SNI %q: served %q, want %q", tt.sni, got, tt.want)
			}
			if st.ServerName != "" && tt.sni == "" {
				t.Errorf("the client sent SNI %q, want none", st.ServerName)
			}
			// And that a verifying client accepts it exactly when it is for the name.
			_, err := handshake(srv.addr, &tls.Config{ServerName: tt.sni, RootCAs: ca.Pool()})
			if tt.sni == "" {
				_, err = handshake(srv.addr, &tls.Config{ServerName: "127.0.0.1", RootCAs: ca.Pool()})
			}
			if (err == nil) != tt.verifies {
				t.Errorf("SNI %q: verified: %v (err %v), want %v", tt.sni, err == nil, err, tt.verifies)
			}
		})
	}
}

func TestNewStoreErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	a := ca.IssueServer(t, dir, "a", "a.example.test")
	b := ca.IssueServer(t, dir, "b", "b.example.test")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name  string
		pairs []Pair
		want  string // in the error
	}{
		{"no pair", nil, "at least one pair"},
		{"no key file", []Pair{{CertFile: a.CertFile}}, "pair 0"},
		{"missing certificate", []Pair{pairOf(a), {CertFile: missing, KeyFile: b.KeyFile}}, missing},
		{"missing key", []Pair{{CertFile: a.CertFile, KeyFile: missing}}, missing},
		{"certificate not PEM", []Pair{{CertFile: garbage, KeyFile: a.KeyFile}}, "certificate " + garbage},
		{"certificate file holds a key only", []Pair{{CertFile: a.KeyFile, KeyFile: a.KeyFile}}, "certificate " + a.KeyFile},
		{"key not PEM", []Pair{{CertFile: a.CertFile, KeyFile: garbage}}, "key " + garbage},
		{"key of another certificate", []Pair{{CertFile: a.CertFile, KeyFile: b.KeyFile}}, "key " + b.KeyFile + " (for certificate " + a.CertFile + ")"},
		{"too many pairs", make([]Pair, PairsMax+1), "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewStore(StoreConfig{Pairs: tt.pairs})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewStore: %v, %v; want an error with %q", s, err, tt.want)
			}
			t.Log(err)
		})
	}
}

// TestReloadBadFileKeepsOld breaks one pair's files in every way, while the other pair is
// renewed: the broken pair's old certificate keeps serving and the error names its file, the
// renewed pair serves its new one.
func TestReloadBadFileKeepsOld(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(t *testing.T, a, other testutil.Leaf)
		want   func(a testutil.Leaf) string
	}{
		{"certificate removed", func(t *testing.T, a, _ testutil.Leaf) { os.Remove(a.CertFile) },
			func(a testutil.Leaf) string { return a.CertFile }},
		{"key removed", func(t *testing.T, a, _ testutil.Leaf) { os.Remove(a.KeyFile) },
			func(a testutil.Leaf) string { return a.KeyFile }},
		{"certificate truncated", func(t *testing.T, a, _ testutil.Leaf) {
			data, _ := os.ReadFile(a.CertFile)
			writeFile(t, a.CertFile, data[:len(data)/2])
		}, func(a testutil.Leaf) string { return "certificate " + a.CertFile }},
		{"key garbage", func(t *testing.T, a, _ testutil.Leaf) { writeFile(t, a.KeyFile, []byte("garbage")) },
			func(a testutil.Leaf) string { return "key " + a.KeyFile }},
		{"key of another certificate", func(t *testing.T, a, other testutil.Leaf) {
			data, _ := os.ReadFile(other.KeyFile)
			writeFile(t, a.KeyFile, data)
		}, func(a testutil.Leaf) string { return "key " + a.KeyFile }},
		{"certificate renewed, key not yet", func(t *testing.T, a, other testutil.Leaf) {
			data, _ := os.ReadFile(other.CertFile)
			writeFile(t, a.CertFile, data)
		}, func(a testutil.Leaf) string { return "key " + a.KeyFile }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, next := t.TempDir(), t.TempDir()
			ca := testutil.NewCA(t, dir, "ca")
			a := ca.IssueServer(t, dir, "a", "a.example.test")
			b := ca.IssueServer(t, dir, "b", "b.example.test")
			s := mustStore(t, StoreConfig{Pairs: []Pair{pairOf(a), pairOf(b)}})
			oldA, oldB := served(s, "a.example.test").SerialNumber, served(s, "b.example.test").SerialNumber

			newB := ca.IssueServer(t, next, "b", "b.example.test")
			moveInto(t, newB.CertFile, b.CertFile)
			moveInto(t, newB.KeyFile, b.KeyFile)
			tt.break_(t, a, ca.IssueServer(t, next, "other", "a.example.test"))

			err := s.Reload()
			if want := tt.want(a); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Reload: %v, want an error naming %q", err, want)
			}
			t.Log(err)
			if st := s.Status(); st.Reloads != 1 || st.Err == nil || st.Err.Error() != err.Error() {
				t.Errorf("Status: %+v, want 1 reload and its error", st)
			}
			if got := served(s, "a.example.test").SerialNumber; got.Cmp(oldA) != 0 {
				t.Errorf("a: serial %v served, want the old %v", got, oldA)
			}
			if got := served(s, "b.example.test").SerialNumber; got.Cmp(oldB) == 0 || got.Cmp(newB.TLS.Leaf.SerialNumber) != 0 {
				t.Errorf("b: serial %v served, want the new %v (old %v)", got, newB.TLS.Leaf.SerialNumber, oldB)
			}
		})
	}
}

// TestReloadUnderLoad replaces the certificate three times, each time the cert file and then the
// key file (so that a look between the two sees a key that does not match), and then breaks it,
// while clients handshake in a loop: no handshake fails, each new certificate is seen after its
// reload, and the broken file leaves the last good one serving.
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	site := ca.IssueServer(t, dir, "site", "site.example.test")
	s := mustStore(t, StoreConfig{Pairs: []Pair{pairOf(site)}, Poll: 5 * time.Millisecond})
	watch(t, s.Watch)
	srv := certServer(t, s)

	var (
		seen       atomic.Pointer[big.Int] // the serial last served
		handshakes atomic.Int64
		failures   atomic.Int64
		firstErr   atomic.Value
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	seen.Store(site.TLS.Leaf.SerialNumber)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := &tls.Config{ServerName: "site.example.test", RootCAs: ca.Pool()}
			for {
				select {
				case <-stop:
					return
				default:
				}
				st, err := handshake(srv.addr, cfg)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				handshakes.Add(1)
				seen.Store(st.PeerCertificates[0].SerialNumber)
			}
		}()
	}
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	t.Cleanup(stopLoad)

	for gen := 1; gen <= 3; gen++ {
		next := ca.IssueServer(t, t.TempDir(), "site", "site.example.test")
		before := s.Status().Reloads
		moveInto(t, next.CertFile, site.CertFile)
		// Watch sees the new certificate with the old key, refuses it, and the old pair serves on.
		testutil.WaitFor(t, 10*time.Second, "Watch to reload the new certificate before its key", func() bool {
			return s.Status().Reloads > before
		})
		if err := s.Status().Err; err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("generation %d, certificate without its key: Status().Err = %v, want a mismatch", gen, err)
		}
		waitHandshakes(t, &handshakes, 20)
		moveInto(t, next.KeyFile, site.KeyFile)
		want := next.TLS.Leaf.SerialNumber
		testutil.WaitFor(t, 10*time.Second, "clients to be served certificate "+want.String(), func() bool {
			return seen.Load().Cmp(want) == 0
		})
		if err := s.Status().Err; err != nil {
			t.Fatalf("generation %d: Status().Err = %v after the key, want nil", gen, err)
		}
		waitHandshakes(t, &handshakes, 20)
	}
	good := seen.Load()

	before := s.Status().Reloads
	writeFile(t, site.CertFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"))
	testutil.WaitFor(t, 10*time.Second, "Watch to reload the broken file", func() bool {
		return s.Status().Reloads > before
	})
	if err := s.Status().Err; err == nil || !strings.Contains(err.Error(), site.CertFile) {
		t.Errorf("Status().Err = %v, want one naming %s", err, site.CertFile)
	}
	waitHandshakes(t, &handshakes, 20)
	if got := seen.Load(); got.Cmp(good) != 0 {
		t.Errorf("after the broken file: serial %v served, want the last good %v", got, good)
	}

	stopLoad()
	t.Logf("%d handshakes, %d failures", handshakes.Load(), failures.Load())
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d handshakes failed, the first: %v", n, firstErr.Load())
	}
}

// waitHandshakes waits for n more handshakes of the load.
func waitHandshakes(t *testing.T, count *atomic.Int64, n int64) {
	t.Helper()
	from := count.Load()
	testutil.WaitFor(t, 10*time.Second, "more handshakes", func() bool { return count.Load() >= from+n })
}

// TestGetCertificateAllocs holds the handshake's lookup at no allocation, for the names clients
// send (lower case).
func TestGetCertificateAllocs(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	s := mustStore(t, StoreConfig{Pairs: []Pair{
		pairOf(ca.IssueServer(t, dir, "default", "default.example.test")),
		pairOf(ca.IssueServer(t, dir, "wild", "*.example.test")),
	}})
	for _, name := range []string{"default.example.test", "x.example.test", "unknown.test", ""} {
		hello := &tls.ClientHelloInfo{ServerName: name}
		if n := testing.AllocsPerRun(100, func() { s.GetCertificate(hello) }); n != 0 {
			t.Errorf("GetCertificate(%q): %v allocations, want 0", name, n)
		}
	}
}
