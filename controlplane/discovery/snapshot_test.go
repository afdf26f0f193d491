package discovery

import (
	"maps"
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
	wire, err := proto.Marshal(response("7", sets, []string{"gone"}))
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
