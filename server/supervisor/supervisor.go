package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xlbproxy/xlb/clients/xds"
	"github.com/xlbproxy/xlb/dataplane/monitor"
	"github.com/xlbproxy/xlb/dataplane/shm"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
	"github.com/xlbproxy/xlb/server/config"
	"github.com/xlbproxy/xlb/server/exit"
	"github.com/xlbproxy/xlb/server/rpc"
	"github.com/xlbproxy/xlb/server/sysd"
	"github.com/xlbproxy/xlb/server/telemetry"
	"github.com/xlbproxy/xlb/server/worker"
)

// DefaultWorkersDoc is how help describes the default of --workers.
const DefaultWorkersDoc = "one per two CPUs, at least one"

// defaultWorkers is the worker count when none is given: one per two CPUs the process may run on,
// each with GOMAXPROCS 2 (workerProcs). Chosen by bench/run.sh on a 2-CPU machine, ratios to nginx
// in the same run (bench/RESULTS.md, "Worker processes"): one worker of GOMAXPROCS 2 against two
// of GOMAXPROCS 1 did POST 0.95-0.99x nginx's requests/s against 0.82-0.94x, close-per-request
// 0.88-0.95x against 0.67-0.75x (every accept on a shared socket wakes every worker), and as well
// per CPU-second, while two were ahead on keep-alive GET (1.07-1.09x against 0.91-0.97x, p99
// 0.89-1.04x against 1.10-1.25x). Four workers on two CPUs were behind on everything. Larger
// machines were not measured: there, one worker per two CPUs keeps the pairing measured here.
func defaultWorkers() int { return max(1, runtime.NumCPU()/2) }

// workerProcs is each worker's GOMAXPROCS when the environment does not set one: the CPUs shared
// out among the workers, at least one each. Go's scheduler costs less per request with fewer Ps
// (fewer idle Ps to wake and steal from), and the workers together still use every CPU.
func workerProcs(workers int) int { return max(1, runtime.NumCPU()/max(1, workers)) }

// Timing of the supervisor's loop; the core's is in package supervisor.
const (
	// reloadDebounce coalesces the burst of events of one edit of the configuration file.
	reloadDebounce = 5 * time.Millisecond
	// firstSyncTimeout bounds the wait for the control plane's first sets on a fresh region
	// before the workers start anyway.
	firstSyncTimeout = 10 * time.Second
)

// supervisor is `xlb run`: it owns the state directory, the shared region and the listening
// sockets, starts the workers and restarts them when they crash, and turns each change of the
// configuration file's backend sets into a new generation of the region.
type supervisor struct {
	o   Options
	log hclog.Logger
	// reloadCfg reads the configuration file at path again, with the command line's flags laid
	// over it; nil when flags gave everything.
	reloadCfg func() (config.Config, error)
	path      string        // the configuration file; empty when flags gave everything
	cfg       config.Config // the configuration in force; its listeners and settings are fixed at start

	region  *shm.Region
	writer  *shm.Writer
	slots   *regionSlots // the region as the monitor uses it, which a rebuild replaces
	sockets [][]*os.File // the listening sockets: [group][listener], one group per worker or one for all
	sets    []string     // the backend set of each listener

	core       *Core               // the decisions about the workers
	workers    int                 // how many
	procs      map[int]*workerProc // by pid: the workers started and not yet released
	exits      chan workerExit
	handedOver bool       // to the new supervisor of an upgrade
	copy       regionCopy // the region file, as last saved

	tickets    *ticketKeeper // the session ticket keys of TLS listeners; nil without one
	stickyKeys string        // the sticky cookie keys file, which every worker reads

	stateDir  string
	current   map[string]*discoveryv1.VersionedBackendSet // the sets of the region's generation, as sent
	applyReqs chan applyReq                               // responses of the control plane, from the xds client
	saves     chan savedState                             // to the goroutine that writes the applied file
	embedded  *embeddedCP                                 // xlb run's control plane; nil for xlb dataplane

	lock        *os.File            // the state directory's lock, handed on by an upgrade
	listenAddrs []string            // the listeners' bound addresses
	inherit     *inherited          // what an upgrade handed this supervisor; nil after it is ready
	sockFiles   []*rpc.UnixListener // the state directory's unix sockets, published once ready

	load          *telemetry.Totals // the workers' metrics
	metricsSocket string            // where the workers report them
	promAddr      string            // the Prometheus listener's bound address; "" without one

	monitor     *monitor.Monitor    // the health of every backend of the region
	regionSets  []shm.Set           // the sets of the region's generation in force, with their health slots
	probeTLS    map[string]probeTLS // the TLS files of the monitor's probes, by set (health.go)
	healthW     *os.File            // the write end of the health pipe, which every worker inherits
	healthWake  chan struct{}       // the monitor changed routes: wake the workers
	upgrade     *upgradeState
	upgradeReqs chan upgradeReq
	upgradeDone chan upgradeResult
	statusReqs  chan statusReq
}

