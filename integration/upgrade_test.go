package integration

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// The tests of the binary upgrade (server/upgrade.go). Each starts `xlb run` from a copy of a build
// in its state directory, STATE/bin/xlb, because an upgrade starts whatever file is at the path the
// running supervisor was started from: the test renames over it xlb built again as version vA or vB,
// or a shell script that fails, and asks for the upgrade with the local admin service's Upgrade
// (grpcurl on STATE/admin.sock) or SIGUSR2. Every new supervisor inherits the standard error of the
// old, so one log (a pipe the test reads to its end) holds the lines of every supervisor and worker;
// a process holding that pipe as its standard error is one of the test's, which is how cleanup finds
// the supervisors that were orphaned when their parent handed over, and checks that none is left.
//
// TestUpgradeUnderLoad loads xlb from a second process, the test binary run again as
// TestLoadGeneratorProcess, so that the load does not share this process's scheduler, collector
// and race detector with the test's own waits.

const (
	// upgradeRounds is how many upgrades TestUpgradeUnderLoad makes in a row, alternating vB and vA.
	upgradeRounds = 5
	// upgradeKeepAliveClients and upgradeNewConnClients are the clients of each load here: the
	// first each keep one connection alive, the others open a connection per request.
	upgradeKeepAliveClients = 4
	upgradeNewConnClients   = 4
	// loadStartedOK is how many requests in all must succeed before a load counts as started.
	loadStartedOK = 200
	// loadTimeMax bounds a load: past it the clients stop by themselves, halted or not.
	loadTimeMax = 5 * time.Minute
	// loadgenEnv holds the loadSpec (JSON) of TestLoadGeneratorProcess; without it the test is skipped.
	loadgenEnv = "XLB_LOADGEN"
	// loadgenPrefix starts the load generator's own lines on its standard output: "started", then
	// its loadSummary (JSON). Other lines are the testing package's.
	loadgenPrefix = "xlb-loadgen: "
	// failuresShown bounds the failed requests of each kind that a load reports one by one.
	failuresShown = 5
	// shortUpgradeTimeout is the --upgrade-timeout of the upgrades that must time out.
	shortUpgradeTimeout = 2 * time.Second
	// adminMethod prefixes the methods of the local admin service.
	adminMethod = "xlb.dataplane.v1.DataPlaneAdminService/"
)

// versionBuilds are xlb built again as versions vA and vB (-X server.version), by version: built
// once per run of the test binary, beside xlbPath, in the directory TestMain removes at the end.
var versionBuilds = sync.OnceValues(func() (map[string]string, error) {
	dir := filepath.Dir(xlbPath)
	builds := map[string]string{"vA": filepath.Join(dir, "xlb-vA"), "vB": filepath.Join(dir, "xlb-vB")}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	errs := make(chan error, len(builds))
	for version, path := range builds {
		go func() {
			out, err := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X github.com/xlbproxy/xlb/server.version="+version,
				"-o", path, "github.com/xlbproxy/xlb").CombinedOutput()
			if err != nil {
				err = fmt.Errorf("go build %s: %v\n%s", version, err, out)
			}
			errs <- err
		}()
	}
	var all []error
	for range builds {
		all = append(all, <-errs)
	}
	return builds, errors.Join(all...)
})

// build is the binary of version ("vA" or "vB").
func build(tb testing.TB, version string) string {
	tb.Helper()
	builds, err := versionBuilds()
	if err != nil {
		tb.Fatal(err)
	}
	return builds[version]
}

// upgradable is an `xlb run` of a test started from STATE/bin/xlb, and every supervisor that took
// over from it since. Cleanup stops them all by PID and checks that none of their processes is left.
type upgradable struct {
	tb testing.TB
	// first is the supervisor the test started. The later ones are its descendants: each the child
	// of the one before, orphaned when that one exits.
	first *proc
	// log is the standard output and error of every process of this xlb, read to its end.
	log                     *procLog
	addr, cfgPath, stateDir string
	// bin is STATE/bin/xlb, the path every upgrade starts.
	bin string
	// logR is the read end of the log's pipe; pipe names it as /proc/PID/fd shows it ("pipe:[N]").
	logR *os.File
	pipe string
	// logDone is closed once every process holding the pipe has ended and the log is read.
	logDone chan struct{}
}

// startUpgradable starts `xlb run --config FILE --workers workersN --state-dir STATE --log-format
// json` and flags from STATE/bin/xlb, a copy of build version, on a free loopback port with the
// file that config makes for that address, and waits until it listens there. As startXLB, it
// tries another port when the one chosen was taken meanwhile.
func startUpgradable(tb testing.TB, version string, config func(addr string) string, flags ...string) *upgradable {
	tb.Helper()
	return startUpgradableFrom(tb, build(tb, version), config, flags...)
}

// startUpgradableFrom is startUpgradable of a copy of the binary src.
func startUpgradableFrom(tb testing.TB, src string, config func(addr string) string, flags ...string) *upgradable {
	tb.Helper()
	stateDir := tb.TempDir()
	if d, err := filepath.EvalSymlinks(stateDir); err == nil {
		stateDir = d
	}
	bin := filepath.Join(stateDir, "bin", "xlb")
	if err := os.Mkdir(filepath.Dir(bin), 0o755); err != nil {
		tb.Fatal(err)
	}
	installCopy(tb, bin, src)
	cfgPath := filepath.Join(tb.TempDir(), "xlb.yaml")
	args := append([]string{"run", "--config", cfgPath, "--workers", strconv.Itoa(workersN), "--state-dir", stateDir,
		"--log-format", "json"}, flags...)
	for attempt := 1; ; attempt++ {
		addr := freeAddr(tb)
		if err := os.WriteFile(cfgPath, []byte(config(addr)), 0o644); err != nil {
			tb.Fatal(err)
		}
		u := launchUpgradable(tb, bin, args)
		u.addr, u.cfgPath, u.stateDir = addr, cfgPath, stateDir
		err := waitListening(u.first, addr)
		if err == nil {
			return u
		}
		if attempt < startAttempts && errors.Is(err, errAddrInUse) {
			tb.Logf("attempt %d: %v: %v; trying another port", attempt, u.first, err)
			continue
		}
		tb.Fatalf("%v: %v\n--- log:\n%s", u.first, err, tail(u.first.stderr.String()))
	}
}

