package supervisor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/xlbproxy/xlb/internal/backoff"
)

// watchReadBytes is the size of the buffer one read of the inotify descriptor fills. The kernel
// returns only whole records, as many as fit; one record is at most unix.SizeofInotifyEvent plus
// NAME_MAX+1 bytes of name, so a read always makes progress. Records beyond the buffer wait in the
// kernel's queue for the next read; when that queue is full the kernel drops events and queues
// IN_Q_OVERFLOW instead, on which the watcher fires.
const watchReadBytes = 16 << 10

// Events asked of the kernel on the directory. IN_MODIFY is not among them: a file being written is
// seen once, when closed (IN_CLOSE_WRITE), not half-written. IN_EXCL_UNLINK drops events on files
// already unlinked from the directory (a replaced file that some process still writes to).
// IN_ONLYDIR makes adding the watch fail if the directory is not one.
const (
	watchNameEvents = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_CREATE | unix.IN_DELETE
	watchDirEvents  = unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
	watchMask       = watchNameEvents | watchDirEvents | unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK
)

// Re-arming: after the watched directory is moved or removed there is nothing to watch until a
// directory is at its path again, so the path is polled, first at once, then after rearmPollMin,
// doubling up to rearmPollMax between tries for as long as it takes.
const (
	rearmPollMin = 50 * time.Millisecond
	rearmPollMax = time.Second
)

// rearmPoll is the backoff of the polls of a lost directory's path. Not jittered: one process
// polls one path.
func rearmPoll() backoff.Backoff {
	return backoff.Backoff{Base: rearmPollMin, Max: rearmPollMax, Jitter: backoff.None}
}

// fileWatcher tells when a file may have changed. It watches the file's directory with inotify and
// filters the directory's events by name; watchFile starts it and Close stops it. Its zero value is
// not usable.
//
// A value on C means "read the file again". Values coalesce (C holds one), so the watcher never
// waits for its reader, and after the last change there is always a value on C that the reader has
// not yet received: a reader that reads the file after each value ends up with its last version.
//
// The watch is on the directory, an inode, not on its path. When the directory is moved away,
// deleted or unmounted (IN_MOVE_SELF, IN_DELETE_SELF, IN_UNMOUNT, IN_IGNORED), the watcher logs it
// at WARN, drops that watch, and polls the path (rearmPollMin doubling to rearmPollMax) until a
// directory is there again; then it watches that one, logs it at INFO, and fires: the file there
// may be another. Events of a dropped watch still queued are ignored. Rearm does the same at once,
// for what inotify does not tell: a directory above the watched one moved or replaced.
type fileWatcher struct {
	path     string        // as given to watchFile, for errors
	dir      string        // absolute directory of path, the one watched
	name     string        // base name of path within dir
	debounce time.Duration // quiet time before C fires; zero: fire after each read of events
	log      hclog.Logger
	fd       int           // the inotify descriptor, for adding and removing watches
	file     *os.File      // the same descriptor, in Go's poller, for reading
	c        chan struct{} // buffer of one
	rearms   chan chan error
	reads    chan watchRead // from read to run
	stop     chan struct{}  // closed by Close
	done     chan struct{}  // closed when run returns
	readDone chan struct{}  // closed when read returns

	// onEvent, when not nil, is called by run for every event read, with whether it was relevant,
	// once run has acted on it (a lost watch is dropped by then). Tests set it, through
	// startWatch, to see what the filter decided.
	onEvent func(ev inotifyEvent, relevant bool)

	// Only run uses these, after startWatch.
	wd      int32           // the watch on dir, when armed
	armed   bool            // whether wd watches the directory at dir's path (as far as the events said)
	lostAt  time.Time       // when the watch was lost, while not armed
	repoll  backoff.Backoff // the polls of dir's path since the watch was lost: rearmPollMin doubling to rearmPollMax
	pollIn  time.Duration   // the wait before the next of those polls
	lastErr string          // the last of those tries' errors logged, so that each is logged once
	symlink bool            // whether path was a symlink when last looked at

	// err is why run stopped before Close, or nil. Written by run before it closes done.
	err error

	closeOnce sync.Once
	closeErr  error
}

