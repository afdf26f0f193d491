package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The tests of `xlb run --workers N`: a supervisor that binds the listeners, starts N worker
// processes that inherit them, watches its configuration file, and publishes each change of the
// backend sets as a new generation. They read the supervisor's JSON log (hclog, one object per
// line on stderr) to know what it did and when.

const (
	// workersN is the --workers of every test here.
	workersN = 2
	// reloadWrites is how many times TestReloadUnderLoad rewrites the configuration file.
	reloadWrites = 200
	// reloadPoolSize is how many backends the rewrites of TestReloadUnderLoad draw from; a rewrite
	// names 1 to reloadSetMax of them.
	reloadPoolSize = 6
	reloadSetMax   = 5
	// reloadWeightMax is the largest weight a rewrite gives a backend.
	reloadWeightMax = 5
	// loadRequestsMax bounds the requests of one load client: at the bound it stops, so that a test
	// whose waits take long never records without end.
	loadRequestsMax = 200_000
	// splitRequests is the number of sequential requests whose split over the backends is checked.
	splitRequests = 600
	// afterRestartRequests is how many requests must succeed after a killed worker is replaced.
	afterRestartRequests = 200
	// logWaitTimeout bounds the wait for one line of the supervisor's log.
	logWaitTimeout = 30 * time.Second
	// waitDelay bounds how long, after xlb exited, its stderr is read while something else (a worker
	// that outlived it) still holds it open.
	waitDelay = 10 * time.Second
	// violationsShown bounds the requests listed when requests went to the wrong backends.
	violationsShown = 20
)

// reloadSeed makes the rewrites of TestReloadUnderLoad and BenchmarkReloadApplied reproducible:
// go test -run ReloadUnderLoad ./integration -args -reload-seed=N. Zero means a new seed, logged.
var reloadSeed = flag.Uint64("reload-seed", 0, "the seed of the random rewrites of the reload tests (0: from the clock)")

// firstBackendLine is the line of the first backend in the file that configYAML writes.
const firstBackendLine = 8

// backendConf is one backend of a configuration file.
type backendConf struct {
	id, addr string
	weight   int
	// state is "" (active, the default), "draining" or "disabled".
	state string
}

func (b backendConf) active() bool { return b.state == "" || b.state == "active" }

// configYAML is a configuration file with one listener on listen and one round-robin backend set,
// web, of backends. The first backend is on line firstBackendLine.
func configYAML(listen string, backends []backendConf) string {
	var s strings.Builder
	fmt.Fprintf(&s, `listeners:
  - address: %s
    backend_set: web
backend_sets:
  - name: web
    policy: round_robin
    backends:
`, listen)
	for _, b := range backends {
		fmt.Fprintf(&s, "      - {id: %s, address: %s, weight: %d", b.id, b.addr, b.weight)
		if b.state != "" {
			fmt.Fprintf(&s, ", state: %s", b.state)
		}
		s.WriteString("}\n")
	}
	return s.String()
}

// writeConfig replaces the file at path with content: in place (os.WriteFile truncates and writes
// the same inode), or, with rename, by writing a temporary file beside it and renaming it over.
func writeConfig(tb testing.TB, path, content string, rename bool) {
	tb.Helper()
	if !rename {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
		return
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

// procLog is a process's standard error as these tests read it: every byte, with the time each
// write arrived, so that a line's arrival time is known however late the test reads the line. It
// is written by the one goroutine of exec.Cmd that copies the process's stderr; one goroutine at a
// time may wait on it.
type procLog struct {
	p *proc

	mu     sync.Mutex
	data   []byte
	stamps []logStamp // one per write, in order

	// wrote receives, without blocking, after every write: the wake-up of a waiter.
	wrote chan struct{}
}

// logStamp says that the log was end bytes long after a write that arrived at at.
type logStamp struct {
	end int
	at  time.Time
}

func (l *procLog) Write(b []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	l.data = append(l.data, b...)
	l.stamps = append(l.stamps, logStamp{end: len(l.data), at: now})
	l.mu.Unlock()
	select {
	case l.wrote <- struct{}{}:
	default:
	}
	return len(b), nil
}

// logLine is one JSON line of the log.
type logLine struct {
	fields map[string]any
	raw    string
	// end is the offset in the log just past the line: where to look for the lines after it.
	end int
	// at is when the line arrived from the process.
	at time.Time
}

func (l logLine) str(key string) string {
	s, _ := l.fields[key].(string)
	return s
}

func (l logLine) msg() string { return l.str("@message") }

// int is the integer field key, or -1 when it is absent or not a number.
func (l logLine) int(key string) int {
	f, ok := l.fields[key].(float64)
	if !ok {
		return -1
	}
	return int(f)
}

func (l logLine) String() string { return l.raw }

// fromWorker tells whether a worker process wrote the line, rather than the supervisor.
func (l logLine) fromWorker() bool { return strings.HasPrefix(l.str("@module"), "xlb.worker") }

// says matches the supervisor's lines with message msg, and, when cond is not nil, cond.
func says(msg string, cond func(logLine) bool) func(logLine) bool {
	return func(l logLine) bool {
		return l.msg() == msg && !l.fromWorker() && (cond == nil || cond(l))
	}
}

// reloadFailed matches the supervisor's lines that say a configuration file was refused: their
// message starts with "config reload failed".
func reloadFailed(l logLine) bool {
	return strings.HasPrefix(l.msg(), "config reload failed") && !l.fromWorker()
}

// linesFrom parses the complete lines that start at or after offset from, skipping those that are
// not JSON objects, and returns them with the offset just past the last complete line.
func (l *procLog) linesFrom(from int) (lines []logLine, end int) {
	l.mu.Lock()
	// The bytes and stamps before these lengths are never written again: reading them unlocked is safe.
	data, stamps := l.data, l.stamps
	l.mu.Unlock()
	end = from
	for {
		i := bytes.IndexByte(data[end:], '\n')
		if i < 0 {
			return lines, end
		}
		raw := data[end : end+i]
		end += i + 1
		var fields map[string]any
		if json.Unmarshal(raw, &fields) != nil {
			continue
		}
		k := sort.Search(len(stamps), func(k int) bool { return stamps[k].end >= end })
		lines = append(lines, logLine{fields: fields, raw: string(raw), end: end, at: stamps[k].at})
	}
}

// await waits up to timeout for the first line at or after offset from that match accepts.
func (l *procLog) await(from int, timeout time.Duration, match func(logLine) bool) (logLine, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		lines, end := l.linesFrom(from)
		for _, ln := range lines {
			if match(ln) {
				return ln, nil
			}
		}
		from = end
		select {
		case <-l.wrote:
		case <-l.p.exited:
			// Wait has returned: everything the process wrote is in the log.
			lines, _ := l.linesFrom(from)
			for _, ln := range lines {
				if match(ln) {
					return ln, nil
				}
			}
			return logLine{}, fmt.Errorf("it exited (%v) without writing it", l.p.cmd.ProcessState)
		case <-deadline.C:
			return logLine{}, fmt.Errorf("not written within %v", timeout)
		}
	}
}

// supervisor is an `xlb run --workers workersN` of a test, and the files it was given.
type supervisor struct {
	*xlb
	log      *procLog
	cfgPath  string
	stateDir string
}

// startSupervisor starts `xlb run --config cfgPath --workers workersN --state-dir stateDir
// --log-format json` on a free loopback port, with the file that config makes for that address,
// and waits until the supervisor listens there. As startXLB, it tries another port when the one
// chosen was taken meanwhile.
func startSupervisor(tb testing.TB, cfgPath, stateDir string, config func(addr string) string) *supervisor {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		addr := freeAddr(tb)
		if err := os.WriteFile(cfgPath, []byte(config(addr)), 0o644); err != nil {
			tb.Fatal(err)
		}
		p, l := startLoggedProc(tb, "run", "--config", cfgPath, "--workers", strconv.Itoa(workersN),
			"--state-dir", stateDir, "--log-format", "json")
		err := waitListening(p, addr)
		if err == nil {
			return &supervisor{xlb: &xlb{proc: p, addr: addr}, log: l, cfgPath: cfgPath, stateDir: stateDir}
		}
		if attempt < startAttempts && errors.Is(err, errAddrInUse) {
			tb.Logf("attempt %d: %v: %v; trying another port", attempt, p, err)
			continue
		}
		tb.Fatalf("%v: %v\n--- stderr:\n%s", p, err, tail(p.stderr.String()))
	}
}