// launchUpgradable starts bin with args, its standard output and error on a pipe of its own (not
// exec's copying goroutine, which would end, and break the pipe, some time after the first
// supervisor exits, while its successors still write there).
func launchUpgradable(tb testing.TB, bin string, args []string) *upgradable {
	tb.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	fi, err := r.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	args = xlbArgs(args)
	p := &proc{tb: tb, args: args, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = w, w
	err = startExecutable(p.cmd)
	w.Close()
	if err != nil {
		r.Close()
		tb.Fatalf("start %s %s: %v", bin, strings.Join(args, " "), err)
	}
	go func() {
		p.cmd.Wait() // the exit status is read from cmd.ProcessState
		close(p.exited)
	}()
	u := &upgradable{tb: tb, first: p, bin: bin, logR: r, logDone: make(chan struct{}),
		pipe: fmt.Sprintf("pipe:[%d]", fi.Sys().(*syscall.Stat_t).Ino)}
	// The log's waits end when every process of this xlb has ended: logDone, not p.exited.
	u.log = &procLog{p: &proc{tb: tb, args: args, cmd: p.cmd, exited: u.logDone}, wrote: make(chan struct{}, 1)}
	go func() {
		io.Copy(io.MultiWriter(&p.stderr, u.log), r)
		<-p.exited // the log's messages print p.cmd.ProcessState: set before logDone closes
		close(u.logDone)
	}()
	tb.Cleanup(u.stop)
	return u
}

// stop sends SIGTERM to every supervisor of u still running, waits for them and every worker of
// the log to end (killing, and failing the test for, those that do not within stopTimeout), then
// for the log to be read to its end.
func (u *upgradable) stop() {
	tb := u.tb
	supervisors, workers := u.pids()
	for _, pid := range supervisors {
		if u.holds(pid) {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	if left := u.awaitGone(append(supervisors, workers...), stopTimeout); len(left) > 0 {
		tb.Errorf("%v: processes %v still run %v after the SIGTERM of the supervisors %v; killing them",
			u.first, left, stopTimeout, supervisors)
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	select {
	case <-u.first.exited:
	case <-time.After(stopTimeout):
		tb.Errorf("%v has not exited", u.first)
		u.first.cmd.Process.Kill()
		<-u.first.exited
	}
	select {
	case <-u.logDone:
	case <-time.After(waitDelay):
		tb.Errorf("%v: the log's pipe is still open %v after every known process ended: some other process holds it", u.first, waitDelay)
		u.logR.Close()
		<-u.logDone
	}
	u.logR.Close()
	if tb.Failed() {
		tb.Logf("%v (%v), its successors and their workers; the log:\n%s", u.first, u.first.cmd.ProcessState, tail(u.first.stderr.String()))
	}
}

// pids are the supervisors that the log names (the first, and the new binary of every upgrade
// started) and the workers (every "worker started").
func (u *upgradable) pids() (supervisors, workers []int) {
	supervisors = []int{u.first.pid()}
	lines, _ := u.log.linesFrom(0)
	for _, ln := range lines {
		switch {
		case says("upgrade started", nil)(ln):
			supervisors = append(supervisors, ln.int("pid"))
		case says("worker started", nil)(ln):
			workers = append(workers, ln.int("pid"))
		}
	}
	return supervisors, workers
}

// holds tells whether process pid runs (is not a zombie) with its standard error on u's log: a
// supervisor, worker or new binary of u, and not a process that was given the PID since.
func (u *upgradable) holds(pid int) bool {
	if pid <= 0 {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(stat), ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	fd, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/2", pid))
	return err == nil && fd == u.pipe
}

// awaitGone waits up to timeout until none of pids holds u's log, and returns those that still do.
func (u *upgradable) awaitGone(pids []int, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		var left []int
		for _, pid := range pids {
			if u.holds(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		<-tick.C
	}
}

// await waits for the first line of the log at or after offset from that match accepts; what
// names the line in a failure.
func (u *upgradable) await(tb testing.TB, from int, what string, match func(logLine) bool) logLine {
	tb.Helper()
	return awaitLine(tb, u.first, u.log, from, what, match)
}

// installCopy puts a copy of the file src at path.
func installCopy(tb testing.TB, path, src string) {
	tb.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	install(tb, path, b)
}

// install puts content at path, executable, as a package manager would: written beside it, then
// renamed over it, so that the processes running the old file keep it and the next exec of path
// gets the new one.
// startExecutable starts cmd, whose program a test has just written, trying again while exec
// says ETXTBSY: a process forked by another test at the moment the file was open for writing
// holds that descriptor until it execs (golang.org/issue/22315), briefly.
func startExecutable(cmd *exec.Cmd) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		err := cmd.Start()
		if !errors.Is(err, syscall.ETXTBSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
		// A failed Start leaves cmd unusable: make it again, as it was.
		next := exec.Command(cmd.Path, cmd.Args[1:]...)
		next.Args[0], next.Env, next.Dir = cmd.Args[0], cmd.Env, cmd.Dir
		next.Stdin, next.Stdout, next.Stderr, next.ExtraFiles, next.SysProcAttr = cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.ExtraFiles, cmd.SysProcAttr
		*cmd = *next
	}
}

func install(tb testing.TB, path string, content []byte) {
	tb.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, content, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

// The local admin service, as grpcurl prints its answers (protojson: uint64 as strings).
type (
	upgradeAnswer struct {
		Pid     int    `json:"pid"`
		Version string `json:"version"`
	}
	adminStatus struct {
		Pid        int    `json:"pid"`
		Version    string `json:"version"`
		Generation string `json:"generation"`
		Workers    []struct {
			Slot               int    `json:"slot"`
			Pid                int    `json:"pid"`
			ObservedGeneration string `json:"observedGeneration"`
		} `json:"workers"`
		Upgrading bool `json:"upgrading"`
	}
)

// workerPIDs are the status's workers' PIDs, in order.
func (s adminStatus) workerPIDs() []int {
	var pids []int
	for _, w := range s.Workers {
		pids = append(pids, w.Pid)
	}
	slices.Sort(pids)
	return pids
}

// adminCall calls method of the local admin service on the unix socket sock with grpcurl, with
// the extra grpcurl flags. It takes no testing.TB: tests call it from goroutines of their own.
func adminCall(sock, method string, extra ...string) rpcResult {
	args := append(append([]string{"-plaintext", "-unix"}, extra...), sock, adminMethod+method)
	path, err := grpcurlPath()
	if err != nil {
		return rpcResult{args: args, stderr: err.Error(), err: err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), grpcurlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return rpcResult{args: args, stdout: o.String(), stderr: e.String(), err: err}
}

func (u *upgradable) adminSock() string { return filepath.Join(u.stateDir, "admin.sock") }

// call calls method of u's local admin service.
func (u *upgradable) call(method string, extra ...string) rpcResult {
	return adminCall(u.adminSock(), method, extra...)
}

// status is the Status of u's local admin service; a failed call fails the test.
func (u *upgradable) status(tb testing.TB) adminStatus {
	tb.Helper()
	r := u.call("Status")
	if r.err != nil {
		tb.Fatalf("Status: %v", r)
	}
	var s adminStatus
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		tb.Fatalf("Status: the answer: %v\n%v", err, r)
	}
	return s
}

// upgrade calls Upgrade, which must succeed, and returns its answer and how long the call took
// (grpcurl's start included).
func (u *upgradable) upgrade(tb testing.TB) (upgradeAnswer, time.Duration) {
	tb.Helper()
	began := time.Now()
	r := u.call("Upgrade")
	took := time.Since(began)
	if r.err != nil {
		tb.Fatalf("Upgrade, after %v: %v", took, r)
	}
	var a upgradeAnswer
	if err := json.Unmarshal([]byte(r.stdout), &a); err != nil {
		tb.Fatalf("Upgrade: the answer: %v\n%v", err, r)
	}
	return a, took
}

// A load: clients of one xlb, each checking every response (a 200 from a known backend) and
// counting its failures by kind. It runs in the test's process (startLoadRun) or in a process of
// its own (startLoadProc).

// loadSpec is what a load does.
type loadSpec struct {
	Addr string `json:"addr"`
	// KeepAlive clients keep one connection alive; NewConn clients open one per request.
	KeepAlive int `json:"keep_alive"`
	NewConn   int `json:"new_conn"`
	// Backends are the bodies a response may have: the ids of the backends.
	Backends []string `json:"backends"`
	// TimeMax bounds the load: past it the clients stop, halted or not.
	TimeMax time.Duration `json:"time_max"`
	// Pause is each client's wait between the end of a request and the next: zero sends them back
	// to back; the health tests pace their load so that a slow answer is xlb's, not the machine's.
	Pause time.Duration `json:"pause"`
	// Records, when set, is a file that the load writes every request to at its end, one
	// loadRequest (JSON) per line.
	Records string `json:"records"`
}

// loadRequest is one request of a load, as a Records file has it.
type loadRequest struct {
	Client int `json:"c"`
	// Sent is when it was sent, in Unix nanoseconds; Took how long until its answer or error.
	Sent int64         `json:"sent"`
	Took time.Duration `json:"took"`
	// Status is the response's (0 for none); Body its body (a backend's id for a 200); Kind its
	// failure's kind, "" for a success.
	Status int    `json:"status"`
	Body   string `json:"body"`
	Kind   string `json:"kind"`
}

// loadWindow is a span of time in which a load counts the requests sent apart: the upgrades.
type loadWindow struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// The kinds of failed requests.
const (
	failRefused = "refused"      // the connection was refused
	failReset   = "reset"        // the connection was reset (or broken: a write after a reset)
	failClosed  = "closed"       // the connection ended before a complete response
	failTimeout = "timeout"      // no response within ioTimeout
	failOther   = "other error"  // any other error of the connection
	failStatus  = "non-200"      // a response other than 200
	failBody    = "unknown body" // a 200 whose body is no backend's
)

// failureKind is the kind of r's failure and what it was, or "" when r succeeded.
func failureKind(r loadRecord, known map[string]bool) (kind, detail string) {
	var ne net.Error
	switch {
	case r.err == nil && r.status != http.StatusOK:
		return failStatus, fmt.Sprintf("status %d, body %q", r.status, r.backend)
	case r.err == nil && !known[r.backend]:
		return failBody, fmt.Sprintf("body %q", r.backend)
	case r.err == nil:
		return "", ""
	case errors.Is(r.err, syscall.ECONNREFUSED):
		kind = failRefused
	case errors.Is(r.err, syscall.ECONNRESET), errors.Is(r.err, syscall.EPIPE):
		kind = failReset
	case errors.Is(r.err, io.EOF), errors.Is(r.err, io.ErrUnexpectedEOF):
		kind = failClosed
	case errors.As(r.err, &ne) && ne.Timeout():
		kind = failTimeout
	default:
		kind = failOther
	}
	return kind, r.err.Error()
}

// loadFailure is one failed request of a load.
type loadFailure struct {
	Client    int  `json:"client"`
	KeepAlive bool `json:"keep_alive"`
	// Reused: the request went on a kept-alive connection that had served requests before.
	Reused bool          `json:"reused"`
	Kind   string        `json:"kind"`
	Detail string        `json:"detail"`
	Sent   time.Time     `json:"sent"`
	Took   time.Duration `json:"took"`
}

func (f loadFailure) String() string {
	conn := "a new connection"
	if f.Reused {
		conn = "a reused keep-alive connection"
	}
	return fmt.Sprintf("client %d, sent %s on %s, failed after %v: %s: %s",
		f.Client, f.Sent.Format("15:04:05.000000"), conn, f.Took.Round(time.Microsecond), f.Kind, f.Detail)
}

// loadSummary is what a load did.
type loadSummary struct {
	Requests int `json:"requests"`
	// InWindow counts the requests sent within the window the test gave.
	InWindow int            `json:"in_window"`
	Failed   int            `json:"failed"`
	ByKind   map[string]int `json:"by_kind"`
	// First are the first failures of each kind, up to failuresShown each, in time order.
	First   []loadFailure `json:"first"`
	TookMax time.Duration `json:"took_max"`
	Elapsed time.Duration `json:"elapsed"`
	// Capped counts the clients that stopped at loadRequestsMax rather than when halted.
	Capped int `json:"capped"`
	// RecordsErr is why the spec's Records could not be written, "" when they were (or not asked).
	RecordsErr string `json:"records_err,omitempty"`
}

func (s loadSummary) String() string {
	return fmt.Sprintf("%d requests in %v (%d in the window), %d failed %v, slowest %v",
		s.Requests, s.Elapsed.Round(time.Millisecond), s.InWindow, s.Failed, s.ByKind, s.TookMax.Round(time.Microsecond))
}

// check fails the test for every failed request of s, and when a client stopped before it was
// halted; note, when not nil, adds to the line of each failure shown.
func (s loadSummary) check(tb testing.TB, what string, note func(loadFailure) string) {
	tb.Helper()
	if s.Failed > 0 {
		var b strings.Builder
		for _, f := range s.First {
			fmt.Fprintf(&b, "\n  %v", f)
			if note != nil {
				fmt.Fprintf(&b, " (%s)", note(f))
			}
		}
		tb.Errorf("%s: %d of %d requests failed, want none: by kind %v; the first:%s", what, s.Failed, s.Requests, s.ByKind, b.String())
	}
	if s.Capped > 0 {
		tb.Errorf("%s: %d clients made %d requests and stopped before the load was halted", what, s.Capped, loadRequestsMax)
	}
}

// loadRun is a load in this process: spec's clients, each a goroutine, until halted, spec.TimeMax
// or loadRequestsMax requests each.
type loadRun struct {
	spec  loadSpec
	known map[string]bool
	began time.Time
	// started is closed once loadStartedOK requests in all have succeeded.
	started chan struct{}
	okN     atomic.Int64
	stop    chan struct{}
	halting sync.Once
	timer   *time.Timer
	wg      sync.WaitGroup
	// clients[i] is what client i did: written by its goroutine, read once that has ended.
	clients []loadClientRecord
}

type loadClientRecord struct {
	sent     []int64 // Unix nanoseconds, of every request
	byKind   map[string]int
	failures []loadFailure // the first failuresShown of each kind
	tookMax  time.Duration
	capped   bool
	requests []loadRequest // every request, when the spec has Records
}

// startLoadRun starts spec's load in this process.
func startLoadRun(spec loadSpec) *loadRun {
	g := &loadRun{spec: spec, known: make(map[string]bool), began: time.Now(), started: make(chan struct{}),
		stop: make(chan struct{}), clients: make([]loadClientRecord, spec.KeepAlive+spec.NewConn)}
	for _, b := range spec.Backends {
		g.known[b] = true
	}
	for i := range g.clients {
		g.wg.Add(1)
		go g.run(i, i < spec.KeepAlive)
	}
	g.timer = time.AfterFunc(spec.TimeMax, g.halt)
	return g
}

func (g *loadRun) run(i int, keepAlive bool) {
	defer g.wg.Done()
	c := &client{addr: g.spec.Addr, keepAlive: keepAlive}
	defer c.close()
	rec := &g.clients[i]
	rec.byKind = make(map[string]int)
	for n := 0; ; n++ {
		if n == loadRequestsMax {
			rec.capped = true
			return
		}
		select {
		case <-g.stop:
			return
		default:
		}
		reused := c.e != nil
		r := c.get(fmt.Sprintf("/upgrade?c=%d&n=%d", i, n))
		rec.sent = append(rec.sent, r.sent.UnixNano())
		took := r.answered.Sub(r.sent)
		rec.tookMax = max(rec.tookMax, took)
		kind, detail := failureKind(r, g.known)
		if g.spec.Records != "" {
			rec.requests = append(rec.requests, loadRequest{Client: i, Sent: r.sent.UnixNano(), Took: took, Status: r.status, Body: r.backend, Kind: kind})
		}
		if g.spec.Pause > 0 {
			select {
			case <-g.stop:
			case <-time.After(g.spec.Pause):
			}
		}
		if kind == "" {
			if g.okN.Add(1) == loadStartedOK {
				close(g.started)
			}
			continue
		}
		rec.byKind[kind]++
		if rec.byKind[kind] <= failuresShown {
			rec.failures = append(rec.failures, loadFailure{Client: i, KeepAlive: keepAlive, Reused: reused, Kind: kind,
				Detail: detail, Sent: r.sent, Took: took})
		}
	}
}

func (g *loadRun) halt() {
	g.halting.Do(func() { close(g.stop) })
}

// finish halts the load, waits for its clients, and sums up what they did.
func (g *loadRun) finish(w loadWindow) loadSummary {
	g.halt()
	g.timer.Stop()
	g.wg.Wait()
	s := loadSummary{ByKind: make(map[string]int), Elapsed: time.Since(g.began)}
	from, to := w.From.UnixNano(), w.To.UnixNano()
	for _, c := range g.clients {
		s.Requests += len(c.sent)
		for _, t := range c.sent {
			if t >= from && t <= to {
				s.InWindow++
			}
		}
		for k, n := range c.byKind {
			s.ByKind[k] += n
			s.Failed += n
		}
		s.First = append(s.First, c.failures...)
		s.TookMax = max(s.TookMax, c.tookMax)
		if c.capped {
			s.Capped++
		}
	}
	if g.spec.Records != "" {
		s.RecordsErr = g.writeRecords()
	}
	slices.SortFunc(s.First, func(a, b loadFailure) int { return a.Sent.Compare(b.Sent) })
	shown := make(map[string]int)
	s.First = slices.DeleteFunc(s.First, func(f loadFailure) bool {
		shown[f.Kind]++
		return shown[f.Kind] > failuresShown
	})
	return s
}

// writeRecords writes every request of the finished load to spec.Records, in the order sent.
func (g *loadRun) writeRecords() string {
	var all []loadRequest
	for _, c := range g.clients {
		all = append(all, c.requests...)
	}
	slices.SortFunc(all, func(a, b loadRequest) int { return cmp.Compare(a.Sent, b.Sent) })
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, r := range all {
		enc.Encode(r)
	}
	if err := os.WriteFile(g.spec.Records, b.Bytes(), 0o644); err != nil {
		return err.Error()
	}
	return ""
}

// awaitOK waits until n requests in all have succeeded.
func (g *loadRun) awaitOK(tb testing.TB, n int64) {
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

// startLocalLoad starts spec's load in this process, halted in cleanup at the latest.
func startLocalLoad(tb testing.TB, spec loadSpec) *loadRun {
	g := startLoadRun(spec)
	tb.Cleanup(func() { g.finish(loadWindow{}) })
	return g
}

// TestLoadGeneratorProcess is the load generator of TestUpgradeUnderLoad, which runs the test binary
// again with only this test and XLB_LOADGEN set; otherwise it is skipped. It runs the load that
// XLB_LOADGEN describes, prints "started" once loadStartedOK requests succeeded, and stops when its
// standard input ends (after a loadWindow line, the requests of which it counts apart), or by itself
// after the spec's TimeMax; then it prints its loadSummary.
func TestLoadGeneratorProcess(t *testing.T) {
	v, ok := os.LookupEnv(loadgenEnv)
	if !ok {
		t.Skip("the load generator of TestUpgradeUnderLoad, which runs it in a process of its own with " + loadgenEnv)
	}
	var spec loadSpec
	if err := json.Unmarshal([]byte(v), &spec); err != nil {
		t.Fatalf("%s: %v", loadgenEnv, err)
	}
	// Non-blocking, standard input is read through the poller, with a deadline: this process ends
	// by itself whatever the test does.
	if err := syscall.SetNonblock(0, true); err != nil {
		t.Fatalf("standard input: %v", err)
	}
	stdin := os.NewFile(0, "stdin")
	if err := stdin.SetReadDeadline(time.Now().Add(spec.TimeMax)); err != nil {
		t.Fatalf("standard input must be a pipe: %v", err)
	}
	halt := make(chan loadWindow, 1)
	go func() {
		var w loadWindow
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			json.Unmarshal(sc.Bytes(), &w) // a bad line leaves the window empty
		}
		halt <- w
	}()
	g := startLoadRun(spec)
	var w loadWindow
	select {
	case <-g.started:
		fmt.Printf("%sstarted\n", loadgenPrefix)
		w = <-halt
	case w = <-halt:
	}
	b, err := json.Marshal(g.finish(w))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s%s\n", loadgenPrefix, b)
}

// loadProc is a load generator process: the test binary again, running TestLoadGeneratorProcess.
type loadProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// lines are its lines that start with loadgenPrefix, without it; closed at the end of its output.
	lines chan string
	// out is everything it wrote, for a failure.
	out    testutil.SyncBuffer
	exited chan struct{}
}

// startLoadProc starts a load generator process of spec and waits until its load has started. It
// is halted in cleanup at the latest.
func startLoadProc(tb testing.TB, spec loadSpec) *loadProc {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		tb.Fatal(err)
	}
	lp := &loadProc{lines: make(chan string, 4), exited: make(chan struct{})}
	lp.cmd = exec.Command(exe, "-test.run=^TestLoadGeneratorProcess$", "-test.count=1")
	lp.cmd.Env = append(os.Environ(), loadgenEnv+"="+string(specJSON))
	lp.cmd.Stderr = &lp.out
	if lp.stdin, err = lp.cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	stdout, err := lp.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := lp.cmd.Start(); err != nil {
		tb.Fatalf("start the load generator: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(&lp.out, sc.Text())
			if line, ok := strings.CutPrefix(sc.Text(), loadgenPrefix); ok {
				select {
				case lp.lines <- line:
				default: // more than it ever prints; out has it
				}
			}
		}
		close(lp.lines)
		lp.cmd.Wait() // after the last read of stdout, which Wait closes
		close(lp.exited)
	}()
	tb.Cleanup(func() {
		lp.stdin.Close()
		select {
		case <-lp.exited:
		case <-time.After(ioTimeout + stopTimeout):
			tb.Errorf("the load generator (pid %d) did not stop; killing it", lp.cmd.Process.Pid)
			lp.cmd.Process.Kill()
			<-lp.exited
		}
		if tb.Failed() {
			tb.Logf("the load generator (pid %d): %v; its output:\n%s", lp.cmd.Process.Pid, lp.cmd.ProcessState, tail(lp.out.String()))
		}
	})
	select {
	case line, ok := <-lp.lines:
		if !ok || line != "started" {
			tb.Fatalf("the load generator: %q instead of started\n%s", line, tail(lp.out.String()))
		}
	case <-time.After(logWaitTimeout):
		tb.Fatalf("the load generator has not started within %v\n%s", logWaitTimeout, tail(lp.out.String()))
	}
	return lp
}

// halt stops the load, with the window whose requests it counts apart, and returns its summary.
func (lp *loadProc) halt(tb testing.TB, w loadWindow) loadSummary {
	tb.Helper()
	if err := json.NewEncoder(lp.stdin).Encode(w); err != nil {
		tb.Fatalf("the load generator's input: %v", err)
	}
	lp.stdin.Close()
	var s loadSummary
	select {
	case line, ok := <-lp.lines:
		if !ok {
			<-lp.exited
			tb.Fatalf("the load generator ended (%v) without its summary\n%s", lp.cmd.ProcessState, tail(lp.out.String()))
		}
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			tb.Fatalf("the load generator's summary %q: %v", line, err)
		}
	case <-time.After(ioTimeout + stopTimeout):
		tb.Fatalf("the load generator has not stopped within %v of its halt\n%s", ioTimeout+stopTimeout, tail(lp.out.String()))
	}
	select {
	case <-lp.exited:
		if code := lp.cmd.ProcessState.ExitCode(); code != 0 {
			tb.Errorf("the load generator: %v, want exit status 0\n%s", lp.cmd.ProcessState, tail(lp.out.String()))
		}
	case <-time.After(stopTimeout):
		tb.Errorf("the load generator has not exited within %v of its summary", stopTimeout)
	}
	return s
}

// twoBackends is a configuration file of the set web with backends a and b, weight 1 each.
func twoBackends(a, b *countingBackend) func(string) string {
	return func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}, {id: "b", addr: b.addr, weight: 1}})
	}
}

