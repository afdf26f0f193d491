package backendset

import (
	"crypto/tls"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/table"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// cases is how many random sets each property is checked on; every case is drawn from its own
// seed, which a failure names.
const cases = 2000

// TestWeightMax: the data plane's bound on a weight is the control plane's.
func TestWeightMax(t *testing.T) {
	if table.WeightMax != resource.WeightMax {
		t.Fatalf("table.WeightMax %d, resource.WeightMax %d", table.WeightMax, resource.WeightMax)
	}
}

// TestRoundTrip: every valid set of the control plane comes back from FromProto then ToProto as
// it was, once both are normalised (normalise says what differs only in how a default is spelled,
// and drops what the data plane does not keep); and ToProto of what FromProto made is valid.
func TestRoundTrip(t *testing.T) {
	for seed := range uint64(cases) {
		set := randomSet(rand.New(rand.NewPCG(seed, 1)))
		if err := resource.Validate(Prefix, set); err != nil {
			t.Fatalf("seed %d: the generator made an invalid set: %v\n%v", seed, err, set)
		}
		s, err := FromProto(set)
		if err != nil {
			t.Fatalf("seed %d: FromProto: %v\n%v", seed, err, set)
		}
		back := ToProto(s)
		if err := resource.Validate(Prefix, back); err != nil {
			t.Fatalf("seed %d: ToProto(FromProto(set)) is invalid: %v\n%v", seed, err, back)
		}
		if want, got := normalise(set), normalise(back); !proto.Equal(want, got) {
			t.Fatalf("seed %d: the round trip changed the set:\n got %v\nwant %v", seed, got, want)
		}
		// And the other way: the model is a fixed point.
		if again, err := FromProto(back); err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("seed %d: FromProto(ToProto(s)) = %+v, %v; want %+v", seed, again, err, s)
		}
	}
}

// TestInvalidRefused: a valid set broken in one way is refused by FromProto with the error of
// resource.Validate, whatever the way.
func TestInvalidRefused(t *testing.T) {
	for seed := range uint64(cases) {
		rng := rand.New(rand.NewPCG(seed, 2))
		set := randomSet(rng)
		b := breakers[rng.IntN(len(breakers))]
		b.fn(rng, set)
		want := resource.Validate(Prefix, set)
		if want == nil {
			t.Fatalf("seed %d: %s left the set valid:\n%v", seed, b.name, set)
		}
		s, err := FromProto(set)
		if err == nil {
			t.Fatalf("seed %d: %s: FromProto accepted it as %+v; Validate says %v", seed, b.name, s, want)
		}
		if !reflect.DeepEqual(err, want) {
			t.Fatalf("seed %d: %s: FromProto says %v, Validate %v", seed, b.name, err, want)
		}
	}
}

// TestFromProtoTLS: each backend gets the TLS that applies to it (resource.TLSFor's rule): its
// own whole, else the set's, else none; the wire's spellings of a default make one value.
func TestFromProtoTLS(t *testing.T) {
	set := &discoveryv1.BackendSet{Name: "web",
		Tls: &discoveryv1.BackendTls{CaFile: "/etc/xlb/ca.pem", MinVersion: "1.2", SessionResumption: discoveryv1.SessionResumption_SESSION_RESUMPTION_ON},
		Backends: []*discoveryv1.Backend{
			{Id: "a", Address: "10.0.0.1", Port: 443},
			{Id: "b", Address: "10.0.0.2", Port: 443, Tls: &discoveryv1.BackendTls{ServerName: "b.example", MinVersion: "1.3",
				ClientCertFile: "/etc/xlb/c.pem", ClientKeyFile: "/etc/xlb/c.key", SessionResumption: discoveryv1.SessionResumption_SESSION_RESUMPTION_OFF}},
			{Id: "c", Address: "10.0.0.3", Port: 443, Tls: &discoveryv1.BackendTls{InsecureSkipVerify: true}},
		}}
	if err := resource.Validate(Prefix, set); err != nil {
		t.Fatal(err)
	}
	got, err := FromProto(set)
	if err != nil {
		t.Fatal(err)
	}
	setTLS := &table.TLS{CAFile: "/etc/xlb/ca.pem"}
	want := []*table.TLS{setTLS,
		{ServerName: "b.example", MinVersion: tls.VersionTLS13, ClientCertFile: "/etc/xlb/c.pem", ClientKeyFile: "/etc/xlb/c.key", NoResumption: true},
		{InsecureSkipVerify: true}}
	if !reflect.DeepEqual(got.TLS, setTLS) {
		t.Errorf("set TLS %+v, want %+v", got.TLS, setTLS)
	}
	for i, b := range got.Backends {
		if !reflect.DeepEqual(b.TLS, want[i]) {
			t.Errorf("backend %s: TLS %+v, want %+v", b.ID, b.TLS, want[i])
		}
	}
	// Without a set tls, a backend without its own is plain.
	set.Tls = nil
	if got, err := FromProto(set); err != nil || got.TLS != nil || got.Backends[0].TLS != nil {
		t.Fatalf("no set tls: %+v, %v; want backend a plain", got, err)
	}
}

