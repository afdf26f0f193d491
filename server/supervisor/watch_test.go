package supervisor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
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
		// The end of the watch: the file is not at its path; watching it again fires.
		{"directory deleted", inotifyEvent{mask: unix.IN_DELETE_SELF}, true, false},
		{"directory moved", inotifyEvent{mask: unix.IN_MOVE_SELF}, true, false},
		{"watch removed", inotifyEvent{mask: unix.IN_IGNORED}, true, false},
		{"unmounted", inotifyEvent{mask: unix.IN_UNMOUNT}, true, false},
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

// since returns the events seen after the first n.
func (l *eventLog) since(n int) []watchEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs[n:])
}

// len is how many events were seen so far.
func (l *eventLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.evs)
}

// logRecorder keeps the lines a watcher logs, for tests to wait for.
type logRecorder struct {
	changed chan struct{} // a value after each write; buffer of one

	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.lines = append(r.lines, strings.TrimSuffix(string(p), "\n"))
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return len(p), nil
}

// waitFor waits until a line at or after index from holds every one of parts, and returns the
// index just past it.
func (r *logRecorder) waitFor(t *testing.T, from int, parts ...string) int {
	t.Helper()
	timeout := time.After(watchWait)
	for {
		r.mu.Lock()
		lines := r.lines
		r.mu.Unlock()
	next:
		for i := from; i < len(lines); i++ {
			for _, p := range parts {
				if !strings.Contains(lines[i], p) {
					continue next
				}
			}
			return i + 1
		}
		select {
		case <-r.changed:
		case <-timeout:
			t.Fatalf("no log line with %q within %v; logged:\n%s", parts, watchWait, strings.Join(lines, "\n"))
		}
	}
}

// all returns the lines logged so far.
func (r *logRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines)
}

// startTestWatch watches path, with an event log, and closes the watcher at the end of the test.
func startTestWatch(t *testing.T, path string, debounce time.Duration) (*fileWatcher, *eventLog) {
	t.Helper()
	w, evs, _ := startLoggedWatch(t, path, debounce)
	return w, evs
}

// startLoggedWatch is startTestWatch that also keeps what the watcher logs, and shows it when
// the test failed.
func startLoggedWatch(t *testing.T, path string, debounce time.Duration) (*fileWatcher, *eventLog, *logRecorder) {
	t.Helper()
	evs := &eventLog{changed: make(chan struct{}, 1)}
	logs := &logRecorder{changed: make(chan struct{}, 1)}
	log := hclog.New(&hclog.LoggerOptions{Name: "watch", Output: logs, Level: hclog.Debug, Color: hclog.ColorOff})
	w, err := startWatch(path, debounce, log, evs.add)
	if err != nil {
		t.Fatalf("startWatch(%q): %v", path, err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("the watcher logged:\n%s", strings.Join(logs.all(), "\n"))
		}
	})
	return w, evs, logs
}

// drain takes the value on C, if there is one.
func drain(w *fileWatcher) {
	select {
	case <-w.C():
	default:
	}
}

