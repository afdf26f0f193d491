package supervisor

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/dataplane/table"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/atomicfile"
	"github.com/xlbproxy/xlb/server/backendset"
)

// The data plane's side of xDS-lite: the supervisor turns each response of its control plane into
// a generation of the region, and answers once every live worker serves it.

// appliedFile, in the state directory, holds the sets of the region's generation as the control
// plane sent them, with their versions: a restarted data plane reports them, so that it is not
// sent again what it has, and can apply a response that changes only some sets. Its format: the
// generation (8 bytes, little-endian), then a StreamBackendSetsResponse holding every set.
const appliedFile = "applied"

// applyReq is a response for the supervisor's loop to apply; the result comes back on done once
// the change is in force.
type applyReq struct {
	resp *discoveryv1.StreamBackendSetsResponse
	done chan applyResult
}

type applyResult struct {
	applied    map[string]string
	rejected   []*discoveryv1.SetError
	generation uint64
	workers    []*discoveryv1.WorkerStatus
}

// apply applies a response: the sets it brings that pass validation and fit the region (with the
// sets kept) replace their previous versions, the removed ones go, and the rest stay. A set that
// does not fit is refused alone: the sets are added in name order, each that would take the
// region past a capacity is refused, and the others apply. It returns the result, and the
// generation the caller must wait for (every live worker serving it) before answering; 0 when
// nothing changed in the region.
func (s *supervisor) apply(resp *discoveryv1.StreamBackendSetsResponse) (applyResult, uint64) {
	next, rejections := planApply(s.current, resp, func(sets map[string]*discoveryv1.VersionedBackendSet) error {
		return s.writer.Check(regionSetsOf(sets))
	})
	var rejected []*discoveryv1.SetError
	reject := func(vs *discoveryv1.VersionedBackendSet, err error) {
		rejected = append(rejected, &discoveryv1.SetError{Name: vs.GetBackendSet().GetName(), Version: vs.GetVersion(), Message: err.Error()})
		s.log.Warn("rejected a backend set", "set", vs.GetBackendSet().GetName(), "version", vs.GetVersion(), "error", err)
	}
	for _, r := range rejections {
		if r.unfit {
			s.log.Error("a backend set does not fit the region; its previous version keeps serving", withHint(r.err)...)
		}
		reject(r.set, r.err)
	}
	sets := regionSetsOf(next)
	var wait uint64
	if !sameSets(sets, regionSetsOf(s.current)) {
		g, err := s.writer.Publish(sets)
		if err != nil {
			// Check accepted these sets, or refused a generation that brings none: nothing of
			// this response applies.
			s.log.Error("backend sets rejected; the previous ones keep serving", withHint(err)...)
			for _, vs := range resp.GetSets() {
				if !slices.ContainsFunc(rejections, func(r rejection) bool { return r.set == vs }) {
					reject(vs, err)
				}
			}
			return s.result(rejected), 0
		}
		n := 0
		for _, set := range sets {
			n += len(set.Backends)
		}
		s.log.Info("generation published", "generation", g, "sets", len(sets), "backends", n)
		s.regionSets = sets // with the health slots Publish gave
		s.saveRegion()
		s.core.Published(g, time.Now())
		s.wake()
		wait = g
	}
	s.current = next
	s.saveApplied()
	s.warnInsecure(resp, next)
	s.updateMonitor() // a set's health policy may have changed alone
	return s.result(rejected), wait
}

// rejection is a set of a response that is not applied, and why. unfit says that the set is valid
// but the region cannot hold it beside the others.
type rejection struct {
	set   *discoveryv1.VersionedBackendSet
	err   error
	unfit bool
}