// Options is what Run needs besides the context and the logger.
type Options struct {
	// Config is the configuration at start. Its listeners and settings stay fixed; a reload
	// changes only the backend sets.
	Config config.Config
	// File is the configuration file; "" when the flags gave everything. Reload reads it again
	// with the command line's flags laid over it as at start; nil without a file.
	File   string
	Reload func() (config.Config, error)
	// Exe is the binary started as the workers: /proc/self/exe, this very binary even when the
	// file it came from was replaced since. Binary is the path this process was started from,
	// which an upgrade starts again: the new binary is whatever is there then.
	Exe, Binary string
	// Stdout and Stderr are the workers' and an upgrade's new binary's.
	Stdout, Stderr io.Writer
	// Version is this build's: told to the control plane, in Status, and on an upgrade's pipe.
	Version string
	// Ready, when not nil, is called once, on the supervisor's goroutine, when the supervisor first
	// serves (every worker runs the generation in force). It must not block.
	Ready func(Served)
}

// Served is where a supervisor that became ready serves, for a command that tells its user (xlb
// demo).
type Served struct {
	Listeners  []string // the bound address of each listener, in the order of config.Config.Listeners
	StateDir   string   // absolute: where admin.sock and control.sock are
	Prometheus string   // the Prometheus listener's bound address; "" without one
}

// The state directory's unix sockets a user may dial.
const (
	AdminSocket   = adminSocket
	ControlSocket = controlSocket
)

// workerProc is a worker's process, from its start to its release.
type workerProc struct {
	cmd     *exec.Cmd
	control *os.File // the write end of the control pipe
}

type workerExit struct {
	slot, pid int
	err       error
	ran       time.Duration
}

