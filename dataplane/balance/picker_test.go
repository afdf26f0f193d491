package balance

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// sequence picks n times with nothing tried and spells the picks as letters (0 is "a").
func sequence(p Picker, n int) string {
	var b strings.Builder
	for range n {
		i := p.Pick(&Tried{})
		if i < 0 {
			b.WriteByte('-')
			continue
		}
		b.WriteByte(byte('a' + i))
		p.Done(i)
	}
	return b.String()
}

func sum(ws []int) int {
	s := 0
	for _, w := range ws {
		s += w
	}
	return s
}

func TestRoundRobinSequences(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []int
		want    string // two rounds
	}{
		// nginx's algorithm gives ties to the first candidate and so AAABAA (at the third pick both
		// current weights are 3); xlb gives them to the lighter backend, which centres it: AABAAA.
		{"5:1 as documented", []int{5, 1}, "aabaaa" + "aabaaa"},
		// nginx's own example (the commit that brought smooth weighted round robin).
		{"nginx 5:1:1", []int{5, 1, 1}, "aabacaa" + "aabacaa"},
		{"equal", []int{1, 1, 1}, "abc" + "abc"},
		{"single", []int{3}, "aaa" + "aaa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sequence(New(RoundRobin, tc.weights), len(tc.want))
			if got != tc.want {
				t.Errorf("weights %v: got %q, want %q", tc.weights, got, tc.want)
			}
		})
	}
}

// TestRoundRobinWindows checks, for random weights, that every window of sum(weights) consecutive
// picks (not only the aligned ones) gives each backend exactly its weight.
func TestRoundRobinWindows(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 300 {
		weights := make([]int, 1+r.IntN(8))
		for i := range weights {
			weights[i] = 1 + r.IntN(12)
		}
		s := sum(weights)
		p := New(RoundRobin, weights)
		picks := make([]int, 3*s)
		for k := range picks {
			picks[k] = p.Pick(&Tried{})
			p.Done(picks[k])
		}
		count := make([]int, len(weights))
		for k, i := range picks {
			count[i]++
			if k >= s {
				count[picks[k-s]]--
			}
			if k >= s-1 {
				for j, w := range weights {
					if count[j] != w {
						t.Fatalf("trial %d, weights %v: window ending at pick %d gives backend %d %d picks, want %d (picks %v)",
							trial, weights, k, j, count[j], w, picks)
					}
				}
			}
		}
	}
}

// naiveSWRR is the reference: nginx's ngx_http_upstream_get_peer written as plainly as possible.
// Every candidate (not excluded) gains its weight; the first candidate with the highest current
// weight wins and loses the total weight of the candidates.
type naiveSWRR struct {
	weights, current []int
}

func (n *naiveSWRR) pick(excluded map[int]bool) int {
	total := 0
	for i, w := range n.weights {
		if !excluded[i] {
			n.current[i] += w
			total += w
		}
	}
	best := -1
	for i := range n.weights {
		if excluded[i] {
			continue
		}
		if best == -1 || n.current[i] > n.current[best] ||
			n.current[i] == n.current[best] && n.weights[i] < n.weights[best] {
			best = i
		}
	}
	if best >= 0 {
		n.current[best] -= total
	}
	return best
}

// TestRoundRobinDifferential runs the picker and the naive reference side by side on random weight
// vectors and random exclusions; they must pick the same backend every time.
func TestRoundRobinDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 500 {
		weights := make([]int, 1+r.IntN(10))
		for i := range weights {
			weights[i] = 1 + r.IntN(20)
		}
		p := New(RoundRobin, weights)
		ref := &naiveSWRR{weights: weights, current: make([]int, len(weights))}
		for step := range 200 {
			var tried Tried
			excluded := map[int]bool{}
			if r.IntN(3) == 0 { // a third of the picks are retries
				for _, i := range r.Perm(len(weights))[:r.IntN(min(len(weights), TriedMax)+1)] {
					tried.Add(i)
					excluded[i] = true
				}
			}
			got, want := p.Pick(&tried), ref.pick(excluded)
			if got != want {
				t.Fatalf("trial %d step %d: weights %v, tried %v: picker chose %d, reference %d",
					trial, step, weights, excluded, got, want)
			}
			if got >= 0 {
				p.Done(got)
			}
		}
	}
}