// TestUpgradeUnderLoad: five upgrades in a row through the Upgrade RPC, alternating builds vB and vA
// renamed over STATE/bin/xlb, while a second process loads xlb with keep-alive clients and clients
// that open a connection per request. Each Upgrade answers with a new supervisor's PID and the
// version of the build installed, and Status then answers from that supervisor with that version;
// each old supervisor hands over, logs "stopped" and exits (the first, the test's child, with status
// 0), and its workers end; no worker dies otherwise, and no generation is published (the backend
// sets never change). No request fails: none refused, reset, cut, or answered with other than a 200
// from a backend. At the end exactly one supervisor runs, the last, with its workers. The median
// duration of an Upgrade call is logged, and each failed request shown with its time from the
// nearest hand-over.
func TestUpgradeUnderLoad(t *testing.T) {
	t.Parallel()
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	u := startUpgradable(t, "vA", twoBackends(a, b))
	firstReady := u.await(t, 0, `"ready"`, says("ready", nil))
	st := u.status(t)
	if st.Pid != u.first.pid() || st.Version != "vA" || len(st.Workers) != workersN {
		t.Fatalf("Status of the first supervisor (pid %d): %+v; want its pid, version vA and %d workers", u.first.pid(), st, workersN)
	}
	supervisors := []int{st.Pid}

	lp := startLoadProc(t, loadSpec{Addr: u.addr, KeepAlive: upgradeKeepAliveClients, NewConn: upgradeNewConnClients,
		Backends: []string{"a", "b"}, TimeMax: loadTimeMax})
	window := loadWindow{From: time.Now()}
	var took, handover []time.Duration
	var handedAt []time.Time // the @timestamp of each "upgrade ready; handing over"
	from := logEnd(u.log)
	for i := range upgradeRounds {
		version := []string{"vB", "vA"}[i%2]
		installCopy(t, u.bin, build(t, version))
		old := supervisors[len(supervisors)-1]
		answer, d := u.upgrade(t)
		if answer.Version != version || answer.Pid <= 0 || slices.Contains(supervisors, answer.Pid) {
			t.Fatalf("upgrade %d, from pid %d to %s: answered %+v; want version %s and a new pid", i+1, old, version, answer, version)
		}
		st := u.status(t)
		if st.Pid != answer.Pid || st.Version != version || len(st.Workers) != workersN || st.Upgrading {
			t.Errorf("upgrade %d: Status after it: %+v; want pid %d, version %s, %d workers, not upgrading",
				i+1, st, answer.Pid, version, workersN)
		}
		started := u.await(t, from, fmt.Sprintf(`"upgrade started" of upgrade %d`, i+1), says("upgrade started", nil))
		if pid := started.int("pid"); pid != answer.Pid || started.str("binary") != u.bin {
			t.Errorf("upgrade %d: %s; want the pid %d the RPC answered, and the binary %s", i+1, started, answer.Pid, u.bin)
		}
		handed := u.await(t, started.end, fmt.Sprintf(`"upgrade ready; handing over" of upgrade %d`, i+1),
			says("upgrade ready; handing over", nil))
		if handed.int("pid") != answer.Pid || handed.str("version") != version {
			t.Errorf("upgrade %d: %s; want pid %d, version %s", i+1, handed, answer.Pid, version)
		}
		t.Logf("upgrade %d: pid %d -> pid %d (%s): the RPC took %v; the old supervisor saw it ready %v after it started it",
			i+1, old, answer.Pid, version, d.Round(time.Microsecond), handed.at.Sub(started.at).Round(time.Microsecond))
		took = append(took, d)
		handedAt = append(handedAt, logTime(t, handed))
		handover = append(handover, handed.at.Sub(started.at))
		supervisors = append(supervisors, answer.Pid)
		from = handed.end
	}
	window.To = time.Now()
	sum := lp.halt(t, window)

	median, _, maxD := latencySummary(took)
	handMedian, _, _ := latencySummary(handover)
	t.Logf("the Upgrade RPC (grpcurl started to answer), over %d upgrades: median %v, max %v; the old supervisor's "+
		`"upgrade started" to "upgrade ready; handing over": median %v`, len(took), median.Round(time.Microsecond),
		maxD.Round(time.Microsecond), handMedian.Round(time.Microsecond))
	t.Logf("the load (%d keep-alive clients, %d with a new connection per request): %v; %d requests sent during the %d upgrades (%v)",
		upgradeKeepAliveClients, upgradeNewConnClients, sum, sum.InWindow, upgradeRounds, window.To.Sub(window.From).Round(time.Millisecond))
	t.Logf("backend a served %d requests, b %d", a.n.Load(), b.n.Load())
	sum.check(t, "the load during the upgrades", func(f loadFailure) string {
		// The nearest hand-over, by the supervisors' clock: the same as the load generator's.
		best, bestAt := 0, time.Time{}
		for i, at := range handedAt {
			if best == 0 || absDuration(f.Sent.Sub(at)) < absDuration(f.Sent.Sub(bestAt)) {
				best, bestAt = i+1, at
			}
		}
		return fmt.Sprintf("sent %+v from the hand-over of upgrade %d", f.Sent.Sub(bestAt).Round(time.Microsecond), best)
	})
	if sum.InWindow == 0 {
		t.Errorf("no request was sent during the upgrades")
	}

	// Every supervisor but the last has handed over and ended, with its workers.
	if code := u.first.waitExitCode(stopTimeout); code != 0 {
		t.Errorf("%v: exit status %d after handing over, want 0", u.first, code)
	}
	logged, workers := u.pids()
	if !slices.Equal(logged, supervisors) {
		t.Errorf(`supervisors of the log (the first, then each "upgrade started"): %v; the RPCs answered %v`, logged, supervisors)
	}
	last := supervisors[len(supervisors)-1]
	final := u.status(t)
	current := final.workerPIDs()
	var earlier []int
	for _, pid := range append(slices.Clone(supervisors[:len(supervisors)-1]), workers...) {
		if !slices.Contains(current, pid) {
			earlier = append(earlier, pid)
		}
	}
	if left := u.awaitGone(earlier, stopTimeout); len(left) > 0 {
		t.Errorf("%v after the last upgrade, processes of earlier supervisors still run: %v (of %v)", stopTimeout, left, earlier)
	}
	if final.Pid != last || !u.holds(last) {
		t.Errorf("the last supervisor, %d: Status says pid %d, running %v", last, final.Pid, u.holds(last))
	}
	for _, pid := range current {
		if !u.holds(pid) {
			t.Errorf("worker %d of the last supervisor does not run", pid)
		}
	}
	stopped := 0
	for range upgradeRounds {
		stopped = u.await(t, stopped, `"stopped" of every earlier supervisor`, says("stopped", nil)).end
	}
	if n := len(linesMatching(u.log, 0, says("stopped", nil))); n != upgradeRounds {
		t.Errorf(`%d supervisors logged "stopped", want %d, one per upgrade`, n, upgradeRounds)
	}
	// The backend sets never change: a new supervisor has nothing to publish.
	for _, ln := range linesMatching(u.log, firstReady.end, func(l logLine) bool {
		return says("worker exited", nil)(l) || says("upgrade failed; serving on", nil)(l) || says("generation published", nil)(l)
	}) {
		t.Errorf("during the upgrades: %s", ln)
	}
}

