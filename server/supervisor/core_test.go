package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/server/exit"
)

// owner is a fake owner loop: it carries out a Core's actions on a fake region of worker slots
// and a fake clock, and records what the processes were told. Pids are given out from 100 up.
type owner struct {
	t       *testing.T
	c       *Core
	now     time.Time
	gen     uint64            // the region's generation in force
	slots   []shm.WorkerState // the region's worker slots
	gone    map[int]bool      // pids of processes that no longer exist
	nextPID int
	failing bool // starts fail

	started  []int // pids started, in order
	signals  []string
	released []string // "pid/free"
	freed    []int    // region slots freed by FreeSlot
	applied  []uint64
	ready    int
	done     []int
	log      bytes.Buffer
}

const stallTimeout, shutdownTimeout = 30 * time.Second, 20 * time.Second

func newOwner(t *testing.T, workers, regionSlots int) *owner {
	o := &owner{t: t, now: time.Unix(1000, 0), slots: make([]shm.WorkerState, regionSlots), gone: map[int]bool{}, nextPID: 100}
	regions := make([]int, workers)
	for i := range regions {
		regions[i] = i
	}
	o.c = New(Config{Regions: regions, StallTimeout: stallTimeout, ShutdownTimeout: shutdownTimeout,
		Logger: hclog.New(&hclog.LoggerOptions{Output: &o.log, Level: hclog.Info})})
	o.do(o.c.Starts())
	return o
}

// do carries out actions as the supervisor's loop does.
func (o *owner) do(actions []Action) {
	for _, a := range actions {
		switch a := a.(type) {
		case Start:
			if o.failing {
				o.do(o.c.StartFailed(a.Slot, errors.New("fork: no memory"), o.now))
				continue
			}
			pid := o.nextPID
			o.nextPID++
			o.slots[a.Region] = shm.WorkerState{PID: pid, Started: o.now.UnixNano()}
			o.started = append(o.started, pid)
			o.c.Started(a.Slot, pid, o.now)
		case Signal:
			o.signals = append(o.signals, fmt.Sprintf("%d:%s", a.PID, map[syscall.Signal]string{syscall.SIGTERM: "TERM", syscall.SIGKILL: "KILL"}[a.Sig]))
		case Release:
			o.released = append(o.released, fmt.Sprintf("%d/%v", a.PID, a.Free))
			if a.Free {
				o.slots[a.Region] = shm.WorkerState{}
			}
		case FreeSlot:
			o.freed = append(o.freed, a.Region)
			o.slots[a.Region] = shm.WorkerState{}
		case Applied:
			o.applied = append(o.applied, a.Gen)
			for _, r := range a.Replies {
				r()
			}
		case Ready:
			o.ready++
		case Done:
			o.done = append(o.done, a.Code)
		default:
			o.t.Fatalf("unknown action %T", a)
		}
	}
}

// tick advances the clock by d and ticks the core.
func (o *owner) tick(d time.Duration) {
	o.now = o.now.Add(d)
	min := o.gen
	for _, w := range o.slots {
		if w.PID != 0 {
			min = mn(min, w.Observed)
		}
	}
	o.do(o.c.Tick(o.now, View{Generation: o.gen, MinObserved: min, Slots: slices.Clone(o.slots), Gone: func(pid int) bool { return o.gone[pid] }}))
}

func mn(a, b uint64) uint64 { return min(a, b) }

// observe makes every worker slot observe the generation in force and beat now.
func (o *owner) observe() {
	for i := range o.slots {
		if o.slots[i].PID != 0 {
			o.slots[i].Observed, o.slots[i].Heartbeat = o.gen, o.now.UnixNano()
		}
	}
}

// exit ends the worker pid of slot after it ran for ran, with err.
func (o *owner) exit(slot, pid int, err error, ran time.Duration) {
	o.do(o.c.Exited(slot, pid, err, ran, o.now))
}

func (o *owner) logs(msg string) int { return strings.Count(o.log.String(), msg) }

// signalled is the error of a process that sig ended, as exec.Cmd.Wait gives it.
func signalled(t *testing.T, sig syscall.Signal) error {
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(sig)
	err := cmd.Wait()
	if !killedBy(err, sig) {
		t.Fatalf("%v is not an exit by %v", err, sig)
	}
	return err
}

