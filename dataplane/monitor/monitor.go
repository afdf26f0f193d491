package monitor

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/table"
)

// Slots is the region's health slots as the monitor uses them; *shm.Region is one.
type Slots interface {
	HealthWord(slot uint32, j int) uint64
	SetHealthWord(slot uint32, j int, v uint64)
	SwapHealthWord(slot uint32, j int, v uint64) uint64
	CompareAndSwapHealthWord(slot uint32, j int, old, v uint64) bool
	BumpHealthEpoch() uint64
}

// Config is what a Monitor needs. The zero value of every field but Slots means its documented
// default.
type Config struct {
	// Slots are the region's health slots. Required.
	Slots Slots
	// Changed is called, from the monitor's goroutine, after routes changed and the health epoch
	// moved: the supervisor wakes its workers with it, so that a worker with no new request still
	// cuts short its waits on a backend that went out. It must not block. Nil means nobody is told.
	Changed func()
	// ProbesMax bounds the probes in progress at once; a probe that falls due past it waits for
	// one to end. Zero means 64.
	ProbesMax int
	// TrialTimeout is how long a trial request may be claimed without an outcome before it counts
	// as failed (its worker died, say). Zero means 2 minutes; the supervisor gives the backend
	// timeout and the connect timeout, and a little more.
	TrialTimeout time.Duration
	// Rescan is how often the region's counters are read when no worker said anything: a worker's
	// word may be lost (a full pipe, a restart). Zero means 1s.
	Rescan time.Duration
	// Logger is the monitor's. Nil means a null logger.
	Logger hclog.Logger
}

// Set is a backend set as the monitor watches it.
type Set struct {
	Name string
	// Health is the set's policy; the monitor applies its defaults.
	Health   health.Config
	Backends []Backend
}

// Backend is one backend of a Set.
type Backend struct {
	ID, Address string
	// Slot is its health slot in the region.
	Slot uint32
	// State is the control plane's: a draining or disabled backend is not probed and never routed.
	State table.State
	// TLS, when set, makes its HTTP probes speak TLS with this configuration (server name filled
	// in: the probe uses it as it is). Nil means plain. A TCP probe is a TCP connect either way.
	TLS *tls.Config
}

// Active tells whether the control plane has b active.
func (b Backend) Active() bool { return b.State == table.Active }

// Monitor owns the health machines of a region's backends. One goroutine, Run, steps them all:
// others talk to it through Update, Notify, Pause, Resume and Status.
type Monitor struct {
	cfg     Config
	log     hclog.Logger
	updates chan updateReq
	notify  chan struct{}
	pauses  chan pauseReq
	status  chan chan Status
	results chan probeDone
}

type updateReq struct {
	sets []Set
	done chan struct{}
}

type pauseReq struct {
	pause bool
	done  chan struct{}
}

