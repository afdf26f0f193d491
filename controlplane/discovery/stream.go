package discovery

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// The errors that end a stream, as its peer sees them. gRPC statuses are made here and nowhere
// else in the package.
var (
	errClosed   = status.Error(codes.Unavailable, "control plane closing")
	errReplaced = status.Error(codes.Aborted, "replaced by a newer stream")
	errNoNode   = status.Error(codes.InvalidArgument, "node.id is required on the first request")
)

// dataPlane is what the server knows of one node, kept across its streams.
type dataPlane struct {
	id string

	mu sync.Mutex
	// stream is the node's open stream; nil when it is disconnected.
	stream *stream
	build  string
	// since is when stream opened; until is when the last one closed.
	since, until time.Time
	// applied is the version of every set the node serves, from its latest request.
	applied map[string]string
	// subscribed is the names of the sets the node wants, from its stream's first request and
	// any later one that changed it; nil means every set.
	subscribed map[string]bool
	// rejected is the latest version of each set that the node rejected: not sent to it again
	// before its retry time.
	rejected   map[string]nack
	generation uint64
	workers    []*discoveryv1.WorkerStatus
}

// nack is a node's rejection of one version of a set.
type nack struct {
	version, message string
	at               time.Time
	// times counts the rejections in a row of this version; retryAt is when it is sent again.
	times   int
	retryAt time.Time
}

// takeLocked records what req says of the node: its applied versions, generation and workers.
func (dp *dataPlane) takeLocked(req *discoveryv1.StreamBackendSetsRequest) {
	dp.applied = map[string]string{}
	for name, v := range req.GetApplied() {
		if len(dp.applied) < SetsPerNodeMax && len(name) <= resource.NameBytesMax && len(v) <= versionBytesMax {
			dp.applied[name] = v
		}
	}
	dp.generation = req.GetGeneration()
	dp.workers = req.GetWorkers()[:min(len(req.GetWorkers()), workersPerNodeMax)]
}

// subscription returns the sets that names (a request's subscribe) asks for: nil for every set,
// when names is empty or holds "*". The error names the field.
func subscription(names []string) (map[string]bool, error) {
	if len(names) > SetsPerNodeMax {
		return nil, status.Errorf(codes.InvalidArgument, "subscribe: %d names, at most %d", len(names), SetsPerNodeMax)
	}
	if len(names) == 0 || slices.Contains(names, "*") {
		return nil, nil
	}
	sub := make(map[string]bool, len(names))
	for i, name := range names {
		if err := resource.ValidateName("subscribe["+strconv.Itoa(i)+"]", name); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		sub[name] = true
	}
	return sub, nil
}

// The bounds of what a data plane's requests make the server hold of it and log, whoever sends
// them: what falls outside is dropped (and the drop logged once per request).
const (
	// SetsPerNodeMax bounds the applied sets, and apart the rejected ones, kept of a node, and the
	// names a node may subscribe to (past it, the stream is refused).
	SetsPerNodeMax = 4096
	// NackMessageBytesMax bounds a NACK's message as kept and logged; longer ones are cut.
	NackMessageBytesMax = 1024
	// versionBytesMax bounds a version: the server's are hashes, far shorter.
	versionBytesMax = 128
	// workersPerNodeMax bounds the workers' statuses kept of a node.
	workersPerNodeMax = 1024
	// nackLogsPerRequest bounds the NACK lines one request logs; the rest are counted in one more.
	nackLogsPerRequest = 8
)

// stream is one StreamBackendSets stream once its node is known. Its handler goroutine owns it.
type stream struct {
	dp   *dataPlane
	node *discoveryv1.Node // as on the first request
	peer string            // the peer's address, for the log
	log  hclog.Logger
	// nackRetry is the server's Config.NackRetry; retryAt the earliest retry time of a rejected
	// version of the node, zero when there is none to come.
	nackRetry time.Duration
	retryAt   time.Time

	// nonce is the nonce of the latest response sent; 0 before the first.
	nonce uint64
	// pending is set while the latest response is unanswered; sentAt is when it was sent.
	pending bool
	sentAt  time.Time
	// settled is the sequence number of the snapshot that the node had all of, as far as the
	// stream knows: nothing to send until the snapshot or the node's state changes. 0 is none.
	settled uint64
	// deltas says the node accepts deltas (its first request); sent is the version of each set
	// last sent on this stream, whole or as a delta: a delta goes only to a node that serves its
	// base and was sent it here, so that it holds the base. At most one entry per set of the
	// snapshots sent from (a name removed is forgotten).
	deltas bool
	sent   map[string]string

	// wake receives (buffered 1) when the server published a new snapshot.
	wake chan struct{}
	// replaced is closed when a newer stream of the same node replaced this one.
	replaced chan struct{}
}

