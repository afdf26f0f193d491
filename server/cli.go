package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/hashicorp/go-hclog"
	"io"
	"math"
	"net"
	"net/netip"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/server/backendset"
	"github.com/xlbproxy/xlb/server/config"
	"github.com/xlbproxy/xlb/server/exit"
	"github.com/xlbproxy/xlb/server/supervisor"
	"github.com/xlbproxy/xlb/server/worker"
)

// version is the release, set when building:
//
//	go build -ldflags "-X github.com/xlbproxy/xlb/server.version=v1.2.3"
//
// Empty means the module version from the build info, or "dev".
var version string

// Version returns the version that `xlb version` prints.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Main runs the xlb command line. args are the arguments without the program's name; output goes
// to stdout and stderr. It returns the exit status: 0 on success (for run and demo, a clean
// shutdown after SIGINT or SIGTERM), 1 when starting or serving failed, 2 for a bad command line or
// configuration.
func Main(args []string, stdout, stderr io.Writer) int {
	return osEnv(stdout, stderr).main(args)
}

func (e *env) main(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exit.Usage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return e.runCommand(rest)
	case "demo":
		return e.demoCommand(rest)
	case worker.Command:
		return worker.Env{Stdout: e.stdout, Stderr: e.stderr}.Main(rest)
	case "dataplane":
		return e.dataplaneCommand(rest)
	case "controlplane":
		return e.controlplaneCommand(rest)
	case "version", "--version", "-version":
		if len(rest) > 0 {
			return e.usageError("version", fmt.Errorf("unexpected argument %q", rest[0]))
		}
		fmt.Fprintf(e.stdout, "xlb %s\n", Version())
		return exit.OK
	case "help", "--help", "-help", "-h":
		return e.help(rest)
	default:
		fmt.Fprintf(e.stderr, "xlb: unknown command %q\nRun 'xlb help' for usage.\n", cmd)
		return exit.Usage
	}
}

const usage = `xlb is an HTTP/1.1 load balancer.

Usage:
  xlb run --listen ADDR --backend HOST:PORT[,weight=N] ...   balance over backends given as flags
  xlb run --config FILE                                     balance as a YAML file says
  xlb controlplane --data-dir DIR [--listen ADDR]           the control plane, for many data planes
  xlb controlplane --store etcd --etcd-endpoints URL,...    replicas of the control plane, on etcd
  xlb dataplane --control-plane ADDR [--listen ADDR]        balance over the control plane's backend sets
  xlb demo [--listen ADDR]                                  xlb run over three demo backends; prints what to try
  xlb version                                               print the version
  xlb help [COMMAND]                                        help about a command

Run 'xlb help run' for the flags of run and the format of the configuration file, 'xlb help
dataplane' and 'xlb help controlplane' for the others.
`

func (e *env) help(args []string) int {
	switch {
	case len(args) == 0:
		fmt.Fprint(e.stdout, usage)
	case len(args) == 1 && args[0] == "run":
		fmt.Fprint(e.stdout, runUsage())
	case len(args) == 1 && args[0] == "demo":
		fmt.Fprint(e.stdout, demoUsage())
	case len(args) == 1 && args[0] == "dataplane":
		fmt.Fprint(e.stdout, dataplaneUsage())
	case len(args) == 1 && args[0] == "controlplane":
		fmt.Fprint(e.stdout, controlplaneUsage)
	case len(args) == 1 && args[0] == "version":
		fmt.Fprint(e.stdout, "Usage: xlb version\n\nPrints xlb's version.\n")
	default:
		fmt.Fprintf(e.stderr, "xlb help: no help about %q\nRun 'xlb help' for usage.\n", strings.Join(args, " "))
		return exit.Usage
	}
	return exit.OK
}

// usageError reports a bad command line of cmd and returns exit.Usage.
func (e *env) usageError(cmd string, err error) int {
	fmt.Fprintf(e.stderr, "xlb %s: %v\nRun 'xlb %s --help' for usage.\n", cmd, err, cmd)
	return exit.Usage
}

// runCommand is `xlb run`.
func (e *env) runCommand(args []string) int {
	return e.superviseCommand(supervised{name: "run", parse: runCommandLine, flags: newRunFlags, usage: runUsage}, args)
}

