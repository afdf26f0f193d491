package discovery

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// The field numbers of StreamBackendSetsResponse.sets and .deltas, and of BackendSet.backends.
const (
	setsField     protowire.Number = 2
	deltasField   protowire.Number = 4
	backendsField protowire.Number = 2
)

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
	// delta is the set as a change to the version of the snapshot before; nil when that had none
	// of it, the same version, or a change that is not worth it (see newDelta).
	delta *wireDelta
}

// wireDelta is a set as a change to a version of it, encoded once for every response of every
// stream that carries it.
type wireDelta struct {
	// base is the version it changes.
	base string
	// record is the delta as one element of StreamBackendSetsResponse.deltas on the wire: its tag,
	// its length and its BackendSetDelta.
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
			if prev != nil {
				if p, ok := prev.sets[name]; ok && p.record != nil && p.version != w.version {
					w.delta = newDelta(p, w)
				}
			}
		}
		next.sets[name] = w
	}
	return next
}

// newDelta returns next as a change to base, or nil when its encoding would not be below half
// the set's whole: a delta then saves too little for a data plane to keep track of it.
func newDelta(base, next *wireSet) *wireDelta {
	hdr := &discoveryv1.BackendSet{} // next without its backends; its fields are next's, shared
	hdrm := hdr.ProtoReflect()
	next.set.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != backendsField {
			hdrm.Set(fd, v)
		}
		return true
	})
	d := &discoveryv1.BackendSetDelta{
		BaseVersion: base.version,
		Version:     next.version,
		BackendSet:  hdr,
		Backends:    backendRuns(base.set.GetBackends(), next.set.GetBackends()),
	}
	b, err := proto.Marshal(d)
	if err != nil || 2*(len(b)+8) >= len(next.record) {
		return nil // err: next's fields encoded whole a moment ago, so never
	}
	rec := protowire.AppendTag(nil, deltasField, protowire.BytesType)
	return &wireDelta{base: base.version, record: protowire.AppendBytes(rec, b)}
}

// backendRuns returns next as runs of base's backends (found by id, equal in every field) and of
// new ones, in next's order: a changed backend is a run of one between two runs of base, an
// added one likewise, a removed one a gap between runs.
func backendRuns(base, next []*discoveryv1.Backend) []*discoveryv1.BackendRun {
	at := make(map[string]int, len(base))
	for i, b := range base {
		at[b.GetId()] = i
	}
	var runs []*discoveryv1.BackendRun
	var cur *discoveryv1.BackendRun // the last of runs
	for _, b := range next {
		if cur != nil && cur.BaseCount > 0 {
			if i := int(cur.BaseStart + cur.BaseCount); i < len(base) && proto.Equal(base[i], b) {
				cur.BaseCount++
				continue
			}
		}
		if i, ok := at[b.GetId()]; ok && proto.Equal(base[i], b) {
			cur = &discoveryv1.BackendRun{BaseStart: uint32(i), BaseCount: 1}
			runs = append(runs, cur)
			continue
		}
		if cur == nil || cur.BaseCount > 0 {
			cur = &discoveryv1.BackendRun{}
			runs = append(runs, cur)
		}
		cur.Backends = append(cur.Backends, b)
	}
	return runs
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

// response returns the response of nonce that carries records (each a set's or a delta's) and
// removed. The records go in as the bytes encoded once per snapshot (unknown fields, to this
// side's message): marshalling the response copies them, and the receiver decodes them as its sets
// and deltas. One record alone is not even copied to make the response: every stream's shares it.
func response(nonce string, records [][]byte, removed []string) *discoveryv1.StreamBackendSetsResponse {
	resp := &discoveryv1.StreamBackendSetsResponse{Nonce: nonce, Removed: removed}
	if len(records) == 1 {
		resp.ProtoReflect().SetUnknown(records[0][:len(records[0]):len(records[0])])
		return resp
	}
	size := 0
	for _, r := range records {
		size += len(r)
	}
	raw := make([]byte, 0, size)
	for _, r := range records {
		raw = append(raw, r...)
	}
	resp.ProtoReflect().SetUnknown(raw)
	return resp
}
