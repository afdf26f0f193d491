package server

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/controlplane/store"
	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/dataplane/table"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/server/cpserver"
	"github.com/xlbproxy/xlb/server/rpc"
)

// controlSocket, in the state directory, is where `xlb run` serves its embedded control plane:
//
//	grpcurl -plaintext -unix STATE_DIR/control.sock list
const controlSocket = "control.sock"

// embeddedDebounce is the embedded control plane's push debounce: its one data plane is local.
const embeddedDebounce = time.Millisecond

// embeddedCP is the control plane inside `xlb run`: a store in memory, fed by the configuration
// file, and the discovery and admin services on a unix socket, whose one data plane is the
// supervisor itself.
type embeddedCP struct {
	store *store.Store
	cp    *cpserver.Services
	ln    *rpc.UnixListener
	serve func() // stops serving
}

// startEmbedded starts the embedded control plane holding sets, serving on dir's control socket.
// The store is filled before the discovery server takes its first snapshot: a stream that opened
// on an empty one would be told that every set was removed.
func startEmbedded(dir string, log hclog.Logger, sets []proxy.BackendSet, loadInterval time.Duration) (*embeddedCP, error) {
	st, err := store.Open("", log)
	if err != nil {
		return nil, err
	}
	c := &embeddedCP{store: st}
	if err := c.load(sets); err != nil {
		st.Close()
		return nil, err
	}
	srv, _, err := rpc.NewServer("unix:"+filepath.Join(dir, controlSocket), rpc.ServerSecurity{}, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	c.cp = cpserver.New(st, cpserver.Config{Debounce: embeddedDebounce, LoadInterval: loadInterval, Logger: log})
	c.cp.Register(srv)
	if c.ln, c.serve, err = rpc.ServeUnix(srv, filepath.Join(dir, controlSocket)); err != nil {
		c.cp.Close()
		st.Close()
		return nil, fmt.Errorf("embedded control plane: %w", err)
	}
	return c, nil
}

// target is how the supervisor dials it.
func (c *embeddedCP) target() string { return "unix://" + c.ln.Own } // absolute: unix:///...

// load makes the store hold exactly sets: every set is checked first, so that a file with one bad
// set changes nothing.
func (c *embeddedCP) load(sets []proxy.BackendSet) error {
	msgs := make([]*discoveryv1.BackendSet, len(sets))
	for i, s := range sets {
		m, err := toResource(s)
		if err == nil {
			err = resource.Validate("backend_set", m)
		}
		if err != nil {
			return fmt.Errorf("backend_sets[%d] (%s): %w", i, s.Name, err)
		}
		msgs[i] = m
	}
	keep := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		keep[m.GetName()] = true
		if _, err := c.store.Put(m, nil); err != nil {
			return err
		}
	}
	for _, e := range c.store.List() {
		if name := e.Set.GetName(); !keep[name] {
			if err := c.store.Delete(name, nil); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

// stop ends the embedded control plane.
func (c *embeddedCP) stop() {
	c.cp.Close()
	c.serve()
	c.store.Close()
}

// toResource is a set of the configuration file as the control plane holds it.
func toResource(s proxy.BackendSet) (*discoveryv1.BackendSet, error) {
	m := &discoveryv1.BackendSet{Name: s.Name, Policy: discoveryv1.Policy_POLICY_ROUND_ROBIN}
	if s.Policy == balance.LeastRequest {
		m.Policy = discoveryv1.Policy_POLICY_LEAST_REQUEST
	}
	for _, b := range s.Backends {
		host, port, err := net.SplitHostPort(b.Address)
		if err != nil {
			return nil, fmt.Errorf("backend %s: %w", b.ID, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("backend %s: port %q: %w", b.ID, port, err)
		}
		rb := &discoveryv1.Backend{Id: b.ID, Address: host, Port: uint32(p), Weight: uint32(b.Weight)}
		switch b.State {
		case table.Draining:
			rb.State = discoveryv1.BackendState_BACKEND_STATE_DRAINING
		case table.Disabled:
			rb.State = discoveryv1.BackendState_BACKEND_STATE_DISABLED
		}
		m.Backends = append(m.Backends, rb)
	}
	healthResource(s.Health, m)
	return m, nil
}
