package integration

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// statusJSON is the part of the data plane's Status that these tests read.
type statusJSON struct {
	Workers  []workerJSON `json:"workers"`
	Backends []struct {
		BackendID string   `json:"backendId"`
		Requests  string   `json:"requests"`
		Responses []string `json:"responses"`
		InFlight  string   `json:"inFlight"`
		// TLSFull and TLSResumed are its TLS handshakes; "" for none.
		TLSFull    string `json:"tlsHandshakesFull"`
		TLSResumed string `json:"tlsHandshakesResumed"`
	} `json:"backends"`
	BackendStates []struct {
		BackendID string `json:"backendId"`
		State     string `json:"state"`
		Reason    string `json:"reason"`
	} `json:"backendStates"`
}

// status asks the supervisor of stateDir for its Status.
func status(tb testing.TB, stateDir string) statusJSON {
	tb.Helper()
	res := runGrpcurl(tb, "-plaintext", "-unix", filepath.Join(stateDir, "admin.sock"), "xlb.dataplane.v1.DataPlaneAdminService/Status")
	if res.err != nil {
		tb.Fatalf("Status: %v\n%s", res.err, res.stderr)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		tb.Fatalf("Status: %v\n%s", err, res.stdout)
	}
	return st
}

// counted is the requests the supervisor counted over all backends, and its in-flight gauge.
func (st statusJSON) counted() (requests, ok2xx, inFlight int) {
	for _, b := range st.Backends {
		n, _ := strconv.Atoi(b.Requests)
		requests += n
		if len(b.Responses) > 1 {
			m, _ := strconv.Atoi(b.Responses[1])
			ok2xx += m
		}
		f, _ := strconv.Atoi(b.InFlight)
		inFlight += f
	}
	return
}

// TestMetricsWorkerKilled: the supervisor's per-backend totals, reported by the workers every
// interval, match what the backends saw; a worker killed mid-interval loses at most what it
// counted since its last report, and its replacement counts nothing twice.
func TestMetricsWorkerKilled(t *testing.T) {
	t.Parallel()
	const interval = 200 * time.Millisecond
	a, b := newCountingBackend(t, "a"), newCountingBackend(t, "b")
	state := t.TempDir()
	s := startSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), state, func(addr string) string {
		return configYAML(addr, []backendConf{{id: "a", addr: a.addr, weight: 1}, {id: "b", addr: b.addr, weight: 1}}) +
			fmt.Sprintf("metrics_interval: %v\n", interval)
	})
	s.awaitReady(t)
	seen := func() int { return int(a.n.Load() + b.n.Load()) }
	send := func(n int) {
		// A new connection per request, so that both workers serve some.
		if by := getAll(t, []*client{newClient(t, s.addr, false)}, "/m", n); len(by) == 0 {
			t.Fatal("no response")
		}
	}
	// settled waits until the totals have not moved for three intervals and returns them.
	settled := func() statusJSON {
		t.Helper()
		deadline := time.Now().Add(logWaitTimeout)
		prev, still := -1, 0
		for {
			st := status(t, state)
			n, _, _ := st.counted()
			if n == prev {
				still++
			} else {
				prev, still = n, 0
			}
			if still >= 3 {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("the totals did not settle within %v", logWaitTimeout)
			}
			time.Sleep(interval)
		}
	}

	send(100)
	st := settled()
	if n, ok, inFlight := st.counted(); n != seen() || ok != seen() || inFlight != 0 {
		t.Fatalf("after 100 requests: counted %d (2xx %d, in flight %d), the backends saw %d", n, ok, inFlight, seen())
	}
	if len(st.BackendStates) != 2 || st.BackendStates[0].State != "active" || st.BackendStates[1].State != "active" || st.BackendStates[0].Reason == "" {
		t.Errorf("backend states %+v, want a and b active, with a reason", st.BackendStates)
	}

	// Kill a worker right after a batch: what it served since its last report may be lost.
	const batch = 40
	send(batch)
	victim := st.Workers[0].Pid
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.await(t, 0, fmt.Sprintf("the replacement of worker %d", victim), says("worker exited", func(l logLine) bool { return l.int("pid") == victim }))
	s.await(t, 0, "a replacement", says("worker started", func(l logLine) bool { return l.int("pid") != victim && l.int("slot") == 0 }))
	send(60)
	st = settled()
	n, ok, inFlight := st.counted()
	t.Logf("the backends saw %d requests; the supervisor counted %d (2xx %d)", seen(), n, ok)
	switch {
	case n > seen():
		t.Errorf("counted %d requests, more than the %d the backends saw: counted twice", n, seen())
	case n < seen()-batch:
		t.Errorf("counted %d requests of %d: lost more than the killed worker's last interval (at most %d)", n, seen(), batch)
	case ok > n || ok < n-batch || inFlight != 0:
		// An attempt is counted when it starts and its response when it ends: the kill may fall
		// between the two reports.
		t.Errorf("2xx %d of %d, in flight %d", ok, n, inFlight)
	}
}

// TestLoadAcrossDataPlanes: two data planes report their load to the control plane, and its
// GetLoad gives, per backend, the sum of the traffic sent through both, and each one's share.
func TestLoadAcrossDataPlanes(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, t.TempDir(), nil, "--load-interval", "100ms")
	a, b := newCountingBackend(t, "A"), newCountingBackend(t, "B")
	dp1 := startDataPlane(t, cp, "n1", "web", "--metrics-interval", "100ms")
	dp2 := startDataPlane(t, cp, "n2", "web", "--metrics-interval", "100ms")
	v := cp.put(t, setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "a", a.addr, 1), backendAt(t, "b", b.addr, 3)}})
	cp.awaitApplied(t, "n1", map[string]string{"web": v})
	cp.awaitApplied(t, "n2", map[string]string{"web": v})
	traffic(t, dp1.addr, "/one", 40)
	traffic(t, dp2.addr, "/two", 60)

	type loadJSON struct {
		Backends []struct {
			BackendID string   `json:"backendId"`
			Requests  string   `json:"requests"`
			Responses []string `json:"responses"`
		} `json:"backends"`
		DataPlanes []struct {
			NodeID   string `json:"nodeId"`
			Backends []struct {
				Requests string `json:"requests"`
			} `json:"backends"`
		} `json:"dataPlanes"`
	}
	want := map[string]int{"a": int(a.n.Load()), "b": int(b.n.Load())}
	deadline := time.Now().Add(logWaitTimeout)
	for {
		var l loadJSON
		cp.mustCall(t, "GetLoad", "", &l)
		got := map[string]int{}
		for _, be := range l.Backends {
			got[be.BackendID], _ = strconv.Atoi(be.Requests)
		}
		perNode := map[string]int{}
		for _, dp := range l.DataPlanes {
			for _, be := range dp.Backends {
				n, _ := strconv.Atoi(be.Requests)
				perNode[dp.NodeID] += n
			}
		}
		if got["a"] == want["a"] && got["b"] == want["b"] && perNode["n1"] == 40 && perNode["n2"] == 60 {
			t.Logf("GetLoad: %v, per data plane %v; the backends saw %v", got, perNode, want)
			return
		}
		if got["a"] > want["a"] || got["b"] > want["b"] || perNode["n1"] > 40 || perNode["n2"] > 60 {
			t.Fatalf("GetLoad counts more than was sent: %v per backend (the backends saw %v), %v per data plane (sent 40 and 60)", got, want, perNode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetLoad: %v per backend (the backends saw %v), %v per data plane (sent 40 and 60) after %v", got, want, perNode, logWaitTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
