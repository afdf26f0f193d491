package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.yaml.in/yaml/v3"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/dataplane/http1"
	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/server/backendset"
	"github.com/xlbproxy/xlb/server/rpc"
)

// Bounds on what a configuration may say. What happens at each bound: the value is rejected with an
// error naming the key (or the flag) and, for a file, its line.
const (
	// configBytesMax bounds a configuration file; a larger file is refused before it is parsed.
	configBytesMax = 1 << 20
	// configErrorsMax bounds the errors reported for one file; past it the rest are counted.
	configErrorsMax = 20
	// LimitMax bounds every limit in bytes or counts, so that no limit overflows an int anywhere.
	LimitMax = 1 << 30
	// RetriesMax bounds retries; more than a few never helps.
	RetriesMax = 100
	// workersMax bounds the worker processes.
	workersMax = 1024
	// regionCapacityMax bounds each capacity of the shared region (shm refuses more).
	regionCapacityMax = 1 << 24
)

const (
	// DefaultListen is the listen address of `xlb run` without --config and of `xlb demo`.
	DefaultListen = "127.0.0.1:8080"
	// DefaultSet names the one backend set that flags build.
	DefaultSet = "default"
	// DefaultShutdownTimeout is what a zero Config.ShutdownTimeout means.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultUpgradeTimeout is what a zero Config.UpgradeTimeout means.
	DefaultUpgradeTimeout = 30 * time.Second
	// DefaultWorkerStallTimeout is what a zero Config.WorkerStallTimeout means.
	DefaultWorkerStallTimeout = 30 * time.Second
	// DefaultMetricsInterval is what a zero Config.MetricsInterval means.
	DefaultMetricsInterval = time.Second
)

// Config is everything `xlb run` needs to serve. Both a configuration file (Parse, Load)
// and the flags of `xlb run` build one. The zero value of every field means its documented default;
// a Config is not changed once serving starts.
type Config struct {
	// Listeners are the addresses xlb accepts connections on, each bound to one backend set. A valid
	// Config has at least one, and no two share an address (port 0 excepted: each gets its own port).
	Listeners []Listener
	// BackendSets are the sets that the listeners name. Names are unique; a set no listener names is
	// allowed and idle.
	BackendSets []table.Set
	// Proxy holds the timeouts, limits, retries and X-Forwarded-* mode, each zero field meaning the
	// default documented on proxy.Config. Retries follows proxy.Config too: the "retries: 0" of a file
	// and the --retries 0 of a flag (no retry) are -1 here. AccessLog, Logger and Dial are always nil
	// in a Config: serving opens the access log and makes the logger.
	Proxy proxy.Config
	// AccessLog is where one JSON line per request goes: "" means nowhere, "-" standard output, and
	// anything else a file, opened for appending and created with mode 0644 if missing.
	AccessLog string
	// ShutdownTimeout bounds the graceful shutdown after SIGTERM or SIGINT; when it passes, the
	// connections still open are closed. Zero means 30s.
	ShutdownTimeout time.Duration
	// Log is the level and format of the process's log, written to standard error.
	Log LogConfig

	// Workers is the number of worker processes `xlb run` starts. Zero means the default,
	// defaultWorkers() (see its comment for the benchmark that chose it).
	Workers int
	// WorkerStallTimeout is how long a worker may go without writing its heartbeat (it writes one
	// every second) before the supervisor kills it and starts another: a stopped or wedged process
	// serves nobody and holds back "generation applied". Zero means 30s.
	WorkerStallTimeout time.Duration
	// StateDir holds the shared region file, which keeps the last generation of backend sets across
	// restarts. Empty means defaultStateDir().
	StateDir string
	// ReusePort gives each worker its own listening socket per listener, in a SO_REUSEPORT group:
	// the kernel spreads new connections over the workers, and no accept wakes every worker. The
	// supervisor holds every socket, so a crashed worker's queued connections are not lost: they
	// wait for its restart. False means one socket per listener that every worker accepts on.
	ReusePort bool
	// ControlPlanes are the addresses of the control planes that `xlb dataplane` takes its backend
	// sets from ("unix://PATH" for a unix socket), in the order they are tried: the first, and on
	// each failed stream the next (clients/xds). Empty for `xlb run`, whose control plane is
	// embedded and fed by BackendSets.
	ControlPlanes []string
	// NodeID names this data plane to its control plane. Empty means the host name.
	NodeID string
	// ClientSecurity is how `xlb dataplane` connects to its control plane.
	ClientSecurity rpc.ClientSecurity
	// OTLPEndpoint, when set, is the host:port of an OpenTelemetry collector that the supervisor
	// pushes its per-backend metrics to (OTLP/gRPC), every MetricsInterval. OTLPInsecure sends
	// them in plaintext.
	OTLPEndpoint string
	OTLPInsecure bool
	// PrometheusListen, when set, is the host:port where the supervisor serves the same metrics for
	// Prometheus to scrape, at /metrics.
	PrometheusListen string
	// MetricsInterval is how often workers report their per-backend metrics to the supervisor.
	// Zero means 1s.
	MetricsInterval time.Duration
	// UpgradeTimeout bounds the wait for the new binary of an upgrade to be ready; past it, the new
	// one is killed and this one serves on. Zero means 30s.
	UpgradeTimeout time.Duration
	// PidFile, when set, is replaced atomically with the pid of the supervisor in charge (after an
	// upgrade, the new one), so that `kill -USR2 $(cat PATH)` always reaches it.
	PidFile string
	// StickyKeyFile is the keys file that signs and checks sticky cookies (balance/sticky's
	// format), for several data planes that must accept each other's cookies: it must exist. Empty
	// means STATE_DIR/sticky-keys, which the supervisor creates with one new key when it is missing.
	StickyKeyFile string
	// Region is the capacities of a region file created anew; an existing file keeps its own. Zero
	// fields mean shm's defaults.
	Region shm.Capacities
}

