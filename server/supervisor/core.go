package supervisor

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/internal/backoff"
	"github.com/xlbproxy/xlb/server/exit"
)

// Timing of the core.
const (
	// AppliedPoll is how often the owner ticks while a generation is not yet applied by every
	// worker, or the supervisor is not ready.
	AppliedPoll = time.Millisecond
	// AppliedWarn is how long a generation may wait for a worker before the wait is logged.
	AppliedWarn = 10 * time.Second
	// RestartDelayMin and RestartDelayMax bound the delay before a crashed worker is restarted. It
	// doubles with every crash of a worker that ran less than RestartStable, and starts over after
	// one that ran longer.
	RestartDelayMin = 50 * time.Millisecond
	RestartDelayMax = 10 * time.Second
	RestartStable   = 10 * time.Second
	// KillGrace is how long past the shutdown timeout a stop waits for the workers before it kills
	// them.
	KillGrace = 5 * time.Second
)

// Config is what a Core is told once.
type Config struct {
	// Regions is the region's worker slot of each of the supervisor's slots: the identity but
	// after an upgrade, whose new supervisor takes the slots the old one leaves free. Its length is
	// the worker count.
	Regions []int
	// StallTimeout: a worker whose heartbeat is older is killed (and restarted as any worker that
	// exits). Must be set.
	StallTimeout time.Duration
	// ShutdownTimeout is how long a stop waits for the workers to drain before, past KillGrace
	// more, it kills them. Must be set.
	ShutdownTimeout time.Duration
	// Logger gets the core's decisions. Nil means a null logger.
	Logger hclog.Logger
}

// Core is the supervisor's decisions about its workers, with neither processes nor a clock of its
// own: the owner loop tells it what happened (Started, StartFailed, Exited, Published, Tick,
// Rebuilt, Stop) and carries out the Actions it returns. Every method returns at once; none
// blocks, sleeps, or makes a system call, so that a test drives every scenario with a fake clock
// and a fake region (core_test.go).
//
// Not safe for concurrent use: it belongs to the owner loop.
type Core struct {
	cfg     Config
	log     hclog.Logger
	slots   []slot
	retired map[int]int // pid -> slot: workers of a region that was rebuilt, draining
	pending []pending
	ready   bool

	stopping bool
	killAt   time.Time // zero once the kill is sent, or before a stop
	code     int       // the stop's exit status so far
	finished bool      // Done was returned
}

// slot is one of the supervisor's workers, across its restarts.
type slot struct {
	pid       int // 0 while no worker runs in it
	region    int
	started   time.Time
	killed    bool // by the stall watchdog
	restartAt time.Time
	restart   backoff.Backoff
}

// pending is a published generation that not every live worker has observed yet.
type pending struct {
	gen     uint64
	at      time.Time
	warned  bool
	replies []func()
}

// Worker is a live worker: one of the supervisor's slots, its slot in the region, and its pid.
type Worker struct{ Slot, Region, PID int }

// View is what the owner reads of the region for a Tick.
type View struct {
	// Generation is the generation in force; MinObserved the least generation observed by the
	// region's live worker slots (shm.Region.MinObserved: Generation when there is none).
	Generation, MinObserved uint64
	// Slots is every worker slot of the region.
	Slots []shm.WorkerState
	// Gone tells whether no process has pid; asked only of slots held by a pid that is not one of
	// this supervisor's workers.
	Gone func(pid int) bool
}

// An Action is what the owner must do, in the order given.
type Action interface{ isAction() }

// Start starts the worker of Slot on the region's worker slot Region; the owner then calls
// Started with its pid, or StartFailed.
type Start struct{ Slot, Region int }

// Signal sends Sig to the worker of Slot with PID.
type Signal struct {
	Slot, PID int
	Sig       syscall.Signal
}

// Release is the end of a worker: the owner closes its control pipe and, when Free, frees its
// slot in the region (a retired worker's slot was in a region that is gone).
type Release struct {
	Slot, Region, PID int
	Free              bool
}

// FreeSlot frees the region's worker slot Region, held by PID, a process that is gone.
type FreeSlot struct{ Region, PID int }

// Applied is generation Gen served by every live worker: the owner calls each reply.
type Applied struct {
	Gen     uint64
	Replies []func()
}

