package xds

import (
	"fmt"

	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// merge turns the deltas of resp into whole sets, in resp.Sets, from bases: the set of each name
// that the data plane serves, as it was last sent whole or made. It fails, changing nothing, when
// a delta's base is not the one held or a run is out of the base's bounds: the control plane
// broke the protocol.
func merge(resp *discoveryv1.StreamBackendSetsResponse, bases map[string]*discoveryv1.VersionedBackendSet) error {
	if len(resp.GetDeltas()) == 0 {
		return nil
	}
	made := make([]*discoveryv1.VersionedBackendSet, 0, len(resp.GetDeltas()))
	for _, d := range resp.GetDeltas() {
		set, err := mergeOne(d, bases[d.GetBackendSet().GetName()])
		if err != nil {
			return err
		}
		made = append(made, set)
	}
	resp.Sets = append(resp.Sets, made...)
	resp.Deltas = nil
	return nil
}

// mergeOne returns the set that d makes of base.
func mergeOne(d *discoveryv1.BackendSetDelta, base *discoveryv1.VersionedBackendSet) (*discoveryv1.VersionedBackendSet, error) {
	name := d.GetBackendSet().GetName()
	switch {
	case base == nil:
		return nil, fmt.Errorf("xds: delta of set %q on version %q: no version of it held", name, d.GetBaseVersion())
	case base.GetVersion() != d.GetBaseVersion():
		return nil, fmt.Errorf("xds: delta of set %q on version %q: the one held is %q", name, d.GetBaseVersion(), base.GetVersion())
	}
	from := base.GetBackendSet().GetBackends()
	n := 0
	for _, r := range d.GetBackends() {
		n += len(r.GetBackends()) + int(r.GetBaseCount())
	}
	backends := make([]*discoveryv1.Backend, 0, n)
	for i, r := range d.GetBackends() {
		start, count := uint64(r.GetBaseStart()), uint64(r.GetBaseCount())
		switch {
		case len(r.GetBackends()) > 0 && count > 0:
			return nil, fmt.Errorf("xds: delta of set %q: backends[%d] has both backends and base_count", name, i)
		case start+count > uint64(len(from)):
			return nil, fmt.Errorf("xds: delta of set %q: backends[%d] takes base backends %d to %d of %d", name, i, start, start+count, len(from))
		}
		backends = append(backends, r.GetBackends()...)
		backends = append(backends, from[start:start+count]...)
	}
	set := d.GetBackendSet()
	if set == nil {
		set = &discoveryv1.BackendSet{}
	}
	set.Backends = backends
	return &discoveryv1.VersionedBackendSet{BackendSet: set, Version: d.GetVersion()}, nil
}

// keep records in bases the sets of resp that the data plane now serves at their version (Apply
// returned applied), and forgets every set it does not serve.
func keep(bases map[string]*discoveryv1.VersionedBackendSet, resp *discoveryv1.StreamBackendSetsResponse, applied map[string]string) {
	for _, vs := range resp.GetSets() {
		if name := vs.GetBackendSet().GetName(); applied[name] == vs.GetVersion() {
			bases[name] = vs
		}
	}
	for name, vs := range bases {
		if applied[name] != vs.GetVersion() {
			delete(bases, name)
		}
	}
}
