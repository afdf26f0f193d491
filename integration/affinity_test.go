package integration

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// TestStickyKeysFile: the supervisor makes STATE_DIR/sticky-keys (mode 0600) when it is missing and
// keeps it across restarts; a worker started when the file went bad fails, naming it; a
// sticky_key_file that is not a keys file fails the start, naming it.
func TestStickyKeysFile(t *testing.T) {
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	cfg := func(extra string) func(string) string {
		return func(addr string) string {
			return configYAML(addr, []backendConf{{id: "a", addr: closedAddr(t), weight: 1}}) + extra
		}
	}
	s := startSupervisor(t, filepath.Join(dir, "xlb.yaml"), stateDir, cfg(""))
	s.awaitReady(t)
	path := filepath.Join(stateDir, "sticky-keys")
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("sticky-keys: %v, %v; want a file of mode 0600", st, err)
	}
	first, _ := os.ReadFile(path)
	s.signal(15)
	s.waitExitCode(stopTimeout)
	s = startSupervisor(t, filepath.Join(dir, "xlb.yaml"), stateDir, cfg(""))
	s.awaitReady(t)
	if again, _ := os.ReadFile(path); string(again) != string(first) {
		t.Fatal("a restart replaced the sticky keys: every cookie issued before would be refused")
	}
	// A worker started on a file that went bad does not start, and says which file.
	_, pids := s.awaitReady(t)
	os.WriteFile(path, []byte("# damaged\nAAAA\n"), 0o600)
	syscall.Kill(pids[0], syscall.SIGKILL)
	s.await(t, 0, "the new worker's refusal of the keys file", func(l logLine) bool {
		return l.fromWorker() && l.msg() == "cannot read the sticky cookie keys" && strings.Contains(l.str("error"), "keys file "+path+" line 2")
	})
	s.signal(15)
	s.waitExitCode(stopTimeout)

	bad := filepath.Join(dir, "bad-keys")
	os.WriteFile(bad, []byte("not a key\n"), 0o600)
	cfgPath := filepath.Join(dir, "bad.yaml")
	os.WriteFile(cfgPath, []byte(cfg("sticky_key_file: "+bad+"\n")(freeAddr(t))), 0o644)
	p, _ := startLoggedProc(t, "run", "--config", cfgPath, "--workers", strconv.Itoa(workersN), "--state-dir", stateDir, "--log-format", "json")
	if code := p.waitExitCode(readyTimeout); code == 0 {
		t.Fatal("xlb started with a bad sticky_key_file")
	}
	if want := fmt.Sprintf("keys file %s line 1", bad); !strings.Contains(p.stderr.String(), want) {
		t.Fatalf("the error does not name the file and line (%q):\n%s", want, p.stderr.String())
	}
}

// affBackend is a backend that answers its id; /hang waits until release is closed; /healthz
// answers 503 while sick is set. It counts the /hang requests that arrived.
type affBackend struct {
	id, addr string
	sick     atomic.Bool
	hanging  atomic.Int64
	release  chan struct{}
	once     sync.Once
}

// releaseAll ends the requests that hang, and makes /hang answer at once from now on.
func (b *affBackend) releaseAll() { b.once.Do(func() { close(b.release) }) }

func newAffBackend(tb testing.TB, id string) *affBackend {
	b := &affBackend{id: id, release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			if b.sick.Load() {
				w.WriteHeader(503)
			}
		case "/hang":
			b.hanging.Add(1)
			select {
			case <-b.release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, b.id)
	}))
	tb.Cleanup(func() { b.releaseAll(); srv.Close() })
	b.addr = srv.Listener.Addr().String()
	return b
}

// affinityYAML is a configuration of one listener on listen and set web with the set's keys
// setKeys (YAML lines at the set's indentation) and these backends.
func affinityYAML(listen, setKeys string, bs []backendConf) string {
	var s strings.Builder
	fmt.Fprintf(&s, "listeners:\n  - address: %s\n    backend_set: web\nbackend_sets:\n  - name: web\n", listen)
	for _, l := range strings.Split(strings.TrimSpace(setKeys), "\n") {
		if l != "" {
			s.WriteString("    " + l + "\n")
		}
	}
	s.WriteString("    backends:\n")
	for _, b := range bs {
		fmt.Fprintf(&s, "      - {id: %s, address: %s, weight: %d", b.id, b.addr, max(1, b.weight))
		if b.state != "" {
			fmt.Fprintf(&s, ", state: %s", b.state)
		}
		s.WriteString("}\n")
	}
	return s.String()
}

// oneShot is a client that opens a new connection for every request, so that over many requests
// both workers serve it.
var oneShot = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: ioTimeout}