// Run is the supervisor of `xlb run` and `xlb dataplane` until ctx ends; it returns the exit
// status.
func Run(ctx context.Context, log hclog.Logger, o Options) int {
	cfg := o.Config
	if err := cfg.Check(); err != nil {
		log.Error("invalid configuration", "error", err)
		return exit.Failure
	}
	workers := cfg.Workers
	if workers == 0 {
		workers = defaultWorkers()
	}
	dir := cfg.StateDir
	if dir == "" {
		var err error
		if dir, err = defaultStateDir(); err != nil {
			log.Error("no state directory", "error", err)
			return exit.Failure
		}
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs // the control socket's address must not depend on the working directory
	}
	// The new binary of an upgrade inherits the lock, the region and the sockets; every failure
	// before it is ready is told to the old one, which keeps serving.
	in, err := takeUpgrade()
	if err != nil {
		log.Error("cannot take over from the running xlb", "error", err)
		return exit.Failure
	}
	startFailed := func(msg string, err error) int {
		log.Error(msg, "error", err)
		if in != nil {
			in.fail(fmt.Errorf("%s: %w", msg, err))
		}
		return exit.Failure
	}
	var lock *os.File
	var region *shm.Region
	var fresh bool
	var damage error // of a region file moved aside and rebuilt now
	if in != nil {
		lock, region = in.lock, in.region
		log.Info("taking over from the running xlb", "generation", region.Generation())
		if !region.Sealed() {
			log.Info("the region inherited is a file, not sealed memory (the running xlb is older): it is sealed from the next restart on")
		}
	} else {
		sd, err := lockStateDir(dir)
		if err != nil {
			log.Error("cannot use the state directory", "error", err)
			return exit.Failure
		}
		lock = sd.lock
		var aside string
		region, fresh, aside, damage, err = sd.openRegion(cfg.Region)
		if damage != nil {
			logDamage(log, filepath.Join(dir, regionFile), aside, damage)
		}
		if err != nil {
			lock.Close()
			log.Error("cannot open the shared region", "error", err)
			return exit.Failure
		}
	}
	defer lock.Close()
	var s *supervisor
	defer func() {
		if s != nil {
			region = s.region // a rebuild replaces it
			s.saveRegion()    // the copy a restart serves (a hand-over leaves it to the new one)
		}
		region.Close()
	}()
	caps := region.Capacities()
	if !fresh && in == nil && cfg.Region != (shm.Capacities{}) {
		log.Warn("the region file keeps the capacities it was created with; remove it to resize", "state_dir", dir,
			"sets", caps.Sets, "backends", caps.Backends, "string_bytes", caps.StringBytes, "workers", caps.Workers)
	}
	if workers > caps.Workers {
		return startFailed("more workers than the region has slots for", fmt.Errorf("%d workers, %d slots", workers, caps.Workers))
	}
	regionOf := make([]int, workers)
	if in == nil {
		// Slots left by a previous supervisor: their workers saw their pipe end and are draining.
		for i := 0; i < caps.Workers; i++ {
			region.ReleaseWorker(i)
		}
		for i := range regionOf {
			regionOf[i] = i
		}
	} else if regionOf, err = freeSlots(region, workers); err != nil {
		return startFailed("no worker slots", err)
	}

	s = &supervisor{
		o: o, log: log, path: o.File, reloadCfg: o.Reload, cfg: cfg,
		region: region,
		writer: shm.NewWriter(region),
		core: New(Config{Regions: regionOf, StallTimeout: cfg.WorkerStallTimeoutOrDefault(),
			ShutdownTimeout: cfg.ShutdownTimeoutOrDefault(), Logger: log}),
		workers:     workers,
		procs:       make(map[int]*workerProc, workers),
		exits:       make(chan workerExit, workers),
		stateDir:    dir,
		applyReqs:   make(chan applyReq),
		saves:       make(chan savedState, 1),
		lock:        lock,
		inherit:     in,
		upgradeReqs: make(chan upgradeReq),
		upgradeDone: make(chan upgradeResult, 1),
		statusReqs:  make(chan statusReq),
		healthWake:  make(chan struct{}, 1),
		slots:       &regionSlots{},
	}
	s.slots.r.Store(region)
	s.copy = regionCopy{gen: region.Generation(), epoch: region.HealthEpoch()}
	s.copy.fi, _ = os.Stat(filepath.Join(dir, regionFile)) // nil: saved at the first heartbeat
	// Sockets of processes killed before they could remove them; this one's names are free then.
	removeStaleSockets(dir, log)
	saved := make(chan struct{})
	go saver(dir, s.saves, log, saved)
	defer func() {
		close(s.saves)
		<-saved
	}()
	if damage != nil {
		// The sets last applied go into the new region, under the generations after theirs.
		var gen uint64
		if s.current, gen, err = readApplied(dir); err != nil {
			log.Warn("the applied backend sets are unknown; asking the control plane for every set", "error", err)
			s.current = map[string]*discoveryv1.VersionedBackendSet{}
		}
		s.writer = shm.NewWriterAfter(region, gen)
	} else if s.current, err = loadApplied(dir, region.Generation()); err != nil {
		log.Warn("the applied backend sets are unknown; asking the control plane for every set", "error", err)
		s.current = map[string]*discoveryv1.VersionedBackendSet{}
	}
	if err := s.startTLS(); err != nil {
		return startFailed("cannot terminate TLS", err)
	}
	if s.stickyKeys, err = stickyKeys(dir, cfg.StickyKeyFile, log); err != nil {
		return startFailed("cannot read the sticky cookie keys", err)
	}
	if err := s.takeSockets(); err != nil {
		s.closeSockets()
		return startFailed("cannot listen", err)
	}
	defer s.closeSockets()

	// Health: the monitor takes up every backend's machine where the region has it (a restart or
	// an upgrade keeps every ejection), and the workers' health pipe wakes it.
	healthR, healthW, err := os.Pipe()
	if err != nil {
		return startFailed("cannot make the health pipe", err)
	}
	defer healthR.Close()
	defer healthW.Close()
	s.healthW = healthW
	s.monitor = monitor.New(monitor.Config{Slots: s.slots, Changed: s.healthChanged, TrialTimeout: trialTimeout(&cfg), Logger: log.Named("health")})
	monCtx, stopMonitor := context.WithCancel(context.Background())
	monDone := make(chan struct{})
	go func() { s.monitor.Run(monCtx); close(monDone) }()
	defer func() { stopMonitor(); <-monDone }()
	go readHealthPipe(healthR, s.monitor)
	if s.regionSets, err = regionSetsIn(region); err != nil {
		log.Warn("cannot read the region's backend sets; their health is watched from the next generation", "error", err)
	}
	s.updateMonitor()
	if damage != nil && len(s.current) > 0 {
		s.republish()
	}
	if cfg.PidFile != "" {
		defer sysd.RemovePIDFile(cfg.PidFile)
	}

	// Static stability: what the region holds is served first, before the control plane (or the
	// file) is heard from, so that a restart never waits on it or is broken by it.
	fresh = region.Generation() == 0
	if !fresh && in == nil && damage == nil {
		log.Info("serving the region's last generation", "generation", region.Generation(), "sets", len(s.current))
	}
	stopAdmin, err := s.serveLocalAdmin(dir, log.Named("admin"))
	if err != nil {
		return startFailed("cannot serve the local admin service", err)
	}
	defer stopAdmin()
	load, socket, stopMetrics, err := telemetry.Serve(dir, cfg.MetricsIntervalOrDefault(), log.Named("metrics"))
	if err != nil {
		return startFailed("cannot serve the workers' metrics", err)
	}
	s.load, s.metricsSocket = load, socket
	defer stopMetrics()
	if cfg.OTLPEndpoint != "" || cfg.PrometheusListen != "" {
		exp := telemetry.Export{OTLPEndpoint: cfg.OTLPEndpoint, OTLPInsecure: cfg.OTLPInsecure, Interval: cfg.MetricsIntervalOrDefault(),
			PrometheusListen: cfg.PrometheusListen, Instance: cfg.NodeIDOrDefault(), Version: s.o.Version}
		stopOTel, promAddr, err := exp.Start(context.Background(),
			telemetry.Sources{Backends: s.load.Snapshot, Health: s.monitor.Status, Conns: s.load.ConnStats}, log.Named("otel"))
		if err != nil {
			return startFailed("cannot export metrics", err)
		}
		s.promAddr = promAddr
		// The last export, after the workers' last reports.
		defer func() {
			if err := stopOTel(context.Background()); err != nil {
				log.Warn("the last metrics export failed", "error", err)
			}
		}()
	}

	// The backend sets come from a control plane: the embedded one of xlb run, fed by the file, or
	// xlb dataplane's.
	targets := cfg.ControlPlanes
	creds := make([]credentials.TransportCredentials, len(targets))
	for i, target := range targets {
		if creds[i], err = cfg.ClientSecurity.DialCreds(target); err != nil {
			return startFailed("cannot reach the control plane", err)
		}
	}
	if len(targets) == 0 {
		cp, err := startEmbedded(dir, log.Named("controlplane"), cfg.BackendSets, cfg.MetricsIntervalOrDefault())
		if err != nil {
			return startFailed("cannot start the embedded control plane", err)
		}
		defer cp.stop()
		s.embedded, targets, creds = cp, []string{cp.target()}, []credentials.TransportCredentials{insecure.NewCredentials()}
		s.sockFiles = append(s.sockFiles, cp.ln)
	}
	if in == nil {
		s.publishSockets() // no other supervisor answers there
	}
	// One connection per control plane, in the order given: the xds client and the load reports
	// move to the next when a stream to one fails (clients/xds).
	planes := make([]xds.ControlPlane, 0, len(targets))
	conns := make([]grpc.ClientConnInterface, 0, len(targets))
	for i, target := range targets {
		conn, err := grpc.NewClient(target, append(xds.DialOptions(), grpc.WithTransportCredentials(creds[i]))...)
		if err != nil {
			log.Error("cannot reach the control plane", "address", target, "error", err)
			return exit.Failure
		}
		defer conn.Close()
		planes = append(planes, xds.ControlPlane{Address: target, Conn: conn})
		conns = append(conns, conn)
	}
	xctx, stopXDS := context.WithCancel(context.Background())
	xdone := make(chan struct{})
	applied, gen := versionsOf(s.current), region.Generation()
	go func() {
		defer close(xdone)
		xds.Run(xctx, xds.Config{
			ControlPlanes: planes,
			Node:          &discoveryv1.Node{Id: cfg.NodeIDOrDefault(), Build: s.o.Version},
			Subscribe:     listenedSets(cfg.Listeners),
			Initial: func() (map[string]string, uint64, []*discoveryv1.WorkerStatus) {
				return applied, gen, nil
			},
			Apply:  s.xdsApply,
			Logger: log,
		})
	}()
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		telemetry.ReportLoad(xctx, conns, cfg.NodeIDOrDefault(), s.load, func() []*loadv1.BackendHealth { return backendHealth(s.monitor.Status(xctx)) }, log.Named("load"))
	}()
	// Runs before the deferred cleanups above: the clients stop before their connection closes.
	defer func() {
		stopXDS()
		<-xdone
		<-reported
	}()

	// On a fresh region the first sets go in before any worker starts, so that none serves an
	// empty world while they are on their way.
	if fresh {
		select {
		case req := <-s.applyReqs:
			s.handleApply(req)
			s.tick(time.Now())
		case <-time.After(firstSyncTimeout):
			log.Warn("no backend sets from the control plane yet; starting the workers without them", "waited", firstSyncTimeout)
		case <-ctx.Done():
			return exit.OK
		}
	}
	for _, a := range s.core.Starts() {
		st := a.(Start)
		if err := s.start(st.Slot, st.Region); err != nil {
			s.shutdown()
			return startFailed("cannot start a worker", err)
		}
	}

	// The watcher; nil when there is no file, or it could not be watched (then SIGHUP tries again).
	var watcher *fileWatcher
	var watch <-chan struct{}
	startWatcher := func() {
		w, err := watchFile(s.path, reloadDebounce, log.Named("watch"))
		if err != nil {
			log.Warn("cannot watch the configuration file; edits need a SIGHUP", "error", err)
			return
		}
		watcher, watch = w, w.C()
	}
	if s.path != "" {
		startWatcher()
	}
	defer func() {
		if watcher != nil {
			watcher.Close()
		}
	}()

	// SIGHUP reloads the file now, as nginx and HAProxy operators expect, and watches its directory
	// again: the one at its path, which may not be the one watched when a directory above it was
	// moved or replaced. The watcher makes it rarely needed.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)

	watchdog := time.NewTicker(worker.Heartbeat)
	defer watchdog.Stop()
	due := time.NewTimer(time.Hour)
	defer due.Stop()
	for {
		if next := s.core.Next(time.Now()); !next.IsZero() {
			due.Reset(time.Until(next))
		}
		applyReqs := s.applyReqs
		if s.upgrade != nil {
			applyReqs = nil // the new supervisor may be writing the region: one writer at a time
		}
		select {
		case <-ctx.Done():
			log.Info("shutting down", "reason", context.Cause(ctx), "timeout", cfg.ShutdownTimeoutOrDefault())
			return s.shutdown()
		case x := <-s.exits:
			s.do(s.core.Exited(x.slot, x.pid, x.err, x.ran, time.Now()))
		case req := <-applyReqs:
			s.handleApply(req)
		case req := <-s.upgradeReqs:
			s.beginUpgrade(req)
		case <-usr2:
			log.Info("SIGUSR2: upgrading")
			s.beginUpgrade(upgradeReq{done: make(chan upgradeResult, 1)})
		case res := <-s.upgradeDone:
			if s.endUpgrade(res) {
				s.handedOver = true
				return s.shutdown()
			}
		case req := <-s.statusReqs:
			req.done <- s.status()
		case <-s.healthWake:
			s.wake()
		case <-watch:
			if s.upgrade != nil {
				log.Info("the configuration changed during an upgrade; the new xlb reads it")
				continue
			}
			s.reload()
		case <-hup:
			if s.path == "" {
				log.Info("SIGHUP: no configuration file to reload (flags gave everything)")
				continue
			}
			log.Info("SIGHUP: reloading the configuration", "file", s.path)
			if watcher == nil {
				startWatcher()
			} else if err := watcher.Rearm(); err != nil {
				log.Warn("SIGHUP: cannot watch the configuration file's directory", "error", err)
			}
			s.reload()
		case now := <-due.C:
			s.tick(now)
		case now := <-watchdog.C:
			s.tick(now)
			s.rotateTickets(now)
			s.checkRegion()
			s.checkCopy()
		}
	}
}

