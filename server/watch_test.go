package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// watchWait bounds every wait for the watcher. It is a failure bound, not a timing assertion: the
// events come within milliseconds, and a test only waits this long when it is about to fail.
const watchWait = 10 * time.Second

// inotifyRecord encodes one record as the kernel does, with the name NUL-padded to nameBytes
// (at least len(name)+1 when name is not empty, as the kernel pads).
func inotifyRecord(wd int32, mask, cookie uint32, name string, nameBytes int) []byte {
	b := make([]byte, unix.SizeofInotifyEvent+nameBytes)
	binary.NativeEndian.PutUint32(b[0:4], uint32(wd))
	binary.NativeEndian.PutUint32(b[4:8], mask)
	binary.NativeEndian.PutUint32(b[8:12], cookie)
	binary.NativeEndian.PutUint32(b[12:16], uint32(nameBytes))
	copy(b[unix.SizeofInotifyEvent:], name)
	return b
}

func TestWatchParseRecords(t *testing.T) {
	one := inotifyRecord(1, unix.IN_CLOSE_WRITE, 0, "xlb.yaml", 16)
	two := append(inotifyRecord(1, unix.IN_MOVED_FROM, 7, "a", 16), inotifyRecord(1, unix.IN_MOVED_TO, 7, "b", 16)...)
	self := inotifyRecord(1, unix.IN_DELETE_SELF, 0, "", 0)
	overflow := inotifyRecord(-1, unix.IN_Q_OVERFLOW, 0, "", 0)
	unpadded := inotifyRecord(2, unix.IN_CREATE, 0, "exact", 5) // no NUL at all: the name is all of it
	huge := inotifyRecord(1, unix.IN_CREATE, 0, "", 0)
	binary.NativeEndian.PutUint32(huge[12:16], ^uint32(0)) // a name length no buffer has

	tests := []struct {
		name    string
		buf     []byte
		want    []inotifyEvent
		wantErr string // "" for none; else a part of the error after the events in want
	}{
		{"empty", nil, nil, ""},
		{"one", one, []inotifyEvent{{1, unix.IN_CLOSE_WRITE, 0, "xlb.yaml"}}, ""},
		{"two with a cookie", two, []inotifyEvent{{1, unix.IN_MOVED_FROM, 7, "a"}, {1, unix.IN_MOVED_TO, 7, "b"}}, ""},
		{"no name", self, []inotifyEvent{{1, unix.IN_DELETE_SELF, 0, ""}}, ""},
		{"overflow wd -1", overflow, []inotifyEvent{{-1, unix.IN_Q_OVERFLOW, 0, ""}}, ""},
		{"name without NUL", unpadded, []inotifyEvent{{2, unix.IN_CREATE, 0, "exact"}}, ""},
		{"truncated header", one[:10], nil, "10 bytes, want at least 16"},
		{"truncated name", one[:20], nil, "name of 16 bytes, 4 left"},
		{"name length beyond any buffer", huge, nil, "name of 4294967295 bytes, 0 left"},
		{"whole then truncated", append(bytes.Clone(one), two[:unix.SizeofInotifyEvent+3]...),
			[]inotifyEvent{{1, unix.IN_CLOSE_WRITE, 0, "xlb.yaml"}}, "name of 16 bytes, 3 left"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []inotifyEvent
			var err error
			for buf := tt.buf; len(buf) > 0; {
				var ev inotifyEvent
				ev, buf, err = nextInotifyEvent(buf)
				if err != nil {
					break
				}
				got = append(got, ev)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got events %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("event %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got error %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func FuzzWatchParseRecords(f *testing.F) {
	f.Add(inotifyRecord(1, unix.IN_CLOSE_WRITE, 0, "xlb.yaml", 16))
	f.Add(append(inotifyRecord(1, unix.IN_MOVED_FROM, 7, "..data_tmp", 16), inotifyRecord(1, unix.IN_MOVED_TO, 7, "..data", 16)...))
	f.Add(inotifyRecord(-1, unix.IN_Q_OVERFLOW, 0, "", 0))
	f.Add(inotifyRecord(1, unix.IN_CREATE, 0, "x", 16)[:17])
	f.Fuzz(func(t *testing.T, buf []byte) {
		for len(buf) > 0 {
			ev, rest, err := nextInotifyEvent(buf)
			if err != nil {
				return
			}
			if used := len(buf) - len(rest); used < unix.SizeofInotifyEvent || !bytes.Equal(buf[used:], rest) {
				t.Fatalf("rest is not what follows a record: used %d of %d bytes", used, len(buf))
			}
			if strings.IndexByte(ev.name, 0) >= 0 {
				t.Fatalf("name %q holds a NUL", ev.name)
			}
			buf = rest
		}
	})
}

func TestWatchRelevant(t *testing.T) {
	const name = "xlb.yaml"
	tests := []struct {
		what     string
		ev       inotifyEvent
		symlink  bool
		relevant bool
	}{
		{"written and closed", inotifyEvent{mask: unix.IN_CLOSE_WRITE, name: name}, false, true},
		{"renamed onto", inotifyEvent{mask: unix.IN_MOVED_TO, name: name}, false, true},
		{"renamed away", inotifyEvent{mask: unix.IN_MOVED_FROM, name: name}, false, true},
		{"created", inotifyEvent{mask: unix.IN_CREATE, name: name}, false, true},
		{"deleted", inotifyEvent{mask: unix.IN_DELETE, name: name}, false, true},
		{"modified, not closed", inotifyEvent{mask: unix.IN_MODIFY, name: name}, false, false},
		{"attributes", inotifyEvent{mask: unix.IN_ATTRIB, name: name}, true, false},
		{"another file written", inotifyEvent{mask: unix.IN_CLOSE_WRITE, name: "other.yaml"}, false, false},
		{"another file renamed onto", inotifyEvent{mask: unix.IN_MOVED_TO, name: "xlb.yaml.tmp"}, false, false},
		{"a name that only starts like it", inotifyEvent{mask: unix.IN_CLOSE_WRITE, name: name + "~"}, false, false},
		{"..data swapped, file is a symlink", inotifyEvent{mask: unix.IN_MOVED_TO, name: "..data"}, true, true},
		{"..data swapped, file is not a symlink", inotifyEvent{mask: unix.IN_MOVED_TO, name: "..data"}, false, false},
		{"a directory made, file is a symlink", inotifyEvent{mask: unix.IN_CREATE | unix.IN_ISDIR, name: "..2024_01"}, true, true},
		{"another file modified, file is a symlink", inotifyEvent{mask: unix.IN_MODIFY, name: "other"}, true, false},
		{"queue overflow", inotifyEvent{wd: -1, mask: unix.IN_Q_OVERFLOW}, false, true},
		{"directory deleted", inotifyEvent{mask: unix.IN_DELETE_SELF}, false, true},
		{"directory moved", inotifyEvent{mask: unix.IN_MOVE_SELF}, false, true},
		{"watch removed", inotifyEvent{mask: unix.IN_IGNORED}, false, true},
		{"unmounted", inotifyEvent{mask: unix.IN_UNMOUNT}, false, true},
	}
	for _, tt := range tests {
		if got := isRelevant(tt.ev, name, tt.symlink); got != tt.relevant {
			t.Errorf("%s: isRelevant(%+v, %q, symlink %v) = %v, want %v", tt.what, tt.ev, name, tt.symlink, got, tt.relevant)
		}
	}
}

// watchEvent is one event run saw, with the filter's decision.
type watchEvent struct {
	inotifyEvent
	relevant bool
}

// eventLog records what a watcher's run saw, through its onEvent hook.
type eventLog struct {
	changed chan struct{} // a value after each append; buffer of one

	mu  sync.Mutex
	evs []watchEvent
}

func (l *eventLog) add(ev inotifyEvent, relevant bool) {
	l.mu.Lock()
	l.evs = append(l.evs, watchEvent{ev, relevant})
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until run has seen an event on name with one of the bits of mask, and returns all
// events it had seen by then.
func (l *eventLog) waitFor(t *testing.T, name string, mask uint32) []watchEvent {
	t.Helper()
	timeout := time.After(watchWait)
	for {
		l.mu.Lock()
		evs := l.evs
		l.mu.Unlock()
		for _, ev := range evs {
			if ev.name == name && ev.mask&mask != 0 {
				return evs
			}
		}
		select {
		case <-l.changed:
		case <-timeout:
			t.Fatalf("no event %#x on %q within %v; saw %+v", mask, name, watchWait, evs)
		}
	}
}

// startTestWatch watches path, with an event log, and closes the watcher at the end of the test.
func startTestWatch(t *testing.T, path string, debounce time.Duration) (*fileWatcher, *eventLog) {
	t.Helper()
	log := &eventLog{changed: make(chan struct{}, 1)}
	w, err := startWatch(path, debounce, log.add)
	if err != nil {
		t.Fatalf("startWatch(%q): %v", path, err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return w, log
}

// waitFire waits for a value on w.C, after what was done.
func waitFire(t *testing.T, w *fileWatcher, what string) {
	t.Helper()
	select {
	case <-w.C():
	case <-time.After(watchWait):
		t.Fatalf("no value on C within %v after %s", watchWait, what)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWatchWriteInPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xlb.yaml")
	writeFile(t, path, "a")
	w, _ := startTestWatch(t, path, 0)
	writeFile(t, path, "b")
	waitFire(t, w, "writing the file in place")
}

func TestWatchRenameOnto(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "xlb.yaml")
	tmp := filepath.Join(dir, ".xlb.yaml.tmp")
	writeFile(t, path, "a")
	writeFile(t, tmp, "b")
	w, log := startTestWatch(t, path, 0)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitFire(t, w, "renaming a file onto it")
	// The rename's other half is about the temporary file, which is not the watched one.
	for _, ev := range log.waitFor(t, "xlb.yaml", unix.IN_MOVED_TO) {
		if ev.name == ".xlb.yaml.tmp" && ev.relevant {
			t.Errorf("event on the temporary file was relevant: %+v", ev)
		}
	}
}

// TestWatchOtherFile shows that the watcher reads the events of the other files in its directory,
// and that the filter finds them not relevant. Events come in order, so once the watched file's
// event is seen, the other file's, which came first, have all been seen too.
func TestWatchOtherFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "xlb.yaml")
	writeFile(t, path, "a")
	w, log := startTestWatch(t, path, 0)
	writeFile(t, filepath.Join(dir, "other.yaml"), "x") // created, written, closed
	writeFile(t, path, "b")
	evs := log.waitFor(t, "xlb.yaml", unix.IN_CLOSE_WRITE)
	waitFire(t, w, "writing the file")

	var other, watched int
	for _, ev := range evs {
		switch {
		case ev.name == "other.yaml":
			other++
			if ev.relevant {
				t.Errorf("event on other.yaml was relevant: %+v", ev)
			}
		case ev.name == "xlb.yaml" && ev.mask&unix.IN_CLOSE_WRITE != 0:
			watched++
			if !ev.relevant {
				t.Errorf("event on xlb.yaml was not relevant: %+v", ev)
			}
		}
	}
	if other < 2 { // IN_CREATE and IN_CLOSE_WRITE
		t.Errorf("saw %d events on other.yaml before the one on xlb.yaml, want 2; saw %+v", other, evs)
	}
	if watched != 1 {
		t.Errorf("saw %d IN_CLOSE_WRITE events on xlb.yaml, want 1; saw %+v", watched, evs)
	}
}

func TestWatchDeleteRecreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xlb.yaml")
	writeFile(t, path, "a")
	w, log := startTestWatch(t, path, 0)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// Removing makes one event, and C fires after the read that brought it: after this value, C is
	// empty until the next relevant event.
	log.waitFor(t, "xlb.yaml", unix.IN_DELETE)
	waitFire(t, w, "deleting the file")

	writeFile(t, path, "b")
	waitFire(t, w, "creating the file again")
}

// TestWatchSymlinkReplaced replaces a symlink to a/xlb.yaml by one to b/xlb.yaml, by a rename onto
// the watched name.
func TestWatchSymlinkReplaced(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, sub, "xlb.yaml"), sub)
	}
	path := filepath.Join(dir, "xlb.yaml")
	tmp := filepath.Join(dir, "xlb.yaml.tmp")
	if err := os.Symlink("a/xlb.yaml", path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("b/xlb.yaml", tmp); err != nil {
		t.Fatal(err)
	}
	w, _ := startTestWatch(t, path, 0)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitFire(t, w, "renaming a new symlink onto it")
	if got, err := os.ReadFile(path); err != nil || string(got) != "b" {
		t.Errorf("after the swap the file reads %q, %v; want %q", got, err, "b")
	}
}

// TestWatchConfigMap swaps the target of the watched symlink as the kubelet updates a mounted
// ConfigMap: xlb.yaml -> ..data/xlb.yaml and ..data -> ..2024_a stay, and a rename of ..data_tmp
// (-> ..2024_b) onto ..data changes what xlb.yaml reads. No event names xlb.yaml.
func TestWatchConfigMap(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"..2024_a", "..2024_b"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, sub, "xlb.yaml"), sub)
	}
	for link, target := range map[string]string{
		"..data":     "..2024_a",
		"..data_tmp": "..2024_b",
		"xlb.yaml":   "..data/xlb.yaml",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "xlb.yaml")
	w, log := startTestWatch(t, path, 0)
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	waitFire(t, w, "swapping ..data")
	for _, ev := range log.waitFor(t, "..data", unix.IN_MOVED_TO) {
		if ev.name == "xlb.yaml" {
			t.Errorf("saw an event on xlb.yaml itself, so the test shows nothing: %+v", ev)
		}
		if !ev.relevant {
			t.Errorf("event on another name was not relevant while the file is a symlink: %+v", ev)
		}
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "..2024_b" {
		t.Errorf("after the swap the file reads %q, %v; want %q", got, err, "..2024_b")
	}
}

