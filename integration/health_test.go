package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The end-to-end tests of health (dataplane/health, dataplane/monitor, server/health.go): the real
// binary with workersN workers in front of three backends of the test, a, b and c, loaded from a
// second process (TestLoadGeneratorProcess) at a pace, while the test breaks b: kills it, hangs it,
// makes it answer 503, makes it flap, takes every backend down. Each test logs its figures in one
// line that starts with "health figures:" — the time from the fault to the ejection's log line, the
// requests that reached the backend after its ejection (and those past healthSeen, which must be
// none: every worker follows an ejection within it), and the client requests that failed or waited
// over healthSlow — and asserts what must hold of them.

const (
	// healthKeepAlive and healthNewConn are the clients of a health test's load.
	healthKeepAlive = 4
	healthNewConn   = 2
	// healthPause paces each client: the load is some hundreds of requests a second, so that a slow
	// answer is xlb's doing, not a machine saturated by the tests running beside.
	healthPause = 5 * time.Millisecond
	// healthLoadMax bounds a health test's load.
	healthLoadMax = 2 * time.Minute
	// healthSlow is the wait over which a client request counts as affected.
	healthSlow = time.Second
	// healthSeen is how soon after an ejection every worker must have stopped sending to the backend.
	healthSeen = 100 * time.Millisecond
	// healthProbePath is the path the probes of these tests ask for; the backends count the
	// requests to it apart.
	healthProbePath = "/healthz"
	// healthAfterN is how many requests the healthy backends must serve after an event before the
	// test goes on: the window in which the faulty backend must get none.
	healthAfterN = 300
	// healthThreshold is the default consecutive failures that eject a backend.
	healthThreshold = 5
)

// The modes of a healthBackend.
const (
	modeOK   int32 = iota // answers 200 with its id
	modeHung              // reads the request and never answers (until its mode changes)
	mode503               // answers 503 with its id
)

// healthBackend is a backend whose behaviour the test switches, and which records when each
// request reached it.
type healthBackend struct {
	id, addr string
	mode     atomic.Int32
	mu       sync.Mutex
	srv      *http.Server  // nil while killed
	unhang   chan struct{} // closed to release the requests that hang
	arrivals []time.Time   // of the load's requests
	probes   []time.Time   // of the requests for healthProbePath
}

func newHealthBackend(tb testing.TB, id string) *healthBackend {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &healthBackend{id: id, addr: ln.Addr().String(), unhang: make(chan struct{})}
	b.serve(ln)
	tb.Cleanup(b.kill)
	return b
}

func (b *healthBackend) serve(ln net.Listener) {
	b.srv = &http.Server{Handler: b, ErrorLog: log.New(io.Discard, "", 0)}
	go b.srv.Serve(ln)
}

func (b *healthBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	now := time.Now() // under the lock: arrivals stay in time order, which arrivedBetween searches
	if r.URL.Path == healthProbePath {
		b.probes = append(b.probes, now)
	} else {
		b.arrivals = append(b.arrivals, now)
	}
	unhang := b.unhang
	b.mu.Unlock()
	io.Copy(io.Discard, r.Body)
	switch b.mode.Load() {
	case modeHung:
		select {
		case <-unhang:
		case <-r.Context().Done():
		}
		panic(http.ErrAbortHandler) // the connection ends without an answer
	case mode503:
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	io.WriteString(w, b.id)
}

// set switches b to mode; requests that hung are cut.
func (b *healthBackend) set(mode int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mode.Swap(mode) == modeHung {
		close(b.unhang)
		b.unhang = make(chan struct{})
	}
}

// kill closes b's listener and every connection: connects are refused, as of a killed process.
func (b *healthBackend) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		b.srv.Close()
		b.srv = nil
		close(b.unhang)
		b.unhang = make(chan struct{})
	}
}

// revive listens again on b's address.
func (b *healthBackend) revive(tb testing.TB) {
	tb.Helper()
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		tb.Fatalf("backend %s: listen again on %s: %v", b.id, b.addr, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.serve(ln)
}

// arrivedBetween counts the load's requests that reached b in (from, to].
func (b *healthBackend) arrivedBetween(from, to time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.firstAfterLocked(to) - b.firstAfterLocked(from)
}

// arrivedAfter counts the load's requests that reached b after t.
func (b *healthBackend) arrivedAfter(t time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.arrivals) - b.firstAfterLocked(t)
}

// firstAfterLocked is the index of the first arrival after t (arrivals are in time order).
func (b *healthBackend) firstAfterLocked(t time.Time) int {
	i, _ := slices.BinarySearchFunc(b.arrivals, t, func(a, t time.Time) int {
		if a.After(t) {
			return 1
		}
		return -1
	})
	return i
}