// TestUpgradeFailures: upgrades that fail leave the old supervisor serving; and SIGUSR2 upgrades.
func TestUpgradeFailures(t *testing.T) {
	t.Parallel()
	t.Run("refused", testUpgradeRefused)
	t.Run("SIGUSR2", testUpgradeSIGUSR2)
}

// testUpgradeRefused, under a load in the test process, with --upgrade-timeout 2s:
//
//   - a new binary that exits 1 at once: Upgrade fails (FAILED_PRECONDITION) with a reason that
//     says so, the supervisor logs "upgrade failed; serving on", and its pid, version and workers
//     are the same;
//   - a new binary that never becomes ready (exec sleep 600): Upgrade fails after 2s
//     (DEADLINE_EXCEEDED, "not ready within 2s"), the sleep is killed, and the old serves on;
//   - while that one is in progress, Status says upgrading, and a second Upgrade is refused at once
//     (ABORTED, "an upgrade is in progress").
//
// No request fails meanwhile.
func testUpgradeRefused(t *testing.T) {
	t.Parallel()
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	u := startUpgradable(t, "vA", twoBackends(a, b), "--upgrade-timeout", shortUpgradeTimeout.String())
	u.await(t, 0, `"ready"`, says("ready", nil))
	before := u.status(t)
	g := startLocalLoad(t, loadSpec{Addr: u.addr, KeepAlive: upgradeKeepAliveClients, NewConn: upgradeNewConnClients,
		Backends: []string{"a", "b"}, TimeMax: loadTimeMax})
	g.awaitOK(t, loadStartedOK)
	unchanged := func(when string) {
		t.Helper()
		st := u.status(t)
		if st.Pid != before.Pid || st.Version != before.Version || !slices.Equal(st.workerPIDs(), before.workerPIDs()) || st.Upgrading {
			t.Errorf("%s: Status %+v; want it as before, %+v", when, st, before)
		}
		g.awaitOK(t, g.okN.Load()+loadStartedOK)
	}

	// A new binary that exits at once.
	install(t, u.bin, []byte("#!/bin/sh\nexit 1\n"))
	from := logEnd(u.log)
	r := u.call("Upgrade")
	if r.code() != "FailedPrecondition" || !strings.Contains(r.message(), "exit status 1") {
		t.Errorf("Upgrade to a binary that exits 1: %s: %q; want FailedPrecondition, with the exit status\n%v", r.code(), r.message(), r)
	}
	started := u.await(t, from, `"upgrade started" of the binary that exits`, says("upgrade started", nil))
	failed := u.await(t, started.end, `"upgrade failed; serving on"`, says("upgrade failed; serving on", nil))
	if !strings.Contains(failed.str("error"), "exit status 1") {
		t.Errorf("%s; want the exit status in the error", failed)
	}
	t.Logf("a new binary that exits 1: %s: %s", r.code(), r.message())
	if left := u.awaitGone([]int{started.int("pid")}, stopTimeout); len(left) > 0 {
		t.Errorf("the new binary, pid %d, still runs", started.int("pid"))
	}
	unchanged("after the binary that exits 1")

	// A new binary that never becomes ready, and a second Upgrade meanwhile.
	install(t, u.bin, []byte("#!/bin/sh\nexec sleep 600\n"))
	from = logEnd(u.log)
	slow := make(chan rpcResult, 1)
	slowBegan := time.Now()
	go func() { slow <- u.call("Upgrade") }()
	started = u.await(t, from, `"upgrade started" of the binary that sleeps`, says("upgrade started", nil))
	sleeper := started.int("pid")
	if st := u.status(t); !st.Upgrading || st.Pid != before.Pid {
		t.Errorf("Status during the upgrade: %+v; want upgrading, pid %d", st, before.Pid)
	}
	second := u.call("Upgrade")
	secondAfter := time.Since(started.at)
	if second.code() != "Aborted" || !strings.Contains(second.message(), "an upgrade is in progress") {
		t.Errorf("a second Upgrade %v after the first started (timeout %v): %s: %q; want Aborted, an upgrade is in progress\n%v",
			secondAfter, shortUpgradeTimeout, second.code(), second.message(), second)
	}
	t.Logf("a second Upgrade, %v after the first started: %s: %s", secondAfter.Round(time.Millisecond), second.code(), second.message())
	r = <-slow
	took := time.Since(slowBegan)
	if r.code() != "DeadlineExceeded" || !strings.Contains(r.message(), "not ready within "+shortUpgradeTimeout.String()) {
		t.Errorf("Upgrade to a binary that never becomes ready: %s: %q; want DeadlineExceeded, not ready within %v\n%v",
			r.code(), r.message(), shortUpgradeTimeout, r)
	}
	if took < shortUpgradeTimeout {
		t.Errorf("Upgrade to a binary that never becomes ready failed after %v, before the upgrade timeout %v", took, shortUpgradeTimeout)
	}
	t.Logf("a new binary that never becomes ready: after %v, %s: %s", took.Round(time.Millisecond), r.code(), r.message())
	failed = u.await(t, started.end, `"upgrade failed; serving on" of the binary that sleeps`, says("upgrade failed; serving on", nil))
	if !strings.Contains(failed.str("error"), "not ready within "+shortUpgradeTimeout.String()) {
		t.Errorf("%s; want the deadline in the error", failed)
	}
	if left := u.awaitGone([]int{sleeper}, stopTimeout); len(left) > 0 {
		t.Errorf("the new binary that sleeps, pid %d, still runs %v after the upgrade failed", sleeper, stopTimeout)
	}
	unchanged("after the binary that never becomes ready")
	if n := len(linesMatching(u.log, 0, says("upgrade started", nil))); n != 2 {
		t.Errorf(`%d "upgrade started" lines, want 2: the second Upgrade started one`, n)
	}

	sum := g.finish(loadWindow{})
	t.Logf("the load: %v", sum)
	sum.check(t, "the load during the failed upgrades", nil)
}