// Ready is the first moment every worker runs and serves the generation in force.
type Ready struct{}

// Done ends a stop: every worker has exited. Code is the exit status.
type Done struct{ Code int }

func (Start) isAction()    {}
func (Signal) isAction()   {}
func (Release) isAction()  {}
func (FreeSlot) isAction() {}
func (Applied) isAction()  {}
func (Ready) isAction()    {}
func (Done) isAction()     {}

// New returns the core of a supervisor whose workers have not started: Starts returns the actions
// that start them.
func New(cfg Config) *Core {
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	c := &Core{cfg: cfg, log: log, slots: make([]slot, len(cfg.Regions)), retired: map[int]int{}}
	for i, r := range cfg.Regions {
		c.slots[i] = slot{region: r, restart: backoff.Backoff{Base: RestartDelayMin, Max: RestartDelayMax, Jitter: backoff.None}}
	}
	return c
}

// Starts is the start of every worker.
func (c *Core) Starts() []Action {
	out := make([]Action, len(c.slots))
	for i, s := range c.slots {
		out[i] = Start{Slot: i, Region: s.region}
	}
	return out
}

// Started records the worker of slot, started at now with pid.
func (c *Core) Started(slot, pid int, now time.Time) {
	s := &c.slots[slot]
	s.pid, s.started, s.killed, s.restartAt = pid, now, false, time.Time{}
	c.log.Info("worker started", "slot", slot, "region_slot", s.region, "pid", pid)
}

// StartFailed is a start of slot that failed with err: it is tried again as after a crash.
func (c *Core) StartFailed(slot int, err error, now time.Time) []Action {
	c.log.Error("cannot start a worker", "slot", slot, "error", err)
	if c.stopping {
		return c.done()
	}
	c.scheduleRestart(slot, 0, 0, now, err.Error())
	return nil
}

// Exited is the end of the worker pid of slot, with err as exec.Cmd.Wait returned it, after it
// ran for ran. While serving, its restart is scheduled: RestartDelayMin doubled with each crash
// after a short run, at most RestartDelayMax, and RestartDelayMin again after a run of
// RestartStable or more. Not jittered: the supervisor restarts its own workers, and the delay it
// logs is the delay.
func (c *Core) Exited(slot, pid int, err error, ran time.Duration, now time.Time) []Action {
	if _, ok := c.retired[pid]; ok {
		delete(c.retired, pid)
		c.log.Info("worker of the replaced region exited", "slot", slot, "pid", pid)
		return append([]Action{Release{Slot: slot, PID: pid}}, c.done()...)
	}
	s := &c.slots[slot]
	if s.pid != pid {
		return nil // not this supervisor's worker of the slot: nothing to do
	}
	out := []Action{Release{Slot: slot, Region: s.region, PID: pid, Free: true}}
	s.pid = 0
	if c.stopping {
		// A worker still starting up when asked to stop dies of the SIGTERM itself: a stop.
		if err != nil && !killedBy(err, syscall.SIGTERM) {
			c.log.Error("worker failed while stopping", "slot", slot, "pid", pid, "error", err)
			c.code = exit.Failure
		}
		return append(out, c.done()...)
	}
	msg := "exit status 0"
	if err != nil {
		msg = err.Error()
	}
	c.scheduleRestart(slot, pid, ran, now, msg)
	return out
}

func (c *Core) scheduleRestart(slot, pid int, ran time.Duration, now time.Time, why string) {
	s := &c.slots[slot]
	if ran >= RestartStable {
		s.restart.Reset()
	}
	delay := s.restart.Next()
	s.restartAt = now.Add(delay)
	c.log.Error("worker exited", "slot", slot, "pid", pid, "error", why, "ran", ran.Round(time.Millisecond).String(), "restart_in", delay.String())
}

// Published is generation gen published at now; the replies are called once every live worker
// serves it (an Applied action).
func (c *Core) Published(gen uint64, now time.Time, replies ...func()) {
	c.pending = append(c.pending, pending{gen: gen, at: now, replies: replies})
}

