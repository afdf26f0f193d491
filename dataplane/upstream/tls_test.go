package upstream

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

const (
	request  = "GET / HTTP/1.1\r\nHost: backend\r\n\r\n"
	response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
)

// tlsBackend is a TLS server on 127.0.0.1:0. It reports each handshake it completes (or fails)
// and either answers every request with response (serve) or hands the connection to the test.
type tlsBackend struct {
	ln       net.Listener
	states   chan tls.ConnectionState // one per handshake completed
	failures chan error               // one per handshake failed
	conns    chan *tls.Conn           // without serve: the server side of each connection
	done     chan struct{}

	mu   sync.Mutex
	open []net.Conn
	wg   sync.WaitGroup
}

func newTLSBackend(t testing.TB, cfg *tls.Config, serve bool) *tlsBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &tlsBackend{ln: ln, states: make(chan tls.ConnectionState, 64), failures: make(chan error, 64),
		conns: make(chan *tls.Conn, 64), done: make(chan struct{})}
	b.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.open = append(b.open, nc)
			b.mu.Unlock()
			b.wg.Go(func() { b.handle(tls.Server(nc, cfg), serve) })
		}
	})
	t.Cleanup(func() {
		close(b.done)
		ln.Close()
		b.mu.Lock()
		for _, c := range b.open {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *tlsBackend) handle(tc *tls.Conn, serve bool) {
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		select { // dropped past 64 unread: benchmarks do not read them
		case b.failures <- err:
		default:
		}
		tc.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	select {
	case b.states <- tc.ConnectionState():
	default:
	}
	if !serve {
		select {
		case b.conns <- tc:
		case <-b.done:
		}
		return
	}
	serveHTTP(tc)
}

// serveHTTP answers each request on c (a head without a body) with response, until c fails.
func serveHTTP(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		if _, err := io.WriteString(c, response); err != nil {
			return
		}
	}
}

func (b *tlsBackend) addr() string { return b.ln.Addr().String() }

// state is the next handshake the backend completed.
func (b *tlsBackend) state(t testing.TB) tls.ConnectionState {
	t.Helper()
	select {
	case s := <-b.states:
		return s
	case err := <-b.failures:
		t.Fatalf("the backend's handshake failed: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the backend completed no handshake within 5s")
	}
	return tls.ConnectionState{}
}

// conn is the server side of the next connection, without serve.
func (b *tlsBackend) conn(t testing.TB) *tls.Conn {
	t.Helper()
	select {
	case c := <-b.conns:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the backend handed over no connection within 5s")
	}
	return nil
}

// pki is a test's certificates: a backend CA and a server certificate for 127.0.0.1 and web.test,
// and a client CA and a client certificate.
type pki struct {
	dir            string
	ca, clientCA   *testutil.CA
	server, client testutil.Leaf
	otherCA        *testutil.CA
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	dir := t.TempDir()
	k := &pki{dir: dir, ca: testutil.NewCA(t, dir, "backend-ca"), clientCA: testutil.NewCA(t, dir, "client-ca"),
		otherCA: testutil.NewCA(t, dir, "other-ca")}
	k.server = k.ca.IssueServer(t, dir, "backend", "127.0.0.1", "web.test")
	k.client = k.clientCA.IssueClient(t, dir, "xlb-dataplane")
	return k
}

// serverConfig is a backend's config with version v at most (0: any).
func (k *pki) serverConfig(v uint16) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{k.server.TLS}, MaxVersion: v, NextProtos: []string{"h2", ALPN}}
}

