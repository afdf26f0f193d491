package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// serveProxy starts a proxy like startProxy, and also returns a channel that is closed when Serve
// returned (so after Shutdown began: the proxy is draining).
func serveProxy(t *testing.T, cfg Config, backends ...string) (*Proxy, string, <-chan struct{}) {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var bs []table.Backend
	for i, a := range backends {
		bs = append(bs, table.Backend{ID: "b" + string(rune('0'+i)), Address: a, Weight: 1})
	}
	if err := p.SetBackends([]table.Set{{Name: "web", Backends: bs}}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	var serveErr error
	go func() {
		serveErr = p.Serve(ln, "web")
		close(served)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitMax)
		defer cancel()
		p.Shutdown(ctx) // a second Shutdown, after the test's own, must be harmless
		<-served
		if serveErr != nil {
			t.Errorf("serve: %v", serveErr)
		}
	})
	return p, ln.Addr().String(), served
}

// shutdownAsync runs p.Shutdown(ctx) and reports its result.
func shutdownAsync(p *Proxy, ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(ctx) }()
	return done
}

func awaitChan[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitMax):
		t.Fatalf("%s: nothing within %v", what, waitMax)
	}
	var zero T
	return zero
}

// heldBackend answers each request "done" only when release is closed, and tells got when a request
// arrived.
func heldBackend(t *testing.T) (addr string, got <-chan struct{}, release func()) {
	t.Helper()
	gotc := make(chan struct{}, 10)
	rel := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotc <- struct{}{}
		select {
		case <-rel:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "done")
	}))
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(srv.Close)
	t.Cleanup(release) // runs before srv.Close
	return srv.Listener.Addr().String(), gotc, release
}

func TestShutdownClosesIdleConnections(t *testing.T) {
	good := newCountingBackend(t, "good")
	p, addr, served := serveProxy(t, Config{}, good.addr())
	c := dialTestClient(t, addr)
	res, body := c.request("GET", "/", nil)
	wantStatus(t, res, body, 200)
	fresh := dialTestClient(t, addr) // connected, never sent a byte

	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	done := shutdownAsync(p, ctx)
	expectClosed(t, c.nc, c.br, "an idle keep-alive connection at Shutdown")
	expectClosed(t, fresh.nc, fresh.br, "a connection that sent nothing at Shutdown")
	if err := awaitChan(t, done, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v, want nil: nothing was in flight", err)
	}
	awaitChan(t, served, "Serve returning after Shutdown")
}

func TestShutdownStopsAccepting(t *testing.T) {
	good := newCountingBackend(t, "good")
	p, addr, served := serveProxy(t, Config{}, good.addr())
	c := dialTestClient(t, addr) // a served request: Serve is running
	res, body := c.request("GET", "/", nil)
	wantStatus(t, res, body, 200)
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	awaitChan(t, served, "Serve returning after Shutdown")
	nc, err := net.DialTimeout("tcp", addr, waitMax)
	if err != nil {
		return // refused: nothing listens any more
	}
	defer nc.Close()
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	expectClosed(t, nc, bufio.NewReader(nc), "a connection made after Shutdown")
	if good.requests() != 1 {
		t.Fatal("a request made after Shutdown reached the backend")
	}
}

// TestServeAfterShutdownClosesListener: Serve called after Shutdown (or racing with it, as a Serve
// goroutine started just before Shutdown does) returns nil at once. Bug it pins: it returned
// without closing ln, so the kernel kept completing handshakes on a listener nobody accepts from,
// and clients hung instead of being refused.
func TestServeAfterShutdownClosesListener(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := p.Serve(ln, "web"); err != nil {
		t.Fatalf("Serve after Shutdown: %v, want nil", err)
	}
	nc, err := net.DialTimeout("tcp", ln.Addr().String(), waitMax)
	if err != nil {
		return // refused: the listener is closed
	}
	nc.Close()
	t.Fatal("Serve returned after Shutdown but left its listener open: a new connection is accepted " +
		"by the kernel and will never be served")
}

func TestShutdownLetsRequestInFlightFinish(t *testing.T) {
	backend, got, release := heldBackend(t)
	p, addr, served := serveProxy(t, Config{}, backend)
	c := dialTestClient(t, addr)
	c.send("GET /slow HTTP/1.1\r\nHost: test.example\r\n\r\n")
	awaitChan(t, got, "the request reaching the backend")

	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	done := shutdownAsync(p, ctx)
	awaitChan(t, served, "Serve returning after Shutdown") // the proxy is draining now
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	release()
	res, body, err := c.response()
	if err != nil || res.StatusCode != 200 || body != "done" {
		t.Fatalf("status %d body %q err %v: want the whole 200 \"done\"", res.StatusCode, body, err)
	}
	if !res.Close {
		t.Fatalf("response header %v: want Connection: close while draining", res.Header)
	}
	expectClosed(t, c.nc, c.br, "the connection after its last response")
	if err := awaitChan(t, done, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v, want nil: the request finished in time", err)
	}
}

