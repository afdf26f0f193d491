// Package cpserver builds a control plane's gRPC services over a store: discovery (the data
// planes' streams of backend sets), load reporting (their per-backend load), and the admin API
// (backend sets, data planes, load) that operators and tooling call. `xlb controlplane` serves them
// on its listener over its durable store; `xlb run` serves them on its state directory's control
// socket over a store in memory, its one data plane being its own supervisor. Both build them here,
// so that the two cannot drift apart.
package cpserver

import (
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	cpadmin "github.com/xlbproxy/xlb/controlplane/admin"
	"github.com/xlbproxy/xlb/controlplane/discovery"
	"github.com/xlbproxy/xlb/controlplane/load"
	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
)

// Config is what differs between control planes. The zero value of every field means the
// documented default.
type Config struct {
	// Debounce is how long changes gather before a push (discovery.Config.Debounce). Zero means
	// discovery's default, 50ms.
	Debounce time.Duration
	// LoadInterval is how often data planes report their load. Zero leaves it to them: 1s.
	LoadInterval time.Duration
	// OnPush and OnAnswer are discovery's hooks, for the control plane's metrics
	// (discovery.Config). Nil means none.
	OnPush   func()
	OnAnswer func(d time.Duration, nack bool)
	// Logger is the control plane's: discovery logs on it, load and admin on its "load" and
	// "admin" sub-loggers. Nil means none.
	Logger hclog.Logger
}

// Store is what the services are built over: store.Store (one machine) or etcdstore.Store
// (replicas on etcd).
type Store interface {
	cpadmin.Store
	discovery.Source
}

// Services are a control plane's services over one store.
type Services struct {
	Discovery *discovery.Server
	Load      *load.Aggregator
	Admin     *cpadmin.Server
}

// New builds the services over st. The store should hold its sets before: a data plane whose
// stream opens on an empty store is told that every set was removed.
func New(st Store, cfg Config) *Services {
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	disc := discovery.NewServer(st, discovery.Config{Debounce: cfg.Debounce, Logger: log, OnPush: cfg.OnPush, OnAnswer: cfg.OnAnswer})
	agg := load.NewAggregator(cfg.LoadInterval, log.Named("load"))
	return &Services{
		Discovery: disc,
		Load:      agg,
		Admin:     cpadmin.NewServer(st, disc, log.Named("admin")).WithLoad(agg),
	}
}

// Share makes the admin API's ListDataPlanes and GetLoad report dps and l instead of this
// replica's own discovery and load: replicas.Registry, which merges every replica's. Call it
// before Register.
func (s *Services) Share(dps cpadmin.DataPlanes, l cpadmin.Load) {
	s.Admin.WithDataPlanes(dps).WithLoad(l)
}

// Register registers every service on srv.
func (s *Services) Register(srv grpc.ServiceRegistrar) {
	discoveryv1.RegisterDiscoveryServiceServer(srv, s.Discovery)
	loadv1.RegisterLoadReportingServiceServer(srv, s.Load)
	adminv1.RegisterAdminServiceServer(srv, s.Admin)
}

// Close ends the data planes' streams (which a graceful stop of the server would wait for) and
// stops discovery's pushes.
func (s *Services) Close() { s.Discovery.Close() }
