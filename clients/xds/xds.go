package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/backoff"
)

// Defaults of Config's zero values.
const (
	defaultBackoffMin = 100 * time.Millisecond
	defaultBackoffMax = 15 * time.Second
)

// Config is what Run needs of the data plane. Node, Initial and Apply are required; the zero value
// of every other field means the documented default.
type Config struct {
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
	// force: its return is the ACK (no rejected set) or the NACK. Its ctx is Run's.
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
	return nil
}

// Run keeps a stream to the control plane at conn open and applies what it sends, until ctx ends;
// then it returns ctx's error. It never gives up otherwise. It returns another error only for an
// invalid cfg.
func Run(ctx context.Context, conn grpc.ClientConnInterface, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	c := &client{cfg: cfg, log: cfg.Logger.Named("xds"), api: discoveryv1.NewDiscoveryServiceClient(conn)}
	c.applied, c.generation, c.workers = cfg.Initial()
	b := backoff.Backoff{Base: cfg.BackoffMin, Max: cfg.BackoffMax, Jitter: backoff.Full}
	for {
		responded, err := c.stream(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if responded {
			b.Reset()
		}
		wait := b.Next()
		c.log.Warn("control plane stream ended", "error", err, "retry_in", wait)
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
	api discoveryv1.DiscoveryServiceClient

	applied    map[string]string
	generation uint64
	workers    []*discoveryv1.WorkerStatus
}

// stream runs one stream until it fails, and reports whether it delivered a response.
func (c *client) stream(ctx context.Context) (responded bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.api.StreamBackendSets(ctx)
	if err != nil {
		return false, fmt.Errorf("xds: open stream: %w", err)
	}
	first := &discoveryv1.StreamBackendSetsRequest{
		Node:       c.cfg.Node,
		Subscribe:  c.cfg.Subscribe,
		Applied:    c.applied,
		Generation: c.generation,
		Workers:    c.workers,
	}
	if err := send(st, first); err != nil {
		return false, err
	}
	c.log.Info("control plane stream open", "sets", len(c.applied), "generation", c.generation)
	for {
		resp, err := st.Recv()
		if err != nil {
			return responded, fmt.Errorf("xds: receive: %w", err)
		}
		responded = true
		applied, rejected, generation, workers := c.cfg.Apply(ctx, resp)
		c.applied, c.generation, c.workers = applied, generation, workers
		req := &discoveryv1.StreamBackendSetsRequest{
			Applied:       applied,
			ResponseNonce: resp.GetNonce(),
			Errors:        rejected,
			Generation:    generation,
			Workers:       workers,
		}
		if len(rejected) == 0 {
			c.log.Debug("ACK", "nonce", resp.GetNonce(), "sets", len(resp.GetSets()), "removed", len(resp.GetRemoved()), "generation", generation)
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
