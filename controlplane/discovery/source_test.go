package discovery

import (
	"fmt"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// memSource is a Source in memory: the store as the server sees it, with versions chosen by the
// test.
type memSource struct {
	*testutil.MemSource[resource.Versioned]
}

func newMemSource() *memSource {
	return &memSource{testutil.NewMemSource[resource.Versioned]()}
}

// put makes set name hold backends backends, at version.
func (m *memSource) put(name, version string, backends int) {
	m.putSet(version, backendSet(name, backends))
}

// putSet makes set the one of its name, at version.
func (m *memSource) putSet(version string, set *discoveryv1.BackendSet) {
	m.Put(set.GetName(), resource.Versioned{Set: set, Version: version})
}

// remove deletes set name.
func (m *memSource) remove(name string) { m.Delete(name) }

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
