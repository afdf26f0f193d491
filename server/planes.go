package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/xlbproxy/xlb/controlplane/discovery"
	"github.com/xlbproxy/xlb/controlplane/etcdstore"
	"github.com/xlbproxy/xlb/controlplane/replicas"
	"github.com/xlbproxy/xlb/controlplane/store"
	"github.com/xlbproxy/xlb/server/config"
	"github.com/xlbproxy/xlb/server/cpserver"
	"github.com/xlbproxy/xlb/server/exit"
	"github.com/xlbproxy/xlb/server/rpc"
	"github.com/xlbproxy/xlb/server/telemetry"
)

// `xlb dataplane` is `xlb run` whose backend sets come from a control plane: the same supervisor
// and workers, the same flags but --backend and --policy, and these.
func newDataplaneFlags() *runFlags {
	f := newRunFlags()
	defs := make([]flagDef, 0, len(f.defs)+8)
	for _, d := range f.defs {
		if d.name != "backend" && d.name != "policy" {
			defs = append(defs, d)
		}
	}
	str := func(name, arg, usage string, apply func(*config.Config, string)) flagDef {
		var v string
		return flagDef{name: name, arg: arg, usage: usage,
			set: func(s string) error {
				if s == "" {
					return errors.New("must not be empty")
				}
				v = s
				return nil
			},
			apply: func(c *config.Config) { apply(c, v) }}
	}
	defs = append(defs,
		controlPlanesFlag(),
		str("node-id", "ID", "this data plane's name at the control plane (default: the host name)", func(c *config.Config, v string) { c.NodeID = v }),
		str("backend-set", "NAME", "the backend set that --listen serves (default "+config.DefaultSet+"); not with --config", func(c *config.Config, v string) { f.backendSet = v }),
		str("tls-ca", "FILE", "CA certificates that verify the control plane's; TLS to it when given", func(c *config.Config, v string) { c.ClientSecurity.CAFile = v }),
		str("tls-cert", "FILE", "this data plane's client certificate, for a control plane that asks for one", func(c *config.Config, v string) { c.ClientSecurity.CertFile = v }),
		str("tls-key", "FILE", "the key of --tls-cert", func(c *config.Config, v string) { c.ClientSecurity.KeyFile = v }),
		str("tls-server-name", "NAME", "the name the control plane's certificate must have (default: from ADDR)", func(c *config.Config, v string) { c.ClientSecurity.ServerName = v }),
		flagDef{name: "insecure", boolean: true, usage: "allow plaintext to a control plane that is not on loopback",
			set:   func(string) error { return nil },
			apply: func(c *config.Config) { c.ClientSecurity.Insecure = true }},
	)
	f.defs = defs
	return f
}

// controlPlanesFlag is --control-plane ADDR[,ADDR...]: the control planes in the order the data
// plane tries them (config.Config.ControlPlanes). Given more than once, the lists add up.
func controlPlanesFlag() flagDef {
	var addrs []string
	return flagDef{name: "control-plane", arg: "ADDR[,ADDR...]",
		usage: "the control planes, tried in this order, the next when a stream to one fails: host:port, or unix://PATH (required)",
		set: func(s string) error {
			for a := range strings.SplitSeq(s, ",") {
				a = strings.TrimSpace(a)
				switch {
				case a == "":
					return fmt.Errorf("empty address in %q", s)
				case slices.Contains(addrs, a):
					return fmt.Errorf("%s is given twice", a)
				}
				addrs = append(addrs, a)
			}
			return nil
		},
		apply: func(c *config.Config) { c.ControlPlanes = slices.Clone(addrs) }}
}

// parseDataplane builds the config.Config of `xlb dataplane`.
func parseDataplane(args []string) (config.Config, error) {
	cl, err := dataplaneCommandLine(args)
	return cl.cfg, err
}

