package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

var (
	// ErrNotFound is wrapped by the errors of Get and Delete for a set that does not exist.
	ErrNotFound = errors.New("no such backend set")
	// ErrVersionMismatch is wrapped by the errors of a Put or Delete whose expected version is not
	// the set's current one. The error's text says the current version.
	ErrVersionMismatch = errors.New("version mismatch")
	// ErrUnavailable is wrapped by the errors of a write that a store could not make because what
	// it is kept on cannot be reached or cannot decide (etcdstore: etcd without quorum, or a
	// timeout). The write was not acknowledged; after a timeout it may still be applied later
	// (etcd cannot tell), so read the set or retry: a put of an identical set changes nothing.
	// This package's Store never returns it.
	ErrUnavailable = errors.New("store unavailable")
	// ErrPermissionDenied is wrapped by the errors of a write that what the store is kept on
	// refused to this process (etcdstore: the etcd user's role has no write permission on the
	// key). Nothing was written, and a retry would be refused the same way. This package's Store
	// never returns it.
	ErrPermissionDenied = errors.New("permission denied")
)

// compactBytesMin is the least size of the logs since the last snapshot that starts a compaction.
const compactBytesMin = 4 << 20

// options are what tests may change of a store.
type options struct {
	// compactBytesMin replaces the package's compactBytesMin when not 0.
	compactBytesMin int64
}

// state is one immutable generation of the store's contents.
type state struct {
	byName map[string]resource.Versioned
	names  []string // the keys of byName, sorted
}

// with returns a copy of st with e put.
func (st *state) with(e resource.Versioned) *state {
	next := &state{byName: make(map[string]resource.Versioned, len(st.byName)+1), names: st.names}
	for k, v := range st.byName {
		next.byName[k] = v
	}
	name := e.Set.GetName()
	if _, ok := st.byName[name]; !ok {
		i, _ := slices.BinarySearch(st.names, name)
		next.names = slices.Insert(slices.Clip(st.names), i, name)
	}
	next.byName[name] = e
	return next
}

// without returns a copy of st without the set name, which it has.
func (st *state) without(name string) *state {
	next := &state{byName: make(map[string]resource.Versioned, len(st.byName)), names: make([]string, 0, len(st.names)-1)}
	for k, v := range st.byName {
		if k != name {
			next.byName[k] = v
		}
	}
	for _, n := range st.names {
		if n != name {
			next.names = append(next.names, n)
		}
	}
	return next
}

// Store is the set of backend sets, durable when opened on a directory. Its methods are safe for
// concurrent use.
type Store struct {
	dir          string // "" in memory
	log          hclog.Logger
	compactBytes int64 // the least log size that starts a compaction

	// cur is the current contents; it is replaced, never changed, under mu.
	cur atomic.Pointer[state]

	// mu serialises writes (Put, Delete, compaction) and Close.
	mu        sync.Mutex
	lock      *os.File // the flocked LOCK file
	wal       *os.File // the log appended to
	walSeq    uint64
	walBytes  int64  // wal's size
	firstSeq  uint64 // the first log the snapshot does not cover
	logBytes  int64  // the size of the logs from firstSeq on
	compactAt int64  // logBytes at which to compact next
	broken    error  // set when the files are in an unknown state: no more writes
	closed    bool
	buf       []byte // the record being written

	subs Subscribers
}

// Open opens the store in dir, creating the directory (mode 0700) and the store if missing, and
// replays it. dir == "" means in memory only: nothing is written anywhere. log may be nil.
func Open(dir string, log hclog.Logger) (*Store, error) {
	return open(dir, log, options{})
}

func open(dir string, log hclog.Logger, o options) (*Store, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	s := &Store{dir: dir, log: log, compactBytes: compactBytesMin}
	if o.compactBytesMin != 0 {
		s.compactBytes = o.compactBytesMin
	}
	if dir == "" {
		s.cur.Store(&state{byName: map[string]resource.Versioned{}})
		return s, nil
	}
	if err := makeDir(dir); err != nil {
		return nil, err
	}
	lock, initialized, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	err = s.load(initialized)
	if err == nil && !initialized {
		// From now on the directory has a log: LOCK says so, after the log is on disk.
		err = writeLock(lock, true)
	}
	if err != nil {
		if s.wal != nil {
			s.wal.Close()
		}
		lock.Close()
		return nil, err
	}
	return s, nil
}

