package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/dataplane/table"
	dataplanev1 "github.com/xlbproxy/xlb/gen/xlb/dataplane/v1"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
	"github.com/xlbproxy/xlb/server/backendset"
	"github.com/xlbproxy/xlb/server/config"
	"github.com/xlbproxy/xlb/server/localadmin"
	"github.com/xlbproxy/xlb/server/rpc"
	"github.com/xlbproxy/xlb/server/telemetry"
	"github.com/xlbproxy/xlb/server/upgrade"
)

// The binary upgrade (DESIGN §3.4). On SIGUSR2, or the Upgrade RPC of the local admin service, the
// supervisor starts the binary now at the path it was started from, with the same arguments, and
// hands it, as inherited descriptors, the state directory's lock, the region, the listening sockets
// and the write end of a readiness pipe; XLB_UPGRADE (JSON) says which descriptor is which. The
// new supervisor maps the region (which checks its layout version), takes free worker slots, starts
// its workers on the generation in force, and once every one serves it, writes "ready" on the pipe;
// a new supervisor that cannot go on writes "error: REASON" instead. Only then does the old
// supervisor close its copies of the sockets (the new one holds them: no socket closes, no queued
// connection is lost), tell its workers to drain, and exit once they have. The new binary is the
// leader of a process group of its own. If it exits, fails or is not ready within the upgrade
// timeout, it is killed (SIGKILL) and waited for, the rest of its group (its workers, a wrapper's
// children) gets SIGTERM and, after the shutdown timeout and a grace, SIGKILL; the old one serves
// on. After an upgrade xlb is thus in another process group than the shell that started it: a
// terminal's Ctrl-C no longer reaches it (SIGTERM its pid, or let systemd stop it). While
// an upgrade is in progress the old supervisor applies nothing (the region has one writer), and a
// second upgrade is refused; an upgrade while older processes still drain is allowed.

// upgradeEnv names the variable of the inherited descriptors.
const upgradeEnv = "XLB_UPGRADE"

// upgradeFDs are the descriptors of an upgrade, as numbered in the new process.
type upgradeFDs struct {
	Lock, Region, Ready int
	Sockets             [][]int  // by group (one per worker with reuse_port), then listener
	Listeners           []string // the listeners' addresses, which the new configuration must keep
	ReusePort           bool
}

// upgradeReq is an upgrade asked of the supervisor's loop.
type upgradeReq struct {
	done chan upgradeResult
}

type upgradeResult struct {
	pid     int
	version string
	err     error // an *upgrade.Error
}

// upgradeState is an upgrade in progress.
type upgradeState struct {
	cmd     *exec.Cmd
	replies []chan upgradeResult
}