// dataplaneCommandLine is parseDataplane's, with the means to reload the file.
func dataplaneCommandLine(args []string) (commandLine, error) {
	f := newDataplaneFlags()
	given, err := parseGiven("dataplane", f.defs, args)
	if err != nil {
		return commandLine{}, err
	}
	switch {
	case !given["control-plane"]:
		return commandLine{}, errors.New("--control-plane ADDR[,ADDR...] is required")
	case given["config"] && (given["listen"] || given["backend-set"]):
		return commandLine{}, errors.New("--listen and --backend-set cannot be combined with --config; put listeners in the file")
	case given["config"]:
		reload := func() (config.Config, error) {
			cfg, err := config.LoadDataPlane(f.config)
			if err != nil {
				return config.Config{}, err
			}
			f.applyGiven(given, &cfg)
			return cfg, nil
		}
		cfg, err := reload()
		return commandLine{cfg: cfg, file: f.config, reload: reload}, err
	}
	var cfg config.Config
	f.applyGiven(given, &cfg)
	listen, set := f.listen, f.backendSet
	if listen == "" {
		listen = config.DefaultListen
	}
	if set == "" {
		set = config.DefaultSet
	}
	cfg.Listeners = []config.Listener{{Address: listen, BackendSet: set}}
	return commandLine{cfg: cfg}, nil
}

// controlplaneFlags are the flags of `xlb controlplane`.
type controlplaneFlags struct {
	listen, dataDir string
	store           string // "wal" (the default) or "etcd"
	etcd            etcdFlags
	sec             rpc.ServerSecurity
	debounce        time.Duration
	loadInterval    time.Duration
	otlpEndpoint    string
	otlpInsecure    bool
	log             config.LogConfig
}

// The defaults of `xlb controlplane`'s flags.
const (
	defaultControlPlaneListen = "127.0.0.1:7070"
	defaultLoadInterval       = time.Second
)

func parseControlplane(args []string) (controlplaneFlags, error) {
	c := controlplaneFlags{listen: defaultControlPlaneListen, store: "wal"}
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(ioDiscard{})
	fs.Usage = func() {}
	fs.StringVar(&c.listen, "listen", c.listen, "")
	fs.StringVar(&c.dataDir, "data-dir", "", "")
	fs.StringVar(&c.store, "store", c.store, "")
	fs.Func("etcd-endpoints", "", func(s string) error {
		c.etcd.endpoints = strings.Split(s, ",")
		return nil
	})
	fs.StringVar(&c.etcd.prefix, "etcd-prefix", "", "")
	fs.StringVar(&c.etcd.caFile, "etcd-cacert", "", "")
	fs.StringVar(&c.etcd.certFile, "etcd-cert", "", "")
	fs.StringVar(&c.etcd.keyFile, "etcd-key", "", "")
	fs.StringVar(&c.etcd.username, "etcd-username", "", "")
	fs.Func("etcd-password", "", func(s string) error {
		c.etcd.password, c.etcd.passwordGiven = s, true
		return nil
	})
	fs.DurationVar(&c.etcd.dialTimeout, "etcd-dial-timeout", defaultEtcdDialTimeout, "")
	fs.DurationVar(&c.etcd.timeout, "etcd-timeout", defaultEtcdTimeout, "")
	fs.StringVar(&c.etcd.replicaID, "replica-id", "", "")
	fs.StringVar(&c.sec.CertFile, "tls-cert", "", "")
	fs.StringVar(&c.sec.KeyFile, "tls-key", "", "")
	fs.StringVar(&c.sec.ClientCAFile, "client-ca", "", "")
	fs.StringVar(&c.sec.AdminTokenFile, "admin-token-file", "", "")
	fs.BoolVar(&c.sec.Insecure, "insecure", false, "")
	fs.DurationVar(&c.debounce, "debounce", discovery.DefaultDebounce, "")
	fs.DurationVar(&c.loadInterval, "load-interval", defaultLoadInterval, "")
	fs.StringVar(&c.otlpEndpoint, "otlp-endpoint", "", "")
	fs.BoolVar(&c.otlpInsecure, "otlp-insecure", false, "")
	fs.Func("log-level", "", func(s string) (err error) { c.log.Level, err = config.ParseLogLevel(s); return err })
	fs.Func("log-format", "", func(s string) (err error) { c.log.JSON, err = config.ParseLogFormat(s); return err })
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch c.store {
	case "wal":
		if c.dataDir == "" {
			return c, errors.New("--data-dir DIR is required: the control plane keeps its backend sets there")
		}
	case "etcd":
		if c.dataDir != "" {
			return c, errors.New("--data-dir is for --store wal: with --store etcd the backend sets are in etcd")
		}
		if !c.etcd.passwordGiven {
			c.etcd.password = os.Getenv(etcdPasswordEnv)
		}
		if err := c.etcd.check(); err != nil {
			return c, err
		}
		if c.etcd.replicaID == "" {
			c.etcd.replicaID = defaultReplicaID()
		}
	default:
		return c, fmt.Errorf("--store %q: want wal or etcd", c.store)
	}
	if c.debounce < 0 {
		return c, errors.New("--debounce must not be negative")
	}
	if c.loadInterval <= 0 {
		return c, errors.New("--load-interval must be positive")
	}
	return c, nil
}

