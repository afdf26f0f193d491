package table

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/shm"
)

func TestParseState(t *testing.T) {
	for name, want := range map[string]State{"active": Active, "draining": Draining, "disabled": Disabled} {
		if got, err := ParseState(name); err != nil || got != want {
			t.Errorf("ParseState(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	if s, err := ParseState(""); err != nil || s != Active {
		t.Errorf(`ParseState("") = %v, %v; want Active`, s, err)
	}
	if _, err := ParseState("Draining"); err == nil {
		t.Error(`ParseState("Draining") succeeded; states are lower case`)
	}
}

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
	sets := []shm.Set{{Name: "web", Backends: []shm.Backend{{ID: "a", Address: "127.0.0.1:1", Weight: 2, State: Draining}}}}
	g, err := shm.NewWriter(r).Publish(sets)
	if err != nil {
		t.Fatal(err)
	}
	if f.Generation() != g {
		t.Fatalf("Generation %d after publishing %d", f.Generation(), g)
	}
	tb, err = f.Load()
	if err != nil || tb.Generation != g || len(tb.Sets) != 1 || tb.Sets[0].Backends[0] != sets[0].Backends[0] {
		t.Fatalf("Load = %+v, %v; want generation %d with %+v", tb, err, g, sets)
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