func TestPickAllTried(t *testing.T) {
	for _, policy := range []Policy{RoundRobin, LeastRequest} {
		for _, weights := range [][]int{{1}, {2, 1}, {1, 1, 1, 1, 1, 1, 1, 1}} {
			t.Run(fmt.Sprint(policy, weights), func(t *testing.T) {
				p := New(policy, weights)
				var tried Tried
				for i := len(weights) - 1; i >= 0; i-- {
					tried.Add(i)
				}
				for range 10 {
					if got := p.Pick(&tried); got != -1 {
						t.Fatalf("every backend tried: Pick = %d, want -1", got)
					}
				}
				// Failed picks must leave no trace: the picker still serves every backend.
				if got := p.Pick(&Tried{}); got < 0 {
					t.Fatalf("nothing tried: Pick = %d", got)
				}
			})
		}
	}
}

func TestPickSkipsTried(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, policy := range []Policy{RoundRobin, LeastRequest} {
		t.Run(policy.String(), func(t *testing.T) {
			for range 2000 {
				weights := make([]int, 2+r.IntN(7))
				for i := range weights {
					weights[i] = 1 + r.IntN(5)
				}
				p := New(policy, weights)
				var tried Tried
				perm := r.Perm(len(weights))
				for _, i := range perm[:r.IntN(len(weights))] { // at least one left
					tried.Add(i)
				}
				for range 5 {
					got := p.Pick(&tried)
					if got < 0 || got >= len(weights) || tried.Has(got) {
						t.Fatalf("weights %v, tried %v: Pick = %d", weights, tried.idx[:tried.n], got)
					}
					p.Done(got)
				}
			}
		})
	}
}

// hold makes n requests in flight on backend i of a least-request picker, by excluding every other
// backend, and returns a func that ends them.
func hold(p Picker, nBackends, i, n int) (release func()) {
	var tried Tried
	for j := range nBackends {
		if j != i {
			tried.Add(j)
		}
	}
	for range n {
		if got := p.Pick(&tried); got != i {
			panic(fmt.Sprintf("hold: picked %d, want %d", got, i))
		}
	}
	return func() {
		for range n {
			p.Done(i)
		}
	}
}

func TestLeastRequestPrefersFewerInFlight(t *testing.T) {
	for _, n := range []int{2, 3, 5} {
		t.Run(fmt.Sprint(n, " backends"), func(t *testing.T) {
			weights := make([]int, n)
			for i := range weights {
				weights[i] = 1
			}
			p := New(LeastRequest, weights)
			release := hold(p, n, 0, 3)
			// Backend 0 has 3 requests in flight, every other none: of any two drawn, the other wins.
			for range 1000 {
				got := p.Pick(&Tried{})
				if got == 0 {
					t.Fatalf("picked backend 0 with 3 requests in flight while the others have none")
				}
				p.Done(got)
			}
			release()
			if got := p.(*p2c).inflight[0].n.Load(); got != 0 {
				t.Fatalf("in flight on backend 0 after release: %d", got)
			}
		})
	}
}

// TestLeastRequestWeightedComparison checks the comparison in flight per unit of weight, with two
// backends so that both are always the candidates.
func TestLeastRequestWeightedComparison(t *testing.T) {
	for _, tc := range []struct {
		weights    []int
		held       [2]int // requests in flight on each backend
		want       int
		reasonably string
	}{
		{[]int{4, 1}, [2]int{3, 1}, 0, "3/4 < 1/1"},
		{[]int{4, 1}, [2]int{5, 1}, 1, "5/4 > 1/1"},
		{[]int{1, 4}, [2]int{1, 3}, 1, "1/1 > 3/4"},
		{[]int{2, 3}, [2]int{3, 5}, 0, "3/2 < 5/3"},
		{[]int{2, 3}, [2]int{4, 5}, 1, "4/2 > 5/3"},
	} {
		t.Run(tc.reasonably, func(t *testing.T) {
			p := New(LeastRequest, tc.weights)
			r0 := hold(p, 2, 0, tc.held[0])
			r1 := hold(p, 2, 1, tc.held[1])
			for range 200 {
				got := p.Pick(&Tried{})
				if got != tc.want {
					t.Fatalf("weights %v, in flight %v: picked %d, want %d (%s)", tc.weights, tc.held, got, tc.want, tc.reasonably)
				}
				p.Done(got)
			}
			r0()
			r1()
		})
	}
}