// awaitServed waits until the backends bs have together served n of the load's requests after t.
func awaitServed(tb testing.TB, t time.Time, n int, bs ...*healthBackend) {
	tb.Helper()
	deadline := time.Now().Add(logWaitTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		got := 0
		for _, b := range bs {
			got += b.arrivedAfter(t)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the backends served %d requests in the %v after %s, want %d", got, logWaitTimeout, t.Format(stampFormat), n)
		}
		<-tick.C
	}
}

const stampFormat = "15:04:05.000"

// healthRig is an xlb of workersN workers before the backends a, b and c (weight 1 each, round
// robin), loaded from a second process.
type healthRig struct {
	u     *upgradable
	a, b  *healthBackend
	c     *healthBackend
	load  *loadProc
	reqs  string // the load's Records
	began time.Time
}

// startHealthRig starts the rig. setYAML holds lines of the set web's keys (four spaces in):
// health_check, outlier_detection and the like.
func startHealthRig(t *testing.T, setYAML string, flags ...string) *healthRig {
	t.Helper()
	r := &healthRig{a: newHealthBackend(t, "a"), b: newHealthBackend(t, "b"), c: newHealthBackend(t, "c")}
	pool := []backendConf{{id: "a", addr: r.a.addr, weight: 1}, {id: "b", addr: r.b.addr, weight: 1}, {id: "c", addr: r.c.addr, weight: 1}}
	r.u = startUpgradable(t, "vA", func(addr string) string { return configYAML(addr, pool) + setYAML }, flags...)
	r.u.await(t, 0, `"ready"`, says("ready", nil))
	r.startLoad(t, r.u.addr)
	return r
}

func (r *healthRig) startLoad(t *testing.T, addr string) {
	r.reqs = filepath.Join(t.TempDir(), "requests.jsonl")
	r.began = time.Now()
	r.load = startLoadProc(t, loadSpec{Addr: addr, KeepAlive: healthKeepAlive, NewConn: healthNewConn,
		Backends: []string{"a", "b", "c"}, TimeMax: healthLoadMax, Pause: healthPause, Records: r.reqs})
}

// awaitLog waits for a line of the health monitor that says msg of backend id (any when "").
func (r *healthRig) awaitLog(t *testing.T, from int, msg, id string) (logLine, time.Time) {
	t.Helper()
	l := r.u.await(t, from, fmt.Sprintf("%q of backend %q", msg, id), says(msg, func(l logLine) bool { return id == "" || l.str("backend") == id }))
	return l, logTime(t, l)
}

// finish halts the load and returns every request it made.
func (r *healthRig) finish(t *testing.T) []loadRequest {
	t.Helper()
	s := r.load.halt(t, loadWindow{})
	if s.RecordsErr != "" {
		t.Fatalf("the load's records: %s", s.RecordsErr)
	}
	return readRequests(t, r.reqs)
}