// Await adds reply to those of the newest pending generation, gen: called once it is applied.
func (c *Core) Await(gen uint64, reply func()) {
	for i := len(c.pending) - 1; i >= 0; i-- {
		if c.pending[i].gen == gen {
			c.pending[i].replies = append(c.pending[i].replies, reply)
			return
		}
	}
	reply() // applied already
}

// Rebuilt is the region replaced, at now, by one where gen holds the sets in force: every running
// worker is retired (asked to drain) and a new one started on the new region, at the same slot of
// it; what waited for a generation of the old region waits for gen.
func (c *Core) Rebuilt(gen uint64, now time.Time) []Action {
	var replies []func()
	for _, p := range c.pending {
		replies = append(replies, p.replies...)
	}
	c.pending = []pending{{gen: gen, at: now, replies: replies}}
	var out []Action
	for i := range c.slots {
		s := &c.slots[i]
		s.region = i
		if s.pid == 0 {
			continue // restarted when due, on the new region
		}
		c.retired[s.pid] = i
		out = append(out, Signal{Slot: i, PID: s.pid, Sig: syscall.SIGTERM}, Start{Slot: i, Region: i})
		s.pid = 0
	}
	return out
}

// Live is the workers that run, by slot.
func (c *Core) Live() []Worker {
	var out []Worker
	for i, s := range c.slots {
		if s.pid != 0 {
			out = append(out, Worker{Slot: i, Region: s.region, PID: s.pid})
		}
	}
	return out
}

// Ready tells whether the supervisor became ready.
func (c *Core) Ready() bool { return c.ready }

// Next is when the owner must Tick next, at the latest, after now: soon while a generation waits
// or the supervisor is not ready (AppliedPoll), else at the next restart or kill due. Zero: only
// an event or the heartbeat needs a Tick.
func (c *Core) Next(now time.Time) time.Time {
	if !c.stopping && (!c.ready || len(c.pending) > 0) {
		return now.Add(AppliedPoll)
	}
	var next time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, s := range c.slots {
		if !c.stopping {
			earlier(s.restartAt)
		}
	}
	earlier(c.killAt)
	return next
}

// Tick is the passing of time, with the region as v says it is at now: restarts that are due,
// workers that stopped beating, region slots left by processes that are gone, generations
// applied, the moment the supervisor is ready, and the kill at the end of a stop's grace.
func (c *Core) Tick(now time.Time, v View) []Action {
	if c.stopping {
		return c.tickStopping(now)
	}
	var out []Action
	for i := range c.slots {
		s := &c.slots[i]
		if s.pid == 0 && !s.restartAt.IsZero() && !now.Before(s.restartAt) {
			s.restartAt = time.Time{}
			out = append(out, Start{Slot: i, Region: s.region})
		}
	}
	out = append(out, c.stalled(now, v)...)
	out = append(out, c.reap(v)...)
	out = append(out, c.applied(now, v)...)
	return out
}

// stalled kills the workers whose heartbeat is older than the stall timeout.
func (c *Core) stalled(now time.Time, v View) []Action {
	var out []Action
	for i := range c.slots {
		s := &c.slots[i]
		if s.pid == 0 || s.killed || s.region >= len(v.Slots) {
			continue
		}
		w := v.Slots[s.region]
		if silent, ok := stalledFor(w.PID, w.Heartbeat, s.pid, s.started, now, c.cfg.StallTimeout); ok {
			c.log.Error("worker stopped beating; killing it", "slot", i, "pid", s.pid, "silent_for", silent.Round(time.Millisecond).String())
			s.killed = true
			out = append(out, Signal{Slot: i, PID: s.pid, Sig: syscall.SIGKILL})
		}
	}
	return out
}

// stalledFor is whether the worker pid, started at started, has been silent longer than timeout at
// now, and for how long. slotPID and heartbeat are its region slot's: a slot that another process
// holds says nothing of this one, and a worker is never silent since before it started (its first
// beat may come after the supervisor first looks).
func stalledFor(slotPID int, heartbeat int64, pid int, started, now time.Time, timeout time.Duration) (time.Duration, bool) {
	last := time.Unix(0, max(heartbeat, started.UnixNano()))
	silent := now.Sub(last)
	return silent, slotPID == pid && silent > timeout
}

