package supervisor

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"os"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/monitor"
	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/dataplane/upstream"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
	"github.com/xlbproxy/xlb/server/backendset"
	"github.com/xlbproxy/xlb/server/config"
)

// Health in the data plane: the supervisor runs one dataplane/monitor over its region, which owns
// every backend's health machine, probes, and writes the routes the workers follow. Workers count
// their requests' outcomes in the region and tell the supervisor of a failure by a byte on the
// health pipe (inherited as worker.FDHealth), which wakes the monitor at once; the monitor asks the
// supervisor to wake the workers when a route changed, so that those with no new request also
// cut short their waits on a backend that went out.

// trialTimeout is how long a claimed trial request may go without an outcome: a connect, the wait
// for a response head, and a margin.
func trialTimeout(c *config.Config) time.Duration {
	connect, backend := c.Proxy.ConnectTimeout, c.Proxy.BackendTimeout
	if connect <= 0 {
		connect = 5 * time.Second
	}
	if backend <= 0 {
		backend = 60 * time.Second
	}
	return connect + backend + 5*time.Second
}

// monitorSets are the sets of the region's generation in force (their backends' health slots
// included), with the health policy the control plane gave each, and the TLS of each backend's
// probes.
func (s *supervisor) monitorSets() []monitor.Set {
	out := make([]monitor.Set, 0, len(s.regionSets))
	for _, rs := range s.regionSets {
		ms := monitor.Set{Name: rs.Name}
		if set, err := backendset.FromProto(s.current[rs.Name].GetBackendSet()); err == nil {
			ms.Health = set.Health
		}
		loaded := s.probeTLSOf(rs.Name)
		for _, b := range rs.Backends {
			mb := monitor.Backend{ID: b.ID, Address: b.Address, Slot: b.HealthSlot, State: b.State}
			if b.TLS != nil {
				mb.TLS = probeConfig(b, loaded)
			}
			ms.Backends = append(ms.Backends, mb)
		}
		out = append(out, ms)
	}
	for name := range s.probeTLS {
		if _, ok := s.current[name]; !ok {
			delete(s.probeTLS, name)
		}
	}
	return out
}

// probeTLS is the TLS of one set's probes: its files as read for one version of the set.
type probeTLS struct {
	version string
	loaded  map[table.TLS]upstream.TLS
}

// probeTLSOf is the TLS of set name's probes, its files read again when its version changed (the
// version was accepted, so they were readable a moment ago). When they no longer are, the error is
// logged and the version before keeps its files.
func (s *supervisor) probeTLSOf(name string) map[table.TLS]upstream.TLS {
	vs := s.current[name]
	p, ok := s.probeTLS[name]
	if ok && p.version == vs.GetVersion() {
		return p.loaded
	}
	loaded, err := backendset.LoadTLS(vs.GetBackendSet())
	if err != nil {
		s.log.Error("cannot read the TLS files of a backend set for its health probes", "set", name, "version", vs.GetVersion(), "error", err)
		return p.loaded
	}
	if s.probeTLS == nil {
		s.probeTLS = make(map[string]probeTLS)
	}
	s.probeTLS[name] = probeTLS{version: vs.GetVersion(), loaded: loaded}
	return loaded
}

// probeConfig is the tls.Config of the probes of backend b with its set's files loaded; when they
// are not, failedTLS: its probes fail rather than go in clear text.
func probeConfig(b shm.Backend, loaded map[table.TLS]upstream.TLS) *tls.Config {
	u, ok := loaded[table.TLS(*b.TLS)]
	if ok {
		if c, err := backendset.ProbeConfig(u, b.Address); err == nil {
			return c
		}
	}
	return failedTLS
}

// failedTLS is the TLS of a probe whose files could not be read: every handshake fails.
var failedTLS = &tls.Config{ServerName: "unknown", GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return nil, errors.New("the TLS files of this backend could not be read")
}, VerifyConnection: func(tls.ConnectionState) error {
	return errors.New("the TLS files of this backend could not be read (see the supervisor's log)")
}}

// updateMonitor hands the monitor the sets in force. It returns once the monitor has them: the
// region may give a slot of a removed backend to another at the next publish.
func (s *supervisor) updateMonitor() {
	if s.monitor != nil {
		s.monitor.Update(context.Background(), s.monitorSets())
	}
}

// regionSetsIn reads the sets of the region's generation in force, with their health slots.
func regionSetsIn(r *shm.Region) ([]shm.Set, error) {
	snap, err := r.Read()
	if errors.Is(err, shm.ErrEmpty) {
		return nil, nil
	}
	return snap.Sets, err
}

// readHealthPipe tells the monitor of each byte a worker writes on the health pipe, until the pipe
// is closed.
func readHealthPipe(r *os.File, m *monitor.Monitor) {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m.Notify()
		}
		if err != nil {
			return
		}
	}
}

// healthStates maps the monitor's statuses to the wire's.
var healthStates = map[health.Status]loadv1.HealthState{
	health.Healthy:      loadv1.HealthState_HEALTH_STATE_HEALTHY,
	health.Ejected:      loadv1.HealthState_HEALTH_STATE_EJECTED,
	health.Recovering:   loadv1.HealthState_HEALTH_STATE_RECOVERING,
	health.Trial:        loadv1.HealthState_HEALTH_STATE_TRIAL,
	health.SlowStarting: loadv1.HealthState_HEALTH_STATE_SLOW_START,
}

// backendHealth is the wire form of a monitor's status: every backend by set and id. The control
// plane's states win: a draining or disabled backend is that, whatever its health, and its reason
// says both.
func backendHealth(st monitor.Status) []*loadv1.BackendHealth {
	var out []*loadv1.BackendHealth
	ts := func(t time.Time) *timestamppb.Timestamp {
		if t.IsZero() {
			return nil
		}
		return timestamppb.New(t)
	}
	for _, set := range st.Sets {
		for _, b := range set.Backend {
			h := &loadv1.BackendHealth{BackendSet: set.Name, BackendId: b.ID, Address: b.Address, State: healthStates[b.Machine.Status],
				Routed: !b.Route.Out, Panic: b.Route.Panic, Reason: b.Reason, Ejections: uint32(b.Machine.Ejections),
				Since: ts(b.Machine.Since), WeightPercent: uint32((b.Route.WeightPermille + 5) / 10)}
			if s := b.Machine.Status; s == health.Ejected || s == health.SlowStarting {
				h.Until = ts(b.Machine.Until)
			}
			switch b.State {
			case table.Draining:
				h.State, h.Reason = loadv1.HealthState_HEALTH_STATE_DRAINING, "draining (the control plane's state); its health: "+b.Reason
			case table.Disabled:
				h.State, h.Reason = loadv1.HealthState_HEALTH_STATE_DISABLED, "disabled (the control plane's state); its health: "+b.Reason
			}
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b *loadv1.BackendHealth) int {
		if a.BackendSet != b.BackendSet {
			return cmp.Compare(a.BackendSet, b.BackendSet)
		}
		return cmp.Compare(a.BackendId, b.BackendId)
	})
	return out
}
