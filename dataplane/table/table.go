package table

import (
	"fmt"
	"math"
	"os"
	"time"

	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/shm"
)

// State is a backend's administrative state.
type State = shm.State

// The states a backend may be in.
const (
	Active   = shm.StateActive
	Draining = shm.StateDraining
	Disabled = shm.StateDisabled
)

// WeightMax is the largest weight of a backend (controlplane/resource.WeightMax, which a test of
// server/backendset holds equal).
const WeightMax = 1_000_000

// Backend is one upstream server of a backend set.
type Backend struct {
	// ID names the backend inside its set; unique there. Its health slot is keyed by it.
	ID string
	// Address is host:port; host is an IP address or a name resolved at connect time.
	Address string
	// Weight is the backend's share of traffic relative to its set, at most WeightMax. Zero means 1,
	// as on the wire.
	Weight int
	// State is the backend's administrative state. Only an Active backend (the zero value) is picked
	// for new requests; a Draining or Disabled one finishes what it has and gets nothing new.
	State State
	// HealthSlot is the backend's health slot in the region, which shm.Writer.Publish assigns; zero
	// in a set not yet published, and unused by a proxy that follows no region.
	HealthSlot uint32
	// TLS is the TLS to the backend, resolved: its own when the control plane gave it one, else
	// its set's (resource.TLSFor's rule). Nil means plain TCP. Backends of one set with the same
	// TLS may share one value; nothing changes it once it is in a Set.
	TLS *TLS
}

// TLS is TLS from the data plane to a backend, as the control plane says it: its certificates and
// keys are files on the data plane's machine, named by absolute paths, which whoever applies it
// reads (the supervisor, to check them and for its probes; each worker, for its pools). The zero
// value is TLS 1.2 and up, verified against the system roots for the host of the backend's
// address, no client certificate, with session resumption. A TLS is comparable: two equal ones are
// the same settings (not necessarily the same files' contents, which may change on disk).
type TLS struct {
	// ServerName is sent in SNI, and the backend's certificate must be valid for it. Empty means
	// the host of the backend's Address; an IP address is verified against the certificate's IP
	// addresses and sends no SNI.
	ServerName string
	// CAFile is a PEM bundle of the certificate authorities the backend's certificate must chain
	// to. Empty means the system roots.
	CAFile string
	// ClientCertFile and ClientKeyFile are a PEM certificate (chain) and its private key, offered
	// to a backend that asks for a client certificate (mTLS): both or neither. Empty means none.
	ClientCertFile, ClientKeyFile string
	// MinVersion is the lowest TLS version offered: tls.VersionTLS13, or zero for TLS 1.2 (the
	// translation from the wire writes zero for "1.2"). The highest is always 1.3.
	MinVersion uint16
	// InsecureSkipVerify accepts any certificate, for any name: encrypted, not authenticated.
	// False, the default, verifies. Whoever applies a set that asks for it logs it at WARN.
	InsecureSkipVerify bool
	// NoResumption makes every connection a full handshake. False, the default, resumes sessions
	// from the tickets the backend sends.
	NoResumption bool
}

// Set is a named group of backends and the policies that pick among them and judge their health.
type Set struct {
	// Name names the set; unique among the sets of a generation.
	Name string
	// Policy picks among the set's backends. The zero value is round robin.
	Policy balance.Policy
	// FailureStatuses says which response statuses the workers count as a backend's failure; the
	// zero value counts none. It is Health.Outlier.FailureStatuses, kept apart because it is the
	// one piece of the health policy that the region carries to the workers: a Set decoded from
	// the region (Load) has it, and a zero Health.
	FailureStatuses health.FailureStatuses
	// Health is the set's health policy, which the supervisor's monitor applies; the zero value is
	// health.Config's defaults. The proxy itself reads only the routes the monitor writes into the
	// region (and FailureStatuses).
	Health health.Config
	// Backends are the set's backends, in the order the control plane gave them. Nil is none: every
	// request to the set is answered 503.
	Backends []Backend
	// Hash is the key that policy balance.MaglevHash hashes. The zero value is none, which only a
	// set of another policy has.
	Hash HashOn
	// Sticky, when not nil, pins each client to a backend with a signed cookie (see Sticky). Nil
	// means no cookie.
	Sticky *Sticky
	// TLS is the set's own tls as the control plane gave it: the TLS of each of its backends that
	// has none of its own. It is already resolved into each Backend.TLS (server/backendset.FromProto
	// does it), which is all the proxy reads; it is kept so that the set goes back to the control
	// plane's form as it came (ToProto), and a configuration file's errors name the set's key. Nil
	// means none: a backend without its own TLS is plain. A Set decoded from the region (Load) has
	// it nil, its backends' TLS set.
	TLS *TLS
}