// TestFromProto pins one translation whole: the defaults made explicit, the address joined.
func TestFromProto(t *testing.T) {
	set := &discoveryv1.BackendSet{Name: "web", Policy: discoveryv1.Policy_POLICY_LEAST_REQUEST,
		Backends: []*discoveryv1.Backend{
			{Id: "a", Address: "::1", Port: 8080},
			{Id: "b", Address: "backend.internal", Port: 80, Weight: 7, State: discoveryv1.BackendState_BACKEND_STATE_DRAINING, Zone: "z"},
		},
		HealthCheck: &discoveryv1.HealthCheck{Interval: durationpb.New(time.Second), Probe: &discoveryv1.HealthCheck_Http{Http: &discoveryv1.HttpProbe{
			Path: "/healthz", ExpectedStatuses: []*discoveryv1.StatusRange{{Start: 200}, {Start: 300, End: 302}}}}},
		OutlierDetection: &discoveryv1.OutlierDetection{ConsecutiveFailures: 3, FailureStatuses: discoveryv1.FailureStatuses_FAILURE_STATUSES_GATEWAY},
		SlowStart:        &discoveryv1.SlowStart{Window: durationpb.New(10 * time.Second)},
		PanicThreshold:   20,
	}
	want := table.Set{Name: "web", Policy: balance.LeastRequest, FailureStatuses: health.FailGateway,
		Health: health.Config{
			Probe:          health.Probe{Kind: health.ProbeHTTP, Interval: time.Second, Path: "/healthz", Statuses: []health.StatusRange{{Lo: 200, Hi: 200}, {Lo: 300, Hi: 302}}},
			Outlier:        health.Outlier{ConsecutiveFailures: 3, FailureStatuses: health.FailGateway},
			SlowStart:      health.SlowStart{Window: 10 * time.Second},
			PanicThreshold: 20,
		},
		Backends: []table.Backend{{ID: "a", Address: "[::1]:8080", Weight: 1}, {ID: "b", Address: "backend.internal:80", Weight: 7, State: table.Draining}},
	}
	got, err := FromProto(set)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("FromProto = %+v, %v\nwant %+v", got, err, want)
	}
}