func tlsConfigT(t testing.TB, u TLS) *tls.Config {
	t.Helper()
	cfg, err := u.Config()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func tlsPool(t testing.TB, addr string, u TLS) *Pool {
	t.Helper()
	p := NewPool(Config{Address: addr, IdleConnsMax: 4, IdleTimeout: time.Minute, TLS: tlsConfigT(t, u)})
	t.Cleanup(p.Close)
	return p
}

// exchange sends request on c and reads response whole, within 5s.
func exchange(t testing.TB, c *Conn) {
	t.Helper()
	if err := tryExchange(c); err != nil {
		t.Fatal(err)
	}
}

func tryExchange(c *Conn) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	n, werr, rerr := c.WriteThenFill([]byte(request))
	if werr != nil || n != len(request) {
		return errors.Join(errors.New("write of the request"), werr)
	}
	for err := rerr; c.In.Len() < len(response); _, err = c.Fill() {
		if err != nil {
			return err
		}
	}
	if got := string(c.In.Buffered()); got != response {
		return errors.New("response " + got)
	}
	c.In.Consume(c.In.Len())
	return nil
}

func dialT(t testing.TB, p *Pool) *Conn {
	t.Helper()
	c, err := p.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantStats(t testing.TB, p *Pool, full, resumed, failures uint64) {
	t.Helper()
	s := p.Stats()
	if s.FullHandshakes != full || s.ResumedHandshakes != resumed || s.HandshakeFailures != failures {
		t.Fatalf("Stats: %d full, %d resumed, %d failed handshakes; want %d, %d, %d",
			s.FullHandshakes, s.ResumedHandshakes, s.HandshakeFailures, full, resumed, failures)
	}
	var n uint64
	for _, b := range s.HandshakeLatency {
		n += b
	}
	if n != full+resumed {
		t.Fatalf("the latency histogram counts %d handshakes, want %d", n, full+resumed)
	}
	if n > 0 && s.HandshakeTime <= 0 {
		t.Fatalf("HandshakeTime %v after %d handshakes", s.HandshakeTime, n)
	}
}

// TestTLSVerifyFailure: a certificate the pool must refuse fails Dial with an error that says why
// and names the backend, and counts as a failed handshake.
func TestTLSVerifyFailure(t *testing.T) {
	k := newPKI(t)
	b := newTLSBackend(t, k.serverConfig(0), true)
	for _, tc := range []struct {
		name  string
		tls   TLS
		check func(error) bool
		want  string
	}{
		{"unknown CA", TLS{RootCAs: k.otherCA.Pool()},
			func(err error) bool { var e x509.UnknownAuthorityError; return errors.As(err, &e) },
			"certificate signed by unknown authority"},
		{"system roots do not know the test CA", TLS{},
			func(err error) bool { var e x509.UnknownAuthorityError; return errors.As(err, &e) },
			"certificate signed by unknown authority"},
		{"wrong name", TLS{RootCAs: k.ca.Pool(), ServerName: "api.test"},
			func(err error) bool { var e x509.HostnameError; return errors.As(err, &e) },
			"certificate is valid for web.test, not api.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tlsPool(t, b.addr(), tc.tls)
			c, err := p.Dial()
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			var verr *tls.CertificateVerificationError
			if !errors.As(err, &verr) || !tc.check(err) {
				t.Fatalf("Dial: %v (%T), want a certificate verification error for %s", err, errors.Unwrap(err), tc.name)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, b.addr()) || !strings.HasPrefix(msg, "upstream: TLS handshake with") {
				t.Fatalf("Dial: %q, want it to name %s and say %q", msg, b.addr(), tc.want)
			}
			wantStats(t, p, 0, 0, 1)
		})
	}
	t.Run("insecure skip verify accepts it", func(t *testing.T) {
		p := tlsPool(t, b.addr(), TLS{RootCAs: k.otherCA.Pool(), ServerName: "api.test", InsecureSkipVerify: true})
		exchange(t, dialT(t, p))
		wantStats(t, p, 1, 0, 0)
	})
}