// startLoggedProc is startProc with the process's stderr also kept in a procLog, and a bound
// (waitDelay) on reading it once the process has exited: the workers inherit the supervisor's
// stderr, and one that outlived it would otherwise keep Wait from returning. In cleanup, after the
// process is stopped, any worker it started (a PID of a "worker started" line) that still runs is an
// error, and is killed.
func startLoggedProc(tb testing.TB, args ...string) (*proc, *procLog) {
	tb.Helper()
	return startLoggedProcEnv(tb, nil, args...)
}

// startLoggedProcEnv is startLoggedProc with env (NAME=value, ...) added to the test's environment.
func startLoggedProcEnv(tb testing.TB, env []string, args ...string) (*proc, *procLog) {
	tb.Helper()
	args = xlbArgs(args)
	p := &proc{tb: tb, args: args, exited: make(chan struct{})}
	l := &procLog{p: p, wrote: make(chan struct{}, 1)}
	p.cmd = exec.Command(xlbPath, args...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = io.MultiWriter(&p.stderr, l)
	p.cmd.WaitDelay = waitDelay
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start xlb %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		p.cmd.Wait() // the exit status is read from cmd.ProcessState
		close(p.exited)
	}()
	// Cleanups run last-registered first: the workers are looked for once the supervisor is stopped.
	tb.Cleanup(func() {
		if !p.hasExited() {
			return // p.cleanup failed to stop it, and said so
		}
		for _, pid := range l.workerPIDs() {
			if running(pid) {
				tb.Errorf("worker %d of %v still runs after the supervisor exited; killing it", pid, p)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	tb.Cleanup(p.cleanup)
	return p, l
}

// workerPIDs are the PIDs of every "worker started" line so far.
func (l *procLog) workerPIDs() []int {
	lines, _ := l.linesFrom(0)
	var pids []int
	for _, ln := range lines {
		if says("worker started", nil)(ln) {
			pids = append(pids, ln.int("pid"))
		}
	}
	return pids
}

// xlbExe is xlbPath with its symbolic links resolved, as /proc/PID/exe shows it.
var xlbExe = sync.OnceValue(func() string {
	p, err := filepath.EvalSymlinks(xlbPath)
	if err != nil {
		return xlbPath
	}
	return p
})

// running tells whether pid is a running process of the built xlb: not a zombie, and not a process of
// another program that was given the PID after xlb's ended.
func running(pid int) bool {
	if pid <= 0 {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && exe == xlbExe()
}

// await waits for the first line of the supervisor's log at or after offset from that match accepts;
// what names the line in a failure.
func (s *supervisor) await(tb testing.TB, from int, what string, match func(logLine) bool) logLine {
	tb.Helper()
	ln, err := s.log.await(from, logWaitTimeout, match)
	if err != nil {
		tb.Fatalf("%v: waiting for %s: %v\n--- stderr:\n%s", s, what, err, tail(s.stderr.String()))
	}
	return ln
}

// awaitReady waits for the supervisor's "ready" line and returns it with the PID of each worker
// slot, from the "worker started" lines before it. There must be workersN slots, and the line must
// say workersN workers.
func (s *supervisor) awaitReady(tb testing.TB) (ready logLine, pids map[int]int) {
	tb.Helper()
	ready = s.await(tb, 0, `"ready"`, says("ready", nil))
	if n := ready.int("workers"); n != workersN {
		tb.Errorf("ready: workers %d, want %d: %s", n, workersN, ready)
	}
	pids = make(map[int]int)
	lines, _ := s.log.linesFrom(0)
	for _, ln := range lines {
		if ln.end > ready.end {
			break
		}
		if says("worker started", nil)(ln) {
			pids[ln.int("slot")] = ln.int("pid")
		}
	}
	if len(pids) != workersN {
		tb.Fatalf("before ready, workers were started in slots %v, want %d slots", pids, workersN)
	}
	return ready, pids
}

// awaitApplied waits for the "generation applied" line of a generation newer than after, written at
// or after offset from. It must say workersN workers.
func (s *supervisor) awaitApplied(tb testing.TB, from, after int) logLine {
	tb.Helper()
	ln := s.await(tb, from, fmt.Sprintf(`"generation applied" of a generation after %d`, after),
		says("generation applied", func(l logLine) bool { return l.int("generation") > after }))
	if n := ln.int("workers"); n != workersN {
		tb.Errorf("generation applied: workers %d, want %d: %s", n, workersN, ln)
	}
	return ln
}

// client sends GETs one at a time on a connection of its own to addr: kept alive, and reopened only
// after an error or a response that closes it; or, without keepAlive, a new connection per request.
// Unlike net/http's Transport it never sends a request again, so every failure is seen.
type client struct {
	addr      string
	keepAlive bool
	// e is the open connection, nil when there is none.
	e *exchange
}

// newClient makes a client of addr whose connection is closed in cleanup.
func newClient(tb testing.TB, addr string, keepAlive bool) *client {
	c := &client{addr: addr, keepAlive: keepAlive}
	tb.Cleanup(c.close)
	return c
}

func (c *client) close() {
	if c.e != nil {
		c.e.conn.Close()
		c.e = nil
	}
}

// loadRecord is one request of a client.
type loadRecord struct {
	sent, answered time.Time
	// backend is the body of the response: the id of the backend that served it.
	backend string
	status  int
	// err is the error of the connection: dialling, sending, or reading the response.
	err error
}

func (r loadRecord) ok() bool { return r.err == nil && r.status == http.StatusOK }

// get sends a GET of path and reads its response.
func (c *client) get(path string) loadRecord {
	r := loadRecord{sent: time.Now()}
	if c.e == nil {
		conn, err := net.DialTimeout("tcp", c.addr, ioTimeout)
		if err != nil {
			r.answered, r.err = time.Now(), err
			return r
		}
		c.e = &exchange{conn: conn, br: bufio.NewReader(conn)}
	}
	err := c.e.send(path)
	var resp *http.Response
	if err == nil {
		resp, r.backend, err = c.e.receive(ioTimeout)
	}
	r.answered, r.err = time.Now(), err
	if err == nil {
		r.status = resp.StatusCode
	}
	if err != nil || resp.Close || !c.keepAlive {
		c.close()
	}
	return r
}

// load is client goroutines each issuing GETs in a loop on its own keep-alive connection, until
// halted (or loadRequestsMax requests).
type load struct {
	stop   chan struct{}
	halted sync.Once
	wg     sync.WaitGroup
	// okN counts the successful requests so far.
	okN atomic.Int64
	// recs[i] is what client i did; written by client i before it ends, read after halt.
	recs [][]loadRecord
}

// startLoad starts clients load clients of path on addr. They are halted in cleanup at the latest.
func startLoad(tb testing.TB, addr, path string, clients int) *load {
	g := &load{stop: make(chan struct{}), recs: make([][]loadRecord, clients)}
	for i := range clients {
		g.wg.Add(1)
		c := &client{addr: addr, keepAlive: true}
		go func() {
			defer g.wg.Done()
			defer c.close()
			var recs []loadRecord
			defer func() { g.recs[i] = recs }()
			for n := 0; n < loadRequestsMax; n++ {
				select {
				case <-g.stop:
					return
				default:
				}
				r := c.get(fmt.Sprintf("%s?c=%d&n=%d", path, i, n))
				if r.ok() {
					g.okN.Add(1)
				}
				recs = append(recs, r)
			}
		}()
	}
	tb.Cleanup(func() { g.halt() })
	return g
}

// halt stops the clients, waits for them, and returns what each did.
func (g *load) halt() [][]loadRecord {
	g.halted.Do(func() { close(g.stop) })
	g.wg.Wait()
	return g.recs
}

// awaitOK waits until n requests in all have succeeded.
func (g *load) awaitOK(tb testing.TB, n int64) {
	tb.Helper()
	deadline := time.Now().Add(logWaitTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for g.okN.Load() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d requests succeeded within %v, want %d", g.okN.Load(), logWaitTimeout, n)
		}
		<-tick.C
	}
}

// getAll makes n requests of path with clients in turn and counts them by backend; any failure
// fails the test.
func getAll(tb testing.TB, clients []*client, path string, n int) map[string]int {
	tb.Helper()
	by := make(map[string]int)
	for i := range n {
		r := clients[i%len(clients)].get(fmt.Sprintf("%s?i=%d", path, i))
		if !r.ok() {
			tb.Fatalf("request %d: status %d, body %q, error %v", i, r.status, r.backend, r.err)
		}
		by[r.backend]++
	}
	return by
}

// awaitListens waits until process pid holds the listening socket of addr.
func awaitListens(tb testing.TB, pid int, addr string) {
	tb.Helper()
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if ok, _ := listensOn(pid, port); ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("worker %d does not hold the listener %s after %v\n%s", pid, addr, readyTimeout, procDetail(pid))
		}
		<-tick.C
	}
}

// clientConns counts the established connections accepted on addr's port that process pid holds, from
// /proc/PID/net/tcp and /proc/PID/fd as listensOn does.
func clientConns(pid int, addr string) int {
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	table, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return 0
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	inodes := make(map[string]bool)
	for line := range strings.Lines(string(table)) {
		if f := strings.Fields(line); len(f) >= 10 && f[1] == local && f[3] == "01" { // 01: TCP_ESTABLISHED
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(fdDir)
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && inodes[target] {
			n++
		}
	}
	return n
}

// servedConnsMax bounds the connections awaitServes opens.
const servedConnsMax = 100

// awaitServes opens keep-alive connections to addr, one request each, until worker pid holds one of
// them (and has answered on it). Which worker accepts a connection is the kernel's choice; a worker
// that accepts none of servedConnsMax does not serve.
func awaitServes(tb testing.TB, pid int, addr string) {
	tb.Helper()
	var clients []*client
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	for range servedConnsMax {
		c := &client{addr: addr, keepAlive: true}
		clients = append(clients, c)
		if r := c.get("/serves"); !r.ok() {
			tb.Fatalf("a new connection to %s: status %d, body %q, error %v", addr, r.status, r.backend, r.err)
		}
		if clientConns(pid, addr) > 0 {
			return
		}
	}
	tb.Fatalf("worker %d accepted none of %d new connections to %s", pid, servedConnsMax, addr)
}

// TestWorkerKilledUnderLoad: a worker killed while 8 keep-alive clients load xlb is replaced in its
// slot; the other worker serves meanwhile, and keeps its PID; the clients lose at most the one
// connection each held to the killed worker (a transport error, never an error status); the
// replacement holds the listener and serves, and requests keep succeeding. On SIGTERM the supervisor exits 0
// and leaves no worker running.
//
// It runs twice: with one listening socket that both workers accept on, and with reuse_port, where
// each worker has its own socket of a SO_REUSEPORT group (the supervisor holds them all, so the
// connections the kernel queues on the killed worker's socket wait for its replacement).
func TestWorkerKilledUnderLoad(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct{ name, yaml string }{{"shared socket", ""}, {"reuse_port", "reuse_port: true\n"}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testWorkerKilledUnderLoad(t, mode.yaml)
		})
	}
}

func testWorkerKilledUnderLoad(t *testing.T, extraYAML string) {
	const clients = 8
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(), func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}, {id: "b", addr: b.addr, weight: 1}}) + extraYAML
	})
	ready, pids := s.awaitReady(t)
	for _, pid := range pids {
		awaitListens(t, pid, s.addr)
	}

	g := startLoad(t, s.addr, "/killed", clients)
	g.awaitOK(t, 200)

	const victimSlot = 0
	victim := pids[victimSlot]
	otherSlot, other := -1, 0
	for slot, pid := range pids {
		if slot != victimSlot {
			otherSlot, other = slot, pid
		}
	}
	// Which worker holds which client connection is the kernel's choice. No client has lost a
	// connection yet, so none has one still to come: the victim's are all it will ever hold.
	held := clientConns(victim, s.addr)
	t.Logf("worker %d (slot %d) holds %d client connections, worker %d (slot %d) %d",
		victim, victimSlot, held, other, otherSlot, clientConns(other, s.addr))
	killedAt := time.Now()
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatalf("kill worker %d: %v", victim, err)
	}
	exited := s.await(t, ready.end, fmt.Sprintf(`"worker exited" of pid %d`, victim),
		says("worker exited", func(l logLine) bool { return l.int("pid") == victim }))
	if slot := exited.int("slot"); slot != victimSlot {
		t.Errorf("worker exited: slot %d, want %d: %s", slot, victimSlot, exited)
	}
	started := s.await(t, exited.end, fmt.Sprintf(`"worker started" in slot %d`, victimSlot),
		says("worker started", func(l logLine) bool { return l.int("slot") == victimSlot }))
	replacement := started.int("pid")
	if replacement <= 0 || replacement == victim {
		t.Fatalf("the replacement of worker %d: pid %d: %s", victim, replacement, started)
	}
	t.Logf("worker %d killed; the supervisor saw it exit %v later (%s) and started %d %v after the kill",
		victim, exited.at.Sub(killedAt), exited.str("error"), replacement, started.at.Sub(killedAt))
	awaitListens(t, replacement, s.addr)
	awaitServes(t, replacement, s.addr)

	okBefore := g.okN.Load()
	g.awaitOK(t, okBefore+afterRestartRequests)
	recs := g.halt()

	// The other worker was left alone.
	lines, _ := s.log.linesFrom(ready.end)
	for _, ln := range lines {
		if (says("worker exited", nil)(ln) || says("worker started", nil)(ln)) && ln.int("slot") == otherSlot {
			t.Errorf("slot %d (worker %d) was touched: %s", otherSlot, other, ln)
		}
	}
	if !running(other) {
		t.Errorf("the other worker, %d, no longer runs", other)
	}

	var total, inGap, afterRestart, losers int
	for i, rs := range recs {
		var errs []loadRecord
		for _, r := range rs {
			total++
			switch {
			case r.err != nil:
				errs = append(errs, r)
			case r.status != http.StatusOK:
				t.Errorf("client %d: status %d, body %q, sent %v after the kill", i, r.status, r.backend, r.sent.Sub(killedAt))
			default:
				if r.sent.After(killedAt) && r.answered.Before(started.at) {
					inGap++
				}
				if r.sent.After(started.at) {
					afterRestart++
				}
			}
		}
		// Each client held one connection; only the one held to the killed worker may fail, once,
		// and not before the kill.
		for _, r := range errs {
			if r.answered.Before(killedAt) {
				t.Errorf("client %d: a failure before the kill: %v", i, r.err)
			}
		}
		if len(errs) > 1 {
			t.Errorf("client %d: %d failed requests, want at most 1 (its connection to the killed worker): first %v, last %v",
				i, len(errs), errs[0].err, errs[len(errs)-1].err)
		}
		if len(errs) > 0 {
			losers++
			t.Logf("client %d: lost its connection to the killed worker: %v", i, errs[0].err)
		}
	}
	if losers > held {
		t.Errorf("%d clients had a request fail, but the killed worker held only %d client connections", losers, held)
	}
	t.Logf("%d requests; %d sent after the kill and answered before the replacement started (%v); %d sent after it started",
		total, inGap, started.at.Sub(killedAt), afterRestart)
	if inGap == 0 {
		t.Errorf("no request succeeded between the kill and the replacement's start (%v): the other worker did not serve",
			started.at.Sub(killedAt))
	}

	s.signal(syscall.SIGTERM)
	if code := s.waitExitCode(stopTimeout); code != 0 {
		t.Errorf("%v: exit status %d after SIGTERM, want 0", s, code)
	}
	for _, pid := range []int{victim, other, replacement} {
		if running(pid) {
			t.Errorf("worker %d still runs after the supervisor exited", pid)
		}
	}
}

