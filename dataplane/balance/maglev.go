package balance

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

const (
	// MaglevSizeDefault is the number of entries of a Maglev table when the caller gives 0. It is
	// prime, as every size must be, and is Envoy's default.
	MaglevSizeDefault = 65537
	// MaglevSizeMax bounds the size (Envoy's bound too): the table of one set takes 2 bytes an entry.
	MaglevSizeMax = 5000011
	// MaglevBackendsMax is the most backends of one table: an entry is a uint16, and MaxUint16
	// marks an entry not yet filled.
	MaglevBackendsMax = math.MaxUint16
	// MaglevWeightMax is the largest weight; the smallest is 1.
	MaglevWeightMax = math.MaxUint32
	// MaglevProbesMax is the most table entries a lookup visits after the key's own entry when
	// that entry's backend is out. Past them it scans the backends in index order from a point
	// the key chooses.
	MaglevProbesMax = 64
)

// maglevEmpty marks an entry not yet filled while a table is built.
const maglevEmpty = math.MaxUint16

// Maglev is a weighted Maglev lookup table (Eisenbud et al., NSDI 2016, with Envoy's weighting):
// each entry names a backend, a backend owns a share of the entries in proportion to its weight,
// and a key owns the entry Hash % size. It is immutable and safe for concurrent use.
type Maglev struct {
	table []uint16 // entry -> backend index; empty when there are no backends
	order []uint16 // the backend indexes in the order of their ids
	n     int      // backends
}

// maglevBuild is one backend's state while a table is built.
type maglevBuild struct {
	pos, skip uint64 // pos is the backend's next preferred entry: (offset + skip*next) % size
	weight    uint64
	target    uint64 // the backend takes an entry in an iteration once iteration*weight >= target
	index     uint16
}

// advance moves s to its next preferred entry, without a division: skip < size.
func (s *maglevBuild) advance(size uint64) {
	if s.pos += s.skip; s.pos >= size {
		s.pos -= size
	}
}

// NewMaglev builds the table of backends ids (their stable ids, which must be distinct and not
// empty) with weights (each from 1 to MaglevWeightMax), of size entries: 0 means
// MaglevSizeDefault, and a size must be prime, at least the number of backends and at most
// MaglevSizeMax. A backend's place in the table depends on its id alone, never on its index, so
// reordering ids and weights together yields the same table up to the renumbering.
//
// With no backends the table is empty and every Lookup returns -1. Building allocates the table,
// the id order and a set of the ids (to refuse duplicates) and one small record per backend, and takes O(size·log size) steps for backends of equal weight.
func NewMaglev(ids []string, weights []int, size int) (*Maglev, error) {
	if len(ids) != len(weights) {
		return nil, fmt.Errorf("balance: maglev: %d ids but %d weights", len(ids), len(weights))
	}
	if size == 0 {
		size = MaglevSizeDefault
	}
	n := len(ids)
	switch {
	case n > MaglevBackendsMax:
		return nil, fmt.Errorf("balance: maglev: %d backends, at most %d", n, MaglevBackendsMax)
	case size < 2 || size > MaglevSizeMax || !prime(size):
		return nil, fmt.Errorf("balance: maglev: table size %d: want a prime from 2 to %d", size, MaglevSizeMax)
	case size < n:
		return nil, fmt.Errorf("balance: maglev: table size %d is smaller than the %d backends", size, n)
	}
	seen := make(map[string]int, n)
	var maxWeight uint64
	for i, id := range ids {
		if id == "" {
			return nil, fmt.Errorf("balance: maglev: backend %d: empty id", i)
		}
		if j, dup := seen[id]; dup {
			return nil, fmt.Errorf("balance: maglev: backends %d and %d have the same id %q", j, i, id)
		}
		seen[id] = i
		if w := weights[i]; w < 1 || uint64(w) > MaglevWeightMax {
			return nil, fmt.Errorf("balance: maglev: backend %q: weight %d, want 1 to %d", id, w, uint64(MaglevWeightMax))
		}
		maxWeight = max(maxWeight, uint64(weights[i]))
	}
	m := &Maglev{n: n}
	if n == 0 {
		return m, nil
	}
	m.table = make([]uint16, size)
	for e := range m.table {
		m.table[e] = maglevEmpty
	}
	// The backends take their turns in the order of their ids, not of their indexes, so that the
	// table does not depend on the order in which a set lists them.
	m.order = make([]uint16, n)
	order := m.order
	for i := range order {
		order[i] = uint16(i)
	}
	slices.SortFunc(order, func(a, b uint16) int { return strings.Compare(ids[a], ids[b]) })
	st := make([]maglevBuild, n)
	M := uint64(size)
	for k, i := range order {
		// Envoy's permutation: offset and skip from XXH64 of the id with seeds 0 and 1.
		st[k] = maglevBuild{
			index:  i,
			pos:    HashString(ids[i], 0) % M,
			skip:   HashString(ids[i], 1)%(M-1) + 1,
			weight: uint64(weights[i]),
		}
	}
	// The population loop of the paper, weighted as Envoy does: in every iteration a backend of
	// the largest weight takes its next free preferred entry, and a backend of weight w takes one
	// in w/maxWeight of the iterations. Overflow: iteration < size < 2^23 and weight < 2^32.
	filled := 0
	for iteration := uint64(0); filled < size; iteration++ {
		for k := range st {
			s := &st[k]
			if iteration*s.weight < s.target {
				continue
			}
			s.target += maxWeight
			for m.table[s.pos] != maglevEmpty {
				s.advance(M)
			}
			m.table[s.pos] = s.index
			s.advance(M)
			if filled++; filled == size {
				break
			}
		}
	}
	return m, nil
}

