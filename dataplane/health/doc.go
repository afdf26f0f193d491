// Package health is the health of a backend: one state machine per backend, fed by the
// supervisor's active probes and by the requests of every worker, so that a probe and a circuit
// breaker can never disagree, and the rules of a set over its machines (the cap on ejections, the
// panic mode). It is pure: events in, state and effects out, no clock, no socket, no region. The
// supervisor's monitor (dataplane/monitor) owns the machines and keeps them in the region's
// health slots; workers only read the route each machine publishes and count their requests.
//
// # The machine
//
//	          failures ≥ threshold (and the cap has room)
//	Healthy ─────────────────────────────────────────────► Ejected ◄──────────────────┐
//	SlowStarting ◄─┐                                          │ ejection time over     │ the trial
//	   │           │ Rise passing probes in a row             ├── probes: Recovering ──┤ fails
//	   ▼ ramp over │ (counting those during the ejection)     └── none:   Trial ───────┘
//	Healthy        └────────────────────────────────── or the trial request succeeds
//
// Failures are counted two ways, and either ejects: Fall failed probes in a row, or
// ConsecutiveFailures failed requests in a row over every worker (a failed probe counts in the
// first, a success of either kind resets its own). Every ejection, whoever caused it, is the same
// state with the same way back:
//
//   - An ejection lasts BaseEjectionTime × n, capped at MaxEjectionTime, where n counts the
//     ejections in a row; each BaseEjectionTime spent Healthy takes one off n. A backend that
//     flaps is ejected for longer each time (Envoy's outlier detection).
//   - A passing probe never cuts an ejection short: probes during it are counted, not obeyed.
//   - Once the time is over, a backend with probes needs Rise passing probes in a row (those during
//     the ejection count, so a backend that recovered meanwhile is readmitted at once); one without
//     probes gets one trial request, claimed by exactly one worker. Its success readmits; its
//     failure ejects again, for longer.
//   - Readmission zeroes every counter. The load balancer xlb replaces had a breaker whose failure
//     count outlived a probe's verdict, so one failure after readmission re-tripped it; here the
//     next ejection needs the whole threshold again (testdata/seed.txt).
//   - With a slow start, a readmitted backend takes MinWeightPercent of its weight, then more in
//     ten even steps, and all of it after Window.
//
// # The set
//
// At most MaxEjectionPercent of a set's active backends are out at once (at least one may always
// be), whatever put them out: a shared cause such as a dependency of every backend failing, or the
// load balancer's own network, must not take a whole set out. A backend that its failures would
// eject beyond the cap stays in, and its status says so; it is ejected as soon as there is room.
// When fewer than PanicThreshold of the active backends are in (by default: none), the set is in
// panic and every active backend takes traffic, as nginx does with all its servers failed: with
// nothing known to be good, trying all of them beats refusing every request. The control plane's
// DRAINING and DISABLED always win: such a backend is never routed, in panic neither, and counts
// for neither rule.
//
// # In the region
//
// A machine lives in its backend's health slot (Words words; word.go has the layout), so it
// survives flips of the generation, restarts of workers and of the supervisor, and upgrades. The
// route word is all a worker reads, and only when the region's health epoch changes; the failure
// and trial words are the only ones workers write, each by compare-and-swap.
package health