func readRequests(tb testing.TB, path string) []loadRequest {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []loadRequest
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var q loadRequest
		if err := json.Unmarshal(sc.Bytes(), &q); err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		out = append(out, q)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// healthFigures are what a health test reports.
type healthFigures struct {
	name string
	// eject is the time from the fault to the ejection (its log line).
	eject time.Duration
	// after counts the requests that reached the backend after its ejection; late, those of them
	// past healthSeen; trials, those that were half-open trials.
	after, late, trials int
	// failed and slow count the client requests that failed, and those that succeeded after
	// waiting over healthSlow, of total.
	failed, slow, total int
	// byKind counts the failed requests by kind (failureKind's).
	byKind map[string]int
	// note is anything else the test measured.
	note string
}

// count fills f's client figures from reqs.
func (f *healthFigures) count(reqs []loadRequest) {
	f.total = len(reqs)
	f.byKind = map[string]int{}
	for _, q := range reqs {
		switch {
		case q.Kind != "":
			f.failed++
			f.byKind[q.Kind]++
		case q.Took > healthSlow:
			f.slow++
		}
	}
}

func (f healthFigures) String() string {
	s := fmt.Sprintf("health figures: %s: ejected %v after the fault; %d requests reached the backend after its ejection (%d of them trials, %d past %v); %d of %d client requests failed %v, %d more waited over %v",
		f.name, f.eject.Round(time.Millisecond), f.after, f.trials, f.late, healthSeen, f.failed, f.total, f.byKind, f.slow, healthSlow)
	if f.note != "" {
		s += "; " + f.note
	}
	return s
}

// failures describes the failed requests of reqs, the first few of each kind.
func failures(reqs []loadRequest) string {
	var b strings.Builder
	shown := map[string]int{}
	for _, q := range reqs {
		if q.Kind == "" {
			continue
		}
		if shown[q.Kind]++; shown[q.Kind] <= failuresShown {
			fmt.Fprintf(&b, "\n  client %d, sent %s, after %v: %s (status %d, body %q)", q.Client,
				time.Unix(0, q.Sent).Format(stampFormat), q.Took.Round(time.Millisecond), q.Kind, q.Status, q.Body)
		}
	}
	return b.String()
}

// healthJSON is a backend's health in the data plane's Status, as grpcurl prints it.
type healthJSON struct {
	State     string `json:"state"`
	Routed    bool   `json:"routed"`
	Panic     bool   `json:"panic"`
	Reason    string `json:"reason"`
	Ejections int    `json:"ejections"`
	Since     string `json:"since"`
	Until     string `json:"until"`
}

// healthStatus is each backend's health in the Status of the data plane whose admin socket is sock.
func healthStatus(tb testing.TB, sock string) map[string]healthJSON {
	tb.Helper()
	r := adminCall(sock, "Status")
	if r.err != nil {
		tb.Fatalf("Status: %v", r)
	}
	var st struct {
		BackendStates []struct {
			BackendID string     `json:"backendId"`
			Health    healthJSON `json:"health"`
		} `json:"backendStates"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		tb.Fatalf("Status: %v\n%s", err, r.stdout)
	}
	out := map[string]healthJSON{}
	for _, b := range st.BackendStates {
		out[b.BackendID] = b.Health
	}
	return out
}

// wantEjected fails the test unless b is ejected in h, for a reason that contains cause.
func wantEjected(tb testing.TB, h map[string]healthJSON, id, cause string) {
	tb.Helper()
	if got := h[id]; got.State != "HEALTH_STATE_EJECTED" || got.Routed || !strings.Contains(got.Reason, cause) {
		tb.Errorf("Status: backend %s: %+v, want ejected, not routed, for %q", id, got, cause)
	}
}

// checkAfter fills f's figures of the requests that reached b after its ejection at ejected, and
// fails the test for any past healthSeen.
func (f *healthFigures) checkAfter(t *testing.T, b *healthBackend, ejected, until time.Time) {
	t.Helper()
	f.after = b.arrivedBetween(ejected, until)
	f.late = b.arrivedBetween(ejected.Add(healthSeen), until)
	if f.late > f.trials {
		t.Errorf("%d requests reached backend %s from %v after its ejection at %s until %s, want %d (trials)",
			f.late, b.id, healthSeen, ejected.Format(stampFormat), until.Format(stampFormat), f.trials)
	}
}

// TestHealthKilledBackend: a backend killed under load (its connects refused, its connections
// closed) is ejected after the default 5 consecutive failures, every worker stops trying it within
// healthSeen, and no client request fails: each GET that met the dead backend went on to another.
// A refused connect reaches no backend, so the attempts on b are counted from the access log: a
// and c never fail, so every attempt of a request but its last was on b.
func TestHealthKilledBackend(t *testing.T) {
	t.Parallel()
	access := filepath.Join(t.TempDir(), "access.jsonl")
	r := startHealthRig(t, "", "--access-log", access)
	awaitServed(t, r.began, healthAfterN, r.a, r.b, r.c)

	from := logEnd(r.u.log)
	killed := time.Now()
	r.b.kill()
	l, ejected := r.awaitLog(t, from, "backend ejected", "b")
	awaitServed(t, ejected, healthAfterN, r.a, r.c)
	wantEjected(t, healthStatus(t, r.u.adminSock()), "b", "connect")
	reqs := r.finish(t)

	f := healthFigures{name: "killed backend", eject: ejected.Sub(killed)}
	f.count(reqs)
	tries := awaitAccessLog(t, access, len(reqs))
	for _, e := range tries {
		onB := e.Attempts - 1
		if e.Backend == r.b.addr {
			onB++
		}
		if onB > 0 && e.start.After(ejected) {
			f.after += onB
			if e.start.After(ejected.Add(healthSeen)) {
				f.late += onB
			}
		}
	}
	t.Log(f)
	if l.str("cause") == "" || f.late > 0 {
		t.Errorf("ejection %v; %d attempts on b past %v after it, want none", l, f.late, healthSeen)
	}
	if f.failed > 0 {
		t.Errorf("%d client requests failed, want none:%s", f.failed, failures(reqs))
	}
}

// accessEntry is a line of the access log, as TestHealthKilledBackend reads it.
type accessEntry struct {
	Time       time.Time `json:"time"`
	Backend    string    `json:"backend"`
	Attempts   int       `json:"attempts"`
	DurationUS int64     `json:"duration_us"`
	start      time.Time
}

// awaitAccessLog waits until the access log at path has n lines (it is flushed once a second), and
// returns them.
func awaitAccessLog(tb testing.TB, path string, n int) []accessEntry {
	tb.Helper()
	deadline := time.Now().Add(logWaitTimeout)
	tick := time.NewTicker(pollInterval * 20)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			tb.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(lines) >= n {
			out := make([]accessEntry, len(lines))
			for i, line := range lines {
				if err := json.Unmarshal([]byte(line), &out[i]); err != nil {
					tb.Fatalf("%s, line %d: %v", path, i+1, err)
				}
				out[i].start = out[i].Time.Add(-time.Duration(out[i].DurationUS) * time.Microsecond)
			}
			return out
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the access log has %d lines after %v, want %d", len(lines), logWaitTimeout, n)
		}
		<-tick.C
	}
}

// TestHealthHungBackend: a backend that accepts requests and never answers, with no probes, is
// ejected by its response-header timeouts (--backend-timeout 1s): the requests that timed out
// before the ejection got a 504, at most the threshold and the requests then in flight; those that
// waited on it when it was ejected went on to another backend at once.
func TestHealthHungBackend(t *testing.T) {
	t.Parallel()
	r := startHealthRig(t, "", "--backend-timeout", "1s")
	awaitServed(t, r.began, healthAfterN, r.a, r.b, r.c)

	from := logEnd(r.u.log)
	hung := time.Now()
	r.b.set(modeHung)
	l, ejected := r.awaitLog(t, from, "backend ejected", "b")
	awaitServed(t, ejected, healthAfterN, r.a, r.c)
	wantEjected(t, healthStatus(t, r.u.adminSock()), "b", "timeout")
	reqs := r.finish(t)

	f := healthFigures{name: "hung backend, no probes", eject: ejected.Sub(hung)}
	f.count(reqs)
	f.checkAfter(t, r.b, ejected, time.Now())
	t.Log(f)
	f.wantThresholdFailed(t, reqs, l)
}

// TestHealth503Backend: a backend answering 503 to everything is ejected after the threshold of
// them when the set counts gateway statuses as failures; the status, the log and the metrics (the
// Prometheus scrape) all say so.
func TestHealth503Backend(t *testing.T) {
	t.Parallel()
	prom := freeAddr(t)
	r := startHealthRig(t, "    outlier_detection: {failure_statuses: gateway}\n", "--prometheus-listen", prom)
	awaitServed(t, r.began, healthAfterN, r.a, r.b, r.c)

	from := logEnd(r.u.log)
	failing := time.Now()
	r.b.set(mode503)
	l, ejected := r.awaitLog(t, from, "backend ejected", "b")
	awaitServed(t, ejected, healthAfterN, r.a, r.c)
	wantEjected(t, healthStatus(t, r.u.adminSock()), "b", "503")
	metrics := curl(t, "http://"+prom+"/metrics")
	bLabels := []string{`xlb_backend_set="web"`, `xlb_backend_id="b"`, `server_port="` + portOf(r.b.addr) + `"`}
	for _, want := range []struct {
		name   string
		labels []string
		value  string
	}{
		{"xlb_backend_health_state", append(bLabels, `xlb_backend_health_state="ejected"`), "1"},
		{"xlb_backend_health_state", append(bLabels, `xlb_backend_health_state="healthy"`), "0"},
		{"xlb_backend_health_ejections_total", bLabels, "1"},
		{"xlb_backend_set_health_panic", []string{`xlb_backend_set="web"`}, "0"},
	} {
		if got, ok := promValue(metrics, want.name, want.labels); !ok || got != want.value {
			t.Errorf("the scrape: %s%v is %q (%v), want %s; its health lines:\n%s", want.name, want.labels, got, ok, want.value, grepLines(metrics, "health"))
		}
	}
	reqs := r.finish(t)

	f := healthFigures{name: "503 to everything", eject: ejected.Sub(failing)}
	f.count(reqs)
	f.checkAfter(t, r.b, ejected, time.Now())
	t.Log(f)
	f.wantThresholdFailed(t, reqs, l)
}

// wantThresholdFailed fails the test when more client requests failed than the threshold of
// failures that ejects and one in flight per client, or when the ejection l names no cause.
func (f *healthFigures) wantThresholdFailed(t *testing.T, reqs []loadRequest, l logLine) {
	t.Helper()
	if max := healthThreshold + healthKeepAlive + healthNewConn; f.failed > max {
		t.Errorf("%d client requests failed, want at most %d (the threshold and one in flight per client):%s", f.failed, max, failures(reqs))
	}
	if l.str("cause") == "" {
		t.Errorf("ejection without a cause: %v", l)
	}
}

// promValue is the value of the series name with labels (among others) in the scrape metrics.
func promValue(metrics, name string, labels []string) (string, bool) {
	for _, l := range strings.Split(metrics, "\n") {
		series, value, ok := strings.Cut(l, "} ")
		if !ok || !strings.HasPrefix(series, name+"{") {
			continue
		}
		all := true
		for _, want := range labels {
			all = all && strings.Contains(series, want)
		}
		if all {
			return value, true
		}
	}
	return "", false
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// TestHealthHungVsHAProxy: the hung backend again, now with probes, side by side with HAProxy in
// the same harness: each before three backends of its own, with the same load from a process of its
// own, at the same time, and the same policy: an HTTP probe of healthProbePath every second that
// times out after one, two failed to eject and two passed to readmit (HAProxy's `check inter 1s
// fall 2 rise 2`), and 10s to wait for a response header (HAProxy's timeout server). xlb must
// affect (fail, or answer after over healthSlow) no more client requests than HAProxy does.
func TestHealthHungVsHAProxy(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatalf("haproxy, which this test compares xlb with: %v (bash tools/install.sh installs it)", err)
	}
	var figures [2]healthFigures
	t.Run("pair", func(t *testing.T) {
		t.Run("xlb", func(t *testing.T) {
			t.Parallel()
			r := startHealthRig(t, "    health_check: {interval: 1s, timeout: 1s, fall: 2, rise: 2, http: {path: "+healthProbePath+"}}\n",
				"--backend-timeout", "10s")
			from := logEnd(r.u.log)
			figures[0] = r.hang(t, "xlb", func() time.Time {
				_, at := r.awaitLog(t, from, "backend ejected", "b")
				return at
			})
		})
		t.Run("haproxy", func(t *testing.T) {
			t.Parallel()
			r := &healthRig{a: newHealthBackend(t, "a"), b: newHealthBackend(t, "b"), c: newHealthBackend(t, "c")}
			h := startHAProxy(t, bin, r.a, r.b, r.c)
			r.startLoad(t, h.addr)
			figures[1] = r.hang(t, "HAProxy", func() time.Time { return h.awaitLine(t, "Server web/b is DOWN") })
		})
	})
	if t.Failed() {
		return
	}
	xlb, ha := figures[0], figures[1]
	t.Logf("hung backend with probes, side by side: xlb affected %d (%d failed, %d slow) of %d requests, ejecting in %v; HAProxy %d (%d failed, %d slow) of %d, in %v",
		xlb.failed+xlb.slow, xlb.failed, xlb.slow, xlb.total, xlb.eject.Round(time.Millisecond),
		ha.failed+ha.slow, ha.failed, ha.slow, ha.total, ha.eject.Round(time.Millisecond))
	if xlb.failed+xlb.slow > ha.failed+ha.slow {
		t.Errorf("xlb affected %d client requests, HAProxy %d: want no more", xlb.failed+xlb.slow, ha.failed+ha.slow)
	}
}

// hang hangs b once the load is under way, waits for its ejection (ejected returns its time),
// then for healthAfterN requests served by a and c, and returns the figures.
func (r *healthRig) hang(t *testing.T, name string, ejected func() time.Time) healthFigures {
	t.Helper()
	awaitServed(t, r.began, healthAfterN, r.a, r.b, r.c)
	hung := time.Now()
	r.b.set(modeHung)
	at := ejected()
	awaitServed(t, at, healthAfterN, r.a, r.c)
	reqs := r.finish(t)
	f := healthFigures{name: "hung backend with probes, " + name, eject: at.Sub(hung)}
	f.count(reqs)
	f.checkAfter(t, r.b, at, time.Now())
	t.Log(f)
	return f
}

// haproxy is a running HAProxy of a test.
type haproxy struct {
	addr string
	cmd  *exec.Cmd
	mu   sync.Mutex
	// lines are its standard error's lines, with the time each was read.
	lines []stampedLine
	grew  chan struct{} // closed, and replaced, at each new line
}

type stampedLine struct {
	at   time.Time
	text string
}

// startHAProxy runs bin in the foreground before backends (round robin, weight 1 each), with
// the policy of TestHealthHungVsHAProxy; it logs to its standard error, which the test reads.
func startHAProxy(tb testing.TB, bin string, backends ...*healthBackend) *haproxy {
	tb.Helper()
	h := &haproxy{addr: freeAddr(tb), grew: make(chan struct{})}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `global
  log stderr format raw local0 info
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 10s
  timeout check 1s
  retries 3
  option redispatch
frontend web
  bind %s
  default_backend web
backend web
  log global
  balance roundrobin
  option httpchk GET %s
`, h.addr, healthProbePath)
	for _, b := range backends {
		fmt.Fprintf(&cfg, "  server %s %s check inter 1s fall 2 rise 2\n", b.id, b.addr)
	}
	path := filepath.Join(tb.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	h.cmd = exec.Command(bin, "-db", "-f", path)
	stderr, err := h.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	h.cmd.Stdout = h.cmd.Stderr
	if err := h.cmd.Start(); err != nil {
		tb.Fatalf("start haproxy: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			h.mu.Lock()
			h.lines = append(h.lines, stampedLine{time.Now(), sc.Text()})
			close(h.grew)
			h.grew = make(chan struct{})
			h.mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		h.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(stopTimeout):
			tb.Errorf("haproxy (pid %d) did not stop; killing it", h.cmd.Process.Pid)
			h.cmd.Process.Kill()
			<-done
		}
		h.cmd.Wait()
		if tb.Failed() {
			h.mu.Lock()
			for _, l := range h.lines {
				tb.Logf("haproxy: %s %s", l.at.Format(stampFormat), l.text)
			}
			h.mu.Unlock()
		}
	})
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.Dial("tcp", h.addr)
		if err == nil {
			c.Close()
			return h
		}
		if time.Now().After(deadline) {
			tb.Fatalf("haproxy does not listen on %s after %v: %v", h.addr, readyTimeout, err)
		}
		time.Sleep(pollInterval)
	}
}

