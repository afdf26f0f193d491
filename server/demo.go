package server

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xlbproxy/xlb/dataplane/table"
	dataplanev1 "github.com/xlbproxy/xlb/gen/xlb/dataplane/v1"
	"github.com/xlbproxy/xlb/server/config"
	"github.com/xlbproxy/xlb/server/exit"
	"github.com/xlbproxy/xlb/server/supervisor"
)

// demoWeights are the weights of the demo's backends, b1 to b3.
var demoWeights = []int{1, 1, 2}

const (
	// demoBodyBytesMax bounds the request body a demo backend reads; past it, it answers 413.
	demoBodyBytesMax = 10 << 20
	// demoSet names the demo's backend set.
	demoSet = "demo"
	// demoWorkers is the demo's worker processes unless --workers says: more than one, to show that
	// they share the listener and the region.
	demoWorkers = 2
	// demoPrometheus is where the demo serves its metrics: a loopback port the kernel chooses.
	demoPrometheus = "127.0.0.1:0"
	// demoServingTimeout bounds the wait, once the supervisor is ready, for its workers to serve
	// the demo's backends: a --state-dir of an earlier run holds a region with other backends, supervisor.Served
	// first until the embedded control plane's set replaces it.
	demoServingTimeout = 30 * time.Second
	// demoPoll is the period of that wait.
	demoPoll = 10 * time.Millisecond
)

func demoUsage() string {
	var b strings.Builder
	b.WriteString(`Usage: xlb demo [--listen ADDR] [--state-dir DIR] [--workers N]

Runs what xlb run runs in production, over three demo backends that it starts in this process on
loopback ports chosen by the kernel (b1, b2 and b3, weights 1, 1 and 2): the supervisor, its worker
processes, the shared region they read the backends from, and the embedded control plane whose
admin API changes the backends live. Each backend answers with its id, the method, path and body
length of the request, and the X-Forwarded-For it received.

Once every worker serves, it prints on standard output what to try, with the real addresses and
paths: curl through the listener, a PutBackendSet on the control plane's admin API
(STATE_DIR/control.sock) that disables b1 live, the data plane's Status (STATE_DIR/admin.sock),
and the URL of its metrics for Prometheus (on a loopback port chosen by the kernel). The grpcurl
commands need grpcurl (bash tools/install.sh puts it in .tools/bin); xlb does not. The access log,
a JSON line per request, follows on standard output; the logs go to standard error.

It serves until SIGINT or SIGTERM, then stops as xlb run does: the workers finish what they have,
and the state directory, unless --state-dir gave it, is removed.

Flags:
`)
	printFlags(&b, newDemoFlags().defs)
	return b.String()
}

// demoFlags are the flags of `xlb demo` and their values.
type demoFlags struct {
	listen   string
	stateDir string // "": a temporary directory
	workers  int
	defs     []flagDef
}

func newDemoFlags() *demoFlags {
	f := &demoFlags{listen: config.DefaultListen, workers: demoWorkers}
	f.defs = []flagDef{
		{name: "listen", arg: "ADDR", usage: "the address to accept on, host:port (default " + config.DefaultListen + ")",
			set: func(s string) error {
				if err := config.CheckListenAddress(s); err != nil {
					return err
				}
				f.listen = s
				return nil
			}},
		{name: "state-dir", arg: "DIR", usage: "the state directory (the region file and the unix sockets), kept on exit (default: a new temporary directory, removed on exit)",
			set: func(s string) error {
				if s == "" {
					return errors.New("want a directory path")
				}
				f.stateDir = s
				return nil
			}},
		{name: "workers", arg: "N", usage: "the worker processes that serve traffic (default " + strconv.Itoa(demoWorkers) + ")",
			set: func(s string) (err error) { f.workers, err = config.ParseInt(s, 1, config.LimitMax); return err }},
	}
	return f
}