// TestToProtoRefusable: what the wire cannot say about a table.Set made in code comes out as
// something resource.Validate refuses, naming the field, never as a valid set that means
// something else.
func TestToProtoRefusable(t *testing.T) {
	base := func() table.Set {
		return table.Set{Name: "web", Backends: []table.Backend{{ID: "a", Address: "127.0.0.1:80"}}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*table.Set)
		field string
	}{
		{"no port", func(s *table.Set) { s.Backends[0].Address = "127.0.0.1" }, ".backends[0].port"},
		{"port not a number", func(s *table.Set) { s.Backends[0].Address = "127.0.0.1:http" }, ".backends[0].port"},
		{"port past 32 bits", func(s *table.Set) { s.Backends[0].Address = "127.0.0.1:99999999999" }, ".backends[0].port"},
		{"no host", func(s *table.Set) { s.Backends[0].Address = ":80" }, ".backends[0].address"},
		{"negative weight", func(s *table.Set) { s.Backends[0].Weight = -1 }, ".backends[0].weight"},
		{"unknown state", func(s *table.Set) { s.Backends[0].State = 9 }, ".backends[0].state"},
		{"unknown policy", func(s *table.Set) { s.Policy = 9 }, ".policy"},
		{"maglev without a key", func(s *table.Set) { s.Policy = balance.MaglevHash }, ".hash_on"},
		{"unknown hash kind", func(s *table.Set) { s.Policy, s.Hash.Kind = balance.MaglevHash, 9 }, ".hash_on.header"},
		{"negative max age", func(s *table.Set) { s.Sticky = &table.Sticky{MaxAge: -time.Second} }, ".sticky.max_age"},
		{"unknown same site", func(s *table.Set) { s.Sticky = &table.Sticky{SameSite: 9} }, ".sticky.same_site"},
		{"negative fall", func(s *table.Set) { s.Health.Probe = health.Probe{Kind: health.ProbeTCP, Fall: -1} }, ".health_check.fall"},
		{"negative interval", func(s *table.Set) { s.Health.Probe = health.Probe{Kind: health.ProbeTCP, Interval: -time.Second} }, ".health_check.interval"},
		{"unknown failure statuses", func(s *table.Set) { s.FailureStatuses = 9 }, ".outlier_detection.failure_statuses"},
		{"negative slow start", func(s *table.Set) { s.Health.SlowStart.Window = -time.Second }, ".slow_start.window"},
		{"negative panic threshold", func(s *table.Set) { s.Health.PanicThreshold = -1 }, ".panic_threshold"},
		{"unknown TLS version", func(s *table.Set) { s.TLS = &table.TLS{MinVersion: tls.VersionTLS11} }, ".tls.min_version"},
		{"backend's TLS version", func(s *table.Set) { s.Backends[0].TLS = &table.TLS{MinVersion: 1} }, ".backends[0].tls.min_version"},
		{"relative CA file", func(s *table.Set) { s.Backends[0].TLS = &table.TLS{CAFile: "ca.pem"} }, ".backends[0].tls.ca_file"},
	} {
		s := base()
		tc.edit(&s)
		err := resource.Validate(Prefix, ToProto(s))
		re, ok := err.(*resource.Error)
		if !ok || re.Field != Prefix+tc.field {
			t.Errorf("%s: Validate(ToProto) = %v, want an error of %s", tc.name, err, Prefix+tc.field)
		}
	}
}

// normalise is a copy of set with each default spelled one way, as ToProto spells it, and
// without what FromProto does not keep (zone, metadata).
func normalise(set *discoveryv1.BackendSet) *discoveryv1.BackendSet {
	m := proto.Clone(set).(*discoveryv1.BackendSet)
	if m.Policy == discoveryv1.Policy_POLICY_UNSPECIFIED {
		m.Policy = discoveryv1.Policy_POLICY_ROUND_ROBIN
	}
	normaliseTLS(m.Tls)
	if st := m.Sticky; st != nil {
		if st.CookieName == "" {
			st.CookieName = resource.DefaultCookieName
		}
		if st.Path == "" {
			st.Path = resource.DefaultCookiePath
		}
		if st.MaxAge != nil && st.MaxAge.AsDuration() == 0 {
			st.MaxAge = nil
		}
		if st.SameSite == discoveryv1.SameSite_SAME_SITE_UNSPECIFIED {
			st.SameSite = discoveryv1.SameSite_SAME_SITE_LAX
		}
		if st.HttpOnly == discoveryv1.HttpOnly_HTTP_ONLY_UNSPECIFIED {
			st.HttpOnly = discoveryv1.HttpOnly_HTTP_ONLY_ON
		}
	}
	for _, b := range m.Backends {
		// A backend's own tls equal to the set's means what none does.
		if normaliseTLS(b.Tls); b.Tls != nil && m.Tls != nil && proto.Equal(b.Tls, m.Tls) {
			b.Tls = nil
		}
		b.Weight = max(1, b.Weight)
		if b.State == discoveryv1.BackendState_BACKEND_STATE_ACTIVE {
			b.State = discoveryv1.BackendState_BACKEND_STATE_UNSPECIFIED
		}
		b.Zone, b.Metadata = "", nil
	}
	zero := func(d **durationpb.Duration) {
		if *d != nil && (*d).AsDuration() == 0 {
			*d = nil
		}
	}
	if hc := m.HealthCheck; hc != nil {
		zero(&hc.Interval)
		zero(&hc.Timeout)
		if hc.Probe == nil {
			hc.Probe = &discoveryv1.HealthCheck_Http{Http: &discoveryv1.HttpProbe{}}
		}
		for _, r := range hc.GetHttp().GetExpectedStatuses() {
			if r.End == 0 {
				r.End = r.Start
			}
		}
	}
	if od := m.OutlierDetection; od != nil {
		zero(&od.BaseEjectionTime)
		zero(&od.MaxEjectionTime)
		if od.FailureStatuses == discoveryv1.FailureStatuses_FAILURE_STATUSES_NONE {
			od.FailureStatuses = discoveryv1.FailureStatuses_FAILURE_STATUSES_UNSPECIFIED
		}
		if proto.Equal(od, &discoveryv1.OutlierDetection{}) {
			m.OutlierDetection = nil
		}
	}
	return m
}