// awaitLine waits for a line of h's log that contains sub, and returns when it was read.
func (h *haproxy) awaitLine(tb testing.TB, sub string) time.Time {
	tb.Helper()
	deadline := time.After(logWaitTimeout)
	for i := 0; ; {
		h.mu.Lock()
		for ; i < len(h.lines); i++ {
			if strings.Contains(h.lines[i].text, sub) {
				at := h.lines[i].at
				h.mu.Unlock()
				return at
			}
		}
		grew := h.grew
		h.mu.Unlock()
		select {
		case <-grew:
		case <-deadline:
			tb.Fatalf("haproxy has logged no line with %q in %v", sub, logWaitTimeout)
		}
	}
}

// TestHealthSlowStart: a killed backend, ejected for 1s, comes back; its probes (every 200ms, two
// to readmit) pass meanwhile, so it is readmitted as soon as its ejection is over, into a slow
// start of 4s from 10% of its weight: its share of the load's requests ramps from about 5% (0.1
// against 1 and 1) to a third, as the split by half second shows. It gets no request between its
// ejection and its readmission.
func TestHealthSlowStart(t *testing.T) {
	t.Parallel()
	const window = 4 * time.Second
	r := startHealthRig(t, "    health_check: {interval: 200ms, timeout: 200ms, fall: 2, rise: 2, http: {path: "+healthProbePath+"}}\n"+
		"    outlier_detection: {base_ejection_time: 1s}\n"+
		"    slow_start: {window: "+window.String()+", min_weight_percent: 10}\n")
	awaitServed(t, r.began, healthAfterN, r.a, r.b, r.c)

	from := logEnd(r.u.log)
	killed := time.Now()
	r.b.kill()
	_, ejected := r.awaitLog(t, from, "backend ejected", "b")
	r.b.revive(t)
	_, readmitted := r.awaitLog(t, from, "backend readmitted; slow start", "b")
	if h := healthStatus(t, r.u.adminSock())["b"]; h.State != "HEALTH_STATE_SLOW_START" || !h.Routed {
		t.Errorf("Status during the slow start: backend b %+v, want slow-starting and routed", h)
	}
	_, full := r.awaitLog(t, from, "backend's slow start is over", "b")
	awaitServed(t, full, 2*healthAfterN, r.a, r.b, r.c)
	reqs := r.finish(t)

	f := healthFigures{name: "killed, then back in a slow start", eject: ejected.Sub(killed)}
	f.count(reqs)
	f.checkAfter(t, r.b, ejected, readmitted)
	// b's share of the requests sent in each half second from its readmission.
	const bucket = 500 * time.Millisecond
	var all, ofB []int
	for _, q := range reqs {
		at := time.Unix(0, q.Sent)
		if at.Before(readmitted) || q.Kind != "" {
			continue
		}
		i := int(at.Sub(readmitted) / bucket)
		for len(all) <= i {
			all, ofB = append(all, 0), append(ofB, 0)
		}
		all[i]++
		if q.Body == "b" {
			ofB[i]++
		}
	}
	share := func(from, to time.Duration) float64 {
		n, m := 0, 0
		for i := int(from / bucket); i < int(to/bucket) && i < len(all); i++ {
			n, m = n+all[i], m+ofB[i]
		}
		if n == 0 {
			t.Fatalf("no request was sent from %v to %v after the readmission", from, to)
		}
		return float64(m) / float64(n)
	}
	var split []string
	for i := range all {
		split = append(split, fmt.Sprintf("%.0f%%", 100*float64(ofB[i])/float64(max(all[i], 1))))
	}
	rampEnd := full.Sub(readmitted)
	first, last, after := share(0, time.Second), share(window-time.Second, window), share(rampEnd+bucket, rampEnd+3*bucket)
	f.note = fmt.Sprintf("b's share by half second from its readmission: %s (first second %.0f%%, last second of the ramp %.0f%%, after it %.0f%%)",
		strings.Join(split, " "), 100*first, 100*last, 100*after)
	t.Log(f)
	if !(first < 0.15 && first < last && last < after && after > 0.25 && after < 0.42) {
		t.Errorf("b's share rose %.2f, %.2f, %.2f; want below 0.15 in the first second, more in the ramp's last, and about a third after it", first, last, after)
	}
	if f.failed > 0 {
		t.Errorf("%d client requests failed, want none:%s", f.failed, failures(reqs))
	}
}