// watchRead is what one read of the inotify descriptor brought.
type watchRead struct {
	evs []inotifyEvent
	// misread: a record did not decode; those after it were lost. The kernel returns whole
	// records only, so this is a misreading of them; the next read starts at a record again.
	misread bool
	err     error // the read failed; nothing more will come
}

// watchFile starts watching the file at path, which may be relative: its directory is resolved
// once, now. The directory must exist; the file need not (its creation fires). log receives the
// loss and the re-arming of the watch; nil discards them.
//
// C receives a value after the file may have changed: written and closed (IN_CLOSE_WRITE), replaced
// by a rename onto it (IN_MOVED_TO), created (IN_CREATE), deleted (IN_DELETE) or moved away
// (IN_MOVED_FROM); also when the kernel dropped events (IN_Q_OVERFLOW), as anything may have
// changed, and when the directory is watched again after it was lost (see fileWatcher). While
// path is a symlink (as Kubernetes ConfigMap keys are: file -> ..data/file, with ..data swapped by
// a rename), an event on any name in the directory fires: the target may have changed. Whether
// path is a symlink is looked at again on every event on its own name. A symlink's target outside
// the directory is not watched.
//
// Events closer than debounce to the previous one are coalesced: C fires once debounce has passed
// with no new event (trailing edge), so a file rewritten more often than every debounce fires only
// once the writes pause. Zero means no debounce: C fires after each read of events that had a
// relevant one. A negative debounce is an error.
func watchFile(path string, debounce time.Duration, log hclog.Logger) (*fileWatcher, error) {
	return startWatch(path, debounce, log, nil)
}

// startWatch is watchFile with a hook for tests; see fileWatcher.onEvent.
func startWatch(path string, debounce time.Duration, log hclog.Logger, onEvent func(inotifyEvent, bool)) (*fileWatcher, error) {
	if debounce < 0 {
		return nil, fmt.Errorf("server: watch: %s: negative debounce %v", path, debounce)
	}
	clean := filepath.Clean(path)
	name := filepath.Base(clean)
	if name == "." || name == ".." || name == string(filepath.Separator) {
		return nil, fmt.Errorf("server: watch: %q does not name a file", path)
	}
	dir, err := filepath.Abs(filepath.Dir(clean))
	if err != nil {
		return nil, fmt.Errorf("server: watch: %s: %w", path, err)
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}

	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.EMFILE) {
			err = fmt.Errorf("%w (the limit fs.inotify.max_user_instances or the process's open-files limit is reached)", err)
		}
		return nil, fmt.Errorf("server: watch: %s: inotify_init1: %w", path, err)
	}
	// Non-blocking, so os.NewFile puts it in Go's poller: a Read parks the goroutine and Close
	// wakes it. fd stays usable for the watch calls until then: file.Fd() would make it blocking.
	file := os.NewFile(uintptr(fd), "inotify:"+dir)
	w := &fileWatcher{
		path:     path,
		dir:      dir,
		name:     name,
		debounce: debounce,
		log:      log.With("file", path, "dir", dir),
		fd:       fd,
		file:     file,
		c:        make(chan struct{}, 1),
		rearms:   make(chan chan error),
		reads:    make(chan watchRead),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		readDone: make(chan struct{}),
		onEvent:  onEvent,
		repoll:   rearmPoll(),
	}
	if _, err := w.arm(); err != nil {
		file.Close()
		return nil, fmt.Errorf("server: watch: %s: %w", path, err)
	}
	if err := file.SetReadDeadline(time.Time{}); err != nil {
		file.Close()
		return nil, fmt.Errorf("server: watch: %s: inotify descriptor is not pollable: %w", path, err)
	}
	w.symlink = w.isSymlink()
	go w.read()
	go w.run()
	return w, nil
}

// C returns the channel that receives a value after the file may have changed. It is never closed.
func (w *fileWatcher) C() <-chan struct{} { return w.c }

// Rearm watches the directory at the file's directory path again, now: when a directory other than
// the watched one is there (one above it was moved or replaced, which inotify does not tell), it is
// watched instead, logged at INFO. When none is there, the watch is lost, as when the directory is
// moved away (see fileWatcher), and the error says so. Rearm does not fire C: its caller reads the
// file anyway. After the watcher has stopped (Close, or a failed read), it returns an error.
func (w *fileWatcher) Rearm() error {
	reply := make(chan error, 1)
	select {
	case w.rearms <- reply:
		return <-reply
	case <-w.done:
		return fmt.Errorf("server: watch: %s: the watcher has stopped", w.path)
	}
}

