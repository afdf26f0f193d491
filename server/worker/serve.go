package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/server/config"
	"github.com/xlbproxy/xlb/server/exit"
)

// Env is what a worker needs from the process around it. Tests give buffers and a fake proxy.
type Env struct {
	Stdout, Stderr io.Writer
	// NewProxy makes the data plane. Nil means proxy.New.
	NewProxy func(proxy.Config) (Dataplane, error)
}

// Dataplane is what serving needs of a *proxy.Proxy.
type Dataplane interface {
	Follow(*table.Follower) error
	Refresh() (uint64, error)
	BackendMetrics() []proxy.BackendMetrics
	Serve(ln net.Listener, set string) error
	Shutdown(ctx context.Context) error
	Stats() proxy.Stats
}

// NewProxy is proxy.New as a Dataplane.
func NewProxy(cfg proxy.Config) (Dataplane, error) {
	p, err := proxy.New(cfg)
	if err != nil {
		return nil, err // never a typed nil in the interface
	}
	return p, nil
}

// Serve is the data plane of one process: it makes the proxy, lets start give it its backend
// sets, and serves lns (listener i for cfg.Listeners[i]'s set) until ctx ends or a listener fails.
// It closes lns before returning.
func (e Env) Serve(ctx context.Context, log hclog.Logger, cfg config.Config, lns []net.Listener, start func(Dataplane) error) int {
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
			return exit.Failure
		}
		// Closed after the proxy's shutdown below has returned, when nothing writes to it any more.
		defer closeLog()
		pcfg.AccessLog = w
	}
	newProxy := e.NewProxy
	if newProxy == nil {
		newProxy = NewProxy
	}
	p, err := newProxy(pcfg)
	if err != nil {
		closeListeners()
		log.Error("cannot start the proxy", "error", err)
		return exit.Failure
	}
	if err := start(p); err != nil {
		closeListeners()
		p.Shutdown(context.Background())
		log.Error("cannot start serving", "error", err)
		return exit.Failure
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

	code := exit.OK
	running := len(lns)
	select {
	case <-ctx.Done():
		log.Info("shutting down", "reason", context.Cause(ctx), "timeout", cfg.ShutdownTimeoutOrDefault())
	case r := <-results:
		running--
		code = exit.Failure
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
		code = exit.Failure
	}
	// Shutdown has stopped the accept loops; closing the listeners as well guarantees that every
	// Serve returns, so that none outlives serve.
	closeListeners()
	for ; running > 0; running-- {
		r := <-results
		if r.err != nil && !errors.Is(r.err, net.ErrClosed) {
			log.Error("serving failed", "address", r.addr, "error", r.err)
			code = exit.Failure
		}
	}
	st := p.Stats()
	log.Info("stopped", "requests", st.Requests, "retries", st.Retries, "backend_dials", st.Dials, "connect_failures", st.ConnectFailures,
		"answered_503", st.NoBackend, "answered_502", st.BadGateway, "answered_504", st.GatewayTimeout,
		"rejected", st.Rejected, "tls_handshake_failures", st.TLSHandshakeFailures)
	return code
}

// openAccessLog opens the access log named by path: "-" is standard output, which is not closed.
func (e Env) openAccessLog(path string) (io.Writer, func(), error) {
	if path == "-" {
		return e.Stdout, func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("server: access log: %w", err)
	}
	return f, func() { f.Close() }, nil
}
