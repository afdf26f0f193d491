package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/balance/sticky"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/http1"
	"github.com/xlbproxy/xlb/dataplane/rawio"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/dataplane/upstream"
	"github.com/xlbproxy/xlb/internal/backoff"
)

// Proxy forwards HTTP/1.1 from the listeners it serves to backend sets.
type Proxy struct {
	cfg    Config
	limits http1.Limits
	log    hclog.Logger
	access *accessLog

	table atomic.Pointer[routing]

	// follow, when set by Follow before serving, is the shared region the backend sets come from.
	follow    *table.Follower
	refreshMu sync.Mutex    // held while a new generation is decoded and installed
	badGen    atomic.Uint64 // 1 + a generation that failed to load, not tried again by every request; 0 for none

	poolsMu  sync.Mutex
	pools    map[poolKey]*upstream.Pool // by backend address and TLS, shared by the sets that name them
	tlsCache map[table.TLS]*loadedTLS   // the TLS settings of the table in force, their files read (tls.go)
	maglevs  map[string]*maglevEntry    // the Maglev tables of the table in force, by set (affinity.go)
	// stickyKeys sign the sticky cookies: Config.StickyKeys, or a random key of this proxy's.
	stickyKeys []sticky.Key
	metrics    map[string]*backendMetrics // by set and backend id, of the table in force

	tlsWarnMu sync.Mutex
	tlsWarned map[*upstream.Pool]time.Time // when each pool's TLS failure was last logged at WARN

	mu           sync.Mutex
	listeners    map[net.Listener]struct{}
	conns        map[*conn]struct{} // those with state: a loop's parked connections have none
	connsWG      sync.WaitGroup
	serveWG      sync.WaitGroup // the Serve loops, which start connections
	draining     atomic.Bool
	connPool     sync.Pool     // of *conn, for reuse
	headerPool   sync.Pool     // of *headerArrays
	inflightPool sync.Pool     // of *inflight
	stop         chan struct{} // closed by Shutdown: ends the reaper
	// connSlots holds a token for each client connection open: the Serve loops stop accepting
	// while it is full (Config.ConnectionsMax).
	connSlots   chan struct{}
	pausedSince atomic.Int64 // unix ns of the last pause logged, to log at most one a pauseLogEvery
	// loops are the event loops serving listeners (loop.go), until their last connection closes;
	// paused says one stopped accepting at ConnectionsMax. work hands a loop's connection to a
	// pool goroutine waiting for one.
	loops  map[*loopHandler]struct{}
	paused atomic.Bool
	work   chan loopJob
	// idleWorkers counts the pool's goroutines waiting on work.
	idleWorkers atomic.Int32

	stats counters
}

// routing is one immutable generation of backend sets, with the pickers and pools that serve it,
// and the routes of their backends at one health epoch.
type routing struct {
	gen    uint64 // the region's generation; 0 for sets given by SetBackends
	health uint64 // the region's health epoch the routes were read at
	sets   map[string]*set
}

type set struct {
	name     string
	policy   balance.Policy
	failures health.FailureStatuses
	// all are every backend of the set, whatever its state, in the set's order: the indexes of
	// maglev. active are the backends the control plane has active; routed are those of them that
	// take new requests by their health, which picker picks from (nil when there are none); trials
	// are those whose trial request a worker may claim. The four share their *backend values.
	all, active, routed, trials []*backend
	picker                      balance.Picker
	// lr and load, for a least_request set of a proxy that follows a region, are the choice over
	// routed and the in-flight counts of every worker (picker is nil then).
	lr   *balance.P2C
	load *regionLoad
	// hash and maglev, for a maglev set, are its key and its table over all (kept across
	// generations while the ids and weights stay). A request without the key uses picker.
	hash   hashKey
	maglev *balance.Maglev
	// sticky is the set's cookie, nil without one; byID finds a cookie's backend among all.
	sticky *stickySet
	byID   map[string]*backend
}