// dataplaneCommand is `xlb dataplane`.
func (e *env) dataplaneCommand(args []string) int {
	return e.superviseCommand(supervised{name: "dataplane", parse: dataplaneCommandLine, flags: newDataplaneFlags, usage: dataplaneUsage}, args)
}

// supervised is a command that runs a supervisor: xlb run, xlb dataplane or xlb demo.
type supervised struct {
	name  string
	parse func([]string) (commandLine, error)
	flags func() *runFlags
	usage func() string
	// ready, when not nil, is called once, on the supervisor's goroutine, when the supervisor first
	// serves (every worker runs the generation in force). It must not block.
	ready func(supervisor.Served)
}

// commandLine is a command line as a supervisor serves it: its Config, and, when it names a
// configuration file, how to read that file again with the flags given laid over it as at start
// (a reload never parses the command line again).
type commandLine struct {
	cfg    config.Config
	file   string                        // "" when the flags gave everything
	reload func() (config.Config, error) // nil without a file
}

// supervise runs the supervisor of cl until ctx ends; ready is Options.Ready.
func (e *env) supervise(ctx context.Context, log hclog.Logger, cl commandLine, ready func(supervisor.Served)) int {
	return supervisor.Run(ctx, log, supervisor.Options{Config: cl.cfg, File: cl.file, Reload: cl.reload,
		Exe: e.exe, Binary: e.binary, Stdout: e.stdout, Stderr: e.stderr, Version: Version(), Ready: ready})
}

func (e *env) superviseCommand(c supervised, args []string) int {
	cl, err := c.parse(args)
	cfg := cl.cfg
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(e.stdout, c.usage())
		return exit.OK
	case err != nil:
		return e.usageError(c.name, err)
	}
	log := cfg.Log.Logger(e.stderr)
	log.Info("starting", "version", Version())
	ctx, stop := e.stopContext()
	defer stop()
	return e.supervise(ctx, log, cl, c.ready)
}

// flagDef is one flag of a command, in the order its help lists it.
type flagDef struct {
	// name is the flag's name without dashes; arg names its value in help.
	name, arg, usage string
	// set parses and checks a value given on the command line.
	set func(string) error
	// boolean flags take no value (--flag); set gets "true".
	boolean bool
	// apply copies the value into the config.Config being built. It is called only for the flags given
	// explicitly (FlagSet.Visit), so that a flag overrides a file's value and an absent flag does not.
	apply func(*config.Config)
}

// runFlags are the flags of `xlb run` and where their values go.
type runFlags struct {
	config     string
	listen     string
	backends   []table.Backend
	backendSet string // xlb dataplane's --backend-set
	defs       []flagDef
}