// TestCoreReady: the workers start, and the supervisor is ready once, when every worker runs and
// observed the generation in force.
func TestCoreReady(t *testing.T) {
	o := newOwner(t, 2, 4)
	if !slices.Equal(o.started, []int{100, 101}) {
		t.Fatalf("started %v, want two workers", o.started)
	}
	o.gen = 3
	o.tick(time.Millisecond)
	if o.ready != 0 {
		t.Fatal("ready before the workers observed generation 3")
	}
	if next := o.c.Next(o.now); next != o.now.Add(AppliedPoll) {
		t.Fatalf("next tick at %v, want the poll: not ready yet", next.Sub(o.now))
	}
	o.observe()
	o.tick(time.Millisecond)
	o.tick(time.Millisecond)
	if o.ready != 1 || !o.c.Ready() {
		t.Fatalf("ready %d times, want once", o.ready)
	}
	if next := o.c.Next(o.now); !next.IsZero() {
		t.Fatalf("next tick in %v, want none: ready, nothing pending", next.Sub(o.now))
	}
}

// TestCoreRestartBackoff: a crashing worker is restarted after RestartDelayMin, doubled with each
// crash after a short run up to RestartDelayMax, and after RestartDelayMin again once it ran for
// RestartStable. Nothing starts before its delay.
func TestCoreRestartBackoff(t *testing.T) {
	o := newOwner(t, 1, 1)
	ms := time.Millisecond
	steps := []struct {
		ran  time.Duration
		want time.Duration
	}{
		{0, 50 * ms}, {ms, 100 * ms}, {ms, 200 * ms}, {ms, 400 * ms}, {ms, 800 * ms}, {ms, 1600 * ms},
		{ms, 3200 * ms}, {ms, 6400 * ms}, {ms, 10 * time.Second}, {ms, 10 * time.Second},
		{RestartStable, 50 * ms}, {ms, 100 * ms}, {RestartStable - ms, 200 * ms},
	}
	crash := errors.New("exit status 2")
	for i, s := range steps {
		pid := o.started[len(o.started)-1]
		o.exit(0, pid, crash, s.ran)
		if got := o.released[len(o.released)-1]; got != fmt.Sprintf("%d/true", pid) {
			t.Fatalf("exit %d: released %s, want %d and its region slot", i, got, pid)
		}
		if next := o.c.Next(o.now); next.Sub(o.now) != s.want && o.c.Ready() {
			t.Fatalf("exit %d: next tick in %v, want the restart in %v", i, next.Sub(o.now), s.want)
		}
		n := len(o.started)
		o.tick(s.want - ms)
		if len(o.started) != n {
			t.Fatalf("exit %d after a run of %v: restarted before %v", i, s.ran, s.want)
		}
		o.tick(ms)
		if len(o.started) != n+1 {
			t.Fatalf("exit %d after a run of %v: not restarted after %v", i, s.ran, s.want)
		}
		o.observe()
		o.tick(0)
	}
	if got := o.logs(`worker exited: slot=0 pid=100 error="exit status 2" ran=0s restart_in=50ms`); got != 1 {
		t.Fatalf("the first exit logged %d times, want once:\n%s", got, o.log.String())
	}
	// An exit of a pid that is not the slot's (a stale report) changes nothing.
	n := len(o.released)
	o.exit(0, 7, crash, 0)
	if len(o.released) != n {
		t.Fatal("an exit of another pid released the slot's worker")
	}
}

// TestCoreStartFailed: a start that fails is tried again after the backoff, as a crash.
func TestCoreStartFailed(t *testing.T) {
	o := newOwner(t, 1, 1)
	o.exit(0, 100, errors.New("exit status 1"), 0)
	o.failing = true
	o.tick(RestartDelayMin)
	if len(o.started) != 1 || o.logs("cannot start a worker") != 1 {
		t.Fatalf("started %v; want the failed start logged and nothing started", o.started)
	}
	o.failing = false
	o.tick(2*RestartDelayMin - time.Millisecond)
	if len(o.started) != 1 {
		t.Fatal("restarted before the doubled delay")
	}
	o.tick(time.Millisecond)
	if !slices.Equal(o.started, []int{100, 101}) {
		t.Fatalf("started %v, want the restart after the doubled delay", o.started)
	}
}

// TestCoreStall: a worker silent past the stall timeout is killed once; one whose region slot
// another process holds is not; a killed worker is restarted when its exit comes.
func TestCoreStall(t *testing.T) {
	o := newOwner(t, 2, 2)
	o.observe()
	o.tick(stallTimeout)
	if len(o.signals) != 0 {
		t.Fatalf("signals %v at the timeout, want none", o.signals)
	}
	o.slots[1].Heartbeat = o.now.UnixNano() // worker 101 beats, worker 100 does not
	o.tick(time.Millisecond)
	if !slices.Equal(o.signals, []string{"100:KILL"}) {
		t.Fatalf("signals %v, want 100 killed", o.signals)
	}
	o.tick(time.Second)
	if !slices.Equal(o.signals, []string{"100:KILL"}) {
		t.Fatalf("signals %v, want 100 killed once", o.signals)
	}
	o.exit(0, 100, signalled(t, syscall.SIGKILL), stallTimeout)
	o.tick(RestartDelayMin)
	if !slices.Equal(o.started, []int{100, 101, 102}) {
		t.Fatalf("started %v, want the stalled worker's restart", o.started)
	}
	// The region slot of worker 101 taken by another process: 101 says nothing there.
	o.slots[1].PID = 999
	o.slots[1].Heartbeat = 0
	o.tick(time.Minute)
	if slices.Contains(o.signals, "101:KILL") {
		t.Fatalf("signals %v: 101 killed over a slot another process holds", o.signals)
	}
}