// TestTLSServerName: the pool sends ServerName in SNI, and by default the host of its address; it
// verifies the certificate for that name, an IP address against the certificate's IP SANs.
func TestTLSServerName(t *testing.T) {
	k := newPKI(t)
	b := newTLSBackend(t, k.serverConfig(0), true)
	_, port, _ := net.SplitHostPort(b.addr())
	// Addresses by name reach the backend through this dialler.
	dial := func(network, address string, timeout time.Duration) (net.Conn, error) {
		return net.DialTimeout(network, net.JoinHostPort("127.0.0.1", port), timeout)
	}
	for _, tc := range []struct {
		name, address, serverName, wantSNI string
	}{
		{"explicit server name", b.addr(), "web.test", "web.test"},
		{"the host of a named address", net.JoinHostPort("web.test", port), "", "web.test"},
		{"an IP address: verified, no SNI", b.addr(), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPool(Config{Address: tc.address, IdleConnsMax: 1, Dial: dial,
				TLS: tlsConfigT(t, TLS{RootCAs: k.ca.Pool(), ServerName: tc.serverName})})
			defer p.Close()
			c := dialT(t, p)
			s := b.state(t)
			if s.ServerName != tc.wantSNI {
				t.Fatalf("the backend saw SNI %q, want %q", s.ServerName, tc.wantSNI)
			}
			if s.NegotiatedProtocol != ALPN {
				t.Fatalf("the backend (offering h2 first) agreed on ALPN %q, want %q", s.NegotiatedProtocol, ALPN)
			}
			if got := c.tls.ConnectionState().NegotiatedProtocol; got != ALPN {
				t.Fatalf("ALPN %q, want %q", got, ALPN)
			}
			exchange(t, c)
		})
	}
}

// TestTLSClientCertificate: a backend that requires a client certificate refuses a pool without
// one and serves a pool with one. With TLS 1.2 the refusal fails the handshake; with TLS 1.3 the
// client's handshake is over before the backend has checked, so it fails the first exchange.
func TestTLSClientCertificate(t *testing.T) {
	k := newPKI(t)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			cfg := k.serverConfig(v)
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
			cfg.ClientCAs = k.clientCA.Pool()
			b := newTLSBackend(t, cfg, true)

			without := tlsPool(t, b.addr(), TLS{RootCAs: k.ca.Pool()})
			c, err := without.Dial()
			if v == tls.VersionTLS13 && err == nil {
				defer c.Close()
				err = tryExchange(c)
			}
			// TLS 1.2 has no alert that says why; TLS 1.3 has certificate_required.
			if err == nil || v == tls.VersionTLS13 && !strings.Contains(err.Error(), "certificate required") {
				t.Fatalf("without a client certificate: %v, want the backend's refusal", err)
			}
			select {
			case serr := <-b.failures:
				if !strings.Contains(serr.Error(), "certificate") {
					t.Fatalf("the backend's handshake failed with %v, want it to be for the missing certificate", serr)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the backend did not refuse the handshake")
			}

			loaded, err := LoadTLS(TLSFiles{CertFile: k.client.CertFile, KeyFile: k.client.KeyFile})
			if err != nil {
				t.Fatal(err)
			}
			loaded.RootCAs = k.ca.Pool()
			with := tlsPool(t, b.addr(), loaded)
			exchange(t, dialT(t, with))
			s := b.state(t)
			if len(s.PeerCertificates) == 0 || s.PeerCertificates[0].Subject.CommonName != "xlb-dataplane" {
				t.Fatalf("the backend saw client certificates %v, want xlb-dataplane's", s.PeerCertificates)
			}
			wantStats(t, with, 1, 0, 0)
		})
	}
}