// normaliseTLS spells the defaults of t one way: min_version "1.2" as empty, resumption on as
// unspecified.
func normaliseTLS(t *discoveryv1.BackendTls) {
	if t == nil {
		return
	}
	if t.MinVersion == "1.2" {
		t.MinVersion = ""
	}
	if t.SessionResumption == discoveryv1.SessionResumption_SESSION_RESUMPTION_ON {
		t.SessionResumption = discoveryv1.SessionResumption_SESSION_RESUMPTION_UNSPECIFIED
	}
}

// randomTLS draws a valid tls, or none, from a few values of each field so that two draws are
// often equal (a backend's own tls the same as its set's).
func randomTLS(rng *rand.Rand) *discoveryv1.BackendTls {
	if rng.IntN(3) == 0 {
		return nil
	}
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	t := &discoveryv1.BackendTls{
		ServerName:        pick("", "", "b.example", "10.0.0.1", "2001:db8::7", strings.Repeat("a", 63)+".example"),
		MinVersion:        pick("", "1.2", "1.3"),
		SessionResumption: discoveryv1.SessionResumption(rng.IntN(len(discoveryv1.SessionResumption_name))),
	}
	if rng.IntN(4) == 0 {
		t.InsecureSkipVerify = true
	} else {
		t.CaFile = pick("", "/etc/xlb/ca.pem", "/"+strings.Repeat("d", resource.PathBytesMax-1))
	}
	if rng.IntN(3) == 0 {
		t.ClientCertFile, t.ClientKeyFile = "/etc/xlb/client.pem", pick("/etc/xlb/client.key", "/etc/xlb/client.pem")
	}
	return t
}