// TestWatchBecomesSymlink shows that the watcher looks again at whether the file is a symlink when
// its name changes: a regular file replaced by a symlink, then an event on another name fires.
func TestWatchBecomesSymlink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "xlb.yaml")
	writeFile(t, path, "a")
	w, log := startTestWatch(t, path, 0)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/xlb.yaml", path); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, "xlb.yaml", unix.IN_CREATE)
	waitFire(t, w, "replacing the file by a symlink")
	if err := os.Mkdir(filepath.Join(dir, "..data"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, ev := range log.waitFor(t, "..data", unix.IN_CREATE) {
		if ev.name == "..data" && !ev.relevant {
			t.Errorf("event on ..data was not relevant once the file is a symlink: %+v", ev)
		}
	}
}

func TestWatchRelativePath(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "xlb.yaml"), "a")
	t.Chdir(dir)
	w, _ := startTestWatch(t, "xlb.yaml", 0)
	if w.dir != dir {
		t.Errorf("watching directory %q, want %q", w.dir, dir)
	}
	writeFile(t, filepath.Join(dir, "xlb.yaml"), "b")
	waitFire(t, w, "writing the file named by a relative path")
}

// TestWatchDebounceHolds shows that events within the debounce do not fire: with a debounce no
// test lasts, run has seen the relevant events and C is still empty.
func TestWatchDebounceHolds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xlb.yaml")
	w, log := startTestWatch(t, path, time.Hour)
	writeFile(t, path, "a")
	writeFile(t, path, "b")
	log.waitFor(t, "xlb.yaml", unix.IN_CLOSE_WRITE)
	if len(w.C()) != 0 {
		t.Errorf("C fired within the debounce")
	}
}

