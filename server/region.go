package server

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/shm"
)

// A damaged region. The supervisor verifies the region when it opens it and at every heartbeat
// (shm's Writer.Verify: the header, the checksum of the half in force, the generation word it
// stored last). A damaged one is logged in plain words, kept for an operator under
// region.corrupt-TIMESTAMP, and replaced by a new region of the same capacities, into which the
// supervisor publishes the sets it serves (the applied file's, at start) under the generations
// after the last one; then it replaces every worker by one on the new region, and the old ones
// drain. Until their replacement serves, workers keep the generation they decoded: they never
// take a damaged region for an empty one.

// logDamage logs that the region file at path was found damaged and moved to aside.
func logDamage(log hclog.Logger, path, aside string, damage error) {
	found := "corrupt"
	if errors.Is(damage, shm.ErrZeroed) {
		found = "zeroed"
	}
	log.Error("the region file is "+found+"; it is moved aside and rebuilt", "file", path, "error", damage, "moved_to", aside)
}

// checkRegion verifies the region, and rebuilds it when it is damaged. During an upgrade the new
// supervisor may be writing it: it is not checked then.
func (s *supervisor) checkRegion() {
	if s.upgrade != nil {
		return
	}
	if err := s.writer.Verify(); err != nil {
		s.rebuildRegion(err)
	}
}

// rebuildRegion replaces the damaged region by a new one with the sets in force, and every worker
// by one that maps it.
func (s *supervisor) rebuildRegion(damage error) {
	path := filepath.Join(s.stateDir, regionFile)
	aside, err := moveAside(path)
	if err != nil {
		s.log.Error("cannot move the damaged region file aside; trying again in a second", "file", path, "error", err)
		return
	}
	logDamage(s.log, path, aside, damage)
	r, err := shm.Create(path, s.region.Capacities())
	if err != nil {
		s.log.Error("cannot create a new region file; trying again in a second", "file", path, "error", err)
		return
	}
	old := s.region
	// The monitor stops writing the old region, and reads its machines back from the new one.
	s.monitor.Pause(context.Background())
	s.slots.r.Store(r)
	s.region, s.writer = r, shm.NewWriterAfter(r, s.writer.Last())
	for i := range s.regionOf {
		s.regionOf[i] = i
	}
	g := s.republish()
	s.monitor.Resume(context.Background())

	// What waited for a generation of the old region waits for the new one's.
	var replies []func()
	for _, p := range s.pending {
		replies = append(replies, p.replies...)
	}
	s.pending = []pendingGen{{gen: g, at: time.Now(), replies: replies}}

	for slot, wp := range s.workers {
		if wp == nil {
			continue // restarted later, on the new region
		}
		wp.retired = true
		s.retired[wp.pid] = wp
		s.workers[slot] = nil
		wp.cmd.Process.Signal(syscall.SIGTERM)
		if err := s.start(slot); err != nil {
			s.log.Error("cannot start a worker on the new region", "slot", slot, "error", err)
			s.exited(workerExit{slot: slot, err: err}, &slotState{})
		}
	}
	old.Close()
	s.log.Info("region rebuilt", "file", path, "generation", g, "sets", len(s.current))
}

// republish publishes the sets in force into a new region, and returns the generation.
func (s *supervisor) republish() uint64 {
	sets := regionSetsOf(s.current)
	g, err := s.writer.Publish(sets)
	if err != nil {
		// They fitted the region before, of the same capacities.
		s.log.Error("cannot publish the backend sets into the new region", withHint(err)...)
		return s.region.Generation()
	}
	s.regionSets = sets
	s.updateMonitor()
	s.saveApplied()
	s.wake()
	n := 0
	for _, set := range sets {
		n += len(set.Backends)
	}
	s.log.Info("generation published", "generation", g, "sets", len(sets), "backends", n)
	return g
}

// regionSlots is the region's health slots for the monitor, through a pointer that a rebuild
// swaps while the monitor is paused.
type regionSlots struct{ r atomic.Pointer[shm.Region] }

func (rs *regionSlots) HealthWord(slot uint32, j int) uint64 { return rs.r.Load().HealthWord(slot, j) }
func (rs *regionSlots) SetHealthWord(slot uint32, j int, v uint64) {
	rs.r.Load().SetHealthWord(slot, j, v)
}
func (rs *regionSlots) SwapHealthWord(slot uint32, j int, v uint64) uint64 {
	return rs.r.Load().SwapHealthWord(slot, j, v)
}
func (rs *regionSlots) CompareAndSwapHealthWord(slot uint32, j int, old, v uint64) bool {
	return rs.r.Load().CompareAndSwapHealthWord(slot, j, old, v)
}
func (rs *regionSlots) BumpHealthEpoch() uint64 { return rs.r.Load().BumpHealthEpoch() }