// tick tells the core that time passed, with the region's worker slots as they are now.
func (s *supervisor) tick(now time.Time) {
	caps := s.region.Capacities()
	v := View{Generation: s.region.Generation(), Slots: make([]shm.WorkerState, caps.Workers),
		Gone: func(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }}
	v.MinObserved, _ = s.region.MinObserved()
	for i := range v.Slots {
		v.Slots[i] = s.region.Worker(i)
	}
	s.do(s.core.Tick(now, v))
}

// do carries out the core's actions. It returns the exit status once the core is Done, else -1.
func (s *supervisor) do(actions []Action) int {
	code := -1
	for _, a := range actions {
		switch a := a.(type) {
		case Start:
			if err := s.start(a.Slot, a.Region); err != nil {
				if c := s.do(s.core.StartFailed(a.Slot, err, time.Now())); c >= 0 {
					code = c
				}
			}
		case Signal:
			if wp := s.procs[a.PID]; wp != nil {
				wp.cmd.Process.Signal(a.Sig) // through its pidfd: never another process of a reused pid
			}
		case Release:
			if wp := s.procs[a.PID]; wp != nil {
				wp.control.Close()
				delete(s.procs, a.PID)
			}
			if a.Free {
				s.region.ReleaseWorker(a.Region)
			}
		case FreeSlot:
			s.region.ReleaseWorker(a.Region)
		case Applied:
			for _, reply := range a.Replies {
				reply()
			}
		case Ready:
			s.becomeReady()
		case Done:
			code = a.Code
		}
	}
	return code
}

