package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// TestRunRemovesStaleSockets starts xlb run on a state directory that holds the sockets of
// processes killed by SIGKILL: of a PID no process has, and of a PID that a live process has and
// that does not listen there (as when the PID was given to another process since). xlb removes
// them and logs each; a socket of a live PID that is served, and a file of that name that is not a
// socket, are kept.
func TestRunRemovesStaleSockets(t *testing.T) {
	t.Parallel()
	stateDir := t.TempDir()
	dead, live := testutil.DeadPID(t), os.Getpid()
	stale := []string{
		fmt.Sprintf("metrics.sock.%d", dead),
		fmt.Sprintf("admin.sock.%d", dead),
		fmt.Sprintf("admin.sock.%d.link", dead),
		fmt.Sprintf("control.sock.%d", live),
	}
	for _, name := range stale {
		testutil.LeftSocket(t, filepath.Join(stateDir, name))
	}
	served := fmt.Sprintf("metrics.sock.%d", live)
	testutil.ServedSocket(t, filepath.Join(stateDir, served))
	notSocket := fmt.Sprintf("control.sock.%d", dead)
	if err := os.WriteFile(filepath.Join(stateDir, notSocket), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	a := newCountingBackend(t, "a")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), stateDir, func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}})
	})
	ready, _ := s.awaitReady(t)
	for _, name := range stale {
		path := filepath.Join(stateDir, name)
		removed := linesMatching(s.log, 0, says("removed a stale socket", func(l logLine) bool { return l.str("path") == path }))
		if len(removed) != 1 || removed[0].end > ready.end || removed[0].str("reason") == "" {
			t.Errorf("%s: logged %v; want one line before ready, with the reason", name, removed)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v; want it removed", name, err)
		}
	}
	for _, name := range []string{served, notSocket} {
		if _, err := os.Lstat(filepath.Join(stateDir, name)); err != nil {
			t.Errorf("%s: %v; want it kept", name, err)
		}
	}
	if n := len(linesMatching(s.log, 0, says("removed a stale socket", nil))); n != len(stale) {
		t.Errorf("logged %d removals, want %d", n, len(stale))
	}
	if by := getAll(t, []*client{newClient(t, s.addr, false)}, "/", 10); by["a"] != 10 {
		t.Errorf("after the start: %v, want map[a:10]", by)
	}
}