// testUpgradeSIGUSR2: SIGUSR2 to the supervisor upgrades it as the RPC does: the old logs "upgrade
// ready; handing over" with the new pid and version, and exits 0; the pid file of --pid-file names
// the new supervisor, which answers Status.
func testUpgradeSIGUSR2(t *testing.T) {
	t.Parallel()
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	pidFile := filepath.Join(t.TempDir(), "xlb.pid")
	u := startUpgradable(t, "vA", twoBackends(a, b), "--pid-file", pidFile)
	u.await(t, 0, `"ready"`, says("ready", nil))
	awaitPIDFile(t, pidFile, u.first.pid())

	installCopy(t, u.bin, build(t, "vB"))
	from := logEnd(u.log)
	u.first.signal(syscall.SIGUSR2)
	u.await(t, from, `"SIGUSR2: upgrading"`, says("SIGUSR2: upgrading", nil))
	handed := u.await(t, from, `"upgrade ready; handing over"`, says("upgrade ready; handing over", nil))
	newPID := handed.int("pid")
	if newPID <= 0 || newPID == u.first.pid() || handed.str("version") != "vB" {
		t.Fatalf("%s; want a new pid and version vB", handed)
	}
	awaitPIDFile(t, pidFile, newPID)
	if code := u.first.waitExitCode(stopTimeout); code != 0 {
		t.Errorf("%v: exit status %d after handing over, want 0", u.first, code)
	}
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(newPID) {
		t.Errorf("once the old supervisor exited, the pid file holds %q (%v), want %d", b, err, newPID)
	}
	if st := u.status(t); st.Pid != newPID || st.Version != "vB" {
		t.Errorf("Status after SIGUSR2: %+v; want pid %d, version vB", st, newPID)
	}
	if by := traffic(t, u.addr, "/usr2", 10); by["a"]+by["b"] != 10 {
		t.Errorf("after SIGUSR2: requests by backend %v, want 10 to a and b", by)
	}
}

