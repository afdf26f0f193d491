package tlsterm

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: a test server's accept loop
// or connection, a Watch, or a client. Every test stops its own in t.Cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// server is a real TLS server on 127.0.0.1 built from a tls.Config of this package: each
// connection completes its handshake, gets one byte (after which a TLS 1.3 client has read its
// session tickets) and is closed when the client closes it.
type server struct {
	addr string
	ln   net.Listener
	wg   sync.WaitGroup
}

func startServer(t testing.TB, cfg *tls.Config) *server {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: raw.Addr().String(), ln: tls.NewListener(raw, cfg)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write([]byte{'x'}); err != nil {
					return // a failed handshake: the client reports it
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *server) close() {
	s.ln.Close()
	s.wg.Wait()
}

// handshake connects to addr with cfg, reads the server's byte and returns the connection's state.
func handshake(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return tls.ConnectionState{}, err
	}
	return c.(*tls.Conn).ConnectionState(), nil
}

// mustHandshake is handshake, failing t on an error.
func mustHandshake(t testing.TB, addr string, cfg *tls.Config) tls.ConnectionState {
	t.Helper()
	st, err := handshake(addr, cfg)
	if err != nil {
		t.Fatalf("handshake with %s (SNI %q): %v", addr, cfg.ServerName, err)
	}
	return st
}

// moveInto renames src over dst, as a deploy tool replaces a certificate.
func moveInto(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.Rename(src, dst); err != nil {
		t.Fatal(err)
	}
}

// writeFile replaces path with data, by rename.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	moveInto(t, path+".new", path)
}

// watch runs w until the test ends.
func watch(t testing.TB, w func(context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return within 10s of its context's end")
		}
	})
}