// Listener is one address to accept on and the backend set that serves it.
type Listener struct {
	// Address is host:port with a numeric port. An empty host means every interface; port 0 means a
	// port chosen by the kernel.
	Address string
	// BackendSet names a set of Config.BackendSets.
	BackendSet string
	// TLS, when set, makes the listener terminate TLS for its clients. Nil means plain TCP.
	TLS *ListenerTLS
}

// LogConfig is the level and format of the process's log.
type LogConfig struct {
	// Level is the least severe level written. Zero (hclog.NoLevel) means hclog.Info.
	Level hclog.Level
	// JSON writes one JSON object per line. False means hclog's text format.
	JSON bool
}

// Logger makes the process's one root logger, named "xlb", writing to w.
func (c LogConfig) Logger(w io.Writer) hclog.Logger {
	level := c.Level
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "xlb",
		Level:      level,
		JSONFormat: c.JSON,
		Output:     w,
		Color:      hclog.ColorOff,
	})
}

// MetricsIntervalOrDefault is MetricsInterval with its default applied.
func (c *Config) MetricsIntervalOrDefault() time.Duration {
	if c.MetricsInterval <= 0 {
		return DefaultMetricsInterval
	}
	return c.MetricsInterval
}

// UpgradeTimeoutOrDefault is UpgradeTimeout with its default applied.
func (c *Config) UpgradeTimeoutOrDefault() time.Duration {
	if c.UpgradeTimeout <= 0 {
		return DefaultUpgradeTimeout
	}
	return c.UpgradeTimeout
}

// NodeIDOrDefault is NodeID with its default applied.
func (c *Config) NodeIDOrDefault() string {
	if c.NodeID != "" {
		return c.NodeID
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "xlb"
}

// WorkerStallTimeoutOrDefault is WorkerStallTimeout with its default applied.
func (c *Config) WorkerStallTimeoutOrDefault() time.Duration {
	if c.WorkerStallTimeout <= 0 {
		return DefaultWorkerStallTimeout
	}
	return c.WorkerStallTimeout
}

// ShutdownTimeoutOrDefault is ShutdownTimeout with its default applied.
func (c *Config) ShutdownTimeoutOrDefault() time.Duration {
	if c.ShutdownTimeout <= 0 {
		return DefaultShutdownTimeout
	}
	return c.ShutdownTimeout
}

// Check is the last look at a Config before serving it, whoever built it: every listener names a
// set that exists. Files and flags were validated in detail already; a Config built in code (the
// demo, tests) is held to the same few rules here.
func (c *Config) Check() error {
	if len(c.Listeners) == 0 {
		return errors.New("server: config: no listeners")
	}
	sets := make(map[string]bool, len(c.BackendSets))
	for _, s := range c.BackendSets {
		if s.Name == "" || sets[s.Name] {
			return fmt.Errorf("server: config: backend set name %q is empty or not unique", s.Name)
		}
		sets[s.Name] = true
	}
	for _, l := range c.Listeners {
		// A data plane's sets come from its control plane: one not there yet is answered 503.
		if !sets[l.BackendSet] && len(c.ControlPlanes) == 0 {
			return fmt.Errorf("server: config: listener %s: no backend set named %q", l.Address, l.BackendSet)
		}
	}
	return nil
}

// Error is one thing wrong with a configuration file: where it is and what is wrong.
type Error struct {
	// File is the file's name as it was given.
	File string
	// Line is the 1-based line of the offending key or value.
	Line int
	// Path is the key path, as in backend_sets[0].backends[1].weight; empty for the whole document.
	Path string
	// Msg says what is wrong and what is wanted.
	Msg string
}

// Error reads like a compiler's diagnostic: xlb.yaml:7: backend_sets[0].backends[1].weight: want ...
func (e *Error) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Path, e.Msg)
}

