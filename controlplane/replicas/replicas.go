package replicas

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/xlbproxy/xlb/controlplane/load"
	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
)

// The defaults of Config's zero values.
const (
	DefaultPrefix           = "/xlb"
	DefaultTTL              = 5 * time.Second
	DefaultInterval         = time.Second
	DefaultTimeout          = 2 * time.Second
	DefaultKeepDisconnected = 10 * time.Minute
)

// Bounds of what one replica writes.
const (
	// txnOpsMax and txnBytesMax bound one transaction of a publish: etcd refuses more than 128
	// operations (--max-txn-ops) or 1.5 MiB (--max-request-bytes) by default.
	txnOpsMax   = 64
	txnBytesMax = 1 << 20
	// valueBytesMax bounds one key's value: a data plane whose status or load is larger (tens of
	// thousands of backends) is not shared, and that is logged.
	valueBytesMax = txnBytesMax - 1024
)

// Local is this replica's own data planes: the discovery server.
type Local interface {
	DataPlanes() []*adminv1.DataPlane
}

// LocalLoad is this replica's own load reports: the load aggregator.
type LocalLoad interface {
	Load() *adminv1.GetLoadResponse
	Health(node string) ([]*loadv1.BackendHealth, time.Time)
}

// Config is a Registry's. The zero value of every field but ID means its documented default; Start
// reads it once.
type Config struct {
	// ID names this replica among the others: its keys are under <Prefix>/replicas/<ID>/. Two
	// live replicas must never share one. Required; it must not contain "/".
	ID string
	// Prefix is the root of xlb's keys in etcd, as etcdstore.Config.Prefix. Empty means "/xlb".
	Prefix string
	// TTL is the lease of this replica's keys: they vanish that long after it stops renewing it
	// (it died, or lost etcd). Zero means 5s; it is rounded up to whole seconds, at least 2.
	TTL time.Duration
	// Interval is how often this replica writes what changed of its data planes and their load
	// (at most once per Interval, so load totals in etcd are up to one Interval old). Zero means 1s.
	Interval time.Duration
	// Timeout bounds each request to etcd: a publish, and the read of the others' keys that
	// DataPlanes and Load make. Zero means 2s.
	Timeout time.Duration
	// KeepDisconnected is how long a data plane that disconnected from this replica is still
	// shared with the others (its status says when it left). Zero means 10 minutes.
	KeepDisconnected time.Duration
	// Logger receives lease losses and failed writes and reads of etcd (warn). Nil means none.
	Logger hclog.Logger
}

// Registry shares this replica's data planes and their load with the other replicas through
// etcd, and merges theirs with its own. Its methods are safe for concurrent use.
type Registry struct {
	cli       *clientv3.Client
	id        string
	root      string // <prefix>/replicas/
	own       string // root + id + "/"
	ttl       int64  // seconds
	interval  time.Duration
	timeout   time.Duration
	keepGone  time.Duration
	local     Local
	localLoad LocalLoad
	log       hclog.Logger
	now       func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// The publish loop's own state.
	lease   clientv3.LeaseID // 0: none yet, or lost
	alive   <-chan *clientv3.LeaseKeepAliveResponse
	written map[string][]byte // what etcd holds of this replica's keys, as far as it knows; nil: unknown
	tooBig  map[string]bool   // keys not written for their size, logged once

	publishes atomic.Int64 // publishes that succeeded, for tests

	mu       sync.Mutex
	lastWarn map[string]time.Time // by reason, to log each at most once per minute
}