// Close stops the watcher and waits for its goroutines to return. It returns why the watcher had
// stopped on its own, if it had (a failed read of the inotify descriptor), or an error closing the
// descriptor. It may be called more than once, also concurrently; every call returns the first
// one's result.
func (w *fileWatcher) Close() error {
	w.closeOnce.Do(func() {
		close(w.stop)
		<-w.done              // run no longer uses fd, and read is told to stop
		err := w.file.Close() // wakes read's pending Read with os.ErrClosed
		<-w.readDone
		if err != nil {
			err = fmt.Errorf("server: watch: %s: %w", w.path, err)
		}
		w.closeErr = errors.Join(w.err, err)
	})
	return w.closeErr
}

// read reads the inotify descriptor and hands what it read to run, until the descriptor is closed or
// a read fails.
func (w *fileWatcher) read() {
	defer close(w.readDone)
	buf := make([]byte, watchReadBytes)
	for {
		n, err := w.file.Read(buf)
		if errors.Is(err, os.ErrClosed) {
			return
		}
		var r watchRead
		for rest := buf[:n]; len(rest) > 0; {
			var ev inotifyEvent
			var perr error
			if ev, rest, perr = nextInotifyEvent(rest); perr != nil {
				r.misread = true
				break
			}
			r.evs = append(r.evs, ev)
		}
		if err != nil {
			r.err = fmt.Errorf("server: watch: %s: %w", w.path, err)
		}
		select {
		case w.reads <- r:
		case <-w.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// run owns the watcher's state: it takes the reads, the debounce and the polls for a lost
// directory, and Rearm's requests, until Close or a failed read.
func (w *fileWatcher) run() {
	defer close(w.done)
	var debounce, poll *time.Timer
	var debounceC, pollC <-chan time.Time
	defer func() {
		for _, t := range []*time.Timer{debounce, poll} {
			if t != nil {
				t.Stop()
			}
		}
	}()
	// relevant fires C, at once or after the debounce.
	relevant := func() {
		switch {
		case w.debounce == 0:
			w.fire()
		case debounce == nil:
			debounce = time.NewTimer(w.debounce)
			debounceC = debounce.C
		default:
			debounce.Reset(w.debounce)
			debounceC = debounce.C
		}
	}
	// schedule polls the path while the watch is lost.
	schedule := func() {
		if w.armed {
			pollC = nil
			return
		}
		if poll == nil {
			poll = time.NewTimer(w.pollIn)
		} else {
			poll.Reset(w.pollIn)
		}
		pollC = poll.C
	}
	for {
		select {
		case <-w.stop:
			return
		case r := <-w.reads:
			wasArmed := w.armed
			if w.scan(r) {
				relevant()
			}
			if wasArmed && !w.armed {
				if w.retry() {
					relevant()
				}
				schedule()
			}
			if r.err != nil {
				w.err = r.err
				w.fire()
				return
			}
		case <-debounceC:
			debounceC = nil
			w.fire()
		case <-pollC:
			pollC = nil
			if w.retry() {
				relevant()
			}
			schedule()
		case reply := <-w.rearms:
			wasArmed := w.armed
			reply <- w.rearm()
			if wasArmed != w.armed || !w.armed && pollC == nil {
				schedule()
			}
		}
	}
}

// scan handles the events of one read and returns whether one of them was relevant. An event
// that says the watch is gone loses it (see lose); the events of a watch no longer in force are
// ignored.
func (w *fileWatcher) scan(r watchRead) (relevant bool) {
	for _, ev := range r.evs {
		if !ofWatch(ev, w.wd, w.armed) {
			if w.onEvent != nil {
				w.onEvent(ev, false)
			}
			continue
		}
		if ev.name == w.name || ev.mask&unix.IN_Q_OVERFLOW != 0 {
			w.symlink = w.isSymlink()
		}
		rel := isRelevant(ev, w.name, w.symlink)
		relevant = relevant || rel
		if why := watchLost(ev); why != "" {
			w.lose(ev, why)
		} else if ev.mask&unix.IN_Q_OVERFLOW != 0 {
			// A move or removal of the directory may be among the events dropped.
			_ = w.rearm() // logged; when the directory is not there, watching it again fires
		}
		// After the event is acted on, so that a test that saw it sees what it did.
		if w.onEvent != nil {
			w.onEvent(ev, rel)
		}
	}
	return (relevant || r.misread) && w.armed
}

// arm adds the watch on the directory at w.dir's path. When the path names another directory than
// the one watched, the old watch is removed after the new one is in force, so no event falls
// between them; changed says so (or that there was none).
func (w *fileWatcher) arm() (changed bool, err error) {
	wd, err := unix.InotifyAddWatch(w.fd, w.dir, watchMask)
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			err = fmt.Errorf("%w (the limit fs.inotify.max_user_watches is reached)", err)
		}
		return false, fmt.Errorf("watch directory %s: %w", w.dir, err)
	}
	if w.armed && int32(wd) == w.wd {
		return false, nil // the same directory: adding it again changed nothing
	}
	if w.armed {
		w.drop()
	}
	w.wd, w.armed = int32(wd), true
	return true, nil
}

// drop removes the watch wd, which the kernel may have removed already (EINVAL then): its events
// still queued are ignored from now on.
func (w *fileWatcher) drop() {
	_, _ = unix.InotifyRmWatch(w.fd, uint32(w.wd))
	w.armed = false
}

// lose handles the end of the watched directory at its path: it is logged and the watch dropped.
func (w *fileWatcher) lose(ev inotifyEvent, why string) {
	w.drop() // a moved directory is still watched where it went
	w.lostAt, w.lastErr = time.Now(), ""
	w.repoll.Reset()
	w.pollIn = w.repoll.Next()
	w.log.Warn("config directory "+why+"; watching its path until a directory is there again",
		"event", maskString(ev.mask))
}

// retry tries to watch the directory again after it was lost, and reports whether it does now.
// Failures are logged when their error is not the one logged last, except the expected one: that
// nothing is at the path yet.
func (w *fileWatcher) retry() bool {
	if _, err := w.arm(); err != nil {
		w.pollIn = w.repoll.Next()
		if msg := err.Error(); !errors.Is(err, unix.ENOENT) && msg != w.lastErr {
			w.lastErr = msg
			w.log.Warn("cannot watch the config directory again; still trying", "error", err, "retry_in", w.pollIn.String())
		}
		return false
	}
	w.log.Info("config directory is back; watching it again and reloading",
		"lost_for", time.Since(w.lostAt).Round(time.Millisecond).String())
	return true
}

// rearm is Rearm, on run's goroutine.
func (w *fileWatcher) rearm() error {
	if !w.armed {
		if w.retry() {
			return nil
		}
		return fmt.Errorf("server: watch: %s: directory %s is not there; watching its path until it is", w.path, w.dir)
	}
	changed, err := w.arm()
	switch {
	case err != nil:
		w.lose(inotifyEvent{}, "moved or removed")
		return fmt.Errorf("server: watch: %s: %w; watching its path until it is there", w.path, err)
	case changed:
		w.log.Info("config directory was replaced by another; watching the new one")
	}
	return nil
}

// ofWatch reports whether ev comes from the watch in force: wd, when armed. IN_Q_OVERFLOW is of no
// watch (wd -1) and always counts. The events of a watch dropped or replaced may still be queued.
func ofWatch(ev inotifyEvent, wd int32, armed bool) bool {
	return ev.mask&unix.IN_Q_OVERFLOW != 0 || armed && ev.wd == wd
}

// watchLost says how the watched directory left its path when ev means it did, else "". After
// IN_DELETE_SELF and IN_UNMOUNT the kernel removes the watch and sends IN_IGNORED; after
// IN_MOVE_SELF the watch follows the directory wherever it went, which is no longer the path.
func watchLost(ev inotifyEvent) string {
	switch {
	case ev.mask&unix.IN_MOVE_SELF != 0:
		return "moved away"
	case ev.mask&unix.IN_DELETE_SELF != 0:
		return "removed"
	case ev.mask&unix.IN_UNMOUNT != 0:
		return "unmounted"
	case ev.mask&unix.IN_IGNORED != 0:
		return "moved or removed"
	}
	return ""
}

// maskString names the bits of an inotify event mask that the watcher reads, as in
// "IN_CREATE|IN_ISDIR", for logs and test failures. Other bits are shown in hex.
func maskString(mask uint32) string {
	names := []struct {
		bit  uint32
		name string
	}{
		{unix.IN_CLOSE_WRITE, "IN_CLOSE_WRITE"}, {unix.IN_MOVED_TO, "IN_MOVED_TO"}, {unix.IN_MOVED_FROM, "IN_MOVED_FROM"},
		{unix.IN_CREATE, "IN_CREATE"}, {unix.IN_DELETE, "IN_DELETE"}, {unix.IN_DELETE_SELF, "IN_DELETE_SELF"},
		{unix.IN_MOVE_SELF, "IN_MOVE_SELF"}, {unix.IN_Q_OVERFLOW, "IN_Q_OVERFLOW"}, {unix.IN_IGNORED, "IN_IGNORED"},
		{unix.IN_UNMOUNT, "IN_UNMOUNT"}, {unix.IN_ISDIR, "IN_ISDIR"},
	}
	var parts []string
	for _, n := range names {
		if mask&n.bit != 0 {
			parts = append(parts, n.name)
			mask &^= n.bit
		}
	}
	if mask != 0 || len(parts) == 0 {
		parts = append(parts, fmt.Sprintf("%#x", mask))
	}
	return strings.Join(parts, "|")
}

// isSymlink reports whether the watched path is a symlink now; false when it does not exist.
func (w *fileWatcher) isSymlink() bool {
	fi, err := os.Lstat(filepath.Join(w.dir, w.name))
	return err == nil && fi.Mode()&fs.ModeSymlink != 0
}

// fire puts a value on C unless one is there already.
func (w *fileWatcher) fire() {
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// isRelevant reports whether ev, read from the watch on a directory, means that the file called
// name in it may have changed. anyName says the file is a symlink, whose target may change by an
// event on any other name in the directory.
//
// The events that end the watch (watchLost) are not: the file is not at its path then, and
// watching the directory there again fires.
func isRelevant(ev inotifyEvent, name string, anyName bool) bool {
	switch {
	case ev.mask&unix.IN_Q_OVERFLOW != 0:
		return true
	case watchLost(ev) != "":
		return false
	case ev.mask&watchNameEvents == 0: // IN_MODIFY, IN_OPEN, IN_ATTRIB, ...: not asked for, or not finished
		return false
	case ev.name == name:
		return true
	default:
		return anyName && ev.name != ""
	}
}

// inotifyEvent is one record read from an inotify descriptor: unix.InotifyEvent and the name that
// follows it.
type inotifyEvent struct {
	wd     int32
	mask   uint32
	cookie uint32
	name   string // without its NUL padding; empty for events on the watched directory itself
}

// nextInotifyEvent decodes the record at the start of buf and returns it with the bytes after it.
// The layout is that of unix.InotifyEvent in native byte order (wd, mask, cookie, len: four 32-bit
// words), then len bytes of name padded with NULs. A buf too short for the header, or for the name
// length it announces, is an error.
func nextInotifyEvent(buf []byte) (inotifyEvent, []byte, error) {
	const header = unix.SizeofInotifyEvent
	if len(buf) < header {
		return inotifyEvent{}, nil, fmt.Errorf("server: watch: inotify record truncated: %d bytes, want at least %d", len(buf), header)
	}
	nameBytes := binary.NativeEndian.Uint32(buf[12:16])
	if uint64(nameBytes) > uint64(len(buf)-header) {
		return inotifyEvent{}, nil, fmt.Errorf("server: watch: inotify record truncated: name of %d bytes, %d left", nameBytes, len(buf)-header)
	}
	end := header + int(nameBytes)
	name := buf[header:end]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	ev := inotifyEvent{
		wd:     int32(binary.NativeEndian.Uint32(buf[0:4])),
		mask:   binary.NativeEndian.Uint32(buf[4:8]),
		cookie: binary.NativeEndian.Uint32(buf[8:12]),
		name:   string(name),
	}
	return ev, buf[end:], nil
}