// TestWatchDebounceFires shows that C fires once the debounce has passed after the last event.
func TestWatchDebounceFires(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xlb.yaml")
	w, _ := startTestWatch(t, path, time.Millisecond)
	for _, s := range []string{"a", "b", "c"} {
		writeFile(t, path, s)
	}
	waitFire(t, w, "three writes and the debounce")
}

func TestWatchDirectoryRemoved(t *testing.T) {
	sub := filepath.Join(t.TempDir(), "conf")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(sub, "xlb.yaml")
	w, err := watchFile(path, time.Hour) // the end fires at once, whatever the debounce
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(sub); err != nil {
		t.Fatal(err)
	}
	waitFire(t, w, "removing the directory")
	select {
	case <-w.done:
	case <-time.After(watchWait):
		t.Fatalf("the watcher did not stop within %v after its directory was removed", watchWait)
	}
	err = w.Close()
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("Close after the directory was removed: %v, want an error naming %s and saying it was deleted", err, path)
	}
	if again := w.Close(); again != err {
		t.Errorf("second Close: %v, want the first one's %v", again, err)
	}
}

func TestWatchClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xlb.yaml")
	w, err := watchFile(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = w.Close() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Close %d: %v", i, err)
		}
	}
	select {
	case <-w.done: // Close waited for run to return
	default:
		t.Fatal("run still running after Close returned")
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close after Close: %v", err)
	}
	writeFile(t, path, "a")
	if len(w.C()) != 0 { // nothing reads events any more
		t.Errorf("C fired after Close")
	}
}

func TestWatchErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeFile(t, file, "")
	tests := []struct {
		path     string
		debounce time.Duration
		want     string
	}{
		{filepath.Join(dir, "missing", "xlb.yaml"), 0, "no such file or directory"},
		{filepath.Join(file, "xlb.yaml"), 0, "not a directory"},
		{"/", 0, "does not name a file"},
		{".", 0, "does not name a file"},
		{"..", 0, "does not name a file"},
		{filepath.Join(dir, "xlb.yaml"), -time.Second, "negative debounce"},
	}
	for _, tt := range tests {
		w, err := watchFile(tt.path, tt.debounce)
		if err == nil {
			w.Close()
			t.Errorf("watchFile(%q, %v) succeeded, want an error", tt.path, tt.debounce)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "server: watch: ") ||
			!strings.Contains(err.Error(), tt.path) {
			t.Errorf("watchFile(%q, %v): %v, want a server: watch: error naming the path and saying %q", tt.path, tt.debounce, err, tt.want)
		}
	}
	var errno unix.Errno
	if _, err := watchFile(filepath.Join(dir, "missing", "x"), 0); !errors.As(err, &errno) || errno != unix.ENOENT {
		t.Errorf("error for a missing directory does not wrap ENOENT: %v", err)
	}
}
