package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/shm"
)

// Damage to the region file of a running or stopped data plane: the supervisor says so in plain
// words, moves the file aside, rebuilds the region with the sets it serves, and traffic flows.

// liveRegionPath is the /proc path of the sealed memory that process pid maps as its region (its
// descriptor of "/memfd:xlb-region"): what a test damages to damage a running region, since the
// region file in the state directory is a copy.
func liveRegionPath(tb testing.TB, pid int) string {
	tb.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && strings.HasPrefix(target, "/memfd:xlb-region") {
			return filepath.Join(dir, fd.Name())
		}
	}
	tb.Fatalf("process %d maps no /memfd:xlb-region:\n%s", pid, procDetail(pid))
	return ""
}

// openLiveRegion maps the region that process pid maps, for a test to read.
func openLiveRegion(tb testing.TB, pid int) *shm.Region {
	tb.Helper()
	r, err := shm.Open(liveRegionPath(tb, pid))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

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

// damageRegion does to the region at path (a file, or a /proc path of sealed memory) what an
// operator's mistake would, without changing its size: "zero" overwrites it all with zeros (dd if=/dev/zero conv=notrunc), "flip" flips one bit
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

// TestRegionDamagedWhileRunningIsRebuilt: the region of a running data plane (the sealed memory
// its processes map, written through /proc) is zeroed under load, and later a bit of its payload
// is flipped. Each time the supervisor logs what it found (zeroed, then corrupt) naming the region
// file, keeps a copy of the damaged region as region.corrupt-TIMESTAMP,
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

	damageRegion(t, liveRegionPath(t, s.pid()), "zero")
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

	damageRegion(t, liveRegionPath(t, s.pid()), "flip")
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

// TestRegionOfOlderLayoutIsRebuilt: a region file of an older layout (version 1, before backends'
// TLS, which this binary must not read as its own) is moved aside at start and rebuilt from the
// sets last applied, which serve at once; it is not refused as a newer layout is.
func TestRegionOfOlderLayoutIsRebuilt(t *testing.T) {
	t.Parallel()
	a := newCountingBackend(t, "a")
	cfgPath, stateDir := filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir()
	config := func(addr string) string { return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}}) }
	s1 := startSupervisor(t, cfgPath, stateDir, config)
	s1.awaitReady(t)
	s1.signal(syscall.SIGTERM)
	if code := s1.waitExitCode(stopTimeout); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	path := filepath.Join(stateDir, "region")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{1, 0, 0, 0}, 8); err != nil { // the layout version word
		t.Fatal(err)
	}
	f.Close()

	s2 := startSupervisor(t, cfgPath, stateDir, config)
	const msg = "the region file is of an older layout (written by an older xlb); it is moved aside and rebuilt"
	found := s2.await(t, 0, fmt.Sprintf("%q", msg), says(msg, nil))
	if aside := found.str("moved_to"); aside == "" {
		t.Errorf("%s: no moved_to", found)
	} else if _, err := os.Stat(aside); err != nil {
		t.Errorf("the old region file was not kept: %v", err)
	}
	s2.awaitReady(t)
	awaitServedBy(t, s2.addr, "a", 10)
}

// TestRegionTruncatedKeepsServing: a careless operator truncates the region file of a data plane
// serving under load (truncate -s 0 STATE/region), and then tries the same on the region every
// process maps, through /proc. The file is a copy: the supervisor says it was changed and writes
// it again whole. The mapped region is sealed memory: each truncation fails with EPERM. No process
// dies (a truncated mapping would SIGBUS every one), no worker is restarted, and every request of
// the load succeeds.
func TestRegionTruncatedKeepsServing(t *testing.T) {
	t.Parallel()
	a := newCountingBackend(t, "a")
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(), func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}})
	})
	ready, pids := s.awaitReady(t)
	path := filepath.Join(s.stateDir, "region")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size()
	g := startLoad(t, s.addr, "/truncated", 4)
	g.awaitOK(t, 100)

	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	const msg = "the region file was changed by someone else; it is saved again"
	changed := s.await(t, ready.end, fmt.Sprintf("%q", msg), says(msg, nil))
	if f := changed.str("found"); !strings.Contains(f, "truncated") {
		t.Errorf("%s: found %q, want it to say truncated", changed, f)
	}
	deadline := time.Now().Add(logWaitTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if st, err := os.Stat(path); err == nil && st.Size() == size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the region file is not %d bytes again within %v", size, logWaitTimeout)
		}
		<-tick.C
	}

	procs := []int{s.pid()}
	for _, pid := range pids {
		procs = append(procs, pid)
	}
	for _, pid := range procs {
		for _, n := range []int64{0, size / 2} {
			if err := os.Truncate(liveRegionPath(t, pid), n); !errors.Is(err, syscall.EPERM) {
				t.Errorf("truncate of process %d's region to %d bytes: %v, want EPERM", pid, n, err)
			}
		}
	}
	okBefore := g.okN.Load()
	g.awaitOK(t, okBefore+200)
	recs := g.halt()
	for _, pid := range procs {
		if !running(pid) {
			t.Errorf("process %d died", pid)
		}
	}
	lines, _ := s.log.linesFrom(ready.end)
	for _, ln := range lines {
		if says("worker exited", nil)(ln) || says("worker started", nil)(ln) {
			t.Errorf("a worker was restarted: %s", ln)
		}
	}
	failed, total := 0, 0
	for _, rs := range recs {
		for _, r := range rs {
			total++
			if !r.ok() {
				failed++
				if failed <= 5 {
					t.Errorf("request failed: status %d, body %q, error %v", r.status, r.backend, r.err)
				}
			}
		}
	}
	t.Logf("%d requests, %d failed, through the truncations", total, failed)
}