// TestHealthAllDown: every backend answers 503 and, with max_ejection_percent 100, all are
// ejected: the set fails open (panic), and every backend takes traffic again rather than xlb
// refusing it all; the status and the log say so. Once a answers again, its probes readmit it, the
// panic ends, and only a takes traffic.
func TestHealthAllDown(t *testing.T) {
	t.Parallel()
	r := startHealthRig(t, "    health_check: {interval: 200ms, timeout: 200ms, fall: 2, rise: 2, http: {path: "+healthProbePath+"}}\n"+
		"    outlier_detection: {failure_statuses: gateway, max_ejection_percent: 100, base_ejection_time: 1s}\n")
	awaitServed(t, r.began, healthAfterN, r.a, r.b, r.c)

	from := logEnd(r.u.log)
	down := time.Now()
	for _, b := range []*healthBackend{r.a, r.b, r.c} {
		b.set(mode503)
	}
	_, panicked := r.awaitLog(t, from, "backend set in panic: too few backends are in, so every active backend takes traffic", "")
	h := healthStatus(t, r.u.adminSock())
	for _, id := range []string{"a", "b", "c"} {
		if !h[id].Panic || !h[id].Routed || h[id].State == "HEALTH_STATE_HEALTHY" {
			t.Errorf("Status in panic: backend %s %+v, want out by its health, in panic, routed", id, h[id])
		}
	}
	// Failing open: every backend gets requests, though all are out.
	inPanic := time.Now()
	awaitServed(t, inPanic, healthAfterN, r.a, r.b, r.c)
	for _, b := range []*healthBackend{r.a, r.b, r.c} {
		if n := b.arrivedAfter(inPanic); n == 0 {
			t.Errorf("backend %s got no request in the panic, want its share", b.id)
		}
	}

	r.a.set(modeOK)
	_, over := r.awaitLog(t, from, "backend set out of panic", "")
	awaitServed(t, over, healthAfterN, r.a)
	reqs := r.finish(t)

	f := healthFigures{name: "all down, failing open", eject: panicked.Sub(down)}
	f.count(reqs)
	late := 0
	for _, b := range []*healthBackend{r.b, r.c} {
		late += b.arrivedBetween(over.Add(healthSeen), time.Now())
	}
	failedAfter := 0
	for _, q := range reqs {
		if q.Kind != "" && time.Unix(0, q.Sent).After(over.Add(healthSeen)) {
			failedAfter++
		}
	}
	f.note = fmt.Sprintf("in panic %v after all went down (the time above); out of it %v after a answered again; since, %d requests to b or c, %d failed",
		panicked.Sub(down).Round(time.Millisecond), over.Sub(panicked).Round(time.Millisecond), late, failedAfter)
	t.Log(f)
	if late > 0 || failedAfter > 0 {
		t.Errorf("after the panic: %d requests reached b or c and %d failed, want none:%s", late, failedAfter, failures(reqs))
	}
}