// HashKind is what a request of a Maglev set is hashed on.
type HashKind = shm.HashKind

// The keys a request may be hashed on.
const (
	HashNone          = shm.HashNone
	HashHeader        = shm.HashHeader        // the value of the first header field named HashOn.Name (any case)
	HashCookie        = shm.HashCookie        // the value of the first cookie named HashOn.Name (exactly)
	HashClientAddress = shm.HashClientAddress // the client's IP address: 4 bytes, or 16 for IPv6
)

// HashOn is a Maglev set's key: a kind and, for a header or a cookie, its name. A request
// without the key is picked by round robin.
type HashOn = shm.HashOn

// SameSite is a sticky cookie's SameSite attribute. The zero value is Lax.
type SameSite = shm.SameSite

// The SameSite values.
const (
	SameSiteLax    = shm.SameSiteLax
	SameSiteStrict = shm.SameSiteStrict
	SameSiteNone   = shm.SameSiteNone // the cookie is then always Secure, as browsers require
)

// Sticky is a set's sticky cookie: NAME=VALUE; Path=PATH; HttpOnly; SameSite=...; Secure (when the
// client's connection is TLS, or SameSite is None); Max-Age=N (when MaxAge is set). The value is
// balance/sticky's: the backend's id, signed.
type Sticky struct {
	// CookieName is the cookie's name, an HTTP token. Empty means "xlb_backend" (a set from the
	// control plane has it filled in).
	CookieName string
	// Path is the cookie's Path. Empty means "/" (filled in, as CookieName).
	Path string
	// MaxAge is the cookie's Max-Age, in whole seconds, and a cookie issued longer ago is ignored.
	// Zero means a session cookie that never goes stale.
	MaxAge time.Duration
	// SameSite is the cookie's SameSite; the zero value is Lax.
	SameSite SameSite
	// NoHTTPOnly leaves HttpOnly out. False, the default, hides the cookie from scripts.
	NoHTTPOnly bool
}

// stickyRecord is s as the region keeps it; nil for nil.
func stickyRecord(s *Sticky) *shm.Sticky {
	if s == nil {
		return nil
	}
	return &shm.Sticky{CookieName: s.CookieName, Path: s.Path, MaxAgeSeconds: uint32(min(s.MaxAge/time.Second, math.MaxUint32)),
		SameSite: s.SameSite, NoHTTPOnly: s.NoHTTPOnly}
}

// stickyOf is the region's record as a Sticky; nil for nil.
func stickyOf(r *shm.Sticky) *Sticky {
	if r == nil {
		return nil
	}
	return &Sticky{CookieName: r.CookieName, Path: r.Path, MaxAge: time.Duration(r.MaxAgeSeconds) * time.Second,
		SameSite: r.SameSite, NoHTTPOnly: r.NoHTTPOnly}
}