// generationSpan is one generation of TestReloadUnderLoad: its backends, when the write that made
// it began, and when the test saw it applied.
type generationSpan struct {
	gen      int
	backends []backendConf
	active   map[string]bool
	written  time.Time
	applied  time.Time
}

// inForce tells whether some generation in which r's backend is active was in force at some moment
// between r's send and its answer. Generation i is in force from the moment its write began until
// generation i+1 was seen applied (by every worker); the last, until the end.
func inForce(gens []generationSpan, r loadRecord) bool {
	for i, g := range gens {
		if !g.active[r.backend] || r.answered.Before(g.written) {
			continue
		}
		if i+1 == len(gens) || !r.sent.After(gens[i+1].applied) {
			return true
		}
	}
	return false
}

// randomBackends draws 1 to reloadSetMax backends of pool with weights 1 to reloadWeightMax, one of
// them draining (or, one time in three, disabled) a third of the time when there are several, and
// never the same as prev (a rewrite that changes nothing publishes nothing). They are in the order
// of the pool.
func randomBackends(tb testing.TB, rng *rand.Rand, pool []backendConf, prev []backendConf) []backendConf {
	tb.Helper()
	for range 100 {
		n := 1 + rng.IntN(reloadSetMax)
		idx := rng.Perm(len(pool))[:n]
		slices.Sort(idx)
		var bs []backendConf
		for _, i := range idx {
			b := pool[i]
			b.weight = 1 + rng.IntN(reloadWeightMax)
			bs = append(bs, b)
		}
		if n > 1 && rng.IntN(3) == 0 {
			bs[rng.IntN(n)].state = []string{"draining", "draining", "disabled"}[rng.IntN(3)]
		}
		if !slices.Equal(bs, prev) {
			return bs
		}
	}
	tb.Fatalf("100 draws gave the previous backends again")
	return nil
}

