package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The tests of the configuration file's watch when its directory goes away: xlb run watches the
// directory's inode, so a directory moved away or removed and made again at the same path must be
// watched anew, and SIGHUP must find a directory replaced above it.

// TestReloadDirectoryReplaced moves the configuration file's directory away and makes another one
// at its path with a file naming another backend: without a SIGHUP, the supervisor says the
// directory went, watches the new one, and the traffic goes to the new backend.
func TestReloadDirectoryReplaced(t *testing.T) {
	t.Parallel()
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	if err := os.Mkdir(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	s := startSupervisor(t, filepath.Join(conf, "xlb.yaml"), t.TempDir(), func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}})
	})
	ready, _ := s.awaitReady(t)
	if by := getAll(t, []*client{newClient(t, s.addr, false)}, "/before", 10); by["a"] != 10 {
		t.Fatalf("before the move: %v, want map[a:10]", by)
	}

	if err := os.Rename(conf, filepath.Join(dir, "conf.old")); err != nil {
		t.Fatal(err)
	}
	lost := s.await(t, ready.end, "the warning that the directory moved",
		says("config directory moved away; watching its path until a directory is there again", nil))
	if lost.str("@level") != "warn" || lost.str("dir") != conf {
		t.Errorf("the loss is logged as %s; want a warning naming the directory %s", lost, conf)
	}
	if err := os.Mkdir(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, s.cfgPath, configYAML(s.addr, []backendConf{{id: "b", addr: b.addr, weight: 1}}), true)
	back := s.await(t, lost.end, "the directory watched again",
		says("config directory is back; watching it again and reloading", nil))
	if back.str("@level") != "info" || back.str("dir") != conf {
		t.Errorf("the re-arming is logged as %s; want an info line naming the directory %s", back, conf)
	}
	s.awaitApplied(t, lost.end, ready.int("generation"))
	if by := getAll(t, []*client{newClient(t, s.addr, false)}, "/after", 10); by["b"] != 10 {
		t.Errorf("after the directory was replaced: %v, want map[b:10]", by)
	}
}

// TestSIGHUPRearms replaces a directory above the configuration file's (inotify tells nothing of
// that: only the moved directory has IN_MOVE_SELF). SIGHUP reloads the new file and watches the
// new directory: a later edit there applies without another SIGHUP.
func TestSIGHUPRearms(t *testing.T) {
	t.Parallel()
	a, b, c := newCountingBackend(t, "a"), newCountingBackend(t, "b"), newCountingBackend(t, "c")
	dir := t.TempDir()
	top := filepath.Join(dir, "etc")
	conf := filepath.Join(top, "conf")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	s := startSupervisor(t, filepath.Join(conf, "xlb.yaml"), t.TempDir(), func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}})
	})
	ready, _ := s.awaitReady(t)

	if err := os.Rename(top, filepath.Join(dir, "etc.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, s.cfgPath, configYAML(s.addr, []backendConf{{id: "b", addr: b.addr, weight: 1}}), true)
	s.signal(syscall.SIGHUP)
	hup := s.await(t, ready.end, "the SIGHUP reload", says("SIGHUP: reloading the configuration", nil))
	s.await(t, ready.end, "the new directory watched",
		says("config directory was replaced by another; watching the new one", func(l logLine) bool { return l.str("dir") == conf }))
	applied := s.awaitApplied(t, hup.end, ready.int("generation"))
	if by := getAll(t, []*client{newClient(t, s.addr, false)}, "/hup", 10); by["b"] != 10 {
		t.Errorf("after SIGHUP: %v, want map[b:10]", by)
	}

	writeConfig(t, s.cfgPath, configYAML(s.addr, []backendConf{{id: "c", addr: c.addr, weight: 1}}), true)
	s.awaitApplied(t, applied.end, applied.int("generation"))
	if by := getAll(t, []*client{newClient(t, s.addr, false)}, "/edit", 10); by["c"] != 10 {
		t.Errorf("after an edit in the new directory: %v, want map[c:10]", by)
	}
}
