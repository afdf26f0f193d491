// Package backendset is the one translation between the two forms of a backend set: the control
// plane's (discoveryv1.BackendSet, the wire and store form, whose rules are controlplane/resource's)
// and the data plane's typed model (dataplane/table.Set). The supervisor turns what its control
// plane sends into region records through FromProto; the configuration file, the flags and the
// demo, which build table.Sets, reach the control plane through ToProto, and the file's sets are
// checked by resource.Validate on ToProto of them, so that the file, the admin API and the data
// plane refuse the same things in the same words.
//
// FromProto refuses what resource.Validate refuses, with the same error; what it returns is valid
// by table's rules: a weight of 1 to table.WeightMax, an address of host:port, each backend's TLS
// resolved (its own, else the set's). It reads no file: LoadTLS reads a set's TLS files, where the
// set is applied. ToProto is total: a table.Set that breaks the rules
// (built in code) becomes a message that resource.Validate refuses, never a valid one that means
// something else. Zone and metadata, which the data plane does not use, do not survive
// FromProto.
package backendset

import (
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/table"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// Prefix is the field path that FromProto's errors start with, as in
// backend_set.backends[2].port.
const Prefix = "backend_set"

// FromProto checks set by the control plane's rules (resource.Validate, whose error it returns as
// it is, a *resource.Error) and by what this data plane supports, and translates it. Defaults are
// made explicit where table has no zero for them: a weight of 0 is 1.
func FromProto(set *discoveryv1.BackendSet) (table.Set, error) {
	if err := resource.Validate(Prefix, set); err != nil {
		return table.Set{}, err
	}
	s := table.Set{Name: set.GetName(), Policy: policies[set.GetPolicy()], Health: healthOf(set), TLS: tlsOf(set.GetTls()),
		Hash: hashOf(set.GetHashOn()), Sticky: stickyOf(set.GetSticky())}
	s.FailureStatuses = s.Health.Outlier.FailureStatuses
	if n := len(set.GetBackends()); n > 0 {
		s.Backends = make([]table.Backend, n)
	}
	for i, b := range set.GetBackends() {
		s.Backends[i] = table.Backend{
			ID:      b.GetId(),
			Address: net.JoinHostPort(b.GetAddress(), strconv.FormatUint(uint64(b.GetPort()), 10)),
			Weight:  int(max(1, b.GetWeight())),
			State:   states[b.GetState()],
			TLS:     s.TLS,
		}
		if own := b.GetTls(); own != nil {
			s.Backends[i].TLS = tlsOf(own)
		}
	}
	return s, nil
}

// hashOf is a valid hash_on as table's; the zero value for none.
func hashOf(h *discoveryv1.HashOn) table.HashOn {
	switch k := h.GetKey().(type) {
	case *discoveryv1.HashOn_Header:
		return table.HashOn{Kind: table.HashHeader, Name: k.Header}
	case *discoveryv1.HashOn_Cookie:
		return table.HashOn{Kind: table.HashCookie, Name: k.Cookie}
	case *discoveryv1.HashOn_ClientAddress:
		return table.HashOn{Kind: table.HashClientAddress}
	}
	return table.HashOn{}
}

// hashToProto is h on the wire; nil for none. A kind the wire cannot say is a header with no
// name, which resource.Validate refuses.
func hashToProto(h table.HashOn) *discoveryv1.HashOn {
	switch h.Kind {
	case table.HashNone:
		return nil
	case table.HashHeader:
		return &discoveryv1.HashOn{Key: &discoveryv1.HashOn_Header{Header: h.Name}}
	case table.HashCookie:
		return &discoveryv1.HashOn{Key: &discoveryv1.HashOn_Cookie{Cookie: h.Name}}
	case table.HashClientAddress:
		return &discoveryv1.HashOn{Key: &discoveryv1.HashOn_ClientAddress{ClientAddress: &discoveryv1.ClientAddress{}}}
	}
	return &discoveryv1.HashOn{Key: &discoveryv1.HashOn_Header{}}
}

// stickyOf is a valid sticky as table's, its defaults filled in (the cookie's name and path); nil
// for none.
func stickyOf(st *discoveryv1.Sticky) *table.Sticky {
	if st == nil {
		return nil
	}
	out := &table.Sticky{CookieName: st.GetCookieName(), Path: st.GetPath(), MaxAge: st.GetMaxAge().AsDuration(),
		SameSite: sameSites[st.GetSameSite()], NoHTTPOnly: st.GetHttpOnly() == discoveryv1.HttpOnly_HTTP_ONLY_OFF}
	if out.CookieName == "" {
		out.CookieName = resource.DefaultCookieName
	}
	if out.Path == "" {
		out.Path = resource.DefaultCookiePath
	}
	return out
}

// stickyToProto is st on the wire; nil for none. A negative max age or an unknown SameSite is
// written as what resource.Validate refuses.
func stickyToProto(st *table.Sticky) *discoveryv1.Sticky {
	if st == nil {
		return nil
	}
	m := &discoveryv1.Sticky{CookieName: st.CookieName, Path: st.Path}
	if st.MaxAge != 0 {
		m.MaxAge = durationpb.New(st.MaxAge)
	}
	switch st.SameSite {
	case table.SameSiteLax:
		m.SameSite = discoveryv1.SameSite_SAME_SITE_LAX
	case table.SameSiteStrict:
		m.SameSite = discoveryv1.SameSite_SAME_SITE_STRICT
	case table.SameSiteNone:
		m.SameSite = discoveryv1.SameSite_SAME_SITE_NONE
	default:
		m.SameSite = invalid
	}
	m.HttpOnly = discoveryv1.HttpOnly_HTTP_ONLY_ON
	if st.NoHTTPOnly {
		m.HttpOnly = discoveryv1.HttpOnly_HTTP_ONLY_OFF
	}
	return m
}

// tlsOf is a valid tls of the wire as table's; nil for none. "1.2" and the empty min_version are
// both zero, SESSION_RESUMPTION_ON and UNSPECIFIED both resume: equal settings make equal values.
func tlsOf(t *discoveryv1.BackendTls) *table.TLS {
	if t == nil {
		return nil
	}
	out := &table.TLS{ServerName: t.GetServerName(), CAFile: t.GetCaFile(), ClientCertFile: t.GetClientCertFile(),
		ClientKeyFile: t.GetClientKeyFile(), InsecureSkipVerify: t.GetInsecureSkipVerify(),
		NoResumption: t.GetSessionResumption() == discoveryv1.SessionResumption_SESSION_RESUMPTION_OFF}
	if t.GetMinVersion() == "1.3" {
		out.MinVersion = tls.VersionTLS13
	}
	return out
}

// tlsToProto is t on the wire; nil for none. A MinVersion that the wire cannot say is written as
// a min_version that resource.Validate refuses.
func tlsToProto(t *table.TLS) *discoveryv1.BackendTls {
	if t == nil {
		return nil
	}
	m := &discoveryv1.BackendTls{ServerName: t.ServerName, CaFile: t.CAFile, ClientCertFile: t.ClientCertFile,
		ClientKeyFile: t.ClientKeyFile, InsecureSkipVerify: t.InsecureSkipVerify}
	switch t.MinVersion {
	case 0:
	case tls.VersionTLS12:
		m.MinVersion = "1.2"
	case tls.VersionTLS13:
		m.MinVersion = "1.3"
	default:
		m.MinVersion = fmt.Sprintf("%#04x", t.MinVersion)
	}
	if t.NoResumption {
		m.SessionResumption = discoveryv1.SessionResumption_SESSION_RESUMPTION_OFF
	}
	return m
}

// states maps the wire's states to table's; a valid set has no other.
var states = map[discoveryv1.BackendState]table.State{
	discoveryv1.BackendState_BACKEND_STATE_UNSPECIFIED: table.Active,
	discoveryv1.BackendState_BACKEND_STATE_ACTIVE:      table.Active,
	discoveryv1.BackendState_BACKEND_STATE_DRAINING:    table.Draining,
	discoveryv1.BackendState_BACKEND_STATE_DISABLED:    table.Disabled,
}

// healthOf is the health policy of a valid set; the defaults are the monitor's.
func healthOf(set *discoveryv1.BackendSet) health.Config {
	var c health.Config
	if hc := set.GetHealthCheck(); hc != nil {
		c.Probe = health.Probe{Kind: health.ProbeHTTP, Interval: hc.GetInterval().AsDuration(), Timeout: hc.GetTimeout().AsDuration(),
			Fall: int(hc.GetFall()), Rise: int(hc.GetRise())}
		if hc.GetTcp() != nil {
			c.Probe.Kind = health.ProbeTCP
		}
		if h := hc.GetHttp(); h != nil {
			c.Probe.Path, c.Probe.Host = h.GetPath(), h.GetHost()
			for _, r := range h.GetExpectedStatuses() {
				end := r.GetEnd()
				if end == 0 {
					end = r.GetStart()
				}
				c.Probe.Statuses = append(c.Probe.Statuses, health.StatusRange{Lo: int(r.GetStart()), Hi: int(end)})
			}
		}
	}
	od := set.GetOutlierDetection()
	c.Outlier = health.Outlier{Disabled: od.GetDisabled(), ConsecutiveFailures: int(od.GetConsecutiveFailures()),
		BaseEjectionTime: od.GetBaseEjectionTime().AsDuration(), MaxEjectionTime: od.GetMaxEjectionTime().AsDuration(),
		MaxEjectionPercent: int(od.GetMaxEjectionPercent()), FailureStatuses: failureStatuses[od.GetFailureStatuses()]}
	if ss := set.GetSlowStart(); ss != nil {
		c.SlowStart = health.SlowStart{Window: ss.GetWindow().AsDuration(), MinWeightPercent: int(ss.GetMinWeightPercent())}
	}
	c.PanicThreshold = int(set.GetPanicThreshold())
	return c
}

// failureStatuses maps the wire's failure statuses to health's; a valid set has no other.
var failureStatuses = map[discoveryv1.FailureStatuses]health.FailureStatuses{
	discoveryv1.FailureStatuses_FAILURE_STATUSES_UNSPECIFIED: health.FailNoStatus,
	discoveryv1.FailureStatuses_FAILURE_STATUSES_NONE:        health.FailNoStatus,
	discoveryv1.FailureStatuses_FAILURE_STATUSES_GATEWAY:     health.FailGateway,
	discoveryv1.FailureStatuses_FAILURE_STATUSES_5XX:         health.Fail5xx,
}

// invalid is the enum number ToProto writes for a value of table's that has no wire name, so that
// resource.Validate refuses it ("unknown policy -1").
const invalid = -1

// ToProto is s as the control plane holds it. It never fails: what the wire cannot say is written
// as what resource.Validate refuses, naming the field. An address that is not host:port goes in
// address whole, with port 0; a port past 32 bits is math.MaxUint32; a negative count or weight is
// math.MaxUint32. The outlier's failure statuses are Health.Outlier.FailureStatuses, or
// FailureStatuses when that is zero (a set made in code may give either). Defaults stay implicit:
// a round-robin set says POLICY_ROUND_ROBIN, an active backend no state, a zero duration none.
// TLS: the set's TLS is the set's tls; a backend gets a tls of its own only when its TLS is not
// nil and not equal to the set's. The wire cannot say "plain" for one backend of a set with TLS:
// a nil Backend.TLS there takes the set's (as a configuration file's backend without a tls key
// does).
func ToProto(s table.Set) *discoveryv1.BackendSet {
	m := &discoveryv1.BackendSet{Name: s.Name, Tls: tlsToProto(s.TLS), HashOn: hashToProto(s.Hash), Sticky: stickyToProto(s.Sticky)}
	switch s.Policy {
	case balance.RoundRobin:
		m.Policy = discoveryv1.Policy_POLICY_ROUND_ROBIN
	case balance.LeastRequest:
		m.Policy = discoveryv1.Policy_POLICY_LEAST_REQUEST
	case balance.MaglevHash:
		m.Policy = discoveryv1.Policy_POLICY_MAGLEV
	default:
		m.Policy = invalid
	}
	for _, b := range s.Backends {
		rb := &discoveryv1.Backend{Id: b.ID, Address: b.Address, Weight: count(b.Weight)}
		if host, port, err := net.SplitHostPort(b.Address); err == nil {
			rb.Address = host
			p, err := strconv.ParseUint(port, 10, 32)
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				p = math.MaxUint32
			}
			rb.Port = uint32(p)
		}
		if b.TLS != nil && (s.TLS == nil || *b.TLS != *s.TLS) {
			rb.Tls = tlsToProto(b.TLS)
		}
		switch b.State {
		case table.Active:
		case table.Draining:
			rb.State = discoveryv1.BackendState_BACKEND_STATE_DRAINING
		case table.Disabled:
			rb.State = discoveryv1.BackendState_BACKEND_STATE_DISABLED
		default:
			rb.State = invalid
		}
		m.Backends = append(m.Backends, rb)
	}
	healthToProto(s, m)
	return m
}