// beginUpgrade starts the new binary; its outcome comes back on s.upgradeDone.
func (s *supervisor) beginUpgrade(req upgradeReq) {
	if s.upgrade != nil {
		req.done <- upgradeResult{err: upgrade.Errorf(upgrade.Busy, "an upgrade is in progress: pid %d is starting", s.upgrade.cmd.Process.Pid)}
		return
	}
	fail := func(kind upgrade.Kind, format string, args ...any) {
		err := upgrade.Errorf(kind, format, args...)
		s.log.Error("upgrade failed; serving on", "error", err)
		req.done <- upgradeResult{err: err}
	}
	// The new supervisor reads the applied sets from the file: it must hold the latest. Its
	// monitor takes the health slots over: this one's stops writing them first.
	s.flushApplied()
	s.monitor.Pause(context.Background())
	resume := true
	defer func() {
		if resume {
			s.monitor.Resume(context.Background())
		}
	}()

	r, w, err := os.Pipe()
	if err != nil {
		fail(upgrade.Internal, "readiness pipe: %v", err)
		return
	}
	defer w.Close()
	files := []*os.File{s.lock, s.region.File(), w}
	fds := upgradeFDs{Lock: 3, Region: 4, Ready: 5, ReusePort: s.cfg.ReusePort}
	for _, group := range s.sockets {
		var g []int
		for _, f := range group {
			g = append(g, 3+len(files))
			files = append(files, f)
		}
		fds.Sockets = append(fds.Sockets, g)
	}
	fds.Listeners = s.listenAddrs
	spec, _ := json.Marshal(fds)
	cmd := exec.Command(s.o.Binary, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(environWithout(upgradeEnv, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"), upgradeEnv+"="+string(spec))
	cmd.Stdout, cmd.Stderr = s.o.Stdout, s.o.Stderr
	cmd.ExtraFiles = files
	// The leader of a group of its own, so that what it starts can be ended with it (upgrade.Env.Await).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		fail(upgrade.Failed, "cannot start %s: %v", s.o.Binary, err)
		return
	}
	s.upgrade = &upgradeState{cmd: cmd, replies: []chan upgradeResult{req.done}}
	resume = false
	s.log.Info("upgrade started", "binary", s.o.Binary, "pid", cmd.Process.Pid)

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	lines := make(chan string, 1)
	go func() {
		defer r.Close()
		line, _ := bufio.NewReader(r).ReadString('\n')
		lines <- strings.TrimSpace(line)
	}()
	go func() {
		out := upgrade.OS.Await(upgrade.Child{Pid: cmd.Process.Pid, Line: lines, Exited: exited},
			s.cfg.UpgradeTimeoutOrDefault(), s.cfg.ShutdownTimeoutOrDefault()+KillGrace, s.log)
		s.upgradeDone <- upgradeResult{pid: out.Pid, version: out.Version, err: out.Err}
	}()
}

// endUpgrade takes the outcome of an upgrade. It returns true when the new supervisor is ready and
// this one must hand over.
func (s *supervisor) endUpgrade(res upgradeResult) bool {
	u := s.upgrade
	s.upgrade = nil
	if res.err != nil {
		// Await has ended it: its staged sockets are no one's.
		for _, name := range []string{adminSocket, controlSocket, telemetry.Socket} {
			os.Remove(rpc.StagedName(filepath.Join(s.stateDir, name), u.cmd.Process.Pid))
		}
		s.publishSockets()
		s.monitor.Resume(context.Background()) // reading back what the new one's monitor did
		s.writer = shm.NewWriter(s.region)     // the new one may have published: take the region up again
		s.log.Error("upgrade failed; serving on", "error", res.err)
	} else {
		s.log.Info("upgrade ready; handing over", "pid", res.pid, "version", res.version)
	}
	for _, reply := range u.replies {
		reply <- res
	}
	return res.err == nil
}

// flushApplied writes the applied file now, and returns once it is written.
func (s *supervisor) flushApplied() {
	select {
	case <-s.saves:
	default:
	}
	done := make(chan struct{})
	s.saves <- s.savedState(done)
	<-done
}

// environWithout is the environment without the named variables.
func environWithout(names ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || name == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// inherited is what a new supervisor got from the old one.
type inherited struct {
	fds    upgradeFDs
	lock   *os.File
	region *shm.Region
	ready  *os.File
}

// takeUpgrade reads XLB_UPGRADE, when this process is the new binary of an upgrade.
func takeUpgrade() (*inherited, error) {
	v, ok := os.LookupEnv(upgradeEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(upgradeEnv)
	var in inherited
	if err := json.Unmarshal([]byte(v), &in.fds); err != nil {
		return nil, fmt.Errorf("%s: %v", upgradeEnv, err)
	}
	in.ready = os.NewFile(uintptr(in.fds.Ready), "ready")
	in.lock = os.NewFile(uintptr(in.fds.Lock), "lock")
	region, err := shm.OpenFile(os.NewFile(uintptr(in.fds.Region), "region"))
	if err != nil {
		in.fail(err)
		return nil, err
	}
	in.region = region
	return &in, nil
}

// fail tells the old supervisor why this upgrade cannot go on.
func (in *inherited) fail(err error) {
	if in.ready != nil {
		fmt.Fprintf(in.ready, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		in.ready.Close()
		in.ready = nil
	}
}

// signalReady tells the old supervisor that this one, of version, serves.
func (in *inherited) signalReady(version string) {
	if in.ready != nil {
		fmt.Fprintf(in.ready, "ready %s\n", version)
		in.ready.Close()
		in.ready = nil
	}
}

// sockets turns the inherited socket descriptors into files, checking that the configuration
// still has the same listeners.
func (in *inherited) sockets(listeners []config.Listener, reusePort bool) ([][]*os.File, error) {
	if len(listeners) != len(in.fds.Listeners) {
		return nil, fmt.Errorf("the configuration has %d listeners, the running xlb %d: a change of listeners needs a restart", len(listeners), len(in.fds.Listeners))
	}
	for i, l := range listeners {
		if !sameListen(l.Address, in.fds.Listeners[i]) {
			return nil, fmt.Errorf("listener %d is %s, the running xlb's %s: a change of listeners needs a restart", i, l.Address, in.fds.Listeners[i])
		}
	}
	if reusePort != in.fds.ReusePort {
		return nil, errors.New("reuse_port changed: that needs a restart")
	}
	var out [][]*os.File
	for _, g := range in.fds.Sockets {
		var files []*os.File
		for i, fd := range g {
			files = append(files, os.NewFile(uintptr(fd), in.fds.Listeners[i]))
		}
		out = append(out, files)
	}
	return out, nil
}

// sameListen tells whether a configured address (maybe of port 0) is the bound one.
func sameListen(configured, bound string) bool {
	if configured == bound {
		return true
	}
	ch, cp, err1 := net.SplitHostPort(configured)
	bh, bp, err2 := net.SplitHostPort(bound)
	return err1 == nil && err2 == nil && (cp == "0" || cp == bp) && (ch == bh || ch == "" || net.ParseIP(ch).IsUnspecified())
}

// freeSlots picks n worker slots of the region that no process holds.
func freeSlots(r *shm.Region, n int) ([]int, error) {
	var out []int
	for i := 0; i < r.Capacities().Workers && len(out) < n; i++ {
		if r.Worker(i).PID == 0 {
			out = append(out, i)
		}
	}
	if len(out) < n {
		return nil, fmt.Errorf("the region has %d free worker slots of %d, and %d workers to start: wait for the processes still draining, or give the region more (region.workers)", len(out), r.Capacities().Workers, n)
	}
	return out, nil
}

// The local admin service.

// adminSocket, in the state directory, serves the DataPlaneAdminService.
const adminSocket = "admin.sock"

// loopAdmin is the local admin service's way to the supervisor's loop.
type loopAdmin struct{ s *supervisor }

func (a loopAdmin) Upgrade(ctx context.Context) (int, string, error) {
	req := upgradeReq{done: make(chan upgradeResult, 1)}
	res, err := ask(ctx, a.s.upgradeReqs, req, req.done)
	if err != nil {
		return 0, "", err
	}
	return res.pid, res.version, res.err
}

func (a loopAdmin) Status(ctx context.Context) (*dataplanev1.StatusResponse, error) {
	req := statusReq{done: make(chan *dataplanev1.StatusResponse, 1)}
	return ask(ctx, a.s.statusReqs, req, req.done)
}

// ask sends req to the loop on reqs and waits for its answer on done, unless ctx ends first.
func ask[Req, Res any](ctx context.Context, reqs chan<- Req, req Req, done <-chan Res) (Res, error) {
	var zero Res
	select {
	case reqs <- req:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case res := <-done:
		return res, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

type statusReq struct {
	done chan *dataplanev1.StatusResponse
}

// status answers a Status request, from the loop.
func (s *supervisor) status() *dataplanev1.StatusResponse {
	res := &dataplanev1.StatusResponse{Pid: int32(os.Getpid()), Version: s.o.Version, Generation: s.region.Generation(), Upgrading: s.upgrade != nil,
		Backends: s.load.Snapshot()}
	healthOf := map[[2]string]*loadv1.BackendHealth{}
	for _, h := range backendHealth(s.monitor.Status(context.Background())) {
		healthOf[[2]string{h.GetBackendSet(), h.GetBackendId()}] = h
	}
	for _, name := range slices.Sorted(maps.Keys(s.current)) {
		set, err := backendset.FromProto(s.current[name].GetBackendSet())
		if err != nil {
			continue // not in the region either (regionSetsOf)
		}
		for _, b := range set.Backends {
			h := healthOf[[2]string{name, b.ID}]
			st := &dataplanev1.BackendState{BackendSet: name, BackendId: b.ID, Address: b.Address, State: "active",
				Reason: "the control plane's state of the backend is active", Health: h}
			if h != nil {
				st.Reason = h.GetReason()
			}
			switch b.State {
			case table.Draining:
				st.State, st.Reason = "draining", "the control plane drains it: it finishes what it has and takes nothing new"
			case table.Disabled:
				st.State, st.Reason = "disabled", "the control plane disabled it"
			}
			res.BackendStates = append(res.BackendStates, st)
		}
	}
	for _, wk := range s.core.Live() {
		c := s.load.ConnsOf(int32(wk.PID))
		res.Workers = append(res.Workers, &dataplanev1.Worker{Slot: uint32(wk.Region), Pid: int32(wk.PID), ObservedGeneration: s.region.Worker(wk.Region).Observed,
			Connections: c.Connections, AcceptPaused: c.AcceptPaused})
	}
	return res
}

// serveLocalAdmin serves the DataPlaneAdminService on dir's admin socket (mode 0600) until stop.
func (s *supervisor) serveLocalAdmin(dir string, log hclog.Logger) (stop func(), err error) {
	path := filepath.Join(dir, adminSocket)
	srv, _, err := rpc.NewServer("unix:"+path, rpc.ServerSecurity{}, log)
	if err != nil {
		return nil, err
	}
	localadmin.Register(srv, loopAdmin{s: s})
	ln, stop, err := rpc.ServeUnix(srv, path)
	if err != nil {
		return nil, err
	}
	s.sockFiles = append(s.sockFiles, ln)
	return stop, nil
}