func newRunFlags() *runFlags {
	f := &runFlags{}
	var (
		policy                    balance.Policy
		retries                   int
		connect, back, client     = new(durationVar), new(durationVar), new(durationVar)
		idle, shutdown, stall     = new(durationVar), new(durationVar), new(durationVar)
		upgradeWait, metricsEvery = new(durationVar), new(durationVar)
		lineMax, headBytes, heads = new(intVar), new(intVar), new(intVar)
		replayBytes, idleConnsMax = new(intVar), new(intVar)
		connsMax                  = new(intVar)
		workers                   = new(intVar)
		stateDir, pidFile         string
		otlpEndpoint, promListen  string
		forwarded                 proxy.Forwarded
		trusted                   []netip.Prefix
		accessLog                 string
		logCfg                    config.LogConfig
		listenGiven               bool
	)
	f.defs = []flagDef{
		{name: "config", arg: "FILE", usage: "the YAML configuration file (format below); not with --listen or --backend",
			set: func(s string) error {
				if s == "" {
					return errors.New("want a file path")
				}
				f.config = s
				return nil
			}},
		{name: "listen", arg: "ADDR", usage: "the address to accept on, host:port (default " + config.DefaultListen + "); not with --config",
			set: func(s string) error {
				if listenGiven {
					return errors.New("given twice; use --config for several listeners")
				}
				listenGiven = true
				if err := config.CheckListenAddress(s); err != nil {
					return err
				}
				f.listen = s
				return nil
			}},
		{name: "backend", arg: "HOST:PORT[,weight=N]", usage: "a backend, repeatable; the ids are b1, b2, ... in order, the weight 1 by default",
			set: func(s string) error {
				b, err := parseBackendFlag(s)
				if err != nil {
					return err
				}
				b.ID = fmt.Sprintf("b%d", len(f.backends)+1)
				f.backends = append(f.backends, b)
				return nil
			}},
		{name: "policy", arg: "POLICY", usage: "how to pick a backend: round_robin or least_request; maglev needs hash_on, in a configuration file (default " + balance.RoundRobin.String() + ")",
			set: func(s string) (err error) { policy, err = backendset.ParsePolicy(s); return err },
			apply: func(c *config.Config) {
				for i := range c.BackendSets {
					c.BackendSets[i].Policy = policy
				}
			}},
		connect.def("connect-timeout", "bounds a TCP connect to a backend (default "+config.DurationDoc(proxy.DefaultConnectTimeout)+")",
			func(c *config.Config) { c.Proxy.ConnectTimeout = connect.d }),
		back.def("backend-timeout", "bounds the wait for a backend's response header, and silences in its body (default "+config.DurationDoc(proxy.DefaultBackendTimeout)+")",
			func(c *config.Config) { c.Proxy.BackendTimeout = back.d }),
		client.def("client-timeout", "bounds the rest of a client's request header, silences in its body, and stalls writing to it (default "+config.DurationDoc(proxy.DefaultClientTimeout)+")",
			func(c *config.Config) { c.Proxy.ClientTimeout = client.d }),
		idle.def("idle-timeout", "bounds how long a keep-alive connection waits for its next request or use (default "+config.DurationDoc(proxy.DefaultIdleTimeout)+")",
			func(c *config.Config) { c.Proxy.IdleTimeout = idle.d }),
		shutdown.def("shutdown-timeout", "bounds the graceful shutdown after SIGTERM or SIGINT (default "+config.DurationDoc(config.DefaultShutdownTimeout)+")",
			func(c *config.Config) { c.ShutdownTimeout = shutdown.d }),
		{name: "otlp-endpoint", arg: "HOST:PORT", usage: "push per-backend metrics to this OpenTelemetry collector (OTLP/gRPC), every --metrics-interval",
			set: func(s string) error {
				if _, _, err := net.SplitHostPort(s); err != nil {
					return err
				}
				otlpEndpoint = s
				return nil
			},
			apply: func(c *config.Config) { c.OTLPEndpoint = otlpEndpoint }},
		{name: "prometheus-listen", arg: "HOST:PORT", usage: "serve per-backend metrics for Prometheus to scrape at http://HOST:PORT/metrics",
			set: func(s string) error {
				if _, _, err := net.SplitHostPort(s); err != nil {
					return err
				}
				promListen = s
				return nil
			},
			apply: func(c *config.Config) { c.PrometheusListen = promListen }},
		{name: "otlp-insecure", boolean: true, usage: "send OTLP in plaintext (default TLS)",
			set:   func(string) error { return nil },
			apply: func(c *config.Config) { c.OTLPInsecure = true }},
		metricsEvery.def("metrics-interval", "how often workers report their per-backend metrics to the supervisor (default "+config.DurationDoc(config.DefaultMetricsInterval)+")",
			func(c *config.Config) { c.MetricsInterval = metricsEvery.d }),
		upgradeWait.def("upgrade-timeout", "how long the new binary of an upgrade (SIGUSR2) may take to be ready before it is killed and this one serves on (default "+config.DurationDoc(config.DefaultUpgradeTimeout)+")",
			func(c *config.Config) { c.UpgradeTimeout = upgradeWait.d }),
		stall.def("worker-stall-timeout", "how long a worker may miss its heartbeats before it is killed and replaced (default "+config.DurationDoc(config.DefaultWorkerStallTimeout)+")",
			func(c *config.Config) { c.WorkerStallTimeout = stall.d }),
		lineMax.def("request-line-max", "BYTES", "the longest request line; longer is answered 414 (default "+strconv.Itoa(proxy.DefaultRequestLineBytesMax)+")", 1,
			func(c *config.Config) { c.Proxy.RequestLineBytesMax = lineMax.n }),
		headBytes.def("header-bytes-max", "BYTES", "the largest request or response head (default "+strconv.Itoa(proxy.DefaultHeaderBytesMax)+")", 1,
			func(c *config.Config) { c.Proxy.HeaderBytesMax = headBytes.n }),
		heads.def("headers-max", "N", "the most header fields of a request or response (default "+strconv.Itoa(proxy.DefaultHeadersMax)+")", 1,
			func(c *config.Config) { c.Proxy.HeadersMax = heads.n }),
		connsMax.def("connections-max", "N", "the most client connections a worker holds open; at it, accept waits until one closes (default: half the file-descriptor limit)", 1,
			func(c *config.Config) { c.Proxy.ConnectionsMax = connsMax.n }),
		{name: "event-loop", boolean: true, usage: "serve plain TCP listeners from event loops: an idle keep-alive connection holds no goroutine (default: a goroutine per connection)",
			set:   func(string) error { return nil },
			apply: func(c *config.Config) { c.Proxy.EventLoop = true }},
		{name: "retries", arg: "N", usage: "how many more backends a failed request may try; 0 for none (default " + strconv.Itoa(proxy.DefaultRetries) + ")",
			set:   func(s string) (err error) { retries, err = config.ParseInt(s, 0, config.RetriesMax); return err },
			apply: func(c *config.Config) { c.Proxy.Retries = config.ProxyRetries(retries) }},
		replayBytes.def("replay-buffer", "BYTES", "the largest request body held so that it can be retried (default "+strconv.Itoa(proxy.DefaultReplayBufferBytesMax)+")", 1,
			func(c *config.Config) { c.Proxy.ReplayBufferBytesMax = replayBytes.n }),
		idleConnsMax.def("idle-conns-per-backend", "N", "the most idle connections pooled per backend (default "+strconv.Itoa(proxy.DefaultIdleConnsPerBackend)+")", 1,
			func(c *config.Config) { c.Proxy.IdleConnsPerBackend = idleConnsMax.n }),
		{name: "forwarded", arg: "MODE", usage: "X-Forwarded-For, -Proto, -Host: append, replace or off (default " + proxy.ForwardedAppend.String() + ")",
			set:   func(s string) (err error) { forwarded, err = config.ParseForwarded(s); return err },
			apply: func(c *config.Config) { c.Proxy.Forwarded = forwarded }},
		{name: "trusted-proxies", arg: "CIDRS", usage: "comma-separated prefixes or addresses whose X-Forwarded-* fields are appended to; everyone else's are replaced (default none)",
			set: func(s string) error {
				trusted = nil
				for item := range strings.SplitSeq(s, ",") {
					pr, err := config.ParseTrustedProxy(strings.TrimSpace(item))
					if err != nil {
						return err
					}
					trusted = append(trusted, pr)
				}
				return nil
			},
			apply: func(c *config.Config) { c.Proxy.TrustedProxies = trusted }},
		{name: "forwarded-field", boolean: true, usage: "also send an RFC 7239 Forwarded field (for, host, proto)",
			set: func(s string) error {
				if s != "true" {
					return errors.New("takes no value")
				}
				return nil
			},
			apply: func(c *config.Config) { c.Proxy.ForwardedField = true }},
		{name: "access-log", arg: "PATH", usage: `a file for one JSON line per request, appended to; "-" for standard output, "" for none (default none)`,
			set:   func(s string) error { accessLog = s; return nil },
			apply: func(c *config.Config) { c.AccessLog = accessLog }},
		workers.def("workers", "N", "the worker processes that serve traffic (default: "+supervisor.DefaultWorkersDoc+")", 1,
			func(c *config.Config) { c.Workers = workers.n }),
		{name: "state-dir", arg: "DIR", usage: "where the shared region file keeps the last backend sets across restarts (default: " + supervisor.DefaultStateDirDoc + ")",
			set: func(s string) error {
				if s == "" {
					return errors.New("want a directory path")
				}
				stateDir = s
				return nil
			},
			apply: func(c *config.Config) { c.StateDir = stateDir }},
		{name: "reuse-port", boolean: true, usage: "give each worker its own listening sockets (SO_REUSEPORT): no accept wakes every worker; a crashed worker's queued connections wait for its restart",
			set: func(s string) error {
				if s != "true" {
					return errors.New("takes no value")
				}
				return nil
			},
			apply: func(c *config.Config) { c.ReusePort = true }},
		{name: "pid-file", arg: "PATH", usage: "write the supervisor's pid there, replaced atomically (after an upgrade, the new supervisor's)",
			set: func(s string) error {
				if s == "" {
					return errors.New("want a file path")
				}
				pidFile = s
				return nil
			},
			apply: func(c *config.Config) { c.PidFile = pidFile }},
		{name: "log-level", arg: "LEVEL", usage: "trace, debug, info, warn, error or off (default info)",
			set:   func(s string) (err error) { logCfg.Level, err = config.ParseLogLevel(s); return err },
			apply: func(c *config.Config) { c.Log.Level = logCfg.Level }},
		{name: "log-format", arg: "FORMAT", usage: "text or json (default text)",
			set:   func(s string) (err error) { logCfg.JSON, err = config.ParseLogFormat(s); return err },
			apply: func(c *config.Config) { c.Log.JSON = logCfg.JSON }},
	}
	return f
}