// hashKey is a set's hash key as a request reads it: its kind, and the header's name in lower case
// (or the cookie's, as it is).
type hashKey struct {
	kind   table.HashKind
	name   string
	cookie []byte // name, for a cookie
}

// regionLoad is the requests in flight on each routed backend of a set over every worker, from
// the region's counters: what least_request reads.
type regionLoad struct {
	f      *table.Follower
	routed []*backend
}

func (l *regionLoad) InFlight(i int) int64 { return l.f.InFlight(l.routed[i].slot) }

// backend is one backend of a set at one health epoch: a new routing copies it, sharing its pool
// and counters.
type backend struct {
	set, id, address string
	weight           int
	slot             uint32       // its health slot, when the proxy follows a region
	route            health.Route // at the routing's health epoch
	routedAt         int          // its index in its set's routed, or -1
	state            table.State
	failures         health.FailureStatuses
	pool             *upstream.Pool
	m                *backendMetrics
}

// counters are the proxy's statistics, each on its own cache line.
type counters struct {
	requests, retries, connectFailures, dials, noBackend, badGateway, gatewayTimeout, rejected, acceptPaused padded
	tlsHandshakeFailures                                                                                     padded
}

type padded struct {
	atomic.Uint64
	_ [56]byte
}

// Stats are the proxy's counters since New.
type Stats struct {
	// Requests is the number of requests whose head was parsed and accepted.
	Requests uint64
	// Retries is the number of attempts after the first, over all requests.
	Retries uint64
	// ConnectFailures is the number of connects to a backend that failed.
	ConnectFailures uint64
	// Dials is the number of connections to backends opened. Requests/Dials is how well backend
	// connections are reused.
	Dials uint64
	// NoBackend, BadGateway and GatewayTimeout count the 503, 502 and 504 answers the proxy made.
	NoBackend, BadGateway, GatewayTimeout uint64
	// Rejected counts requests refused for malformed framing or limits (400, 414, 417, 431, 501, 505).
	Rejected uint64
	// TLSHandshakeFailures counts the client connections of TLS listeners closed because their
	// handshake failed or timed out (ClientTimeout).
	TLSHandshakeFailures uint64
	// Generation is the shared region's generation being served; 0 for sets given by SetBackends.
	Generation uint64
	// Connections is the number of client connections open now.
	Connections uint64
	// AcceptPaused counts the times the accept loops stopped at Config.ConnectionsMax until a
	// connection closed.
	AcceptPaused uint64
}

// forceEventLoop sets Config.EventLoop in every New: the package's tests run both ways
// (main_test.go).
var forceEventLoop bool

// New validates cfg and returns a proxy with no backend sets.
func New(cfg Config) (*Proxy, error) {
	if forceEventLoop {
		cfg.EventLoop = true
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg: cfg,
		limits: http1.Limits{
			RequestLineBytesMax: cfg.RequestLineBytesMax,
			HeaderBytesMax:      cfg.HeaderBytesMax,
			HeadersMax:          cfg.HeadersMax,
		},
		log:       cfg.Logger,
		pools:     make(map[poolKey]*upstream.Pool),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		stop:      make(chan struct{}),
		connSlots: make(chan struct{}, cfg.ConnectionsMax),
		loops:     make(map[*loopHandler]struct{}),
		work:      make(chan loopJob),
	}
	if cfg.AccessLog != nil {
		p.access = newAccessLog(cfg.AccessLog)
	}
	p.stickyKeys = cfg.StickyKeys
	if len(p.stickyKeys) == 0 {
		p.stickyKeys = []sticky.Key{sticky.NewKey()}
	}
	if _, err := sticky.New(sticky.Config{Keys: p.stickyKeys}); err != nil {
		return nil, fmt.Errorf("proxy: StickyKeys: %w", err)
	}
	p.table.Store(&routing{sets: map[string]*set{}})
	go p.reap()
	return p, nil
}

