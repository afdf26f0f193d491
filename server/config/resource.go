package config

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/table"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// Resource is a set of the configuration file as the control plane holds it.
func Resource(s table.Set) (*discoveryv1.BackendSet, error) {
	m := &discoveryv1.BackendSet{Name: s.Name, Policy: discoveryv1.Policy_POLICY_ROUND_ROBIN}
	if s.Policy == balance.LeastRequest {
		m.Policy = discoveryv1.Policy_POLICY_LEAST_REQUEST
	}
	for _, b := range s.Backends {
		host, port, err := net.SplitHostPort(b.Address)
		if err != nil {
			return nil, fmt.Errorf("backend %s: %w", b.ID, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("backend %s: port %q: %w", b.ID, port, err)
		}
		rb := &discoveryv1.Backend{Id: b.ID, Address: host, Port: uint32(p), Weight: uint32(b.Weight)}
		switch b.State {
		case table.Draining:
			rb.State = discoveryv1.BackendState_BACKEND_STATE_DRAINING
		case table.Disabled:
			rb.State = discoveryv1.BackendState_BACKEND_STATE_DISABLED
		}
		m.Backends = append(m.Backends, rb)
	}
	healthResource(s.Health, m)
	return m, nil
}

// healthResource puts c, the health policy of a set of the configuration file, into m as the
// control plane holds it.
func healthResource(c health.Config, m *discoveryv1.BackendSet) {
	dur := func(d time.Duration) *durationpb.Duration {
		if d == 0 {
			return nil
		}
		return durationpb.New(d)
	}
	if p := c.Probe; p.Kind != health.ProbeNone {
		hc := &discoveryv1.HealthCheck{Interval: dur(p.Interval), Timeout: dur(p.Timeout), Fall: uint32(p.Fall), Rise: uint32(p.Rise)}
		if p.Kind == health.ProbeTCP {
			hc.Probe = &discoveryv1.HealthCheck_Tcp{Tcp: &discoveryv1.TcpProbe{}}
		} else {
			h := &discoveryv1.HttpProbe{Path: p.Path, Host: p.Host}
			for _, r := range p.Statuses {
				h.ExpectedStatuses = append(h.ExpectedStatuses, &discoveryv1.StatusRange{Start: uint32(r.Lo), End: uint32(r.Hi)})
			}
			hc.Probe = &discoveryv1.HealthCheck_Http{Http: h}
		}
		m.HealthCheck = hc
	}
	if o := c.Outlier; o != (health.Outlier{}) {
		od := &discoveryv1.OutlierDetection{Disabled: o.Disabled, ConsecutiveFailures: uint32(o.ConsecutiveFailures),
			BaseEjectionTime: dur(o.BaseEjectionTime), MaxEjectionTime: dur(o.MaxEjectionTime), MaxEjectionPercent: uint32(o.MaxEjectionPercent)}
		switch o.FailureStatuses {
		case health.FailGateway:
			od.FailureStatuses = discoveryv1.FailureStatuses_FAILURE_STATUSES_GATEWAY
		case health.Fail5xx:
			od.FailureStatuses = discoveryv1.FailureStatuses_FAILURE_STATUSES_5XX
		}
		m.OutlierDetection = od
	}
	if s := c.SlowStart; s.Window > 0 || s.MinWeightPercent > 0 {
		m.SlowStart = &discoveryv1.SlowStart{Window: dur(s.Window), MinWeightPercent: uint32(s.MinWeightPercent)}
	}
	m.PanicThreshold = uint32(c.PanicThreshold)
}
