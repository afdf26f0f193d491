package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/server/backendset"
)

// sampleFile is the file of the issue that introduced the format; it must keep working.
func sampleFile(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile("testdata/xlb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// sampleWant is what sampleFile parses to.
func sampleWant() Config {
	return Config{
		Listeners: []Listener{{Address: "127.0.0.1:8080", BackendSet: "web"}},
		BackendSets: []table.Set{{
			Name:   "web",
			Policy: balance.RoundRobin,
			Backends: []table.Backend{
				{ID: "a", Address: "127.0.0.1:9001", Weight: 1},
				{ID: "b", Address: "127.0.0.1:9002", Weight: 3},
			},
		}},
		Proxy: proxy.Config{
			ConnectTimeout:       5 * time.Second,
			BackendTimeout:       60 * time.Second,
			ClientTimeout:        60 * time.Second,
			IdleTimeout:          60 * time.Second,
			RequestLineBytesMax:  8192,
			HeaderBytesMax:       32768,
			HeadersMax:           100,
			Retries:              2,
			ReplayBufferBytesMax: 65536,
			IdleConnsPerBackend:  256,
			Forwarded:            proxy.ForwardedAppend,
		},
		AccessLog:       "/var/log/xlb/access.jsonl",
		ShutdownTimeout: 30 * time.Second,
		Log:             LogConfig{Level: hclog.Info},
	}
}

func TestParseConfigSample(t *testing.T) {
	got, err := Parse("xlb.yaml", []byte(sampleFile(t)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if want := sampleWant(); !reflect.DeepEqual(got, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", got, want)
	}
	loaded, err := Load("testdata/xlb.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(loaded, got) {
		t.Errorf("Load and Parse differ:\n%+v\n%+v", loaded, got)
	}
}

// TestParseConfigHelpSample keeps the file shown by `xlb run --help` valid.
func TestParseConfigHelpSample(t *testing.T) {
	if _, err := Parse("help", []byte(Sample)); err != nil {
		t.Fatal(err)
	}
}

const minimal = `listeners:
  - address: 127.0.0.1:8080
    backend_set: web
backend_sets:
  - name: web
    backends:
      - {id: a, address: 127.0.0.1:9001}
`

func TestParseConfigValues(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want func(*Config)
	}{
		{"minimal: every default", minimal, func(c *Config) {}},
		{"retries 0 is no retry", minimal + "retries: 0\n", func(c *Config) { c.Proxy.Retries = -1 }},
		{"retries 5", minimal + "retries: 5\n", func(c *Config) { c.Proxy.Retries = 5 }},
		{"least_request", strings.Replace(minimal, "  - name: web\n", "  - name: web\n    policy: least_request\n", 1),
			func(c *Config) { c.BackendSets[0].Policy = balance.LeastRequest }},
		{"maglev on a header", strings.Replace(minimal, "  - name: web\n", "  - name: web\n    policy: maglev\n    hash_on: {header: X-User}\n", 1),
			func(c *Config) {
				c.BackendSets[0].Policy = balance.MaglevHash
				c.BackendSets[0].Hash = table.HashOn{Kind: table.HashHeader, Name: "X-User"}
			}},
		{"maglev on a cookie", strings.Replace(minimal, "  - name: web\n", "  - name: web\n    policy: maglev\n    hash_on: {cookie: sid}\n", 1),
			func(c *Config) {
				c.BackendSets[0].Policy = balance.MaglevHash
				c.BackendSets[0].Hash = table.HashOn{Kind: table.HashCookie, Name: "sid"}
			}},
		{"maglev on the client address", strings.Replace(minimal, "  - name: web\n", "  - name: web\n    policy: maglev\n    hash_on: client_address\n", 1),
			func(c *Config) {
				c.BackendSets[0].Policy = balance.MaglevHash
				c.BackendSets[0].Hash = table.HashOn{Kind: table.HashClientAddress}
			}},
		{"sticky with the defaults", strings.Replace(minimal, "  - name: web\n", "  - name: web\n    sticky: {}\n", 1),
			func(c *Config) { c.BackendSets[0].Sticky = &table.Sticky{CookieName: "xlb_backend", Path: "/"} }},
		{"sticky with every key", strings.Replace(minimal, "  - name: web\n",
			"  - name: web\n    sticky: {cookie_name: SRV, path: /app, max_age: 1h, same_site: none, http_only: false}\n", 1),
			func(c *Config) {
				c.BackendSets[0].Sticky = &table.Sticky{CookieName: "SRV", Path: "/app", MaxAge: time.Hour, SameSite: table.SameSiteNone, NoHTTPOnly: true}
			}},
		{"sticky key file", minimal + "sticky_key_file: /etc/xlb/sticky-keys\n", func(c *Config) { c.StickyKeyFile = "/etc/xlb/sticky-keys" }},
		{"forwarded off", minimal + "forwarded: off\n", func(c *Config) { c.Proxy.Forwarded = proxy.ForwardedOff }},
		{"forwarded replace", minimal + "forwarded: replace\n", func(c *Config) { c.Proxy.Forwarded = proxy.ForwardedReplace }},
		{"trusted proxies", minimal + "trusted_proxies: [10.1.2.0/16, 192.0.2.7, \"::1\", \"2001:db8::/32\"]\n", func(c *Config) {
			c.Proxy.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.0.2.7/32"),
				netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("2001:db8::/32")}
		}},
		{"forwarded field", minimal + "forwarded_field: true\n", func(c *Config) { c.Proxy.ForwardedField = true }},
		{"upgrade protocols", minimal + "upgrade_protocols: [websocket, h2c]\n", func(c *Config) { c.Proxy.UpgradeProtocols = []string{"websocket", "h2c"} }},
		{"no upgrades", minimal + "upgrade_protocols: []\n", func(c *Config) { c.Proxy.UpgradeProtocols = []string{} }},
		{"access log on stdout", minimal + "access_log: \"-\"\n", func(c *Config) { c.AccessLog = "-" }},
		{"log json debug", minimal + "log: {level: debug, format: json}\n", func(c *Config) { c.Log = LogConfig{Level: hclog.Debug, JSON: true} }},
		{"some timeouts", minimal + "timeouts: {idle: 90s, shutdown: 1m30s}\n", func(c *Config) {
			c.Proxy.IdleTimeout = 90 * time.Second
			c.ShutdownTimeout = 90 * time.Second
		}},
		{"empty sections take defaults", minimal + "timeouts:\nlimits:\nlog:\nretries:\n", func(c *Config) {}},
		{"hex and underscores in integers", minimal + "limits: {header_bytes: 0x8000, replay_buffer_bytes: 1_000}\n", func(c *Config) {
			c.Proxy.HeaderBytesMax = 0x8000
			c.Proxy.ReplayBufferBytesMax = 1000
		}},
		{"an alias", strings.Replace(minimal, "    backends:\n", "    backends: &b\n", 1) + "  - {name: copy, backends: *b}\n", func(c *Config) {
			c.BackendSets = append(c.BackendSets, table.Set{Name: "copy", Backends: c.BackendSets[0].Backends})
		}},
		{"numeric id is its text", strings.Replace(minimal, "id: a", "id: 7", 1), func(c *Config) { c.BackendSets[0].Backends[0].ID = "7" }},
		{"port 0 twice is two listeners", `listeners:
  - {address: "127.0.0.1:0", backend_set: web}
  - {address: "127.0.0.1:0", backend_set: web}
backend_sets: [{name: web, backends: []}]
`, func(c *Config) {
			c.Listeners = []Listener{{Address: "127.0.0.1:0", BackendSet: "web"}, {Address: "127.0.0.1:0", BackendSet: "web"}}
			c.BackendSets = []table.Set{{Name: "web"}}
		}},
		{"backend states", strings.Replace(minimal, "9001}", "9001, state: draining}\n      - {id: b, address: 127.0.0.1:9002, state: disabled}\n      - {id: c, address: 127.0.0.1:9003, state: active}", 1), func(c *Config) {
			c.BackendSets[0].Backends = []table.Backend{
				{ID: "a", Address: "127.0.0.1:9001", Weight: 1, State: table.Draining},
				{ID: "b", Address: "127.0.0.1:9002", Weight: 1, State: table.Disabled},
				{ID: "c", Address: "127.0.0.1:9003", Weight: 1, State: table.Active},
			}
		}},
		{"workers, state directory and region", minimal + "workers: 3\nstate_dir: /srv/xlb\nreuse_port: true\nmetrics_interval: 250ms\nregion: {sets: 8, backends: 100, string_bytes: 4096, workers: 16}\n", func(c *Config) {
			c.Workers, c.StateDir, c.ReusePort, c.MetricsInterval = 3, "/srv/xlb", true, 250*time.Millisecond
			c.Region = shm.Capacities{Sets: 8, Backends: 100, StringBytes: 4096, Workers: 16}
		}},
		{"every health key", minimal + `    health_check:
      interval: 500ms
      timeout: 200ms
      fall: 2
      rise: 4
      http: {path: /healthz, host: example.com, expected_statuses: [204, "200-299", 418]}
    outlier_detection:
      disabled: true
      consecutive_failures: 7
      base_ejection_time: 10s
      max_ejection_time: 1m
      max_ejection_percent: 100
      failure_statuses: gateway
    slow_start: {window: 20s, min_weight_percent: 25}
    panic_threshold: 40
`, func(c *Config) {
			c.BackendSets[0].FailureStatuses = health.FailGateway
			c.BackendSets[0].Health = health.Config{
				Probe: health.Probe{Kind: health.ProbeHTTP, Interval: 500 * time.Millisecond, Timeout: 200 * time.Millisecond, Fall: 2, Rise: 4,
					Path: "/healthz", Host: "example.com", Statuses: []health.StatusRange{{Lo: 204, Hi: 204}, {Lo: 200, Hi: 299}, {Lo: 418, Hi: 418}}},
				Outlier: health.Outlier{Disabled: true, ConsecutiveFailures: 7, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: time.Minute,
					MaxEjectionPercent: 100, FailureStatuses: health.FailGateway},
				SlowStart:      health.SlowStart{Window: 20 * time.Second, MinWeightPercent: 25},
				PanicThreshold: 40,
			}
		}},
		{"every tls key, the set's and a backend's own", strings.Replace(minimal, "9001}", "9001}\n      - {id: b, address: 127.0.0.1:9002, tls: {insecure_skip_verify: true}}", 1) + `    tls:
      server_name: web.internal
      ca_file: /etc/xlb/ca.pem
      client_cert_file: /etc/xlb/client.pem
      client_key_file: /etc/xlb/client-key.pem
      min_version: "1.3"
      session_resumption: false
`, func(c *Config) {
			set := &table.TLS{ServerName: "web.internal", CAFile: "/etc/xlb/ca.pem", ClientCertFile: "/etc/xlb/client.pem",
				ClientKeyFile: "/etc/xlb/client-key.pem", MinVersion: tls.VersionTLS13, NoResumption: true}
			c.BackendSets[0].TLS = set
			c.BackendSets[0].Backends[0].TLS = set
			c.BackendSets[0].Backends = append(c.BackendSets[0].Backends, table.Backend{ID: "b", Address: "127.0.0.1:9002", Weight: 1,
				TLS: &table.TLS{InsecureSkipVerify: true}})
		}},
		{"an empty tls is TLS with the defaults", minimal + "    tls: {min_version: \"1.2\", session_resumption: true}\n", func(c *Config) {
			c.BackendSets[0].TLS = &table.TLS{}
			c.BackendSets[0].Backends[0].TLS = &table.TLS{}
		}},
		{"an empty health_check is HTTP probes with defaults", minimal + "    health_check:\n", func(c *Config) {
			c.BackendSets[0].Health.Probe.Kind = health.ProbeHTTP
		}},
		{"tcp probes", minimal + "    health_check: {interval: 1s, tcp: {}}\n    outlier_detection: {failure_statuses: 5xx}\n", func(c *Config) {
			c.BackendSets[0].Health.Probe = health.Probe{Kind: health.ProbeTCP, Interval: time.Second}
			c.BackendSets[0].Health.Outlier.FailureStatuses = health.Fail5xx
			c.BackendSets[0].FailureStatuses = health.Fail5xx
		}},
		{"zeros mean the defaults, as on the wire", strings.Replace(minimal, "9001}", "9001, weight: 0}", 1) +
			"    health_check: {fall: 0, rise: 0}\n    outlier_detection: {consecutive_failures: 0, max_ejection_percent: 0}\n    slow_start: {window: 1m, min_weight_percent: 0}\n",
			func(c *Config) {
				c.BackendSets[0].Health.Probe.Kind = health.ProbeHTTP
				c.BackendSets[0].Health.SlowStart.Window = time.Minute
			}},
		{"a set with no listener", minimal + "  - name: spare\n", func(c *Config) {
			c.BackendSets = append(c.BackendSets, table.Set{Name: "spare"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := Config{
				Listeners: []Listener{{Address: "127.0.0.1:8080", BackendSet: "web"}},
				BackendSets: []table.Set{{Name: "web", Backends: []table.Backend{
					{ID: "a", Address: "127.0.0.1:9001", Weight: 1},
				}}},
			}
			tt.want(&want)
			got, err := Parse("xlb.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// edit returns the sample file with old replaced by new, once; it fails the test when old is not
// there, so that a case never tests the unedited file by mistake.
func edit(t *testing.T, old, new string) string {
	t.Helper()
	s := sampleFile(t)
	if !strings.Contains(s, old) {
		t.Fatalf("the sample has no %q", old)
	}
	return strings.Replace(s, old, new, 1)
}

// health10 returns the sample file with keys added to its set after the backends, from line 10.
func health10(keys string) func(t *testing.T) string {
	return func(t *testing.T) string { return edit(t, "weight: 3}\n", "weight: 3}\n"+keys) }
}

// hasLine reports whether one line of err's message is want.
func hasLine(err error, want string) bool {
	for _, line := range strings.Split(err.Error(), "\n") {
		if line == want {
			return true
		}
	}
	return false
}

func TestParseConfigErrors(t *testing.T) {
	// Lines of the sample: 1 listeners, 2 its address, 3 its backend_set, 5 the set's name, 6 policy,
	// 8 and 9 the backends, 10 timeouts, 11 limits, 12 retries, 13 forwarded, 14 access_log, 15 log.
	tests := []struct {
		name string
		yaml func(t *testing.T) string
		// want are lines that the error must have, each exactly.
		want []string
	}{
		// The two examples of the issue, verbatim.
		{"weight not an integer", func(t *testing.T) string { return edit(t, "weight: 3}", "weight: x}") },
			[]string{`xlb.yaml:9: backend_sets[0].backends[1].weight: want an integer >= 0, got "x"`}},
		{"unknown listener key", func(t *testing.T) string {
			return edit(t, "  - address: 127.0.0.1:8080\n    backend_set: web", "  - backend_set: web\n    adress: 127.0.0.1:8080")
		}, []string{
			`xlb.yaml:3: listeners[0]: unknown key "adress"`,
			`xlb.yaml:2: listeners[0]: missing key "address"`,
		}},

		// Listeners.
		{"no listeners key", func(t *testing.T) string {
			return edit(t, "listeners:\n  - address: 127.0.0.1:8080\n    backend_set: web\n", "")
		},
			[]string{`xlb.yaml:1: missing key "listeners": want at least one listener`}},
		{"empty listeners", func(t *testing.T) string {
			return edit(t, "listeners:\n  - address: 127.0.0.1:8080\n    backend_set: web\n", "listeners: []\n\n\n")
		},
			[]string{`xlb.yaml:1: listeners: want at least one listener`}},
		{"listeners with nothing", func(t *testing.T) string {
			return edit(t, "listeners:\n  - address: 127.0.0.1:8080\n    backend_set: web\n", "listeners:\n\n\n")
		},
			[]string{`xlb.yaml:1: listeners: want at least one listener`}},
		{"listeners not a list", func(t *testing.T) string {
			return edit(t, "listeners:\n  - address: 127.0.0.1:8080\n    backend_set: web\n", "listeners: 127.0.0.1:8080\n\n\n")
		},
			[]string{`xlb.yaml:1: listeners: want a list, got "127.0.0.1:8080"`}},
		{"listener not a mapping", func(t *testing.T) string {
			return edit(t, "  - address: 127.0.0.1:8080\n    backend_set: web\n", "  - 127.0.0.1:8080\n\n")
		},
			[]string{`xlb.yaml:2: listeners[0]: want a mapping, got "127.0.0.1:8080"`}},
		{"listener address without port", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:8080", "address: 127.0.0.1") },
			[]string{`xlb.yaml:2: listeners[0].address: want host:port with a numeric port, got "127.0.0.1"`}},
		{"listener port not numeric", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:8080", "address: 127.0.0.1:http") },
			[]string{`xlb.yaml:2: listeners[0].address: want host:port with a numeric port, got "127.0.0.1:http"`}},
		{"listener port too large", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:8080", "address: 127.0.0.1:65536") },
			[]string{`xlb.yaml:2: listeners[0].address: want host:port with a numeric port, got "127.0.0.1:65536"`}},
		{"listener address empty", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:8080", "address:") },
			[]string{`xlb.yaml:2: listeners[0].address: missing value`}},
		{"listener without backend_set", func(t *testing.T) string { return edit(t, "    backend_set: web\n", "\n") },
			[]string{`xlb.yaml:2: listeners[0]: missing key "backend_set"`}},
		{"listener names no set", func(t *testing.T) string { return edit(t, "backend_set: web", "backend_set: webb") },
			[]string{`xlb.yaml:3: listeners[0].backend_set: no backend set named "webb"`}},
		{"duplicate listener addresses", func(t *testing.T) string {
			return edit(t, "    backend_set: web\n", "    backend_set: web\n  - {address: 127.0.0.1:8080, backend_set: web}\n")
		}, []string{`xlb.yaml:4: listeners[1].address: "127.0.0.1:8080" is also the address of listeners[0] (line 2)`}},
		{"duplicate listener addresses spelled apart", func(t *testing.T) string {
			return edit(t, "    backend_set: web\n", "    backend_set: web\n  - {address: \"127.0.0.1:08080\", backend_set: web}\n")
		}, []string{`xlb.yaml:4: listeners[1].address: "127.0.0.1:08080" is also the address of listeners[0] (line 2)`}},

		// Affinity: the form here, the control plane's rules with the line of their key.
		{"maglev without hash_on", func(t *testing.T) string { return edit(t, "policy: round_robin", "policy: maglev") },
			[]string{`xlb.yaml:5: backend_sets[0].hash_on: required with policy maglev: a header, a cookie or client_address`}},
		{"hash_on without maglev", func(t *testing.T) string {
			return edit(t, "policy: round_robin", "policy: round_robin\n    hash_on: {header: x}")
		}, []string{`xlb.yaml:7: backend_sets[0].hash_on: only with policy maglev (the policy is round_robin)`}},
		{"hash_on header not a token", func(t *testing.T) string {
			return edit(t, "policy: round_robin", "policy: maglev\n    hash_on: {header: \"x user\"}")
		}, []string{`xlb.yaml:7: backend_sets[0].hash_on.header: "x user": want a token (letters, digits and !#$%&'*+-.^_` + "`" + `|~)`}},
		{"hash_on two keys", func(t *testing.T) string {
			return edit(t, "policy: round_robin", "policy: maglev\n    hash_on: {header: x, cookie: y}")
		}, []string{`xlb.yaml:7: backend_sets[0].hash_on.cookie: hash_on takes one key: header, cookie or client_address`}},
		{"hash_on unknown key", func(t *testing.T) string {
			return edit(t, "policy: round_robin", "policy: maglev\n    hash_on: {query: x}")
		}, []string{`xlb.yaml:7: backend_sets[0].hash_on: unknown key "query"`}},
		{"sticky max age not whole seconds", func(t *testing.T) string {
			return edit(t, "policy: round_robin", "policy: round_robin\n    sticky:\n      max_age: 1500ms")
		}, []string{`xlb.yaml:8: backend_sets[0].sticky.max_age: want 0 (a session cookie) or whole seconds from 1s to 9600h0m0s (400 days), got 1.5s`}},
		{"sticky bad path", func(t *testing.T) string {
			return edit(t, "policy: round_robin", "policy: round_robin\n    sticky: {path: app}")
		}, []string{`xlb.yaml:7: backend_sets[0].sticky.path: "app": want / and up to 1024 bytes of visible ASCII without ';'`}},
		{"sticky unknown same site", func(t *testing.T) string {
			return edit(t, "policy: round_robin", "policy: round_robin\n    sticky: {same_site: loose}")
		}, []string{`xlb.yaml:7: backend_sets[0].sticky.same_site: want lax, strict or none (always Secure), got "loose"`}},
		{"sticky key file relative", func(t *testing.T) string { return sampleFile(t) + "sticky_key_file: keys\n" },
			[]string{`xlb.yaml:16: sticky_key_file: want an absolute path, got "keys"`}},

		// Backend sets.
		{"set name empty", func(t *testing.T) string { return edit(t, "name: web", `name: ""`) }, []string{
			`xlb.yaml:5: backend_sets[0].name: required`,
			`xlb.yaml:3: listeners[0].backend_set: no backend set named "web"`,
		}},
		{"set without name", func(t *testing.T) string { return edit(t, "  - name: web\n    policy", "  - policy") },
			[]string{`xlb.yaml:5: backend_sets[0]: missing key "name"`}},
		{"set names not unique", func(t *testing.T) string {
			return edit(t, "weight: 3}\n", "weight: 3}\n  - name: web\n    backends: []\n")
		}, []string{`xlb.yaml:10: backend_sets[1].name: "web" is also the name of backend_sets[0] (line 5)`}},
		// TLS, after the backends (line 10 on).
		{"tls ca_file relative", health10("    tls:\n      ca_file: ca.pem\n"),
			[]string{`xlb.yaml:11: backend_sets[0].tls.ca_file: "ca.pem": want an absolute path (a file on the data plane's machine)`}},
		{"tls min_version unknown", health10("    tls: {min_version: \"1.1\"}\n"),
			[]string{`xlb.yaml:10: backend_sets[0].tls.min_version: want "1.2" or "1.3", got "1.1"`}},
		{"tls key unknown", health10("    tls: {ca: /x}\n"),
			[]string{`xlb.yaml:10: backend_sets[0].tls: unknown key "ca"`}},
		{"tls session_resumption not a bool", health10("    tls: {session_resumption: on}\n"),
			[]string{`xlb.yaml:10: backend_sets[0].tls.session_resumption: want true or false, got "on"`}},
		{"a backend's tls with a key and no certificate", func(t *testing.T) string {
			return edit(t, "weight: 3}", "weight: 3,\n          tls: {client_key_file: /k.pem}}")
		}, []string{`xlb.yaml:10: backend_sets[0].backends[1].tls.client_cert_file: required with client_key_file: both or neither`}},
		{"tls insecure with a CA", health10("    tls:\n      ca_file: /ca.pem\n      insecure_skip_verify: true\n"),
			[]string{`xlb.yaml:12: backend_sets[0].tls.insecure_skip_verify: set with ca_file, which it would make unused: verify against ca_file, or skip verification, not both`}},
		// Health, added after the backends (line 10 on).
		{"probe timeout longer than interval", health10("    health_check:\n      interval: 1s\n      timeout: 2s\n"),
			[]string{`xlb.yaml:12: backend_sets[0].health_check.timeout: 2s is longer than the interval (1s)`}},
		{"probe timeout longer than the default interval", health10("    health_check: {timeout: 3s}\n"),
			[]string{`xlb.yaml:10: backend_sets[0].health_check.timeout: 3s is longer than the interval (2s)`}},
		{"probe interval too short", health10("    health_check:\n      interval: 1ms\n"),
			[]string{`xlb.yaml:11: backend_sets[0].health_check.interval: want 0 (the default) or 10ms to 1h0m0s, got 1ms`}},
		{"probe fall too large", health10("    health_check: {fall: 256}\n"),
			[]string{`xlb.yaml:10: backend_sets[0].health_check.fall: want 0 (the default) to 255, got 256`}},
		{"probe fall not a number", health10("    health_check: {fall: -1}\n"),
			[]string{`xlb.yaml:10: backend_sets[0].health_check.fall: want an integer >= 0, got "-1"`}},
		{"probe http and tcp", health10("    health_check:\n      http: {}\n      tcp: {}\n"),
			[]string{`xlb.yaml:12: backend_sets[0].health_check: give http or tcp, not both (the other is on line 11)`}},
		{"probe unknown key", health10("    health_check: {tcp: {port: 1}}\n"),
			[]string{`xlb.yaml:10: backend_sets[0].health_check.tcp: unknown key "port"`}},
		{"probe path relative", health10("    health_check:\n      http:\n        path: healthz\n"),
			[]string{`xlb.yaml:12: backend_sets[0].health_check.http.path: "healthz": want / and up to 1024 bytes of visible ASCII`}},
		{"probe status out of range", health10("    health_check:\n      http:\n        expected_statuses:\n          - 200\n          - 300-700\n"),
			[]string{`xlb.yaml:14: backend_sets[0].health_check.http.expected_statuses[1]: want 100 <= start <= end <= 599, got 300 to 700`}},
		{"probe status not a status", health10("    health_check:\n      http:\n        expected_statuses: [200, 2xx]\n"),
			[]string{`xlb.yaml:12: backend_sets[0].health_check.http.expected_statuses[1]: want a status such as 200 or a range such as "200-399", got "2xx"`}},
		{"failure statuses unknown", health10("    outlier_detection: {failure_statuses: 4xx}\n"),
			[]string{`xlb.yaml:10: backend_sets[0].outlier_detection.failure_statuses: want none, gateway (502, 503, 504) or 5xx, got "4xx"`}},
		{"max ejection time below base", health10("    outlier_detection:\n      base_ejection_time: 1m\n      max_ejection_time: 30s\n"),
			[]string{`xlb.yaml:12: backend_sets[0].outlier_detection.max_ejection_time: 30s is shorter than base_ejection_time (1m0s)`}},
		{"max ejection percent over 100", health10("    outlier_detection: {max_ejection_percent: 101}\n"),
			[]string{`xlb.yaml:10: backend_sets[0].outlier_detection.max_ejection_percent: want 0 (the default) to 100, got 101`}},
		{"slow start without window", health10("    slow_start: {min_weight_percent: 5}\n"),
			[]string{`xlb.yaml:10: backend_sets[0].slow_start: missing key "window"`}},
		{"slow start window too long", health10("    slow_start:\n      window: 2h\n"),
			[]string{`xlb.yaml:11: backend_sets[0].slow_start.window: want 1s to 1h0m0s, got 2h0m0s`}},
		{"panic threshold not a number", health10("    panic_threshold: half\n"),
			[]string{`xlb.yaml:10: backend_sets[0].panic_threshold: want an integer >= 0, got "half"`}},
		{"unknown policy", func(t *testing.T) string { return edit(t, "policy: round_robin", "policy: random") },
			[]string{`xlb.yaml:6: backend_sets[0].policy: want round_robin, least_request or maglev, got "random"`}},
		{"backends not a list", func(t *testing.T) string {
			return edit(t, "    backends:\n      - {id: a, address: 127.0.0.1:9001, weight: 1}\n      - {id: b, address: 127.0.0.1:9002, weight: 3}\n",
				"    backends: {a: 1}\n\n\n")
		}, []string{`xlb.yaml:7: backend_sets[0].backends: want a list, got a mapping`}},

		// Backends.
		{"backend ids not unique", func(t *testing.T) string { return edit(t, "id: b", "id: a") },
			[]string{`xlb.yaml:9: backend_sets[0].backends[1].id: "a" is also the id of backend_sets[0].backends[0] (line 8)`}},
		{"backend id empty", func(t *testing.T) string { return edit(t, "id: a", `id: ""`) },
			[]string{`xlb.yaml:8: backend_sets[0].backends[0].id: required`}},
		{"backend id not an id", func(t *testing.T) string { return edit(t, "id: a", `id: "a b"`) },
			[]string{`xlb.yaml:8: backend_sets[0].backends[0].id: "a b": want letters, digits and . _ : -`}},
		{"set name not a name", func(t *testing.T) string { return edit(t, "name: web", `name: "my web"`) },
			[]string{`xlb.yaml:5: backend_sets[0].name: "my web": want letters, digits and . _ -`}},
		{"backend without id", func(t *testing.T) string { return edit(t, "{id: a, ", "{") },
			[]string{`xlb.yaml:8: backend_sets[0].backends[0]: missing key "id"`}},
		{"backend without address", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:9001, ", "") },
			[]string{`xlb.yaml:8: backend_sets[0].backends[0]: missing key "address"`}},
		{"backend address without port", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:9001", "address: 127.0.0.1") },
			[]string{`xlb.yaml:8: backend_sets[0].backends[0].address: want host:port with a numeric port, got "127.0.0.1"`}},
		{"backend address without host", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:9001", `address: ":9001"`) },
			[]string{`xlb.yaml:8: backend_sets[0].backends[0].address: host of ":9001": required`}},
		{"backend host not a host", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:9001", "address: bad_host:9001") },
			[]string{`xlb.yaml:8: backend_sets[0].backends[0].address: host of "bad_host:9001": "bad_host": want an IP address or a host name`}},
		{"backend port not a number", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:9001", "address: 127.0.0.1:http") },
			[]string{`xlb.yaml:8: backend_sets[0].backends[0].address: want host:port with a numeric port, got "127.0.0.1:http"`}},
		{"backend port too large", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:9001", "address: 127.0.0.1:65536") },
			[]string{`xlb.yaml:8: backend_sets[0].backends[0].address: port of "127.0.0.1:65536": want 1 to 65535, got 65536`}},
		{"backend port 0", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:9001", "address: 127.0.0.1:0") },
			[]string{`xlb.yaml:8: backend_sets[0].backends[0].address: port of "127.0.0.1:0": want 1 to 65535, got 0`}},
		{"weight negative", func(t *testing.T) string { return edit(t, "weight: 3}", "weight: -1}") },
			[]string{`xlb.yaml:9: backend_sets[0].backends[1].weight: want an integer >= 0, got "-1"`}},
		{"weight too large", func(t *testing.T) string { return edit(t, "weight: 3}", "weight: 1000001}") },
			[]string{`xlb.yaml:9: backend_sets[0].backends[1].weight: want 0 (meaning 1) to 1000000, got 1000001`}},
		{"weight past 32 bits", func(t *testing.T) string { return edit(t, "weight: 3}", "weight: 99999999999}") },
			[]string{`xlb.yaml:9: backend_sets[0].backends[1].weight: want an integer <= 4294967295, got "99999999999"`}},
		{"weight a float", func(t *testing.T) string { return edit(t, "weight: 3}", "weight: 2.5}") },
			[]string{`xlb.yaml:9: backend_sets[0].backends[1].weight: want an integer >= 0, got "2.5"`}},
		{"weight a quoted string", func(t *testing.T) string { return edit(t, "weight: 3}", `weight: "3"}`) },
			[]string{`xlb.yaml:9: backend_sets[0].backends[1].weight: want an integer >= 0, got "3"`}},
		{"the first error of a set, by the control plane's order", func(t *testing.T) string {
			return edit(t, "weight: 3}", "weight: 3000000}\n      - {id: a, address: 127.0.0.1:9003}")
		}, []string{`xlb.yaml:9: backend_sets[0].backends[1].weight: want 0 (meaning 1) to 1000000, got 3000000`}},
		{"a second set is checked alone", func(t *testing.T) string {
			return edit(t, "weight: 3}\n", "weight: 3}\n  - name: api\n    backends: [{id: x, address: \"h:0\"}]\n")
		}, []string{`xlb.yaml:11: backend_sets[1].backends[0].address: port of "h:0": want 1 to 65535, got 0`}},
		{"workers 0", func(t *testing.T) string { return sampleFile(t) + "workers: 0\n" },
			[]string{`xlb.yaml:16: workers: want an integer >= 1, got "0"`}},
		{"region key unknown", func(t *testing.T) string { return sampleFile(t) + "region: {slots: 3}\n" },
			[]string{`xlb.yaml:16: region: unknown key "slots"`}},
		{"reuse_port yes", func(t *testing.T) string { return sampleFile(t) + "reuse_port: yes\n" },
			[]string{`xlb.yaml:16: reuse_port: want true or false, got "yes"`}},
		{"state_dir empty", func(t *testing.T) string { return sampleFile(t) + "state_dir: \"\"\n" },
			[]string{`xlb.yaml:16: state_dir: want a directory path, got ""`}},
		{"backend state in capitals", func(t *testing.T) string { return edit(t, "weight: 3}", "weight: 3, state: DRAINING}") },
			[]string{`xlb.yaml:9: backend_sets[0].backends[1].state: want active, draining or disabled, got "DRAINING"`}},

		// Timeouts.
		{"duration without unit", func(t *testing.T) string { return edit(t, "connect: 5s", "connect: 5") },
			[]string{`xlb.yaml:10: timeouts.connect: want a positive duration such as 5s or 1m30s, got "5"`}},
		{"duration zero", func(t *testing.T) string { return edit(t, "backend: 60s", "backend: 0s") },
			[]string{`xlb.yaml:10: timeouts.backend: want a positive duration such as 5s or 1m30s, got "0s"`}},
		{"duration negative", func(t *testing.T) string { return edit(t, "client: 60s", "client: -1s") },
			[]string{`xlb.yaml:10: timeouts.client: want a positive duration such as 5s or 1m30s, got "-1s"`}},
		{"duration nonsense", func(t *testing.T) string { return edit(t, "shutdown: 30s", "shutdown: soon") },
			[]string{`xlb.yaml:10: timeouts.shutdown: want a positive duration such as 5s or 1m30s, got "soon"`}},
		{"duration a list", func(t *testing.T) string { return edit(t, "idle: 60s", "idle: [60s]") },
			[]string{`xlb.yaml:10: timeouts.idle: want a positive duration such as 5s or 1m30s, got a list`}},
		{"timeouts not a mapping", func(t *testing.T) string {
			return edit(t, "timeouts: {connect: 5s, backend: 60s, client: 60s, idle: 60s, shutdown: 30s}", "timeouts: 5s")
		}, []string{`xlb.yaml:10: timeouts: want a mapping, got "5s"`}},

		// Limits.
		{"limit zero", func(t *testing.T) string { return edit(t, "headers: 100", "headers: 0") },
			[]string{`xlb.yaml:11: limits.headers: want an integer >= 1, got "0"`}},
		{"limit negative", func(t *testing.T) string { return edit(t, "header_bytes: 32768", "header_bytes: -1") },
			[]string{`xlb.yaml:11: limits.header_bytes: want an integer >= 1, got "-1"`}},
		{"limit not an integer", func(t *testing.T) string { return edit(t, "request_line_bytes: 8192", "request_line_bytes: 8k") },
			[]string{`xlb.yaml:11: limits.request_line_bytes: want an integer >= 1, got "8k"`}},
		{"limit too large", func(t *testing.T) string {
			return edit(t, "replay_buffer_bytes: 65536", "replay_buffer_bytes: 99999999999")
		},
			[]string{`xlb.yaml:11: limits.replay_buffer_bytes: want an integer <= 1073741824, got "99999999999"`}},
		{"idle conns zero", func(t *testing.T) string { return edit(t, "idle_conns_per_backend: 256", "idle_conns_per_backend: 0") },
			[]string{`xlb.yaml:11: limits.idle_conns_per_backend: want an integer >= 1, got "0"`}},

		// The rest.
		{"retries negative", func(t *testing.T) string { return edit(t, "retries: 2", "retries: -1") },
			[]string{`xlb.yaml:12: retries: want an integer >= 0, got "-1"`}},
		{"forwarded unknown", func(t *testing.T) string { return edit(t, "forwarded: append", "forwarded: maybe") },
			[]string{`xlb.yaml:13: forwarded: want append, replace or off, got "maybe"`}},
		{"trusted proxies not prefixes", func(t *testing.T) string {
			return edit(t, "forwarded: append", "forwarded: append\ntrusted_proxies: [10.0.0.0/33, 10.0.0.1, nonsense, \"fe80::1%eth0\"]")
		}, []string{
			`xlb.yaml:14: trusted_proxies[0]: want a CIDR prefix such as 10.0.0.0/8 or an address, got "10.0.0.0/33"`,
			`xlb.yaml:14: trusted_proxies[2]: want a CIDR prefix such as 10.0.0.0/8 or an address, got "nonsense"`,
			`xlb.yaml:14: trusted_proxies[3]: want a CIDR prefix such as 10.0.0.0/8 or an address, got "fe80::1%eth0"`,
		}},
		{"upgrade protocol not a name", func(t *testing.T) string {
			return edit(t, "forwarded: append", "forwarded: append\nupgrade_protocols: [websocket, h2c/1]")
		}, []string{`xlb.yaml:14: upgrade_protocols[1]: want a protocol name such as websocket, got "h2c/1"`}},
		{"access log empty", func(t *testing.T) string { return edit(t, "access_log: /var/log/xlb/access.jsonl", `access_log: ""`) },
			[]string{`xlb.yaml:14: access_log: want a file path or "-" for standard output, got ""`}},
		{"log level unknown", func(t *testing.T) string { return edit(t, "level: info", "level: loud") },
			[]string{`xlb.yaml:15: log.level: want trace, debug, info, warn, error or off, got "loud"`}},
		{"log format unknown", func(t *testing.T) string { return edit(t, "format: text", "format: xml") },
			[]string{`xlb.yaml:15: log.format: want text or json, got "xml"`}},

		// Unknown keys, at every level.
		{"unknown top key", func(t *testing.T) string { return sampleFile(t) + "retry: 3\n" },
			[]string{`xlb.yaml:16: unknown key "retry"`}},
		{"unknown set key", func(t *testing.T) string { return edit(t, "policy: round_robin", "polcy: round_robin") },
			[]string{`xlb.yaml:6: backend_sets[0]: unknown key "polcy"`}},
		{"unknown backend key", func(t *testing.T) string { return edit(t, "weight: 1}", "wieght: 1}") },
			[]string{`xlb.yaml:8: backend_sets[0].backends[0]: unknown key "wieght"`}},
		{"unknown timeouts key", func(t *testing.T) string { return edit(t, "shutdown: 30s", "read: 30s") },
			[]string{`xlb.yaml:10: timeouts: unknown key "read"`}},
		{"unknown limits key", func(t *testing.T) string { return edit(t, "headers: 100", "body_bytes: 100") },
			[]string{`xlb.yaml:11: limits: unknown key "body_bytes"`}},
		{"unknown log key", func(t *testing.T) string { return edit(t, "format: text", "file: x") },
			[]string{`xlb.yaml:15: log: unknown key "file"`}},
		{"unknown key with nothing after it", func(t *testing.T) string { return sampleFile(t) + "retry:\n" },
			[]string{`xlb.yaml:16: unknown key "retry"`}},
		{"merge keys are unknown keys", func(t *testing.T) string { return edit(t, "policy: round_robin", "<<: {policy: round_robin}") },
			[]string{`xlb.yaml:6: backend_sets[0]: unknown key "<<"`}},

		// The document.
		{"key given twice", func(t *testing.T) string { return sampleFile(t) + "retries: 3\n" },
			[]string{`xlb.yaml:16: retries: given twice (first on line 12)`}},
		{"syntax error", func(t *testing.T) string { return edit(t, "retries: 2", "retries 2") },
			[]string{`xlb.yaml:12: could not find expected ':'`}},
		{"flow mapping not closed", func(t *testing.T) string { return edit(t, "weight: 3}", "weight: 3") },
			[]string{`xlb.yaml:9: did not find expected ',' or '}'`}},
		{"flow list not closed", func(t *testing.T) string { return sampleFile(t) + "extra: [1, 2\n" },
			[]string{`xlb.yaml:16: did not find expected ',' or ']'`}},
		{"two documents", func(t *testing.T) string { return sampleFile(t) + "---\nretries: 1\n" },
			[]string{`xlb.yaml:16: a second YAML document; want one`}},
		{"empty file", func(t *testing.T) string { return "" },
			[]string{`xlb.yaml:1: missing key "listeners": want at least one listener`}},
		{"only a comment", func(t *testing.T) string { return "# nothing yet\n" },
			[]string{`xlb.yaml:1: missing key "listeners": want at least one listener`}},
		{"top not a mapping", func(t *testing.T) string { return "- a\n- b\n" },
			[]string{`xlb.yaml:1: want a mapping, got a list`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("xlb.yaml", []byte(tt.yaml(t)))
			if err == nil {
				t.Fatalf("Parse: no error, want %q", tt.want)
			}
			for _, want := range tt.want {
				if !hasLine(err, want) {
					t.Errorf("Parse error:\n%v\nhas no line\n%s", err, want)
				}
			}
		})
	}
}

func TestParseConfigErrorType(t *testing.T) {
	_, err := Parse("xlb.yaml", []byte(edit(t, "weight: 3}", "weight: x}")))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	want := Error{File: "xlb.yaml", Line: 9, Path: "backend_sets[0].backends[1].weight", Msg: `want an integer >= 0, got "x"`}
	if *ce != want {
		t.Errorf("Error = %+v, want %+v", *ce, want)
	}
}

func TestParseConfigErrorsSortedAndBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString(minimal)
	for range 30 {
		b.WriteString("  - {name: \"\"}\n")
	}
	b.WriteString("retries: -1\n")
	_, err := Parse("xlb.yaml", []byte(b.String()))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != configErrorsMax+1 {
		t.Fatalf("%d lines, want %d:\n%v", len(lines), configErrorsMax+1, err)
	}
	if want := "xlb.yaml: 11 more errors"; lines[configErrorsMax] != want {
		t.Errorf("last line %q, want %q", lines[configErrorsMax], want)
	}
	if want := `xlb.yaml:8: backend_sets[1].name: required`; lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.HasPrefix(err.Error(), "server: config: open ") {
		t.Errorf("missing file: error %v, want server: config: open ...", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, configBytesMax+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big file: error %v, want larger than ...", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(minimal+"retries: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !hasLine(err, bad+`:8: retries: want an integer >= 0, got "x"`) {
		t.Errorf("bad file: error %v, want it named by its path", err)
	}
}

func TestConfigCheck(t *testing.T) {
	ok := Config{Listeners: []Listener{{Address: "127.0.0.1:0", BackendSet: "s"}}, BackendSets: []table.Set{{Name: "s"}}}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", ok, ""},
		{"no listeners", Config{BackendSets: ok.BackendSets}, "server: config: no listeners"},
		{"no such set", Config{Listeners: []Listener{{Address: "127.0.0.1:0", BackendSet: "t"}}, BackendSets: ok.BackendSets}, `server: config: listener 127.0.0.1:0: no backend set named "t"`},
		{"duplicate set", Config{Listeners: ok.Listeners, BackendSets: []table.Set{{Name: "s"}, {Name: "s"}}}, `server: config: backend set name "s" is empty or not unique`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Check()
			if got := errString(err); got != tt.wantErr {
				t.Errorf("check() = %q, want %q", got, tt.wantErr)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// FuzzParseConfig holds that Parse never panics, and that what it accepts is a Config that
// serving accepts too, within every bound of the format.
func FuzzParseConfig(f *testing.F) {
	data, err := os.ReadFile("testdata/xlb.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(data))
	f.Add(minimal)
	f.Add(minimal + "x: &a [*a]\n")
	f.Add("listeners: &l [{address: ':1', backend_set: s}]\nbackend_sets: [{name: s, backends: *l}]\n")
	f.Add("a: {b: [c, {d: e}]}\n---\n")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := Parse("f.yaml", []byte(s))
		if err != nil {
			return
		}
		if err := cfg.Check(); err != nil {
			t.Fatalf("Parse accepted a Config that check refuses: %v\n%s", err, s)
		}
		for _, set := range cfg.BackendSets {
			// The control plane's rules hold, and the set is in the form the data plane gets.
			if err := resource.Validate("set", backendset.ToProto(set)); err != nil {
				t.Fatalf("Parse accepted set %+v, which the control plane refuses: %v\n%s", set, err, s)
			}
			if again, err := backendset.FromProto(backendset.ToProto(set)); err != nil || !reflect.DeepEqual(again, set) {
				t.Fatalf("Parse accepted set %+v, not as FromProto makes it (%+v, %v)\n%s", set, again, err, s)
			}
		}
		for _, l := range cfg.Listeners {
			if CheckListenAddress(l.Address) != nil {
				t.Fatalf("Parse accepted listener %+v\n%s", l, s)
			}
		}
	})
}
func TestLogger(t *testing.T) {
	tests := []struct {
		cfg       LogConfig
		wantLevel hclog.Level
	}{
		{LogConfig{}, hclog.Info},
		{LogConfig{Level: hclog.Trace}, hclog.Trace},
		{LogConfig{Level: hclog.Off}, hclog.Off},
	}
	for _, tt := range tests {
		if got := tt.cfg.Logger(io.Discard).GetLevel(); got != tt.wantLevel {
			t.Errorf("Logger of %+v level %v, want %v", tt.cfg, got, tt.wantLevel)
		}
	}
	var buf bytes.Buffer
	LogConfig{}.Logger(&buf).Named("proxy").Info("hello")
	if !strings.Contains(buf.String(), "[INFO]  xlb.proxy: hello") {
		t.Errorf("log %q, want the root named xlb", buf.String())
	}
}
