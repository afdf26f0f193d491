package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// idleConns is how many idle keep-alive client connections BenchmarkIdleConnMemory holds open.
	idleConns = 10_000
	// idleDialers is how many connections BenchmarkIdleConnMemory opens at a time: well under the
	// listener's accept queue, so that no connect waits for a SYN retransmission.
	idleDialers = 64
	// fdHeadroom is the descriptors a process needs besides the idle connections: backends,
	// listeners, the runtime's, the test's.
	fdHeadroom = 1024
)

// BenchmarkIdleConnMemory measures xlb's resident memory per idle keep-alive client connection:
// it opens idleConns connections, each of which served one GET and is then left idle, and compares
// the VmRSS of xlb's processes (the supervisor and its workers) before and after, with each
// engine: a goroutine per connection (the default) and --event-loop. Each iteration runs its own
// xlb.
//
//	go test -run XXX -bench IdleConnMemory -benchtime 1x ./integration
func BenchmarkIdleConnMemory(b *testing.B) {
	raiseNofile(b, idleConns+fdHeadroom)
	backend := newBackend(b, nameHandler("ok"))
	for _, engine := range []struct {
		name  string
		flags []string
	}{{"goroutine", nil}, {"event-loop", []string{"--event-loop"}}} {
		b.Run(engine.name, func(b *testing.B) {
			var perConn, before, after float64
			for range b.N {
				bb, rb, ra := idleConnMemory(b, addrOf(backend), engine.flags...)
				perConn += bb
				before += rb
				after += ra
			}
			n := float64(b.N)
			b.ReportMetric(perConn/n, "B/conn")
			b.ReportMetric(before/n/(1<<20), "RSS-before-MB")
			b.ReportMetric(after/n/(1<<20), "RSS-MB")
		})
	}
}

// idleConnMemory runs one xlb (with flags) in front of backend, opens the idle connections, and
// returns the growth of xlb's RSS per connection and its RSS before and after, in bytes.
func idleConnMemory(b *testing.B, backend string, flags ...string) (bytesPerConn, rssBefore, rssAfter float64) {
	b.Helper()
	// The idle timeout outlasts the measurement, so that every connection is still open at its end;
	// the worker takes them all, whatever half the descriptor limit is.
	args := []string{"--backend", backend, "--idle-timeout", "10m", "--connections-max", strconv.Itoa(idleConns + idleDialers), "--log-level", "warn"}
	x := startXLB(b, runArgs(append(args, flags...)...))

	// Warm up the process (pooled backend connections, buffers, goroutine stacks) on a few
	// connections that are then closed, so that "before" holds what serving costs without them.
	conns := openIdle(b, x.addr, idleDialers)
	closeAll(conns)

	before := treeRSS(b, x.pid())
	conns = openIdle(b, x.addr, idleConns)
	b.Cleanup(func() { closeAll(conns) })
	after := treeRSS(b, x.pid())
	if x.hasExited() {
		b.Fatalf("%v exited while the connections were opened: %v", x, x.cmd.ProcessState)
	}
	b.Logf("xlb VmRSS %.1f MB before, %.1f MB with %d idle keep-alive connections: %.0f B/conn",
		float64(before)/(1<<20), float64(after)/(1<<20), idleConns, float64(after-before)/idleConns)
	return float64(after-before) / idleConns, float64(before), float64(after)
}

// openIdle opens n connections to addr, idleDialers at a time, sends one GET on each, reads its
// 200, and returns them open.
func openIdle(b *testing.B, addr string, n int) []net.Conn {
	b.Helper()
	conns := make([]net.Conn, n)
	next := make(chan int)
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range idleDialers {
		wg.Go(func() {
			for i := range next {
				c, err := openOne(addr)
				if err != nil {
					errOnce.Do(func() { first = fmt.Errorf("connection %d: %w", i, err) })
					continue
				}
				conns[i] = c
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		closeAll(conns)
		b.Fatalf("open %d keep-alive connections to %s: %v", n, addr, first)
	}
	return conns
}

// openOne opens a connection to addr and has it serve one GET, leaving it open.
func openOne(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, err
	}
	e := &exchange{conn: c, br: bufio.NewReaderSize(c, 512)}
	if err := e.send("/idle"); err != nil {
		c.Close()
		return nil, err
	}
	resp, body, err := e.receive(ioTimeout)
	switch {
	case err != nil:
	case resp.StatusCode != http.StatusOK || body != "ok":
		err = fmt.Errorf("%s, body %q", resp.Status, body)
	case resp.Close:
		err = fmt.Errorf("the response closes the connection (Connection: close)")
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// treeRSS is the sum of the VmRSS of process pid and of its descendants.
func treeRSS(tb testing.TB, pid int) int64 {
	total := rssBytes(tb, pid)
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		children, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(children)) {
			if child, err := strconv.Atoi(f); err == nil {
				total += treeRSS(tb, child)
			}
		}
	}
	return total
}

// rssBytes reads VmRSS, the resident set of process pid, from /proc/PID/status.
func rssBytes(tb testing.TB, pid int) int64 {
	tb.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatalf("read the RSS of pid %d: %v", pid, err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "123456 kB"
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kb << 10
				}
			}
			tb.Fatalf("pid %d: unexpected status line %q", pid, line)
		}
	}
	tb.Fatalf("pid %d: no VmRSS in /proc/%d/status", pid, pid)
	return 0
}

// raiseNofile raises RLIMIT_NOFILE of the test process to its hard limit, which xlb inherits, and
// skips the benchmark when that is below want. (The Go runtime raises the soft limit of its own
// process at start but gives children the original one back; an explicit Setrlimit is what
// children inherit.)
func raiseNofile(b *testing.B, want uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("getrlimit NOFILE: %v", err)
	}
	b.Logf("RLIMIT_NOFILE: soft %d, hard %d; want %d", lim.Cur, lim.Max, want)
	if lim.Max < want {
		b.Skipf("RLIMIT_NOFILE hard limit %d is below the %d descriptors needed (raise it with ulimit -Hn as root)", lim.Max, want)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("setrlimit NOFILE to %d: %v", lim.Cur, err)
	}
}
