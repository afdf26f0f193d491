package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/xlbproxy/xlb/controlplane/resource"
	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/backoff"
)

// Defaults of the options.
const (
	defaultAttempts     = 5
	defaultBackoffBase  = 50 * time.Millisecond
	defaultBackoffMax   = 2 * time.Second
	defaultPollInterval = 200 * time.Millisecond
)

// Client is a client of the AdminService. Its methods are safe for concurrent use.
type Client struct {
	rpc          adminv1.AdminServiceClient
	attempts     int           // attempts of a call in all, >= 1
	backoffBase  time.Duration // delay before the first retry, before jitter
	backoffMax   time.Duration // bound of the doubling delay
	pollInterval time.Duration // between the polls of WaitApplied

	// onRetry, when not nil, is called before the delay that precedes each retry (tests).
	onRetry func(attempt int, err error)
}

// Option configures a Client.
type Option func(*Client)

// WithAttempts sets how many times in all a call that fails with UNAVAILABLE is tried: 1 means
// never again. n < 1 means the default, 5.
func WithAttempts(n int) Option {
	return func(c *Client) {
		if n >= 1 {
			c.attempts = n
		}
	}
}

// WithBackoff sets the delay before the first retry (base; 0 means 50ms), which doubles with each
// retry up to max (0 means 2s). Each delay is jittered: a random duration between half of it and
// all of it.
func WithBackoff(base, max time.Duration) Option {
	return func(c *Client) {
		if base > 0 {
			c.backoffBase = base
		}
		if max > 0 {
			c.backoffMax = max
		}
	}
}

// WithPollInterval sets how often WaitApplied lists the data planes; 0 means 200ms.
func WithPollInterval(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.pollInterval = d
		}
	}
}

// New returns a client of the AdminService on conn.
func New(conn grpc.ClientConnInterface, opts ...Option) *Client {
	c := &Client{
		rpc:          adminv1.NewAdminServiceClient(conn),
		attempts:     defaultAttempts,
		backoffBase:  defaultBackoffBase,
		backoffMax:   defaultBackoffMax,
		pollInterval: defaultPollInterval,
	}
	for _, o := range opts {
		o(c)
	}
	c.backoffMax = max(c.backoffMax, c.backoffBase)
	return c
}

// Put creates or replaces set and returns its version. expected != nil makes it a
// compare-and-set: *expected must be the set's current version, "" meaning that the set must not
// exist, else the error's code is FAILED_PRECONDITION. A set that does not validate is refused
// with INVALID_ARGUMENT. See the package's doc for how a retried put is made safe.
func (c *Client) Put(ctx context.Context, set *discoveryv1.BackendSet, expected *string) (version string, err error) {
	req := &adminv1.PutBackendSetRequest{BackendSet: set, ExpectedVersion: expected}
	var resp *adminv1.PutBackendSetResponse
	retried, err := c.call(ctx, func(ctx context.Context) (err error) {
		resp, err = c.rpc.PutBackendSet(ctx, req)
		return err
	})
	if err == nil {
		return resp.GetVersion(), nil
	}
	if retried && expected != nil && status.Code(err) == codes.FailedPrecondition {
		// The attempt whose answer was lost may have made the put.
		want := resource.Version(set)
		if got, gerr := c.Get(ctx, set.GetName()); gerr == nil && got.GetVersion() == want {
			return want, nil
		}
	}
	return "", fmt.Errorf("admin: put backend set %q: %w", set.GetName(), err)
}