// Load reads and parses the configuration file at path; see Parse.
func Load(path string) (Config, error) { return load(path, false) }

// LoadDataPlane is Load for `xlb dataplane`, whose sets come from its control plane: the file
// must have none.
func LoadDataPlane(path string) (Config, error) { return load(path, true) }

func load(path string, externalSets bool) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("server: config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, configBytesMax+1))
	if err != nil {
		return Config{}, fmt.Errorf("server: config: %w", err)
	}
	if len(data) > configBytesMax {
		return Config{}, fmt.Errorf("server: config: %s: larger than %d bytes", path, configBytesMax)
	}
	return parseConfig(path, data, externalSets)
}

// Parse parses a YAML configuration file; name is the file's name, used in errors. Decoding is
// strict: an unknown key, a key given twice, a value of the wrong type or out of its range is an
// error. Each error is a *Error naming the key path and its line; when there are several they
// come joined (errors.Join) in the order of their lines.
func Parse(name string, data []byte) (Config, error) { return parseConfig(name, data, false) }

func parseConfig(name string, data []byte, externalSets bool) (Config, error) {
	d := &decoder{file: name, externalSets: externalSets}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, d.syntaxError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return Config{}, &Error{File: name, Line: next.Line, Msg: "a second YAML document; want one"}
	case !errors.Is(err, io.EOF):
		return Config{}, d.syntaxError(err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		root = nil
		if len(doc.Content) > 0 {
			root = doc.Content[0]
		}
	}
	if root == nil || root.Kind == 0 {
		// An empty file: an empty mapping, so that validation says what is missing.
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1}
	}
	cfg := d.top(root)
	return cfg, d.err()
}

// yamlLine finds the line in a syntax error of the YAML parser.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (d *decoder) syntaxError(err error) error {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		// The parser's errors that say what it did not find are reported by yaml.v3 at the
		// 0-based line where the broken construct (a flow mapping, a block sequence) began: one
		// short of its 1-based line. Its scanner's errors are reported right.
		if strings.HasPrefix(m[2], "did not find expected") {
			line++
		}
		return &Error{File: d.file, Line: line, Msg: m[2]}
	}
	return fmt.Errorf("server: config: %s: %w", d.file, err)
}

