package health

import (
	"fmt"
	"time"
)

// The words of a backend's health slot in the shared region (shm.HealthWords of them), zeroed when
// the slot is taken: all zero is a healthy backend never ejected, in at its full weight.
const (
	// WordRoute holds the route the workers follow and the core of the machine. Only the
	// supervisor writes it; workers read it when the region's health epoch changes.
	WordRoute = 0
	// WordFailures is the traffic's failures in a row, over every worker: each worker adds its
	// failed requests (AddFailure, a compare-and-swap) and zeroes it on a success; the supervisor
	// zeroes it when it ejects or readmits the backend.
	WordFailures = 1
	// WordTrial is the trial request: the supervisor offers it, one worker claims it and then
	// reports its outcome, each by a compare-and-swap.
	WordTrial = 2
	// WordSince and WordUntil hold the machine's times (Unix milliseconds, 48 bits) and its cause's
	// count and status (16 bits each). Only the supervisor reads and writes them.
	WordSince = 3
	WordUntil = 4
	// Words is how many words a slot has for health.
	Words = 5
)

// WordRoute's bytes.
const (
	routeOut   = 1 << 0
	routeTrial = 1 << 1
	routePanic = 1 << 2
)

const (
	msMask   = 1<<48 - 1
	highBits = 48
)

// Encode lays m and its route out as the words WordRoute, WordSince and WordUntil.
func Encode(m *Machine, r Route) (route, since, until uint64) {
	var flags uint64
	if r.Out {
		flags |= routeOut
	}
	if r.Trial {
		flags |= routeTrial
	}
	if r.Panic {
		flags |= routePanic
	}
	w := uint64(min(max(r.WeightPermille, 1), 1000))
	if w == 1000 {
		w = 0 // the zero word is full weight
	}
	route = uint64(m.Status) | uint64(byte(m.Ejections))<<8 | uint64(byte(m.ProbeFails))<<16 |
		uint64(byte(m.ProbePasses))<<24 | uint64(byte(m.Cause.Source)<<6|byte(m.Cause.Kind)&0x3f)<<32 |
		flags<<40 | w<<48
	since = unixMs(m.Since) | uint64(uint16(min(m.Cause.Count, 0xffff)))<<highBits
	until = unixMs(m.Until) | uint64(uint16(min(max(m.Cause.Status, 0), 0xffff)))<<highBits
	return route, since, until
}

// Decode reads a machine and its route from the words Encode made. A word that no Encode makes (a
// region written by something else) is an error.
func Decode(route, since, until uint64) (Machine, Route, error) {
	m := Machine{
		Status:      Status(route),
		Ejections:   int(byte(route >> 8)),
		ProbeFails:  int(byte(route >> 16)),
		ProbePasses: int(byte(route >> 24)),
		Cause: Cause{Source: Source(byte(route>>32) >> 6), Kind: Kind(byte(route>>32) & 0x3f),
			Count: int(since >> highBits), Status: int(until >> highBits)},
		Since: fromMs(since & msMask),
		Until: fromMs(until & msMask),
	}
	r := RouteOf(route)
	switch {
	case m.Status >= statusCount:
		return Machine{}, Route{}, fmt.Errorf("health: route word %#x: status %d", route, m.Status)
	case m.Cause.Source >= sourceCount || m.Cause.Kind >= kindCount:
		return Machine{}, Route{}, fmt.Errorf("health: route word %#x: cause %d/%d", route, m.Cause.Source, m.Cause.Kind)
	case byte(route>>40)&^(routeOut|routeTrial|routePanic) != 0 || route>>48 > 1000:
		return Machine{}, Route{}, fmt.Errorf("health: route word %#x: flags or weight out of range", route)
	}
	return m, r, nil
}

// RouteOf is the route in a WordRoute: what a worker reads. It never fails: a weight out of range
// is taken as full.
func RouteOf(route uint64) Route {
	flags := byte(route >> 40)
	w := int(route >> 48)
	if w == 0 || w > 1000 {
		w = 1000
	}
	return Route{Out: flags&routeOut != 0, Trial: flags&routeTrial != 0, Panic: flags&routePanic != 0, WeightPermille: w}
}

func unixMs(t time.Time) uint64 {
	if t.IsZero() || t.UnixMilli() <= 0 {
		return 0
	}
	return uint64(t.UnixMilli()) & msMask
}

func fromMs(ms uint64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms))
}

// AddFailure is the WordFailures after one more failure of kind (and status, for KindStatus).
func AddFailure(w uint64, kind Kind, status int) uint64 {
	n := min(uint32(w)+1, 1<<32-1)
	return uint64(n) | uint64(kind)<<32 | uint64(uint16(max(status, 0)))<<40
}

// FailuresOf reads a WordFailures.
func FailuresOf(w uint64) (n int, kind Kind, status int) {
	kind = Kind(byte(w >> 32))
	if kind >= kindCount {
		kind = KindNone
	}
	return int(uint32(w)), kind, int(uint16(w >> 40))
}

// TrialState is where a trial request is.
type TrialState uint8

const (
	TrialNone    TrialState = iota
	TrialOffered            // the supervisor offers it
	TrialClaimed            // a worker sends it
	TrialPassed             // it succeeded
	TrialFailed             // it failed
)

// TrialWord is a WordTrial: state, the offer's sequence number (24 bits), and for a failed trial
// its kind and status.
func TrialWord(s TrialState, seq uint32, kind Kind, status int) uint64 {
	return uint64(s) | uint64(seq&0xffffff)<<8 | uint64(kind)<<32 | uint64(uint16(max(status, 0)))<<40
}

// TrialOf reads a WordTrial.
func TrialOf(w uint64) (s TrialState, seq uint32, kind Kind, status int) {
	kind = Kind(byte(w >> 32))
	if kind >= kindCount {
		kind = KindNone
	}
	return TrialState(w), uint32(w>>8) & 0xffffff, kind, int(uint16(w >> 40))
}