// listen binds every listener, or none; with reusePort, each socket with SO_REUSEPORT.
//
// Every socket defers its accepts (TCP_DEFER_ACCEPT, 1s, as nginx's "deferred" and HAProxy's
// "defer-accept"): the kernel hands a worker a connection once its first bytes (a request, a
// ClientHello) arrived, so that a worker's first read of it finds them instead of waiting again,
// which is a sixth of the CPU of a connection per request (bench/floor/README.md). A client that
// connects and sends nothing is accepted after the deferral all the same, and then waits out the
// idle timeout as before.
func listen(ls []config.Listener, reusePort bool) ([]net.Listener, error) {
	// No TCP keep-alive probes on client connections: the idle timeout closes idle ones, and the
	// four setsockopt calls per accepted connection are a cost that a connection per request pays.
	lc := net.ListenConfig{KeepAlive: -1}
	lc.Control = func(network, address string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 1)
			if serr == nil && reusePort {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		}); err != nil {
			return err
		}
		return serr
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

// listen binds the listeners and keeps a duplicate of each socket to hand to the workers: with
// perWorker, a SO_REUSEPORT group of one socket per worker for each listener, else one socket per
// listener that every worker accepts on. The duplicates are made by hand: (*net.TCPListener).File
// would put the socket into blocking mode when exec passes it on.
func (s *supervisor) listen(perWorker bool) error {
	groups := 1
	if perWorker {
		groups = s.workers
	}
	ls := s.cfg.Listeners
	for g := range groups {
		lns, err := listen(ls, perWorker)
		if err != nil {
			return err
		}
		if g == 0 {
			// The other sockets of each group bind the port the first one got, which matters for
			// port 0.
			ls = slices.Clone(ls)
			for i, ln := range lns {
				ls[i].Address = ln.Addr().String()
				s.listenAddrs = append(s.listenAddrs, ln.Addr().String())
				s.log.Info("listening", "address", ln.Addr().String(), "backend_set", s.cfg.Listeners[i].BackendSet)
			}
		}
		files := make([]*os.File, 0, len(lns))
		for _, ln := range lns {
			if err == nil {
				var f *os.File
				f, err = dupListener(ln)
				files = append(files, f)
			}
			ln.Close()
		}
		s.sockets = append(s.sockets, files)
		if err != nil {
			return err
		}
	}
	return nil
}