// durationVar is the value of a duration flag: a positive Go duration.
type durationVar struct{ d time.Duration }

func (v *durationVar) def(name, usage string, apply func(*config.Config)) flagDef {
	return flagDef{name: name, arg: "DURATION", usage: usage, apply: apply,
		set: func(s string) (err error) { v.d, err = config.ParseDuration(s); return err }}
}

// intVar is the value of a size or count flag: a decimal integer from its minimum to config.LimitMax.
type intVar struct{ n int }

func (v *intVar) def(name, arg, usage string, lo int, apply func(*config.Config)) flagDef {
	return flagDef{name: name, arg: arg, usage: usage, apply: apply,
		set: func(s string) (err error) { v.n, err = config.ParseInt(s, lo, config.LimitMax); return err }}
}

// flagSet returns a FlagSet that knows the defs and prints nothing itself.
func flagSet(name string, defs []flagDef) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, d := range defs {
		if d.boolean {
			fs.BoolFunc(d.name, d.usage, d.set)
		} else {
			fs.Func(d.name, d.usage, d.set)
		}
	}
	return fs
}

// singleDash finds where the flag package's errors spell a flag with one dash.
var singleDash = regexp.MustCompile(`(for flag|defined:|argument:) -([A-Za-z])`)

// parseFlags parses args; its errors spell flags with two dashes, as help does.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return errors.New(singleDash.ReplaceAllString(err.Error(), "$1 --$2"))
}