// finalBackends is the last generation of TestReloadUnderLoad: three active backends of weights
// 1, 2 and 3 (or 3, 2, 1 if prev is that already), so that the split checked after it says
// something whatever the random draws before.
func finalBackends(pool, prev []backendConf) []backendConf {
	bs := slices.Clone(pool[:3])
	for i := range bs {
		bs[i].weight = i + 1
	}
	if slices.Equal(bs, prev) {
		for i := range bs {
			bs[i].weight = 3 - i
		}
	}
	return bs
}

func activeIDs(bs []backendConf) map[string]bool {
	m := make(map[string]bool)
	for _, b := range bs {
		if b.active() {
			m[b.id] = true
		}
	}
	return m
}

// newRand is a generator from -reload-seed, or from the clock; the seed is logged.
func newRand(tb testing.TB) *rand.Rand {
	seed := *reloadSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	tb.Logf("seed %d (-reload-seed=%d reproduces the rewrites)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed))
}

// newPool starts n backends that answer with their ids, b0, b1, ...
func newPool(tb testing.TB, n int) []backendConf {
	pool := make([]backendConf, n)
	for i := range pool {
		id := fmt.Sprintf("b%d", i)
		pool[i] = backendConf{id: id, addr: addrOf(newBackend(tb, nameHandler(id)))}
	}
	return pool
}

// rewrite makes write i of a series, alternately in place and by renaming a temporary file over
// the configuration, waits for its generation to be applied, and checks that exactly one generation
// was published for it. It returns the applied line.
func (s *supervisor) rewrite(tb testing.TB, i int, bs []backendConf, from, lastGen int) logLine {
	tb.Helper()
	writeConfig(tb, s.cfgPath, configYAML(s.addr, bs), i%2 == 0)
	applied := s.awaitApplied(tb, from, lastGen)
	lines, _ := s.log.linesFrom(from)
	var published []logLine
	for _, ln := range lines {
		if ln.end > applied.end {
			break
		}
		if says("generation published", nil)(ln) {
			published = append(published, ln)
		}
	}
	switch {
	case len(published) != 1:
		tb.Errorf("write %d: %d generations published before %s, want 1: %v", i, len(published), applied, published)
	case published[0].int("generation") != applied.int("generation") || published[0].int("sets") != 1 ||
		published[0].int("backends") != len(bs):
		tb.Errorf("write %d of %d backends: %s, then %s; want generation %d, sets 1, backends %d",
			i, len(bs), published[0], applied, applied.int("generation"), len(bs))
	}
	return applied
}

// latencySummary is the median, 99th percentile and maximum of ds.
func latencySummary(ds []time.Duration) (median, p99, maxD time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration {
		return s[max(0, int(math.Ceil(q*float64(len(s))))-1)]
	}
	return at(0.5), at(0.99), s[len(s)-1]
}

// TestReloadUnderLoad: 200 rewrites of the configuration file, each a random set of 1 to 5 of 6
// backends with random weights, sometimes one draining, half written in place and half renamed
// over, while 4 keep-alive clients load xlb. No request fails; every request goes to a backend
// active in a generation in force while it was in flight; and once the last generation is applied,
// 600 sequential requests split by its weights.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	const clients = 4
	rng := newRand(t)
	pool := newPool(t, reloadPoolSize)
	known := make(map[string]bool)
	for _, b := range pool {
		known[b.id] = true
	}

	first := randomBackends(t, rng, pool, nil)
	gens := []generationSpan{{backends: first, active: activeIDs(first), written: time.Now()}}
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(), func(addr string) string {
		return configYAML(addr, first)
	})
	ready, _ := s.awaitReady(t)
	gens[0].gen, gens[0].applied = ready.int("generation"), ready.at

	g := startLoad(t, s.addr, "/reload", clients)
	var latencies, supervisorLatencies []time.Duration
	from, lastGen := ready.end, gens[0].gen
	for i := 1; i <= reloadWrites; i++ {
		bs := randomBackends(t, rng, pool, gens[len(gens)-1].backends)
		if i == reloadWrites {
			bs = finalBackends(pool, gens[len(gens)-1].backends)
		}
		written := time.Now()
		applied := s.rewrite(t, i, bs, from, lastGen)
		gens = append(gens, generationSpan{
			gen: applied.int("generation"), backends: bs, active: activeIDs(bs), written: written, applied: applied.at,
		})
		latencies = append(latencies, applied.at.Sub(written))
		if d, err := time.ParseDuration(applied.str("latency")); err == nil {
			supervisorLatencies = append(supervisorLatencies, d)
		} else {
			t.Errorf("generation applied: latency %q: %v", applied.str("latency"), err)
		}
		from, lastGen = applied.end, applied.int("generation")
	}
	recs := g.halt()

	median, p99, maxD := latencySummary(latencies)
	t.Logf("write -> applied, seen by the test, over %d rewrites: median %v, p99 %v, max %v", len(latencies), median, p99, maxD)
	median, p99, maxD = latencySummary(supervisorLatencies)
	t.Logf("the latency of the applied lines (the supervisor's own measure): median %v, p99 %v, max %v", median, p99, maxD)

	// What the supervisor logged besides: no worker may have died; a failed reload is allowed (an
	// in-place write can be read while truncated) and logged.
	lines, _ := s.log.linesFrom(0)
	var failures int
	for _, ln := range lines {
		switch {
		case says("worker exited", nil)(ln):
			t.Errorf("a worker exited during the rewrites: %s", ln)
		case reloadFailed(ln):
			failures++
			if failures <= 3 {
				t.Logf("%s", ln)
			}
		}
	}
	t.Logf("%d config reload failures logged during %d rewrites", failures, reloadWrites)

	var total int
	var violations []string
	for c, rs := range recs {
		for _, r := range rs {
			total++
			switch {
			case r.err != nil:
				t.Errorf("client %d: request sent at +%v failed: %v", c, r.sent.Sub(gens[0].written), r.err)
			case r.status != http.StatusOK || !known[r.backend]:
				t.Errorf("client %d: request sent at +%v: status %d, body %q", c, r.sent.Sub(gens[0].written), r.status, r.backend)
			case !inForce(gens, r):
				violations = append(violations, describeViolation(gens, c, r))
			}
		}
	}
	t.Logf("%d requests during the rewrites", total)
	if len(violations) > 0 {
		t.Errorf("%d of %d requests went to a backend not active in any generation in force while they were in flight; the first:\n%s",
			len(violations), total, strings.Join(violations[:min(len(violations), violationsShown)], "\n"))
	}

	// The split. Each worker has one smooth weighted round robin picker for the last generation, and
	// the sequential requests it serves now (the load has stopped) are consecutive picks of it,
	// though from wherever the load left it in its cycle. Over a whole cycle of W = Σw picks SWRR
	// gives each backend exactly its weight and comes back to its start, so the count of backend j in
	// n consecutive picks is n·w_j/W plus what the two partial cycles at the ends add; an exhaustive
	// check of every weight vector of up to 5 backends of weights 1 to 5, over every window of up
	// to 3 cycles from every phase, finds that off by at most 1.53. So each worker's share is off by
	// less than 2 per backend, and the whole split, the sum over at most workersN pickers, by less
	// than 2·workersN, however the two connections fall on the workers.
	last := gens[len(gens)-1]
	weightSum := 0
	for _, b := range last.backends {
		if b.active() {
			weightSum += b.weight
		}
	}
	by := getAll(t, []*client{newClient(t, s.addr, true), newClient(t, s.addr, true)}, "/split", splitRequests)
	t.Logf("the split of %d requests over the last generation's backends %v: %v", splitRequests, last.backends, by)
	for _, b := range last.backends {
		want := 0.0
		if b.active() {
			want = float64(splitRequests*b.weight) / float64(weightSum)
		}
		if got := by[b.id]; math.Abs(float64(got)-want) >= 2*workersN {
			t.Errorf("backend %s (weight %d, %q): %d of %d requests, want %.1f ± %d; all: %v, backends %v",
				b.id, b.weight, b.state, got, splitRequests, want, 2*workersN, by, last.backends)
		}
		delete(by, b.id)
	}
	if len(by) > 0 {
		t.Errorf("requests went to backends not in the last generation: %v (it has %v)", by, last.backends)
	}
}

