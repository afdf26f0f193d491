package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/proxy"
)

// demoWeights are the weights of the demo's backends, b1 to b3.
var demoWeights = []int{1, 1, 2}

const (
	// demoBodyBytesMax bounds the request body a demo backend reads; past it, it answers 413.
	demoBodyBytesMax = 10 << 20
	// demoSet names the demo's backend set.
	demoSet = "demo"
)

func demoUsage() string {
	var b strings.Builder
	b.WriteString(`Usage: xlb demo [--listen ADDR]

Starts three demo backends on loopback ports chosen by the kernel, and the load balancer in front of
them with weights 1, 1 and 2, serving until SIGINT or SIGTERM. Each backend answers with its id, the
method, path and body length of the request, and the X-Forwarded-For it received. The access log goes
to standard output.

Flags:
`)
	printFlags(&b, demoFlags(new(string)))
	return b.String()
}

func demoFlags(listen *string) []flagDef {
	return []flagDef{
		{name: "listen", arg: "ADDR", usage: "the address to accept on, host:port (default " + defaultListen + ")",
			set: func(s string) error {
				if err := checkListenAddress(s); err != nil {
					return err
				}
				*listen = s
				return nil
			}},
	}
}

// demoCommand is `xlb demo`.
func (e *env) demoCommand(args []string) int {
	listen := defaultListen
	fs := flagSet("demo", demoFlags(&listen))
	switch err := parseFlags(fs, args); {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(e.stdout, demoUsage())
		return exitOK
	case err != nil:
		return e.usageError("demo", err)
	case fs.NArg() > 0:
		return e.usageError("demo", fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	log := newLogger(LogConfig{}, e.stderr)
	log.Info("starting the demo", "version", Version())
	ctx, stop := e.stopContext()
	defer stop()
	return e.demo(ctx, log, listen)
}

// demo runs the demo backends and, in front of them, the load balancer on listen, until ctx ends.
func (e *env) demo(ctx context.Context, log hclog.Logger, listen string) int {
	dlog := log.Named("demo")
	set := proxy.BackendSet{Name: demoSet}
	var (
		servers []*http.Server
		wg      sync.WaitGroup
	)
	defer func() {
		for _, srv := range servers {
			srv.Close()
		}
		wg.Wait()
	}()
	for i, weight := range demoWeights {
		id := fmt.Sprintf("b%d", i+1)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			dlog.Error("cannot listen for a demo backend", "error", err)
			return exitFailure
		}
		srv := &http.Server{
			Handler:           demoHandler(id, ln.Addr().String()),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          dlog.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
		}
		servers = append(servers, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				dlog.Error("demo backend failed", "backend", id, "error", err)
			}
		}()
		set.Backends = append(set.Backends, proxy.Backend{ID: id, Address: ln.Addr().String(), Weight: weight})
		dlog.Info("demo backend", "id", id, "address", ln.Addr().String(), "weight", weight)
	}

	cfg := Config{
		Listeners:   []Listener{{Address: listen, BackendSet: demoSet}},
		BackendSets: []proxy.BackendSet{set},
		AccessLog:   "-",
	}
	return e.serve(ctx, log, cfg, func(addrs []net.Addr) {
		url := "http://" + addrs[0].String()
		fmt.Fprintf(e.stdout, `
xlb demo: %s balances over 3 backends, weights 1, 1 and 2. Try:

  curl -s %s/
  curl -s -X POST --data 'hello, xlb' %s/echo

Ctrl-C stops it.

`, url, url, url)
	})
}

// demoHandler answers every request with the backend's id and what it saw of the request.
func demoHandler(id, addr string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, demoBodyBytesMax))
		if err != nil {
			http.Error(w, fmt.Sprintf("backend %s: reading the body: %v", id, err), http.StatusRequestEntityTooLarge)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "backend %s (%s)\nmethod: %s\npath: %s\nbody bytes: %d\nx-forwarded-for: %s\n",
			id, addr, r.Method, r.URL.RequestURI(), n, r.Header.Get("X-Forwarded-For"))
	})
}