// latestNonce is the nonce of the latest response sent, "" before the first.
func (st *stream) latestNonce() string {
	if st.nonce == 0 {
		return ""
	}
	return strconv.FormatUint(st.nonce, 10)
}

// handle steps the stream with a request after the first. It returns the error that ends the
// stream, if it must end.
func (st *stream) handle(req *discoveryv1.StreamBackendSetsRequest, now time.Time) error {
	if n := req.GetNode(); n != nil && !proto.Equal(n, st.node) {
		return status.Errorf(codes.InvalidArgument, "node changed on the stream: node.id %q, build %q, was %q, %q",
			n.GetId(), n.GetBuild(), st.node.GetId(), st.node.GetBuild())
	}
	nonce := req.GetResponseNonce()
	if nonce != "" && nonce != st.latestNonce() {
		st.log.Debug("stale request ignored", "response_nonce", nonce, "latest_nonce", st.latestNonce())
		return nil
	}
	var sub map[string]bool
	if len(req.GetSubscribe()) > 0 {
		var err error
		if sub, err = subscription(req.GetSubscribe()); err != nil {
			return err
		}
	}
	if nonce != "" {
		st.pending = false
	}
	st.settled = 0

	dp := st.dp
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.stream != st {
		return errReplaced
	}
	dp.takeLocked(req)
	if len(req.GetSubscribe()) > 0 {
		dp.subscribed = sub
	}
	logged, unlogged, dropped := 0, 0, 0
	for _, e := range req.GetErrors() {
		name, version, msg := e.GetName(), e.GetVersion(), e.GetMessage()
		prev, known := dp.rejected[name]
		if !known && len(dp.rejected) >= SetsPerNodeMax || len(name) > resource.NameBytesMax || len(version) > versionBytesMax {
			dropped++
			continue
		}
		if len(msg) > NackMessageBytesMax {
			msg = strings.ToValidUTF8(msg[:NackMessageBytesMax], "") + "…"
		}
		times := 1
		if known && prev.version == version {
			times = prev.times + 1
		}
		wait := st.nackRetry << min(times-1, 5)
		dp.rejected[name] = nack{version: version, message: msg, at: now, times: times, retryAt: now.Add(min(wait, nackRetryMaxFactor*st.nackRetry))}
		switch {
		case known && prev.version == version && prev.message == msg:
			// Logged when it first came.
		case logged < nackLogsPerRequest:
			st.log.Warn("data plane rejected a set", "set", name, "version", version, "message", msg)
			logged++
		default:
			unlogged++
		}
	}
	if unlogged > 0 || dropped > 0 {
		st.log.Warn("data plane rejected more sets than are logged one by one", "not_logged", unlogged,
			"dropped", dropped, "sets_per_node_max", SetsPerNodeMax)
	}
	if len(req.GetErrors()) == 0 && nonce != "" {
		st.log.Debug("ACK", "response_nonce", nonce, "generation", req.GetGeneration())
	}
	return nil
}

