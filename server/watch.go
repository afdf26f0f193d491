package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
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
	// watchAlwaysEvents are not about one name; the kernel sends the last three unasked.
	watchAlwaysEvents = watchDirEvents | unix.IN_Q_OVERFLOW | unix.IN_IGNORED | unix.IN_UNMOUNT
)

// fileWatcher tells when a file may have changed. It watches the file's directory with inotify and
// filters the directory's events by name; watchFile starts it and Close stops it. Its zero value is
// not usable.
//
// A value on C means "read the file again". Values coalesce (C holds one), so the watcher never
// waits for its reader, and after the last change there is always a value on C that the reader has
// not yet received: a reader that reads the file after each value ends up with its last version.
//
// If the directory itself is deleted, moved or unmounted, the watcher fires once more and stops
// watching: C receives nothing after that, and Close returns an error that says why.
type fileWatcher struct {
	path     string        // as given to watchFile, for errors
	dir      string        // absolute directory of path, the one watched
	name     string        // base name of path within dir
	debounce time.Duration // quiet time before C fires; zero: fire after each read of events
	file     *os.File      // the inotify descriptor, in Go's poller
	c        chan struct{} // buffer of one
	done     chan struct{} // closed when run returns

	// onEvent, when not nil, is called by run for every event read, with whether it was relevant.
	// Tests set it, through startWatch, to see what the filter decided.
	onEvent func(ev inotifyEvent, relevant bool)

	// symlink tells whether path was a symlink when last looked at. Only run uses it.
	symlink bool
	// err is why run stopped before Close, or nil. Written by run before it closes done.
	err error

	closeOnce sync.Once
	closeErr  error
}

// watchFile starts watching the file at path, which may be relative: its directory is resolved
// once, now. The directory must exist; the file need not (its creation fires).
//
// C receives a value after the file may have changed: written and closed (IN_CLOSE_WRITE), replaced
// by a rename onto it (IN_MOVED_TO), created (IN_CREATE), deleted (IN_DELETE) or moved away
// (IN_MOVED_FROM); also when the kernel dropped events (IN_Q_OVERFLOW), as anything may have
// changed. While path is a symlink (as Kubernetes ConfigMap keys are: file -> ..data/file, with
// ..data swapped by a rename), an event on any name in the directory fires: the target may have
// changed. Whether path is a symlink is looked at again on every event on its own name. A symlink's
// target outside the directory is not watched.
//
// Events closer than debounce to the previous one are coalesced: C fires once debounce has passed
// with no new event (trailing edge), so a file rewritten more often than every debounce fires only
// once the writes pause. Zero means no debounce: C fires after each read of events that had a
// relevant one. A negative debounce is an error.
func watchFile(path string, debounce time.Duration) (*fileWatcher, error) {
	return startWatch(path, debounce, nil)
}

// startWatch is watchFile with a hook for tests; see fileWatcher.onEvent.
func startWatch(path string, debounce time.Duration, onEvent func(inotifyEvent, bool)) (*fileWatcher, error) {
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

	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.EMFILE) {
			err = fmt.Errorf("%w (the limit fs.inotify.max_user_instances or the process's open-files limit is reached)", err)
		}
		return nil, fmt.Errorf("server: watch: %s: inotify_init1: %w", path, err)
	}
	// Non-blocking, so os.NewFile puts it in Go's poller: a Read parks the goroutine, a deadline
	// ends it, and Close wakes it.
	file := os.NewFile(uintptr(fd), "inotify:"+dir)
	if _, err := unix.InotifyAddWatch(fd, dir, watchMask); err != nil {
		file.Close()
		if errors.Is(err, unix.ENOSPC) {
			err = fmt.Errorf("%w (the limit fs.inotify.max_user_watches is reached)", err)
		}
		return nil, fmt.Errorf("server: watch: %s: watch directory %s: %w", path, dir, err)
	}
	if err := file.SetReadDeadline(time.Time{}); err != nil {
		file.Close()
		return nil, fmt.Errorf("server: watch: %s: inotify descriptor is not pollable: %w", path, err)
	}

	w := &fileWatcher{
		path:     path,
		dir:      dir,
		name:     name,
		debounce: debounce,
		file:     file,
		c:        make(chan struct{}, 1),
		done:     make(chan struct{}),
		onEvent:  onEvent,
	}
	w.symlink = w.isSymlink()
	go w.run()
	return w, nil
}

// C returns the channel that receives a value after the file may have changed. It is never closed.
func (w *fileWatcher) C() <-chan struct{} { return w.c }

// Close stops the watcher and waits for its goroutine to return. It returns why the watcher had
// stopped on its own, if it had (see fileWatcher), or an error closing the inotify descriptor. It
// may be called more than once, also concurrently; every call returns the first one's result.
func (w *fileWatcher) Close() error {
	w.closeOnce.Do(func() {
		err := w.file.Close() // wakes run's pending Read with os.ErrClosed
		<-w.done
		if err != nil {
			err = fmt.Errorf("server: watch: %s: %w", w.path, err)
		}
		w.closeErr = errors.Join(w.err, err)
	})
	return w.closeErr
}

// run reads events until Close, or until the watch on the directory is gone. A debounce in progress
// is a read deadline: it is set at a relevant event, moved at the next, and C fires when it passes.
func (w *fileWatcher) run() {
	defer close(w.done)
	buf := make([]byte, watchReadBytes)
	for {
		n, err := w.file.Read(buf)
		if n > 0 {
			relevant, stop := w.scan(buf[:n])
			if stop != nil {
				w.err = stop
				w.fire()
				return
			}
			if relevant {
				if w.debounce == 0 {
					w.fire()
				} else {
					// Fails only once Close has closed the file; the next Read then says so.
					_ = w.file.SetReadDeadline(time.Now().Add(w.debounce))
				}
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			w.fire()
			_ = w.file.SetReadDeadline(time.Time{}) // as above
		case errors.Is(err, os.ErrClosed):
			return
		default:
			w.err = fmt.Errorf("server: watch: %s: %w", w.path, err)
			w.fire()
			return
		}
	}
}

// scan handles the records of one read. It returns whether one of them was relevant, and an error
// when the watch on the directory is gone, after which nothing more will come.
func (w *fileWatcher) scan(buf []byte) (relevant bool, stop error) {
	for len(buf) > 0 {
		ev, rest, err := nextInotifyEvent(buf)
		if err != nil {
			// The kernel returns whole records only, so this is a misreading of them; the next read
			// starts at a record again. Whatever the rest said, the file may have changed.
			return true, nil
		}
		buf = rest
		if ev.name == w.name || ev.mask&unix.IN_Q_OVERFLOW != 0 {
			w.symlink = w.isSymlink()
		}
		r := isRelevant(ev, w.name, w.symlink)
		if w.onEvent != nil {
			w.onEvent(ev, r)
		}
		relevant = relevant || r
		switch {
		case ev.mask&unix.IN_IGNORED != 0: // after IN_DELETE_SELF or IN_UNMOUNT
			return true, fmt.Errorf("server: watch: %s: directory %s was deleted or unmounted; no longer watching", w.path, w.dir)
		case ev.mask&unix.IN_MOVE_SELF != 0:
			return true, fmt.Errorf("server: watch: %s: directory %s was moved; no longer watching", w.path, w.dir)
		}
	}
	return relevant, nil
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
func isRelevant(ev inotifyEvent, name string, anyName bool) bool {
	switch {
	case ev.mask&watchAlwaysEvents != 0:
		return true
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