// TestTLSResumption: a connection dialled after an earlier one closed resumes its session from the
// pool's cache; with NoResumption every handshake is full.
func TestTLSResumption(t *testing.T) {
	k := newPKI(t)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, off := range []bool{false, true} {
			name := tls.VersionName(v) + map[bool]string{false: " resumption", true: " NoResumption"}[off]
			t.Run(name, func(t *testing.T) {
				b := newTLSBackend(t, k.serverConfig(v), true)
				p := tlsPool(t, b.addr(), TLS{RootCAs: k.ca.Pool(), NoResumption: off})
				first := dialT(t, p)
				exchange(t, first) // reads the TLS 1.3 ticket, sent after the handshake
				first.Close()
				if s := b.state(t); s.DidResume || s.Version != v {
					t.Fatalf("first connection: resumed %v, version %s", s.DidResume, tls.VersionName(s.Version))
				}
				second := dialT(t, p)
				exchange(t, second)
				s := b.state(t)
				if s.DidResume == off || second.tls.ConnectionState().DidResume == off {
					t.Fatalf("second connection: the backend says resumed %v, the pool %v; want %v",
						s.DidResume, second.tls.ConnectionState().DidResume, !off)
				}
				if off {
					wantStats(t, p, 2, 0, 0)
				} else {
					wantStats(t, p, 1, 1, 0)
				}
			})
		}
	}
}

// TestTLSPooledReuse: requests in turn through Get and Put share one keep-alive TLS connection:
// one handshake for all of them.
func TestTLSPooledReuse(t *testing.T) {
	k := newPKI(t)
	b := newTLSBackend(t, k.serverConfig(0), true)
	p := tlsPool(t, b.addr(), TLS{RootCAs: k.ca.Pool()})
	const requests = 20
	var first *Conn
	for i := range requests {
		c, ok := p.Get(true)
		if !ok {
			if i > 0 {
				t.Fatalf("request %d: the pool had no idle connection", i)
			}
			c = dialT(t, p)
			first = c
		}
		if c != first || c.Reused != (i > 0) {
			t.Fatalf("request %d: got connection %p (Reused %v), want %p", i, c, c.Reused, first)
		}
		exchange(t, c)
		p.Put(c)
	}
	wantStats(t, p, 1, 0, 0)
	b.state(t)
	select {
	case s := <-b.states:
		t.Fatalf("the backend made a second handshake (resumed %v)", s.DidResume)
	default:
	}
}

