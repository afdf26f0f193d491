package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// serveTLS serves set "web" of p on a loopback port through tls.NewListener with conf, as a
// worker does for a TLS listener, until the test ends; it returns the address.
func serveTLS(t testing.TB, p *Proxy, conf *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(tls.NewListener(ln, conf), "web") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// tlsPair is a server configuration of a certificate for a.example.test and a client one that
// trusts it.
func tlsPair(t testing.TB) (server, client *tls.Config) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	leaf := ca.IssueServer(t, dir, "a", "a.example.test")
	return &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, NextProtos: []string{"http/1.1"}},
		&tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test"}
}

// TestTLSForwardedProto: a request on a TLS connection reaches the backend with
// X-Forwarded-Proto https and proto=https in the Forwarded field, replacing what an untrusted
// client claimed; one on a plain listener of the same proxy still says http. The keep-alive
// connection serves a second request.
func TestTLSForwardedProto(t *testing.T) {
	be := newRecordingBackend(t, nil)
	p, plain := startProxyTo(t, Config{ForwardedField: true}, be)
	serverConf, clientConf := tlsPair(t)
	addr := serveTLS(t, p, serverConf)

	nc, err := tls.Dial("tcp", addr, clientConf)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(wireWait))
	c := &wireClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	for _, target := range []string{"/first", "/second"} {
		c.write("GET " + target + " HTTP/1.1\r\nHost: a.example.test\r\nX-Forwarded-Proto: http\r\nForwarded: proto=http\r\n\r\n")
		if res, body := c.response("GET"); res.StatusCode != 200 || body != "GET "+target {
			t.Fatalf("GET %s over TLS: %d %q", target, res.StatusCode, body)
		}
		r := be.nextRequest(t)
		if got := r.values("X-Forwarded-Proto"); !slices.Equal(got, []string{"https"}) {
			t.Errorf("GET %s over TLS: X-Forwarded-Proto %q, want [https]", target, got)
		}
		if got := r.values("Forwarded"); !slices.Equal(got, []string{`for=127.0.0.1;host="a.example.test";proto=https`}) {
			t.Errorf("GET %s over TLS: Forwarded %q, want proto=https", target, got)
		}
	}
	if st := nc.ConnectionState(); st.NegotiatedProtocol != "" && st.NegotiatedProtocol != "http/1.1" {
		t.Errorf("ALPN %q", st.NegotiatedProtocol)
	}

	pc := dialWire(t, plain)
	pc.write("GET /plain HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
	pc.response("GET")
	r := be.nextRequest(t)
	if got := r.values("X-Forwarded-Proto"); !slices.Equal(got, []string{"http"}) {
		t.Errorf("plain: X-Forwarded-Proto %q, want [http]", got)
	}
	if got := r.values("Forwarded"); len(got) != 1 || !strings.HasSuffix(got[0], ";proto=http") {
		t.Errorf("plain: Forwarded %q, want proto=http", got)
	}
}

// TestTLSHandshakeTimeout: a client that connects to a TLS listener and never sends its
// ClientHello is closed after ClientTimeout, though the idle timeout is an hour: the handshake is
// bounded as a request head is. A client whose handshake fails is counted too, and neither
// disturbs a client that does its handshake.
func TestTLSHandshakeTimeout(t *testing.T) {
	be := newRecordingBackend(t, nil)
	const clientTimeout = 200 * time.Millisecond
	p, _ := startProxyTo(t, Config{ClientTimeout: clientTimeout, IdleTimeout: time.Hour}, be)
	serverConf, clientConf := tlsPair(t)
	addr := serveTLS(t, p, serverConf)

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	began := time.Now()
	silent.SetReadDeadline(began.Add(wireWait))
	n, err := silent.Read(make([]byte, 1))
	if n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("a client that never handshakes: read %d bytes, %v; want the connection closed", n, err)
	}
	if waited := time.Since(began); waited < clientTimeout {
		t.Errorf("closed after %v, before the client timeout %v", waited, clientTimeout)
	}

	// Not TLS at all: the handshake fails at once.
	plainText, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plainText.Close()
	io.WriteString(plainText, "GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
	plainText.SetReadDeadline(time.Now().Add(wireWait))
	if res, err := http.ReadResponse(bufio.NewReader(plainText), nil); err == nil && res.StatusCode == 200 {
		t.Errorf("a plain-text request on the TLS listener was served")
	}

	testutil.WaitFor(t, wireWait, "2 handshake failures counted", func() bool { return p.Stats().TLSHandshakeFailures == 2 })

	nc, err := tls.Dial("tcp", addr, clientConf)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(wireWait))
	c := &wireClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	c.get("/ok", "GET /ok")
}
