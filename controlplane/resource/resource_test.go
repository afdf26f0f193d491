package resource

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

func valid() *discoveryv1.BackendSet {
	return &discoveryv1.BackendSet{Name: "web", Backends: []*discoveryv1.Backend{
		{Id: "a", Address: "10.0.0.1", Port: 80, Weight: 2},
		{Id: "b:1", Address: "backend.example", Port: 8080, State: discoveryv1.BackendState_BACKEND_STATE_DRAINING},
		{Id: "c", Address: "::1", Port: 1},
	}}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// healthy is valid() with every health field set.
func healthy() *discoveryv1.BackendSet {
	s := valid()
	s.HealthCheck = &discoveryv1.HealthCheck{Interval: dur(time.Second), Timeout: dur(500 * time.Millisecond), Fall: 2, Rise: 3,
		Probe: &discoveryv1.HealthCheck_Http{Http: &discoveryv1.HttpProbe{Path: "/healthz?x=1", Host: "web.example:8080",
			ExpectedStatuses: []*discoveryv1.StatusRange{{Start: 200}, {Start: 300, End: 399}}}}}
	s.OutlierDetection = &discoveryv1.OutlierDetection{ConsecutiveFailures: 3, BaseEjectionTime: dur(10 * time.Second),
		MaxEjectionTime: dur(time.Minute), MaxEjectionPercent: 100, FailureStatuses: discoveryv1.FailureStatuses_FAILURE_STATUSES_GATEWAY}
	s.SlowStart = &discoveryv1.SlowStart{Window: dur(30 * time.Second), MinWeightPercent: 25}
	s.PanicThreshold = 40
	return s
}

func TestValidate(t *testing.T) {
	if err := Validate("backend_set", valid()); err != nil {
		t.Fatalf("a valid set: %v", err)
	}
	if err := Validate("backend_set", healthy()); err != nil {
		t.Fatalf("a valid set with health: %v", err)
	}
	tests := []struct {
		name string
		edit func(*discoveryv1.BackendSet)
		want string
	}{
		{"no set", nil, "backend_set: required"},
		{"no name", func(s *discoveryv1.BackendSet) { s.Name = "" }, "backend_set.name: required"},
		{"name with a space", func(s *discoveryv1.BackendSet) { s.Name = "a b" }, `backend_set.name: "a b": want letters`},
		{"long name", func(s *discoveryv1.BackendSet) { s.Name = strings.Repeat("n", 129) }, "backend_set.name: 129 bytes, at most 128"},
		{"unknown policy", func(s *discoveryv1.BackendSet) { s.Policy = 9 }, "backend_set.policy: unknown policy 9"},
		{"no id", func(s *discoveryv1.BackendSet) { s.Backends[1].Id = "" }, "backend_set.backends[1].id: required"},
		{"id twice", func(s *discoveryv1.BackendSet) { s.Backends[2].Id = "a" }, `backend_set.backends[2].id: "a" is also the id of backend_set.backends[0]`},
		{"address with a port", func(s *discoveryv1.BackendSet) { s.Backends[0].Address = "10.0.0.1:80" }, "backend_set.backends[0].address: \"10.0.0.1:80\": want an IP address or a host name"},
		{"address not a host", func(s *discoveryv1.BackendSet) { s.Backends[0].Address = "bad_host" }, "backend_set.backends[0].address: \"bad_host\": want an IP address or a host name"},
		{"no address", func(s *discoveryv1.BackendSet) { s.Backends[0].Address = "" }, "backend_set.backends[0].address: required"},
		{"port 0", func(s *discoveryv1.BackendSet) { s.Backends[0].Port = 0 }, "backend_set.backends[0].port: want 1 to 65535, got 0"},
		{"port too large", func(s *discoveryv1.BackendSet) { s.Backends[0].Port = 70000 }, "backend_set.backends[0].port: want 1 to 65535, got 70000"},
		{"weight too large", func(s *discoveryv1.BackendSet) { s.Backends[0].Weight = 2_000_000 }, "backend_set.backends[0].weight: want 0 (meaning 1) to 1000000"},
		{"unknown state", func(s *discoveryv1.BackendSet) { s.Backends[0].State = 7 }, "backend_set.backends[0].state: unknown state 7"},
		{"empty metadata key", func(s *discoveryv1.BackendSet) { s.Backends[0].Metadata = map[string]string{"": "x"} }, "backend_set.backends[0].metadata: key"},
		{"probe interval too short", func(s *discoveryv1.BackendSet) {
			s.HealthCheck = &discoveryv1.HealthCheck{Interval: dur(time.Millisecond)}
		},
			"backend_set.health_check.interval: want 0 (the default) or 10ms to 1h0m0s, got 1ms"},
		{"probe timeout past the interval", func(s *discoveryv1.BackendSet) {
			s.HealthCheck = &discoveryv1.HealthCheck{Interval: dur(time.Second), Timeout: dur(2 * time.Second)}
		}, "backend_set.health_check.timeout: 2s is longer than the interval (1s)"},
		{"probe timeout past the default interval", func(s *discoveryv1.BackendSet) {
			s.HealthCheck = &discoveryv1.HealthCheck{Timeout: dur(3 * time.Second)}
		},
			"backend_set.health_check.timeout: 3s is longer than the interval (2s)"},
		{"negative duration", func(s *discoveryv1.BackendSet) {
			s.HealthCheck = &discoveryv1.HealthCheck{Interval: &durationpb.Duration{Seconds: -1}}
		}, "backend_set.health_check.interval: want 0 (the default) or 10ms"},
		{"fall too large", func(s *discoveryv1.BackendSet) { s.HealthCheck = &discoveryv1.HealthCheck{Fall: 256} },
			"backend_set.health_check.fall: want 0 (the default) to 255, got 256"},
		{"path without a slash", func(s *discoveryv1.BackendSet) { s.HealthCheck.GetHttp().Path = "healthz" },
			`backend_set.health_check.http.path: "healthz": want / and up to 1024 bytes`},
		{"path with a space", func(s *discoveryv1.BackendSet) { s.HealthCheck.GetHttp().Path = "/a b" }, `backend_set.health_check.http.path: "/a b"`},
		{"host with a newline", func(s *discoveryv1.BackendSet) { s.HealthCheck.GetHttp().Host = "a\r\nX: y" }, `backend_set.health_check.http.host: "a\r\nX: y"`},
		{"status range backwards", func(s *discoveryv1.BackendSet) {
			s.HealthCheck.GetHttp().ExpectedStatuses = []*discoveryv1.StatusRange{{Start: 200}, {Start: 400, End: 300}}
		}, "backend_set.health_check.http.expected_statuses[1]: want 100 <= start <= end <= 599, got 400 to 300"},
		{"status 600", func(s *discoveryv1.BackendSet) {
			s.HealthCheck.GetHttp().ExpectedStatuses = []*discoveryv1.StatusRange{{Start: 600}}
		},
			"backend_set.health_check.http.expected_statuses[0]"},
		{"consecutive failures too many", func(s *discoveryv1.BackendSet) { s.OutlierDetection.ConsecutiveFailures = 1000 },
			"backend_set.outlier_detection.consecutive_failures: want 0 (the default) to 255, got 1000"},
		{"max ejection time below the base", func(s *discoveryv1.BackendSet) { s.OutlierDetection.MaxEjectionTime = dur(time.Second) },
			"backend_set.outlier_detection.max_ejection_time: 1s is shorter than base_ejection_time (10s)"},
		{"ejection percent over 100", func(s *discoveryv1.BackendSet) { s.OutlierDetection.MaxEjectionPercent = 101 },
			"backend_set.outlier_detection.max_ejection_percent: want 0 (the default) to 100, got 101"},
		{"unknown failure statuses", func(s *discoveryv1.BackendSet) { s.OutlierDetection.FailureStatuses = 9 },
			"backend_set.outlier_detection.failure_statuses: unknown value 9"},
		{"slow start without a window", func(s *discoveryv1.BackendSet) { s.SlowStart.Window = nil }, "backend_set.slow_start.window: required"},
		{"slow start too short", func(s *discoveryv1.BackendSet) { s.SlowStart.Window = dur(time.Millisecond) },
			"backend_set.slow_start.window: want 1s to 1h0m0s, got 1ms"},
		{"panic over 100", func(s *discoveryv1.BackendSet) { s.PanicThreshold = 150 }, "backend_set.panic_threshold: want 0 (the default) to 100, got 150"},
		{"encoding too large", func(s *discoveryv1.BackendSet) {
			// Every field within its bound: 300 backends of 64 metadata values of 1 KiB.
			s.Backends = nil
			for i := range 300 {
				md := map[string]string{}
				for k := range MetadataMax {
					md[fmt.Sprint("k", k)] = strings.Repeat("v", MetadataValueMax)
				}
				s.Backends = append(s.Backends, &discoveryv1.Backend{Id: fmt.Sprint("b", i), Address: "10.0.0.1", Port: 80, Metadata: md})
			}
		}, "backend_set: encoded in 19875586 bytes, at most 16777216 (16 MiB)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s *discoveryv1.BackendSet
			if tt.edit != nil {
				s = healthy()
				tt.edit(s)
			}
			err := Validate("backend_set", s)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error starting %q", err, tt.want)
			}
		})
	}
}

