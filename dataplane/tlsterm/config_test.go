package tlsterm

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"

	"github.com/xlbproxy/xlb/internal/testutil"
)

func TestServerConfig(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	s := mustStore(t, StoreConfig{Pairs: []Pair{pairOf(ca.IssueServer(t, dir, "site", "site.example.test"))}})
	srv := startServer(t, ServerConfig(s))
	client := func(f func(*tls.Config)) *tls.Config {
		c := &tls.Config{ServerName: "site.example.test", RootCAs: ca.Pool()}
		f(c)
		return c
	}
	aead12 := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	}

	tests := []struct {
		name    string
		client  *tls.Config
		refused string // in the client's error; "" when the handshake must pass
		check   func(t *testing.T, st tls.ConnectionState)
	}{
		{"TLS 1.3 with ALPN", client(func(c *tls.Config) { c.NextProtos = []string{"h2", "http/1.1"} }), "",
			func(t *testing.T, st tls.ConnectionState) {
				if st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != "http/1.1" {
					t.Errorf("version %x, ALPN %q; want TLS 1.3 and http/1.1", st.Version, st.NegotiatedProtocol)
				}
			}},
		{"TLS 1.2 takes an AEAD suite", client(func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }), "",
			func(t *testing.T, st tls.ConnectionState) {
				if st.Version != tls.VersionTLS12 || !slices.Contains(aead12, st.CipherSuite) {
					t.Errorf("version %x, suite %s; want TLS 1.2 and an AEAD", st.Version, tls.CipherSuiteName(st.CipherSuite))
				}
			}},
		{"no ALPN from the client", client(func(*tls.Config) {}), "",
			func(t *testing.T, st tls.ConnectionState) {
				if st.NegotiatedProtocol != "" {
					t.Errorf("ALPN %q, want none", st.NegotiatedProtocol)
				}
			}},
		{"TLS 1.1 refused", client(func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }),
			"protocol version", nil},
		{"h2 only refused", client(func(c *tls.Config) { c.NextProtos = []string{"h2"} }), "no application protocol", nil},
		{"RC4 and CBC-SHA256 only refused", client(func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}
		}), "handshake failure", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := handshake(srv.addr, tt.client)
			switch {
			case tt.refused == "" && err != nil:
				t.Fatalf("handshake: %v", err)
			case tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused)):
				t.Fatalf("handshake: %v, want refused with %q", err, tt.refused)
			case tt.check != nil:
				tt.check(t, st)
			}
		})
	}
}

// TestServerConfigResumes: tickets are on, for TLS 1.2 and 1.3, with Go's keys of the process
// before any TicketLoader.
func TestServerConfigResumes(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	s := mustStore(t, StoreConfig{Pairs: []Pair{pairOf(ca.IssueServer(t, dir, "site", "site.example.test"))}})
	srv := startServer(t, ServerConfig(s))
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		c := &tls.Config{ServerName: "site.example.test", RootCAs: ca.Pool(), MaxVersion: v,
			ClientSessionCache: tls.NewLRUClientSessionCache(1)}
		if st := mustHandshake(t, srv.addr, c); st.DidResume {
			t.Fatalf("%s: the first handshake resumed", tls.VersionName(v))
		}
		if st := mustHandshake(t, srv.addr, c); !st.DidResume {
			t.Errorf("%s: the second handshake did not resume", tls.VersionName(v))
		}
	}
}