// makeDir creates dir when missing, and fsyncs its parent so that it stays.
func makeDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return syncDir(filepath.Dir(dir))
}

// load reads the snapshot and the logs into s, and opens the last log for appending. initialized
// says that LOCK marks the directory as one that held a store.
func (s *Store) load(initialized bool) error {
	if err := os.Remove(filepath.Join(s.dir, snapshotTmp)); err == nil {
		s.log.Info("removed the snapshot that a compaction did not finish", "file", snapshotTmp)
	}
	byName := map[string]resource.Versioned{}
	first, snapBytes, hasSnapshot, err := readSnapshot(s.dir, byName)
	if err != nil {
		return err
	}
	seqs, err := listLogs(s.dir)
	if err != nil {
		return err
	}
	for len(seqs) > 0 && seqs[0] < first {
		if err := os.Remove(filepath.Join(s.dir, logName(seqs[0]))); err != nil {
			return fmt.Errorf("store: remove a log the snapshot covers: %w", err)
		}
		s.log.Info("removed a log that the snapshot covers", "file", logName(seqs[0]))
		seqs = seqs[1:]
	}
	switch {
	case len(seqs) == 0 && hasSnapshot:
		return corrupt(filepath.Join(s.dir, logName(first)), 0, "missing: the snapshot is followed by log %d, which is not there", first)
	case len(seqs) == 0 && initialized:
		return fmt.Errorf("store: directory %s held a store (its %s says so), but its logs and snapshot are gone: "+
			"restore them; or, to start with no sets, remove %s", s.dir, lockFile, filepath.Join(s.dir, lockFile))
	case len(seqs) == 0:
		f, err := createLog(s.dir, first)
		if err != nil {
			return err
		}
		s.wal, s.walSeq, s.walBytes = f, first, headerBytes
	case seqs[0] != first:
		return corrupt(filepath.Join(s.dir, logName(first)), 0, "missing: the first log is %s, but the sets start at log %d (is the snapshot gone?)",
			logName(seqs[0]), first)
	}
	puts, deletes := 0, 0
	apply := func(_ int64, r record) error {
		switch r.kind {
		case kindPut:
			byName[r.set.GetName()] = resource.Versioned{Set: r.set, Version: r.version}
			puts++
		case kindDelete:
			delete(byName, r.name)
			deletes++
		default:
			return fmt.Errorf("a record of kind %d in a log", r.kind)
		}
		return nil
	}
	for i, seq := range seqs {
		if i > 0 && seq != seqs[i-1]+1 {
			return corrupt(filepath.Join(s.dir, logName(seqs[i-1]+1)), 0, "missing: logs %d and %d are there but not the one between", seqs[i-1], seq)
		}
		f, size, err := replayLog(s.dir, seq, i == len(seqs)-1, s.log, apply)
		if err != nil {
			return err
		}
		s.logBytes += size
		if i < len(seqs)-1 {
			f.Close()
			continue
		}
		s.wal, s.walSeq, s.walBytes = f, seq, size
	}
	if s.logBytes == 0 {
		s.logBytes = headerBytes
	}
	s.firstSeq = first
	s.compactAt = max(s.compactBytes, 2*snapBytes)
	st := &state{byName: byName, names: make([]string, 0, len(byName))}
	for name := range byName {
		st.names = append(st.names, name)
	}
	slices.Sort(st.names)
	s.cur.Store(st)
	s.log.Info("store opened", "dir", s.dir, "sets", len(byName), "snapshot_bytes", snapBytes,
		"logs", len(seqs), "log_bytes", s.logBytes, "log_puts", puts, "log_deletes", deletes)
	return nil
}