// count is a count or weight of table's on the wire: a negative one is math.MaxUint32, which
// every bound refuses, and so is one past 32 bits.
func count(n int) uint32 {
	if n < 0 || n > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}

// healthToProto puts the health policy of s into m.
func healthToProto(s table.Set, m *discoveryv1.BackendSet) {
	c := s.Health
	dur := func(d time.Duration) *durationpb.Duration {
		if d == 0 {
			return nil
		}
		return durationpb.New(d)
	}
	switch p := c.Probe; p.Kind {
	case health.ProbeNone:
	case health.ProbeHTTP, health.ProbeTCP:
		hc := &discoveryv1.HealthCheck{Interval: dur(p.Interval), Timeout: dur(p.Timeout), Fall: count(p.Fall), Rise: count(p.Rise)}
		if p.Kind == health.ProbeTCP {
			hc.Probe = &discoveryv1.HealthCheck_Tcp{Tcp: &discoveryv1.TcpProbe{}}
		} else {
			h := &discoveryv1.HttpProbe{Path: p.Path, Host: p.Host}
			for _, r := range p.Statuses {
				h.ExpectedStatuses = append(h.ExpectedStatuses, &discoveryv1.StatusRange{Start: count(r.Lo), End: count(r.Hi)})
			}
			hc.Probe = &discoveryv1.HealthCheck_Http{Http: h}
		}
		m.HealthCheck = hc
	default:
		// health.ProbeKind has three values, all made in code: another is a programmer's error.
		panic(fmt.Sprintf("backendset: set %q: probe kind %d is none of dataplane/health's", s.Name, p.Kind))
	}
	o := c.Outlier
	if o.FailureStatuses == health.FailNoStatus {
		o.FailureStatuses = s.FailureStatuses
	}
	if o != (health.Outlier{}) {
		od := &discoveryv1.OutlierDetection{Disabled: o.Disabled, ConsecutiveFailures: count(o.ConsecutiveFailures),
			BaseEjectionTime: dur(o.BaseEjectionTime), MaxEjectionTime: dur(o.MaxEjectionTime), MaxEjectionPercent: count(o.MaxEjectionPercent)}
		switch o.FailureStatuses {
		case health.FailNoStatus:
		case health.FailGateway:
			od.FailureStatuses = discoveryv1.FailureStatuses_FAILURE_STATUSES_GATEWAY
		case health.Fail5xx:
			od.FailureStatuses = discoveryv1.FailureStatuses_FAILURE_STATUSES_5XX
		default:
			od.FailureStatuses = invalid
		}
		m.OutlierDetection = od
	}
	if ss := c.SlowStart; ss != (health.SlowStart{}) {
		m.SlowStart = &discoveryv1.SlowStart{Window: dur(ss.Window), MinWeightPercent: count(ss.MinWeightPercent)}
	}
	m.PanicThreshold = count(c.PanicThreshold)
}