// New returns a monitor of cfg; Run makes it work.
func New(cfg Config) *Monitor {
	if cfg.Slots == nil {
		panic("monitor: New without Slots")
	}
	if cfg.ProbesMax <= 0 {
		cfg.ProbesMax = 64
	}
	if cfg.TrialTimeout <= 0 {
		cfg.TrialTimeout = 2 * time.Minute
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Monitor{cfg: cfg, log: cfg.Logger,
		updates: make(chan updateReq), notify: make(chan struct{}, 1), pauses: make(chan pauseReq),
		status: make(chan chan Status), results: make(chan probeDone, cfg.ProbesMax)}
}

// Update makes sets, the backend sets of the generation just published, the ones watched. It
// returns once the monitor has taken them: from then on it writes no slot of a backend they do not
// hold, which the region may give to another backend at the next publish.
func (m *Monitor) Update(ctx context.Context, sets []Set) {
	req := updateReq{sets: sets, done: make(chan struct{})}
	select {
	case m.updates <- req:
		select {
		case <-req.done:
		case <-ctx.Done():
		}
	case <-ctx.Done():
	}
}

// Notify tells the monitor that a worker counted a failure or the end of a trial. It never blocks.
func (m *Monitor) Notify() {
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

// Pause stops the monitor writing the region (an upgrade's new supervisor is about to take it
// over) and returns once it has stopped; Resume reads the machines back from the region, where the
// other may have stepped them, and goes on.
func (m *Monitor) Pause(ctx context.Context)  { m.pause(ctx, true) }
func (m *Monitor) Resume(ctx context.Context) { m.pause(ctx, false) }

func (m *Monitor) pause(ctx context.Context, p bool) {
	req := pauseReq{pause: p, done: make(chan struct{})}
	select {
	case m.pauses <- req:
		select {
		case <-req.done:
		case <-ctx.Done():
		}
	case <-ctx.Done():
	}
}

// tracked is one backend the monitor watches.
type tracked struct {
	set *setState
	b   Backend
	m   health.Machine
	key string // set NUL id: a slot given to another backend is another tracked
	idx int    // its index in set.members
	cap bool   // held back by the cap, as logged

	written [3]uint64 // the route, since and until words as last written (or read)

	nextProbe time.Time // zero when not probed
	probing   bool
	lastProbe ProbeResult

	trialSeq     uint32
	trialClaimed time.Time // when a claim of the trial was first seen

	ejections, probesPassed, probesFailed uint64
}

type setState struct {
	name    string
	cfg     health.Config // with defaults
	members []*tracked
	panic   bool // as logged
}

type probeDone struct {
	t   *tracked
	res ProbeResult
}

// state is Run's.
type state struct {
	m      *Monitor
	sets   []*setState
	bySlot map[uint32]*tracked
	paused bool
	ctx    context.Context
	probes int // in progress
	dirty  bool
	now    time.Time
}

// Run runs the monitor until ctx ends; probes in progress are cancelled then.
func (m *Monitor) Run(ctx context.Context) {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := &state{m: m, bySlot: map[uint32]*tracked{}, ctx: pctx}
	timer := time.NewTimer(m.cfg.Rescan)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-m.updates:
			st.now = regionNow()
			st.update(req.sets)
			close(req.done)
		case <-m.notify:
		case <-timer.C:
		case d := <-m.results:
			st.probes--
			st.now = regionNow()
			if !st.paused && st.bySlot[d.t.b.Slot] == d.t {
				st.probeResult(d.t, d.res)
			} else {
				d.t.probing = false
			}
		case req := <-m.pauses:
			if req.pause != st.paused {
				st.paused = req.pause
				if !st.paused {
					st.reload()
				}
			}
			close(req.done)
		case c := <-m.status:
			c <- st.snapshot(time.Now())
			continue
		}
		if st.paused {
			continue
		}
		st.now = regionNow()
		st.scan()
		st.tickDue()
		st.startProbes()
		st.write()
		timer.Reset(max(time.Until(st.next()), time.Millisecond))
	}
}

// update takes the sets of a new generation.
func (st *state) update(sets []Set) {
	old := st.bySlot
	st.bySlot = make(map[uint32]*tracked, len(old))
	st.sets = st.sets[:0]
	for _, s := range sets {
		ss := &setState{name: s.Name, cfg: s.Health.WithDefaults()}
		for _, b := range s.Backends {
			key := s.Name + "\x00" + b.ID
			t := old[b.Slot]
			if t == nil || t.key != key {
				t = &tracked{key: key}
				st.load(t, b.Slot)
			}
			wasProbed := t.nextProbe
			probes := ss.cfg.Probe.Kind != health.ProbeNone && b.Active()
			if probes && (wasProbed.IsZero() || t.set == nil || t.set.cfg.Probe.Interval != ss.cfg.Probe.Interval) {
				// Spread over one interval: the probes of many backends do not start together.
				t.nextProbe = st.now.Add(rand.N(ss.cfg.Probe.Interval))
			} else if !probes {
				t.nextProbe = time.Time{}
			}
			t.b, t.set, t.idx = b, ss, len(ss.members)
			ss.members = append(ss.members, t)
			st.bySlot[b.Slot] = t
		}
		st.sets = append(st.sets, ss)
	}
	st.dirty = true
}