type ioDiscard struct{}

func (ioDiscard) Write(p []byte) (int, error) { return len(p), nil }

var controlplaneUsage = fmt.Sprintf(`Usage:
  xlb controlplane --data-dir DIR [--listen ADDR] [flags]
  xlb controlplane --store etcd --etcd-endpoints URL,... [--listen ADDR] [flags]

Runs the control plane: it keeps backend sets durably in DIR, serves the AdminService (put, get,
list, delete backend sets; list data planes) to operators and tooling, and streams every change
to the data planes connected to its DiscoveryService. gRPC reflection and health are on, so
grpcurl needs no .proto files:

  grpcurl -plaintext 127.0.0.1:7070 list

Flags:
  --listen ADDR              host:port or unix://PATH (default %[1]s)
  --data-dir DIR             where the backend sets are kept (required with --store wal)
  --store wal|etcd           wal (default): a write-ahead log in --data-dir, for one control
                             plane; etcd: the sets in an etcd cluster, shared by every replica
                             run on it, each serving data planes (put on any, pushed by all)
  --etcd-endpoints URLS      the etcd members, comma-separated (http://host:2379,...; https
                             for TLS); required with --store etcd
  --etcd-prefix PREFIX       the root of xlb's keys in etcd (default %[4]s)
  --etcd-cacert FILE         CA certificates that verify etcd's (default: the system's roots)
  --etcd-cert FILE, --etcd-key FILE
                             a client certificate for etcd, for members that require one
  --etcd-username NAME, --etcd-password PASSWORD
                             etcd authentication; the password is taken from $%[5]s
                             when the flag is not given
  --etcd-dial-timeout DURATION
                             how long the start waits for a member of etcd to answer (and to
                             authenticate); past it the start fails with the connection's
                             error (default %[6]v)
  --etcd-timeout DURATION    how long a put or delete waits for etcd before it fails with
                             UNAVAILABLE (default %[7]v)
  --replica-id ID            this replica's name among the others (default: host name and pid)
  --tls-cert FILE, --tls-key FILE
                             serve TLS; required on an address that is not loopback
  --client-ca FILE           verify client certificates: data planes must present one signed
                             by it, and admin callers may instead of the token
  --admin-token-file FILE    admin callers must send "authorization: Bearer TOKEN" (or a client
                             certificate)
  --insecure                 allow plaintext on an address that is not loopback
  --debounce DURATION        how long changes gather before a push (default %[2]v)
  --load-interval DURATION   how often data planes report their load (default %[3]v); GetLoad
                             serves the sums
  --otlp-endpoint HOST:PORT  push the control plane's metrics (pushes, ACKs, NACKs, push
                             duration, data planes connected) to an OpenTelemetry collector,
                             every --load-interval; --otlp-insecure for plaintext
  --log-level LEVEL, --log-format FORMAT
                             as for xlb run
`, defaultControlPlaneListen, discovery.DefaultDebounce, defaultLoadInterval, etcdstore.DefaultPrefix, etcdPasswordEnv,
	defaultEtcdDialTimeout, defaultEtcdTimeout)