// decoder walks the nodes of a configuration file, building a Config and collecting errors.
type decoder struct {
	file string
	errs []*Error
	// externalSets says the backend sets come from a control plane (xlb dataplane): the file
	// must not have any, and its listeners may name sets it does not define.
	externalSets bool
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// err returns the collected errors, in the order of their lines, or nil.
func (d *decoder) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
	errs := make([]error, 0, configErrorsMax+1)
	for i, e := range d.errs {
		if i == configErrorsMax {
			errs = append(errs, fmt.Errorf("%s: %d more errors", d.file, len(d.errs)-i))
			break
		}
		errs = append(errs, e)
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// top decodes the whole document.
func (d *decoder) top(root *yaml.Node) Config {
	var c Config
	var listeners, sets []*located
	var listenersKey *yaml.Node
	d.mapping(root, "", func(key string, k, v *yaml.Node) bool {
		switch key {
		case "listeners":
			listenersKey = k
			items := d.sequence(v, key)
			if len(items) == 0 && (isNull(v) || v.Kind == yaml.SequenceNode) {
				d.errorf(k, key, "want at least one listener")
			}
			for i, n := range items {
				if l := d.listener(n, index(key, i)); l != nil {
					listeners = append(listeners, l)
				}
			}
		case "backend_sets":
			if d.externalSets {
				d.errorf(k, key, "xlb dataplane takes its backend sets from its control plane, not from the file")
				return true
			}
			for i, n := range d.sequence(v, key) {
				if s := d.backendSet(n, index(key, i)); s != nil {
					sets = append(sets, s)
				}
			}
		case "timeouts":
			d.timeouts(v, key, &c)
		case "limits":
			d.limits(v, key, &c)
		case "retries":
			if n, ok := d.integer(v, key, 0, RetriesMax); ok {
				c.Proxy.Retries = ProxyRetries(n)
			}
		case "forwarded":
			if s, ok := d.str(v, key); ok {
				f, err := ParseForwarded(s)
				if err != nil {
					d.errorf(v, key, "%v, got %q", err, s)
				}
				c.Proxy.Forwarded = f
			}
		case "trusted_proxies":
			for i, n := range d.sequence(v, key) {
				if s, ok := d.str(n, index(key, i)); ok {
					pr, err := ParseTrustedProxy(s)
					if err != nil {
						d.errorf(n, index(key, i), "%v", err)
					}
					c.Proxy.TrustedProxies = append(c.Proxy.TrustedProxies, pr)
				}
			}
		case "forwarded_field":
			if b, ok := d.boolean(v, key); ok {
				c.Proxy.ForwardedField = b
			}
		case "upgrade_protocols":
			c.Proxy.UpgradeProtocols = []string{}
			for i, n := range d.sequence(v, key) {
				if s, ok := d.str(n, index(key, i)); ok {
					if !http1.IsToken(s) || strings.Contains(s, "/") {
						d.errorf(n, index(key, i), "want a protocol name such as websocket, got %q", s)
					}
					c.Proxy.UpgradeProtocols = append(c.Proxy.UpgradeProtocols, s)
				}
			}
		case "access_log":
			if s, ok := d.str(v, key); ok {
				if s == "" {
					d.errorf(v, key, `want a file path or "-" for standard output, got ""`)
				}
				c.AccessLog = s
			}
		case "log":
			d.log(v, key, &c.Log)
		case "workers":
			if n, ok := d.integer(v, key, 1, workersMax); ok {
				c.Workers = n
			}
		case "state_dir":
			if s, ok := d.str(v, key); ok {
				if s == "" {
					d.errorf(v, key, `want a directory path, got ""`)
				}
				c.StateDir = s
			}
		case "region":
			d.region(v, key, &c.Region)
		case "sticky_key_file":
			if s, ok := d.str(v, key); ok {
				if !filepath.IsAbs(s) {
					d.errorf(v, key, "want an absolute path, got %q", s)
				}
				c.StickyKeyFile = s
			}
		case "metrics_interval":
			if dur, ok := d.duration(v, key); ok {
				c.MetricsInterval = dur
			}
		case "reuse_port":
			if b, ok := d.boolean(v, key); ok {
				c.ReusePort = b
			}
		default:
			return false
		}
		return true
	})
	if listenersKey == nil && resolve(root).Kind == yaml.MappingNode {
		d.errorf(root, "", `missing key "listeners": want at least one listener`)
	}
	c.BackendSets = d.crossCheckSets(sets)
	c.Listeners = d.crossCheckListeners(listeners, sets)
	return c
}

// located is a listener or a backend set with the nodes that errors found later point at.
type located struct {
	path string
	// name is the listener's address or the set's name, and nameNode its value node.
	name     string
	nameNode *yaml.Node
	// ref is the listener's backend_set and refNode its value node; unused for sets.
	ref     string
	refNode *yaml.Node
	// set is the decoded set; unused for listeners.
	set table.Set
	// tls is the listener's TLS; nil for plain TCP, and unused for sets.
	tls *ListenerTLS
}

func (d *decoder) listener(n *yaml.Node, path string) *located {
	l := &located{path: path}
	ok := d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		switch key {
		case "address":
			l.nameNode = v
			if s, ok := d.str(v, path+".address"); ok {
				if err := CheckListenAddress(s); err != nil {
					d.errorf(v, path+".address", "%v, got %q", err, s)
				}
				l.name = s
			}
		case "backend_set":
			l.refNode = v
			if s, ok := d.str(v, path+".backend_set"); ok {
				l.ref = s
			}
		case "tls":
			l.tls = d.listenerTLS(v, path+".tls")
		default:
			return false
		}
		return true
	})
	if !ok {
		return nil
	}
	d.required(l.nameNode, n, path, "address")
	d.required(l.refNode, n, path, "backend_set")
	return l
}

