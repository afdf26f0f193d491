package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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
	"github.com/xlbproxy/xlb/server/exit"
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

// SetBackends is what the tests' start gives the proxy: the config's sets.
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

// testEnv is an Env whose proxy is fp (or newErr), logging to the buffer returned.
func testEnv(fp *fakeProxy, newErr error) (Env, *testutil.SyncBuffer) {
	stderr := new(testutil.SyncBuffer)
	return Env{
		Stdout: new(testutil.SyncBuffer),
		Stderr: stderr,
		NewProxy: func(cfg proxy.Config) (Dataplane, error) {
			if newErr != nil {
				return nil, newErr
			}
			fp.cfg = cfg
			return fp, nil
		},
	}, stderr
}

// serve binds cfg's listeners and serves them with e.Serve, giving the proxy cfg's sets, as a
// worker does with the region's; ready, when not nil, gets the bound addresses.
func serve(ctx context.Context, e Env, log hclog.Logger, cfg config.Config, ready func([]net.Addr)) int {
	var lns []net.Listener
	for _, l := range cfg.Listeners {
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			panic(err)
		}
		lns = append(lns, ln)
	}
	return e.Serve(ctx, log, cfg, lns, func(p Dataplane) error {
		if err := p.(*fakeProxy).SetBackends(cfg.BackendSets); err != nil {
			return fmt.Errorf("the proxy refused the backend sets: %w", err)
		}
		if ready != nil {
			addrs := make([]net.Addr, len(lns))
			for i, ln := range lns {
				addrs[i] = ln.Addr()
			}
			ready(addrs)
		}
		return nil
	})
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
	e, stderr := testEnv(fp, nil)
	accessLog := filepath.Join(t.TempDir(), "access.jsonl")
	cfg := twoListeners(accessLog)

	readyc := make(chan []net.Addr, 1)
	done := make(chan int, 1)
	go func() {
		done <- serve(ctx, e, config.LogConfig{}.Logger(stderr), cfg, func(a []net.Addr) { readyc <- a })
	}()

	addrs := testutil.Receive(t, readyc, wait, "ready")
	sets := []string{testutil.Receive(t, fp.serving, wait, "Serve"), testutil.Receive(t, fp.serving, wait, "Serve")}
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
	if code := testutil.Receive(t, done, wait, "exit"); code != exit.OK {
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
	e, stderr := testEnv(fp, nil)
	if code := serve(ctx, e, config.LogConfig{}.Logger(stderr), twoListeners(path), nil); code != exit.OK {
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
	tests := []struct {
		name    string
		cfg     func(config.Config) config.Config
		fake    func(*fakeProxy)
		newErr  error
		wantLog string
	}{
		{name: "proxy refuses its config", newErr: errors.New("proxy: no"), wantLog: `[ERROR] xlb: cannot start the proxy: error="proxy: no"`},
		{name: "proxy refuses the sets", fake: func(f *fakeProxy) { f.setErr = errors.New("proxy: bad set") },
			wantLog: `[ERROR] xlb: cannot start serving: error="the proxy refused the backend sets: proxy: bad set"`},
		{name: "serving fails", fake: func(f *fakeProxy) { f.serveErr = errors.New("accept: too many files") },
			wantLog: `error="accept: too many files"`},
		{name: "access log cannot open", cfg: func(c config.Config) config.Config {
			c.AccessLog = filepath.Join(t.TempDir(), "no", "such", "dir", "access.jsonl")
			return c
		}, wantLog: "[ERROR] xlb: cannot open the access log"},
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
			e, stderr := testEnv(fp, tt.newErr)
			done := make(chan int, 1)
			go func() { done <- serve(context.Background(), e, config.LogConfig{}.Logger(stderr), cfg, nil) }()
			if code := testutil.Receive(t, done, wait, "exit"); code != exit.Failure {
				t.Errorf("exit %d, want 1", code)
			}
			if log := stderr.String(); !strings.Contains(log, tt.wantLog) {
				t.Errorf("log:\n%s\nwant %q", log, tt.wantLog)
			}
		})
	}
}