// Start checks cfg and starts sharing this replica's state; the first write happens at once.
func Start(cli *clientv3.Client, local Local, localLoad LocalLoad, cfg Config) (*Registry, error) {
	switch {
	case cfg.ID == "":
		return nil, errors.New("replicas: the replica id is required")
	case strings.Contains(cfg.ID, "/"):
		return nil, fmt.Errorf("replicas: replica id %q: must not contain /", cfg.ID)
	case cfg.TTL < 0 || cfg.Interval < 0 || cfg.Timeout < 0 || cfg.KeepDisconnected < 0:
		return nil, errors.New("replicas: negative duration in the config")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.KeepDisconnected == 0 {
		cfg.KeepDisconnected = DefaultKeepDisconnected
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	ttl := max(int64((cfg.TTL+time.Second-1)/time.Second), 2)
	ctx, cancel := context.WithCancel(context.Background())
	root := cfg.Prefix + "/replicas/"
	r := &Registry{
		cli: cli, id: cfg.ID, root: root, own: root + cfg.ID + "/", ttl: ttl,
		interval: cfg.Interval, timeout: cfg.Timeout, keepGone: cfg.KeepDisconnected,
		local: local, localLoad: localLoad, log: cfg.Logger.With("replica", cfg.ID), now: time.Now,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		tooBig: map[string]bool{}, lastWarn: map[string]time.Time{},
	}
	go r.run()
	return r, nil
}

// ID is this replica's id.
func (r *Registry) ID() string { return r.id }

// Close stops sharing and revokes this replica's lease, so that its keys vanish at once rather
// than TTL later.
func (r *Registry) Close() {
	r.cancel()
	<-r.done
	if r.lease != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		defer cancel()
		if _, err := r.cli.Revoke(ctx, r.lease); err != nil {
			r.log.Warn("could not revoke the lease: this replica's keys vanish when it expires", "ttl_seconds", r.ttl, "error", err)
		}
	}
}

func (r *Registry) run() {
	defer close(r.done)
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		if err := r.publish(); err == nil {
			r.publishes.Add(1)
		} else if r.ctx.Err() == nil {
			r.warn("publish", "could not share this replica's data planes in etcd; trying again", "every", r.interval, "error", err)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// warn logs msg at most once a minute for each reason.
func (r *Registry) warn(reason, msg string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.lastWarn[reason]) >= time.Minute {
		r.lastWarn[reason] = now
		r.log.Warn(msg, args...)
	}
}

// dataPlaneKey and loadKey are where a replica keeps a data plane's status and its load.
func dataPlaneKey(own, node string) string { return own + "dataplanes/" + node }
func loadKey(own, node string) string      { return own + "load/" + node }

// desired is every key this replica should hold and its value.
func (r *Registry) desired() map[string][]byte {
	out := map[string][]byte{}
	now := r.now()
	marshal := func(key string, m proto.Message) {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			r.warn("encode", "a data plane's status cannot be encoded: it is not shared", "key", key, "error", err)
			return
		}
		if len(b) > valueBytesMax {
			if !r.tooBig[key] {
				r.tooBig[key] = true
				r.log.Warn("a data plane's status or load is too large for etcd: it is not shared", "key", key, "bytes", len(b), "max", valueBytesMax)
			}
			return
		}
		out[key] = b
	}
	shared := map[string]bool{}
	for _, dp := range r.local.DataPlanes() {
		if !dp.GetConnected() && now.Sub(dp.GetDisconnectedAt().AsTime()) > r.keepGone {
			continue
		}
		shared[dp.GetNodeId()] = true
		if r.localLoad != nil {
			if h, at := r.localLoad.Health(dp.GetNodeId()); len(h) > 0 {
				dp.BackendHealth, dp.BackendHealthAt = h, timestampOf(at)
			}
		}
		marshal(dataPlaneKey(r.own, dp.GetNodeId()), dp)
	}
	if r.localLoad != nil {
		for _, l := range r.localLoad.Load().GetDataPlanes() {
			if shared[l.GetNodeId()] {
				marshal(loadKey(r.own, l.GetNodeId()), l)
			}
		}
	}
	return out
}

// publish makes etcd hold what desired says, writing only what changed since the last publish.
func (r *Registry) publish() error {
	if err := r.ensureLease(); err != nil {
		return err
	}
	if r.written == nil {
		if err := r.resync(); err != nil {
			return err
		}
	}
	want := r.desired()
	var ops []clientv3.Op
	var keys []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if old, ok := r.written[k]; !ok || string(old) != string(want[k]) {
			ops = append(ops, clientv3.OpPut(k, string(want[k]), clientv3.WithLease(r.lease)))
			keys = append(keys, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.written)) {
		if _, ok := want[k]; !ok {
			ops = append(ops, clientv3.OpDelete(k))
			keys = append(keys, k)
		}
	}
	for start := 0; start < len(ops); {
		end, bytes := start, 0
		for end < len(ops) && end-start < txnOpsMax && (end == start || bytes+len(want[keys[end]]) <= txnBytesMax) {
			bytes += len(want[keys[end]]) + len(keys[end])
			end++
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
		_, err := r.cli.Txn(ctx).Then(ops[start:end]...).Commit()
		cancel()
		if err != nil {
			r.written = nil // what landed is unknown: read it back next time
			return err
		}
		for _, k := range keys[start:end] {
			if v, ok := want[k]; ok {
				r.written[k] = v
			} else {
				delete(r.written, k)
			}
		}
		start = end
	}
	return nil
}

// ensureLease grants this replica's lease when it has none, or lost it, and keeps it alive.
func (r *Registry) ensureLease() error {
	for r.lease != 0 {
		select {
		case _, ok := <-r.alive: // a renewal; drained here, or the client drops them
			if ok {
				continue
			}
			// The keep-alive ended: the lease expired (etcd was out of reach for its TTL), and
			// so did the keys.
			r.warn("lease", "this replica's lease was lost: its keys are written again under a new one", "lease", int64(r.lease))
			r.lease, r.written = 0, nil
		default:
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	defer cancel()
	g, err := r.cli.Grant(ctx, r.ttl)
	if err != nil {
		return fmt.Errorf("grant a lease: %w", err)
	}
	alive, err := r.cli.KeepAlive(r.ctx, g.ID)
	if err != nil {
		return fmt.Errorf("keep the lease alive: %w", err)
	}
	r.lease, r.alive, r.written = g.ID, alive, nil
	return nil
}

// resync learns which keys of this replica etcd holds (from an earlier lease, or a publish whose
// outcome is unknown): each is written again, or deleted.
func (r *Registry) resync() error {
	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	defer cancel()
	resp, err := r.cli.Get(ctx, r.own, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("read this replica's keys: %w", err)
	}
	r.written = map[string][]byte{}
	for _, kv := range resp.Kvs {
		r.written[string(kv.Key)] = nil // a value that nothing equals: written again if wanted
	}
	return nil
}

// replicaState is what one replica shares: its data planes and their load, by node id.
type replicaState struct {
	dps   map[string]*adminv1.DataPlane
	loads map[string]*adminv1.DataPlaneLoad
}

// states returns what every replica shares, this one's read locally, the others' from etcd (a
// serializable read of one member, so that it answers without a quorum). When etcd cannot be
// read, it returns this replica's alone and logs that.
func (r *Registry) states() map[string]*replicaState {
	self := &replicaState{dps: map[string]*adminv1.DataPlane{}, loads: map[string]*adminv1.DataPlaneLoad{}}
	for _, dp := range r.local.DataPlanes() {
		self.dps[dp.GetNodeId()] = dp
	}
	if r.localLoad != nil {
		for _, l := range r.localLoad.Load().GetDataPlanes() {
			self.loads[l.GetNodeId()] = l
		}
	}
	out := map[string]*replicaState{r.id: self}
	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	defer cancel()
	resp, err := r.cli.Get(ctx, r.root, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		r.warn("read", "could not read the other replicas' data planes from etcd: this replica's alone are shown", "error", err)
		return out
	}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), r.root)
		id, rest, ok := strings.Cut(rest, "/")
		if !ok || id == r.id {
			continue
		}
		kind, node, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		st := out[id]
		if st == nil {
			st = &replicaState{dps: map[string]*adminv1.DataPlane{}, loads: map[string]*adminv1.DataPlaneLoad{}}
			out[id] = st
		}
		switch kind {
		case "dataplanes":
			var dp adminv1.DataPlane
			if err := proto.Unmarshal(kv.Value, &dp); err == nil && dp.GetNodeId() == node {
				st.dps[node] = &dp
			}
		case "load":
			var l adminv1.DataPlaneLoad
			if err := proto.Unmarshal(kv.Value, &l); err == nil && l.GetNodeId() == node {
				st.loads[node] = &l
			}
		}
	}
	return out
}

// DataPlanes returns every data plane of every replica, by node id: for a node that more than one
// replica knows (it moved), the status of the replica it is connected to, else of the one it left
// last.
func (r *Registry) DataPlanes() []*adminv1.DataPlane {
	return mergeDataPlanes(r.states())
}

// Load returns the load of every data plane of every replica, and the sums.
func (r *Registry) Load() *adminv1.GetLoadResponse {
	return mergeLoad(r.states())
}

// Health is this replica's local view of node's health (admin.Load): another replica's data plane
// comes with its health from DataPlanes.
func (r *Registry) Health(node string) ([]*loadv1.BackendHealth, time.Time) {
	if r.localLoad == nil {
		return nil, time.Time{}
	}
	return r.localLoad.Health(node)
}

// newer tells whether data-plane status a is more current than b: connected beats disconnected;
// then the later connection, or the later disconnection.
func newer(a, b *adminv1.DataPlane) bool {
	if a.GetConnected() != b.GetConnected() {
		return a.GetConnected()
	}
	if a.GetConnected() {
		return a.GetConnectedSince().AsTime().After(b.GetConnectedSince().AsTime())
	}
	return a.GetDisconnectedAt().AsTime().After(b.GetDisconnectedAt().AsTime())
}

// owners returns, by node id, the replica whose status of the node is the most current.
func owners(states map[string]*replicaState) map[string]string {
	out := map[string]string{}
	best := map[string]*adminv1.DataPlane{}
	for _, id := range slices.Sorted(maps.Keys(states)) {
		for node, dp := range states[id].dps {
			if b, ok := best[node]; !ok || newer(dp, b) {
				best[node], out[node] = dp, id
			}
		}
	}
	return out
}

func mergeDataPlanes(states map[string]*replicaState) []*adminv1.DataPlane {
	own := owners(states)
	out := make([]*adminv1.DataPlane, 0, len(own))
	for node, id := range own {
		out = append(out, states[id].dps[node])
	}
	slices.SortFunc(out, func(a, b *adminv1.DataPlane) int { return cmp.Compare(a.GetNodeId(), b.GetNodeId()) })
	return out
}

// mergeLoad adds the totals of a node that reported to several replicas (each report went to one,
// so none is counted twice); its in-flight gauges are those of the replica that has its status
// (see DataPlanes), or the first replica's by id for a node none has a status of.
func mergeLoad(states map[string]*replicaState) *adminv1.GetLoadResponse {
	own := owners(states)
	byNode := map[string]load.Totals{}
	for _, id := range slices.Sorted(maps.Keys(states)) {
		for node, l := range states[id].loads {
			tot := byNode[node]
			gauges := own[node] == id
			if tot == nil {
				tot = load.Totals{}
				byNode[node] = tot
				gauges = gauges || own[node] == ""
			}
			for _, b := range l.GetBackends() {
				t := tot.Add(b)
				if gauges {
					t.InFlight = b.GetInFlight()
				}
			}
		}
	}
	all := load.Totals{}
	res := &adminv1.GetLoadResponse{}
	for _, node := range slices.Sorted(maps.Keys(byNode)) {
		backends := byNode[node].Sorted()
		for _, b := range backends {
			all.Add(b).InFlight += b.GetInFlight()
		}
		res.DataPlanes = append(res.DataPlanes, &adminv1.DataPlaneLoad{NodeId: node, Backends: backends})
	}
	res.Backends = all.Sorted()
	return res
}

func timestampOf(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
