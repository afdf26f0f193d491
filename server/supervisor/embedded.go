package supervisor

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/controlplane/store"
	"github.com/xlbproxy/xlb/dataplane/table"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/server/backendset"
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
func startEmbedded(dir string, log hclog.Logger, sets []table.Set, loadInterval time.Duration) (*embeddedCP, error) {
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
func (c *embeddedCP) load(sets []table.Set) error {
	msgs := make([]*discoveryv1.BackendSet, len(sets))
	for i, s := range sets {
		m := backendset.ToProto(s)
		if err := resource.Validate(backendset.Prefix, m); err != nil {
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