func (c *Config) setDefaults() error {
	def := func(d *time.Duration, v time.Duration, name string) error {
		if *d < 0 {
			return fmt.Errorf("proxy: %s %v: must not be negative", name, *d)
		}
		if *d == 0 {
			*d = v
		}
		return nil
	}
	for _, e := range []error{
		def(&c.ConnectTimeout, DefaultConnectTimeout, "ConnectTimeout"),
		def(&c.BackendTimeout, DefaultBackendTimeout, "BackendTimeout"),
		def(&c.ClientTimeout, DefaultClientTimeout, "ClientTimeout"),
		def(&c.IdleTimeout, DefaultIdleTimeout, "IdleTimeout"),
	} {
		if e != nil {
			return e
		}
	}
	size := func(v *int, d int, name string) error {
		if *v < 0 {
			return fmt.Errorf("proxy: %s %d: must not be negative", name, *v)
		}
		if *v == 0 {
			*v = d
		}
		return nil
	}
	for _, e := range []error{
		size(&c.RequestLineBytesMax, DefaultRequestLineBytesMax, "RequestLineBytesMax"),
		size(&c.HeaderBytesMax, DefaultHeaderBytesMax, "HeaderBytesMax"),
		size(&c.HeadersMax, DefaultHeadersMax, "HeadersMax"),
		size(&c.ReplayBufferBytesMax, DefaultReplayBufferBytesMax, "ReplayBufferBytesMax"),
	} {
		if e != nil {
			return e
		}
	}
	if c.HeaderBytesMax > clientBufferBytesMax {
		return fmt.Errorf("proxy: HeaderBytesMax %d: at most %d", c.HeaderBytesMax, clientBufferBytesMax)
	}
	if c.RequestLineBytesMax > c.HeaderBytesMax {
		c.RequestLineBytesMax = c.HeaderBytesMax
	}
	switch {
	case c.Retries == 0:
		c.Retries = DefaultRetries
	case c.Retries < 0:
		c.Retries = 0
	case c.Retries > balance.TriedMax-1:
		return fmt.Errorf("proxy: Retries %d: at most %d", c.Retries, balance.TriedMax-1)
	}
	switch {
	case c.ConnectionsMax < 0:
		return fmt.Errorf("proxy: ConnectionsMax %d: must not be negative", c.ConnectionsMax)
	case c.ConnectionsMax == 0:
		c.ConnectionsMax = defaultConnectionsMax()
	}
	switch {
	case c.IdleConnsPerBackend == 0:
		c.IdleConnsPerBackend = DefaultIdleConnsPerBackend
	case c.IdleConnsPerBackend < 0:
		c.IdleConnsPerBackend = 0
	}
	// Copies, so that the caller's slices are never changed.
	c.TrustedProxies = slices.Clone(c.TrustedProxies)
	for i, pr := range c.TrustedProxies {
		if !pr.IsValid() {
			return fmt.Errorf("proxy: TrustedProxies[%d]: not a prefix", i)
		}
		c.TrustedProxies[i] = pr.Masked()
	}
	c.UpgradeProtocols = slices.Clone(c.UpgradeProtocols)
	if c.UpgradeProtocols == nil {
		c.UpgradeProtocols = []string{"websocket"}
	}
	for i, name := range c.UpgradeProtocols {
		if !http1.IsToken(name) || strings.Contains(name, "/") {
			return fmt.Errorf("proxy: UpgradeProtocols[%d] %q: not a protocol name", i, name)
		}
		c.UpgradeProtocols[i] = strings.ToLower(name)
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return nil
}

// SetBackends publishes a new, complete list of backend sets. Requests already in flight finish on
// the sets they started with; connections pooled to a backend that stays are kept. A proxy that
// follows a region (Follow) takes its sets from there instead, and SetBackends fails.
func (p *Proxy) SetBackends(sets []table.Set) error {
	if p.follow != nil {
		return errors.New("proxy: SetBackends on a proxy that follows a shared region")
	}
	if err := checkSets(sets); err != nil {
		return err
	}
	p.install(sets, 0, 0)
	return nil
}

// checkSets validates sets as SetBackends and a region's generations need them.
func checkSets(sets []table.Set) error {
	names := make(map[string]bool, len(sets))
	for i, s := range sets {
		if s.Name == "" {
			return fmt.Errorf("proxy: backend set %d: empty name", i)
		}
		if names[s.Name] {
			return fmt.Errorf("proxy: backend set %q: named twice", s.Name)
		}
		if s.FailureStatuses > health.Fail5xx {
			return fmt.Errorf("proxy: backend set %q: unknown failure statuses %d", s.Name, s.FailureStatuses)
		}
		names[s.Name] = true
		ids := make(map[string]bool, len(s.Backends))
		for _, b := range s.Backends {
			if b.Weight < 0 {
				return fmt.Errorf("proxy: backend set %q: backend %q: negative weight %d", s.Name, b.ID, b.Weight)
			}
			if _, _, err := net.SplitHostPort(b.Address); err != nil {
				return fmt.Errorf("proxy: backend set %q: backend %q: %w", s.Name, b.ID, err)
			}
			if ids[b.ID] {
				return fmt.Errorf("proxy: backend set %q: backend id %q used twice", s.Name, b.ID)
			}
			ids[b.ID] = true
			if b.State > table.Disabled {
				return fmt.Errorf("proxy: backend set %q: backend %q: unknown state %d", s.Name, b.ID, b.State)
			}
			if b.Weight > table.WeightMax {
				return fmt.Errorf("proxy: backend set %q: backend %q: weight %d above %d", s.Name, b.ID, b.Weight, table.WeightMax)
			}
		}
	}
	return nil
}

// install makes sets, already checked, the table in force, with the routes of the region's health
// epoch at healthEpoch (read before the routes). Only active backends are routed to; the pools of
// backends that no active one uses any more are closed. Every backend of the table, whatever its
// state, keeps its counters.
func (p *Proxy) install(sets []table.Set, gen, healthEpoch uint64) {
	p.poolsMu.Lock()
	defer p.poolsMu.Unlock()
	t := &routing{gen: gen, health: healthEpoch, sets: make(map[string]*set, len(sets))}
	used := make(map[poolKey]bool)
	metrics := make(map[string]*backendMetrics)
	var seenTLS map[table.TLS]*loadedTLS
	maglevs := make(map[string]*maglevEntry)
	for _, s := range sets {
		tmpl := p.affinity(s, maglevs)
		for _, b := range s.Backends {
			m := p.metricsFor(s.Name, b.ID, b.Address, metrics)
			if b.State != table.Active && (b.State != table.Draining || s.Sticky == nil) {
				// Only a sticky set's draining backends take requests: those of their pinned clients.
				tmpl.all = append(tmpl.all, &backend{set: s.Name, id: b.ID, address: b.Address, weight: max(1, b.Weight), slot: b.HealthSlot,
					state: b.State, failures: s.FailureStatuses, m: m})
				continue
			}
			key := poolKey{address: b.Address}
			if b.TLS != nil {
				if seenTLS == nil {
					seenTLS = make(map[table.TLS]*loadedTLS)
				}
				key.tls = p.tlsFor(*b.TLS, seenTLS)
			}
			pool := p.pools[key]
			if pool == nil {
				cfg := upstream.Config{
					Address:        b.Address,
					IdleConnsMax:   p.cfg.IdleConnsPerBackend,
					IdleTimeout:    p.cfg.IdleTimeout,
					ConnectTimeout: p.cfg.ConnectTimeout,
					Dial:           upstream.DialFunc(p.cfg.Dial),
				}
				if key.tls != nil {
					cfg.TLS = key.tls.cfg
					if key.tls.err != nil {
						cfg.Dial = failingDial(key.tls.err)
					}
				}
				pool = upstream.NewPool(cfg)
				p.pools[key] = pool
			}
			used[key] = true
			if m != nil {
				m.pool = pool
			}
			tmpl.all = append(tmpl.all, &backend{set: s.Name, id: b.ID, address: b.Address, weight: max(1, b.Weight), slot: b.HealthSlot,
				state: b.State, failures: s.FailureStatuses, pool: pool, m: m})
		}
		t.sets[s.Name] = p.route(tmpl)
	}
	p.maglevs = maglevs // the tables of this generation: those of sets gone are forgotten
	p.table.Store(t)
	p.metrics = metrics
	p.tlsCache = seenTLS // the settings of this generation: those no longer used are forgotten
	for key, pool := range p.pools {
		if !used[key] {
			pool.Close()
			delete(p.pools, key)
			p.tlsWarnMu.Lock()
			delete(p.tlsWarned, pool)
			p.tlsWarnMu.Unlock()
		}
	}
}

// route makes a set like tmpl (its policy, affinity and backends, any routes it has ignored) with
// the routes read now: from the region's health slots when the proxy follows a region, else
// every backend in at its full weight.
func (p *Proxy) route(tmpl *set) *set {
	s := &set{name: tmpl.name, policy: tmpl.policy, failures: tmpl.failures, hash: tmpl.hash, maglev: tmpl.maglev, sticky: tmpl.sticky,
		all: make([]*backend, len(tmpl.all))}
	if s.sticky != nil {
		s.byID = make(map[string]*backend, len(tmpl.all))
	}
	var weights []int
	for i, b := range tmpl.all {
		nb := *b
		nb.route, nb.routedAt = health.Route{WeightPermille: 1000}, -1
		if p.follow != nil {
			nb.route = p.follow.Route(b.slot)
		}
		s.all[i] = &nb
		if s.byID != nil {
			s.byID[nb.id] = &nb
		}
		if nb.state != table.Active {
			continue
		}
		s.active = append(s.active, &nb)
		if nb.route.Trial {
			s.trials = append(s.trials, &nb)
		}
		if !nb.route.Out {
			nb.routedAt = len(s.routed)
			s.routed = append(s.routed, &nb)
			// Scaled by the route's thousandths: every picker is blind to a common factor.
			weights = append(weights, nb.weight*nb.route.WeightPermille)
		}
	}
	if len(weights) > 0 {
		if s.policy == balance.LeastRequest && p.follow != nil {
			s.lr, s.load = balance.NewP2C(weights), &regionLoad{f: p.follow, routed: s.routed}
		} else {
			s.picker = balance.New(s.policy, weights)
		}
	}
	return s
}

// refreshHealthLocked reads the routes again when the region's health epoch moved, and cuts short
// the waits for a response head on backends that went out: their requests that can be sent again
// go to another backend now rather than when the backend timeout ends. refreshMu is held.
func (p *Proxy) refreshHealthLocked() {
	cur := p.table.Load()
	e := p.follow.HealthEpoch() // before the routes: a change made while they are read moves it again
	if e == cur.health {
		return
	}
	t := &routing{gen: cur.gen, health: e, sets: make(map[string]*set, len(cur.sets))}
	var out map[uint32]bool
	for name, s := range cur.sets {
		ns := p.route(s)
		for i, b := range ns.active {
			if b.route.Out && !s.active[i].route.Out {
				if out == nil {
					out = make(map[uint32]bool)
				}
				out[b.slot] = true
				p.log.Debug("backend out", "backend_set", name, "backend", b.id, "address", b.address)
			}
		}
		t.sets[name] = ns
	}
	p.table.Store(t)
	if out != nil {
		p.abandonWaits(out)
	}
}

// abandonWaits cuts short the waits for a response head, on the backends of these health slots, of
// the requests that may be sent again.
func (p *Proxy) abandonWaits(slots map[uint32]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if w := c.waitingSlot.Load(); w != 0 && slots[w-1] {
			c.abandoned.Store(true)
			if u := c.active.Load(); u != nil {
				u.DL.PokeRead()
			}
		}
	}
}

