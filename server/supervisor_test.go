package server

import (
	"slices"
	"testing"
	"time"
)

// TestRestartDelay: a worker's restart waits restartDelayMin, doubled with each crash after a short
// run up to restartDelayMax, and restartDelayMin again after a run of restartStable.
func TestRestartDelay(t *testing.T) {
	ms := time.Millisecond
	steps := []struct {
		ran  time.Duration
		want time.Duration
	}{
		{0, 50 * ms}, {ms, 100 * ms}, {ms, 200 * ms}, {ms, 400 * ms}, {ms, 800 * ms}, {ms, 1600 * ms},
		{ms, 3200 * ms}, {ms, 6400 * ms}, {ms, 10 * time.Second}, {ms, 10 * time.Second},
		{restartStable, 50 * ms}, {ms, 100 * ms}, {restartStable - ms, 200 * ms},
	}
	var st slotState
	for i, s := range steps {
		if got := st.restartDelay(s.ran); got != s.want {
			t.Fatalf("exit %d, after a run of %v: restart in %v, want %v", i, s.ran, got, s.want)
		}
	}
}

// TestSortPending: scenarios of the generations waiting for the workers: applied once every live
// worker observed them, said late once past appliedWarn, and kept in order until applied.
func TestSortPending(t *testing.T) {
	t0 := time.Unix(1000, 0)
	gens := func(ps []pendingGen) (out []uint64) {
		for _, p := range ps {
			out = append(out, p.gen)
		}
		return out
	}
	pending := []pendingGen{{gen: 3, at: t0}, {gen: 4, at: t0.Add(time.Second)}, {gen: 5, at: t0.Add(2 * time.Second)}}
	// The workers observed 3; nothing has waited long.
	kept, applied, late := sortPending(pending, 3, t0.Add(3*time.Second))
	if !slices.Equal(gens(applied), []uint64{3}) || !slices.Equal(gens(kept), []uint64{4, 5}) || late != nil {
		t.Fatalf("applied %v kept %v late %v; want 3, then 4 5, none late", gens(applied), gens(kept), gens(late))
	}
	// A worker is stuck at 3 past the warning: 4 is late, once; 5 not yet.
	at := t0.Add(time.Second + appliedWarn + time.Millisecond)
	kept, applied, late = sortPending(kept, 3, at)
	if applied != nil || !slices.Equal(gens(late), []uint64{4}) || !slices.Equal(gens(kept), []uint64{4, 5}) {
		t.Fatalf("applied %v kept %v late %v; want none, 4 5, 4 late", gens(applied), gens(kept), gens(late))
	}
	if kept, _, late = sortPending(kept, 3, at.Add(time.Second)); !slices.Equal(gens(late), []uint64{5}) {
		t.Fatalf("late %v after 5 waited too; want 5 alone: 4 was said late already", gens(late))
	}
	// The worker catches up past both.
	if kept, applied, _ = sortPending(kept, 7, at); kept != nil || !slices.Equal(gens(applied), []uint64{4, 5}) {
		t.Fatalf("applied %v kept %v; want 4 5 applied, nothing kept", gens(applied), gens(kept))
	}
}

// TestStalledFor: a worker is stalled when its own slot's heartbeat (or its start, if later) is
// older than the timeout; a slot another process holds says nothing.
func TestStalledFor(t *testing.T) {
	started := time.Unix(1000, 0)
	beat := started.Add(5 * time.Second).UnixNano()
	for _, tc := range []struct {
		name    string
		slotPID int
		beat    int64
		now     time.Time
		want    bool
	}{
		{"beating", 42, beat, started.Add(20 * time.Second), false},
		{"silent past the timeout", 42, beat, started.Add(36 * time.Second), true},
		{"no beat yet, just started", 42, 0, started.Add(29 * time.Second), false},
		{"no beat since its start", 42, 0, started.Add(31 * time.Second), true},
		{"its slot is another's", 77, beat, started.Add(60 * time.Second), false},
	} {
		if _, got := stalledFor(tc.slotPID, tc.beat, 42, started, tc.now, 30*time.Second); got != tc.want {
			t.Errorf("%s: stalled %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSlotsToReap: a slot is released only when it is held, not by one of ours, and its process
// is gone.
func TestSlotsToReap(t *testing.T) {
	pids := []int{0, 101, 102, 103, 104}
	ours := map[int]bool{1: true}
	gone := func(pid int) bool { return pid == 101 || pid == 103 }
	if got := slotsToReap(pids, ours, gone); !slices.Equal(got, []int{3}) {
		t.Fatalf("slots to reap %v, want [3]: slot 1 is ours, 2 and 4 run, 0 is free", got)
	}
}
