package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests of `xlb demo`: the real binary, and the commands its banner prints, run as a user who
// pastes them would (sh -c, with the grpcurl of .tools/bin first on PATH). They know the commands
// only from the banner: what each does is checked, not how it is spelt.

const (
	// demoLoopRuns is how many times TestDemo runs the banner's request loop to see the weights.
	demoLoopRuns = 5
	// demoBannerEnd is the banner's last line's start: once it is out, the banner is whole.
	demoBannerEnd = "request) follows here."
)

var (
	// demoWorkersRE finds the worker count in the banner; demoStateDirRE the state directory.
	demoWorkersRE  = regexp.MustCompile(`a supervisor and (\d+) worker processes serve`)
	demoStateDirRE = regexp.MustCompile(`State directory: (\S+) \((removed|kept) on exit\)`)
	// demoAnswerRE is the first line of a demo backend's answer.
	demoAnswerRE = regexp.MustCompile(`(?m)^backend (b[123]) \(127\.0\.0\.1:\d+\)$`)
)

// demoBanner is what the banner of a running demo says.
type demoBanner struct {
	text     string
	workers  int
	stateDir string
	removed  bool // the banner says the state directory is removed on exit
	// The commands, one line each, as printed.
	loop, post, put, status, metrics string
}

// waitDemoBanner waits for p's banner on standard output and reads it: every command is an
// indented line, told apart by what it runs.
func waitDemoBanner(t *testing.T, p *proc) demoBanner {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var text string
	for {
		out := p.stdout.String()
		if i := strings.Index(out, demoBannerEnd); i >= 0 {
			text = out[:i]
			break
		}
		if p.hasExited() {
			t.Fatalf("%v exited with %v before its banner:\n%s", p, p.cmd.ProcessState, out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no banner on stdout within %v:\n%s", readyTimeout, out)
		}
		<-tick.C
	}
	b := demoBanner{text: text}
	m := demoWorkersRE.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the banner does not say how many workers serve:\n%s", text)
	}
	b.workers, _ = strconv.Atoi(m[1])
	if m = demoStateDirRE.FindStringSubmatch(text); m == nil {
		t.Fatalf("the banner does not name its state directory:\n%s", text)
	}
	b.stateDir, b.removed = m[1], m[2] == "removed"
	for line := range strings.Lines(text) {
		if !strings.HasPrefix(line, "  ") {
			continue
		}
		cmd := strings.TrimSpace(line)
		var slot *string
		switch {
		case strings.HasPrefix(cmd, "for ") && strings.Contains(cmd, "curl "):
			slot = &b.loop
		case strings.HasPrefix(cmd, "curl ") && strings.Contains(cmd, "POST"):
			slot = &b.post
		case strings.HasPrefix(cmd, "grpcurl ") && strings.HasSuffix(cmd, "/PutBackendSet"):
			slot = &b.put
		case strings.HasPrefix(cmd, "grpcurl ") && strings.HasSuffix(cmd, "/Status"):
			slot = &b.status
		case strings.HasPrefix(cmd, "curl ") && strings.Contains(cmd, "/metrics"):
			slot = &b.metrics
		default:
			t.Fatalf("the banner's command %q is none this test knows:\n%s", cmd, text)
		}
		if *slot != "" {
			t.Fatalf("the banner has two commands like %q:\n%s", cmd, text)
		}
		*slot = cmd
	}
	for what, cmd := range map[string]string{"request loop": b.loop, "POST": b.post, "PutBackendSet": b.put, "Status": b.status, "metrics": b.metrics} {
		if cmd == "" {
			t.Fatalf("the banner has no %s command:\n%s", what, text)
		}
	}
	return b
}