// socketsOf are the listening sockets of the worker of slot.
func (s *supervisor) socketsOf(slot int) []*os.File { return s.sockets[slot%len(s.sockets)] }

// closeSockets closes the supervisor's listening sockets.
func (s *supervisor) closeSockets() {
	for _, files := range s.sockets {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}
	s.sockets = nil
}

func dupListener(ln net.Listener) (*os.File, error) {
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return nil, err
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("duplicate listener %s: %w", ln.Addr(), derr)
	}
	return os.NewFile(uintptr(dup), ln.Addr().String()), nil
}

// start starts the worker of slot on the region's worker slot region, and tells the core.
func (s *supervisor) start(slot, region int) error {
	spec, err := json.Marshal(worker.Spec{
		Slot:            region,
		Sets:            s.sets,
		Proxy:           s.cfg.Proxy,
		AccessLog:       s.cfg.AccessLog,
		ShutdownTimeout: s.cfg.ShutdownTimeout,
		Log:             s.cfg.Log,
		MetricsSocket:   s.metricsSocket,
		TLS:             listenerTLS(s.cfg.Listeners),
		TicketKeys:      s.ticketKeysPath(),
		StickyKeys:      s.stickyKeys,
	})
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(s.o.Exe, worker.Command)
	cmd.Args[0] = os.Args[0] // ps shows "xlb worker", not the path it was started by
	cmd.Env = append(os.Environ(), worker.SpecEnv+"="+string(spec))
	if os.Getenv("GOMAXPROCS") == "" {
		cmd.Env = append(cmd.Env, fmt.Sprintf("GOMAXPROCS=%d", workerProcs(s.workers)))
	}
	cmd.Stdout, cmd.Stderr = s.o.Stdout, s.o.Stderr
	cmd.ExtraFiles = append([]*os.File{s.region.File(), r, s.healthW}, s.socketsOf(slot)...)
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return err
	}
	now, pid := time.Now(), cmd.Process.Pid
	s.region.ClaimWorker(region, pid, now.UnixNano())
	s.procs[pid] = &workerProc{cmd: cmd, control: w}
	s.core.Started(slot, pid, now)
	go func() {
		err := cmd.Wait()
		s.exits <- workerExit{slot: slot, pid: pid, err: err, ran: time.Since(now)}
	}()
	return nil
}