// controlplaneCommand is `xlb controlplane`.
func (e *env) controlplaneCommand(args []string) int {
	c, err := parseControlplane(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(e.stdout, controlplaneUsage)
		return exit.OK
	case err != nil:
		return e.usageError("controlplane", err)
	}
	log := c.log.Logger(e.stderr)
	log.Info("starting the control plane", "version", Version())
	ctx, stop := e.stopContext()
	defer stop()
	return serveControlPlane(ctx, log, c)
}

// serveControlPlane runs a control plane until ctx ends.
func serveControlPlane(ctx context.Context, log hclog.Logger, c controlplaneFlags) int {
	var st interface {
		cpserver.Store
		Close() error
	}
	var cli *clientv3.Client // with --store etcd
	switch c.store {
	case "etcd":
		var err error
		if cli, err = c.etcd.client(); err != nil {
			log.Error("cannot reach etcd", "error", err)
			return exit.Failure
		}
		defer cli.Close()
		log = log.With("replica", c.etcd.replicaID)
		est, err := etcdstore.Open(cli, etcdstore.Config{Prefix: c.etcd.prefix, Timeout: c.etcd.timeout, Logger: log.Named("store")})
		if err != nil {
			log.Error("cannot open the store", "error", err)
			return exit.Failure
		}
		st = est
	default:
		wst, err := store.Open(c.dataDir, log.Named("store"))
		if err != nil {
			log.Error("cannot open the store", "error", err)
			return exit.Failure
		}
		st = wst
	}
	defer st.Close()
	srv, hs, err := rpc.NewServer(c.listen, c.sec, log)
	if err != nil {
		log.Error("cannot serve", "error", err)
		return exit.Failure
	}
	ccfg := cpserver.Config{Debounce: c.debounce, LoadInterval: c.loadInterval, Logger: log}
	var discP atomic.Pointer[discovery.Server] // set below; the gauge may be read before
	if c.otlpEndpoint != "" {
		cm, stopOTel, err := telemetry.StartControlPlane(context.Background(), c.otlpEndpoint, c.otlpInsecure, c.loadInterval, Version(), func() int {
			disc := discP.Load()
			if disc == nil {
				return 0
			}
			n := 0
			for _, dp := range disc.DataPlanes() {
				if dp.GetConnected() {
					n++
				}
			}
			return n
		}, log.Named("otel"))
		if err != nil {
			log.Error("cannot export metrics", "error", err)
			return exit.Failure
		}
		defer stopOTel(context.Background())
		ccfg.OnPush, ccfg.OnAnswer = cm.Push, cm.Answer
	}
	cp := cpserver.New(st, ccfg)
	discP.Store(cp.Discovery)
	if cli != nil {
		reg, err := replicas.Start(cli, cp.Discovery, cp.Load, replicas.Config{ID: c.etcd.replicaID, Prefix: c.etcd.prefix,
			Interval: c.loadInterval, Timeout: c.etcd.timeout, Logger: log.Named("replicas")})
		if err != nil {
			cp.Close()
			log.Error("cannot share this replica's data planes", "error", err)
			return exit.Failure
		}
		defer reg.Close() // revokes the lease: this replica's data planes vanish from the others at once
		cp.Share(reg, reg)
	}
	cp.Register(srv)
	network, addr := "tcp", c.listen
	if p, ok := strings.CutPrefix(c.listen, "unix://"); ok {
		network, addr = "unix", p
		os.Remove(p)
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		cp.Close()
		log.Error("cannot listen", "error", err)
		return exit.Failure
	}
	log.Info("control plane listening", "address", ln.Addr().String(), "sets", len(st.List()))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	code := exit.OK
	select {
	case <-ctx.Done():
		log.Info("shutting down", "reason", context.Cause(ctx))
	case err := <-done:
		log.Error("serving failed", "error", err)
		code = exit.Failure
	}
	hs.Shutdown()
	cp.Close() // ends the streams, which GracefulStop would wait for
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		srv.Stop()
		<-stopped
	}
	log.Info("stopped")
	return code
}
