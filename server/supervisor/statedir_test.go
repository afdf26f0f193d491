package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/xlbproxy/xlb/internal/testutil"
)

func TestStagedPID(t *testing.T) {
	tests := []struct {
		name string
		pid  int
		ok   bool
	}{
		{"metrics.sock.1234", 1234, true},
		{"admin.sock.7.link", 7, true},
		{"control.sock.99999", 99999, true},
		{"admin.sock", 0, false},
		{"admin.sock.", 0, false},
		{"admin.sock.12x", 0, false},
		{"admin.sock.-3", 0, false},
		{"admin.sock.0", 0, false},
		{"admin.sock.012", 0, false},
		{".sock.12", 0, false},
		{"region.12", 0, false},
		{"admin.sock.12.link.link", 0, false},
		{"admin.sock.99999999999999999999", 0, false}, // no int holds it
	}
	for _, tt := range tests {
		if pid, ok := stagedPID(tt.name); pid != tt.pid || ok != tt.ok {
			t.Errorf("stagedPID(%q) = %d, %v; want %d, %v", tt.name, pid, ok, tt.pid, tt.ok)
		}
	}
}

func TestStaleSocket(t *testing.T) {
	tests := []struct {
		what       string
		alive      error // of kill(pid, 0)
		dial       error
		wantReason string // a part of the reason; "" for kept
	}{
		{"no such process", unix.ESRCH, nil, "no process 42"},
		{"live, answers", nil, nil, ""},
		{"live, refuses: the PID was reused", nil, unix.ECONNREFUSED, "does not listen on it"},
		{"another user's, answers", unix.EPERM, nil, ""},
		{"another user's, refuses", unix.EPERM, unix.ECONNREFUSED, "does not listen on it"},
		{"live, may not connect", nil, unix.EACCES, ""},
		{"live, backlog full", nil, unix.EAGAIN, ""},
	}
	for _, tt := range tests {
		dialed := false
		got := staleSocket("/x/admin.sock.42", 42,
			func(pid int) error {
				if pid != 42 {
					t.Errorf("%s: kill(%d, 0), want pid 42", tt.what, pid)
				}
				return tt.alive
			},
			func(string) error {
				dialed = true
				if tt.dial == nil {
					return nil
				}
				return &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", tt.dial)} // as net.Dial wraps it
			})
		if (tt.wantReason == "") != (got == "") || !strings.Contains(got, tt.wantReason) {
			t.Errorf("%s: staleSocket = %q, want %q", tt.what, got, tt.wantReason)
		}
		if errors.Is(tt.alive, unix.ESRCH) && dialed {
			t.Errorf("%s: dialled a socket whose process is gone", tt.what)
		}
	}
}

// TestRemoveStaleSockets: in a state directory, the sockets of a dead PID and of a live PID
// that does not listen there are removed, with a log line each; a served socket of a live PID, a
// file of such a name that is not a socket, and the directory's other files are kept.
func TestRemoveStaleSockets(t *testing.T) {
	dir := t.TempDir()
	dead, live := testutil.DeadPID(t), os.Getppid() // go test's own process, which binds nothing here
	stale := []string{
		fmt.Sprintf("metrics.sock.%d", dead),
		fmt.Sprintf("admin.sock.%d.link", dead),
		fmt.Sprintf("control.sock.%d", live),
	}
	for _, name := range stale {
		testutil.LeftSocket(t, filepath.Join(dir, name))
	}
	served := fmt.Sprintf("admin.sock.%d", live)
	testutil.ServedSocket(t, filepath.Join(dir, served))
	notSocket := fmt.Sprintf("notes.sock.%d", dead)
	writeFile(t, filepath.Join(dir, notSocket), "x")
	writeFile(t, filepath.Join(dir, "region"), "x")
	testutil.LeftSocket(t, filepath.Join(dir, "admin.sock")) // published names are for their owner to replace

	var buf testutil.SyncBuffer
	removeStaleSockets(dir, hclog.New(&hclog.LoggerOptions{Output: &buf, Color: hclog.ColorOff}))

	for _, name := range stale {
		if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v; want it removed", name, err)
		}
		if !strings.Contains(buf.String(), "removed a stale socket: path="+filepath.Join(dir, name)) {
			t.Errorf("no log line of the removal of %s; logged:\n%s", name, buf.String())
		}
	}
	for _, name := range []string{served, notSocket, "region", "admin.sock"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v; want it kept", name, err)
		}
	}
	if n := strings.Count(buf.String(), "removed a stale socket"); n != len(stale) {
		t.Errorf("logged %d removals, want %d:\n%s", n, len(stale), buf.String())
	}
	if !strings.Contains(buf.String(), fmt.Sprintf("reason=\"no process %d\"", dead)) ||
		!strings.Contains(buf.String(), "the PID was given to another process") {
		t.Errorf("the log does not say why each was stale:\n%s", buf.String())
	}
}

func TestLockStateDirHeld(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	sd, err := lockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockStateDir(dir)
	if want := fmt.Sprintf("state directory %s is in use by another xlb (pid %d)", dir, os.Getpid()); err == nil ||
		!strings.Contains(err.Error(), want) {
		t.Fatalf("a second lock of a held state directory: %v, want %q", err, want)
	}
	sd.lock.Close()
	sd, err = lockStateDir(dir)
	if err != nil {
		t.Fatalf("lock after the holder closed it: %v", err)
	}
	sd.lock.Close()
}
