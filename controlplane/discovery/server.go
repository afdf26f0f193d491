package discovery

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/xlbproxy/xlb/controlplane/resource"
	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// DataPlanesMax bounds the nodes the server remembers. When a new node connects at the bound, the
// disconnected node that left first is forgotten; nodes that are connected are never forgotten.
const DataPlanesMax = 100_000

// DefaultDebounce is what a zero Config.Debounce means.
const DefaultDebounce = 50 * time.Millisecond

// defaultNackRetry is Config.NackRetry's zero value; nackRetryMaxFactor bounds its doubling.
const (
	defaultNackRetry   = 30 * time.Second
	nackRetryMaxFactor = 32
)

// Source is where the server reads backend sets: the store.
type Source interface {
	// Snapshot returns every set by name. The map and the sets are never modified afterwards.
	Snapshot() map[string]resource.Versioned
	// Subscribe returns a channel that receives after each change (buffered 1: changes coalesce)
	// and a func that cancels the subscription. A closed channel means nothing will change.
	Subscribe() (<-chan struct{}, func())
}

// Config is the behaviour of a Server. The zero value of every field means the documented
// default; NewServer reads it once.
type Config struct {
	// Debounce is how long after a change of the Source the server pushes it; every change within
	// that window goes out in the same push. Zero means 50ms; NewServer panics on a negative one.
	Debounce time.Duration
	// Logger receives connects and disconnects (info), NACKs (warn), sets that cannot be encoded
	// (error), and ACKs and stale requests (debug). Nil means no logging.
	Logger hclog.Logger
	// OnAnswer, when set, is called for every ACK and NACK with the time from the response's send
	// to its answer; OnPush for every response sent. The control plane's metrics hang here.
	OnAnswer func(d time.Duration, nack bool)
	OnPush   func()
	// NackRetry is how long after a node rejected a version of a set it is sent that version
	// again (its data plane may since have room, or a fix): the n-th rejection in a row of one
	// version waits n-fold doubled, at most 32 times NackRetry. Zero means 30s.
	NackRetry time.Duration
}

// Server is the DiscoveryService: it streams the sets of its Source to data planes. Its methods
// are safe for concurrent use.
type Server struct {
	discoveryv1.UnimplementedDiscoveryServiceServer

	src       Source
	debounce  time.Duration
	nackRetry time.Duration
	onAnswer  func(time.Duration, bool)
	onPush    func()
	log       hclog.Logger
	now       func() time.Time

	// snap is the snapshot that streams send from, replaced after each debounced change.
	snap atomic.Pointer[snapshot]

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	loop      sync.WaitGroup // the push loop

	mu sync.Mutex
	// closed is set by Close; no stream starts afterwards.
	closed bool
	// handlers counts the stream handlers running, so that Close can wait for them.
	handlers sync.WaitGroup
	// nodes is every node seen since the start (up to DataPlanesMax), by id.
	nodes map[string]*dataPlane
	// live is every stream that a node has registered and that has not ended.
	live map[*stream]struct{}
}

// NewServer returns a server of src's sets. It subscribes to src at once; Close ends that.
func NewServer(src Source, cfg Config) *Server {
	if cfg.Debounce < 0 {
		panic("discovery: negative Config.Debounce")
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.NackRetry <= 0 {
		cfg.NackRetry = defaultNackRetry
	}
	s := &Server{
		src:       src,
		nackRetry: cfg.NackRetry,
		debounce:  cfg.Debounce,
		onAnswer:  cfg.OnAnswer,
		onPush:    cfg.OnPush,
		log:       cfg.Logger.Named("discovery"),
		now:       time.Now,
		done:      make(chan struct{}),
		nodes:     make(map[string]*dataPlane),
		live:      make(map[*stream]struct{}),
	}
	// Subscribe before the first snapshot, so that no change falls between them.
	changes, cancel := src.Subscribe()
	s.publish(src.Snapshot())
	s.loop.Add(1)
	go s.run(changes, cancel)
	return s
}

// Close stops the server: open streams end with UNAVAILABLE, new ones are refused the same way,
// and Close returns once the push loop and every stream handler have ended. A handler blocked
// sending to a peer that does not read ends when its connection does (grpc.Server.Stop).
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)
	})
	s.loop.Wait()
	s.handlers.Wait()
}

// run is the push loop: it publishes a new snapshot Debounce after a change and wakes every
// stream.
func (s *Server) run(changes <-chan struct{}, cancel func()) {
	defer s.loop.Done()
	defer cancel()
	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-s.done:
			if timer != nil {
				timer.Stop()
			}
			return
		case _, ok := <-changes:
			if !ok {
				changes = nil // the source will not change again
				continue
			}
			if fire == nil {
				timer = time.NewTimer(s.debounce)
				fire = timer.C
			}
		case <-fire:
			fire = nil
			s.publish(s.src.Snapshot())
			s.wakeAll()
		}
	}
}

