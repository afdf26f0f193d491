package table

import (
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/shm"
)

// A worker's side of the region's health slots (dataplane/health says what each word holds). A
// request reads nothing of them but the health epoch; a worker reads the routes again when it
// changes. The worker's writes are counts of its requests' outcomes and the trial protocol, each
// one compare-and-swap, so that the failures of every worker add up in one place.

func init() {
	if health.Words != shm.HealthWords {
		panic("table: dataplane/health and dataplane/shm disagree on the words of a health slot")
	}
}

// HealthEpoch is the region's health epoch: one atomic load.
func (f *Follower) HealthEpoch() uint64 { return f.r.HealthEpoch() }

// Route is the route of the backend of health slot slot, as the supervisor last wrote it.
func (f *Follower) Route(slot uint32) health.Route {
	return health.RouteOf(f.r.HealthWord(slot, health.WordRoute))
}

// ObserveSuccess records that a request to the backend of slot succeeded: its failures in a row
// end. It costs one atomic load when there were none, the usual case.
func (f *Follower) ObserveSuccess(slot uint32) {
	if w := f.r.HealthWord(slot, health.WordFailures); w != 0 {
		// A failure that another worker adds meanwhile wins: it came after this success.
		f.r.CompareAndSwapHealthWord(slot, health.WordFailures, w, 0)
	}
}

// ObserveFailure records a failed request to the backend of slot, of kind (and status, for
// health.KindStatus), and returns the failures in a row now.
func (f *Follower) ObserveFailure(slot uint32, kind health.Kind, status int) int {
	for {
		w := f.r.HealthWord(slot, health.WordFailures)
		next := health.AddFailure(w, kind, status)
		if f.r.CompareAndSwapHealthWord(slot, health.WordFailures, w, next) {
			n, _, _ := health.FailuresOf(next)
			return n
		}
	}
}

// ClaimTrial takes the trial request offered for the backend of slot, if there is one that no
// worker took yet; seq identifies the offer, for EndTrial.
func (f *Follower) ClaimTrial(slot uint32) (seq uint32, ok bool) {
	w := f.r.HealthWord(slot, health.WordTrial)
	s, seq, _, _ := health.TrialOf(w)
	if s != health.TrialOffered {
		return 0, false
	}
	return seq, f.r.CompareAndSwapHealthWord(slot, health.WordTrial, w, health.TrialWord(health.TrialClaimed, seq, 0, 0))
}

// EndTrial records the outcome of the trial request of offer seq that this worker claimed. It
// tells whether the offer was still the one in force (the supervisor gives up on a trial that
// takes too long, and may offer another).
func (f *Follower) EndTrial(slot, seq uint32, ok bool, kind health.Kind, status int) bool {
	claimed := health.TrialWord(health.TrialClaimed, seq, 0, 0)
	end := health.TrialWord(health.TrialPassed, seq, 0, 0)
	if !ok {
		end = health.TrialWord(health.TrialFailed, seq, kind, status)
	}
	return f.r.CompareAndSwapHealthWord(slot, health.WordTrial, claimed, end)
}

// ReleaseTrial puts back on offer the trial request of offer seq that this worker claimed and could
// not carry out (its client went away): it says nothing of the backend.
func (f *Follower) ReleaseTrial(slot, seq uint32) bool {
	return f.r.CompareAndSwapHealthWord(slot, health.WordTrial,
		health.TrialWord(health.TrialClaimed, seq, 0, 0), health.TrialWord(health.TrialOffered, seq, 0, 0))
}

// InFlightStart counts a request of this worker in flight on the backend of health slot slot, in
// the region, and tells whether it did: a worker counts only while its slot names its pid (from
// the supervisor's claim, which zeroes the slot's counters first, to its release, which zeroes
// them again). Pass what it returns to InFlightEnd. Two atomic operations; no allocation.
func (f *Follower) InFlightStart(slot uint32) bool {
	if f.r.WorkerPID(f.slot) != f.pid {
		return false
	}
	f.r.InFlightAdd(f.slot, slot, 1)
	return true
}

// InFlightEnd uncounts a request that InFlightStart counted (counted true), unless the worker's
// slot was released meanwhile.
func (f *Follower) InFlightEnd(slot uint32, counted bool) {
	if counted && f.r.WorkerPID(f.slot) == f.pid {
		f.r.InFlightAdd(f.slot, slot, -1)
	}
}

// InFlight is the requests in flight on the backend of health slot slot over every worker (the
// region's sum), for the least-request choice.
func (f *Follower) InFlight(slot uint32) int64 { return f.r.InFlight(slot) }
