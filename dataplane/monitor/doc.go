// Package monitor is the supervisor's health monitor: the one owner of the health machines
// (dataplane/health) of every backend of a region. It runs the active probes, once per data plane
// however many workers there are; reads from the region what the workers counted (their requests'
// failures in a row, trial outcomes); steps each machine; and writes back into the backend's
// health slot the machine and the route that every worker follows, moving the region's health
// epoch when a route changed.
//
// One goroutine (Run) does all of it; the supervisor talks to it through Update (the sets of each
// generation it publishes), Notify (a worker said something changed), Pause and Resume (around an
// upgrade, when the new supervisor's monitor takes the slots over) and Status.
//
// # Timing
//
// A worker tells its supervisor of a failure at once (a byte on a pipe, coalesced), and the
// monitor reads the region then, so an ejection is in the region within a millisecond or so of
// the failure that caused it; each worker's next request, or its supervisor's wake-up (Changed),
// makes it follow. Without a word from the workers, the monitor reads the region every Rescan
// anyway. Probes of a backend start Interval apart, jittered by up to a tenth either way, the first
// one at a random point of the first interval so that many backends are not probed together; at
// most ProbesMax run at once, each on a connection of its own.
//
// # What the monitor never does
//
// It never writes a slot of a backend that the last Update did not hold: the region may give that
// slot to another backend at the next publish. While paused, it writes nothing at all.
package monitor