// parseGiven parses args against defs, refusing positional arguments, and returns the names of
// the flags given.
func parseGiven(name string, defs []flagDef, args []string) (map[string]bool, error) {
	fs := flagSet(name, defs)
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := make(map[string]bool)
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	return given, nil
}

// parseRun turns the arguments of `xlb run` into a Config: from the file that --config names, or
// from --listen and --backend, with every other flag given explicitly overriding the file's value.
// It returns flag.ErrHelp for --help.
func parseRun(args []string) (config.Config, error) {
	cl, err := runCommandLine(args)
	return cl.cfg, err
}

// runCommandLine is parseRun's, with the means to reload the file.
func runCommandLine(args []string) (commandLine, error) {
	f := newRunFlags()
	given, err := parseGiven("run", f.defs, args)
	if err != nil {
		return commandLine{}, err
	}
	overlay := func(c *config.Config) { f.applyGiven(given, c) }
	switch {
	case given["config"] && (given["listen"] || given["backend"]):
		return commandLine{}, errors.New("--listen and --backend cannot be combined with --config; put listeners and backends in the file")
	case given["config"]:
		reload := func() (config.Config, error) {
			cfg, err := config.Load(f.config)
			if err != nil {
				return config.Config{}, err
			}
			overlay(&cfg)
			return cfg, nil
		}
		cfg, err := reload()
		return commandLine{cfg: cfg, file: f.config, reload: reload}, err
	}
	if len(f.backends) == 0 {
		return commandLine{}, errors.New("no backends: give --backend HOST:PORT[,weight=N] (repeatable) or --config FILE")
	}
	listen := f.listen
	if listen == "" {
		listen = config.DefaultListen
	}
	cfg := config.Config{
		Listeners:   []config.Listener{{Address: listen, BackendSet: config.DefaultSet}},
		BackendSets: []table.Set{{Name: config.DefaultSet, Backends: f.backends}},
	}
	overlay(&cfg)
	return commandLine{cfg: cfg}, nil
}

