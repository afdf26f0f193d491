package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// Bounds of the waits of every test. None is a sleep: each is the deadline of a condition polled
// or awaited, so a healthy run never waits for one to pass. They are generous because a loaded
// machine can starve a new process for seconds (on a 2-core machine running fuzzers beside this
// suite, /proc/PID/schedstat showed xlb waiting 8 s on the run queue for 4 ms of running).
const (
	// readyTimeout bounds the wait for a started xlb to listen.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds the wait for xlb to exit after a SIGTERM.
	stopTimeout = 30 * time.Second
	// ioTimeout bounds one exchange on a raw connection of a test.
	ioTimeout = 30 * time.Second
	// curlTimeout bounds one curl invocation, however many requests it makes.
	curlTimeout = 60 * time.Second
	// pollInterval is the period of the polled waits.
	pollInterval = 5 * time.Millisecond
	// startAttempts is how many ports startXLB tries when another process took the free port first.
	startAttempts = 5
	// logTailBytes bounds how much of a process's stdout and stderr goes to a failed test's log.
	logTailBytes = 16 << 10
)

// proc is one xlb process that a test started. Cleanup stops it by its PID: SIGTERM, then SIGKILL
// when it has not exited within stopTimeout (which fails the test).
type proc struct {
	tb   testing.TB
	args []string
	cmd  *exec.Cmd
	// stdout and stderr are what the process wrote so far.
	stdout, stderr testutil.SyncBuffer
	// exited is closed once the process has exited and been waited for; cmd.ProcessState is set then.
	exited chan struct{}
}

// startProc starts the built xlb with args.
func startProc(tb testing.TB, args ...string) *proc {
	tb.Helper()
	args = xlbArgs(args)
	p := &proc{tb: tb, args: args, exited: make(chan struct{})}
	p.cmd = exec.Command(xlbPath, args...)
	// Each process its own state directory (the region file), through the variable systemd's
	// StateDirectory= sets: a shared one would be locked by the first, and a region left by an
	// earlier test would be served first.
	p.cmd.Env = append(os.Environ(), "STATE_DIRECTORY="+tb.TempDir())
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start xlb %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		p.cmd.Wait() // the exit status is read from cmd.ProcessState
		close(p.exited)
	}()
	tb.Cleanup(p.cleanup)
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) String() string {
	return fmt.Sprintf("xlb %s (pid %d)", strings.Join(p.args, " "), p.pid())
}

// signal sends sig to the process, which must still be running.
func (p *proc) signal(sig syscall.Signal) {
	p.tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.tb.Fatalf("%v: signal %v: %v", p, sig, err)
	}
}

// hasExited tells whether the process has exited.
func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the process to exit and returns its state, or nil if it is still running.
func (p *proc) wait(timeout time.Duration) *os.ProcessState {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
		return p.cmd.ProcessState
	case <-t.C:
		return nil
	}
}

// waitExitCode waits up to timeout for the process to exit on its own and returns its exit status.
// It fails the test when the process did not exit in time or was ended by a signal.
func (p *proc) waitExitCode(timeout time.Duration) int {
	p.tb.Helper()
	st := p.wait(timeout)
	switch {
	case st == nil:
		p.tb.Fatalf("%v did not exit within %v", p, timeout)
	case !st.Exited():
		p.tb.Fatalf("%v did not exit on its own: %v", p, st)
	}
	return st.ExitCode()
}