// Follow makes the proxy take its backend sets from a shared region's generations, loading the one
// in force now. Call it once, before Serve. From then on every request checks the region's
// generation word (one atomic load) and the first to see a new generation installs it; Refresh
// does the same for a caller told of a change, such as a worker woken by its supervisor.
func (p *Proxy) Follow(f *table.Follower) error {
	if p.follow != nil {
		return errors.New("proxy: Follow called twice")
	}
	p.follow = f
	_, err := p.Refresh()
	return err
}

// Refresh installs the region's generation in force if it is not the one installed, and returns
// the generation the proxy serves. A generation that fails to load (a corrupt region, sets this
// proxy refuses) is logged and reported, and the previous one keeps serving.
func (p *Proxy) Refresh() (uint64, error) {
	p.refreshMu.Lock()
	defer p.refreshMu.Unlock()
	return p.refreshLocked()
}

func (p *Proxy) refreshLocked() (uint64, error) {
	cur := p.table.Load()
	g := p.follow.Generation()
	if g == cur.gen {
		p.refreshHealthLocked()
		return g, nil
	}
	epoch := p.follow.HealthEpoch() // before the routes that install reads
	t, err := p.follow.Load()
	if err == nil {
		if err = checkSets(t.Sets); err == nil {
			p.install(t.Sets, t.Generation, epoch)
			p.follow.Observed(t.Generation)
			return t.Generation, nil
		}
	}
	if p.badGen.Swap(g+1) != g+1 {
		if errors.Is(err, table.ErrZeroed) || errors.Is(err, table.ErrCorrupt) {
			p.log.Error("the shared region is zeroed or corrupt; serving the generation decoded before it until the supervisor rebuilds the region",
				"generation", g, "serving", cur.gen, "error", err)
		} else {
			p.log.Error("cannot load the shared region's generation; serving the previous one", "generation", g, "serving", cur.gen, "error", err)
		}
	}
	p.refreshHealthLocked() // the generation in force still follows its backends' health
	return cur.gen, fmt.Errorf("proxy: generation %d: %w", g, err)
}

