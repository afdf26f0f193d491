package supervisor

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"

	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/internal/testutil"
	"github.com/xlbproxy/xlb/server/config"
)

// vset is set name of n backends at version v.
func vset(name, v string, n int) *discoveryv1.VersionedBackendSet {
	set := &discoveryv1.BackendSet{Name: name, Policy: discoveryv1.Policy_POLICY_ROUND_ROBIN}
	for i := range n {
		set.Backends = append(set.Backends, &discoveryv1.Backend{Id: fmt.Sprint("b", i), Address: "127.0.0.1", Port: uint32(9000 + i), Weight: 1})
	}
	return &discoveryv1.VersionedBackendSet{BackendSet: set, Version: v}
}

// inForce is the sets as "name@version", sorted.
func inForce(m map[string]*discoveryv1.VersionedBackendSet) string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(m)) {
		out = append(out, name+"@"+m[name].GetVersion())
	}
	return strings.Join(out, " ")
}

// TestPlanApply: scenarios of the supervisor's decision on a response, with a region that holds
// at most 8 backends: what serves next and what is rejected, and why.
func TestPlanApply(t *testing.T) {
	fits := func(sets map[string]*discoveryv1.VersionedBackendSet) error {
		n := 0
		for _, vs := range sets {
			n += len(vs.GetBackendSet().GetBackends())
		}
		if n > 8 {
			return fmt.Errorf("shm: %d backends: more than the region's capacity of 8 (Capacities.Backends)", n)
		}
		return nil
	}
	bad := vset("bad", "1", 1)
	bad.BackendSet.Backends[0].Id = "" // every backend needs an id
	for _, tc := range []struct {
		name     string
		current  map[string]*discoveryv1.VersionedBackendSet
		sets     []*discoveryv1.VersionedBackendSet
		removed  []string
		want     string   // the sets in force next
		rejected []string // "name unfit" or "name invalid", in order
	}{
		{"everything fits", nil, []*discoveryv1.VersionedBackendSet{vset("web", "1", 3), vset("api", "1", 2)}, nil,
			"api@1 web@1", nil},
		{"an invalid set alone", map[string]*discoveryv1.VersionedBackendSet{"web": vset("web", "0", 1)},
			[]*discoveryv1.VersionedBackendSet{vset("web", "1", 3), bad}, nil, "web@1", []string{"bad invalid"}},
		{"one set over capacity keeps its old version; the others apply", map[string]*discoveryv1.VersionedBackendSet{"api": vset("api", "0", 1)},
			[]*discoveryv1.VersionedBackendSet{vset("web", "1", 3), vset("api", "1", 12), vset("static", "1", 2)}, nil,
			"api@0 static@1 web@1", []string{"api unfit"}},
		{"a new set over capacity is left out", nil,
			[]*discoveryv1.VersionedBackendSet{vset("web", "1", 4), vset("api", "1", 5)}, nil,
			"api@1", []string{"web unfit"}},
		{"a removal makes room", map[string]*discoveryv1.VersionedBackendSet{"old": vset("old", "1", 6)},
			[]*discoveryv1.VersionedBackendSet{vset("web", "1", 7)}, []string{"old"}, "web@1", nil},
		{"a removed set is not kept for a set that does not fit", map[string]*discoveryv1.VersionedBackendSet{"web": vset("web", "1", 2)},
			[]*discoveryv1.VersionedBackendSet{vset("web", "2", 9)}, []string{"web"}, "", []string{"web unfit"}},
		{"nothing new", map[string]*discoveryv1.VersionedBackendSet{"web": vset("web", "1", 2)}, nil, nil, "web@1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := inForce(tc.current)
			next, rejected := planApply(tc.current, &discoveryv1.StreamBackendSetsResponse{Sets: tc.sets, Removed: tc.removed}, fits)
			if got := inForce(next); got != tc.want {
				t.Errorf("in force next: %q, want %q", got, tc.want)
			}
			var got []string
			for _, r := range rejected {
				why := "invalid"
				if r.unfit {
					why = "unfit"
					if !strings.Contains(r.err.Error(), "Capacities.Backends") {
						t.Errorf("%s: unfit with %v", r.set.GetBackendSet().GetName(), r.err)
					}
				}
				got = append(got, r.set.GetBackendSet().GetName()+" "+why)
			}
			if !slices.Equal(got, tc.rejected) {
				t.Errorf("rejected %q, want %q", got, tc.rejected)
			}
			if after := inForce(tc.current); after != before {
				t.Errorf("the sets in force were changed in place: %q, then %q", before, after)
			}
		})
	}
}