// planApply is the supervisor's decision on a response, the pure core of apply: the sets to serve
// next, and those of the response it rejects. current are the sets in force; fits says whether the
// region can hold a generation of the given sets (shm.Writer.Check). Each set is validated alone
// (the control plane's rules, then its TLS files read: backendset.LoadTLS), and one that fails is
// rejected alone. When the valid sets do not fit the region together, they are added one at a time in name
// order on top of the sets kept, and only those that do not fit are rejected: their previous
// versions, if any, keep serving. Removals always apply.
func planApply(current map[string]*discoveryv1.VersionedBackendSet, resp *discoveryv1.StreamBackendSetsResponse,
	fits func(map[string]*discoveryv1.VersionedBackendSet) error) (map[string]*discoveryv1.VersionedBackendSet, []rejection) {
	next := maps.Clone(current)
	if next == nil {
		next = map[string]*discoveryv1.VersionedBackendSet{}
	}
	for _, name := range resp.GetRemoved() {
		delete(next, name)
	}
	var rejected []rejection
	var valid []*discoveryv1.VersionedBackendSet
	for _, vs := range resp.GetSets() {
		if _, err := backendset.FromProto(vs.GetBackendSet()); err != nil {
			rejected = append(rejected, rejection{set: vs, err: err})
			continue
		}
		// Its TLS files, read here on the data plane's machine: one missing or bad is the set's
		// NACK, naming the field, and its previous version keeps serving.
		if _, err := backendset.LoadTLS(vs.GetBackendSet()); err != nil {
			rejected = append(rejected, rejection{set: vs, err: err})
			continue
		}
		valid = append(valid, vs)
	}
	for _, vs := range valid {
		next[vs.GetBackendSet().GetName()] = vs
	}
	if len(valid) == 0 || fits(next) == nil {
		return next, rejected
	}
	// Not all of it fits: each set in turn, on what fitted before it.
	for _, vs := range valid {
		name := vs.GetBackendSet().GetName()
		delete(next, name)
		if old, ok := current[name]; ok && !slices.Contains(resp.GetRemoved(), name) {
			next[name] = old
		}
	}
	for _, vs := range slices.SortedFunc(slices.Values(valid), byName) {
		name := vs.GetBackendSet().GetName()
		old := next[name]
		next[name] = vs
		if err := fits(next); err != nil {
			rejected = append(rejected, rejection{set: vs, err: err, unfit: true})
			if old != nil {
				next[name] = old
			} else {
				delete(next, name)
			}
		}
	}
	return next, rejected
}

func byName(a, b *discoveryv1.VersionedBackendSet) int {
	return strings.Compare(a.GetBackendSet().GetName(), b.GetBackendSet().GetName())
}

// result is what the data plane reports now.
func (s *supervisor) result(rejected []*discoveryv1.SetError) applyResult {
	r := applyResult{applied: make(map[string]string, len(s.current)), rejected: rejected, generation: s.region.Generation()}
	for name, vs := range s.current {
		r.applied[name] = vs.GetVersion()
	}
	for _, wk := range s.core.Live() {
		w := s.region.Worker(wk.Region)
		r.workers = append(r.workers, &discoveryv1.WorkerStatus{Slot: uint32(wk.Region), Pid: uint32(wk.PID), ObservedGeneration: w.Observed})
	}
	return r
}

// wake tells every worker to look at the region now: an idle one would otherwise see the new
// generation only at its heartbeat. A full pipe already holds a wake-up, so a write that would
// block is dropped.
func (s *supervisor) wake() {
	for _, wp := range s.procs {
		if rc, err := wp.control.SyscallConn(); err == nil {
			rc.Write(func(fd uintptr) bool {
				unix.Write(int(fd), []byte{1})
				return true
			})
		}
	}
}

// regionSetsOf turns the sets of the control plane into the region's records, by name. Each was
// checked when it was applied (planApply); one that FromProto refuses all the same (an applied file
// of an older binary with other rules) is left out of the region rather than written as it is.
func regionSetsOf(sets map[string]*discoveryv1.VersionedBackendSet) []shm.Set {
	out := make([]table.Set, 0, len(sets))
	for _, name := range slices.Sorted(maps.Keys(sets)) {
		if set, err := backendset.FromProto(sets[name].GetBackendSet()); err == nil {
			out = append(out, set)
		}
	}
	return table.Records(out)
}

// saveApplied has the applied file rewritten, off the supervisor's loop: the latest state wins
// over one not yet written. It is not synced to disk: the file only saves a restarted data plane
// from being sent what it has, and one that a crash left behind its region is simply not used.
func (s *supervisor) saveApplied() {
	select {
	case <-s.saves: // drop the older state not yet written
	default:
	}
	s.saves <- s.savedState(nil)
}

// savedState is what the applied file holds; done, when not nil, is closed once it is written.
type savedState struct {
	gen  uint64
	sets *discoveryv1.StreamBackendSetsResponse
	done chan struct{}
}

