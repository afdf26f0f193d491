// Package table is one generation of backend sets as a worker serves it: decoded once from the
// shared region into plain, immutable values, then read by every request without locks.
//
// A Follower is a worker's side of the region. Generation is one atomic load, the whole cost of a
// request that sees no change; Load decodes the generation in force (shm.Region.Read retries past a
// half being rewritten, so a torn set is never returned); Observed records in the worker's slot
// that the worker now serves a generation, which is how the supervisor learns that a generation was
// applied by every worker.
package table

import (
	"fmt"
	"os"
	"time"

	"github.com/xlbproxy/xlb/dataplane/shm"
)

// State is a backend's administrative state.
type State = shm.State

// The states a backend may be in.
const (
	Active   = shm.StateActive
	Draining = shm.StateDraining
	Disabled = shm.StateDisabled
)

// ParseState turns "active", "draining" or "disabled" into a State. The empty string is Active.
func ParseState(s string) (State, error) {
	switch s {
	case "active", "":
		return Active, nil
	case "draining":
		return Draining, nil
	case "disabled":
		return Disabled, nil
	}
	return 0, fmt.Errorf("backend state %q: want active, draining or disabled", s)
}

// Table is one decoded generation. Nothing in it changes after Load returns it.
type Table struct {
	Generation uint64
	Sets       []shm.Set
}

// Follower follows a region's generations for the worker of one slot.
type Follower struct {
	r      *shm.Region
	slot   int
	pid    int
	loaded uint64 // the newest generation Load returned
}

// ErrCorrupt and ErrZeroed are wrapped by Load's errors of a damaged region (shm says which).
var (
	ErrCorrupt = shm.ErrCorrupt
	ErrZeroed  = shm.ErrZeroed
)

// NewFollower follows r for the worker of slot, this process.
func NewFollower(r *shm.Region, slot int) *Follower {
	return &Follower{r: r, slot: slot, pid: os.Getpid()}
}

// mine tells whether the slot is this process's: claimed for its pid, or not claimed yet (the
// supervisor claims it once it knows the pid, which may be after the worker's first write). A
// worker left draining by a supervisor that died must not write a slot its successor gave to
// another worker.
func (f *Follower) mine() bool {
	pid := f.r.Worker(f.slot).PID
	return pid == 0 || pid == f.pid
}

// Generation is the generation in force: one atomic load.
func (f *Follower) Generation() uint64 { return f.r.Generation() }

// Load decodes the generation in force. Before the first generation is published it returns an
// empty Table of generation 0. A generation older than one it returned before is an error wrapping
// ErrCorrupt: a worker's region never goes back (a rebuilt one is given to new workers).
func (f *Follower) Load() (*Table, error) {
	s, err := f.r.Read()
	if err == shm.ErrEmpty {
		s, err = shm.Snapshot{}, nil
	}
	if err != nil {
		return nil, err
	}
	if s.Generation < f.loaded {
		return nil, fmt.Errorf("%w: its generation went back from %d to %d", ErrCorrupt, f.loaded, s.Generation)
	}
	f.loaded = s.Generation
	return &Table{Generation: s.Generation, Sets: s.Sets}, nil
}

// Observed records in the worker's slot that it serves generation g.
func (f *Follower) Observed(g uint64) {
	if f.mine() {
		f.r.Observe(f.slot, g)
	}
}

// Beat records in the worker's slot that the worker is alive.
func (f *Follower) Beat(now time.Time) {
	if f.mine() {
		f.r.Beat(f.slot, now.UnixNano())
	}
}