// TestPlanApplyTLSFiles: a set whose TLS names a file this data plane cannot read is rejected
// alone, naming the field and the file, and its previous version stays in force; one whose files
// are there applies.
func TestPlanApplyTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	withCA := func(name, v, file string) *discoveryv1.VersionedBackendSet {
		vs := vset(name, v, 2)
		vs.BackendSet.Backends[1].Tls = &discoveryv1.BackendTls{CaFile: file}
		return vs
	}
	current := map[string]*discoveryv1.VersionedBackendSet{"web": vset("web", "1", 2)}
	next, rejected := planApply(current, &discoveryv1.StreamBackendSetsResponse{Sets: []*discoveryv1.VersionedBackendSet{
		withCA("web", "2", "/x"), withCA("api", "1", ca.File)}}, func(map[string]*discoveryv1.VersionedBackendSet) error { return nil })
	if got := inForce(next); got != "api@1 web@1" {
		t.Errorf("in force next: %q, want api@1 web@1", got)
	}
	const want = "backend_set.backends[1].tls.ca_file: open /x: no such file or directory"
	if len(rejected) != 1 || rejected[0].set.GetBackendSet().GetName() != "web" || rejected[0].err.Error() != want {
		t.Fatalf("rejected %+v, want web with %q", rejected, want)
	}
}

// TestRegionSetsOf: the region's records are the sets by name, each as backendset.FromProto
// makes it (the address joined, a zero weight 1); a set that FromProto refuses (an applied file
// written under other rules) is left out rather than written as it is.
func TestRegionSetsOf(t *testing.T) {
	bad := vset("bad", "1", 1)
	bad.BackendSet.Backends[0].Port = 0
	web := vset("web", "1", 1)
	web.BackendSet.Backends[0].Weight = 0
	got := regionSetsOf(map[string]*discoveryv1.VersionedBackendSet{"web": web, "bad": bad, "api": vset("api", "1", 0)})
	want := []shm.Set{{Name: "api", Backends: []shm.Backend{}}, {Name: "web", Backends: []shm.Backend{{ID: "b0", Address: "127.0.0.1:9000", Weight: 1}}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("regionSetsOf:\n got %+v\nwant %+v", got, want)
	}
}

// TestSameSets: two generations of sets are the same only when every field the workers read is:
// a change of nothing but a set's hash key, its sticky cookie, its policy, a backend's TLS or its
// state must be published. The health slots, which Publish gives, do not count.
func TestSameSets(t *testing.T) {
	base := func() []shm.Set {
		return []shm.Set{{Name: "web", Policy: balance.MaglevHash, Hash: shm.HashOn{Kind: shm.HashHeader, Name: "X-User"},
			Sticky:   &shm.Sticky{CookieName: "xlb_backend", Path: "/", MaxAgeSeconds: 60},
			Backends: []shm.Backend{{ID: "a", Address: "127.0.0.1:1", Weight: 1, HealthSlot: 3}}}}
	}
	if !sameSets(base(), base()) {
		t.Fatal("a generation is not the same as itself")
	}
	other := base()
	other[0].Backends[0].HealthSlot = 9
	if !sameSets(base(), other) {
		t.Fatal("the health slots made two generations differ")
	}
	for name, change := range map[string]func(s *shm.Set){
		"hash header":   func(s *shm.Set) { s.Hash.Name = "X-Tenant" },
		"hash kind":     func(s *shm.Set) { s.Hash = shm.HashOn{Kind: shm.HashClientAddress} },
		"sticky off":    func(s *shm.Set) { s.Sticky = nil },
		"sticky max":    func(s *shm.Set) { s.Sticky.MaxAgeSeconds = 120 },
		"sticky name":   func(s *shm.Set) { s.Sticky.CookieName = "other" },
		"policy":        func(s *shm.Set) { s.Policy = balance.RoundRobin },
		"backend state": func(s *shm.Set) { s.Backends[0].State = shm.StateDraining },
		"backend tls":   func(s *shm.Set) { s.Backends[0].TLS = &shm.TLS{ServerName: "x"} },
	} {
		changed := base()
		change(&changed[0])
		if sameSets(base(), changed) {
			t.Errorf("%s: taken for the same generation; it would not be published", name)
		}
	}
}

// TestRestartKeys: a setting that only a restart applies is named when a reload changes it (the
// workers read it when they start), and nothing is named when only backend sets change.
func TestRestartKeys(t *testing.T) {
	base := config.Config{Listeners: []config.Listener{{Address: "127.0.0.1:0", BackendSet: "web"}}, StickyKeyFile: "/etc/xlb/sticky"}
	sets := base
	sets.BackendSets = []table.Set{{Name: "web"}}
	if keys := restartKeys(base, sets); len(keys) != 0 {
		t.Fatalf("a change of backend sets alone: %v, want nothing", keys)
	}
	for want, change := range map[string]func(c *config.Config){
		"sticky_key_file":  func(c *config.Config) { c.StickyKeyFile = "/etc/xlb/other" },
		"workers":          func(c *config.Config) { c.Workers = 3 },
		"metrics_interval": func(c *config.Config) { c.MetricsInterval = time.Second },
	} {
		changed := base
		change(&changed)
		if keys := restartKeys(base, changed); !slices.Equal(keys, []string{want}) {
			t.Errorf("a change of %s: %v, want [%s]", want, keys, want)
		}
	}
}
