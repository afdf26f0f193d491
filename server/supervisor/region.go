package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/shm"
)

// The region is sealed memory (shm.New), which every process maps and which nobody can truncate:
// the state directory's region file is a copy of it, which the supervisor loads at start and saves
// after each generation it publishes, at each heartbeat when the generation or the health epoch
// moved or the file is not as it left it (an operator truncated, removed or rewrote it), and when
// it stops.
//
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
	switch {
	case errors.Is(damage, shm.ErrZeroed):
		found = "zeroed"
	case errors.Is(damage, shm.ErrOldLayout):
		found = "of an older layout (written by an older xlb)"
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
// by one that maps it. The damaged region is kept, for an operator, as a file beside the region
// file.
func (s *supervisor) rebuildRegion(damage error) {
	path := filepath.Join(s.stateDir, regionFile)
	aside := asideName(path)
	if err := s.region.Save(aside); err != nil {
		s.log.Error("cannot keep a copy of the damaged region", "error", err)
		aside = ""
	}
	logDamage(s.log, path, aside, damage)
	r, err := newRegion(path, s.region.Capacities())
	if err != nil {
		s.log.Error("cannot make a new region; trying again in a second", "file", path, "error", err)
		return
	}
	old := s.region
	// The monitor stops writing the old region, and reads its machines back from the new one.
	s.monitor.Pause(context.Background())
	s.slots.r.Store(r)
	s.region, s.writer = r, shm.NewWriterAfter(r, s.writer.Last())
	g := s.republish()
	s.monitor.Resume(context.Background())

	// What waited for a generation of the old region waits for the new one's, and every worker
	// is replaced by one that maps the new region.
	s.do(s.core.Rebuilt(g, time.Now()))
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
	s.saveRegion()
	s.wake()
	n := 0
	for _, set := range sets {
		n += len(set.Backends)
	}
	s.log.Info("generation published", "generation", g, "sets", len(sets), "backends", n)
	return g
}

// regionCopy is what the supervisor knows of the region file it saved last.
type regionCopy struct {
	gen, epoch uint64      // the region's when it was saved
	fi         os.FileInfo // the file saved; nil when the last save failed
	failed     string      // the error of the last save that failed, logged once
}

// saveRegion saves the region to the region file. During an upgrade the new supervisor saves it,
// and after the hand-over only it does.
func (s *supervisor) saveRegion() {
	if s.upgrade != nil || s.handedOver {
		return
	}
	path := filepath.Join(s.stateDir, regionFile)
	gen, epoch := s.region.Generation(), s.region.HealthEpoch()
	err := s.region.Save(path)
	var fi os.FileInfo
	if err == nil {
		fi, err = os.Stat(path)
	}
	if err != nil {
		if err.Error() != s.copy.failed {
			s.log.Error("cannot save the region file; a restart would serve an older copy of the region", "file", path, "error", err)
		}
		s.copy.failed, s.copy.fi = err.Error(), nil
		return
	}
	s.copy = regionCopy{gen: gen, epoch: epoch, fi: fi}
}

// checkCopy saves the region when it changed since it was saved, or when the region file is not
// the one saved.
func (s *supervisor) checkCopy() {
	if s.upgrade != nil || s.handedOver {
		return
	}
	path := filepath.Join(s.stateDir, regionFile)
	found := ""
	fi, err := os.Stat(path)
	switch {
	case s.copy.fi == nil:
		// The last save failed, and said so: try again.
	case errors.Is(err, os.ErrNotExist):
		found = "removed"
	case err != nil:
		found = err.Error()
	case !os.SameFile(fi, s.copy.fi):
		found = "replaced by another file"
	case fi.Size() != s.copy.fi.Size():
		found = fmt.Sprintf("truncated or extended to %d bytes from %d", fi.Size(), s.copy.fi.Size())
	case !fi.ModTime().Equal(s.copy.fi.ModTime()):
		found = "written to"
	case s.copy.gen == s.region.Generation() && s.copy.epoch == s.region.HealthEpoch():
		return // unchanged
	}
	if found != "" {
		s.log.Warn("the region file was changed by someone else; it is saved again", "file", path, "found", found,
			"note", "the processes map sealed memory, not this file: nothing else was affected")
	}
	s.saveRegion()
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