func (s *supervisor) savedState(done chan struct{}) savedState {
	msg := &discoveryv1.StreamBackendSetsResponse{}
	for _, name := range slices.Sorted(maps.Keys(s.current)) {
		msg.Sets = append(msg.Sets, s.current[name])
	}
	return savedState{gen: s.region.Generation(), sets: msg, done: done}
}

// saver writes the applied file for each state it receives, until saves is closed.
func saver(dir string, saves <-chan savedState, log hclog.Logger, done chan<- struct{}) {
	defer close(done)
	for st := range saves {
		body, err := proto.MarshalOptions{Deterministic: true}.Marshal(st.sets)
		if err == nil {
			buf := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(body)), st.gen)
			err = atomicfile.Write(filepath.Join(dir, appliedFile), append(buf, body...))
		}
		if err != nil {
			log.Error("cannot save the applied backend sets; a restart will ask the control plane for all of them", "error", err)
		}
		if st.done != nil {
			close(st.done)
		}
	}
}

// loadApplied reads the applied file. It returns nothing (and says why) when the file does not
// belong to the region's generation in force: the control plane is then asked for everything.
func loadApplied(dir string, gen uint64) (map[string]*discoveryv1.VersionedBackendSet, error) {
	if _, err := os.Stat(filepath.Join(dir, appliedFile)); errors.Is(err, os.ErrNotExist) {
		return map[string]*discoveryv1.VersionedBackendSet{}, nil
	}
	sets, g, err := readApplied(dir)
	if err != nil {
		return nil, err
	}
	if g != gen {
		return nil, fmt.Errorf("%s holds generation %d, the region %d", appliedFile, g, gen)
	}
	return sets, nil
}

// readApplied reads the applied file: the sets and the generation they were applied in. A missing
// file is no sets, of generation 0.
func readApplied(dir string) (map[string]*discoveryv1.VersionedBackendSet, uint64, error) {
	data, err := os.ReadFile(filepath.Join(dir, appliedFile))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]*discoveryv1.VersionedBackendSet{}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	if len(data) < 8 {
		return nil, 0, fmt.Errorf("%s: %d bytes, shorter than its header", appliedFile, len(data))
	}
	gen := binary.LittleEndian.Uint64(data)
	var msg discoveryv1.StreamBackendSetsResponse
	if err := proto.Unmarshal(data[8:], &msg); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", appliedFile, err)
	}
	out := make(map[string]*discoveryv1.VersionedBackendSet, len(msg.Sets))
	for _, vs := range msg.Sets {
		out[vs.GetBackendSet().GetName()] = vs
	}
	return out, gen, nil
}

// xdsApply is the xds client's Apply: it hands the response to the supervisor's loop and waits
// until the change is in force.
func (s *supervisor) xdsApply(ctx context.Context, resp *discoveryv1.StreamBackendSetsResponse) (map[string]string, []*discoveryv1.SetError, uint64, []*discoveryv1.WorkerStatus) {
	req := applyReq{resp: resp, done: make(chan applyResult, 1)}
	r, err := ask(ctx, s.applyReqs, req, req.done)
	if err != nil {
		return nil, nil, 0, nil
	}
	return r.applied, r.rejected, r.generation, r.workers
}

// warnInsecure logs at WARN, once per applied version, each set of resp now in force whose TLS to
// some backends skips verification, naming the set and those backends.
func (s *supervisor) warnInsecure(resp *discoveryv1.StreamBackendSetsResponse, next map[string]*discoveryv1.VersionedBackendSet) {
	for _, vs := range resp.GetSets() {
		name := vs.GetBackendSet().GetName()
		if next[name] != vs {
			continue // rejected
		}
		if ids := insecureBackends(vs.GetBackendSet()); len(ids) > 0 {
			s.log.Warn("TLS to these backends skips certificate verification (insecure_skip_verify): encrypted, not authenticated",
				"set", name, "version", vs.GetVersion(), "backends", strings.Join(ids, ","))
		}
	}
}

// insecureBackends are the ids of the backends of a valid set whose TLS skips verification.
func insecureBackends(set *discoveryv1.BackendSet) []string {
	var ids []string
	for _, b := range set.GetBackends() {
		if t := resource.TLSFor(set, b); t.GetInsecureSkipVerify() {
			ids = append(ids, b.GetId())
		}
	}
	return ids
}
