package integration

import (
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Damage to the region file of a running or stopped data plane: the supervisor says so in plain
// words, moves the file aside, rebuilds the region with the sets it serves, and traffic flows.

// regionPayloadOffset is where the payload of the half in force lies in a region file's bytes:
// from the header's generation word (offset 128) and half offsets (40, 48), as dataplane/shm's
// doc.go lays them out.
func regionPayloadOffset(tb testing.TB, data []byte) int64 {
	tb.Helper()
	le := binary.LittleEndian
	if len(data) < 256 {
		tb.Fatalf("a region file of %d bytes", len(data))
	}
	g := le.Uint64(data[128:])
	if g == 0 {
		tb.Fatal("the region has no generation in force")
	}
	return int64(le.Uint64(data[40+8*(g&1):])) + 64
}

// damageRegion does to the file at path what an operator's mistake would, without changing its
// size: "zero" overwrites it all with zeros (dd if=/dev/zero conv=notrunc), "flip" flips one bit
// of the payload of the half in force.
func damageRegion(tb testing.TB, path, how string) {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	switch how {
	case "zero":
		_, err = f.WriteAt(make([]byte, len(data)), 0)
	case "flip":
		off := regionPayloadOffset(tb, data)
		_, err = f.WriteAt([]byte{data[off] ^ 0x01}, off)
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// awaitRebuilt waits for the supervisor to say that the region file is found (zeroed or corrupt)
// and moved aside, checks that the file moved is there, and waits for the rebuilt region's
// generation to be applied by every worker. It returns that generation's line.
func awaitRebuilt(tb testing.TB, s *supervisor, from int, found string) logLine {
	tb.Helper()
	path := filepath.Join(s.stateDir, "region")
	msg := "the region file is " + found + "; it is moved aside and rebuilt"
	ln := s.await(tb, from, fmt.Sprintf("%q", msg), says(msg, nil))
	if f := ln.str("file"); f != path {
		tb.Errorf("%s: file %q, want %q", ln, f, path)
	}
	aside := ln.str("moved_to")
	if filepath.Dir(aside) != s.stateDir || !strings.HasPrefix(filepath.Base(aside), "region.corrupt-") {
		tb.Errorf("%s: moved to %q, want %s/region.corrupt-TIMESTAMP", ln, aside, s.stateDir)
	}
	if _, err := os.Stat(aside); err != nil {
		tb.Errorf("the damaged region file was not kept: %v", err)
	}
	if ln.str("error") == "" {
		tb.Errorf("%s: no error says what is wrong", ln)
	}
	rebuilt := s.await(tb, ln.end, `"region rebuilt"`, says("region rebuilt", nil))
	return s.awaitApplied(tb, rebuilt.end, rebuilt.int("generation")-1)
}

// awaitServedBy polls until n requests in a row are answered 200 by backend want.
func awaitServedBy(tb testing.TB, addr, want string, n int) {
	tb.Helper()
	c := newClient(tb, addr, false)
	deadline := time.Now().Add(logWaitTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	row := 0
	var last loadRecord
	for row < n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d requests in a row served by %s within %v, want %d; the last: status %d, body %q, error %v",
				row, want, logWaitTimeout, n, last.status, last.backend, last.err)
		}
		if last = c.get("/after-rebuild"); last.ok() && last.backend == want {
			row++
		} else {
			row = 0
			<-tick.C
		}
	}
}

// TestRegionDamagedWhileRunningIsRebuilt: the region file of a running data plane is zeroed under
// load, and later a bit of its payload is flipped. Each time the supervisor logs what it found
// (zeroed, then corrupt) naming the file, keeps the damaged file as region.corrupt-TIMESTAMP,
// publishes the sets into a new region under a later generation, and replaces its workers; no
// request is answered 503 (the workers never take the zeroed region for an empty one), and
// requests are served by the configured backend again.
func TestRegionDamagedWhileRunningIsRebuilt(t *testing.T) {
	t.Parallel()
	a := newCountingBackend(t, "a")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(), func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}})
	})
	ready, _ := s.awaitReady(t)
	path := filepath.Join(s.stateDir, "region")
	g := startLoad(t, s.addr, "/zeroed", 4)
	g.awaitOK(t, 100)

	damageRegion(t, path, "zero")
	applied := awaitRebuilt(t, s, ready.end, "zeroed")
	if gen := applied.int("generation"); gen <= ready.int("generation") {
		t.Errorf("the rebuilt region's generation %d; want one after %d, the damaged region's", gen, ready.int("generation"))
	}
	okBefore := g.okN.Load()
	g.awaitOK(t, okBefore+100)
	statuses := map[int]int{}
	for _, recs := range g.halt() {
		for _, r := range recs {
			statuses[r.status]++
		}
	}
	if statuses[http.StatusServiceUnavailable] > 0 {
		t.Errorf("responses by status through the zeroing and the rebuild: %v; want no 503", statuses)
	}
	t.Logf("responses by status through the zeroing and the rebuild: %v", statuses)
	awaitServedBy(t, s.addr, "a", 10)

	damageRegion(t, path, "flip")
	again := awaitRebuilt(t, s, applied.end, "corrupt")
	if again.int("generation") <= applied.int("generation") {
		t.Errorf("the second rebuild's generation %d; want one after %d", again.int("generation"), applied.int("generation"))
	}
	awaitServedBy(t, s.addr, "a", 10)
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 2 {
		t.Errorf("damaged files kept: %v, want 2", aside)
	}
	if !running(s.pid()) {
		t.Fatal("the supervisor died")
	}
	s.signal(syscall.SIGTERM)
	if code := s.waitExitCode(stopTimeout); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
}

// TestRegionCorruptAtStartIsRebuilt: a stopped data plane's region file gets a flipped payload
// bit; the next start says the file is corrupt, moves it aside, and serves the sets last applied
// (the applied file's) from a new region, under a later generation, at once.
func TestRegionCorruptAtStartIsRebuilt(t *testing.T) {
	t.Parallel()
	a := newCountingBackend(t, "a")
	cfgPath, stateDir := filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir()
	config := func(addr string) string { return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}}) }
	s1 := startSupervisor(t, cfgPath, stateDir, config)
	ready1, _ := s1.awaitReady(t)
	s1.signal(syscall.SIGTERM)
	if code := s1.waitExitCode(stopTimeout); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	damageRegion(t, filepath.Join(stateDir, "region"), "flip")

	s2 := startSupervisor(t, cfgPath, stateDir, config)
	const msg = "the region file is corrupt; it is moved aside and rebuilt"
	found := s2.await(t, 0, fmt.Sprintf("%q", msg), says(msg, nil))
	if aside := found.str("moved_to"); aside == "" {
		t.Errorf("%s: no moved_to", found)
	} else if _, err := os.Stat(aside); err != nil {
		t.Errorf("the damaged region file was not kept: %v", err)
	}
	published := s2.await(t, found.end, `"generation published"`, says("generation published", nil))
	if published.int("generation") <= ready1.int("generation") {
		t.Errorf("%s; want a generation after %d, the damaged region's", published, ready1.int("generation"))
	}
	s2.awaitReady(t)
	awaitServedBy(t, s2.addr, "a", 10)
}