// TestTLSAlive pins what Get(true) makes of an idle TLS connection: a session ticket waiting is
// not the backend's doing (TLS 1.3 sends them after the handshake, in records that look like
// application data until decrypted), and goes into the cache; a close_notify, an EOF and
// unsolicited bytes make it unusable.
func TestTLSAlive(t *testing.T) {
	k := newPKI(t)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		// A backend that asks for a client certificate sends its TLS 1.3 tickets after it has the
		// client's second flight, so they are waiting on the socket when Dial returns, not
		// read along with the handshake.
		cfg := k.serverConfig(v)
		cfg.ClientAuth = tls.RequestClientCert
		setup := func(t *testing.T) (*tlsBackend, *Pool) {
			b := newTLSBackend(t, cfg, false)
			return b, tlsPool(t, b.addr(), TLS{RootCAs: k.ca.Pool()})
		}
		t.Run(tls.VersionName(v)+" idle, a ticket waiting", func(t *testing.T) {
			b, p := setup(t)
			c := dialT(t, p)
			if st := b.state(t); st.DidResume {
				t.Fatal("the first connection resumed")
			}
			s := b.conn(t)
			if v == tls.VersionTLS13 {
				waitReadable(t, c.probe.TCPConn) // the ticket
			}
			// Idle past its read deadline, as a pooled connection is: the check does not care.
			c.DL.Read(time.Now().Add(-time.Hour), time.Second)
			p.Put(c)
			got, ok := p.Get(true)
			if !ok || got != c {
				t.Fatalf("Get(true): %p, %v; want the idle connection %p", got, ok, c)
			}
			go func() { // the backend answers one request
				r := bufio.NewReader(s)
				for line, err := r.ReadString('\n'); err == nil && line != "\r\n"; line, err = r.ReadString('\n') {
				}
				io.WriteString(s, response)
			}()
			c.DL.Forget()
			exchange(t, c)
			c.Close()
			// The ticket went into the cache: the next connection resumes.
			dialT(t, p)
			if st := b.state(t); !st.DidResume {
				t.Fatalf("the next connection did not resume (%s)", tls.VersionName(st.Version))
			}
		})
		for _, spoil := range []struct {
			name string
			do   func(t *testing.T, s *tls.Conn)
		}{
			{"close_notify alone", func(t *testing.T, s *tls.Conn) {
				if err := s.CloseWrite(); err != nil { // the alert, and the TCP connection stays open
					t.Fatal(err)
				}
			}},
			{"close_notify and FIN", func(t *testing.T, s *tls.Conn) { s.Close() }},
			{"FIN without close_notify", func(t *testing.T, s *tls.Conn) { s.NetConn().Close() }},
			{"unsolicited bytes", func(t *testing.T, s *tls.Conn) {
				if _, err := io.WriteString(s, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
			}},
		} {
			t.Run(tls.VersionName(v)+" "+spoil.name, func(t *testing.T) {
				b, p := setup(t)
				good := dialT(t, p)
				b.conn(t)
				bad := dialT(t, p)
				bs := b.conn(t)
				if v == tls.VersionTLS13 {
					waitReadable(t, good.probe.TCPConn) // good's ticket, for Get to take in
					// bad's ticket, taken in now, so that what makes bad readable below is the spoiling
					waitReadable(t, bad.probe.TCPConn)
					if !bad.alive() {
						t.Fatal("a connection with a ticket waiting is not alive")
					}
				}
				p.Put(good)
				p.Put(bad)
				spoil.do(t, bs)
				waitReadable(t, bad.probe.TCPConn)
				got, ok := p.Get(true)
				if !ok || got != good {
					t.Fatalf("Get(true): %p, %v; want the live connection %p, not the spoiled %p", got, ok, good, bad)
				}
				if p.Idle() != 0 {
					t.Fatalf("Idle = %d, want 0", p.Idle())
				}
			})
		}
	}
}