func (p *proc) cleanup() {
	if !p.hasExited() {
		p.cmd.Process.Signal(syscall.SIGTERM) // an error means it exited meanwhile
		if p.wait(stopTimeout) == nil {
			p.tb.Errorf("%v did not exit within %v of SIGTERM; sending SIGKILL", p, stopTimeout)
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
	if p.tb.Failed() {
		p.tb.Logf("%v: %v\n--- stderr:\n%s--- stdout:\n%s", p, p.cmd.ProcessState,
			tail(p.stderr.String()), tail(p.stdout.String()))
	}
}

func tail(s string) string {
	if len(s) > logTailBytes {
		return "[...]" + s[len(s)-logTailBytes:]
	}
	return s
}

// xlb is a running xlb that listens on addr.
type xlb struct {
	*proc
	addr string
}

// url is the URL of path on xlb's listener.
func (x *xlb) url(path string) string { return "http://" + x.addr + path }

// errAddrInUse: xlb could not bind the address startXLB picked, as another process took it first.
var errAddrInUse = errors.New("the address was taken by another process")

// startXLB starts xlb with the arguments that args makes for a listen address, on a free loopback
// port, and waits until that process listens there. The port is chosen by the kernel (listen on
// 127.0.0.1:0, close); should another process take it before xlb binds it, the whole start is
// tried again on another port, up to startAttempts times.
func startXLB(tb testing.TB, args func(addr string) []string) *xlb {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		addr := freeAddr(tb)
		p := startProc(tb, args(addr)...)
		err := waitListening(p, addr)
		if err == nil {
			return &xlb{proc: p, addr: addr}
		}
		if attempt < startAttempts && errors.Is(err, errAddrInUse) {
			tb.Logf("attempt %d: %v: %v; trying another port", attempt, p, err)
			continue
		}
		tb.Fatalf("%v: %v\n--- stderr:\n%s", p, err, tail(p.stderr.String()))
	}
}

// runArgs makes the arguments of `xlb run --listen ADDR` followed by more.
func runArgs(more ...string) func(string) []string {
	return func(addr string) []string {
		return append([]string{"run", "--listen", addr}, more...)
	}
}

// freeAddr returns a loopback address whose port the kernel just chose and released.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("pick a free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// closedAddr returns a loopback address where nothing listens: connecting to it is refused.
func closedAddr(tb testing.TB) string { return freeAddr(tb) }

// waitListening waits until p owns a listening socket on addr and a connection to addr is accepted.
// Owning the socket is checked in /proc, so that a port taken by another process is never mistaken
// for xlb's.
func waitListening(p *proc, addr string) error {
	_, portStr, _ := net.SplitHostPort(addr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("address %q: %v", addr, err)
	}
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if p.hasExited() {
			if strings.Contains(p.stderr.String(), "address already in use") {
				return fmt.Errorf("%w: exited with %v", errAddrInUse, p.cmd.ProcessState)
			}
			return fmt.Errorf("exited with %v before listening on %s", p.cmd.ProcessState, addr)
		}
		owns, err := listensOn(p.pid(), port)
		if err != nil {
			return err
		}
		if owns {
			c, err := net.DialTimeout("tcp", addr, ioTimeout)
			if err != nil {
				return fmt.Errorf("listens on %s, but a connection to it failed: %v", addr, err)
			}
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			dial := "accepted"
			if c, err := net.DialTimeout("tcp", addr, time.Second); err != nil {
				dial = err.Error()
			} else {
				c.Close()
			}
			stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
			sched, _ := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", p.pid()))
			return fmt.Errorf("not listening on %s after %v (a connection to it: %s; /proc/PID/stat: %s; "+
				"/proc/PID/schedstat (ns running, ns waiting to run, slices): %s)\n%s",
				addr, readyTimeout, dial, bytes.TrimSpace(stat), bytes.TrimSpace(sched), procDetail(p.pid()))
		}
		<-tick.C
	}
}

// listensOn tells whether process pid holds a TCP socket listening on 127.0.0.1:port, from the
// process's /proc/PID/net/tcp (the sockets of its network namespace) and /proc/PID/fd.
func listensOn(pid, port int) (bool, error) {
	table, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return false, nil // the process is exiting; the caller sees that next
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	inodes := make(map[string]bool)
	for line := range strings.Lines(string(table)) {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
		f := strings.Fields(line)
		if len(f) >= 10 && f[1] == local && f[3] == "0A" { // 0A: TCP_LISTEN
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return false, nil
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return false, nil
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && inodes[target] {
			return true, nil
		}
	}
	return false, nil
}

// newBackend starts an HTTP backend in the test process, closed in cleanup.
func newBackend(tb testing.TB, h http.Handler) *httptest.Server {
	tb.Helper()
	s := httptest.NewServer(h)
	tb.Cleanup(s.Close)
	return s
}

// addrOf is the host:port of a backend.
func addrOf(s *httptest.Server) string { return s.Listener.Addr().String() }

// nameHandler answers every request with 200 and name as the body.
func nameHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, name)
	})
}

