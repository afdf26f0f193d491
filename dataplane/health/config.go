package health

import "time"

// Config is the health policy of one backend set. The zero value of every field means its
// documented default: no probes, passive ejection on, no slow start, panic only when no backend is
// in. WithDefaults fills them in; the rules a Config must follow are checked where it is made (the
// control plane's resource package, on the wire form), and WithDefaults clamps whatever still
// falls outside them rather than fail.
type Config struct {
	// Probe is the active health check. A zero Kind means no probes.
	Probe Probe
	// Outlier is passive ejection: what the data plane's own requests observe.
	Outlier Outlier
	// SlowStart ramps the weight of a readmitted backend. A zero Window means none.
	SlowStart SlowStart
	// PanicThreshold is a percentage of the set's active backends: when fewer than that are in
	// (healthy or slow-starting), the set is in panic and every active backend takes traffic,
	// health ignored. Zero means panic only when none is in. At most 100.
	PanicThreshold int
}

// ProbeKind is how a backend is probed.
type ProbeKind uint8

const (
	ProbeNone ProbeKind = iota // no probes
	ProbeHTTP                  // an HTTP/1.1 GET on a connection of its own
	ProbeTCP                   // a TCP connect, closed at once
)

func (k ProbeKind) String() string {
	switch k {
	case ProbeHTTP:
		return "http"
	case ProbeTCP:
		return "tcp"
	}
	return "none"
}

// Probe is an active health check, run for every active backend of the set by the supervisor,
// once per data plane.
type Probe struct {
	Kind ProbeKind
	// Interval is from the start of one probe of a backend to the start of the next, jittered by up
	// to a tenth either way. Zero means 2s.
	Interval time.Duration
	// Timeout bounds one probe: connect, request and response head. Zero means the smaller of 1s
	// and Interval; it is at most Interval.
	Timeout time.Duration
	// Fall is how many probes in a row must fail to eject the backend. Zero means 3.
	Fall int
	// Rise is how many probes in a row must pass to readmit a backend whose ejection time is over.
	// Zero means 2.
	Rise int
	// Path is the HTTP probe's request target. Empty means "/".
	Path string
	// Host is the HTTP probe's Host header. Empty means the backend's host:port.
	Host string
	// Statuses are the response statuses that pass an HTTP probe. Empty means 200 to 399.
	Statuses []StatusRange
}

// StatusRange is the statuses Lo to Hi, both included.
type StatusRange struct{ Lo, Hi int }

// Passes tells whether status passes an HTTP probe of p (with its defaults applied).
func (p *Probe) Passes(status int) bool {
	for _, r := range p.Statuses {
		if status >= r.Lo && status <= r.Hi {
			return true
		}
	}
	return false
}

// FailureStatuses says which response statuses count as a backend's failure, besides the failures
// of the connection itself (connect, reset, timeout, malformed response), which always count.
type FailureStatuses uint8

const (
	FailNoStatus FailureStatuses = iota // no status counts: a well-formed response is a success
	FailGateway                         // 502, 503 and 504 count
	Fail5xx                             // every 5xx counts
)

// Fails tells whether a response of status counts as a failure.
func (f FailureStatuses) Fails(status int) bool {
	switch f {
	case FailGateway:
		return status == 502 || status == 503 || status == 504
	case Fail5xx:
		return status >= 500 && status <= 599
	}
	return false
}

func (f FailureStatuses) String() string {
	switch f {
	case FailGateway:
		return "gateway"
	case Fail5xx:
		return "5xx"
	}
	return "none"
}

// Outlier is passive ejection, Envoy's outlier detection by consecutive failures. Its ejection
// times apply to every ejection, by probes too.
type Outlier struct {
	// Disabled turns ejection by traffic off. Probes still eject. False (the default) means on.
	Disabled bool
	// ConsecutiveFailures is how many failed requests in a row, counted over every worker, eject the
	// backend. Zero means 5.
	ConsecutiveFailures int
	// BaseEjectionTime is how long a first ejection lasts; the n-th in a row lasts n times as long.
	// Each BaseEjectionTime spent in service takes one off n. Zero means 30s.
	BaseEjectionTime time.Duration
	// MaxEjectionTime caps an ejection. Zero means 300s, or BaseEjectionTime if that is longer.
	MaxEjectionTime time.Duration
	// MaxEjectionPercent caps the share of the set's active backends that are out at once, for
	// whatever reason; at least one may always be. Zero means 50. At most 100.
	MaxEjectionPercent int
	// FailureStatuses says which statuses count as failures. The zero value counts none.
	FailureStatuses FailureStatuses
}

