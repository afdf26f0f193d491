package discovery

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// TestDiff: what a node is sent, by its applied and rejected versions and its subscription.
func TestDiff(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	entries := map[string]resource.Versioned{}
	for _, nv := range [][2]string{{"a", "1"}, {"b", "1"}, {"c", "1"}} {
		entries[nv[0]] = resource.Versioned{Set: backendSet(nv[0], 1), Version: nv[1]}
	}
	snap := newSnapshot(nil, entries, func(name string, err error) { t.Fatalf("set %s: %v", name, err) })
	for _, tc := range []struct {
		name        string
		applied     map[string]string
		rejected    map[string]nack
		subscribed  map[string]bool
		sets        string
		removed     string
		description string
	}{
		{"cold", nil, nil, nil, "a b c", "", "everything"},
		{"synced", map[string]string{"a": "1", "b": "1", "c": "1"}, nil, nil, "", "", "nothing"},
		{"stale", map[string]string{"a": "0", "b": "1"}, nil, nil, "a c", "", "what differs or lacks"},
		{"extra", map[string]string{"a": "1", "b": "1", "c": "1", "x": "9", "d": "1"}, nil, nil, "", "d x", "removed, by name"},
		{"rejected", map[string]string{"a": "0"}, map[string]nack{"a": {version: "1", retryAt: t0.Add(time.Second)}, "b": {version: "0", retryAt: t0.Add(time.Second)}}, nil,
			"b c", "", "not what it rejected, only that version"},
		{"retry", map[string]string{"a": "0"}, map[string]nack{"a": {version: "1", retryAt: t0}, "b": {version: "1", retryAt: t0.Add(time.Nanosecond)}}, nil,
			"a c", "", "what it rejected, once its retry time came"},
		{"subscribed", nil, nil, map[string]bool{"a": true, "c": true, "x": true}, "a c", "", "what it wants only, of what exists"},
		{"unsubscribed", map[string]string{"a": "0", "b": "1", "x": "1"}, nil, map[string]bool{"a": true}, "a", "b x", "what it no longer wants removed, as what is gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sets, removed := diff(snap, tc.applied, tc.rejected, tc.subscribed, t0)
			var names []string
			for _, w := range sets {
				names = append(names, w.name)
			}
			if got := strings.Join(names, " "); got != tc.sets {
				t.Errorf("sets %q, want %q (%s)", got, tc.sets, tc.description)
			}
			if got := strings.Join(removed, " "); got != tc.removed {
				t.Errorf("removed %q, want %q (%s)", got, tc.removed, tc.description)
			}
		})
	}
}

// TestSnapshotEncoding: a response built from encoded sets decodes as the sets; a set that did
// not change keeps its encoding; a set that cannot be encoded is neither sent nor removed.
func TestSnapshotEncoding(t *testing.T) {
	a, b := backendSet("a", 3), backendSet("b", 2)
	first := newSnapshot(nil, map[string]resource.Versioned{"a": {Set: a, Version: "a1"}, "b": {Set: b, Version: "b1"}}, func(string, error) {})
	sets, _ := diff(first, nil, nil, nil, time.Time{})
	wire, err := proto.Marshal(response("7", records(sets), []string{"gone"}))
	if err != nil {
		t.Fatal(err)
	}
	var got discoveryv1.StreamBackendSetsResponse
	if err := proto.Unmarshal(wire, &got); err != nil {
		t.Fatal(err)
	}
	want := &discoveryv1.StreamBackendSetsResponse{Nonce: "7", Removed: []string{"gone"}, Sets: []*discoveryv1.VersionedBackendSet{
		{BackendSet: a, Version: "a1"}, {BackendSet: b, Version: "b1"},
	}}
	if !proto.Equal(&got, want) {
		t.Fatalf("decoded %v, want %v", &got, want)
	}

	bad := backendSet("bad", 1)
	bad.Backends[0].Zone = "\xff" // not UTF-8: proto refuses to encode it
	var failed []string
	second := newSnapshot(first, map[string]resource.Versioned{"a": {Set: a, Version: "a1"}, "b": {Set: backendSet("b", 2), Version: "b2"}, "bad": {Set: bad, Version: "x1"}},
		func(name string, err error) { failed = append(failed, name) })
	if second.seq != 2 || second.sets["a"] != first.sets["a"] || second.sets["b"] == first.sets["b"] {
		t.Errorf("seq %d; a kept its encoding %v; b kept its encoding %v: want 2, true, false",
			second.seq, second.sets["a"] == first.sets["a"], second.sets["b"] == first.sets["b"])
	}
	if !slices.Equal(failed, []string{"bad"}) {
		t.Errorf("failed %v, want [bad]", failed)
	}
	sets, removed := diff(second, map[string]string{"a": "a1", "b": "b2", "bad": "x0"}, nil, nil, time.Time{})
	if len(sets) != 0 || len(removed) != 0 {
		t.Errorf("with a set that cannot be encoded, %d sets and removed %v, want none", len(sets), removed)
	}
}

// records are the whole records of sets.
func records(sets []*wireSet) [][]byte {
	out := make([][]byte, len(sets))
	for i, w := range sets {
		out[i] = w.record
	}
	return out
}

// applyRuns is the naive reading of runs over base: each run's backends, or base's from
// base_start on, in turn.
func applyRuns(base []*discoveryv1.Backend, runs []*discoveryv1.BackendRun) []*discoveryv1.Backend {
	var out []*discoveryv1.Backend
	for _, r := range runs {
		out = append(out, r.GetBackends()...)
		for i := range int(r.GetBaseCount()) {
			out = append(out, base[int(r.GetBaseStart())+i])
		}
	}
	return out
}

