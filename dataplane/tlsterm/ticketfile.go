package tlsterm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/internal/atomicfile"
)

// TicketRotator keeps a ticket key file for the supervisor: it is the file's only writer.
type TicketRotator struct {
	path   string
	policy RotationPolicy
}

// Rotation is what a Rotate did.
type Rotation struct {
	// Written says the file was written: a key was added or dropped, or the file was made or
	// replaced.
	Written bool
	// Keys are the keys in the file now, the current first.
	Keys TicketKeys
	// Next is when the current key is due to be replaced, for a status page; rotate on a ticker
	// rather than sleep until then (the clock may be set back).
	Next time.Time
	// Replaced, when not nil, says why the file could not be read: it was replaced by one new key,
	// and tickets issued under the lost keys get a full handshake. Log it.
	Replaced error
}

// NewTicketRotator keeps the ticket key file at path (STATE_DIR/ticket-keys, say) under policy.
func NewTicketRotator(path string, policy RotationPolicy) (*TicketRotator, error) {
	if path == "" {
		return nil, errors.New("tlsterm: ticket key file: no path")
	}
	p, err := policy.withDefaults()
	if err != nil {
		return nil, err
	}
	return &TicketRotator{path: path, policy: p}, nil
}

// Rotate brings the file up to date at now: it makes it with one key if there is none, adds a
// new current key every Period, and drops the keys past their window (see RotationPolicy). It
// writes only when something changed, whole, by rename, mode 0600. Call it before starting the
// workers, then every minute or so: a key is replaced at most that late.
//
// A file it cannot parse is replaced by a new one, and Rotation.Replaced says why: workers keep
// the keys they have until then, and a supervisor that stopped rotating would leave every worker
// on old keys forever. A file it cannot read (permissions, say) is an error and is left alone.
func (r *TicketRotator) Rotate(now time.Time) (Rotation, error) {
	var (
		res  Rotation
		keys TicketKeys
	)
	data, err := readBounded(r.path, TicketFileBytesMax)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return res, fmt.Errorf("tlsterm: ticket key file: %w", err)
	default:
		if keys, err = ParseTicketKeys(data); err != nil {
			res.Replaced = fmt.Errorf("tlsterm: ticket key file %s: %w", r.path, err)
			keys = nil
		}
	}
	next, changed := keys.rotate(now, r.policy)
	if changed || res.Replaced != nil {
		if err := atomicfile.Write(r.path, next.Marshal()); err != nil {
			return res, fmt.Errorf("tlsterm: ticket key file: %w", err)
		}
		res.Written = true
	}
	res.Keys = next
	res.Next = next[0].Created.Add(r.policy.Period)
	return res, nil
}

// TicketLoaderConfig is what a TicketLoader needs. The zero value of every field but Path and
// Servers means its documented default.
type TicketLoaderConfig struct {
	// Path is the ticket key file the supervisor's TicketRotator keeps. Required.
	Path string
	// Servers are the configs the keys are set on: every TLS listener of the worker, each the
	// config it serves from (a Clone made before a load misses it). Required.
	Servers []*tls.Config
	// Poll is how often Watch looks at the file. Zero means 1s.
	Poll time.Duration
	// Logger is the loader's: Watch logs each load it makes, Error when it failed. Nil means a
	// null logger.
	Logger hclog.Logger
}

// TicketLoader sets a worker's session ticket keys from the supervisor's ticket key file.
type TicketLoader struct {
	cfg TicketLoaderConfig
	log hclog.Logger

	// mu serialises loads.
	mu sync.Mutex
	// stamp is the file's as it was just before the last load read it.
	stamp  stamp
	status TicketStatus
}

// TicketStatus says how the last load went.
type TicketStatus struct {
	// Loads counts the loads, by Load or by Watch.
	Loads uint64
	// Keys is how many keys are in force, and Current when the current one was made; 0 and the
	// zero time while Go's keys of the process are (no load has succeeded yet).
	Keys    int
	Current time.Time
	// Err is the last load's error: nil when it set the keys of the file, else why the keys in
	// force stay.
	Err error
}

// NewTicketLoader checks cfg. It reads nothing: call Load before serving.
func NewTicketLoader(cfg TicketLoaderConfig) (*TicketLoader, error) {
	if cfg.Path == "" {
		return nil, errors.New("tlsterm: ticket key file: no path")
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("tlsterm: ticket keys: no tls.Config to set them on")
	}
	for i, s := range cfg.Servers {
		if s == nil {
			return nil, fmt.Errorf("tlsterm: ticket keys: server config %d is nil", i)
		}
	}
	l := &TicketLoader{cfg: cfg, log: cfg.Logger}
	if l.cfg.Poll <= 0 {
		l.cfg.Poll = time.Second
	}
	if l.log == nil {
		l.log = hclog.NewNullLogger()
	}
	return l, nil
}

// Load reads the file and sets its keys on every server config, the current key first. A file
// that is missing (its error wraps fs.ErrNotExist), unreadable or corrupt is an error naming it,
// and the keys in force stay: the last loaded, or Go's keys of the process before any load.
func (l *TicketLoader) Load() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loadLocked(stampOf(l.cfg.Path))
}

// loadLocked loads the file; st is its stamp from before it is read, so that a file replaced
// meanwhile is seen as changed by the next look.
func (l *TicketLoader) loadLocked(st stamp) error {
	l.stamp = st
	l.status.Loads++
	keys, err := l.read()
	if err != nil {
		l.status.Err = err
		return err
	}
	raw := keys.Raw()
	for _, s := range l.cfg.Servers {
		s.SetSessionTicketKeys(raw)
	}
	l.status.Keys, l.status.Current, l.status.Err = len(keys), keys[0].Created, nil
	return nil
}

func (l *TicketLoader) read() (TicketKeys, error) {
	data, err := readBounded(l.cfg.Path, TicketFileBytesMax)
	if err != nil {
		return nil, fmt.Errorf("tlsterm: ticket key file: %w (the keys in force stay)", err)
	}
	keys, err := ParseTicketKeys(data)
	if err != nil {
		return nil, fmt.Errorf("tlsterm: ticket key file %s: %w (the keys in force stay)", l.cfg.Path, err)
	}
	return keys, nil
}

// Status says how the last load went.
func (l *TicketLoader) Status() TicketStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

// Watch loads the file whenever it changed (its inode, size or times; the rotator's renames
// change the inode), looking every Poll, until ctx is done. A file that failed is not read again
// until it changes. Run it in a goroutine of its own.
func (l *TicketLoader) Watch(ctx context.Context) {
	t := time.NewTicker(l.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := stampOf(l.cfg.Path)
		l.mu.Lock()
		changed := now != l.stamp
		var err error
		if changed {
			err = l.loadLocked(now)
		}
		st := l.status
		l.mu.Unlock()
		switch {
		case !changed:
		case err != nil:
			l.log.Error("session ticket keys not loaded", "error", err)
		default:
			l.log.Info("session ticket keys loaded", "keys", st.Keys, "current_created", st.Current)
		}
	}
}