// randomSet draws a valid set: every field, each in and at the edges of its range, defaults often.
func randomSet(rng *rand.Rand) *discoveryv1.BackendSet {
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	edge := func(lo, hi uint32) uint32 { // 0 (the default), an edge, or anything between
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return lo
		case 2:
			return hi
		}
		return lo + uint32(rng.Int64N(int64(hi-lo)+1))
	}
	dur := func(lo, hi time.Duration) *durationpb.Duration {
		switch rng.IntN(4) {
		case 0:
			return nil
		case 1:
			return durationpb.New(0)
		}
		return durationpb.New(lo + time.Duration(rng.Int64N(int64(hi-lo)/int64(time.Millisecond)+1))*time.Millisecond)
	}
	set := &discoveryv1.BackendSet{Name: pick("web", "api.v2", "A_b-c", strings.Repeat("n", resource.NameBytesMax)),
		Policy: discoveryv1.Policy(rng.IntN(len(discoveryv1.Policy_name))), Tls: randomTLS(rng)}
	if set.Policy == discoveryv1.Policy_POLICY_MAGLEV {
		switch rng.IntN(3) {
		case 0:
			set.HashOn = &discoveryv1.HashOn{Key: &discoveryv1.HashOn_Header{Header: pick("x-user", "X-Session-ID", strings.Repeat("h", resource.TokenBytesMax), "!#$%&'*+-.^_`|~")}}
		case 1:
			set.HashOn = &discoveryv1.HashOn{Key: &discoveryv1.HashOn_Cookie{Cookie: pick("sid", "JSESSIONID")}}
		case 2:
			set.HashOn = &discoveryv1.HashOn{Key: &discoveryv1.HashOn_ClientAddress{ClientAddress: &discoveryv1.ClientAddress{}}}
		}
	}
	if rng.IntN(2) == 0 {
		st := &discoveryv1.Sticky{CookieName: pick("", "xlb_backend", "SERVERID", strings.Repeat("c", resource.TokenBytesMax)),
			Path:     pick("", "/", "/app", "/"+strings.Repeat("p", resource.CookiePathBytesMax-1)),
			SameSite: discoveryv1.SameSite(rng.IntN(len(discoveryv1.SameSite_name))), HttpOnly: discoveryv1.HttpOnly(rng.IntN(len(discoveryv1.HttpOnly_name)))}
		switch rng.IntN(4) {
		case 1:
			st.MaxAge = durationpb.New(0)
		case 2:
			st.MaxAge = durationpb.New(time.Duration(1+rng.IntN(int(resource.CookieMaxAgeMax/time.Second))) * time.Second)
		case 3:
			st.MaxAge = durationpb.New(resource.CookieMaxAgeMax)
		}
		set.Sticky = st
	}
	for i := range rng.IntN(6) {
		b := &discoveryv1.Backend{
			Id:      fmt.Sprintf("%s%d", pick("b", "10.0.0.1:", "x.y-z_"), i),
			Address: pick("10.0.0.1", "::1", "2001:db8::7", "backend.internal", "example.com.", "a"),
			Port:    1 + uint32(rng.IntN(65535)),
			Weight:  edge(1, resource.WeightMax),
			State:   discoveryv1.BackendState(rng.IntN(len(discoveryv1.BackendState_name))),
		}
		if rng.IntN(4) == 0 {
			b.Zone, b.Metadata = "zone-a", map[string]string{"k": "v"}
		}
		if rng.IntN(3) == 0 {
			b.Tls = randomTLS(rng)
		}
		set.Backends = append(set.Backends, b)
	}
	if rng.IntN(2) == 0 {
		hc := &discoveryv1.HealthCheck{Interval: dur(resource.HealthIntervalMin, 10*time.Second),
			Fall: edge(1, resource.HealthCountMax), Rise: edge(1, resource.HealthCountMax)}
		interval := hc.GetInterval().AsDuration()
		if interval == 0 {
			interval = 2 * time.Second
		}
		hc.Timeout = dur(time.Millisecond, interval)
		switch rng.IntN(3) {
		case 1:
			hc.Probe = &discoveryv1.HealthCheck_Tcp{Tcp: &discoveryv1.TcpProbe{}}
		case 2:
			h := &discoveryv1.HttpProbe{Path: pick("", "/", "/healthz?x=1"), Host: pick("", "example.com", "h:8080")}
			for range rng.IntN(resource.StatusRangesMax + 1) {
				lo := 100 + uint32(rng.IntN(500))
				r := &discoveryv1.StatusRange{Start: lo}
				if rng.IntN(2) == 0 {
					r.End = lo + uint32(rng.IntN(int(600-lo)))
				}
				h.ExpectedStatuses = append(h.ExpectedStatuses, r)
			}
			hc.Probe = &discoveryv1.HealthCheck_Http{Http: h}
		}
		set.HealthCheck = hc
	}
	if rng.IntN(2) == 0 {
		od := &discoveryv1.OutlierDetection{Disabled: rng.IntN(2) == 0, ConsecutiveFailures: edge(1, resource.HealthCountMax),
			BaseEjectionTime: dur(resource.EjectionTimeMin, resource.BaseEjectionTimeMax), MaxEjectionPercent: edge(1, resource.PercentMax),
			FailureStatuses: discoveryv1.FailureStatuses(rng.IntN(len(discoveryv1.FailureStatuses_name)))}
		od.MaxEjectionTime = dur(max(resource.EjectionTimeMin, od.GetBaseEjectionTime().AsDuration()), resource.MaxEjectionTimeMax)
		set.OutlierDetection = od
	}
	if rng.IntN(2) == 0 {
		set.SlowStart = &discoveryv1.SlowStart{Window: durationpb.New(resource.SlowStartWindowMin + time.Duration(rng.IntN(3600))*time.Second/4),
			MinWeightPercent: edge(1, resource.PercentMax)}
	}
	set.PanicThreshold = edge(1, resource.PercentMax)
	return set
}

