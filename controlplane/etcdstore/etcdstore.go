package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/controlplane/store"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/backoff"
)

// The defaults of Config's zero values.
const (
	DefaultPrefix  = "/xlb"
	DefaultTimeout = 5 * time.Second
)

// casTriesMax bounds the transactions of one Put or Delete: each retry follows a change of the set
// by someone else between this store's read and its write.
const casTriesMax = 8

// attemptTimeout bounds one transaction of a Put or Delete (within Config.Timeout, which bounds
// them all): one that has no answer by then is made again. etcd answers a proposal that was lost
// with a leader that died (a follower forwarded it there) only after its request timeout, 5s and
// two election timeouts (7s with etcd's defaults), past DefaultTimeout: waiting for that answer
// would fail a write that a new leader, elected in about a second, would take.
const attemptTimeout = 2 * time.Second

// Config is how a Store uses etcd. The zero value of every field means its documented default;
// Open reads it once.
type Config struct {
	// Prefix is the root of xlb's keys in etcd: the sets are under Prefix + "/sets/". Empty means
	// DefaultPrefix ("/xlb"). It must start with "/" and not end with one.
	Prefix string
	// Timeout bounds each request to etcd (the listing of Open, each transaction of Put and
	// Delete): past it the write fails with store.ErrUnavailable. Zero means DefaultTimeout (5s).
	Timeout time.Duration
	// Logger receives the watch's losses and re-listings (warn) and the keys that hold no valid
	// set (error). Nil means none.
	Logger hclog.Logger
}

// SetsPrefix is the key prefix under which the sets of a store on prefix ("" for DefaultPrefix)
// live: a set's key is SetsPrefix(prefix) + its name.
func SetsPrefix(prefix string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return prefix + "/sets/"
}

// CheckPrefix returns an error naming field when prefix is not a valid Config.Prefix.
func CheckPrefix(field, prefix string) error {
	switch {
	case prefix == "":
		return nil
	case !strings.HasPrefix(prefix, "/"):
		return fmt.Errorf("%s: %q: must start with /", field, prefix)
	case strings.HasSuffix(prefix, "/"):
		return fmt.Errorf("%s: %q: must not end with /", field, prefix)
	}
	return nil
}

// state is one immutable generation of the store's view of etcd.
type state struct {
	byName map[string]resource.Versioned
	names  []string         // the keys of byName, sorted
	modRev map[string]int64 // each set's key's mod_revision
	rev    int64            // the etcd revision the watch brought the view to
	// ahead is, by name, the revision of this replica's own writes that the view has before
	// the watch brings them: the watch's events of those keys up to that revision are older, and
	// skipped, so that the view never steps back.
	ahead map[string]int64
}

// Store is the backend sets in etcd, as one control-plane replica sees them. Its methods are safe
// for concurrent use.
type Store struct {
	cli       *clientv3.Client
	prefix    string // of the sets' keys, with its "/"
	timeout   time.Duration
	endpoints string // for errors
	log       hclog.Logger

	// cur is the current view; it is replaced, never changed, under viewMu: by the watch loop,
	// and by a write of this replica that etcd committed.
	cur    atomic.Pointer[state]
	viewMu sync.Mutex

	ctx    context.Context // ended by Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the watch loop ends

	subs store.Subscribers
}

// Open lists the sets under cfg.Prefix in etcd through cli (within cfg.Timeout) and watches them
// from then on. It fails when etcd does not answer the listing: a control plane that served an
// empty view would tell its data planes that every set was removed. cli stays the caller's: Close
// does not close it.
func Open(cli *clientv3.Client, cfg Config) (*Store, error) {
	if err := CheckPrefix("prefix", cfg.Prefix); err != nil {
		return nil, fmt.Errorf("etcdstore: %w", err)
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("etcdstore: negative timeout")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cli:       cli,
		prefix:    SetsPrefix(cfg.Prefix),
		timeout:   cfg.Timeout,
		endpoints: strings.Join(cli.Endpoints(), ","),
		log:       cfg.Logger,
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
	}
	st, err := s.list()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("etcdstore: list the backend sets under %s: %w", s.prefix, s.unavailable(err))
	}
	s.cur.Store(st)
	s.log.Info("store opened on etcd", "endpoints", s.endpoints, "prefix", s.prefix, "sets", len(st.names), "revision", st.rev)
	go s.watch(st.rev)
	return s, nil
}