// handleApply applies a response of the control plane, and answers it once it is in force.
func (s *supervisor) handleApply(req applyReq) {
	res, wait := s.apply(req.resp)
	if wait == 0 {
		req.done <- res
		return
	}
	s.core.Await(wait, func() { req.done <- s.result(res.rejected) })
}

// reload reads the configuration file again and applies its backend sets. A file that fails is
// logged and changes nothing; settings that only a restart can change are logged and ignored.
func (s *supervisor) reload() {
	if s.reloadCfg == nil {
		return
	}
	cfg, err := s.reloadCfg()
	if err == nil {
		err = cfg.Check()
	}
	if err != nil {
		s.log.Error("config reload failed; the previous backend sets keep serving", "error", err)
		return
	}
	if keys := restartKeys(s.cfg, cfg); len(keys) > 0 {
		s.log.Warn("config change needs a restart; it is not applied", "keys", strings.Join(keys, ","))
	}
	if s.embedded == nil {
		return // xlb dataplane: the backend sets are the control plane's
	}
	if err := s.embedded.load(cfg.BackendSets); err != nil {
		s.log.Error("config reload failed; the previous backend sets keep serving", "error", err)
	}
}

// withHint is the log fields of a failed publish: the error and, when it is a region capacity, how
// an operator raises it.
func withHint(err error) []any {
	var ce *shm.CapacityError
	if !errors.As(err, &ce) {
		return []any{"error", err}
	}
	key := map[string]string{"Sets": "sets", "Backends": "backends", "StringBytes": "string_bytes", "TLSProfiles": "tls_profiles"}[ce.Field]
	return []any{"error", err, "hint", fmt.Sprintf("region.%s (%d) is fixed when the region file is created: set a larger one in the configuration, stop xlb, remove %s from the state directory, and start it again",
		key, ce.Max, regionFile)}
}

// restartKeys names what differs between a and b other than backend sets.
func restartKeys(a, b config.Config) []string {
	var keys []string
	diff := func(key string, same bool) {
		if !same {
			keys = append(keys, key)
		}
	}
	diff("listeners", sameListeners(a.Listeners, b.Listeners))
	pa, pb := a.Proxy, b.Proxy
	diff("timeouts", pa.ConnectTimeout == pb.ConnectTimeout && pa.BackendTimeout == pb.BackendTimeout &&
		pa.ClientTimeout == pb.ClientTimeout && pa.IdleTimeout == pb.IdleTimeout && a.ShutdownTimeout == b.ShutdownTimeout &&
		a.WorkerStallTimeout == b.WorkerStallTimeout)
	diff("limits", pa.RequestLineBytesMax == pb.RequestLineBytesMax && pa.HeaderBytesMax == pb.HeaderBytesMax &&
		pa.HeadersMax == pb.HeadersMax && pa.ReplayBufferBytesMax == pb.ReplayBufferBytesMax &&
		pa.IdleConnsPerBackend == pb.IdleConnsPerBackend && pa.ConnectionsMax == pb.ConnectionsMax)
	diff("retries", pa.Retries == pb.Retries)
	diff("forwarded", pa.Forwarded == pb.Forwarded && pa.ForwardedField == pb.ForwardedField)
	diff("trusted_proxies", slices.Equal(pa.TrustedProxies, pb.TrustedProxies))
	diff("upgrade_protocols", slices.Equal(pa.UpgradeProtocols, pb.UpgradeProtocols))
	diff("access_log", a.AccessLog == b.AccessLog)
	diff("log", a.Log == b.Log)
	diff("workers", a.Workers == b.Workers)
	diff("state_dir", a.StateDir == b.StateDir)
	diff("region", a.Region == b.Region)
	diff("reuse_port", a.ReusePort == b.ReusePort)
	diff("metrics_interval", a.MetricsInterval == b.MetricsInterval)
	diff("sticky_key_file", a.StickyKeyFile == b.StickyKeyFile)
	return keys
}

// becomeReady is the moment this supervisor serves: the old one of an upgrade hands over, the pid
// file names this process, and systemd hears of it.
func (s *supervisor) becomeReady() {
	s.publishSockets()
	if s.o.Ready != nil {
		s.o.Ready(Served{Listeners: slices.Clone(s.listenAddrs), StateDir: s.stateDir, Prometheus: s.promAddr})
		s.o.Ready = nil
	}
	if s.inherit != nil {
		s.inherit.signalReady(s.o.Version)
		s.inherit = nil
	}
	if s.cfg.PidFile != "" {
		if err := sysd.WritePIDFile(s.cfg.PidFile); err != nil {
			s.log.Error("cannot write the pid file", "path", s.cfg.PidFile, "error", err)
		}
	}
	sysd.Notify(fmt.Sprintf("READY=1\nMAINPID=%d", os.Getpid()))
}