// reap frees the region's worker slots of processes that no longer exist: the workers of a new
// supervisor that an upgrade killed, or of a supervisor that died, never release theirs, and
// "applied" would wait on them for ever.
func (c *Core) reap(v View) []Action {
	ours := make(map[int]bool, len(c.slots))
	for _, s := range c.slots {
		if s.pid != 0 {
			ours[s.region] = true
		}
	}
	var out []Action
	for i, w := range v.Slots {
		if w.PID != 0 && !ours[i] && v.Gone != nil && v.Gone(w.PID) {
			c.log.Info("released the worker slot of a process that is gone", "region_slot", i, "pid", w.PID)
			out = append(out, FreeSlot{Region: i, PID: w.PID})
		}
	}
	return out
}

// applied answers the generations every live worker observed, warns once of each that waited
// past AppliedWarn, and says when the supervisor is first ready.
func (c *Core) applied(now time.Time, v View) []Action {
	var out []Action
	live := len(c.Live())
	kept := c.pending[:0]
	for _, p := range c.pending {
		switch {
		case v.MinObserved >= p.gen:
			c.log.Info("generation applied", "generation", p.gen, "workers", live, "latency", now.Sub(p.at).String())
			out = append(out, Applied{Gen: p.gen, Replies: p.replies})
			continue
		case !p.warned && now.Sub(p.at) > AppliedWarn:
			p.warned = true
			c.log.Warn("generation not yet applied by every worker", "generation", p.gen, "waiting", c.lagging(p.gen, v))
		}
		kept = append(kept, p)
	}
	clear(c.pending[len(kept):])
	c.pending = kept
	if !c.ready && live == len(c.slots) && v.MinObserved >= v.Generation {
		c.ready = true
		c.log.Info("ready", "workers", live, "generation", v.Generation)
		if v.Generation == 0 {
			c.log.Warn("no backend sets yet: every request is answered 503 until the control plane sends the first generation")
		}
		out = append(out, Ready{})
	}
	return out
}

// lagging describes the workers that have not observed generation g.
func (c *Core) lagging(g uint64, v View) string {
	var b strings.Builder
	for _, w := range c.Live() {
		if w.Region < len(v.Slots) && v.Slots[w.Region].Observed < g {
			fmt.Fprintf(&b, "slot %d pid %d at generation %d; ", w.Slot, w.PID, v.Slots[w.Region].Observed)
		}
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// Stop begins the shutdown at now: every running worker is asked to drain (SIGTERM), restarts
// due are dropped, and those still running past the shutdown timeout and KillGrace are killed.
// Done comes once every worker, retired ones too, has exited: at once when none runs.
func (c *Core) Stop(now time.Time) []Action {
	if c.stopping {
		return nil
	}
	c.stopping = true
	c.killAt = now.Add(c.cfg.ShutdownTimeout + KillGrace)
	var out []Action
	for i, s := range c.slots {
		if s.pid != 0 {
			out = append(out, Signal{Slot: i, PID: s.pid, Sig: syscall.SIGTERM})
		}
	}
	return append(out, c.done()...)
}

func (c *Core) tickStopping(now time.Time) []Action {
	if c.killAt.IsZero() || now.Before(c.killAt) {
		return nil
	}
	c.killAt = time.Time{}
	c.code = exit.Failure
	var out []Action
	for pid, i := range c.retired {
		c.log.Error("worker did not stop in time; killing it", "slot", i, "pid", pid)
		out = append(out, Signal{Slot: i, PID: pid, Sig: syscall.SIGKILL})
	}
	for i, s := range c.slots {
		if s.pid != 0 {
			c.log.Error("worker did not stop in time; killing it", "slot", i, "pid", s.pid)
			out = append(out, Signal{Slot: i, PID: s.pid, Sig: syscall.SIGKILL})
		}
	}
	return out
}

// done is Done once a stop has no worker left.
func (c *Core) done() []Action {
	if !c.stopping || c.finished || len(c.retired) > 0 || len(c.Live()) > 0 {
		return nil
	}
	c.finished, c.killAt = true, time.Time{}
	c.log.Info("stopped")
	return []Action{Done{Code: c.code}}
}

// killedBy tells whether err is the exit of a process that signal sig ended.
func killedBy(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}