// list reads every set from etcd, linearizably.
func (s *Store) list() (*state, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	st := &state{byName: map[string]resource.Versioned{}, modRev: map[string]int64{}, rev: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		if e, ok := s.decode(kv); ok {
			st.byName[e.Set.GetName()] = e
			st.modRev[e.Set.GetName()] = kv.ModRevision
		}
	}
	st.names = slices.Sorted(func(yield func(string) bool) {
		for n := range st.byName {
			if !yield(n) {
				return
			}
		}
	})
	return st, nil
}

// decode is the set that kv holds, or false (logged) when it holds none that is valid: a key
// written by hand, or by a newer xlb, is never served in a form that data planes would misread.
func (s *Store) decode(kv *mvccpb.KeyValue) (resource.Versioned, bool) {
	name := strings.TrimPrefix(string(kv.Key), s.prefix)
	var v discoveryv1.VersionedBackendSet
	if err := proto.Unmarshal(kv.Value, &v); err != nil {
		s.log.Error("a key holds no backend set: it is ignored", "key", string(kv.Key), "error", err)
		return resource.Versioned{}, false
	}
	if err := resource.Validate("backend_set", v.GetBackendSet()); err != nil {
		s.log.Error("a key holds an invalid backend set: it is ignored", "key", string(kv.Key), "error", err)
		return resource.Versioned{}, false
	}
	if v.GetBackendSet().GetName() != name {
		s.log.Error("a key holds a backend set of another name: it is ignored", "key", string(kv.Key), "name", v.GetBackendSet().GetName())
		return resource.Versioned{}, false
	}
	version := v.GetVersion()
	if version == "" {
		version = resource.Version(v.GetBackendSet())
	}
	return resource.Versioned{Set: v.GetBackendSet(), Version: version}, true
}