// breakers each break a valid set in one way that resource.Validate refuses.
var breakers = []struct {
	name string
	fn   func(*rand.Rand, *discoveryv1.BackendSet)
}{
	{"empty name", func(_ *rand.Rand, s *discoveryv1.BackendSet) { s.Name = "" }},
	{"name with a space", func(_ *rand.Rand, s *discoveryv1.BackendSet) { s.Name = "my web" }},
	{"unknown policy", func(_ *rand.Rand, s *discoveryv1.BackendSet) { s.Policy = 7 }},
	{"bad backend", func(rng *rand.Rand, s *discoveryv1.BackendSet) {
		b := &discoveryv1.Backend{Id: "fresh", Address: "10.0.0.9", Port: 80}
		switch rng.IntN(9) {
		case 0:
			b.Id = ""
		case 1:
			b.Id = "a b"
		case 2:
			b.Address = "bad_host"
		case 3:
			b.Address = ""
		case 4:
			b.Port = 0
		case 5:
			b.Port = 65536
		case 6:
			b.Weight = resource.WeightMax + 1
		case 7:
			b.State = 9
		case 8:
			b.Metadata = map[string]string{"": "v"}
		}
		s.Backends = append(s.Backends, b)
	}},
	{"duplicate id", func(_ *rand.Rand, s *discoveryv1.BackendSet) {
		s.Backends = append(s.Backends, &discoveryv1.Backend{Id: "dup", Address: "10.0.0.1", Port: 1}, &discoveryv1.Backend{Id: "dup", Address: "10.0.0.2", Port: 2})
	}},
	{"bad health check", func(rng *rand.Rand, s *discoveryv1.BackendSet) {
		hc := &discoveryv1.HealthCheck{}
		switch rng.IntN(6) {
		case 0:
			hc.Interval = durationpb.New(time.Millisecond)
		case 1:
			hc.Interval, hc.Timeout = durationpb.New(time.Second), durationpb.New(2*time.Second)
		case 2:
			hc.Fall = resource.HealthCountMax + 1
		case 3:
			hc.Probe = &discoveryv1.HealthCheck_Http{Http: &discoveryv1.HttpProbe{Path: "healthz"}}
		case 4:
			hc.Probe = &discoveryv1.HealthCheck_Http{Http: &discoveryv1.HttpProbe{ExpectedStatuses: []*discoveryv1.StatusRange{{Start: 300, End: 200}}}}
		case 5:
			hc.Timeout = &durationpb.Duration{Seconds: 1, Nanos: -1}
		}
		s.HealthCheck = hc
	}},
	{"bad outlier detection", func(rng *rand.Rand, s *discoveryv1.BackendSet) {
		od := &discoveryv1.OutlierDetection{}
		switch rng.IntN(4) {
		case 0:
			od.BaseEjectionTime, od.MaxEjectionTime = durationpb.New(time.Minute), durationpb.New(time.Second)
		case 1:
			od.MaxEjectionPercent = resource.PercentMax + 1
		case 2:
			od.FailureStatuses = 9
		case 3:
			od.ConsecutiveFailures = math.MaxUint32
		}
		s.OutlierDetection = od
	}},
	{"bad slow start", func(rng *rand.Rand, s *discoveryv1.BackendSet) {
		s.SlowStart = &discoveryv1.SlowStart{Window: []*durationpb.Duration{nil, durationpb.New(2 * time.Hour)}[rng.IntN(2)]}
	}},
	{"panic threshold over 100", func(_ *rand.Rand, s *discoveryv1.BackendSet) { s.PanicThreshold = resource.PercentMax + 1 }},
	{"bad hash_on", func(rng *rand.Rand, s *discoveryv1.BackendSet) {
		switch rng.IntN(4) {
		case 0: // maglev without a key
			s.Policy, s.HashOn = discoveryv1.Policy_POLICY_MAGLEV, nil
		case 1: // a key without maglev
			s.Policy, s.HashOn = discoveryv1.Policy_POLICY_LEAST_REQUEST, &discoveryv1.HashOn{Key: &discoveryv1.HashOn_Header{Header: "x"}}
		case 2:
			s.Policy, s.HashOn = discoveryv1.Policy_POLICY_MAGLEV, &discoveryv1.HashOn{Key: &discoveryv1.HashOn_Header{Header: "x user"}}
		case 3:
			s.Policy, s.HashOn = discoveryv1.Policy_POLICY_MAGLEV, &discoveryv1.HashOn{Key: &discoveryv1.HashOn_Cookie{Cookie: strings.Repeat("c", resource.TokenBytesMax+1)}}
		}
	}},
	{"bad sticky", func(rng *rand.Rand, s *discoveryv1.BackendSet) {
		st := &discoveryv1.Sticky{}
		switch rng.IntN(6) {
		case 0:
			st.CookieName = "a=b"
		case 1:
			st.Path = "app"
		case 2:
			st.Path = "/a;b"
		case 3:
			st.MaxAge = durationpb.New(1500 * time.Millisecond)
		case 4:
			st.MaxAge = durationpb.New(resource.CookieMaxAgeMax + time.Second)
		case 5:
			st.SameSite = 9
		}
		s.Sticky = st
	}},
	{"bad tls", func(rng *rand.Rand, s *discoveryv1.BackendSet) {
		t := &discoveryv1.BackendTls{}
		switch rng.IntN(5) {
		case 0:
			t.CaFile = "relative/ca.pem"
		case 1:
			t.ClientCertFile = "/etc/xlb/client.pem"
		case 2:
			t.MinVersion = "1.1"
		case 3:
			t.InsecureSkipVerify, t.CaFile = true, "/etc/xlb/ca.pem"
		case 4:
			t.ServerName = "bad_host"
		}
		if rng.IntN(2) == 0 || len(s.Backends) == 0 {
			s.Tls = t
		} else {
			s.Backends[rng.IntN(len(s.Backends))].Tls = t
		}
	}},
}