// noEventOn fails the test when an event on name is among evs: a watch saw it.
func noEventOn(t *testing.T, evs []watchEvent, name, what string) {
	t.Helper()
	for _, ev := range evs {
		if ev.name == name {
			t.Errorf("%s: saw event %s on %q; saw %+v", what, maskString(ev.mask), name, evs)
		}
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
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

// TestWatchDirectoryRemoved removes the watched directory and makes it again: the watcher says
// so, watches the new one once it is there, fires, and fires on the new one's events.
func TestWatchDirectoryRemoved(t *testing.T) {
	sub := filepath.Join(t.TempDir(), "conf")
	mkdir(t, sub)
	path := filepath.Join(sub, "xlb.yaml")
	writeFile(t, path, "a")
	w, evs, logs := startLoggedWatch(t, path, 0)

	if err := os.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	at := logs.waitFor(t, 0, "[WARN]", "config directory removed", sub)
	drain(w) // the file's deletion may have fired before the directory's

	mkdir(t, sub)
	writeFile(t, path, "b")
	waitFire(t, w, "making the directory again")
	logs.waitFor(t, at, "[INFO]", "config directory is back", sub)
	// The removed directory's IN_IGNORED may come after the new watch is in force: it is not
	// the new one's.
	for _, ev := range evs.since(0) {
		if ev.mask&unix.IN_IGNORED != 0 && ev.relevant {
			t.Errorf("the removed directory's end was relevant: %+v", ev)
		}
	}

	drain(w)
	writeFile(t, path, "c")
	waitFire(t, w, "writing the file in the new directory")
}

// TestWatchDirectoryMoved moves the watched directory away and makes another at its path: the
// moved one is no longer watched, the new one is.
func TestWatchDirectoryMoved(t *testing.T) {
	dir := t.TempDir()
	sub, old := filepath.Join(dir, "conf"), filepath.Join(dir, "conf.old")
	mkdir(t, sub)
	path := filepath.Join(sub, "xlb.yaml")
	writeFile(t, path, "a")
	w, evs, logs := startLoggedWatch(t, path, 0)

	rename(t, sub, old)
	at := logs.waitFor(t, 0, "[WARN]", "config directory moved away", sub, "IN_MOVE_SELF")
	if len(w.C()) != 0 {
		t.Errorf("C fired when the directory was moved away; there is no file to read")
	}
	mkdir(t, sub)
	writeFile(t, path, "b")
	logs.waitFor(t, at, "[INFO]", "config directory is back", sub)
	waitFire(t, w, "making the directory again")

	// Events are read in order: when the new directory's other.yaml is seen, an event of the
	// moved directory's xlb.yaml, written before, would have been seen too.
	n := evs.len()
	writeFile(t, filepath.Join(old, "xlb.yaml"), "x")
	writeFile(t, filepath.Join(sub, "other.yaml"), "x")
	evs.waitFor(t, "other.yaml", unix.IN_CLOSE_WRITE)
	noEventOn(t, evs.since(n), "xlb.yaml", "writing the moved directory's file")
}

// TestWatchRearm moves a directory above the watched one and makes another at its path, which
// inotify does not tell (only the moved directory has IN_MOVE_SELF): Rearm watches the new one.
func TestWatchRearm(t *testing.T) {
	dir := t.TempDir()
	top, old := filepath.Join(dir, "etc"), filepath.Join(dir, "etc.old")
	sub := filepath.Join(top, "conf")
	mkdir(t, sub)
	path := filepath.Join(sub, "xlb.yaml")
	writeFile(t, path, "a")
	w, evs, logs := startLoggedWatch(t, path, 0)

	if err := w.Rearm(); err != nil {
		t.Fatalf("Rearm on the directory watched: %v", err)
	}
	rename(t, top, old)
	mkdir(t, sub)
	writeFile(t, path, "b")
	if err := w.Rearm(); err != nil {
		t.Fatalf("Rearm after a directory above was replaced: %v", err)
	}
	logs.waitFor(t, 0, "[INFO]", "config directory was replaced by another", sub)
	if lines := logs.all(); len(lines) != 1 {
		t.Errorf("logged %q; want one line, for the second Rearm only", lines)
	}

	drain(w)
	n := evs.len()
	writeFile(t, filepath.Join(old, "conf", "xlb.yaml"), "x")
	writeFile(t, path, "c")
	waitFire(t, w, "writing the file in the new directory")
	evs.waitFor(t, "xlb.yaml", unix.IN_CLOSE_WRITE)
	// Also seen: the IN_IGNORED of the old watch, which Rearm removed.
	var named int
	for _, ev := range evs.since(n) {
		switch {
		case ev.name == "xlb.yaml":
			named++
		case ev.relevant:
			t.Errorf("relevant: %+v", ev)
		}
	}
	if named != 1 {
		t.Errorf("saw %+v; want one event on xlb.yaml: the new directory's IN_CLOSE_WRITE", evs.since(n))
	}
}

// TestWatchRearmNothingThere: Rearm while nothing is at the directory's path loses the watch, says
// so, and the watcher watches the path until a directory is there.
func TestWatchRearmNothingThere(t *testing.T) {
	dir := t.TempDir()
	top := filepath.Join(dir, "etc")
	sub := filepath.Join(top, "conf")
	mkdir(t, sub)
	path := filepath.Join(sub, "xlb.yaml")
	w, _, logs := startLoggedWatch(t, path, 0)

	rename(t, top, filepath.Join(dir, "etc.old"))
	err := w.Rearm()
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Rearm with nothing at the path: %v; want an error naming %s and saying why", err, path)
	}
	at := logs.waitFor(t, 0, "[WARN]", "config directory moved or removed", sub)
	if err := w.Rearm(); err == nil || !strings.Contains(err.Error(), "is not there") {
		t.Errorf("Rearm again: %v; want an error saying the directory is not there", err)
	}
	mkdir(t, sub)
	waitFire(t, w, "making the directory")
	logs.waitFor(t, at, "[INFO]", "config directory is back", sub)
	drain(w)
	writeFile(t, path, "a")
	waitFire(t, w, "writing the file in the new directory")
}

// TestWatchConfigMapDataDir watches a file named through the ConfigMap's ..data symlink
// (--config /etc/xlb/..data/xlb.yaml): the watch is on the timestamped directory it points to, which
// the kubelet removes after swapping ..data. The watcher watches the new one and fires.
func TestWatchConfigMapDataDir(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"..2024_a", "..2024_b"} {
		mkdir(t, filepath.Join(dir, sub))
		writeFile(t, filepath.Join(dir, sub, "xlb.yaml"), sub)
	}
	if err := os.Symlink("..2024_a", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2024_b", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "..data", "xlb.yaml")
	w, _, logs := startLoggedWatch(t, path, 0)

	rename(t, filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data"))
	if err := os.RemoveAll(filepath.Join(dir, "..2024_a")); err != nil {
		t.Fatal(err)
	}
	waitFire(t, w, "swapping ..data and removing the old directory")
	logs.waitFor(t, 0, "[INFO]", "config directory is back")
	if got, err := os.ReadFile(path); err != nil || string(got) != "..2024_b" {
		t.Errorf("after the swap the file reads %q, %v; want %q", got, err, "..2024_b")
	}
	drain(w)
	writeFile(t, filepath.Join(dir, "..2024_b", "xlb.yaml"), "edited")
	waitFire(t, w, "writing the file in the new directory")
}

func TestWatchLost(t *testing.T) {
	tests := []struct {
		mask uint32
		want string
	}{
		{unix.IN_MOVE_SELF, "moved away"},
		{unix.IN_DELETE_SELF, "removed"},
		{unix.IN_UNMOUNT, "unmounted"},
		{unix.IN_IGNORED, "moved or removed"},
		{unix.IN_DELETE | unix.IN_ISDIR, ""}, // a directory in it
		{unix.IN_MOVED_FROM, ""},
		{unix.IN_CLOSE_WRITE, ""},
		{unix.IN_Q_OVERFLOW, ""},
	}
	for _, tt := range tests {
		if got := watchLost(inotifyEvent{wd: 1, mask: tt.mask}); got != tt.want {
			t.Errorf("watchLost(%s) = %q, want %q", maskString(tt.mask), got, tt.want)
		}
	}
}

func TestWatchOfWatch(t *testing.T) {
	tests := []struct {
		what  string
		ev    inotifyEvent
		wd    int32
		armed bool
		want  bool
	}{
		{"the watch in force", inotifyEvent{wd: 2, mask: unix.IN_CLOSE_WRITE}, 2, true, true},
		{"a dropped watch's", inotifyEvent{wd: 1, mask: unix.IN_CLOSE_WRITE}, 2, true, false},
		{"a dropped watch's end", inotifyEvent{wd: 1, mask: unix.IN_IGNORED}, 2, true, false},
		{"while nothing is watched", inotifyEvent{wd: 1, mask: unix.IN_IGNORED}, 1, false, false},
		{"overflow", inotifyEvent{wd: -1, mask: unix.IN_Q_OVERFLOW}, 2, true, true},
		{"overflow while nothing is watched", inotifyEvent{wd: -1, mask: unix.IN_Q_OVERFLOW}, 1, false, true},
	}
	for _, tt := range tests {
		if got := ofWatch(tt.ev, tt.wd, tt.armed); got != tt.want {
			t.Errorf("%s: ofWatch(%+v, %d, armed %v) = %v, want %v", tt.what, tt.ev, tt.wd, tt.armed, got, tt.want)
		}
	}
}

// TestWatchRearmDelay: once the watch is lost the path is polled after rearmPollMin, doubled after
// each failed try up to rearmPollMax, and after rearmPollMin again once the watch is lost anew.
func TestWatchRearmDelay(t *testing.T) {
	// fd -1: every try to watch the directory again fails (EBADF), as if it were not there.
	w := &fileWatcher{dir: t.TempDir(), fd: -1, log: hclog.NewNullLogger(), repoll: rearmPoll()}
	w.armed = true
	w.lose(inotifyEvent{}, "removed")
	want := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond,
		400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
	for tries, d := range want {
		if tries > 0 && w.retry() {
			t.Fatal("a try to watch with no inotify descriptor succeeded")
		}
		if w.pollIn != d {
			t.Errorf("after %d failed tries: next poll in %v, want %v", tries, w.pollIn, d)
		}
	}
	w.lose(inotifyEvent{}, "removed")
	if w.pollIn != rearmPollMin {
		t.Errorf("lost again: next poll in %v, want %v", w.pollIn, rearmPollMin)
	}
}

func TestWatchMaskString(t *testing.T) {
	for mask, want := range map[uint32]string{
		unix.IN_CREATE | unix.IN_ISDIR: "IN_CREATE|IN_ISDIR",
		unix.IN_MOVE_SELF:              "IN_MOVE_SELF",
		unix.IN_ATTRIB:                 "0x4",
		0:                              "0x0",
	} {
		if got := maskString(mask); got != want {
			t.Errorf("maskString(%#x) = %q, want %q", mask, got, want)
		}
	}
}

func TestWatchClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xlb.yaml")
	w, err := watchFile(path, 0, nil)
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
		w, err := watchFile(tt.path, tt.debounce, nil)
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
	if _, err := watchFile(filepath.Join(dir, "missing", "x"), 0, nil); !errors.As(err, &errno) || errno != unix.ENOENT {
		t.Errorf("error for a missing directory does not wrap ENOENT: %v", err)
	}
}
