package proxy

import "github.com/xlbproxy/xlb/dataplane/health"

// The proxy's part in the health of backends, when it follows a region: it counts every attempt's
// outcome in the backend's health slot, where the failures of every worker add up, claims and
// reports trial requests, and follows the routes the supervisor's monitor writes there (proxy.go,
// route). An outcome is counted as soon as it is known: a response head's status at its arrival,
// so that a long response (a download, a stream of events) is a success from its first byte.

// claimTrial claims the trial request of one of s's backends on trial, if a worker has not already;
// it returns the backend, or nil.
func (c *conn) claimTrial(s *set) *backend {
	for _, b := range s.trials {
		if seq, ok := c.p.follow.ClaimTrial(b.slot); ok {
			c.trialSeq = seq
			return b
		}
	}
	return nil
}

// headArrived counts the attempt whose response head (of status) arrived.
func (c *conn) headArrived(status int) {
	c.waitingSlot.Store(0)
	if b := c.backend; c.p.follow != nil && !c.healthDone && b != nil {
		if b.failures.Fails(status) {
			c.countHealth(b, false, health.KindStatus, status)
		} else {
			c.countHealth(b, true, health.KindNone, status)
		}
	}
}

// attemptHealth counts an attempt that ended with res, unless its head counted it already.
func (c *conn) attemptHealth(b *backend, res attemptResult) {
	if c.p.follow == nil || c.healthDone {
		c.trialOn = false
		return
	}
	var kind health.Kind
	switch res {
	case attemptNotSent:
		kind = health.KindConnect
	case attemptNoAnswer:
		kind = health.KindReset
	case attemptTimeout:
		kind = health.KindTimeout
	case attemptBad:
		kind = health.KindMalformed
	default:
		// Abandoned (its backend is out already), or failed on the client's side: nothing to say
		// of the backend. A trial it held goes back on offer.
		if c.trialOn {
			c.p.follow.ReleaseTrial(b.slot, c.trialSeq)
			c.trialOn = false
		}
		return
	}
	c.countHealth(b, false, kind, 0)
}

// countHealth counts one outcome of an attempt at b, and tells the supervisor of a failure or of
// the end of a trial.
func (c *conn) countHealth(b *backend, ok bool, kind health.Kind, status int) {
	c.healthDone = true
	f := c.p.follow
	tell := !ok
	if ok {
		f.ObserveSuccess(b.slot)
	} else {
		f.ObserveFailure(b.slot, kind, status)
	}
	if c.trialOn {
		f.EndTrial(b.slot, c.trialSeq, ok, kind, status)
		c.trialOn, tell = false, true
	}
	if tell && c.p.cfg.HealthChanged != nil {
		c.p.cfg.HealthChanged()
	}
}
