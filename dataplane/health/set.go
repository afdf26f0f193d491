package health

import "time"

// Member is one backend of a set as the set's rules see it.
type Member struct {
	Machine *Machine
	// Active is the control plane's state: false for a draining or disabled backend, which takes no
	// new request whatever its health, and counts for neither the cap nor the panic threshold.
	Active bool
}

// Route is what the workers do with a backend: the one thing of its health they read.
type Route struct {
	// Out: new requests do not go to it (Trial aside).
	Out bool
	// Trial: one request, claimed by one worker, may go to it to decide its readmission (in panic,
	// where it takes traffic anyway, the first request that claims the trial decides).
	Trial bool
	// Panic: its set is in panic, and it takes traffic whatever its health.
	Panic bool
	// WeightPermille is the share of its weight it takes traffic with, in thousandths: 1 to 1000.
	WeightPermille int
}

// SetView is a set's health at one moment.
type SetView struct {
	// Active counts the active backends, In those of them that are in by their health, Out the rest.
	Active, In, Out int
	// Panic: fewer than the panic threshold are in, and every active backend takes traffic.
	Panic bool
	// MaxOut is how many may be out at once (Config.MaxOut).
	MaxOut int
}

// View counts ms under c.
func View(c *Config, ms []Member) SetView {
	var v SetView
	for _, m := range ms {
		if !m.Active {
			continue
		}
		v.Active++
		if m.Machine.Status.In() {
			v.In++
		} else {
			v.Out++
		}
	}
	v.MaxOut = c.MaxOut(v.Active)
	v.Panic = v.Active > 0 && (v.In == 0 || v.In*100 < c.PanicThreshold*v.Active)
	return v
}

// MayEject tells whether the cap on ejections leaves room for one more of ms out.
func MayEject(c *Config, ms []Member) bool {
	v := View(c, ms)
	return v.Out < v.MaxOut
}

// Routes fills routes[i] with the route of ms[i] at now, and returns the set's view. A backend
// that is not active is always out: the control plane's state wins, in panic too.
func Routes(c *Config, ms []Member, now time.Time, routes []Route) SetView {
	v := View(c, ms)
	for i, m := range ms {
		routes[i] = Route{Out: true, WeightPermille: 1000}
		if m.Active {
			routes[i] = healthRoute(c, m.Machine, now, v.Panic)
		}
	}
	return v
}

// RegionRoutes is Routes as the region's health slots hold them: a backend that is not active gets
// the route of its health all the same. Workers leave it out by the control plane's state in the
// generation they serve, and the generation that makes it active again must find its route true at
// once, not out until the supervisor writes it anew.
func RegionRoutes(c *Config, ms []Member, now time.Time, routes []Route) SetView {
	v := View(c, ms)
	for i, m := range ms {
		routes[i] = healthRoute(c, m.Machine, now, v.Panic)
	}
	return v
}

// healthRoute is the route of m by its health alone, in a set in panic or not.
func healthRoute(c *Config, m *Machine, now time.Time, panic bool) Route {
	r := Route{Out: true, WeightPermille: 1000}
	switch {
	case m.Status.In():
		r.Out = false
		r.WeightPermille = m.WeightPermille(c, now)
	case m.Status == Trial:
		// In panic too: the backend takes traffic then, but only a claimed trial readmits it.
		r.Trial = true
	}
	if panic {
		r.Out, r.Panic = false, true
	}
	return r
}