// load reads a backend's machine from its slot: where a previous supervisor, or this one before a
// pause, left it.
func (st *state) load(t *tracked, slot uint32) {
	s := st.m.cfg.Slots
	w := [3]uint64{s.HealthWord(slot, health.WordRoute), s.HealthWord(slot, health.WordSince), s.HealthWord(slot, health.WordUntil)}
	m, _, err := health.Decode(w[0], w[1], w[2])
	if err != nil {
		st.m.log.Error("a backend's health slot holds what no xlb writes; starting it healthy", "slot", slot, "error", err)
		m, w = health.Machine{}, [3]uint64{^uint64(0), ^uint64(0), ^uint64(0)} // rewritten at the next write
	}
	t.m, t.written = m, w
	var trial health.TrialState
	trial, t.trialSeq, _, _ = health.TrialOf(s.HealthWord(slot, health.WordTrial))
	t.trialClaimed = time.Time{}
	if m.Status == health.Trial && trial == health.TrialNone {
		// Its supervisor stopped between taking a trial's outcome and writing what it made of it:
		// offer another.
		t.trialSeq = (t.trialSeq + 1) & 0xffffff
		s.SetHealthWord(slot, health.WordTrial, health.TrialWord(health.TrialOffered, t.trialSeq, 0, 0))
	}
}

// reload reads every machine back from the region, after a pause.
func (st *state) reload() {
	for slot, t := range st.bySlot {
		st.load(t, slot)
	}
	st.dirty = true
}

// mayEject tells whether t's set has room for one more backend out.
func (t *tracked) mayEject() bool {
	ms := make([]health.Member, len(t.set.members))
	for i, o := range t.set.members {
		ms[i] = health.Member{Machine: &o.m, Active: o.b.Active()}
	}
	return health.MayEject(&t.set.cfg, ms)
}

// step feeds ev to t's machine, carries out its effects, and logs a transition.
func (st *state) step(t *tracked, ev health.Event) {
	ev.Now = st.now
	before := t.m
	from := t.m.Status
	eff := t.m.Step(&t.set.cfg, ev, t.mayEject())
	slots := st.m.cfg.Slots
	if eff&health.ResetFailures != 0 {
		slots.SwapHealthWord(t.b.Slot, health.WordFailures, 0)
	}
	if eff&health.OfferTrial != 0 {
		t.trialSeq = (t.trialSeq + 1) & 0xffffff
		t.trialClaimed = time.Time{}
		slots.SetHealthWord(t.b.Slot, health.WordTrial, health.TrialWord(health.TrialOffered, t.trialSeq, 0, 0))
	}
	if t.m != before {
		st.dirty = true
	}
	if from != t.m.Status {
		st.logTransition(t, from)
		if t.m.Status == health.Ejected {
			t.ejections++
		}
	}
}

func (st *state) logTransition(t *tracked, from health.Status) {
	log := st.m.log.With("backend_set", t.set.name, "backend", t.b.ID, "address", t.b.Address)
	m := &t.m
	switch m.Status {
	case health.Ejected:
		log.Warn("backend ejected", "cause", m.Cause.String(), "until", m.Until.UTC().Format(health.TimeFormat),
			"ejection", health.Ordinal(m.Ejections), "from", from.String())
	case health.Recovering:
		log.Info("backend's ejection is over; readmitted after passing probes", "rise", t.set.cfg.Probe.Rise, "passed", m.ProbePasses)
	case health.Trial:
		log.Info("backend's ejection is over; a trial request decides")
	case health.SlowStarting:
		log.Info("backend readmitted; slow start", "full_weight_at", m.Until.UTC().Format(health.TimeFormat), "from", from.String())
	case health.Healthy:
		if from == health.SlowStarting {
			log.Info("backend's slow start is over")
		} else {
			log.Info("backend readmitted", "from", from.String())
		}
	}
}