// logTime is the time a line of the log says it was written (its @timestamp).
func logTime(tb testing.TB, l logLine) time.Time {
	tb.Helper()
	at, err := time.Parse(time.RFC3339Nano, l.str("@timestamp"))
	if err != nil {
		tb.Fatalf("%s: @timestamp: %v", l, err)
	}
	return at
}

func absDuration(d time.Duration) time.Duration { return max(d, -d) }

// awaitPIDFile waits until the file at path holds pid.
func awaitPIDFile(tb testing.TB, path string, pid int) {
	tb.Helper()
	deadline := time.Now().Add(logWaitTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(path)
		if err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(pid) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the pid file %s holds %q (%v) after %v, want %d", path, b, err, logWaitTimeout, pid)
		}
		<-tick.C
	}
}

// TestUpgradeKeepsHealth: an upgrade during an ejection keeps it. Under load from a second
// process, b answers 503 until it is ejected (for the default 30s); then xlb is upgraded, and
// later publishes a generation of its own (a change of weights). Through both, b's health slot in
// the region (which the test maps too, through /proc) holds the same words, the Status gives the same ejection
// (since, until, count), and no request reaches b past healthSeen after its ejection, while a and
// c serve the load.
func TestUpgradeKeepsHealth(t *testing.T) {
	t.Parallel()
	const setYAML = "    outlier_detection: {failure_statuses: gateway}\n"
	r := startHealthRig(t, setYAML)
	u := r.u
	region := openLiveRegion(t, u.first.pid()) // the new supervisor inherits it
	awaitServed(t, r.began, healthAfterN, r.a, r.b, r.c)

	from := logEnd(u.log)
	failing := time.Now()
	r.b.set(mode503)
	_, ejected := r.awaitLog(t, from, "backend ejected", "b")
	awaitServed(t, ejected, healthAfterN, r.a, r.c)
	snap, slots := webSlots(t, region)
	if len(slots) != 3 {
		t.Fatalf("generation %d: health slots %v, want one for each of a, b and c", snap.Generation, slots)
	}
	var want [shm.HealthWords]uint64
	for j := range want {
		want[j] = region.HealthWord(slots["b"], j)
	}
	before := healthStatus(t, u.adminSock())["b"]
	wantEjected(t, map[string]healthJSON{"b": before}, "b", "503")
	t.Logf("generation %d: health slots %v; b's words %#x", snap.Generation, slots, want)

	check := func(when string, got shm.Snapshot, gotSlots map[string]uint32) {
		t.Helper()
		if slot, ok := gotSlots["b"]; !ok || slot != slots["b"] {
			t.Errorf("%s (generation %d): backend b has health slot %d (%v), want %d", when, got.Generation, slot, ok, slots["b"])
			return
		}
		for j, w := range want {
			if v := region.HealthWord(slots["b"], j); v != w {
				t.Errorf("%s (generation %d): backend b, health word %d: %#x, want %#x", when, got.Generation, j, v, w)
			}
		}
		if h := healthStatus(t, u.adminSock())["b"]; h != before {
			t.Errorf("%s: Status of b %+v, want %+v", when, h, before)
		}
	}

	installCopy(t, u.bin, build(t, "vB"))
	answer, _ := u.upgrade(t)
	if answer.Version != "vB" {
		t.Fatalf("Upgrade: %+v, want version vB", answer)
	}
	upgraded := time.Now()
	after, afterSlots := webSlots(t, region)
	if after.Generation < snap.Generation {
		t.Errorf("after the upgrade: generation %d, want %d or later", after.Generation, snap.Generation)
	}
	check("after the upgrade", after, afterSlots)
	awaitServed(t, upgraded, healthAfterN, r.a, r.c)

	// A generation of the new supervisor: the same backends with other weights.
	changed := []backendConf{{id: "a", addr: r.a.addr, weight: 2}, {id: "b", addr: r.b.addr, weight: 3}, {id: "c", addr: r.c.addr, weight: 4}}
	writeConfig(t, u.cfgPath, configYAML(u.addr, changed)+setYAML, true)
	published, publishedSlots := awaitWebWeights(t, region, changed)
	if published.Generation <= after.Generation {
		t.Errorf("the weights changed in generation %d, want one after %d", published.Generation, after.Generation)
	}
	check("after the new supervisor's generation", published, publishedSlots)
	reweighted := time.Now()
	awaitServed(t, reweighted, healthAfterN, r.a, r.c)
	reqs := r.finish(t)

	f := healthFigures{name: "upgrade during an ejection", eject: ejected.Sub(failing)}
	f.count(reqs)
	f.checkAfter(t, r.b, ejected, time.Now())
	t.Log(f)
	if n := r.b.arrivedBetween(ejected.Add(healthSeen), time.Now()); n > 0 {
		t.Errorf("%d requests reached b after its ejection, through the upgrade and the new generation; want none", n)
	}
	failedAfter := 0
	for _, q := range reqs {
		if q.Kind != "" && time.Unix(0, q.Sent).After(ejected.Add(healthSeen)) {
			failedAfter++
		}
	}
	if failedAfter > 0 {
		t.Errorf("%d client requests sent after the ejection failed, through the upgrade and the new generation; want none:%s", failedAfter, failures(reqs))
	}
}