// TestHealthFlapping: a backend that fails (503), recovers, and fails again as soon as it is back
// is ejected for longer each time: 500ms, then 1s, then 1.5s (base_ejection_time × the
// ejections in a row). With no probes, each ejection ends in one trial request, which readmits it;
// no other request reaches it while it is out.
func TestHealthFlapping(t *testing.T) {
	t.Parallel()
	const base = 500 * time.Millisecond
	r := startHealthRig(t, "    outlier_detection: {failure_statuses: gateway, base_ejection_time: "+base.String()+", max_ejection_time: 10s}\n")
	awaitServed(t, r.began, healthAfterN, r.a, r.b, r.c)

	from := logEnd(r.u.log)
	var lengths []string
	f := healthFigures{name: "flapping"}
	for round := 1; round <= 3; round++ {
		failing := time.Now()
		r.b.set(mode503)
		l, ejected := r.awaitLog(t, from, "backend ejected", "b")
		until, err := time.Parse(time.RFC3339Nano, l.str("until"))
		if err != nil {
			t.Fatalf("ejection %d: until: %v in %v", round, err, l)
		}
		if round == 1 {
			f.eject = ejected.Sub(failing)
		}
		// The until of the log line is the ejection's time plus its length; the line's own time
		// is a little later than the former.
		d := until.Sub(ejected)
		if want := time.Duration(round) * base; d > want || d < want-healthSeen {
			t.Errorf("ejection %d lasts %v (%v), want %v", round, d, l, want)
		}
		lengths = append(lengths, d.Round(10*time.Millisecond).String())
		r.b.set(modeOK)
		from = logEnd(r.u.log)
		_, back := r.awaitLog(t, from, "backend readmitted", "b")
		// One trial between the ejection and the readmission, and nothing else.
		f.trials++
		after := r.b.arrivedBetween(ejected, back)
		late := r.b.arrivedBetween(ejected.Add(healthSeen), back)
		f.after, f.late = f.after+after, f.late+late
		if late > 1 {
			t.Errorf("ejection %d: %d requests reached b from %v after it until its readmission, want the one trial", round, late, healthSeen)
		}
		from = logEnd(r.u.log)
	}
	h := healthStatus(t, r.u.adminSock())["b"]
	reqs := r.finish(t)
	f.count(reqs)
	f.note = "the ejections lasted " + strings.Join(lengths, ", ")
	t.Log(f)
	if h.Ejections != 3 {
		t.Errorf("Status after 3 ejections in a row: backend b %+v, want ejections 3", h)
	}
}