// Backends is the number of backends of the table.
func (m *Maglev) Backends() int { return m.n }

// Size is the number of entries of the table (0 without backends).
func (m *Maglev) Size() int { return len(m.table) }

// Lookup returns the backend of the key whose hash is key, -1 when there is none. out reports
// the backends that must not take the request (ejected, disabled, draining for new clients);
// nil means none is out. When the key's entry names a backend that is in, that is the answer, so
// a key whose backend is in never moves when others go out. Otherwise Lookup walks the key's own
// probe sequence through the table (up to MaglevProbesMax entries, the stride chosen by the key)
// and returns the first backend there that is in: a backend of the table in proportion to its
// share of entries. If all of those are out it takes the first backend that is in, in the order
// of the ids from the (key % backends)-th, and -1 if every backend is out. The answer depends on
// key, the ids, the weights and out alone: every worker and data plane answers alike.
//
// Lookup does not allocate (if out does not) and calls out at most MaglevProbesMax+1+backends times.
func (m *Maglev) Lookup(key uint64, out func(i int) bool) int {
	if m.n == 0 {
		return -1
	}
	M := uint64(len(m.table))
	e := key % M
	b := int(m.table[e])
	if out == nil || !out(b) {
		return b
	}
	stride := (key/M)%(M-1) + 1 // not a multiple of the prime M, so the walk visits every entry
	for range MaglevProbesMax {
		e += stride
		if e >= M {
			e -= M
		}
		if b := int(m.table[e]); !out(b) {
			return b
		}
	}
	start := int(key % uint64(m.n))
	for k := range m.n {
		j := start + k
		if j >= m.n {
			j -= m.n
		}
		if b := int(m.order[j]); !out(b) {
			return b
		}
	}
	return -1
}

// prime reports whether n (at least 2) is prime, by trial division: sizes are below 2^23.
func prime(n int) bool {
	if n%2 == 0 {
		return n == 2
	}
	for d := 3; d*d <= n; d += 2 {
		if n%d == 0 {
			return false
		}
	}
	return true
}