// tryRefresh is the request path's Refresh: when another goroutine is installing a generation
// already, it does not wait for it but serves the table in force.
func (p *Proxy) tryRefresh() *routing {
	if p.refreshMu.TryLock() {
		p.refreshLocked()
		p.refreshMu.Unlock()
	}
	return p.table.Load()
}

// reap closes idle backend connections past the idle timeout, until Shutdown.
func (p *Proxy) reap() {
	tick := time.NewTicker(max(p.cfg.IdleTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-tick.C:
			p.poolsMu.Lock()
			for _, pool := range p.pools {
				pool.Reap(now)
			}
			p.poolsMu.Unlock()
		}
	}
}

// Serve accepts connections on ln and forwards their requests to the backend set named set. It
// returns nil after Shutdown, or the accept error that stopped it. A set that does not exist (yet)
// is answered 503.
func (p *Proxy) Serve(ln net.Listener, set string) error {
	if sc, ok := p.loopable(ln); ok {
		return p.serveLoop(ln, sc, set)
	}
	p.mu.Lock()
	if p.draining.Load() {
		p.mu.Unlock()
		ln.Close()
		return nil
	}
	p.listeners[ln] = struct{}{}
	p.serveWG.Add(1)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.listeners, ln)
		p.mu.Unlock()
		p.serveWG.Done()
	}()
	retry := backoff.Backoff{Base: acceptRetryMin, Max: acceptRetryMax, Jitter: backoff.None}
	for {
		if !p.takeConnSlot(ln) {
			return nil
		}
		nc, err := ln.Accept()
		if err != nil {
			<-p.connSlots
			if p.draining.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || rawio.TransientAccept(err) {
				// Out of file descriptors or memory: back off rather than spin.
				wait := retry.Next()
				p.log.Warn("accept failed; backing off", "listener", ln.Addr().String(), "error", err, "backoff", wait)
				time.Sleep(wait)
				continue
			}
			return fmt.Errorf("proxy: accept on %s: %w", ln.Addr(), err)
		}
		retry.Reset()
		go p.newConn(nc, set).serve()
	}
}