func (d *decoder) backendSet(n *yaml.Node, path string) *located {
	s := &located{path: path}
	nodes, errs := setNodes{}, len(d.errs)
	ok := d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		at := path + "." + key
		nodes[at] = v
		switch key {
		case "name":
			s.nameNode = v
			if name, ok := d.str(v, at); ok {
				s.name = name
			}
		case "policy":
			if p, ok := d.str(v, at); ok {
				pol, err := backendset.ParsePolicy(p)
				if err != nil {
					d.errorf(v, at, "%v, got %q", err, p)
				}
				s.set.Policy = pol
			}
		case "tls":
			s.set.TLS = d.tlsKey(v, at, nodes)
		case "hash_on":
			s.set.Hash = d.hashOn(v, at, nodes)
		case "sticky":
			s.set.Sticky = d.sticky(v, at, nodes)
		case "backends":
			for i, bn := range d.sequence(v, at) {
				bpath := index(at, i)
				nodes[bpath] = bn
				if b, ok := d.backend(bn, bpath, nodes); ok {
					s.set.Backends = append(s.set.Backends, b)
				}
			}
		default:
			delete(nodes, at)
			return d.healthKey(key, v, path, &s.set.Health, nodes)
		}
		return true
	})
	if !ok {
		return nil
	}
	d.required(s.nameNode, n, path, "name")
	s.set.Name = s.name
	if len(d.errs) == errs {
		// The file's form is right: what the set says is checked by the control plane's rules.
		s.set = d.checkSet(s.set, path, n, nodes)
	}
	return s
}

// backend decodes one backend into its table.Backend, recording the node of each key; ok is false
// when n is not a mapping at all.
func (d *decoder) backend(n *yaml.Node, path string, nodes setNodes) (b table.Backend, ok bool) {
	var idNode, addrNode *yaml.Node
	ok = d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		at := path + "." + key
		nodes[at] = v
		switch key {
		case "id":
			idNode = v
			if s, ok := d.str(v, at); ok {
				b.ID = s
			}
		case "address":
			addrNode = v
			if s, ok := d.str(v, at); ok {
				if !isHostPort(s) {
					d.errorf(v, at, "want host:port with a numeric port, got %q", s)
				}
				b.Address = s
			}
		case "weight":
			if w, ok := d.integer(v, at, 0, math.MaxUint32); ok {
				b.Weight = w
			}
		case "state":
			if s, ok := d.str(v, at); ok {
				st, err := backendset.ParseState(s)
				if err != nil {
					d.errorf(v, at, "%v, got %q", err, s)
				}
				b.State = st
			}
		case "tls":
			b.TLS = d.tlsKey(v, at, nodes)
		default:
			delete(nodes, at)
			return false
		}
		return true
	})
	if !ok {
		return b, false
	}
	d.required(idNode, n, path, "id")
	d.required(addrNode, n, path, "address")
	return b, true
}

// isHostPort tells whether s has the form of a backend's address, host:port with a port of digits
// (as the wire's 32 bits hold them); whether the host is one and the port in its range is the
// control plane's rule to say (checkSet).
func isHostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	_, err = strconv.ParseUint(port, 10, 32)
	return err == nil
}

func (d *decoder) timeouts(n *yaml.Node, path string, c *Config) {
	if isNull(resolve(n)) {
		return // a section with nothing in it: every key takes its default
	}
	d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		var dst *time.Duration
		switch key {
		case "connect":
			dst = &c.Proxy.ConnectTimeout
		case "backend":
			dst = &c.Proxy.BackendTimeout
		case "client":
			dst = &c.Proxy.ClientTimeout
		case "idle":
			dst = &c.Proxy.IdleTimeout
		case "shutdown":
			dst = &c.ShutdownTimeout
		case "worker_stall":
			dst = &c.WorkerStallTimeout
		default:
			return false
		}
		if dur, ok := d.duration(v, path+"."+key); ok {
			*dst = dur
		}
		return true
	})
}

func (d *decoder) limits(n *yaml.Node, path string, c *Config) {
	if isNull(resolve(n)) {
		return // a section with nothing in it: every key takes its default
	}
	d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		var dst *int
		switch key {
		case "request_line_bytes":
			dst = &c.Proxy.RequestLineBytesMax
		case "header_bytes":
			dst = &c.Proxy.HeaderBytesMax
		case "headers":
			dst = &c.Proxy.HeadersMax
		case "replay_buffer_bytes":
			dst = &c.Proxy.ReplayBufferBytesMax
		case "idle_conns_per_backend":
			dst = &c.Proxy.IdleConnsPerBackend
		case "connections":
			dst = &c.Proxy.ConnectionsMax
		default:
			return false
		}
		if x, ok := d.integer(v, path+"."+key, 1, LimitMax); ok {
			*dst = x
		}
		return true
	})
}

func (d *decoder) region(n *yaml.Node, path string, c *shm.Capacities) {
	if isNull(resolve(n)) {
		return
	}
	d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		var dst *int
		hi := regionCapacityMax
		switch key {
		case "sets":
			dst = &c.Sets
		case "backends":
			dst = &c.Backends
		case "string_bytes":
			dst = &c.StringBytes
		case "workers":
			dst = &c.Workers
		case "tls_profiles":
			dst = &c.TLSProfiles
		default:
			return false
		}
		if x, ok := d.integer(v, path+"."+key, 1, hi); ok {
			*dst = x
		}
		return true
	})
}

