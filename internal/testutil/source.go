package testutil

import (
	"maps"
	"sync"
	"sync/atomic"
)

// MemSource is a source of backend sets in memory, as controlplane/discovery's Server reads one
// (its Source interface), with the versions chosen by the test: MemSource[resource.Versioned] is
// a discovery.Source. It is generic in the entry so that testutil depends on none of our packages.
// Its methods are safe for concurrent use.
type MemSource[E any] struct {
	snapshots atomic.Int64 // calls of Snapshot

	mu   sync.Mutex
	sets map[string]E // replaced, never modified, on each change
	subs map[chan struct{}]struct{}
}

// NewMemSource returns an empty MemSource.
func NewMemSource[E any]() *MemSource[E] {
	return &MemSource[E]{sets: map[string]E{}, subs: map[chan struct{}]struct{}{}}
}

// Snapshot returns every entry by name. The map is never modified afterwards.
func (m *MemSource[E]) Snapshot() map[string]E {
	m.snapshots.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sets
}

// Snapshots is how many times Snapshot was called.
func (m *MemSource[E]) Snapshots() int64 { return m.snapshots.Load() }

// Subscribe returns a channel that receives after each change (buffered 1: changes coalesce), and
// the func that cancels the subscription.
func (m *MemSource[E]) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.subs[ch] = struct{}{}
	m.mu.Unlock()
	return ch, func() {
		m.mu.Lock()
		delete(m.subs, ch)
		m.mu.Unlock()
	}
}

// Put makes e the entry of name.
func (m *MemSource[E]) Put(name string, e E) {
	m.change(func(sets map[string]E) { sets[name] = e })
}

// Delete removes the entry of name.
func (m *MemSource[E]) Delete(name string) {
	m.change(func(sets map[string]E) { delete(sets, name) })
}

// change applies f to a copy of the entries, which replaces them, and tells the subscribers.
func (m *MemSource[E]) change(f func(map[string]E)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := maps.Clone(m.sets)
	f(next)
	m.sets = next
	for ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
