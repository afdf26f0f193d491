package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	adminclient "github.com/xlbproxy/xlb/clients/admin"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// startDataPlaneListening starts `xlb dataplane` of cp as node with a configuration file: one
// listener on a free loopback port for each of sets (in that order: the returned addresses), and
// the YAML of extra (such as a region:) after them, and the extra flags. It waits until the
// supervisor listens on the first.
func startDataPlaneListening(tb testing.TB, cp *controlPlane, node string, sets []string, extra string, flags ...string) (*dataPlane, []string) {
	tb.Helper()
	stateDir := tb.TempDir()
	for attempt := 1; ; attempt++ {
		var yaml strings.Builder
		yaml.WriteString("listeners:\n")
		addrs := make([]string, len(sets))
		for i, set := range sets {
			addrs[i] = freeAddr(tb)
			fmt.Fprintf(&yaml, "  - {address: %q, backend_set: %s}\n", addrs[i], set)
		}
		yaml.WriteString(extra)
		cfg := filepath.Join(tb.TempDir(), "xlb.yaml")
		if err := os.WriteFile(cfg, []byte(yaml.String()), 0o644); err != nil {
			tb.Fatal(err)
		}
		p, l := startLoggedProc(tb, append([]string{"dataplane", "--control-plane", cp.addr, "--node-id", node, "--config", cfg,
			"--workers", fmt.Sprint(dpWorkers), "--state-dir", stateDir, "--log-format", "json"}, flags...)...)
		err := waitListening(p, addrs[0])
		if err == nil {
			return &dataPlane{xlb: &xlb{proc: p, addr: addrs[0]}, log: l, node: node, stateDir: stateDir}, addrs
		}
		if attempt < startAttempts && errors.Is(err, errAddrInUse) {
			tb.Logf("attempt %d: %v: %v; trying another port", attempt, p, err)
			continue
		}
		tb.Fatalf("%v: %v\n--- stderr:\n%s", p, err, tail(p.stderr.String()))
	}
}

// TestDataPlaneSetsApartFromEachOther: a data plane is sent only the sets its listeners serve, and
// a set it cannot apply is refused alone. Its region holds 8 backends; api, with 12, is NACKed
// with the region's capacity in the message while web, in the same first response, applies and
// serves; other, which no listener serves, is never sent. A fixed api applies.
func TestDataPlaneSetsApartFromEachOther(t *testing.T) {
	t.Parallel()
	a, b, c := newCountingBackend(t, "A"), newCountingBackend(t, "B"), newCountingBackend(t, "C")
	cp := startControlPlane(t, t.TempDir(), nil)
	vWeb := cp.put(t, setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "a", a.addr, 1)}})
	var many []backendJSON
	for i := range 12 {
		many = append(many, backendAt(t, fmt.Sprint("b", i), b.addr, 1))
	}
	vBig := cp.put(t, setJSON{Name: "api", Backends: many})
	cp.put(t, setJSON{Name: "other", Backends: []backendJSON{backendAt(t, "c", c.addr, 1)}})

	dp, addrs := startDataPlaneListening(t, cp, "n1", []string{"web", "api"}, "region: {backends: 8}\n")
	d := cp.awaitDataPlane(t, "n1", applyTimeout, "web applied and api's NACK", func(d dataPlaneJSON) bool {
		return d.set("web").AppliedVersion == vWeb && d.set("api").LastNack != nil
	})
	if n := d.set("api").LastNack; n.Version != vBig || !strings.Contains(n.Message, "backends: more than the region's capacity of 8") {
		t.Errorf("api's NACK %+v; want version %s and the region's capacity in the message", *n, vBig)
	}
	t.Logf("api's NACK: %s", d.set("api").LastNack.Message)
	if by := traffic(t, addrs[0], "/web", checkRequests); by["A"] != checkRequests {
		t.Errorf("web beside the refused api: requests by backend %v, want all %d to A", by, checkRequests)
	}

	vAPI := cp.put(t, setJSON{Name: "api", Backends: []backendJSON{backendAt(t, "b", b.addr, 1)}})
	d = cp.awaitApplied(t, "n1", map[string]string{"web": vWeb, "api": vAPI})
	if by := traffic(t, addrs[1], "/api", checkRequests); by["B"] != checkRequests {
		t.Errorf("the fixed api: requests by backend %v, want all %d to B", by, checkRequests)
	}
	// The snapshot that brought the fixed api also held other: had it been sent, it would be
	// applied (or rejected) by now.
	for _, s := range d.Sets {
		if s.Name == "other" {
			t.Errorf("ListDataPlanes shows %+v of n1, which serves no listener of other", s)
		}
	}
	if ls := linesMatching(dp.log, 0, func(l logLine) bool { return l.str("set") == "other" }); len(ls) > 0 {
		t.Errorf("the data plane logged set other: %v", ls)
	}
	if c.n.Load() != 0 {
		t.Errorf("backend C of other was sent %d requests", c.n.Load())
	}
}

// TestDataPlaneLargeSets: three sets of 10,000 backends each, web's encoding over gRPC's default
// message limit of 4 MiB on its own, are put through the control plane's API and all applied by
// a data plane whose region holds them: no message limit wedges either end.
func TestDataPlaneLargeSets(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, t.TempDir(), nil)
	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := adminclient.New(conn)

	const backends = 10_000
	want := map[string]string{}
	total := 0
	for _, name := range []string{"web", "api", "static"} {
		set := &discoveryv1.BackendSet{Name: name}
		for i := range backends {
			be := &discoveryv1.Backend{Id: fmt.Sprintf("%s-%05d", name, i), Address: fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), Port: 8080, Weight: 1}
			if name == "web" {
				be.Metadata = map[string]string{"pod": strings.Repeat("p", 480)}
			}
			set.Backends = append(set.Backends, be)
		}
		size := proto.Size(set)
		if name == "web" && size <= 4<<20 {
			t.Fatalf("web encodes in %d bytes: not over gRPC's default limit", size)
		}
		total += size
		ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
		v, err := admin.Put(ctx, set, nil)
		cancel()
		if err != nil {
			t.Fatalf("put of %s (%d bytes): %v", name, size, err)
		}
		want[name] = v
		t.Logf("put %s: %d backends in %d bytes", name, backends, size)
	}
	start := time.Now()
	dp, _ := startDataPlaneListening(t, cp, "big", []string{"web", "api", "static"},
		"region: {sets: 8, backends: 40000, string_bytes: 2097152}\n")
	cp.awaitApplied(t, "big", want)
	t.Logf("%d bytes of sets applied %v after the data plane's start", total, time.Since(start).Round(time.Millisecond))
	published := linesMatching(dp.log, 0, says("generation published", nil))
	if len(published) == 0 || published[len(published)-1].int("backends") != 3*backends {
		t.Errorf("generations published %v; want the last with %d backends", published, 3*backends)
	}
	if rs := linesMatching(dp.log, 0, rejectedSet); len(rs) > 0 {
		t.Errorf("rejections: %v", rs)
	}
}