// TestValidateNamesTheOther: the error of a duplicate id names the first backend with it, in the
// message and as a field path of its own, for the configuration file to say where that one is.
func TestValidateNamesTheOther(t *testing.T) {
	s := valid()
	s.Backends[2].Id = s.Backends[0].Id
	err := Validate("backend_sets[3]", s)
	want := &Error{Field: "backend_sets[3].backends[2].id", Msg: `"a" is also the id of backend_sets[3].backends[0]`, Other: "backend_sets[3].backends[0].id"}
	if e, ok := err.(*Error); !ok || *e != *want {
		t.Fatalf("Validate = %#v, want %#v", err, want)
	}
}

// TestVersion: equal sets have equal versions, any change makes another, and the version does not
// depend on the order a map was filled in.
func TestVersion(t *testing.T) {
	a, b := valid(), valid()
	if Version(a) != Version(b) || len(Version(a)) != 32 {
		t.Fatalf("versions %s and %s of equal sets", Version(a), Version(b))
	}
	b.Backends[0].Weight = 3
	if Version(a) == Version(b) {
		t.Fatal("a change of weight kept the version")
	}
	a.Backends[0].Metadata = map[string]string{"x": "1", "y": "2", "z": "3"}
	c := valid()
	c.Backends[0].Metadata = map[string]string{"z": "3", "y": "2", "x": "1"}
	if Version(a) != Version(c) {
		t.Fatal("the version depends on map order")
	}
}