// publish makes entries the snapshot that streams send from.
func (s *Server) publish(entries map[string]resource.Versioned) {
	s.snap.Store(newSnapshot(s.snap.Load(), entries, func(name string, err error) {
		s.log.Error("set cannot be encoded: it is not sent", "set", name, "error", err)
	}))
}

// wakeAll tells every stream that the snapshot changed.
func (s *Server) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.live {
		select {
		case st.wake <- struct{}{}:
		default: // already told
		}
	}
}

// DataPlanes returns every node seen since the start (up to DataPlanesMax), connected or not, by
// node id.
func (s *Server) DataPlanes() []*adminv1.DataPlane {
	s.mu.Lock()
	dps := slices.Collect(maps.Values(s.nodes))
	s.mu.Unlock()
	slices.SortFunc(dps, func(a, b *dataPlane) int { return cmp.Compare(a.id, b.id) })
	out := make([]*adminv1.DataPlane, len(dps))
	for i, dp := range dps {
		out[i] = dp.status()
	}
	return out
}

// status is dp as the admin service shows it.
func (dp *dataPlane) status() *adminv1.DataPlane {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	m := &adminv1.DataPlane{
		NodeId:     dp.id,
		Build:      dp.build,
		Connected:  dp.stream != nil,
		Generation: dp.generation,
		Workers:    dp.workers,
	}
	if dp.stream != nil {
		m.ConnectedSince = timestamppb.New(dp.since)
	} else {
		m.DisconnectedAt = timestamppb.New(dp.until)
	}
	names := make([]string, 0, len(dp.applied)+len(dp.rejected))
	for name := range dp.applied {
		names = append(names, name)
	}
	for name := range dp.rejected {
		if _, ok := dp.applied[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	m.Sets = make([]*adminv1.SetStatus, len(names))
	for i, name := range names {
		ss := &adminv1.SetStatus{Name: name, AppliedVersion: dp.applied[name]}
		if r, ok := dp.rejected[name]; ok {
			ss.LastNack = &adminv1.Nack{Version: r.version, Message: r.message, At: timestamppb.New(r.at)}
		}
		m.Sets[i] = ss
	}
	return m
}

// connect registers st as the stream of the node of its first request, which subscribes to sub,
// replacing the node's previous stream, and reports whether the server is still open.
func (s *Server) connect(st *stream, first *discoveryv1.StreamBackendSetsRequest, sub map[string]bool) bool {
	node := first.GetNode()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	dp, ok := s.nodes[node.GetId()]
	if !ok {
		if len(s.nodes) >= DataPlanesMax {
			s.forgetLocked()
		}
		dp = &dataPlane{id: node.GetId(), rejected: make(map[string]nack)}
		s.nodes[dp.id] = dp
	}
	s.live[st] = struct{}{}
	st.dp = dp

	dp.mu.Lock()
	old := dp.stream
	dp.stream = st
	dp.build = node.GetBuild()
	dp.since = s.now()
	dp.until = time.Time{}
	dp.takeLocked(first)
	dp.subscribed = sub
	dp.mu.Unlock()
	s.mu.Unlock()

	subscribed := "every set"
	if sub != nil {
		subscribed = strings.Join(slices.Sorted(maps.Keys(sub)), ",")
	}
	if old != nil {
		close(old.replaced)
		// Warn: either the data plane reconnected before the server saw its old stream end, or
		// two processes use one node id, and each stream replaces the other's.
		st.log.Warn("data plane connected again: its previous stream is replaced (a second process with this node id?)",
			"build", node.GetBuild(), "peer", st.peer, "previous_peer", old.peer, "subscribe", subscribed)
	} else {
		st.log.Info("data plane connected", "build", node.GetBuild(), "peer", st.peer, "subscribe", subscribed)
	}
	return true
}

// forgetLocked drops the node that disconnected first, if any node is disconnected.
func (s *Server) forgetLocked() {
	var oldest *dataPlane
	for _, dp := range s.nodes {
		dp.mu.Lock()
		if dp.stream == nil && (oldest == nil || dp.until.Before(oldest.until)) {
			oldest = dp
		}
		dp.mu.Unlock()
	}
	if oldest != nil {
		delete(s.nodes, oldest.id)
	}
}

// disconnect ends st: its node is disconnected unless another stream replaced st.
func (s *Server) disconnect(st *stream, err error) {
	s.mu.Lock()
	delete(s.live, st)
	s.mu.Unlock()

	dp := st.dp
	dp.mu.Lock()
	current := dp.stream == st
	if current {
		dp.stream = nil
		dp.until = s.now()
	}
	dp.mu.Unlock()
	if current {
		st.log.Info("data plane disconnected", "error", err)
	} else {
		st.log.Debug("replaced stream ended", "error", err)
	}
}