// publishSockets makes the state directory's unix sockets name this supervisor's: when it
// becomes ready, and again after an upgrade failed (a new binary that got as far as publishing its
// own, and was then killed, must not leave them naming a dead socket).
func (s *supervisor) publishSockets() {
	for _, l := range s.sockFiles {
		if err := l.Publish(); err != nil {
			s.log.Error("cannot publish a unix socket", "path", l.Path, "error", err)
		}
	}
}

// listenedSets is the names of the sets that ls serve, sorted, once each: what the data plane
// subscribes to.
func listenedSets(ls []config.Listener) []string {
	var names []string
	for _, l := range ls {
		names = append(names, l.BackendSet)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// takeSockets gets the listening sockets: from the running xlb in an upgrade, from systemd with
// socket activation, or bound now.
func (s *supervisor) takeSockets() error {
	for _, l := range s.cfg.Listeners {
		s.sets = append(s.sets, l.BackendSet)
	}
	if in := s.inherit; in != nil {
		socks, err := in.sockets(s.cfg.Listeners, s.cfg.ReusePort)
		if err != nil {
			return err
		}
		s.sockets, s.listenAddrs = socks, in.fds.Listeners
		return nil
	}
	files, err := sysd.Sockets(len(s.cfg.Listeners))
	if err != nil || files == nil {
		if err == nil {
			err = s.listen(s.cfg.ReusePort)
		}
		return err
	}
	if s.cfg.ReusePort {
		return errors.New("reuse_port does not go with systemd socket activation: systemd passes one socket per listener")
	}
	s.sockets = [][]*os.File{files}
	for i, f := range files {
		addr := "?"
		if ln, err := net.FileListener(f); err == nil {
			addr = ln.Addr().String()
			ln.Close()
		}
		s.listenAddrs = append(s.listenAddrs, addr)
		s.log.Info("listening on a socket from systemd", "address", addr, "backend_set", s.cfg.Listeners[i].BackendSet)
	}
	return nil
}

// shutdown asks every worker to drain (SIGTERM) and waits for them, killing those still running
// past the shutdown timeout and a grace (the core decides). It returns the exit status.
func (s *supervisor) shutdown() int {
	if u := s.upgrade; u != nil {
		// A new binary that is not ready yet goes too; its workers see their pipe end and drain.
		u.cmd.Process.Kill()
		s.log.Warn("stopping during an upgrade: stopped the new binary too", "pid", u.cmd.Process.Pid)
	}
	// The workers close their copies of the listening sockets as they start draining; once the
	// supervisor's are closed too, new connections are refused instead of waiting in a queue that
	// nobody accepts from any more.
	s.closeSockets()
	code := s.do(s.core.Stop(time.Now()))
	due := time.NewTimer(time.Hour)
	defer due.Stop()
	for code < 0 {
		if next := s.core.Next(time.Now()); !next.IsZero() {
			due.Reset(time.Until(next))
		}
		select {
		case x := <-s.exits:
			code = s.do(s.core.Exited(x.slot, x.pid, x.err, x.ran, time.Now()))
		case now := <-due.C:
			code = s.do(s.core.Tick(now, View{}))
		}
	}
	return code
}

// versionsOf is the version of each set, by name.
func versionsOf(sets map[string]*discoveryv1.VersionedBackendSet) map[string]string {
	out := make(map[string]string, len(sets))
	for name, vs := range sets {
		out[name] = vs.GetVersion()
	}
	return out
}

// healthChanged is the monitor's Changed: the loop wakes the workers.
func (s *supervisor) healthChanged() {
	select {
	case s.healthWake <- struct{}{}:
	default:
	}
}

// sameSets reports whether a and b hold the same sets in the same order, health slots aside
// (Publish gives those): every other field of shm.Set and shm.Backend counts, including any a
// later change adds, since they are compared whole (TestSameSets).
func sameSets(a, b []shm.Set) bool {
	return reflect.DeepEqual(withoutHealthSlots(a), withoutHealthSlots(b))
}

// withoutHealthSlots is a copy of sets whose backends have health slot 0.
func withoutHealthSlots(sets []shm.Set) []shm.Set {
	out := slices.Clone(sets)
	for i := range out {
		out[i].Backends = slices.Clone(out[i].Backends)
		for j := range out[i].Backends {
			out[i].Backends[j].HealthSlot = 0
		}
	}
	return out
}
