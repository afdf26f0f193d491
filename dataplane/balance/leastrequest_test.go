package balance

import (
	"fmt"
	"testing"
)

// workers are the in-flight counters of several worker processes, one row per worker, as the
// region holds them; InFlight sums a backend's column, as the proxy will.
type workers [][]int64

func (w *workers) InFlight(i int) int64 {
	var n int64
	for _, row := range *w {
		n += row[i]
	}
	return n
}

// TestP2CSumsWorkers: with two backends both are always the candidates, so the pick is the
// comparison itself. Each case is one where a worker that looked at its own counters alone
// would pick the other backend.
func TestP2CSumsWorkers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []int
		w       workers
		want    int
	}{
		{"3 on 0 in worker A, 10 on 1 in worker B", []int{1, 1}, workers{{3, 0}, {0, 10}}, 0},
		{"the same the other way round", []int{1, 1}, workers{{0, 10}, {3, 0}}, 0},
		{"spread over both workers: 4 against 5", []int{1, 1}, workers{{1, 5}, {3, 0}}, 0},
		{"per unit of weight: 2/1 against 6/4", []int{1, 4}, workers{{2, 0}, {0, 6}}, 1},
		{"per unit of weight: 3/1 against 13/4", []int{1, 4}, workers{{0, 13}, {3, 0}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewP2C(tc.weights)
			for range 200 {
				if got := p.Pick(&tc.w, &Tried{}); got != tc.want {
					t.Fatalf("in flight %v (weights %v): picked %d, want %d", tc.w, tc.weights, got, tc.want)
				}
			}
		})
	}
}

// TestP2CAvoidsBusyBackend: with more backends, the one whose requests are spread over the two
// workers (1 and 2) is never picked while every other has none: of any two drawn, the other wins.
func TestP2CAvoidsBusyBackend(t *testing.T) {
	for _, n := range []int{3, 5, 20} { // 20: past walkBackendsMax, the second draw is redrawn
		t.Run(fmt.Sprint(n, " backends"), func(t *testing.T) {
			w := workers{make([]int64, n), make([]int64, n)}
			w[0][0], w[1][0] = 1, 2
			p := NewP2C(ones(n))
			for range 1000 {
				if got := p.Pick(&w, &Tried{}); got == 0 || got < 0 {
					t.Fatalf("picked %d: backend 0 has 3 in flight across the workers, the others none", got)
				}
			}
		})
	}
}

// loadSlice adapts plain counts; Pick adds nothing to them.
type loadSlice []int64

func (l loadSlice) InFlight(i int) int64 { return l[i] }

// TestP2CWeightsAtNoLoad: with nothing in flight anywhere the weights decide, and Pick counts
// nothing itself (the caller does).
func TestP2CWeightsAtNoLoad(t *testing.T) {
	for _, weights := range [][]int{{3, 1}, {1, 2, 3, 4}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			p := NewP2C(weights)
			load := make(loadSlice, len(weights))
			count := make([]int, len(weights))
			const picks = 40000
			for range picks {
				count[p.Pick(load, &Tried{})]++
			}
			got := make([]float64, len(weights))
			for i, c := range count {
				got[i] = float64(c) / picks
			}
			checkShares(t, weights, got, 0)
			for i, n := range load {
				if n != 0 {
					t.Errorf("backend %d: Pick changed the caller's count to %d", i, n)
				}
			}
		})
	}
}

// TestP2CManyBackendsTried: past walkBackendsMax backends a draw that lands on a tried backend is
// drawn again; the shares must still follow the weights of the untried. The eight tried are the
// heaviest (136 of the 210 of weight), so the fallback walk runs too.
func TestP2CManyBackendsTried(t *testing.T) {
	weights := make([]int, 20)
	for i := range weights {
		weights[i] = i + 1
	}
	var tried Tried
	for i := 12; i < 20; i++ {
		tried.Add(i)
	}
	p := NewP2C(weights)
	load := make(loadSlice, 20)
	count := make([]int, 20)
	const picks = 60000
	for range picks {
		count[p.Pick(load, &tried)]++
	}
	untried := sum(weights[:12])
	for i, w := range weights {
		want := 0.0
		if i < 12 {
			want = float64(w) / float64(untried)
		}
		if got := float64(count[i]) / picks; got < want-0.01 || got > want+0.01 {
			t.Errorf("backend %d (weight %d): %.4f of the picks, want %.4f +-0.01", i, w, got, want)
		}
	}
}

func TestP2CTried(t *testing.T) {
	p := NewP2C([]int{1, 2, 3})
	load := workers{{0, 0, 5}, {0, 0, 5}}
	var tried Tried
	tried.Add(0)
	tried.Add(1)
	for range 100 {
		if got := p.Pick(&load, &tried); got != 2 {
			t.Fatalf("0 and 1 tried: picked %d, want 2 however busy", got)
		}
	}
	tried.Add(2)
	if got := p.Pick(&load, &tried); got != -1 {
		t.Fatalf("all tried: picked %d, want -1", got)
	}
}

func TestP2CAllocs(t *testing.T) {
	p := NewP2C([]int{1, 2, 3, 4})
	w := workers{{1, 2, 3, 4}, {4, 3, 2, 1}}
	var tried Tried
	tried.Add(3)
	if n := testing.AllocsPerRun(1000, func() {
		p.Pick(&w, &Tried{})
		p.Pick(&w, &tried)
	}); n != 0 {
		t.Errorf("Pick allocates %.1f times", n)
	}
	// The one-process picker passes itself as the InFlight: no allocation either. (A Tried
	// passed through the Picker interface escapes: the caller keeps one per request.)
	lr := New(LeastRequest, []int{1, 2, 3, 4})
	var none Tried
	if n := testing.AllocsPerRun(1000, func() { lr.Done(lr.Pick(&none)) }); n != 0 {
		t.Errorf("the least-request picker allocates %.1f times", n)
	}
}

func BenchmarkP2CPick(b *testing.B) {
	for _, n := range []int{2, 100} {
		b.Run(fmt.Sprint(n, " backends, 2 workers"), func(b *testing.B) {
			w := workers{make([]int64, n), make([]int64, n)}
			p := NewP2C(ones(n))
			b.ReportAllocs()
			for b.Loop() {
				i := p.Pick(&w, &Tried{})
				w[0][i]++ // the caller counts what it picked
			}
		})
	}
}
