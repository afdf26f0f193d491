package server

import (
	"reflect"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/server/config"
)

// TestHealthResourceRoundTrip: a set's health policy from the file reaches the monitor unchanged
// through the embedded control plane's form, and that form passes the control plane's checks.
func TestHealthResourceRoundTrip(t *testing.T) {
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
		m, err := config.Resource(set)
		if err != nil {
			t.Fatalf("%d: config.Resource: %v", i, err)
		}
		if err := resource.Validate("backend_set", m); err != nil {
			t.Errorf("%d: Validate: %v", i, err)
		}
		if got := healthConfigOf(m); !reflect.DeepEqual(got, c) {
			t.Errorf("%d: round trip:\n got %+v\nwant %+v", i, got, c)
		}
	}
}