// describeViolation says what a request that went to the wrong backend overlapped.
func describeViolation(gens []generationSpan, client int, r loadRecord) string {
	start := gens[0].written
	var b strings.Builder
	fmt.Fprintf(&b, "  client %d: sent +%v, answered +%v, backend %s; generations in force meanwhile:",
		client, r.sent.Sub(start), r.answered.Sub(start), r.backend)
	for i, g := range gens {
		if r.answered.Before(g.written) || i+1 < len(gens) && r.sent.After(gens[i+1].applied) {
			continue
		}
		ids := slices.Sorted(maps.Keys(g.active))
		fmt.Fprintf(&b, " [%d: written +%v, applied +%v, active %v]", g.gen, g.written.Sub(start), g.applied.Sub(start), ids)
	}
	return b.String()
}

// TestReloadBadFileKeepsServing: a file with a YAML syntax error, then one with a weight past the
// control plane's bound, are each refused with a "config reload failed" line naming the file, line
// (and key); requests keep going to the backend of the last good file, nothing is published; then
// a good file applies.
func TestReloadBadFileKeepsServing(t *testing.T) {
	t.Parallel()
	a, b, c := newCountingBackend(t, "a"), newCountingBackend(t, "b"), newCountingBackend(t, "c")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(), func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}})
	})
	ready, _ := s.awaitReady(t)
	// One client with a new connection per request, so that both workers are likely asked.
	clients := []*client{newClient(t, s.addr, false), newClient(t, s.addr, true)}
	if by := getAll(t, clients, "/bad", 20); by["a"] != 20 {
		t.Fatalf("before the bad files: requests by backend %v, want map[a:20]", by)
	}

	// The bad files name backend b: it must never be asked.
	named := configYAML(s.addr, []backendConf{{id: "b", addr: b.addr, weight: 1}})
	bad := []struct {
		name, content string
		// want matches the error of the "config reload failed" line.
		want *regexp.Regexp
	}{{
		name: "syntax error",
		// An unclosed flow mapping on line firstBackendLine.
		content: strings.Replace(named, "weight: 1}", "weight: 1", 1),
		want: regexp.MustCompile(regexp.QuoteMeta(
			fmt.Sprintf("xlb.yaml:%d: did not find expected ',' or '}'", firstBackendLine))),
	}, {
		name:    "weight too large",
		content: strings.Replace(named, "weight: 1}", "weight: 2000000}", 1),
		want: regexp.MustCompile(regexp.QuoteMeta(
			fmt.Sprintf("xlb.yaml:%d: backend_sets[0].backends[0].weight: want 0 (meaning 1) to 1000000, got 2000000", firstBackendLine))),
	}}
	from := ready.end
	for _, f := range bad {
		writeConfig(t, s.cfgPath, f.content, true)
		failed := s.await(t, from, fmt.Sprintf(`"config reload failed" of the %s`, f.name), reloadFailed)
		if !f.want.MatchString(failed.str("error")) {
			t.Errorf("the %s: %s; want its error to match %q", f.name, failed, f.want)
		}
		t.Logf("the %s: %s", f.name, failed.str("error"))
		from = failed.end
		if by := getAll(t, clients, "/bad", 20); by["a"] != 20 {
			t.Errorf("after the %s: requests by backend %v, want map[a:20]", f.name, by)
		}
	}
	lines, _ := s.log.linesFrom(ready.end)
	for _, ln := range lines {
		if says("generation published", nil)(ln) {
			t.Errorf("a bad file published a generation: %s", ln)
		}
	}

	writeConfig(t, s.cfgPath, configYAML(s.addr, []backendConf{{id: "c", addr: c.addr, weight: 1}}), true)
	s.awaitApplied(t, from, ready.int("generation"))
	if by := getAll(t, clients, "/bad", 20); by["c"] != 20 {
		t.Errorf("after the good file: requests by backend %v, want map[c:20]", by)
	}
	if n := b.n.Load(); n != 0 {
		t.Errorf("backend b, named only by the bad files, got %d requests, want 0", n)
	}
}

