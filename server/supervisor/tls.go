package supervisor

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/xlbproxy/xlb/dataplane/tlsterm"
	"github.com/xlbproxy/xlb/server/config"
)

// The supervisor's part of client TLS termination: the workers terminate TLS (server/worker);
// the supervisor checks at start that every certificate loads, and keeps the session ticket
// keys that every worker shares, in STATE_DIR/ticket-keys (dataplane/tlsterm's doc.go).

const (
	// ticketKeysFile is the ticket key file's name in the state directory.
	ticketKeysFile = "ticket-keys"
	// ticketRotateEvery is how often the supervisor's loop brings the ticket keys up to date: a
	// key is replaced at most that late after its Period.
	ticketRotateEvery = time.Minute
)

// ticketKeeper is the supervisor's TicketRotator and when it last rotated.
type ticketKeeper struct {
	rotator *tlsterm.TicketRotator
	path    string
	last    time.Time
}

// startTLS checks the TLS of every listener as a worker will load it, and, when some listener
// has TLS, makes or rotates the ticket key file, before any worker starts: a certificate, key or
// client CA file that does not load fails the start, naming it.
func (s *supervisor) startTLS() error {
	if err := checkListenerTLS(s.cfg.Listeners); err != nil {
		return err
	}
	if !slices.ContainsFunc(s.cfg.Listeners, func(l config.Listener) bool { return l.TLS != nil }) {
		return nil
	}
	path := filepath.Join(s.stateDir, ticketKeysFile)
	r, err := tlsterm.NewTicketRotator(path, tlsterm.RotationPolicy{})
	if err != nil {
		return err
	}
	s.tickets = &ticketKeeper{rotator: r, path: path}
	return s.rotateTicketsNow(time.Now())
}

// checkListenerTLS loads the certificates and client CAs of every TLS listener.
func checkListenerTLS(ls []config.Listener) error {
	var errs []error
	for i, l := range ls {
		if l.TLS == nil {
			continue
		}
		if _, err := tlsterm.NewStore(tlsterm.StoreConfig{Pairs: l.TLS.Certificates}); err != nil {
			errs = append(errs, fmt.Errorf("listener %d (%s): %w", i, l.Address, err))
		}
		if l.TLS.ClientCAFile != "" {
			if _, err := tlsterm.LoadClientCAs(l.TLS.ClientCAFile); err != nil {
				errs = append(errs, fmt.Errorf("listener %d (%s): %w", i, l.Address, err))
			}
		}
	}
	return errors.Join(errs...)
}

// rotateTickets is the loop's: every ticketRotateEvery it brings the ticket keys up to date. It
// does nothing without a TLS listener, and nothing once an upgrade began: the new supervisor
// rotates the file from its start on (two rotating at once would lose one's new key), and this
// one takes it up again if the upgrade fails.
func (s *supervisor) rotateTickets(now time.Time) {
	k := s.tickets
	if k == nil || s.upgrade != nil || s.handedOver || now.Sub(k.last) < ticketRotateEvery {
		return
	}
	if err := s.rotateTicketsNow(now); err != nil {
		s.log.Error("cannot rotate the session ticket keys; the workers keep the keys they have", "error", err)
	}
}

// rotateTicketsNow rotates the ticket key file and logs what changed.
func (s *supervisor) rotateTicketsNow(now time.Time) error {
	k := s.tickets
	k.last = now
	res, err := k.rotator.Rotate(now)
	if err != nil {
		return err
	}
	if res.Replaced != nil {
		s.log.Warn("the session ticket key file was unreadable and is replaced by a new key; sessions under the old keys do a full handshake",
			"error", res.Replaced)
	}
	if res.Written {
		s.log.Info("session ticket keys rotated", "file", k.path, "keys", len(res.Keys),
			"current_created", res.Keys[0].Created, "next", res.Next)
	}
	return nil
}

// ticketKeysPath is the ticket key file the workers load, "" without a TLS listener.
func (s *supervisor) ticketKeysPath() string {
	if s.tickets == nil {
		return ""
	}
	return s.tickets.path
}

// listenerTLS is the TLS of each listener, nil for plain TCP: what a worker's Spec carries.
func listenerTLS(ls []config.Listener) []*config.ListenerTLS {
	out := make([]*config.ListenerTLS, len(ls))
	for i, l := range ls {
		out[i] = l.TLS
	}
	return out
}

// sameListeners reports whether a and b are the same listeners: addresses, sets and TLS settings
// (the files they name, not what the files hold, which reloads while serving).
func sameListeners(a, b []config.Listener) bool {
	return slices.EqualFunc(a, b, func(x, y config.Listener) bool {
		return x.Address == y.Address && x.BackendSet == y.BackendSet && x.TLS.Equal(y.TLS)
	})
}
