package server

import (
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