func (d *decoder) log(n *yaml.Node, path string, l *LogConfig) {
	if isNull(resolve(n)) {
		return // a section with nothing in it: every key takes its default
	}
	d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		switch key {
		case "level":
			if s, ok := d.str(v, path+".level"); ok {
				lvl, err := ParseLogLevel(s)
				if err != nil {
					d.errorf(v, path+".level", "%v, got %q", err, s)
				}
				l.Level = lvl
			}
		case "format":
			if s, ok := d.str(v, path+".format"); ok {
				json, err := ParseLogFormat(s)
				if err != nil {
					d.errorf(v, path+".format", "%v, got %q", err, s)
				}
				l.JSON = json
			}
		default:
			return false
		}
		return true
	})
}

// crossCheckSets rejects duplicate set names and returns the sets.
func (d *decoder) crossCheckSets(sets []*located) []table.Set {
	var out []table.Set
	first := make(map[string]*located, len(sets))
	for _, s := range sets {
		out = append(out, s.set)
		if s.name == "" {
			continue // reported already
		}
		if f, dup := first[s.name]; dup {
			d.errorf(s.nameNode, s.path+".name", "%q is also the name of %s (line %d)", s.name, f.path, f.nameNode.Line)
			continue
		}
		first[s.name] = s
	}
	return out
}

// crossCheckListeners rejects duplicate addresses and names of sets that do not exist, and returns
// the listeners.
func (d *decoder) crossCheckListeners(listeners, sets []*located) []Listener {
	names := make(map[string]bool, len(sets))
	for _, s := range sets {
		if s.name != "" {
			names[s.name] = true
		}
	}
	var out []Listener
	first := make(map[string]*located, len(listeners))
	for _, l := range listeners {
		out = append(out, Listener{Address: l.name, BackendSet: l.ref, TLS: l.tls})
		if l.refNode != nil && !isNull(l.refNode) && !names[l.ref] && !d.externalSets {
			d.errorf(l.refNode, l.path+".backend_set", "no backend set named %q", l.ref)
		}
		key, ok := listenKey(l.name)
		if !ok {
			continue // a bad address, or port 0, which never collides
		}
		if f, dup := first[key]; dup {
			d.errorf(l.nameNode, l.path+".address", "%q is also the address of %s (line %d)", l.name, f.path, f.nameNode.Line)
			continue
		}
		first[key] = l
	}
	return out
}

// listenKey is what two listen addresses that collide have in common; ok is false for a bad address
// or port 0.
func listenKey(addr string) (string, bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", false
	}
	return net.JoinHostPort(strings.ToLower(host), strconv.FormatUint(p, 10)), true
}

// The node helpers. Each reports a wrong node as an error at its line and returns ok false.

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// mapping calls field for each key of the mapping n, in order; field returns false for a key it does
// not know. mapping reports unknown and repeated keys, and returns false when n is not a mapping. A
// null value (a key with nothing after it) is passed on: the value helpers below take it as absent.
func (d *decoder) mapping(n *yaml.Node, path string, field func(key string, k, v *yaml.Node) bool) bool {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping, got %s", kindName(n))
		return false
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "want a key, got %s", kindName(k))
			continue
		}
		key := k.Value
		if line, dup := seen[key]; dup {
			d.errorf(k, join(path, key), "given twice (first on line %d)", line)
			continue
		}
		seen[key] = k.Line
		if !field(key, k, v) {
			d.errorf(k, path, "unknown key %q", key)
		}
	}
	return true
}

// required reports a required key that is absent (n is nil) or has no value.
func (d *decoder) required(n, parent *yaml.Node, path, key string) {
	switch {
	case n == nil:
		d.errorf(parent, path, "missing key %q", key)
	case isNull(n):
		d.errorf(n, path+"."+key, "missing value")
	}
}

// sequence returns the items of a list; null is an empty list.
func (d *decoder) sequence(n *yaml.Node, path string) []*yaml.Node {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "want a list, got %s", kindName(n))
		return nil
	}
	return n.Content
}

// str returns a scalar's text. A scalar of any type but null is taken as its text (an id of 7 is
// "7"); null is absent, ok false without an error.
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	n = resolve(n)
	if isNull(n) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "want a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