// TestBackendRuns: runs of random changes to a set (backends changed, added, removed, moved)
// make exactly the new backends, in order, over the old ones; what did not change goes as runs
// of the base, never as backends.
func TestBackendRuns(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 500 {
		base := backendSet("s", rnd.IntN(40)).GetBackends()
		next := slices.Clone(base)
		changed := 0
		for range rnd.IntN(6) {
			switch op := rnd.IntN(4); {
			case op == 0 && len(next) > 0: // change one
				i := rnd.IntN(len(next))
				b := proto.Clone(next[i]).(*discoveryv1.Backend)
				b.Weight += 100
				next[i] = b
				changed++
			case op == 1: // add one
				i := rnd.IntN(len(next) + 1)
				next = slices.Insert(next, i, &discoveryv1.Backend{Id: fmt.Sprintf("new-%d-%d", round, i), Address: "10.9.9.9", Port: 1})
				changed++
			case op == 2 && len(next) > 0: // remove one
				i := rnd.IntN(len(next))
				next = slices.Delete(next, i, i+1)
			case op == 3 && len(next) > 1: // move one
				i, j := rnd.IntN(len(next)), rnd.IntN(len(next)-1)
				b := next[i]
				next = slices.Insert(slices.Delete(next, i, i+1), j, b)
			}
		}
		runs := backendRuns(base, next)
		if got := applyRuns(base, runs); !slices.EqualFunc(got, next, func(a, b *discoveryv1.Backend) bool { return proto.Equal(a, b) }) {
			t.Fatalf("round %d: runs %v over %v make %v, want %v", round, runs, base, got, next)
		}
		literal := 0
		for _, r := range runs {
			literal += len(r.GetBackends())
		}
		if literal > changed {
			t.Fatalf("round %d: %d backends sent in runs, want at most the %d changed or added: %v", round, literal, changed, runs)
		}
	}
}

// TestSnapshotDelta: a set whose new version changes one backend of many gets a delta on the
// snapshot's previous version, which decodes as that version's fields, without backends, and
// runs that make the new backends; a set whose change is most of it gets none, nor a set new to
// the snapshot.
func TestSnapshotDelta(t *testing.T) {
	big := backendSet("big", 100)
	small := backendSet("small", 2)
	first := newSnapshot(nil, map[string]resource.Versioned{"big": {Set: big, Version: "g1"}, "small": {Set: small, Version: "s1"}}, func(string, error) {})
	big2 := proto.Clone(big).(*discoveryv1.BackendSet)
	big2.Backends[50].Weight = 99
	big2.PanicThreshold = 10
	small2 := backendSet("small", 2)
	small2.Backends[0].Port, small2.Backends[1].Port = 1, 2
	second := newSnapshot(first, map[string]resource.Versioned{
		"big": {Set: big2, Version: "g2"}, "small": {Set: small2, Version: "s2"}, "new": {Set: backendSet("new", 50), Version: "n1"},
	}, func(string, error) {})
	if first.sets["big"].delta != nil {
		t.Errorf("a first snapshot has a delta")
	}
	if d := second.sets["small"].delta; d != nil {
		t.Errorf("small, both backends changed: a delta of %d bytes for a set of %d", len(d.record), len(second.sets["small"].record))
	}
	if second.sets["new"].delta != nil {
		t.Errorf("a set new to the snapshot has a delta")
	}
	d := second.sets["big"].delta
	if d == nil || d.base != "g1" || 4*len(d.record) > len(second.sets["big"].record) {
		t.Fatalf("big, one backend of 100 changed: delta %+v, want one on g1 under a quarter of %d bytes", d, len(second.sets["big"].record))
	}
	wire, err := proto.Marshal(response("1", [][]byte{d.record}, nil))
	if err != nil {
		t.Fatal(err)
	}
	var got discoveryv1.StreamBackendSetsResponse
	if err := proto.Unmarshal(wire, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.GetSets()) != 0 || len(got.GetDeltas()) != 1 {
		t.Fatalf("decoded %d sets and %d deltas, want the delta alone", len(got.GetSets()), len(got.GetDeltas()))
	}
	gd := got.GetDeltas()[0]
	wantHdr := proto.Clone(big2).(*discoveryv1.BackendSet)
	wantHdr.Backends = nil
	if gd.GetBaseVersion() != "g1" || gd.GetVersion() != "g2" || !proto.Equal(gd.GetBackendSet(), wantHdr) {
		t.Errorf("delta %s→%s of %v, want g1→g2 of %v", gd.GetBaseVersion(), gd.GetVersion(), gd.GetBackendSet(), wantHdr)
	}
	made := applyRuns(big.GetBackends(), gd.GetBackends())
	if !slices.EqualFunc(made, big2.GetBackends(), func(a, b *discoveryv1.Backend) bool { return proto.Equal(a, b) }) {
		t.Errorf("the delta's runs do not make big2's backends: %v", gd.GetBackends())
	}
}

// TestForget: at DataPlanesMax, the node that disconnected first is forgotten, never a connected
// one.
func TestForget(t *testing.T) {
	s := &Server{nodes: map[string]*dataPlane{}}
	now := time.Now()
	s.nodes["on"] = &dataPlane{id: "on", stream: &stream{}}
	s.nodes["early"] = &dataPlane{id: "early", until: now.Add(-time.Hour)}
	s.nodes["late"] = &dataPlane{id: "late", until: now}
	s.forgetLocked()
	s.forgetLocked()
	s.forgetLocked()
	if _, ok := s.nodes["on"]; !ok || len(s.nodes) != 1 {
		t.Fatalf("left %v, want the connected node alone", slices.Collect(maps.Keys(s.nodes)))
	}
}