// SlowStart ramps the weight of a readmitted backend from MinWeightPercent of its weight to all of
// it, in ten even steps over Window.
type SlowStart struct {
	// Window is how long the ramp takes. Zero means no slow start.
	Window time.Duration
	// MinWeightPercent is the share of its weight a backend starts with. Zero means 10.
	MinWeightPercent int
}

// Defaults, and the bounds WithDefaults clamps to.
const (
	DefaultInterval           = 2 * time.Second
	DefaultTimeoutMax         = time.Second
	DefaultFall               = 3
	DefaultRise               = 2
	DefaultConsecutive        = 5
	DefaultBaseEjectionTime   = 30 * time.Second
	DefaultMaxEjectionTime    = 300 * time.Second
	DefaultMaxEjectionPercent = 50
	DefaultMinWeightPercent   = 10

	// CountMax bounds Fall, Rise and ConsecutiveFailures: the machine's counters are bytes.
	CountMax = 255
	// IntervalMin bounds Interval from below.
	IntervalMin = 10 * time.Millisecond
)

// WithDefaults returns c with every zero field set to its default and every field inside its
// bounds.
func (c Config) WithDefaults() Config {
	p := &c.Probe
	if p.Kind != ProbeNone {
		if p.Interval <= 0 {
			p.Interval = DefaultInterval
		}
		p.Interval = max(p.Interval, IntervalMin)
		if p.Timeout <= 0 {
			p.Timeout = min(DefaultTimeoutMax, p.Interval)
		}
		p.Timeout = min(p.Timeout, p.Interval)
		p.Fall = clampCount(p.Fall, DefaultFall)
		p.Rise = clampCount(p.Rise, DefaultRise)
		if p.Path == "" {
			p.Path = "/"
		}
		if len(p.Statuses) == 0 {
			p.Statuses = []StatusRange{{200, 399}}
		}
	}
	o := &c.Outlier
	o.ConsecutiveFailures = clampCount(o.ConsecutiveFailures, DefaultConsecutive)
	if o.BaseEjectionTime <= 0 {
		o.BaseEjectionTime = DefaultBaseEjectionTime
	}
	if o.MaxEjectionTime <= 0 {
		o.MaxEjectionTime = max(DefaultMaxEjectionTime, o.BaseEjectionTime)
	}
	o.MaxEjectionTime = max(o.MaxEjectionTime, o.BaseEjectionTime)
	if o.MaxEjectionPercent <= 0 {
		o.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	o.MaxEjectionPercent = min(o.MaxEjectionPercent, 100)
	if o.FailureStatuses > Fail5xx {
		o.FailureStatuses = FailNoStatus
	}
	s := &c.SlowStart
	if s.Window > 0 {
		if s.MinWeightPercent <= 0 {
			s.MinWeightPercent = DefaultMinWeightPercent
		}
		s.MinWeightPercent = min(s.MinWeightPercent, 100)
	} else {
		s.Window, s.MinWeightPercent = 0, 0
	}
	c.PanicThreshold = min(max(c.PanicThreshold, 0), 100)
	return c
}

func clampCount(n, def int) int {
	if n <= 0 {
		return def
	}
	return min(n, CountMax)
}

// ejectionTime is how long the n-th ejection in a row lasts.
func (o *Outlier) ejectionTime(n int) time.Duration {
	d := o.BaseEjectionTime * time.Duration(max(n, 1))
	if d > o.MaxEjectionTime || d <= 0 { // <= 0: overflowed
		return o.MaxEjectionTime
	}
	return d
}

// MaxOut is how many of active backends may be out at once: MaxEjectionPercent of them, at least
// one.
func (c *Config) MaxOut(active int) int {
	return max(1, active*c.Outlier.MaxEjectionPercent/100)
}