// scan reads what the workers counted: failures in a row, and trial outcomes.
func (st *state) scan() {
	slots := st.m.cfg.Slots
	for _, ss := range st.sets {
		for _, t := range ss.members {
			n, kind, status := health.FailuresOf(slots.HealthWord(t.b.Slot, health.WordFailures))
			if n != t.m.Fails || kind != t.m.FailKind && n > 0 {
				st.step(t, health.Event{Kind: health.EvTraffic, Count: n, Fail: kind, Status: status})
			}
			w := slots.HealthWord(t.b.Slot, health.WordTrial)
			s, seq, kind, status := health.TrialOf(w)
			switch {
			case s == health.TrialNone:
			case seq != t.trialSeq || t.m.Status != health.Trial && s != health.TrialClaimed:
				slots.CompareAndSwapHealthWord(t.b.Slot, health.WordTrial, w, 0) // an old offer
			case s == health.TrialPassed || s == health.TrialFailed:
				if slots.CompareAndSwapHealthWord(t.b.Slot, health.WordTrial, w, 0) {
					st.step(t, health.Event{Kind: health.EvTrial, OK: s == health.TrialPassed, Fail: kind, Status: status})
				}
			case s == health.TrialClaimed:
				if t.trialClaimed.IsZero() {
					t.trialClaimed = st.now
				} else if st.now.Sub(t.trialClaimed) >= st.m.cfg.TrialTimeout &&
					slots.CompareAndSwapHealthWord(t.b.Slot, health.WordTrial, w, 0) {
					st.m.log.Warn("a trial request had no outcome in time; it counts as failed", "backend_set", ss.name,
						"backend", t.b.ID, "waited", st.m.cfg.TrialTimeout.String())
					st.step(t, health.Event{Kind: health.EvTrial, Fail: health.KindTimeout})
				}
			}
		}
	}
}

// tickDue ticks every machine: those with nothing due do nothing, and an ejection the cap held back
// is made once there is room.
func (st *state) tickDue() {
	for _, ss := range st.sets {
		for _, t := range ss.members {
			st.step(t, health.Event{Kind: health.EvTick})
		}
	}
}

// startProbes starts the probes that are due, as many as ProbesMax allows.
func (st *state) startProbes() {
	for _, ss := range st.sets {
		for _, t := range ss.members {
			if st.probes >= st.m.cfg.ProbesMax {
				return
			}
			if t.probing || t.nextProbe.IsZero() || t.nextProbe.After(st.now) {
				continue
			}
			t.probing = true
			st.probes++
			p := ss.cfg.Probe
			// The next one an interval after this one's start, jittered by up to a tenth either way.
			jitter := time.Duration(rand.Int64N(int64(p.Interval)/5+1)) - p.Interval/10
			t.nextProbe = st.now.Add(p.Interval + jitter)
			go func(t *tracked, addr string, tc *tls.Config) {
				res := ProbeTLS(st.ctx, addr, &p, tc)
				select {
				case st.m.results <- probeDone{t, res}:
				case <-st.ctx.Done():
				}
			}(t, t.b.Address, t.b.TLS)
		}
	}
}

func (st *state) probeResult(t *tracked, res ProbeResult) {
	t.probing = false
	t.lastProbe = res
	if res.OK {
		t.probesPassed++
	} else {
		t.probesFailed++
		if t.m.Status.In() {
			st.m.log.Debug("probe failed", "backend_set", t.set.name, "backend", t.b.ID, "error", res.Err)
		}
	}
	if t.nextProbe.IsZero() {
		return // no longer probed
	}
	st.step(t, health.Event{Kind: health.EvProbe, OK: res.OK, Fail: res.Fail, Status: res.Status})
}

// write writes the machines and routes that changed, then moves the health epoch if a route did.
func (st *state) write() {
	if !st.dirty {
		// A slow start's ramp moves with time alone.
		for _, ss := range st.sets {
			for _, t := range ss.members {
				if t.m.Status == health.SlowStarting {
					st.dirty = true
				}
			}
		}
		if !st.dirty {
			return
		}
	}
	st.dirty = false
	slots := st.m.cfg.Slots
	moved := false
	for _, ss := range st.sets {
		ms := make([]health.Member, len(ss.members))
		for i, t := range ss.members {
			ms[i] = health.Member{Machine: &t.m, Active: t.b.Active()}
		}
		routes := make([]health.Route, len(ms))
		v := health.RegionRoutes(&ss.cfg, ms, st.now, routes)
		if v.Panic != ss.panic {
			ss.panic = v.Panic
			if v.Panic {
				st.m.log.Warn("backend set in panic: too few backends are in, so every active backend takes traffic", "backend_set", ss.name,
					"in", v.In, "active", v.Active, "panic_threshold", ss.cfg.PanicThreshold)
			} else {
				st.m.log.Info("backend set out of panic", "backend_set", ss.name, "in", v.In, "active", v.Active)
			}
		}
		for i, t := range ss.members {
			if capped := t.m.WantsOut(&ss.cfg); capped != t.cap {
				t.cap = capped
				if capped {
					st.m.log.Warn("backend failing but not ejected: the set has as many out as max_ejection_percent allows", "backend_set", ss.name,
						"backend", t.b.ID, "out", v.Out, "max_out", v.MaxOut)
				}
			}
			w0, w3, w4 := health.Encode(&t.m, routes[i])
			if w0 == t.written[0] && w3 == t.written[1] && w4 == t.written[2] {
				continue
			}
			if health.RouteOf(w0) != health.RouteOf(t.written[0]) {
				moved = true
			}
			slots.SetHealthWord(t.b.Slot, health.WordSince, w3)
			slots.SetHealthWord(t.b.Slot, health.WordUntil, w4)
			slots.SetHealthWord(t.b.Slot, health.WordRoute, w0)
			t.written = [3]uint64{w0, w3, w4}
		}
	}
	if moved {
		slots.BumpHealthEpoch()
		if st.m.cfg.Changed != nil {
			st.m.cfg.Changed()
		}
	}
}