// Get returns the set name, or an error with code NOT_FOUND.
func (c *Client) Get(ctx context.Context, name string) (*discoveryv1.VersionedBackendSet, error) {
	var resp *adminv1.GetBackendSetResponse
	_, err := c.call(ctx, func(ctx context.Context) (err error) {
		resp, err = c.rpc.GetBackendSet(ctx, &adminv1.GetBackendSetRequest{Name: name})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("admin: get backend set %q: %w", name, err)
	}
	return resp.GetBackendSet(), nil
}

// List returns every set, by name.
func (c *Client) List(ctx context.Context) ([]*discoveryv1.VersionedBackendSet, error) {
	var resp *adminv1.ListBackendSetsResponse
	_, err := c.call(ctx, func(ctx context.Context) (err error) {
		resp, err = c.rpc.ListBackendSets(ctx, &adminv1.ListBackendSetsRequest{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("admin: list backend sets: %w", err)
	}
	return resp.GetBackendSets(), nil
}

// Delete removes the set name, with a compare-and-set as for Put; an error has code NOT_FOUND if
// there is no such set (but see the package's doc for a retried delete).
func (c *Client) Delete(ctx context.Context, name string, expected *string) error {
	retried, err := c.call(ctx, func(ctx context.Context) error {
		_, err := c.rpc.DeleteBackendSet(ctx, &adminv1.DeleteBackendSetRequest{Name: name, ExpectedVersion: expected})
		return err
	})
	if err == nil || (retried && status.Code(err) == codes.NotFound) {
		return nil
	}
	return fmt.Errorf("admin: delete backend set %q: %w", name, err)
}

// DataPlanes returns every data plane that connected since the control plane started.
func (c *Client) DataPlanes(ctx context.Context) ([]*adminv1.DataPlane, error) {
	var resp *adminv1.ListDataPlanesResponse
	_, err := c.call(ctx, func(ctx context.Context) (err error) {
		resp, err = c.rpc.ListDataPlanes(ctx, &adminv1.ListDataPlanesRequest{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("admin: list data planes: %w", err)
	}
	return resp.GetDataPlanes(), nil
}

// NackError is a data plane's rejection of the version of a set that WaitApplied waits for.
type NackError struct {
	Node    string // the data plane's node id
	Set     string
	Version string
	Message string // the data plane's reason
}

func (e *NackError) Error() string {
	return fmt.Sprintf("admin: data plane %q rejected backend set %q version %s: %s", e.Node, e.Set, e.Version, e.Message)
}

// WaitApplied polls ListDataPlanes until every connected data plane (or, when nodeIDs are given,
// each of those, connected or not) serves version of set. It returns a *NackError as soon as one
// of them has rejected that version, and an error naming the data planes still waited for when
// ctx ends. With no nodeIDs and no connected data plane it returns nil at once: there is nothing
// to wait for. A listing that fails (after the retries on UNAVAILABLE) ends the wait with its
// error.
func (c *Client) WaitApplied(ctx context.Context, set, version string, nodeIDs ...string) error {
	if set == "" || version == "" {
		return errors.New("admin: WaitApplied needs a set and a version")
	}
	var pending []string // as of the last poll
	ended := func(cause error) error {
		return fmt.Errorf("admin: wait for backend set %q version %s: %w; not yet applied by %s",
			set, version, cause, strings.Join(pending, ", "))
	}
	for {
		dps, err := c.DataPlanes(ctx)
		switch code := status.Code(err); {
		case err != nil && pending != nil && (code == codes.DeadlineExceeded || code == codes.Canceled):
			// The context ended during the call (gRPC may see its deadline before ctx.Err does).
			return ended(err)
		case err != nil:
			return fmt.Errorf("admin: wait for backend set %q version %s: %w", set, version, err)
		}
		if pending, err = pendingOn(dps, set, version, nodeIDs); err != nil || len(pending) == 0 {
			return err
		}
		t := time.NewTimer(c.pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ended(ctx.Err())
		case <-t.C:
		}
	}
}

// pendingOn returns the data planes of dps (those of nodeIDs when given, else the connected ones)
// that do not serve version of set yet, described for an error; or the NackError of one that
// rejected it.
func pendingOn(dps []*adminv1.DataPlane, set, version string, nodeIDs []string) ([]string, error) {
	var targets []*adminv1.DataPlane
	var pending []string
	if len(nodeIDs) == 0 {
		for _, dp := range dps {
			if dp.GetConnected() {
				targets = append(targets, dp)
			}
		}
	} else {
		for _, id := range nodeIDs {
			i := slices.IndexFunc(dps, func(dp *adminv1.DataPlane) bool { return dp.GetNodeId() == id })
			if i < 0 {
				pending = append(pending, fmt.Sprintf("%q (never connected)", id))
				continue
			}
			targets = append(targets, dps[i])
		}
	}
	for _, dp := range targets {
		i := slices.IndexFunc(dp.GetSets(), func(s *adminv1.SetStatus) bool { return s.GetName() == set })
		var st *adminv1.SetStatus
		if i >= 0 {
			st = dp.GetSets()[i]
		}
		switch {
		case st.GetAppliedVersion() == version:
		case st.GetLastNack() != nil && st.GetLastNack().GetVersion() == version:
			return nil, &NackError{Node: dp.GetNodeId(), Set: set, Version: version, Message: st.GetLastNack().GetMessage()}
		case !dp.GetConnected():
			pending = append(pending, fmt.Sprintf("%q (disconnected)", dp.GetNodeId()))
		default:
			pending = append(pending, strconv.Quote(dp.GetNodeId()))
		}
	}
	return pending, nil
}

// call runs rpc until it succeeds, fails with a code other than UNAVAILABLE, has run c.attempts
// times, or ctx ends. retried says whether rpc ran more than once.
func (c *Client) call(ctx context.Context, rpc func(context.Context) error) (retried bool, err error) {
	b := backoff.Backoff{Base: c.backoffBase, Max: c.backoffMax, Jitter: backoff.Equal}
	for attempt := 1; ; attempt++ {
		err = rpc(ctx)
		if err == nil || status.Code(err) != codes.Unavailable || attempt >= c.attempts {
			return attempt > 1, err
		}
		if c.onRetry != nil {
			c.onRetry(attempt, err)
		}
		t := time.NewTimer(b.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return attempt > 1, fmt.Errorf("%w; after %d attempts: %w", err, attempt, ctx.Err())
		case <-t.C:
		}
	}
}