// Records is sets as the region's records, for shm.Writer.Publish and Check: the health policy
// stays out (only FailureStatuses goes in), and so does Set.TLS (each backend's TLS goes in), a
// zero weight is written as 1, and HealthSlot is left for Publish to assign. A weight outside 0 to
// math.MaxUint32 is a programmer's error (sets come checked from their translation): Records
// panics.
func Records(sets []Set) []shm.Set {
	out := make([]shm.Set, len(sets))
	for i, s := range sets {
		out[i] = shm.Set{Name: s.Name, Policy: s.Policy, FailureStatuses: uint8(s.FailureStatuses),
			Hash: s.Hash, Sticky: stickyRecord(s.Sticky), Backends: make([]shm.Backend, len(s.Backends))}
		for j, b := range s.Backends {
			if b.Weight < 0 || b.Weight > math.MaxUint32 {
				panic(fmt.Sprintf("table: set %q: backend %q: weight %d does not fit a region record", s.Name, b.ID, b.Weight))
			}
			out[i].Backends[j] = shm.Backend{ID: b.ID, Address: b.Address, Weight: uint32(max(1, b.Weight)), State: b.State,
				TLS: (*shm.TLS)(b.TLS)}
		}
	}
	return out
}

// setsOf is the region's records as Sets.
func setsOf(records []shm.Set) []Set {
	n := 0
	for _, r := range records {
		n += len(r.Backends)
	}
	backends := make([]Backend, 0, n)
	out := make([]Set, len(records))
	for i, r := range records {
		first := len(backends)
		for _, b := range r.Backends {
			backends = append(backends, Backend{ID: b.ID, Address: b.Address, Weight: int(b.Weight), State: b.State, HealthSlot: b.HealthSlot, TLS: (*TLS)(b.TLS)}) // one profile, one *TLS
		}
		out[i] = Set{Name: r.Name, Policy: r.Policy, FailureStatuses: health.FailureStatuses(r.FailureStatuses),
			Hash: r.Hash, Sticky: stickyOf(r.Sticky), Backends: backends[first:len(backends):len(backends)]}
	}
	return out
}

// Table is one decoded generation. Nothing in it changes after Load returns it.
type Table struct {
	Generation uint64
	Sets       []Set
}

// Follower follows a region's generations for the worker of one slot.
type Follower struct {
	r      *shm.Region
	slot   int
	pid    int
	loaded uint64 // the newest generation Load returned
}

// ErrCorrupt and ErrZeroed are wrapped by Load's errors of a damaged region (shm says which).
var (
	ErrCorrupt = shm.ErrCorrupt
	ErrZeroed  = shm.ErrZeroed
)

// NewFollower follows r for the worker of slot, this process.
func NewFollower(r *shm.Region, slot int) *Follower {
	return &Follower{r: r, slot: slot, pid: os.Getpid()}
}

// mine tells whether the slot is this process's: claimed for its pid, or not claimed yet (the
// supervisor claims it once it knows the pid, which may be after the worker's first write). A
// worker left draining by a supervisor that died must not write a slot its successor gave to
// another worker.
func (f *Follower) mine() bool {
	pid := f.r.Worker(f.slot).PID
	return pid == 0 || pid == f.pid
}

// Generation is the generation in force: one atomic load.
func (f *Follower) Generation() uint64 { return f.r.Generation() }

// Load decodes the generation in force. Before the first generation is published it returns an
// empty Table of generation 0. A generation older than one it returned before is an error wrapping
// ErrCorrupt: a worker's region never goes back (a rebuilt one is given to new workers).
func (f *Follower) Load() (*Table, error) {
	s, err := f.r.Read()
	if err == shm.ErrEmpty {
		s, err = shm.Snapshot{}, nil
	}
	if err != nil {
		return nil, err
	}
	if s.Generation < f.loaded {
		return nil, fmt.Errorf("%w: its generation went back from %d to %d", ErrCorrupt, f.loaded, s.Generation)
	}
	f.loaded = s.Generation
	return &Table{Generation: s.Generation, Sets: setsOf(s.Sets)}, nil
}

// Observed records in the worker's slot that it serves generation g.
func (f *Follower) Observed(g uint64) {
	if f.mine() {
		f.r.Observe(f.slot, g)
	}
}

// Beat records in the worker's slot that the worker is alive.
func (f *Follower) Beat(now time.Time) {
	if f.mine() {
		f.r.Beat(f.slot, now.UnixNano())
	}
}