// send GETs path from xlb with the cookie "name=value" (none when value is empty) and header
// fields (name, value pairs); it returns the backend that answered and the value of the cookie
// name that the response sets ("" for none).
func send(tb testing.TB, addr, path, cookie, value string, fields ...string) (backend, set string) {
	tb.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	if value != "" {
		req.Header.Set("Cookie", cookie+"="+value)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		req.Header.Set(fields[i], fields[i+1])
	}
	res, err := oneShot.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		tb.Fatalf("GET %s: status %d: %s", path, res.StatusCode, body)
	}
	for _, c := range res.Cookies() {
		if c.Name == cookie {
			set = c.Value
		}
	}
	return string(body), set
}

// parallel runs f(i) for i in [0, n) on 8 goroutines.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// TestStickyThroughWorkers: through the real binary with 2 workers, 10,000 new clients (no cookie)
// are spread within 2 points of the weights by the set's round robin; 200 of them, on a new
// connection for each of 100 requests (so both workers serve each), all stay on their backend;
// when one backend fails its probe and is ejected, exactly its clients move, with a new cookie.
func TestStickyThroughWorkers(t *testing.T) {
	weights := []int{1, 2, 3, 4}
	var bs []*affBackend
	var conf []backendConf
	for i, w := range weights {
		b := newAffBackend(t, fmt.Sprint("b", i))
		bs = append(bs, b)
		conf = append(conf, backendConf{id: b.id, addr: b.addr, weight: w})
	}
	dir := t.TempDir()
	// A probe may wait half a second, and three in a row must fail: one slowed by the load of
	// 10,000 clients on a busy machine must not eject a healthy backend in the middle of the spread
	// (with 50ms probes and fall 1, b0 once got none of the clients).
	keys := "policy: round_robin\nsticky: {cookie_name: srv}\nhealth_check: {interval: 500ms, timeout: 500ms, fall: 3, rise: 1, http: {path: /healthz}}\n" +
		"outlier_detection: {disabled: true, base_ejection_time: 1h}"
	s := startSupervisor(t, filepath.Join(dir, "xlb.yaml"), filepath.Join(dir, "state"), func(addr string) string { return affinityYAML(addr, keys, conf) })
	s.awaitReady(t)

	const clients = 10_000
	pinned := make([]string, clients)
	cookies := make([]string, clients)
	parallel(clients, func(i int) {
		pinned[i], cookies[i] = send(t, s.addr, "/", "srv", "")
	})
	count := map[string]int{}
	for i := range clients {
		if cookies[i] == "" {
			t.Fatalf("client %d: no cookie on its first response", i)
		}
		count[pinned[i]]++
	}
	for i, w := range weights {
		share, want := float64(count[bs[i].id])/clients, float64(w)/10
		if math.Abs(share-want) > 0.02 {
			t.Errorf("backend %s: %.1f%% of the new clients, want %.0f%% ± 2", bs[i].id, 100*share, 100*want)
		}
	}
	t.Logf("10,000 new clients: %v for weights %v", count, weights)

	const sample, each = 200, 100
	var moved atomic.Int64
	parallel(sample*each, func(k int) {
		i := k % sample
		if got, set := send(t, s.addr, "/", "srv", cookies[i]); got != pinned[i] || set != "" {
			moved.Add(1)
			t.Errorf("client %d pinned to %s: answered by %s (new cookie %q)", i, pinned[i], got, set)
		}
	})
	if moved.Load() > 0 {
		t.Fatalf("%d of %d requests left their backend", moved.Load(), sample*each)
	}

	// b3 fails its probe: once ejected, its clients move to others with a new cookie; the others stay.
	bs[3].sick.Store(true)
	victim := -1
	for i := range sample {
		if pinned[i] == bs[3].id {
			victim = i
			break
		}
	}
	deadline := time.Now().Add(logWaitTimeout)
	for {
		got, _ := send(t, s.addr, "/", "srv", cookies[victim])
		if got != bs[3].id {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b3 was not ejected")
		}
	}
	for i := range sample {
		got, set := send(t, s.addr, "/", "srv", cookies[i])
		switch {
		case pinned[i] == bs[3].id && (got == bs[3].id || set == ""):
			t.Errorf("client %d of the ejected b3: answered by %s, new cookie %q", i, got, set)
		case pinned[i] != bs[3].id && (got != pinned[i] || set != ""):
			t.Errorf("client %d of %s: answered by %s, new cookie %q", i, pinned[i], got, set)
		case pinned[i] == bs[3].id:
			// The new cookie holds.
			if again, set2 := send(t, s.addr, "/", "srv", set); again != got || set2 != "" {
				t.Errorf("client %d re-pinned to %s: then answered by %s (cookie %q)", i, got, again, set2)
			}
		}
	}
}

