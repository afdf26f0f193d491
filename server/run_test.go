package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
	"github.com/xlbproxy/xlb/server/exit"
)

// wait bounds every wait of these tests; it is a deadline, never a pause.
const wait = 10 * time.Second

// testEnv is an env whose stop context is ctx.
func testEnv(ctx context.Context) (*env, *testutil.SyncBuffer, *testutil.SyncBuffer) {
	stdout, stderr := new(testutil.SyncBuffer), new(testutil.SyncBuffer)
	return &env{
		stdout: stdout,
		stderr: stderr,
		stopContext: func() (context.Context, context.CancelFunc) {
			return context.WithCancel(ctx)
		},
		exe: "/proc/self/exe",
	}, stdout, stderr
}

// TestRunCommand goes through the command line, the file, the supervisor and a real worker process
// (this test binary, re-executed in the worker role), to a real backend and back.
func TestRunCommand(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the backend")
	}))
	defer backend.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a race with another process for this port is possible, and fails the test loudly
	dir := t.TempDir()
	path := filepath.Join(dir, "xlb.yaml")
	conf := "listeners: [{address: \"" + addr + "\", backend_set: s}]\n" +
		"backend_sets: [{name: s, backends: [{id: x, address: \"" + backend.Listener.Addr().String() + "\"}]}]\n" +
		"log: {format: json}\n"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	e, stdout, stderr := testEnv(ctx)
	done := make(chan int, 1)
	go func() {
		done <- e.main([]string{"run", "--config", path, "--workers", "1", "--state-dir", filepath.Join(dir, "state"),
			"--access-log", "-"})
	}()
	testutil.WaitFor(t, wait, "the ready line", func() bool { return strings.Contains(stderr.String(), `"@message":"ready"`) })
	res, err := http.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "hello from the backend" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	stop()
	if code := testutil.Receive(t, done, wait, "exit"); code != exit.OK {
		t.Errorf("exit %d, want 0; stderr:\n%s", code, stderr)
	}
	log := stderr.String()
	for _, want := range []string{`"@module":"xlb"`, `"@message":"listening"`, `"@module":"xlb.worker"`, `"@message":"stopped"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
	if !strings.Contains(stdout.String(), `"target":"/x"`) {
		t.Errorf("the worker's access log on standard output lacks the request:\n%s", stdout)
	}
}
