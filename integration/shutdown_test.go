package integration

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"
)

// holdBackend answers GET /hold only once the test releases it (or the request is cancelled), and
// every other path at once.
type holdBackend struct {
	addr string
	// arrived receives a value as each /hold request arrives.
	arrived chan struct{}
	release func()
}

func newHoldBackend(tb testing.TB) *holdBackend {
	tb.Helper()
	released := make(chan struct{})
	var once sync.Once
	b := &holdBackend{
		arrived: make(chan struct{}, 16),
		release: func() { once.Do(func() { close(released) }) },
	}
	s := newBackend(tb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hold" {
			io.WriteString(w, "fast")
			return
		}
		select {
		case b.arrived <- struct{}{}:
		default:
		}
		select {
		case <-released:
			io.WriteString(w, "held")
		case <-r.Context().Done():
		}
	}))
	// Cleanups run last-registered first: the held handlers return before the server's Close
	// waits for them.
	tb.Cleanup(b.release)
	b.addr = addrOf(s)
	return b
}

// awaitArrival waits for a /hold request to reach the backend.
func (b *holdBackend) awaitArrival(tb testing.TB) {
	tb.Helper()
	select {
	case <-b.arrived:
	case <-time.After(ioTimeout):
		tb.Fatalf("no /hold request reached the backend within %v", ioTimeout)
	}
}

// waitNotAccepting waits until a new connection to addr is refused, or closed without an answer:
// the sign that xlb has acted on a stop signal. A connection that still gets an answer means xlb
// has not yet: it is closed and the check made again.
func waitNotAccepting(tb testing.TB, addr string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last string
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
		if err != nil {
			return // refused
		}
		e := &exchange{conn: c, br: bufio.NewReader(c)}
		err = e.send("/fast")
		if err == nil {
			var resp *http.Response
			resp, _, err = e.receive(time.Until(deadline))
			if err == nil {
				last = resp.Status
			}
		}
		c.Close()
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
			last = err.Error()
		default:
			return // closed or reset
		}
		<-tick.C
	}
	tb.Fatalf("%s still accepts and answers new connections %v after the signal (last: %s)", addr, timeout, last)
}

// TestShutdownGraceful: on SIGTERM or SIGINT, xlb stops accepting, closes idle keep-alive
// connections, lets the request in flight finish (with a 200, announcing Connection: close), and
// exits 0 within its shutdown timeout.
func TestShutdownGraceful(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sigName[sig], func(t *testing.T) {
			t.Parallel()
			// The shutdown timeout is far longer than the waits for what must happen at once (the
			// listener closed, the idle connection closed), so that closing everything at the
			// deadline can never pass for them, and a loaded machine never makes it expire.
			const (
				shutdownTimeout = 60 * time.Second
				promptly        = 20 * time.Second
			)
			b := newHoldBackend(t)
			x := startXLB(t, runArgs("--backend", b.addr, "--shutdown-timeout", shutdownTimeout.String()))

			idle := dialRaw(t, x.addr)
			if body := idle.get(t, "/fast"); body != "fast" {
				t.Fatalf("GET /fast: body %q, want \"fast\"", body)
			}
			inflight := dialRaw(t, x.addr)
			if err := inflight.send("/hold"); err != nil {
				t.Fatal(err)
			}
			b.awaitArrival(t)

			x.signal(sig)
			exitBy := time.Now().Add(shutdownTimeout)
			waitNotAccepting(t, x.addr, promptly)
			if err := idle.waitClosed(promptly); err != nil {
				t.Errorf("the idle keep-alive connection: %v", err)
				idle.conn.Close() // so that the rest of the shutdown is still checked, without waiting for its timeout
			}
			if x.hasExited() {
				t.Fatalf("exited with %v while a request was in flight", x.cmd.ProcessState)
			}

			b.release()
			resp, body, err := inflight.receive(ioTimeout)
			switch {
			case err != nil:
				t.Errorf("the request in flight: %v", err)
			case resp.StatusCode != http.StatusOK || body != "held":
				t.Errorf("the request in flight: %s, body %q; want 200, \"held\"", resp.Status, body)
			case !resp.Close:
				t.Errorf("the response in flight during shutdown does not say Connection: close (header %v)", resp.Header)
			}
			st := x.wait(time.Until(exitBy))
			switch {
			case st == nil:
				t.Errorf("%v did not exit within its shutdown timeout, %v after %v", x, shutdownTimeout, sigName[sig])
			case st.ExitCode() != 0:
				t.Errorf("%v after %v, want exit status 0", st, sigName[sig])
			}
		})
	}
}

// TestShutdownTimeout: a request still in flight at --shutdown-timeout is cut, and xlb exits.
func TestShutdownTimeout(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 500 * time.Millisecond
	b := newHoldBackend(t)
	x := startXLB(t, runArgs("--backend", b.addr, "--shutdown-timeout", shutdownTimeout.String()))

	stuck := dialRaw(t, x.addr)
	if err := stuck.send("/hold"); err != nil {
		t.Fatal(err)
	}
	b.awaitArrival(t)
	x.signal(syscall.SIGTERM)

	// The bound is generous: it is there so that a shutdown that never ends fails, not to time one.
	code := x.waitExitCode(shutdownTimeout + stopTimeout)
	t.Logf("exit status %d", code)
	resp, body, err := stuck.receive(ioTimeout)
	if err == nil {
		t.Errorf("the stuck request got %s, body %q; want its connection cut", resp.Status, body)
	} else if !isClosed(err) {
		t.Errorf("the stuck request's connection: %v; want it closed", err)
	}
}

// isClosed tells whether err, from reading a connection, means the peer closed or reset it.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

var sigName = map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT"}
