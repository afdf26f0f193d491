package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/xlbproxy/xlb/dataplane/balance/sticky"
	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/dataplane/rawio"
	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/server/config"
	"github.com/xlbproxy/xlb/server/exit"
	"github.com/xlbproxy/xlb/server/telemetry"
)

// `xlb run` starts each worker by re-executing its own binary (/proc/self/exe, so that a worker is
// always the supervisor's version, even after the file on disk was replaced) as `xlb worker`
// (Command), with its Spec as JSON in the environment (SpecEnv) and these descriptors:
const (
	Command = "worker"
	SpecEnv = "XLB_WORKER_SPEC"

	FDRegion   = 3 // the shared region: sealed memory (dataplane/shm's doc.go)
	FDControl  = 4 // the read end of a pipe from the supervisor
	FDHealth   = 5 // the write end of the health pipe to the supervisor
	FDListener = 6 // the first listening socket; the others follow in the spec's order
)

// The control pipe carries one byte per published generation, telling an idle worker to look at
// the region now (a busy one has seen the generation word on its next request already). Its end
// of file means the supervisor is gone: the worker then stops accepting, drains and exits, so that
// no orphan serves a world nobody updates. This, not Pdeathsig, is how a worker learns of its
// supervisor's death: Pdeathsig fires when the thread that started the child exits, and Go's
// threads come and go.

// Spec is what a worker needs besides its descriptors. The supervisor fixes it when the
// worker starts; backend sets come from the region, never from here.
type Spec struct {
	Slot            int
	Sets            []string // the backend set of each inherited listener, in descriptor order
	Proxy           proxy.Config
	AccessLog       string
	ShutdownTimeout time.Duration
	Log             config.LogConfig
	MetricsSocket   string // where the worker reports its per-backend metrics
	// TLS is the TLS of each inherited listener, in descriptor order: nil for plain TCP.
	TLS []*config.ListenerTLS
	// TicketKeys is the supervisor's session ticket key file, "" when no listener has TLS.
	TicketKeys string
	// StickyKeys is the keys file of sticky cookies (STATE_DIR/sticky-keys or the configuration's
	// sticky_key_file), which the worker reads at start: a worker that cannot read it does not
	// start, and says which file. Empty means none (a random key of the worker's own: for tests).
	StickyKeys string
}

// Heartbeat is how often a worker writes its heartbeat and looks at the generation word even when
// neither a request nor its supervisor made it look.
const Heartbeat = time.Second

// Main is `xlb worker`: serve the inherited listeners from the inherited region until SIGTERM,
// SIGINT or the supervisor's end. It returns the exit status.
func (e Env) Main(args []string) int {
	// First of all, so that a SIGTERM of a worker still starting is a drain, not a kill.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP is the supervisor's (a reload); a hang-up of the terminal, sent to the whole process
	// group, must not end the workers behind its back.
	signal.Ignore(syscall.SIGHUP)
	var spec Spec
	if err := json.Unmarshal([]byte(os.Getenv(SpecEnv)), &spec); err != nil || len(args) > 0 {
		fmt.Fprintf(e.Stderr, "xlb worker: this command is started by xlb run, not by hand (%s: %v)\n", SpecEnv, err)
		return exit.Usage
	}
	log := spec.Log.Logger(e.Stderr).Named("worker").With("slot", spec.Slot, "pid", os.Getpid())

	region, err := shm.OpenFile(os.NewFile(FDRegion, "region"))
	if err != nil {
		log.Error("cannot map the shared region", "error", err)
		return exit.Failure
	}
	defer region.Close()
	// The pipe comes in blocking mode; in non-blocking mode os.File reads it through the poller, so
	// that closing it ends a pending read.
	if err := syscall.SetNonblock(FDControl, true); err != nil {
		log.Error("control pipe", "error", err)
		return exit.Failure
	}
	control := os.NewFile(FDControl, "control")
	defer control.Close()
	if err := syscall.SetNonblock(FDHealth, true); err != nil {
		log.Error("health pipe", "error", err)
		return exit.Failure
	}
	healthPipe := os.NewFile(FDHealth, "health")
	defer healthPipe.Close()
	notifier := newHealthNotifier(healthPipe)

	lns := make([]net.Listener, len(spec.Sets))
	listeners := make([]config.Listener, len(spec.Sets))
	for i, set := range spec.Sets {
		ln, err := rawio.NewListener(os.NewFile(uintptr(FDListener+i), fmt.Sprintf("listener %d", i)))
		if err != nil {
			log.Error("inherited listener", "index", i, "error", err)
			return exit.Failure
		}
		lns[i] = ln
		listeners[i] = config.Listener{Address: ln.Addr().String(), BackendSet: set}
	}
	term, err := newTerminator(spec.TLS, listeners, spec.TicketKeys, log.Named("tls"))
	if err != nil {
		log.Error("cannot terminate TLS", "error", err)
		return exit.Failure
	}
	lns = term.wrap(lns)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	term.watch(ctx)
	defer func() { cancel(nil); term.wait() }()

	follower := table.NewFollower(region, spec.Slot)
	cfg := config.Config{Listeners: listeners, Proxy: spec.Proxy, AccessLog: spec.AccessLog, ShutdownTimeout: spec.ShutdownTimeout}
	if spec.StickyKeys != "" {
		keys, err := sticky.LoadKeys(spec.StickyKeys)
		if err != nil {
			log.Error("cannot read the sticky cookie keys", "file", spec.StickyKeys, "error", err)
			return exit.Failure
		}
		cfg.Proxy.StickyKeys = keys
	}
	cfg.Proxy.HealthChanged = notifier.Signal
	nctx, stopNotifier := context.WithCancel(context.Background()) // it outlives the drain too
	defer stopNotifier()
	go notifier.run(nctx)
	// The metrics reporter outlives the serving by its last report.
	rctx, stopReporter := context.WithCancel(context.Background())
	reported := make(chan struct{})
	started := false
	code := e.Serve(ctx, log, cfg, lns, func(p Dataplane) error {
		if err := p.Follow(follower); err != nil {
			return err
		}
		follower.Beat(time.Now())
		go readControl(control, p, cancel)
		go beat(ctx, follower, p)
		if spec.MetricsSocket != "" {
			started = true
			go func() {
				defer close(reported)
				telemetry.RunReporter(rctx, spec.MetricsSocket, &telemetry.Reporter{Slot: spec.Slot, Metrics: p.BackendMetrics, Stats: p.Stats,
					Gen: func() uint64 { return region.Worker(spec.Slot).Observed }, Log: log})
			}()
		}
		return nil
	})
	stopReporter()
	if started {
		<-reported
	}
	return code
}

// readControl refreshes p on every byte from the supervisor, and ends the worker at the pipe's end.
func readControl(control *os.File, p Dataplane, cancel context.CancelCauseFunc) {
	buf := make([]byte, 64)
	for {
		n, err := control.Read(buf)
		if n > 0 {
			p.Refresh()
		}
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				cancel(errors.New("the supervisor is gone"))
			}
			return
		}
	}
}

// beat writes the worker's heartbeat and looks at the generation word, until ctx ends.
func beat(ctx context.Context, f *table.Follower, p Dataplane) {
	t := time.NewTicker(Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			f.Beat(now)
			p.Refresh()
		}
	}
}
