package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// selfSigned returns a server certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "upstream test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// start serves s on a port of its own until the test ends.
func start(t *testing.T, s *server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go s.serve(ln)
	return ln.Addr().String()
}

type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string, cfg *tls.Config) *client {
	t.Helper()
	var c net.Conn
	var err error
	d := &net.Dialer{Timeout: 10 * time.Second}
	if cfg != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

// get sends a request and reads its response: the status, the body, and whether the server
// said it closes the connection.
func (cl *client) get(path, extra string) (int, string, bool) {
	cl.t.Helper()
	if _, err := io.WriteString(cl.c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n"+extra+"\r\n"); err != nil {
		cl.t.Fatal(err)
	}
	resp, err := http.ReadResponse(cl.br, nil)
	if err != nil {
		cl.t.Fatalf("GET %s: %v", path, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		cl.t.Fatalf("GET %s: body: %v", path, err)
	}
	return resp.StatusCode, string(b), resp.Close
}

// closed reports whether the server closed the connection (EOF on the next read).
func (cl *client) closed() bool {
	_, err := cl.br.ReadByte()
	return err == io.EOF
}

// TestUpstreamCountsHandshakes: /__tls counts a first connection as a full handshake and one
// that offers the ticket of the first as resumed, with the group and version negotiated.
func TestUpstreamCountsHandshakes(t *testing.T) {
	cert, pool := selfSigned(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	addr := start(t, newServer("tls1", 100, cfg, 0))
	ccfg := &tls.Config{RootCAs: pool, ClientSessionCache: tls.NewLRUClientSessionCache(4),
		CurvePreferences: []tls.CurveID{tls.X25519}}
	for i := 0; i < 2; i++ {
		cl := dial(t, addr, ccfg)
		if code, body, _ := cl.get("/", ""); code != 200 || len(body) != 100 || !strings.HasPrefix(body, "upstream tls1\n") {
			t.Fatalf("GET / on connection %d: %d %q", i, code, body)
		}
		if got := cl.c.(*tls.Conn).ConnectionState().DidResume; got != (i == 1) {
			t.Fatalf("connection %d: DidResume %v", i, got)
		}
		cl.c.Close()
	}
	_, body, _ := dial(t, addr, ccfg).get("/__tls", "")
	want := "full 1\nresumed 2\ngroup X25519 3\nversion TLS 1.3 3\n" // this third connection resumed too
	if body != want {
		t.Fatalf("/__tls = %q, want %q", body, want)
	}
	if _, body, _ := dial(t, addr, ccfg).get("/__stats", ""); body != "requests 2\n" {
		t.Fatalf("/__stats = %q, want 2 requests (not the /__tls one)", body)
	}
}

// TestUpstreamConnections: keep-alive by default; the connection ends after "Connection: close"
// and after -conn-requests requests, with "Connection: close" in the last response; HEAD has
// no body. Over plain TCP, /__tls counts nothing.
func TestUpstreamConnections(t *testing.T) {
	addr := start(t, newServer("up1", 10, nil, 3))
	cl := dial(t, addr, nil)
	for i := 1; i <= 3; i++ {
		code, body, closing := cl.get("/", "")
		if code != 200 || len(body) != 10 || closing != (i == 3) {
			t.Fatalf("request %d of 3: %d %q, closing %v", i, code, body, closing)
		}
	}
	if !cl.closed() {
		t.Fatal("connection open after -conn-requests 3 requests")
	}
	cl = dial(t, addr, nil)
	if code, body, closing := cl.get("/", "Connection: close\r\n"); code != 200 || len(body) != 10 || !closing {
		t.Fatalf("GET with Connection: close: %d %q, closing %v", code, body, closing)
	}
	if !cl.closed() {
		t.Fatal("connection open after Connection: close")
	}
	cl = dial(t, addr, nil)
	io.WriteString(cl.c, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /__tls HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(cl.br, &http.Request{Method: "HEAD"})
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != 10 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	resp, err = http.ReadResponse(cl.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "full 0\nresumed 0\n" {
		t.Fatalf("/__tls after HEAD (the HEAD response must carry no body) = %q", b)
	}
	cl = dial(t, addr, nil)
	if code, _, _ := cl.get("/", "Transfer-Encoding: chunked\r\n"); code != 400 {
		t.Fatalf("chunked request: %d, want 400", code)
	}
}