// demoCommand is `xlb demo`.
func (e *env) demoCommand(args []string) int {
	f := newDemoFlags()
	fs := flagSet("demo", f.defs)
	switch err := parseFlags(fs, args); {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(e.stdout, demoUsage())
		return exit.OK
	case err != nil:
		return e.usageError("demo", err)
	case fs.NArg() > 0:
		return e.usageError("demo", fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	log := config.LogConfig{}.Logger(e.stderr)
	log.Info("starting the demo", "version", Version())
	ctx, stop := e.stopContext()
	defer stop()
	return e.demo(ctx, log, f)
}

// demo starts the demo backends and, in front of them, a supervisor as xlb run does, with its
// workers and embedded control plane, until ctx ends; it prints what to try once the workers serve.
func (e *env) demo(ctx context.Context, log hclog.Logger, f *demoFlags) int {
	dlog := log.Named("demo")
	set, stopBackends, err := startDemoBackends(dlog)
	if err != nil {
		dlog.Error("cannot start the demo backends", "error", err)
		return exit.Failure
	}
	defer stopBackends()
	dir := f.stateDir
	if dir == "" {
		// Mode 0700, as the state directory must be. Removed after supervise has returned: its
		// workers have exited, and it has saved the region and removed its sockets.
		tmp, err := os.MkdirTemp("", "xlb-demo-")
		if err != nil {
			dlog.Error("cannot make a state directory", "error", err)
			return exit.Failure
		}
		defer func() {
			if err := os.RemoveAll(tmp); err != nil {
				dlog.Warn("cannot remove the state directory", "dir", tmp, "error", err)
			}
		}()
		dir = tmp
	}
	cfg := config.Config{
		Listeners:        []config.Listener{{Address: f.listen, BackendSet: demoSet}},
		BackendSets:      []table.Set{set},
		AccessLog:        "-",
		Workers:          f.workers,
		StateDir:         dir,
		PrometheusListen: demoPrometheus,
	}
	// The supervisor says once where it serves; the banner waits for the workers on a goroutine of
	// its own, as the supervisor's must not block.
	ready := make(chan supervisor.Served, 1)
	cmd := supervised{
		name:  "demo",
		parse: func([]string) (commandLine, error) { return commandLine{cfg: cfg}, nil }, // no file to reload
		flags: newRunFlags,
		usage: demoUsage,
		ready: func(sv supervisor.Served) { ready <- sv },
	}
	bctx, stopBanner := context.WithCancel(ctx)
	bannerDone := make(chan struct{})
	go func() {
		defer close(bannerDone)
		select {
		case sv := <-ready:
			if err := waitDemoServing(bctx, sv.StateDir, set, f.workers); err != nil {
				if bctx.Err() != nil {
					return
				}
				dlog.Warn("the workers do not serve the demo's backends yet; try anyway", "error", err)
			}
			fmt.Fprint(e.stdout, demoBanner(sv, set, f.workers, f.stateDir == ""))
		case <-bctx.Done():
		}
	}()
	code := e.supervise(ctx, log, commandLine{cfg: cfg}, cmd.ready)
	stopBanner()
	<-bannerDone
	return code
}

// startDemoBackends starts the demo's backends on loopback ports chosen by the kernel and returns
// their set, and a func that stops them.
func startDemoBackends(log hclog.Logger) (table.Set, func(), error) {
	set := table.Set{Name: demoSet}
	var (
		servers []*http.Server
		wg      sync.WaitGroup
	)
	stop := func() {
		for _, srv := range servers {
			srv.Close()
		}
		wg.Wait()
	}
	for i, weight := range demoWeights {
		id := fmt.Sprintf("b%d", i+1)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stop()
			return table.Set{}, nil, fmt.Errorf("demo backend %s: %w", id, err)
		}
		srv := &http.Server{
			Handler:           demoHandler(id, ln.Addr().String()),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
		}
		servers = append(servers, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				log.Error("demo backend failed", "backend", id, "error", err)
			}
		}()
		set.Backends = append(set.Backends, table.Backend{ID: id, Address: ln.Addr().String(), Weight: weight})
		log.Info("demo backend", "id", id, "address", ln.Addr().String(), "weight", weight)
	}
	return set, stop, nil
}

// waitDemoServing asks the data plane's Status on dir's admin socket, every demoPoll for up to
// demoServingTimeout, until it serves set (demoServes).
func waitDemoServing(ctx context.Context, dir string, set table.Set, workers int) error {
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, supervisor.AdminSocket), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := dataplanev1.NewDataPlaneAdminServiceClient(conn)
	ctx, cancel := context.WithTimeout(ctx, demoServingTimeout)
	defer cancel()
	tick := time.NewTicker(demoPoll)
	defer tick.Stop()
	var last error
	for {
		switch st, err := client.Status(ctx, &dataplanev1.StatusRequest{}); {
		case err != nil:
			last = err
		case demoServes(st, set, workers):
			return nil
		default:
			last = fmt.Errorf("generation %d, %d workers", st.GetGeneration(), len(st.GetWorkers()))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not within %v: %w", demoServingTimeout, last)
		case <-tick.C:
		}
	}
}

