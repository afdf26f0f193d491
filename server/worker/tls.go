package worker

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/tlsterm"
	"github.com/xlbproxy/xlb/server/config"
)

// terminator is a worker's client TLS: a certificate store per TLS listener, and one loader of
// the supervisor's session ticket keys for them all, so that a client resumes its session on
// whichever worker it reaches.
type terminator struct {
	log    hclog.Logger
	stores []*tlsterm.Store // by listener; nil for plain TCP
	confs  []*tls.Config    // by listener; nil for plain TCP
	loader *tlsterm.TicketLoader
	wg     sync.WaitGroup
}

// newTerminator loads the certificates and client CAs of every TLS listener of tlsOf (by
// listener, nil for plain TCP; shorter than ls when the last are plain) and the session ticket keys
// of ticketKeys ("" for none: each process then resumes only its own sessions). A certificate or
// CA file that does not load is an error naming it; a ticket key file that does not is logged, and
// the keys come when Watch sees it good.
func newTerminator(tlsOf []*config.ListenerTLS, ls []config.Listener, ticketKeys string, log hclog.Logger) (*terminator, error) {
	if len(tlsOf) > len(ls) {
		return nil, fmt.Errorf("the spec has the TLS of %d listeners, and %d listeners", len(tlsOf), len(ls))
	}
	t := &terminator{log: log, stores: make([]*tlsterm.Store, len(tlsOf)), confs: make([]*tls.Config, len(tlsOf))}
	var servers []*tls.Config
	for i, lt := range tlsOf {
		if lt == nil {
			continue
		}
		store, err := tlsterm.NewStore(tlsterm.StoreConfig{Pairs: lt.Certificates, Logger: log.With("listener", ls[i].Address)})
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", ls[i].Address, err)
		}
		conf := tlsterm.ServerConfig(store)
		if lt.MinVersion != 0 {
			conf.MinVersion = lt.MinVersion
		}
		if lt.ClientCAFile != "" {
			pool, err := tlsterm.LoadClientCAs(lt.ClientCAFile)
			if err != nil {
				return nil, fmt.Errorf("listener %s: %w", ls[i].Address, err)
			}
			conf.ClientCAs, conf.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
		t.stores[i], t.confs[i] = store, conf
		servers = append(servers, conf)
	}
	if len(servers) == 0 || ticketKeys == "" {
		return t, nil
	}
	loader, err := tlsterm.NewTicketLoader(tlsterm.TicketLoaderConfig{Path: ticketKeys, Servers: servers, Logger: log})
	if err != nil {
		return nil, err
	}
	t.loader = loader
	if err := loader.Load(); err != nil {
		log.Error("session ticket keys not loaded; this worker resumes only its own sessions until they are", "error", err)
	}
	return t, nil
}

// wrap returns lns with each TLS listener's wrapped by tls.NewListener: its connections do their
// handshake on the proxy's first read (or its explicit Handshake), in the connection's goroutine.
func (t *terminator) wrap(lns []net.Listener) []net.Listener {
	out := make([]net.Listener, len(lns))
	for i, ln := range lns {
		out[i] = ln
		if i < len(t.confs) && t.confs[i] != nil {
			out[i] = tls.NewListener(ln, t.confs[i])
		}
	}
	return out
}

// watch reloads the certificates and the ticket keys when their files change, until ctx ends;
// wait waits for it to end.
func (t *terminator) watch(ctx context.Context) {
	for _, s := range t.stores {
		if s != nil {
			t.wg.Add(1)
			go func() { defer t.wg.Done(); s.Watch(ctx) }()
		}
	}
	if t.loader != nil {
		t.wg.Add(1)
		go func() { defer t.wg.Done(); t.loader.Watch(ctx) }()
	}
}

func (t *terminator) wait() { t.wg.Wait() }