// awaitWebWeights polls the region until set web has the weights of bs, and returns that
// generation and its health slots.
func awaitWebWeights(tb testing.TB, region *shm.Region, bs []backendConf) (shm.Snapshot, map[string]uint32) {
	tb.Helper()
	deadline := time.Now().Add(logWaitTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		snap, slots := webSlots(tb, region)
		var got []backendConf
		for _, s := range snap.Sets {
			if s.Name == "web" {
				for _, b := range s.Backends {
					got = append(got, backendConf{id: b.ID, weight: int(b.Weight)})
				}
			}
		}
		if slices.EqualFunc(got, bs, func(x, y backendConf) bool { return x.id == y.id && x.weight == y.weight }) {
			return snap, slots
		}
		if time.Now().After(deadline) {
			tb.Fatalf("generation %d of the region: set web %+v after %v, want the weights of %+v", snap.Generation, got, logWaitTimeout, bs)
		}
		<-tick.C
	}
}

// webSlots reads the region's generation in force and the health slot of each backend of set web.
func webSlots(tb testing.TB, region *shm.Region) (shm.Snapshot, map[string]uint32) {
	tb.Helper()
	snap, err := region.Read()
	if err != nil {
		tb.Fatalf("read the region: %v", err)
	}
	slots := make(map[string]uint32)
	for _, s := range snap.Sets {
		if s.Name == "web" {
			for _, b := range s.Backends {
				slots[b.ID] = b.HealthSlot
			}
		}
	}
	return snap, slots
}

// readyFD is a shell snippet that sets fd to the number of the readiness pipe's descriptor, from
// XLB_UPGRADE.
const readyFD = `fd=$(printf '%s' "$XLB_UPGRADE" | sed -n 's/.*"Ready":\([0-9]*\).*/\1/p')` + "\n"

// TestUpgradeTimeoutCleansUp: an upgrade whose new binary is not ready within the upgrade timeout
// leaves the old supervisor as it was, whatever the new one did meanwhile:
//
//   - "new xlb not heard": a new xlb (vB) that starts, takes over the admin socket, starts its
//     workers and is ready, but whose "ready" the old never hears (a wrapper points the readiness
//     descriptor at /dev/null and keeps the pipe open on another): at the timeout it is killed and
//     its workers end; the old supervisor still answers Status on STATE/admin.sock, still applies
//     a change of the configuration file ("generation applied"), and a later upgrade (SIGUSR2)
//     succeeds;
//   - "readiness pipe closed": a new binary that closes the readiness pipe without a word and
//     keeps running (exec sleep 600) is killed at the timeout too, the Upgrade call failing with
//     DEADLINE_EXCEEDED, and a later upgrade succeeds;
//   - "process group": a new binary that starts children of its own (two sleep 600 in the
//     background) and never becomes ready runs as the leader of a process group of its own, and at
//     the timeout no process of that group is left.
func TestUpgradeTimeoutCleansUp(t *testing.T) {
	t.Parallel()
	t.Run("new xlb not heard", testUpgradeNotHeard)
	t.Run("readiness pipe closed", testUpgradePipeClosed)
	t.Run("process group", testUpgradeGroupKilled)
}

// procStat is the state and the process group of process pid, from /proc/PID/stat; ok is false
// when it has ended or is a zombie.
func procStat(pid int) (pgrp int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 3 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	pgrp, err = strconv.Atoi(f[2])
	return pgrp, err == nil
}