// shell runs a command line of the banner with sh -c, grpcurl's directory first on PATH, and
// returns its standard output and error.
func shell(tb testing.TB, line string) (stdout, stderr string, err error) {
	tb.Helper()
	grpcurl, err := grpcurlPath()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), curlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(grpcurl)+string(os.PathListSeparator)+os.Getenv("PATH"))
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// mustShell is shell that fails the test when the command fails.
func mustShell(tb testing.TB, line string) string {
	tb.Helper()
	out, stderr, err := shell(tb, line)
	if err != nil {
		tb.Fatalf("sh -c %q: %v\n--- stdout:\n%s--- stderr:\n%s", line, err, out, stderr)
	}
	return out
}

// answered runs the banner's request loop runs times and counts the answers by backend; every
// line of its output must be a backend's answer.
func answered(t *testing.T, loop string, runs int) map[string]int {
	t.Helper()
	by := make(map[string]int)
	for range runs {
		out := mustShell(t, loop)
		for line := range strings.Lines(out) {
			m := demoAnswerRE.FindStringSubmatch(strings.TrimSuffix(line, "\n"))
			if m == nil {
				t.Fatalf("%s printed %q, want only answers of the demo's backends:\n%s", loop, line, out)
			}
			by[m[1]]++
		}
	}
	return by
}

// demoStatusJSON is the part of the Status that TestDemo reads.
type demoStatusJSON struct {
	Pid        int    `json:"pid"`
	Generation string `json:"generation"` // a uint64: a string in protojson
	Workers    []struct {
		Pid                int    `json:"pid"`
		ObservedGeneration string `json:"observedGeneration"`
	} `json:"workers"`
	BackendStates []struct {
		BackendID string `json:"backendId"`
		State     string `json:"state"`
	} `json:"backendStates"`
}

// servesState tells whether every worker of st serves its generation, where backend id has state.
func (st demoStatusJSON) servesState(id, state string) bool {
	for _, w := range st.Workers {
		if w.ObservedGeneration != st.Generation {
			return false
		}
	}
	for _, b := range st.BackendStates {
		if b.BackendID == id {
			return b.State == state
		}
	}
	return false
}

// runStatus runs the banner's Status command and decodes its answer.
func runStatus(t *testing.T, line string) demoStatusJSON {
	t.Helper()
	out := mustShell(t, line)
	var st demoStatusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return st
}

// parentOf is the parent pid of process pid, from /proc.
func parentOf(pid int) (int, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses, the last ')' ends it.
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	if i < 0 || len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, stat)
	}
	return strconv.Atoi(f[1])
}

