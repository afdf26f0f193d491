package health

import (
	"fmt"
	"strings"
	"time"
)

// TimeFormat is how Describe writes times.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

func stamp(t time.Time) string { return t.UTC().Format(TimeFormat) }

// Ordinal writes n as 1st, 2nd, 3rd, 4th...
func Ordinal(n int) string {
	suffix := "th"
	if n%100 < 11 || n%100 > 13 {
		switch n % 10 {
		case 1:
			suffix = "st"
		case 2:
			suffix = "nd"
		case 3:
			suffix = "rd"
		}
	}
	return fmt.Sprintf("%d%s", n, suffix)
}

// String describes the failures of a cause: "5 consecutive connect failures", "3 failed probes in
// a row (timeout)", "the trial request failed (status 503)".
func (c Cause) String() string {
	what := c.Kind.String()
	if c.Kind == KindStatus && c.Status > 0 {
		what = fmt.Sprintf("status %d", c.Status)
	}
	switch c.Source {
	case SourceProbe:
		if c.Kind == KindNone {
			return fmt.Sprintf("%d failed probes in a row", c.Count)
		}
		return fmt.Sprintf("%d failed probes in a row (%s)", c.Count, what)
	case SourceTrial:
		return fmt.Sprintf("the trial request failed (%s)", what)
	}
	switch {
	case c.Count == 1:
		return fmt.Sprintf("1 %s", what)
	case c.Kind == KindStatus && c.Status > 0:
		return fmt.Sprintf("%d consecutive %d responses", c.Count, c.Status)
	case c.Kind == KindStatus:
		return fmt.Sprintf("%d consecutive failure statuses", c.Count)
	}
	return fmt.Sprintf("%d consecutive %ss", c.Count, what)
}

// Describe says why a backend with machine m and route r is where it is, in v's set under c. The
// control plane's states (draining, disabled) are its caller's to describe.
func Describe(c *Config, m *Machine, r Route, v SetView, now time.Time) string {
	var b strings.Builder
	if r.Panic && !m.Status.In() {
		fmt.Fprintf(&b, "panic: %d of %d active backends are in, under the panic threshold (%d%%), so it takes traffic though ", v.In, v.Active, c.PanicThreshold)
	}
	switch m.Status {
	case Healthy:
		b.WriteString("healthy")
		if m.WantsOut(c) {
			why := fmt.Sprintf("%d consecutive failures", m.Fails)
			if c.Probe.Kind != ProbeNone && m.ProbeFails >= c.Probe.Fall {
				why = fmt.Sprintf("%d failed probes in a row", m.ProbeFails)
			}
			fmt.Fprintf(&b, "; failing (%s) but not ejected: %d of %d active backends are out, the most max_ejection_percent (%d%%) allows",
				why, v.Out, v.Active, c.Outlier.MaxEjectionPercent)
		}
		if m.Ejections > 0 && !m.Until.IsZero() {
			fmt.Fprintf(&b, "; ejected %d times in a row, one forgiven at %s", m.Ejections, stamp(m.Until))
		}
	case Ejected:
		fmt.Fprintf(&b, "ejected: %s at %s, until %s, %s ejection", m.Cause, stamp(m.Since), stamp(m.Until), Ordinal(m.Ejections))
	case Recovering:
		fmt.Fprintf(&b, "recovering: ejected for %s, %s ejection; its time is over since %s, and it is readmitted after %d passing probes in a row (%d so far)",
			m.Cause, Ordinal(m.Ejections), stamp(m.Since), c.Probe.Rise, m.ProbePasses)
	case Trial:
		fmt.Fprintf(&b, "trial: ejected for %s, %s ejection; its time is over since %s, and one trial request decides whether it is readmitted",
			m.Cause, Ordinal(m.Ejections), stamp(m.Since))
	case SlowStarting:
		fmt.Fprintf(&b, "slow start: readmitted at %s, at %d%% of its weight now, all of it at %s",
			stamp(m.Since), (m.WeightPermille(c, now)+5)/10, stamp(m.Until))
	default:
		fmt.Fprintf(&b, "%v", m.Status)
	}
	return b.String()
}