// TestRestartedSupervisorServesLastGeneration: a supervisor restarted on the same state directory
// serves the region's last generation before anything else: its log says "serving the region's last
// generation" with the generation the first run applied last, before it publishes the sets of the
// file (which meanwhile names another backend); then requests go to that backend.
func TestRestartedSupervisorServesLastGeneration(t *testing.T) {
	t.Parallel()
	x, y, z := newCountingBackend(t, "x"), newCountingBackend(t, "y"), newCountingBackend(t, "z")
	cfgPath, stateDir := filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir()

	s1 := startSupervisor(t, cfgPath, stateDir, func(addr string) string {
		return configYAML(addr, []backendConf{{id: "x", addr: x.addr, weight: 1}})
	})
	ready1, _ := s1.awaitReady(t)
	clients := []*client{newClient(t, s1.addr, false)}
	lines, _ := s1.log.linesFrom(0)
	for _, ln := range lines {
		if says("serving the region's last generation", nil)(ln) {
			t.Errorf("a supervisor on a new state directory: %s", ln)
		}
	}
	if by := getAll(t, clients, "/first", 10); by["x"] != 10 {
		t.Fatalf("first run, first file: requests by backend %v, want map[x:10]", by)
	}
	writeConfig(t, cfgPath, configYAML(s1.addr, []backendConf{{id: "y", addr: y.addr, weight: 1}}), true)
	lastGen := s1.awaitApplied(t, ready1.end, ready1.int("generation")).int("generation")
	if by := getAll(t, clients, "/first", 10); by["y"] != 10 {
		t.Fatalf("first run, second file: requests by backend %v, want map[y:10]", by)
	}
	s1.signal(syscall.SIGTERM)
	if code := s1.waitExitCode(stopTimeout); code != 0 {
		t.Fatalf("%v: exit status %d after SIGTERM, want 0", s1, code)
	}

	s2 := startSupervisor(t, cfgPath, stateDir, func(addr string) string {
		return configYAML(addr, []backendConf{{id: "z", addr: z.addr, weight: 1}})
	})
	serving := s2.await(t, 0, `"serving the region's last generation"`, says("serving the region's last generation", nil))
	if g := serving.int("generation"); g != lastGen {
		t.Errorf("%s; want generation %d, the first run's last", serving, lastGen)
	}
	published := s2.await(t, 0, `"generation published"`, says("generation published", nil))
	if published.end < serving.end {
		t.Errorf("the restarted supervisor published the file's sets (%s) before serving the region's last generation (%s)",
			published, serving)
	}
	if g := published.int("generation"); g <= lastGen {
		t.Errorf("the restarted supervisor published %s; want a generation after the region's last, %d", published, lastGen)
	}
	s2.awaitApplied(t, published.end, published.int("generation")-1)
	if by := getAll(t, []*client{newClient(t, s2.addr, false)}, "/second", 10); by["z"] != 10 {
		t.Errorf("second run: requests by backend %v, want map[z:10]", by)
	}
	t.Logf("first run: last generation %d; restart: %s; then %s", lastGen, serving, published)
}

