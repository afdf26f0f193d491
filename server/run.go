package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/server/config"
)

// Exit statuses of the xlb command.
const (
	// exitOK: the command did what was asked; for run and demo, a clean shutdown.
	exitOK = 0
	// exitFailure: starting or serving failed (a listen error, the proxy refused its config, ...).
	exitFailure = 1
	// exitUsage: the command line or the configuration it points at is wrong.
	exitUsage = 2
)

// env is what the commands need from the process around them. Main fills it with the real thing;
// tests give buffers, a context they cancel themselves, and a fake proxy.
type env struct {
	stdout, stderr io.Writer
	// stopContext returns a context that ends when the process is asked to stop (SIGINT, SIGTERM),
	// and a func that releases it.
	stopContext func() (context.Context, context.CancelFunc)
	// newProxy makes the data plane.
	newProxy func(proxy.Config) (dataplane, error)
	// exe is the binary that the supervisor starts as its workers: /proc/self/exe, this very
	// binary even when the file it came from was replaced since.
	exe string
	// binary is the path this process was started from, which an upgrade starts again: the
	// new binary is whatever is there then.
	binary string
}

// dataplane is what serving needs of a *proxy.Proxy.
type dataplane interface {
	SetBackends([]table.Set) error
	Follow(*table.Follower) error
	Refresh() (uint64, error)
	BackendMetrics() []proxy.BackendMetrics
	Serve(ln net.Listener, set string) error
	Shutdown(ctx context.Context) error
	Stats() proxy.Stats
}

// osEnv is the env of the real process.
func osEnv(stdout, stderr io.Writer) *env {
	return &env{
		stdout:      stdout,
		stderr:      stderr,
		stopContext: signalContext,
		newProxy:    newProxy,
		exe:         "/proc/self/exe",
		binary:      executable(),
	}
}

// executable is the path of this process's binary, as it was when the process started.
func executable() string {
	p, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return strings.TrimSuffix(p, " (deleted)")
}

// signalContext ends on the first SIGINT or SIGTERM. After it, the signals get their default
// behaviour back, so a second Ctrl-C kills the process at once instead of waiting for the shutdown.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

func newProxy(cfg proxy.Config) (dataplane, error) {
	p, err := proxy.New(cfg)
	if err != nil {
		return nil, err // never a typed nil in the interface
	}
	return p, nil
}

// newLogger makes the process's one root logger, named "xlb", writing to w.
func newLogger(c config.LogConfig, w io.Writer) hclog.Logger {
	level := c.Level
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "xlb",
		Level:      level,
		JSONFormat: c.JSON,
		Output:     w,
		Color:      hclog.ColorOff,
	})
}