// boolean reads true or false, and nothing else of YAML's many spellings.
func (d *decoder) boolean(n *yaml.Node, path string) (bool, bool) {
	n = resolve(n)
	if isNull(n) {
		return false, false
	}
	if n.Kind == yaml.ScalarNode && (n.Value == "true" || n.Value == "false") {
		return n.Value == "true", true
	}
	d.errorf(n, path, "want true or false, got %s", kindName(n))
	return false, false
}

func (d *decoder) integer(n *yaml.Node, path string, lo, hi int) (int, bool) {
	n = resolve(n)
	if isNull(n) {
		return 0, false
	}
	var x int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&x) != nil {
		d.errorf(n, path, "want an integer >= %d, got %s", lo, kindName(n))
		return 0, false
	}
	if err := checkRange(x, lo, hi); err != nil {
		d.errorf(n, path, "%v, got %q", err, n.Value)
		return 0, false
	}
	return int(x), true
}

func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	n = resolve(n)
	if isNull(n) {
		return 0, false
	}
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "%v, got %s", errDuration, kindName(n))
		return 0, false
	}
	dur, err := ParseDuration(n.Value)
	if err != nil {
		d.errorf(n, path, "%v, got %q", err, n.Value)
		return 0, false
	}
	return dur, true
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// The value checkers, shared by the file and the flags. Their errors say what is wanted; the caller
// adds what it got.

var errDuration = errors.New("want a positive duration such as 5s or 1m30s")

func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errDuration
	}
	return d, nil
}

func checkRange(x int64, lo, hi int) error {
	if x < int64(lo) {
		return fmt.Errorf("want an integer >= %d", lo)
	}
	if x > int64(hi) {
		return fmt.Errorf("want an integer <= %d", hi)
	}
	return nil
}

// ParseInt parses a decimal integer from lo to hi.
func ParseInt(s string, lo, hi int) (int, error) {
	x, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want an integer >= %d", lo)
	}
	if err := checkRange(x, lo, hi); err != nil {
		return 0, err
	}
	return int(x), nil
}

// CheckListenAddress accepts host:port with a numeric port from 0 to 65535; the host may be empty.
func CheckListenAddress(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port with a numeric port")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return errors.New("want host:port with a numeric port")
	}
	return nil
}

// CheckBackendAddress accepts the form of a backend's address: host:port with a numeric port.
// Whether the host is one and the port in its range is the control plane's rule (CheckBackend).
func CheckBackendAddress(s string) error {
	if !isHostPort(s) {
		return errors.New("want host:port with a numeric port")
	}
	return nil
}

// CheckBackend holds one backend, of an address CheckBackendAddress accepts, to the control plane's
// rules on its address and weight (resource.Validate, as for a file's set), for the flags that
// give backends one at a time. The error says which: address "h:0": port: want 1 to 65535, got 0.
func CheckBackend(b table.Backend) error {
	b.ID = "b"
	err := resource.Validate("", backendset.ToProto(table.Set{Name: DefaultSet, Backends: []table.Backend{b}}))
	var re *resource.Error
	if !errors.As(err, &re) {
		return err
	}
	switch re.Field {
	case ".backends[0].address":
		return fmt.Errorf("address %q: host: %s", b.Address, re.Msg)
	case ".backends[0].port":
		return fmt.Errorf("address %q: port: %s", b.Address, re.Msg)
	case ".backends[0].weight":
		return fmt.Errorf("weight %d: %s", b.Weight, re.Msg)
	}
	return err
}

func ParseForwarded(s string) (proxy.Forwarded, error) {
	if s == "" {
		return 0, errors.New("want append, replace or off")
	}
	f, err := proxy.ParseForwarded(s)
	if err != nil {
		return 0, errors.New("want append, replace or off")
	}
	return f, nil
}

// ParseTrustedProxy parses a CIDR prefix, or an address as the prefix of that address alone.
func ParseTrustedProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pr, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("want a CIDR prefix such as 10.0.0.0/8 or an address, got %q", s)
		}
		return pr.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("want a CIDR prefix such as 10.0.0.0/8 or an address, got %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func ParseLogLevel(s string) (hclog.Level, error) {
	switch s {
	case "trace":
		return hclog.Trace, nil
	case "debug":
		return hclog.Debug, nil
	case "info":
		return hclog.Info, nil
	case "warn":
		return hclog.Warn, nil
	case "error":
		return hclog.Error, nil
	case "off":
		return hclog.Off, nil
	}
	return 0, errors.New("want trace, debug, info, warn, error or off")
}

// ParseLogFormat returns whether the format is JSON.
func ParseLogFormat(s string) (bool, error) {
	switch s {
	case "text":
		return false, nil
	case "json":
		return true, nil
	}
	return false, errors.New("want text or json")
}