// watch keeps the view up to date from revision rev on, until Close. A lost watch is watched
// again from where it stopped; a compacted one lists the sets again. Neither clears the view: data
// planes are served what was known meanwhile.
func (s *Store) watch(rev int64) {
	defer close(s.done)
	bo := backoff.Backoff{Base: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: backoff.Equal}
	for {
		var err error
		if rev < 0 { // compacted past the view: list again
			var st *state
			if st, err = s.list(); err == nil {
				s.log.Warn("the watch of etcd was compacted past this replica's view: listed the sets again",
					"revision", st.rev, "sets", len(st.names))
				s.viewMu.Lock()
				s.publish(st)
				s.viewMu.Unlock()
				rev = st.rev
			}
		}
		if err == nil {
			var compacted bool
			rev, compacted, err = s.watchFrom(rev, &bo)
			if compacted {
				rev = -1
				continue
			}
		}
		if s.ctx.Err() != nil {
			return
		}
		wait := bo.Next()
		s.log.Warn("the watch of etcd ended: the sets known are still served; watching again", "revision", rev, "error", err, "retry_in", wait)
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// watchFrom applies the changes after rev until the watch ends, and returns the revision the view
// is at, whether the watch ended as compacted, and why it ended.
func (s *Store) watchFrom(rev int64, bo *backoff.Backoff) (int64, bool, error) {
	// WithRequireLeader ends the watch when its member loses the leader, so that a member cut off
	// from the others does not keep this replica on a view that no longer changes.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	defer cancel()
	for resp := range s.cli.Watch(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
			return rev, true, nil
		}
		if err := resp.Err(); err != nil {
			return rev, false, err
		}
		if len(resp.Events) > 0 {
			s.apply(resp.Events, resp.Header.Revision)
			rev = resp.Header.Revision
		}
		bo.Reset()
	}
	return rev, false, errors.New("the watch channel closed")
}

// apply makes the view the current one with events, at revision rev.
func (s *Store) apply(events []*clientv3.Event, rev int64) {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	next := s.cur.Load().clone()
	next.rev = rev
	for _, ev := range events {
		name := strings.TrimPrefix(string(ev.Kv.Key), s.prefix)
		if a, ok := next.ahead[name]; ok && ev.Kv.ModRevision <= a {
			continue // this replica's own write at a, or one before it, is in the view already
		}
		switch ev.Type {
		case clientv3.EventTypePut:
			if e, ok := s.decode(ev.Kv); ok {
				next.byName[name] = e
				next.modRev[name] = ev.Kv.ModRevision
				continue
			}
			// A key that holds no valid set: serve what was there before, if anything.
		case clientv3.EventTypeDelete:
			delete(next.byName, name)
			delete(next.modRev, name)
		}
	}
	for name, a := range next.ahead {
		if a <= rev {
			delete(next.ahead, name) // the watch has passed it
		}
	}
	next.sortNames()
	s.publish(next)
}

// clone returns a copy of st to change.
func (st *state) clone() *state {
	next := &state{
		byName: make(map[string]resource.Versioned, len(st.byName)+1),
		modRev: make(map[string]int64, len(st.modRev)+1),
		ahead:  make(map[string]int64, len(st.ahead)),
		rev:    st.rev,
	}
	maps.Copy(next.byName, st.byName)
	maps.Copy(next.modRev, st.modRev)
	maps.Copy(next.ahead, st.ahead)
	return next
}

func (st *state) sortNames() {
	st.names = make([]string, 0, len(st.byName))
	for n := range st.byName {
		st.names = append(st.names, n)
	}
	slices.Sort(st.names)
}

// applyOwn puts this replica's own write of name, committed at rev, into the view at once (e nil
// for a delete): a read after a write on the same replica sees it, and the data planes are sent
// it, without waiting for the watch, which may be slow or down (it comes back with a backoff).
func (s *Store) applyOwn(name string, e *resource.Versioned, rev int64) {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	cur := s.cur.Load()
	if cur.rev >= rev || cur.ahead[name] >= rev {
		return // the watch, or a later write of this replica, got there first
	}
	next := cur.clone()
	next.ahead[name] = rev
	if e != nil {
		next.byName[name] = *e
		next.modRev[name] = rev
	} else {
		delete(next.byName, name)
		delete(next.modRev, name)
	}
	next.sortNames()
	s.publish(next)
}

// publish makes st the view and tells the subscribers. viewMu held.
func (s *Store) publish(st *state) {
	s.cur.Store(st)
	s.subs.Notify()
}

// known is a set's entry in etcd as a transaction last saw it: ok says the set exists, modRev is
// its key's mod_revision (0 for none).
type known struct {
	e      resource.Versioned
	ok     bool
	modRev int64
}

// fromView is what the view says of name: a guess, which each transaction checks.
func (s *Store) fromView(name string) known {
	st := s.cur.Load()
	e, ok := st.byName[name]
	return known{e: e, ok: ok, modRev: st.modRev[name]}
}

// write is one Put or Delete: decide returns the ops to commit when name's key is as k says (none:
// only check) and the error to return then; done reports whether k, learned after a commit whose
// outcome was unknown, shows that commit made.
type write struct {
	op     string // "put" or "delete"
	name   string
	decide func(k known) ([]clientv3.Op, error)
	done   func(k known) bool
}

// run runs w against etcd within the store's timeout and returns the revision of its commit (0
// when it committed nothing) or its error. It decides on the view's entry first, and commits only
// if etcd still has that entry: else it learns etcd's, and decides again (at most casTriesMax
// times). A request that fails (a leader change, a member down), or has no answer within
// attemptTimeout, is made again until the timeout: the compare on the key's mod_revision makes
// that safe even when the failed one did commit.
func (s *Store) run(w write) (int64, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, fmt.Errorf("etcdstore: %s backend set %q: the store is closed", w.op, w.name)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	k := s.fromView(w.name)
	bo := backoff.Backoff{Base: 20 * time.Millisecond, Max: 500 * time.Millisecond, Jitter: backoff.Equal}
	var lastErr error // of the last failed request
	unknown := false  // a commit may have been made: its request failed
	for tries := 0; tries < casTriesMax; {
		then, refuse := w.decide(k)
		attempt, cancelAttempt := context.WithTimeout(ctx, attemptTimeout)
		resp, fresh, err := s.txn(attempt, w.name, k.modRev, then)
		attemptOver := attempt.Err() != nil
		cancelAttempt()
		if err != nil {
			if lastErr == nil || !errors.Is(err, context.DeadlineExceeded) {
				lastErr = err // keep what etcd said over the timeout that followed it
			}
			unknown = unknown || len(then) > 0
			if (retryable(err) || attemptOver) && ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-time.After(bo.Next()):
				}
				continue
			}
			return 0, fmt.Errorf("etcdstore: %s backend set %q: %w", w.op, w.name, s.unavailable(lastErr))
		}
		if fresh != nil {
			if unknown && w.done(*fresh) {
				return fresh.modRev, nil
			}
			k = *fresh
			tries++
			continue
		}
		if refuse != nil {
			return 0, refuse
		}
		if len(then) == 0 {
			return 0, nil
		}
		return resp.Header.Revision, nil
	}
	return 0, fmt.Errorf("etcdstore: %s backend set %q: changed by others %d times while this %s tried: %w", w.op, w.name, casTriesMax, w.op,
		store.ErrUnavailable)
}