// acceptRetryMin and acceptRetryMax bound the wait before an accept that failed for want of
// resources (EMFILE, ENFILE, ENOBUFS, ENOMEM, a timeout) is tried again: it doubles with each such
// failure in a row. Not jittered: a worker backs off its own accepts, against its own limits.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// pauseLogEvery bounds how often a pause at Config.ConnectionsMax is logged.
const pauseLogEvery = 10 * time.Second

// takeConnSlot takes the slot of the next client connection, waiting while ConnectionsMax are open:
// the loop does not accept, so new connections wait in the kernel's backlog (and other workers
// that share the socket take them). It returns false when the proxy shuts down first.
func (p *Proxy) takeConnSlot(ln net.Listener) bool {
	select {
	case p.connSlots <- struct{}{}:
		return true
	default:
	}
	p.acceptPaused(ln)
	select {
	case p.connSlots <- struct{}{}:
		return true
	case <-p.stop:
		return false
	}
}

// acceptPaused counts (and now and then logs) a pause of accepting at ConnectionsMax.
func (p *Proxy) acceptPaused(ln net.Listener) {
	n := p.stats.acceptPaused.Add(1)
	if now, last := time.Now().UnixNano(), p.pausedSince.Load(); now-last >= int64(pauseLogEvery) && p.pausedSince.CompareAndSwap(last, now) {
		p.log.Warn("accept paused: this worker holds the most client connections it takes; new ones wait in the listen backlog",
			"listener", ln.Addr().String(), "connections", p.cfg.ConnectionsMax, "pauses", n)
	}
}

