package etcdstore

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// TestTLSRefusal: tlsRefusal reports the alert of a TLS server that requires a client
// certificate (under TLS 1.3 sent after the client's handshake is done), and nothing for one
// that takes the client, or for an address where nothing listens.
func TestTLSRefusal(t *testing.T) {
	dir := t.TempDir()
	ca, clientCA := testutil.NewCA(t, dir, "ca"), testutil.NewCA(t, dir, "client-ca")
	serverCert := ca.IssueServer(t, dir, "etcd", "127.0.0.1")
	serve := func(auth tls.ClientAuthType) string {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert.TLS},
			ClientAuth: auth, ClientCAs: clientCA.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.(*tls.Conn).Handshake() // fails, and sends the alert, without a client certificate
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				c.Read(make([]byte, 1)) // until the client closes
				c.Close()
			}
		}()
		t.Cleanup(func() { ln.Close(); <-done })
		return "https://" + ln.Addr().String()
	}
	required, optional := serve(tls.RequireAndVerifyClientCert), serve(tls.NoClientCert)
	tc := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	if got := tlsRefusal(required, tc, time.Second); !strings.Contains(got, "certificate required") || !strings.Contains(got, "--etcd-cert") {
		t.Errorf("a server that requires a client certificate: %q; want certificate required, naming --etcd-cert", got)
	}
	withCert := tc.Clone()
	withCert.Certificates = []tls.Certificate{clientCA.IssueClient(t, dir, "xlb").TLS}
	if got := tlsRefusal(required, withCert, time.Second); got != "" {
		t.Errorf("a server that requires a client certificate, with one: %q; want nothing", got)
	}
	if got := tlsRefusal(optional, tc, time.Second); got != "" {
		t.Errorf("a server that asks for no client certificate: %q; want nothing", got)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + ln.Addr().String()
	ln.Close()
	if got := tlsRefusal(closed, tc, time.Second); got != "" {
		t.Errorf("nothing listening: %q; want nothing (gRPC's error says it)", got)
	}
}