// retryable tells whether a request that failed with err may succeed if made again: not when etcd
// refused the request itself (one too large, one the user may not make), nor when its time is up.
func retryable(err error) bool {
	if refused(err) != 0 {
		return false
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// refused is the code of err when etcd refused the request itself, so that a retry would be
// refused the same way: InvalidArgument (one larger than --max-request-bytes) or PermissionDenied
// (the user's role has no permission on the key). Else it is codes.OK.
func refused(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) && (ee.Code() == codes.InvalidArgument || ee.Code() == codes.PermissionDenied) {
		return ee.Code()
	}
	return codes.OK
}

// Put stores a copy of set, which the caller has validated (resource.Validate), under its key,
// and returns its version (resource.Version). expected != nil makes it a compare-and-set against
// the set in etcd (not this replica's view): *expected must be its current version, "" meaning
// that it must not exist; else the error wraps store.ErrVersionMismatch and says the current
// version. A put of a set identical to the one in etcd writes nothing and returns the same
// version. Put returns once etcd has committed the write, which it puts into this replica's view
// at once (ahead of the watch, whose older events of the key are then skipped). An
// error that wraps store.ErrUnavailable says etcd did not commit it within the timeout.
func (s *Store) Put(set *discoveryv1.BackendSet, expected *string) (string, error) {
	set = proto.Clone(set).(*discoveryv1.BackendSet)
	version := resource.Version(set)
	name := set.GetName()
	val, err := proto.Marshal(&discoveryv1.VersionedBackendSet{BackendSet: set, Version: version})
	if err != nil {
		return "", fmt.Errorf("etcdstore: encode backend set %q: %w", name, err)
	}
	rev, err := s.run(write{op: "put", name: name,
		decide: func(k known) ([]clientv3.Op, error) {
			if err := checkExpected("put", name, k, expected); err != nil {
				return nil, err
			}
			if k.ok && k.e.Version == version {
				return nil, nil // identical: nothing to write
			}
			return []clientv3.Op{clientv3.OpPut(s.prefix+name, string(val))}, nil
		},
		done: func(k known) bool { return k.ok && k.e.Version == version },
	})
	if err != nil {
		return "", err
	}
	if rev != 0 {
		s.applyOwn(name, &resource.Versioned{Set: set, Version: version}, rev)
	}
	return version, nil
}

// Delete removes the set name from etcd: an error wraps store.ErrNotFound if etcd has none.
// expected makes it a compare-and-set as for Put. It returns as Put does.
func (s *Store) Delete(name string, expected *string) error {
	rev, err := s.run(write{op: "delete", name: name,
		decide: func(k known) ([]clientv3.Op, error) {
			if !k.ok {
				return nil, fmt.Errorf("etcdstore: delete backend set %q: %w", name, store.ErrNotFound)
			}
			if err := checkExpected("delete", name, k, expected); err != nil {
				return nil, err
			}
			return []clientv3.Op{clientv3.OpDelete(s.prefix + name)}, nil
		},
		done: func(k known) bool { return !k.ok },
	})
	if err != nil {
		return err
	}
	if rev != 0 {
		s.applyOwn(name, nil, rev)
	}
	return nil
}

// txn commits then if name's key is still at modRev (0: absent), and returns etcd's response; else
// it returns what etcd has of name instead. A then of no ops only checks, linearizably.
func (s *Store) txn(ctx context.Context, name string, modRev int64, then []clientv3.Op) (*clientv3.TxnResponse, *known, error) {
	key := s.prefix + name
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(then...).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return nil, nil, err
	}
	if resp.Succeeded {
		return resp, nil, nil
	}
	fresh := &known{}
	if rr := resp.Responses[0].GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
		kv := rr.Kvs[0]
		fresh.modRev = kv.ModRevision
		// A key that holds no valid set counts as one of an unknown version: a compare-and-set
		// against it fails, and a put replaces it.
		e, ok := s.decode(kv)
		if !ok {
			e = resource.Versioned{Version: "invalid@" + strconv.FormatInt(kv.ModRevision, 10)}
		}
		fresh.e, fresh.ok = e, true
	}
	return nil, fresh, nil
}

