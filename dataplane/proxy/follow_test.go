package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/xlbproxy/xlb/internal/testutil"

	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/dataplane/table"
)

// followingProxy serves set "web" from a region that the test publishes into, as a worker of
// slot 0 would. It returns the proxy, its address, the region and its writer.
func followingProxy(t *testing.T) (*Proxy, string, *shm.Region, *shm.Writer) {
	t.Helper()
	return followingProxyWith(t, Config{})
}

// followingProxyWith is followingProxy with the proxy's cfg.
func followingProxyWith(t testing.TB, cfg Config) (*Proxy, string, *shm.Region, *shm.Writer) {
	t.Helper()
	r, err := shm.Create(filepath.Join(t.TempDir(), "region"), shm.Capacities{Sets: 4, Backends: 16, StringBytes: 1024, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	r.ClaimWorker(0, os.Getpid(), time.Now().UnixNano())
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Follow(table.NewFollower(r, 0)); err != nil {
		t.Fatal(err)
	}
	return p, serveWeb(t, p), r, shm.NewWriter(r)
}

// publish makes one generation of set "web" with these backends.
func publish(t testing.TB, w *shm.Writer, backends ...shm.Backend) uint64 {
	t.Helper()
	g, err := w.Publish([]shm.Set{{Name: "web", Backends: backends}})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestFollowSeesEachGenerationOnTheNextRequest: with no Refresh call, the request after a flip goes
// to the new generation's backends, over one keep-alive connection, and the worker's slot records
// the generation it serves.
func TestFollowSeesEachGenerationOnTheNextRequest(t *testing.T) {
	a := newRecordingBackend(t, func(r *wireRequest) (string, bool) { return plainResponse(200, "a"), false })
	b := newRecordingBackend(t, func(r *wireRequest) (string, bool) { return plainResponse(200, "b"), false })
	p, addr, r, w := followingProxy(t)

	c := dialWire(t, addr)
	c.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if res, _ := c.response("GET"); res.StatusCode != 503 {
		t.Fatalf("before any generation: status %d, want 503", res.StatusCode)
	}

	steps := []struct {
		backends []shm.Backend
		want     string
	}{
		{[]shm.Backend{{ID: "a", Address: a.addr(), Weight: 1}}, "a"},
		{[]shm.Backend{{ID: "b", Address: b.addr(), Weight: 1}}, "b"},
		{[]shm.Backend{{ID: "a", Address: a.addr(), Weight: 1, State: table.Draining}, {ID: "b", Address: b.addr(), Weight: 1}}, "b"},
		{[]shm.Backend{{ID: "a", Address: a.addr(), Weight: 1}, {ID: "b", Address: b.addr(), Weight: 1, State: table.Disabled}}, "a"},
	}
	for i, s := range steps {
		g := publish(t, w, s.backends...)
		for range 3 {
			c.get("/", s.want)
		}
		if got := r.Worker(0).Observed; got != g {
			t.Errorf("step %d: the worker slot says generation %d, want %d", i, got, g)
		}
		if st := p.Stats(); st.Generation != g {
			t.Errorf("step %d: Stats().Generation %d, want %d", i, st.Generation, g)
		}
	}
}

// TestFollowRefreshWithoutTraffic: Refresh installs a new generation with no request to see it,
// as a worker does when its supervisor tells it of a flip.
func TestFollowRefreshWithoutTraffic(t *testing.T) {
	a := newRecordingBackend(t, nil)
	p, _, r, w := followingProxy(t)
	g := publish(t, w, shm.Backend{ID: "a", Address: a.addr(), Weight: 1})
	if r.Worker(0).Observed == g {
		t.Fatal("observed before any request or refresh")
	}
	got, err := p.Refresh()
	if err != nil || got != g || r.Worker(0).Observed != g {
		t.Fatalf("Refresh = %d, %v; slot observed %d; want generation %d", got, err, r.Worker(0).Observed, g)
	}
}

// TestFollowRefusesABadGeneration: a generation the proxy cannot serve (a weight past
// table.WeightMax is one the supervisor never writes) is not installed and not observed; the previous one keeps serving, and
// the next good generation is taken.
func TestFollowRefusesABadGeneration(t *testing.T) {
	a := newRecordingBackend(t, func(r *wireRequest) (string, bool) { return plainResponse(200, "a"), false })
	b := newRecordingBackend(t, func(r *wireRequest) (string, bool) { return plainResponse(200, "b"), false })
	p, addr, r, w := followingProxy(t)
	good := publish(t, w, shm.Backend{ID: "a", Address: a.addr(), Weight: 1})
	c := dialWire(t, addr)
	c.get("/", "a")

	bad := publish(t, w, shm.Backend{ID: "b", Address: b.addr(), Weight: table.WeightMax + 1})
	c.get("/", "a")
	if got, err := p.Refresh(); got != good || err == nil {
		t.Fatalf("Refresh over a bad generation = %d, %v; want %d and an error", got, err, good)
	}
	if o := r.Worker(0).Observed; o != good {
		t.Fatalf("slot observed %d after bad generation %d, want %d", o, bad, good)
	}

	publish(t, w, shm.Backend{ID: "b", Address: b.addr(), Weight: 2})
	c.get("/", "b")
}

// TestFollowKeepsServingAZeroedRegion: a region whose file was overwritten with zeros (generation
// word 0 among them) is not taken for an empty generation, which would answer every request 503:
// the proxy keeps serving what it decoded, says once and in plain words that the region is zeroed,
// and takes the next sound generation (of a rebuilt region, in a real worker).
func TestFollowKeepsServingAZeroedRegion(t *testing.T) {
	a := newRecordingBackend(t, func(r *wireRequest) (string, bool) { return plainResponse(200, "a"), false })
	path := filepath.Join(t.TempDir(), "region")
	r, err := shm.Create(path, shm.Capacities{Sets: 4, Backends: 16, StringBytes: 1024, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	var logs testutil.SyncBuffer
	p, err := New(Config{Logger: hclog.New(&hclog.LoggerOptions{Output: &logs})})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Follow(table.NewFollower(r, 0)); err != nil {
		t.Fatal(err)
	}
	addr := serveWeb(t, p)
	good := publish(t, shm.NewWriter(r), shm.Backend{ID: "a", Address: a.addr(), Weight: 1})
	c := dialWire(t, addr)
	c.get("/", "a")

	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	_, err = f.WriteAt(make([]byte, st.Size()), 0) // as dd if=/dev/zero conv=notrunc would
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		c.get("/", "a")
	}
	if got, err := p.Refresh(); got != good || err == nil {
		t.Fatalf("Refresh of a zeroed region = %d, %v; want %d and an error", got, err, good)
	}
	if n := strings.Count(logs.String(), "the shared region is zeroed or corrupt"); n != 1 {
		t.Errorf("the zeroed region was logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "magic 0") {
		t.Errorf("the log does not say what is wrong (magic 0):\n%s", logs.String())
	}
}

// TestSetBackendsRefusedWhileFollowing: the two sources of backend sets do not mix.
func TestSetBackendsRefusedWhileFollowing(t *testing.T) {
	p, _, _, _ := followingProxy(t)
	err := p.SetBackends([]table.Set{{Name: "web"}})
	if err == nil {
		t.Fatal("SetBackends on a following proxy succeeded")
	}
}