// TestDemo: `xlb demo` runs what `xlb run` runs, and every command its banner prints works as
// printed. The request loop is answered by the three backends by weight (b3, of weight 2, more
// than b1 and b2, of 1); the POST is echoed; the PutBackendSet on the embedded control plane
// disables b1 live, and then only b2 and b3 answer; the Status lists the banner's number of
// workers, processes of the demo's; the metrics command shows xlb_ per-backend counters. SIGTERM
// stops it with status 0, and its temporary state directory is gone.
func TestDemo(t *testing.T) {
	t.Parallel()
	p := startProc(t, "demo", "--listen", "127.0.0.1:0")
	b := waitDemoBanner(t, p)
	if !b.removed {
		t.Errorf("the banner says the state directory is kept, want removed without --state-dir:\n%s", b.text)
	}
	if _, err := os.Stat(b.stateDir); err != nil {
		t.Fatalf("the banner's state directory: %v", err)
	}

	by := answered(t, b.loop, demoLoopRuns)
	if by["b1"] == 0 || by["b2"] == 0 || by["b3"] <= by["b1"] || by["b3"] <= by["b2"] {
		t.Errorf("%d runs of %s were answered %v; want every backend, and b3 (weight 2) more than b1 and b2 (weight 1)",
			demoLoopRuns, b.loop, by)
	}
	if post := mustShell(t, b.post); !regexp.MustCompile(`(?s)^backend b[123] .*\nmethod: POST\n.*body bytes: 10\n`).MatchString(post) {
		t.Errorf("%s answered:\n%s\nwant a demo backend that saw a POST of 10 bytes", b.post, post)
	}

	st := runStatus(t, b.status)
	if st.Pid != p.pid() {
		t.Errorf("Status names pid %d, want the demo's, %d", st.Pid, p.pid())
	}
	if len(st.Workers) != b.workers || b.workers < 1 {
		t.Errorf("Status lists %d workers, want the banner's %d", len(st.Workers), b.workers)
	}
	for _, w := range st.Workers {
		if ppid, err := parentOf(w.Pid); err != nil || ppid != p.pid() {
			t.Errorf("worker %d: parent %d (%v), want the demo, %d", w.Pid, ppid, err, p.pid())
		}
	}

	if out := mustShell(t, b.put); !strings.Contains(out, `"version"`) {
		t.Fatalf("%s answered %q, want the new version", b.put, out)
	}
	// Each poll starts a grpcurl process: polled every rpcPollInterval.
	tick := time.NewTicker(rpcPollInterval)
	defer tick.Stop()
	deadline := time.Now().Add(applyTimeout)
	for st = runStatus(t, b.status); !st.servesState("b1", "disabled"); st = runStatus(t, b.status) {
		if time.Now().After(deadline) {
			t.Fatalf("within %v of the put, Status says %+v; want b1 disabled, served by every worker", applyTimeout, st)
		}
		<-tick.C
	}
	if by := answered(t, b.loop, demoLoopRuns); by["b1"] != 0 || by["b2"] == 0 || by["b3"] == 0 {
		t.Errorf("after the put, %d runs of %s were answered %v; want b2 and b3 only", demoLoopRuns, b.loop, by)
	}

	// The workers report every second; the supervisor's counters show the backends that answered.
	deadline = time.Now().Add(applyTimeout)
	for {
		out, _, err := shell(t, b.metrics) // grep fails while there is no line
		_, ok2 := promValue(out, "xlb_backend_requests_total", []string{`xlb_backend_id="b2"`})
		v3, ok3 := promValue(out, "xlb_backend_requests_total", []string{`xlb_backend_id="b3"`})
		if err == nil && ok2 && ok3 && v3 != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("within %v, %s printed:\n%s\nwant xlb_backend_requests_total of b2 and b3 (err %v)", applyTimeout, b.metrics, out, err)
		}
		<-tick.C
	}

	p.signal(syscall.SIGTERM)
	if code := p.waitExitCode(stopTimeout); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	if _, err := os.Stat(b.stateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary state directory %s after the exit: %v, want it removed", b.stateDir, err)
	}
}

// TestDemoStateDir: with --state-dir, the demo uses that directory and keeps it. A second demo on
// it finds the first one's region, whose backends are gone: its banner comes only once the workers
// serve its own backends, so the request loop printed is answered at once.
func TestDemoStateDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	for run := 1; run <= 2; run++ {
		p := startProc(t, "demo", "--listen", "127.0.0.1:0", "--state-dir", dir, "--workers", "1")
		b := waitDemoBanner(t, p)
		if abs, _ := filepath.Abs(dir); b.stateDir != abs || b.removed {
			t.Errorf("run %d: the banner says state directory %s, removed %v; want %s, kept", run, b.stateDir, b.removed, abs)
		}
		if b.workers != 1 {
			t.Errorf("run %d: the banner says %d workers, want --workers 1", run, b.workers)
		}
		if by := answered(t, b.loop, 1); by["b1"]+by["b2"]+by["b3"] == 0 {
			t.Errorf("run %d: %s got no answer", run, b.loop)
		}
		p.signal(syscall.SIGTERM)
		if code := p.waitExitCode(stopTimeout); code != 0 {
			t.Errorf("run %d: exit status %d after SIGTERM, want 0", run, code)
		}
		if _, err := os.Stat(filepath.Join(dir, "region")); err != nil {
			t.Fatalf("run %d: the region file after the exit: %v, want it kept", run, err)
		}
	}
}
