package integration

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// TestDataPlaneFailover: `xlb dataplane --control-plane A --control-plane B` (the lists add up: A,
// then B) with two control planes that serve the same set, each from its own data directory. The
// data plane streams from A; A is killed with SIGKILL; the data plane moves to B, reports the
// version it serves, and is sent nothing it has (no ACK since the kill carried a set); a put on B
// reaches it, and its traffic goes to the new backend. The load reports move to B too: B's
// GetLoad counts that traffic.
func TestDataPlaneFailover(t *testing.T) {
	t.Parallel()
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	cpA := startControlPlane(t, t.TempDir(), nil, "--load-interval", "100ms")
	cpB := startControlPlane(t, t.TempDir(), nil, "--load-interval", "100ms")
	web := setJSON{Name: "web", Backends: []backendJSON{backendAt(t, a.name, a.addr, 1)}}
	v1 := cpA.put(t, web)
	if v := cpB.put(t, web); v != v1 {
		t.Fatalf("the same set put on both control planes: versions %s and %s, want one", v1, v)
	}
	// At debug, the data plane logs "ACK" with the number of sets of each response it applied.
	dp := startDataPlane(t, cpA, "n1", "web", "--control-plane", cpB.addr, "--log-level", "debug", "--metrics-interval", "100ms")
	cpA.awaitApplied(t, "n1", map[string]string{"web": v1})
	if got := traffic(t, dp.addr, "/before", 5); !maps.Equal(got, map[string]int{"a": 5}) {
		t.Errorf("before the failover: traffic %v, want all 5 to a", got)
	}

	killFrom := logEnd(dp.log)
	cpA.signal(syscall.SIGKILL)
	if cpA.wait(stopTimeout) == nil {
		t.Fatalf("%v did not exit within %v of SIGKILL", cpA, stopTimeout)
	}
	cpB.awaitDataPlane(t, "n1", reconnectTimeout, fmt.Sprintf("connected, serving web@%s", v1),
		func(d dataPlaneJSON) bool { return d.applies(map[string]string{"web": v1}) })

	v2 := cpB.put(t, setJSON{Name: "web", Backends: []backendJSON{backendAt(t, b.name, b.addr, 1)}})
	cpB.awaitApplied(t, "n1", map[string]string{"web": v2})
	// Only the response of the put on B carried a set: B sent nothing on connect.
	sentSets := says("ACK", func(l logLine) bool { return l.int("sets") != 0 })
	if acks := linesMatching(dp.log, killFrom, sentSets); len(acks) != 1 || acks[0].int("sets") != 1 {
		t.Errorf("since the kill, the data plane acknowledged these responses that carried sets: %v; want one, of web@%s alone", acks, v2)
	}
	if got := traffic(t, dp.addr, "/after", 5); !maps.Equal(got, map[string]int{"b": 5}) {
		t.Errorf("after the failover and the put on the second control plane: traffic %v, want all 5 to b", got)
	}
	var l struct {
		Backends []struct {
			BackendID string `json:"backendId"`
			Requests  string `json:"requests"`
		} `json:"backends"`
	}
	testutil.WaitFor(t, logWaitTimeout, "the second control plane's GetLoad to count the 5 requests to b", func() bool {
		cpB.mustCall(t, "GetLoad", "", &l)
		for _, be := range l.Backends {
			if be.BackendID == "b" {
				return be.Requests == "5"
			}
		}
		return false
	})
}

// TestDataPlaneDeltas: a change of a few backends of a set of 30 (one weight, one removed, one
// added) reaches the real data plane as a delta ("ACK" at debug counts it), and it serves exactly
// the new set: its Status lists the new backends, at their addresses.
func TestDataPlaneDeltas(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, t.TempDir(), nil)
	dp := startDataPlane(t, cp, "n1", "web", "--log-level", "debug")
	web := setJSON{Name: "web"}
	for i := range 30 {
		web.Backends = append(web.Backends, backendJSON{ID: fmt.Sprintf("b%d", i), Address: "127.0.0.1", Port: 20000 + i, Weight: 1})
	}
	cp.awaitApplied(t, "n1", map[string]string{"web": cp.put(t, web)})

	from := logEnd(dp.log)
	web.Backends[5].Weight = 3
	web.Backends = append(web.Backends[:10:10], web.Backends[11:]...)
	web.Backends = append(web.Backends, backendJSON{ID: "extra", Address: "127.0.0.1", Port: 29999, Weight: 1})
	cp.awaitApplied(t, "n1", map[string]string{"web": cp.put(t, web)})
	delta := says("ACK", func(l logLine) bool { return l.int("deltas") == 1 && l.int("sets") == 1 })
	if acks := linesMatching(dp.log, from, delta); len(acks) != 1 {
		t.Errorf("the data plane's ACKs of one set made of one delta since the put: %v, want one", linesMatching(dp.log, from, says("ACK", nil)))
	}

	r := adminCall(filepath.Join(dp.stateDir, "admin.sock"), "Status")
	if r.err != nil {
		t.Fatalf("Status: %v", r)
	}
	var st struct {
		BackendStates []struct {
			BackendSet string `json:"backendSet"`
			BackendID  string `json:"backendId"`
			Address    string `json:"address"`
		} `json:"backendStates"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("Status: %v\n%s", err, r.stdout)
	}
	got, want := map[string]string{}, map[string]string{}
	for _, b := range st.BackendStates {
		if b.BackendSet == "web" {
			got[b.BackendID] = b.Address
		}
	}
	for _, b := range web.Backends {
		want[b.ID] = fmt.Sprintf("%s:%d", b.Address, b.Port)
	}
	if !maps.Equal(got, want) {
		t.Errorf("the data plane serves backends %v, want %v", got, want)
	}
}
