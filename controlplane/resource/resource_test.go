package resource

import (
	"strings"
	"testing"

	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

func valid() *discoveryv1.BackendSet {
	return &discoveryv1.BackendSet{Name: "web", Backends: []*discoveryv1.Backend{
		{Id: "a", Address: "10.0.0.1", Port: 80, Weight: 2},
		{Id: "b:1", Address: "backend.example", Port: 8080, State: discoveryv1.BackendState_BACKEND_STATE_DRAINING},
		{Id: "c", Address: "::1", Port: 1},
	}}
}

func TestValidate(t *testing.T) {
	if err := Validate("backend_set", valid()); err != nil {
		t.Fatalf("a valid set: %v", err)
	}
	tests := []struct {
		name string
		edit func(*discoveryv1.BackendSet)
		want string
	}{
		{"no set", nil, "backend_set: required"},
		{"no name", func(s *discoveryv1.BackendSet) { s.Name = "" }, "backend_set.name: required"},
		{"name with a space", func(s *discoveryv1.BackendSet) { s.Name = "a b" }, `backend_set.name: "a b": want letters`},
		{"long name", func(s *discoveryv1.BackendSet) { s.Name = strings.Repeat("n", 129) }, "backend_set.name: 129 bytes, at most 128"},
		{"unknown policy", func(s *discoveryv1.BackendSet) { s.Policy = 9 }, "backend_set.policy: unknown policy 9"},
		{"no id", func(s *discoveryv1.BackendSet) { s.Backends[1].Id = "" }, "backend_set.backends[1].id: required"},
		{"id twice", func(s *discoveryv1.BackendSet) { s.Backends[2].Id = "a" }, `backend_set.backends[2].id: "a" is also the id of backends[0]`},
		{"address with a port", func(s *discoveryv1.BackendSet) { s.Backends[0].Address = "10.0.0.1:80" }, "backend_set.backends[0].address: \"10.0.0.1:80\": want an IP address or a host name"},
		{"no address", func(s *discoveryv1.BackendSet) { s.Backends[0].Address = "" }, "backend_set.backends[0].address: required"},
		{"port 0", func(s *discoveryv1.BackendSet) { s.Backends[0].Port = 0 }, "backend_set.backends[0].port: want 1 to 65535, got 0"},
		{"port too large", func(s *discoveryv1.BackendSet) { s.Backends[0].Port = 70000 }, "backend_set.backends[0].port: want 1 to 65535, got 70000"},
		{"weight too large", func(s *discoveryv1.BackendSet) { s.Backends[0].Weight = 2_000_000 }, "backend_set.backends[0].weight: want 0 (meaning 1) to 1000000"},
		{"unknown state", func(s *discoveryv1.BackendSet) { s.Backends[0].State = 7 }, "backend_set.backends[0].state: unknown state 7"},
		{"empty metadata key", func(s *discoveryv1.BackendSet) { s.Backends[0].Metadata = map[string]string{"": "x"} }, "backend_set.backends[0].metadata: key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s *discoveryv1.BackendSet
			if tt.edit != nil {
				s = valid()
				tt.edit(s)
			}
			err := Validate("backend_set", s)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error starting %q", err, tt.want)
			}
		})
	}
}

// TestVersion: equal sets have equal versions, any change makes another, and the version does not
// depend on the order a map was filled in.
func TestVersion(t *testing.T) {
	a, b := valid(), valid()
	if Version(a) != Version(b) || len(Version(a)) != 32 {
		t.Fatalf("versions %s and %s of equal sets", Version(a), Version(b))
	}
	b.Backends[0].Weight = 3
	if Version(a) == Version(b) {
		t.Fatal("a change of weight kept the version")
	}
	a.Backends[0].Metadata = map[string]string{"x": "1", "y": "2", "z": "3"}
	c := valid()
	c.Backends[0].Metadata = map[string]string{"z": "3", "y": "2", "x": "1"}
	if Version(a) != Version(c) {
		t.Fatal("the version depends on map order")
	}
}