// BenchmarkReloadApplied: the time from just before a rewrite of the configuration file (random
// backends, as in TestReloadUnderLoad, alternately in place and renamed over) to the supervisor's
// "generation applied" line, without load. It reports the median and 99th percentile;
// go test -run XXX -bench ReloadApplied -benchtime 200x ./integration.
func BenchmarkReloadApplied(b *testing.B) {
	rng := newRand(b)
	pool := newPool(b, reloadPoolSize)
	prev := randomBackends(b, rng, pool, nil)
	s := startSupervisor(b, filepath.Join(b.TempDir(), "xlb.yaml"), b.TempDir(), func(addr string) string {
		return configYAML(addr, prev)
	})
	ready, _ := s.awaitReady(b)
	from, lastGen := ready.end, ready.int("generation")
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		bs := randomBackends(b, rng, pool, prev)
		written := time.Now()
		applied := s.rewrite(b, i, bs, from, lastGen)
		latencies = append(latencies, applied.at.Sub(written))
		from, lastGen, prev = applied.end, applied.int("generation"), bs
	}
	b.StopTimer()
	median, p99, _ := latencySummary(latencies)
	b.ReportMetric(float64(median)/float64(time.Millisecond), "ms-median")
	b.ReportMetric(float64(p99)/float64(time.Millisecond), "ms-p99")
}