// share runs picks on p: each request stays in flight until inFlight later ones started (FIFO), which
// models steady load with equal request durations. It returns each backend's share of the picks.
func share(p Picker, nBackends, picks, inFlight int) []float64 {
	count := make([]int, nBackends)
	queue := make([]int, 0, inFlight)
	for range picks {
		if len(queue) == inFlight {
			p.Done(queue[0])
			queue = queue[1:]
		}
		i := p.Pick(&Tried{})
		count[i]++
		queue = append(queue, i)
	}
	for _, i := range queue {
		p.Done(i)
	}
	out := make([]float64, nBackends)
	for i, c := range count {
		out[i] = float64(c) / float64(picks)
	}
	return out
}

func checkShares(t *testing.T, weights []int, got []float64, inFlight int) {
	t.Helper()
	s := float64(sum(weights))
	for i, w := range weights {
		want := float64(w) / s
		if got[i] < want-0.05 || got[i] > want+0.05 {
			t.Errorf("weights %v, %d in flight: backend %d got %.3f of the picks, want %.3f+-0.05 (all shares %.3f)",
				weights, inFlight, i, got[i], want, got)
		}
	}
}

// TestLeastRequestWeightsUnderLoad checks that traffic follows the weights when many requests are in
// flight. math/rand/v2's global source cannot be seeded, so the bounds are generous: with 40000
// picks a share's standard deviation is below 0.003, and the bounds are +-0.05.
func TestLeastRequestWeightsUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		weights  []int
		inFlight int
	}{
		{[]int{3, 1}, 32},
		{[]int{1, 2, 3, 4}, 64},
	} {
		t.Run(fmt.Sprintf("%v in flight %d", tc.weights, tc.inFlight), func(t *testing.T) {
			p := New(LeastRequest, tc.weights)
			checkShares(t, tc.weights, share(p, len(tc.weights), 40000, tc.inFlight), tc.inFlight)
			for i := range tc.weights {
				if n := p.(*p2c).inflight[i].n.Load(); n != 0 {
					t.Errorf("backend %d: %d in flight after every Done", i, n)
				}
			}
		})
	}
}

// TestLeastRequestWeightsAtLowLoad checks that traffic follows the weights when each request ends
// before the next starts: every in-flight count is zero at every pick, the comparison ties, and
// the weights must still decide (drawing the two candidates in proportion to weight would do it).
// Bug it pins: the first candidate, drawn uniformly, wins every tie, so weights 3:1 split 50/50.
func TestLeastRequestWeightsAtLowLoad(t *testing.T) {
	for _, weights := range [][]int{{3, 1}, {1, 2, 3, 4}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			p := New(LeastRequest, weights)
			checkShares(t, weights, share(p, len(weights), 40000, 1), 1)
		})
	}
}

// TestPickConcurrent runs Pick and Done from many goroutines (meant for -race). Round robin without
// exclusions still gives each backend exactly its weight over a multiple of sum(weights) picks, and
// least request ends with nothing in flight.
func TestPickConcurrent(t *testing.T) {
	weights := []int{5, 1, 3, 2}
	const goroutines, perG = 8, 1100 // 8*1100 = 800 rounds of 11
	for _, policy := range []Policy{RoundRobin, LeastRequest} {
		t.Run(policy.String(), func(t *testing.T) {
			p := New(policy, weights)
			var mu sync.Mutex
			count := make([]int, len(weights))
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					local := make([]int, len(weights))
					for k := range perG {
						var tried Tried
						if policy == LeastRequest && k%4 == 0 {
							tried.Add(g % len(weights))
						}
						i := p.Pick(&tried)
						if i < 0 || tried.Has(i) {
							panic(fmt.Sprintf("Pick = %d with tried %v", i, tried.idx[:tried.n]))
						}
						local[i]++
						p.Done(i)
					}
					mu.Lock()
					for i, c := range local {
						count[i] += c
					}
					mu.Unlock()
				})
			}
			wg.Wait()
			if policy == RoundRobin {
				rounds := goroutines * perG / sum(weights)
				for i, w := range weights {
					if count[i] != w*rounds {
						t.Errorf("backend %d (weight %d): %d picks, want %d", i, w, count[i], w*rounds)
					}
				}
				return
			}
			for i := range weights {
				if n := p.(*p2c).inflight[i].n.Load(); n != 0 {
					t.Errorf("backend %d: %d in flight after every Done", i, n)
				}
			}
		})
	}
}