// withTLS is valid() with every tls field set, on the set and on backend 1.
func withTLS() *discoveryv1.BackendSet {
	s := valid()
	s.Tls = &discoveryv1.BackendTls{ServerName: "web.internal", CaFile: "/etc/xlb/backend-ca.pem",
		ClientCertFile: "/etc/xlb/client.pem", ClientKeyFile: "/etc/xlb/client-key.pem", MinVersion: "1.3",
		SessionResumption: discoveryv1.SessionResumption_SESSION_RESUMPTION_OFF}
	s.Backends[1].Tls = &discoveryv1.BackendTls{ServerName: "10.0.0.2", MinVersion: "1.2", InsecureSkipVerify: true}
	return s
}

func TestValidateTLS(t *testing.T) {
	if err := Validate("backend_set", withTLS()); err != nil {
		t.Fatalf("a valid set with tls: %v", err)
	}
	empty := valid()
	empty.Tls = &discoveryv1.BackendTls{} // every default: the backend's address, system roots, 1.2, resumption
	if err := Validate("backend_set", empty); err != nil {
		t.Fatalf("a set with an empty tls: %v", err)
	}
	tests := []struct {
		name string
		edit func(*discoveryv1.BackendSet)
		want string
	}{
		{"server name with a port", func(s *discoveryv1.BackendSet) { s.Tls.ServerName = "web.internal:443" },
			`backend_set.tls.server_name: "web.internal:443": want an IP address or a host name`},
		{"server name too long", func(s *discoveryv1.BackendSet) { s.Tls.ServerName = strings.Repeat("a", 254) },
			"backend_set.tls.server_name: 254 bytes, at most 253"},
		{"relative ca file", func(s *discoveryv1.BackendSet) { s.Tls.CaFile = "certs/ca.pem" },
			`backend_set.tls.ca_file: "certs/ca.pem": want an absolute path`},
		{"relative client cert", func(s *discoveryv1.BackendSet) { s.Tls.ClientCertFile = "client.pem" },
			`backend_set.tls.client_cert_file: "client.pem": want an absolute path`},
		{"relative client key", func(s *discoveryv1.BackendSet) { s.Tls.ClientKeyFile = "./key.pem" },
			`backend_set.tls.client_key_file: "./key.pem": want an absolute path`},
		{"path with a NUL", func(s *discoveryv1.BackendSet) { s.Tls.CaFile = "/etc/ca\x00.pem" },
			`backend_set.tls.ca_file: "/etc/ca\x00.pem": a path cannot hold a NUL byte`},
		{"path too long", func(s *discoveryv1.BackendSet) { s.Tls.CaFile = "/" + strings.Repeat("d", PathBytesMax) },
			"backend_set.tls.ca_file: 4097 bytes, at most 4096"},
		{"cert without a key", func(s *discoveryv1.BackendSet) { s.Tls.ClientKeyFile = "" },
			"backend_set.tls.client_key_file: required with client_cert_file: both or neither"},
		{"key without a cert", func(s *discoveryv1.BackendSet) { s.Tls.ClientCertFile = "" },
			"backend_set.tls.client_cert_file: required with client_key_file: both or neither"},
		{"min version 1.1", func(s *discoveryv1.BackendSet) { s.Tls.MinVersion = "1.1" },
			`backend_set.tls.min_version: "1.1": want "1.2", "1.3" or empty`},
		{"min version spelt TLS1.3", func(s *discoveryv1.BackendSet) { s.Tls.MinVersion = "TLSv1.3" },
			`backend_set.tls.min_version: "TLSv1.3": want "1.2", "1.3"`},
		{"insecure with a ca file", func(s *discoveryv1.BackendSet) { s.Tls.InsecureSkipVerify = true },
			"backend_set.tls.insecure_skip_verify: set with ca_file"},
		{"unknown session resumption", func(s *discoveryv1.BackendSet) { s.Tls.SessionResumption = 5 },
			"backend_set.tls.session_resumption: unknown value 5"},
		{"a backend's tls is checked too", func(s *discoveryv1.BackendSet) { s.Backends[1].Tls.ClientKeyFile = "/k.pem" },
			"backend_set.backends[1].tls.client_cert_file: required with client_key_file"},
		{"a backend's server name", func(s *discoveryv1.BackendSet) { s.Backends[1].Tls.ServerName = "a b" },
			`backend_set.backends[1].tls.server_name: "a b"`},
		{"a backend's min version", func(s *discoveryv1.BackendSet) { s.Backends[1].Tls.MinVersion = "1.0" },
			`backend_set.backends[1].tls.min_version: "1.0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := withTLS()
			tt.edit(s)
			err := Validate("backend_set", s)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error starting %q", err, tt.want)
			}
		})
	}
}

// TestTLSFor: a backend's own tls replaces the set's whole; without one it has the set's.
func TestTLSFor(t *testing.T) {
	s := withTLS()
	if got := TLSFor(s, s.Backends[0]); got != s.Tls {
		t.Fatalf("backend 0 (no tls of its own): got %v, want the set's", got)
	}
	if got := TLSFor(s, s.Backends[1]); got != s.Backends[1].Tls || got.GetCaFile() != "" {
		t.Fatalf("backend 1: got %v, want its own, with no ca_file from the set", got)
	}
	plain := valid()
	if got := TLSFor(plain, plain.Backends[0]); got != nil {
		t.Fatalf("no tls anywhere: got %v, want nil", got)
	}
}