// curl runs curl -sS with args and returns its standard output; a failure of curl itself (not an
// HTTP error status) fails the test.
func curl(tb testing.TB, args ...string) string {
	tb.Helper()
	out, stderr, err := curlErr(args...)
	if err != nil {
		tb.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// curlErr runs curl -sS with args and returns its standard output and error.
func curlErr(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), curlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "curl", append([]string{"-sS"}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// exchange is one HTTP/1.1 request on a raw connection of the test's, read with its own reader so
// that the connection can be kept (idle, or with a response still to come).
type exchange struct {
	conn net.Conn
	br   *bufio.Reader
}

// dialRaw opens a client connection to addr, closed in cleanup.
func dialRaw(tb testing.TB, addr string) *exchange {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { c.Close() })
	return &exchange{conn: c, br: bufio.NewReader(c)}
}

// send writes a GET of path.
func (e *exchange) send(path string) error {
	e.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := fmt.Fprintf(e.conn, "GET %s HTTP/1.1\r\nHost: xlb.test\r\nUser-Agent: xlb-integration\r\n\r\n", path)
	return err
}

// receive reads one response within timeout and returns it with its whole body.
func (e *exchange) receive(timeout time.Duration) (*http.Response, string, error) {
	e.conn.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(e.br, nil)
	if err != nil {
		return nil, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), err
}

// get sends a GET of path and reads its response, failing the test on any error or a status
// other than 200.
func (e *exchange) get(tb testing.TB, path string) string {
	tb.Helper()
	if err := e.send(path); err != nil {
		tb.Fatalf("send GET %s: %v", path, err)
	}
	resp, body, err := e.receive(ioTimeout)
	if err != nil {
		tb.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %s, body %q", path, resp.Status, body)
	}
	return body
}

// waitClosed waits up to timeout for the peer to close the connection (EOF or a reset); bytes
// arriving instead are an error.
func (e *exchange) waitClosed(timeout time.Duration) error {
	e.conn.SetReadDeadline(time.Now().Add(timeout))
	var b [512]byte
	n, err := e.br.Read(b[:])
	switch {
	case n > 0:
		return fmt.Errorf("got %q instead of the close", b[:n])
	case isClosed(err):
		return nil
	case err != nil:
		return fmt.Errorf("still open: %w", err)
	}
	return errors.New("read returned nothing")
}

// procDetail describes what process pid is doing, for a failure message: each thread's state and
// kernel wait channel, its open descriptors, and the TCP listeners of its network namespace.
func procDetail(pid int) string {
	var b strings.Builder
	dir := fmt.Sprintf("/proc/%d", pid)
	tasks, _ := os.ReadDir(dir + "/task")
	for _, t := range tasks {
		stat, _ := os.ReadFile(filepath.Join(dir, "task", t.Name(), "stat"))
		wchan, _ := os.ReadFile(filepath.Join(dir, "task", t.Name(), "wchan"))
		state := ""
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
			state = string(stat[i+2 : i+3])
		}
		fmt.Fprintf(&b, "  thread %s: state %s, wchan %s\n", t.Name(), state, wchan)
	}
	fds, _ := os.ReadDir(dir + "/fd")
	for _, fd := range fds {
		target, _ := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		fmt.Fprintf(&b, "  fd %s -> %s\n", fd.Name(), target)
	}
	if table, err := os.ReadFile(dir + "/net/tcp"); err == nil {
		for line := range strings.Lines(string(table)) {
			if f := strings.Fields(line); len(f) >= 10 && f[3] == "0A" {
				fmt.Fprintf(&b, "  listener %s inode %s\n", f[1], f[9])
			}
		}
	}
	return b.String()
}
