package discovery

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// setsField is the field number of StreamBackendSetsResponse.sets.
const setsField protowire.Number = 2

// snapshot is a Source snapshot as streams send it. It is never modified once published.
type snapshot struct {
	// seq numbers snapshots from 1.
	seq uint64
	// sets is every set by name.
	sets map[string]*wireSet
}

// wireSet is one set of a snapshot, encoded once for every response of every stream that carries
// it.
type wireSet struct {
	name    string
	version string
	set     *discoveryv1.BackendSet // the Source's, to tell whether the next snapshot has the same
	// record is the set as one element of StreamBackendSetsResponse.sets on the wire: its tag, its
	// length and its VersionedBackendSet. Nil when the set could not be encoded: it is never sent,
	// and nodes keep whatever version of it they have.
	record []byte
}

// newSnapshot returns the snapshot that follows prev (nil for the first) with entries. A set
// that prev has at the same version keeps its encoding; encode reports each set that cannot be
// encoded.
func newSnapshot(prev *snapshot, entries map[string]resource.Versioned, failed func(name string, err error)) *snapshot {
	next := &snapshot{seq: 1, sets: make(map[string]*wireSet, len(entries))}
	if prev != nil {
		next.seq = prev.seq + 1
	}
	for name, e := range entries {
		if prev != nil {
			if w, ok := prev.sets[name]; ok && w.version == e.Version && w.set == e.Set {
				next.sets[name] = w
				continue
			}
		}
		w := &wireSet{name: name, version: e.Version, set: e.Set}
		b, err := proto.Marshal(&discoveryv1.VersionedBackendSet{BackendSet: e.Set, Version: e.Version})
		if err != nil {
			failed(name, err)
		} else {
			w.record = protowire.AppendTag(nil, setsField, protowire.BytesType)
			w.record = protowire.AppendBytes(w.record, b)
		}
		next.sets[name] = w
	}
	return next
}

// diff returns, by name, the sets of snap that a node with applied, rejected and subscribed (nil
// for every set) wants and neither serves at their version nor rejected (before now, its retry
// time), and the names it serves that snap does not have or it does not want.
func diff(snap *snapshot, applied map[string]string, rejected map[string]nack, subscribed map[string]bool, now time.Time) (sets []*wireSet, removed []string) {
	for name, w := range snap.sets {
		if w.record == nil || subscribed != nil && !subscribed[name] {
			continue
		}
		if have, ok := applied[name]; ok && have == w.version {
			continue
		}
		if r, ok := rejected[name]; ok && r.version == w.version && now.Before(r.retryAt) {
			continue
		}
		sets = append(sets, w)
	}
	for name := range applied {
		if _, ok := snap.sets[name]; !ok || subscribed != nil && !subscribed[name] {
			removed = append(removed, name)
		}
	}
	slices.SortFunc(sets, func(a, b *wireSet) int { return cmp.Compare(a.name, b.name) })
	slices.Sort(removed)
	return sets, removed
}

// response returns the response of nonce that carries sets and removed. The sets go in as the
// bytes encoded once per snapshot (unknown fields, to this side's message): marshalling the
// response copies them, and the receiver decodes them as its sets.
func response(nonce string, sets []*wireSet, removed []string) *discoveryv1.StreamBackendSetsResponse {
	resp := &discoveryv1.StreamBackendSetsResponse{Nonce: nonce, Removed: removed}
	size := 0
	for _, w := range sets {
		size += len(w.record)
	}
	raw := make([]byte, 0, size)
	for _, w := range sets {
		raw = append(raw, w.record...)
	}
	resp.ProtoReflect().SetUnknown(raw)
	return resp
}
