package balance

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// TriedMax is the number of attempts a request may make, and so the most entries of a Tried.
const TriedMax = 8

// Tried is the backends a request has tried, in order. The zero value is empty.
type Tried struct {
	idx [TriedMax]int32
	n   int
}

// Add records backend i. It panics past TriedMax entries, which callers bound.
func (t *Tried) Add(i int) {
	if t.n == TriedMax {
		panic("balance: more than TriedMax attempts")
	}
	t.idx[t.n] = int32(i)
	t.n++
}

// Has reports whether backend i was tried.
func (t *Tried) Has(i int) bool {
	for _, v := range t.idx[:t.n] {
		if int(v) == i {
			return true
		}
	}
	return false
}

// Len is the number of attempts recorded.
func (t *Tried) Len() int { return t.n }

// Picker picks a backend index.
type Picker interface {
	// Pick returns the index of a backend not in tried, or -1 when there is none.
	Pick(tried *Tried) int
	// Done tells the picker that a request sent to backend i ended.
	Done(i int)
}

// New returns a picker of policy p over backends with these weights (each at least 1).
func New(p Policy, weights []int) Picker {
	for _, w := range weights {
		if w < 1 {
			panic("balance: weight below 1")
		}
	}
	if p == LeastRequest {
		return newP2C(weights)
	}
	return newSWRR(weights)
}

// swrr is smooth weighted round robin (nginx ngx_http_upstream_get_peer): every pick adds each
// candidate's weight to its current weight, takes the candidate with the highest current weight, and
// subtracts the total of the candidates' weights from it.
type swrr struct {
	weights []int

	mu      sync.Mutex
	current []int
}

func newSWRR(weights []int) *swrr {
	return &swrr{weights: append([]int(nil), weights...), current: make([]int, len(weights))}
}

func (s *swrr) Pick(tried *Tried) int {
	if len(s.weights) == 1 {
		if tried.Has(0) {
			return -1
		}
		return 0
	}
	s.mu.Lock()
	best, total := -1, 0
	for i, w := range s.weights {
		if tried.Has(i) {
			continue
		}
		s.current[i] += w
		total += w
		// A tie goes to the lighter backend, so that 5:1 gives AABAAA rather than AAABAA: the
		// light one lands in the middle of the heavy one's run.
		if best < 0 || s.current[i] > s.current[best] ||
			s.current[i] == s.current[best] && w < s.weights[best] {
			best = i
		}
	}
	if best >= 0 {
		s.current[best] -= total
	}
	s.mu.Unlock()
	return best
}

func (s *swrr) Done(int) {}

// p2c draws two distinct candidates at random and takes the one with fewer requests in flight per
// unit of weight.
type p2c struct {
	weights    []int
	cumulative []int // cumulative[i] = weights[0] + ... + weights[i]
	total      int
	inflight   []paddedCount
}

// paddedCount keeps each backend's counter on its own cache line.
type paddedCount struct {
	n atomic.Int64
	_ [56]byte
}

func newP2C(weights []int) *p2c {
	p := &p2c{weights: append([]int(nil), weights...), inflight: make([]paddedCount, len(weights))}
	for _, w := range weights {
		p.total += w
		p.cumulative = append(p.cumulative, p.total)
	}
	return p
}

func (p *p2c) Pick(tried *Tried) int {
	n := len(p.weights)
	if n-tried.Len() <= 0 {
		return -1
	}
	a := p.draw(tried, -1)
	if a < 0 {
		return -1
	}
	best := a
	if b := p.draw(tried, a); b >= 0 {
		// Compare inflight[a]/weight[a] with inflight[b]/weight[b] without dividing.
		if p.inflight[b].n.Load()*int64(p.weights[a]) < p.inflight[a].n.Load()*int64(p.weights[b]) {
			best = b
		}
	}
	p.inflight[best].n.Add(1)
	return best
}

// draw returns a backend drawn at random in proportion to weight, among those not tried and not
// other; -1 when there is none. Drawing by weight makes the policy honour weights when nothing is in
// flight, and comparing in-flight counts per weight keeps it honouring them under load.
func (p *p2c) draw(tried *Tried, other int) int {
	if tried.Len() == 0 && other < 0 {
		r := rand.IntN(p.total)
		lo, hi := 0, len(p.cumulative)-1
		for lo < hi { // the first i with cumulative[i] > r
			mid := int(uint(lo+hi) >> 1)
			if p.cumulative[mid] > r {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		return lo
	}
	total := 0
	for i, w := range p.weights {
		if i != other && !tried.Has(i) {
			total += w
		}
	}
	if total == 0 {
		return -1
	}
	r := rand.IntN(total)
	for i, w := range p.weights {
		if i == other || tried.Has(i) {
			continue
		}
		if r < w {
			return i
		}
		r -= w
	}
	panic("balance: draw past the candidates")
}

func (p *p2c) Done(i int) { p.inflight[i].n.Add(-1) }