// next returns the response that the stream must send now given snap, or nil when there is
// none: one is unanswered, or the node has everything. It counts the response as sent. A
// response holds sets up to resource.ResponseBytesTarget (at least one): the node's answer makes
// the stream look again, and the rest go in the next one.
func (st *stream) next(snap *snapshot, now time.Time) (*discoveryv1.StreamBackendSetsResponse, error) {
	if st.pending || st.settled == snap.seq && (st.retryAt.IsZero() || now.Before(st.retryAt)) {
		return nil, nil
	}
	dp := st.dp
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.stream != st {
		return nil, errReplaced
	}
	sets, removed := diff(snap, dp.applied, dp.rejected, dp.subscribed, now)
	// A rejection is forgotten once its set is gone and the node does not serve it; the earliest
	// retry of the others wakes the stream.
	st.retryAt = time.Time{}
	for name, r := range dp.rejected {
		if _, ok := snap.sets[name]; !ok {
			if _, ok := dp.applied[name]; !ok {
				delete(dp.rejected, name)
				continue
			}
		}
		if r.retryAt.After(now) && (st.retryAt.IsZero() || r.retryAt.Before(st.retryAt)) {
			st.retryAt = r.retryAt
		}
	}
	if len(sets) == 0 && len(removed) == 0 {
		st.settled = snap.seq
		return nil, nil
	}
	records := make([][]byte, len(sets))
	deltas := 0
	for i, w := range sets {
		records[i] = w.record
		if st.deltas && w.delta != nil && dp.applied[w.name] == w.delta.base && st.sent[w.name] == w.delta.base {
			records[i] = w.delta.record
		}
	}
	n, size := 0, 0
	for n < len(sets) && (n == 0 || size+len(records[n]) <= resource.ResponseBytesTarget) {
		size += len(records[n])
		if len(records[n]) != len(sets[n].record) {
			deltas++
		}
		st.sent[sets[n].name] = sets[n].version
		n++
	}
	for _, name := range removed {
		delete(st.sent, name)
	}
	st.nonce++
	st.pending = true
	st.log.Debug("sending", "nonce", st.nonce, "sets", n-deltas, "deltas", deltas, "bytes", size, "removed", len(removed), "sets_after", len(sets)-n)
	return response(st.latestNonce(), records[:n], removed), nil
}

// StreamBackendSets is the stream of one data plane; see the package comment for its rules.
func (s *Server) StreamBackendSets(ss discoveryv1.DiscoveryService_StreamBackendSetsServer) (err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	s.handlers.Add(1)
	s.mu.Unlock()
	defer s.handlers.Done()

	ctx := ss.Context()
	reqs := make(chan *discoveryv1.StreamBackendSetsRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := ss.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	// ended turns the end of the receiving side into the stream's result.
	ended := func(err error) error {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}

	var first *discoveryv1.StreamBackendSetsRequest
	select {
	case first = <-reqs:
	case err := <-recvErr:
		return ended(err)
	case <-s.done:
		return errClosed
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	if first.GetNode().GetId() == "" {
		return errNoNode
	}
	sub, err := subscription(first.GetSubscribe())
	if err != nil {
		return err
	}
	st := &stream{
		nackRetry: s.nackRetry,
		node:      first.GetNode(),
		peer:      peerOf(ctx),
		log:       s.log.With("node", first.GetNode().GetId()),
		wake:      make(chan struct{}, 1),
		replaced:  make(chan struct{}),
		deltas:    first.GetAcceptDeltas(),
		sent:      make(map[string]string),
	}
	if first.GetResponseNonce() != "" || len(first.GetErrors()) > 0 {
		st.log.Debug("first request answers no response: its nonce and errors are ignored",
			"response_nonce", first.GetResponseNonce(), "errors", len(first.GetErrors()))
	}
	if !s.connect(st, first, sub) {
		return errClosed
	}
	defer func() { s.disconnect(st, err) }()

	for {
		resp, err := st.next(s.snap.Load(), s.now())
		if err != nil {
			return err
		}
		if resp != nil {
			if err := ss.Send(resp); err != nil {
				return err
			}
			st.sentAt = s.now()
			if s.onPush != nil {
				s.onPush()
			}
		}
		// A rejected version's retry, when no response is unanswered. (An unstopped timer is
		// collected once unreferenced.)
		var retry <-chan time.Time
		if !st.retryAt.IsZero() && !st.pending {
			retry = time.After(st.retryAt.Sub(s.now()))
		}
		select {
		case <-retry:
		case req := <-reqs:
			answered := st.pending && req.GetResponseNonce() != "" && req.GetResponseNonce() == st.latestNonce()
			now := s.now()
			if err := st.handle(req, now); err != nil {
				return err
			}
			if answered && s.onAnswer != nil {
				s.onAnswer(now.Sub(st.sentAt), len(req.GetErrors()) > 0)
			}
		case <-st.wake:
		case err := <-recvErr:
			return ended(err)
		case <-st.replaced:
			return errReplaced
		case <-s.done:
			return errClosed
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// peerOf is the address of the stream's peer, "" when gRPC does not know it.
func peerOf(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