// readSnapshot reads dir's snapshot, if there is one, into byName, and returns the first log that
// follows it (1 when there is no snapshot) and its size.
func readSnapshot(dir string, byName map[string]resource.Versioned) (first uint64, size int64, ok bool, err error) {
	path := filepath.Join(dir, snapshotFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 1, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, false, fmt.Errorf("store: %w", err)
	}
	size = fi.Size()
	hdr := make([]byte, headerBytes)
	n, _ := f.ReadAt(hdr, 0)
	if first, err = parseHeader(path, hdr[:n], snapshotMagic); err != nil {
		return 0, 0, false, err
	}
	var puts uint64
	ended := false
	end, torn, err := scan(f, path, size, func(_ int64, r record) error {
		switch {
		case ended:
			return errors.New("a record after the end record")
		case r.kind == kindPut:
			byName[r.set.GetName()] = resource.Versioned{Set: r.set, Version: r.version}
			puts++
		case r.kind == kindEnd && r.count == puts:
			ended = true
		case r.kind == kindEnd:
			return fmt.Errorf("the end record counts %d sets, the snapshot has %d", r.count, puts)
		default:
			return fmt.Errorf("a record of kind %d in a snapshot", r.kind)
		}
		return nil
	})
	switch {
	case err != nil:
		return 0, 0, false, err
	case torn != "":
		return 0, 0, false, corrupt(path, end, "%s in a snapshot, which is written whole", torn)
	case !ended:
		return 0, 0, false, corrupt(path, end, "the snapshot has no end record: it is cut short")
	}
	return first, size, true, nil
}