// groupLive are the processes of process group pgid that run (not zombies), from /proc.
func groupLive(tb testing.TB, pgid int) []int {
	tb.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		tb.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if g, ok := procStat(pid); ok && g == pgid {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func testUpgradeGroupKilled(t *testing.T) {
	t.Parallel()
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	u := startUpgradable(t, "vA", twoBackends(a, b), "--upgrade-timeout", shortUpgradeTimeout.String())
	u.await(t, 0, `"ready"`, says("ready", nil))
	before := u.status(t)

	// The children write their pids where the test reads them; they are never killed by the script.
	children := filepath.Join(t.TempDir(), "children")
	install(t, u.bin, fmt.Appendf(nil, "#!/bin/sh\nsleep 600 &\necho $! >> '%s'\nsleep 600 &\necho $! >> '%s'\nexec sleep 600\n", children, children))
	from := logEnd(u.log)
	slow := make(chan rpcResult, 1)
	go func() { slow <- u.call("Upgrade") }()
	started := u.await(t, from, `"upgrade started"`, says("upgrade started", nil))
	leader := started.int("pid")

	// While the upgrade waits: the new binary leads a group of its own, and its children are in it.
	var kids []int
	deadline := time.Now().Add(readyTimeout)
	for len(kids) < 2 {
		b, _ := os.ReadFile(children)
		kids = kids[:0]
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				kids = append(kids, pid)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new binary's children did not write their pids to %s within %v: %q", children, readyTimeout, b)
		}
		time.Sleep(pollInterval)
	}
	for _, pid := range append([]int{leader}, kids...) {
		if g, ok := procStat(pid); ok && g != leader {
			t.Errorf("process %d of the upgrade is in process group %d; want %d, the new binary's own", pid, g, leader)
		}
	}

	r := <-slow
	if r.code() != "DeadlineExceeded" {
		t.Errorf("Upgrade to a binary that never becomes ready: %s: %q; want DeadlineExceeded\n%v", r.code(), r.message(), r)
	}
	u.await(t, started.end, `"upgrade failed; serving on"`, says("upgrade failed; serving on", nil))
	var left []int
	deadline = time.Now().Add(stopTimeout)
	for {
		left = groupLive(t, leader)
		for _, pid := range kids {
			if _, ok := procStat(pid); ok && !slices.Contains(left, pid) {
				left = append(left, pid) // left the group, and lives on
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(pollInterval)
	}
	if len(left) > 0 {
		t.Errorf("processes %v of the failed upgrade (group %d, children %v) still run %v after it failed", left, leader, kids, stopTimeout)
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if st := u.status(t); st.Pid != before.Pid || st.Upgrading {
		t.Errorf("Status after the failed upgrade: %+v; want pid %d, no upgrade in progress", st, before.Pid)
	}
}

func testUpgradeNotHeard(t *testing.T) {
	t.Parallel()
	// Long enough for a new xlb to be ready on a loaded machine; the test waits for all of it.
	const timeout = 5 * time.Second
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	u := startUpgradable(t, "vA", twoBackends(a, b), "--upgrade-timeout", timeout.String())
	u.await(t, 0, `"ready"`, says("ready", nil))
	before := u.status(t)

	install(t, u.bin, fmt.Appendf(nil, "#!/bin/sh\n%seval \"exec '%s' \\\"\\$@\\\" 9>&$fd $fd>/dev/null\"\n", readyFD, build(t, "vB")))
	from := logEnd(u.log)
	r := u.call("Upgrade")
	if r.code() != "DeadlineExceeded" || !strings.Contains(r.message(), "not ready within "+timeout.String()) {
		t.Errorf("Upgrade to an xlb whose ready is not heard: %s: %q; want DeadlineExceeded, not ready within %v\n%v",
			r.code(), r.message(), timeout, r)
	}
	started := u.await(t, from, `"upgrade started"`, says("upgrade started", nil))
	failed := u.await(t, started.end, `"upgrade failed; serving on"`, says("upgrade failed; serving on", nil))
	newReady := linesMatching(u.log, started.end, says("ready", nil))
	if len(newReady) == 0 || newReady[0].end > failed.end {
		t.Fatalf("the new xlb (pid %d) was not ready before the timeout of %v: this test shows nothing on so slow a machine; %s",
			started.int("pid"), timeout, failed)
	}
	var newWorkers []int
	for _, ln := range linesMatching(u.log, started.end, says("worker started", nil)) {
		newWorkers = append(newWorkers, ln.int("pid"))
	}
	t.Logf("the new xlb, pid %d, was ready (%s) with workers %v, then killed: %s", started.int("pid"), newReady[0], newWorkers, failed)
	if left := u.awaitGone(append([]int{started.int("pid")}, newWorkers...), stopTimeout); len(left) > 0 {
		t.Errorf("the killed xlb's processes %v still run %v after the timeout", left, stopTimeout)
	}
	// Killed, it could not remove its own sockets (NAME.sock.PID): the old supervisor did.
	if left, _ := filepath.Glob(filepath.Join(u.stateDir, fmt.Sprintf("*.sock.%d*", started.int("pid")))); len(left) > 0 {
		t.Errorf("the killed xlb's sockets %v are left in the state directory", left)
	}

	if st := u.call("Status", "-connect-timeout", "5"); st.err != nil {
		t.Errorf("after the failed upgrade, the old supervisor (pid %d) does not answer on %s: %v", before.Pid, u.adminSock(), st)
	} else if !strings.Contains(st.stdout, fmt.Sprintf(`"pid": %d`, before.Pid)) {
		t.Errorf("after the failed upgrade, %s answers for another process than the old supervisor (pid %d): %s", u.adminSock(), before.Pid, st.stdout)
	}

	writeConfig(t, u.cfgPath, configYAML(u.addr, []backendConf{{id: "a", addr: a.addr, weight: 2}, {id: "b", addr: b.addr, weight: 1}}), true)
	published := u.await(t, failed.end, `"generation published" of the rewrite`, says("generation published", nil))
	if ln, err := u.log.await(published.end, logWaitTimeout, says("generation applied", func(l logLine) bool {
		return l.int("generation") == published.int("generation")
	})); err != nil {
		t.Errorf("after the failed upgrade, %s is not applied: %v; the log since:\n%s", published, err, linesSince(u.log, published.end))
	} else {
		t.Logf("after the failed upgrade: %s", ln)
	}

	// A later upgrade, by SIGUSR2: the admin socket may be lost.
	installCopy(t, u.bin, build(t, "vB"))
	from = logEnd(u.log)
	u.first.signal(syscall.SIGUSR2)
	end := u.await(t, from, "the end of the upgrade by SIGUSR2", func(l logLine) bool {
		return says("upgrade ready; handing over", nil)(l) || says("upgrade failed; serving on", nil)(l)
	})
	if end.msg() != "upgrade ready; handing over" {
		t.Errorf("a later upgrade to vB, by SIGUSR2: %s", end)
	}
}

func testUpgradePipeClosed(t *testing.T) {
	t.Parallel()
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	u := startUpgradable(t, "vA", twoBackends(a, b), "--upgrade-timeout", shortUpgradeTimeout.String())
	u.await(t, 0, `"ready"`, says("ready", nil))

	install(t, u.bin, []byte("#!/bin/sh\n"+readyFD+"eval \"exec $fd>&-\"\nexec sleep 600\n"))
	from := logEnd(u.log)
	// grpcurl gives up after maxTime: far past the upgrade timeout.
	const maxTime = 10 * time.Second
	began := time.Now()
	r := u.call("Upgrade", "-max-time", strconv.Itoa(int(maxTime/time.Second)))
	took := time.Since(began)
	started := u.await(t, from, `"upgrade started"`, says("upgrade started", nil))
	sleeper := started.int("pid")
	if r.code() != "DeadlineExceeded" || !strings.Contains(r.message(), "not ready within "+shortUpgradeTimeout.String()) {
		t.Errorf("Upgrade to a binary that closes the readiness pipe and sleeps: after %v, %s: %q; want DeadlineExceeded, not ready within %v\n%v",
			took.Round(time.Millisecond), r.code(), r.message(), shortUpgradeTimeout, r)
	}
	if left := u.awaitGone([]int{sleeper}, shortUpgradeTimeout+stopTimeout); len(left) > 0 {
		t.Errorf("the new binary (sleep, pid %d) still runs %v after the upgrade timeout", sleeper, stopTimeout)
	}
	if st := u.status(t); st.Upgrading {
		t.Errorf("Status: %+v; want no upgrade in progress", st)
	}
	installCopy(t, u.bin, build(t, "vB"))
	if r := u.call("Upgrade"); r.err != nil {
		t.Errorf("a later upgrade to vB: %v", r)
	}
	t.Logf("the log since the upgrade started:\n%s", linesSince(u.log, from))
}

// linesSince is the log's complete lines from offset from, for a failure message.
func linesSince(l *procLog, from int) string {
	var b strings.Builder
	lines, _ := l.linesFrom(from)
	for _, ln := range lines {
		b.WriteString(ln.raw)
		b.WriteByte('\n')
	}
	return tail(b.String())
}