// TestLoadTLS: LoadTLS reads a CA bundle and a client pair, and each error names its file.
func TestLoadTLS(t *testing.T) {
	k := newPKI(t)
	bundle := filepath.Join(k.dir, "bundle.pem")
	ca1, _ := os.ReadFile(k.ca.File)
	ca2, _ := os.ReadFile(k.otherCA.File)
	if err := os.WriteFile(bundle, append(ca1, ca2...), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadTLS(TLSFiles{CAFile: bundle, CertFile: k.client.CertFile, KeyFile: k.client.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	if got.RootCAs == nil || len(got.Certificates) != 1 || got.Certificates[0].Leaf.Subject.CommonName != "xlb-dataplane" {
		t.Fatalf("LoadTLS: roots %v, certificates %v", got.RootCAs, got.Certificates)
	}
	for _, ca := range []*testutil.CA{k.ca, k.otherCA} {
		if _, err := k.server.TLS.Leaf.Verify(x509.VerifyOptions{Roots: got.RootCAs}); ca == k.ca && err != nil {
			t.Fatalf("the bundle does not verify the backend's certificate: %v", err)
		}
	}

	write := func(name, content string) string {
		p := filepath.Join(k.dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(k.dir, "missing.pem")
	empty := write("empty.pem", "not PEM at all\n")
	keyAsCA := k.client.KeyFile
	garbled := write("garbled.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	other := k.clientCA.IssueClient(t, k.dir, "other")
	for _, tc := range []struct {
		name string
		f    TLSFiles
		want string
	}{
		{"missing CA file", TLSFiles{CAFile: missing}, "upstream: CA file: open " + missing + ": no such file"},
		{"CA file without PEM", TLSFiles{CAFile: empty}, "upstream: CA file " + empty + " holds no PEM certificate"},
		{"CA file holding a key", TLSFiles{CAFile: keyAsCA}, "upstream: CA file " + keyAsCA + `: PEM block 1 is a "PRIVATE KEY"`},
		{"CA file with a garbled certificate", TLSFiles{CAFile: garbled}, "upstream: CA file " + garbled + ": certificate 1:"},
		{"missing certificate file", TLSFiles{CertFile: missing, KeyFile: k.client.KeyFile}, "upstream: client certificate file: open " + missing},
		{"missing key file", TLSFiles{CertFile: k.client.CertFile, KeyFile: missing}, "upstream: client key file: open " + missing},
		{"certificate file without a certificate", TLSFiles{CertFile: k.client.KeyFile, KeyFile: k.client.KeyFile},
			"upstream: client certificate file " + k.client.KeyFile + " holds no PEM certificate"},
		{"key file without a key", TLSFiles{CertFile: k.client.CertFile, KeyFile: k.client.CertFile},
			"upstream: client key file " + k.client.CertFile + " holds no PEM private key"},
		{"key of another certificate", TLSFiles{CertFile: k.client.CertFile, KeyFile: other.KeyFile},
			"upstream: client certificate " + k.client.CertFile + " with key " + other.KeyFile + ": tls: private key does not match public key"},
		{"a certificate without its key", TLSFiles{CertFile: k.client.CertFile}, "upstream: a client certificate needs both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadTLS(tc.f)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("LoadTLS: %v, want an error starting %q", err, tc.want)
			}
		})
	}
}

// TestTLSConfig: Config sets what the pool relies on, and refuses versions below 1.2.
func TestTLSConfig(t *testing.T) {
	cfg := tlsConfigT(t, TLS{ServerName: "web.test"})
	if cfg.MinVersion != tls.VersionTLS12 || len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != ALPN ||
		cfg.SessionTicketsDisabled || cfg.InsecureSkipVerify || cfg.RootCAs != nil || cfg.ServerName != "web.test" {
		t.Fatalf("Config of the zero TLS: %+v", cfg)
	}
	if cfg := tlsConfigT(t, TLS{MinVersion: tls.VersionTLS13, NoResumption: true}); cfg.MinVersion != tls.VersionTLS13 || !cfg.SessionTicketsDisabled {
		t.Fatalf("Config with 1.3 and NoResumption: %+v", cfg)
	}
	if _, err := (TLS{MinVersion: tls.VersionTLS11}).Config(); err == nil || !strings.Contains(err.Error(), "0x0302") {
		t.Fatalf("Config with TLS 1.1: %v, want an error naming the version", err)
	}
	for in, want := range map[string]uint16{"": tls.VersionTLS12, "1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13} {
		if got, err := ParseTLSVersion(in); err != nil || got != want {
			t.Fatalf("ParseTLSVersion(%q) = %#x, %v", in, got, err)
		}
	}
	if _, err := ParseTLSVersion("1.1"); err == nil {
		t.Fatal("ParseTLSVersion(1.1) succeeded")
	}
	// NewPool gives each pool a copy with its host and a cache of its own.
	shared := tlsConfigT(t, TLS{})
	p1 := NewPool(Config{Address: "10.0.0.1:443", TLS: shared})
	p2 := NewPool(Config{Address: "backend.test:443", TLS: shared})
	if p1.tls.ServerName != "10.0.0.1" || p2.tls.ServerName != "backend.test" || shared.ServerName != "" {
		t.Fatalf("server names %q and %q (shared config %q)", p1.tls.ServerName, p2.tls.ServerName, shared.ServerName)
	}
	if p1.tls.ClientSessionCache == nil || p1.tls.ClientSessionCache == p2.tls.ClientSessionCache || shared.ClientSessionCache != nil {
		t.Fatal("the pools do not each have a session cache of their own")
	}
	if p := NewPool(Config{Address: "10.0.0.1:443", TLS: tlsConfigT(t, TLS{NoResumption: true})}); p.tls.ClientSessionCache != nil {
		t.Fatal("a session cache without resumption")
	}
}

// TestTLSHandshakeTimeout: a backend that accepts but never answers the handshake fails Dial
// within the connect timeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	b := newBackend(t) // plain TCP: it never says a word
	p := NewPool(Config{Address: b.ln.Addr().String(), ConnectTimeout: 50 * time.Millisecond, TLS: tlsConfigT(t, TLS{})})
	defer p.Close()
	_, err := p.Dial()
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Dial: %v, want a timeout", err)
	}
	wantStats(t, p, 0, 0, 1)
}

// TestTLSFillCloseNotify: a backend that sends a close_notify right behind its response has
// crypto/tls return the bytes and io.EOF together; Fill returns the bytes, and the EOF next.
func TestTLSFillCloseNotify(t *testing.T) {
	k := newPKI(t)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			b := newTLSBackend(t, k.serverConfig(v), false)
			p := tlsPool(t, b.addr(), TLS{RootCAs: k.ca.Pool()})
			c := dialT(t, p)
			s := b.conn(t)
			if _, err := c.Write([]byte(request)); err != nil {
				t.Fatal(err)
			}
			s.SetDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReader(s)
			for line, err := r.ReadString('\n'); line != "\r\n"; line, err = r.ReadString('\n') {
				if err != nil {
					t.Fatal(err)
				}
			}
			// Both records are on the pool's socket once these return (loopback), and crypto/tls
			// reads them in one go.
			if _, err := io.WriteString(s, response); err != nil {
				t.Fatal(err)
			}
			if err := s.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			for c.In.Len() < len(response) {
				n, err := c.Fill()
				if err != nil {
					t.Fatalf("Fill: %d bytes, %v, with %q read", n, err, c.In.Buffered())
				}
			}
			if got := string(c.In.Buffered()); got != response {
				t.Fatalf("read %q", got)
			}
			if n, err := c.Fill(); n != 0 || err != io.EOF {
				t.Fatalf("Fill after the response: %d, %v; want 0, io.EOF (the close_notify)", n, err)
			}
		})
	}
}