// TestHealthRoundTrip: a set's health policy as a file or the flags make it reaches the monitor
// unchanged through the control plane's form (ToProto then FromProto), and that form passes the
// control plane's checks.
func TestHealthRoundTrip(t *testing.T) {
	policies := []health.Config{
		{},
		{Probe: health.Probe{Kind: health.ProbeTCP}},
		{
			Probe: health.Probe{Kind: health.ProbeHTTP, Interval: time.Second, Timeout: 300 * time.Millisecond, Fall: 2, Rise: 2,
				Path: "/healthz", Host: "h.example", Statuses: []health.StatusRange{{Lo: 200, Hi: 204}, {Lo: 302, Hi: 302}}},
			Outlier: health.Outlier{ConsecutiveFailures: 3, BaseEjectionTime: time.Second, MaxEjectionTime: time.Minute,
				MaxEjectionPercent: 100, FailureStatuses: health.Fail5xx},
			SlowStart:      health.SlowStart{Window: 10 * time.Second, MinWeightPercent: 20},
			PanicThreshold: 30,
		},
		{Outlier: health.Outlier{Disabled: true, FailureStatuses: health.FailGateway}},
	}
	for i, c := range policies {
		set := table.Set{Name: "web", Backends: []table.Backend{{ID: "a", Address: "127.0.0.1:9001", Weight: 1}}, Health: c}
		got, err := FromProto(ToProto(set))
		if err != nil {
			t.Fatalf("%d: FromProto(ToProto): %v", i, err)
		}
		if !reflect.DeepEqual(got.Health, c) {
			t.Errorf("%d: round trip:\n got %+v\nwant %+v", i, got.Health, c)
		}
		if got.FailureStatuses != c.Outlier.FailureStatuses {
			t.Errorf("%d: FailureStatuses %v, want the outlier's %v", i, got.FailureStatuses, c.Outlier.FailureStatuses)
		}
	}
}

// TestNames: the file's names of policies, states and failure statuses are the wire enums' in
// lower case, without UNSPECIFIED, and an unknown one is told what the names are.
func TestNames(t *testing.T) {
	for s, want := range map[string]balance.Policy{"round_robin": balance.RoundRobin, "least_request": balance.LeastRequest, "maglev": balance.MaglevHash} {
		if got, err := ParsePolicy(s); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for s, want := range map[string]table.State{"active": table.Active, "draining": table.Draining, "disabled": table.Disabled} {
		if got, err := ParseState(s); err != nil || got != want {
			t.Errorf("ParseState(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for s, want := range map[string]health.FailureStatuses{"none": health.FailNoStatus, "gateway": health.FailGateway, "5xx": health.Fail5xx} {
		if got, err := ParseFailureStatuses(s); err != nil || got != want {
			t.Errorf("ParseFailureStatuses(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "unspecified", "UNSPECIFIED", "Least_Request", "LEAST_REQUEST", "random"} {
		if _, err := ParsePolicy(s); err == nil || err.Error() != "want round_robin, least_request or maglev" {
			t.Errorf("ParsePolicy(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "Draining", "unspecified"} {
		if _, err := ParseState(s); err == nil || err.Error() != "want active, draining or disabled" {
			t.Errorf("ParseState(%q): %v", s, err)
		}
	}
	if _, err := ParseFailureStatuses("4xx"); err == nil || err.Error() != "want none, gateway (502, 503, 504) or 5xx" {
		t.Errorf("ParseFailureStatuses(4xx): %v", err)
	}
}