// listLogs returns the seqs of dir's logs, in order.
func listLogs(dir string) ([]uint64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var seqs []uint64
	for _, de := range des {
		if seq, ok := parseLogName(de.Name()); ok {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

// moveAside copies the bytes of f (the log at path) from end to size into a file of their own in
// dir, torn-<log>-<offset>, fsynced with the directory, and returns its path.
func moveAside(dir string, f *os.File, path string, end, size int64) (string, error) {
	aside := filepath.Join(dir, fmt.Sprintf("%s%s-%d", tornPrefix, filepath.Base(path), end))
	b := make([]byte, size-end)
	if _, err := f.ReadAt(b, end); err != nil {
		return "", fmt.Errorf("store: read the torn tail of %s: %w", path, err)
	}
	if err := os.WriteFile(aside, b, 0o600); err != nil {
		return "", fmt.Errorf("store: keep the torn tail of %s: %w", path, err)
	}
	g, err := os.Open(aside)
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	err = g.Sync()
	g.Close()
	if err != nil {
		return "", fmt.Errorf("store: fsync %s: %w", aside, err)
	}
	return aside, syncDir(dir)
}

// replayLog applies the records of log seq, and returns it open with its size. In the last log, a
// torn append is truncated away (and a header cut short is written again: a log whose creation
// was cut short holds nothing); anywhere else it is corruption.
func replayLog(dir string, seq uint64, last bool, log hclog.Logger, apply func(int64, record) error) (f *os.File, size int64, err error) {
	cutShort := false
	path := filepath.Join(dir, logName(seq))
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("store: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("store: %w", err)
	}
	size = fi.Size()
	if last && size <= headerBytes {
		zero, err := zeroFrom(f, path, 0, size)
		if err != nil {
			return nil, 0, err
		}
		cutShort = size < headerBytes || zero
	}
	if cutShort {
		log.Warn("rewriting the header of a log whose creation was cut short", "file", path, "bytes", size)
		if err := f.Truncate(0); err != nil {
			return nil, 0, fmt.Errorf("store: truncate %s: %w", path, err)
		}
		if err := writeHeader(f, path, seq); err != nil {
			return nil, 0, err
		}
		return f, headerBytes, nil
	}
	hdr := make([]byte, headerBytes)
	n, _ := f.ReadAt(hdr, 0)
	got, err := parseHeader(path, hdr[:n], logMagic)
	if err != nil {
		return nil, 0, err
	}
	if got != seq {
		return nil, 0, corrupt(path, 12, "the header says log %d", got)
	}
	end, torn, err := scan(f, path, size, apply)
	if err != nil {
		return nil, 0, err
	}
	if torn == "" {
		return f, size, nil
	}
	if !last {
		return nil, 0, corrupt(path, end, "%s, in a log that is not the last", torn)
	}
	// Moved aside before the log is cut: were the diagnosis ever wrong, nothing is lost.
	aside, err := moveAside(dir, f, path, end, size)
	if err != nil {
		return nil, 0, err
	}
	log.Warn("dropping a torn append at the end of the log: a crash cut it short, and it was never acknowledged; its bytes are kept aside",
		"file", path, "offset", end, "bytes", size-end, "why", torn, "kept_in", aside)
	if err := f.Truncate(end); err != nil {
		return nil, 0, fmt.Errorf("store: truncate %s: %w", path, err)
	}
	if err := fdatasync(f); err != nil {
		return nil, 0, fmt.Errorf("store: fsync %s: %w", path, err)
	}
	return f, end, nil
}

// Put stores a copy of set, which the caller has validated (resource.Validate), and returns its
// version (resource.Version). expected != nil makes it a compare-and-set: *expected must be the
// set's current version, "" meaning that the set must not exist; else the error wraps
// ErrVersionMismatch and says the current version. A put of a set identical to the stored one
// writes nothing, notifies nobody and returns the same version.
func (s *Store) Put(set *discoveryv1.BackendSet, expected *string) (string, error) {
	set = proto.Clone(set).(*discoveryv1.BackendSet)
	version := resource.Version(set)
	name := set.GetName()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writableLocked(); err != nil {
		return "", err
	}
	cur := s.cur.Load()
	old, ok := cur.byName[name]
	if err := checkExpected("put", name, old, ok, expected); err != nil {
		return "", err
	}
	if ok && old.Version == version {
		return version, nil
	}
	var err error
	if s.buf, err = appendPut(s.buf[:0], set, version); err != nil {
		return "", err
	}
	if err := s.appendLocked(s.buf); err != nil {
		return "", err
	}
	s.publishLocked(cur.with(resource.Versioned{Set: set, Version: version}))
	return version, nil
}

// Get returns the set name, or an error wrapping ErrNotFound.
func (s *Store) Get(name string) (resource.Versioned, error) {
	e, ok := s.cur.Load().byName[name]
	if !ok {
		return resource.Versioned{}, fmt.Errorf("store: backend set %q: %w", name, ErrNotFound)
	}
	return e, nil
}

// List returns every set, by name.
func (s *Store) List() []resource.Versioned {
	st := s.cur.Load()
	out := make([]resource.Versioned, len(st.names))
	for i, name := range st.names {
		out[i] = st.byName[name]
	}
	return out
}

// Delete removes the set name: an error wraps ErrNotFound if there is none. expected makes it a
// compare-and-set as for Put.
func (s *Store) Delete(name string, expected *string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writableLocked(); err != nil {
		return err
	}
	cur := s.cur.Load()
	old, ok := cur.byName[name]
	if !ok {
		return fmt.Errorf("store: delete backend set %q: %w", name, ErrNotFound)
	}
	if err := checkExpected("delete", name, old, ok, expected); err != nil {
		return err
	}
	var err error
	if s.buf, err = appendDelete(s.buf[:0], name); err != nil {
		return err
	}
	if err := s.appendLocked(s.buf); err != nil {
		return err
	}
	s.publishLocked(cur.without(name))
	return nil
}

// Snapshot returns every set by name. The map is shared and immutable: callers must not modify it.
// It costs one atomic load.
func (s *Store) Snapshot() map[string]resource.Versioned {
	return s.cur.Load().byName
}

// Subscribe returns a channel that receives after every change, and a func that cancels the
// subscription (Subscribers.Subscribe): a receiver reads the state (Snapshot) after it.
func (s *Store) Subscribe() (<-chan struct{}, func()) { return s.subs.Subscribe() }

// Close releases the directory and closes every subscription's channel. Reads keep working on the
// last state; writes fail.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.wal != nil {
		if cerr := s.wal.Close(); cerr != nil {
			err = fmt.Errorf("store: close the log: %w", cerr)
		}
	}
	if s.lock != nil {
		s.lock.Close()
	}
	s.subs.Close()
	return err
}

// writableLocked says why the store takes no write, if it does not.
func (s *Store) writableLocked() error {
	switch {
	case s.closed:
		return errors.New("store: closed")
	case s.broken != nil:
		return s.broken
	}
	return nil
}

// checkExpected checks the compare-and-set of an op on the set name, whose current entry is cur
// if ok.
func checkExpected(op, name string, cur resource.Versioned, ok bool, expected *string) error {
	if expected == nil || (ok && *expected == cur.Version) || (!ok && *expected == "") {
		return nil
	}
	have := "none (the set does not exist)"
	if ok {
		have = strconv.Quote(cur.Version)
	}
	return fmt.Errorf("store: %s backend set %q: the current version is %s, not the expected %q: %w",
		op, name, have, *expected, ErrVersionMismatch)
}

// appendLocked appends the record rec to the log and fsyncs it. A failed write is truncated away
// when possible; when not, or when the fsync fails, the store is broken: it takes no more writes.
func (s *Store) appendLocked(rec []byte) error {
	if s.dir == "" {
		return nil
	}
	path := filepath.Join(s.dir, logName(s.walSeq))
	if _, err := s.wal.WriteAt(rec, s.walBytes); err != nil {
		err = fmt.Errorf("store: append to %s: %w", path, err)
		if terr := s.wal.Truncate(s.walBytes); terr != nil {
			s.breakLocked(err)
		} else if serr := fdatasync(s.wal); serr != nil {
			s.breakLocked(err)
		}
		return err
	}
	if err := fdatasync(s.wal); err != nil {
		err = fmt.Errorf("store: fsync %s: %w", path, err)
		s.breakLocked(err)
		return err
	}
	s.walBytes += int64(len(rec))
	s.logBytes += int64(len(rec))
	return nil
}

func (s *Store) breakLocked(err error) {
	s.broken = fmt.Errorf("%w; the store takes no more writes: restart the control plane, which recovers from its files", err)
	s.log.Error("the store's files are in an unknown state; no more writes until a restart", "error", err)
}

// publishLocked makes next the current state, tells the subscribers, and compacts if it is time.
func (s *Store) publishLocked(next *state) {
	s.cur.Store(next)
	s.subs.Notify()
	if s.dir != "" && s.logBytes >= s.compactAt {
		s.compactLocked(next)
	}
}

// compactLocked starts a new log and writes the snapshot that it follows, then removes the older
// logs. On failure the older logs are kept (they and the new log hold every change since the last
// snapshot) and it is tried again when the logs have grown by as much again.
func (s *Store) compactLocked(st *state) {
	seq := s.walSeq + 1
	f, err := createLog(s.dir, seq)
	if err != nil {
		s.compactAt = s.logBytes + s.compactBytes
		s.log.Error("compaction failed: the log goes on", "error", err)
		return
	}
	if err := s.wal.Close(); err != nil {
		s.log.Warn("close a full log", "file", logName(s.walSeq), "error", err)
	}
	s.wal, s.walSeq, s.walBytes = f, seq, headerBytes
	s.logBytes += headerBytes
	size, err := writeSnapshot(s.dir, seq, st)
	if err != nil {
		s.compactAt = s.logBytes + s.compactBytes
		s.log.Error("compaction failed: the logs since the last snapshot are kept", "error", err)
		return
	}
	for old := s.firstSeq; old < seq; old++ {
		if err := os.Remove(filepath.Join(s.dir, logName(old))); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove a log that the snapshot covers; the next open removes it", "file", logName(old), "error", err)
		}
	}
	s.log.Debug("compacted", "sets", len(st.names), "snapshot_bytes", size, "log_bytes", s.logBytes, "log", logName(seq))
	s.firstSeq, s.logBytes = seq, headerBytes
	s.compactAt = max(s.compactBytes, 2*size)
}
