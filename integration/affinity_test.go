package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestStickyKeysFile: the supervisor makes STATE_DIR/sticky-keys (mode 0600) when it is missing and
// keeps it across restarts; a sticky_key_file that is not a keys file fails the start, naming it.
func TestStickyKeysFile(t *testing.T) {
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	cfg := func(extra string) func(string) string {
		return func(addr string) string {
			return configYAML(addr, []backendConf{{id: "a", addr: closedAddr(t), weight: 1}}) + extra
		}
	}
	s := startSupervisor(t, filepath.Join(dir, "xlb.yaml"), stateDir, cfg(""))
	s.awaitReady(t)
	path := filepath.Join(stateDir, "sticky-keys")
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("sticky-keys: %v, %v; want a file of mode 0600", st, err)
	}
	first, _ := os.ReadFile(path)
	s.signal(15)
	s.waitExitCode(stopTimeout)
	s = startSupervisor(t, filepath.Join(dir, "xlb.yaml"), stateDir, cfg(""))
	s.awaitReady(t)
	if again, _ := os.ReadFile(path); string(again) != string(first) {
		t.Fatal("a restart replaced the sticky keys: every cookie issued before would be refused")
	}
	s.signal(15)
	s.waitExitCode(stopTimeout)

	bad := filepath.Join(dir, "bad-keys")
	os.WriteFile(bad, []byte("not a key\n"), 0o600)
	cfgPath := filepath.Join(dir, "bad.yaml")
	os.WriteFile(cfgPath, []byte(cfg("sticky_key_file: "+bad+"\n")(freeAddr(t))), 0o644)
	p, _ := startLoggedProc(t, "run", "--config", cfgPath, "--workers", strconv.Itoa(workersN), "--state-dir", stateDir, "--log-format", "json")
	if code := p.waitExitCode(readyTimeout); code == 0 {
		t.Fatal("xlb started with a bad sticky_key_file")
	}
	if want := fmt.Sprintf("keys file %s line 1", bad); !strings.Contains(p.stderr.String(), want) {
		t.Fatalf("the error does not name the file and line (%q):\n%s", want, p.stderr.String())
	}
}
