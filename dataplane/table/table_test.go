package table

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/shm"
)

// TestFollower: a follower of an empty region loads generation 0 with no sets; after a publish it
// sees the new generation word and loads it whole; Observed and Beat land in its own slot only.
func TestFollower(t *testing.T) {
	r, err := shm.Create(filepath.Join(t.TempDir(), "region"), shm.Capacities{Sets: 2, Backends: 4, StringBytes: 256, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f := NewFollower(r, 1)
	tb, err := f.Load()
	if err != nil || tb.Generation != 0 || len(tb.Sets) != 0 {
		t.Fatalf("Load of an empty region = %+v, %v; want generation 0, no sets", tb, err)
	}
	setTLS := &TLS{ServerName: "web.example", CAFile: "/etc/ca.pem", NoResumption: true}
	sticky := &Sticky{CookieName: "sid", Path: "/app", MaxAge: time.Hour, SameSite: SameSiteStrict, NoHTTPOnly: true}
	sets := []Set{{Name: "web", FailureStatuses: health.FailGateway, TLS: setTLS, Policy: balance.MaglevHash,
		Hash: HashOn{Kind: HashCookie, Name: "user"}, Sticky: sticky,
		Backends: []Backend{{ID: "a", Address: "127.0.0.1:1", Weight: 2, State: Draining, TLS: setTLS}, {ID: "b", Address: "127.0.0.1:2"}}}}
	g, err := shm.NewWriter(r).Publish(Records(sets))
	if err != nil {
		t.Fatal(err)
	}
	if f.Generation() != g {
		t.Fatalf("Generation %d after publishing %d", f.Generation(), g)
	}
	tb, err = f.Load()
	// The zero weight was written as 1, and Publish gave each backend a slot of its own; each
	// backend's TLS came through the region, the set's own (which workers do not read) did not.
	want := []Set{{Name: "web", FailureStatuses: health.FailGateway, Policy: balance.MaglevHash,
		Hash: HashOn{Kind: HashCookie, Name: "user"}, Sticky: sticky, Backends: []Backend{
			{ID: "a", Address: "127.0.0.1:1", Weight: 2, State: Draining, TLS: &TLS{ServerName: "web.example", CAFile: "/etc/ca.pem", NoResumption: true}},
			{ID: "b", Address: "127.0.0.1:2", Weight: 1, HealthSlot: 1}}}}
	if err != nil || tb.Generation != g || !reflect.DeepEqual(tb.Sets, want) {
		t.Fatalf("Load = %+v, %v; want generation %d with %+v", tb, err, g, want)
	}
	now := time.Unix(1700000000, 0)
	r.ClaimWorker(1, os.Getpid(), 0)
	f.Observed(g)
	f.Beat(now)
	if w := r.Worker(1); w.Observed != g || w.Heartbeat != now.UnixNano() {
		t.Errorf("slot 1 = %+v; want observed %d, heartbeat %d", w, g, now.UnixNano())
	}
	if w := r.Worker(0); w != (shm.WorkerState{}) {
		t.Errorf("slot 0 = %+v; want it untouched", w)
	}
	// In-flight counting, in the worker's own slot, read back as the sum over workers.
	counted := f.InFlightStart(1)
	if !counted || f.InFlight(1) != 1 || r.InFlightOf(1, 1) != 1 {
		t.Fatalf("InFlightStart = %v; InFlight %d, slot 1's %d; want true, 1, 1", counted, f.InFlight(1), r.InFlightOf(1, 1))
	}
	f.InFlightEnd(1, counted)
	if f.InFlight(1) != 0 {
		t.Fatalf("InFlight after the end: %d", f.InFlight(1))
	}
	// A worker whose slot names another pid (or none yet) counts nothing.
	r.ClaimWorker(1, os.Getpid()+1, 0)
	if f.InFlightStart(1) || r.InFlight(1) != 0 {
		t.Fatal("a worker counted in a slot that is not its own")
	}
}

// TestRecords: a Set's region record keeps what the workers need (the failure statuses, not the
// rest of the health policy), writes a zero weight as the 1 it means, and leaves the health slot to
// Publish.
func TestRecords(t *testing.T) {
	sets := []Set{
		{Name: "web", Policy: balance.LeastRequest, FailureStatuses: health.Fail5xx,
			Health:   health.Config{Probe: health.Probe{Kind: health.ProbeTCP}, Outlier: health.Outlier{FailureStatuses: health.Fail5xx}},
			Backends: []Backend{{ID: "a", Address: "10.0.0.1:80", Weight: 0, State: Disabled, HealthSlot: 7}, {ID: "b", Address: "h:1", Weight: WeightMax}}},
		{Name: "empty"},
	}
	want := []shm.Set{
		{Name: "web", Policy: balance.LeastRequest, FailureStatuses: uint8(health.Fail5xx),
			Backends: []shm.Backend{{ID: "a", Address: "10.0.0.1:80", Weight: 1, State: Disabled}, {ID: "b", Address: "h:1", Weight: WeightMax}}},
		{Name: "empty", Backends: []shm.Backend{}},
	}
	if got := Records(sets); !reflect.DeepEqual(got, want) {
		t.Errorf("Records:\n got %+v\nwant %+v", got, want)
	}
	defer func() {
		if recover() == nil {
			t.Error("Records of a negative weight did not panic")
		}
	}()
	Records([]Set{{Name: "x", Backends: []Backend{{ID: "a", Address: "h:1", Weight: -1}}}})
}

// TestFollowerKeepsOffAnotherWorkersSlot: a worker whose slot was given to another process (its
// supervisor died and a new one reused the slot) writes nothing there.
func TestFollowerKeepsOffAnotherWorkersSlot(t *testing.T) {
	r, err := shm.Create(filepath.Join(t.TempDir(), "region"), shm.Capacities{Sets: 1, Backends: 1, StringBytes: 64, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f := NewFollower(r, 0)
	f.Observed(3) // before any claim: the slot is taken to be this worker's
	if got := r.Worker(0).Observed; got != 3 {
		t.Fatalf("observed %d before the claim, want 3", got)
	}
	r.ReleaseWorker(0)
	r.ClaimWorker(0, os.Getpid()+1, 5)
	f.Observed(7)
	f.Beat(time.Unix(0, 9))
	if w := r.Worker(0); w.Observed != 0 || w.Heartbeat != 5 {
		t.Fatalf("slot of pid %d = %+v; the old worker wrote into it", os.Getpid()+1, w)
	}
}
