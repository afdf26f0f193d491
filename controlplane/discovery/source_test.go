package discovery

import (
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// memSource is a Source in memory: the store as the server sees it, with versions chosen by the
// test.
type memSource struct {
	// snapshots counts the calls of Snapshot: one per push.
	snapshots atomic.Int64

	mu   sync.Mutex
	sets map[string]resource.Versioned // replaced, never modified, on each change
	subs map[chan struct{}]struct{}
}

func newMemSource() *memSource {
	return &memSource{sets: map[string]resource.Versioned{}, subs: map[chan struct{}]struct{}{}}
}

func (m *memSource) Snapshot() map[string]resource.Versioned {
	m.snapshots.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sets
}

func (m *memSource) Subscribe() (<-chan struct{}, func()) {
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

// put makes set name hold backends backends, at version.
func (m *memSource) put(name, version string, backends int) {
	m.putSet(version, backendSet(name, backends))
}

// putSet makes set the one of its name, at version.
func (m *memSource) putSet(version string, set *discoveryv1.BackendSet) {
	m.change(func(sets map[string]resource.Versioned) {
		sets[set.GetName()] = resource.Versioned{Set: set, Version: version}
	})
}

// remove deletes set name.
func (m *memSource) remove(name string) {
	m.change(func(sets map[string]resource.Versioned) { delete(sets, name) })
}

func (m *memSource) change(f func(map[string]resource.Versioned)) {
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

// backendSet returns a set of n backends that look like a real deployment's.
func backendSet(name string, n int) *discoveryv1.BackendSet {
	set := &discoveryv1.BackendSet{Name: name, Policy: discoveryv1.Policy_POLICY_ROUND_ROBIN}
	for i := range n {
		set.Backends = append(set.Backends, &discoveryv1.Backend{
			Id:       fmt.Sprintf("%s-%d", name, i),
			Address:  fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
			Port:     8080,
			Weight:   uint32(1 + i%5),
			Zone:     "zone-" + string(rune('a'+i%3)),
			Metadata: map[string]string{"pod": fmt.Sprintf("%s-%x", name, i*7919)},
		})
	}
	return set
}