// Shutdown stops accepting, closes idle connections, and lets requests in flight finish; their
// connections close after their response. When ctx ends first, it closes every connection and
// returns ctx's error.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	first := !p.draining.Swap(true)
	for ln := range p.listeners {
		ln.Close()
	}
	for c := range p.conns {
		c.wakeIfIdle()
	}
	loops := p.loopsNow()
	p.mu.Unlock()
	// A loop's parked connections hold no state of the proxy's (p.conns has them not): their
	// loop wakes them (handing them on takes p.mu), but not those that parked for the drain's
	// grace already. One that parks after the drain began saw it, or sees it as it comes back.
	for _, l := range loops {
		l.ExpireParked(parkedBeforeDrain)
	}
	if first {
		close(p.stop)
	}
	done := make(chan struct{})
	go func() {
		p.serveWG.Wait() // no Serve loop starts a connection after this
		p.connsWG.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		p.mu.Lock()
		for c := range p.conns {
			c.nc.Close()
			if u := c.active.Load(); u != nil {
				u.Close()
			}
		}
		loops := p.loopsNow()
		p.mu.Unlock()
		for _, l := range loops {
			l.CloseParked()
		}
		<-done
	}
	p.poolsMu.Lock()
	for _, pool := range p.pools {
		pool.Close()
	}
	p.poolsMu.Unlock()
	if p.access != nil {
		p.access.flush()
	}
	return err
}

// loopsNow returns the event loops serving now. p.mu held.
func (p *Proxy) loopsNow() []*rawio.Loop {
	var ls []*rawio.Loop
	for h := range p.loops {
		ls = append(ls, h.l)
	}
	return ls
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	s := &p.stats
	return Stats{
		Requests:             s.requests.Load(),
		Retries:              s.retries.Load(),
		ConnectFailures:      s.connectFailures.Load(),
		Dials:                s.dials.Load(),
		NoBackend:            s.noBackend.Load(),
		BadGateway:           s.badGateway.Load(),
		GatewayTimeout:       s.gatewayTimeout.Load(),
		Rejected:             s.rejected.Load(),
		TLSHandshakeFailures: s.tlsHandshakeFailures.Load(),
		Generation:           p.table.Load().gen,
		Connections:          uint64(len(p.connSlots)),
		AcceptPaused:         s.acceptPaused.Load(),
	}
}

// defaultConnectionsMax is what a zero Config.ConnectionsMax means: half the file descriptors the
// process may open (a client connection may hold a backend connection), less 64 for the rest of
// it, between 64 and 1<<20.
func defaultConnectionsMax() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	return int(min(max((int64(min(lim.Cur, 1<<22))-64)/2, 64), 1<<20))
}
