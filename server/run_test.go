package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/internal/testutil"
	"github.com/xlbproxy/xlb/server/config"
)

// wait bounds every wait of these tests; it is a deadline, never a pause.
const wait = 10 * time.Second

// fakeProxy stands in for *proxy.Proxy: Serve blocks until Shutdown, or fails at once with
// serveErr.
type fakeProxy struct {
	cfg  proxy.Config
	sets []table.Set
	// serving receives the set of each Serve call, when it starts.
	serving  chan string
	serveErr error
	setErr   error

	stopOnce sync.Once
	stopped  chan struct{}
}

func newFakeProxy() *fakeProxy {
	return &fakeProxy{serving: make(chan string, 16), stopped: make(chan struct{})}
}

func (f *fakeProxy) SetBackends(sets []table.Set) error {
	f.sets = sets
	return f.setErr
}

func (f *fakeProxy) Serve(ln net.Listener, set string) error {
	f.serving <- set
	if f.serveErr != nil {
		return f.serveErr
	}
	<-f.stopped
	return nil
}

func (f *fakeProxy) Shutdown(ctx context.Context) error {
	f.stopOnce.Do(func() { close(f.stopped) })
	return nil
}

func (f *fakeProxy) Stats() proxy.Stats { return proxy.Stats{} }

func (f *fakeProxy) Follow(*table.Follower) error { return errors.New("fakeProxy: Follow") }

func (f *fakeProxy) Refresh() (uint64, error) { return 0, errors.New("fakeProxy: Refresh") }

func (f *fakeProxy) BackendMetrics() []proxy.BackendMetrics { return nil }

func (f *fakeProxy) shutdownCalled() bool {
	select {
	case <-f.stopped:
		return true
	default:
		return false
	}
}

// testEnv is an env whose stop context is ctx and whose proxy is fp (or newErr).
func testEnv(ctx context.Context, fp *fakeProxy, newErr error) (*env, *testutil.SyncBuffer, *testutil.SyncBuffer) {
	stdout, stderr := new(testutil.SyncBuffer), new(testutil.SyncBuffer)
	return &env{
		stdout: stdout,
		stderr: stderr,
		stopContext: func() (context.Context, context.CancelFunc) {
			return context.WithCancel(ctx)
		},
		newProxy: func(cfg proxy.Config) (dataplane, error) {
			if newErr != nil {
				return nil, newErr
			}
			fp.cfg = cfg
			return fp, nil
		},
	}, stdout, stderr
}

// receive waits for one value of ch.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("no %s within %v", what, wait)
		panic("unreachable")
	}
}

func twoListeners(accessLog string) config.Config {
	return config.Config{
		Listeners: []config.Listener{{Address: "127.0.0.1:0", BackendSet: "web"}, {Address: "127.0.0.1:0", BackendSet: "api"}},
		BackendSets: []table.Set{
			{Name: "web", Backends: []table.Backend{{ID: "a", Address: "127.0.0.1:1", Weight: 1}}},
			{Name: "api"},
		},
		AccessLog: accessLog,
		Proxy:     proxy.Config{Retries: 3},
	}
}

func TestServeUntilStopped(t *testing.T) {
	fp := newFakeProxy()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	e, _, stderr := testEnv(ctx, fp, nil)
	accessLog := filepath.Join(t.TempDir(), "access.jsonl")
	cfg := twoListeners(accessLog)

	readyc := make(chan []net.Addr, 1)
	done := make(chan int, 1)
	go func() {
		done <- e.serve(ctx, newLogger(config.LogConfig{}, stderr), cfg, func(a []net.Addr) { readyc <- a })
	}()

	addrs := receive(t, readyc, "ready")
	sets := []string{receive(t, fp.serving, "Serve"), receive(t, fp.serving, "Serve")}
	if !(sets[0] == "web" && sets[1] == "api" || sets[0] == "api" && sets[1] == "web") {
		t.Errorf("Serve was called for %q, want web and api", sets)
	}
	// The listeners are real: a client can connect while serving.
	for _, a := range addrs {
		c, err := net.Dial("tcp", a.String())
		if err != nil {
			t.Errorf("dial %s: %v", a, err)
			continue
		}
		c.Close()
	}
	if fp.shutdownCalled() {
		t.Fatal("Shutdown before the stop")
	}
	stop()
	if code := receive(t, done, "exit"); code != exitOK {
		t.Errorf("exit %d, want 0; log:\n%s", code, stderr)
	}
	if !fp.shutdownCalled() {
		t.Error("no Shutdown")
	}

	if fp.cfg.Retries != 3 || fp.cfg.Logger == nil || fp.cfg.AccessLog == nil {
		t.Errorf("proxy config %+v: want the config.Config's Retries, a Logger and an AccessLog", fp.cfg)
	}
	if len(fp.sets) != 2 || fp.sets[0].Name != "web" {
		t.Errorf("SetBackends(%+v), want the config.Config's sets", fp.sets)
	}
	if fi, err := os.Stat(accessLog); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("access log: %v %v, want a file of mode 0644", fi, err)
	}
	log := stderr.String()
	for i, a := range addrs {
		want := "[INFO]  xlb: listening: address=" + a.String() + " backend_set=" + cfg.Listeners[i].BackendSet
		if !strings.Contains(log, want) {
			t.Errorf("log has no %q:\n%s", want, log)
		}
	}
	for _, want := range []string{"xlb: shutting down", "xlb: stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("log has no %q:\n%s", want, log)
		}
	}
	// The listeners are closed after the shutdown.
	for _, a := range addrs {
		if c, err := net.Dial("tcp", a.String()); err == nil {
			c.Close()
			t.Errorf("%s still accepts after the shutdown", a)
		}
	}
}

func TestServeAppendsToTheAccessLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.jsonl")
	if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fp := newFakeProxy()
	ctx, stop := context.WithCancel(context.Background())
	stop()
	e, _, stderr := testEnv(ctx, fp, nil)
	if code := e.serve(ctx, newLogger(config.LogConfig{}, stderr), twoListeners(path), nil); code != exitOK {
		t.Fatalf("exit %d; log:\n%s", code, stderr)
	}
	if _, err := io.WriteString(fp.cfg.AccessLog, "new\n"); !errors.Is(err, os.ErrClosed) {
		t.Errorf("writing the access log after serve returned: %v, want it closed", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "old\n" {
		t.Errorf("access log %q, want the old content kept", data)
	}
}

func TestServeFailures(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tests := []struct {
		name    string
		cfg     func(config.Config) config.Config
		fake    func(*fakeProxy)
		newErr  error
		wantLog string
	}{
		{name: "listen fails", cfg: func(c config.Config) config.Config {
			c.Listeners = append(c.Listeners, config.Listener{Address: busy.Addr().String(), BackendSet: "web"})
			return c
		}, wantLog: `[ERROR] xlb: cannot listen: error="listen tcp ` + busy.Addr().String() + `: bind: address already in use"`},
		{name: "proxy refuses its config", newErr: errors.New("proxy: no"), wantLog: `[ERROR] xlb: cannot start the proxy: error="proxy: no"`},
		{name: "proxy refuses the sets", fake: func(f *fakeProxy) { f.setErr = errors.New("proxy: bad set") },
			wantLog: `[ERROR] xlb: cannot start serving: error="the proxy refused the backend sets: proxy: bad set"`},
		{name: "serving fails", fake: func(f *fakeProxy) { f.serveErr = errors.New("accept: too many files") },
			wantLog: `error="accept: too many files"`},
		{name: "access log cannot open", cfg: func(c config.Config) config.Config {
			c.AccessLog = filepath.Join(t.TempDir(), "no", "such", "dir", "access.jsonl")
			return c
		}, wantLog: "[ERROR] xlb: cannot open the access log"},
		{name: "invalid config", cfg: func(c config.Config) config.Config { c.Listeners[0].BackendSet = "nope"; return c },
			wantLog: `[ERROR] xlb: invalid configuration: error="server: config: listener 127.0.0.1:0: no backend set named \"nope\""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp := newFakeProxy()
			if tt.fake != nil {
				tt.fake(fp)
			}
			cfg := twoListeners("")
			if tt.cfg != nil {
				cfg = tt.cfg(cfg)
			}
			// The stop never comes: serve must return on its own.
			e, _, stderr := testEnv(context.Background(), fp, tt.newErr)
			done := make(chan int, 1)
			go func() { done <- e.serve(context.Background(), newLogger(config.LogConfig{}, stderr), cfg, nil) }()
			if code := receive(t, done, "exit"); code != exitFailure {
				t.Errorf("exit %d, want 1", code)
			}
			if log := stderr.String(); !strings.Contains(log, tt.wantLog) {
				t.Errorf("log:\n%s\nwant %q", log, tt.wantLog)
			}
		})
	}
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
	e, stdout, stderr := testEnv(ctx, nil, nil)
	e.newProxy, e.exe = newProxy, "/proc/self/exe"
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
	if code := receive(t, done, "exit"); code != exitOK {
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

func TestNewLogger(t *testing.T) {
	tests := []struct {
		cfg       config.LogConfig
		wantLevel hclog.Level
	}{
		{config.LogConfig{}, hclog.Info},
		{config.LogConfig{Level: hclog.Trace}, hclog.Trace},
		{config.LogConfig{Level: hclog.Off}, hclog.Off},
	}
	for _, tt := range tests {
		if got := newLogger(tt.cfg, io.Discard).GetLevel(); got != tt.wantLevel {
			t.Errorf("newLogger(%+v) level %v, want %v", tt.cfg, got, tt.wantLevel)
		}
	}
	var buf bytes.Buffer
	newLogger(config.LogConfig{}, &buf).Named("proxy").Info("hello")
	if !strings.Contains(buf.String(), "[INFO]  xlb.proxy: hello") {
		t.Errorf("log %q, want the root named xlb", buf.String())
	}
}
