package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// countingBackend answers with its name and counts the requests it served.
type countingBackend struct {
	name string
	addr string
	n    atomic.Int64
}

func newCountingBackend(tb testing.TB, name string) *countingBackend {
	tb.Helper()
	b := &countingBackend{name: name}
	h := nameHandler(name)
	s := newBackend(tb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.n.Add(1)
		h.ServeHTTP(w, r)
	}))
	b.addr = addrOf(s)
	return b
}

// curlResult is what one request of a curl invocation returned, from -w curlWriteOut.
type curlResult struct {
	body     string
	status   int
	connects int // new connections curl opened for it: 0 when it reused a keep-alive one
}

// curlWriteOut ends each response of a curl invocation with a line that splitCurl parses. Bodies
// must not contain it.
const curlWriteOut = "\n@@ %{http_code} %{num_connects}\n"

// curlMany fetches url n times in one curl invocation (URL globbing, sequential requests on the
// connection curl keeps alive) with the extra args, and returns each result in order.
func curlMany(tb testing.TB, url string, n int, args ...string) []curlResult {
	tb.Helper()
	glob := fmt.Sprintf("%s?i=[1-%d]", url, n)
	out := curl(tb, append(args, "-w", curlWriteOut, glob)...)
	res := splitCurl(tb, out)
	if len(res) != n {
		tb.Fatalf("curl made %d requests, want %d; output:\n%s", len(res), n, tail(out))
	}
	return res
}

// splitCurl parses the output of a curl invocation that used -w curlWriteOut.
func splitCurl(tb testing.TB, out string) []curlResult {
	tb.Helper()
	var res []curlResult
	for {
		i := strings.Index(out, "\n@@ ")
		if i < 0 {
			break
		}
		var r curlResult
		r.body = out[:i]
		out = out[i+len("\n@@ "):]
		line, rest, _ := strings.Cut(out, "\n")
		if _, err := fmt.Sscanf(line, "%d %d", &r.status, &r.connects); err != nil {
			tb.Fatalf("curl -w line %q: %v", line, err)
		}
		out = rest
		res = append(res, r)
	}
	if out != "" {
		tb.Fatalf("curl output ends with %q after its last response", out)
	}
	return res
}

// tally checks that every result is a 200 and counts them by body, and counts new connections.
func tally(tb testing.TB, res []curlResult) (byBody map[string]int, connects int) {
	tb.Helper()
	byBody = make(map[string]int)
	for i, r := range res {
		if r.status != http.StatusOK {
			tb.Errorf("request %d: status %d, body %q", i+1, r.status, r.body)
			continue
		}
		byBody[r.body]++
		connects += r.connects
	}
	return byBody, connects
}

// TestRunFlagsWeightedSplit: 400 sequential GETs by one curl over one keep-alive connection are
// split 100/300 between backends of weights 1 and 3: smooth weighted round robin is exact over every
// full cycle of 4 picks.
func TestRunFlagsWeightedSplit(t *testing.T) {
	t.Parallel()
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	x := startXLB(t, runArgs("--backend", a.addr, "--backend", b.addr+",weight=3"))

	res := curlMany(t, x.url("/split"), 400)
	byBody, connects := tally(t, res)
	if byBody["a"] != 100 || byBody["b"] != 300 || len(byBody) != 2 {
		t.Errorf("responses by backend: %v, want map[a:100 b:300]", byBody)
	}
	if got := [2]int64{a.n.Load(), b.n.Load()}; got != [2]int64{100, 300} {
		t.Errorf("requests served by a and b: %v, want [100 300]", got)
	}
	if connects != 1 {
		t.Errorf("curl opened %d connections for 400 requests, want 1 (keep-alive)", connects)
	}
}

// TestRunConfigFile: `xlb run --config FILE` serves the listeners and backend sets of the file.
func TestRunConfigFile(t *testing.T) {
	t.Parallel()
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	path := filepath.Join(t.TempDir(), "xlb.yaml")
	x := startXLB(t, func(addr string) []string {
		cfg := fmt.Sprintf(`listeners:
  - address: %s
    backend_set: web
backend_sets:
  - name: web
    backends:
      - {id: a, address: %s, weight: 1}
      - {id: b, address: %s, weight: 3}
`, addr, a.addr, b.addr)
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{"run", "--config", path}
	})

	byBody, _ := tally(t, curlMany(t, x.url("/config"), 40))
	if byBody["a"] != 10 || byBody["b"] != 30 || len(byBody) != 2 {
		t.Errorf("responses by backend: %v, want map[a:10 b:30]", byBody)
	}
}

// TestRunConfigFileUnknownKey: a file with a misspelt key is refused at start: a non-zero exit
// and a message that names the key and its line.
func TestRunConfigFileUnknownKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bad.yaml")
	cfg := `listeners:
  - adress: 127.0.0.1:1
    backend_set: web
backend_sets:
  - name: web
    backends:
      - {id: a, address: 127.0.0.1:2, weight: 1}
`
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "run", "--config", path)
	if code := p.waitExitCode(readyTimeout); code == 0 {
		t.Errorf("exit status 0, want non-zero")
	}
	stderr := p.stderr.String()
	if !strings.Contains(stderr, `"adress"`) {
		t.Errorf("stderr does not name the unknown key \"adress\":\n%s", stderr)
	}
	if !strings.Contains(stderr, "bad.yaml:2:") {
		t.Errorf("stderr does not name the line of the key (bad.yaml:2:):\n%s", stderr)
	}
}

// TestRunBackendDown: with one of two backends refusing connections, every request is retried to
// the other: 50 requests, no failure.
func TestRunBackendDown(t *testing.T) {
	t.Parallel()
	live := newCountingBackend(t, "live")
	x := startXLB(t, runArgs("--backend", closedAddr(t), "--backend", live.addr,
		"--connect-timeout", "2s"))

	res := curlMany(t, x.url("/down"), 50)
	byBody, _ := tally(t, res)
	if byBody["live"] != 50 {
		t.Errorf("responses by backend: %v, want map[live:50]", byBody)
	}
	if n := live.n.Load(); n != 50 {
		t.Errorf("the live backend served %d requests, want 50", n)
	}
}

// TestRunRefusesWritableStateDir: a state directory that its group or everyone may write is
// refused at start, with what to do, before anything is bound or mapped: another user could
// replace the region every worker trusts, or the admin socket. The same directory made private
// is accepted.
func TestRunRefusesWritableStateDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o777, 0o770, 0o1777} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, "run", "--listen", freeAddr(t), "--backend", closedAddr(t), "--state-dir", dir)
		if code := p.waitExitCode(readyTimeout); code != 1 {
			t.Errorf("state directory mode %04o: exit status %d, want 1", mode, code)
		}
		if stderr := p.stderr.String(); !strings.Contains(stderr, "writable by its group or by everyone") || !strings.Contains(stderr, "chmod go-w") {
			t.Errorf("state directory mode %04o: stderr does not say why and what to do:\n%s", mode, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "region")); err == nil {
			t.Errorf("state directory mode %04o: a region was created in it", mode)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	x := startXLB(t, runArgs("--backend", closedAddr(t), "--state-dir", dir))
	x.signal(syscall.SIGTERM)
	if code := x.waitExitCode(stopTimeout); code != 0 {
		t.Errorf("with the directory private: exit status %d after SIGTERM, want 0", code)
	}
}
