package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestAccessLog: with --access-log PATH, after requests and SIGTERM the file holds one JSON object
// per request, in order, with its method, target, status and backend.
func TestAccessLog(t *testing.T) {
	t.Parallel()
	backend := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ok"))
	}))
	path := filepath.Join(t.TempDir(), "access.jsonl")
	x := startXLB(t, runArgs("--backend", addrOf(backend), "--access-log", path))

	type entry struct {
		Method  string  `json:"method"`
		Target  string  `json:"target"`
		Status  int     `json:"status"`
		Backend *string `json:"backend"`
	}
	want := []entry{
		{Method: "GET", Target: "/a?x=1&y=%20z", Status: 200},
		{Method: "GET", Target: "/missing", Status: 404},
		{Method: "POST", Target: "/b", Status: 200},
		{Method: "HEAD", Target: "/c", Status: 200},
		{Method: "DELETE", Target: "/d/e", Status: 200},
	}
	// One curl invocation, one request per --next section, over the connection curl keeps.
	out := curl(t, "-w", curlWriteOut, x.url(want[0].Target),
		"--next", "-w", curlWriteOut, x.url(want[1].Target),
		"--next", "-w", curlWriteOut, "--data", "hello", x.url(want[2].Target),
		"--next", "-w", curlWriteOut, "--head", x.url(want[3].Target),
		"--next", "-w", curlWriteOut, "-X", "DELETE", x.url(want[4].Target))
	res := splitCurl(t, out)
	if len(res) != len(want) {
		t.Fatalf("curl made %d requests, want %d:\n%s", len(res), len(want), out)
	}
	for i, r := range res {
		if r.status != want[i].Status {
			t.Errorf("%s %s: status %d, want %d", want[i].Method, want[i].Target, r.status, want[i].Status)
		}
	}

	x.signal(syscall.SIGTERM)
	if code := x.waitExitCode(stopTimeout); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if len(data) == 0 || data[len(data)-1] != '\n' || len(lines) != len(want) {
		t.Fatalf("access log has %d lines (ending in a newline: %v), want %d:\n%s",
			len(lines), len(data) > 0 && data[len(data)-1] == '\n', len(want), data)
	}
	for i, line := range lines {
		var fields map[string]any
		if err := json.Unmarshal(line, &fields); err != nil {
			t.Errorf("line %d is not a JSON object: %v\n%s", i+1, err, line)
			continue
		}
		for _, k := range []string{"method", "target", "status", "backend"} {
			if _, ok := fields[k]; !ok {
				t.Errorf("line %d has no %q field: %s", i+1, k, line)
			}
		}
		var got entry
		if err := json.Unmarshal(line, &got); err != nil {
			t.Errorf("line %d: %v\n%s", i+1, err, line)
			continue
		}
		w := want[i]
		if got.Method != w.Method || got.Target != w.Target || got.Status != w.Status {
			t.Errorf("line %d: method %q target %q status %d; want %q %q %d\n%s",
				i+1, got.Method, got.Target, got.Status, w.Method, w.Target, w.Status, line)
		}
		if got.Backend == nil || *got.Backend != addrOf(backend) {
			t.Errorf("line %d: backend %v, want %q\n%s", i+1, fields["backend"], addrOf(backend), line)
		}
	}
}

// TestAccessLogWorkersShareAPipe: four workers writing their access logs to the same standard
// output pipe never interleave inside a line, however long the lines: each write is whole lines of
// at most PIPE_BUF bytes, which a pipe keeps in one piece.
func TestAccessLogWorkersShareAPipe(t *testing.T) {
	t.Parallel()
	backend := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	x := startXLB(t, runArgs("--backend", addrOf(backend), "--access-log", "-", "--workers", "4"))

	const clients, perClient = 8, 150
	target := "/" + strings.Repeat("t", 1500) // three lines of this fill a pipe's atomic write
	done := make(chan error, clients)
	for c := 0; c < clients; c++ {
		go func() {
			_, stderr, err := curlErr("-sS", "-o", "/dev/null", "-w", "%{http_code}\n", fmt.Sprintf("%s?c=%d&i=[1-%d]", x.url(target), c, perClient))
			if err != nil {
				err = fmt.Errorf("%v: %s", err, stderr)
			}
			done <- err
		}()
	}
	for c := 0; c < clients; c++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	x.signal(syscall.SIGTERM)
	if code := x.waitExitCode(stopTimeout); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	out := x.stdout.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != clients*perClient {
		t.Errorf("%d access log lines, want %d", len(lines), clients*perClient)
	}
	for i, line := range lines {
		var e struct {
			Target string `json:"target"`
			Status int    `json:"status"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Status != 200 || !strings.HasPrefix(e.Target, target+"?c=") {
			t.Fatalf("line %d is not one whole entry (%v):\n%.300s", i+1, err, line)
		}
	}
}
