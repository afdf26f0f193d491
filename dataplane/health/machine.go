package health

import (
	"fmt"
	"time"
)

// Status is where a backend's machine is.
type Status uint8

const (
	// Healthy takes traffic.
	Healthy Status = iota
	// Ejected takes nothing until its ejection time is over, whatever probes say meanwhile.
	Ejected
	// Recovering is ejected with its time over, waiting for Rise passing probes in a row.
	Recovering
	// Trial is ejected with its time over and no probes: one request, the trial, decides.
	Trial
	// SlowStarting takes traffic at a weight that ramps up to its own.
	SlowStarting

	statusCount
)

func (s Status) String() string {
	switch s {
	case Healthy:
		return "healthy"
	case Ejected:
		return "ejected"
	case Recovering:
		return "recovering"
	case Trial:
		return "trial"
	case SlowStarting:
		return "slow_start"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// In tells whether a backend of this status takes traffic.
func (s Status) In() bool { return s == Healthy || s == SlowStarting }

// Kind is what failed in one failed request or probe.
type Kind uint8

const (
	KindNone      Kind = iota
	KindConnect        // the connect was refused or timed out, or the connection broke before the request went out
	KindReset          // the connection was reset or closed before a response
	KindTimeout        // no response head within the timeout
	KindMalformed      // the response was malformed
	KindStatus         // a response status that counts as a failure

	kindCount
)

func (k Kind) String() string {
	switch k {
	case KindConnect:
		return "connect failure"
	case KindReset:
		return "connection reset"
	case KindTimeout:
		return "timeout"
	case KindMalformed:
		return "malformed response"
	case KindStatus:
		return "failure status"
	}
	return "failure"
}

// Source is where a failure was seen.
type Source uint8

const (
	SourceTraffic Source = iota // requests of the workers
	SourceProbe                 // the supervisor's probes
	SourceTrial                 // the trial request after an ejection

	sourceCount
)

// Cause is why a backend was last ejected.
type Cause struct {
	Source Source
	Kind   Kind
	// Count is the failures in a row that ejected it.
	Count int
	// Status is the response status, for KindStatus.
	Status int
}

// EventKind is what an Event tells.
type EventKind uint8

const (
	// EvTick is the passing of time.
	EvTick EventKind = iota
	// EvProbe is a probe's result: OK, or Fail (and Status).
	EvProbe
	// EvTraffic is the shared counter of the traffic's failures in a row, read now: Count, with
	// the last one's Fail and Status.
	EvTraffic
	// EvTrial is the trial request's result: OK, or Fail.
	EvTrial
)

// Event is one input of a Machine.
type Event struct {
	Kind   EventKind
	Now    time.Time
	OK     bool
	Fail   Kind
	Status int
	Count  int
}

// Effect is what the owner of a machine must do after a step.
type Effect uint8

const (
	// ResetFailures: zero the shared counter of the traffic's failures in a row.
	ResetFailures Effect = 1 << iota
	// OfferTrial: offer one trial request to the workers.
	OfferTrial
)

// Machine is the health of one backend. It is a plain value: Step is its only mutator, it reads no
// clock and opens no socket, and everything in it but the traffic counter it was last told of
// (Fails, FailKind, FailStatus) is persisted in the backend's region slot (Encode, Decode).
type Machine struct {
	Status Status
	// Ejections is how many times in a row the backend was ejected: the multiplier of its next
	// ejection time. Each BaseEjectionTime spent Healthy takes one off.
	Ejections int
	// ProbeFails and ProbePasses are the probes in a row that failed or passed.
	ProbeFails, ProbePasses int
	// Cause is why it was last ejected.
	Cause Cause
	// Since is when Status was entered (zero for a backend never ejected).
	Since time.Time
	// Until is, when Ejected, the end of the ejection; when SlowStarting, the end of the ramp; when
	// Healthy, the next time Ejections is taken one off (zero when it is 0).
	Until time.Time

	// Fails, FailKind and FailStatus are the shared counter of the traffic's failures in a row, as
	// the last EvTraffic told.
	Fails      int
	FailKind   Kind
	FailStatus int
}

// WantsOut tells whether m is in and its failures call for an ejection: one that the set's cap on
// ejections holds back shows as "capped" in status.
func (m *Machine) WantsOut(c *Config) bool {
	if !m.Status.In() {
		return false
	}
	if c.Probe.Kind != ProbeNone && m.ProbeFails >= c.Probe.Fall {
		return true
	}
	return !c.Outlier.Disabled && m.Fails >= c.Outlier.ConsecutiveFailures
}

// Step feeds ev to m under c (which has its defaults applied). mayEject says whether the set's cap
// allows one more backend out; a wanted ejection that it holds back is made by a later step that
// allows it (a tick, say). It returns what the owner must do.
func (m *Machine) Step(c *Config, ev Event, mayEject bool) Effect {
	now := ev.Now
	switch ev.Kind {
	case EvProbe:
		if ev.OK {
			m.ProbePasses, m.ProbeFails = inc(m.ProbePasses), 0
		} else {
			m.ProbeFails, m.ProbePasses = inc(m.ProbeFails), 0
		}
		switch m.Status {
		case Healthy, SlowStarting:
			if !ev.OK && c.Probe.Kind != ProbeNone && m.ProbeFails >= c.Probe.Fall {
				return m.eject(c, now, Cause{Source: SourceProbe, Kind: ev.Fail, Count: m.ProbeFails, Status: ev.Status}, mayEject)
			}
		case Recovering, Trial:
			// A passing probe never cuts an ejection short: Ejected ignores it but for the count.
			if m.ProbePasses >= c.Probe.Rise && c.Probe.Kind != ProbeNone {
				return m.readmit(c, now)
			}
		}
	case EvTraffic:
		m.Fails, m.FailKind, m.FailStatus = ev.Count, ev.Fail, ev.Status
		if m.Status.In() && !c.Outlier.Disabled && m.Fails >= c.Outlier.ConsecutiveFailures {
			return m.eject(c, now, Cause{Source: SourceTraffic, Kind: ev.Fail, Count: m.Fails, Status: ev.Status}, mayEject)
		}
	case EvTrial:
		if m.Status != Trial {
			return 0 // a trial of an earlier ejection
		}
		if ev.OK {
			return m.readmit(c, now)
		}
		// Out already, so the cap has room for it.
		return m.eject(c, now, Cause{Source: SourceTrial, Kind: ev.Fail, Count: 1, Status: ev.Status}, true)
	case EvTick:
		return m.tick(c, now, mayEject)
	}
	return 0
}

func (m *Machine) tick(c *Config, now time.Time, mayEject bool) Effect {
	probes := c.Probe.Kind != ProbeNone
	switch m.Status {
	case Ejected:
		if now.Before(m.Until) {
			return 0
		}
		if probes {
			if m.ProbePasses >= c.Probe.Rise {
				return m.readmit(c, now)
			}
			m.Status, m.Since, m.Until = Recovering, now, time.Time{}
			return 0
		}
		m.Status, m.Since, m.Until = Trial, now, time.Time{}
		return OfferTrial
	case Recovering:
		if !probes { // the probes were turned off meanwhile: a trial decides instead
			m.Status, m.Since = Trial, now
			return OfferTrial
		}
	case Trial:
		if probes { // the probes were turned on meanwhile: they decide instead
			m.Status, m.Since = Recovering, now
			if m.ProbePasses >= c.Probe.Rise {
				return m.readmit(c, now)
			}
		}
	case SlowStarting:
		if c.SlowStart.Window == 0 || !now.Before(m.Until) {
			m.Status, m.Until = Healthy, time.Time{}
			if m.Ejections > 0 {
				m.Until = now.Add(c.Outlier.BaseEjectionTime)
			}
		}
	case Healthy:
		if m.Ejections > 0 && !m.Until.IsZero() && !now.Before(m.Until) {
			m.Ejections--
			m.Until = time.Time{}
			if m.Ejections > 0 {
				m.Until = now.Add(c.Outlier.BaseEjectionTime)
			}
		}
	}
	if mayEject && m.WantsOut(c) {
		// An ejection the cap held back, now that it has room.
		if probes && m.ProbeFails >= c.Probe.Fall {
			return m.eject(c, now, Cause{Source: SourceProbe, Kind: KindNone, Count: m.ProbeFails}, true)
		}
		return m.eject(c, now, Cause{Source: SourceTraffic, Kind: m.FailKind, Count: m.Fails, Status: m.FailStatus}, true)
	}
	return 0
}

func (m *Machine) eject(c *Config, now time.Time, cause Cause, mayEject bool) Effect {
	if !mayEject {
		return 0 // WantsOut shows it
	}
	m.Ejections = inc(m.Ejections)
	m.Status, m.Since, m.Until = Ejected, now, now.Add(c.Outlier.ejectionTime(m.Ejections))
	m.Cause = cause
	m.ProbeFails, m.ProbePasses = 0, 0
	m.Fails, m.FailKind, m.FailStatus = 0, KindNone, 0
	return ResetFailures
}

// readmit puts m back into service. Every counter starts again from zero: the failures that
// ejected it must not count towards the next ejection.
func (m *Machine) readmit(c *Config, now time.Time) Effect {
	m.ProbeFails, m.ProbePasses = 0, 0
	m.Fails, m.FailKind, m.FailStatus = 0, KindNone, 0
	m.Since = now
	if c.SlowStart.Window > 0 {
		m.Status, m.Until = SlowStarting, now.Add(c.SlowStart.Window)
		return ResetFailures
	}
	m.Status, m.Until = Healthy, time.Time{}
	if m.Ejections > 0 {
		m.Until = now.Add(c.Outlier.BaseEjectionTime)
	}
	return ResetFailures
}

func inc(n int) int { return min(n+1, CountMax) }

// Next is the next time after now that a tick may change m; zero when none will.
func (m *Machine) Next(c *Config, now time.Time) time.Time {
	switch m.Status {
	case Ejected, Healthy:
		return m.Until
	case SlowStarting:
		w := c.SlowStart.Window
		k := rampStep(m.Since, w, now) + 1
		if w <= 0 || k >= slowStartSteps {
			return m.Until
		}
		return m.Since.Add(time.Duration(int64(w) * int64(k) / slowStartSteps))
	}
	return time.Time{}
}

// slowStartSteps is how many even steps a slow start's ramp takes.
const slowStartSteps = 10

// rampStep is the step of a ramp of window begun at since that now is in: 0 to slowStartSteps.
func rampStep(since time.Time, window time.Duration, now time.Time) int {
	if window <= 0 {
		return slowStartSteps
	}
	el := now.Sub(since)
	if el < 0 {
		return 0
	}
	return int(min(int64(el)*slowStartSteps/int64(window), slowStartSteps))
}

// WeightPermille is the share of its weight, in thousandths, that m takes traffic with at now:
// 1000 but while slow-starting.
func (m *Machine) WeightPermille(c *Config, now time.Time) int {
	if m.Status != SlowStarting || c.SlowStart.Window <= 0 {
		return 1000
	}
	lo := c.SlowStart.MinWeightPercent * 10
	return lo + (1000-lo)*rampStep(m.Since, c.SlowStart.Window, now)/slowStartSteps
}