// TestTLSMinVersion: the pool offers TLS 1.2 and 1.3 by default, and with MinVersion 1.3 refuses
// a backend that stops at 1.2.
func TestTLSMinVersion(t *testing.T) {
	k := newPKI(t)
	for _, tc := range []struct {
		name          string
		backendMax    uint16
		min           uint16
		want          uint16 // 0: the handshake fails
		wantErrSubstr string
	}{
		{"default against a 1.2 backend", tls.VersionTLS12, 0, tls.VersionTLS12, ""},
		{"default against a 1.3 backend", tls.VersionTLS13, 0, tls.VersionTLS13, ""},
		{"1.3 against a 1.3 backend", tls.VersionTLS13, tls.VersionTLS13, tls.VersionTLS13, ""},
		{"1.3 against a 1.2 backend", tls.VersionTLS12, tls.VersionTLS13, 0, "protocol version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTLSBackend(t, k.serverConfig(tc.backendMax), true)
			p := tlsPool(t, b.addr(), TLS{RootCAs: k.ca.Pool(), MinVersion: tc.min})
			c, err := p.Dial()
			if tc.want == 0 {
				if err == nil {
					c.Close()
					t.Fatal("Dial succeeded")
				}
				if !strings.Contains(err.Error(), tc.wantErrSubstr) {
					t.Fatalf("Dial: %v, want it to say %q", err, tc.wantErrSubstr)
				}
				wantStats(t, p, 0, 0, 1)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.tls.ConnectionState().Version; got != tc.want {
				t.Fatalf("negotiated %s, want %s", tls.VersionName(got), tls.VersionName(tc.want))
			}
			exchange(t, c)
		})
	}
}