// serve runs the load balancer that cfg describes in this one process, with the backend sets of
// cfg, until ctx ends or a listener fails, then shuts the proxy down within cfg's shutdown timeout.
// The tests of serveOn come here; every command runs a supervisor and workers instead (supervise).
// ready, when not nil, is called once every listener is bound, with their addresses in the order
// of cfg.Listeners. serve returns the exit status: exitOK after a clean shutdown, exitFailure when
// anything failed.
func (e *env) serve(ctx context.Context, log hclog.Logger, cfg config.Config, ready func([]net.Addr)) int {
	if err := cfg.Check(); err != nil {
		log.Error("invalid configuration", "error", err)
		return exitFailure
	}
	lns, err := listen(cfg.Listeners, false)
	if err != nil {
		log.Error("cannot listen", "error", err)
		return exitFailure
	}
	return e.serveOn(ctx, log, cfg, lns, func(p dataplane) error {
		if err := p.SetBackends(cfg.BackendSets); err != nil {
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

// listen binds every listener, or none; with reusePort, each socket with SO_REUSEPORT.
func listen(ls []config.Listener, reusePort bool) ([]net.Listener, error) {
	// No TCP keep-alive probes on client connections: the idle timeout closes idle ones, and the
	// four setsockopt calls per accepted connection are a cost that a connection per request pays.
	lc := net.ListenConfig{KeepAlive: -1}
	if reusePort {
		lc.Control = func(network, address string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	lns := make([]net.Listener, 0, len(ls))
	for _, l := range ls {
		ln, err := lc.Listen(context.Background(), "tcp", l.Address)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// serveOn is the data plane of one process: it makes the proxy, lets start give it its backend
// sets, and serves lns (listener i for cfg.Listeners[i]'s set) until ctx ends or a listener fails.
// It closes lns before returning.
func (e *env) serveOn(ctx context.Context, log hclog.Logger, cfg config.Config, lns []net.Listener, start func(dataplane) error) int {
	closeListeners := func() {
		for _, ln := range lns {
			ln.Close() // an error here means it is closed already: Serve or Shutdown closed it
		}
	}
	pcfg := cfg.Proxy
	pcfg.Logger = log.Named("proxy")
	if cfg.AccessLog != "" {
		w, closeLog, err := e.openAccessLog(cfg.AccessLog)
		if err != nil {
			closeListeners()
			log.Error("cannot open the access log", "error", err)
			return exitFailure
		}
		// Closed after the proxy's shutdown below has returned, when nothing writes to it any more.
		defer closeLog()
		pcfg.AccessLog = w
	}
	p, err := e.newProxy(pcfg)
	if err != nil {
		closeListeners()
		log.Error("cannot start the proxy", "error", err)
		return exitFailure
	}
	if err := start(p); err != nil {
		closeListeners()
		p.Shutdown(context.Background())
		log.Error("cannot start serving", "error", err)
		return exitFailure
	}

	// Every Serve goroutine sends exactly one result; the channel holds them all, so none blocks.
	type result struct {
		addr string
		err  error
	}
	results := make(chan result, len(lns))
	for i, ln := range lns {
		set := cfg.Listeners[i].BackendSet
		log.Info("listening", "address", ln.Addr().String(), "backend_set", set)
		go func() {
			results <- result{ln.Addr().String(), p.Serve(ln, set)}
		}()
	}

	code := exitOK
	running := len(lns)
	select {
	case <-ctx.Done():
		log.Info("shutting down", "reason", context.Cause(ctx), "timeout", cfg.ShutdownTimeoutOrDefault())
	case r := <-results:
		running--
		code = exitFailure
		if r.err == nil {
			r.err = errors.New("server: serve returned before shutdown")
		}
		log.Error("serving failed; shutting down", "address", r.addr, "error", r.err)
	}

	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeoutOrDefault())
	defer cancel()
	switch err := p.Shutdown(sctx); {
	case errors.Is(err, context.DeadlineExceeded):
		log.Warn("shutdown timeout passed; closed the connections still open", "timeout", cfg.ShutdownTimeoutOrDefault())
	case err != nil:
		log.Error("shutdown failed", "error", err)
		code = exitFailure
	}
	// Shutdown has stopped the accept loops; closing the listeners as well guarantees that every
	// Serve returns, so that none outlives serve.
	closeListeners()
	for ; running > 0; running-- {
		r := <-results
		if r.err != nil && !errors.Is(r.err, net.ErrClosed) {
			log.Error("serving failed", "address", r.addr, "error", r.err)
			code = exitFailure
		}
	}
	st := p.Stats()
	log.Info("stopped", "requests", st.Requests, "retries", st.Retries, "backend_dials", st.Dials, "connect_failures", st.ConnectFailures,
		"answered_503", st.NoBackend, "answered_502", st.BadGateway, "answered_504", st.GatewayTimeout,
		"rejected", st.Rejected)
	return code
}

// openAccessLog opens the access log named by path: "-" is standard output, which is not closed.
func (e *env) openAccessLog(path string) (io.Writer, func(), error) {
	if path == "-" {
		return e.stdout, func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("server: access log: %w", err)
	}
	return f, func() { f.Close() }, nil
}