// TestShutdownDeadline: a request stuck on a backend that never answers (BackendTimeout is the
// default 60s) when Shutdown's deadline passes. Shutdown must return the context's error promptly
// and close everything: the client connection and the backend connection.
func TestShutdownDeadline(t *testing.T) {
	silent := newScriptedBackend(t, func(silent *scriptedBackend, n int, c net.Conn, br *bufio.Reader) {
		if _, err := silent.readSeen(n, br); err != nil {
			return
		}
		waitEOF(br)
		silent.seen <- beRequest{conn: n, method: "EOF"} // the proxy closed its side
	})
	p, addr, _ := serveProxy(t, Config{}, silent.addr())
	c := dialTestClient(t, addr)
	c.send("GET /stuck HTTP/1.1\r\nHost: test.example\r\n\r\n")
	silent.next(t)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := shutdownAsync(p, ctx)
	expectClosed(t, c.nc, c.br, "the client connection of a request stuck past Shutdown's deadline")
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Shutdown did not return within 5s of its deadline (100ms): it waits for the " +
			"request stuck reading the backend's response head, whose connection it did not close")
		silent.close() // end the stuck request, so that Shutdown can return and nothing leaks
		awaitChan(t, done, "Shutdown after the backend closed")
		return
	}
	select {
	case s := <-silent.seen:
		if s.method != "EOF" {
			t.Fatalf("backend saw %+v, want the proxy to close the connection", s)
		}
	case <-time.After(waitMax):
		t.Fatalf("Shutdown returned, but the backend connection of the stuck request is still open %v later", waitMax)
	}
}

type accessLine struct {
	Time     string  `json:"time"`
	Client   string  `json:"client"`
	Method   string  `json:"method"`
	Target   string  `json:"target"`
	Host     string  `json:"host"`
	Status   int     `json:"status"`
	BytesOut int64   `json:"bytes_out"`
	Backend  *string `json:"backend"`
	Attempts int     `json:"attempts"`
}

// accessLines shuts p down (which flushes the access log) and decodes every line of buf.
func accessLines(t *testing.T, p *Proxy, buf *testutil.SyncBuffer) []accessLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	text := buf.String()
	if !strings.HasSuffix(text, "\n") {
		t.Fatalf("access log %q does not end with a newline", text)
	}
	var out []accessLine
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("access log line is not valid JSON: %q", line)
		}
		var l accessLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		out = append(out, l)
	}
	return out
}

func TestAccessLog(t *testing.T) {
	t.Run("one line per request", func(t *testing.T) {
		buf := &testutil.SyncBuffer{}
		good := newCountingBackend(t, "good")
		dead := refusedAddr(t)
		p, addr, _ := serveProxy(t, Config{AccessLog: buf}, dead, good.addr())
		c := dialTestClient(t, addr)
		res, body := c.request("GET", "/first?x=1", nil)
		wantStatus(t, res, body, 200)
		lines := accessLines(t, p, buf)
		if len(lines) != 1 {
			t.Fatalf("%d lines, want 1: %+v", len(lines), lines)
		}
		l := lines[0]
		if l.Method != "GET" || l.Target != "/first?x=1" || l.Status != 200 || l.Host != "test.example" ||
			l.Backend == nil || *l.Backend != good.addr() || l.Attempts != 2 || l.Client != "127.0.0.1" ||
			l.BytesOut != int64(len(body)) {
			t.Fatalf("line %+v (backend %v): want GET /first?x=1 200 from %s after 2 attempts, %d bytes",
				l, deref(l.Backend), good.addr(), len(body))
		}
		if _, err := time.Parse(time.RFC3339Nano, l.Time); err != nil {
			t.Fatalf("time %q: %v", l.Time, err)
		}
	})
	t.Run("no backend", func(t *testing.T) {
		buf := &testutil.SyncBuffer{}
		p, addr, _ := serveProxy(t, Config{AccessLog: buf})
		c := dialTestClient(t, addr)
		res, body := c.request("DELETE", "/x", nil)
		wantStatus(t, res, body, 503)
		lines := accessLines(t, p, buf)
		if len(lines) != 1 || lines[0].Status != 503 || lines[0].Backend != nil || lines[0].Attempts != 0 {
			t.Fatalf("lines %+v: want one 503 with backend null and 0 attempts", lines)
		}
	})
	t.Run("special characters", func(t *testing.T) {
		buf := &testutil.SyncBuffer{}
		good := newCountingBackend(t, "good")
		p, addr, _ := serveProxy(t, Config{AccessLog: buf}, good.addr())
		c := dialTestClient(t, addr)
		targets := []struct{ sent, logged string }{
			{`/q?a="b"&c=\d`, `/q?a="b"&c=\d`},
			{"/caf\u00e9/\u2028/\U0001F600", "/caf\u00e9/\u2028/\U0001F600"},
			{"/bad\xff\xfe/x", "/bad\uFFFD\uFFFD/x"},
			{"/</script>{}[]'`", "/</script>{}[]'`"},
		}
		for _, tg := range targets {
			res, body := c.request("GET", tg.sent, nil)
			wantStatus(t, res, body, 200)
		}
		lines := accessLines(t, p, buf)
		if len(lines) != len(targets) {
			t.Fatalf("%d lines, want %d", len(lines), len(targets))
		}
		for i, tg := range targets {
			if lines[i].Target != tg.logged {
				t.Errorf("target %q logged as %q, want %q", tg.sent, lines[i].Target, tg.logged)
			}
		}
	})
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