// TestMaglevThroughWorkers: maglev on a header through the real binary with 2 workers: every key
// goes to the same backend from both workers, and adding or removing one backend of 10 moves at
// most 1/10 + 2 points of the keys.
func TestMaglevThroughWorkers(t *testing.T) {
	var conf []backendConf
	for i := range 11 {
		b := newAffBackend(t, fmt.Sprint("b", i))
		conf = append(conf, backendConf{id: b.id, addr: b.addr, weight: 1})
	}
	dir := t.TempDir()
	keys := "policy: maglev\nhash_on: {header: X-User}"
	s := startSupervisor(t, filepath.Join(dir, "xlb.yaml"), filepath.Join(dir, "state"), func(addr string) string { return affinityYAML(addr, keys, conf[:10]) })
	ready, _ := s.awaitReady(t)
	const keysN = 2000
	lookup := func() []string {
		got := make([]string, keysN)
		parallel(keysN, func(i int) {
			got[i], _ = send(t, s.addr, "/", "", "", "X-User", fmt.Sprint("user-", i))
			if again, _ := send(t, s.addr, "/", "", "", "X-User", fmt.Sprint("user-", i)); again != got[i] {
				t.Errorf("key %d went to %s, then to %s", i, got[i], again)
			}
		})
		return got
	}
	movedShare := func(a, b []string) float64 {
		n := 0
		for i := range a {
			if a[i] != b[i] {
				n++
			}
		}
		return float64(n) / float64(len(a))
	}
	ten := lookup()
	from, gen := ready.end, ready.int("generation")
	for _, step := range []struct {
		name     string
		backends []backendConf
	}{{"adding b10", conf[:11]}, {"removing b3", append(append([]backendConf(nil), conf[:3]...), conf[4:10]...)}} {
		writeConfig(t, s.cfgPath, affinityYAML(s.addr, keys, step.backends), true)
		applied := s.awaitApplied(t, from, gen)
		from, gen = applied.end, applied.int("generation")
		share := movedShare(ten, lookup())
		t.Logf("%s: %.1f%% of %d keys moved", step.name, 100*share, keysN)
		if share > 0.1+0.02 {
			t.Errorf("%s: %.1f%% of the keys moved, want at most 1/10 + 2 points", step.name, 100*share)
		}
	}
}

// TestLeastRequestThroughWorkers: least_request sees every worker's requests in flight. Worker B
// is stopped (SIGSTOP) while 30 requests hang on backend slow through worker A; then A is
// stopped, fast is enabled, and every request that B now serves goes to fast: B's own count of
// slow is zero, the sum over workers 30. Per-worker counts would send B's requests to slow half
// the time.
func TestLeastRequestThroughWorkers(t *testing.T) {
	slow, fast := newAffBackend(t, "slow"), newAffBackend(t, "fast")
	dir := t.TempDir()
	conf := func(fastState string) []backendConf {
		return []backendConf{{id: "slow", addr: slow.addr, weight: 1}, {id: "fast", addr: fast.addr, weight: 1, state: fastState}}
	}
	s := startSupervisor(t, filepath.Join(dir, "xlb.yaml"), filepath.Join(dir, "state"), func(addr string) string {
		return affinityYAML(addr, "policy: least_request", conf("disabled"))
	})
	ready, pids := s.awaitReady(t)
	a, b := pids[0], pids[1]
	stop := func(pid int, sig syscall.Signal) {
		if err := syscall.Kill(pid, sig); err != nil {
			t.Fatal(err)
		}
	}
	stop(b, syscall.SIGSTOP)
	// kill returns before every thread of b has stopped: one still running could accept some of
	// the requests below and then stop holding them (seen: 4 of 30 never reached slow).
	awaitStopped(t, b)
	cont := sync.OnceFunc(func() { stop(b, syscall.SIGCONT) })
	defer cont()
	const hung = 30
	var wg sync.WaitGroup
	defer wg.Wait()
	defer slow.releaseAll()
	for range hung {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, err := oneShot.Get("http://" + s.addr + "/hang"); err == nil {
				res.Body.Close()
			}
		}()
	}
	for deadline := time.Now().Add(ioTimeout); slow.hanging.Load() < hung; time.Sleep(pollInterval) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests reached slow", slow.hanging.Load(), hung)
		}
	}
	cont()
	writeConfig(t, s.cfgPath, affinityYAML(s.addr, "policy: least_request", conf("")), true)
	s.awaitApplied(t, ready.end, ready.int("generation"))
	stop(a, syscall.SIGSTOP)
	awaitStopped(t, a)
	contA := sync.OnceFunc(func() { stop(a, syscall.SIGCONT) })
	defer contA()
	for i := range 100 {
		if got, _ := send(t, s.addr, "/", "", ""); got != "fast" {
			t.Fatalf("request %d, served by worker B, went to %s, which worker A keeps busy with %d requests", i, got, hung)
		}
	}
	contA()
}

// awaitStopped waits until every thread of pid is stopped by a signal (state T in
// /proc/PID/task/TID/stat).
func awaitStopped(t *testing.T, pid int) {
	t.Helper()
	testutil.WaitFor(t, ioTimeout, fmt.Sprintf("every thread of %d to stop", pid), func() bool {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		if err != nil || len(tasks) == 0 {
			return false
		}
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil {
				return false
			}
			// The state follows the command's closing parenthesis: "pid (comm) S ...".
			i := bytes.LastIndexByte(b, ')')
			if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
				return false
			}
		}
		return true
	})
}
