package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/backoff"
)

// Defaults of Config's zero values.
const (
	defaultBackoffMin = 100 * time.Millisecond
	defaultBackoffMax = 15 * time.Second
)

// WindowBytes is the HTTP/2 flow-control window, per stream and per connection, that DialOptions
// gives a data plane's connection to its control plane: how much the control plane may send before
// the data plane reads. A fixed window turns off grpc-go's BDP estimation, whose ping after the
// first data since the last one is a ping and its answer per push per data plane (the control
// plane's pushes are one message each, seconds apart). 4 MiB takes a message of the largest set
// (resource.MessageBytesMax) in five round trips; the data plane reads each message as it comes,
// so it buffers no more than that.
const WindowBytes = 4 << 20

// DialOptions are the options of a data plane's connection to a control plane beside its
// credentials: fixed flow-control windows (WindowBytes) and no message size limit below
// resource.MessageBytesMax either way.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(WindowBytes), grpc.WithInitialConnWindowSize(WindowBytes),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(resource.MessageBytesMax), grpc.MaxCallSendMsgSize(resource.MessageBytesMax)),
	}
}

// ControlPlane is one control plane that Run may stream from.
type ControlPlane struct {
	// Address names it in logs; empty means its index in Config.ControlPlanes.
	Address string
	// Conn is a connection to it; required. Run opens its streams on it and never closes it.
	Conn grpc.ClientConnInterface
}

// Config is what Run needs of the data plane. ControlPlanes, Node, Initial and Apply are
// required; the zero value of every other field means the documented default.
type Config struct {
	// ControlPlanes are the control planes to stream from, in order: Run opens its first stream
	// on the first, and after a stream fails, the next one on the next (after the last, the first
	// again). It stays on one for as long as its streams last; it never goes back to an earlier one
	// by itself. At least one; none may have a nil Conn.
	ControlPlanes []ControlPlane
	// Node identifies the data plane; Node.Id is required.
	Node *discoveryv1.Node
	// Subscribe names the sets the data plane wants (those its listeners serve): it is sent those
	// only, and any other it serves is removed. Nil means every set.
	Subscribe []string
	// Initial returns what the data plane serves before the first stream (from its region): the
	// version of each set by name, its generation and its workers. Run calls it once, first.
	Initial func() (applied map[string]string, generation uint64, workers []*discoveryv1.WorkerStatus)
	// Apply applies a response, from Run's goroutine, one at a time. It applies what it can and
	// returns the versions served once it is done (every set), the sets it rejected (name, version,
	// message each), its generation and its workers. It must return only once the change is in
	// force: its return is the ACK (no rejected set) or the NACK. Its ctx is Run's. The response
	// holds whole sets only (Run made each delta whole), which Apply must not modify: Run keeps
	// those served, to make the next deltas of them.
	Apply func(ctx context.Context, resp *discoveryv1.StreamBackendSetsResponse) (applied map[string]string, rejected []*discoveryv1.SetError, generation uint64, workers []*discoveryv1.WorkerStatus)
	// BackoffMin and BackoffMax bound the wait before a stream is opened again: a random duration
	// below BackoffMin after the first failure, below twice that after the second, and so on up to
	// BackoffMax. Zero means 100ms and 15s.
	BackoffMin, BackoffMax time.Duration
	// Logger receives connects and disconnects (info, warn), NACKs (warn) and ACKs (debug). Nil
	// means no logging.
	Logger hclog.Logger
}