// ProxyRetries turns a count of retries, where 0 means none, into proxy.Config.Retries, where 0
// means the default and a negative value none.
func ProxyRetries(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// DurationDoc is how help writes a default duration: in whole seconds when it is some ("60s", where
// time.Duration's String says "1m0s"), else as Go writes it.
func DurationDoc(d time.Duration) string {
	if d > 0 && d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}

// Sample is the configuration file shown in help; a test checks that it parses. Its
// timeouts, limits and retries are the defaults.
var Sample = `  listeners:
    - address: 127.0.0.1:8080
      backend_set: web
      # tls: {certificates: [{cert_file: a.pem, key_file: a-key.pem}], client_ca_file: ca.pem, min_version: "1.3"}
  backend_sets:
    - name: web
      policy: round_robin            # or least_request, or maglev with hash_on
      # hash_on: {header: x-user}    # maglev's key: {header: NAME}, {cookie: NAME} or client_address
      # sticky: {cookie_name: xlb_backend, path: /, max_age: 0s, same_site: lax, http_only: true}
      backends:
        - {id: a, address: 127.0.0.1:9001, weight: 1}
        - {id: b, address: 127.0.0.1:9002, weight: 3}
        - {id: c, address: 127.0.0.1:9003, state: draining}   # active | draining | disabled
      health_check:                  # active probes (none without this key; {} = the defaults)
        interval: 2s                 # timeout: the smaller of 1s and interval
        fall: 3                      # failed in a row to eject; rise: 2 passed in a row to readmit
        http: {path: /, expected_statuses: ["200-399"]}   # or tcp: {}
      outlier_detection: {consecutive_failures: 5, failure_statuses: none, base_ejection_time: 30s, max_ejection_time: 300s, max_ejection_percent: 50}
      slow_start: {window: 30s, min_weight_percent: 10}   # none without this key
      panic_threshold: 0             # % in below which every backend takes traffic (0: none in)
      tls:                           # TLS to every backend of the set (none without this key)
        server_name: web.internal    # default: the backend's host
        ca_file: /etc/xlb/backend-ca.pem   # default: the system roots; files, read by the data plane
        client_cert_file: /etc/xlb/client.pem   # mTLS to backends, with client_key_file
        client_key_file: /etc/xlb/client-key.pem
        min_version: "1.2"           # or "1.3"
        insecure_skip_verify: false  # true: encrypted, not authenticated (logged at WARN)
        session_resumption: true     # false: a full handshake for every connection
      # a backend's own tls: {...} replaces the set's whole
  timeouts: {connect: ` + DurationDoc(proxy.DefaultConnectTimeout) + `, backend: ` + DurationDoc(proxy.DefaultBackendTimeout) +
	`, client: ` + DurationDoc(proxy.DefaultClientTimeout) + `, idle: ` + DurationDoc(proxy.DefaultIdleTimeout) +
	`, shutdown: ` + DurationDoc(DefaultShutdownTimeout) + `, worker_stall: ` + DurationDoc(DefaultWorkerStallTimeout) + `}
  limits: {request_line_bytes: ` + strconv.Itoa(proxy.DefaultRequestLineBytesMax) + `, header_bytes: ` + strconv.Itoa(proxy.DefaultHeaderBytesMax) +
	`, headers: ` + strconv.Itoa(proxy.DefaultHeadersMax) + `, replay_buffer_bytes: ` + strconv.Itoa(proxy.DefaultReplayBufferBytesMax) +
	`, idle_conns_per_backend: ` + strconv.Itoa(proxy.DefaultIdleConnsPerBackend) + `,
            connections: 10000}       # per worker; default: half the file-descriptor limit
  retries: ` + strconv.Itoa(proxy.DefaultRetries) + `                         # 0 for none
  forwarded: append                  # append | replace | off
  trusted_proxies: [10.0.0.0/8]      # whose X-Forwarded-* append extends (default: no one's)
  forwarded_field: false             # true: also an RFC 7239 Forwarded field
  upgrade_protocols: [websocket]     # the Upgrade protocols tunnelled (h2c only if listed)
  access_log: /var/log/xlb/access.jsonl   # "-" = standard output
  log: {level: info, format: text}   # format: text | json
  workers: 2                         # default: one per two CPUs
  reuse_port: false                  # true: a SO_REUSEPORT socket per worker
  state_dir: /var/lib/xlb            # holds the region file (and sticky-keys)
  # sticky_key_file: /etc/xlb/sticky-keys   # shared by data planes; default STATE_DIR/sticky-keys
  region: {sets: 64, backends: 4096, string_bytes: 262144, workers: 64, tls_profiles: 256}   # when it is created
`
