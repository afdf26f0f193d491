package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// TestIdleConnectionsHoldNoGoroutine: keep-alive connections that have been served and wait for
// their next request hold no goroutine when an event loop serves the listener (Config.EventLoop),
// nor any state of the proxy's (a conn), and are served again when the request comes; with a
// goroutine per connection each holds one.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer be.Close()
	p, addr := startProxy(t, Config{EventLoop: forceEventLoop}, be.Listener.Addr().String())
	const n = 100
	get := func(c net.Conn, r *bufio.Reader) {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("%d %q", res.StatusCode, b)
		}
	}
	// Once every connection is served, what runs is the test, the backend and its pooled
	// connections, and the proxy's own goroutines: few, however many clients wait.
	base := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i], readers[i] = c, bufio.NewReader(c)
		get(c, readers[i])
	}
	testutil.WaitFor(t, 10*time.Second, "every connection open and idle", func() bool { return p.Stats().Connections >= n }) // the goroutine engine holds one more slot for its next accept
	if !p.cfg.EventLoop {
		if got := runtime.NumGoroutine() - base; got < n {
			t.Fatalf("%d more goroutines with %d idle connections, each of a goroutine", got, n)
		}
	} else {
		testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%d idle connections to hold no goroutine", n), func() bool {
			return runtime.NumGoroutine()-base < 20
		})
		testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%d idle connections to hold no conn", n), func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return len(p.conns) == 0
		})
	}
	for i := range n {
		get(conns[i], readers[i])
	}
}