// checkExpected checks the compare-and-set of op on the set name, whose entry in etcd is k.
func checkExpected(op, name string, k known, expected *string) error {
	if expected == nil || (k.ok && *expected == k.e.Version) || (!k.ok && *expected == "") {
		return nil
	}
	have := "none (the set does not exist)"
	if k.ok {
		have = strconv.Quote(k.e.Version)
	}
	return fmt.Errorf("etcdstore: %s backend set %q: the current version is %s, not the expected %q: %w",
		op, name, have, *expected, store.ErrVersionMismatch)
}

// unavailable wraps err, an error of a request to etcd, with store.ErrUnavailable unless etcd
// refused the request itself (one too large, say: then nothing would change on a retry), or with
// store.ErrPermissionDenied when etcd's authorization refused it.
func (s *Store) unavailable(err error) error {
	switch refused(err) {
	case codes.PermissionDenied:
		// etcd's own text ("etcdserver: permission denied") would say nothing more.
		return fmt.Errorf("etcd (%s) refused it: the etcd user's role does not allow it on %s: %w", s.endpoints, s.prefix, store.ErrPermissionDenied)
	case codes.InvalidArgument:
		return fmt.Errorf("etcd (%s) refused it: %w", s.endpoints, err)
	}
	return fmt.Errorf("etcd (%s) did not answer within %v (no quorum, or not reachable): %v: %w", s.endpoints, s.timeout, err, store.ErrUnavailable)
}

// Get returns the set name as this replica's view has it, or an error wrapping
// store.ErrNotFound. It never waits for etcd.
func (s *Store) Get(name string) (resource.Versioned, error) {
	e, ok := s.cur.Load().byName[name]
	if !ok {
		return resource.Versioned{}, fmt.Errorf("etcdstore: backend set %q: %w", name, store.ErrNotFound)
	}
	return e, nil
}

// List returns every set of this replica's view, by name. It never waits for etcd.
func (s *Store) List() []resource.Versioned {
	st := s.cur.Load()
	out := make([]resource.Versioned, len(st.names))
	for i, name := range st.names {
		out[i] = st.byName[name]
	}
	return out
}

// Snapshot returns every set of the view by name. The map is shared and immutable: callers must
// not modify it. It costs one atomic load.
func (s *Store) Snapshot() map[string]resource.Versioned {
	return s.cur.Load().byName
}

// Subscribe returns a channel that receives after every change of the view, and a func that
// cancels the subscription (store.Subscribers.Subscribe).
func (s *Store) Subscribe() (<-chan struct{}, func()) { return s.subs.Subscribe() }

// Close stops the watch and closes every subscription's channel. Reads keep working on the last
// view; writes fail. It does not close the etcd client.
func (s *Store) Close() error {
	s.cancel()
	<-s.done
	s.subs.Close()
	return nil
}
