package server

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/server/backendset"
	"github.com/xlbproxy/xlb/server/config"
)

// runMain runs Main with buffers.
func runMain(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = Main(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestMainOutput(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		// wantOut and wantErr must each appear in stdout and stderr; an empty one means that stream
		// stays empty.
		wantOut, wantErr string
	}{
		{"version", []string{"version"}, 0, "xlb " + Version() + "\n", ""},
		{"--version", []string{"--version"}, 0, "xlb " + Version() + "\n", ""},
		{"version with an argument", []string{"version", "x"}, 2, "", `xlb version: unexpected argument "x"`},
		{"help", []string{"help"}, 0, "xlb run --config FILE", ""},
		{"--help", []string{"--help"}, 0, "xlb help [COMMAND]", ""},
		{"-h", []string{"-h"}, 0, "xlb demo [--listen ADDR]", ""},
		{"help run", []string{"help", "run"}, 0, "--backend HOST:PORT[,weight=N]", ""},
		{"help demo", []string{"help", "demo"}, 0, "Usage: xlb demo [--listen ADDR]", ""},
		{"help version", []string{"help", "version"}, 0, "Usage: xlb version", ""},
		{"help about nothing", []string{"help", "nothing"}, 2, "", `xlb help: no help about "nothing"`},
		{"run --help", []string{"run", "--help"}, 0, "--shutdown-timeout DURATION", ""},
		{"run -h", []string{"run", "-h"}, 0, "Configuration file", ""},
		{"demo --help", []string{"demo", "--help"}, 0, "--listen ADDR", ""},
		{"no command", nil, 2, "", "Usage:"},
		{"unknown command", []string{"serve"}, 2, "", "xlb: unknown command \"serve\"\nRun 'xlb help' for usage.\n"},
		{"run without backends", []string{"run"}, 2, "", "xlb run: no backends: give --backend HOST:PORT[,weight=N] (repeatable) or --config FILE"},
		{"run with a bad weight", []string{"run", "--backend", "127.0.0.1:9002,weight=2000000"}, 2, "",
			`xlb run: invalid value "127.0.0.1:9002,weight=2000000" for flag --backend: weight 2000000: want 0 (meaning 1) to 1000000, got 2000000` + "\nRun 'xlb run --help' for usage.\n"},
		{"run with an unknown flag", []string{"run", "--bogus"}, 2, "", "xlb run: flag provided but not defined: --bogus"},
		{"run with a flag without value", []string{"run", "--backend"}, 2, "", "xlb run: flag needs an argument: --backend"},
		{"run with a bad duration", []string{"run", "--backend", "127.0.0.1:1", "--idle-timeout", "1"}, 2, "",
			`xlb run: invalid value "1" for flag --idle-timeout: want a positive duration such as 5s or 1m30s`},
		{"run with an argument", []string{"run", "--backend", "127.0.0.1:1", "extra"}, 2, "", `xlb run: unexpected argument "extra"`},
		{"run with a bad file", []string{"run", "--config", "testdata/nonexistent.yaml"}, 2, "", "xlb run: server: config: open testdata/nonexistent.yaml"},
		{"demo with a bad listen address", []string{"demo", "--listen", "8080"}, 2, "",
			`xlb demo: invalid value "8080" for flag --listen: want host:port with a numeric port`},
		{"demo with an argument", []string{"demo", "x"}, 2, "", `xlb demo: unexpected argument "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runMain(tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout, stderr)
			}
			check := func(stream, got, want string) {
				if want == "" && got != "" || !strings.Contains(got, want) {
					t.Errorf("%s:\n%s\nwant it to contain:\n%s", stream, got, want)
				}
			}
			check("stdout", stdout, tt.wantOut)
			check("stderr", stderr, tt.wantErr)
		})
	}
}

func TestVersion(t *testing.T) {
	saved := version
	t.Cleanup(func() { version = saved })

	version = ""
	if got := Version(); got == "" {
		t.Error("Version() is empty without -ldflags")
	}
	version = "v1.2.3"
	if code, stdout, _ := runMain("version"); code != 0 || stdout != "xlb v1.2.3\n" {
		t.Errorf("xlb version = %d %q, want 0 %q", code, stdout, "xlb v1.2.3\n")
	}
}

// TestHelpSpellsFlagsWithTwoDashes: scripts and people copy flags from help.
func TestHelpSpellsFlagsWithTwoDashes(t *testing.T) {
	_, help, _ := runMain("run", "--help")
	for _, name := range []string{
		"config", "listen", "backend", "policy", "connect-timeout", "backend-timeout", "client-timeout",
		"idle-timeout", "shutdown-timeout", "request-line-max", "header-bytes-max", "headers-max",
		"retries", "replay-buffer", "idle-conns-per-backend", "forwarded", "access-log", "log-level", "log-format",
	} {
		if !strings.Contains(help, "\n  --"+name+" ") {
			t.Errorf("run help has no line for --%s", name)
		}
	}
	if m := regexp.MustCompile(`(^|\s)-[a-z]`).FindString(help); m != "" {
		t.Errorf("run help spells a flag with one dash: %q", m)
	}
}

func TestParseBackendFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    table.Backend
		wantErr string
	}{
		{in: "127.0.0.1:9001", want: table.Backend{Address: "127.0.0.1:9001", Weight: 1}},
		{in: "127.0.0.1:9002,weight=3", want: table.Backend{Address: "127.0.0.1:9002", Weight: 3}},
		{in: "[::1]:9002,weight=1000000", want: table.Backend{Address: "[::1]:9002", Weight: 1000000}},
		{in: "backend.internal:80", want: table.Backend{Address: "backend.internal:80", Weight: 1}},
		{in: "127.0.0.1:9002,weight=0", want: table.Backend{Address: "127.0.0.1:9002"}}, // 1, as on the wire
		{in: "127.0.0.1:9002,weight=-2", wantErr: `weight "-2": want an integer >= 0`},
		{in: "127.0.0.1:9002,weight=x", wantErr: `weight "x": want an integer >= 0`},
		{in: "127.0.0.1:9002,weight=1000001", wantErr: `weight 1000001: want 0 (meaning 1) to 1000000, got 1000001`},
		{in: "127.0.0.1:9002,weight=", wantErr: `weight "": want an integer >= 0`},
		{in: "127.0.0.1:9002,weight", wantErr: "option weight: want weight=N"},
		{in: "127.0.0.1:9002,weight=1,weight=2", wantErr: "weight given twice"},
		{in: "127.0.0.1:9002,zone=a", wantErr: `unknown option "zone"; want weight=N`},
		{in: "127.0.0.1:9002,", wantErr: "want HOST:PORT[,weight=N], got a trailing comma"},
		{in: "127.0.0.1", wantErr: `address "127.0.0.1": want host:port with a numeric port`},
		{in: "127.0.0.1:", wantErr: `address "127.0.0.1:": want host:port with a numeric port`},
		{in: ":9001", wantErr: `address ":9001": host: required`},
		{in: "bad_host:9001", wantErr: `address "bad_host:9001": host: "bad_host": want an IP address or a host name`},
		{in: "127.0.0.1:0", wantErr: `address "127.0.0.1:0": port: want 1 to 65535, got 0`},
		{in: "127.0.0.1:65536,weight=2", wantErr: `address "127.0.0.1:65536": port: want 1 to 65535, got 65536`},
		{in: "127.0.0.1:http", wantErr: `address "127.0.0.1:http": want host:port with a numeric port`},
		{in: "", wantErr: `address "": want host:port with a numeric port`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseBackendFlag(tt.in)
			if errText(err) != tt.wantErr {
				t.Fatalf("parseBackendFlag(%q) error = %q, want %q", tt.in, errText(err), tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseBackendFlag(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

// sampleWant is the sample file as server/config reads it (its own tests say what that is): the
// flags are laid over it.
func sampleWant() config.Config {
	c, err := config.Load("config/testdata/xlb.yaml")
	if err != nil {
		panic(err)
	}
	return c
}

// errText is err's text, "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// writeSample writes the sample file into a temporary directory and returns its path.
func writeSample(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "xlb.yaml")
	data, err := os.ReadFile("config/testdata/xlb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestParseRun(t *testing.T) {
	file := writeSample(t)
	fromFlags := func(backends ...table.Backend) config.Config {
		return config.Config{
			Listeners:   []config.Listener{{Address: "127.0.0.1:8080", BackendSet: "default"}},
			BackendSets: []table.Set{{Name: "default", Backends: backends}},
		}
	}
	tests := []struct {
		name    string
		args    []string
		want    func() config.Config
		wantErr string
	}{
		{
			name: "backends from flags",
			args: []string{"--listen", "127.0.0.1:8080", "--backend", "127.0.0.1:9001", "--backend", "127.0.0.1:9002,weight=3"},
			want: func() config.Config {
				return fromFlags(table.Backend{ID: "b1", Address: "127.0.0.1:9001", Weight: 1}, table.Backend{ID: "b2", Address: "127.0.0.1:9002", Weight: 3})
			},
		},
		{
			name: "listen defaults to 127.0.0.1:8080",
			args: []string{"--backend", "127.0.0.1:9001"},
			want: func() config.Config { return fromFlags(table.Backend{ID: "b1", Address: "127.0.0.1:9001", Weight: 1}) },
		},
		{
			name: "every other flag",
			args: []string{"--listen", ":9000", "--backend", "10.0.0.1:80", "--policy", "least_request",
				"--connect-timeout", "1s", "--backend-timeout", "2s", "--client-timeout", "3s", "--idle-timeout", "4s",
				"--shutdown-timeout", "5s", "--request-line-max", "100", "--header-bytes-max", "200", "--headers-max", "10",
				"--retries", "0", "--replay-buffer", "300", "--idle-conns-per-backend", "7", "--forwarded", "replace",
				"--trusted-proxies", "10.0.0.0/8, 192.0.2.7,::ffff:198.51.100.1", "--forwarded-field",
				"--access-log", "-", "--log-level", "debug", "--log-format", "json", "--workers", "3", "--state-dir", "/srv/xlb", "--reuse-port", "--worker-stall-timeout", "7s"},
			want: func() config.Config {
				return config.Config{
					Listeners: []config.Listener{{Address: ":9000", BackendSet: "default"}},
					BackendSets: []table.Set{{Name: "default", Policy: balance.LeastRequest,
						Backends: []table.Backend{{ID: "b1", Address: "10.0.0.1:80", Weight: 1}}}},
					Proxy: proxy.Config{
						ConnectTimeout: time.Second, BackendTimeout: 2 * time.Second, ClientTimeout: 3 * time.Second,
						IdleTimeout: 4 * time.Second, RequestLineBytesMax: 100, HeaderBytesMax: 200, HeadersMax: 10,
						Retries: -1, ReplayBufferBytesMax: 300, IdleConnsPerBackend: 7, Forwarded: proxy.ForwardedReplace,
						TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
							netip.MustParsePrefix("198.51.100.1/32")},
						ForwardedField: true,
					},
					AccessLog:          "-",
					ShutdownTimeout:    5 * time.Second,
					Log:                config.LogConfig{Level: hclog.Debug, JSON: true},
					Workers:            3,
					StateDir:           "/srv/xlb",
					ReusePort:          true,
					WorkerStallTimeout: 7 * time.Second,
				}
			},
		},
		{
			name: "the file alone",
			args: []string{"--config", file},
			want: sampleWant,
		},
		{
			name: "explicit flags override the file",
			args: []string{"--config", file, "--policy", "least_request", "--connect-timeout", "1s", "--retries", "0",
				"--access-log", "", "--log-format", "json", "--headers-max", "50"},
			want: func() config.Config {
				c := sampleWant()
				c.BackendSets[0].Policy = balance.LeastRequest
				c.Proxy.ConnectTimeout = time.Second
				c.Proxy.Retries = -1
				c.Proxy.HeadersMax = 50
				c.AccessLog = ""
				c.Log.JSON = true
				return c
			},
		},
		{
			name: "the last of a repeated flag wins",
			args: []string{"--config", file, "--retries", "1", "--retries", "3"},
			want: func() config.Config { c := sampleWant(); c.Proxy.Retries = 3; return c },
		},
		{name: "--config with --backend", args: []string{"--config", file, "--backend", "127.0.0.1:9001"},
			wantErr: "--listen and --backend cannot be combined with --config; put listeners and backends in the file"},
		{name: "--config with --listen", args: []string{"--listen", "127.0.0.1:1", "--config", file},
			wantErr: "--listen and --backend cannot be combined with --config; put listeners and backends in the file"},
		{name: "--config empty", args: []string{"--config", ""},
			wantErr: `invalid value "" for flag --config: want a file path`},
		{name: "--listen twice", args: []string{"--listen", ":1", "--listen", ":2", "--backend", "127.0.0.1:1"},
			wantErr: `invalid value ":2" for flag --listen: given twice; use --config for several listeners`},
		{name: "--listen without port", args: []string{"--listen", "127.0.0.1", "--backend", "127.0.0.1:1"},
			wantErr: `invalid value "127.0.0.1" for flag --listen: want host:port with a numeric port`},
		{name: "--policy unknown", args: []string{"--backend", "127.0.0.1:1", "--policy", "random"},
			wantErr: `invalid value "random" for flag --policy: want round_robin, least_request or maglev`},
		{name: "--retries negative", args: []string{"--backend", "127.0.0.1:1", "--retries", "-1"},
			wantErr: `invalid value "-1" for flag --retries: want an integer >= 0`},
		{name: "--headers-max zero", args: []string{"--backend", "127.0.0.1:1", "--headers-max", "0"},
			wantErr: `invalid value "0" for flag --headers-max: want an integer >= 1`},
		{name: "--replay-buffer not a number", args: []string{"--backend", "127.0.0.1:1", "--replay-buffer", "64k"},
			wantErr: `invalid value "64k" for flag --replay-buffer: want an integer >= 1`},
		{name: "--connect-timeout zero", args: []string{"--backend", "127.0.0.1:1", "--connect-timeout", "0s"},
			wantErr: `invalid value "0s" for flag --connect-timeout: want a positive duration such as 5s or 1m30s`},
		{name: "--trusted-proxies not a prefix", args: []string{"--backend", "127.0.0.1:1", "--trusted-proxies", "10.0.0.0/8,10.0.0.0/40"},
			wantErr: `invalid value "10.0.0.0/8,10.0.0.0/40" for flag --trusted-proxies: want a CIDR prefix such as 10.0.0.0/8 or an address, got "10.0.0.0/40"`},
		{name: "--forwarded unknown", args: []string{"--backend", "127.0.0.1:1", "--forwarded", "yes"},
			wantErr: `invalid value "yes" for flag --forwarded: want append, replace or off`},
		{name: "--log-level unknown", args: []string{"--backend", "127.0.0.1:1", "--log-level", "loud"},
			wantErr: `invalid value "loud" for flag --log-level: want trace, debug, info, warn, error or off`},
		{name: "--log-format unknown", args: []string{"--backend", "127.0.0.1:1", "--log-format", "xml"},
			wantErr: `invalid value "xml" for flag --log-format: want text or json`},
		{name: "a bad file names its line", args: []string{"--config", "testdata/bad.yaml"},
			wantErr: `testdata/bad.yaml:3: listeners[0]: unknown key "adress"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRun(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains("\n"+err.Error()+"\n", "\n"+tt.wantErr+"\n") {
					t.Fatalf("parseRun error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseRun: %v", err)
			}
			if want := tt.want(); !reflect.DeepEqual(got, want) {
				t.Errorf("parseRun:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseRunHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		if _, err := parseRun([]string{arg}); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("parseRun(%s) error = %v, want flag.ErrHelp", arg, err)
		}
	}
}

// FuzzParseBackendFlag holds that what parseBackendFlag accepts is a backend the control plane
// accepts too.
func FuzzParseBackendFlag(f *testing.F) {
	for _, s := range []string{"127.0.0.1:9002,weight=3", "[::1]:1", "a:1,weight=1,weight=2", "a:1,,", ":1", "a:0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := parseBackendFlag(s)
		if err != nil {
			return
		}
		b.ID = "b1"
		if err := resource.Validate("set", backendset.ToProto(table.Set{Name: "default", Backends: []table.Backend{b}})); err != nil {
			t.Fatalf("parseBackendFlag(%q) = %+v, which the control plane refuses: %v", s, b, err)
		}
	})
}

// TestHelpDefaults: each default that help names is the one applied: given back as the flag's
// value, it sets what a zero value means (proxy's exported defaults, which proxy's
// TestConfigDefaults pins to what New applies, and this package's). The sample configuration's
// timeouts, limits and retries are those defaults too.
func TestHelpDefaults(t *testing.T) {
	var zero config.Config
	tests := []struct {
		flag string
		got  func(config.Config) any
		want any
	}{
		{"connect-timeout", func(c config.Config) any { return c.Proxy.ConnectTimeout }, proxy.DefaultConnectTimeout},
		{"backend-timeout", func(c config.Config) any { return c.Proxy.BackendTimeout }, proxy.DefaultBackendTimeout},
		{"client-timeout", func(c config.Config) any { return c.Proxy.ClientTimeout }, proxy.DefaultClientTimeout},
		{"idle-timeout", func(c config.Config) any { return c.Proxy.IdleTimeout }, proxy.DefaultIdleTimeout},
		{"shutdown-timeout", func(c config.Config) any { return c.ShutdownTimeout }, zero.ShutdownTimeoutOrDefault()},
		{"metrics-interval", func(c config.Config) any { return c.MetricsInterval }, zero.MetricsIntervalOrDefault()},
		{"upgrade-timeout", func(c config.Config) any { return c.UpgradeTimeout }, zero.UpgradeTimeoutOrDefault()},
		{"worker-stall-timeout", func(c config.Config) any { return c.WorkerStallTimeout }, zero.WorkerStallTimeoutOrDefault()},
		{"request-line-max", func(c config.Config) any { return c.Proxy.RequestLineBytesMax }, proxy.DefaultRequestLineBytesMax},
		{"header-bytes-max", func(c config.Config) any { return c.Proxy.HeaderBytesMax }, proxy.DefaultHeaderBytesMax},
		{"headers-max", func(c config.Config) any { return c.Proxy.HeadersMax }, proxy.DefaultHeadersMax},
		{"retries", func(c config.Config) any { return c.Proxy.Retries }, proxy.DefaultRetries},
		{"replay-buffer", func(c config.Config) any { return c.Proxy.ReplayBufferBytesMax }, proxy.DefaultReplayBufferBytesMax},
		{"idle-conns-per-backend", func(c config.Config) any { return c.Proxy.IdleConnsPerBackend }, proxy.DefaultIdleConnsPerBackend},
		{"forwarded", func(c config.Config) any { return c.Proxy.Forwarded }, zero.Proxy.Forwarded},
		{"policy", func(c config.Config) any { return c.BackendSets[0].Policy }, balance.Policy(0)},
	}
	for _, usage := range []struct{ name, text string }{{"run", runUsage()}, {"dataplane", dataplaneUsage()}} {
		for _, tt := range tests {
			m := regexp.MustCompile(`(?m)^  --` + regexp.QuoteMeta(tt.flag) + ` [A-Z]+\n {8}.*\(default ([^)]+)\)$`).FindStringSubmatch(usage.text)
			if m == nil && (usage.name == "run" || strings.Contains(usage.text, "\n  --"+tt.flag+" ")) {
				t.Errorf("%s help: no (default ...) for --%s", usage.name, tt.flag)
			}
			if m == nil {
				continue // dataplane takes no --policy: the control plane says
			}
			c, err := parseRun([]string{"--backend", "127.0.0.1:1", "--" + tt.flag, m[1]})
			if err != nil {
				t.Errorf("%s help: --%s %s, its default, is refused: %v", usage.name, tt.flag, m[1], err)
				continue
			}
			if got := tt.got(c); got != tt.want {
				t.Errorf("%s help: --%s's default %s sets %v, but the default is %v", usage.name, tt.flag, m[1], got, tt.want)
			}
		}
	}

	c, err := config.Parse("help", []byte(config.Sample))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		switch tt.flag {
		case "metrics-interval", "upgrade-timeout", "forwarded", "policy":
			continue // not in the sample's lines of defaults
		}
		if got := tt.got(c); got != tt.want {
			t.Errorf("help's sample configuration: %v for %s, but the default is %v", got, tt.flag, tt.want)
		}
	}
}

// TestCommandLineReload: a command line with a file reloads the file as it is now, with the flags
// given at start laid over it again, and without parsing the command line again; one without a
// file has nothing to reload.
func TestCommandLineReload(t *testing.T) {
	path := writeSample(t)
	cl, err := runCommandLine([]string{"--config", path, "--retries", "5"})
	if err != nil {
		t.Fatal(err)
	}
	if cl.file != path || cl.reload == nil || cl.cfg.Proxy.Retries != 5 {
		t.Fatalf("file %q, reload %v, retries %d", cl.file, cl.reload != nil, cl.cfg.Proxy.Retries)
	}
	data, _ := os.ReadFile(path)
	edited := strings.Replace(string(data), "127.0.0.1:9001", "127.0.0.1:9101", 1)
	if edited == string(data) {
		t.Fatal("the sample has no 127.0.0.1:9001 to change")
	}
	if err := os.WriteFile(path, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := cl.reload()
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.BackendSets[0].Backends[0].Address; got != "127.0.0.1:9101" || cfg.Proxy.Retries != 5 {
		t.Fatalf("reloaded: first backend %s, retries %d; want the file's new address and the flag's 5", got, cfg.Proxy.Retries)
	}
	noFile, err := runCommandLine([]string{"--backend", "127.0.0.1:9001"})
	if err != nil || noFile.reload != nil || noFile.file != "" {
		t.Fatalf("flags alone: %+v, %v; want nothing to reload", noFile, err)
	}
}