// TestStalledFor: a worker is stalled when its own slot's heartbeat (or its start, if later) is
// older than the timeout; a slot another process holds says nothing.
func TestStalledFor(t *testing.T) {
	started := time.Unix(1000, 0)
	beat := started.Add(5 * time.Second).UnixNano()
	for _, tc := range []struct {
		name    string
		slotPID int
		beat    int64
		now     time.Time
		want    bool
	}{
		{"beating", 42, beat, started.Add(20 * time.Second), false},
		{"silent past the timeout", 42, beat, started.Add(36 * time.Second), true},
		{"no beat yet, just started", 42, 0, started.Add(29 * time.Second), false},
		{"no beat since its start", 42, 0, started.Add(31 * time.Second), true},
		{"its slot is another's", 77, beat, started.Add(60 * time.Second), false},
	} {
		if _, got := stalledFor(tc.slotPID, tc.beat, 42, started, tc.now, 30*time.Second); got != tc.want {
			t.Errorf("%s: stalled %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestCoreReap: a region slot is freed only when it is held, not by one of ours, and its process
// is gone.
func TestCoreReap(t *testing.T) {
	o := newOwner(t, 1, 5) // worker 100 in region slot 0
	o.slots[1].PID, o.slots[2].PID, o.slots[3].PID = 201, 202, 203
	o.gone[100], o.gone[201], o.gone[203] = true, true, true // 100 is ours: its exit is to come
	o.observe()
	o.tick(time.Millisecond)
	if !slices.Equal(o.freed, []int{1, 3}) {
		t.Fatalf("freed %v, want region slots 1 and 3: 0 is ours, 2 runs, 4 is free", o.freed)
	}
}

// TestCorePending: generations are applied, in order, once every live worker observed them, with
// their replies; one that waits past AppliedWarn is said late once; an Await on an applied
// generation is answered at once.
func TestCorePending(t *testing.T) {
	o := newOwner(t, 2, 2)
	o.observe()
	o.tick(0)
	var replies []string
	reply := func(s string) func() { return func() { replies = append(replies, s) } }
	for g := uint64(3); g <= 5; g++ {
		o.gen = g
		o.c.Published(g, o.now, reply(fmt.Sprint(g)))
		o.now = o.now.Add(time.Second)
	}
	o.c.Await(5, reply("5b"))
	o.slots[0].Observed, o.slots[1].Observed = 5, 3
	o.tick(0)
	if !slices.Equal(o.applied, []uint64{3}) || !slices.Equal(replies, []string{"3"}) {
		t.Fatalf("applied %v replies %v, want 3 alone: worker 101 is at 3", o.applied, replies)
	}
	o.tick(AppliedWarn)
	o.tick(time.Second)
	if n := o.logs("generation not yet applied by every worker: generation=4 waiting=\"slot 1 pid 101 at generation 3\""); n != 1 {
		t.Fatalf("generation 4 said late %d times, want once:\n%s", n, o.log.String())
	}
	if n := o.logs("generation not yet applied by every worker: generation=5"); n != 1 {
		t.Fatalf("generation 5 said late %d times, want once", n)
	}
	o.slots[1].Observed = 5
	o.tick(0)
	if !slices.Equal(o.applied, []uint64{3, 4, 5}) || !slices.Equal(replies, []string{"3", "4", "5", "5b"}) {
		t.Fatalf("applied %v replies %v, want 3 4 5 and every reply", o.applied, replies)
	}
	o.c.Await(5, reply("late"))
	if replies[len(replies)-1] != "late" {
		t.Fatal("an Await on an applied generation was not answered at once")
	}
}

// TestCoreRebuilt: a rebuilt region retires every running worker (TERM) and starts its
// replacement at the same slot of the new region; a retired worker's exit frees nothing; what
// waited for an old generation waits for the new one.
func TestCoreRebuilt(t *testing.T) {
	o := newOwner(t, 2, 2)
	o.observe()
	o.tick(0)
	answered := false
	o.gen = 4
	o.c.Published(4, o.now, func() { answered = true })
	o.gen = 7 // the new region's generation of the same sets
	o.slots = make([]shm.WorkerState, 2)
	o.do(o.c.Rebuilt(7, o.now))
	if !slices.Equal(o.signals, []string{"100:TERM", "101:TERM"}) || !slices.Equal(o.started, []int{100, 101, 102, 103}) {
		t.Fatalf("signals %v started %v, want 100 and 101 retired and two new workers", o.signals, o.started)
	}
	o.exit(0, 100, nil, time.Minute)
	if !slices.Equal(o.released, []string{"100/false"}) || o.slots[0].PID != 102 {
		t.Fatalf("released %v, slot 0 held by %d: a retired worker must not free the new region's slot", o.released, o.slots[0].PID)
	}
	o.observe()
	o.tick(0)
	if !answered || !slices.Equal(o.applied, []uint64{7}) {
		t.Fatalf("applied %v, answered %v: the reply of 4 waits for 7", o.applied, answered)
	}
	if len(o.started) != 4 {
		t.Fatal("a retired worker's exit was taken for a crash and restarted")
	}
}

// TestCoreStop: a stop asks every worker, retired ones included, to drain; Done comes once all
// exited, with 0 when each ended cleanly or of the SIGTERM, 1 when one failed or had to be
// killed past the shutdown timeout and KillGrace. A restart due is dropped.
func TestCoreStop(t *testing.T) {
	t.Run("clean", func(t *testing.T) {
		o := newOwner(t, 3, 3)
		o.exit(2, 102, errors.New("exit status 2"), 0) // waits for its restart
		o.do(o.c.Stop(o.now))
		if !slices.Equal(o.signals, []string{"100:TERM", "101:TERM"}) {
			t.Fatalf("signals %v, want TERM to 100 and 101", o.signals)
		}
		o.exit(0, 100, nil, time.Minute)
		o.tick(shutdownTimeout) // nothing restarts, nothing is killed before the grace ends
		if len(o.done) != 0 || len(o.started) != 3 {
			t.Fatalf("done %v started %v before the last exit", o.done, o.started)
		}
		o.exit(1, 101, signalled(t, syscall.SIGTERM), time.Minute)
		if !slices.Equal(o.done, []int{exit.OK}) {
			t.Fatalf("done %v, want one Done 0", o.done)
		}
		o.exit(1, 101, nil, 0)
		if len(o.done) != 1 {
			t.Fatal("Done twice")
		}
	})
	t.Run("failed while stopping", func(t *testing.T) {
		o := newOwner(t, 1, 1)
		o.do(o.c.Stop(o.now))
		o.exit(0, 100, errors.New("exit status 1"), time.Minute)
		if !slices.Equal(o.done, []int{exit.Failure}) || o.logs("worker failed while stopping") != 1 {
			t.Fatalf("done %v, want 1 and the failure logged", o.done)
		}
	})
	t.Run("killed past the grace, retired too", func(t *testing.T) {
		o := newOwner(t, 1, 1)
		o.slots = make([]shm.WorkerState, 1)
		o.do(o.c.Rebuilt(1, o.now)) // 100 retired, 101 started
		o.signals = nil
		o.do(o.c.Stop(o.now))
		if next := o.c.Next(o.now); next.Sub(o.now) != shutdownTimeout+KillGrace {
			t.Fatalf("next tick in %v, want the kill at %v", next.Sub(o.now), shutdownTimeout+KillGrace)
		}
		o.tick(shutdownTimeout + KillGrace - time.Millisecond)
		if !slices.Equal(o.signals, []string{"101:TERM"}) {
			t.Fatalf("signals %v before the kill, want TERM to 101 (100 was told when retired)", o.signals)
		}
		o.tick(time.Millisecond)
		got := slices.Sorted(slices.Values(o.signals[1:]))
		if !slices.Equal(got, []string{"100:KILL", "101:KILL"}) {
			t.Fatalf("signals %v at the kill, want both killed", o.signals)
		}
		o.exit(0, 101, signalled(t, syscall.SIGKILL), time.Minute)
		o.exit(0, 100, signalled(t, syscall.SIGKILL), time.Minute)
		if !slices.Equal(o.done, []int{exit.Failure}) {
			t.Fatalf("done %v, want 1", o.done)
		}
	})
	t.Run("nothing running", func(t *testing.T) {
		o := newOwner(t, 1, 1)
		o.exit(0, 100, errors.New("exit status 2"), 0)
		o.do(o.c.Stop(o.now))
		if !slices.Equal(o.done, []int{exit.OK}) || len(o.signals) != 0 {
			t.Fatalf("done %v signals %v, want Done 0 at once", o.done, o.signals)
		}
	})
}