// validate checks c and fills in its defaults.
func (c *Config) validate() error {
	if len(c.ControlPlanes) == 0 {
		return errors.New("xds: Config.ControlPlanes is empty")
	}
	for i, cp := range c.ControlPlanes {
		if cp.Conn == nil {
			return fmt.Errorf("xds: Config.ControlPlanes[%d] (%q) has no Conn", i, cp.Address)
		}
	}
	switch {
	case c.Node.GetId() == "":
		return errors.New("xds: Config.Node.Id is required")
	case c.Initial == nil:
		return errors.New("xds: Config.Initial is required")
	case c.Apply == nil:
		return errors.New("xds: Config.Apply is required")
	case c.BackoffMin < 0 || c.BackoffMax < 0:
		return errors.New("xds: negative Config.BackoffMin or BackoffMax")
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = defaultBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = defaultBackoffMax
	}
	if c.BackoffMax < c.BackoffMin {
		return fmt.Errorf("xds: Config.BackoffMax %v is below BackoffMin %v", c.BackoffMax, c.BackoffMin)
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	c.ControlPlanes = slices.Clone(c.ControlPlanes)
	for i := range c.ControlPlanes {
		if c.ControlPlanes[i].Address == "" {
			c.ControlPlanes[i].Address = strconv.Itoa(i)
		}
	}
	return nil
}

// Run keeps a stream open to one of cfg.ControlPlanes and applies what it sends, until ctx ends;
// then it returns ctx's error. It never gives up otherwise. It returns another error only for an
// invalid cfg.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	c := &client{cfg: cfg, log: cfg.Logger.Named("xds"), bases: map[string]*discoveryv1.VersionedBackendSet{}}
	c.applied, c.generation, c.workers = cfg.Initial()
	b := backoff.Backoff{Base: cfg.BackoffMin, Max: cfg.BackoffMax, Jitter: backoff.Full}
	for i := 0; ; i = (i + 1) % len(cfg.ControlPlanes) {
		cp := cfg.ControlPlanes[i]
		responded, err := c.stream(ctx, cp)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if responded {
			b.Reset()
		}
		wait := b.Next()
		next := cfg.ControlPlanes[(i+1)%len(cfg.ControlPlanes)].Address
		c.log.Warn("control plane stream ended", "control_plane", cp.Address, "error", err, "retry_in", wait, "next", next)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// client is Run's state: what the data plane serves, as of its latest Apply.
type client struct {
	cfg Config
	log hclog.Logger

	applied    map[string]string
	generation uint64
	workers    []*discoveryv1.WorkerStatus
	// bases is the whole set that the data plane serves of each name, as a response carried it or
	// a delta made it: what the next delta of it changes. Only sets that came in this process are
	// here (not Config.Initial's): a stream is sent deltas only on sets it sent.
	bases map[string]*discoveryv1.VersionedBackendSet
}

// stream runs one stream to cp until it fails, and reports whether it delivered a response.
func (c *client) stream(ctx context.Context, cp ControlPlane) (responded bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv1.NewDiscoveryServiceClient(cp.Conn).StreamBackendSets(ctx)
	if err != nil {
		return false, fmt.Errorf("xds: open stream: %w", err)
	}
	first := &discoveryv1.StreamBackendSetsRequest{
		Node:       c.cfg.Node,
		Subscribe:  c.cfg.Subscribe,
		Applied:    c.applied,
		Generation: c.generation,
		Workers:    c.workers,
		// Deltas are turned into whole sets here: Apply sees sets only.
		AcceptDeltas: true,
	}
	if err := send(st, first); err != nil {
		return false, err
	}
	c.log.Info("control plane stream open", "control_plane", cp.Address, "sets", len(c.applied), "generation", c.generation)
	for {
		resp, err := st.Recv()
		if err != nil {
			return responded, fmt.Errorf("xds: receive: %w", err)
		}
		responded = true
		deltas := len(resp.GetDeltas())
		if err := merge(resp, c.bases); err != nil {
			return true, err // the next stream is sent whole sets
		}
		applied, rejected, generation, workers := c.cfg.Apply(ctx, resp)
		c.applied, c.generation, c.workers = applied, generation, workers
		keep(c.bases, resp, applied)
		req := &discoveryv1.StreamBackendSetsRequest{
			Applied:       applied,
			ResponseNonce: resp.GetNonce(),
			Errors:        rejected,
			Generation:    generation,
			Workers:       workers,
		}
		if len(rejected) == 0 {
			c.log.Debug("ACK", "nonce", resp.GetNonce(), "sets", len(resp.GetSets()), "deltas", deltas, "removed", len(resp.GetRemoved()), "generation", generation)
		} else {
			for _, e := range rejected {
				c.log.Warn("NACK: set rejected", "nonce", resp.GetNonce(), "set", e.GetName(), "version", e.GetVersion(), "message", e.GetMessage())
			}
		}
		if err := send(st, req); err != nil {
			return true, err
		}
	}
}

// send sends req on st; when the stream has ended, the error is the stream's status.
func send(st grpc.BidiStreamingClient[discoveryv1.StreamBackendSetsRequest, discoveryv1.StreamBackendSetsResponse], req *discoveryv1.StreamBackendSetsRequest) error {
	err := st.Send(req)
	if errors.Is(err, io.EOF) {
		_, err = st.Recv() // the stream's own error
	}
	if err != nil {
		return fmt.Errorf("xds: send: %w", err)
	}
	return nil
}