// TestWorkerStalledIsReplaced: a worker that stops writing its heartbeat (here SIGSTOP: alive, but
// serving nobody) is killed by the supervisor once the stall timeout passes, and replaced.
func TestWorkerStalledIsReplaced(t *testing.T) {
	t.Parallel()
	a := newCountingBackend(t, "a")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(), func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}}) + "timeouts: {worker_stall: 2s}\n"
	})
	ready, pids := s.awaitReady(t)
	victim := pids[0]
	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stalled := s.await(t, ready.end, fmt.Sprintf("the stall of worker %d", victim),
		says("worker stopped beating; killing it", func(l logLine) bool { return l.int("pid") == victim }))
	if d, err := time.ParseDuration(stalled.str("silent_for")); err != nil || d < 2*time.Second {
		t.Errorf("killed after a silence of %q (%v), want at least the 2s stall timeout", stalled.str("silent_for"), err)
	}
	started := s.await(t, stalled.end, "the replacement in slot 0",
		says("worker started", func(l logLine) bool { return l.int("slot") == 0 }))
	if pid := started.int("pid"); pid == victim || pid <= 0 {
		t.Fatalf("replacement pid %d", pid)
	}
	if running(victim) {
		t.Errorf("the stalled worker %d still runs", victim)
	}
	if by := getAll(t, []*client{newClient(t, s.addr, false)}, "/after-stall", 10); by["a"] != 10 {
		t.Errorf("after the replacement: %v, want map[a:10]", by)
	}
	s.signal(syscall.SIGTERM)
	if code := s.waitExitCode(stopTimeout); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
}

// TestReloadListenerChangeNeedsRestart: a rewrite that moves the listener and changes the backends
// applies the backends, says that the listener change needs a restart, and keeps the listener
// where it was. A rewrite that changes nothing publishes nothing.
func TestReloadListenerChangeNeedsRestart(t *testing.T) {
	t.Parallel()
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(), func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}})
	})
	ready, _ := s.awaitReady(t)
	moved := freeAddr(t)
	writeConfig(t, s.cfgPath, configYAML(moved, []backendConf{{id: "b", addr: b.addr, weight: 1}}), true)
	warn := s.await(t, ready.end, "the restart warning", says("config change needs a restart; it is not applied", nil))
	if keys := warn.str("keys"); keys != "listeners" {
		t.Errorf("restart needed for %q, want listeners: %s", keys, warn)
	}
	applied := s.awaitApplied(t, ready.end, ready.int("generation"))
	if by := getAll(t, []*client{newClient(t, s.addr, false)}, "/moved", 10); by["b"] != 10 {
		t.Errorf("on the old address after the rewrite: %v, want map[b:10]", by)
	}
	if c, err := net.DialTimeout("tcp", moved, time.Second); err == nil {
		c.Close()
		t.Errorf("%s accepts connections: the listener moved without a restart", moved)
	}

	// The same file again, written anew, publishes nothing: after it, a third write (back to a) is
	// the only generation published since the first rewrite was applied.
	writeConfig(t, s.cfgPath, configYAML(moved, []backendConf{{id: "b", addr: b.addr, weight: 1}}), false)
	again := s.await(t, applied.end, "the second restart warning", says("config change needs a restart; it is not applied", nil))
	writeConfig(t, s.cfgPath, configYAML(moved, []backendConf{{id: "a", addr: a.addr, weight: 1}}), true)
	third := s.awaitApplied(t, again.end, applied.int("generation"))
	lines, _ := s.log.linesFrom(applied.end)
	var published []logLine
	for _, ln := range lines {
		if ln.end <= third.end && says("generation published", nil)(ln) {
			published = append(published, ln)
		}
	}
	if len(published) != 1 || published[0].int("generation") != third.int("generation") {
		t.Errorf("published since the first rewrite: %v; want only generation %d", published, third.int("generation"))
	}
}

// TestSIGHUP: SIGHUP makes the supervisor read its file again (an unchanged file publishes
// nothing), and a worker ignores it (a terminal's hang-up reaches the whole process group).
func TestSIGHUP(t *testing.T) {
	t.Parallel()
	a := newCountingBackend(t, "a")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(), func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}})
	})
	ready, pids := s.awaitReady(t)
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	s.signal(syscall.SIGHUP)
	s.await(t, ready.end, "the SIGHUP reload", says("SIGHUP: reloading the configuration", nil))
	if by := getAll(t, []*client{newClient(t, s.addr, false)}, "/hup", 10); by["a"] != 10 {
		t.Errorf("after SIGHUP: %v, want map[a:10]", by)
	}
	lines, _ := s.log.linesFrom(ready.end)
	for _, ln := range lines {
		if says("worker exited", nil)(ln) || says("generation published", nil)(ln) {
			t.Errorf("after SIGHUP: %s", ln)
		}
	}
	for slot, pid := range pids {
		if !running(pid) {
			t.Errorf("worker %d (slot %d) did not survive its SIGHUP", pid, slot)
		}
	}
}

// TestReloadOverCapacity: a rewrite with more backends than the region was created for is refused
// with the limit and how to raise it; the previous backends keep serving.
func TestReloadOverCapacity(t *testing.T) {
	t.Parallel()
	a, b, c := newCountingBackend(t, "a"), newCountingBackend(t, "b"), newCountingBackend(t, "c")
	const region = "region: {backends: 2}\n"
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(), func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}}) + region
	})
	ready, _ := s.awaitReady(t)
	writeConfig(t, s.cfgPath, configYAML(s.addr, []backendConf{
		{id: "a", addr: a.addr, weight: 1}, {id: "b", addr: b.addr, weight: 1}, {id: "c", addr: c.addr, weight: 1},
	})+region, true)
	failed := s.await(t, ready.end, "the refusal", says("a backend set does not fit the region; its previous version keeps serving", nil))
	if e, h := failed.str("error"), failed.str("hint"); !strings.Contains(e, "3 backends: more than the region's capacity of 2") ||
		!strings.Contains(h, "region.backends (2)") {
		t.Errorf("refusal %s; want the count, the limit and the key to raise", failed)
	}
	if by := getAll(t, []*client{newClient(t, s.addr, false)}, "/cap", 10); by["a"] != 10 {
		t.Errorf("after the refusal: %v, want map[a:10]", by)
	}
}