// TestHealthWorkerKilled: a worker killed while a backend is ejected is replaced, and the new
// worker, reading the region, sends the ejected backend nothing; the ejection is the same in the
// status before and after.
func TestHealthWorkerKilled(t *testing.T) {
	t.Parallel()
	r := startHealthRig(t, "    outlier_detection: {failure_statuses: gateway}\n")
	awaitServed(t, r.began, healthAfterN, r.a, r.b, r.c)

	from := logEnd(r.u.log)
	failing := time.Now()
	r.b.set(mode503)
	_, ejected := r.awaitLog(t, from, "backend ejected", "b")
	before := healthStatus(t, r.u.adminSock())["b"]
	pids := r.u.status(t).workerPIDs()
	from = logEnd(r.u.log)
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, started := r.awaitLog(t, from, "worker started", "")
	awaitServed(t, started, 2*healthAfterN, r.a, r.c)
	after := healthStatus(t, r.u.adminSock())["b"]
	reqs := r.finish(t)

	f := healthFigures{name: "worker killed during an ejection", eject: ejected.Sub(failing)}
	f.count(reqs)
	f.checkAfter(t, r.b, ejected, time.Now())
	t.Log(f)
	wantEjected(t, map[string]healthJSON{"b": after}, "b", "503")
	if after.Since != before.Since || after.Until != before.Until || after.Ejections != before.Ejections {
		t.Errorf("the ejection of b: %+v before the worker's kill, %+v after; want the same", before, after)
	}
}