// demoServes tells whether st is a data plane whose workers, all of them, serve set: its backends,
// at their addresses, are those of the generation in force, which every worker has observed.
func demoServes(st *dataplanev1.StatusResponse, set table.Set, workers int) bool {
	if st.GetGeneration() == 0 || len(st.GetWorkers()) != workers {
		return false
	}
	for _, w := range st.GetWorkers() {
		if w.GetObservedGeneration() < st.GetGeneration() {
			return false
		}
	}
	var got, want []string
	for _, b := range st.GetBackendStates() {
		if b.GetBackendSet() == set.Name {
			got = append(got, b.GetBackendId()+" "+b.GetAddress())
		}
	}
	for _, b := range set.Backends {
		want = append(want, b.ID+" "+b.Address)
	}
	slices.Sort(got)
	slices.Sort(want)
	return slices.Equal(got, want)
}

// demoBanner is what the demo prints once it serves: what it runs, and commands to try, with the
// addresses and paths of sv. temp says the state directory is removed on exit.
func demoBanner(sv supervisor.Served, set table.Set, workers int, temp bool) string {
	url := shellQuote("http://" + sv.Listeners[0] + "/")
	var backends []string
	for _, b := range set.Backends {
		backends = append(backends, fmt.Sprintf("%s on %s (weight %d)", b.ID, b.Address, b.Weight))
	}
	removed := "kept on exit"
	if temp {
		removed = "removed on exit"
	}
	// The put disables b1 and keeps the others as they are.
	type backendJSON struct {
		ID      string `json:"id"`
		Address string `json:"address"`
		Port    int    `json:"port"`
		Weight  int    `json:"weight"`
		State   string `json:"state,omitempty"`
	}
	var put struct {
		BackendSet struct {
			Name     string        `json:"name"`
			Backends []backendJSON `json:"backends"`
		} `json:"backend_set"`
	}
	put.BackendSet.Name = set.Name
	for i, b := range set.Backends {
		host, port, _ := net.SplitHostPort(b.Address)
		p, _ := strconv.Atoi(port)
		bj := backendJSON{ID: b.ID, Address: host, Port: p, Weight: b.Weight}
		if i == 0 {
			bj.State = "BACKEND_STATE_DISABLED"
		}
		put.BackendSet.Backends = append(put.BackendSet.Backends, bj)
	}
	body, err := json.Marshal(put)
	if err != nil {
		panic(fmt.Sprintf("server: demo: marshal a put: %v", err)) // plain strings and ints
	}
	metrics := "no metrics listener"
	if sv.Prometheus != "" {
		metrics = "curl -s " + shellQuote("http://"+sv.Prometheus+"/metrics") + " | grep ^xlb_backend_requests_total"
	}
	return fmt.Sprintf(`
xlb demo: a supervisor and %d worker processes serve %s, over %s.
The supervisor writes the backends into a shared region that the workers read; an embedded control
plane holds them, and its admin API changes them live. State directory: %s (%s).

Send requests (each curl is a new connection, which either worker accepts); b3 answers twice as
often as b1 or b2:

  for i in 1 2 3 4 5 6 7 8; do curl -s %s | head -n 1; done
  curl -s -X POST --data 'hello, xlb' %secho

Disable b1 on the control plane (its admin API, on a unix socket of the state directory): every
worker serves the new backends within milliseconds, with no restart, and b1 gets no more requests
(send them again to see; BACKEND_STATE_ACTIVE puts b1 back):

  grpcurl -plaintext -unix -d %s %s xlb.admin.v1.AdminService/PutBackendSet

The data plane's status: its workers and the generation they serve, every backend's state and load:

  grpcurl -plaintext -unix %s xlb.dataplane.v1.DataPlaneAdminService/Status

The per-backend metrics, as Prometheus scrapes them:

  %s

xlb needs no grpcurl; bash tools/install.sh puts one in .tools/bin. The access log (a JSON line per
request) follows here. Ctrl-C stops the demo: the workers finish what they have, and it exits.

`, workers, url, strings.Join(backends, ", "), sv.StateDir, removed,
		url, url,
		shellQuote(string(body)), shellQuote(filepath.Join(sv.StateDir, supervisor.ControlSocket)),
		shellQuote(filepath.Join(sv.StateDir, supervisor.AdminSocket)),
		metrics)
}

// shellQuote is s as one word of a POSIX shell: as it is when it holds nothing the shell reads
// specially, else in single quotes.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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
