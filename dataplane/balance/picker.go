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
		if best < 0 || s.current[i] > s.current[best] {
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
	weights  []int
	inflight []paddedCount
}

// paddedCount keeps each backend's counter on its own cache line.
type paddedCount struct {
	n atomic.Int64
	_ [56]byte
}

func newP2C(weights []int) *p2c {
	return &p2c{weights: append([]int(nil), weights...), inflight: make([]paddedCount, len(weights))}
}

func (p *p2c) Pick(tried *Tried) int {
	n := len(p.weights)
	left := n - tried.Len()
	if left <= 0 {
		return -1
	}
	ka := rand.IntN(left)
	a := p.nth(ka, tried)
	best := a
	if left > 1 {
		kb := rand.IntN(left - 1)
		if kb >= ka {
			kb++
		}
		b := p.nth(kb, tried)
		// Compare inflight[a]/weight[a] with inflight[b]/weight[b] without dividing.
		if p.inflight[b].n.Load()*int64(p.weights[a]) < p.inflight[a].n.Load()*int64(p.weights[b]) {
			best = b
		}
	}
	p.inflight[best].n.Add(1)
	return best
}

// nth returns the index of the k-th backend (from 0) that is not in tried.
func (p *p2c) nth(k int, tried *Tried) int {
	for i := range p.weights {
		if tried.Has(i) {
			continue
		}
		if k == 0 {
			return i
		}
		k--
	}
	panic("balance: nth past the candidates")
}

func (p *p2c) Done(i int) { p.inflight[i].n.Add(-1) }