// applyGiven copies into c the values of the flags that the command line gave.
func (f *runFlags) applyGiven(given map[string]bool, c *config.Config) {
	for _, d := range f.defs {
		if given[d.name] && d.apply != nil {
			d.apply(c)
		}
	}
}

// parseBackendFlag parses HOST:PORT[,weight=N], holding the backend to the control plane's rules as
// a file's are (config.CheckBackend); the ID is left to the caller.
func parseBackendFlag(s string) (table.Backend, error) {
	addr, opts, _ := strings.Cut(s, ",")
	if err := config.CheckBackendAddress(addr); err != nil {
		return table.Backend{}, fmt.Errorf("address %q: %v", addr, err)
	}
	b := table.Backend{Address: addr, Weight: 1}
	if opts == "" {
		if strings.HasSuffix(s, ",") {
			return table.Backend{}, errors.New("want HOST:PORT[,weight=N], got a trailing comma")
		}
		if err := config.CheckBackend(b); err != nil {
			return table.Backend{}, err
		}
		return b, nil
	}
	weightGiven := false
	for _, opt := range strings.Split(opts, ",") {
		key, val, hasVal := strings.Cut(opt, "=")
		switch {
		case key != "weight":
			return table.Backend{}, fmt.Errorf("unknown option %q; want weight=N", key)
		case !hasVal:
			return table.Backend{}, errors.New("option weight: want weight=N")
		case weightGiven:
			return table.Backend{}, errors.New("weight given twice")
		}
		w, err := config.ParseInt(val, 0, math.MaxUint32)
		if err != nil {
			return table.Backend{}, fmt.Errorf("weight %q: %v", val, err)
		}
		b.Weight, weightGiven = w, true
	}
	if err := config.CheckBackend(b); err != nil {
		return table.Backend{}, err
	}
	return b, nil
}

// printFlags writes the defs as help lists them.
func printFlags(w *strings.Builder, defs []flagDef) {
	for _, d := range defs {
		fmt.Fprintf(w, "  %s\n        %s\n", strings.TrimSpace("--"+d.name+" "+d.arg), d.usage)
	}
}

func dataplaneUsage() string {
	var b strings.Builder
	b.WriteString(`Usage:
  xlb dataplane --control-plane ADDR[,ADDR...] [--node-id ID] [--listen ADDR] [--backend-set NAME] [flags]
  xlb dataplane --control-plane ADDR[,ADDR...] --config FILE [flags]

Runs the load balancer as xlb run does (a supervisor and its workers), with the backend sets of a
control plane (xlb controlplane): every set the control plane pushes is applied through the shared
region and acknowledged once every worker serves it; a set that cannot be applied is refused with
its reason (a NACK) and the previous version keeps serving. With the control plane unreachable,
the last applied sets keep serving, from the region file across restarts too. A --config file
says listeners and settings, and no backend_sets.

Flags:
`)
	printFlags(&b, newDataplaneFlags().defs)
	return b.String()
}

func runUsage() string {
	var b strings.Builder
	b.WriteString(`Usage:
  xlb run [--listen ADDR] --backend HOST:PORT[,weight=N] [--backend ...] [flags]
  xlb run --config FILE [flags]

Runs the load balancer until SIGINT or SIGTERM, then shuts down gracefully. With flags, one listener
balances over the backends given; with --config, the file says the listeners and backend sets, and
the flags below other than --listen and --backend override the file's values.

The process is a supervisor: it binds the listeners and starts --workers worker processes that serve
them. It writes the backend sets into a shared region file in --state-dir, which workers read
without locks; a restarted xlb serves that file's last backend sets first. The configuration file
is watched: a change of its backend sets (adding, removing, reweighting, draining backends) applies
at once, with no restart and no failed request. A file that does not parse is logged and changes
nothing; a change of anything else is logged as needing a restart. A crashed worker is restarted.

Flags:
`)
	printFlags(&b, newRunFlags().defs)
	b.WriteString(`
Configuration file (every key but listeners and backend_sets is optional; unknown keys are errors):

` + config.Sample + `
Exit status: 0 after a clean shutdown, 1 when starting or serving failed, 2 for a bad command line
or configuration.
`)
	return b.String()
}