// TestHealthInListDataPlanes: the control plane's ListDataPlanes gives each data plane's view of
// each backend's health, so that one data plane alone seeing a backend down shows: of two data
// planes of one set, only the first gets traffic while b answers 503; it ejects b, the second
// still has b healthy, and the control plane lists both views.
func TestHealthInListDataPlanes(t *testing.T) {
	t.Parallel()
	a, b := newHealthBackend(t, "a"), newHealthBackend(t, "b")
	cp := startControlPlane(t, t.TempDir(), nil)
	dp1 := startDataPlane(t, cp, "dp1", "web")
	startDataPlane(t, cp, "dp2", "web")
	v := cp.put(t, setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "a", a.addr, 1), backendAt(t, "b", b.addr, 1)},
		OutlierDetection: map[string]any{"failureStatuses": "FAILURE_STATUSES_GATEWAY"}})
	cp.awaitApplied(t, "dp1", map[string]string{"web": v})
	cp.awaitApplied(t, "dp2", map[string]string{"web": v})

	b.set(mode503)
	c := newClient(t, dp1.addr, false)
	for i := range 4 * healthThreshold {
		c.get(fmt.Sprintf("/list?i=%d", i))
	}
	stateOf := func(d dataPlaneJSON, id string) string {
		for _, h := range d.BackendHealth {
			if h.BackendSet == "web" && h.BackendID == id {
				return h.State
			}
		}
		return ""
	}
	d1 := cp.awaitDataPlane(t, "dp1", logWaitTimeout, "reporting b ejected", func(d dataPlaneJSON) bool {
		return stateOf(d, "b") == "HEALTH_STATE_EJECTED" && stateOf(d, "a") == "HEALTH_STATE_HEALTHY"
	})
	d2 := cp.awaitDataPlane(t, "dp2", logWaitTimeout, "reporting a and b healthy", func(d dataPlaneJSON) bool {
		return stateOf(d, "b") == "HEALTH_STATE_HEALTHY" && stateOf(d, "a") == "HEALTH_STATE_HEALTHY"
	})
	for _, h := range d1.BackendHealth {
		if h.BackendID == "b" && !strings.Contains(h.Reason, "503") {
			t.Errorf("ListDataPlanes: dp1's b: %+v, want a reason that names the 503s", h)
		}
	}
	t.Logf("ListDataPlanes: dp1 %+v; dp2 %+v", d1.BackendHealth, d2.BackendHealth)
}
