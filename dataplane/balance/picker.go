package balance

import (
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

// p2c is the least-request picker of one process: the P2C choice over its own counters.
type p2c struct {
	choice   *P2C
	inflight []paddedCount
}

// paddedCount keeps each backend's counter on its own cache line.
type paddedCount struct {
	n atomic.Int64
	_ [56]byte
}

func newP2C(weights []int) *p2c {
	return &p2c{choice: NewP2C(weights), inflight: make([]paddedCount, len(weights))}
}

// InFlight is the requests this picker has in flight on backend i.
func (p *p2c) InFlight(i int) int64 { return p.inflight[i].n.Load() }

func (p *p2c) Pick(tried *Tried) int {
	best := p.choice.Pick(p, tried)
	if best >= 0 {
		p.inflight[best].n.Add(1)
	}
	return best
}

func (p *p2c) Done(i int) { p.inflight[i].n.Add(-1) }