// next is when the loop must run again: the next probe, the next machine change in time, a trial's
// timeout, or the rescan.
func (st *state) next() time.Time {
	next := st.now.Add(st.m.cfg.Rescan)
	earlier := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	for _, ss := range st.sets {
		for _, t := range ss.members {
			if !t.probing && st.probes < st.m.cfg.ProbesMax {
				earlier(t.nextProbe)
			}
			earlier(t.m.Next(&ss.cfg, st.now))
			if !t.trialClaimed.IsZero() {
				earlier(t.trialClaimed.Add(st.m.cfg.TrialTimeout))
			}
		}
	}
	return next
}

// Status is what the monitor knows, at one moment.
type Status struct {
	At   time.Time
	Sets []SetStatus
}

// SetStatus is one set's health.
type SetStatus struct {
	Name    string
	Config  health.Config // with its defaults
	View    health.SetView
	Backend []BackendStatus
}

// BackendStatus is one backend's health.
type BackendStatus struct {
	Backend
	Machine health.Machine
	Route   health.Route
	// Capped: its failures call for an ejection that the set's cap holds back.
	Capped bool
	// Reason says why it is where it is (the control plane's states aside, which are its caller's).
	Reason string
	// Ejections, ProbesPassed and ProbesFailed count since the monitor started.
	Ejections, ProbesPassed, ProbesFailed uint64
	// LastProbe is the last probe's result; zero before the first.
	LastProbe ProbeResult
}

// Status returns what the monitor knows now, or nothing when ctx ends first.
func (m *Monitor) Status(ctx context.Context) Status {
	c := make(chan Status, 1)
	select {
	case m.status <- c:
		return <-c
	case <-ctx.Done():
		return Status{}
	}
}

func (st *state) snapshot(now time.Time) Status {
	out := Status{At: now}
	for _, ss := range st.sets {
		ms := make([]health.Member, len(ss.members))
		for i, t := range ss.members {
			ms[i] = health.Member{Machine: &t.m, Active: t.b.Active()}
		}
		routes := make([]health.Route, len(ms))
		v := health.Routes(&ss.cfg, ms, now, routes)
		s := SetStatus{Name: ss.name, Config: ss.cfg, View: v}
		for i, t := range ss.members {
			s.Backend = append(s.Backend, BackendStatus{Backend: t.b, Machine: t.m, Route: routes[i], Capped: t.m.WantsOut(&ss.cfg),
				Reason:    health.Describe(&ss.cfg, &t.m, routes[i], v, now),
				Ejections: t.ejections, ProbesPassed: t.probesPassed, ProbesFailed: t.probesFailed, LastProbe: t.lastProbe})
		}
		out.Sets = append(out.Sets, s)
	}
	slices.SortFunc(out.Sets, func(a, b SetStatus) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// String is for logs and tests.
func (b BackendStatus) String() string {
	return fmt.Sprintf("%s %s (%s)", b.ID, b.Machine.Status, b.Reason)
}

// regionNow is the time now to the millisecond, as the region keeps times: a machine that the
// monitor (or its successor, after a restart or an upgrade) reads back from its slot is then the
// one it stepped, and its status says the same before and after.
func regionNow() time.Time { return time.Now().Truncate(time.Millisecond) }
